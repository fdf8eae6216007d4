//! Kubernetes' CEL network library, as ValidatingAdmissionPolicy has it (the apiserver's
//! `library/ip.go` and `library/cidr.go`), so that a rule can judge `sourceIPs`:
//!
//! - `ip(string) → net.IP`, `isIP(string)`, `ip.isCanonical(string)`, `string(net.IP)`; on an IP:
//!   `family()` (4 or 6), `isUnspecified()`, `isLoopback()`, `isLinkLocalMulticast()`,
//!   `isLinkLocalUnicast()`, `isGlobalUnicast()` (Go's meaning: private addresses count);
//! - `cidr(string) → net.CIDR`, `isCIDR(string)`, `string(net.CIDR)`; on a CIDR:
//!   `containsIP(net.IP | string)`, `containsCIDR(net.CIDR | string)`, `ip()`, `masked()`,
//!   `prefixLength()`.
//!
//! As there, an address with a zone (`fe80::1%eth0`) or an IPv4-mapped IPv6 address
//! (`::ffff:10.0.0.1`) is no IP, and a malformed one is an evaluation error (use `isIP` first).
//! The compiled path leaves these calls to the interpreter.

use cel::common::functions::Function;
use cel::common::types::{CelBool, CelInt, CelString, Type, STRING_TYPE};
use cel::common::value::{CowVal, StaticVal, Val};
use cel::{Env, ExecutionError};
use ipnet::IpNet;
use std::any::Any;
use std::net::IpAddr;
use std::sync::LazyLock;

static IP_TYPE: LazyLock<Type> = LazyLock::new(|| Type::new_opaque_type("net.IP"));
static CIDR_TYPE: LazyLock<Type> = LazyLock::new(|| Type::new_opaque_type("net.CIDR"));

/// A `net.IP` value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ip(IpAddr);

/// A `net.CIDR` value: an address and a prefix length (the address not necessarily masked).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr(IpNet);

/// `Val` for a `Copy` value of one opaque type, equal when its Rust value is.
macro_rules! opaque_val {
    ($t:ty, $cel:ident) => {
        impl Val for $t {
            fn get_type(&self) -> &Type {
                &$cel
            }
            fn cel_type() -> &'static Type {
                &$cel
            }
            fn equals(&self, other: &dyn Val) -> bool {
                other.downcast_ref::<$t>().is_some_and(|o| o == self)
            }
            fn clone_as_boxed<'v>(&self) -> Box<dyn Val + 'v> {
                Box::new(*self)
            }
            fn as_any(&self) -> Option<&dyn Any> {
                Some(self)
            }
        }
        impl StaticVal for $t {}
    };
}

opaque_val!(Ip, IP_TYPE);
opaque_val!(Cidr, CIDR_TYPE);

impl std::fmt::Display for Ip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// An address as Kubernetes' `ip()` accepts it: no zone, no IPv4-mapped IPv6.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr = s.parse().map_err(|_| format!("IP address '{s}' parse error"))?;
    if let IpAddr::V6(v6) = ip {
        if v6.to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address '{s}' is not allowed"));
        }
    }
    Ok(ip)
}

/// A prefix as Kubernetes' `cidr()` accepts it.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let net: IpNet = s.parse().map_err(|_| format!("network address '{s}' parse error"))?;
    if let IpNet::V6(v6) = net {
        if v6.addr().to_ipv4_mapped().is_some() {
            return Err(format!("IPv4-mapped IPv6 address '{s}' is not allowed"));
        }
    }
    Ok(net)
}

/// Go's `net.IP.IsGlobalUnicast`: any unicast address but unspecified, loopback, link-local and
/// (IPv4) broadcast — private ranges included.
fn is_global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified() || v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_broadcast())
        }
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_loopback() || v6.is_multicast() || v6.is_unicast_link_local()),
    }
}

fn is_link_local_multicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[..3] == [224, 0, 0],
        IpAddr::V6(v6) => v6.is_multicast() && v6.segments()[0] & 0x000f == 0x0002,
    }
}

/// Registers the library on `env`.
pub fn register(env: &mut Env) {
    let ok = |r: Result<(), cel::DeclarationError>| r.expect("the network library is declared once");
    ok(env.add_type((*IP_TYPE).to_owned()));
    ok(env.add_type((*CIDR_TYPE).to_owned()));
    let ip_t = || (*IP_TYPE).to_owned();
    let cidr_t = || (*CIDR_TYPE).to_owned();
    ok(env.add_overload("ip", "string_to_ip", vec![STRING_TYPE], |args| {
        let s = string(&args, 0, "ip")?;
        let ip = parse_ip(s).map_err(|e| ExecutionError::function_error("ip", e))?;
        Ok(CowVal::owned(Ip(ip)))
    }));
    ok(env.add_overload("isIP", "is_ip_string", vec![STRING_TYPE], |args| {
        Ok(boolean(parse_ip(string(&args, 0, "isIP")?).is_ok()))
    }));
    ok(
        env.add_overload("ip.isCanonical", "ip_is_canonical", vec![STRING_TYPE], |args| {
            let s = string(&args, 0, "ip.isCanonical")?;
            let ip = parse_ip(s).map_err(|e| ExecutionError::function_error("ip.isCanonical", e))?;
            Ok(boolean(ip.to_string() == s))
        }),
    );
    ok(env.add_overload("string", "ip_to_string", vec![ip_t()], |args| {
        Ok(CowVal::owned(CelString::from(ip(&args, 0, "string")?.to_string())))
    }));
    ok(env.add_member_overload("family", "ip_family", ip_t(), vec![], |args| {
        let family = if ip(&args, 0, "family")?.is_ipv4() { 4 } else { 6 };
        Ok(CowVal::owned(CelInt::from(family)))
    }));
    let overloads: [Function; 5] = [ip_test::<0>, ip_test::<1>, ip_test::<2>, ip_test::<3>, ip_test::<4>];
    for ((name, _), overload) in IP_TESTS.iter().zip(overloads) {
        ok(env.add_member_overload(name, &format!("ip_{name}"), ip_t(), vec![], overload));
    }
    ok(env.add_overload("cidr", "string_to_cidr", vec![STRING_TYPE], |args| {
        let s = string(&args, 0, "cidr")?;
        let net = parse_cidr(s).map_err(|e| ExecutionError::function_error("cidr", e))?;
        Ok(CowVal::owned(Cidr(net)))
    }));
    ok(env.add_overload("isCIDR", "is_cidr_string", vec![STRING_TYPE], |args| {
        Ok(boolean(parse_cidr(string(&args, 0, "isCIDR")?).is_ok()))
    }));
    ok(env.add_overload("string", "cidr_to_string", vec![cidr_t()], |args| {
        Ok(CowVal::owned(CelString::from(cidr(&args, 0, "string")?.to_string())))
    }));
    // Each takes the typed value or its text: one function, two overloads.
    for (id, arg) in [
        ("cidr_contains_ip_ip", ip_t()),
        ("cidr_contains_ip_string", STRING_TYPE),
    ] {
        ok(env.add_member_overload("containsIP", id, cidr_t(), vec![arg], |args| {
            let net = cidr(&args, 0, "containsIP")?;
            Ok(boolean(net.contains(&ip_or_text(&args, 1, "containsIP")?)))
        }));
    }
    for (id, arg) in [
        ("cidr_contains_cidr", cidr_t()),
        ("cidr_contains_cidr_string", STRING_TYPE),
    ] {
        ok(
            env.add_member_overload("containsCIDR", id, cidr_t(), vec![arg], |args| {
                let net = cidr(&args, 0, "containsCIDR")?;
                Ok(boolean(net.contains(&cidr_or_text(&args, 1, "containsCIDR")?)))
            }),
        );
    }
    ok(env.add_member_overload("ip", "cidr_ip", cidr_t(), vec![], |args| {
        Ok(CowVal::owned(Ip(cidr(&args, 0, "ip")?.addr())))
    }));
    ok(
        env.add_member_overload("masked", "cidr_masked", cidr_t(), vec![], |args| {
            Ok(CowVal::owned(Cidr(cidr(&args, 0, "masked")?.trunc())))
        }),
    );
    ok(
        env.add_member_overload("prefixLength", "cidr_prefix_length", cidr_t(), vec![], |args| {
            Ok(CowVal::owned(CelInt::from(i64::from(
                cidr(&args, 0, "prefixLength")?.prefix_len(),
            ))))
        }),
    );
}

type IpTest = fn(IpAddr) -> bool;

/// The IP member tests; `ip_test::<i>` is the overload of the i-th.
const IP_TESTS: [(&str, IpTest); 5] = [
    ("isUnspecified", is_unspecified),
    ("isLoopback", is_loopback),
    ("isLinkLocalMulticast", is_link_local_multicast),
    ("isLinkLocalUnicast", is_link_local_unicast),
    ("isGlobalUnicast", is_global_unicast),
];

fn ip_test<'b, 'v, const T: usize>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let (name, test) = IP_TESTS[T];
    Ok(boolean(test(ip(&args, 0, name)?)))
}

fn is_unspecified(ip: IpAddr) -> bool {
    ip.is_unspecified()
}

fn is_loopback(ip: IpAddr) -> bool {
    ip.is_loopback()
}

fn is_link_local_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_unicast_link_local(),
    }
}

fn boolean<'b, 'v>(b: bool) -> CowVal<'b, 'v> {
    CowVal::owned(CelBool::from(b))
}

fn string<'a>(args: &'a [CowVal<'_, '_>], i: usize, function: &str) -> Result<&'a str, ExecutionError> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<CelString>())
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::function_error(function, format!("argument {i} is not a string")))
}

fn ip(args: &[CowVal<'_, '_>], i: usize, function: &str) -> Result<IpAddr, ExecutionError> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<Ip>())
        .map(|ip| ip.0)
        .ok_or_else(|| ExecutionError::function_error(function, format!("argument {i} is not a net.IP")))
}

/// A `net.IP` argument, or a string parsed as `ip()` would.
fn ip_or_text(args: &[CowVal<'_, '_>], i: usize, function: &str) -> Result<IpAddr, ExecutionError> {
    match args.get(i).and_then(|a| a.downcast_ref::<CelString>()) {
        Some(s) => parse_ip(s.inner()).map_err(|e| ExecutionError::function_error(function, e)),
        None => ip(args, i, function),
    }
}

/// A `net.CIDR` argument, or a string parsed as `cidr()` would.
fn cidr_or_text(args: &[CowVal<'_, '_>], i: usize, function: &str) -> Result<IpNet, ExecutionError> {
    match args.get(i).and_then(|a| a.downcast_ref::<CelString>()) {
        Some(s) => parse_cidr(s.inner()).map_err(|e| ExecutionError::function_error(function, e)),
        None => cidr(args, i, function),
    }
}

fn cidr(args: &[CowVal<'_, '_>], i: usize, function: &str) -> Result<IpNet, ExecutionError> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<Cidr>())
        .map(|c| c.0)
        .ok_or_else(|| ExecutionError::function_error(function, format!("argument {i} is not a net.CIDR")))
}

#[cfg(test)]
mod tests {
    use cel::{Context, Env, Value};
    use std::sync::Arc;

    fn eval(expr: &str) -> Result<Value, String> {
        let mut env = Env::stdlib();
        super::super::functions::register(&mut env);
        let program = env.compile(expr).map_err(|e| e.to_string())?;
        let context = Context::with_env(Arc::new(env));
        program.execute(&context).map_err(|e| e.to_string())
    }

    fn yes(expr: &str) {
        assert_eq!(eval(expr), Ok(Value::Bool(true)), "{expr}");
    }

    #[test]
    fn addresses_and_prefixes_as_kubernetes_has_them() {
        yes("cidr('10.0.0.0/8').containsIP(ip('10.1.2.3'))");
        yes("cidr('10.0.0.0/8').containsIP('10.1.2.3')");
        yes("!cidr('10.0.0.0/8').containsIP('192.168.0.1')");
        yes("cidr('2001:db8::/32').containsIP('2001:db8::1')");
        yes("!cidr('10.0.0.0/8').containsIP('2001:db8::1')");
        yes("cidr('10.0.0.0/8').containsCIDR('10.2.0.0/16') && !cidr('10.2.0.0/16').containsCIDR('10.0.0.0/8')");
        yes("cidr('192.168.1.7/24').masked() == cidr('192.168.1.0/24')");
        yes("cidr('192.168.1.7/24').ip() == ip('192.168.1.7') && cidr('192.168.1.7/24').prefixLength() == 24");
        yes("string(cidr('192.168.1.0/24')) == '192.168.1.0/24' && string(ip('::1')) == '::1'");
        yes("ip('10.0.0.1').family() == 4 && ip('fe80::1').family() == 6");
        yes("ip('127.0.0.1').isLoopback() && ip('::1').isLoopback() && ip('0.0.0.0').isUnspecified()");
        yes("ip('169.254.169.254').isLinkLocalUnicast() && ip('fe80::1').isLinkLocalUnicast()");
        yes("ip('224.0.0.251').isLinkLocalMulticast() && ip('ff02::1').isLinkLocalMulticast()");
        // Go's meaning: private addresses are global unicast.
        yes("ip('10.0.0.1').isGlobalUnicast() && ip('203.0.113.9').isGlobalUnicast()");
        yes("!ip('127.0.0.1').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()");
        yes("isIP('10.0.0.1') && !isIP('10.0.0.256') && !isIP('::ffff:10.0.0.1') && !isIP('fe80::1%eth0')");
        yes("isCIDR('10.0.0.0/8') && !isCIDR('10.0.0.0') && !isCIDR('10.0.0.0/33')");
        yes("ip.isCanonical('2001:db8::1') && !ip.isCanonical('2001:DB8::1')");
        yes("type(ip('10.0.0.1')) != type(cidr('10.0.0.0/8'))");
    }

    #[test]
    fn a_malformed_address_is_an_error_not_an_answer() {
        let e = eval("cidr('10.0.0.0/8').containsIP('not-an-ip')").unwrap_err();
        assert!(e.contains("not-an-ip"), "{e}");
        assert!(eval("ip('::ffff:10.0.0.1') == ip('10.0.0.1')")
            .unwrap_err()
            .contains("IPv4-mapped"));
        assert!(eval("cidr('10.0.0.0/99')").is_err());
    }
}

//! The prefilter: which rules can possibly match an event, from seven cheap keys.
//!
//! Each rule's condition is read (macros followed) for what it demands of `verb`,
//! `objectRef.resource`, `objectRef.subresource`, `stage`, `responseStatus.code`,
//! `user.username` and whether `impersonatedUser.username` is there: `verb == 'create'`,
//! `verb in ['get', 'create']`, `objectRef.resource in some_list`,
//! `responseStatus.?code.orValue(0) in [401, 403]` (the default counts for an absent code),
//! `user.username == 'system:anonymous'`, `has(impersonatedUser.username)`, and the same read
//! through an imported Falco rule's `falco_field(user, 'ka.user.name', '').exists(v, v == …)`
//! (or `v in list`, `v.startsWith('system:')` and Falco's `non_system_user`), combined through
//! `&&` (intersection) and `||` (union). Anything else demands nothing. Nobody declares these by
//! hand, so they cannot drift from the condition (`kaudit rules lint --explain` shows them). At
//! run time a few hash lookups and word-wide ANDs give the candidate rules; most audit events
//! (reads) skip evaluation entirely. An event whose key has a shape the prefilter does not judge
//! ([`Key::Unknown`]) keeps every rule of that dimension: its conditions decide.

use cel::common::ast::{operators, ComprehensionExpr, Expr, LiteralValue};
use cel::parser::Expression;
use std::borrow::Cow;
use std::collections::BTreeSet;

/// The values the rule prefilter indexes on, read from an event by the compiled path's frame
/// (`compiled::Frame::route_keys`) from the trees its conditions read.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RouteKeys<'a> {
    pub verb: Key<'a>,
    pub resource: Key<'a>,
    pub subresource: Key<'a>,
    pub stage: Key<'a>,
    /// `responseStatus.code`, an integer in decimal.
    pub code: Key<'a>,
    /// `user.username`.
    pub user: Key<'a>,
    /// Whether `impersonatedUser.username` is there: [`Key::PRESENT`] or absent.
    pub impersonated: Key<'a>,
}

/// One of an event's keys for the prefilter.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Key<'a> {
    /// The field is not there (or `null`): a rule that demands a value cannot match.
    Absent,
    Is(Cow<'a, str>),
    /// A shape the prefilter does not judge (a code that is no integer, a user that is no
    /// object, a dotted top-level key): every rule stays a candidate and its condition decides,
    /// errors included.
    #[default]
    Unknown,
}

impl Key<'_> {
    pub const PRESENT: &'static str = "present";
}

/// What a rule allows in one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Any,
    Only(BTreeSet<String>),
}

impl Allowed {
    fn and(self, other: Allowed) -> Allowed {
        match (self, other) {
            (Allowed::Any, x) | (x, Allowed::Any) => x,
            (Allowed::Only(a), Allowed::Only(b)) => Allowed::Only(a.intersection(&b).cloned().collect()),
        }
    }
    fn or(self, other: Allowed) -> Allowed {
        match (self, other) {
            (Allowed::Any, _) | (_, Allowed::Any) => Allowed::Any,
            (Allowed::Only(mut a), Allowed::Only(b)) => {
                a.extend(b);
                Allowed::Only(a)
            }
        }
    }
}

pub const DIMENSIONS: [&str; 8] = [
    "verb",
    "objectRef.resource",
    "objectRef.subresource",
    "stage",
    "responseStatus.code",
    "user.username",
    "has(impersonatedUser.username)",
    "user class",
];
const CODE: usize = 4;
const USER: usize = 5;
const IMPERSONATED: usize = 6;
const USER_CLASS: usize = 7;
/// The value of the `responseStatus.code` and user class dimensions for an event without a code
/// or a user name.
const NO_CODE: &str = "";

/// The classes of user names, a partition: `system:anonymous`, service accounts, nodes, other
/// `system:` names (the control plane's components), and everything else (people, and
/// identities from an authenticator that names them otherwise).
const CLASSES: [&str; 5] = ["anonymous", "serviceaccount", "node", "system", "other"];

fn user_class(name: &str) -> &'static str {
    if name == "system:anonymous" {
        "anonymous"
    } else if name.starts_with("system:serviceaccount:") {
        "serviceaccount"
    } else if name.starts_with("system:node:") {
        "node"
    } else if name.starts_with("system:") {
        "system"
    } else {
        "other"
    }
}

/// The classes whose names all start with `prefix`, for the prefixes that bound classes.
fn classes_with_prefix(prefix: &str) -> Option<BTreeSet<String>> {
    let classes: &[&str] = match prefix {
        "system:" => &["anonymous", "serviceaccount", "node", "system"],
        "system:serviceaccount:" => &["serviceaccount"],
        "system:node:" => &["node"],
        _ => return None,
    };
    Some(classes.iter().map(|c| c.to_string()).collect())
}

/// What a condition demands of the keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(pub [Allowed; 8]);

impl Route {
    pub fn any() -> Route {
        Route(std::array::from_fn(|_| Allowed::Any))
    }
    fn only(dim: usize, values: BTreeSet<String>) -> Route {
        let mut r = Route::any();
        r.0[dim] = Allowed::Only(values);
        r
    }
    fn and(self, other: Route) -> Route {
        let mut b = other.0.into_iter();
        Route(self.0.map(|a| a.and(b.next().unwrap_or(Allowed::Any))))
    }
    fn or(self, other: Route) -> Route {
        let mut b = other.0.into_iter();
        Route(self.0.map(|a| a.or(b.next().unwrap_or(Allowed::Any))))
    }
}

/// Names the analysis can see through.
pub trait Names {
    fn macro_expr(&self, name: &str) -> Option<&Expression>;
    fn list_strings(&self, name: &str) -> Option<Vec<String>>;
}

/// Reads what `expr` demands of the prefilter keys.
pub fn analyze(expr: &Expression, names: &dyn Names) -> Route {
    analyze_depth(expr, names, 0)
}

fn analyze_depth(expr: &Expression, names: &dyn Names, depth: usize) -> Route {
    if depth > 64 {
        return Route::any();
    }
    match &expr.expr {
        Expr::Ident(name) => match names.macro_expr(name) {
            Some(body) => analyze_depth(body, names, depth + 1),
            None => Route::any(),
        },
        Expr::Call(call) if call.target.is_none() && call.args.len() == 2 => {
            let (a, b) = (&call.args[0], &call.args[1]);
            match call.func_name.as_str() {
                "_&&_" => analyze_depth(a, names, depth + 1).and(analyze_depth(b, names, depth + 1)),
                "_||_" => analyze_depth(a, names, depth + 1).or(analyze_depth(b, names, depth + 1)),
                "_==_" => match (dimension(a), literal(b), dimension(b), literal(a)) {
                    (Some(d), Some(s), _, _) | (_, _, Some(d), Some(s)) => d.only(vec![s]),
                    _ => Route::any(),
                },
                "@in" => match (dimension(a), strings(b, names)) {
                    (Some(d), Some(values)) => d.only(values),
                    _ => Route::any(),
                },
                _ => Route::any(),
            }
        }
        // An imported Falco rule's `falco_field(user, 'ka.user.name', '').exists(v, v == …)`.
        Expr::Comprehension(c) if falco_route(c, names).is_some() => falco_route(c, names).unwrap_or_else(Route::any),
        // `user.username.startsWith('system:')`, `!…`, also with `user.?username.orValue('')`
        // or through Falco's field (its `non_system_user`).
        Expr::Call(_) | Expr::Comprehension(_) if user_classes(expr).is_some() => {
            Route::only(USER_CLASS, user_classes(expr).map(|c| c.holds).unwrap_or_default())
        }
        // `has(impersonatedUser.username)`
        Expr::Select(select) if select.test && is_field(&select.operand, "impersonatedUser") => {
            if select.field == "username" {
                Route::only(IMPERSONATED, [Key::PRESENT.to_string()].into())
            } else {
                Route::any()
            }
        }
        _ => Route::any(),
    }
}

/// A key a comparison reads: a dimension, and for `responseStatus.?code.orValue(D)` the
/// default an absent code takes.
struct Dim {
    index: usize,
    default: Option<String>,
}

impl Dim {
    /// The route demanding one of `values`; an absent code allowed too when the default is one.
    /// A literal of another type than the dimension's (an integer for a verb, a string for the
    /// code) demands nothing: CEL decides what comparing across types gives.
    fn only(&self, values: Vec<Lit>) -> Route {
        let ints = self.index == CODE;
        if values.iter().any(|v| v.int != ints) {
            return Route::any();
        }
        let mut values: BTreeSet<String> = values.into_iter().map(|v| v.text).collect();
        if self.default.as_ref().is_some_and(|d| values.contains(d)) {
            values.insert(NO_CODE.to_string());
        }
        Route::only(self.index, values)
    }
}

/// Where a predicate on the user name holds and where it fails, as user classes ([`NO_CODE`]
/// standing for an event without a name): `startsWith` of a prefix that bounds classes, on
/// `user.username`, on `user.?username.orValue(D)` or through Falco's `falco_field(user,
/// 'ka.user.name', '').exists(v, v.startsWith(P))`, or the negation of one.
struct Classes {
    holds: BTreeSet<String>,
    fails: BTreeSet<String>,
}

/// Where an event without a user name goes.
enum Absent {
    /// With the class of `orValue`'s default.
    As(&'static str),
    /// Among the failures: Falco's field has no values then, and `exists` is false.
    Fails,
    /// Nowhere: a strict read of an absent name is an error, negated or not.
    Errs,
}

fn user_classes(expr: &Expression) -> Option<Classes> {
    let (prefix, absent) = match &expr.expr {
        Expr::Call(call) => match (call.func_name.as_str(), call.target.as_deref(), call.args.as_slice()) {
            (operators::LOGICAL_NOT, None, [operand]) => {
                let Classes { holds, fails } = user_classes(operand)?;
                return Some(Classes {
                    holds: fails,
                    fails: holds,
                });
            }
            ("startsWith", Some(target), [prefix]) => match user_name(target)? {
                Some(default) => (prefix, Absent::As(user_class(&default))),
                None => (prefix, Absent::Errs),
            },
            _ => return None,
        },
        Expr::Comprehension(c) => {
            let (dim, var, body) = falco_exists(c)?;
            let Expr::Call(call) = &body.expr else { return None };
            let (Some(target), [prefix]) = (call.target.as_deref(), call.args.as_slice()) else {
                return None;
            };
            let reads_var = matches!(&target.expr, Expr::Ident(n) if n == var);
            (dim == USER && call.func_name == "startsWith" && reads_var).then_some(())?;
            (prefix, Absent::Fails)
        }
        _ => return None,
    };
    let Expr::Literal(LiteralValue::String(prefix)) = &prefix.expr else {
        return None;
    };
    let mut holds = classes_with_prefix(prefix.inner())?;
    let mut fails: BTreeSet<String> = CLASSES
        .iter()
        .filter(|c| !holds.contains(**c))
        .map(|c| c.to_string())
        .collect();
    match absent {
        Absent::As(class) if holds.contains(class) => holds.insert(NO_CODE.to_string()),
        Absent::As(_) | Absent::Fails => fails.insert(NO_CODE.to_string()),
        Absent::Errs => false,
    };
    Some(Classes { holds, fails })
}

/// The dimension of a Falco field, read from its root by the importer's `falco_field(root,
/// 'name', '')`: for an event whose key is a string, the field's values are exactly `[key]`;
/// for an event without the key, `[]` (a key of another type is [`Key::Unknown`], judged by
/// the condition).
fn falco_dimension(expr: &Expression) -> Option<usize> {
    let Expr::Call(call) = &expr.expr else { return None };
    let [root, name, arg] = call.args.as_slice() else {
        return None;
    };
    let text = |e: &Expression| match &e.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
        _ => None,
    };
    let Expr::Ident(root) = &root.expr else { return None };
    if call.func_name != "falco_field" || call.target.is_some() || text(arg)?.as_str() != "" {
        return None;
    }
    match (root.as_str(), text(name)?.as_str()) {
        ("_top", "ka.verb") => Some(0),
        ("objectRef", "ka.target.resource") => Some(1),
        ("objectRef", "ka.target.subresource") => Some(2),
        ("_top", "ka.stage") => Some(3),
        ("user", "ka.user.name") => Some(USER),
        _ => None,
    }
}

/// `falco_field(…).exists(v, body)` as CEL expands `exists`: the field's dimension, the
/// variable and the body.
fn falco_exists(c: &ComprehensionExpr) -> Option<(usize, &str, &Expression)> {
    let accu = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    let Expr::Call(step) = &c.loop_step.expr else {
        return None;
    };
    let [a, body] = step.args.as_slice() else { return None };
    let expands_exists = step.func_name == operators::LOGICAL_OR
        && accu(a)
        && accu(&c.result)
        && c.iter_var2.is_none()
        && matches!(&c.accu_init.expr, Expr::Literal(LiteralValue::Boolean(b)) if !**b);
    expands_exists.then_some(())?;
    Some((falco_dimension(&c.iter_range)?, c.iter_var.as_str(), body))
}

/// What `falco_field(…).exists(v, v == 'x')` (or `v in list`) demands: the key is one of the
/// values (an event without the key has no values: no item, no match).
fn falco_route(c: &ComprehensionExpr, names: &dyn Names) -> Option<Route> {
    let (dim, var, body) = falco_exists(c)?;
    let Expr::Call(call) = &body.expr else { return None };
    let is_var = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if n == var);
    let values = match (call.func_name.as_str(), call.target.as_deref(), call.args.as_slice()) {
        (operators::EQUALS, None, [a, b]) if is_var(a) => vec![literal(b)?],
        (operators::EQUALS, None, [a, b]) if is_var(b) => vec![literal(a)?],
        (operators::IN, None, [a, list]) if is_var(a) => strings(list, names)?,
        _ => return None,
    };
    // The values are texts: an integer literal never equals one.
    if values.iter().any(|v| v.int) {
        return None;
    }
    Some(Route::only(dim, values.into_iter().map(|v| v.text).collect()))
}

/// `user.username` (`Some(None)`) or `user.?username.orValue(D)` (`Some(Some(D))`).
fn user_name(expr: &Expression) -> Option<Option<String>> {
    match &expr.expr {
        Expr::Select(select) if !select.test && select.field == "username" && is_field(&select.operand, "user") => {
            Some(None)
        }
        _ => match &or_value(expr, "user", "username")?.expr {
            Expr::Literal(LiteralValue::String(d)) => Some(Some(d.inner().to_string())),
            _ => None,
        },
    }
}

/// The default `D` of `field.?member.orValue(D)`.
fn or_value<'e>(expr: &'e Expression, field: &str, member: &str) -> Option<&'e Expression> {
    let Expr::Call(call) = &expr.expr else { return None };
    let (Some(target), [default]) = (call.target.as_deref(), call.args.as_slice()) else {
        return None;
    };
    let Expr::Call(select) = &target.expr else { return None };
    let [operand, name] = select.args.as_slice() else {
        return None;
    };
    let selects = call.func_name == "orValue"
        && select.func_name == operators::OPT_SELECT
        && is_field(operand, field)
        && matches!(&name.expr, Expr::Literal(LiteralValue::String(n)) if n.inner() == member);
    selects.then_some(default)
}

fn is_field(expr: &Expression, name: &str) -> bool {
    matches!(&expr.expr, Expr::Ident(n) if n == name)
}

/// The event's top-level fields `expr` reads (macros followed; lists and comprehension
/// variables are not fields). What a rule needs of the audit level follows from it: a rule that
/// reads `requestObject` needs `Request`.
pub fn reads(expr: &Expression, names: &dyn Names) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_reads(expr, names, &mut Vec::new(), &mut out, 0);
    out
}

fn collect_reads(
    expr: &Expression,
    names: &dyn Names,
    bound: &mut Vec<String>,
    out: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match &expr.expr {
        Expr::Ident(name) => {
            if let Some(body) = names.macro_expr(name) {
                collect_reads(body, names, bound, out, depth + 1);
            } else if names.list_strings(name).is_none() && !bound.contains(name) {
                out.insert(name.clone());
            }
        }
        Expr::Select(select) => collect_reads(&select.operand, names, bound, out, depth + 1),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                collect_reads(target, names, bound, out, depth + 1);
            }
            for arg in &call.args {
                collect_reads(arg, names, bound, out, depth + 1);
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                collect_reads(e, names, bound, out, depth + 1);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                    collect_reads(&e.key, names, bound, out, depth + 1);
                    collect_reads(&e.value, names, bound, out, depth + 1);
                }
            }
        }
        Expr::Comprehension(c) => {
            collect_reads(&c.iter_range, names, bound, out, depth + 1);
            bound.push(c.iter_var.clone());
            bound.push(c.accu_var.clone());
            collect_reads(&c.accu_init, names, bound, out, depth + 1);
            collect_reads(&c.loop_cond, names, bound, out, depth + 1);
            collect_reads(&c.loop_step, names, bound, out, depth + 1);
            collect_reads(&c.result, names, bound, out, depth + 1);
            bound.pop();
            bound.pop();
        }
        _ => {}
    }
}

fn dimension(expr: &Expression) -> Option<Dim> {
    let strict = |index| Some(Dim { index, default: None });
    match &expr.expr {
        Expr::Ident(name) if name == "verb" => strict(0),
        Expr::Ident(name) if name == "stage" => strict(3),
        Expr::Select(select) if !select.test => match (&select.operand.expr, select.field.as_str()) {
            (Expr::Ident(obj), "resource") if obj == "objectRef" => strict(1),
            (Expr::Ident(obj), "subresource") if obj == "objectRef" => strict(2),
            (Expr::Ident(obj), "code") if obj == "responseStatus" => strict(CODE),
            (Expr::Ident(obj), "username") if obj == "user" => strict(USER),
            _ => None,
        },
        // responseStatus.?code.orValue(D), D an integer
        _ => match &or_value(expr, "responseStatus", "code")?.expr {
            Expr::Literal(LiteralValue::Int(d)) => Some(Dim {
                index: CODE,
                default: Some(d.inner().to_string()),
            }),
            _ => None,
        },
    }
}

/// A string or integer literal as a key (an integer in decimal, as the event's code is keyed).
struct Lit {
    text: String,
    int: bool,
}

fn literal(expr: &Expression) -> Option<Lit> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(Lit {
            text: s.inner().to_string(),
            int: false,
        }),
        Expr::Literal(LiteralValue::Int(i)) => Some(Lit {
            text: i.inner().to_string(),
            int: true,
        }),
        _ => None,
    }
}

fn strings(expr: &Expression, names: &dyn Names) -> Option<Vec<Lit>> {
    match &expr.expr {
        Expr::List(list) => list.elements.iter().map(literal).collect(),
        Expr::Ident(name) => names
            .list_strings(name)
            .map(|v| v.into_iter().map(|text| Lit { text, int: false }).collect()),
        _ => None,
    }
}

/// Rule sets as bitsets per key value.
#[derive(Debug, Default)]
pub struct Prefilter {
    /// The rules that run at all (not disabled).
    enabled: Vec<u64>,
    dims: [Dimension; 8],
}

#[derive(Debug, Default)]
struct Dimension {
    any: Vec<u64>,
    /// Hashed with foldhash: built from the rules at load, looked up per event.
    by_value: foldhash::HashMap<String, Vec<u64>>,
}

impl Prefilter {
    /// `routes[i]` is rule `i`'s route, `None` for a rule that never runs (disabled).
    pub fn new(routes: &[Option<Route>]) -> Prefilter {
        let words = routes.len().div_ceil(64).max(1);
        let mut dims: [Dimension; 8] = Default::default();
        for dim in &mut dims {
            dim.any = vec![0; words];
        }
        let mut enabled = vec![0; words];
        for (i, route) in routes.iter().enumerate() {
            let Some(route) = route else { continue };
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            enabled[word] |= bit;
            for (d, allowed) in route.0.iter().enumerate() {
                match allowed {
                    Allowed::Any => dims[d].any[word] |= bit,
                    Allowed::Only(values) => {
                        for v in values {
                            dims[d].by_value.entry(v.clone()).or_insert_with(|| vec![0; words])[word] |= bit;
                        }
                    }
                }
            }
        }
        Prefilter { enabled, dims }
    }

    /// The rules that may match an event with these keys, as a bitset.
    pub fn candidates(&self, keys: &RouteKeys, out: &mut Vec<u64>) {
        out.clear();
        out.extend_from_slice(&self.enabled);
        // `Some(None)`: the event has no such value; `None`: the dimension does not filter.
        fn lookup<'k>(key: &'k Key, absent: Option<&'k str>) -> Option<Option<&'k str>> {
            match key {
                Key::Is(v) => Some(Some(v)),
                Key::Absent => Some(absent),
                Key::Unknown => None,
            }
        }
        let values = [
            lookup(&keys.verb, None),
            lookup(&keys.resource, None),
            lookup(&keys.subresource, None),
            lookup(&keys.stage, None),
            lookup(&keys.code, Some(NO_CODE)),
            lookup(&keys.user, None),
            lookup(&keys.impersonated, None),
            match &keys.user {
                Key::Is(name) => Some(Some(user_class(name))),
                Key::Absent => Some(Some(NO_CODE)),
                Key::Unknown => None,
            },
        ];
        for (dim, value) in self.dims.iter().zip(values) {
            let Some(value) = value else { continue };
            let listed = value.and_then(|v| dim.by_value.get(v));
            for (w, word) in out.iter_mut().enumerate() {
                *word &= dim.any[w] | listed.map_or(0, |l| l[w]);
            }
        }
    }
}

/// The indices of the set bits, in order.
pub fn bits(set: &[u64]) -> impl Iterator<Item = usize> + '_ {
    set.iter().enumerate().flat_map(|(w, &word)| {
        let mut word = word;
        std::iter::from_fn(move || {
            if word == 0 {
                return None;
            }
            let bit = word.trailing_zeros() as usize;
            word &= word - 1;
            Some(w * 64 + bit)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules `pf` leaves as candidates for an event with these keys.
    fn candidates(pf: &Prefilter, keys: RouteKeys) -> Vec<usize> {
        let mut out = Vec::new();
        pf.candidates(&keys, &mut out);
        bits(&out).collect()
    }
    use std::borrow::Cow;
    use std::collections::HashMap;

    struct NoNames(HashMap<String, Expression>);
    impl Names for NoNames {
        fn macro_expr(&self, name: &str) -> Option<&Expression> {
            self.0.get(name)
        }
        fn list_strings(&self, name: &str) -> Option<Vec<String>> {
            (name == "exec_verbs").then(|| vec!["get".into(), "create".into()])
        }
    }

    fn route(src: &str) -> Route {
        let env = cel::Env::stdlib();
        let mut macros = HashMap::new();
        macros.insert(
            "pod_write".to_string(),
            env.compile("objectRef.resource == 'pods' && verb in ['create', 'update']")
                .unwrap()
                .expression()
                .clone(),
        );
        analyze(env.compile(src).unwrap().expression(), &NoNames(macros))
    }

    fn only(values: &[&str]) -> Allowed {
        Allowed::Only(values.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn derives_routes_from_conditions() {
        let r = route("pod_write && stage == 'ResponseComplete' && requestObject.x == 1");
        assert_eq!(
            r.0[..4],
            [
                only(&["create", "update"]),
                only(&["pods"]),
                Allowed::Any,
                only(&["ResponseComplete"])
            ]
        );
        let r = route("verb in exec_verbs && objectRef.subresource in ['exec', 'attach']");
        assert_eq!(r.0[0], only(&["create", "get"]));
        assert_eq!(r.0[2], only(&["attach", "exec"]));
        let r = route("verb == 'create' || verb == 'delete'");
        assert_eq!(r.0[0], only(&["create", "delete"]));
        let r = route("verb == 'create' || user.username == 'x'");
        assert_eq!(r, Route::any());
        assert_eq!(route("!(verb == 'get')"), Route::any());
        assert_eq!(route("[1].exists(verb, verb == 'get')"), Route::any());
    }

    #[test]
    fn index_selects_candidates() {
        let routes = vec![
            Some(route("verb == 'create' && objectRef.resource == 'pods'")),
            Some(route("objectRef.subresource == 'exec'")),
            None,
            Some(route("true")),
        ];
        let pf = Prefilter::new(&routes);
        let is = |v: &'static str| Key::Is(Cow::Borrowed(v));
        let keys = |verb: &'static str, res: &'static str, sub: Option<&'static str>| RouteKeys {
            verb: is(verb),
            resource: is(res),
            subresource: sub.map_or(Key::Absent, is),
            stage: is("ResponseComplete"),
            code: is("200"),
            user: is("alice"),
            impersonated: Key::Absent,
        };
        let mut out = Vec::new();
        pf.candidates(&keys("create", "pods", None), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [0, 3]);
        pf.candidates(&keys("get", "pods", Some("exec")), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [1, 3]);
        pf.candidates(&keys("get", "secrets", None), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [3]);
        // A key the prefilter does not judge keeps every rule of its dimension.
        let unknown = RouteKeys {
            verb: Key::Unknown,
            ..keys("get", "pods", None)
        };
        pf.candidates(&unknown, &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [0, 3]);
    }

    #[test]
    fn user_classes_from_name_prefixes() {
        let classes = |src: &str| route(src).0[USER_CLASS].clone();
        assert_eq!(
            classes("user.username.startsWith('system:serviceaccount:')"),
            only(&["serviceaccount"])
        );
        // A person: not `system:`; an absent name reads as '' and is one too.
        assert_eq!(
            classes("!user.?username.orValue('').startsWith('system:')"),
            only(&["", "other"])
        );
        assert_eq!(classes("!user.username.startsWith('system:')"), only(&["other"]));
        assert_eq!(
            classes("!user.username.startsWith('system:node:')"),
            only(&["anonymous", "other", "serviceaccount", "system"])
        );
        // A prefix that does not bound classes, or another field: nothing demanded.
        assert_eq!(classes("user.username.startsWith('system:kube')"), Allowed::Any);
        assert_eq!(classes("objectRef.name.startsWith('system:')"), Allowed::Any);

        let pf = Prefilter::new(&[
            Some(route(
                "verb == 'get' && !user.?username.orValue('').startsWith('system:')",
            )),
            Some(route("user.username.startsWith('system:node:')")),
        ]);
        assert_eq!(for_user(&pf, named("alice")), [0]);
        assert_eq!(for_user(&pf, named("system:node:n1")), [1]);
        assert_eq!(for_user(&pf, named("system:kube-scheduler")), Vec::<usize>::new());
        assert_eq!(for_user(&pf, Key::Absent), [0]);
        assert_eq!(for_user(&pf, Key::Unknown), [0, 1]);
    }

    /// The rules `pf` leaves as candidates for a `get` by `user`.
    fn for_user(pf: &Prefilter, user: Key<'_>) -> Vec<usize> {
        let verb = named("get");
        candidates(
            pf,
            RouteKeys {
                verb,
                user,
                ..RouteKeys::default()
            },
        )
    }

    fn named(name: &str) -> Key<'_> {
        Key::Is(Cow::Borrowed(name))
    }

    #[test]
    fn imported_falco_fields_route_as_their_keys() {
        let name = "falco_field(user, 'ka.user.name', '')";
        let r = route(&format!("{name}.exists(v, v == 'system:anonymous')"));
        assert_eq!(r.0[USER], only(&["system:anonymous"]));
        let r = route("falco_field(_top, 'ka.verb', '').exists(v, v in exec_verbs)");
        assert_eq!(r.0[0], only(&["create", "get"]));
        let r = route("falco_field(objectRef, 'ka.target.resource', '').exists(v, 'pods' == v)");
        assert_eq!(r.0[1], only(&["pods"]));
        let r = route("falco_field(objectRef, 'ka.target.subresource', '').exists(v, v == 'exec')");
        assert_eq!(r.0[2], only(&["exec"]));
        // Falco's `non_system_user`: an event without a name has no values, so no `system:` one.
        let classes = |src: &str| route(src).0[USER_CLASS].clone();
        assert_eq!(
            classes(&format!("!({name}.exists(v, v.startsWith('system:')))")),
            only(&["", "other"])
        );
        assert_eq!(
            classes(&format!("{name}.exists(v, v.startsWith('system:node:'))")),
            only(&["node"])
        );
        // Other fields, arguments, quantifiers, literals and negations demand nothing.
        for src in [
            "falco_field(user, 'ka.user.name', 'x').exists(v, v == 'a')",
            "falco_field(user, 'ka.user.groups', '').exists(v, v == 'a')",
            "falco_field(requestObject, 'ka.user.name', '').exists(v, v == 'a')",
            "falco_field(user, 'ka.user.name', '').all(v, v == 'a')",
            "falco_field(user, 'ka.user.name', '').exists(v, v == 5)",
            "falco_field(user, 'ka.user.name', '').exists(v, verb == 'a')",
            "falco_field(user, 'ka.user.name', '').exists(v, v != 'a')",
            "!(falco_field(user, 'ka.user.name', '').exists(v, v == 'a'))",
            "falco_field(user, 'ka.user.name', '').exists(v, v.startsWith('system:kube'))",
            "falco_field(_top, 'ka.verb', '').exists(v, v.startsWith('system:'))",
        ] {
            assert_eq!(route(src), Route::any(), "{src}");
        }

        let pf = Prefilter::new(&[
            Some(route(&format!("!({name}.exists(v, v.startsWith('system:')))"))),
            Some(route(&format!("{name}.exists(v, v == 'system:anonymous')"))),
        ]);
        assert_eq!(for_user(&pf, named("alice")), [0]);
        assert_eq!(for_user(&pf, named("system:anonymous")), [1]);
        assert_eq!(for_user(&pf, named("system:serviceaccount:a:b")), Vec::<usize>::new());
        assert_eq!(for_user(&pf, Key::Absent), [0]);
        assert_eq!(for_user(&pf, Key::Unknown), [0, 1]);
    }

    #[test]
    fn response_codes_users_and_impersonation() {
        let r = route("responseStatus.?code.orValue(0) in [401, 403] && stage == 'ResponseComplete'");
        assert_eq!(r.0[CODE], only(&["401", "403"]));
        // The default counts for an absent code.
        assert_eq!(
            route("responseStatus.?code.orValue(200) == 200").0[CODE],
            only(&["", "200"])
        );
        assert_eq!(
            route("responseStatus.code == 403 || responseStatus.code == 404").0[CODE],
            only(&["403", "404"])
        );
        // A literal of the other type, another comparison, a negation: nothing demanded.
        assert_eq!(route("responseStatus.code == '403'"), Route::any());
        assert_eq!(route("verb == 403"), Route::any());
        assert_eq!(route("responseStatus.code >= 400"), Route::any());
        assert_eq!(route("!(user.username == 'x')"), Route::any());
        assert_eq!(
            route("user.username == 'system:anonymous'").0[USER],
            only(&["system:anonymous"])
        );
        assert_eq!(
            route("has(impersonatedUser.username) && verb == 'get'").0[IMPERSONATED],
            only(&[Key::PRESENT])
        );
        assert_eq!(route("has(impersonatedUser.groups)"), Route::any());

        let pf = Prefilter::new(&[
            Some(route("responseStatus.?code.orValue(0) in [401, 403]")),
            Some(route("responseStatus.?code.orValue(200) == 200")),
            Some(route("user.username == 'system:anonymous'")),
            Some(route("has(impersonatedUser.username)")),
        ]);
        let is = |v: &'static str| Key::Is(Cow::Borrowed(v));
        let event = |code, user, impersonated| RouteKeys {
            code,
            user,
            impersonated,
            ..RouteKeys::default()
        };
        let run = |keys: RouteKeys| candidates(&pf, keys);
        assert_eq!(run(event(is("403"), is("alice"), Key::Absent)), [0]);
        assert_eq!(run(event(Key::Absent, is("system:anonymous"), Key::Absent)), [1, 2]);
        assert_eq!(run(event(is("200"), Key::Absent, is(Key::PRESENT))), [1, 3]);
        assert_eq!(run(event(Key::Unknown, Key::Unknown, Key::Unknown)), [0, 1, 2, 3]);
    }
}

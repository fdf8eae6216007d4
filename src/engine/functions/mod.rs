//! Functions rules call besides CEL's standard library.
//!
//! - `matches` (global and member): RE2-style regex match whose compiled patterns are cached
//!   process-wide (the CEL crate's own recompiles the pattern on every call: ~30 µs each);
//! - `pod_spec(obj)` / `pod_containers(obj)`: the pod spec of a Pod or of a workload's pod
//!   template (Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController,
//!   CronJob), and all its containers, initContainers and ephemeralContainers;
//! - `image_registry`, `image_repository`, `image_tag`, `image_digest`: parts of an image
//!   reference such as `registry:5000/team/app:1.2@sha256:…`;
//! - `exec_command(requestURI)`: an exec's command — its `command` query parameters, decoded
//!   (`['sh', '-c', 'curl x | sh']`), empty when it has none;
//! - Kubernetes' `ip()`/`cidr()` network library ([`super::net`]);
//! - CEL's strings extension, as Kubernetes' CEL has it (`join`, `split`, `lowerAscii`,
//!   `indexOf`, `replace`, `trim`, …);
//! - `falco_field`/`falco_op`: Falco's field extraction and string operators, which rules
//!   imported from Falco call ([`falco`]).

pub mod falco;

use cel::common::types::{CelBool, CelList, CelMap, CelString, DYN_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
use cel::{Env, ExecutionError};
use regex::Regex;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// Registers the functions on `env`.
pub fn register(env: &mut Env) {
    let ok = |r: Result<(), cel::DeclarationError>| r.expect("kaudit functions are declared once");
    ok(env.add_overload("matches", "kaudit_matches", vec![STRING_TYPE, STRING_TYPE], matches));
    ok(env.add_member_overload(
        "matches",
        "kaudit_string_matches",
        STRING_TYPE,
        vec![STRING_TYPE],
        matches,
    ));
    ok(env.add_overload("pod_spec", "kaudit_pod_spec", vec![DYN_TYPE], pod_spec));
    ok(env.add_overload(
        "pod_containers",
        "kaudit_pod_containers",
        vec![DYN_TYPE],
        pod_containers,
    ));
    ok(env.add_overload(
        "image_registry",
        "kaudit_image_registry",
        vec![STRING_TYPE],
        image_registry,
    ));
    ok(env.add_overload(
        "image_repository",
        "kaudit_image_repository",
        vec![STRING_TYPE],
        image_repository,
    ));
    ok(env.add_overload("image_tag", "kaudit_image_tag", vec![STRING_TYPE], image_tag));
    ok(env.add_overload(
        "falco_field",
        "kaudit_falco_field",
        vec![DYN_TYPE, STRING_TYPE, STRING_TYPE],
        falco_field,
    ));
    ok(env.add_overload(
        "falco_op",
        "kaudit_falco_op",
        vec![STRING_TYPE, STRING_TYPE, STRING_TYPE],
        falco_op,
    ));
    ok(env.add_overload("image_digest", "kaudit_image_digest", vec![STRING_TYPE], image_digest));
    ok(env.add_overload("exec_command", "kaudit_exec_command", vec![STRING_TYPE], exec_command));
    ok(cel::extensions::strings(env));
    super::net::register(env);
}

/// A CEL value as JSON (map keys sorted: CEL maps keep no order).
pub fn to_json(v: &dyn Val) -> serde_json::Value {
    use serde_json::Value;
    if let Some(s) = v.downcast_ref::<CelString>() {
        return Value::String(s.inner().to_string());
    }
    if let Some(b) = v.downcast_ref::<CelBool>() {
        return Value::Bool(*b.inner());
    }
    if let Some(i) = v.downcast_ref::<cel::common::types::CelInt>() {
        return Value::from(*i.inner());
    }
    if let Some(u) = v.downcast_ref::<cel::common::types::CelUInt>() {
        return Value::from(*u.inner());
    }
    if let Some(d) = v.downcast_ref::<cel::common::types::CelDouble>() {
        return serde_json::Number::from_f64(*d.inner())
            .map(Value::Number)
            .unwrap_or(Value::Null);
    }
    if let Some(ip) = v.downcast_ref::<super::net::Ip>() {
        return Value::String(ip.to_string());
    }
    if let Some(cidr) = v.downcast_ref::<super::net::Cidr>() {
        return Value::String(cidr.to_string());
    }
    if let Some(list) = v.downcast_ref::<CelList>() {
        return Value::Array(list.inner().iter().map(|e| to_json(&**e)).collect());
    }
    if let Some(map) = v.downcast_ref::<CelMap>() {
        let mut entries: Vec<(String, Value)> = map
            .inner()
            .iter()
            .map(|(k, v)| {
                let key = match to_json(k.inner()) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                (key, to_json(&**v))
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        return Value::Object(entries.into_iter().collect());
    }
    Value::Null
}

/// `falco_field(root, name, arg)`: a Falco field's values (strings; empty when absent).
fn falco_field<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let root = args.first().ok_or(ExecutionError::MissingArgumentOrTarget)?;
    let name = string_arg(&args, 1, "falco_field")?;
    let arg = string_arg(&args, 2, "falco_field")?;
    let values = falco::extract(name, arg, &to_json(&**root));
    let list: Vec<Box<dyn Val + 'v>> = values
        .into_iter()
        .map(|s| Box::new(CelString::from(s)) as Box<dyn Val + 'v>)
        .collect();
    Ok(CowVal::owned(CelList::from(list)))
}

/// `falco_op(op, value, operand)`: Falco's `icontains`, `glob`, `iglob`, `pmatch`, `regex`.
fn falco_op<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let op = string_arg(&args, 0, "falco_op")?;
    let value = string_arg(&args, 1, "falco_op")?;
    let operand = string_arg(&args, 2, "falco_op")?;
    falco::string_op(op, value, operand)
        .map(|b| CowVal::owned(CelBool::from(b)))
        .map_err(|message| ExecutionError::FunctionError {
            function: "falco_op".into(),
            message,
        })
}

const REGEX_CACHE_LIMIT: usize = 4096;

fn regex_cache() -> &'static RwLock<HashMap<String, Arc<Regex>>> {
    static CACHE: OnceLock<RwLock<HashMap<String, Arc<Regex>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Compiles `pattern` once for the life of the process (up to a bound of distinct patterns).
pub fn compiled_regex(pattern: &str) -> Result<Arc<Regex>, regex::Error> {
    if let Some(re) = regex_cache().read().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    let re = Arc::new(Regex::new(pattern)?);
    let mut cache = regex_cache().write().unwrap_or_else(|e| e.into_inner());
    if cache.len() < REGEX_CACHE_LIMIT {
        cache.insert(pattern.to_string(), re.clone());
    }
    Ok(re)
}

fn string_arg<'a>(args: &'a [CowVal<'_, '_>], i: usize, function: &str) -> Result<&'a str, ExecutionError> {
    args.get(i)
        .and_then(|a| a.downcast_ref::<CelString>())
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::FunctionError {
            function: function.into(),
            message: format!("argument {i} is not a string"),
        })
}

fn matches<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let text = string_arg(&args, 0, "matches")?;
    let pattern = string_arg(&args, 1, "matches")?;
    let re = compiled_regex(pattern).map_err(|e| ExecutionError::FunctionError {
        function: "matches".into(),
        message: format!("'{pattern}' is not a valid regex: {e}"),
    })?;
    Ok(CowVal::owned(CelBool::from(re.is_match(text))))
}

/// The value at `key` of a map value.
fn get<'a, 'v>(value: &'a (dyn Val + 'v), key: &str) -> Option<&'a (dyn Val + 'v)> {
    value.downcast_ref::<CelMap>()?;
    // A map lends its values out: the indexer answers `Borrowed`.
    match value.as_indexer()?.get(&CelString::from(key)).ok()? {
        CowVal::Borrowed(v) => Some(v),
        CowVal::Owned(_) => None,
    }
}

fn path<'a, 'v>(value: &'a (dyn Val + 'v), keys: &[&str]) -> Option<&'a (dyn Val + 'v)> {
    keys.iter().try_fold(value, |v, k| get(v, k))
}

/// The pod spec inside a Pod, a workload's pod template or a CronJob's job template.
fn find_pod_spec<'a, 'v>(obj: &'a (dyn Val + 'v)) -> Result<Option<&'a (dyn Val + 'v)>, ExecutionError> {
    if obj.downcast_ref::<CelMap>().is_none() {
        // A JSON-patch body is a list: it carries no pod spec we can read.
        if obj.downcast_ref::<CelList>().is_some() {
            return Ok(None);
        }
        return Err(ExecutionError::UnexpectedType {
            got: obj.get_type().name().to_string(),
            want: "map".into(),
        });
    }
    Ok(path(obj, &["spec", "template", "spec"])
        .or_else(|| path(obj, &["spec", "jobTemplate", "spec", "template", "spec"]))
        .or_else(|| get(obj, "spec")))
}

fn pod_spec<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let obj = args.first().ok_or(ExecutionError::MissingArgumentOrTarget)?;
    match find_pod_spec(&**obj)? {
        Some(spec) if spec.downcast_ref::<CelMap>().is_some() => Ok(CowVal::Owned(spec.clone_as_boxed())),
        _ => Ok(CowVal::owned(CelMap::from(HashMap::new()))),
    }
}

fn pod_containers<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let obj = args.first().ok_or(ExecutionError::MissingArgumentOrTarget)?;
    let mut all: Vec<Box<dyn Val + 'v>> = Vec::new();
    if let Some(spec) = find_pod_spec(&**obj)? {
        for kind in ["containers", "initContainers", "ephemeralContainers"] {
            // null or a wrong type means "none of this kind".
            if let Some(list) = get(spec, kind).and_then(|l| l.downcast_ref::<CelList>()) {
                all.extend(list.inner().iter().map(|c| c.clone_as_boxed()));
            }
        }
    }
    Ok(CowVal::owned(CelList::from(all)))
}

/// The parts of an image reference: registry, repository (with registry, without tag or
/// digest), tag and digest. Docker Hub is implied when the first path part is no host name.
pub struct ImageRef<'a> {
    pub registry: &'a str,
    pub repository: &'a str,
    pub tag: &'a str,
    pub digest: &'a str,
}

pub fn parse_image(image: &str) -> ImageRef<'_> {
    let (name, digest) = image.split_once('@').unwrap_or((image, ""));
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repository, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
        None => (name, ""),
    };
    let registry = match repository.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    };
    ImageRef {
        registry,
        repository,
        tag,
        digest,
    }
}

fn image_part<'b, 'v>(
    args: Vec<CowVal<'b, 'v>>,
    name: &str,
    part: fn(ImageRef<'_>) -> &str,
) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let image = string_arg(&args, 0, name)?;
    Ok(CowVal::owned(CelString::from(part(parse_image(image)).to_string())))
}

fn image_registry<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    image_part(args, "image_registry", |i| i.registry)
}
fn image_repository<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    image_part(args, "image_repository", |i| i.repository)
}
fn image_tag<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    image_part(args, "image_tag", |i| i.tag)
}
fn image_digest<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    image_part(args, "image_digest", |i| i.digest)
}

fn exec_command<'b, 'v>(args: Vec<CowVal<'b, 'v>>) -> Result<CowVal<'b, 'v>, ExecutionError> {
    let uri = string_arg(&args, 0, "exec_command")?;
    let list: Vec<Box<dyn Val>> = exec_args(uri)
        .into_iter()
        .map(|a| Box::new(CelString::from(a)) as Box<dyn Val>)
        .collect();
    Ok(CowVal::owned(CelList::from(list)))
}

/// The `command` parameters of a request URI's query, decoded (`+` is a space, `%2F` a `/`).
pub fn exec_args(uri: &str) -> Vec<String> {
    let Some((_, query)) = uri.split_once('?') else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.into_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_command_lines() {
        let uri = "/api/v1/namespaces/a/pods/p/exec?command=%2Fbin%2Fsh&command=-c&command=curl+x+%7C+sh&container=c&stdin=true";
        assert_eq!(exec_args(uri), ["/bin/sh", "-c", "curl x | sh"]);
        assert!(exec_args("/api/v1/namespaces/a/pods/p/exec").is_empty());
        assert_eq!(exec_args("/x?container=c&command=ls"), ["ls"]);
        // Bytes that are no UTF-8 are replaced, not an error.
        assert_eq!(exec_args("/x?command=%FF"), ["\u{FFFD}"]);
    }

    #[test]
    fn image_references() {
        let cases = [
            ("nginx", ("docker.io", "nginx", "", "")),
            ("nginx:1.25", ("docker.io", "nginx", "1.25", "")),
            ("library/nginx:latest", ("docker.io", "library/nginx", "latest", "")),
            (
                "registry:5000/team/app:1.2",
                ("registry:5000", "registry:5000/team/app", "1.2", ""),
            ),
            (
                "registry:5000/team/app",
                ("registry:5000", "registry:5000/team/app", "", ""),
            ),
            ("ghcr.io/a/b@sha256:abc", ("ghcr.io", "ghcr.io/a/b", "", "sha256:abc")),
            (
                "localhost/app:v1@sha256:0f",
                ("localhost", "localhost/app", "v1", "sha256:0f"),
            ),
        ];
        for (image, (registry, repository, tag, digest)) in cases {
            let r = parse_image(image);
            assert_eq!(
                (r.registry, r.repository, r.tag, r.digest),
                (registry, repository, tag, digest),
                "{image}"
            );
        }
    }
}

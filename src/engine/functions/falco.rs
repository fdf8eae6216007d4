//! Falco's k8saudit and json fields, extracted the way the plugin does (as the reference
//! describes `extract.go`): every value is a string (booleans `"true"`, numbers and objects as
//! compact JSON), a field is scalar or a list, and an absent field or an empty list has no value
//! at all, which makes every comparison false. Two plugin bugs are not carried over (documented
//! in the reference): `ka.sourceips` reads the top-level `sourceIPs`, and `eff_run_as_*` read
//! `securityContext`.
//!
//! In CEL a field is `falco_field(root, 'name', 'arg')`: a list of strings computed here from one
//! top-level part of the event (`root`), never an error.

use crate::engine::json::J;
use serde_json::Value;

/// What a field reads and whether it is a list field.
pub struct FieldInfo {
    /// The CEL variable holding the part of the event the field reads.
    pub root: &'static str,
    pub list: bool,
}

const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "image.repository",
    "command",
    "args",
    "privileged",
    "allow_privilege_escalation",
    "read_only_fs",
    "run_as_user",
    "run_as_group",
    "eff_run_as_user",
    "eff_run_as_group",
    "proc_mount",
    "add_capabilities",
    "host_port",
];

/// The fields this importer knows; `None` for any other.
pub fn info(field: &str, arg: Option<&str>) -> Option<FieldInfo> {
    let scalar = |root| Some(FieldInfo { root, list: false });
    let list = |root| Some(FieldInfo { root, list: true });
    match field {
        "ka.auditid" | "ka.stage" | "ka.verb" | "ka.uri" | "ka.uri.param" | "ka.useragent" => scalar("_top"),
        "ka.sourceips" => list("_top"),
        "ka.auth.decision"
        | "ka.auth.reason"
        | "ka.auth.openshift.decision"
        | "ka.auth.openshift.username"
        | "ka.validations.admission.policy.failure"
        | "ka.security.pod.violations"
        | "ka.cluster.name" => scalar("annotations"),
        "ka.user.name" => scalar("user"),
        "ka.user.groups" => list("user"),
        "ka.impuser.name" => scalar("impersonatedUser"),
        "ka.target.name"
        | "ka.target.namespace"
        | "ka.target.resource"
        | "ka.target.subresource"
        | "ka.req.configmap.name" => scalar("objectRef"),
        "ka.target.pod.name" => scalar("_top"),
        "ka.resp.name" => scalar("responseObject"),
        "ka.response.code" | "ka.response.reason" => scalar("responseStatus"),
        "ka.req.binding.role"
        | "ka.req.configmap.obj"
        | "ka.req.service.type"
        | "ka.req.pod.host_network"
        | "ka.req.container.host_network"
        | "ka.req.pod.host_pid"
        | "ka.req.pod.host_ipc"
        | "ka.req.pod.run_as_user"
        | "ka.req.pod.run_as_group"
        | "ka.req.pod.fs_group"
        | "ka.req.volume.hostpath"
        | "ka.req.container.image"
        | "ka.req.container.image.repository"
        | "ka.req.container.privileged" => scalar("requestObject"),
        "ka.req.binding.subject.has_name" => scalar("_top"),
        "ka.req.binding.subjects"
        | "ka.req.binding.subjects.user_names"
        | "ka.req.binding.subjects.serviceaccount_names"
        | "ka.req.binding.subjects.serviceaccount_ns_names"
        | "ka.req.binding.subjects.group_names"
        | "ka.req.role.rules"
        | "ka.req.role.rules.apiGroups"
        | "ka.req.role.rules.resources"
        | "ka.req.role.rules.verbs"
        | "ka.req.role.rules.nonResourceURLs"
        | "ka.req.service.ports"
        | "ka.req.pod.supplemental_groups"
        | "ka.req.pod.volumes.hostpath"
        | "ka.req.pod.volumes.flexvolume_driver"
        | "ka.req.pod.volumes.volume_type" => list("requestObject"),
        "json.value" | "jevt.value" => {
            let first = arg?.trim_start_matches('/').split('/').next().unwrap_or_default();
            match first {
                "requestObject" => scalar("requestObject"),
                "responseObject" => scalar("responseObject"),
                _ => scalar("_top"),
            }
        }
        "json.obj" | "jevt.obj" | "json.rawtime" | "jevt.rawtime" => scalar("_top"),
        _ => {
            for family in ["containers", "initContainers", "ephemeralContainers"] {
                if let Some(x) = field.strip_prefix("ka.req.pod.").and_then(|f| f.strip_prefix(family)) {
                    if let Some(x) = x.strip_prefix('.') {
                        if CONTAINER_FIELDS.contains(&x) && !(family == "ephemeralContainers" && x == "host_port") {
                            return list("requestObject");
                        }
                    }
                }
            }
            None
        }
    }
}

/// A JSON tree the extraction reads: `serde_json` (the interpreter's value, converted) or the
/// compiled path's tree borrowed from the event ([`J`]), so one extraction serves both.
pub trait Tree: Sized {
    fn get(&self, key: &str) -> Option<&Self>;
    fn as_str(&self) -> Option<&str>;
    fn items(&self) -> Option<&[Self]>;
    /// An object's keys, each once, sorted (as `serde_json`'s map keeps them).
    fn keys(&self) -> Option<Vec<&str>>;
    fn is_true(&self) -> bool;
    /// Falco's text for a value: strings as they are, anything else as compact JSON.
    fn text(&self) -> String;
    fn pretty(&self) -> String;
}

impl Tree for Value {
    fn get(&self, key: &str) -> Option<&Value> {
        Value::get(self, key)
    }
    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }
    fn items(&self) -> Option<&[Value]> {
        self.as_array().map(Vec::as_slice)
    }
    fn keys(&self) -> Option<Vec<&str>> {
        self.as_object().map(|m| m.keys().map(String::as_str).collect())
    }
    fn is_true(&self) -> bool {
        self == &Value::Bool(true)
    }
    fn text(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
    fn pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The borrowed tree reads as its `serde_json` conversion would (`J::to_json`); the caller
/// makes sure no part of it is nested too deep.
impl Tree for J<'_> {
    fn get(&self, key: &str) -> Option<&Self> {
        J::get(self, key)
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            _ => None,
        }
    }
    fn items(&self) -> Option<&[Self]> {
        match self {
            J::Arr(items) => Some(items),
            _ => None,
        }
    }
    fn keys(&self) -> Option<Vec<&str>> {
        match self {
            J::Obj(entries) => {
                let mut keys = J::distinct_keys(entries);
                keys.sort_unstable();
                Some(keys)
            }
            _ => None,
        }
    }
    fn is_true(&self) -> bool {
        matches!(self, J::Bool(true))
    }
    fn text(&self) -> String {
        match self {
            J::Str(s) => s.to_string(),
            J::Bool(b) => b.to_string(),
            J::Int(i) => i.to_string(),
            J::UInt(u) => u.to_string(),
            other => other.to_json().map(|v| v.to_string()).unwrap_or_default(),
        }
    }
    fn pretty(&self) -> String {
        self.to_json().map(|v| v.pretty()).unwrap_or_default()
    }
}

fn at<'a, T: Tree>(v: &'a T, path: &[&str]) -> Option<&'a T> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn one<T: Tree>(v: Option<&T>) -> Vec<String> {
    v.map(|v| vec![v.text()]).unwrap_or_default()
}

/// An index argument: a non-negative integer without leading zeros.
fn index(arg: &str) -> Option<usize> {
    if arg.is_empty() || (arg.len() > 1 && arg.starts_with('0')) {
        return None;
    }
    arg.parse().ok()
}

/// The elements of an array, or the one an index argument picks.
fn pick<'a, T: Tree>(array: Option<&'a T>, arg: &str) -> Vec<&'a T> {
    let Some(items) = array.and_then(T::items) else {
        return Vec::new();
    };
    match index(arg) {
        Some(i) => items.get(i).into_iter().collect(),
        None => items.iter().collect(),
    }
}

/// A JSON pointer (RFC 6901) into a tree, as `serde_json::Value::pointer` reads one.
fn pointer<'a, T: Tree>(root: &'a T, pointer: &str) -> Option<&'a T> {
    if pointer.is_empty() {
        return Some(root);
    }
    if !pointer.starts_with('/') {
        return None;
    }
    pointer.split('/').skip(1).try_fold(root, |target, token| {
        let token = token.replace("~1", "/").replace("~0", "~");
        match target.items() {
            Some(items) => {
                if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
                    return None;
                }
                token.parse::<usize>().ok().and_then(|i| items.get(i))
            }
            None => target.get(&token),
        }
    })
}

/// `split(":")[0]`, then `split("@")[0]`, as the plugin does.
fn falco_repository(image: &str) -> String {
    image
        .split(':')
        .next()
        .unwrap_or_default()
        .split('@')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// The keys of its root (the part of the event [`info`] names) that [`extract`] reads for a
/// field; empty: any of them. The compiled path hands `extract` only these (a pod's metadata
/// and status, say, are never converted for a field of its spec).
pub fn root_keys(field: &str) -> &'static [&'static str] {
    match field {
        "ka.auditid" => &["auditID"],
        "ka.stage" => &["stage"],
        "ka.verb" => &["verb"],
        "ka.uri" | "ka.uri.param" => &["requestURI"],
        "ka.useragent" => &["userAgent"],
        "ka.sourceips" => &["sourceIPs"],
        "ka.target.pod.name" => &["objectRef", "responseObject"],
        "ka.resp.name" => &["metadata"],
        "json.rawtime" | "jevt.rawtime" => &["stageTimestamp"],
        "ka.req.configmap.obj" => &["data"],
        f if f.starts_with("ka.req.binding.") => &["roleRef", "subjects"],
        f if f.starts_with("ka.req.role.") => &["rules"],
        f if f.starts_with("ka.req.service.")
            || f.starts_with("ka.req.pod.")
            || f.starts_with("ka.req.container.")
            || f.starts_with("ka.req.volume.") =>
        {
            &["spec"]
        }
        _ => &[],
    }
}

/// The values of `field` (argument `arg`, "" for none) in `root`, the part of the event
/// [`info`] names.
pub fn extract<T: Tree>(field: &str, arg: &str, root: &T) -> Vec<String> {
    let req = root;
    match field {
        "ka.auditid" => one(root.get("auditID")),
        "ka.stage" => one(root.get("stage")),
        "ka.verb" => one(root.get("verb")),
        "ka.uri" => one(root.get("requestURI")),
        "ka.useragent" => one(root.get("userAgent")),
        "ka.uri.param" => {
            let Some(uri) = root.get("requestURI").and_then(T::as_str) else {
                return Vec::new();
            };
            let query = uri.split_once('?').map(|(_, q)| q).unwrap_or_default();
            query
                .split('&')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (k == arg).then(|| percent_decode(v))
                })
                .take(1)
                .collect()
        }
        "ka.sourceips" => pick(root.get("sourceIPs"), arg).into_iter().map(T::text).collect(),
        "ka.auth.decision" => one(root.get("authorization.k8s.io/decision")),
        "ka.auth.reason" => one(root.get("authorization.k8s.io/reason")),
        "ka.auth.openshift.decision" => one(root.get("authentication.openshift.io/decision")),
        "ka.auth.openshift.username" => one(root.get("authentication.openshift.io/username")),
        "ka.validations.admission.policy.failure" => {
            one(root.get("validation.policy.admission.k8s.io/validation_failure"))
        }
        "ka.security.pod.violations" => one(root.get("pod-security.kubernetes.io/audit-violations")),
        "ka.cluster.name" => one(root.get("cluster_name")),
        "ka.user.name" | "ka.impuser.name" => one(root.get("username")),
        "ka.user.groups" => pick(root.get("groups"), "").into_iter().map(T::text).collect(),
        "ka.target.name" | "ka.req.configmap.name" => one(root.get("name")),
        "ka.target.namespace" => one(root.get("namespace")),
        "ka.target.resource" => one(root.get("resource")),
        "ka.target.subresource" => one(root.get("subresource")),
        "ka.target.pod.name" => {
            let is_pod = at(root, &["objectRef", "resource"]).and_then(T::as_str) == Some("pods");
            let sub = at(root, &["objectRef", "subresource"])
                .and_then(T::as_str)
                .unwrap_or_default();
            if is_pod && sub.is_empty() {
                one(at(root, &["responseObject", "metadata", "name"]))
            } else {
                Vec::new()
            }
        }
        "ka.resp.name" => one(at(root, &["metadata", "name"])),
        "ka.response.code" => one(root.get("code")),
        "ka.response.reason" => one(root.get("reason")),
        "ka.req.binding.role" => one(at(req, &["roleRef", "name"])),
        "ka.req.binding.subjects" => pick(req.get("subjects"), "").into_iter().map(T::text).collect(),
        "ka.req.binding.subjects.user_names" => subject_names(req, "User"),
        "ka.req.binding.subjects.serviceaccount_names" => subject_names(req, "ServiceAccount"),
        "ka.req.binding.subjects.group_names" => subject_names(req, "Group"),
        "ka.req.binding.subjects.serviceaccount_ns_names" => pick(req.get("subjects"), "")
            .into_iter()
            .filter(|s| s.get("kind").and_then(T::as_str) == Some("ServiceAccount"))
            .filter_map(|s| {
                Some(format!(
                    "{}:{}",
                    s.get("namespace")?.as_str()?,
                    s.get("name").and_then(T::as_str).unwrap_or_default()
                ))
            })
            .collect(),
        "ka.req.binding.subject.has_name" => vec!["true".into()],
        "ka.req.role.rules" => pick(req.get("rules"), arg).into_iter().map(T::text).collect(),
        "ka.req.role.rules.apiGroups"
        | "ka.req.role.rules.resources"
        | "ka.req.role.rules.verbs"
        | "ka.req.role.rules.nonResourceURLs" => {
            let key = field.rsplit('.').next().unwrap_or_default();
            pick(req.get("rules"), arg)
                .into_iter()
                .flat_map(|r| pick(r.get(key), ""))
                .map(T::text)
                .collect()
        }
        "ka.req.configmap.obj" => one(req.get("data")),
        "ka.req.service.type" => one(at(req, &["spec", "type"])),
        "ka.req.service.ports" => one(at(req, &["spec", "ports"])),
        "ka.req.pod.host_network" | "ka.req.container.host_network" => one(at(req, &["spec", "hostNetwork"])),
        "ka.req.pod.host_pid" => one(at(req, &["spec", "hostPID"])),
        "ka.req.pod.host_ipc" => one(at(req, &["spec", "hostIPC"])),
        "ka.req.pod.run_as_user" => one(at(req, &["spec", "securityContext", "runAsUser"])),
        "ka.req.pod.run_as_group" => one(at(req, &["spec", "securityContext", "runAsGroup"])),
        "ka.req.pod.fs_group" => one(at(req, &["spec", "securityContext", "fsGroup"])),
        "ka.req.pod.supplemental_groups" => pick(at(req, &["spec", "securityContext", "supplementalGroups"]), "")
            .into_iter()
            .map(T::text)
            .collect(),
        "ka.req.pod.volumes.hostpath" => volumes(req, arg)
            .filter_map(|v| at(v, &["hostPath", "path"]))
            .map(T::text)
            .collect(),
        "ka.req.pod.volumes.flexvolume_driver" => volumes(req, arg)
            .filter_map(|v| at(v, &["flexVolume", "driver"]))
            .map(T::text)
            .collect(),
        "ka.req.pod.volumes.volume_type" => volumes(req, arg)
            .filter_map(T::keys)
            .flat_map(|keys| {
                keys.into_iter()
                    .filter(|k| *k != "name")
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect(),
        "ka.req.volume.hostpath" => {
            let paths: Vec<&str> = volumes(req, "")
                .filter_map(|v| at(v, &["hostPath", "path"]).and_then(T::as_str))
                .collect();
            if at(req, &["spec", "volumes"]).and_then(T::items).is_none() {
                return Vec::new();
            }
            let hit = paths.iter().any(|p| match arg.strip_suffix('*') {
                Some(prefix) => p.starts_with(prefix),
                None => *p == arg,
            });
            vec![hit.to_string()]
        }
        "ka.req.container.image" => one(at(req, &["spec", "containers"])
            .and_then(T::items)
            .and_then(<[T]>::first)
            .and_then(|c| c.get("image"))),
        "ka.req.container.image.repository" => at(req, &["spec", "containers"])
            .and_then(T::items)
            .and_then(<[T]>::first)
            .and_then(|c| c.get("image"))
            .and_then(T::as_str)
            .map(|i| vec![falco_repository(i)])
            .unwrap_or_default(),
        "ka.req.container.privileged" => {
            let Some(containers) = at(req, &["spec", "containers"]).and_then(T::items) else {
                return Vec::new();
            };
            let any = containers
                .iter()
                .any(|c| at(c, &["securityContext", "privileged"]).is_some_and(T::is_true));
            vec![any.to_string()]
        }
        "json.value" | "jevt.value" => {
            let Some(path) = root_relative(arg) else {
                return Vec::new();
            };
            one(pointer(root, &path))
        }
        "json.obj" | "jevt.obj" => vec![root.pretty()],
        "json.rawtime" | "jevt.rawtime" => root
            .get("stageTimestamp")
            .and_then(T::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| t.timestamp_nanos_opt())
            .map(|n| vec![n.to_string()])
            .unwrap_or_default(),
        _ => container_field(field, arg, req),
    }
}

/// A json pointer relative to the root [`info`] chose (`/requestObject/spec` → `/spec`).
fn root_relative(arg: &str) -> Option<String> {
    if !arg.starts_with('/') {
        return None;
    }
    for big in ["/requestObject", "/responseObject"] {
        if let Some(rest) = arg.strip_prefix(big) {
            if rest.is_empty() || rest.starts_with('/') {
                return Some(rest.to_string());
            }
        }
    }
    Some(arg.to_string())
}

fn subject_names<T: Tree>(req: &T, kind: &str) -> Vec<String> {
    pick(req.get("subjects"), "")
        .into_iter()
        .filter(|s| s.get("kind").and_then(T::as_str) == Some(kind))
        .filter_map(|s| s.get("name"))
        .map(T::text)
        .collect()
}

fn volumes<'a, T: Tree>(req: &'a T, arg: &str) -> impl Iterator<Item = &'a T> {
    pick(at(req, &["spec", "volumes"]), arg).into_iter()
}

fn container_field<T: Tree>(field: &str, arg: &str, req: &T) -> Vec<String> {
    let Some(rest) = field.strip_prefix("ka.req.pod.") else {
        return Vec::new();
    };
    let Some((family, x)) = rest.split_once('.') else {
        return Vec::new();
    };
    let containers = pick(at(req, &["spec", family]), arg);
    let sc = |c: &T, k: &str| at(c, &["securityContext", k]).map(T::text);
    match x {
        // Strict: one container without it and the field is absent.
        "name" | "image" | "image.repository" => {
            let key = if x == "name" { "name" } else { "image" };
            let values: Option<Vec<String>> = containers
                .iter()
                .map(|c| c.get(key).and_then(T::as_str).map(str::to_string))
                .collect();
            let values = values.unwrap_or_default();
            if x == "image.repository" {
                values.iter().map(|i| falco_repository(i)).collect()
            } else {
                values
            }
        }
        "command" | "args" => containers
            .iter()
            .filter_map(|c| c.get(x).and_then(T::items))
            .map(|a| a.iter().map(T::text).collect::<Vec<_>>().join(" "))
            .collect(),
        "privileged" => containers.iter().filter_map(|c| sc(c, "privileged")).collect(),
        "allow_privilege_escalation" => containers
            .iter()
            .filter_map(|c| sc(c, "allowPrivilegeEscalation"))
            .collect(),
        "read_only_fs" => containers
            .iter()
            .filter_map(|c| sc(c, "readOnlyRootFilesystem"))
            .collect(),
        "run_as_user" => containers.iter().filter_map(|c| sc(c, "runAsUser")).collect(),
        "run_as_group" => containers.iter().filter_map(|c| sc(c, "runAsGroup")).collect(),
        "eff_run_as_user" | "eff_run_as_group" => {
            let key = if x == "eff_run_as_user" {
                "runAsUser"
            } else {
                "runAsGroup"
            };
            let pod = at(req, &["spec", "securityContext", key]).map(T::text);
            containers
                .iter()
                .map(|c| sc(c, key).or_else(|| pod.clone()).unwrap_or_else(|| "0".into()))
                .collect()
        }
        "proc_mount" => containers.iter().filter_map(|c| sc(c, "procMount")).collect(),
        "add_capabilities" => containers
            .iter()
            .filter_map(|c| at(*c, &["securityContext", "capabilities", "add"]))
            .map(T::text)
            .collect(),
        "host_port" => containers
            .iter()
            .flat_map(|c| pick(c.get("ports"), ""))
            .filter_map(|p| p.get("hostPort").or_else(|| p.get("containerPort")))
            .map(T::text)
            .collect(),
        _ => Vec::new(),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 3;
                }
                Err(_) => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Falco's string operators that CEL lacks: `icontains`, `glob`, `iglob`, `pmatch`, `regex`
/// (anchored at both ends).
pub fn string_op(op: &str, v: &str, x: &str) -> Result<bool, String> {
    Ok(match op {
        "icontains" => v.to_ascii_lowercase().contains(&x.to_ascii_lowercase()),
        "glob" => glob(x, v),
        "iglob" => glob(&x.to_ascii_lowercase(), &v.to_ascii_lowercase()),
        "pmatch" => {
            let x = x.trim_end_matches('/');
            let vs: Vec<&str> = v.split('/').collect();
            let xs: Vec<&str> = x.split('/').collect();
            xs.len() <= vs.len() && xs.iter().zip(&vs).all(|(p, s)| glob(p, s))
        }
        "regex" => crate::engine::functions::compiled_regex(&format!("^(?:{x})$"))
            .map_err(|e| format!("regex {x:?}: {e}"))?
            .is_match(v),
        other => return Err(format!("unknown operator {other}")),
    })
}

/// Shell glob over the whole text: `*`, `?`, `[...]`.
fn glob(pattern: &str, text: &str) -> bool {
    let mut re = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(".*"),
            '?' => re.push('.'),
            '[' => {
                re.push('[');
                if chars.peek() == Some(&'!') {
                    chars.next();
                    re.push('^');
                }
                for c in chars.by_ref() {
                    if c == ']' {
                        break;
                    }
                    if c == '\\' || c == '^' {
                        re.push('\\');
                    }
                    re.push(c);
                }
                re.push(']');
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    crate::engine::functions::compiled_regex(&re).is_ok_and(|r| r.is_match(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn container_fields_follow_the_plugin() {
        let req = json!({"spec": {"containers": [
            {"name": "a", "image": "nginx:1.2", "securityContext": {"privileged": true}},
            {"name": "b", "image": "reg:5000/app@sha256:1"},
        ], "volumes": [{"name": "v", "hostPath": {"path": "/proc"}}, {"name": "w", "emptyDir": {}}]}});
        assert_eq!(extract("ka.req.pod.containers.privileged", "", &req), ["true"]);
        assert_eq!(
            extract("ka.req.pod.containers.image.repository", "", &req),
            ["nginx", "reg"]
        );
        assert_eq!(
            extract("ka.req.pod.containers.image", "1", &req),
            ["reg:5000/app@sha256:1"]
        );
        assert!(extract("ka.req.pod.containers.image", "01", &req).len() == 2);
        assert_eq!(extract("ka.req.pod.volumes.hostpath", "", &req), ["/proc"]);
        assert_eq!(
            extract("ka.req.pod.volumes.volume_type", "", &req),
            ["hostPath", "emptyDir"]
        );
        assert_eq!(extract("ka.req.volume.hostpath", "/pro*", &req), ["true"]);
        assert_eq!(extract("ka.req.container.privileged", "", &req), ["true"]);
        assert!(extract("ka.req.pod.initContainers.image", "", &req).is_empty());
        let strict = json!({"spec": {"containers": [{"name": "a"}, {"image": "x"}]}});
        assert!(extract("ka.req.pod.containers.name", "", &strict).is_empty());
        assert_eq!(
            extract("jevt.value", "/requestObject/spec/containers/0/name", &req),
            ["a"]
        );
        assert_eq!(
            extract("ka.req.pod.host_network", "", &json!({"spec": {"hostNetwork": true}})),
            ["true"]
        );
        assert_eq!(
            extract(
                "ka.uri.param",
                "command",
                &json!({"requestURI": "/x/exec?command=sh&command=-c&tty=1"})
            ),
            ["sh"]
        );
    }

    #[test]
    fn string_operators() {
        assert!(string_op("glob", "/etc/passwd", "/etc/*").unwrap());
        assert!(!string_op("glob", "/etc/a/b", "/etc/?").unwrap());
        assert!(string_op("pmatch", "/var/run/docker.sock", "/var/run").unwrap());
        assert!(!string_op("pmatch", "/var/runx", "/var/run").unwrap());
        assert!(string_op("regex", "abc", "a.c").unwrap() && !string_op("regex", "xabc", "a.c").unwrap());
        assert!(string_op("icontains", "Hello", "ELL").unwrap());
    }
}

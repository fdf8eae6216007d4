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

mod aks;
mod eks;
mod gke;

use aks::aks;
use eks::eks;

use super::Event;
pub use gke::gke;
use gke::{gke_message, pubsub_data};
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

pub(super) fn str_of<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

// ---------------------------------------------------------------------------------------------
// EKS

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NATIVE: &str =
        r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"create"}"#;

    pub(super) fn ok(results: Vec<Result<Record, String>>) -> Vec<(String, Option<String>)> {
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
    }
}

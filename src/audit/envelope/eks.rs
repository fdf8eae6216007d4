//! EKS: CloudWatch Logs records (alone, in subscription-filter batches, in a Lambda's `awslogs`
//! payload, as `filter-log-events` prints them), each `message` a native Event.

use super::{embedded_event, str_of, InflateBudget, Record};
use serde_json::{Map, Value};

/// `/aws/eks/<cluster>/cluster` → `<cluster>`.
fn eks_cluster(log_group: &str) -> Option<String> {
    let name = log_group.strip_prefix("/aws/eks/")?.strip_suffix("/cluster")?;
    (!name.is_empty()).then(|| name.to_string())
}

pub(super) fn eks(object: Map<String, Value>, budget: &InflateBudget) -> Vec<Result<Record, String>> {
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

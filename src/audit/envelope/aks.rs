//! AKS: diagnostic records whose `properties.log` holds the native Event, alone or in Event
//! Hub's `{"records": […]}`.

use super::{embedded_event, str_of, Record};
use serde_json::{Map, Value};

/// `/SUBSCRIPTIONS/…/MANAGEDCLUSTERS/<NAME>` → `<name>`.
fn aks_cluster(resource_id: &str) -> Option<String> {
    let lower = resource_id.to_ascii_lowercase();
    let (_, name) = lower.rsplit_once("/managedclusters/")?;
    let name = name.split('/').next()?;
    (!name.is_empty()).then(|| name.to_string())
}

pub(super) fn aks(object: Map<String, Value>) -> Vec<Result<Record, String>> {
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

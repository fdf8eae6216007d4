//! Elastic Common Schema 8.11 for an alert, with the field names of Elastic's Kubernetes audit
//! integration (`logs-kubernetes.audit_logs-*`), so Elastic's prebuilt rules and dashboards read
//! the triggering event where they expect it:
//!
//! - `kubernetes.audit.*`: the event under its own names, annotation keys with `.` turned into
//!   `_` (`kubernetes.audit.annotations.authorization_k8s_io/decision`), the bodies' `metadata`
//!   removed, as the integration's ingest pipeline does; the bodies themselves only with
//!   `include_event` (they can be large);
//! - `event.kind: alert`, `event.action` = verb, `event.outcome` from the authorizer's decision
//!   (allow → success, as the integration does, not from the HTTP code), `event.severity` and
//!   `event.risk_score` on Elastic's scale (21 low, 47 medium, 73 high, 99 critical);
//! - `rule.*`, `threat.*` (MITRE ATT&CK from the tags), `orchestrator.*` (the cluster, which the
//!   integration itself does not carry), `user`, `source.ip`/`client.ip` (the TCP peer: the last
//!   of `sourceIPs`), `user_agent.original`;
//! - `kaudit.*`: the alert id, dedup and window, the rendered output fields.

use super::{mitre, rule_uid, Prepared};
use serde_json::{json, Map, Value};

pub const VERSION: &str = "8.11.0";

/// Elastic's risk score of a Falco priority.
pub fn risk_score(priority: &str) -> u8 {
    match priority.to_ascii_lowercase().as_str() {
        "emergency" | "alert" | "critical" => 99,
        "error" => 73,
        "warning" => 47,
        _ => 21,
    }
}

pub fn document(p: &Prepared) -> Value {
    let a = p.alert;
    let score = risk_score(&a.priority);
    let m = mitre(&a.tags);
    let mut doc = json!({
        "@timestamp": a.time,
        "ecs": {"version": VERSION},
        "message": p.output,
        "tags": a.tags,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["info"],
            "id": a.id,
            "module": "kaudit",
            "dataset": "kaudit.alerts",
            "provider": "kaudit",
            "severity": score,
            "risk_score": score,
            "start": a.dedup.first_seen,
            "end": a.dedup.last_seen,
        },
        "rule": {
            "id": rule_uid(&a.rule),
            "name": a.rule,
            "ruleset": "kaudit",
        },
        "host": {"hostname": a.hostname},
        "orchestrator": {"type": "kubernetes", "cluster": {"name": a.cluster}},
        "kaudit": {
            "alert_id": a.id,
            "audit_id": a.audit_id,
            "priority": a.priority,
            "dedup": a.dedup,
            "output_fields": p.output_fields,
        },
    });
    if let Some(window) = &a.window {
        doc["kaudit"]["window"] = serde_json::to_value(window).unwrap_or_default();
    }
    if !m.tactics.is_empty() || !m.techniques.is_empty() {
        let mut threat = json!({"framework": "MITRE ATT&CK"});
        if !m.tactics.is_empty() {
            threat["tactic"] = json!({
                "id": m.tactics.iter().map(|t| t.0).collect::<Vec<_>>(),
                "name": m.tactics.iter().map(|t| t.1).collect::<Vec<_>>(),
                "reference": m.tactics.iter().map(|t| format!("https://attack.mitre.org/tactics/{}/", t.0)).collect::<Vec<_>>(),
            });
        }
        if !m.techniques.is_empty() {
            threat["technique"] = json!({
                "id": m.techniques,
                "reference": m.techniques.iter().map(|t| format!("https://attack.mitre.org/techniques/{}/", t.replace('.', "/"))).collect::<Vec<_>>(),
            });
        }
        doc["threat"] = threat;
    }
    let Some(event) = p.event.as_ref() else { return doc };
    let s = |ptr: &str| event.pointer(ptr).and_then(Value::as_str);
    if let Some(verb) = s("/verb") {
        doc["event"]["action"] = verb.into();
    }
    doc["event"]["outcome"] = match s("/annotations/authorization.k8s.io~1decision") {
        Some("allow") => "success",
        Some(_) => "failure",
        None => "unknown",
    }
    .into();
    if let Some(name) = s("/user/username") {
        doc["user"] = json!({"name": name});
        if let Some(uid) = s("/user/uid") {
            doc["user"]["id"] = uid.into();
        }
    }
    if let Some(ip) = event
        .get("sourceIPs")
        .and_then(Value::as_array)
        .and_then(|ips| ips.last())
        .and_then(Value::as_str)
    {
        doc["source"] = json!({"ip": ip});
        doc["client"] = json!({"ip": ip});
    }
    if let Some(agent) = s("/userAgent") {
        doc["user_agent"] = json!({"original": agent});
    }
    let orchestrator = &mut doc["orchestrator"];
    if let Some(ns) = s("/objectRef/namespace") {
        orchestrator["namespace"] = ns.into();
    }
    if let Some(resource) = s("/objectRef/resource") {
        orchestrator["resource"] = json!({"type": resource});
        if let Some(name) = s("/objectRef/name") {
            orchestrator["resource"]["name"] = name.into();
        }
    }
    if let Some(version) = s("/objectRef/apiVersion") {
        orchestrator["api_version"] = version.into();
    }
    doc["kubernetes"] = json!({"audit": audit(event, p.include_event)});
    doc
}

/// The event as the integration indexes it.
fn audit(event: &Value, bodies: bool) -> Value {
    let mut out = Map::new();
    let Some(fields) = event.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in fields {
        match key.as_str() {
            "requestObject" | "responseObject" => {
                if bodies {
                    let mut body = value.clone();
                    if let Some(b) = body.as_object_mut() {
                        b.remove("metadata");
                    }
                    out.insert(key.clone(), body);
                }
            }
            "annotations" => {
                let renamed: Map<String, Value> = value
                    .as_object()
                    .map(|a| a.iter().map(|(k, v)| (k.replace('.', "_"), v.clone())).collect())
                    .unwrap_or_default();
                out.insert(key.clone(), Value::Object(renamed));
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

//! OCSF 1.3.0 Detection Finding (`class_uid` 2004) for an alert, with the audit event as
//! evidence in the shape of API Activity (6003).
//!
//! - `finding_info.uid` is the alert's dedup key: every alert of one key (the first, its summary,
//!   the next window's) is the same finding, so a SIEM upserts it. `activity_id` is 1 Create for
//!   an alert that opens its key and 2 Update for one that reports suppressed repeats (a summary,
//!   or an alert carrying the count); `count` and `finding_info.related_events_count` say how many
//!   matches it stands for, `first_seen_time`/`last_seen_time` over which span.
//! - `metadata.uid` is the alert id (one per message, stable under redelivery).
//! - `severity_id` from the Falco priority: Emergency 6 Fatal, Alert and Critical 5 Critical,
//!   Error 4 High, Warning 3 Medium, Notice 2 Low, Informational and Debug 1 Informational.
//! - Each evidence carries `actor` (user, groups, the authorizer's decision), `api` (verb,
//!   group, version, `request.uid` = audit ID, the response code), `src_endpoint` (the last of
//!   `sourceIPs`, the TCP peer; the others as `intermediate_ips`: they come from
//!   X-Forwarded-For), `http_request` (user agent, path and query) and `resources` (the object,
//!   with its namespace); `data` is the whole (redacted) event with `include_event`.

use super::{epoch_ms, mitre, rule_uid, Prepared};
use serde_json::{json, Map, Value};

pub const VERSION: &str = "1.3.0";

pub fn severity(priority: &str) -> (u8, &'static str) {
    match priority.to_ascii_lowercase().as_str() {
        "emergency" => (6, "Fatal"),
        "alert" | "critical" => (5, "Critical"),
        "error" => (4, "High"),
        "warning" => (3, "Medium"),
        "notice" => (2, "Low"),
        _ => (1, "Informational"),
    }
}

pub fn finding(p: &Prepared) -> Value {
    let a = p.alert;
    let update = a.dedup.suppressed > 0;
    let (activity_id, activity_name) = if update { (2, "Update") } else { (1, "Create") };
    let (severity_id, severity_name) = severity(&a.priority);
    let m = mitre(&a.tags);
    let tactic = m.tactics.first().map(|(uid, name)| json!({"uid": uid, "name": name}));
    let mut attacks: Vec<Value> = m
        .techniques
        .iter()
        .map(|t| {
            let mut attack = json!({"technique": {"uid": t}, "version": "v15"});
            if let Some(tactic) = &tactic {
                attack["tactic"] = tactic.clone();
            }
            attack
        })
        .collect();
    if attacks.is_empty() {
        if let Some(tactic) = &tactic {
            attacks.push(json!({"tactic": tactic, "version": "v15"}));
        }
    }
    let resources: Vec<Value> = resource(p).into_iter().collect();
    let mut unmapped = json!({
        "cluster": a.cluster,
        "hostname": a.hostname,
        "priority": a.priority,
        "output_fields": p.output_fields,
        "dedup": a.dedup,
    });
    if let Some(window) = &a.window {
        unmapped["window"] = serde_json::to_value(window).unwrap_or_default();
    }
    json!({
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": 2,
        "category_name": "Findings",
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "type_uid": 200400 + activity_id,
        "type_name": format!("Detection Finding: {activity_name}"),
        "severity_id": severity_id,
        "severity": severity_name,
        "time": epoch_ms(&a.time),
        "message": p.output,
        "status_id": 1,
        "status": "New",
        "is_alert": true,
        "count": a.dedup.count,
        "metadata": {
            "version": VERSION,
            "product": {"name": "kaudit", "vendor_name": "kaudit", "version": env!("CARGO_PKG_VERSION")},
            "uid": a.id,
            "correlation_uid": a.dedup.key,
            "log_name": "k8s_audit",
            "original_time": a.time,
            "tenant_uid": a.cluster,
        },
        "finding_info": {
            "uid": a.dedup.key,
            "title": a.rule,
            "desc": p.output,
            "analytic": {"uid": rule_uid(&a.rule), "name": a.rule, "type_id": 1, "type": "Rule"},
            "first_seen_time": epoch_ms(&a.dedup.first_seen),
            "last_seen_time": epoch_ms(&a.dedup.last_seen),
            "related_events_count": a.dedup.count,
            "attacks": attacks,
            "types": a.tags,
            "data_sources": ["k8s_audit"],
        },
        "evidences": [evidence(p)],
        "resources": resources,
        "unmapped": unmapped,
    })
}

/// The object acted on, as an OCSF resource.
fn resource(p: &Prepared) -> Option<Value> {
    let event = p.event.as_ref()?;
    let object_ref = event.get("objectRef")?.as_object()?;
    let get = |k: &str| object_ref.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut kind = get("resource").to_string();
    if !get("subresource").is_empty() {
        kind = format!("{kind}/{}", get("subresource"));
    }
    let mut r = Map::new();
    r.insert("type".into(), kind.into());
    for (ours, theirs) in [
        ("name", "name"),
        ("namespace", "namespace"),
        ("uid", "uid"),
        ("apiVersion", "version"),
    ] {
        if !get(ours).is_empty() {
            r.insert(theirs.into(), get(ours).into());
        }
    }
    if !get("apiGroup").is_empty() {
        r.insert("group".into(), json!({"name": get("apiGroup")}));
    }
    Some(Value::Object(r))
}

/// The audit event as API Activity attributes.
fn evidence(p: &Prepared) -> Value {
    let a = p.alert;
    let mut e = Map::new();
    let Some(event) = p.event.as_ref() else {
        // No event at hand (an alert read back from a topic): what the alert itself says.
        e.insert(
            "api".into(),
            json!({"operation": "unknown", "request": {"uid": a.audit_id}}),
        );
        return Value::Object(e);
    };
    let s = |ptr: &str| event.pointer(ptr).and_then(Value::as_str);
    let mut user = Map::new();
    if let Some(name) = s("/user/username") {
        user.insert("name".into(), name.into());
    }
    if let Some(uid) = s("/user/uid") {
        user.insert("uid".into(), uid.into());
    }
    if let Some(groups) = event.pointer("/user/groups").and_then(Value::as_array) {
        let groups: Vec<Value> = groups
            .iter()
            .filter_map(Value::as_str)
            .map(|g| json!({"name": g}))
            .collect();
        user.insert("groups".into(), groups.into());
    }
    let mut actor = json!({"user": user});
    if let Some(decision) = s("/annotations/authorization.k8s.io~1decision") {
        let mut authorization = json!({"decision": decision});
        if let Some(reason) = s("/annotations/authorization.k8s.io~1reason").filter(|r| !r.is_empty()) {
            authorization["policy"] = json!({"name": reason});
        }
        actor["authorizations"] = json!([authorization]);
    }
    if let Some(impersonated) = event.get("impersonatedUser") {
        actor["invoked_by"] = json!(impersonated.get("username").and_then(Value::as_str).unwrap_or_default());
    }
    e.insert("actor".into(), actor);
    let mut api = json!({
        "operation": s("/verb").unwrap_or("unknown"),
        "service": {"name": "kube-apiserver"},
        "request": {"uid": s("/auditID").unwrap_or(&a.audit_id)},
    });
    if let Some(version) = s("/objectRef/apiVersion") {
        api["version"] = version.into();
    }
    if let Some(group) = s("/objectRef/apiGroup").filter(|g| !g.is_empty()) {
        api["group"] = json!({"name": group});
    }
    if let Some(code) = event.pointer("/responseStatus/code").and_then(Value::as_i64) {
        api["response"] = json!({"code": code});
        if let Some(message) = s("/responseStatus/message") {
            api["response"]["message"] = message.into();
        }
        if code >= 400 {
            api["response"]["error"] = s("/responseStatus/reason").unwrap_or("failure").into();
        }
    }
    e.insert("api".into(), api);
    let ips: Vec<&str> = event
        .get("sourceIPs")
        .and_then(Value::as_array)
        .map(|ips| ips.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if let Some((peer, forwarded)) = ips.split_last() {
        let mut src = json!({"ip": peer});
        if !forwarded.is_empty() {
            src["intermediate_ips"] = json!(forwarded);
        }
        e.insert("src_endpoint".into(), src);
    }
    let mut http = Map::new();
    if let Some(agent) = s("/userAgent") {
        http.insert("user_agent".into(), agent.into());
    }
    if let Some(uri) = s("/requestURI") {
        let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
        let mut url = json!({"path": path});
        if !query.is_empty() {
            url["query_string"] = query.into();
        }
        http.insert("url".into(), url);
    }
    if !http.is_empty() {
        e.insert("http_request".into(), Value::Object(http));
    }
    if let Some(r) = resource(p) {
        e.insert("resources".into(), json!([r]));
    }
    if p.include_event {
        e.insert("data".into(), event.clone());
    }
    Value::Object(e)
}

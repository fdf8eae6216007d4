//! The Alert: what kaudit says when a rule fires.
//!
//! A superset of Falco's JSON output (`time`, `rule`, `priority`, `source`, `output`,
//! `output_fields`, `tags`, `hostname`), so falcosidekick and parsers written for Falco read it
//! unchanged, plus `id`, `cluster`, `audit_id`, `dedup` and, for stateful rules, `window`. The `id` is a hash of rule, cluster,
//! audit ID, stage and the request's receive time: a redelivered event produces the same id, so
//! consumers (and JetStream's `Nats-Msg-Id`) can drop duplicates. The receive time is in the hash
//! because the audit ID is whatever the client sent in its `Audit-ID` header: without it, a
//! second request reusing an earlier audit ID would have its alert dropped as a "duplicate".

use crate::audit::EventView;
use crate::engine::{Firing, Rule};
pub mod encode;
pub mod redact;
pub mod sink;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    /// The event time (`stageTimestamp`), RFC 3339.
    pub time: String,
    pub rule: String,
    /// Falco's title-case priority.
    pub priority: String,
    pub source: String,
    pub output: String,
    pub output_fields: serde_json::Map<String, serde_json::Value>,
    pub tags: Vec<String>,
    pub hostname: String,
    pub cluster: String,
    pub audit_id: String,
    pub dedup: Dedup,
    /// Stateful rules: the window that fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowInfo>,
    /// The event behind the alert and its bus context: not in the alert's own JSON (an
    /// encoding may embed the event, redacted; the context travels as message headers).
    #[serde(skip)]
    pub origin: Origin,
}

/// The event behind an alert, and its bus context.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Origin {
    /// The triggering audit event (a shared buffer, not a copy).
    pub event: Option<crate::audit::Event>,
    /// W3C trace context continuing the shim's trace of the batch.
    pub traceparent: Option<String>,
    /// When the shim received the event (RFC 3339): alert consumers measure latency from it.
    pub received: Option<String>,
}

/// How many matches this alert stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dedup {
    /// Hash of the dedup key's values; alerts of one key share it.
    pub key: String,
    /// Matches this alert accounts for (itself included).
    pub count: u64,
    /// Matches suppressed since the previous alert of this key.
    pub suppressed: u64,
    pub first_seen: String,
    pub last_seen: String,
}

/// The window of a stateful rule that fired: what the alert stands for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowInfo {
    /// `threshold`, `distinct` or `sequence`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Matches (threshold), distinct values (distinct) or steps (sequence) in the window.
    pub count: u64,
    /// The rule's window, e.g. `15m`.
    pub window: String,
    /// Event times of the window's first and last match.
    pub first_seen: String,
    pub last_seen: String,
}

impl Alert {
    /// The alert for `firing` of `rule` on `view`.
    pub fn new(rule: &Rule, firing: Firing, view: &EventView<'_>, cluster: &str, hostname: &str) -> Alert {
        let audit_id = view.audit_id().into_owned();
        let stage = view.stage();
        let time = view.time().map(|t| t.into_owned()).unwrap_or_default();
        let received = view.str("requestReceivedTimestamp").unwrap_or_default();
        Alert {
            id: digest(&[&rule.name, cluster, &audit_id, &stage, &received]),
            time: time.clone(),
            rule: rule.name.clone(),
            priority: rule.priority.as_str().to_string(),
            source: "k8s_audit".into(),
            output: firing.output,
            output_fields: firing.output_fields,
            tags: rule.tags.clone(),
            hostname: hostname.to_string(),
            cluster: cluster.to_string(),
            audit_id,
            dedup: Dedup {
                key: firing.dedup_key,
                count: 1,
                suppressed: 0,
                first_seen: time.clone(),
                last_seen: time,
            },
            window: None,
            origin: Origin::default(),
        }
    }
}

/// A stable 128-bit hex digest of the parts (NUL-separated, so parts cannot run together).
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a"]).len(), 32);
    }
}

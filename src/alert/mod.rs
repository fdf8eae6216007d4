//! The Alert: what kaudit says when a rule fires.
//!
//! A superset of Falco's JSON output (`time`, `rule`, `priority`, `source`, `output`,
//! `output_fields`, `tags`, `hostname`), so falcosidekick and parsers written for Falco read it
//! unchanged, plus `id`, `cluster`, `audit_id`, `dedup` and, for stateful rules, `window`. The `id` is a hash of rule, cluster,
//! audit ID, stage and the request's receive time: a redelivered event produces the same id, so
//! consumers (and JetStream's `Nats-Msg-Id`) can drop duplicates. The receive time is in the hash
//! because the audit ID is whatever the client sent in its `Audit-ID` header: without it, a
//! second request reusing an earlier audit ID would have its alert dropped as a "duplicate".

pub mod encode;
pub mod redact;
pub mod sink;

use serde::{Deserialize, Serialize};

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

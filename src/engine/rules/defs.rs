//! What the items of a rule file say, as read: rules, macros and lists with their dedup,
//! stateful windows, exceptions and metadata. The loader (`super`) merges them across files;
//! the engine compiles them.

use super::Origin;
use serde::Deserialize;
use std::fmt;

/// Falco's priorities, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Emergency,
    Alert,
    Critical,
    Error,
    Warning,
    Notice,
    Informational,
    Debug,
}

impl Priority {
    pub fn parse(s: &str) -> Option<Priority> {
        Some(match s.to_ascii_lowercase().as_str() {
            "emergency" => Priority::Emergency,
            "alert" => Priority::Alert,
            "critical" => Priority::Critical,
            "error" => Priority::Error,
            "warning" => Priority::Warning,
            "notice" => Priority::Notice,
            "informational" | "info" => Priority::Informational,
            "debug" => Priority::Debug,
            _ => return None,
        })
    }

    /// Title case, as Falco writes it in alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "Emergency",
            Priority::Alert => "Alert",
            Priority::Critical => "Critical",
            Priority::Error => "Error",
            Priority::Warning => "Warning",
            Priority::Notice => "Notice",
            Priority::Informational => "Informational",
            Priority::Debug => "Debug",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A list item: lists hold strings, numbers or booleans.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
}

impl Scalar {
    /// The item as text (`443`, `true`, `nginx`).
    pub fn text(&self) -> String {
        match self {
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::String(s) => s.clone(),
        }
    }
}

/// Exceptions to a rule: when one matches, the rule does not fire.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionDef {
    pub name: String,
    /// CEL expressions (usually field paths) compared with `values`.
    #[serde(default)]
    pub fields: Vec<String>,
    /// One comparison per field: `==` (default), `!=`, `in`, `startsWith`, `endsWith`, `contains`.
    #[serde(default)]
    pub comps: Vec<String>,
    /// Tuples of values, one per field; any tuple that matches makes the exception apply.
    #[serde(default)]
    pub values: Vec<Vec<ExceptionValue>>,
    /// Or a CEL condition of its own.
    #[serde(default)]
    pub condition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ExceptionValue {
    One(Scalar),
    Many(Vec<Scalar>),
}

/// A rule's `dedup`: `off` (or `false`), or a key, a window and a burst.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "dedup: `off`, or {key: [expressions], window: 10m, burst: 1} (window required, no other fields)"
)]
pub enum DedupDef {
    Flag(bool),
    Word(String),
    Spec(DedupSpec),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DedupSpec {
    /// CEL expressions whose values form the key; default: cluster, user, namespace.
    #[serde(default)]
    pub key: Option<Vec<String>>,
    /// `10m`, `30s`, `1h`.
    pub window: String,
    /// Alerts let through per key per window (default 1).
    #[serde(default)]
    pub burst: Option<u32>,
}

/// A stateful rule's window: `threshold`, `distinct` or `sequence` (one of them).
#[derive(Debug, Clone, PartialEq)]
pub enum StatefulDef {
    Threshold(ThresholdSpec),
    Distinct(DistinctSpec),
    Sequence(SequenceSpec),
    NewTerms(NewTermsSpec),
}

/// `threshold: {count: 20, window: 15m, key: [...]}`: `count` matches per key within the window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdSpec {
    pub count: u32,
    pub window: String,
    /// CEL expressions whose values form the key; default: cluster, user.
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// `distinct: {field: objectRef.name, count: 15, window: 30m}`: `count` distinct values per key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistinctSpec {
    /// A CEL expression: its distinct values are counted.
    pub field: String,
    pub count: u32,
    pub window: String,
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// `new_terms: {field: user.username, key: [cluster], horizon: 30d, learn: 7d}`: fires the first
/// time a value of `field` (a list makes a tuple) is seen for the key within `horizon`, once the
/// key has been learning for `learn` (default: the horizon).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTermsSpec {
    pub field: String,
    pub horizon: String,
    #[serde(default)]
    pub learn: Option<String>,
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// `sequence: {steps: [a, b], window: 5m}`: the steps' conditions match, in this order, for one
/// key within the window.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceSpec {
    /// CEL conditions (macro names, typically), in order.
    pub steps: Vec<String>,
    pub window: String,
    #[serde(default)]
    pub key: Option<Vec<String>>,
}

/// A rule after all files are applied.
#[derive(Debug, Clone)]
pub struct RuleDef {
    pub name: String,
    pub desc: String,
    pub condition: String,
    pub condition_origin: Origin,
    pub output: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub exceptions: Vec<ExceptionDef>,
    pub dedup: Option<DedupDef>,
    /// Stateful rules: the window that turns matches into an alert.
    pub stateful: Option<StatefulDef>,
    pub meta: RuleMetaDef,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct MacroDef {
    pub name: String,
    pub condition: String,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct ListDef {
    pub name: String,
    pub items: Vec<Scalar>,
    pub origin: Origin,
}

/// Events a rule must fire on (`positive`) and must not (`negative`), written in the rule file.
/// For a per-event rule each event is checked alone; for a stateful rule each list is one
/// stream (the positive one fires exactly once).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixturesDef {
    /// Lists as the fixtures assume them (replacing the rule files' items), for a rule whose
    /// lists are the site's to fill (see `requires`).
    #[serde(default)]
    pub lists: std::collections::BTreeMap<String, Vec<Scalar>>,
    #[serde(default)]
    pub positive: Vec<serde_json::Value>,
    #[serde(default)]
    pub negative: Vec<serde_json::Value>,
}

/// What a rule says about itself beyond its logic: the audit level it needs, the detection
/// ideas it covers (`detection-ideas.md` numbers), the Falco rules it corresponds to, fixtures.
#[derive(Debug, Clone, Default)]
pub struct RuleMetaDef {
    pub needs: Option<crate::audit::Level>,
    pub covers: Vec<String>,
    pub falco: Vec<String>,
    /// Lists the rule is quiet without: it is evaluated only once each has items.
    pub requires: Vec<String>,
    pub fixtures: Option<FixturesDef>,
}

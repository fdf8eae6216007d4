//! What a rule asks of the stages after it: how its alerts are rate-limited (`dedup`) and, for
//! the stateful rule types, which window turns matches into an alert (`threshold`, `distinct`,
//! `sequence`). The engine compiles these from rule files; `dedup/` applies them.

use super::rules::{DedupDef, StatefulDef};
use std::num::NonZeroU32;
use std::time::Duration;

/// How a rule's alerts are rate-limited: `burst` alerts per key per `window`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DedupPolicy {
    pub window: Duration,
    pub burst: NonZeroU32,
}

/// A rule's choice about dedup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupSetting {
    /// The pipeline's default policy applies (the rule says nothing).
    Default,
    /// `dedup: off`: every alert goes out.
    Off,
    Policy(DedupPolicy),
}

/// The key of a rule's dedup or window when it names none.
pub const DEFAULT_DEDUP_KEY: [&str; 3] = ["cluster", "user.username", "objectRef.namespace"];
pub const DEFAULT_WINDOW_KEY: [&str; 2] = ["cluster", "user.username"];

/// The dedup setting and key expressions of a rule's `dedup` item (or the pipeline default's).
pub fn dedup_setting(def: Option<&DedupDef>) -> Result<(DedupSetting, Vec<String>), String> {
    let default_key = || DEFAULT_DEDUP_KEY.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match def {
        None => Ok((DedupSetting::Default, default_key())),
        Some(DedupDef::Flag(false)) => Ok((DedupSetting::Off, default_key())),
        Some(DedupDef::Word(w)) if w == "off" => Ok((DedupSetting::Off, default_key())),
        Some(DedupDef::Flag(true)) | Some(DedupDef::Word(_)) => {
            Err("expected `off` or {key: [...], window: 10m, burst: 1}".into())
        }
        Some(DedupDef::Spec(spec)) => {
            let window = positive_window(&spec.window)?;
            let burst = NonZeroU32::new(spec.burst.unwrap_or(1)).ok_or("burst must be at least 1")?;
            let key = spec.key.clone().unwrap_or_else(default_key);
            Ok((DedupSetting::Policy(DedupPolicy { window, burst }), key))
        }
    }
}

/// Which window a stateful rule keeps per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WindowKind {
    /// `count` matches within the window.
    Threshold,
    /// `count` distinct values of a field within the window.
    Distinct,
    /// Every step, in order, within the window.
    Sequence { steps: usize },
    /// A value of the field not seen for the key within the window (the horizon), once the
    /// key has been learning this long.
    NewTerms { learn: Duration },
}

impl WindowKind {
    /// The rule type's name, as rule files and alerts spell it.
    pub fn name(&self) -> &'static str {
        match self {
            WindowKind::Threshold => "threshold",
            WindowKind::Distinct => "distinct",
            WindowKind::Sequence { .. } => "sequence",
            WindowKind::NewTerms { .. } => "new_terms",
        }
    }
}

/// A stateful rule's window, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPolicy {
    pub kind: WindowKind,
    /// Matches (threshold) or distinct values (distinct) that fire; the step count (sequence).
    pub count: u32,
    pub window: Duration,
}

/// The expressions of a stateful rule besides its condition.
pub struct WindowSources {
    pub policy: WindowPolicy,
    pub key: Vec<String>,
    /// `distinct`: the expression whose distinct values are counted.
    pub field: Option<String>,
    /// `sequence`: one condition per step.
    pub steps: Vec<String>,
}

pub fn window_sources(def: &StatefulDef) -> Result<WindowSources, String> {
    let key = |k: &Option<Vec<String>>| {
        k.clone()
            .unwrap_or_else(|| DEFAULT_WINDOW_KEY.iter().map(|s| s.to_string()).collect())
    };
    let count = |c: u32| {
        if c == 0 {
            Err("count must be at least 1".to_string())
        } else {
            Ok(c)
        }
    };
    Ok(match def {
        StatefulDef::Threshold(t) => WindowSources {
            policy: WindowPolicy {
                kind: WindowKind::Threshold,
                count: count(t.count)?,
                window: positive_window(&t.window)?,
            },
            key: key(&t.key),
            field: None,
            steps: Vec::new(),
        },
        StatefulDef::Distinct(d) => WindowSources {
            policy: WindowPolicy {
                kind: WindowKind::Distinct,
                count: count(d.count)?,
                window: positive_window(&d.window)?,
            },
            key: key(&d.key),
            field: Some(d.field.clone()),
            steps: Vec::new(),
        },
        StatefulDef::NewTerms(n) => {
            let horizon = positive_window(&n.horizon)?;
            let learn = match &n.learn {
                Some(l) => parse_duration(l)?,
                None => horizon,
            };
            WindowSources {
                policy: WindowPolicy {
                    kind: WindowKind::NewTerms { learn },
                    count: 1,
                    window: horizon,
                },
                key: key(&n.key),
                field: Some(n.field.clone()),
                steps: Vec::new(),
            }
        }
        StatefulDef::Sequence(s) => {
            if !(2..=16).contains(&s.steps.len()) {
                return Err(format!("a sequence has 2 to 16 steps, not {}", s.steps.len()));
            }
            WindowSources {
                policy: WindowPolicy {
                    kind: WindowKind::Sequence { steps: s.steps.len() },
                    count: s.steps.len() as u32,
                    window: positive_window(&s.window)?,
                },
                key: key(&s.key),
                field: None,
                steps: s.steps.clone(),
            }
        }
    })
}

/// `10m`, `30s`, `1h30m` (humantime), longer than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("duration `{text}`: {e}"))
}

fn positive_window(text: &str) -> Result<Duration, String> {
    let window = parse_duration(text)?;
    if window.is_zero() {
        return Err("window must be longer than zero".into());
    }
    Ok(window)
}

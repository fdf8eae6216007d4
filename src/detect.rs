//! The detect stage: one event through the rules, their windows, the alert and its rate limit.
//!
//! Every maker of alerts — the detector, `kaudit scan`, `kaudit rules test` — goes through this
//! one loop, so an alert means the same wherever it is made: evaluate (the engine) → the rule's
//! window, for stateful rules (dedup) → render the output (the engine; a stateful rule's only
//! when its window fires) → the [`Alert`] → its rate limit (dedup). The engine and dedup know
//! nothing of each other; this stage joins them.

use crate::alert::{Alert, Dedup, Origin};
use crate::audit::{Event, EventView};
use crate::dedup::{event_nanos, Deduper, Shard, Verdict, Windowed};
use crate::engine::{Firing, Rule, RuleSet};
use crate::ids::digest;
use std::time::Duration;

/// Where an event came from.
#[derive(Debug, Default, Clone, Copy)]
pub struct Source<'a> {
    pub cluster: &'a str,
    /// The partition it was read from: dedup state is kept per partition.
    pub shard: Shard,
    /// The event's trace (the detector's span for it, or the shim's): each alert's
    /// `traceparent` continues it.
    pub trace: Option<&'a opentelemetry::Context>,
    /// When the shim received the event (RFC 3339).
    pub received: Option<&'a str>,
}

/// The rules and the state one event goes through.
pub struct Detect<'a> {
    pub rules: &'a RuleSet,
    pub deduper: &'a Deduper,
    /// The host named in alerts.
    pub hostname: &'a str,
    /// Most time one event's evaluation may take (rules past it are skipped, and said so).
    pub budget: Option<Duration>,
}

impl<'a> Detect<'a> {
    /// This host's name in alerts, no budget.
    pub fn new(rules: &'a RuleSet, deduper: &'a Deduper) -> Detect<'a> {
        Detect {
            rules,
            deduper,
            hostname: crate::ids::hostname(),
            budget: None,
        }
    }

    /// Detects on a delivery from the bus, at `position` in its partition: `None` when the
    /// shard's state holds it already (a redelivery of what a checkpoint or hand-over took
    /// in), which is not applied again.
    pub fn delivery(
        &self,
        event: &Event,
        source: &Source<'_>,
        position: Option<u64>,
        out: &mut Vec<Alert>,
    ) -> Option<Vec<(usize, Verdict)>> {
        if position.is_some_and(|p| !self.deduper.take_in(source.shard, p)) {
            return None;
        }
        Some(self.event(event, source, out))
    }

    /// Detects on one event: its alerts go to `out` (a summary of a closed rate-limit window may
    /// come first); returns what became of each rule's match, by rule index.
    pub fn event(&self, event: &Event, source: &Source<'_>, out: &mut Vec<Alert>) -> Vec<(usize, Verdict)> {
        let view = event.view();
        let mut verdicts = Vec::new();
        let firings = self.rules.evaluate_within(&view, source.cluster, self.budget);
        if firings.is_empty() {
            return verdicts;
        }
        let now = event_nanos(&view.time().unwrap_or_default());
        for mut firing in firings {
            let index = firing.rule;
            let rule = self.rules.rule(index);
            let window = match self
                .deduper
                .window(rule, firing.observation.as_ref(), now, source.shard)
            {
                Windowed::Held => {
                    verdicts.push((index, Verdict::Held));
                    continue;
                }
                Windowed::Late => {
                    verdicts.push((index, Verdict::Late));
                    continue;
                }
                Windowed::Fired(window) => Some(window),
                Windowed::None => None,
            };
            self.rules.render(&mut firing, &view, source.cluster);
            let mut alert = alert(rule, firing, &view, source.cluster, self.hostname);
            alert.window = window;
            alert.origin = Origin {
                event: Some(event.clone()),
                traceparent: source.trace.and_then(crate::telemetry::otel::traceparent),
                received: source.received.map(String::from),
            };
            verdicts.push((index, self.deduper.limit(rule, alert, source.shard, out)));
        }
        verdicts
    }
}

/// The alert for `firing` of `rule` on `view`.
pub fn alert(rule: &Rule, firing: Firing, view: &EventView<'_>, cluster: &str, hostname: &str) -> Alert {
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

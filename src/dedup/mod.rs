//! Rate-limited dedup of alerts, on event time.
//!
//! A rule with `dedup: {key: [expr, ...], window: 10m, burst: 1}` lets `burst` alerts per key
//! through per window (governor's GCRA, keyed by the alert's dedup key, with a clock that reads
//! the event's `stageTimestamp` rather than the wall: a scan of a log file and the live pipeline
//! decide alike). Repeats inside the window are suppressed and counted; the next alert of that
//! key that passes carries `dedup.count`, `dedup.suppressed`, `first_seen` and `last_seen`;
//! `flush` turns keys still holding suppressed repeats into summary alerts (the end of a scan).
//! Rules without `dedup` (or `dedup: off`) pass every match.

use crate::alert::Alert;
use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a rule's alerts are rate-limited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupPolicy {
    pub window: Duration,
    pub burst: NonZeroU32,
}

/// Governor's clock, set to each alert's event time before it is checked.
#[derive(Debug, Clone, Default)]
struct EventClock(Arc<AtomicU64>);

impl Clock for EventClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.0.load(Ordering::Relaxed))
    }
}

type Limiter = RateLimiter<
    u64,
    governor::state::keyed::DefaultKeyedStateStore<u64>,
    EventClock,
    governor::middleware::NoOpMiddleware<Nanos>,
>;

/// Suppressed repeats of one key since its last alert.
struct Pending {
    suppressed: u64,
    first_seen: String,
    last_seen: String,
    /// The first suppressed alert: a summary is built from it.
    first: Alert,
}

#[derive(Default)]
pub struct Deduper {
    clock: EventClock,
    admitted: AtomicU64,
    limiters: Mutex<HashMap<(String, DedupPolicyKey), Arc<Limiter>>>,
    pending: Mutex<HashMap<String, Pending>>,
}

type DedupPolicyKey = (u64, u32);

/// Stale keys are purged after this many alerts.
const PURGE_EVERY: u64 = 10_000;

impl Deduper {
    pub fn new() -> Deduper {
        Deduper::default()
    }

    /// Decides whether `alert` goes out under its rule's `policy` (none: always); when it does,
    /// it carries the count of the repeats suppressed before it.
    pub fn admit(&self, alert: &mut Alert, policy: Option<&DedupPolicy>) -> bool {
        let Some(policy) = policy else { return true };
        self.clock.0.store(event_nanos(&alert.time), Ordering::Relaxed);
        if self.admitted.fetch_add(1, Ordering::Relaxed) % PURGE_EVERY == PURGE_EVERY - 1 {
            self.purge();
        }
        let limiter = self.limiter(&alert.rule, policy);
        let fingerprint = u64::from_str_radix(&alert.dedup.key[..16.min(alert.dedup.key.len())], 16).unwrap_or(0);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if limiter.check_key(&fingerprint).is_ok() {
            if let Some(p) = pending.remove(&alert.dedup.key) {
                alert.dedup.suppressed = p.suppressed;
                alert.dedup.count = p.suppressed + 1;
                alert.dedup.first_seen = p.first_seen;
            }
            return true;
        }
        match pending.get_mut(&alert.dedup.key) {
            Some(p) => {
                p.suppressed += 1;
                p.last_seen = alert.time.clone();
            }
            None => {
                pending.insert(
                    alert.dedup.key.clone(),
                    Pending {
                        suppressed: 1,
                        first_seen: alert.time.clone(),
                        last_seen: alert.time.clone(),
                        first: alert.clone(),
                    },
                );
            }
        }
        false
    }

    /// Summary alerts for every key that still holds suppressed repeats.
    pub fn flush(&self) -> Vec<Alert> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<Alert> = pending
            .drain()
            .map(|(_, p)| {
                let mut a = p.first;
                a.dedup.count = p.suppressed;
                a.dedup.suppressed = p.suppressed;
                a.dedup.first_seen = p.first_seen;
                a.dedup.last_seen = p.last_seen;
                a
            })
            .collect();
        out.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        out
    }

    /// Forgets keys whose window has passed (their state equals a fresh key's).
    fn purge(&self) {
        for limiter in self.limiters.lock().unwrap_or_else(|e| e.into_inner()).values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// Keys with live rate-limit state.
    pub fn live_keys(&self) -> usize {
        self.limiters
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|l| l.len())
            .sum()
    }

    fn limiter(&self, rule: &str, policy: &DedupPolicy) -> Arc<Limiter> {
        let key = (rule.to_string(), (policy.window.as_nanos() as u64, policy.burst.get()));
        let mut limiters = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        limiters
            .entry(key)
            .or_insert_with(|| {
                let period = policy.window / policy.burst.get();
                let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                    .expect("period is positive")
                    .allow_burst(policy.burst);
                Arc::new(RateLimiter::dashmap_with_clock(quota, self.clock.clone()))
            })
            .clone()
    }
}

/// Nanoseconds since the epoch of an RFC 3339 time; now when it cannot be read.
fn event_nanos(time: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64)
        .unwrap_or_else(|_| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64)
}

/// `10m`, `30s`, `1h30m` (humantime).
pub fn parse_window(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("window `{text}`: {e}"))
}

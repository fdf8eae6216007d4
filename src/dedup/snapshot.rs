//! A shard's state as it is stored — a checkpoint before a commit, or a hand-over when its
//! partition moves — and as its next owner installs it. JSON: the sample events of held repeats
//! go in as the JSON they are.

use super::positions::Positions;
use super::{new_limit, window, Pending, State};
use crate::alert::Alert;
use crate::engine::stateful::DedupPolicy;
use governor::nanos::Nanos;
use serde::{Deserialize, Serialize};
use std::time::Duration;

impl State {
    /// The state as it is stored: what a successor installs, and the positions it must not
    /// apply again.
    pub(super) fn snapshot(&self) -> Vec<u8> {
        let snapshot = Snapshot {
            limits: self
                .limits
                .iter()
                .map(|(policy, limit)| HandoverLimit {
                    window_ns: policy.window.as_nanos() as u64,
                    burst: policy.burst.get(),
                    keys: limit.keys.map().iter().map(|(k, t)| (*k, u64::from(*t))).collect(),
                })
                .collect(),
            pending: self
                .pending
                .iter()
                .map(|(key, p)| PendingRef {
                    key,
                    suppressed: p.suppressed,
                    first_seen: &p.first_seen,
                    last_seen: &p.last_seen,
                    closes: p.closes,
                    sample: &p.sample,
                    event: p
                        .sample
                        .origin
                        .event
                        .as_ref()
                        .and_then(|e| serde_json::from_slice(e.bytes()).ok()),
                })
                .collect(),
            windows: self.windows.entries().collect(),
            newest: self.newest,
            positions: self.absorbed.union(&self.restored),
        };
        serde_json::to_vec(&snapshot).expect("a snapshot serializes")
    }

    /// A state stored by [`State::snapshot`].
    pub(super) fn restore(bytes: &[u8], lateness: Duration, max_keys: usize) -> serde_json::Result<State> {
        let handover: Handover = serde_json::from_slice(bytes)?;
        let mut state = State::new(lateness, max_keys);
        for l in handover.limits {
            let policy = DedupPolicy {
                window: Duration::from_nanos(l.window_ns),
                burst: std::num::NonZeroU32::new(l.burst).unwrap_or(std::num::NonZeroU32::MIN),
            };
            let limit = new_limit(&policy, &state.clock);
            limit
                .keys
                .map()
                .extend(l.keys.into_iter().map(|(k, t)| (k, Nanos::from(t))));
            state.limits.insert(policy, limit);
        }
        for p in handover.pending {
            let mut sample = p.sample;
            sample.origin.event = p
                .event
                .and_then(|e| crate::audit::Event::from_json(e.get().as_bytes().to_vec()).ok());
            state.next_close = state.next_close.min(p.closes);
            state.pending.insert(
                p.key,
                Pending {
                    suppressed: p.suppressed,
                    first_seen: p.first_seen,
                    last_seen: p.last_seen,
                    closes: p.closes,
                    sample,
                },
            );
        }
        state.windows.restore(handover.windows);
        state.newest = handover.newest;
        state.restored = handover.positions;
        Ok(state)
    }
}

/// A shard's state as it travels to the shard's next owner (read back as a [`Handover`]).
#[derive(Serialize)]
struct Snapshot<'a> {
    limits: Vec<HandoverLimit>,
    pending: Vec<PendingRef<'a>>,
    windows: Vec<(&'a u64, &'a window::KeyState)>,
    newest: u64,
    positions: Positions,
}

#[derive(Serialize)]
struct PendingRef<'a> {
    key: &'a str,
    suppressed: u64,
    first_seen: &'a str,
    last_seen: &'a str,
    closes: u64,
    sample: &'a Alert,
    /// The sample's event, as the JSON it is.
    event: Option<&'a serde_json::value::RawValue>,
}

/// A shard's state as its next owner reads it.
#[derive(Deserialize)]
struct Handover {
    limits: Vec<HandoverLimit>,
    pending: Vec<HandoverPending>,
    windows: Vec<(u64, window::KeyState)>,
    newest: u64,
    /// Positions of the deliveries the state holds that may not be committed yet.
    #[serde(default)]
    positions: Positions,
}

#[derive(Serialize, Deserialize)]
struct HandoverLimit {
    window_ns: u64,
    burst: u32,
    /// Key fingerprint → theoretical arrival time (event-time nanoseconds).
    keys: Vec<(u64, u64)>,
}

#[derive(Deserialize)]
struct HandoverPending {
    key: String,
    suppressed: u64,
    first_seen: String,
    last_seen: String,
    closes: u64,
    sample: Alert,
    /// The sample's event (an alert's own JSON leaves it out).
    event: Option<Box<serde_json::value::RawValue>>,
}

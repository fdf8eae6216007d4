//! After the engine: stateful windows, then rate-limited dedup, all on event time.
//!
//! A match of a stateful rule (`threshold`, `distinct`, `sequence`) first goes through its
//! window ([`Deduper::window`]); only a window that fires becomes an alert (the detect stage,
//! `crate::detect`, makes it). Every alert then goes through
//! its rule's rate limit: `dedup: {key, window, burst}`, the pipeline's default for rules that
//! say nothing, or `dedup: off`. The limit is governor's GCRA, keyed by a 64-bit fingerprint of
//! the dedup key, in a state store of our own (one `u64 → u64` map: 16 bytes a key plus the
//! map's overhead) so that the number of keys can be capped, and with a clock that reads the
//! event's `stageTimestamp` rather than the wall: a scan of a log file and the live pipeline
//! decide alike.
//!
//! The first alert of a key passes; repeats inside its window are suppressed and counted. With
//! `summaries` (the default), a key's window closing with suppressed repeats yields a summary
//! alert (`dedup.count` = `dedup.suppressed` = the repeats, `first_seen`/`last_seen` theirs);
//! otherwise the next alert of the key carries them. Either way the `dedup.count` of all alerts
//! adds up to the matches. Windows close on event time: as later events arrive, on the detector's
//! timer (event time advanced by the wall clock since the newest event), and at the end of a scan.
//!
//! State lives with the detector that owns the key: events are partitioned by cluster (Kafka
//! partitions; NATS partition subjects) and every key includes the cluster, so one key is seen by
//! one detector. The state is kept per partition (a [`Shard`]): when a partition moves to another
//! detector (one joins or leaves the group), the one giving it up hands its rate limits, held
//! repeats and windows over ([`Deduper::give_up`] → the bus → [`Deduper::take_over`]), so the
//! group still sends one first alert per key and exact counts.
//!
//! A detector killed without a hand-over leaves its successor the shard's last *checkpoint*: the
//! detector stores a shard's state ([`Deduper::checkpoint`]) before it commits the deliveries
//! it took in, with their positions in the partition. The successor installs it and skips a
//! redelivery of those positions ([`Deduper::take_in`]); what the detector had
//! applied after the checkpoint is uncommitted, so it is delivered again and applied once.
//! Dedup counts, windows and learned terms then go on exactly; alerts sent between the
//! checkpoint and the kill are sent again with the same ids.

pub mod positions;
mod snapshot;
pub mod window;

use crate::alert::{Alert, WindowInfo};
use crate::engine::rules::DedupDef;
use crate::engine::stateful::{parse_duration, DedupPolicy, DedupSetting};
use crate::engine::{Observation, Rule};
use governor::clock::Clock;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use positions::Positions;
use serde::Deserialize;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use window::{Outcome, Windows};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// Rate limits at all; `false` lets every alert through, whatever the rules say.
    pub enabled: bool,
    /// The policy of rules that name none: `"off"` or `{ window = "10m", burst = 1 }` (the key
    /// is then cluster, user, namespace).
    pub default: DedupDef,
    /// Report suppressed repeats in a summary alert when their window closes (otherwise in the
    /// next alert of the key).
    pub summaries: bool,
    /// Live keys kept per partition (rate limits and windows, each); beyond it the oldest are
    /// evicted.
    pub max_keys: usize,
    /// How far out of event-time order a stateful rule's matches may arrive.
    pub allowed_lateness: String,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            enabled: true,
            default: DedupDef::Spec(crate::engine::rules::DedupSpec {
                key: None,
                window: "10m".into(),
                burst: Some(1),
            }),
            summaries: true,
            max_keys: 1_000_000,
            allowed_lateness: "30s".into(),
        }
    }
}

impl DedupConfig {
    /// Every alert goes out: the rules' and the default's rate limits are ignored (stateful
    /// windows still apply: their alert is the window firing, not each match).
    pub fn off() -> DedupConfig {
        DedupConfig {
            enabled: false,
            ..DedupConfig::default()
        }
    }
}

/// What a stateful rule's window made of a match.
#[derive(Debug, Clone, PartialEq)]
pub enum Windowed {
    /// The rule has no window: every match is an alert.
    None,
    /// The window fired: the alert carries it.
    Fired(WindowInfo),
    /// Counted; the window has not fired.
    Held,
    /// Later than the allowed lateness: dropped.
    Late,
}

/// What happened to one match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An alert went out.
    Passed,
    /// Rate-limited: counted for a later summary or alert.
    Suppressed,
    /// Counted by a stateful window that has not fired.
    Held,
    /// A stateful rule's match that arrived later than the allowed lateness.
    Late,
}

/// Identity hasher: the keys are hashes already.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Governor's GCRA state per key: the theoretical arrival time, in event-time nanoseconds.
#[derive(Default, Clone)]
struct KeyStore(Arc<Mutex<KeyMap<Nanos>>>);

impl KeyStore {
    fn map(&self) -> std::sync::MutexGuard<'_, KeyMap<Nanos>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StateStore for KeyStore {
    type Key = u64;
    fn measure_and_replace<T, F, E>(&self, key: &u64, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut map = self.map();
        let (result, tat) = f(map.get(key).copied())?;
        map.insert(*key, tat);
        Ok(result)
    }
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

type Limiter = RateLimiter<u64, KeyStore, EventClock, governor::middleware::NoOpMiddleware<Nanos>>;

/// One policy's limiter and its keys.
struct Limit {
    limiter: Limiter,
    keys: KeyStore,
}

/// Suppressed repeats of one key since its last alert.
struct Pending {
    suppressed: u64,
    first_seen: String,
    last_seen: String,
    /// Event time at which the key's window closes (a new alert would pass).
    closes: u64,
    /// The last suppressed alert: a summary is built from it.
    sample: Alert,
}

/// Largest event a held sample keeps whole; a larger one is kept without its request and
/// response bodies (as the apiserver truncates), so held keys stay small.
const SAMPLE_EVENT_BYTES: usize = 8 * 1024;

fn sample(mut alert: Alert) -> Alert {
    if let Some(event) = &alert.origin.event {
        if event.bytes().len() > SAMPLE_EVENT_BYTES {
            alert.origin.event = Some(event.truncated());
        }
    }
    alert
}

pub use crate::bus::Shard;

/// Everything behind the lock: one batch is admitted at a time, in event order.
struct Shards {
    by: HashMap<Shard, State>,
    lateness: Duration,
    /// Evictions counted by shards given up since.
    evicted: u64,
}

impl Shards {
    fn get(&mut self, shard: Shard, max_keys: usize) -> &mut State {
        let lateness = self.lateness;
        self.by.entry(shard).or_insert_with(|| State::new(lateness, max_keys))
    }
}

/// One shard's state.
struct State {
    clock: EventClock,
    limits: HashMap<DedupPolicy, Limit>,
    pending: HashMap<String, Pending>,
    /// Earliest `closes` among `pending` (summaries are due from then).
    next_close: u64,
    windows: Windows,
    /// Newest event time seen, and when (wall clock) it was seen.
    newest: u64,
    newest_at: Instant,
    evicted: u64,
    /// Positions in the partition (Kafka offsets, JetStream sequence numbers) of the deliveries
    /// this state took in since its last checkpoint.
    absorbed: Positions,
    /// Positions the state held when it was installed, and when: their redelivery is skipped.
    restored: Positions,
    restored_at: Instant,
}

/// How long positions restored with a shard's state are remembered: a broker redelivers what
/// was not committed at once (Kafka) or after its ack wait (JetStream, 30 s by default).
const RESTORED_KEEP: Duration = Duration::from_secs(600);

impl State {
    fn new(lateness: Duration, max_keys: usize) -> State {
        State {
            clock: EventClock::default(),
            limits: HashMap::new(),
            pending: HashMap::new(),
            next_close: u64::MAX,
            windows: Windows::new(lateness, max_keys),
            newest: 0,
            newest_at: Instant::now(),
            evicted: 0,
            absorbed: Positions::default(),
            restored: Positions::default(),
            restored_at: Instant::now(),
        }
    }
}

pub struct Deduper {
    enabled: bool,
    default: Option<DedupPolicy>,
    summaries: bool,
    /// Live keys kept per shard (rate limits and windows, each).
    max_keys: usize,
    state: Mutex<Shards>,
}

impl Deduper {
    pub fn new(config: &DedupConfig) -> anyhow::Result<Deduper> {
        let default = match crate::engine::stateful::dedup_setting(Some(&config.default)) {
            Ok((DedupSetting::Policy(p), _)) => {
                if matches!(&config.default, DedupDef::Spec(s) if s.key.is_some()) {
                    anyhow::bail!("dedup.default: the default's key is cluster, user, namespace; set `key` per rule");
                }
                Some(p)
            }
            Ok(_) => None,
            Err(e) => anyhow::bail!("dedup.default: {e}"),
        };
        let lateness =
            parse_duration(&config.allowed_lateness).map_err(|e| anyhow::anyhow!("dedup.allowed_lateness: {e}"))?;
        Ok(Deduper {
            enabled: config.enabled,
            default,
            summaries: config.summaries,
            max_keys: config.max_keys.max(1),
            state: Mutex::new(Shards {
                by: HashMap::new(),
                lateness,
                evicted: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shards> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A stateful rule's match (`observation`) at event time `now` through its window;
    /// [`Windowed::None`] for a rule without one.
    pub fn window(&self, rule: &Rule, observation: Option<&Observation>, now: u64, shard: Shard) -> Windowed {
        let (Some(window), Some(obs)) = (&rule.window, observation) else {
            return Windowed::None;
        };
        let mut shards = self.lock();
        match shards
            .get(shard, self.max_keys)
            .windows
            .observe(&window.policy, obs, now)
        {
            Outcome::Held => Windowed::Held,
            Outcome::Late => Windowed::Late,
            Outcome::Fired(f) => Windowed::Fired(WindowInfo {
                kind: window.policy.kind.name().into(),
                count: f.count,
                window: humantime::format_duration(window.policy.window).to_string(),
                first_seen: format_nanos(f.first),
                last_seen: format_nanos(f.last),
            }),
        }
    }

    /// An alert through its rule's rate limit: the alerts to publish go to `out` (a summary of
    /// the key's closed window may precede the alert itself).
    pub fn limit(&self, rule: &Rule, alert: Alert, shard: Shard, out: &mut Vec<Alert>) -> Verdict {
        let mut shards = self.lock();
        self.limit_in(shards.get(shard, self.max_keys), rule, alert, out)
    }

    fn limit_in(&self, state: &mut State, rule: &Rule, mut alert: Alert, out: &mut Vec<Alert>) -> Verdict {
        let now = event_nanos(&alert.time);
        if now > state.newest {
            state.newest = now;
            state.newest_at = Instant::now();
        }
        if state.next_close <= now {
            self.close_windows(state, now, out);
        }
        let policy = match &rule.dedup {
            _ if !self.enabled => None,
            DedupSetting::Off => None,
            DedupSetting::Default => self.default.as_ref(),
            DedupSetting::Policy(p) => Some(p),
        };
        let Some(policy) = policy else {
            out.push(alert);
            return Verdict::Passed;
        };
        let fingerprint = u64::from_str_radix(&alert.dedup.key[..16.min(alert.dedup.key.len())], 16).unwrap_or(0);
        let check = {
            state.clock.0.store(now, Ordering::Relaxed);
            let clock = state.clock.clone();
            let limit = state
                .limits
                .entry(policy.clone())
                .or_insert_with(|| new_limit(policy, &clock));
            limit
                .limiter
                .check_key(&fingerprint)
                .map_err(|not_until| u64::from(not_until.earliest_possible()).max(now))
        };
        match check {
            Ok(()) => {
                if let Some(p) = state.pending.remove(&alert.dedup.key) {
                    if self.summaries {
                        out.push(summary(p));
                    } else {
                        alert.dedup.suppressed = p.suppressed;
                        alert.dedup.count = p.suppressed + 1;
                        alert.dedup.first_seen = p.first_seen;
                    }
                }
                out.push(alert);
                self.cap_keys(state, now);
                Verdict::Passed
            }
            Err(closes) => {
                if self.summaries {
                    state.next_close = state.next_close.min(closes);
                }
                match state.pending.get_mut(&alert.dedup.key) {
                    Some(p) => {
                        p.suppressed += 1;
                        p.last_seen = alert.time.clone();
                        p.closes = closes;
                        p.sample = sample(alert);
                    }
                    None => {
                        let key = alert.dedup.key.clone();
                        state.pending.insert(
                            key,
                            Pending {
                                suppressed: 1,
                                first_seen: alert.time.clone(),
                                last_seen: alert.time.clone(),
                                closes,
                                sample: sample(alert),
                            },
                        );
                    }
                }
                Verdict::Suppressed
            }
        }
    }

    /// The detector's timer: event time goes on with the wall clock while no event arrives;
    /// summaries of windows closed by then go to `out`, stale keys are purged.
    pub fn tick(&self, out: &mut Vec<Alert>) {
        let mut shards = self.lock();
        for state in shards.by.values_mut() {
            if state.newest == 0 {
                continue;
            }
            let now = state.newest + state.newest_at.elapsed().as_nanos() as u64;
            if self.summaries {
                self.close_windows(state, now, out);
            }
            purge(state, now);
        }
    }

    /// Summary alerts for every key that still holds suppressed repeats (the end of a scan).
    pub fn flush(&self, out: &mut Vec<Alert>) {
        let mut shards = self.lock();
        let mut all: Vec<Alert> = Vec::new();
        for state in shards.by.values_mut() {
            all.extend(state.pending.drain().map(|(_, p)| summary(p)));
            state.next_close = u64::MAX;
        }
        all.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        out.extend(all);
    }

    /// Keys with live state: rate limits, and windows.
    pub fn live_keys(&self) -> (usize, usize) {
        let shards = self.lock();
        let limits = shards
            .by
            .values()
            .flat_map(|s| s.limits.values())
            .map(|l| l.keys.map().len())
            .sum();
        (limits, shards.by.values().map(|s| s.windows.len()).sum())
    }

    /// Keys evicted because `max_keys` was reached (rate limits and windows).
    pub fn evicted(&self) -> u64 {
        let shards = self.lock();
        shards.evicted + shards.by.values().map(|s| s.evicted + s.windows.evicted).sum::<u64>()
    }

    /// Removes a shard's state and returns it serialized, for whoever takes the shard over
    /// (an empty shard too: its successor must not restore an older hand-over).
    pub fn give_up(&self, shard: Shard) -> Vec<u8> {
        let mut shards = self.lock();
        let Some(state) = shards.by.remove(&shard) else {
            return State::new(shards.lateness, 1).snapshot();
        };
        shards.evicted += state.evicted + state.windows.evicted;
        state.snapshot()
    }

    /// A shard's state serialized, when it took in deliveries since its last checkpoint: stored
    /// before those deliveries are committed, it lets a successor of a detector killed without
    /// a hand-over go on exactly where the commit left off.
    pub fn checkpoint(&self, shard: Shard) -> Option<Vec<u8>> {
        let mut shards = self.lock();
        let state = shards.by.get_mut(&shard)?;
        if state.absorbed.is_empty() {
            return None;
        }
        if state.restored_at.elapsed() > RESTORED_KEEP {
            state.restored.clear();
        }
        Some(state.snapshot())
    }

    /// A shard's checkpoint is stored: the deliveries in it are about to be committed.
    pub fn stored(&self, shard: Shard) {
        if let Some(state) = self.lock().by.get_mut(&shard) {
            tracing::debug!(shard, ranges = state.absorbed.ranges(), "checkpoint stored");
            state.absorbed.clear();
        }
    }

    /// Notes that a shard's state takes in the delivery at `position`; `false` when it holds
    /// it already (applied before the checkpoint or hand-over it was installed from, or earlier
    /// in this one): a redelivery, not to be applied again.
    pub fn take_in(&self, shard: Shard, position: u64) -> bool {
        let mut shards = self.lock();
        let state = shards.get(shard, self.max_keys);
        if state.restored.contains(position) || state.absorbed.contains(position) {
            return false;
        }
        state.absorbed.insert(position);
        true
    }

    /// Installs a shard's state handed over by its previous owner (replacing what this one
    /// holds for it: nothing, unless it owned the shard before).
    pub fn take_over(&self, shard: Shard, bytes: &[u8]) -> anyhow::Result<()> {
        let mut shards = self.lock();
        let state = State::restore(bytes, shards.lateness, self.max_keys)
            .map_err(|e| anyhow::anyhow!("the state handed over for shard {shard} is unreadable: {e}"))?;
        shards.by.insert(shard, state);
        Ok(())
    }

    fn close_windows(&self, state: &mut State, now: u64, out: &mut Vec<Alert>) {
        let closed: Vec<String> = state
            .pending
            .iter()
            .filter(|(_, p)| p.closes <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut summaries: Vec<Alert> = closed
            .iter()
            .filter_map(|k| state.pending.remove(k))
            .map(summary)
            .collect();
        summaries.sort_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        out.extend(summaries);
        state.next_close = state.pending.values().map(|p| p.closes).min().unwrap_or(u64::MAX);
    }

    /// Beyond `max_keys` rate-limit keys: purge the stale, then evict the tenth closest to
    /// expiring (an evicted key alerts again early: more alerts, never fewer).
    fn cap_keys(&self, state: &mut State, now: u64) {
        let total: usize = state.limits.values().map(|l| l.keys.map().len()).sum();
        if total <= self.max_keys {
            return;
        }
        purge(state, now);
        for limit in state.limits.values() {
            let mut map = limit.keys.map();
            if map.len() * 10 < self.max_keys * 9 {
                continue;
            }
            let mut tats: Vec<u64> = map.values().map(|t| u64::from(*t)).collect();
            let n = (map.len() / 10).max(1);
            let cut = *tats.select_nth_unstable(n - 1).1;
            let before = map.len();
            map.retain(|_, t| u64::from(*t) > cut);
            state.evicted += (before - map.len()) as u64;
        }
    }
}

impl crate::bus::PartitionState for Deduper {
    fn give_up(&self, shard: Shard) -> Vec<u8> {
        Deduper::give_up(self, shard)
    }
    fn checkpoint(&self, shard: Shard) -> Option<Vec<u8>> {
        Deduper::checkpoint(self, shard)
    }
    fn stored(&self, shard: Shard) {
        Deduper::stored(self, shard)
    }
    fn take_over(&self, shard: Shard, state: &[u8]) -> anyhow::Result<()> {
        Deduper::take_over(self, shard, state)
    }
}

/// Forgets keys whose window has passed at `now` (their state equals a fresh key's).
fn purge(state: &mut State, now: u64) {
    for limit in state.limits.values() {
        let mut map = limit.keys.map();
        map.retain(|_, tat| u64::from(*tat) > now);
        map.shrink_to_fit();
    }
    state.windows.purge(now);
}

fn new_limit(policy: &DedupPolicy, clock: &EventClock) -> Limit {
    let period = (policy.window / policy.burst.get()).max(Duration::from_nanos(1));
    let quota = Quota::with_period(period)
        .expect("period is positive")
        .allow_burst(policy.burst);
    let keys = KeyStore::default();
    // The limiter measures from the clock's value at creation: zero, so its times are absolute.
    let at = clock.0.swap(0, Ordering::Relaxed);
    let limiter = RateLimiter::new(quota, keys.clone(), clock.clone());
    clock.0.store(at, Ordering::Relaxed);
    Limit { limiter, keys }
}

fn summary(p: Pending) -> Alert {
    let mut a = p.sample;
    a.id = crate::ids::digest(&[&a.id, "summary"]);
    a.dedup.count = p.suppressed;
    a.dedup.suppressed = p.suppressed;
    a.dedup.first_seen = p.first_seen;
    a.dedup.last_seen = p.last_seen;
    a
}

/// Nanoseconds since the epoch of an RFC 3339 time; now when it cannot be read.
pub fn event_nanos(time: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_nanos_opt().unwrap_or(0).max(0) as u64)
        .unwrap_or_else(|_| chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0).max(0) as u64)
}

fn format_nanos(nanos: u64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos as i64).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

//! Stateful windows: `threshold`, `distinct` and `sequence` rules, on event time.
//!
//! Each stateful rule keeps, per key (a hash of the rule and its key expressions' values), the
//! recent matches: their event time and what they add (a distinct value's hash, the steps they
//! matched). A window is the span of `window` ending at the newest match of the key; matches
//! may arrive out of order by up to the allowed lateness, later than that they are dropped and
//! counted. When a window fires, its key starts over, so one burst yields one alert.
//!
//! A `new_terms` rule keeps, per key, the values (terms) it has seen and when each was seen
//! last, and when the key was first seen: a term not seen within the window (the horizon) fires,
//! unless the key is still learning (first seen less than `learn` ago). Terms unseen for the
//! horizon are forgotten; firing keeps them (unlike the other windows, which start over).
//!
//! Memory per key is bounded (a threshold keeps at most `count` matches, a distinct rule at most
//! `count` values, a sequence at most [`MAX_SEQUENCE_MATCHES`], new terms at most
//! [`MAX_TERMS`], the least recently seen evicted and counted), and so is the number of keys:
//! keys whose newest match is older than window + lateness are purged, and beyond `max_keys`
//! the keys with the oldest matches are evicted (counted).

use crate::engine::stateful::{WindowKind, WindowPolicy};
use crate::engine::Observation;
use std::collections::HashMap;

/// Matches a sequence keeps per key.
pub const MAX_SEQUENCE_MATCHES: usize = 64;

/// Terms a new-terms rule keeps per key.
pub const MAX_TERMS: usize = 4096;

/// Why a window fired: what the alert carries in `window`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// Matches (threshold), distinct values (distinct) or steps (sequence).
    pub count: u64,
    /// Event time of the window's first and last match, nanoseconds since the epoch.
    pub first: u64,
    pub last: u64,
}

/// What became of one match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Fired(Fired),
    /// Counted; the window has not fired.
    Held,
    /// Older than the key's newest match by more than the allowed lateness: dropped.
    Late,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct KeyState {
    /// Newest event time seen for the key.
    newest: u64,
    /// `(event time, value or step bits)`, in arrival order.
    matches: Vec<(u64, u64)>,
    /// Window length, to purge the key once it has passed.
    window: u64,
    /// Event time the key was first seen (new terms: the start of its learning).
    #[serde(default)]
    since: u64,
}

impl KeyState {
    /// Whether the newest match is older than the window plus `lateness` at `now`.
    fn expired(&self, lateness: u64, now: u64) -> bool {
        self.newest.saturating_add(self.window).saturating_add(lateness) < now
    }
}

#[derive(Debug, Default)]
pub struct Windows {
    keys: HashMap<u64, KeyState>,
    /// The newest event time of any match seen: a key whose newest match is older than it by
    /// more than window + lateness has expired, whether or not a purge removed it yet, so that
    /// what a match does never depends on when the (wall-clock) purge ran.
    watermark: u64,
    lateness: u64,
    max_keys: usize,
    pub evicted: u64,
}

impl Windows {
    pub fn new(lateness: std::time::Duration, max_keys: usize) -> Windows {
        Windows {
            keys: HashMap::new(),
            watermark: 0,
            lateness: lateness.as_nanos() as u64,
            max_keys: max_keys.max(1),
            evicted: 0,
        }
    }

    /// Adds a match at event time `t` to the window of its key.
    pub fn observe(&mut self, policy: &WindowPolicy, obs: &Observation, t: u64) -> Outcome {
        let window = policy.window.as_nanos() as u64;
        // Expired at the watermark before this match: the key starts over, as after a purge.
        if self
            .keys
            .get(&obs.key)
            .is_some_and(|s| s.expired(self.lateness, self.watermark))
        {
            self.keys.remove(&obs.key);
        }
        self.watermark = self.watermark.max(t);
        if self.keys.len() >= self.max_keys && !self.keys.contains_key(&obs.key) {
            self.evict();
        }
        let state = self.keys.entry(obs.key).or_insert_with(|| KeyState {
            since: t,
            ..KeyState::default()
        });
        state.window = window;
        if t.saturating_add(self.lateness) < state.newest {
            return Outcome::Late;
        }
        state.newest = state.newest.max(t);
        let horizon = state.newest.saturating_sub(window);
        let keep_from = horizon.saturating_sub(self.lateness);
        state.matches.retain(|(mt, _)| *mt >= keep_from);
        let fired = match policy.kind {
            // Threshold and distinct differ only in what a match adds: every match, or each value
            // once (at its newest time); both fire on what the window holds.
            WindowKind::Threshold | WindowKind::Distinct => {
                let existing = (policy.kind == WindowKind::Distinct)
                    .then(|| state.matches.iter_mut().find(|(_, v)| *v == obs.value))
                    .flatten();
                match existing {
                    Some(m) => m.0 = m.0.max(t),
                    None => state.matches.push((t, obs.value)),
                }
                let inside = || state.matches.iter().filter(|(mt, _)| *mt >= horizon);
                let count = inside().count() as u64;
                (count >= u64::from(policy.count)).then(|| Fired {
                    count,
                    first: inside().map(|m| m.0).min().unwrap_or(t),
                    last: state.newest,
                })
            }
            WindowKind::NewTerms { learn } => {
                let since = state.since.min(t);
                state.since = since;
                match state.matches.iter_mut().find(|(_, v)| *v == obs.value) {
                    Some(known) => {
                        known.0 = known.0.max(t);
                        return Outcome::Held;
                    }
                    None => {
                        if state.matches.len() >= MAX_TERMS {
                            let oldest = (0..state.matches.len())
                                .min_by_key(|&i| state.matches[i].0)
                                .unwrap_or(0);
                            state.matches.swap_remove(oldest);
                            self.evicted += 1;
                        }
                        state.matches.push((t, obs.value));
                        if t < since.saturating_add(learn.as_nanos() as u64) {
                            return Outcome::Held;
                        }
                        return Outcome::Fired(Fired {
                            count: state.matches.len() as u64,
                            first: since,
                            last: t,
                        });
                    }
                }
            }
            WindowKind::Sequence { steps } => {
                if state.matches.len() >= MAX_SEQUENCE_MATCHES {
                    state.matches.remove(0);
                }
                state.matches.push((t, u64::from(obs.steps)));
                sequence(&state.matches, steps, window).map(|(first, last)| Fired {
                    count: steps as u64,
                    first,
                    last,
                })
            }
        };
        match fired {
            Some(f) => {
                state.matches.clear();
                Outcome::Fired(f)
            }
            None => Outcome::Held,
        }
    }

    /// Forgets keys expired at `now`, or at the watermark if that is older (a purge only
    /// removes what the next match of the key would find expired anyway).
    pub fn purge(&mut self, now: u64) {
        let (now, lateness) = (now.min(self.watermark), self.lateness);
        self.keys.retain(|_, s| !s.expired(lateness, now));
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Every key's state (a shard's checkpoint or hand-over).
    pub fn entries(&self) -> impl Iterator<Item = (&u64, &KeyState)> {
        self.keys.iter()
    }

    /// Keys handed over by a previous owner.
    pub fn restore(&mut self, entries: Vec<(u64, KeyState)>) {
        let newest = entries.iter().map(|(_, s)| s.newest).max().unwrap_or(0);
        self.watermark = self.watermark.max(newest);
        self.keys.extend(entries);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Drops the tenth of the keys with the oldest newest match.
    fn evict(&mut self) {
        let mut newest: Vec<u64> = self.keys.values().map(|s| s.newest).collect();
        let n = (self.keys.len() / 10).max(1);
        let (_, cut, _) = newest.select_nth_unstable(n - 1);
        let cut = *cut;
        let before = self.keys.len();
        self.keys.retain(|_, s| s.newest > cut);
        self.evicted += (before - self.keys.len()) as u64;
    }
}

/// The earliest chain of matches `step 0 < step 1 < ... < step n-1` (strictly increasing event
/// times, each match matching its step) that fits in `window`: its first and last time.
fn sequence(matches: &[(u64, u64)], steps: usize, window: u64) -> Option<(u64, u64)> {
    let mut sorted: Vec<(u64, u64)> = matches.to_vec();
    sorted.sort_unstable();
    for (i, &(start, bits)) in sorted.iter().enumerate() {
        if bits & 1 == 0 {
            continue;
        }
        let mut at = start;
        let mut from = i + 1;
        let mut complete = true;
        for step in 1..steps {
            match sorted[from..].iter().position(|&(t, b)| t > at && b & (1 << step) != 0) {
                Some(p) => {
                    at = sorted[from + p].0;
                    from += p + 1;
                }
                None => {
                    complete = false;
                    break;
                }
            }
        }
        if complete && at - start <= window {
            return Some((start, at));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const S: u64 = 1_000_000_000;

    fn policy(kind: WindowKind, count: u32, secs: u64) -> WindowPolicy {
        WindowPolicy {
            kind,
            count,
            window: Duration::from_secs(secs),
        }
    }

    /// New terms over a 30-day horizon, learning for a day.
    fn new_terms_learning_a_day() -> WindowPolicy {
        let learn = Duration::from_secs(86_400);
        policy(WindowKind::NewTerms { learn }, 1, 30 * 86_400)
    }

    fn obs(key: u64, value: u64, steps: u32) -> Observation {
        Observation { key, value, steps }
    }

    /// What a match does does not depend on when the (wall-clock) purge ran: a stream out of
    /// order by more than a horizon (a key seen in 2018, then another in 2019, then the first
    /// again) gives the same outcomes with a purge between, or without.
    #[test]
    fn outcomes_do_not_depend_on_when_the_purge_ran() {
        const DAY: u64 = 86_400 * S;
        let p = new_terms_learning_a_day();
        let stream = [
            (1, 10, 0),
            (1, 11, 2 * DAY),
            (2, 10, 400 * DAY),
            (1, 12, 3 * DAY),
            (1, 13, 4 * DAY),
        ];
        let outcomes = |purge_after: Option<usize>| {
            let mut w = Windows::new(Duration::from_secs(5), 100);
            let mut out = Vec::new();
            for (i, (key, value, t)) in stream.iter().enumerate() {
                out.push(w.observe(&p, &obs(*key, *value, 0), *t));
                if purge_after == Some(i) {
                    // A tick's `now` runs ahead of the events by the wall-clock time since.
                    w.purge(u64::MAX);
                }
            }
            out
        };
        let without = outcomes(None);
        for i in 0..stream.len() {
            assert_eq!(outcomes(Some(i)), without, "purged after match {i}");
        }
        // Key 1 expired at the watermark (day 400): it learns again from day 3.
        assert_eq!(without[3], Outcome::Held);
        assert_eq!(without[4], Outcome::Held);
    }

    #[test]
    fn a_new_term_fires_once_after_learning_and_again_once_forgotten() {
        const DAY: u64 = 86_400 * S;
        let p = new_terms_learning_a_day();
        let mut w = Windows::new(Duration::from_secs(5), 100);
        // Learning: terms are recorded, nothing fires.
        assert_eq!(w.observe(&p, &obs(1, 10, 0), 0), Outcome::Held);
        assert_eq!(w.observe(&p, &obs(1, 11, 0), DAY / 2), Outcome::Held);
        // After it: a known term is quiet, a new one fires once.
        assert_eq!(w.observe(&p, &obs(1, 10, 0), 2 * DAY), Outcome::Held);
        assert_eq!(
            w.observe(&p, &obs(1, 12, 0), 2 * DAY + S),
            Outcome::Fired(Fired {
                count: 3,
                first: 0,
                last: 2 * DAY + S
            })
        );
        assert_eq!(w.observe(&p, &obs(1, 12, 0), 2 * DAY + 2 * S), Outcome::Held);
        // Another key learns on its own.
        assert_eq!(w.observe(&p, &obs(2, 12, 0), 2 * DAY + 3 * S), Outcome::Held);
        // A term unseen for the horizon is forgotten: new again (11 was last seen at day 0.5;
        // 10 was refreshed at day 2).
        assert!(matches!(w.observe(&p, &obs(1, 11, 0), 31 * DAY), Outcome::Fired(_)));
        assert_eq!(w.observe(&p, &obs(1, 10, 0), 31 * DAY + S), Outcome::Held);
    }

    #[test]
    fn new_terms_per_key_are_bounded_and_the_evictions_counted() {
        let p = policy(WindowKind::NewTerms { learn: Duration::ZERO }, 1, 3600);
        let mut w = Windows::new(Duration::from_secs(5), 100);
        for v in 0..MAX_TERMS as u64 + 10 {
            assert!(matches!(w.observe(&p, &obs(1, v, 0), v), Outcome::Fired(_)));
        }
        assert_eq!(w.evicted, 10);
        // The least recently seen went first: term 0 is new again, the newest is known.
        assert_eq!(w.observe(&p, &obs(1, MAX_TERMS as u64 + 9, 0), 20_000), Outcome::Held);
        assert!(matches!(w.observe(&p, &obs(1, 0, 0), 20_001), Outcome::Fired(_)));
    }

    #[test]
    fn threshold_fires_at_the_count_within_the_window_and_starts_over() {
        let p = policy(WindowKind::Threshold, 3, 60);
        let mut w = Windows::new(Duration::from_secs(5), 100);
        assert_eq!(w.observe(&p, &obs(1, 0, 0), 0), Outcome::Held);
        assert_eq!(
            w.observe(&p, &obs(1, 0, 0), 61 * S),
            Outcome::Held,
            "the first fell out"
        );
        assert_eq!(w.observe(&p, &obs(2, 0, 0), 62 * S), Outcome::Held, "another key");
        assert_eq!(w.observe(&p, &obs(1, 0, 0), 70 * S), Outcome::Held);
        assert_eq!(
            w.observe(&p, &obs(1, 0, 0), 80 * S),
            Outcome::Fired(Fired {
                count: 3,
                first: 61 * S,
                last: 80 * S
            })
        );
        assert_eq!(w.observe(&p, &obs(1, 0, 0), 81 * S), Outcome::Held, "started over");
    }

    #[test]
    fn late_matches_count_within_the_lateness_and_are_dropped_beyond() {
        let p = policy(WindowKind::Threshold, 2, 60);
        let mut w = Windows::new(Duration::from_secs(5), 100);
        assert_eq!(w.observe(&p, &obs(1, 0, 0), 100 * S), Outcome::Held);
        assert_eq!(w.observe(&p, &obs(1, 0, 0), 90 * S), Outcome::Late);
        assert!(matches!(w.observe(&p, &obs(1, 0, 0), 97 * S), Outcome::Fired(_)));
    }

    #[test]
    fn distinct_counts_values_not_matches() {
        let p = policy(WindowKind::Distinct, 3, 60);
        let mut w = Windows::new(Duration::ZERO, 100);
        for (v, t) in [(10, 0), (10, 1), (11, 2), (11, 3)] {
            assert_eq!(w.observe(&p, &obs(1, v, 0), t * S), Outcome::Held);
        }
        assert!(matches!(
            w.observe(&p, &obs(1, 12, 0), 4 * S),
            Outcome::Fired(Fired { count: 3, .. })
        ));
    }

    #[test]
    fn sequence_needs_the_order_and_the_span() {
        let p = policy(WindowKind::Sequence { steps: 2 }, 2, 300);
        let mut w = Windows::new(Duration::from_secs(30), 100);
        // B then A: no.
        assert_eq!(w.observe(&p, &obs(1, 0, 0b10), 10 * S), Outcome::Held);
        assert_eq!(w.observe(&p, &obs(1, 0, 0b01), 20 * S), Outcome::Held);
        // A then B too late: no.
        assert_eq!(w.observe(&p, &obs(1, 0, 0b10), 400 * S), Outcome::Held);
        // One event matching both steps does not complete the sequence alone.
        assert_eq!(w.observe(&p, &obs(2, 0, 0b11), 10 * S), Outcome::Held);
        // A then B within the span: once.
        assert_eq!(w.observe(&p, &obs(1, 0, 0b01), 410 * S), Outcome::Held);
        assert_eq!(
            w.observe(&p, &obs(1, 0, 0b10), 500 * S),
            Outcome::Fired(Fired {
                count: 2,
                first: 410 * S,
                last: 500 * S
            })
        );
        assert_eq!(w.observe(&p, &obs(1, 0, 0b10), 501 * S), Outcome::Held);
        // A arriving after B, within the lateness, still completes it.
        assert_eq!(w.observe(&p, &obs(3, 0, 0b10), 1000 * S), Outcome::Held);
        assert!(matches!(w.observe(&p, &obs(3, 0, 0b01), 990 * S), Outcome::Fired(_)));
    }

    #[test]
    fn keys_are_purged_and_capped() {
        let p = policy(WindowKind::Threshold, 5, 60);
        let mut w = Windows::new(Duration::from_secs(5), 100);
        for k in 0..250 {
            w.observe(&p, &obs(k, 0, 0), k * S);
        }
        assert!(w.len() <= 100, "{} keys", w.len());
        assert!(w.evicted >= 150);
        // A purge never runs ahead of the events: the keys within window + lateness of the
        // newest match (249 s) stay, whatever the wall clock says.
        w.purge(1000 * S);
        assert_eq!(w.len(), 66);
        w.observe(&p, &obs(999, 0, 0), 1000 * S);
        w.purge(1000 * S);
        assert_eq!(w.len(), 1);
    }
}

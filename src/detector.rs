//! The detector: consume → evaluate → publish alerts → commit.
//!
//! A batch of deliveries is evaluated on a blocking-pool thread (CEL is CPU work, not async
//! work), its alerts are handed to every sink, and only when every sink has them (the alerts
//! topic acknowledged) is the batch committed. A crash in between means the batch is delivered
//! again and yields the same alert ids. A message that is not an audit event is logged,
//! counted and committed: it cannot become valid by being retried.

use crate::alert::sink::Sink;
use crate::alert::Alert;
use crate::audit::Event;
use crate::backoff::Backoff;
use crate::bus::{headers, Bus, Delivery, Subscription};
use crate::dedup::Verdict;
use crate::detect::{Detect, Source};
use crate::engine::{Matching, RuleSet};
use crate::reload::Reloader;
use crate::shutdown::Shutdown;
use crate::telemetry::{metrics, otel};
use opentelemetry::trace::SpanKind;
use opentelemetry::KeyValue;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Rule files and directories, loaded in order.
    pub rules: Vec<PathBuf>,
    pub rule_matching: Matching,
    /// Deliveries evaluated and committed together.
    pub batch_size: usize,
    /// Consumer group (Kafka) or durable consumer (NATS) the detectors share.
    pub group: String,
    /// Rate limits, summaries and stateful windows.
    pub dedup: crate::dedup::DedupConfig,
    /// Seconds between looks at the rule files for changes (hot reload; SIGHUP reloads too);
    /// 0: on SIGHUP only.
    pub reload_poll_secs: u64,
    /// Most milliseconds of CPU time one event's evaluation may take (a normal event takes tens of
    /// microseconds; a crafted one with thousands of containers, hundreds of milliseconds).
    /// Past it, the rules not yet evaluated are skipped and a `Detection degraded` alert names
    /// them. 0: no budget.
    pub event_budget_ms: u64,
    /// Most milliseconds between checkpoints where the bus keeps the detector's state (Kafka,
    /// NATS): deliveries are committed at a checkpoint, after the state they changed is stored,
    /// so that a detector killed without a hand-over leaves its successor exact counts. A
    /// checkpoint also comes after every 64 batches. 0: at every batch.
    pub checkpoint_ms: u64,
    /// Most seconds a stopping detector spends draining and flushing (a broker that is gone
    /// would otherwise hold it for ever, and Kubernetes kills it after its grace period). What
    /// it could not commit is delivered again, to it or another detector.
    pub shutdown_timeout_secs: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            rules: vec![PathBuf::from("rules")],
            rule_matching: Matching::All,
            batch_size: 512,
            group: "kaudit-detectors".into(),
            dedup: crate::dedup::DedupConfig::default(),
            reload_poll_secs: 2,
            event_budget_ms: 100,
            checkpoint_ms: 1000,
            shutdown_timeout_secs: 10,
        }
    }
}

impl DetectorConfig {
    /// The detector this config describes, and its subscription to `events_topic` on `bus`:
    /// the rules loaded (hot reload starts with [`Detector::run`]), the dedup state moving with
    /// the partitions where the bus can store it, alerts handed to `sinks`.
    pub async fn build(
        &self,
        bus: &dyn Bus,
        events_topic: &str,
        sinks: Vec<Arc<dyn Sink>>,
    ) -> anyhow::Result<(Detector, Box<dyn Subscription>)> {
        let rules = Arc::new(Reloader::new(self.rules.clone(), self.rule_matching)?);
        tracing::info!(rules = rules.rules().rules().len(), "rules loaded");
        for rule in rules.rules().rules().iter().filter(|r| r.enabled) {
            if let Some(lists) = &rule.dormant {
                tracing::info!(rule = rule.name, "quiet until {lists} has items");
            }
        }
        let deduper = Arc::new(crate::dedup::Deduper::new(&self.dedup)?);
        let mut sub = bus.subscribe(events_topic, &self.group).await?;
        let checkpoints = sub.keep_state(deduper.clone()).await?;
        let detector = Detector {
            rules,
            deduper,
            sinks,
            batch_size: self.batch_size,
            stats: Arc::default(),
            event_budget: (self.event_budget_ms > 0).then(|| Duration::from_millis(self.event_budget_ms)),
            checkpoint_every: checkpoints.then(|| Duration::from_millis(self.checkpoint_ms)),
            reload_poll: (self.reload_poll_secs > 0).then(|| Duration::from_secs(self.reload_poll_secs)),
        };
        Ok((detector, sub))
    }
}

/// What a detector has done (shared with whoever wants to watch it).
#[derive(Debug, Default)]
pub struct DetectorStats {
    pub events: AtomicU64,
    pub malformed: AtomicU64,
    pub alerts: AtomicU64,
    pub batches: AtomicU64,
}

pub struct Detector {
    /// The rule set in use, swapped by hot reload between batches.
    pub rules: Arc<Reloader>,
    /// Stateful windows and rate limits, per partition (events are partitioned by cluster, so a
    /// key that includes the cluster is seen by one detector; its state moves with the
    /// partition where the bus can store it).
    pub deduper: Arc<crate::dedup::Deduper>,
    pub sinks: Vec<Arc<dyn Sink>>,
    pub batch_size: usize,
    pub stats: Arc<DetectorStats>,
    /// Most time one event's evaluation may take (see [`DetectorConfig::event_budget_ms`]).
    pub event_budget: Option<Duration>,
    /// Most time between checkpoints (see [`DetectorConfig::checkpoint_ms`]), where the
    /// subscription stores state; `None`: commit every batch.
    pub checkpoint_every: Option<Duration>,
    /// How often the rule files are looked at for changes; `None`: on SIGHUP only.
    pub reload_poll: Option<Duration>,
}

/// Batches a checkpoint waits for at most (bounding the deliveries held uncommitted).
const CHECKPOINT_BATCHES: usize = 64;

/// Deliveries whose alerts are out, waiting for the next commit, and the sampled events' spans
/// to end then.
#[derive(Default)]
struct Uncommitted {
    deliveries: Vec<Delivery>,
    batches: usize,
    traced: Vec<Traced>,
    /// When the oldest was evaluated.
    since: Option<Instant>,
}

/// A sampled event's span: its batch's alerts and when they were handed to the sinks.
struct Traced {
    cx: opentelemetry::Context,
    own: usize,
    batch: usize,
    delivering: SystemTime,
    delivered: SystemTime,
}

/// How long a stopping detector keeps draining: until its subscription is quiet this long.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// How often dedup windows that closed are summarized and stale keys purged.
const TICK: Duration = Duration::from_secs(1);

impl Detector {
    /// Runs until `stop` turns true, then drains what is already queued and returns.
    pub async fn run(&self, mut sub: Box<dyn Subscription>, mut stop: Shutdown) -> anyhow::Result<()> {
        tokio::spawn(self.rules.clone().watch(self.reload_poll, stop.clone()));
        let ticker = tokio::spawn(tick(self.deduper.clone(), self.sinks.clone(), stop.clone()));
        let result = self.consume(&mut *sub, &mut stop).await;
        ticker.abort();
        // Windows still holding repeats are summarized on the way out.
        let mut summaries = Vec::new();
        self.deduper.flush(&mut summaries);
        self.deliver(&summaries).await;
        // What is left (rate limits, windows) goes to the partitions' next owners.
        sub.leave().await;
        result
    }

    /// Consumes until the subscription ends, or is quiet while stopping; commits what it
    /// evaluated before returning.
    async fn consume(&self, sub: &mut dyn Subscription, stop: &mut Shutdown) -> anyhow::Result<()> {
        let mut uncommitted = Uncommitted::default();
        let result = self.consume_into(sub, stop, &mut uncommitted).await;
        self.commit(sub, &mut uncommitted).await;
        result
    }

    async fn consume_into(
        &self,
        sub: &mut dyn Subscription,
        stop: &mut Shutdown,
        uncommitted: &mut Uncommitted,
    ) -> anyhow::Result<()> {
        let mut backoff = Backoff::default();
        loop {
            let due = self.commit_due(uncommitted);
            let batch = if stop.is_stopping() {
                match tokio::time::timeout(DRAIN_QUIET, sub.next(self.batch_size)).await {
                    Ok(batch) => batch,
                    Err(_) => return Ok(()),
                }
            } else {
                tokio::select! {
                    batch = sub.next(self.batch_size) => batch,
                    _ = stop.stopped() => continue,
                    _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {
                        self.commit(sub, uncommitted).await;
                        continue;
                    }
                }
            };
            // A broker that is away is waited for, never a reason to stop detecting.
            let batch = match batch {
                Ok(Some(batch)) => batch,
                Ok(None) => return Ok(()),
                Err(e) if stop.is_stopping() => {
                    tracing::warn!("consuming failed while stopping; what is uncommitted is delivered again: {e:#}");
                    return Ok(());
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!("consuming failed, retrying in {delay:?}: {e:#}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            };
            backoff.reset();
            self.process(batch, uncommitted).await?;
            if self.commit_due(uncommitted).is_some_and(|due| due <= Instant::now()) {
                self.commit(sub, uncommitted).await;
            }
        }
    }

    /// When the deliveries waiting for their commit are due: at once without checkpoints or
    /// after [`CHECKPOINT_BATCHES`], else `checkpoint_every` after the oldest; `None` when none wait.
    fn commit_due(&self, uncommitted: &Uncommitted) -> Option<Instant> {
        let since = uncommitted.since?;
        match self.checkpoint_every {
            Some(every) if uncommitted.batches < CHECKPOINT_BATCHES => Some(since + every),
            _ => Some(since),
        }
    }

    /// Evaluates a batch and hands its alerts to the sinks; the batch then waits in
    /// `uncommitted` for its commit.
    async fn process(&self, batch: Vec<Delivery>, uncommitted: &mut Uncommitted) -> anyhow::Result<()> {
        let started = Instant::now();
        // One set for the whole batch: a reload takes effect at the next one.
        let rules = self.rules.rules();
        let stats = self.stats.clone();
        let deduper = self.deduper.clone();
        let budget = self.event_budget;
        let (
            batch,
            Evaluated {
                alerts,
                traced,
                clusters,
            },
        ) = tokio::task::spawn_blocking(move || {
            let evaluated = evaluate(&rules, &batch, &stats, &deduper, budget);
            (batch, evaluated)
        })
        .await?;
        metrics().evaluate_seconds.record(started.elapsed().as_secs_f64(), &[]);
        for (cluster, n) in clusters {
            let label = KeyValue::new("cluster", crate::telemetry::cluster_label(&cluster));
            metrics().events_evaluated.add(n, &[label]);
        }
        for alert in &alerts {
            metrics().alerts.add(
                1,
                &[
                    KeyValue::new("rule", alert.rule.clone()),
                    KeyValue::new("priority", alert.priority.clone()),
                ],
            );
        }
        let delivering = SystemTime::now();
        self.deliver(&alerts).await;
        let delivered = SystemTime::now();
        self.stats.alerts.fetch_add(alerts.len() as u64, Ordering::Relaxed);
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        uncommitted.since.get_or_insert(started);
        uncommitted.batches += 1;
        uncommitted.deliveries.extend(batch);
        uncommitted.traced.extend(traced.into_iter().map(|(cx, own)| Traced {
            cx,
            own,
            batch: alerts.len(),
            delivering,
            delivered,
        }));
        Ok(())
    }

    /// Commits the deliveries evaluated since the last commit (the subscription stores the
    /// checkpoint of the state they changed first).
    async fn commit(&self, sub: &mut dyn Subscription, uncommitted: &mut Uncommitted) {
        let Uncommitted { deliveries, traced, .. } = std::mem::take(uncommitted);
        if deliveries.is_empty() {
            return;
        }
        // An uncommitted batch is delivered again and yields the same alert ids: log and go on.
        let committed = sub.commit(deliveries).await;
        if let Err(e) = &committed {
            tracing::warn!("commit failed; the deliveries will be redelivered: {e:#}");
        }
        let done = SystemTime::now();
        // The sampled events' spans: their batch's alerts published, then its commit.
        for t in traced {
            let alerts = vec![
                KeyValue::new("kaudit.alerts.event", t.own as i64),
                KeyValue::new("kaudit.alerts.batch", t.batch as i64),
            ];
            otel::record("publish alerts", &t.cx, t.delivering, t.delivered, alerts);
            let ok = vec![KeyValue::new("kaudit.committed", committed.is_ok())];
            otel::record("commit", &t.cx, t.delivered, done, ok);
            otel::end(&t.cx);
        }
    }

    /// Hands alerts to every sink, retrying until they take them: the input is not committed
    /// before.
    async fn deliver(&self, alerts: &[Alert]) {
        deliver(&self.sinks, alerts).await
    }
}

/// Hands alerts to every sink at once, retrying a failing sink (with backoff) until it takes
/// them; returns when all have them.
async fn deliver(sinks: &[Arc<dyn Sink>], alerts: &[Alert]) {
    if alerts.is_empty() {
        return;
    }
    futures::future::join_all(sinks.iter().map(|sink| async move {
        let mut backoff = Backoff::default();
        while let Err(e) = sink.send(alerts).await {
            let delay = backoff.next_delay();
            tracing::warn!("alert sink failed, retrying in {delay:?}: {e:#}");
            tokio::time::sleep(delay).await;
        }
    }))
    .await;
}

/// The dedup timer: summaries of windows that closed while no event came, purge of stale keys.
async fn tick(deduper: Arc<crate::dedup::Deduper>, sinks: Vec<Arc<dyn Sink>>, stop: Shutdown) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.is_stopping() {
        interval.tick().await;
        let d = deduper.clone();
        let (summaries, live, evicted) = tokio::task::spawn_blocking(move || {
            let mut summaries = Vec::new();
            d.tick(&mut summaries);
            (summaries, d.live_keys(), d.evicted())
        })
        .await
        .unwrap_or_default();
        metrics()
            .dedup_keys
            .record(live.0 as u64, &[KeyValue::new("kind", "rate_limit")]);
        metrics()
            .dedup_keys
            .record(live.1 as u64, &[KeyValue::new("kind", "window")]);
        metrics().dedup_keys_evicted.record(evicted, &[]);
        deliver(&sinks, &summaries).await;
        metrics().alerts_summarized.add(summaries.len() as u64, &[]);
    }
}

/// A batch's alerts, and the spans of its sampled events (with how many alerts each made),
/// ended once the alerts are published and the batch committed.
struct Evaluated {
    alerts: Vec<Alert>,
    traced: Vec<(opentelemetry::Context, usize)>,
    /// Events evaluated, by cluster.
    clusters: HashMap<String, u64>,
}

/// Evaluates a batch; the cluster of each event comes from its message, never its body.
fn evaluate(
    rules: &RuleSet,
    batch: &[Delivery],
    stats: &DetectorStats,
    deduper: &crate::dedup::Deduper,
    budget: Option<Duration>,
) -> Evaluated {
    let detect = Detect {
        budget,
        ..Detect::new(rules, deduper)
    };
    let mut alerts = Vec::new();
    let mut traced = Vec::new();
    let mut clusters: HashMap<String, u64> = HashMap::new();
    for delivery in batch {
        let message = &delivery.message;
        let cluster = message.header(headers::CLUSTER).unwrap_or(&message.key);
        let event = match Event::from_json(message.payload.clone()) {
            Ok(e) => e,
            Err(reason) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::log_bad_input(cluster, "skipping a message that is not an audit event", &reason);
                continue;
            }
        };
        stats.events.fetch_add(1, Ordering::Relaxed);
        match clusters.get_mut(cluster) {
            Some(n) => *n += 1,
            None => {
                clusters.insert(cluster.to_string(), 1);
            }
        }
        // Continue the shim's trace: a span of our own for a sampled event.
        let parent = otel::extract(message.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let span = otel::sampled(&parent).then(|| otel::start("detect", SpanKind::Consumer, &parent));
        let trace = span.as_ref().unwrap_or(&parent);
        let source = Source {
            cluster,
            shard: delivery.shard(),
            trace: Some(trace),
            received: message.header(headers::RECEIVED),
        };
        let before = alerts.len();
        let started = SystemTime::now();
        let Some(verdicts) = detect.delivery(&event, &source, delivery.position(), &mut alerts) else {
            // Already in the state installed from a checkpoint or hand-over: its alerts went out.
            metrics().events_replayed.add(1, &[]);
            if let Some(span) = &span {
                otel::end(span);
            }
            continue;
        };
        if let Some(span) = span {
            let attributes = vec![
                KeyValue::new("kaudit.cluster", cluster.to_string()),
                KeyValue::new("kaudit.matches", verdicts.len() as i64),
            ];
            otel::record("evaluate", &span, started, SystemTime::now(), attributes);
            traced.push((span, alerts.len() - before));
        }
        for (rule, verdict) in verdicts {
            let rule = KeyValue::new("rule", rules.rule(rule).name.clone());
            match verdict {
                Verdict::Suppressed => metrics().alerts_suppressed.add(1, &[rule]),
                Verdict::Late => metrics().window_late.add(1, &[rule]),
                Verdict::Passed | Verdict::Held => {}
            }
        }
        for a in &alerts[before..] {
            tracing::debug!(
                traceparent = a.origin.traceparent,
                rule = a.rule,
                alert_id = a.id,
                "alert"
            );
        }
    }
    Evaluated {
        alerts,
        traced,
        clusters,
    }
}

//! Metrics, traces and logs. OpenTelemetry instruments exported in Prometheus text format on
//! `/metrics`, with `/healthz` (the process runs) and `/readyz` (its bus is connected), on a
//! listener of their own (`[telemetry] listen`), and pushed over OTLP with the traces when an
//! endpoint is configured ([`otel`]); logs through `tracing` on stderr.
//!
//! Metric names (Prometheus adds `_total` to counters):
//! `kaudit_events_received` {cluster}, `kaudit_events_published` {cluster},
//! `kaudit_requests_rejected` {reason}, `kaudit_events_dead_lettered` {cluster},
//! `kaudit_events_truncated`,
//! `kaudit_events_evaluated` {cluster}, `kaudit_alerts` {rule, priority}, `kaudit_alerts_suppressed` {rule},
//! `kaudit_alerts_summarized`, `kaudit_window_late_matches` {rule}, `kaudit_events_replayed`,
//! `kaudit_dedup_keys` {kind},
//! `kaudit_dedup_keys_evicted`, `kaudit_rules_reloads` {result}, `kaudit_rules_reload_failed`,
//! `kaudit_rules_loaded`, `kaudit_tail_lag_bytes` {file}, `kaudit_tail_rotations_lost` {file},
//! `kaudit_rule_evaluation_errors` {rule}, `kaudit_consumer_lag` {partition},
//! `kaudit_publish_seconds` and
//! `kaudit_evaluate_seconds` (histograms).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use serde::Deserialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

pub mod otel;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served, for every role; none when unset.
    /// Never the shim's ingest port: metrics name every cluster and rule and show which rules
    /// fired, which a client holding one cluster's token must not read.
    pub listen: Option<String>,
    /// OTLP export of traces and metrics (off unless an endpoint is named here or in
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp: otel::OtlpConfig,
}

pub struct Metrics {
    pub events_received: Counter<u64>,
    pub events_published: Counter<u64>,
    pub requests_rejected: Counter<u64>,
    pub events_dead_lettered: Counter<u64>,
    pub events_truncated: Counter<u64>,
    pub events_evaluated: Counter<u64>,
    pub alerts: Counter<u64>,
    pub alerts_suppressed: Counter<u64>,
    pub alerts_summarized: Counter<u64>,
    pub window_late: Counter<u64>,
    pub events_replayed: Counter<u64>,
    pub dedup_keys: Gauge<u64>,
    pub dedup_keys_evicted: Gauge<u64>,
    pub tail_lag_bytes: Gauge<u64>,
    pub rules_reloads: Counter<u64>,
    pub rules_reload_failed: Gauge<u64>,
    pub rules_loaded: Gauge<u64>,
    pub tail_rotations_lost: Counter<u64>,
    pub consumer_lag: Gauge<u64>,
    pub publish_seconds: Histogram<f64>,
    pub evaluate_seconds: Histogram<f64>,
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    rule_errors: Arc<Mutex<Option<RuleErrors>>>,
    ready: AtomicBool,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| Metrics::new(None))
}

/// Makes the process's metrics with `reader` (OTLP) beside Prometheus; an error if they are
/// already in use.
fn export_metrics(
    reader: opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>,
    resource: opentelemetry_sdk::Resource,
) -> anyhow::Result<SdkMeterProvider> {
    let mut made = false;
    let metrics = METRICS.get_or_init(|| {
        made = true;
        Metrics::new(Some((reader, resource)))
    });
    anyhow::ensure!(
        made,
        "metrics were in use before telemetry::otel::init: they are not exported over OTLP"
    );
    Ok(metrics.provider.clone())
}

type OtlpReader = (
    opentelemetry_sdk::metrics::PeriodicReader<opentelemetry_otlp::MetricExporter>,
    opentelemetry_sdk::Resource,
);

/// What the metrics read the rules' evaluation errors through: the telemetry knows no rule set.
type RuleErrors = Box<dyn Fn(&mut dyn FnMut(&str, u64)) + Send + Sync>;

impl Metrics {
    fn new(otlp: Option<OtlpReader>) -> Metrics {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .expect("a fresh registry accepts the exporter");
        let mut provider = SdkMeterProvider::builder().with_reader(exporter);
        if let Some((reader, resource)) = otlp {
            provider = provider.with_reader(reader).with_resource(resource);
        }
        let provider = provider.build();
        let meter = provider.meter("kaudit");
        let rule_errors: Arc<Mutex<Option<RuleErrors>>> = Arc::default();
        let source = rule_errors.clone();
        let _errors = meter
            .u64_observable_counter("kaudit_rule_evaluation_errors")
            .with_description("Rule evaluations that failed for another reason than a missing field")
            .with_callback(move |obs| {
                if let Some(read) = source.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                    read(&mut |rule, errors| obs.observe(errors, &[KeyValue::new("rule", rule.to_string())]));
                }
            })
            .build();
        let seconds = [
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Metrics {
            events_received: meter
                .u64_counter("kaudit_events_received")
                .with_description("Audit events received by the shim")
                .build(),
            events_published: meter
                .u64_counter("kaudit_events_published")
                .with_description("Audit events acknowledged by the bus")
                .build(),
            requests_rejected: meter
                .u64_counter("kaudit_requests_rejected")
                .with_description("Webhook requests not accepted, by reason")
                .build(),
            events_dead_lettered: meter
                .u64_counter("kaudit_events_dead_lettered")
                .with_description("Malformed items sent to the dead-letter topic")
                .build(),
            events_truncated: meter
                .u64_counter("kaudit_events_truncated")
                .with_description("Events over max_event_bytes, published without their objects")
                .build(),
            events_evaluated: meter
                .u64_counter("kaudit_events_evaluated")
                .with_description("Audit events evaluated by the detector, by cluster")
                .build(),
            alerts: meter
                .u64_counter("kaudit_alerts")
                .with_description("Alerts emitted, by rule and priority")
                .build(),
            alerts_suppressed: meter
                .u64_counter("kaudit_alerts_suppressed")
                .with_description("Matches held back by a rule's dedup policy, by rule")
                .build(),
            alerts_summarized: meter
                .u64_counter("kaudit_alerts_summarized")
                .with_description("Summary alerts of dedup windows that closed with suppressed repeats")
                .build(),
            window_late: meter
                .u64_counter("kaudit_window_late_matches")
                .with_description("Matches of stateful rules that arrived later than the allowed lateness, by rule")
                .build(),
            events_replayed: meter
                .u64_counter("kaudit_events_replayed")
                .with_description(
                    "Redelivered events skipped because the state installed from a checkpoint holds them already",
                )
                .build(),
            dedup_keys: meter
                .u64_gauge("kaudit_dedup_keys")
                .with_description("Live dedup keys, by kind (rate_limit, window)")
                .build(),
            dedup_keys_evicted: meter
                .u64_gauge("kaudit_dedup_keys_evicted")
                .with_description("Dedup keys evicted since start because max_keys was reached")
                .build(),
            rules_reloads: meter
                .u64_counter("kaudit_rules_reloads")
                .with_description("Rule reloads attempted (SIGHUP or a changed file), by result (ok, error)")
                .build(),
            rules_reload_failed: meter
                .u64_gauge("kaudit_rules_reload_failed")
                .with_description("1 while the last reload failed (the previous rule set keeps running)")
                .build(),
            rules_loaded: meter
                .u64_gauge("kaudit_rules_loaded")
                .with_description("Rules in the set in use")
                .build(),
            tail_lag_bytes: meter
                .u64_gauge("kaudit_tail_lag_bytes")
                .with_description("Bytes of a tailed audit log not yet published, by file")
                .build(),
            tail_rotations_lost: meter
                .u64_counter("kaudit_tail_rotations_lost")
                .with_description("Rotations whose unread remainder could not be found (deleted, compressed), by file")
                .build(),
            consumer_lag: meter
                .u64_gauge("kaudit_consumer_lag")
                .with_description(
                    "Events of a partition this detector reads and has not yet committed, by partition (0 once it is no longer ours)",
                )
                .build(),
            publish_seconds: meter
                .f64_histogram("kaudit_publish")
                .with_description("Time from a batch's receipt to the bus's acknowledgement")
                .with_unit("s")
                .with_boundaries(seconds.to_vec())
                .build(),
            evaluate_seconds: meter
                .f64_histogram("kaudit_evaluate")
                .with_description("Time to evaluate one batch of events")
                .with_unit("s")
                .with_boundaries(seconds.to_vec())
                .build(),
            registry,
            provider,
            rule_errors,
            ready: AtomicBool::new(false),
        }
    }

    /// Reports the evaluation errors per rule that `read` gives (those of the rule set in use,
    /// replacing the previous one's): it is called at each collection with a function to call
    /// once per rule.
    pub fn watch_rule_errors(&self, read: impl Fn(&mut dyn FnMut(&str, u64)) + Send + Sync + 'static) {
        *self.rule_errors.lock().unwrap_or_else(|e| e.into_inner()) = Some(Box::new(read));
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let _ = self.provider.force_flush();
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = prometheus::Encoder::encode(&encoder, &self.registry.gather(), &mut out) {
            tracing::warn!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

pub async fn metrics_handler() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        metrics().render(),
    )
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz() -> impl IntoResponse {
    if metrics().ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// The routes every role serves.
pub fn routes() -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_handler))
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
}

/// Lets through at most `burst` log lines per `period` (bad input must not flood the logs) and
/// says how many it held back when it lets one through again.
pub struct LogLimiter {
    period: std::time::Duration,
    burst: u32,
    started: std::time::Instant,
    used: u32,
    held: u64,
}

impl LogLimiter {
    pub fn new(period: std::time::Duration, burst: u32) -> LogLimiter {
        LogLimiter {
            period,
            burst,
            started: std::time::Instant::now(),
            used: 0,
            held: 0,
        }
    }

    /// Whether a line may be logged now.
    pub fn allow(&mut self) -> bool {
        if self.started.elapsed() >= self.period {
            if self.held > 0 {
                tracing::warn!(
                    "{} similar log lines were held back in the last {:?}",
                    self.held,
                    self.period
                );
            }
            self.started = std::time::Instant::now();
            self.used = 0;
            self.held = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            true
        } else {
            self.held += 1;
            false
        }
    }
}

/// Logs a line about bad input (a malformed item, a message that is no event) at most 10 times
/// per 10 seconds for the whole process, its detail cut to 256 bytes: input an attacker writes
/// must not become gigabytes of logs.
pub fn log_bad_input(cluster: &str, what: &str, detail: &str) {
    static LIMIT: OnceLock<Mutex<LogLimiter>> = OnceLock::new();
    let allowed = LIMIT
        .get_or_init(|| Mutex::new(LogLimiter::new(std::time::Duration::from_secs(10), 10)))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .allow();
    if allowed {
        tracing::warn!(cluster = %truncated(cluster, 100), "{what}: {}", truncated(detail, 256));
    }
}

/// `text` cut to `max` bytes (at a character boundary), with how much was cut.
pub fn truncated(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &text[..end], text.len() - end).into()
}

/// Most distinct clusters named in metric labels; the others are counted under `_other`, so
/// that a forwarder naming endless clusters cannot grow the metrics without bound.
pub const MAX_CLUSTER_LABELS: usize = 1000;

/// The `cluster` label for `name`: itself for the first [`MAX_CLUSTER_LABELS`] clusters seen.
pub fn cluster_label(name: &str) -> String {
    static SEEN: OnceLock<Mutex<std::collections::HashSet<String>>> = OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if seen.contains(name) {
        return name.to_string();
    }
    if seen.len() >= MAX_CLUSTER_LABELS {
        return "_other".into();
    }
    seen.insert(name.to_string());
    name.to_string()
}

/// Logs to stderr; `KAUDIT_LOG` (an env-filter) sets the level, `info` by default.
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG").unwrap_or_else(|_| "info".into());
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_limiter_lets_a_burst_through_then_holds_back() {
        let mut limiter = LogLimiter::new(std::time::Duration::from_secs(60), 3);
        assert_eq!((0..10).filter(|_| limiter.allow()).count(), 3);
        assert_eq!(limiter.held, 7);
    }

    #[test]
    fn truncation_cuts_at_a_character_and_says_how_much() {
        let long = "é".repeat(300);
        let cut = truncated(&long, 255);
        assert!(cut.starts_with(&"é".repeat(127)), "{cut}");
        assert!(cut.ends_with("(346 more bytes)"), "{cut}");
        assert_eq!(truncated("short", 10), "short");
    }

    #[test]
    fn cluster_labels_are_capped() {
        for i in 0..MAX_CLUSTER_LABELS + 10 {
            cluster_label(&format!("label-test-{i}"));
        }
        assert_eq!(cluster_label("label-test-0"), "label-test-0");
        assert_eq!(cluster_label("one-too-many"), "_other");
    }
}

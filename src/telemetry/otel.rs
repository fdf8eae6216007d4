//! Traces and OTLP export: OpenTelemetry spans for what happens to an event — the shim's
//! request (authenticate, decode, publish), then on a detector its evaluation, the publishing of
//! its alerts and the commit — linked into one trace across the bus by W3C trace context that
//! OpenTelemetry's propagator writes into each message's headers. Spans and metrics go out over
//! OTLP (gRPC or HTTP/protobuf) when the pipeline's `[telemetry.otlp]` or the standard `OTEL_*`
//! variables name an endpoint; otherwise nothing is exported, and trace ids still ride on
//! messages and alerts so a SIEM can join an alert to its event's trace.
//!
//! Sampling is decided once, where the trace starts (the shim, the tail): a parent-based ratio
//! (`sample_ratio`, or `OTEL_TRACES_SAMPLER`/`_ARG`); a detector follows the flag it reads from
//! the message, so an event's spans are all kept or all dropped.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use serde::Deserialize;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// `[telemetry.otlp]`: where to export traces and metrics. Unset fields come from the standard
/// variables (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_PROTOCOL`, `OTEL_SERVICE_NAME`,
/// `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`, …); a field set here wins over its variable.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// The collector's base address (`http://collector:4317` for gRPC, `http://collector:4318`
    /// for HTTP, whose `/v1/traces` and `/v1/metrics` are added).
    pub endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub protocol: Option<String>,
    /// Share of traces kept, 0 to 1, decided where a trace starts (default 0.01, or
    /// `OTEL_TRACES_SAMPLER`).
    pub sample_ratio: Option<f64>,
    /// How often metrics are pushed, in seconds (default 60, or `OTEL_METRIC_EXPORT_INTERVAL`).
    pub metrics_interval_secs: Option<u64>,
}

/// Share of traces kept when neither the pipeline nor `OTEL_TRACES_SAMPLER` says: what the
/// detector's throughput affords (see README, Numbers).
pub const DEFAULT_SAMPLE_RATIO: f64 = 0.01;

/// What is exported where, once resolved against the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    pub protocol: Protocol,
    /// The traces and metrics addresses; `None` lets the exporter read its variables.
    pub traces: Option<String>,
    pub metrics: Option<String>,
}

impl OtlpConfig {
    /// What to export, or `None` when no endpoint is named here or in the environment.
    pub fn export(&self, env: impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<Export>> {
        let named = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let any_in_env = [
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
        ]
        .iter()
        .any(|v| named(v).is_some());
        if self.endpoint.is_none() && !any_in_env {
            return Ok(None);
        }
        let protocol = match self
            .protocol
            .clone()
            .or_else(|| named("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            None | Some("grpc") => Protocol::Grpc,
            Some("http/protobuf") => Protocol::HttpBinary,
            Some(other) => anyhow::bail!(
                "telemetry.otlp.protocol (or OTEL_EXPORTER_OTLP_PROTOCOL): `{other}` is not `grpc` or `http/protobuf`"
            ),
        };
        let at = |path: &str| {
            self.endpoint.as_ref().map(|base| match protocol {
                Protocol::Grpc => base.clone(),
                _ => format!("{}/{path}", base.trim_end_matches('/')),
            })
        };
        Ok(Some(Export {
            protocol,
            traces: at("v1/traces"),
            metrics: at("v1/metrics"),
        }))
    }
}

struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

static TRACING: OnceLock<Tracing> = OnceLock::new();

/// The tracer spans are made with. Before [`init`] (tests, offline commands) it samples nothing
/// and exports nothing, but still gives spans fresh ids, so trace context still propagates.
pub fn tracer() -> &'static SdkTracer {
    &TRACING
        .get_or_init(|| {
            let provider = SdkTracerProvider::builder().with_sampler(Sampler::AlwaysOff).build();
            let tracer = provider.tracer("kaudit");
            Tracing { provider, tracer }
        })
        .tracer
}

/// Flushes what is buffered for export when dropped, at the end of `kaudit run|shim|detect`.
pub struct Guard {
    meters: Option<opentelemetry_sdk::metrics::SdkMeterProvider>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(tracing) = TRACING.get() {
            let _ = tracing.provider.force_flush();
        }
        if let Some(meters) = &self.meters {
            let _ = meters.force_flush();
        }
    }
}

/// Sets up export from `config` and the environment; call once, inside the runtime (the gRPC
/// client lives on it), before the first span or metric. Without an endpoint only the sampler
/// and resource are set (ids propagate; nothing is recorded).
pub fn init(config: &OtlpConfig, role: &str) -> anyhow::Result<Guard> {
    let export = config.export(|v| std::env::var(v).ok())?;
    let mut resource = Resource::builder().with_attributes([
        KeyValue::new("service.instance.id", crate::ids::hostname().to_string()),
        KeyValue::new("kaudit.role", role.to_string()),
    ]);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("kaudit");
    }
    let resource = resource.build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
    let sampler_in_env = std::env::var_os("OTEL_TRACES_SAMPLER").is_some();
    let mut meters = None;
    match &export {
        None => builder = builder.with_sampler(Sampler::AlwaysOff),
        Some(export) => {
            if config.sample_ratio.is_some() || !sampler_in_env {
                let ratio = config.sample_ratio.unwrap_or(DEFAULT_SAMPLE_RATIO);
                anyhow::ensure!(
                    (0.0..=1.0).contains(&ratio),
                    "telemetry.otlp.sample_ratio: {ratio} is not between 0 and 1"
                );
                builder = builder.with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))));
            }
            builder = builder.with_batch_exporter(span_exporter(export)?);
            let mut reader = opentelemetry_sdk::metrics::PeriodicReader::builder(metric_exporter(export)?);
            if let Some(secs) = config.metrics_interval_secs {
                reader = reader.with_interval(Duration::from_secs(secs.max(1)));
            }
            meters = Some(super::export_metrics(reader.build(), resource)?);
            tracing::info!(
                protocol = ?export.protocol,
                endpoint = export.traces.as_deref().unwrap_or("from OTEL_EXPORTER_OTLP_*"),
                "exporting traces and metrics over OTLP"
            );
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer("kaudit");
    TRACING
        .set(Tracing { provider, tracer })
        .map_err(|_| anyhow::anyhow!("telemetry is already set up: a span was made before telemetry::otel::init"))?;
    Ok(Guard { meters })
}

/// Builds an OTLP exporter from `builder` (spans' or metrics') for `protocol`, sending to `at`
/// or, without one, where its `OTEL_EXPORTER_OTLP_*` variables say.
macro_rules! exporter {
    ($builder:expr, $protocol:expr, $at:expr) => {
        match $protocol {
            Protocol::Grpc => {
                let b = $builder.with_tonic();
                match $at {
                    Some(at) => b.with_endpoint(at).build()?,
                    None => b.build()?,
                }
            }
            protocol => {
                let b = $builder.with_http().with_protocol(protocol);
                match $at {
                    Some(at) => b.with_endpoint(at).build()?,
                    None => b.build()?,
                }
            }
        }
    };
}

fn span_exporter(export: &Export) -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    Ok(exporter!(
        opentelemetry_otlp::SpanExporter::builder(),
        export.protocol,
        &export.traces
    ))
}

fn metric_exporter(export: &Export) -> anyhow::Result<opentelemetry_otlp::MetricExporter> {
    Ok(exporter!(
        opentelemetry_otlp::MetricExporter::builder(),
        export.protocol,
        &export.metrics
    ))
}

/// A span started now as a child of `parent` (which may hold a remote context read from a
/// message or a request), as a context for its own children.
pub fn start(name: &'static str, kind: SpanKind, parent: &Context) -> Context {
    let span = tracer()
        .span_builder(name)
        .with_kind(kind)
        .start_with_context(tracer(), parent);
    parent.with_span(span)
}

/// A root span started now, linked to `sender` (a context a client sent) when it has one: the
/// sampling decision is ours, not the client's.
pub fn start_linked(name: &'static str, kind: SpanKind, sender: &Context) -> Context {
    let sent = sender.span().span_context().clone();
    let mut builder = tracer().span_builder(name).with_kind(kind);
    if sent.is_valid() {
        builder = builder.with_links(vec![opentelemetry::trace::Link::with_context(sent)]);
    }
    Context::new().with_span(builder.start_with_context(tracer(), &Context::new()))
}

/// A child span of `parent` that already happened, from `started` to `ended`.
pub fn record(name: &'static str, parent: &Context, started: SystemTime, ended: SystemTime, attributes: Vec<KeyValue>) {
    if !parent.span().span_context().is_sampled() {
        return;
    }
    let mut span = tracer()
        .span_builder(name)
        .with_start_time(started)
        .with_attributes(attributes)
        .start_with_context(tracer(), parent);
    opentelemetry::trace::Span::end_with_timestamp(&mut span, ended);
}

/// Ends the span of `cx`.
pub fn end(cx: &Context) {
    cx.span().end();
}

/// Whether the span of `cx` is recorded (its trace sampled).
pub fn sampled(cx: &Context) -> bool {
    cx.span().span_context().is_sampled()
}

fn propagator() -> &'static TraceContextPropagator {
    static P: OnceLock<TraceContextPropagator> = OnceLock::new();
    P.get_or_init(TraceContextPropagator::new)
}

/// The trace context in `headers` (a message's or a request's), or an empty context.
pub fn extract<'a>(headers: impl IntoIterator<Item = (&'a str, &'a str)>) -> Context {
    let found: Vec<(&str, &str)> = headers
        .into_iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("traceparent") || k.eq_ignore_ascii_case("tracestate"))
        .collect();
    if found.is_empty() {
        return Context::new();
    }
    propagator().extract(&Found(found))
}

/// `cx`'s trace context as headers (`traceparent`, and `tracestate` when there is one).
pub fn inject(cx: &Context) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(1);
    if cx.span().span_context().is_valid() {
        propagator().inject_context(cx, &mut Out(&mut out));
    }
    out
}

/// The `traceparent` of `cx`, if it has a valid span.
pub fn traceparent(cx: &Context) -> Option<String> {
    inject(cx).into_iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v)
}

/// The trace id of `cx` (32 hex digits), for logs.
pub fn trace_id(cx: &Context) -> Option<String> {
    let span = cx.span();
    let context = span.span_context();
    context.is_valid().then(|| context.trace_id().to_string())
}

struct Found<'a>(Vec<(&'a str, &'a str)>);

impl Extractor for Found<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| *v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| *k).collect()
    }
}

struct Out<'a>(&'a mut Vec<(String, String)>);

impl Injector for Out<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint() {
        assert_eq!(OtlpConfig::default().export(env(&[])).unwrap(), None);
        let only_protocol = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", " "),
        ];
        assert_eq!(OtlpConfig::default().export(env(&only_protocol)).unwrap(), None);
    }

    #[test]
    fn the_environment_or_the_pipeline_names_the_endpoint_and_protocol() {
        let from_env = OtlpConfig::default()
            .export(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ]))
            .unwrap()
            .unwrap();
        // The exporter reads the variables itself, adding the signal's path.
        assert_eq!((from_env.protocol, from_env.traces), (Protocol::HttpBinary, None));
        let config = OtlpConfig {
            endpoint: Some("http://c:4318/".into()),
            protocol: Some("http/protobuf".into()),
            ..Default::default()
        };
        let from_config = config
            .export(env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]))
            .unwrap()
            .unwrap();
        assert_eq!(from_config.traces.as_deref(), Some("http://c:4318/v1/traces"));
        assert_eq!(from_config.metrics.as_deref(), Some("http://c:4318/v1/metrics"));
        let grpc = OtlpConfig {
            endpoint: Some("http://c:4317".into()),
            ..Default::default()
        };
        let grpc = grpc.export(env(&[])).unwrap().unwrap();
        assert_eq!(
            (grpc.protocol, grpc.traces.as_deref()),
            (Protocol::Grpc, Some("http://c:4317"))
        );
        let bad = OtlpConfig {
            endpoint: Some("http://c".into()),
            protocol: Some("http/json".into()),
            ..Default::default()
        };
        let err = bad.export(env(&[])).unwrap_err().to_string();
        assert!(err.contains("`http/json` is not `grpc` or `http/protobuf`"), "{err}");
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        let parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = extract([("content-type", "x"), ("Traceparent", parent)]);
        assert_eq!(trace_id(&cx).as_deref(), Some("0af7651916cd43dd8448eb211c80319c"));
        assert!(sampled(&cx));
        // A child keeps the trace id and gets a span id of its own.
        let child = start("child", SpanKind::Internal, &cx);
        let tp = traceparent(&child).unwrap();
        assert!(tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"), "{tp}");
        assert_ne!(tp, parent);
        // No header, a broken header: no context, nothing injected.
        assert!(inject(&extract([("traceparent", "00-zz-yy-01")])).is_empty());
        assert!(inject(&extract(Vec::<(&str, &str)>::new())).is_empty());
        // A root span still gets ids to propagate, though nothing samples it here.
        let root = start("root", SpanKind::Server, &Context::new());
        assert!(traceparent(&root).unwrap().ends_with("-00"));
    }
}

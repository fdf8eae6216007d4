//! The webhook shim: the kube-apiserver's audit webhook backend posts here.
//!
//! `POST /k8s_audit` and `POST /k8s_audit/{cluster}` take an `EventList` (or one Event, or a
//! JSON array), gzip or not; `POST /ingest/{format}[/{cluster}]` takes managed clusters'
//! envelopes (`eks`, `gke`, `aks`, or `auto`: see [`crate::audit::envelope`]). Each event becomes
//! its own message ([`crate::ingest`]) and the answer is 200 only once the bus acknowledged
//! every one.
//! A malformed item goes to the dead-letter topic and the rest is accepted: a 4xx would make the
//! apiserver retry the whole batch and then drop it. A body that is no JSON at all gets 400.
//! When the bus is full the answer is 429, when the broker is down 503, both with
//! `Retry-After`, which the apiserver honours; memory stays bounded by the number of requests
//! in flight times the body limit.

pub mod auth;
pub mod server;

use crate::audit::{decode_document, Format};
use crate::bus::{Bus, PublishError};
use crate::ingest::{self, Batch};
use crate::telemetry::metrics;
use auth::{Authenticator, PeerCluster, Refusal};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use opentelemetry::KeyValue;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShimConfig {
    pub listen: String,
    /// Largest request body taken, compressed (the apiserver's batches can be tens of MiB).
    pub max_body_bytes: usize,
    /// Largest body after gzip decompression; more is 413 (gzip bombs).
    pub max_decompressed_bytes: usize,
    /// A request that takes longer (a slow client) gets 408.
    pub request_timeout_secs: u64,
    /// Requests processed at once; more get 503 with Retry-After.
    pub max_inflight_requests: usize,
    /// Largest event published as it is. A larger one loses `requestObject`/`responseObject`
    /// (annotated `audit.k8s.io/truncated`, as the apiserver's own truncation does); if it is
    /// still too large it is dead-lettered. Keep it under the broker's message limit (NATS
    /// `max_payload` and Kafka `message.max.bytes` are 1 MB by default).
    pub max_event_bytes: usize,
    /// Seconds the apiserver is told to wait on 429/503.
    pub retry_after_secs: u64,
    /// Accept requests without a credential (loopback demos only; logged at start).
    pub allow_unauthenticated: bool,
    pub clusters: Vec<ClusterConfig>,
    pub tls: Option<TlsConfig>,
}

impl Default for ShimConfig {
    fn default() -> Self {
        ShimConfig {
            listen: "127.0.0.1:8765".into(),
            max_body_bytes: 64 * 1024 * 1024,
            max_decompressed_bytes: 256 * 1024 * 1024,
            request_timeout_secs: 30,
            max_inflight_requests: 64,
            max_event_bytes: 900 * 1024,
            retry_after_secs: 1,
            allow_unauthenticated: false,
            clusters: Vec::new(),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// File holding this cluster's bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Subject CN of this cluster's mTLS client certificate.
    #[serde(default)]
    pub client_cert_cn: Option<String>,
    /// For a forwarder posting managed clusters' envelopes to `/ingest/{format}` (a CloudWatch
    /// subscription's Lambda, a Pub/Sub push subscription, an Event Hub function): the clusters
    /// its envelopes may name (`prod-*`, or `*` for any). Records naming another cluster are
    /// dead-lettered.
    #[serde(default)]
    pub forwards: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA that signs the apiservers' client certificates (enables mTLS).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

/// The shim's shared state.
pub struct Shim {
    pub bus: Arc<dyn Bus>,
    pub auth: Arc<Authenticator>,
    pub events_topic: String,
    pub dead_letter_topic: String,
    pub config: ShimConfig,
    inflight: Semaphore,
}

impl Shim {
    pub fn new(
        config: ShimConfig,
        bus: Arc<dyn Bus>,
        events_topic: &str,
        dead_letter_topic: &str,
    ) -> anyhow::Result<Shim> {
        let auth = Arc::new(Authenticator::new(&config.clusters, config.allow_unauthenticated)?);
        if config.allow_unauthenticated {
            tracing::warn!(
                "the shim accepts requests without credentials (allow_unauthenticated): for loopback demos only"
            );
        }
        Ok(Shim {
            bus,
            auth,
            events_topic: events_topic.to_string(),
            dead_letter_topic: dead_letter_topic.to_string(),
            inflight: Semaphore::new(config.max_inflight_requests),
            config,
        })
    }

    /// The HTTP routes: the webhook endpoints and telemetry.
    pub fn router(self: Arc<Self>) -> Router {
        let body_limit = self.config.max_body_bytes;
        let timeout = Duration::from_secs(self.config.request_timeout_secs);
        Router::new()
            .route("/k8s_audit", post(ingest))
            .route("/k8s_audit/{cluster}", post(ingest_for_cluster))
            .route("/ingest/{format}", post(ingest_format))
            .route("/ingest/{format}/{cluster}", post(ingest_format))
            .layer(DefaultBodyLimit::max(body_limit))
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .with_state(self)
            .merge(crate::telemetry::routes())
    }
}

async fn ingest(
    State(shim): State<Arc<Shim>>,
    peer: Option<Extension<PeerCluster>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &shim,
        peer.and_then(|Extension(p)| p.0),
        None,
        Format::Native,
        &headers,
        body,
    )
    .await
}

async fn ingest_for_cluster(
    State(shim): State<Arc<Shim>>,
    Path(cluster): Path<String>,
    peer: Option<Extension<PeerCluster>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(
        &shim,
        peer.and_then(|Extension(p)| p.0),
        Some(cluster),
        Format::Native,
        &headers,
        body,
    )
    .await
}

/// Senders that cannot set a header (a Pub/Sub push subscription) may put the bearer token in
/// the URL as `?token=…` (URL-safe characters only; the URL then holds a secret: keep access
/// logs in mind).
fn query_token(mut headers: HeaderMap, query: Option<&str>) -> HeaderMap {
    if headers.contains_key(header::AUTHORIZATION) {
        return headers;
    }
    let token = query.and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")));
    if let Some(value) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok()) {
        headers.insert(header::AUTHORIZATION, value);
    }
    headers
}

/// `/ingest/{format}` and `/ingest/{format}/{cluster}`.
async fn ingest_format(
    State(shim): State<Arc<Shim>>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    RawQuery(query): RawQuery,
    peer: Option<Extension<PeerCluster>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let headers = query_token(headers, query.as_deref());
    let cluster = params.get("cluster").cloned();
    match params.get("format").map(|f| f.parse()) {
        Some(Ok(format)) => {
            handle(
                &shim,
                peer.and_then(|Extension(p)| p.0),
                cluster,
                format,
                &headers,
                body,
            )
            .await
        }
        Some(Err(e)) => reject("bad_format", StatusCode::NOT_FOUND, e),
        None => reject("bad_format", StatusCode::NOT_FOUND, "no format in the path".into()),
    }
}

fn reject(reason: &'static str, status: StatusCode, message: String) -> Response {
    metrics().requests_rejected.add(1, &[KeyValue::new("reason", reason)]);
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

fn retry_later(shim: &Shim, reason: &'static str, status: StatusCode, message: String) -> Response {
    let mut response = reject(reason, status, message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(shim.config.retry_after_secs));
    response
}

async fn handle(
    shim: &Shim,
    peer: Option<String>,
    path_cluster: Option<String>,
    format: Format,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let received = Instant::now();
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let cluster = match shim
        .auth
        .cluster(peer.as_deref(), authorization, path_cluster.as_deref())
    {
        Ok(c) => c,
        Err(Refusal::Unauthenticated) => {
            return reject(
                "unauthenticated",
                StatusCode::UNAUTHORIZED,
                "a valid bearer token or client certificate is required".into(),
            )
        }
        Err(Refusal::WrongCluster { credential, path }) => {
            return reject(
                "wrong_cluster",
                StatusCode::FORBIDDEN,
                format!("the credential belongs to cluster {credential}, not {path}"),
            )
        }
    };
    let Ok(_permit) = shim.inflight.try_acquire() else {
        return retry_later(
            shim,
            "overloaded",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight".into(),
        );
    };
    let body = match decompress(headers, body, shim.config.max_decompressed_bytes) {
        Ok(b) => b,
        Err(Decompress::TooLarge) => {
            return reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("decompressed body exceeds {} bytes", shim.config.max_decompressed_bytes),
            )
        }
        Err(Decompress::Corrupt(e)) => return reject("bad_gzip", StatusCode::BAD_REQUEST, format!("gzip body: {e}")),
    };
    let items = match decode_document(&body, format) {
        Ok(items) => items,
        Err(e) => return reject("not_json", StatusCode::BAD_REQUEST, e),
    };
    let may_name = |named: &str| shim.auth.may_name(&cluster, named);
    let source = ingest::Source {
        cluster: &cluster,
        may_name: &may_name,
    };
    let batch = Batch::build(
        items.into_iter().map(ingest::Item::from),
        &source,
        shim.config.max_event_bytes,
    );
    let (accepted, dead_lettered) = (batch.events.len(), batch.dead.len());
    let span = tracing::debug_span!("batch", cluster);
    let published = batch.publish(shim.bus.as_ref(), &shim.events_topic, &shim.dead_letter_topic);
    match tracing::Instrument::instrument(published, span.clone()).await {
        Ok(()) => {
            tracing::debug!(parent: &span, accepted, dead_lettered, "batch published");
            metrics().publish_seconds.record(received.elapsed().as_secs_f64(), &[]);
            (
                StatusCode::OK,
                Json(serde_json::json!({ "accepted": accepted, "dead_lettered": dead_lettered })),
            )
                .into_response()
        }
        Err(PublishError::Saturated(_)) => retry_later(
            shim,
            "saturated",
            StatusCode::TOO_MANY_REQUESTS,
            "the bus is full; retry later".into(),
        ),
        Err(PublishError::Unavailable(e)) => {
            tracing::warn!(cluster, "publish failed, answering 503: {e}");
            retry_later(
                shim,
                "unavailable",
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the broker is unavailable: {e}"),
            )
        }
    }
}

enum Decompress {
    TooLarge,
    Corrupt(std::io::Error),
}

/// gzip bodies (by header or magic bytes) are inflated, at most `limit` bytes of them.
fn decompress(headers: &HeaderMap, body: Bytes, limit: usize) -> Result<Bytes, Decompress> {
    let declared = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !declared && !body.starts_with(&[0x1f, 0x8b]) {
        return Ok(body);
    }
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(Decompress::Corrupt)?;
    if out.len() > limit {
        return Err(Decompress::TooLarge);
    }
    Ok(out.into())
}

/// A kubeconfig for the apiserver's `--audit-webhook-config-file`.
pub fn webhook_kubeconfig(
    cluster: &str,
    server: &str,
    token_file: Option<&std::path::Path>,
    ca_file: Option<&std::path::Path>,
) -> String {
    let url = format!("{}/k8s_audit/{cluster}", server.trim_end_matches('/'));
    let mut out = String::new();
    out.push_str("# kube-apiserver --audit-webhook-config-file for kaudit\n");
    out.push_str("apiVersion: v1\nkind: Config\nclusters:\n  - name: kaudit\n    cluster:\n");
    out.push_str(&format!("      server: {url}\n"));
    if let Some(ca) = ca_file {
        out.push_str(&format!("      certificate-authority: {}\n", ca.display()));
    }
    out.push_str("users:\n  - name: kaudit-webhook\n    user:\n");
    match token_file {
        Some(f) => out.push_str(&format!("      tokenFile: {}\n", f.display())),
        None => out.push_str("      {}\n"),
    }
    out.push_str("contexts:\n  - name: kaudit\n    context:\n      cluster: kaudit\n      user: kaudit-webhook\n");
    out.push_str("current-context: kaudit\n");
    out
}

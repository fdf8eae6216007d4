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
//! `Retry-After`, which the apiserver honours.
//!
//! Nothing of a request's body is read before its credential (header or TLS certificate) is
//! checked and it holds one of the `max_inflight_requests` slots; every body byte held, raw or
//! inflated, is counted against `max_buffered_bytes` (503 + Retry-After past it), and
//! decompression and decoding run on the blocking pool, not on the async workers. A batch larger
//! than the bus could ever take is refused with 413 at once. Telemetry is not served here
//! (only a bare `/healthz`): `/metrics` tells who sends what and which rules fired, so it has a
//! listener of its own ([`crate::telemetry`]).

pub mod auth;
pub mod kubeconfig;
pub mod server;

use crate::audit::Format;
use crate::bus::PublishError;
use crate::ingest::{self, Batch, Destination};
use crate::telemetry::{metrics, otel};
use auth::{Authenticator, PeerCluster, Refusal};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::KeyValue;
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
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
    /// Body bytes held by all requests together, raw and inflated; past it, 503 + Retry-After.
    pub max_buffered_bytes: usize,
    /// Open connections; more are closed as soon as they are accepted (and logged).
    pub max_connections: usize,
    /// A connection with no request in flight for this long is closed (HTTP/1.1 keep-alive and
    /// HTTP/2 alike: an HTTP/2 client is sent GOAWAY).
    pub idle_timeout_secs: u64,
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
            max_buffered_bytes: 512 * 1024 * 1024,
            max_connections: 1024,
            idle_timeout_secs: 60,
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

/// Credentials travel only over TLS. An apiserver sends a kubeconfig's token or client
/// certificate only to an `https://` server (client-go drops them for `http://`): a shim that
/// expects tokens on a plain listener would refuse every batch with 401 — and a token sent in
/// clear can be read on the way. So tokens on a plain listener are refused unless the listener is
/// on loopback, where a TLS-terminating proxy on the same host (a sidecar) may front the shim;
/// that case is allowed with a warning. Certificate clusters need `[shim.tls]` with a client CA.
fn check_credentials_travel_over_tls(config: &ShimConfig) -> anyhow::Result<()> {
    let mtls = config.tls.as_ref().is_some_and(|t| t.client_ca_file.is_some());
    if let Some(c) = config.clusters.iter().find(|c| c.client_cert_cn.is_some()) {
        if !mtls {
            anyhow::bail!(
                "shim.clusters {}: client_cert_cn needs [shim.tls] with client_ca_file; without it the shim \
                 asks for no client certificate and the cluster could never authenticate",
                c.name
            );
        }
    }
    if config.tls.is_some() {
        return Ok(());
    }
    let with_tokens: Vec<&str> = config
        .clusters
        .iter()
        .filter(|c| c.token_file.is_some())
        .map(|c| c.name.as_str())
        .collect();
    if with_tokens.is_empty() {
        return Ok(());
    }
    if listens_on_loopback(&config.listen) {
        tracing::warn!(
            "clusters {} send tokens to a plain-HTTP listener ({}): right only behind a TLS-terminating proxy \
             on this host; an apiserver itself sends its token only to an https:// server",
            with_tokens.join(", "),
            config.listen
        );
        return Ok(());
    }
    anyhow::bail!(
        "shim.clusters {} authenticate with tokens, but the shim listens on {} without [shim.tls]: an \
         apiserver sends a token only to an https:// server (client-go drops it for http://), so every \
         batch would get 401, and a token sent in clear can be read on the way. Configure [shim.tls] \
         (cert_file, key_file), or listen on loopback behind a TLS-terminating proxy",
        with_tokens.join(", "),
        config.listen
    )
}

/// Whether `listen` (`host:port`) is a loopback address.
fn listens_on_loopback(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<std::net::SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen.rsplit_once(':').is_some_and(|(host, _)| host == "localhost")
}

/// The shim's shared state.
pub struct Shim {
    /// Where accepted events go.
    pub to: Destination,
    pub auth: Arc<Authenticator>,
    pub config: ShimConfig,
    inflight: Semaphore,
    /// Body bytes held, in KiB permits.
    buffered: Arc<Semaphore>,
}

impl Shim {
    pub fn new(config: ShimConfig, to: Destination) -> anyhow::Result<Shim> {
        for cluster in &config.clusters {
            ingest::check_cluster_name(&cluster.name).map_err(|e| anyhow::anyhow!("shim.clusters: {e}"))?;
        }
        check_credentials_travel_over_tls(&config)?;
        let auth = Arc::new(Authenticator::new(&config.clusters, config.allow_unauthenticated)?);
        if config.allow_unauthenticated {
            tracing::warn!(
                "the shim accepts requests without credentials (allow_unauthenticated): for loopback demos only"
            );
        }
        Ok(Shim {
            to,
            auth,
            inflight: Semaphore::new(config.max_inflight_requests),
            buffered: Arc::new(Semaphore::new(config.max_buffered_bytes.div_ceil(1024))),
            config,
        })
    }

    /// The HTTP routes: the webhook endpoints and a bare liveness check.
    pub fn router(self: Arc<Self>) -> Router {
        let timeout = Duration::from_secs(self.config.request_timeout_secs);
        Router::new()
            .route("/k8s_audit", post(ingest))
            .route("/k8s_audit/{cluster}", post(ingest_for_cluster))
            .route("/ingest/{format}", post(ingest_format))
            .route("/ingest/{format}/{cluster}", post(ingest_format))
            // Bodies are read by the handlers, after the credential check (see `read_body`).
            .layer(DefaultBodyLimit::disable())
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                timeout,
            ))
            .with_state(self)
            .route("/healthz", axum::routing::get(|| async { "ok" }))
    }
}

async fn ingest(
    State(shim): State<Arc<Shim>>,
    peer: Option<Extension<PeerCluster>>,
    headers: HeaderMap,
    body: Body,
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
    body: Body,
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
    body: Body,
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

/// One request, in a span of its own: a trace starts here, sampled by our ratio. A
/// `traceparent` the sender sent (an apiserver with tracing on) is linked, not followed, so that
/// a client cannot make us record every event it sends.
async fn handle(
    shim: &Shim,
    peer: Option<String>,
    path_cluster: Option<String>,
    format: Format,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let sender = otel::extract(headers.iter().filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?))));
    let request = otel::start_linked("shim request", SpanKind::Server, &sender);
    let response = accept(&request, shim, peer, path_cluster, format, headers, body).await;
    let span = request.span();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    ));
    if response.status().is_server_error() {
        span.set_status(opentelemetry::trace::Status::error("not accepted"));
    }
    response
}

async fn accept(
    request: &opentelemetry::Context,
    shim: &Shim,
    peer: Option<String>,
    path_cluster: Option<String>,
    format: Format,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let received = Instant::now();
    let authenticating = SystemTime::now();
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
    otel::record("authenticate", request, authenticating, SystemTime::now(), Vec::new());
    request
        .span()
        .set_attribute(KeyValue::new("kaudit.cluster", cluster.clone()));
    if let Err(e) = ingest::check_cluster_name(&cluster) {
        return reject("bad_cluster", StatusCode::BAD_REQUEST, e);
    }
    let Ok(_permit) = shim.inflight.try_acquire() else {
        return retry_later(
            shim,
            "overloaded",
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight".into(),
        );
    };
    let decoding = SystemTime::now();
    let (body, held) = match read_body(shim, headers, body).await {
        Ok(read) => read,
        Err(refused) => return refused,
    };
    // Inflating and parsing are CPU work: off the async workers.
    let budget = shim.buffered.clone();
    let limit = shim.config.max_decompressed_bytes;
    let gzip = is_gzip(headers, &body);
    let decoded = tokio::task::spawn_blocking(move || {
        let mut held = held;
        let body = if gzip {
            inflate(&body, limit, &budget, &mut held)?
        } else {
            body
        };
        // What envelopes inside may inflate to: what is left of the request's limit.
        let envelopes = crate::audit::envelope::InflateBudget::new(limit.saturating_sub(body.len()) as u64);
        let items =
            crate::audit::decode::decode_document_within(&body, format, &envelopes).map_err(Decoding::NotJson)?;
        if envelopes.exhausted() {
            return Err(Decoding::TooLarge);
        }
        Ok((items, held))
    })
    .await;
    let decoded_attributes = |items: usize| vec![KeyValue::new("kaudit.items", items as i64)];
    let (items, _held) = match decoded {
        Ok(Ok(decoded)) => {
            otel::record(
                "decode",
                request,
                decoding,
                SystemTime::now(),
                decoded_attributes(decoded.0.len()),
            );
            decoded
        }
        Ok(Err(Decoding::TooLarge)) => {
            return reject(
                "too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body inflates past {} bytes", shim.config.max_decompressed_bytes),
            )
        }
        Ok(Err(Decoding::Buffered)) => return buffers_full(shim),
        Ok(Err(Decoding::Corrupt(e))) => return reject("bad_gzip", StatusCode::BAD_REQUEST, format!("gzip body: {e}")),
        Ok(Err(Decoding::NotJson(e))) => return reject("not_json", StatusCode::BAD_REQUEST, e),
        Err(e) => {
            tracing::error!("decoding a request failed: {e}");
            return reject("internal", StatusCode::INTERNAL_SERVER_ERROR, "decoding failed".into());
        }
    };
    if let Some(max) = shim.to.bus.max_batch().filter(|max| items.len() > *max) {
        return reject(
            "batch_too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a batch of {} events can never fit the bus ({max} at most): lower the apiserver's --audit-webhook-batch-max-size",
                items.len()
            ),
        );
    }
    let may_name = |named: &str| shim.auth.may_name(&cluster, named);
    let source = ingest::Source {
        cluster: &cluster,
        may_name: &may_name,
    };
    // The events carry the publish span's context: a detector continues the trace from it.
    let publish = otel::start("publish", SpanKind::Producer, request);
    let batch = Batch::build(
        items.into_iter().map(ingest::Item::from),
        &source,
        shim.config.max_event_bytes,
        &publish,
    );
    let (accepted, dead_lettered) = (batch.events.len(), batch.dead.len());
    publish.span().set_attributes([
        KeyValue::new("kaudit.events", accepted as i64),
        KeyValue::new("kaudit.dead_lettered", dead_lettered as i64),
    ]);
    let published = batch.publish(&shim.to).await;
    otel::end(&publish);
    match published {
        Ok(()) => {
            tracing::debug!(
                cluster,
                accepted,
                dead_lettered,
                trace_id = otel::trace_id(request),
                "batch published"
            );
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

fn buffers_full(shim: &Shim) -> Response {
    retry_later(
        shim,
        "buffers_full",
        StatusCode::SERVICE_UNAVAILABLE,
        "the shim holds as many body bytes as it may (max_buffered_bytes); retry later".into(),
    )
}

/// Body bytes a request holds, in KiB permits of [`Shim::buffered`]; given back when dropped.
type Held = Vec<tokio::sync::OwnedSemaphorePermit>;

/// Takes `bytes` more from the buffered-bytes budget, or `None` when it is spent.
fn hold(budget: &Arc<Semaphore>, bytes: usize, held: &mut Held) -> Option<()> {
    let kib = u32::try_from(bytes.div_ceil(1024)).ok()?;
    if kib > 0 {
        held.push(budget.clone().try_acquire_many_owned(kib).ok()?);
    }
    Some(())
}

/// Reads the body within `max_body_bytes` and the shared `max_buffered_bytes`.
async fn read_body(shim: &Shim, headers: &HeaderMap, body: Body) -> Result<(Bytes, Held), Response> {
    use http_body_util::BodyExt;
    let limit = shim.config.max_body_bytes;
    let too_large = || {
        reject(
            "too_large",
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let mut held = Held::new();
    if let Some(length) = declared {
        if length > limit {
            return Err(too_large());
        }
        hold(&shim.buffered, length, &mut held).ok_or_else(|| buffers_full(shim))?;
    }
    let mut out = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| reject("bad_body", StatusCode::BAD_REQUEST, format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if out.len() + data.len() > limit {
            return Err(too_large());
        }
        // A body longer than it declared, or of undeclared length, holds as it grows.
        let over = (out.len() + data.len()).saturating_sub(declared.unwrap_or(0).max(out.len()));
        if over > 0 {
            hold(&shim.buffered, over, &mut held).ok_or_else(|| buffers_full(shim))?;
        }
        out.extend_from_slice(&data);
    }
    Ok((out.freeze(), held))
}

/// Why a body could not be decoded.
enum Decoding {
    TooLarge,
    Buffered,
    Corrupt(std::io::Error),
    NotJson(String),
}

/// gzip by header or magic bytes.
fn is_gzip(headers: &HeaderMap, body: &[u8]) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"))
        || body.starts_with(&[0x1f, 0x8b])
}

/// Inflates a gzip body, at most `limit` bytes, holding what it inflates against `budget`.
fn inflate(body: &[u8], limit: usize, budget: &Arc<Semaphore>, held: &mut Held) -> Result<Bytes, Decoding> {
    let mut out = Vec::new();
    let mut reader = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let n = reader.read(&mut chunk).map_err(Decoding::Corrupt)?;
        if n == 0 {
            break;
        }
        if out.len() + n > limit {
            return Err(Decoding::TooLarge);
        }
        hold(budget, n, held).ok_or(Decoding::Buffered)?;
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, token: bool, cn: bool) -> ClusterConfig {
        ClusterConfig {
            name: name.into(),
            token_file: token.then(|| PathBuf::from("/t")),
            client_cert_cn: cn.then(|| "apiserver".to_string()),
            forwards: Vec::new(),
        }
    }

    #[test]
    fn credentials_need_tls_except_on_loopback() {
        let tls = |client_ca: bool| TlsConfig {
            cert_file: "/c".into(),
            key_file: "/k".into(),
            client_ca_file: client_ca.then(|| PathBuf::from("/ca")),
        };
        let mut c = ShimConfig {
            listen: "0.0.0.0:8765".into(),
            clusters: vec![cluster("a", true, false), cluster("b", true, false)],
            ..Default::default()
        };
        let e = check_credentials_travel_over_tls(&c).unwrap_err().to_string();
        assert!(
            e.contains("shim.clusters a, b") && e.contains("0.0.0.0:8765 without [shim.tls]"),
            "{e}"
        );
        for loopback in ["127.0.0.1:8765", "[::1]:8765", "localhost:8765"] {
            c.listen = loopback.into();
            assert!(check_credentials_travel_over_tls(&c).is_ok(), "{loopback}");
        }
        c.listen = "kaudit.example:8765".into();
        assert!(check_credentials_travel_over_tls(&c).is_err());
        c.tls = Some(tls(false));
        assert!(check_credentials_travel_over_tls(&c).is_ok());
        // A certificate cluster needs a client CA, on loopback too.
        c.clusters.push(cluster("m", false, true));
        c.listen = "127.0.0.1:8765".into();
        let e = check_credentials_travel_over_tls(&c).unwrap_err().to_string();
        assert!(e.contains("shim.clusters m: client_cert_cn needs"), "{e}");
        c.tls = Some(tls(true));
        assert!(check_credentials_travel_over_tls(&c).is_ok());
        // No credentials at all: nothing to protect.
        let open = ShimConfig {
            listen: "0.0.0.0:8765".into(),
            allow_unauthenticated: true,
            ..Default::default()
        };
        assert!(check_credentials_travel_over_tls(&open).is_ok());
    }
}

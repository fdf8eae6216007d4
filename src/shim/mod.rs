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
mod body;
mod config;
pub mod kubeconfig;
pub mod server;

use body::{buffers_full, inflate, is_gzip, read_body, Decoding};
use config::check_credentials_travel_over_tls;
pub use config::{ClusterConfig, ShimConfig, TlsConfig};

use crate::audit::Format;
use crate::bus::PublishError;
use crate::ingest::{self, Batch, Destination};
use crate::telemetry::{metrics, otel};
use auth::{Authenticator, PeerCluster, Refusal};
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use opentelemetry::trace::{SpanKind, TraceContextExt};
use opentelemetry::KeyValue;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Semaphore;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

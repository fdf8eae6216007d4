//! Serves the shim's router over TCP, plain or TLS (rustls; ALPN h2 and http/1.1), HTTP/1.1
//! and HTTP/2 on the same port (h2c with prior knowledge on plain TCP, as the apiserver's
//! client speaks h2 over TLS). With a client CA configured, a verified client certificate's
//! subject CN names the cluster (mTLS). Stops accepting on shutdown and lets connections finish
//! their requests.
//!
//! Connections are bounded: at most `max_connections` are open (one more is closed as soon as it
//! is accepted, with a log line), and one with no request in flight for `idle_timeout_secs` is
//! closed (HTTP/2 clients get GOAWAY), so idle clients cannot hold file descriptors for ever.

use super::auth::{Authenticator, PeerCluster};
use super::TlsConfig;
use crate::shutdown::Shutdown;
use crate::telemetry::metrics;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Limits on connections (see [`super::ShimConfig`]).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn of(config: &super::ShimConfig) -> Limits {
        Limits {
            max_connections: config.max_connections.max(1),
            idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
        }
    }
}

/// Requests in flight on one connection, and when it was last busy.
#[derive(Default)]
struct Activity {
    inflight: AtomicUsize,
    /// Milliseconds since `born` when the last request began or ended.
    last: AtomicU64,
    born: OnceLock<Instant>,
}

impl Activity {
    fn touch(&self) {
        let born = self.born.get_or_init(Instant::now);
        self.last.store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
    fn idle_for(&self) -> Option<Duration> {
        if self.inflight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let born = self.born.get_or_init(Instant::now);
        Some(
            born.elapsed()
                .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed))),
        )
    }
}

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<&TlsConfig>,
    auth: Arc<Authenticator>,
    limits: Limits,
    mut stop: Shutdown,
) -> anyhow::Result<()> {
    let acceptor = tls.map(tls_acceptor).transpose()?;
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_concurrent_streams(256);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut refused = 0u64;
    let mut last_refusal_log: Option<Instant> = None;
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.stopped() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            refused += 1;
            metrics()
                .requests_rejected
                .add(1, &[opentelemetry::KeyValue::new("reason", "too_many_connections")]);
            if last_refusal_log.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused,
                    "connection limit reached: closing new connections until some end (shim.max_connections)"
                );
                last_refusal_log = Some(Instant::now());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let auth = auth.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let activity = Arc::new(Activity::default());
            activity.touch();
            let router = match acceptor {
                None => router,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return tracing::debug!(%remote, "TLS handshake failed: {e}"),
                        Err(_) => return tracing::debug!(%remote, "TLS handshake timed out"),
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .and_then(|cert| {
                            let cn = common_name(cert.as_ref())?;
                            let cluster = auth.cluster_of_cert(&cn);
                            if cluster.is_none() {
                                tracing::warn!(%remote, cn, "client certificate maps to no cluster");
                            }
                            cluster
                        });
                    let router = router.layer(axum::Extension(PeerCluster(peer)));
                    let service = counted(router, activity.clone());
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                    return drive(conn, &activity, limits.idle_timeout, stop, remote).await;
                }
            };
            let service = counted(router, activity.clone());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            drive(conn, &activity, limits.idle_timeout, stop, remote).await
        });
    }
    drop(listener);
    // Every open connection holds a slot: all slots back means all connections ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
}

/// The router as a hyper service that keeps `activity` up to date.
fn counted(
    router: Router,
    activity: Arc<Activity>,
) -> TowerToHyperService<
    impl tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
            Future = impl Send,
        > + Clone,
> {
    use tower::ServiceExt;
    TowerToHyperService::new(tower::service_fn(
        move |request: axum::http::Request<hyper::body::Incoming>| {
            let router = router.clone();
            let activity = activity.clone();
            async move {
                activity.inflight.fetch_add(1, Ordering::Relaxed);
                activity.touch();
                let response = router.oneshot(request.map(axum::body::Body::new)).await;
                activity.inflight.fetch_sub(1, Ordering::Relaxed);
                activity.touch();
                response
            }
        },
    ))
}

/// Serves one connection until it ends: closed gracefully when idle too long or on shutdown.
async fn drive<C>(
    conn: C,
    activity: &Activity,
    idle_timeout: Duration,
    mut stop: Shutdown,
    remote: std::net::SocketAddr,
) where
    C: std::future::Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + GracefulConn,
{
    let mut conn = std::pin::pin!(conn);
    let mut check = tokio::time::interval(idle_timeout.min(Duration::from_secs(1)).max(Duration::from_millis(100)));
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%remote, "connection ended: {e}");
                }
                return;
            }
            _ = check.tick(), if !closing => {
                if activity.idle_for().is_some_and(|idle| idle >= idle_timeout) {
                    tracing::debug!(%remote, "closing a connection idle for {idle_timeout:?}");
                    conn.as_mut().graceful();
                    closing = true;
                }
            }
            _ = stop.stopped(), if !closing => {
                conn.as_mut().graceful();
                closing = true;
            }
        }
    }
}

/// A connection that can be asked to finish its requests and close.
trait GracefulConn {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S> GracefulConn for hyper_util::server::conn::auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Future: Send + 'static,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Data: Send,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown()
    }
}

fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(cn)
}

fn tls_acceptor(config: &TlsConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let read = |p: &std::path::Path| std::fs::read(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()));
    let certs = rustls_pemfile::certs(&mut &read(&config.cert_file)?[..]).collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut &read(&config.key_file)?[..])?
        .ok_or_else(|| anyhow::anyhow!("{}: no private key", config.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let mut server = match &config.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_pemfile::certs(&mut &read(ca)?[..]) {
                roots.add(cert?)?;
            }
            // Clients without a certificate may still use a bearer token.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()?;
            builder
                .with_client_cert_verifier(verifier)
                .with_single_cert(certs, key)?
        }
        None => builder.with_no_client_auth().with_single_cert(certs, key)?,
    };
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

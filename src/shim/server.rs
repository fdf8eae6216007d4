//! Serves the shim's router over TCP, plain or TLS (rustls; ALPN h2 and http/1.1), HTTP/1.1
//! and HTTP/2 on the same port (h2c with prior knowledge on plain TCP, as the apiserver's
//! client speaks h2 over TLS). With a client CA configured, a verified client certificate's
//! subject CN names the cluster (mTLS). Stops accepting on shutdown and lets connections finish
//! their requests.

use super::auth::{Authenticator, PeerCluster};
use super::TlsConfig;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::rustls;

/// How long shutdown waits for open connections to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<&TlsConfig>,
    auth: Arc<Authenticator>,
    mut stop: watch::Receiver<bool>,
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
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
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
            _ = stop.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = acceptor.clone();
        let auth = auth.clone();
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let service = TowerToHyperService::new(router);
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                                .into_owned(),
                        )
                        .await
                }
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
                    let service = TowerToHyperService::new(router.layer(axum::Extension(PeerCluster(peer))));
                    watcher
                        .watch(
                            builder
                                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                                .into_owned(),
                        )
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%remote, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
    Ok(())
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

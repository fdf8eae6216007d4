//! What the shim is configured with: where it listens, its limits, the clusters it accepts and
//! their credentials, TLS; and the check that credentials travel only over TLS.

use serde::Deserialize;
use std::path::PathBuf;

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
pub(super) fn check_credentials_travel_over_tls(config: &ShimConfig) -> anyhow::Result<()> {
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

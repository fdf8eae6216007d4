//! The roles a `kaudit` process plays, wired from a pipeline config: `run` (shim, detector and
//! alert outputs in one process), `shim`, `detect`, and `tail` (a log file instead of the shim;
//! with the in-memory bus it brings its own detector, as nothing else could read that bus). Each
//! starts, reports where it listens, and stops cleanly: on SIGTERM/SIGINT the ingress (shim or
//! tail) stops taking events and finishes what it took (every 2xx, every checkpoint, already
//! published), then the detector drains what is queued and its outputs flush.

use crate::alert::sink;
use crate::bus::{self, Bus};
use crate::config::PipelineConfig;
use crate::detector::DetectorStats;
use crate::ingest::Destination;
use crate::reload::Reloader;
use crate::shim::{server, Shim};
use crate::shutdown::{self, Trigger};
use crate::telemetry::metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A started pipeline: where it listens, and how to stop it.
pub struct Running {
    /// Where the shim listens.
    pub addr: Option<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`[telemetry] listen`).
    pub telemetry_addr: Option<SocketAddr>,
    pub bus: Arc<dyn Bus>,
    pub detector_stats: Option<Arc<DetectorStats>>,
    /// The detector's rule set (hot-reloaded).
    pub rules: Option<Arc<Reloader>>,
    stop_ingress: Trigger,
    stop_detector: Trigger,
    ingress: Option<JoinHandle<anyhow::Result<()>>>,
    detector: Option<JoinHandle<anyhow::Result<()>>>,
    /// How long the detector may take to stop.
    shutdown_timeout: Duration,
}

impl Running {
    /// Stops the ingress (the shim finishing its requests, or the tail its batch), then the
    /// detector (draining its queue).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_ingress.stop();
        if let Some(ingress) = self.ingress.take() {
            ingress.await??;
        }
        self.stop_detector.stop();
        if let Some(mut detector) = self.detector.take() {
            match tokio::time::timeout(self.shutdown_timeout, &mut detector).await {
                Ok(result) => result??,
                Err(_) => {
                    detector.abort();
                    tracing::warn!(
                        "the detector did not stop within {:?} (detector.shutdown_timeout_secs): its uncommitted \
                         batch and unflushed alerts are left to the bus, which delivers them again",
                        self.shutdown_timeout
                    );
                }
            }
        }
        Ok(())
    }

    /// Waits for SIGTERM or SIGINT, then shuts down.
    pub async fn until_signalled(self) -> anyhow::Result<()> {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing requests, draining the queue, flushing outputs");
        self.shutdown().await
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Which roles to start.
#[derive(Debug, Clone)]
pub enum Roles {
    All,
    Shim,
    Detector,
    Tail(crate::tail::TailConfig),
}

pub async fn start(config: PipelineConfig, roles: Roles) -> anyhow::Result<Running> {
    let bus = bus::connect(&config.bus).await?;
    let (stop_ingress, ingress_rx) = shutdown::channel();
    let (stop_detector, detector_rx) = shutdown::channel();
    let mut running = Running {
        addr: None,
        telemetry_addr: None,
        bus: bus.clone(),
        detector_stats: None,
        rules: None,
        stop_ingress,
        stop_detector,
        ingress: None,
        detector: None,
        shutdown_timeout: Duration::from_secs(config.detector.shutdown_timeout_secs),
    };
    let detector = match &roles {
        Roles::All | Roles::Detector => true,
        Roles::Shim => false,
        Roles::Tail(_) => config.bus.kind == bus::BusKind::Memory,
    };

    if detector {
        let sinks = sink::build(&config.outputs, &bus, &config.bus, &config.redaction).await?;
        let (detector, sub) = config.detector.build(&*bus, &config.bus.events_topic, sinks).await?;
        running.rules = Some(detector.rules.clone());
        let stats = detector.stats.clone();
        running.detector = Some(tokio::spawn(async move { detector.run(sub, detector_rx).await }));
        running.detector_stats = Some(stats);
    }

    if let Roles::Tail(tail) = roles.clone() {
        running.ingress = Some(tokio::spawn(crate::tail::run(
            tail,
            Destination::new(bus.clone(), &config.bus),
            config.shim.max_event_bytes,
            ingress_rx.clone(),
        )));
    }

    // Telemetry has a listener of its own: the ingest port serves ingest and a bare /healthz.
    if let Some(listen) = &config.telemetry.listen {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("telemetry.listen: cannot listen on {listen}: {e}"))?;
        running.telemetry_addr = Some(listener.local_addr()?);
        tracing::info!(
            "telemetry on http://{} (/metrics, /healthz, /readyz)",
            listener.local_addr()?
        );
        let mut rx = ingress_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, crate::telemetry::routes())
                .with_graceful_shutdown(async move { rx.stopped().await })
                .await;
        });
    }

    if matches!(roles, Roles::All | Roles::Shim) {
        let shim = Arc::new(Shim::new(
            config.shim.clone(),
            Destination::new(bus.clone(), &config.bus),
        )?);
        let listener = TcpListener::bind(&config.shim.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.shim.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.shim.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "shim listening on {scheme}://{addr} (POST /k8s_audit[/{{cluster}}], /ingest/{{format}}[/{{cluster}}], GET /healthz)"
        );
        running.addr = Some(addr);
        let auth = shim.auth.clone();
        let limits = server::Limits::of(&config.shim);
        let tls = config.shim.tls.clone();
        let router = shim.router();
        if config.shim.clusters.is_empty() && !config.shim.allow_unauthenticated {
            tracing::warn!(
                "no clusters are configured and unauthenticated requests are refused: every request will get 401"
            );
        }
        running.ingress = Some(tokio::spawn(async move {
            server::serve(listener, router, tls.as_ref(), auth, limits, ingress_rx).await
        }));
    }
    metrics().set_ready(true);
    Ok(running)
}

//! The roles a `kaudit` process plays, wired from a pipeline config: `run` (shim, detector and
//! alert outputs in one process), `shim`, and `detect`. Each starts, reports where it listens,
//! and stops cleanly: on SIGTERM/SIGINT the shim stops accepting and finishes its requests
//! (every 2xx already published), then the detector drains what is queued and its outputs flush.

use crate::alert::sink;
use crate::bus::{self, Bus};
use crate::config::PipelineConfig;
use crate::detector::{Detector, DetectorStats};
use crate::engine::RuleSet;
use crate::shim::{server, Shim};
use crate::telemetry::metrics;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A started pipeline: where it listens, and how to stop it.
pub struct Running {
    pub addr: Option<SocketAddr>,
    pub bus: Arc<dyn Bus>,
    pub detector_stats: Option<Arc<DetectorStats>>,
    stop_shim: watch::Sender<bool>,
    stop_detector: watch::Sender<bool>,
    shim: Option<JoinHandle<anyhow::Result<()>>>,
    detector: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Stops the shim (finishing its requests), then the detector (draining its queue).
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop_shim.send(true);
        if let Some(shim) = self.shim.take() {
            shim.await??;
        }
        let _ = self.stop_detector.send(true);
        if let Some(detector) = self.detector.take() {
            detector.await??;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    All,
    Shim,
    Detector,
}

pub async fn start(config: PipelineConfig, roles: Roles) -> anyhow::Result<Running> {
    let bus = bus::connect(&config.bus).await?;
    let (stop_shim, shim_rx) = watch::channel(false);
    let (stop_detector, detector_rx) = watch::channel(false);
    let mut running = Running {
        addr: None,
        bus: bus.clone(),
        detector_stats: None,
        stop_shim,
        stop_detector,
        shim: None,
        detector: None,
    };

    if roles != Roles::Shim {
        let rules = Arc::new(RuleSet::load(&config.detector.rules, config.detector.rule_matching)?);
        tracing::info!(rules = rules.rules().len(), "rules loaded");
        let sinks = sink::build(&config.outputs, &bus, &config.bus.alerts_topic)?;
        let stats = Arc::new(DetectorStats::default());
        let detector = Detector {
            rules,
            deduper: Arc::new(crate::dedup::Deduper::new(&config.detector.dedup)?),
            sinks,
            batch_size: config.detector.batch_size,
            stats: stats.clone(),
        };
        let sub = bus.subscribe(&config.bus.events_topic, &config.detector.group).await?;
        running.detector = Some(tokio::spawn(async move { detector.run(sub, detector_rx).await }));
        running.detector_stats = Some(stats);
    }

    // The shim serves telemetry on its own port; a detector alone serves it where configured.
    if roles != Roles::Detector {
        let shim = Arc::new(Shim::new(
            config.shim.clone(),
            bus.clone(),
            &config.bus.events_topic,
            &config.bus.dead_letter_topic,
        )?);
        let listener = TcpListener::bind(&config.shim.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.shim.listen))?;
        let addr = listener.local_addr()?;
        let scheme = if config.shim.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "shim listening on {scheme}://{addr} (POST /k8s_audit[/{{cluster}}], /metrics, /healthz, /readyz)"
        );
        running.addr = Some(addr);
        let auth = shim.auth.clone();
        let tls = config.shim.tls.clone();
        let router = shim.router();
        if config.shim.clusters.is_empty() && !config.shim.allow_unauthenticated {
            tracing::warn!(
                "no clusters are configured and unauthenticated requests are refused: every request will get 401"
            );
        }
        running.shim = Some(tokio::spawn(async move {
            server::serve(listener, router, tls.as_ref(), auth, shim_rx).await
        }));
    } else if let Some(listen) = &config.telemetry.listen {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        running.addr = Some(listener.local_addr()?);
        tracing::info!("telemetry on http://{}", listener.local_addr()?);
        let mut rx = shim_rx;
        tokio::spawn(async move {
            let _ = axum::serve(listener, crate::telemetry::routes())
                .with_graceful_shutdown(async move {
                    let _ = rx.changed().await;
                })
                .await;
        });
    }
    metrics().set_ready(true);
    Ok(running)
}

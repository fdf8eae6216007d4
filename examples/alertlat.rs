//! Reads the alerts topic for a while and reports alerts/s and POST-to-alert latency: the time
//! from the shim receiving an event (the `kaudit-received` header the alert carries) to the
//! alert arriving here. `cargo run --release --example alertlat -- PIPELINE.toml SECONDS`
//! (uses the pipeline's bus settings; KAUDIT__* variables apply). Only alerts for events received
//! after it printed `ready` count: a benchmark warms its pipeline up first, and those alerts
//! (read from the start of the topic by this new group) measure the warm-up, not the pipeline.

use kaudit::bus::headers;
use kaudit::config::PipelineConfig;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let pipeline = args.next().expect("usage: alertlat PIPELINE.toml SECONDS");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20);
    let config = PipelineConfig::load(Some(std::path::Path::new(&pipeline)))?;
    let bus = kaudit::bus::connect(&config.bus).await?;
    let mut sub = bus
        .subscribe(&config.bus.alerts_topic, &format!("alertlat-{}", std::process::id()))
        .await?;
    let ready = chrono::Utc::now();
    println!("ready");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut latencies, mut first, mut last) = (Vec::new(), None, Instant::now());
    while Instant::now() < deadline {
        let Ok(batch) = tokio::time::timeout(deadline - Instant::now(), sub.next(1000)).await else {
            break;
        };
        let Some(batch) = batch? else { break };
        let now = chrono::Utc::now();
        for d in &batch {
            if let Some(received) = d.message.header(headers::RECEIVED) {
                if let Ok(t) = chrono::DateTime::parse_from_rfc3339(received) {
                    if t < ready {
                        continue;
                    }
                    latencies.push((now - t.with_timezone(&chrono::Utc)).to_std().unwrap_or_default());
                }
            }
        }
        first.get_or_insert_with(Instant::now);
        last = Instant::now();
        sub.commit(batch).await?;
    }
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let span = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    println!(
        "{} alerts in {span:.1}s ({:.0}/s); POST-to-alert latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        latencies.len() as f64 / span,
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    Ok(())
}

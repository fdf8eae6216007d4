//! Load generator: acts as kube-apiservers posting EventList batches over HTTP/2 (h2c, one
//! connection multiplexing every request, as the apiserver's client does), and reports events/s
//! accepted and response-time percentiles. Bounded in count and time; loopback only.
//!
//! `cargo run --release --example loadgen -- --url http://127.0.0.1:8765/k8s_audit
//!   [--seconds 20] [--concurrency 8] [--batch 400] [--token T] [--max-batches N] [--rate EPS]
//!   [--clusters N]` — with N > 1, worker w posts as cluster `<url>-<w mod N>`: one cluster's
//!   events stay on one partition, so spreading detectors needs several clusters.

#[path = "../integration/events.rs"]
mod events;

use std::time::{Duration, Instant};

struct Args {
    url: String,
    seconds: u64,
    concurrency: usize,
    batch: usize,
    token: Option<String>,
    max_batches: u64,
    /// Target events/s over all workers (0: as fast as answers come).
    rate: f64,
    clusters: usize,
}

fn args() -> Args {
    let mut a = Args {
        url: "http://127.0.0.1:8765/k8s_audit".into(),
        seconds: 20,
        concurrency: 8,
        batch: 400,
        token: None,
        max_batches: 1_000_000,
        rate: 0.0,
        clusters: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = v,
            "--seconds" => a.seconds = v.parse().unwrap(),
            "--concurrency" => a.concurrency = v.parse().unwrap(),
            "--batch" => a.batch = v.parse().unwrap(),
            "--token" => a.token = Some(v),
            "--max-batches" => a.max_batches = v.parse().unwrap(),
            "--rate" => a.rate = v.parse().unwrap(),
            "--clusters" => a.clusters = v.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    assert!(
        a.url.starts_with("http://127.") || a.url.starts_with("http://localhost") || a.url.starts_with("http://[::1]"),
        "loopback targets only"
    );
    a
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    accepted: u64,
    refused: u64,
    errors: u64,
}

#[tokio::main]
async fn main() {
    let a = args();
    // Pre-built bodies: the generator must cost little next to the system it measures.
    let mut rng = events::Rng(0x2545_F491_4F6C_DD1D);
    // Each pass over the bodies rewrites the audit IDs' first group, so every event posted is a
    // new request (the same IDs again would be redeliveries, and alert dedup would drop them).
    let bodies: Vec<String> = (0..64u64)
        .map(|b| {
            let items: Vec<_> = (0..a.batch as u64)
                .map(|i| events::event(&mut rng, b * a.batch as u64 + i))
                .collect();
            serde_json::to_string(
                &serde_json::json!({"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":items}),
            )
            .unwrap()
        })
        .collect();
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let per_worker_interval =
        (a.rate > 0.0).then(|| Duration::from_secs_f64(a.batch as f64 * a.concurrency as f64 / a.rate));
    let started = Instant::now();
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..a.concurrency {
        let (client, bodies, url, token, sent) = (
            client.clone(),
            bodies.clone(),
            if a.clusters > 1 {
                format!("{}-{}", a.url, w % a.clusters)
            } else {
                a.url.clone()
            },
            a.token.clone(),
            sent.clone(),
        );
        let max = a.max_batches;
        workers.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut i = w;
            let mut next = Instant::now();
            while Instant::now() < deadline && sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < max {
                if let Some(interval) = per_worker_interval {
                    tokio::time::sleep_until(next.into()).await;
                    next += interval;
                }
                let pass = (i / bodies.len()) * 64 + w;
                let body = bodies[i % bodies.len()]
                    .replace("\"00000000-0000-4000-8000-", &format!("\"{pass:08x}-0000-4000-8000-"));
                i += 1;
                let mut req = client.post(&url).header("content-type", "application/json").body(body);
                if let Some(tok) = &token {
                    req = req.bearer_auth(tok);
                }
                let t0 = Instant::now();
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        t.latencies.push(t0.elapsed());
                        t.accepted += 1;
                    }
                    Ok(r) => {
                        let wait = r
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok()?.parse().ok())
                            .unwrap_or(1);
                        t.refused += 1;
                        tokio::time::sleep(Duration::from_millis(100 * wait)).await;
                    }
                    Err(_) => t.errors += 1,
                }
            }
            t
        }));
    }
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.unwrap();
        all.latencies.extend(t.latencies);
        all.accepted += t.accepted;
        all.refused += t.refused;
        all.errors += t.errors;
    }
    let secs = started.elapsed().as_secs_f64();
    all.latencies.sort();
    let pct = |p: f64| {
        all.latencies
            .get(((all.latencies.len() as f64 * p) as usize).min(all.latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let events = all.accepted * a.batch as u64;
    println!(
        "{} batches of {} accepted in {secs:.1}s: {:.0} events/s; refused (429/503) {}, errors {}; response p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        all.accepted,
        a.batch,
        events as f64 / secs,
        all.refused,
        all.errors,
        pct(0.50).as_secs_f64() * 1e3,
        pct(0.99).as_secs_f64() * 1e3,
        all.latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
}

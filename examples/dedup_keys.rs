//! Dedup state at scale: admits alerts with `N` distinct dedup keys (default 1,000,000) through
//! the rate limiter and reports the heap it holds per key (a counting allocator), the time a
//! purge of all of them takes, and admit throughput with rate limits on and off.
//! `cargo run --release --example dedup_keys -- [N]`

use kaudit::alert::Alert;
use kaudit::audit::Event;
use kaudit::dedup::{DedupConfig, Deduper};
use kaudit::engine::{Matching, RuleSet};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RULES: &str = "- rule: Exec\n  desc: d\n  condition: objectRef.subresource == 'exec'\n  output: exec by {user.username}\n  priority: notice\n  dedup: { window: 10m }\n";
const EVENT: &str = r#"{"auditID":"a","stage":"ResponseStarted","verb":"get","user":{"username":"alice"},"stageTimestamp":"2026-11-20T10:00:00Z","objectRef":{"resource":"pods","namespace":"prod","name":"web","subresource":"exec"}}"#;

/// The alerts to admit: distinct keys, 0.5 ms of event time apart (all within one window).
fn alerts(n: usize) -> Vec<Alert> {
    let rules = RuleSet::from_text("bench.yaml", RULES, Matching::All).unwrap();
    let event = Event::from_json(EVENT.as_bytes().to_vec()).unwrap();
    let view = event.view();
    let mut firing = rules.evaluate(&view, "c1").remove(0);
    rules.render(&mut firing, &view, "c1");
    let template = kaudit::detect::alert(&rules.rules()[0], firing, &view, "c1", "h");
    let start = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap();
    (0..n as u64)
        .map(|i| {
            let mut a = template.clone();
            a.dedup.key = format!("{:016x}{:016x}", i.wrapping_mul(0x9E37_79B9_7F4A_7C15), i);
            a.time = (start + chrono::Duration::microseconds(i as i64 * 500)).to_rfc3339();
            a
        })
        .collect()
}

/// Admits every alert; seconds taken.
fn admit_all(deduper: &Deduper, rules: &RuleSet, alerts: Vec<Alert>) -> f64 {
    let rule = &rules.rules()[0];
    let mut out = Vec::with_capacity(2);
    let started = Instant::now();
    for a in alerts {
        deduper.limit(rule, a, 0, &mut out);
        out.clear();
    }
    started.elapsed().as_secs_f64()
}

fn main() {
    let n: usize = std::env::args().nth(1).map(|s| s.parse().unwrap()).unwrap_or(1_000_000);
    let rules = RuleSet::from_text("bench.yaml", RULES, Matching::All).unwrap();
    let config = DedupConfig {
        max_keys: 2 * n,
        ..DedupConfig::default()
    };

    let off = Deduper::new(&DedupConfig::off()).unwrap();
    let off_secs = admit_all(&off, &rules, alerts(n));

    let on = Deduper::new(&config).unwrap();
    let before = LIVE.load(Ordering::Relaxed);
    let input = alerts(n);
    let on_secs = admit_all(&on, &rules, input);
    let after = LIVE.load(Ordering::Relaxed);
    let (keys, _) = on.live_keys();
    // The input alerts were freed while admitting; what stays is the limiter's state.
    let held = (after - before).max(0) as f64;
    println!("keys: {keys}");
    println!(
        "heap held by the rate limiter: {:.1} MB, {:.1} bytes per key",
        held / 1e6,
        held / keys as f64
    );
    println!(
        "admit: {:.0} alerts/s with rate limits on ({:.2} µs each), {:.0} with them off",
        n as f64 / on_secs,
        on_secs / n as f64 * 1e6,
        n as f64 / off_secs,
    );

    // One alert an hour later: every key's window has passed; the tick purges them all.
    let mut late = alerts(1).remove(0);
    late.time = "2026-11-20T11:00:00Z".into();
    late.dedup.key = "f".repeat(32);
    on.limit(&rules.rules()[0], late, 0, &mut Vec::new());
    let started = Instant::now();
    on.tick(&mut Vec::new());
    println!(
        "purge of {keys} stale keys: {:.1} ms, {} left",
        started.elapsed().as_secs_f64() * 1e3,
        on.live_keys().0
    );
}

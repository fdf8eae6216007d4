//! Writes a synthetic audit log (JSON lines) for benchmarks:
//! `cargo run --release --example gen_events -- N > events.jsonl`. Deterministic for a given N.

#[path = "../integration/events.rs"]
mod events;

use std::io::Write;

fn main() {
    let n: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut rng = events::Rng(0x9E37_79B9_7F4A_7C15);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for i in 0..n {
        serde_json::to_writer(&mut out, &events::event(&mut rng, i)).unwrap();
        out.write_all(b"\n").unwrap();
    }
}

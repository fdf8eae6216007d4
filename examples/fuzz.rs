//! The fuzz tool: N mutated records (`mutate.rs`) through decode → engine → every encoding with
//! the event attached and redacted, in chunks, as `kaudit scan` runs them; a panic fails it.
//! `cargo run --release --example fuzz -- 1000000 [SEED]` (or `integration/fuzz.sh`).

#[path = "../integration/events.rs"]
#[allow(dead_code)]
mod events;
#[path = "../integration/mutate.rs"]
mod mutate;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let rules_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = kaudit::engine::RuleSet::load(&[rules_dir], kaudit::engine::Matching::All).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut mutator = mutate::Mutator::new(seed, &mutate::fixtures());
    let mut counts = mutate::Counts::default();
    let started = std::time::Instant::now();
    let mut done = 0;
    while done < n {
        let chunk: Vec<String> = (0..(n - done).min(20_000)).map(|_| mutator.next_line()).collect();
        done += chunk.len() as u64;
        mutate::run(&chunk, &rules, dir.path(), &mut counts);
        eprint!("\r{done}/{n} records");
    }
    eprintln!();
    println!(
        "fuzz: {} records (seed {seed}) in {:.0}s: {} events, {} malformed, alerts falco/ocsf/ecs {}/{}/{} ({} detection degraded), 0 panics",
        counts.records,
        started.elapsed().as_secs_f64(),
        counts.events,
        counts.malformed,
        counts.alerts[0],
        counts.alerts[1],
        counts.alerts[2],
        counts.degraded
    );
}

//! The differential tool: N mutated events through every default and imported Falco rule on
//! both evaluation paths, compiled and interpreted; any disagreement fails it.
//! `cargo run --release --example differential -- 1000000 [SEED]` (or `integration/differential.sh`).

#[path = "../integration/differential.rs"]
mod differential;
#[path = "../integration/events.rs"]
#[allow(dead_code)]
mod events;
#[path = "../integration/mutate.rs"]
#[allow(dead_code)]
mod mutate;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let sets = differential::rule_sets();
    let mut mutator = mutate::Mutator::new(seed, &mutate::fixtures());
    let mut tally = differential::Tally::default();
    let started = std::time::Instant::now();
    while tally.events < n {
        let chunk: Vec<String> = (0..10_000).map(|_| mutator.next_line()).collect();
        differential::compare(&sets, &chunk, &mut tally);
        eprint!("\r{}/{n} events", tally.events);
    }
    eprintln!();
    println!(
        "differential: {} events (seed {seed}) in {:.0}s, {} verdicts compared {:?}, {} outputs compared ({} differing only in a map's key order), {} mismatches ({} of them the prefilter leaving out a rule that matched); {} errors of rules the prefilter left out",
        tally.events,
        started.elapsed().as_secs_f64(),
        tally.verdicts,
        tally.kinds,
        tally.renders,
        tally.map_order,
        tally.mismatch_count,
        tally.prefilter_count,
        tally.left_out_errors
    );
    if tally.mismatch_count > 0 {
        eprintln!("{}", tally.mismatches.join("\n\n"));
        std::process::exit(1);
    }
}

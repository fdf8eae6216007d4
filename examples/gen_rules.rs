//! Writes N rules for the scan benchmark (`variants.rs`): per-namespace variants of the default
//! rules. `cargo run --release --example gen_rules -- 439 > many.yaml`.

#[path = "../integration/variants.rs"]
mod variants;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(439);
    print!("{}", variants::variants(n));
}

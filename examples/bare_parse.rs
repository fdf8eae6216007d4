//! The yardstick for `kaudit scan`: parse every line of a JSON-lines file into a
//! `serde_json::Value` and nothing else. `cargo run --release --example bare_parse -- FILE`.

use std::io::BufRead;

fn main() {
    let path = std::env::args().nth(1).expect("usage: bare_parse FILE");
    let file = std::io::BufReader::with_capacity(256 * 1024, std::fs::File::open(path).unwrap());
    let start = std::time::Instant::now();
    let (mut events, mut objects) = (0u64, 0u64);
    for line in file.split(b'\n') {
        let line = line.unwrap();
        if line.is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        objects += v.is_object() as u64;
        events += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bare parse: {events} events ({objects} objects) in {secs:.3}s: {:.0} events/s",
        events as f64 / secs
    );
}

//! A deterministic mutation corpus of audit events, for the fuzz test (`tests/fuzz.rs`, 50k
//! events) and the fuzz tool (`examples` `fuzz`, a million and more): seeds from the synthetic
//! generator and the managed-cluster fixtures, each mutated by type swaps at a random path,
//! deletions, deep nesting (up to 5,000 levels), huge values, unicode, and envelopes of every
//! format (EKS, GKE, AKS) around the result.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

pub struct Mutator {
    rng: StdRng,
    synthetic: super::events::Rng,
    seeds: Vec<Value>,
    count: u64,
}

/// `depth` levels of alternating objects and arrays around `1`, as text (a `Value` this deep
/// would overflow the stack of whoever drops it).
fn nested(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 7);
    for i in 0..depth {
        s.push_str(if i % 2 == 0 { "{\"x\":" } else { "[" });
    }
    s.push('1');
    for i in (0..depth).rev() {
        s.push(if i % 2 == 0 { '}' } else { ']' });
    }
    s
}

const UNICODE: &[&str] = &[
    "é",
    "\u{202e}",
    "\u{200b}",
    "😀",
    "\u{fffd}",
    "\u{0}",
    "ﬁ",
    "İ",
    "\u{10ffff}",
    "\\",
];

impl Mutator {
    pub fn new(seed: u64, fixtures: &[String]) -> Mutator {
        let seeds = fixtures
            .iter()
            .flat_map(|text| text.lines().map(str::to_string).collect::<Vec<_>>())
            .filter_map(|line| serde_json::from_str(&line).ok())
            .collect();
        Mutator {
            rng: StdRng::seed_from_u64(seed),
            synthetic: super::events::Rng(seed | 1),
            seeds,
            count: 0,
        }
    }

    /// The next mutated record, one JSON line.
    pub fn next_line(&mut self) -> String {
        self.count += 1;
        let mut value = if !self.seeds.is_empty() && self.rng.random_ratio(1, 5) {
            self.seeds[self.rng.random_range(0..self.seeds.len())].clone()
        } else {
            super::events::event(&mut self.synthetic, self.count)
        };
        let mut deep = None;
        for _ in 0..self.rng.random_range(1..=3) {
            match self.rng.random_range(0..10) {
                0..=2 => self.swap_type(&mut value),
                3..=4 => self.delete(&mut value),
                5 => deep = Some(self.rng.random_range(100..5_000)),
                6 => self.huge(&mut value),
                7..=8 => self.unicode(&mut value),
                _ => {}
            }
        }
        if deep.is_some() {
            self.place(&mut value, Value::String("__DEEP__".into()));
        }
        let mut line = value.to_string();
        if let Some(depth) = deep {
            line = line.replacen("\"__DEEP__\"", &nested(depth), 1);
        }
        if self.rng.random_ratio(1, 4) {
            line = self.envelope(line);
        }
        line
    }

    /// A random path into `value`: the container at its end, as a JSON pointer.
    fn random_container(&mut self, value: &Value) -> String {
        let mut pointer = String::new();
        let mut at = value;
        loop {
            let keys: Vec<String> = match at {
                Value::Object(m) => m.keys().cloned().collect(),
                Value::Array(a) => (0..a.len()).map(|i| i.to_string()).collect(),
                _ => return pointer,
            };
            if keys.is_empty() || self.rng.random_ratio(1, 3) {
                return pointer;
            }
            let key = keys[self.rng.random_range(0..keys.len())].clone();
            let next = match at {
                Value::Object(m) => &m[&key],
                Value::Array(a) => &a[key.parse::<usize>().unwrap_or(0)],
                _ => return pointer,
            };
            if !(next.is_object() || next.is_array()) {
                return pointer;
            }
            pointer.push('/');
            pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            at = next;
        }
    }

    /// Puts `new` at a random place: a key of a random object or an element of a random list.
    fn place(&mut self, value: &mut Value, new: Value) {
        let pointer = self.random_container(value);
        let key = [
            "requestObject",
            "spec",
            "containers",
            "objectRef",
            "user",
            "x",
            "annotations",
            "0",
        ][self.rng.random_range(0..8)];
        match value.pointer_mut(&pointer) {
            Some(Value::Object(m)) => {
                m.insert(key.to_string(), new);
            }
            Some(Value::Array(a)) => {
                let i = self.rng.random_range(0..=a.len());
                a.insert(i, new);
            }
            _ => {}
        }
    }

    fn swap_type(&mut self, value: &mut Value) {
        let new = match self.rng.random_range(0..7) {
            0 => Value::Null,
            1 => json!(true),
            2 => json!(-1e308),
            3 => json!(u64::MAX),
            4 => json!("x"),
            5 => json!([]),
            _ => json!({}),
        };
        let pointer = self.random_container(value);
        match value.pointer_mut(&pointer) {
            Some(Value::Object(m)) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let key = &keys[self.rng.random_range(0..keys.len())];
                m.insert(key.clone(), new);
            }
            Some(Value::Array(a)) if !a.is_empty() => {
                let i = self.rng.random_range(0..a.len());
                a[i] = new;
            }
            Some(other) => *other = new,
            None => {}
        }
    }

    fn delete(&mut self, value: &mut Value) {
        let pointer = self.random_container(value);
        match value.pointer_mut(&pointer) {
            Some(Value::Object(m)) if !m.is_empty() => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let key = keys[self.rng.random_range(0..keys.len())].clone();
                m.remove(&key);
            }
            Some(Value::Array(a)) if !a.is_empty() => {
                let i = self.rng.random_range(0..a.len());
                a.remove(i);
            }
            _ => {}
        }
    }

    fn huge(&mut self, value: &mut Value) {
        let new = match self.rng.random_range(0..3) {
            0 => Value::String("A".repeat(self.rng.random_range(10_000..100_000))),
            1 => Value::Array((0..self.rng.random_range(200..2_000)).map(|i| json!({"name": format!("c{i}"), "image": "x", "securityContext": {"privileged": i % 2 == 0}})).collect()),
            _ => {
                let mut m = Map::new();
                // Past the few keys a lookup scans; strings, numbers and nulls (a null key is
                // an absent one).
                for i in 0..self.rng.random_range(200..2_000) {
                    let v = match i % 3 {
                        0 => json!(i),
                        1 => json!(format!("v{i}")),
                        _ => Value::Null,
                    };
                    m.insert(format!("k{i}"), v);
                }
                Value::Object(m)
            }
        };
        self.place(value, new);
    }

    fn unicode(&mut self, value: &mut Value) {
        let pointer = self.random_container(value);
        let extra: String = (0..self.rng.random_range(1..20))
            .map(|_| UNICODE[self.rng.random_range(0..UNICODE.len())])
            .collect();
        if let Some(Value::Object(m)) = value.pointer_mut(&pointer) {
            let strings: Vec<String> = m
                .iter()
                .filter(|(_, v)| v.is_string())
                .map(|(k, _)| k.clone())
                .collect();
            if strings.is_empty() {
                m.insert(extra.clone(), Value::String(extra));
            } else {
                let key = strings[self.rng.random_range(0..strings.len())].clone();
                if let Some(Value::String(s)) = m.get_mut(&key) {
                    s.push_str(&extra);
                }
            }
        }
    }

    /// The record inside an EKS, GKE (Pub/Sub push) or AKS envelope.
    fn envelope(&mut self, line: String) -> String {
        use base64::Engine as _;
        match self.rng.random_range(0..4) {
            0 => json!({"logGroup": "/aws/eks/fuzz/cluster", "logEvents": [{"id": "1", "timestamp": 0, "message": line}]}).to_string(),
            1 => json!({"records": [{"resourceId": "/SUBSCRIPTIONS/X/RESOURCEGROUPS/Y/PROVIDERS/MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/FUZZ", "category": "kube-audit", "properties": {"log": line}}]}).to_string(),
            2 => json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(&line)}, "subscription": "s"}).to_string(),
            _ => json!({"protoPayload": {"methodName": "io.k8s.core.v1.pods.create", "resourceName": "core/v1/namespaces/x/pods/y", "request": serde_json::from_str::<Value>(&line).unwrap_or(Value::Null)}, "resource": {"labels": {"cluster_name": "fuzz"}}}).to_string(),
        }
    }
}

/// What a run of the corpus through the offline path gave.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub records: u64,
    pub events: u64,
    pub malformed: u64,
    /// Alerts per encoding: falco, ocsf, ecs.
    pub alerts: [u64; 3],
    pub degraded: u64,
}

/// Runs `lines` through decode → engine → dedup (off) → each encoding with the event attached
/// and redacted, as `kaudit scan` does, via a file in `dir`.
pub fn run(lines: &[String], rules: &kaudit::engine::RuleSet, dir: &std::path::Path, counts: &mut Counts) {
    use kaudit::alert::encode::{Encoder, Encoding};
    use std::io::Write as _;
    let file = dir.join("fuzz.jsonl");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for line in lines {
        out.write_all(line.as_bytes()).unwrap();
        out.write_all(b"\n").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    counts.records += lines.len() as u64;
    for (i, encoding) in [Encoding::Falco, Encoding::Ocsf, Encoding::Ecs].into_iter().enumerate() {
        let options = kaudit::tools::scan::Options {
            encoder: Encoder::builtin(encoding, true, true),
            dedup: kaudit::dedup::DedupConfig::off(),
            ..Default::default()
        };
        let mut alerts = Vec::new();
        let summary = kaudit::tools::scan::scan(std::slice::from_ref(&file), rules, &options, &mut alerts).unwrap();
        // Every alert line is one whole JSON object.
        for line in alerts.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let alert: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
                panic!(
                    "an alert is not JSON ({e}): {}",
                    String::from_utf8_lossy(&line[..line.len().min(2000)])
                )
            });
            if i == 0 && alert["rule"] == kaudit::engine::DEGRADED {
                counts.degraded += 1;
            }
        }
        if i == 0 {
            counts.events += summary.events;
            counts.malformed += summary.malformed;
        }
        counts.alerts[i] += summary.alerts;
    }
}

/// The managed-cluster fixtures of the repository, as seeds.
pub fn fixtures() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/fixtures/managed");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        // A pretty-printed JSON file is one record; JSON lines are one each.
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => out.push(v.to_string()),
            Err(_) => out.push(text),
        }
    }
    out
}

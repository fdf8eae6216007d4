//! Decode + evaluate (firings rendered), per event, against the number of rules loaded: none,
//! `rules/kaudit_rules.yaml` (12), the default rules (61), the default rules and Falco's imported
//! (109), the default rules and 439 per-namespace variants (500). Three events: a `get` (the
//! prefilter skips most rules), a privileged pod create and a binding to cluster-admin.
//! `cargo bench --bench engine`.

#[path = "../integration/variants.rs"]
mod variants;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use kaudit::audit::Event;
use kaudit::engine::{Matching, RuleSet};
use std::hint::black_box;

// The allocator the `kaudit` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn rule_sets() -> Vec<(usize, RuleSet)> {
    let dir = tempfile::tempdir().unwrap();
    let falco = kaudit::tools::falco::import(&["../shared/falco/k8s_audit_rules.yaml".into()], true).unwrap();
    std::fs::write(dir.path().join("falco.yaml"), &falco.yaml).unwrap();
    std::fs::write(dir.path().join("variants.yaml"), variants::variants(439)).unwrap();
    let load = |paths: &[std::path::PathBuf]| RuleSet::load(paths, Matching::All).unwrap();
    let none = RuleSet::from_text("none.yaml", "[]", Matching::All).unwrap();
    vec![
        (0, none),
        (12, load(&["rules/kaudit_rules.yaml".into()])),
        (61, load(&["rules".into()])),
        (109, load(&["rules".into(), dir.path().join("falco.yaml")])),
        (500, load(&["rules".into(), dir.path().join("variants.yaml")])),
    ]
}

fn bench(c: &mut Criterion) {
    let sets = rule_sets();
    let pod_create = first_line("rules/fixtures/privileged_container/positive.jsonl");
    let binding = first_line("rules/fixtures/binding_to_cluster_admin/positive.jsonl");
    let get = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8b3c","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/db","verb":"get","user":{"username":"system:serviceaccount:prod:api","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.2.3.4"],"userAgent":"api/v1.0","objectRef":{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-20T10:00:00.000000Z","stageTimestamp":"2026-11-20T10:00:00.002000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC"}}"#;
    for (name, json) in [
        ("get", get),
        ("pod_create", pod_create.as_str()),
        ("rolebinding_create", binding.as_str()),
    ] {
        let mut group = c.benchmark_group(format!("decode+evaluate/{name}"));
        group.throughput(Throughput::Elements(1));
        for (count, rules) in &sets {
            group.bench_with_input(BenchmarkId::from_parameter(count), json, |b, json| {
                b.iter(|| {
                    let event = Event::from_json(black_box(json).as_bytes().to_vec()).unwrap();
                    black_box(rules.evaluate(&event.view(), "bench").len())
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Decode + evaluate, per event, with the default rules: a pod create (most rules are
//! candidates) and a `get` (the prefilter skips CEL). `cargo bench --bench engine`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kaudit::audit::Event;
use kaudit::engine::{Matching, RuleSet};
use std::hint::black_box;

fn first_line(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string()
}

fn bench(c: &mut Criterion) {
    let rules = RuleSet::load(&["rules".into()], Matching::All).unwrap();
    let pod_create = first_line("rules/fixtures/privileged_container/positive.jsonl");
    let get = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"8b3c","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/prod/secrets/db","verb":"get","user":{"username":"system:serviceaccount:prod:api","groups":["system:serviceaccounts","system:authenticated"]},"sourceIPs":["10.2.3.4"],"userAgent":"api/v1.0","objectRef":{"resource":"secrets","namespace":"prod","name":"db","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":200},"requestReceivedTimestamp":"2026-11-20T10:00:00.000000Z","stageTimestamp":"2026-11-20T10:00:00.002000Z","annotations":{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC"}}"#;
    let mut group = c.benchmark_group("decode+evaluate");
    for (name, json) in [("pod_create", pod_create.as_str()), ("get", get)] {
        group.throughput(Throughput::Elements(1));
        group.bench_function(name, |b| {
            b.iter(|| {
                let event = Event::from_json(black_box(json).as_bytes().to_vec()).unwrap();
                black_box(rules.evaluate(&event.view(), "bench").len())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! `kaudit scan` over Falco's own traces: nothing panics, the malformed trace is reported, and
//! the privileged-pod trace yields one complete alert.

mod common;

use kaudit::alert::Alert;
use std::path::PathBuf;

fn scan(files: &[PathBuf]) -> (kaudit::tools::scan::Summary, Vec<Alert>) {
    let options = kaudit::tools::scan::Options {
        cluster: "prod".into(),
        ..Default::default()
    };
    common::scan(files, &options)
}

#[test]
fn every_trace_scans_and_the_malformed_one_is_reported() {
    let Some(shared) = common::shared() else { return };
    let mut traces: Vec<PathBuf> = std::fs::read_dir(shared.join("falco/traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    traces.sort();
    assert_eq!(traces.len(), 47);
    for trace in &traces {
        let (summary, _) = scan(std::slice::from_ref(trace));
        let malformed_expected = trace.ends_with("fal_01_003.json");
        assert_eq!(summary.malformed > 0, malformed_expected, "{}", trace.display());
        if malformed_expected {
            assert!(
                summary.malformed_examples[0].contains("line 1"),
                "{:?}",
                summary.malformed_examples
            );
        }
    }
}

#[test]
fn privileged_pod_trace_gives_one_complete_alert() {
    let Some(shared) = common::shared() else { return };
    let (summary, alerts) = scan(&[shared.join("falco/traces/create_nginx_pod_privileged.json")]);
    assert_eq!(summary.events, 1);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = &alerts[0];
    assert_eq!(a.rule, "Privileged container");
    assert_eq!(a.priority, "Warning");
    assert_eq!(a.source, "k8s_audit");
    assert_eq!(a.cluster, "prod");
    assert_eq!(a.audit_id, "a362d22b-db3c-4590-9505-23782f12925f");
    assert_eq!(a.time, "2018-10-25T14:09:12.581541Z");
    assert_eq!(a.id.len(), 32);
    assert!(a.output.contains("images=[\"nginx\"]"), "{}", a.output);
    assert_eq!(a.output_fields["images"], serde_json::json!(["nginx"]));
    assert!(a.tags.contains(&"mitre_privilege_escalation".to_string()));
    assert!(!a.hostname.is_empty());
    assert_eq!((a.dedup.count, a.dedup.suppressed), (1, 0));
    // Every field of DESIGN.md's Alert, by name, in the JSON.
    let json = serde_json::to_value(a).unwrap();
    for field in [
        "time",
        "rule",
        "priority",
        "source",
        "output",
        "output_fields",
        "tags",
        "hostname",
        "id",
        "cluster",
        "audit_id",
        "dedup",
    ] {
        assert!(json.get(field).is_some(), "missing {field}");
    }
    for field in ["key", "count", "suppressed", "first_seen", "last_seen"] {
        assert!(json["dedup"].get(field).is_some(), "missing dedup.{field}");
    }
    // A redelivery gives the same id.
    let (_, again) = scan(&[shared.join("falco/traces/create_nginx_pod_privileged.json")]);
    assert_eq!(again[0].id, a.id);

    let (_, none) = scan(&[shared.join("falco/traces/create_nginx_pod_unprivileged.json")]);
    assert!(none.is_empty(), "{none:?}");
}

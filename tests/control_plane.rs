//! Routine control-plane traffic raises only the alerts it should. The corpus
//! (`integration/fixtures/control-plane.jsonl.gz`, 7,830 events) was recorded by
//! `integration/control-plane-corpus.sh` from a real kube-apiserver 1.20 with its
//! controller-manager (service-account credentials: one identity per controller) and scheduler,
//! while a deploy pipeline (`deployer`, `edit` in its namespace) created, scaled, rolled and
//! deleted Deployments, Jobs, a CronJob, ConfigMaps, Secrets and ServiceAccounts for ten
//! minutes, with images from the organisation's registry.

mod common;

use kaudit::alert::Alert;
use kaudit::engine::{Matching, RuleSet};
use std::collections::BTreeMap;

/// What a site adds to the default rules, in a file of its own: its registry, its people and
/// pipeline (it lists no namespaces: "Namespace outside the allowed set" stays quiet).
const SITE: &str = r#"
- list: allowed_image_registries
  items: [registry.example.com]
  override: {items: append}
- list: known_human_users
  items: [admin, deployer]
  override: {items: append}
"#;

#[test]
fn routine_control_plane_traffic_raises_only_the_documented_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.yaml");
    std::fs::write(&site, SITE).unwrap();
    let rules = RuleSet::load(&[common::repo().join("rules"), site], Matching::All).unwrap();
    let corpus = common::repo().join("integration/fixtures/control-plane.jsonl.gz");
    let mut out = Vec::new();
    let summary = kaudit::tools::scan::scan(&[corpus], &rules, &Default::default(), &mut out).unwrap();
    let alerts: Vec<Alert> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &alerts {
        *got.entry(a.rule.as_str()).or_default() += 1;
    }
    // Every alert is about a person's or the pipeline's own action, none about a controller's,
    // the scheduler's or the apiserver's; counts are after the default rate limit (10 minutes
    // per cluster, user and namespace).
    let want: BTreeMap<&str, usize> = [
        // The admin creates the namespace and gives the pipeline `edit` there (system:masters).
        ("Full administrative access used", 2),
        ("Namespace created or deleted", 1),
        ("RoleBinding created or deleted", 1),
        // The pipeline asks whether it may create Deployments (`kubectl auth can-i`).
        ("Self permission discovery", 2),
        // The pipeline's changes: the audit trail of changes by non-system identities.
        ("Deployment created or deleted", 2),
        ("ConfigMap created or deleted", 2),
        ("Secret created, changed or deleted", 2),
        ("ServiceAccount created or deleted", 2),
        ("CronJob created or changed", 1),
        ("Workload container image changed by a person", 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "{:#?}", alerts.iter().map(|a| &a.output).collect::<Vec<_>>());
    assert_eq!(summary.events, 7830);
    // No malformed event; an evaluation error would be a "Detection degraded" alert above.
    assert_eq!(summary.malformed, 0);
    for a in &alerts {
        assert!(
            a.output.contains("user=admin") || a.output.contains("user=deployer"),
            "{}",
            a.output
        );
    }
}

//! The default rules against their fixtures, as `kaudit rules test rules/` runs them: every rule
//! has a positive and a negative fixture of our own, and every one passes.

mod common;

use kaudit::engine::{fixtures, Matching, RuleSet};

#[test]
fn every_default_rule_passes_its_fixtures() {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    let results = fixtures::run(&rules);
    let mut table = Vec::new();
    let passed = fixtures::report(&results, &mut table).unwrap();
    let table = String::from_utf8(table).unwrap();
    assert!(passed, "{table}");
    let stateful = results.iter().filter(|r| r.kind != "per-event").count();
    assert!(results.len() >= 12 && stateful >= 3, "{table}");
    assert!(results.iter().all(|r| r.positive > 0 && r.negative > 0), "{table}");
}

#[test]
fn the_cli_prints_the_table_and_fails_on_a_failing_rule() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["rules", "test", "rules"])
        .current_dir(common::repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok     Privileged container"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mine.yaml"),
        "- rule: Mine\n  desc: d\n  condition: verb == 'delete'\n  output: o\n  priority: notice\n  fixtures:\n    positive: [{auditID: a, stage: ResponseComplete, verb: get}]\n    negative: [{auditID: b, stage: ResponseComplete, verb: list}]\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["rules", "test"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAIL Mine:") && text.contains("did not fire on event 1 (auditID a)"),
        "{text}"
    );
}

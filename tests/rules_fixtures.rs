//! The default rules against their fixtures, as `kaudit rules test rules/` runs them: every rule
//! has a positive and a negative fixture of our own, and every one passes.

mod common;

use kaudit::engine::rules::RuleSource;
use kaudit::engine::{Matching, RuleSet};
use kaudit::tools::fixtures;

#[test]
fn every_default_rule_passes_its_fixtures() {
    let source = RuleSource::load_paths(&[common::repo().join("rules")]).unwrap();
    let results = fixtures::run(&source).unwrap();
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

/// The README's rule table is `kaudit rules doc`'s output, not a hand-kept copy.
#[test]
fn the_readme_lists_the_rules_as_generated() {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    let table = kaudit::tools::catalog::markdown(&rules);
    let readme = std::fs::read_to_string(common::repo().join("README.md")).unwrap();
    let start = readme.find("<!-- rules:begin -->\n").expect("rules:begin marker") + "<!-- rules:begin -->\n".len();
    let end = readme.find("<!-- rules:end -->").expect("rules:end marker");
    assert_eq!(
        &readme[start..end],
        table,
        "README's rule table is stale: run `kaudit rules doc` and paste its output"
    );
}

/// Every detection of Falco's current k8s_audit rules has a counterpart named in a `falco:`
/// field, and every idea three or more vendors share is in a `covers:` field.
#[test]
fn the_default_rules_cover_falco_and_the_shared_ideas() {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    assert!(rules.rules().len() >= 60, "{} rules", rules.rules().len());
    let named: std::collections::HashSet<&str> = rules
        .rules()
        .iter()
        .flat_map(|r| r.meta.falco.iter().map(String::as_str))
        .collect();
    let covered: std::collections::HashSet<&str> = rules
        .rules()
        .iter()
        .flat_map(|r| r.meta.covers.iter().map(String::as_str))
        .collect();
    for idea in ["1", "3", "10", "11", "16", "18", "19", "22", "24", "25", "26", "27"] {
        assert!(covered.contains(idea), "idea {idea} is not covered");
    }
    for r in rules.rules() {
        assert!(r.meta.needs.is_some(), "{}: no `needs`", r.name);
        assert!(
            r.tags.iter().any(|t| t.starts_with("mitre_")),
            "{}: no MITRE tactic",
            r.name
        );
    }
    let Some(shared) = common::shared() else { return };
    let falco = std::fs::read_to_string(shared.join("falco/k8s_audit_rules.yaml")).unwrap();
    let mut missing = Vec::new();
    for line in falco.lines() {
        if let Some(name) = line.strip_prefix("- rule: ") {
            // A debugging rule that matches every event, disabled in Falco itself.
            if name != "All K8s Audit Events" && !named.contains(name.trim()) {
                missing.push(name.trim().to_string());
            }
        }
    }
    assert!(missing.is_empty(), "Falco rules without a counterpart: {missing:?}");
}

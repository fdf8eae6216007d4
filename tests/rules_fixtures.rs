//! Every default rule has a positive and a negative fixture of our own: each positive event
//! fires the rule exactly once, no negative event fires it.

mod common;

use kaudit::audit::DocumentReader;
use kaudit::engine::{Matching, RuleSet};

fn slug(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[test]
fn every_rule_fires_on_its_positive_fixture_and_not_on_its_negative() {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    let mut checked = 0;
    for rule in rules.rules().iter().filter(|r| r.enabled) {
        let dir = common::repo().join("rules/fixtures").join(slug(&rule.name));
        for (kind, want) in [("positive", 1usize), ("negative", 0)] {
            let path = dir.join(format!("{kind}.jsonl"));
            let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let mut events = 0;
            for item in DocumentReader::new(file).unwrap() {
                let event = item.unwrap().unwrap_or_else(|m| panic!("{}: {m}", path.display()));
                let view = event.view();
                let fired = rules
                    .evaluate(&view, "test")
                    .iter()
                    .filter(|f| rules.rules()[f.rule].name == rule.name)
                    .count();
                assert_eq!(
                    fired,
                    want,
                    "{}: rule '{}' on {}",
                    path.display(),
                    rule.name,
                    event.as_str()
                );
                events += 1;
            }
            assert!(events >= 2, "{}: a fixture needs at least two events", path.display());
        }
        checked += 1;
    }
    assert!(checked >= 9, "only {checked} rules checked");
}

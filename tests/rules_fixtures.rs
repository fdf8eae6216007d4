//! Every default rule has a positive and a negative fixture of our own. A per-event rule fires
//! exactly once on each event of `positive.jsonl` and never on `negative.jsonl`. A stateful rule's
//! fixtures are streams: each `positive*.jsonl` fires it exactly once (through its window, with
//! rate limits off, so "once" is the window's doing), each `negative*.jsonl` never.

mod common;

use kaudit::alert::Alert;
use kaudit::audit::{DocumentReader, Event, Format};
use kaudit::dedup::{DedupConfig, Deduper};
use kaudit::engine::{Matching, Rule, RuleSet};
use std::path::{Path, PathBuf};

fn slug(name: &str) -> String {
    name.to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn events(path: &Path) -> Vec<Event> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    DocumentReader::new(file, Format::Native)
        .unwrap()
        .map(|item| {
            item.unwrap()
                .unwrap_or_else(|m| panic!("{}: {m}", path.display()))
                .event
        })
        .collect()
}

/// The fixture files of a rule starting with `kind` (`positive` or `negative`).
fn fixtures(dir: &Path, kind: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(kind))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: no {kind} fixture", dir.display());
    files
}

/// Alerts of `rule` from a stream of events through the engine and the windows.
fn stream_alerts(rules: &RuleSet, rule: &Rule, events: &[Event]) -> Vec<Alert> {
    let deduper = Deduper::new(&DedupConfig::off()).unwrap();
    let mut alerts = Vec::new();
    for event in events {
        let view = event.view();
        for firing in rules.evaluate(&view, "test") {
            if rules.rules()[firing.rule].name == rule.name {
                deduper.admit(rules, firing, &view, "test", Default::default(), &mut alerts);
            }
        }
    }
    alerts
}

#[test]
fn every_rule_fires_on_its_positive_fixture_and_not_on_its_negative() {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    let (mut per_event, mut stateful) = (0, 0);
    for rule in rules.rules().iter().filter(|r| r.enabled) {
        let dir = common::repo().join("rules/fixtures").join(slug(&rule.name));
        for (kind, want) in [("positive", 1usize), ("negative", 0)] {
            for path in fixtures(&dir, kind) {
                let events = events(&path);
                assert!(
                    events.len() >= 2,
                    "{}: a fixture needs at least two events",
                    path.display()
                );
                if rule.window.is_some() {
                    let alerts = stream_alerts(&rules, rule, &events);
                    assert_eq!(
                        alerts.len(),
                        want,
                        "{}: rule '{}': {alerts:#?}",
                        path.display(),
                        rule.name
                    );
                    if let Some(alert) = alerts.first() {
                        let window = alert.window.as_ref().expect("a stateful alert says which window fired");
                        assert!(window.first_seen <= window.last_seen && window.count >= 2);
                    }
                    continue;
                }
                for event in &events {
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
                }
            }
        }
        if rule.window.is_some() {
            stateful += 1;
        } else {
            per_event += 1;
        }
    }
    assert!(
        per_event >= 9 && stateful >= 3,
        "only {per_event} + {stateful} rules checked"
    );
}

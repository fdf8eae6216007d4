//! `kaudit rules test`: every rule against the events it must fire on and must not.
//!
//! A rule's fixtures are written inline (`fixtures: {positive: [...], negative: [...]}`, events as
//! YAML/JSON objects) or beside its file, in `fixtures/<rule name in snake case>/` as
//! `positive*.jsonl` and `negative*.jsonl` (one event per line). A per-event rule must fire on
//! every positive event and on no negative one, each checked alone; a stateful rule reads each
//! file (or inline list) as one stream and must fire exactly once on a positive stream and never
//! on a negative one. Rate limits are off: "once" is the window's doing. A rule without both a
//! positive and a negative fixture fails too.

use crate::alert::Alert;
use crate::audit::{DocumentReader, Event, Format};
use crate::dedup::{DedupConfig, Deduper};
use crate::engine::rules::LoadErrors;
use crate::engine::rules::{RuleSource, Scalar};
use crate::engine::{Matching, Rule, RuleSet};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One rule's result.
#[derive(Debug)]
pub struct RuleResult {
    pub rule: String,
    /// `per-event`, `threshold`, `distinct` or `sequence`.
    pub kind: &'static str,
    /// Positive and negative cases checked (events, or streams for stateful rules).
    pub positive: usize,
    pub negative: usize,
    pub failures: Vec<String>,
    /// Said beside the result (a rule quiet until its lists are filled).
    pub note: Option<String>,
}

impl RuleResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The fixture directory of a rule defined in `file`.
pub fn fixture_dir(file: &Path, rule: &str) -> PathBuf {
    let slug: String = rule
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    file.parent().unwrap_or(Path::new(".")).join("fixtures").join(slug)
}

/// One fixture: where it came from and its events.
struct Case {
    name: String,
    events: Result<Vec<Event>, String>,
}

fn cases(rule: &Rule, positive: bool) -> Vec<Case> {
    let mut out = Vec::new();
    if let Some(inline) = &rule.meta.fixtures {
        let list = if positive { &inline.positive } else { &inline.negative };
        if !list.is_empty() {
            let events: Result<Vec<Event>, String> = list
                .iter()
                .enumerate()
                .map(|(i, v)| Event::from_json(v.to_string()).map_err(|e| format!("event {i}: {e}")))
                .collect();
            let kind = if positive { "positive" } else { "negative" };
            out.push(Case {
                name: format!("{}: inline {kind}", rule.origin),
                events,
            });
        }
    }
    let dir = fixture_dir(Path::new(&*rule.origin.file), &rule.name);
    let prefix = if positive { "positive" } else { "negative" };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(prefix)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for file in files {
        out.push(Case {
            name: file.display().to_string(),
            events: read_events(&file),
        });
    }
    out
}

fn read_events(file: &Path) -> Result<Vec<Event>, String> {
    let input = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let reader = DocumentReader::new(input, Format::Auto).map_err(|e| e.to_string())?;
    let mut events = Vec::new();
    for item in reader {
        match item.map_err(|e| e.to_string())? {
            Ok(record) => events.push(record.event),
            Err(bad) => return Err(bad.to_string()),
        }
    }
    Ok(events)
}

/// Alerts of `rule` from a stream of events, through the windows, rate limits off.
fn stream_alerts(set: &RuleSet, rule: &Rule, events: &[Event]) -> Vec<Alert> {
    let deduper = Deduper::new(&DedupConfig::off()).expect("dedup off is valid");
    let detect = crate::detect::Detect::new(set, &deduper);
    let source = crate::detect::Source {
        cluster: "test",
        ..Default::default()
    };
    let mut alerts = Vec::new();
    for event in events {
        detect.event(event, &source, &mut alerts);
    }
    alerts.retain(|a| a.rule == rule.name);
    alerts
}

fn fires_on(set: &RuleSet, rule: &Rule, event: &Event) -> usize {
    let view = event.view();
    set.evaluate(&view, "test")
        .iter()
        .filter(|f| set.rule(f.rule).name == rule.name)
        .count()
}

/// Runs every enabled rule's fixtures.
///
/// A rule whose fixtures give `lists` is checked in a rule set compiled with those lists in
/// place of the files' items: how a site that filled them would run it.
pub fn run(source: &RuleSource) -> Result<Vec<RuleResult>, LoadErrors> {
    let set = RuleSet::compile(source.clone(), Matching::All)?;
    Ok(set
        .rules()
        .iter()
        .enumerate()
        .filter(|(_, r)| r.enabled)
        .map(
            |(i, rule)| match rule.meta.fixtures.as_ref().filter(|f| !f.lists.is_empty()) {
                None => check(&set, rule),
                Some(fixtures) => match with_lists(source, &fixtures.lists) {
                    Ok(filled) => {
                        let mut result = check(&filled, &filled.rules()[i]);
                        result.note = rule
                            .dormant
                            .as_ref()
                            .map(|lists| format!("quiet until {lists} has items"));
                        result
                    }
                    Err(e) => RuleResult {
                        rule: rule.name.clone(),
                        kind: "per-event",
                        positive: 0,
                        negative: 0,
                        failures: vec![format!("its fixtures' lists: {e}")],
                        note: None,
                    },
                },
            },
        )
        .collect())
}

/// The rule set of `source` with these lists' items replaced.
fn with_lists(source: &RuleSource, lists: &BTreeMap<String, Vec<Scalar>>) -> Result<RuleSet, String> {
    let mut source = source.clone();
    for (name, items) in lists {
        let list = source
            .lists
            .get_mut(name)
            .ok_or_else(|| format!("`{name}` is no list"))?;
        list.items = items.clone();
    }
    RuleSet::compile(source, Matching::All).map_err(|e| e.to_string())
}

fn check(set: &RuleSet, rule: &Rule) -> RuleResult {
    let kind = match &rule.window {
        None => "per-event",
        Some(w) => w.policy.kind.name(),
    };
    let mut result = RuleResult {
        rule: rule.name.clone(),
        kind,
        positive: 0,
        negative: 0,
        failures: Vec::new(),
        note: None,
    };
    if let Some(lists) = &rule.dormant {
        // Its fixtures would not fire: it is never evaluated.
        result.failures.push(format!(
            "quiet until {lists} has items: give its fixtures `lists:` to check it as a site that filled them runs it"
        ));
        return result;
    }
    for positive in [true, false] {
        let cases = cases(rule, positive);
        let label = if positive { "positive" } else { "negative" };
        if cases.is_empty() {
            result.failures.push(format!(
                "no {label} fixture (inline, or {}/{label}*.jsonl)",
                fixture_dir(Path::new(&*rule.origin.file), &rule.name).display()
            ));
        }
        for case in cases {
            let events = match case.events {
                Ok(events) if !events.is_empty() => events,
                Ok(_) => {
                    result.failures.push(format!("{}: no events", case.name));
                    continue;
                }
                Err(e) => {
                    result.failures.push(format!("{}: {e}", case.name));
                    continue;
                }
            };
            let want = usize::from(positive);
            if rule.window.is_some() {
                let got = stream_alerts(set, rule, &events).len();
                if got != want {
                    result
                        .failures
                        .push(format!("{}: the stream fired {got} times, expected {want}", case.name));
                }
                if positive {
                    result.positive += 1;
                } else {
                    result.negative += 1;
                }
                continue;
            }
            for (i, event) in events.iter().enumerate() {
                let got = fires_on(set, rule, event);
                if got != want {
                    let verb = if positive { "did not fire on" } else { "fired on" };
                    result.failures.push(format!(
                        "{}: {verb} event {} (auditID {})",
                        case.name,
                        i + 1,
                        event.view().audit_id()
                    ));
                }
                if positive {
                    result.positive += 1;
                } else {
                    result.negative += 1;
                }
            }
        }
    }
    result
}

/// The results as a table (one line per rule, then the failures); `true` if all passed.
pub fn report(results: &[RuleResult], out: &mut dyn std::io::Write) -> std::io::Result<bool> {
    let width = results.iter().map(|r| r.rule.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<6} {:<width$}  {:<9} {:>8} {:>8}",
        "result", "rule", "kind", "positive", "negative"
    )?;
    for r in results {
        let status = if r.passed() { "ok" } else { "FAIL" };
        let note = r.note.as_deref().map(|n| format!("  ({n})")).unwrap_or_default();
        writeln!(
            out,
            "{:<6} {:<width$}  {:<9} {:>8} {:>8}{note}",
            status, r.rule, r.kind, r.positive, r.negative
        )?;
    }
    let failed: Vec<&RuleResult> = results.iter().filter(|r| !r.passed()).collect();
    for r in &failed {
        for f in &r.failures {
            writeln!(out, "FAIL {}: {f}", r.rule)?;
        }
    }
    writeln!(
        out,
        "{} rules: {} passed, {} failed",
        results.len(),
        results.len() - failed.len(),
        failed.len()
    )?;
    Ok(failed.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = r#"
- rule: Pod deleted
  desc: d
  condition: verb == 'delete' && objectRef.resource == 'pods'
  output: o
  priority: notice
  fixtures:
    positive:
      - {auditID: a, stage: ResponseComplete, verb: delete, objectRef: {resource: pods}}
    negative:
      - {auditID: b, stage: ResponseComplete, verb: delete, objectRef: {resource: secrets}}
      - {auditID: c, stage: ResponseComplete, verb: delete, objectRef: {resource: pods}}
- rule: No fixtures
  desc: d
  condition: verb == 'get'
  output: o
  priority: notice
"#;

    #[test]
    fn inline_fixtures_are_checked_and_missing_ones_fail() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(&file, RULES).unwrap();
        let results = run(&RuleSource::load_paths(&[file]).unwrap()).unwrap();
        assert_eq!((results[0].positive, results[0].negative), (1, 2));
        assert_eq!(results[0].failures.len(), 1, "{:?}", results[0].failures);
        assert!(
            results[0].failures[0].contains("fired on event 2 (auditID c)"),
            "{:?}",
            results[0].failures
        );
        assert!(results[1].failures.iter().any(|f| f.contains("no positive fixture")));
        let mut out = Vec::new();
        assert!(!report(&results, &mut out).unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("2 rules: 0 passed, 2 failed"), "{text}");
    }

    const REQUIRING: &str = r#"
- list: people
  items: []
- rule: Unlisted
  desc: d
  condition: verb == 'delete' && !(user.username in people)
  output: o
  priority: notice
  requires: [people]
  fixtures:
    lists: {people: [alice]}
    positive:
      - {auditID: a, stage: ResponseComplete, verb: delete, user: {username: mallory}}
    negative:
      - {auditID: b, stage: ResponseComplete, verb: delete, user: {username: alice}}
"#;

    #[test]
    fn a_rule_requiring_an_empty_list_is_quiet_and_checked_with_its_fixtures_lists() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.yaml");
        std::fs::write(&file, REQUIRING).unwrap();
        let source = RuleSource::load_paths(std::slice::from_ref(&file)).unwrap();
        // As shipped: never evaluated, so quiet on the event it would fire on.
        let set = RuleSet::compile(source.clone(), Matching::All).unwrap();
        assert_eq!(set.rules()[0].dormant.as_deref(), Some("people"));
        let mallory = Event::from_json(
            r#"{"auditID":"a","stage":"ResponseComplete","verb":"delete","user":{"username":"mallory"}}"#.to_string(),
        )
        .unwrap();
        assert!(set.evaluate(&mallory.view(), "c").is_empty());
        // Its fixtures run with the list they give, and the table says why it is quiet.
        let results = run(&source).unwrap();
        assert!(results[0].passed(), "{:?}", results[0].failures);
        assert_eq!((results[0].positive, results[0].negative), (1, 1));
        assert_eq!(results[0].note.as_deref(), Some("quiet until people has items"));
        // Without fixture lists, a quiet rule cannot be checked: that fails.
        std::fs::write(&file, REQUIRING.replace("    lists: {people: [alice]}\n", "")).unwrap();
        let results = run(&RuleSource::load_paths(std::slice::from_ref(&file)).unwrap()).unwrap();
        assert!(
            results[0].failures[0].contains("quiet until people has items"),
            "{:?}",
            results[0].failures
        );
        // A site that fills the list wakes it.
        let filled = dir.path().join("site.yaml");
        std::fs::write(
            &filled,
            "- list: people\n  items: [alice]\n  override: {items: append}\n",
        )
        .unwrap();
        let set = RuleSet::load(&[file.clone(), filled], Matching::All).unwrap();
        assert_eq!(set.rules()[0].dormant, None);
        assert_eq!(set.evaluate(&mallory.view(), "c").len(), 1);
        // Requiring what is no list is an error that names it.
        std::fs::write(&file, REQUIRING.replace("requires: [people]", "requires: [persons]")).unwrap();
        let e = RuleSet::load(&[file], Matching::All).unwrap_err().to_string();
        assert!(e.contains("requires `persons`, which is no list"), "{e}");
    }
}

//! The compiled evaluation path held to the interpreter (the reference): every rule of a rule
//! set, over every event of some records, must give the same verdict on both paths — match, no
//! match, missing field or error. Shared by `tests/differential.rs` (50k events in `cargo
//! test`) and the `differential` example (`integration/differential.sh`, a million and more).

use kaudit::audit::decode::DocumentReader;
use kaudit::audit::envelope::Format;
use kaudit::engine::{EvalPath, Firing, Matching, RuleSet, Verdict};
use std::collections::BTreeMap;
use std::path::Path;

/// The rule sets compared: the default rules, and Falco's rules imported.
pub fn rule_sets() -> Vec<(String, RuleSet)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = RuleSet::load(&[root.join("rules")], Matching::All).unwrap();
    let falco_file = root.join("../shared/falco/k8s_audit_rules.yaml");
    let imported = kaudit::tools::falco::import(&[falco_file], true).unwrap();
    let falco = RuleSet::from_text("falco-imported.yaml", &imported.yaml, Matching::All).unwrap();
    vec![("default".into(), default), ("falco".into(), falco)]
}

/// What the comparison saw.
#[derive(Debug, Default)]
pub struct Tally {
    pub events: u64,
    /// Verdicts compared (events × rules).
    pub verdicts: u64,
    /// Outputs and dedup keys compared (events × rules).
    pub renders: u64,
    /// Outputs that differ only in the order of a list made from a map's keys.
    pub map_order: u64,
    /// Verdicts per kind, on the reference path.
    pub kinds: BTreeMap<String, u64>,
    /// The first disagreements: set, rule, event, compiled verdict, interpreted verdict.
    pub mismatches: Vec<String>,
    pub mismatch_count: u64,
    /// Of the disagreements, rules the prefilter left out that the interpreter matched.
    pub prefilter_count: u64,
    /// Rules the prefilter left out (they cannot match) that the interpreter failed on: a
    /// malformed part of the event in a conjunct before the one that excludes the rule.
    pub left_out_errors: u64,
}

/// Compares both paths on every event of `lines` (audit events or cloud envelopes).
pub fn compare(sets: &[(String, RuleSet)], lines: &[String], tally: &mut Tally) {
    let text = lines.join("\n");
    let reader = DocumentReader::new(std::io::Cursor::new(text.into_bytes()), Format::Auto).unwrap();
    for item in reader {
        let Ok(Ok(record)) = item else { continue };
        let view = record.event.view();
        tally.events += 1;
        for (name, set) in sets {
            let compiled = set.verdicts(&view, "c1", EvalPath::Compiled);
            let reference = set.verdicts(&view, "c1", EvalPath::Interpreted);
            // Outputs and dedup keys, on one event in 8: of every rule (as if it had matched).
            if tally.events.is_multiple_of(8) {
                let renders = (
                    set.renders(&view, "c1", EvalPath::Compiled),
                    set.renders(&view, "c1", EvalPath::Interpreted),
                );
                for (i, (c, r)) in renders.0.iter().zip(&renders.1).enumerate() {
                    tally.renders += 1;
                    let same = c.output == r.output && c.output_fields == r.output_fields && c.dedup_key == r.dedup_key;
                    if same {
                        continue;
                    }
                    // CEL leaves the order of a map's keys open: the interpreter iterates them in
                    // hash order, the compiled path in the event's. A list made from them may
                    // differ in order only.
                    if c.dedup_key == r.dedup_key && order_only(c, r) {
                        tally.map_order += 1;
                        continue;
                    }
                    tally.mismatch_count += 1;
                    if tally.mismatches.len() < 10 {
                        tally.mismatches.push(format!(
                            "{name} / {}: output compiled {:?} {:?}, interpreter {:?} {:?}",
                            set.rules()[i].name,
                            c.output,
                            c.output_fields,
                            r.output,
                            r.output_fields
                        ));
                    }
                }
            }
            let candidates = set.candidates(&view);
            for (i, (c, r)) in compiled.iter().zip(&reference).enumerate() {
                tally.verdicts += 1;
                *tally.kinds.entry(format!("{r:?}")).or_default() += 1;
                // The prefilter leaves a rule out only where it cannot match (a rule switched
                // off, or quiet until its lists are filled, is never a candidate: not asked).
                let rule = &set.rules()[i];
                let asked = rule.enabled && rule.dormant.is_none();
                if asked && !candidates[i] && *r == Verdict::Error {
                    tally.left_out_errors += 1;
                }
                let hidden = asked && !candidates[i] && *r == Verdict::Match;
                if hidden {
                    tally.prefilter_count += 1;
                }
                let mut mismatch = |what: String| {
                    tally.mismatch_count += 1;
                    if tally.mismatches.len() < 10 {
                        let event = record.event.as_str();
                        tally.mismatches.push(format!(
                            "{name} / {}: {what} on {}",
                            set.rules()[i].name,
                            &event[..event.len().min(1500)]
                        ));
                    }
                };
                if hidden {
                    mismatch(format!("left out by the prefilter, interpreter {r:?}"));
                }
                if c != r {
                    mismatch(format!("compiled {c:?}, interpreter {r:?}"));
                }
            }
        }
    }
}

/// Whether two renderings differ only in the order of list elements.
fn order_only(a: &Firing, b: &Firing) -> bool {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Array(items) => {
                let mut items: Vec<serde_json::Value> = items.iter().map(sorted).collect();
                items.sort_by_key(|i| i.to_string());
                serde_json::Value::Array(items)
            }
            serde_json::Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect(),
            other => other.clone(),
        }
    }
    let chars = |s: &str| {
        let mut c: Vec<char> = s.chars().collect();
        c.sort_unstable();
        c
    };
    let fields = |f: &serde_json::Map<String, serde_json::Value>| sorted(&serde_json::Value::Object(f.clone()));
    fields(&a.output_fields) == fields(&b.output_fields) && chars(&a.output) == chars(&b.output)
}

//! The compiled evaluation path held to the interpreter (the reference): every rule of a rule
//! set, over every event of some records, must give the same verdict on both paths — match, no
//! match, missing field or error. Shared by `tests/differential.rs` (50k events in `cargo
//! test`) and the `differential` example (`integration/differential.sh`, a million and more).

use kaudit::audit::decode::DocumentReader;
use kaudit::audit::envelope::Format;
use kaudit::engine::{EvalPath, Matching, RuleSet};
use std::collections::BTreeMap;
use std::path::Path;

/// The rule sets compared: the default rules, and Falco's rules imported.
pub fn rule_sets() -> Vec<(String, RuleSet)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let default = RuleSet::load(&[root.join("rules")], Matching::All).unwrap();
    let falco_file = root.join("../shared/falco/k8s_audit_rules.yaml");
    let imported = kaudit::falco::import(&[falco_file], true).unwrap();
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
    /// Verdicts per kind, on the reference path.
    pub kinds: BTreeMap<String, u64>,
    /// The first disagreements: set, rule, event, compiled verdict, interpreted verdict.
    pub mismatches: Vec<String>,
    pub mismatch_count: u64,
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
            let renders = (
                set.renders(&view, "c1", EvalPath::Compiled),
                set.renders(&view, "c1", EvalPath::Interpreted),
            );
            for (i, (c, r)) in renders.0.iter().zip(&renders.1).enumerate() {
                tally.renders += 1;
                let same = c.output == r.output && c.output_fields == r.output_fields && c.dedup_key == r.dedup_key;
                if !same {
                    tally.mismatch_count += 1;
                    if tally.mismatches.len() < 10 {
                        tally.mismatches.push(format!(
                            "{name} / {}: output compiled {:?} {:?}, interpreter {:?} {:?}",
                            set.rules()[i].name, c.output, c.output_fields, r.output, r.output_fields
                        ));
                    }
                }
            }
            for (i, (c, r)) in compiled.iter().zip(&reference).enumerate() {
                tally.verdicts += 1;
                *tally.kinds.entry(format!("{r:?}")).or_default() += 1;
                if c != r {
                    tally.mismatch_count += 1;
                    if tally.mismatches.len() < 10 {
                        let event = record.event.as_str();
                        tally.mismatches.push(format!(
                            "{name} / {}: compiled {c:?}, interpreter {r:?} on {}",
                            set.rules()[i].name,
                            &event[..event.len().min(1500)]
                        ));
                    }
                }
            }
        }
    }
}

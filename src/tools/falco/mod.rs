//! `kaudit rules import-falco`: Falco k8s_audit rule files, unmodified, as kaudit rules.
//!
//! The files are read in order by kaudit's own loader, which has Falco's semantics (`append`/
//! `override`, redefinition keeping the first position, `enabled`-only toggles, exceptions; see
//! [`crate::engine::rules::Dialect::Falco`]), then every `k8s_audit` rule
//! is translated, its condition parsed ([`condition`]) and written as CEL over Falco's own field
//! extraction ([`fields`]): `falco_field(root, 'ka.user.name', '')` is the field's values as
//! strings, empty when absent, so
//!
//! - a missing field makes every comparison false, `!=` included, and `not` still sees it true;
//! - list fields take only `exists`, `in` (every element in the set) and `intersects`;
//! - string comparisons are Falco's (`<` on text, `regex` anchored, `glob`, `pmatch`, …).
//!
//! Where a check is not under a `not`, the four keys the prefilter indexes (`ka.verb`,
//! `ka.target.resource`, `ka.target.subresource`, the stage) compare directly (`verb ==
//! 'create'`): an absent key then fails the check, which is the same outcome, and the rule keeps
//! the prefilter's speed. So each macro may be written twice, as `name` (positive) and
//! `name__safe` (for use under `not`). Lists become kaudit lists (items one level expanded, as
//! Falco does), still extensible by an override file. Syscall rules (other sources) are left
//! out, as Falco evaluates only `k8s_audit` rules on audit events. A construct that cannot be
//! translated is an error naming the rule and the construct.

pub mod condition;
mod translate;

use crate::engine::rules::{Dialect, RuleSource, Scalar};
use std::fmt::Write as _;
use std::path::PathBuf;
use translate::{cel_name, q, Translator};

/// The result of an import: the rule file, and what was left out and why.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub rules: usize,
    /// Rules left out (lenient mode) with the reason; syscall rules are not listed.
    pub skipped: Vec<String>,
}

/// A list's items with list names among them replaced by those lists' own items (one level, as
/// Falco expands them).
fn list_items(source: &RuleSource, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in source.lists.get(name).into_iter().flat_map(|l| &l.items) {
        match item {
            Scalar::String(inner) if inner != name && source.lists.contains_key(inner) => {
                out.extend(source.lists[inner].items.iter().map(Scalar::text))
            }
            other => out.push(other.text()),
        }
    }
    out
}

/// Translates Falco rule files (in load order) into one kaudit rule file. With `lenient`, a
/// rule that cannot be translated is left out and reported instead of failing the import
/// (Falco's older engines failed such rules only when they ran).
pub fn import(files: &[PathBuf], lenient: bool) -> Result<Imported, Vec<String>> {
    let loaded = RuleSource::load_paths_in(files, Dialect::Falco)
        .map_err(|e| e.0.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let mut errors = Vec::new();
    let mut tr = Translator::new(&loaded);
    let mut rules_out = String::new();
    let mut skipped = Vec::new();
    let mut count = 0;
    // Rules of other sources than k8s_audit were left out by the loader.
    for (name, rule) in &loaded.rules {
        match tr.rule(name, rule) {
            Ok(yaml) => {
                rules_out.push_str(&yaml);
                count += 1;
            }
            Err(e) if lenient => skipped.push(format!("rule '{name}': {e}")),
            Err(e) => errors.push(format!("rule '{name}': {e}")),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut yaml = String::from("# Imported from Falco rule files by `kaudit rules import-falco`:\n");
    for f in files {
        let _ = writeln!(yaml, "#   {}", f.display());
    }
    yaml.push('\n');
    for list in &tr.lists {
        let items: Vec<String> = list_items(&loaded, list).iter().map(|i| q(i)).collect();
        let _ = writeln!(yaml, "- list: {}\n  items: [{}]\n", cel_name(list), items.join(", "));
    }
    for (name, cel) in &tr.macros {
        let _ = writeln!(yaml, "- macro: {name}\n  condition: {}\n", q(cel));
    }
    yaml.push_str(&rules_out);
    Ok(Imported {
        yaml,
        rules: count,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::Event;
    use crate::engine::{Matching, RuleSet};

    fn import_text(text: &str) -> Result<RuleSet, String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("falco.yaml");
        std::fs::write(&file, text).unwrap();
        let imported = import(&[file], false).map_err(|e| e.join("\n"))?;
        RuleSet::from_text("imported.yaml", &imported.yaml, Matching::First)
            .map_err(|e| format!("{e}\n{}", imported.yaml))
    }

    fn fires(set: &RuleSet, event: serde_json::Value) -> Vec<String> {
        let event = Event::from_json(event.to_string()).unwrap();
        let view = event.view();
        set.evaluate(&view, "c")
            .iter()
            .map(|f| set.rule(f.rule).name.clone())
            .collect()
    }

    const RULES: &str = r#"
- macro: kevt
  condition: (jevt.value[/stage] in (k8s_audit_stages))
- list: k8s_audit_stages
  items: ["ResponseComplete"]
- list: trusted
  items: [nginx, other_list]
- list: other_list
  items: [apache]
- rule: Not in namespace
  desc: d
  condition: kevt and ka.target.namespace != kube-system and not ka.user.name in (trusted)
  output: "%ka.user.name did %ka.verb on %ka.target.name/%ka.target.namespace"
  priority: WARNING
  source: k8s_audit
- rule: Syscall rule
  desc: not ours
  condition: evt.type = open
  output: x
  priority: notice
"#;

    #[test]
    fn falco_semantics_for_missing_fields_and_negation() {
        let set = import_text(RULES).unwrap();
        assert_eq!(set.rules().len(), 1, "the syscall rule is left out");
        let base = serde_json::json!({"auditID": "1", "stage": "ResponseComplete", "verb": "create",
            "user": {"username": "bob"}, "objectRef": {"namespace": "default", "name": "x"}});
        assert_eq!(fires(&set, base.clone()), ["Not in namespace"]);
        // A cluster-scoped object: `!=` on the absent namespace is false.
        let mut cluster_scoped = base.clone();
        cluster_scoped["objectRef"] = serde_json::json!({"name": "x"});
        assert!(fires(&set, cluster_scoped).is_empty());
        // No user: `not ka.user.name in (...)` is true, the rule fires.
        let mut no_user = base.clone();
        no_user.as_object_mut().unwrap().remove("user");
        assert_eq!(fires(&set, no_user), ["Not in namespace"]);
        // A trusted user: one level of list expansion (`other_list` inside `trusted`).
        for user in ["nginx", "apache"] {
            let mut trusted = base.clone();
            trusted["user"]["username"] = user.into();
            assert!(fires(&set, trusted).is_empty(), "{user}");
        }
        let mut started = base;
        started["stage"] = "ResponseStarted".into();
        assert!(fires(&set, started).is_empty());
    }

    #[test]
    fn untranslatable_constructs_name_the_rule() {
        let bad = "- rule: Bad\n  desc: d\n  condition: ka.user.groups contains x\n  output: o\n  priority: info\n  source: k8s_audit\n";
        let e = import_text(bad).unwrap_err();
        assert!(e.contains("rule 'Bad'") && e.contains("list field"), "{e}");
        let unknown =
            "- rule: U\n  desc: d\n  condition: ka.nope = x\n  output: o\n  priority: info\n  source: k8s_audit\n";
        assert!(import_text(unknown).unwrap_err().contains("field `ka.nope`"));
        let no_macro = "- rule: M\n  desc: d\n  condition: nope and ka.verb=get\n  output: o\n  priority: info\n  source: k8s_audit\n";
        assert!(import_text(no_macro)
            .unwrap_err()
            .contains("macro 'nope' is not defined"));
    }
}

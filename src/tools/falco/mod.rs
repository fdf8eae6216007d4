//! `kaudit rules import-falco`: Falco k8s_audit rule files, unmodified, as kaudit rules.
//!
//! The files are read in order with Falco's loader semantics (`append`/`override`, redefinition
//! keeping the first position, `enabled`-only toggles, exceptions), then every `k8s_audit` rule
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

use indexmap::IndexMap;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use translate::{cel_name, q, Translator};

#[derive(Debug, Clone, Default)]
struct FalcoRule {
    desc: String,
    condition: String,
    output: String,
    priority: String,
    tags: Vec<String>,
    enabled: bool,
    source: String,
    exceptions: Vec<Json>,
}

#[derive(Debug, Default)]
struct Loaded {
    lists: IndexMap<String, Vec<String>>,
    macros: IndexMap<String, String>,
    rules: IndexMap<String, FalcoRule>,
}

/// The result of an import: the rule file, and what was left out and why.
#[derive(Debug)]
pub struct Imported {
    pub yaml: String,
    pub rules: usize,
    /// Rules left out (lenient mode) with the reason; syscall rules are not listed.
    pub skipped: Vec<String>,
}

fn text(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => String::new(),
        other => other.to_string(),
    }
}

fn strings(v: Option<&Json>) -> Vec<String> {
    v.and_then(Json::as_array)
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default()
}

impl Loaded {
    fn apply_file(&mut self, file: &PathBuf) -> Result<(), Vec<String>> {
        let source = std::fs::read_to_string(file).map_err(|e| vec![format!("{}: {e}", file.display())])?;
        let items: Vec<Json> = serde_saphyr::from_str::<Option<Vec<Json>>>(&source)
            .map_err(|e| vec![format!("{}: {e}", file.display())])?
            .unwrap_or_default();
        let mut errors = Vec::new();
        for item in items {
            if let Err(e) = self.apply(&item) {
                errors.push(format!("{}: {e}", file.display()));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn apply(&mut self, item: &Json) -> Result<(), String> {
        // An empty item (`-` alone) is nothing, as Falco's loader reads it.
        if item.is_null() {
            return Ok(());
        }
        let obj = item.as_object().ok_or("an item that is not a mapping")?;
        let modes = |keys: &[&str]| -> HashMap<String, String> {
            let mut m = HashMap::new();
            if let Some(o) = obj.get("override").and_then(Json::as_object) {
                for (k, v) in o {
                    m.insert(k.clone(), text(v));
                }
            }
            if obj.get("append").and_then(Json::as_bool) == Some(true) {
                for k in keys {
                    m.insert(k.to_string(), "append".into());
                }
            }
            m
        };
        if obj.contains_key("required_engine_version") || obj.contains_key("required_plugin_versions") {
            return Ok(());
        }
        if let Some(name) = obj.get("list").map(text) {
            let items = strings(obj.get("items"));
            let m = modes(&["items"]);
            match m.get("items").map(String::as_str) {
                Some("append") => self
                    .lists
                    .get_mut(&name)
                    .ok_or(format!("list '{name}': append to a list that is not defined"))?
                    .extend(items),
                Some(_) | None if m.contains_key("items") => {
                    *self
                        .lists
                        .get_mut(&name)
                        .ok_or(format!("list '{name}': override of a list that is not defined"))? = items
                }
                _ => {
                    self.lists.insert(name, items);
                }
            }
            return Ok(());
        }
        if let Some(name) = obj.get("macro").map(text) {
            let cond = obj.get("condition").map(text).unwrap_or_default();
            let m = modes(&["condition"]);
            match m.get("condition").map(String::as_str) {
                Some("append") => {
                    let c = self
                        .macros
                        .get_mut(&name)
                        .ok_or(format!("macro '{name}': append to a macro that is not defined"))?;
                    *c = format!("{c} {cond}");
                }
                Some(_) => {
                    *self
                        .macros
                        .get_mut(&name)
                        .ok_or(format!("macro '{name}': override of a macro that is not defined"))? = cond
                }
                None => {
                    self.macros.insert(name, cond);
                }
            }
            return Ok(());
        }
        let Some(name) = obj.get("rule").map(text) else {
            return Err(format!(
                "an item that is no list, macro or rule: {}",
                Json::Object(obj.clone())
            ));
        };
        let m = modes(&["condition", "output", "desc", "tags", "exceptions"]);
        let only_enabled = obj.contains_key("enabled")
            && !["condition", "output", "desc", "priority", "tags", "exceptions"]
                .iter()
                .any(|k| obj.contains_key(*k));
        if !m.is_empty() || only_enabled {
            let rule = self
                .rules
                .get_mut(&name)
                .ok_or(format!("rule '{name}': changes a rule that is not defined"))?;
            if only_enabled && m.is_empty() {
                rule.enabled = obj.get("enabled").and_then(Json::as_bool).unwrap_or(true);
                return Ok(());
            }
            for (key, mode) in &m {
                let append = mode == "append";
                let value = obj.get(key.as_str());
                match key.as_str() {
                    "condition" | "output" | "desc" => {
                        let new = value
                            .map(text)
                            .ok_or(format!("rule '{name}': override of `{key}` without one"))?;
                        let slot = match key.as_str() {
                            "condition" => &mut rule.condition,
                            "output" => &mut rule.output,
                            _ => &mut rule.desc,
                        };
                        *slot = if append { format!("{slot} {new}") } else { new };
                    }
                    "priority" => rule.priority = value.map(text).unwrap_or_default(),
                    "enabled" => rule.enabled = value.and_then(Json::as_bool).unwrap_or(true),
                    "tags" => {
                        let tags = strings(value);
                        if append {
                            for t in tags {
                                if !rule.tags.contains(&t) {
                                    rule.tags.push(t);
                                }
                            }
                        } else {
                            rule.tags = tags;
                        }
                    }
                    "exceptions" => {
                        let new = value.and_then(Json::as_array).cloned().unwrap_or_default();
                        if !append {
                            rule.exceptions = new;
                            continue;
                        }
                        for e in new {
                            let ename = e.get("name").map(text).unwrap_or_default();
                            match rule
                                .exceptions
                                .iter_mut()
                                .find(|x| x.get("name").map(text) == Some(ename.clone()))
                            {
                                Some(existing) => {
                                    let more = e.get("values").and_then(Json::as_array).cloned().unwrap_or_default();
                                    if let Some(vals) = existing.get_mut("values").and_then(Json::as_array_mut) {
                                        vals.extend(more);
                                    } else {
                                        existing["values"] = Json::Array(more);
                                    }
                                }
                                None => rule.exceptions.push(e),
                            }
                        }
                    }
                    other => return Err(format!("rule '{name}': `{other}` cannot be overridden")),
                }
            }
            return Ok(());
        }
        let rule = FalcoRule {
            desc: obj.get("desc").map(text).unwrap_or_default(),
            condition: obj.get("condition").map(text).unwrap_or_default(),
            output: obj.get("output").map(text).unwrap_or_default(),
            priority: obj.get("priority").map(text).unwrap_or_default(),
            tags: strings(obj.get("tags")),
            enabled: obj.get("enabled").and_then(Json::as_bool).unwrap_or(true),
            source: obj.get("source").map(text).unwrap_or_else(|| "syscall".into()),
            exceptions: obj
                .get("exceptions")
                .and_then(Json::as_array)
                .cloned()
                .unwrap_or_default(),
        };
        self.rules.insert(name, rule);
        Ok(())
    }

    /// A list's items with list names among them replaced by those lists' own items.
    fn list_items(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for item in self.lists.get(name).into_iter().flatten() {
            match self.lists.get(item) {
                Some(inner) if item != name => out.extend(inner.iter().cloned()),
                _ => out.push(item.clone()),
            }
        }
        out
    }
}

/// Translates Falco rule files (in load order) into one kaudit rule file. With `lenient`, a
/// rule that cannot be translated is left out and reported instead of failing the import
/// (Falco's older engines failed such rules only when they ran).
pub fn import(files: &[PathBuf], lenient: bool) -> Result<Imported, Vec<String>> {
    let mut loaded = Loaded::default();
    let mut errors = Vec::new();
    for file in files {
        if let Err(e) = loaded.apply_file(file) {
            errors.extend(e);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut tr = Translator::new(&loaded);
    let mut rules_out = String::new();
    let mut skipped = Vec::new();
    let mut count = 0;
    for (name, rule) in &loaded.rules {
        if rule.source != "k8s_audit" {
            continue;
        }
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
        let items: Vec<String> = loaded.list_items(list).iter().map(|i| q(i)).collect();
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

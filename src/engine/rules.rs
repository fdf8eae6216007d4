//! Rule files: the YAML of lists, macros and rules, and how later files change earlier ones.
//!
//! Files load in order. An item that names an existing list, macro or rule changes it the way
//! Falco's rule language does: `override: {condition: append, exceptions: append, enabled:
//! replace, ...}` (or the legacy `append: true`), `enabled: false` alone to disable. Every problem
//! is collected with its file, line and item so that `kaudit rules lint` prints them all and a
//! rule set never half-loads.
//!
//! Falco's own rule files load through the same code ([`Dialect::Falco`], for `rules
//! import-falco`): their items are read as kaudit's, minus what only Falco has (engine version
//! requirements, syscall rules and the changes made to them, keys kaudit does not use) and with
//! the short form of exceptions written out; the conditions stay Falco's text, for the importer
//! to translate.

mod defs;

pub use defs::*;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where something was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<str>,
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub origin: Origin,
    /// `rule 'X'`, `macro 'Y'`, `list 'Z'`, or empty for file-level problems.
    pub item: String,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.item.is_empty() {
            write!(f, "{}: {}", self.origin, self.message)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.item, self.message)
        }
    }
}

/// All problems of one load; nothing of it is used.
#[derive(Debug, Clone)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Lists, macros and rules of all files, overrides applied, in definition order.
#[derive(Debug, Clone, Default)]
pub struct RuleSource {
    pub lists: IndexMap<String, ListDef>,
    pub macros: IndexMap<String, MacroDef>,
    pub rules: IndexMap<String, RuleDef>,
    /// Falco files: the rules of other sources than `k8s_audit`, left out with their changes.
    foreign: std::collections::HashSet<String>,
}

/// The language of a rule file: kaudit's (CEL conditions), or Falco's (Falco conditions, loaded
/// for `rules import-falco`, which translates them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Kaudit,
    Falco,
}

/// The keys of a Falco item that kaudit reads; the rest (`required_engine_version`,
/// `warn_evttypes`, `capture`, …) mean nothing on audit events.
const FALCO_KEYS: &[&str] = &[
    "list",
    "items",
    "macro",
    "rule",
    "desc",
    "condition",
    "output",
    "priority",
    "tags",
    "enabled",
    "exceptions",
    "override",
    "append",
    "source",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    list: Option<String>,
    items: Option<Vec<Scalar>>,
    #[serde(rename = "macro")]
    macro_: Option<String>,
    rule: Option<String>,
    desc: Option<String>,
    condition: Option<Spanned<String>>,
    output: Option<String>,
    priority: Option<String>,
    tags: Option<Vec<String>>,
    enabled: Option<bool>,
    exceptions: Option<Vec<ExceptionDef>>,
    dedup: Option<DedupDef>,
    threshold: Option<ThresholdSpec>,
    distinct: Option<DistinctSpec>,
    sequence: Option<SequenceSpec>,
    new_terms: Option<NewTermsSpec>,
    #[serde(rename = "override")]
    override_: Option<HashMap<String, String>>,
    append: Option<bool>,
    source: Option<String>,
    needs: Option<String>,
    covers: Option<Vec<Scalar>>,
    falco: Option<Vec<String>>,
    requires: Option<Vec<String>>,
    fixtures: Option<FixturesDef>,
}

impl RuleSource {
    /// Loads rule files and directories (their `*.yaml`/`*.yml` files, sorted by name) in order.
    pub fn load_paths(paths: &[PathBuf]) -> Result<RuleSource, LoadErrors> {
        Self::load_paths_in(paths, Dialect::Kaudit)
    }

    /// Loads rule files and directories written in `dialect`.
    pub fn load_paths_in(paths: &[PathBuf], dialect: Dialect) -> Result<RuleSource, LoadErrors> {
        let mut files = Vec::new();
        let mut errors = Vec::new();
        for path in paths {
            match rule_files(path) {
                Ok(found) => files.extend(found),
                Err(message) => errors.push(file_error(path, message)),
            }
        }
        let mut source = RuleSource::default();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => source.apply_text_in(&file.display().to_string(), &text, dialect, &mut errors),
                Err(e) => errors.push(file_error(&file, e.to_string())),
            }
        }
        if errors.is_empty() {
            Ok(source)
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Applies one file's text; `name` is what errors call the file.
    pub fn apply_text(&mut self, name: &str, text: &str, errors: &mut Vec<LoadError>) {
        self.apply_text_in(name, text, Dialect::Kaudit, errors)
    }

    /// Applies one file's text, written in `dialect`.
    pub fn apply_text_in(&mut self, name: &str, text: &str, dialect: Dialect, errors: &mut Vec<LoadError>) {
        let file: Arc<str> = Arc::from(name);
        let parsed = match dialect {
            Dialect::Kaudit => serde_saphyr::from_str::<Option<Vec<Spanned<RawItem>>>>(text).map(|items| {
                items
                    .unwrap_or_default()
                    .into_iter()
                    .map(|item| (item.referenced, Ok(item.value)))
                    .collect()
            }),
            Dialect::Falco => serde_saphyr::from_str::<Option<Vec<Spanned<serde_json::Value>>>>(text).map(|items| {
                items
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|item| self.falco_item(item.value).map(|raw| (item.referenced, raw)))
                    .collect()
            }),
        };
        let items: Vec<(serde_saphyr::Location, Result<RawItem, String>)> = if text.trim().is_empty() {
            Vec::new()
        } else {
            match parsed {
                Ok(items) => items,
                Err(e) => {
                    let (line, column) = yaml_error_position(&e.to_string());
                    errors.push(LoadError {
                        origin: Origin { file, line, column },
                        item: String::new(),
                        message: format!("not a rule file (expected a YAML list of list/macro/rule items): {e}"),
                    });
                    return;
                }
            }
        };
        for (at, raw) in items {
            let origin = Origin {
                file: file.clone(),
                line: at.line(),
                column: at.column(),
            };
            let raw = match raw {
                Ok(raw) => raw,
                Err(message) => {
                    errors.push(LoadError {
                        origin,
                        item: String::new(),
                        message,
                    });
                    continue;
                }
            };
            let result = match (&raw.list, &raw.macro_, &raw.rule) {
                (Some(name), None, None) => self.apply_list(name.clone(), raw, &origin),
                (None, Some(name), None) => self.apply_macro(name.clone(), raw, &origin),
                (None, None, Some(name)) => self.apply_rule(name.clone(), raw, &origin),
                _ => Err((
                    String::new(),
                    "an item has exactly one of `list`, `macro` or `rule`".into(),
                )),
            };
            if let Err((item, message)) = result {
                errors.push(LoadError { origin, item, message });
            }
        }
    }

    /// A Falco item as kaudit reads it; `None` for what is left out (engine requirements, empty
    /// items, rules of other sources and the changes to them).
    fn falco_item(&mut self, item: serde_json::Value) -> Option<Result<RawItem, String>> {
        use serde_json::Value as Json;
        let Json::Object(mut obj) = item else {
            return (!item.is_null()).then(|| Err(format!("an item that is not a mapping: {item}")));
        };
        if let Some(rule) = obj.get("rule").and_then(Json::as_str) {
            let defines = obj.contains_key("condition") && !obj.contains_key("override") && !obj.contains_key("append");
            if defines {
                // Falco's default source is `syscall`.
                let source = obj.get("source").and_then(Json::as_str).unwrap_or("syscall");
                if source == "k8s_audit" {
                    self.foreign.remove(rule);
                } else {
                    self.foreign.insert(rule.to_string());
                    return None;
                }
            } else if self.foreign.contains(rule) {
                return None;
            }
        } else if !obj.contains_key("list") && !obj.contains_key("macro") {
            // `required_engine_version`, `required_plugin_versions`, …
            return None;
        }
        obj.retain(|key, _| FALCO_KEYS.contains(&key.as_str()));
        if let Some(Json::Array(exceptions)) = obj.get_mut("exceptions") {
            exceptions.iter_mut().for_each(falco_exception);
        }
        Some(serde_json::from_value(Json::Object(obj)).map_err(|e| format!("not a rule file item: {e}")))
    }

    fn apply_list(&mut self, name: String, raw: RawItem, origin: &Origin) -> Result<(), (String, String)> {
        let what = format!("list '{name}'");
        let err = |m: String| (what.clone(), m);
        only_fields(&raw, &["items", "override", "append"]).map_err(err)?;
        let Some(items) = raw.items else {
            return Err(err("has no `items`".into()));
        };
        let mode = change_mode(&raw.override_, raw.append, "items").map_err(err)?;
        match (self.lists.get_mut(&name), mode) {
            (Some(list), Change::Append) => list.items.extend(items),
            (None, Change::Append) => return Err(err("appends to a list that is not defined".into())),
            (_, _) => {
                self.lists.insert(
                    name.clone(),
                    ListDef {
                        name,
                        items,
                        origin: origin.clone(),
                    },
                );
            }
        }
        Ok(())
    }

    fn apply_macro(&mut self, name: String, raw: RawItem, origin: &Origin) -> Result<(), (String, String)> {
        let what = format!("macro '{name}'");
        let err = |m: String| (what.clone(), m);
        only_fields(&raw, &["condition", "override", "append"]).map_err(err)?;
        let Some(condition) = raw.condition else {
            return Err(err("has no `condition`".into()));
        };
        let mode = change_mode(&raw.override_, raw.append, "condition").map_err(err)?;
        match (self.macros.get_mut(&name), mode) {
            (Some(m), Change::Append) => m.condition = format!("{} {}", m.condition, condition.value),
            (None, Change::Append) => return Err(err("appends to a macro that is not defined".into())),
            (_, _) => {
                let origin = spanned_origin(origin, &condition);
                self.macros.insert(
                    name.clone(),
                    MacroDef {
                        name,
                        condition: condition.value,
                        origin,
                    },
                );
            }
        }
        Ok(())
    }

    fn apply_rule(&mut self, name: String, raw: RawItem, origin: &Origin) -> Result<(), (String, String)> {
        let what = format!("rule '{name}'");
        let err = |m: String| (what.clone(), m);
        if let Some(source) = &raw.source {
            if source != "k8s_audit" {
                return Err(err(format!("`source: {source}` is not supported (only k8s_audit)")));
            }
        }
        let changes_existing = raw.override_.is_some() || raw.append == Some(true);
        let only_enabled = raw.enabled.is_some()
            && raw.condition.is_none()
            && raw.output.is_none()
            && raw.desc.is_none()
            && raw.priority.is_none()
            && raw.tags.is_none()
            && raw.exceptions.is_none()
            && raw.dedup.is_none()
            && raw.threshold.is_none()
            && raw.distinct.is_none()
            && raw.sequence.is_none();
        if changes_existing || only_enabled {
            let Some(rule) = self.rules.get_mut(&name) else {
                return Err(err("changes a rule that is not defined".into()));
            };
            return apply_rule_changes(rule, raw, origin).map_err(err);
        }
        let priority = match raw.priority.as_deref().map(|p| (p, Priority::parse(p))) {
            Some((_, Some(p))) => p,
            Some((p, None)) => {
                return Err(err(format!(
                    "`priority: {p}` is not one of emergency, alert, critical, error, warning, notice, informational, debug"
                )))
            }
            None => return Err(err("has no `priority`".into())),
        };
        let stateful = match (raw.threshold, raw.distinct, raw.sequence, raw.new_terms) {
            (None, None, None, None) => None,
            (Some(t), None, None, None) => Some(StatefulDef::Threshold(t)),
            (None, Some(d), None, None) => Some(StatefulDef::Distinct(d)),
            (None, None, Some(s), None) => Some(StatefulDef::Sequence(s)),
            (None, None, None, Some(n)) => Some(StatefulDef::NewTerms(n)),
            _ => {
                return Err(err(
                    "a rule is one of threshold, distinct, sequence or new_terms, not several".into(),
                ))
            }
        };
        // A sequence's steps are its conditions; a `condition` beside them narrows every step.
        let condition = match (raw.condition, &stateful) {
            (Some(c), _) => Some(c),
            (None, Some(StatefulDef::Sequence(_))) => Some(Spanned {
                value: "true".to_string(),
                referenced: serde_saphyr::Location::UNKNOWN,
                defined: serde_saphyr::Location::UNKNOWN,
            }),
            (None, _) => None,
        };
        let (Some(condition), Some(output), Some(desc)) = (condition, raw.output, raw.desc) else {
            return Err(err("a rule needs `desc`, `condition`, `output` and `priority`".into()));
        };
        if raw.items.is_some() {
            return Err(err("`items` belongs to lists".into()));
        }
        let needs = match raw.needs.as_deref() {
            None => None,
            Some(n) => Some(
                crate::audit::Level::parse(n)
                    .filter(|l| *l != crate::audit::Level::None)
                    .ok_or_else(|| err(format!("`needs: {n}` is not one of Metadata, Request, RequestResponse")))?,
            ),
        };
        let meta = RuleMetaDef {
            needs,
            covers: raw.covers.unwrap_or_default().iter().map(Scalar::text).collect(),
            falco: raw.falco.unwrap_or_default(),
            requires: raw.requires.unwrap_or_default(),
            fixtures: raw.fixtures,
        };
        let condition_origin = match condition.referenced.line() {
            0 => origin.clone(),
            _ => spanned_origin(origin, &condition),
        };
        self.rules.insert(
            name.clone(),
            RuleDef {
                name,
                desc,
                condition: condition.value,
                condition_origin,
                output,
                priority,
                tags: raw.tags.unwrap_or_default(),
                enabled: raw.enabled.unwrap_or(true),
                exceptions: raw.exceptions.unwrap_or_default(),
                dedup: raw.dedup,
                stateful,
                meta,
                origin: origin.clone(),
            },
        );
        Ok(())
    }
}

fn apply_rule_changes(rule: &mut RuleDef, raw: RawItem, origin: &Origin) -> Result<(), String> {
    if raw.items.is_some() {
        return Err("`items` belongs to lists".into());
    }
    let modes: HashMap<String, String> = match (raw.override_, raw.append) {
        (Some(o), _) => o,
        // Legacy `append: true`: the condition and the exceptions the item has append.
        (None, Some(true)) => [
            ("condition", raw.condition.is_some()),
            ("exceptions", raw.exceptions.is_some()),
        ]
        .into_iter()
        .filter(|(_, present)| *present)
        .map(|(k, _)| (k.to_string(), "append".to_string()))
        .collect(),
        (None, _) => [("enabled".to_string(), "replace".to_string())].into(),
    };
    for (key, mode) in &modes {
        let append = match mode.as_str() {
            "append" => true,
            "replace" => false,
            other => return Err(format!("override `{key}: {other}`: expected append or replace")),
        };
        let allowed_append = ["condition", "output", "desc", "tags", "exceptions"];
        let allowed_replace = [
            "condition",
            "output",
            "desc",
            "priority",
            "tags",
            "exceptions",
            "enabled",
        ];
        if (append && !allowed_append.contains(&key.as_str())) || (!append && !allowed_replace.contains(&key.as_str()))
        {
            return Err(format!("`{key}` cannot be overridden with {mode}"));
        }
        let missing = || format!("override names `{key}` but the item has no `{key}`");
        match key.as_str() {
            "condition" => {
                let c = raw.condition.as_ref().ok_or_else(missing)?;
                if append {
                    rule.condition = format!("{} {}", rule.condition, c.value);
                } else {
                    rule.condition = c.value.clone();
                    rule.condition_origin = spanned_origin(origin, c);
                }
            }
            "output" => {
                let o = raw.output.clone().ok_or_else(missing)?;
                rule.output = if append { format!("{} {o}", rule.output) } else { o };
            }
            "desc" => {
                let d = raw.desc.clone().ok_or_else(missing)?;
                rule.desc = if append { format!("{} {d}", rule.desc) } else { d };
            }
            "priority" => {
                let p = raw.priority.as_deref().ok_or_else(missing)?;
                rule.priority = Priority::parse(p).ok_or_else(|| format!("`priority: {p}` is not a Falco priority"))?;
            }
            "tags" => {
                let t = raw.tags.clone().ok_or_else(missing)?;
                if append {
                    rule.tags.extend(t)
                } else {
                    rule.tags = t
                }
            }
            "exceptions" => {
                let e = raw.exceptions.clone().ok_or_else(missing)?;
                if append {
                    append_exceptions(&mut rule.exceptions, e)?
                } else {
                    rule.exceptions = e
                }
            }
            "enabled" => rule.enabled = raw.enabled.ok_or_else(missing)?,
            "dedup" => rule.dedup = Some(raw.dedup.clone().ok_or_else(missing)?),
            _ => unreachable!("checked against the allowed keys"),
        }
    }
    Ok(())
}

/// Appending an exception whose name exists adds its values to that exception (Falco's rule).
fn append_exceptions(existing: &mut Vec<ExceptionDef>, new: Vec<ExceptionDef>) -> Result<(), String> {
    for exc in new {
        match existing.iter_mut().find(|e| e.name == exc.name) {
            Some(e) if exc.fields.is_empty() || exc.fields == e.fields => e.values.extend(exc.values),
            Some(_) => return Err(format!("exception '{}' appended with different fields", exc.name)),
            None => existing.push(exc),
        }
    }
    Ok(())
}

/// Writes out the short form of a Falco exception (`fields: f`, `comps: in`, `values: [a, b]`:
/// "f is one of a, b") as the long form: one field, one row whose one value is the list. Values
/// appended to a short-form exception by name (no `fields`, values that are not rows) become
/// such a row too.
fn falco_exception(exception: &mut serde_json::Value) {
    use serde_json::Value as Json;
    let Some(obj) = exception.as_object_mut() else {
        return;
    };
    let Some(field) = obj.get("fields").and_then(Json::as_str).map(str::to_string) else {
        if !obj.contains_key("fields") {
            if let Some(Json::Array(values)) = obj.get_mut("values") {
                if values.iter().any(|v| !v.is_array()) {
                    *values = vec![Json::Array(vec![Json::Array(std::mem::take(values))])];
                }
            }
        }
        return;
    };
    let comp = match obj.get("comps") {
        Some(Json::String(c)) => c.clone(),
        _ => "in".to_string(),
    };
    let values = match obj.get("values") {
        Some(Json::Array(v)) if !v.is_empty() => vec![Json::Array(vec![Json::Array(v.clone())])],
        _ => Vec::new(),
    };
    obj.insert("fields".into(), Json::Array(vec![Json::String(field)]));
    obj.insert("comps".into(), Json::Array(vec![Json::String(comp)]));
    obj.insert("values".into(), Json::Array(values));
}

enum Change {
    Define,
    Append,
}

fn change_mode(over: &Option<HashMap<String, String>>, append: Option<bool>, key: &str) -> Result<Change, String> {
    if let Some(o) = over {
        if let Some(k) = o.keys().find(|k| *k != key) {
            return Err(format!("override of `{k}`: only `{key}` can be overridden here"));
        }
        return match o.get(key).map(String::as_str) {
            Some("append") => Ok(Change::Append),
            Some("replace") | None => Ok(Change::Define),
            Some(other) => Err(format!("override `{key}: {other}`: expected append or replace")),
        };
    }
    Ok(if append == Some(true) {
        Change::Append
    } else {
        Change::Define
    })
}

fn only_fields(raw: &RawItem, allowed: &[&str]) -> Result<(), String> {
    let present = [
        ("desc", raw.desc.is_some()),
        ("output", raw.output.is_some()),
        ("priority", raw.priority.is_some()),
        ("tags", raw.tags.is_some()),
        ("enabled", raw.enabled.is_some()),
        ("exceptions", raw.exceptions.is_some()),
        ("dedup", raw.dedup.is_some()),
        ("threshold", raw.threshold.is_some()),
        ("distinct", raw.distinct.is_some()),
        ("sequence", raw.sequence.is_some()),
        ("new_terms", raw.new_terms.is_some()),
        ("source", raw.source.is_some()),
        ("items", raw.items.is_some()),
        ("condition", raw.condition.is_some()),
    ];
    for (name, is) in present {
        if is && !allowed.contains(&name) {
            return Err(format!(
                "`{name}` does not belong here (expected one of {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

/// Where `s` was written, or the item's position where that is not known.
fn spanned_origin<T>(item: &Origin, s: &Spanned<T>) -> Origin {
    if s.referenced.line() == 0 {
        return item.clone();
    }
    Origin {
        file: item.file.clone(),
        line: s.referenced.line(),
        column: s.referenced.column(),
    }
}

fn file_error(path: &Path, message: String) -> LoadError {
    LoadError {
        origin: Origin {
            file: Arc::from(path.display().to_string()),
            line: 0,
            column: 0,
        },
        item: String::new(),
        message,
    }
}

/// The YAML parser writes positions into its messages as `line N, column M`; lift them out.
fn yaml_error_position(message: &str) -> (u64, u64) {
    let grab = |word: &str| {
        message.split(word).nth(1).and_then(|rest| {
            rest.trim_start()
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
    };
    (grab("line").unwrap_or(0), grab("column").unwrap_or(0))
}

pub(crate) fn rule_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests;

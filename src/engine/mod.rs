//! The detection engine: rule files compiled to CEL programs, evaluated against events.
//!
//! [`RuleSet::load`] reads rule files ([`rules`]), compiles every condition, macro, exception
//! and output template once, validates regexes, derives the prefilter ([`prefilter`]), and
//! either yields a complete rule set or every problem with its position. [`RuleSet::evaluate`]
//! is the hot path: prefilter keys → candidate rules → lazily bound CEL ([`bind`]) → firings.
//! A field the event lacks makes the comparison false (counted as `missing`, not as an
//! error); a wrong type or a failing function is an evaluation error, counted per rule; a
//! panic inside the interpreter is caught and counted the same way.

pub mod bind;
pub mod catalog;
pub mod fixtures;
pub mod functions;
pub mod output;
pub mod prefilter;
pub mod reload;
pub mod rules;
pub mod stateful;

use crate::audit::EventView;
use bind::{catch_panic, Bindings, Scope, Symbol};
use cel::common::ast::{Expr, LiteralValue};
use cel::parser::Expression;
use cel::{Context, Env, ExecutionError, Program, Value};
use prefilter::{Names, Prefilter};
use rules::{ExceptionDef, ExceptionValue, LoadError, LoadErrors, Origin, RuleSource, Scalar};
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use rules::Priority;

/// Whether an event stops at the first matching rule (Falco's default) or fires all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Matching {
    First,
    #[default]
    All,
}

/// Event fields a list or macro may not shadow.
const RESERVED: &[&str] = &[
    "kind",
    "apiVersion",
    "level",
    "auditID",
    "stage",
    "requestURI",
    "verb",
    "user",
    "impersonatedUser",
    "authenticationMetadata",
    "sourceIPs",
    "userAgent",
    "objectRef",
    "responseStatus",
    "requestObject",
    "responseObject",
    "requestReceivedTimestamp",
    "stageTimestamp",
    "annotations",
    "timestamp",
    "metadata",
    "cluster",
];

/// Counters of one rule, shared by every thread that evaluates it.
#[derive(Debug, Default)]
pub struct RuleStats {
    pub evaluated: AtomicU64,
    pub matched: AtomicU64,
    /// Conditions that failed on a field the event does not have (means "no match").
    pub missing: AtomicU64,
    /// Conditions that failed for another reason: wrong types, function errors, panics.
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: String,
    pub desc: String,
    pub priority: Priority,
    pub tags: Vec<String>,
    pub enabled: bool,
    pub origin: Origin,
    condition: Program,
    exceptions: Vec<(String, Program)>,
    output: output::Template,
    /// Expressions whose values form the alert's dedup key.
    dedup_key: Vec<Program>,
    /// Rate limit of this rule's alerts.
    pub dedup: stateful::DedupSetting,
    /// Stateful rules: the window their matches go through before an alert.
    pub window: Option<Window>,
    pub stats: RuleStats,
    /// What the rule says about itself (needs, covers, falco, inline fixtures).
    pub meta: rules::RuleMetaDef,
    /// What its condition demands of verb, resource, subresource and stage.
    pub route: prefilter::Route,
    /// The event's top-level fields its condition reads.
    pub reads: std::collections::BTreeSet<String>,
}

impl Rule {
    /// The audit level the rule needs: what it declares, else what its condition reads
    /// (`responseObject` → RequestResponse, `requestObject` → Request, else Metadata).
    pub fn needs(&self) -> crate::audit::Level {
        use crate::audit::Level;
        self.meta.needs.unwrap_or(if self.reads.contains("responseObject") {
            Level::RequestResponse
        } else if self.reads.contains("requestObject") {
            Level::Request
        } else {
            Level::Metadata
        })
    }
}

/// A stateful rule's window and the expressions that feed it.
#[derive(Debug)]
pub struct Window {
    pub policy: stateful::WindowPolicy,
    key: Vec<Program>,
    field: Option<Program>,
    steps: Vec<Program>,
}

/// What a stateful rule's match tells its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Hash of the rule and its window key's values.
    pub key: u64,
    /// `distinct`: hash of the field's value.
    pub value: u64,
    /// `sequence`: bit i set when step i matched.
    pub steps: u32,
}

/// A rule that fired on an event, with its rendered output.
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule: usize,
    pub output: String,
    pub output_fields: serde_json::Map<String, serde_json::Value>,
    /// Hash of the rule and its dedup key's values.
    pub dedup_key: String,
    /// Stateful rules: what the match feeds their window.
    pub observation: Option<Observation>,
}

/// A compiled, immutable rule set; share it behind an `Arc` and swap it whole to reload.
pub struct RuleSet {
    scope: Scope,
    rules: Vec<Rule>,
    prefilter: Prefilter,
    matching: Matching,
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("matching", &self.matching)
            .finish()
    }
}

/// How a condition's evaluation ended, other than true or false.
enum Failure {
    Missing,
    Error(String),
}

impl RuleSet {
    /// Loads and compiles rule files and directories, in order.
    pub fn load(paths: &[PathBuf], matching: Matching) -> Result<RuleSet, LoadErrors> {
        RuleSet::compile(RuleSource::load_paths(paths)?, matching)
    }

    /// Compiles rule text held in memory (tests, fixtures); `name` stands for the file.
    pub fn from_text(name: &str, text: &str, matching: Matching) -> Result<RuleSet, LoadErrors> {
        let mut source = RuleSource::default();
        let mut errors = Vec::new();
        source.apply_text(name, text, &mut errors);
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        RuleSet::compile(source, matching)
    }

    pub fn compile(source: RuleSource, matching: Matching) -> Result<RuleSet, LoadErrors> {
        let mut env = Env::stdlib();
        functions::register(&mut env);
        let env = Arc::new(env);
        let mut errors = Vec::new();
        let mut symbols = HashMap::new();
        symbols.insert("cluster".to_string(), Symbol::Cluster);
        symbols.insert("_top".to_string(), Symbol::Top);

        let mut lists = Vec::new();
        for (name, list) in &source.lists {
            if RESERVED.contains(&name.as_str()) {
                errors.push(item_error(
                    &list.origin,
                    "list",
                    name,
                    "shadows an event field; choose another name",
                ));
                continue;
            }
            symbols.insert(name.clone(), Symbol::List(lists.len()));
            lists.push(bind::list_to_val(&list.items));
        }

        let mut macros = Vec::new();
        let mut macro_names = Vec::new();
        for (name, m) in &source.macros {
            if RESERVED.contains(&name.as_str()) || symbols.contains_key(name) {
                errors.push(item_error(
                    &m.origin,
                    "macro",
                    name,
                    "shadows an event field or a list; choose another name",
                ));
                continue;
            }
            match env.compile(&m.condition) {
                Ok(program) => {
                    symbols.insert(name.clone(), Symbol::Macro(macros.len()));
                    macros.push(program);
                    macro_names.push(name.clone());
                }
                Err(e) => errors.push(cel_error(&m.origin, "macro", name, "condition", &e)),
            }
        }
        if let Some(cycle) = macro_cycle(&macro_names, &macros) {
            let m = &source.macros[&cycle[0]];
            errors.push(item_error(
                &m.origin,
                "macro",
                &cycle[0],
                &format!("refers to itself: {}", cycle.join(" → ")),
            ));
        }

        let scope = Scope {
            env: env.clone(),
            symbols,
            macros,
            lists,
        };
        let names = ScopeNames {
            scope: &scope,
            source: &source,
        };
        let mut rules = Vec::new();
        let mut routes = Vec::new();
        for def in source.rules.values() {
            let what = |e: &str| item_error(&def.origin, "rule", &def.name, e);
            let window_sources = match def.stateful.as_ref().map(stateful::window_sources).transpose() {
                Ok(w) => w,
                Err(e) => {
                    errors.push(what(&e));
                    continue;
                }
            };
            let mut compile_part = |part: &str, src: &str| match env.compile(src) {
                Ok(p) => {
                    for name in unknown_names(&p, &scope) {
                        errors.push(what(&format!(
                            "{part} names `{name}`, which is no event field, macro or list"
                        )));
                    }
                    Some(p)
                }
                Err(e) => {
                    errors.push(cel_error(&def.condition_origin, "rule", &def.name, part, &e));
                    None
                }
            };
            let condition = match compile_part("condition", &def.condition) {
                Some(p) => p,
                None => continue,
            };
            let window = match window_sources {
                None => None,
                Some(w) => {
                    let key: Vec<Program> = w
                        .key
                        .iter()
                        .filter_map(|k| compile_part(&format!("window key `{k}`"), k))
                        .collect();
                    let field = w.field.as_ref().and_then(|f| compile_part("distinct field", f));
                    let steps: Vec<Program> = w
                        .steps
                        .iter()
                        .enumerate()
                        .filter_map(|(i, s)| compile_part(&format!("sequence step {}", i + 1), s))
                        .collect();
                    if key.len() != w.key.len() || steps.len() != w.steps.len() || field.is_none() != w.field.is_none()
                    {
                        continue;
                    }
                    Some(Window {
                        policy: w.policy,
                        key,
                        field,
                        steps,
                    })
                }
            };
            // A sequence rule matches an event that matches any of its steps.
            let condition = match &window {
                Some(w) if !w.steps.is_empty() => {
                    let steps = def.stateful.as_ref().map(sequence_steps).unwrap_or_default();
                    let any = steps.iter().map(|s| format!("({s})")).collect::<Vec<_>>().join(" || ");
                    match env.compile(&format!("({}) && ({any})", def.condition)) {
                        Ok(p) => p,
                        Err(e) => {
                            errors.push(cel_error(&def.condition_origin, "rule", &def.name, "condition", &e));
                            continue;
                        }
                    }
                }
                _ => condition,
            };
            let mut exceptions = Vec::new();
            for exc in &def.exceptions {
                match exception_source(exc, &scope).and_then(|src| env.compile(&src).map_err(|e| e.to_string())) {
                    Ok(p) => exceptions.push((exc.name.clone(), p)),
                    Err(e) => errors.push(what(&format!("exception '{}': {e}", exc.name))),
                }
            }
            let output = match output::Template::compile(&env, &def.output) {
                Ok(t) => t,
                Err(e) => {
                    errors.push(what(&format!("output: {e}")));
                    continue;
                }
            };
            let (dedup, key_sources) = match stateful::dedup_setting(def.dedup.as_ref()) {
                Ok(d) => d,
                Err(e) => {
                    errors.push(what(&format!("dedup: {e}")));
                    continue;
                }
            };
            let mut dedup_key = Vec::new();
            for src in &key_sources {
                match env.compile(src) {
                    Ok(p) => dedup_key.push(p),
                    Err(e) => errors.push(what(&format!("dedup key `{src}`: {e}"))),
                }
            }
            let programs = std::iter::once(&condition)
                .chain(exceptions.iter().map(|(_, p)| p))
                .chain(output.programs())
                .chain(window.iter().flat_map(|w| w.key.iter().chain(&w.field).chain(&w.steps)));
            for program in programs {
                if let Err(e) = check_regexes(program.expression()) {
                    errors.push(what(&e));
                }
            }
            let route = prefilter::analyze(condition.expression(), &names);
            let reads = prefilter::reads(condition.expression(), &names);
            routes.push(def.enabled.then(|| route.clone()));
            rules.push(Rule {
                name: def.name.clone(),
                desc: def.desc.clone(),
                priority: def.priority,
                tags: def.tags.clone(),
                enabled: def.enabled,
                origin: def.origin.clone(),
                condition,
                exceptions,
                output,
                dedup_key,
                dedup,
                window,
                stats: RuleStats::default(),
                meta: def.meta.clone(),
                route,
                reads,
            });
        }
        for (m, name) in scope.macros.iter().zip(&macro_names) {
            if let Err(e) = check_regexes(m.expression()) {
                errors.push(item_error(&source.macros[name].origin, "macro", name, &e));
            }
        }
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let prefilter = Prefilter::new(&routes);
        Ok(RuleSet {
            scope,
            rules,
            prefilter,
            matching,
        })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// Evaluates every rule that can match `view`, in rule order, and renders the firings.
    pub fn evaluate(&self, view: &EventView<'_>, cluster: &str) -> Vec<Firing> {
        let mut candidates = Vec::new();
        self.prefilter.candidates(&view.route_keys(), &mut candidates);
        let mut firings = Vec::new();
        if candidates.iter().all(|w| *w == 0) {
            return firings;
        }
        let bindings = Bindings::new(&self.scope, view, cluster);
        let ctx = bindings.context();
        for index in prefilter::bits(&candidates) {
            let rule = &self.rules[index];
            rule.stats.evaluated.fetch_add(1, Ordering::Relaxed);
            match eval_bool(&rule.condition, &ctx) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(Failure::Missing) => {
                    rule.stats.missing.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Err(Failure::Error(e)) => {
                    rule.stats.errors.fetch_add(1, Ordering::Relaxed);
                    *rule.stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                    continue;
                }
            }
            // An exception that cannot be evaluated does not apply.
            if rule
                .exceptions
                .iter()
                .any(|(_, p)| matches!(eval_bool(p, &ctx), Ok(true)))
            {
                continue;
            }
            rule.stats.matched.fetch_add(1, Ordering::Relaxed);
            let mut firing = Firing {
                rule: index,
                output: String::new(),
                output_fields: Default::default(),
                dedup_key: String::new(),
                observation: rule.window.as_ref().map(|w| observe(&rule.name, w, &ctx)),
            };
            // A stateful rule's match is rendered only if its window fires (`render`).
            if firing.observation.is_none() {
                render(rule, &mut firing, &ctx);
            }
            firings.push(firing);
            if self.matching == Matching::First {
                break;
            }
        }
        firings
    }

    /// Renders the output and dedup key of a firing `evaluate` left unrendered (a stateful
    /// rule's match, once its window fired).
    pub fn render(&self, firing: &mut Firing, view: &EventView<'_>, cluster: &str) {
        if firing.dedup_key.is_empty() {
            let bindings = Bindings::new(&self.scope, view, cluster);
            render(&self.rules[firing.rule], firing, &bindings.context());
        }
    }
}

fn render(rule: &Rule, firing: &mut Firing, ctx: &Context) {
    (firing.output, firing.output_fields) = rule.output.render(ctx);
    firing.dedup_key = key_digest(&rule.name, &rule.dedup_key, ctx);
}

/// The JSON of a key expression's value; `null` when it cannot be evaluated.
fn key_value(program: &Program, ctx: &Context) -> String {
    catch_panic(|| program.execute(ctx))
        .ok()
        .and_then(|r| r.ok())
        .map(|v| output::to_json(&v).to_string())
        .unwrap_or_else(|| "null".into())
}

/// The rule's name and the JSON of each key value (null when absent), hashed.
fn key_digest(rule: &str, key: &[Program], ctx: &Context) -> String {
    let values: Vec<String> = key.iter().map(|p| key_value(p, ctx)).collect();
    let mut parts: Vec<&str> = vec![rule];
    parts.extend(values.iter().map(String::as_str));
    crate::alert::digest(&parts)
}

/// A 64-bit hash of strings, for window state that lives in one process (never stored or sent).
fn hash64<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for p in parts {
        p.hash(&mut h);
    }
    h.finish()
}

/// What a stateful rule's match feeds its window: key, distinct value, steps matched.
fn observe(rule: &str, window: &Window, ctx: &Context) -> Observation {
    let values: Vec<String> = window.key.iter().map(|p| key_value(p, ctx)).collect();
    let key = hash64(std::iter::once(rule).chain(values.iter().map(String::as_str)));
    let value = window
        .field
        .as_ref()
        .map(|f| hash64([key_value(f, ctx).as_str()]))
        .unwrap_or(0);
    let steps = window
        .steps
        .iter()
        .enumerate()
        .filter(|(_, p)| matches!(eval_bool(p, ctx), Ok(true)))
        .fold(0u32, |bits, (i, _)| bits | 1 << i);
    Observation { key, value, steps }
}

fn sequence_steps(def: &rules::StatefulDef) -> Vec<String> {
    match def {
        rules::StatefulDef::Sequence(s) => s.steps.clone(),
        _ => Vec::new(),
    }
}

fn eval_bool(program: &Program, ctx: &Context) -> Result<bool, Failure> {
    match catch_panic(|| program.execute(ctx)) {
        Ok(Ok(Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(Failure::Error(format!(
            "condition gave {:?}, not a bool",
            other.type_of()
        ))),
        Ok(Err(ExecutionError::NoSuchKey(_) | ExecutionError::UndeclaredReference(_))) => Err(Failure::Missing),
        Ok(Err(e)) => Err(Failure::Error(e.to_string())),
        Err(panic) => Err(Failure::Error(format!("the CEL interpreter panicked: {panic}"))),
    }
}

struct ScopeNames<'a> {
    scope: &'a Scope,
    source: &'a RuleSource,
}

impl Names for ScopeNames<'_> {
    fn macro_expr(&self, name: &str) -> Option<&Expression> {
        match self.scope.symbols.get(name) {
            Some(Symbol::Macro(i)) => Some(self.scope.macros[*i].expression()),
            _ => None,
        }
    }
    fn list_strings(&self, name: &str) -> Option<Vec<String>> {
        let list = self.source.lists.get(name)?;
        list.items
            .iter()
            .map(|i| match i {
                Scalar::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Free names of a condition that nothing defines (comprehension variables excluded).
fn unknown_names(program: &Program, scope: &Scope) -> Vec<String> {
    let mut bound = HashSet::new();
    collect_bound(program.expression(), &mut bound);
    let mut names: Vec<String> = program
        .references()
        .variables()
        .into_iter()
        .filter(|v| !bound.contains(*v) && !scope.symbols.contains_key(*v) && !RESERVED.contains(v))
        .map(|v| v.to_string())
        .collect();
    names.sort();
    names
}

fn collect_bound(expr: &Expression, out: &mut HashSet<String>) {
    walk(expr, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            out.insert(c.iter_var.clone());
            out.extend(c.iter_var2.clone());
            out.insert(c.accu_var.clone());
        }
    });
}

fn walk(expr: &Expression, f: &mut dyn FnMut(&Expression)) {
    f(expr);
    match &expr.expr {
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                walk(t, f);
            }
            for a in &call.args {
                walk(a, f);
            }
        }
        Expr::Comprehension(c) => {
            for e in [&c.iter_range, &c.accu_init, &c.loop_cond, &c.loop_step, &c.result] {
                walk(e, f);
            }
        }
        Expr::List(l) => l.elements.iter().for_each(|e| walk(e, f)),
        Expr::Map(m) => {
            for entry in &m.entries {
                if let cel::common::ast::EntryExpr::MapEntry(me) = &entry.expr {
                    walk(&me.key, f);
                    walk(&me.value, f);
                }
            }
        }
        Expr::Select(s) => walk(&s.operand, f),
        _ => {}
    }
}

/// Compiles every literal pattern of `matches` now: a bad regex is a load error, and the
/// pattern is in the cache before the first event.
fn check_regexes(expr: &Expression) -> Result<(), String> {
    let mut result = Ok(());
    walk(expr, &mut |e| {
        if let Expr::Call(call) = &e.expr {
            if call.func_name == "matches" {
                if let Some(Expr::Literal(LiteralValue::String(p))) = call.args.last().map(|a| &a.expr) {
                    if let Err(err) = functions::compiled_regex(p.inner()) {
                        result = Err(format!("regex '{}' does not compile: {err}", p.inner()));
                    }
                }
            }
        }
    });
    result
}

/// Finds a macro that reaches itself through other macros.
fn macro_cycle(names: &[String], programs: &[Program]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = names.iter().enumerate().map(|(i, n)| (n.as_str(), i)).collect();
    let deps: Vec<Vec<usize>> = programs
        .iter()
        .map(|p| {
            p.references()
                .variables()
                .iter()
                .filter_map(|v| index.get(*v).copied())
                .collect()
        })
        .collect();
    fn visit(n: usize, deps: &[Vec<usize>], state: &mut [u8], path: &mut Vec<usize>) -> bool {
        if state[n] == 1 {
            path.push(n);
            return true;
        }
        if state[n] == 2 {
            return false;
        }
        state[n] = 1;
        path.push(n);
        for &d in &deps[n] {
            if visit(d, deps, state, path) {
                return true;
            }
        }
        path.pop();
        state[n] = 2;
        false
    }
    let mut state = vec![0u8; names.len()];
    for start in 0..names.len() {
        let mut path = Vec::new();
        if visit(start, &deps, &mut state, &mut path) {
            let last = *path.last()?;
            let from = path.iter().position(|&n| n == last)?;
            return Some(path[from..].iter().map(|&n| names[n].clone()).collect());
        }
    }
    None
}

/// An exception as one CEL condition: any tuple of values whose every field compares true.
fn exception_source(exc: &ExceptionDef, scope: &Scope) -> Result<String, String> {
    if let Some(condition) = &exc.condition {
        if !exc.fields.is_empty() || !exc.values.is_empty() {
            return Err("has both `condition` and `fields`/`values`".into());
        }
        return Ok(condition.clone());
    }
    if exc.fields.is_empty() {
        return Err("needs `fields` and `values`, or a `condition`".into());
    }
    if !exc.comps.is_empty() && exc.comps.len() != exc.fields.len() {
        return Err(format!("has {} fields but {} comps", exc.fields.len(), exc.comps.len()));
    }
    let mut alternatives = Vec::new();
    for tuple in &exc.values {
        if tuple.len() != exc.fields.len() {
            return Err(format!(
                "a value tuple has {} values for {} fields",
                tuple.len(),
                exc.fields.len()
            ));
        }
        let mut terms = Vec::new();
        for (i, (field, value)) in exc.fields.iter().zip(tuple).enumerate() {
            let comp = exc.comps.get(i).map(String::as_str).unwrap_or("==");
            let value = match value {
                // A string naming a list stands for the list, as in Falco.
                ExceptionValue::One(Scalar::String(s)) if matches!(scope.symbols.get(s), Some(Symbol::List(_))) => {
                    s.clone()
                }
                ExceptionValue::One(v) => cel_literal(v),
                ExceptionValue::Many(vs) => format!("[{}]", vs.iter().map(cel_literal).collect::<Vec<_>>().join(", ")),
            };
            terms.push(match comp {
                "==" | "=" => format!("({field}) == {value}"),
                "!=" => format!("({field}) != {value}"),
                "in" => format!("({field}) in {value}"),
                "startsWith" | "startswith" => format!("({field}).startsWith({value})"),
                "endsWith" | "endswith" => format!("({field}).endsWith({value})"),
                "contains" => format!("({field}).contains({value})"),
                other => {
                    return Err(format!(
                        "comparison `{other}` is not one of ==, !=, in, startsWith, endsWith, contains"
                    ))
                }
            });
        }
        alternatives.push(format!("({})", terms.join(" && ")));
    }
    if alternatives.is_empty() {
        return Ok("false".into());
    }
    Ok(alternatives.join(" || "))
}

fn cel_literal(value: &Scalar) -> String {
    match value {
        Scalar::Bool(b) => b.to_string(),
        Scalar::Int(i) => i.to_string(),
        Scalar::Float(f) => format!("{f:?}"),
        Scalar::String(s) => serde_json::to_string(s).unwrap_or_default(),
    }
}

fn item_error(origin: &Origin, kind: &str, name: &str, message: &str) -> LoadError {
    LoadError {
        origin: origin.clone(),
        item: format!("{kind} '{name}'"),
        message: message.to_string(),
    }
}

fn cel_error(origin: &Origin, kind: &str, name: &str, part: &str, e: &cel::ParseErrors) -> LoadError {
    let messages: Vec<String> = e
        .errors
        .iter()
        .map(|pe| {
            format!(
                "{part}: {} (line {}, column {} of the expression)",
                pe.msg,
                pe.pos.0,
                pe.pos.1 + 1
            )
        })
        .collect();
    item_error(origin, kind, name, &messages.join("; "))
}

#[cfg(test)]
mod tests;

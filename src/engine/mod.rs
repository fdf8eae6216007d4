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
mod budget;
mod compile;
pub use compile::MAX_EXPR_DEPTH;
pub mod compiled;
pub mod functions;
pub mod json;
pub mod net;
pub mod output;
pub mod prefilter;
pub mod rules;
pub mod stateful;

use crate::audit::EventView;
use crate::ids::Digester;
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
use std::time::Duration;

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
    /// Evaluations the compiled path handed to the interpreter (a case it does not model).
    pub interpreted: AtomicU64,
    /// Nanoseconds spent on the rule (condition, exceptions, observation, rendering), counted
    /// only while [`RuleSet::profile`] is on. Work the rule shares with others (a macro, a
    /// parsed request body) counts for the first rule that needs it.
    pub nanos: AtomicU64,
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
    /// The lists it `requires` that are empty (comma-separated): while there are any, the rule
    /// is quiet (never evaluated).
    pub dormant: Option<String>,
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
    /// The audit level the rule needs for requests with this verb: a patch's body is a patch,
    /// so a rule that reads `responseObject` (the `written_object` macro does, for patches)
    /// judges a patch on it and needs RequestResponse there; other verbs need [`Rule::needs`].
    pub fn needs_for(&self, verb: &str) -> crate::audit::Level {
        use crate::audit::Level;
        if verb == "patch" && self.reads.contains("responseObject") {
            self.needs().max(Level::RequestResponse)
        } else {
            self.needs()
        }
    }

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
    /// The engine's own rule, [`DEGRADED`]: its firings say that a rule could not evaluate an
    /// event. Its index is `rules.len()` (see [`RuleSet::rule`]).
    degraded: Rule,
    prefilter: Prefilter,
    matching: Matching,
    /// Every condition and macro lowered to native operations (the interpreter stays the
    /// reference; see [`compiled`]).
    compiled: compiled::Compiled,
    /// Whether each rule's time is measured ([`RuleStats::nanos`]).
    profiling: bool,
}

/// What one rule made of an event.
enum Fired {
    No,
    Yes(Firing),
    /// It could not evaluate the event: the [`DEGRADED`] firing saying so.
    Degraded(Firing),
}

/// The name of the engine's own rule: a rule could not evaluate an event (a wrong type, a
/// failing function, a value nested too deep, the event's evaluation budget spent), so its
/// verdict on that event is unknown. Rate-limited per cluster and failing rule like any alert.
pub const DEGRADED: &str = "Detection degraded";

/// The engine's own rule, as alerts and rate limits see it.
fn degraded_rule(env: &Env) -> Rule {
    Rule {
        name: DEGRADED.into(),
        desc: "A rule could not evaluate an event: its verdict on that event is unknown.".into(),
        priority: Priority::Error,
        tags: vec!["kaudit".into(), "detection_degraded".into()],
        enabled: true,
        dormant: None,
        origin: rules::Origin {
            file: "(built in)".into(),
            line: 0,
            column: 0,
        },
        condition: env.compile("false").expect("`false` compiles"),
        exceptions: Vec::new(),
        output: output::Template::compile(env, DEGRADED).expect("a literal template compiles"),
        dedup_key: Vec::new(),
        dedup: stateful::DedupSetting::Policy(stateful::DedupPolicy {
            window: std::time::Duration::from_secs(600),
            burst: std::num::NonZeroU32::MIN,
        }),
        window: None,
        stats: RuleStats::default(),
        meta: rules::RuleMetaDef::default(),
        route: prefilter::Route::any(),
        reads: Default::default(),
    }
}

impl std::fmt::Debug for RuleSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .field("matching", &self.matching)
            .finish()
    }
}

/// Which evaluation path [`RuleSet::verdicts`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalPath {
    Compiled,
    Interpreted,
}

/// What a rule's condition said of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Match,
    NoMatch,
    /// It read a field the event does not have (no match, counted apart).
    Missing,
    Error,
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

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule of a firing: one of [`RuleSet::rules`], or the engine's own [`DEGRADED`] rule.
    pub fn rule(&self, index: usize) -> &Rule {
        self.rules.get(index).unwrap_or(&self.degraded)
    }

    pub fn matching(&self) -> Matching {
        self.matching
    }

    /// Measures the time each rule takes from now on (two clock reads per rule evaluated).
    pub fn profile(&mut self) {
        self.profiling = true;
    }

    /// Evaluates every rule that can match `view`, in rule order, and renders the firings.
    pub fn evaluate(&self, view: &EventView<'_>, cluster: &str) -> Vec<Firing> {
        self.evaluate_within(view, cluster, None)
    }

    /// [`RuleSet::evaluate`] with a budget: once the event's evaluation has taken `budget` of
    /// this thread's CPU time ([`budget`]), the rules not yet evaluated are skipped (checked between rules) and a [`DEGRADED`] firing
    /// names them. A rule that cannot evaluate the event also yields a [`DEGRADED`] firing.
    pub fn evaluate_within(&self, view: &EventView<'_>, cluster: &str, budget: Option<Duration>) -> Vec<Firing> {
        // Read the clocks only when there is a budget to hold against them.
        let budget = budget.map(budget::Budget::start);
        self.with_frame(view, cluster, |frame| {
            let mut candidates = Vec::new();
            self.prefilter.candidates(&frame.route_keys(), &mut candidates);
            if candidates.iter().all(|w| *w == 0) {
                return Vec::new();
            }
            self.fire_all(frame, view, cluster, budget, &candidates)
        })
    }

    /// Runs `f` on the compiled path's frame for an event, in the thread's arena.
    fn with_frame<T>(&self, view: &EventView<'_>, cluster: &str, f: impl FnOnce(&compiled::Frame<'_>) -> T) -> T {
        compiled::with_arena(|arena| f(&compiled::Frame::new(&self.compiled, &self.scope, view, cluster, arena)))
    }

    /// The candidate rules of [`RuleSet::evaluate_within`] on one event, in rule order.
    fn fire_all(
        &self,
        frame: &compiled::Frame<'_>,
        view: &EventView<'_>,
        cluster: &str,
        budget: Option<budget::Budget>,
        candidates: &[u64],
    ) -> Vec<Firing> {
        let mut firings = Vec::new();
        let mut pending = prefilter::bits(candidates).peekable();
        let mut first = true;
        while let Some(index) = pending.next() {
            // The budget is looked at between rules (the first always runs).
            if !std::mem::take(&mut first) && budget.as_ref().is_some_and(budget::Budget::spent) {
                let skipped: Vec<&str> = std::iter::once(index)
                    .chain(pending.by_ref())
                    .map(|i| self.rules[i].name.as_str())
                    .collect();
                let limit = budget.as_ref().map(budget::Budget::limit).unwrap_or_default();
                firings.push(self.over_budget(view, cluster, limit, &skipped));
                break;
            }
            let rule = &self.rules[index];
            rule.stats.evaluated.fetch_add(1, Ordering::Relaxed);
            let started = self.profiling.then(std::time::Instant::now);
            let fired = self.fire(frame, index, view, cluster);
            if let Some(started) = started {
                let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                rule.stats.nanos.fetch_add(nanos, Ordering::Relaxed);
            }
            match fired {
                Fired::No => {}
                Fired::Degraded(firing) => firings.push(firing),
                Fired::Yes(firing) => {
                    firings.push(firing);
                    if self.matching == Matching::First {
                        break;
                    }
                }
            }
        }
        firings
    }

    /// Rule `index` on the frame's event: its condition, its exceptions, then its observation
    /// (a stateful rule) or its rendered output.
    fn fire(&self, frame: &compiled::Frame<'_>, index: usize, view: &EventView<'_>, cluster: &str) -> Fired {
        let rule = &self.rules[index];
        match self.verdict(frame, index) {
            Ok(true) => {}
            Ok(false) => return Fired::No,
            Err(Failure::Missing) => {
                rule.stats.missing.fetch_add(1, Ordering::Relaxed);
                return Fired::No;
            }
            Err(Failure::Error(e)) => {
                rule.stats.errors.fetch_add(1, Ordering::Relaxed);
                let firing = self.degraded_firing(view, cluster, &rule.name, &e);
                *rule.stats.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
                return Fired::Degraded(firing);
            }
        }
        // An exception that cannot be evaluated does not apply.
        if !rule.exceptions.is_empty() {
            let ctx = frame.bindings().context();
            if rule
                .exceptions
                .iter()
                .any(|(_, p)| matches!(eval_bool(p, &ctx), Ok(true)))
            {
                return Fired::No;
            }
        }
        rule.stats.matched.fetch_add(1, Ordering::Relaxed);
        let mut firing = Firing {
            rule: index,
            output: String::new(),
            output_fields: Default::default(),
            dedup_key: String::new(),
            observation: rule.window.as_ref().map(|w| self.observe(index, w, frame)),
        };
        // A stateful rule's match is rendered only if its window fires (`render`).
        if firing.observation.is_none() {
            self.render_in(&mut firing, frame);
        }
        Fired::Yes(firing)
    }

    /// Rule `index`'s condition on the frame's event: the compiled path's answer, or the
    /// interpreter's where the compiled path defers to it.
    fn verdict(&self, frame: &compiled::Frame<'_>, index: usize) -> Result<bool, Failure> {
        bind::take_unusable();
        let outcome = catch_panic(|| frame.condition(index))
            .unwrap_or_else(|panic| compiled::Outcome::Error(format!("the compiled evaluation panicked: {panic}")));
        let result = match outcome {
            compiled::Outcome::Bool(b) => Ok(b),
            compiled::Outcome::Missing => Err(Failure::Missing),
            compiled::Outcome::Error(e) => Err(Failure::Error(e)),
            compiled::Outcome::Defer => {
                let rule = &self.rules[index];
                rule.stats.interpreted.fetch_add(1, Ordering::Relaxed);
                // What the compiled path read before deferring still counts.
                return execute_bool(&rule.condition, &frame.bindings().context());
            }
        };
        unusable_checked(result)
    }

    /// Per rule, in order: whether the prefilter leaves it as a candidate for an event. A rule
    /// it leaves out demands a key the event has another value for, or lacks: it cannot match
    /// (the differential tests hold it to that). Whether it would have failed on another,
    /// malformed part of the event is not asked: CEL's `&&` is commutative over errors
    /// (`error && false` is false), though the interpreter answers an error there.
    pub fn candidates(&self, view: &EventView<'_>) -> Vec<bool> {
        let mut set = Vec::new();
        self.with_frame(view, "", |frame| {
            self.prefilter.candidates(&frame.route_keys(), &mut set)
        });
        (0..self.rules.len())
            .map(|i| set[i / 64] & (1 << (i % 64)) != 0)
            .collect()
    }

    /// What every rule's condition says of an event, the prefilter aside, rules in order:
    /// through the compiled path (as [`RuleSet::evaluate`] does) or through the interpreter
    /// alone, the reference. The differential tests hold the two to the same answers.
    pub fn verdicts(&self, view: &EventView<'_>, cluster: &str, path: EvalPath) -> Vec<Verdict> {
        let verdict = |r: Result<bool, Failure>| match r {
            Ok(true) => Verdict::Match,
            Ok(false) => Verdict::NoMatch,
            Err(Failure::Missing) => Verdict::Missing,
            Err(Failure::Error(_)) => Verdict::Error,
        };
        match path {
            EvalPath::Compiled => self.with_frame(view, cluster, |frame| {
                (0..self.rules.len()).map(|i| verdict(self.verdict(frame, i))).collect()
            }),
            EvalPath::Interpreted => {
                let bindings = Bindings::new(&self.scope, view, cluster);
                let ctx = bindings.context();
                self.rules
                    .iter()
                    .map(|r| verdict(eval_bool(&r.condition, &ctx)))
                    .collect()
            }
        }
    }

    /// What the engine derived from rule `index`: the prefilter's keys, the fields read, the
    /// level needed, the compiled coverage (`kaudit rules lint --explain`).
    pub fn explain(&self, index: usize) -> String {
        let rule = &self.rules[index];
        let mut out = format!("rule '{}' ({}:{})\n", rule.name, rule.origin.file, rule.origin.line);
        for (dim, allowed) in prefilter::DIMENSIONS.iter().zip(&rule.route.0) {
            let shown = match allowed {
                prefilter::Allowed::Any => "any".to_string(),
                prefilter::Allowed::Only(v) if v.is_empty() => "none (never matches)".to_string(),
                prefilter::Allowed::Only(v) => v
                    .iter()
                    .map(|v| if v.is_empty() { "(absent)" } else { v.as_str() })
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            out.push_str(&format!("  prefilter {dim}: {shown}\n"));
        }
        let reads: Vec<&str> = rule.reads.iter().map(String::as_str).collect();
        out.push_str(&format!("  reads: {}\n  needs: {:?}\n", reads.join(", "), rule.needs()));
        out.push_str(&match self.interpreted_parts(index) {
            0 => "  evaluation: compiled (the interpreter only where an event needs it)\n".to_string(),
            n => format!("  evaluation: compiled, {n} part(s) in the interpreter\n"),
        });
        out
    }

    /// How many parts of rule `index`'s condition the compiled path leaves to the interpreter.
    pub fn interpreted_parts(&self, index: usize) -> usize {
        self.compiled.conditions.get(index).map_or(0, |n| n.interpreted_parts())
    }

    /// The [`DEGRADED`] firing for a rule that could not evaluate this event.
    fn degraded_firing(&self, view: &EventView<'_>, cluster: &str, rule: &str, error: &str) -> Firing {
        self.degraded.stats.matched.fetch_add(1, Ordering::Relaxed);
        let error: String = error.chars().take(500).collect();
        let audit_id = view.audit_id();
        let mut output_fields = serde_json::Map::new();
        output_fields.insert("kaudit.rule".into(), rule.into());
        output_fields.insert("kaudit.error".into(), error.clone().into());
        output_fields.insert("ka.auditid".into(), audit_id.as_ref().into());
        output_fields.insert(
            "ka.verb".into(),
            view.str("verb").map(|v| v.into_owned()).unwrap_or_default().into(),
        );
        Firing {
            rule: self.rules.len(),
            output: format!(
                "Rule '{rule}' could not evaluate an event; its verdict is unknown (cluster={cluster} audit_id={audit_id} error={error})"
            ),
            output_fields,
            dedup_key: crate::ids::digest(&[DEGRADED, cluster, rule]),
            observation: None,
        }
    }

    /// The [`DEGRADED`] firing for an event whose budget ran out before `skipped` were evaluated.
    fn over_budget(&self, view: &EventView<'_>, cluster: &str, budget: Duration, skipped: &[&str]) -> Firing {
        let shown: Vec<&str> = skipped.iter().take(20).copied().collect();
        let more = skipped.len() - shown.len();
        let error = format!(
            "the event's evaluation budget of {budget:?} was spent; {} rules not evaluated: {}{}",
            skipped.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        let mut firing = self.degraded_firing(view, cluster, "(evaluation budget)", &error);
        firing
            .output_fields
            .insert("kaudit.skipped_rules".into(), skipped.to_vec().into());
        firing
    }

    /// Renders the output and dedup key of a firing `evaluate` left unrendered (a stateful
    /// rule's match, once its window fired).
    pub fn render(&self, firing: &mut Firing, view: &EventView<'_>, cluster: &str) {
        if firing.dedup_key.is_empty() {
            self.with_frame(view, cluster, |frame| self.render_in(firing, frame));
        }
    }

    /// Renders a firing's output and dedup key: each placeholder and key expression on the
    /// compiled path, in the interpreter where that defers.
    fn render_in(&self, firing: &mut Firing, frame: &compiled::Frame<'_>) {
        let rule = self.rule(firing.rule);
        let value = |node: Option<&compiled::Node>, program: &Program| {
            node.and_then(|n| frame.json(n))
                .unwrap_or_else(|| output::value(program, &frame.bindings().context()))
        };
        let outputs = self.compiled.outputs.get(firing.rule);
        (firing.output, firing.output_fields) = rule
            .output
            .render_with(|i, program| value(outputs.and_then(|o| o.get(i)), program));
        let keys = self.compiled.keys.get(firing.rule);
        let mut digest = Digester::default();
        digest.part(rule.name.as_bytes());
        let mut text = Vec::new();
        for (i, program) in rule.dedup_key.iter().enumerate() {
            key_text(frame, keys.and_then(|k| k.get(i)), program, &mut text);
            digest.part(&text);
        }
        firing.dedup_key = digest.finish();
    }

    /// What a stateful rule's match feeds its window: key, distinct value, steps matched (each
    /// expression on the compiled path, in the interpreter where that defers).
    fn observe(&self, index: usize, window: &Window, frame: &compiled::Frame<'_>) -> Observation {
        let rule = &self.rules[index];
        let nodes = self.compiled.windows.get(index);
        let node = |i: usize| nodes.and_then(|n| n.get(i));
        // Each value's JSON text, written into one buffer and hashed in place.
        let mut text = Vec::new();
        let mut key = Hash64::default();
        key.part(rule.name.as_bytes());
        for (i, program) in window.key.iter().enumerate() {
            key_text(frame, node(i), program, &mut text);
            key.part(&text);
        }
        let n = window.key.len();
        let value = window
            .field
            .as_ref()
            .map(|f| {
                key_text(frame, node(n), f, &mut text);
                let mut value = Hash64::default();
                value.part(&text);
                value.finish()
            })
            .unwrap_or(0);
        let key = key.finish();
        let first_step = n + usize::from(window.field.is_some());
        let steps = window
            .steps
            .iter()
            .enumerate()
            .filter(|(i, p)| match node(first_step + i).and_then(|n| frame.holds(n)) {
                Some(holds) => holds,
                None => matches!(eval_bool(p, &frame.bindings().context()), Ok(true)),
            })
            .fold(0u32, |bits, (i, _)| bits | 1 << i);
        Observation { key, value, steps }
    }

    /// The rendered output, output fields and dedup key of every rule for an event, as if each
    /// had matched, on either path (for the differential tests).
    pub fn renders(&self, view: &EventView<'_>, cluster: &str, path: EvalPath) -> Vec<Firing> {
        self.with_frame(view, cluster, |frame| self.renders_in(frame, path))
    }

    fn renders_in(&self, frame: &compiled::Frame<'_>, path: EvalPath) -> Vec<Firing> {
        (0..self.rules.len())
            .map(|rule| {
                let mut firing = Firing {
                    rule,
                    output: String::new(),
                    output_fields: Default::default(),
                    dedup_key: String::new(),
                    observation: None,
                };
                match path {
                    EvalPath::Compiled => self.render_in(&mut firing, frame),
                    EvalPath::Interpreted => {
                        let rule = &self.rules[rule];
                        let ctx = frame.bindings().context();
                        (firing.output, firing.output_fields) = rule.output.render(&ctx);
                        let values: Vec<String> = rule
                            .dedup_key
                            .iter()
                            .map(|p| output::value(p, &ctx).to_string())
                            .collect();
                        let parts: Vec<&str> = std::iter::once(rule.name.as_str())
                            .chain(values.iter().map(String::as_str))
                            .collect();
                        firing.dedup_key = crate::ids::digest(&parts);
                    }
                }
                firing
            })
            .collect()
    }
}

/// A key expression's value as JSON text (`null` when absent), written over `out`: on the
/// compiled path where it answers, else in the interpreter.
fn key_text(frame: &compiled::Frame<'_>, node: Option<&compiled::Node>, program: &Program, out: &mut Vec<u8>) {
    out.clear();
    if !node.is_some_and(|n| frame.json_text(n, out)) {
        out.clear();
        let value = output::value(program, &frame.bindings().context());
        serde_json::to_writer(&mut *out, &value).expect("a JSON value writes to memory");
    }
}

/// A 64-bit hash of strings for window state: each part hashed as a `str` hashes (its bytes,
/// then `0xff`), by SipHash-1-3 with zero keys. Checkpoints and hand-overs between detectors
/// carry these keys, so the algorithm is the specified one of the `siphasher` crate, not
/// `DefaultHasher`'s, which Rust may change in any release: detectors built by different Rust
/// releases (a rolling upgrade) find each other's windows. The two gave the same hashes when the
/// change was made, so checkpoints written before it are read as they were.
#[derive(Default)]
struct Hash64(siphasher::sip::SipHasher13);

impl Hash64 {
    fn part(&mut self, text: &[u8]) {
        use std::hash::Hasher;
        self.0.write(text);
        self.0.write_u8(0xff);
    }
    fn finish(self) -> u64 {
        use std::hash::Hasher;
        self.0.finish()
    }
}

fn eval_bool(program: &Program, ctx: &Context) -> Result<bool, Failure> {
    bind::take_unusable();
    execute_bool(program, ctx)
}

/// Runs a condition in the interpreter; unusable values read before it (by the compiled path
/// that deferred to it) still count.
fn execute_bool(program: &Program, ctx: &Context) -> Result<bool, Failure> {
    let result = match catch_panic(|| program.execute(ctx)) {
        Ok(Ok(Value::Bool(b))) => Ok(b),
        Ok(Ok(other)) => Err(Failure::Error(format!(
            "condition gave {:?}, not a bool",
            other.type_of()
        ))),
        Ok(Err(ExecutionError::NoSuchKey(_) | ExecutionError::UndeclaredReference(_))) => Err(Failure::Missing),
        Ok(Err(e)) => Err(Failure::Error(e.to_string())),
        Err(panic) => Err(Failure::Error(format!("the CEL interpreter panicked: {panic}"))),
    };
    unusable_checked(result)
}

/// An unusable value was read (too deep, a failed macro): only a match is trusted, as "no
/// match" or "missing" may be that value's doing.
fn unusable_checked(result: Result<bool, Failure>) -> Result<bool, Failure> {
    match bind::take_unusable() {
        Some(unusable) if !matches!(result, Ok(true)) => Err(Failure::Error(unusable.to_string())),
        _ => result,
    }
}

#[cfg(test)]
mod tests;

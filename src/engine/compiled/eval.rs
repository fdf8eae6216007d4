//! Evaluation of compiled conditions against one event, with the work shared across rules.

mod native;
mod values;

use super::{Cmp, Collect, Compiled, LitList, Loop, Node, Pattern, Quantifier, Root};
use crate::audit::EventView;
use crate::engine::bind::{catch_panic, Bindings, Scope, OBJECT_FIELDS};
use crate::engine::functions::compiled_regex;
use crate::engine::json::{self, EMPTY_OBJECT, J};
use crate::engine::prefilter::{Key, RouteKeys};
use bumpalo::Bump;
use cel::common::types::CelBool;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::rc::Rc;
use values::*;

/// A value during evaluation, borrowed from the event or the rule set where it can be.
#[derive(Debug, Clone)]
enum V<'r> {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Cow<'r, str>),
    /// An array, an object, or a value nested too deep.
    Json(&'r J<'r>),
    List(&'r LitList),
    /// A Falco field's values.
    Strs(&'r [String]),
    /// Parts of the event gathered into a list (a pod's containers).
    Refs(Rc<Vec<&'r J<'r>>>),
    /// A list built by `map` or `filter`.
    Items(Rc<Vec<V<'r>>>),
    /// An optional: a part of the event, or none.
    Opt(Option<&'r J<'r>>),
    /// A value the interpreter returned that the compiled path does not read.
    Opaque,
}

/// Why an evaluation did not give a value.
#[derive(Debug, Clone)]
enum E {
    /// A field the event does not have (the interpreter's `NoSuchKey`/undeclared reference).
    Missing,
    /// Any other evaluation error.
    Other(String),
    /// A case the compiled path does not model: the interpreter evaluates the rule.
    Defer,
}

type R<'r> = Result<V<'r>, E>;

/// How a compiled condition ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Bool(bool),
    Missing,
    Error(String),
    /// Evaluate the rule in the interpreter.
    Defer,
}

/// A macro's value for this event.
#[derive(Debug, Clone, Copy)]
enum MacroOut {
    Bool(bool),
    Missing,
    Defer,
    /// One of the event's top-level fields, whole (`written_object` is `requestObject` or
    /// `responseObject`): by its index among the event's fields.
    Tree(usize),
    /// The empty object an absent object-valued field reads as.
    Empty,
    /// Any other value: evaluated where it is used.
    Inline,
}

/// One event as the compiled conditions see it; every cache lives as long as the event's
/// evaluation, shared by all its rules, in the event's arena ([`with_arena`]).
pub struct Frame<'e> {
    compiled: &'e Compiled,
    arena: &'e Bump,
    scope: &'e Scope,
    view: &'e EventView<'e>,
    cluster: &'e str,
    /// A top-level key holds a dot: a dotted path could name it, so the interpreter decides.
    dotted: bool,
    /// Per field name of the rule set, its index among the event's fields.
    slots: &'e [OnceCell<Option<usize>>],
    /// Per field of the event, its tree (`None` if it is not JSON).
    trees: &'e [OnceCell<Option<J<'e>>>],
    macros: &'e [OnceCell<MacroOut>],
    memos: &'e [OnceCell<MacroOut>],
    /// Per Falco field root, `_top` gathered (`None` for a field's root, read in place).
    roots: Vec<OnceCell<Result<Option<J<'e>>, E>>>,
    falco: Vec<OnceCell<Result<Vec<String>, E>>>,
    bindings: OnceCell<Bindings<'e>>,
    /// Large objects' members by key ([`Frame::member`]).
    members: std::cell::RefCell<Members>,
}

/// Per object of more than [`Members::FEW`] entries that a condition looked into, where its
/// entries are and, by a per-process-seeded hash of each key ([`Members::hash`]), the index of
/// its last entry. A ConfigMap's `data` can hold tens of thousands of keys and a rule can index
/// it once per key (`data.exists(k, data[k]...)`): scanning the entries each time made one event
/// cost seconds.
#[derive(Default)]
struct Members {
    objects: Vec<((usize, usize), HashMap<u64, usize>)>,
}

impl Members {
    const FEW: usize = 32;

    /// The keys are the sender's: seeded once per process, their hashes cannot be chosen.
    fn hash(key: &str) -> u64 {
        use std::hash::BuildHasher;
        static SEED: std::sync::LazyLock<std::collections::hash_map::RandomState> =
            std::sync::LazyLock::new(Default::default);
        SEED.hash_one(key)
    }
}

fn cells<T>(n: usize) -> Vec<OnceCell<T>> {
    (0..n).map(|_| OnceCell::new()).collect()
}

/// Cells in the arena, for values with nothing to drop (the arena drops nothing).
fn arena_cells<T: Copy>(arena: &Bump, n: usize) -> &[OnceCell<T>] {
    arena.alloc_slice_fill_with(n, |_| OnceCell::new())
}

/// Runs `f` with this thread's arena for one event's evaluation, emptied after it (a fresh
/// arena where the thread's is in use). The arena keeps its largest chunk for the next event,
/// but not one past [`ARENA_KEPT`].
pub fn with_arena<T>(f: impl FnOnce(&Bump) -> T) -> T {
    thread_local! {
        static ARENA: std::cell::RefCell<Bump> = std::cell::RefCell::new(Bump::new());
    }
    ARENA.with(|cell| match cell.try_borrow_mut() {
        Ok(mut arena) => {
            let out = f(&arena);
            if arena.allocated_bytes() > ARENA_KEPT {
                *arena = Bump::new();
            } else {
                arena.reset();
            }
            out
        }
        Err(_) => f(&Bump::new()),
    })
}

/// The most arena memory a thread keeps between events (a larger event's is given back).
const ARENA_KEPT: usize = 1 << 20;

impl<'e> Frame<'e> {
    pub fn new(
        compiled: &'e Compiled,
        scope: &'e Scope,
        view: &'e EventView<'e>,
        cluster: &'e str,
        arena: &'e Bump,
    ) -> Frame<'e> {
        let n = view.fields().count();
        Frame {
            compiled,
            arena,
            scope,
            view,
            cluster,
            dotted: view.fields().any(|(k, _)| k.contains('.')),
            slots: arena_cells(arena, compiled.fields.len()),
            trees: arena_cells(arena, n),
            macros: arena_cells(arena, compiled.macros.len()),
            memos: arena_cells(arena, compiled.memos.len()),
            roots: cells(compiled.roots.len()),
            falco: cells(compiled.falco.len()),
            bindings: OnceCell::new(),
            members: Default::default(),
        }
    }

    /// The interpreter's view of this event (made on first use).
    pub fn bindings(&self) -> &Bindings<'e> {
        self.bindings
            .get_or_init(|| Bindings::new(self.scope, self.view, self.cluster))
    }

    /// Evaluates the condition of rule `index`.
    pub fn condition(&self, index: usize) -> Outcome {
        match self.eval(&self.compiled.conditions[index], &mut Vec::new()) {
            Ok(V::Bool(b)) => Outcome::Bool(b),
            Ok(_) | Err(E::Defer) => Outcome::Defer,
            Err(E::Missing) => Outcome::Missing,
            Err(E::Other(m)) => Outcome::Error(m),
        }
    }

    /// A placeholder's or key expression's value as JSON (`null` when it cannot be had), as
    /// the interpreter would render it; `None` where the interpreter must.
    pub fn json(&self, node: &Node) -> Option<serde_json::Value> {
        match self.eval(node, &mut Vec::new()) {
            Ok(v) => to_json(&v),
            Err(E::Missing | E::Other(_)) => Some(serde_json::Value::Null),
            Err(E::Defer) => None,
        }
    }

    /// [`Frame::json`] as the JSON text `serde_json` writes for it, appended to `out`, with no
    /// JSON value built for a scalar (a dedup or window key is hashed, never kept); `false`
    /// (and `out` untouched) where the interpreter must say.
    pub fn json_text(&self, node: &Node, out: &mut Vec<u8>) -> bool {
        use std::io::Write as _;
        match self.eval(node, &mut Vec::new()) {
            Ok(V::Str(s)) => serde_json::to_writer(&mut *out, s.as_ref()).is_ok(),
            Ok(V::Int(i)) => write!(out, "{i}").is_ok(),
            Ok(V::UInt(u)) => write!(out, "{u}").is_ok(),
            Ok(V::Bool(b)) => write!(out, "{b}").is_ok(),
            Ok(V::Null) | Err(E::Missing | E::Other(_)) => write!(out, "null").is_ok(),
            Ok(v) => match to_json(&v) {
                Some(json) => serde_json::to_writer(&mut *out, &json).is_ok(),
                None => false,
            },
            Err(E::Defer) => false,
        }
    }

    /// Whether a sequence step holds (an error is "no"); `None` where the interpreter must say.
    pub fn holds(&self, node: &Node) -> Option<bool> {
        match self.eval(node, &mut Vec::new()) {
            Ok(V::Bool(b)) => Some(b),
            Err(E::Missing | E::Other(_)) => Some(false),
            Ok(_) | Err(E::Defer) => None,
        }
    }

    /// The prefilter's keys of this event, read from the trees the conditions read (a field is
    /// parsed once per event, by whichever reads it first), so they say what the conditions
    /// see: a member repeated in an object is its last value, a `null` one is absent.
    pub fn route_keys(&self) -> RouteKeys<'e> {
        // A key with a dot could be what a dotted path names: the conditions decide.
        if self.dotted {
            return RouteKeys::default();
        }
        // A top-level field: `Ok(None)` when the event has none; `Err` when it is no JSON.
        let top = |name: &str| match self.view.fields().position(|(k, _)| k == name) {
            None => Ok(None),
            Some(i) => self.tree(i).copied().map(Some).ok_or(()),
        };
        // A member of an object field (an absent field reads as `{}`); `Err` for another shape.
        let member = |field: &str, name: &str| match top(field)? {
            None => Ok(None),
            Some(obj @ J::Obj(_)) => Ok(obj.get(name).copied()),
            Some(_) => Err(()),
        };
        let text = |j: Result<Option<J<'e>>, ()>| match j {
            Ok(None) => Key::Absent,
            Ok(Some(J::Str(s))) => Key::Is(Cow::Borrowed(s)),
            _ => Key::Unknown,
        };
        RouteKeys {
            verb: text(top("verb")),
            resource: text(member("objectRef", "resource")),
            subresource: text(member("objectRef", "subresource")),
            stage: text(top("stage")),
            code: match member("responseStatus", "code") {
                Ok(None) => Key::Absent,
                Ok(Some(J::Int(code))) => Key::Is(Cow::Borrowed(
                    bumpalo::format!(in self.arena, "{}", code).into_bump_str(),
                )),
                _ => Key::Unknown,
            },
            user: text(member("user", "username")),
            impersonated: match member("impersonatedUser", "username") {
                Ok(None) => Key::Absent,
                Ok(Some(_)) => Key::Is(Cow::Borrowed(Key::PRESENT)),
                Err(()) => Key::Unknown,
            },
        }
    }

    fn tree(&self, index: usize) -> Option<&J<'e>> {
        self.trees[index]
            .get_or_init(|| {
                let raw = self.view.fields().nth(index)?.1;
                json::parse(raw, self.arena).ok()
            })
            .as_ref()
    }

    /// A top-level field as the interpreter resolves a name: the first field of that name; an
    /// absent object-valued field is `{}`.
    fn field_by_name(&self, name: &str) -> Result<&J<'e>, E> {
        match self.view.fields().position(|(k, _)| k == name) {
            Some(i) => self.tree(i).ok_or(E::Missing),
            None if OBJECT_FIELDS.contains(&name) => Ok(&EMPTY_OBJECT),
            None => Err(E::Missing),
        }
    }

    fn field(&self, id: usize) -> R<'_> {
        if self.dotted {
            return Err(E::Defer);
        }
        let name = &self.compiled.fields[id];
        let slot = *self.slots[id].get_or_init(|| self.view.fields().position(|(k, _)| k == name));
        match slot {
            Some(i) => self.tree(i).map(from_j).ok_or(E::Missing),
            None if OBJECT_FIELDS.contains(&name.as_str()) => Ok(V::Json(&EMPTY_OBJECT)),
            None => Err(E::Missing),
        }
    }

    fn macro_value<'r>(&'r self, index: usize) -> R<'r> {
        let out = *self.macros[index].get_or_init(|| match self.eval(&self.compiled.macros[index], &mut Vec::new()) {
            Ok(V::Bool(b)) => MacroOut::Bool(b),
            Ok(V::Json(j)) if std::ptr::eq(j, &EMPTY_OBJECT) => MacroOut::Empty,
            Ok(V::Json(j)) => self
                .trees
                .iter()
                .position(|t| matches!(t.get(), Some(Some(tree)) if std::ptr::eq(tree, j)))
                .map_or(MacroOut::Inline, MacroOut::Tree),
            Ok(_) => MacroOut::Inline,
            Err(E::Missing) => MacroOut::Missing,
            // The interpreter keeps a failed macro as an unusable value: it decides.
            Err(E::Other(_)) => MacroOut::Defer,
            Err(E::Defer) => match self.bindings().macro_value(index) {
                None => MacroOut::Missing,
                Some(v) => match v.downcast_ref::<CelBool>() {
                    Some(b) => MacroOut::Bool(*b.inner()),
                    None => MacroOut::Defer,
                },
            },
        });
        match out {
            MacroOut::Bool(b) => Ok(V::Bool(b)),
            MacroOut::Missing => Err(E::Missing),
            MacroOut::Defer => Err(E::Defer),
            MacroOut::Tree(i) => self.tree(i).map(from_j).ok_or(E::Missing),
            MacroOut::Empty => Ok(V::Json(&EMPTY_OBJECT)),
            MacroOut::Inline => self.eval(&self.compiled.macros[index], &mut Vec::new()),
        }
    }

    /// The value at `key` of an object (its last entry): a scan of a few entries, a table
    /// made at the first look for more.
    fn member<'j>(&self, entries: &'j [(&'j str, J<'j>)], key: &str) -> Option<&'j J<'j>> {
        if entries.len() <= Members::FEW {
            return J::member(entries, key);
        }
        self.member_by_table(entries, key)
    }

    #[inline(never)]
    fn member_by_table<'j>(&self, entries: &'j [(&'j str, J<'j>)], key: &str) -> Option<&'j J<'j>> {
        let mut members = self.members.borrow_mut();
        let objects = &mut members.objects;
        let id = (entries.as_ptr() as usize, entries.len());
        let at = match objects.iter().position(|(o, _)| *o == id) {
            Some(at) => at,
            None => {
                let table = entries
                    .iter()
                    .enumerate()
                    .map(|(i, (k, _))| (Members::hash(k), i))
                    .collect();
                objects.push((id, table));
                objects.len() - 1
            }
        };
        match objects[at].1.get(&Members::hash(key)) {
            Some(&i) if entries[i].0 == key => Some(&entries[i].1),
            // Another key of the same hash (or none): the scan decides.
            Some(_) => J::member(entries, key),
            None => None,
        }
    }

    /// A Falco field's root: a top-level field, or (`_top`) the event's top-level fields but
    /// `requestObject`, gathered once. Either is read in place; a part the field reads that is
    /// nested too deep leaves the rule to the interpreter, as its conversion would.
    fn falco_root(&self, i: usize) -> Result<&J<'e>, E> {
        let (root, keys) = &self.compiled.roots[i];
        let wanted = |key: &str| keys.is_empty() || keys.contains(&key);
        let top = self.roots[i]
            .get_or_init(|| match root {
                Root::Top => {
                    let mut entries = bumpalo::collections::Vec::new_in(self.arena);
                    for (i, (key, _)) in self.view.fields().enumerate() {
                        if key == "requestObject" || !wanted(key) {
                            continue;
                        }
                        if let Some(tree) = self.tree(i) {
                            if tree.has_too_deep() {
                                return Err(E::Defer);
                            }
                            entries.push((key, *tree));
                        }
                    }
                    Ok(Some(J::Obj(entries.into_bump_slice())))
                }
                Root::Field(name) => {
                    let deep = match self.field_by_name(name)? {
                        J::Obj(entries) => entries.iter().any(|(k, v)| wanted(k) && v.has_too_deep()),
                        j => j.has_too_deep(),
                    };
                    if deep {
                        Err(E::Defer)
                    } else {
                        Ok(None)
                    }
                }
            })
            .as_ref()
            .map_err(E::clone)?;
        match (top, root) {
            (Some(top), _) => Ok(top),
            (None, Root::Field(name)) => self.field_by_name(name),
            (None, Root::Top) => Err(E::Defer),
        }
    }

    fn falco_field(&self, index: usize) -> Result<&[String], E> {
        self.falco[index]
            .get_or_init(|| {
                let (root, name, arg) = &self.compiled.falco[index];
                Ok(crate::engine::functions::falco::extract(
                    name,
                    arg,
                    self.falco_root(*root)?,
                ))
            })
            .as_deref()
            .map_err(E::clone)
    }

    fn interp<'r>(&'r self, expr: &cel::parser::Expression) -> R<'r> {
        let bindings = self.bindings();
        let ctx = bindings.context();
        let result = catch_panic(|| match cel::Value::resolve_val(expr, &ctx) {
            Ok(v) => Ok(from_cel(&*v)),
            Err(cel::ExecutionError::NoSuchKey(_) | cel::ExecutionError::UndeclaredReference(_)) => Err(E::Missing),
            Err(e) => Err(E::Other(e.to_string())),
        });
        result.unwrap_or_else(|panic| Err(E::Other(format!("the CEL interpreter panicked: {panic}"))))
    }

    fn eval<'r>(&'r self, node: &'r Node, vars: &mut Vec<V<'r>>) -> R<'r> {
        Ok(match node {
            Node::Const(c) => from_const(c),
            Node::List(l) => V::List(l),
            Node::Field(id) => return self.field(*id),
            Node::Var(slot) => vars.get(*slot).cloned().ok_or(E::Defer)?,
            Node::Macro(i) => return self.macro_value(*i),
            Node::Cluster => V::Str(Cow::Borrowed(self.cluster)),
            Node::EmptyMap => V::Json(&EMPTY_OBJECT),
            Node::MakeList(items) => {
                let mut values = Vec::with_capacity(items.len());
                for item in items.iter() {
                    match self.eval(item, vars)? {
                        v if unusable(&v) => return Err(E::Defer),
                        v => values.push(v),
                    }
                }
                V::Items(Rc::new(values))
            }
            Node::Select(a, field) => match self.eval(a, vars)? {
                V::Json(J::Obj(entries)) => return self.member(entries, field).map(from_j).ok_or(E::Missing),
                _ => return Err(E::Defer),
            },
            Node::Has(a, field) => match self.eval(a, vars)? {
                V::Json(J::Obj(entries)) => V::Bool(self.member(entries, field).is_some()),
                _ => return Err(E::Defer),
            },
            Node::OptSelect(a, field) => {
                let Some(target) = present(self.eval(a, vars)?) else {
                    return Ok(V::Opt(None));
                };
                match target {
                    V::Json(J::Obj(entries)) => V::Opt(self.member(entries, field)),
                    v if unusable(&v) => return Err(E::Defer),
                    V::Opt(_) => return Err(E::Defer),
                    _ => V::Opt(None),
                }
            }
            Node::OrValue(target, default) => {
                let d = self.eval(default, vars)?;
                match self.eval(target, vars)? {
                    V::Opt(Some(j)) => from_j(j),
                    V::Opt(None) => d,
                    _ => return Err(E::Defer),
                }
            }
            Node::Index(a, b) => {
                let v = self.eval(a, vars)?;
                let i = self.eval(b, vars)?;
                let at = |len: usize| match i {
                    V::Int(i) if i >= 0 && (i as u64) < len as u64 => Ok(i as usize),
                    V::Int(i) => Err(E::Other(format!("index {i} out of range"))),
                    _ => Err(E::Defer),
                };
                match v {
                    V::Json(J::Arr(items)) => from_j(&items[at(items.len())?]),
                    V::Json(J::Obj(entries)) => match &i {
                        V::Str(k) => self.member(entries, k).map(from_j).ok_or(E::Defer)?,
                        _ => return Err(E::Defer),
                    },
                    V::Strs(s) => V::Str(Cow::Borrowed(&s[at(s.len())?])),
                    V::List(l) => from_const(&l.items[at(l.items.len())?]),
                    V::Items(items) => items[at(items.len())?].clone(),
                    _ => return Err(E::Defer),
                }
            }
            Node::OptIndex(a, b) => {
                let Some(v) = present(self.eval(a, vars)?) else {
                    return Ok(V::Opt(None));
                };
                let i = self.eval(b, vars)?;
                match (v, i) {
                    (V::Json(J::Obj(entries)), V::Str(k)) => V::Opt(self.member(entries, &k)),
                    (V::Json(J::Arr(items)), V::Int(i)) => V::Opt(usize::try_from(i).ok().and_then(|i| items.get(i))),
                    _ => return Err(E::Defer),
                }
            }
            Node::Eq(a, b) => {
                let (x, y) = (self.eval(a, vars)?, self.eval(b, vars)?);
                V::Bool(scalar_eq(&x, &y).ok_or(E::Defer)?)
            }
            Node::Ne(a, b) => {
                let (x, y) = (self.eval(a, vars)?, self.eval(b, vars)?);
                V::Bool(!scalar_eq(&x, &y).ok_or(E::Defer)?)
            }
            Node::Cmp(op, a, b) => {
                let (x, y) = (self.eval(a, vars)?, self.eval(b, vars)?);
                let ord = match (&x, &y) {
                    (V::Int(p), V::Int(q)) => p.cmp(q),
                    (V::UInt(p), V::UInt(q)) => p.cmp(q),
                    (V::Double(p), V::Double(q)) => p.partial_cmp(q).ok_or(E::Defer)?,
                    (V::Str(p), V::Str(q)) => p.as_ref().cmp(q.as_ref()),
                    _ => return Err(E::Defer),
                };
                V::Bool(match op {
                    Cmp::Lt => ord.is_lt(),
                    Cmp::Le => ord.is_le(),
                    Cmp::Gt => ord.is_gt(),
                    Cmp::Ge => ord.is_ge(),
                })
            }
            Node::In(a, b) => {
                let (x, y) = (self.eval(a, vars)?, self.eval(b, vars)?);
                V::Bool(contains(&y, &x).ok_or(E::Defer)?)
            }
            Node::Add(a, b) => {
                let (x, y) = (self.eval(a, vars)?, self.eval(b, vars)?);
                match (x, y) {
                    (V::Int(p), V::Int(q)) => V::Int(p.checked_add(q).ok_or(E::Defer)?),
                    (V::UInt(p), V::UInt(q)) => V::UInt(p.checked_add(q).ok_or(E::Defer)?),
                    (V::Double(p), V::Double(q)) => V::Double(p + q),
                    (V::Str(p), V::Str(q)) => V::Str(Cow::Owned(format!("{p}{q}"))),
                    _ => return Err(E::Defer),
                }
            }
            Node::And(a, b) => return self.logic(a, b, false, vars),
            Node::Or(a, b) => return self.logic(a, b, true, vars),
            Node::Not(a) => match self.eval(a, vars)? {
                V::Bool(b) => V::Bool(!b),
                v if unusable(&v) => return Err(E::Defer),
                _ => return Err(E::Other("no matching overload for !_".into())),
            },
            Node::NotStrictlyFalse(a) => match self.eval(a, vars) {
                Ok(V::Bool(b)) => V::Bool(b),
                Ok(v) if unusable(&v) => return Err(E::Defer),
                Err(E::Defer) => return Err(E::Defer),
                _ => V::Bool(true),
            },
            Node::Cond(c, a, b) => match self.eval(c, vars)? {
                V::Bool(true) => return self.eval(a, vars),
                V::Bool(false) => return self.eval(b, vars),
                v if unusable(&v) => return Err(E::Defer),
                _ => return Err(E::Other("no matching overload for _?_:_".into())),
            },
            Node::Str(f, target, arg) => {
                let a = self.eval(arg, vars)?;
                let t = self.eval(target, vars)?;
                match (&t, &a) {
                    (V::Str(t), V::Str(a)) => V::Bool(f.test(t, a)),
                    _ => return Err(E::Defer),
                }
            }
            Node::StrAny(f, target, consts) => match self.eval(target, vars)? {
                V::Str(t) => V::Bool(consts.iter().any(|c| f.test(&t, c))),
                _ => return Err(E::Defer),
            },
            Node::InNets(target, nets) => match self.eval(target, vars)? {
                V::Str(ip) => match crate::engine::net::parse_ip(&ip) {
                    Ok(ip) => V::Bool(nets.iter().any(|n| n.contains(&ip))),
                    Err(_) => return Err(E::Defer),
                },
                _ => return Err(E::Defer),
            },
            Node::Matches { text, pattern, member } => {
                let computed = |vars: &mut Vec<V<'r>>| match pattern {
                    Pattern::Fixed(_) => Ok(None),
                    Pattern::Computed(p) => self.eval(p, vars).map(Some),
                };
                let (t, p) = if *member {
                    let p = computed(vars)?;
                    (self.eval(text, vars)?, p)
                } else {
                    let t = self.eval(text, vars)?;
                    (t, computed(vars)?)
                };
                let V::Str(t) = t else { return Err(E::Defer) };
                let matched = match (pattern, p) {
                    (Pattern::Fixed(re), _) => re.is_match(&t),
                    (_, Some(V::Str(p))) => match compiled_regex(&p) {
                        Ok(re) => re.is_match(&t),
                        Err(e) => return Err(E::Other(format!("'{p}' is not a valid regex: {e}"))),
                    },
                    _ => return Err(E::Defer),
                };
                V::Bool(matched)
            }
            Node::Size(a) => V::Int(match self.eval(a, vars)? {
                V::Str(s) => s.chars().count(),
                V::Json(J::Arr(items)) => items.len(),
                V::Json(J::Obj(entries)) => J::distinct_keys(entries).len(),
                V::List(l) => l.items.len(),
                V::Strs(s) => s.len(),
                V::Refs(r) => r.len(),
                V::Items(items) => items.len(),
                _ => return Err(E::Defer),
            } as i64),
            Node::ToString(a) => match self.eval(a, vars)? {
                s @ V::Str(_) => s,
                V::Int(i) => V::Str(Cow::Owned(i.to_string())),
                V::UInt(u) => V::Str(Cow::Owned(u.to_string())),
                V::Bool(b) => V::Str(Cow::Borrowed(if b { "true" } else { "false" })),
                _ => return Err(E::Defer),
            },
            Node::Comprehension(l) => return self.comprehension(l, vars),
            Node::Quantifier(q) => return self.quantifier(q, vars),
            Node::Collect(c) => return self.collect(c, vars),
            Node::FalcoField(i) => V::Strs(self.falco_field(*i)?),
            Node::FalcoOp(args) => {
                let [op, v, x] = &**args;
                let (op, v, x) = (self.eval(op, vars)?, self.eval(v, vars)?, self.eval(x, vars)?);
                match (op, v, x) {
                    (V::Str(op), V::Str(v), V::Str(x)) => {
                        V::Bool(crate::engine::functions::falco::string_op(&op, &v, &x).map_err(E::Other)?)
                    }
                    _ => return Err(E::Defer),
                }
            }
            Node::PodSpec(a) => {
                let V::Json(obj) = self.eval(a, vars)? else {
                    return Err(E::Defer);
                };
                match pod_spec(obj)? {
                    Some(spec @ J::Obj(_)) => V::Json(spec),
                    Some(J::TooDeep) => return Err(E::Defer),
                    _ => V::Json(&EMPTY_OBJECT),
                }
            }
            Node::PodContainers(a) => {
                let V::Json(obj) = self.eval(a, vars)? else {
                    return Err(E::Defer);
                };
                let mut all = Vec::new();
                if let Some(spec) = pod_spec(obj)? {
                    if let J::TooDeep = spec {
                        return Err(E::Defer);
                    }
                    for kind in ["containers", "initContainers", "ephemeralContainers"] {
                        match spec.get(kind) {
                            Some(J::Arr(items)) => all.extend(items.iter()),
                            Some(J::TooDeep) => return Err(E::Defer),
                            _ => {}
                        }
                    }
                }
                V::Refs(Rc::new(all))
            }
            Node::Native(f, args) => {
                let mut values = Vec::with_capacity(args.len());
                for a in args.iter() {
                    values.push(self.eval(a, vars)?);
                }
                return native::call(*f, values);
            }
            Node::Interp(expr) => return self.interp(expr),
            Node::Memo(slot, node) => {
                let out = *self.memos[*slot].get_or_init(|| match self.eval(node, &mut Vec::new()) {
                    Ok(V::Bool(b)) => MacroOut::Bool(b),
                    Err(E::Missing) => MacroOut::Missing,
                    Err(E::Defer) => MacroOut::Defer,
                    Ok(_) | Err(E::Other(_)) => MacroOut::Inline,
                });
                match out {
                    MacroOut::Bool(b) => V::Bool(b),
                    MacroOut::Missing => return Err(E::Missing),
                    MacroOut::Defer => return Err(E::Defer),
                    MacroOut::Tree(_) | MacroOut::Empty | MacroOut::Inline => return self.eval(node, vars),
                }
            }
        })
    }

    /// `a && b` (`or` false) or `a || b` (`or` true), as the interpreter decides them: the
    /// absorbing value on either side wins over an error on the other.
    fn logic<'r>(&'r self, a: &'r Node, b: &'r Node, or: bool, vars: &mut Vec<V<'r>>) -> R<'r> {
        let left = match self.eval(a, vars) {
            Ok(V::Bool(x)) => Ok(x),
            Ok(v) if unusable(&v) => return Err(E::Defer),
            Ok(_) => Err(E::Other(format!(
                "no matching overload for {}",
                if or { "_||_" } else { "_&&_" }
            ))),
            Err(E::Defer) => return Err(E::Defer),
            Err(e) => Err(e),
        };
        if matches!(left, Ok(x) if x == or) {
            return Ok(V::Bool(or));
        }
        let right = self.eval(b, vars)?;
        match (left, right) {
            (Ok(_), V::Bool(r)) => Ok(V::Bool(r)),
            (Err(_), V::Bool(r)) if r == or => Ok(V::Bool(or)),
            (_, r) if unusable(&r) => Err(E::Defer),
            (Err(e), _) => Err(e),
            (Ok(_), _) => Err(E::Other(format!(
                "no matching overload for {}",
                if or { "_||_" } else { "_&&_" }
            ))),
        }
    }

    fn comprehension<'r>(&'r self, l: &'r Loop, vars: &mut Vec<V<'r>>) -> R<'r> {
        let init = self.eval(&l.init, vars)?;
        let range = self.eval(&l.range, vars)?;
        let items = elements(range)?;
        let base = vars.len();
        if base != l.accu {
            return Err(E::Defer);
        }
        vars.push(init);
        vars.push(V::Null);
        let result = self.iterate(l, items, vars);
        vars.truncate(base);
        result
    }

    fn quantifier<'r>(&'r self, q: &'r Quantifier, vars: &mut Vec<V<'r>>) -> R<'r> {
        let items = elements(self.eval(&q.range, vars)?)?;
        let base = vars.len();
        if base != q.accu {
            return Err(E::Defer);
        }
        vars.push(V::Null);
        vars.push(V::Null);
        let result = (|| {
            let mut pending = None;
            for item in items {
                vars[base + 1] = item;
                match self.eval(&q.body, vars) {
                    Ok(V::Bool(b)) if b == q.absorbing => return Ok(V::Bool(b)),
                    Ok(V::Bool(_)) => {}
                    Ok(v) if unusable(&v) => return Err(E::Defer),
                    Ok(_) => {
                        pending = Some(E::Other(format!(
                            "no matching overload for {}",
                            if q.absorbing { "_||_" } else { "_&&_" }
                        )))
                    }
                    Err(E::Defer) => return Err(E::Defer),
                    Err(e) => pending = Some(e),
                }
            }
            pending.map_or(Ok(V::Bool(!q.absorbing)), Err)
        })();
        vars.truncate(base);
        result
    }

    fn collect<'r>(&'r self, c: &'r Collect, vars: &mut Vec<V<'r>>) -> R<'r> {
        let items = elements(self.eval(&c.range, vars)?)?;
        let base = vars.len();
        if base != c.accu {
            return Err(E::Defer);
        }
        vars.push(V::Null);
        vars.push(V::Null);
        let result = (|| {
            let mut out = Vec::new();
            for item in items {
                vars[c.accu + 1] = item;
                if let Some(guard) = &c.guard {
                    match self.eval(guard, vars)? {
                        V::Bool(true) => {}
                        V::Bool(false) => continue,
                        _ => return Err(E::Defer),
                    }
                }
                out.push(self.eval(&c.item, vars)?);
            }
            Ok(V::Items(Rc::new(out)))
        })();
        vars.truncate(base);
        result
    }

    fn iterate<'r>(&'r self, l: &'r Loop, items: Elements<'r>, vars: &mut Vec<V<'r>>) -> R<'r> {
        let mut pending: Option<E> = None;
        for item in items {
            match self.eval(&l.cond, vars)? {
                V::Bool(true) => {}
                V::Bool(false) => break,
                _ => return Err(E::Defer),
            }
            vars[l.accu + 1] = item;
            match (self.eval(&l.step, vars), l.fold) {
                (Err(E::Defer), _) => return Err(E::Defer),
                (Err(e), Some(_)) => pending = Some(e),
                (Err(e), None) => return Err(e),
                (Ok(v), Some(absorbing)) if pending.is_some() && !matches!(v, V::Bool(b) if b == absorbing) => {
                    if unusable(&v) {
                        return Err(E::Defer);
                    }
                }
                (Ok(v), _) => {
                    pending = None;
                    vars[l.accu] = v;
                }
            }
        }
        if let Some(e) = pending {
            return Err(e);
        }
        self.eval(&l.result, vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `check` on the prefilter's keys of the event `text`.
    fn with_keys(text: &str, check: impl FnOnce(RouteKeys<'_>)) {
        let view = EventView::parse(text).unwrap();
        let scope = Scope {
            env: std::sync::Arc::new(cel::Env::stdlib()),
            symbols: Default::default(),
            macros: Vec::new(),
            lists: Vec::new(),
        };
        let compiled = Compiled::default();
        with_arena(|arena| check(Frame::new(&compiled, &scope, &view, "c", arena).route_keys()));
    }

    #[test]
    fn route_keys_are_what_the_conditions_read() {
        let is = |v: &str| Key::Is(Cow::Owned(v.to_string()));
        with_keys(
            r#"{"kind":"Event","auditID":"a1","stage":"ResponseComplete","verb":"create",
            "objectRef":{"resource":"pods","subresource":"exec"},"requestObject":{"x":[1,2]}}"#,
            |keys| {
                assert_eq!(keys.verb, is("create"));
                assert_eq!(keys.resource, is("pods"));
                assert_eq!(keys.subresource, is("exec"));
                assert_eq!(keys.stage, is("ResponseComplete"));
                assert_eq!(
                    (keys.code, keys.user, keys.impersonated),
                    (Key::Absent, Key::Absent, Key::Absent)
                );
            },
        );
        with_keys(
            r#"{"auditID":"a","stage":"x","responseStatus":{"code":403},"user":{"username":"system:anonymous"},"impersonatedUser":{"username":"x"}}"#,
            |k| {
                assert_eq!(
                    (k.code, k.user, k.impersonated),
                    (is("403"), is("system:anonymous"), is(Key::PRESENT))
                )
            },
        );
        // A member repeated is its last value, as the conditions read it.
        with_keys(
            r#"{"auditID":"a","stage":"x","responseStatus":{"code":1,"code":2},"user":{"username":"a","username":"b"}}"#,
            |k| assert_eq!((k.code, k.user), (is("2"), is("b"))),
        );
        // Absent, null, or an object without the member: absent.
        for text in [
            r#"{"auditID":"a","stage":"x","responseStatus":null,"user":{}}"#,
            r#"{"auditID":"a","stage":"x","responseStatus":{"code":null},"user":{"username":null}}"#,
            r#"{"auditID":"a","stage":"x","impersonatedUser":{"groups":["g"]}}"#,
            r#"{"auditID":"a","stage":"x","user":{"username":"a","username":null}}"#,
        ] {
            with_keys(text, |k| {
                assert_eq!(
                    (k.code, k.user, k.impersonated),
                    (Key::Absent, Key::Absent, Key::Absent),
                    "{text}"
                )
            });
        }
    }

    #[test]
    fn keys_of_shapes_the_prefilter_does_not_judge_are_unknown() {
        // Wrong types: the conditions decide (and say so if they fail).
        with_keys(
            r#"{"auditID":"a","stage":"x","verb":7,"objectRef":"pods","responseStatus":{"code":"403"},"user":"u"}"#,
            |k| {
                assert_eq!(
                    [k.verb, k.resource, k.code, k.user],
                    [Key::Unknown, Key::Unknown, Key::Unknown, Key::Unknown]
                )
            },
        );
        // Codes are integers: a double, or one past i64, is unknown; so is every key of an
        // event with a dotted top-level key.
        for text in [
            r#"{"auditID":"a","stage":"x","responseStatus":{"code":403.0}}"#,
            r#"{"auditID":"a","stage":"x","responseStatus":{"code":18446744073709551615}}"#,
            r#"{"auditID":"a","stage":"x","verb":"get","responseStatus":{"code":200},"a.b":1}"#,
        ] {
            with_keys(text, |k| assert_eq!(k.code, Key::Unknown, "{text}"));
        }
        with_keys(r#"{"auditID":"a","stage":"x","verb":"get","a.b":1}"#, |k| {
            assert_eq!(k, RouteKeys::default())
        });
        // A user nested too deep to read is no name.
        let deep = format!(
            r#"{{"auditID":"a","stage":"x","user":{{"username":{}"u"{}}}}}"#,
            "[".repeat(100),
            "]".repeat(100)
        );
        with_keys(&deep, |k| assert_eq!(k.user, Key::Unknown));
    }

    #[test]
    fn the_arena_is_emptied_after_each_event_and_a_large_one_given_back() {
        // What one event leaves is gone before the next: its memory is used again.
        let first = with_arena(|arena| arena.alloc_str("an event's tree").as_ptr());
        let next = with_arena(|arena| arena.alloc_str("the next one's!").as_ptr());
        assert_eq!(first, next);
        // An event that took more than is kept leaves a fresh arena behind.
        with_arena(|arena| {
            arena.alloc_slice_fill_copy(2 * ARENA_KEPT, 0u8);
        });
        with_arena(|arena| assert!(arena.allocated_bytes() <= ARENA_KEPT));
        // An evaluation inside another's (rendering while evaluating) gets its own arena.
        with_arena(|outer| {
            let outer = outer as *const Bump;
            with_arena(|inner| assert_ne!(inner as *const Bump, outer));
        });
    }
}

//! The compiled path's program: [`Node`]s and what they hold (constants, lists known at load,
//! comprehensions, native functions). The compiler (`super`) builds them; `eval` runs them.

use crate::engine::rules::Scalar;
use cel::parser::Expression;
use regex::Regex;
use std::collections::HashSet;
use std::sync::Arc;

/// A scalar written in a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Const {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(String),
}

/// A list known at load: a rule file's list, or a list of literals in a condition.
#[derive(Debug)]
pub struct LitList {
    pub(super) items: Vec<Const>,
    /// The items when every one is a string: `in` is one hash lookup.
    pub(super) strings: Option<HashSet<String>>,
    /// The items when every one is an int.
    pub(super) ints: Option<HashSet<i64>>,
}

impl LitList {
    pub(super) fn new(items: Vec<Const>) -> LitList {
        let strings = items
            .iter()
            .map(|c| match c {
                Const::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let ints = items
            .iter()
            .map(|c| match c {
                Const::Int(i) => Some(*i),
                _ => None,
            })
            .collect();
        LitList { items, strings, ints }
    }

    /// A rule file's list.
    pub fn from_scalars(items: &[Scalar]) -> LitList {
        LitList::new(
            items
                .iter()
                .map(|s| match s {
                    Scalar::Bool(b) => Const::Bool(*b),
                    Scalar::Int(i) => Const::Int(*i),
                    Scalar::Float(f) => Const::Double(*f),
                    Scalar::String(s) => Const::Str(s.clone()),
                })
                .collect(),
        )
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
}

/// String member functions.
#[derive(Debug, Clone, Copy)]
pub enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

/// Parts of an image reference.
#[derive(Debug, Clone, Copy)]
pub enum ImagePart {
    Registry,
    Repository,
    Tag,
    Digest,
}

/// Library functions with a native implementation (`eval/native.rs`).
#[derive(Debug, Clone, Copy)]
pub enum NativeFn {
    /// `image_registry(image)` and the other parts of an image reference.
    Image(ImagePart),
    /// `exec_command(uri)`.
    ExecCommand,
    /// `list.join()`, `list.join(sep)`.
    Join,
    /// `s.split(sep)`.
    Split,
    /// `isIP(s)`.
    IsIp,
    /// `cidr(net).containsIP(ip)` of two strings.
    CidrContainsIp,
}

/// A regex pattern: written in the rule (compiled at load) or computed.
#[derive(Debug)]
pub enum Pattern {
    Fixed(Arc<Regex>),
    Computed(Box<Node>),
}

/// One native operation; children are evaluated in the interpreter's order.
#[derive(Debug)]
pub enum Node {
    Const(Const),
    List(Arc<LitList>),
    /// A top-level event field, by its index in [`Compiled::fields`].
    Field(usize),
    /// A comprehension variable, by its slot.
    Var(usize),
    Macro(usize),
    Cluster,
    /// `{}`.
    EmptyMap,
    Select(Box<Node>, String),
    Has(Box<Node>, String),
    OptSelect(Box<Node>, String),
    OrValue(Box<Node>, Box<Node>),
    Index(Box<Node>, Box<Node>),
    /// `a[?b]`.
    OptIndex(Box<Node>, Box<Node>),
    Eq(Box<Node>, Box<Node>),
    Ne(Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    Add(Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Not(Box<Node>),
    NotStrictlyFalse(Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Str(StrFn, Box<Node>, Box<Node>),
    /// `text.matches(pattern)` (member: the pattern is evaluated first) or `matches(text, pattern)`.
    Matches {
        text: Box<Node>,
        pattern: Pattern,
        member: bool,
    },
    Size(Box<Node>),
    /// `string(x)` of a string, an int or a bool.
    ToString(Box<Node>),
    Comprehension(Box<Loop>),
    /// `map` and `filter`: a list built item by item.
    Collect(Box<Collect>),
    /// `falco_field(root, 'name', 'arg')`, by its index in [`Compiled::falco`].
    FalcoField(usize),
    FalcoOp(Box<[Node; 3]>),
    PodSpec(Box<Node>),
    PodContainers(Box<Node>),
    /// A library function the compiled path runs itself, on its arguments.
    Native(NativeFn, Box<[Node]>),
    /// A sub-expression outside the compiled subset, run by the interpreter.
    Interp(Box<Expression>),
    /// A sub-expression several conditions share: evaluated once per event, by its slot.
    Memo(usize, Box<Node>),
}

/// A comprehension (the list macros expand to these).
#[derive(Debug)]
pub struct Loop {
    pub(super) range: Node,
    pub(super) init: Node,
    pub(super) cond: Node,
    pub(super) step: Node,
    pub(super) result: Node,
    /// Slot of the accumulator; the iteration variable is the next one.
    pub(super) accu: usize,
    /// `Some(true)` for a step `@result || x`, `Some(false)` for `@result && x`: errors are
    /// deferred as CEL does (a later absorbing value overrides them).
    pub(super) fold: Option<bool>,
}

/// A `map` or `filter` comprehension: `range.map(x, item)`, `range.filter(x, guard)`,
/// `range.map(x, guard, item)`.
#[derive(Debug)]
pub struct Collect {
    pub(super) range: Node,
    pub(super) guard: Option<Node>,
    pub(super) item: Node,
    /// Slot of the accumulator (unused); the iteration variable is the next one.
    pub(super) accu: usize,
}

/// Where a Falco field is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Root {
    /// `_top`: the event's top-level fields but `requestObject`.
    Top,
    Field(String),
}

/// A Falco field's root with only the keys its extraction reads (all if none are named; see
/// `falco::fields::root_keys`).
pub type RootKeys = (Root, &'static [&'static str]);

impl Node {
    /// How many parts of this node run in the interpreter.
    pub fn interpreted_parts(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            match n {
                Node::Interp(_) => count += 1,
                Node::Select(a, _) | Node::Has(a, _) | Node::OptSelect(a, _) => stack.push(&**a),
                Node::Not(a) | Node::NotStrictlyFalse(a) | Node::Size(a) | Node::ToString(a) => stack.push(&**a),
                Node::PodSpec(a) | Node::PodContainers(a) => stack.push(&**a),
                Node::OrValue(a, b) | Node::Index(a, b) | Node::OptIndex(a, b) | Node::Eq(a, b) | Node::Ne(a, b) => {
                    stack.extend([&**a, &**b])
                }
                Node::Cmp(_, a, b) | Node::In(a, b) | Node::Add(a, b) | Node::And(a, b) | Node::Or(a, b) => {
                    stack.extend([&**a, &**b])
                }
                Node::Str(_, a, b) => stack.extend([&**a, &**b]),
                Node::Cond(a, b, c) => stack.extend([&**a, &**b, &**c]),
                Node::Matches { text, pattern, .. } => {
                    stack.push(&**text);
                    if let Pattern::Computed(p) = pattern {
                        stack.push(&**p);
                    }
                }
                Node::Comprehension(l) => stack.extend([&l.range, &l.init, &l.cond, &l.step, &l.result]),
                Node::Collect(c) => stack.extend([&c.range, &c.item].into_iter().chain(&c.guard)),
                Node::FalcoOp(args) => stack.extend(args.iter()),
                Node::Native(_, args) => stack.extend(args.iter()),
                Node::Const(_)
                | Node::List(_)
                | Node::Field(_)
                | Node::Var(_)
                | Node::Macro(_)
                | Node::Cluster
                | Node::EmptyMap => {}
                Node::FalcoField(_) => {}
                Node::Memo(_, n) => stack.push(&**n),
            }
        }
        count
    }
}

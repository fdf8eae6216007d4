//! The compiled path's program: [`Node`]s and what they hold (constants, lists known at load,
//! comprehensions, native functions). The compiler (`super`) builds them; `eval` runs them.

use crate::engine::rules::Scalar;
use cel::parser::Expression;
use regex::Regex;
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
    /// The items when every one is a string: `in` is one hash lookup (foldhash: the set is
    /// built at load, looked up per event).
    pub(super) strings: Option<foldhash::HashSet<String>>,
    /// The items when every one is an int.
    pub(super) ints: Option<foldhash::HashSet<i64>>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrFn {
    StartsWith,
    EndsWith,
    Contains,
}

impl StrFn {
    pub(super) fn test(self, text: &str, arg: &str) -> bool {
        match self {
            StrFn::StartsWith => text.starts_with(arg),
            StrFn::EndsWith => text.ends_with(arg),
            StrFn::Contains => text.contains(arg),
        }
    }
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
    /// `s.split(sep)[0]`: the text before the first separator, with no list made.
    SplitFirst,
    /// `isIP(s)`.
    IsIp,
    /// `cidr(net).containsIP(ip)` of two strings.
    CidrContainsIp,
}

/// A regex pattern: written in the rule (compiled at load) or computed.
#[derive(Debug, Clone)]
pub enum Pattern {
    Fixed(Arc<Regex>),
    Computed(Box<Node>),
}

/// One native operation; children are evaluated in the interpreter's order.
#[derive(Debug, Clone)]
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
    /// A list written in the rule whose items are not all literals: `[verb, objectRef.resource]`.
    MakeList(Box<[Node]>),
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
    /// `exists` or `all` (see [`Quantifier`]).
    Quantifier(Box<Quantifier>),
    /// `x.startsWith(c1) || x.startsWith(c2) || …` (and the other string tests) on one `x`,
    /// evaluated once: what `exists` over a list of literals becomes when unrolled.
    StrAny(StrFn, Box<Node>, Vec<String>),
    /// `cidr(n1).containsIP(x) || cidr(n2).containsIP(x) || …`, the networks parsed at load.
    InNets(Box<Node>, Vec<ipnet::IpNet>),
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
#[derive(Debug, Clone)]
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

/// `range.exists(x, body)` (`absorbing` true) or `range.all(x, body)` (false), as CEL's macros
/// expand them, run without evaluating their accumulator: the first item whose body is the
/// absorbing value decides; otherwise the last error, if any; otherwise the other value.
#[derive(Debug, Clone)]
pub struct Quantifier {
    pub(super) range: Node,
    pub(super) body: Node,
    /// Slot of the (unused) accumulator; the iteration variable is the next one.
    pub(super) accu: usize,
    pub(super) absorbing: bool,
}

/// A `map` or `filter` comprehension: `range.map(x, item)`, `range.filter(x, guard)`,
/// `range.map(x, guard, item)`.
#[derive(Debug, Clone)]
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
/// `functions::falco::root_keys`).
pub type RootKeys = (Root, &'static [&'static str]);

impl Node {
    /// How many parts of this node run in the interpreter.
    pub fn interpreted_parts(&self) -> usize {
        let mut count = 0;
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            if let Node::Interp(_) = n {
                count += 1;
            }
            n.children(&mut stack);
        }
        count
    }

    /// Whether any node inside this one (itself included) satisfies `test`.
    pub(super) fn any(&self, test: &dyn Fn(&Node) -> bool) -> bool {
        let mut stack = vec![self];
        while let Some(n) = stack.pop() {
            if test(n) {
                return true;
            }
            n.children(&mut stack);
        }
        false
    }

    /// Pushes this node's children onto `out`.
    fn children<'n>(&'n self, out: &mut Vec<&'n Node>) {
        match self {
            Node::Select(a, _) | Node::Has(a, _) | Node::OptSelect(a, _) => out.push(a),
            Node::Not(a) | Node::NotStrictlyFalse(a) | Node::Size(a) | Node::ToString(a) => out.push(a),
            Node::PodSpec(a) | Node::PodContainers(a) | Node::StrAny(_, a, _) | Node::InNets(a, _) => out.push(a),
            Node::OrValue(a, b) | Node::Index(a, b) | Node::OptIndex(a, b) | Node::Eq(a, b) | Node::Ne(a, b) => {
                out.extend([&**a, &**b])
            }
            Node::Cmp(_, a, b) | Node::In(a, b) | Node::Add(a, b) | Node::And(a, b) | Node::Or(a, b) => {
                out.extend([&**a, &**b])
            }
            Node::Str(_, a, b) => out.extend([&**a, &**b]),
            Node::Cond(a, b, c) => out.extend([&**a, &**b, &**c]),
            Node::Matches { text, pattern, .. } => {
                out.push(text);
                if let Pattern::Computed(p) = pattern {
                    out.push(p);
                }
            }
            Node::Comprehension(l) => out.extend([&l.range, &l.init, &l.cond, &l.step, &l.result]),
            Node::Quantifier(q) => out.extend([&q.range, &q.body]),
            Node::Collect(c) => out.extend([&c.range, &c.item].into_iter().chain(&c.guard)),
            Node::FalcoOp(args) => out.extend(args.iter()),
            Node::Native(_, args) | Node::MakeList(args) => out.extend(args.iter()),
            Node::Memo(_, n) => out.push(n),
            Node::Const(_)
            | Node::List(_)
            | Node::Field(_)
            | Node::Var(_)
            | Node::Macro(_)
            | Node::Cluster
            | Node::EmptyMap
            | Node::FalcoField(_)
            | Node::Interp(_) => {}
        }
    }

    /// This node with each child replaced by `f` of it (children first, then `f` of the
    /// rebuilt node): a bottom-up rewrite.
    pub(super) fn rewrite(self, f: &mut dyn FnMut(Node) -> Node) -> Node {
        let mut r = |n: Box<Node>| Box::new(n.rewrite(f));
        let node = match self {
            Node::Select(a, k) => Node::Select(r(a), k),
            Node::Has(a, k) => Node::Has(r(a), k),
            Node::OptSelect(a, k) => Node::OptSelect(r(a), k),
            Node::Not(a) => Node::Not(r(a)),
            Node::NotStrictlyFalse(a) => Node::NotStrictlyFalse(r(a)),
            Node::Size(a) => Node::Size(r(a)),
            Node::ToString(a) => Node::ToString(r(a)),
            Node::PodSpec(a) => Node::PodSpec(r(a)),
            Node::PodContainers(a) => Node::PodContainers(r(a)),
            Node::StrAny(g, a, c) => Node::StrAny(g, r(a), c),
            Node::InNets(a, n) => Node::InNets(r(a), n),
            Node::OrValue(a, b) => Node::OrValue(r(a), r(b)),
            Node::Index(a, b) => Node::Index(r(a), r(b)),
            Node::OptIndex(a, b) => Node::OptIndex(r(a), r(b)),
            Node::Eq(a, b) => Node::Eq(r(a), r(b)),
            Node::Ne(a, b) => Node::Ne(r(a), r(b)),
            Node::Cmp(op, a, b) => Node::Cmp(op, r(a), r(b)),
            Node::In(a, b) => Node::In(r(a), r(b)),
            Node::Add(a, b) => Node::Add(r(a), r(b)),
            Node::And(a, b) => Node::And(r(a), r(b)),
            Node::Or(a, b) => Node::Or(r(a), r(b)),
            Node::Str(g, a, b) => Node::Str(g, r(a), r(b)),
            Node::Cond(a, b, c) => Node::Cond(r(a), r(b), r(c)),
            Node::Matches { text, pattern, member } => Node::Matches {
                text: r(text),
                pattern: match pattern {
                    Pattern::Computed(p) => Pattern::Computed(r(p)),
                    fixed => fixed,
                },
                member,
            },
            Node::Comprehension(mut l) => {
                for part in [&mut l.range, &mut l.init, &mut l.cond, &mut l.step, &mut l.result] {
                    *part = std::mem::replace(part, Node::Cluster).rewrite(f);
                }
                Node::Comprehension(l)
            }
            Node::Quantifier(mut q) => {
                for part in [&mut q.range, &mut q.body] {
                    *part = std::mem::replace(part, Node::Cluster).rewrite(f);
                }
                Node::Quantifier(q)
            }
            Node::Collect(mut c) => {
                for part in [&mut c.range, &mut c.item].into_iter().chain(&mut c.guard) {
                    *part = std::mem::replace(part, Node::Cluster).rewrite(f);
                }
                Node::Collect(c)
            }
            Node::FalcoOp(args) => {
                let [a, b, c] = *args;
                Node::FalcoOp(Box::new([a.rewrite(f), b.rewrite(f), c.rewrite(f)]))
            }
            Node::Native(g, args) => Node::Native(g, args.into_vec().into_iter().map(|a| a.rewrite(f)).collect()),
            Node::MakeList(items) => Node::MakeList(items.into_vec().into_iter().map(|a| a.rewrite(f)).collect()),
            Node::Memo(slot, n) => Node::Memo(slot, r(n)),
            leaf @ (Node::Const(_)
            | Node::List(_)
            | Node::Field(_)
            | Node::Var(_)
            | Node::Macro(_)
            | Node::Cluster
            | Node::EmptyMap
            | Node::FalcoField(_)
            | Node::Interp(_)) => leaf,
        };
        f(node)
    }
}

//! The compiled evaluation path: each condition and macro lowered once, at load, from its CEL
//! syntax tree to a tree of native operations ([`Node`]) that reads the event's JSON directly.
//!
//! The interpreter stays the reference. The compiled path covers the subset rules use (field
//! paths with `has`, `.?` and `orValue`; comparisons; `in` over literal and named lists as hash
//! sets; string functions; `matches` with patterns compiled at load; `size`; the list macros;
//! `&&`, `||`, `!`, `?:` with CEL's error absorption; the Kubernetes helpers; the Falco
//! importer's `falco_field`, memoised per event, and `falco_op`), and it is exact where it
//! answers: whenever it meets a case it does not model (a comparison across types, a value
//! nested too deep, a failing function) it gives up on the rule ([`E::Defer`]) and the
//! interpreter evaluates that rule from the start. A sub-expression outside the subset is
//! compiled as [`Node::Interp`]: only that part runs in the interpreter. A differential test
//! (`tests/differential.rs`) holds both paths to the same answer per rule and event.
//!
//! Work is shared across rules within an event ([`Frame`]): each top-level field is parsed
//! once, each macro evaluated once, each Falco field extracted once; trees and caches live in
//! the event's arena ([`with_arena`]), strings are borrowed from the event, and no CEL value is
//! built unless the interpreter is asked.

use super::bind::Symbol;
use cel::common::ast::{operators, Expr, LiteralValue};
use cel::parser::Expression;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// Every condition and macro of a rule set, compiled.
#[derive(Debug, Default)]
pub struct Compiled {
    pub conditions: Vec<Node>,
    /// Per rule, its output template's placeholders.
    pub outputs: Vec<Vec<Node>>,
    /// Per rule, its dedup key's expressions.
    pub keys: Vec<Vec<Node>>,
    /// Per rule, its window's key expressions, distinct field and sequence steps, in order.
    pub windows: Vec<Vec<Node>>,
    pub macros: Vec<Node>,
    fields: Vec<String>,
    /// Per Falco field read: its root (an index in `roots`), its name and argument.
    falco: Vec<(usize, String, String)>,
    roots: Vec<RootKeys>,
    /// Shapes of the shared sub-expressions; the index is the memo slot.
    memos: Vec<String>,
}

/// What stops a part of a condition from being compiled.
struct Unsupported;

/// Lowers conditions to [`Node`]s.
pub struct Compiler<'a> {
    symbols: &'a HashMap<String, Symbol>,
    lists: Vec<Arc<LitList>>,
    out: Compiled,
    /// Comprehension variables in scope, innermost last; the index is the slot.
    bound: Vec<String>,
    /// Shapes of the composite sub-expressions that occur more than once.
    shared: HashSet<String>,
}

impl<'a> Compiler<'a> {
    /// A compiler for the rule set whose macros, conditions and other expressions are
    /// `all`: sub-expressions they share are found first, to be evaluated once per event.
    pub fn new<'x>(
        symbols: &'a HashMap<String, Symbol>,
        lists: Vec<Arc<LitList>>,
        all: impl Iterator<Item = &'x Expression>,
    ) -> Compiler<'a> {
        let mut seen = HashSet::new();
        let mut shared = HashSet::new();
        for expr in all {
            let mut stack = vec![expr];
            while let Some(e) = stack.pop() {
                if let Expr::Call(call) = &e.expr {
                    if matches!(
                        call.func_name.as_str(),
                        operators::LOGICAL_AND | operators::LOGICAL_OR | operators::LOGICAL_NOT
                    ) {
                        let s = shape(e);
                        if !seen.insert(s.clone()) {
                            shared.insert(s);
                        }
                    }
                    stack.extend(call.target.iter().map(|t| &**t).chain(&call.args));
                }
                // Comprehension bodies are not closed: only their range and start are.
                if let Expr::Comprehension(c) = &e.expr {
                    stack.extend([&c.iter_range, &c.accu_init]);
                }
            }
        }
        Compiler {
            symbols,
            lists,
            out: Compiled::default(),
            bound: Vec::new(),
            shared,
        }
    }

    pub fn add_macro(&mut self, expr: &Expression) {
        let node = self.closed(expr);
        self.out.macros.push(node);
    }

    /// A rule's condition, output placeholders and dedup key expressions.
    pub fn add_rule<'x>(
        &mut self,
        condition: &Expression,
        outputs: impl Iterator<Item = &'x Expression>,
        keys: impl Iterator<Item = &'x Expression>,
        window: impl Iterator<Item = &'x Expression>,
    ) {
        let node = self.closed(condition);
        self.out.conditions.push(node);
        let outputs = outputs.map(|e| self.closed(e)).collect();
        self.out.outputs.push(outputs);
        let keys = keys.map(|e| self.closed(e)).collect();
        self.out.keys.push(keys);
        let window = window.map(|e| self.closed(e)).collect();
        self.out.windows.push(window);
    }

    pub fn finish(self) -> Compiled {
        let mut out = self.out;
        // Each program copied afresh, depth first and in the order events walk them, so that
        // its nodes lie together in memory rather than among what compiling them allocated:
        // an event reads them with fewer cache misses.
        out.macros = out.macros.to_vec();
        out.conditions = out.conditions.to_vec();
        out.outputs = out.outputs.to_vec();
        out.keys = out.keys.to_vec();
        out.windows = out.windows.to_vec();
        out
    }

    /// A sub-expression with no comprehension variable in scope: compiled, or else left to
    /// the interpreter.
    fn closed(&mut self, expr: &Expression) -> Node {
        debug_assert!(self.bound.is_empty());
        let node = self
            .node(expr)
            .unwrap_or_else(|Unsupported| Node::Interp(Box::new(expr.clone())));
        // Shared and wholly compiled (an interpreted part marks what it reads, per rule).
        if matches!(node, Node::And(..) | Node::Or(..) | Node::Not(_)) && node.interpreted_parts() == 0 {
            let s = shape(expr);
            if self.shared.contains(&s) {
                return Node::Memo(Self::intern(&mut self.out.memos, s), Box::new(node));
            }
        }
        node
    }

    fn child(&mut self, expr: &Expression) -> Result<Box<Node>, Unsupported> {
        if self.bound.is_empty() {
            Ok(Box::new(self.closed(expr)))
        } else {
            self.node(expr).map(Box::new)
        }
    }

    fn intern<T: PartialEq>(list: &mut Vec<T>, item: T) -> usize {
        list.iter().position(|x| *x == item).unwrap_or_else(|| {
            list.push(item);
            list.len() - 1
        })
    }

    fn ident(&mut self, name: &str) -> Result<Node, Unsupported> {
        if let Some(slot) = self.bound.iter().rposition(|b| b == name) {
            return Ok(Node::Var(slot));
        }
        Ok(match self.symbols.get(name) {
            Some(Symbol::Macro(i)) => Node::Macro(*i),
            Some(Symbol::List(i)) => Node::List(self.lists[*i].clone()),
            Some(Symbol::Cluster) => Node::Cluster,
            Some(Symbol::Top) => return Err(Unsupported),
            None => Node::Field(Self::intern(&mut self.out.fields, name.to_string())),
        })
    }

    fn node(&mut self, expr: &Expression) -> Result<Node, Unsupported> {
        match &expr.expr {
            Expr::Literal(lit) => literal(lit).map(Node::Const),
            Expr::Ident(name) => self.ident(name),
            Expr::Select(s) => {
                // A dotted name the rule set defines (`a.b` as a list) would shadow the path.
                if let Some(segments) = qualified_name(expr) {
                    for n in 2..=segments.len() {
                        if self.symbols.contains_key(&segments[..n].join(".")) {
                            return Err(Unsupported);
                        }
                    }
                }
                let operand = self.child(&s.operand)?;
                Ok(if s.test {
                    Node::Has(operand, s.field.clone())
                } else {
                    Node::Select(operand, s.field.clone())
                })
            }
            Expr::List(l) if l.optional_indices.is_empty() => {
                let literals = l
                    .elements
                    .iter()
                    .map(|e| match &e.expr {
                        Expr::Literal(lit) => literal(lit),
                        _ => Err(Unsupported),
                    })
                    .collect::<Result<Vec<_>, _>>();
                Ok(match literals {
                    Ok(items) => Node::List(Arc::new(LitList::new(items))),
                    Err(Unsupported) => Node::MakeList(
                        l.elements
                            .iter()
                            .map(|e| self.child(e).map(|n| *n))
                            .collect::<Result<_, _>>()?,
                    ),
                })
            }
            Expr::Map(m) if m.entries.is_empty() => Ok(Node::EmptyMap),
            Expr::Comprehension(c) => {
                if c.iter_var2.is_some() {
                    return Err(Unsupported);
                }
                if let Some((guard, item)) = append_step(c) {
                    let range = *self.child(&c.iter_range)?;
                    let accu = self.bound.len();
                    self.bound.push(c.accu_var.clone());
                    self.bound.push(c.iter_var.clone());
                    let body = (|| {
                        let guard = guard.map(|g| self.node(g)).transpose()?;
                        Ok((guard, self.node(item)?))
                    })();
                    self.bound.truncate(accu);
                    let (guard, item) = body?;
                    return Ok(Node::Collect(Box::new(Collect {
                        range,
                        guard,
                        item,
                        accu,
                    })));
                }
                let range = *self.child(&c.iter_range)?;
                let init = *self.child(&c.accu_init)?;
                let accu = self.bound.len();
                self.bound.push(c.accu_var.clone());
                self.bound.push(c.iter_var.clone());
                let body = (|| {
                    let cond = self.node(&c.loop_cond)?;
                    let step = self.node(&c.loop_step)?;
                    Ok((cond, step))
                })();
                // The result sees the accumulator only (the macros' results do).
                self.bound.pop();
                let result = body.and_then(|b| Ok((b, self.node(&c.result)?)));
                self.bound.pop();
                let ((cond, step), result) = result?;
                let fold = match &c.loop_step.expr {
                    Expr::Call(call)
                        if call.target.is_none()
                            && matches!(call.args.first().map(|a| &a.expr), Some(Expr::Ident(n)) if *n == c.accu_var) =>
                    {
                        match call.func_name.as_str() {
                            operators::LOGICAL_OR => Some(true),
                            operators::LOGICAL_AND => Some(false),
                            _ => None,
                        }
                    }
                    _ => None,
                };
                Ok(lower::quantifier(Loop {
                    range,
                    init,
                    cond,
                    step,
                    result,
                    accu,
                    fold,
                }))
            }
            Expr::Call(call) => self.call(&call.func_name, call.target.as_deref(), &call.args),
            _ => Err(Unsupported),
        }
    }

    fn call(&mut self, name: &str, target: Option<&Expression>, args: &[Expression]) -> Result<Node, Unsupported> {
        let two = |c: &mut Self| -> Result<(Box<Node>, Box<Node>), Unsupported> {
            Ok((c.child(&args[0])?, c.child(&args[1])?))
        };
        if let Some(target) = target {
            let arg = match args {
                [] => None,
                [a] => Some(a),
                _ => return Err(Unsupported),
            };
            return match (name, arg) {
                ("size", None) => Ok(Node::Size(self.child(target)?)),
                ("orValue", Some(a)) => {
                    let default = self.child(a)?;
                    Ok(Node::OrValue(self.child(target)?, default))
                }
                ("startsWith" | "endsWith" | "contains", Some(a)) => {
                    let f = match name {
                        "startsWith" => StrFn::StartsWith,
                        "endsWith" => StrFn::EndsWith,
                        _ => StrFn::Contains,
                    };
                    let a = self.child(a)?;
                    Ok(Node::Str(f, self.child(target)?, a))
                }
                ("matches", Some(a)) => {
                    let pattern = self.pattern(a)?;
                    Ok(Node::Matches {
                        text: self.child(target)?,
                        pattern,
                        member: true,
                    })
                }
                ("join", None) => Ok(Node::Native(NativeFn::Join, Box::new([*self.child(target)?]))),
                ("join", Some(a)) => {
                    let sep = self.child(a)?;
                    Ok(Node::Native(NativeFn::Join, Box::new([*self.child(target)?, *sep])))
                }
                ("split", Some(a)) => {
                    let sep = self.child(a)?;
                    Ok(Node::Native(NativeFn::Split, Box::new([*self.child(target)?, *sep])))
                }
                // `cidr(net).containsIP(ip)`: the CIDR is never a value of its own here.
                ("containsIP", Some(a)) => match &target.expr {
                    Expr::Call(c) if c.func_name == "cidr" && c.target.is_none() && c.args.len() == 1 => {
                        let net = self.child(&c.args[0])?;
                        Ok(Node::Native(
                            NativeFn::CidrContainsIp,
                            Box::new([*net, *self.child(a)?]),
                        ))
                    }
                    _ => Err(Unsupported),
                },
                _ => Err(Unsupported),
            };
        }
        let node = match (name, args.len()) {
            (operators::CONDITIONAL, 3) => {
                Node::Cond(self.child(&args[0])?, self.child(&args[1])?, self.child(&args[2])?)
            }
            (operators::LOGICAL_AND, 2) => two(self).map(|(a, b)| Node::And(a, b))?,
            (operators::LOGICAL_OR, 2) => two(self).map(|(a, b)| Node::Or(a, b))?,
            (operators::EQUALS, 2) => two(self).map(|(a, b)| Node::Eq(a, b))?,
            (operators::NOT_EQUALS, 2) => two(self).map(|(a, b)| Node::Ne(a, b))?,
            (operators::LESS, 2) => two(self).map(|(a, b)| Node::Cmp(Cmp::Lt, a, b))?,
            (operators::LESS_EQUALS, 2) => two(self).map(|(a, b)| Node::Cmp(Cmp::Le, a, b))?,
            (operators::GREATER, 2) => two(self).map(|(a, b)| Node::Cmp(Cmp::Gt, a, b))?,
            (operators::GREATER_EQUALS, 2) => two(self).map(|(a, b)| Node::Cmp(Cmp::Ge, a, b))?,
            (operators::IN, 2) => two(self).map(|(a, b)| Node::In(a, b))?,
            (operators::INDEX, 2) => match two(self)? {
                (a, b) if matches!(*b, Node::Const(Const::Int(0))) => match *a {
                    Node::Native(NativeFn::Split, args) => Node::Native(NativeFn::SplitFirst, args),
                    a => Node::Index(Box::new(a), b),
                },
                (a, b) => Node::Index(a, b),
            },
            (operators::OPT_INDEX, 2) => two(self).map(|(a, b)| Node::OptIndex(a, b))?,
            (operators::ADD, 2) => {
                let (a, b) = two(self)?;
                match (*a, *b) {
                    // Lists of literals joined (the Falco importer writes `['a'] + some_list`).
                    (Node::List(x), Node::List(y)) => Node::List(Arc::new(LitList::new(
                        x.items.iter().chain(&y.items).cloned().collect(),
                    ))),
                    (a, b) => Node::Add(Box::new(a), Box::new(b)),
                }
            }
            (operators::OPT_SELECT, 2) => match &args[1].expr {
                Expr::Literal(LiteralValue::String(field)) => {
                    Node::OptSelect(self.child(&args[0])?, field.inner().to_string())
                }
                _ => return Err(Unsupported),
            },
            (operators::LOGICAL_NOT, 1) => Node::Not(self.child(&args[0])?),
            (operators::NOT_STRICTLY_FALSE, 1) => Node::NotStrictlyFalse(self.child(&args[0])?),
            ("size", 1) => Node::Size(self.child(&args[0])?),
            ("string", 1) => Node::ToString(self.child(&args[0])?),
            ("matches", 2) => {
                let text = self.child(&args[0])?;
                Node::Matches {
                    text,
                    pattern: self.pattern(&args[1])?,
                    member: false,
                }
            }
            ("pod_spec", 1) => Node::PodSpec(self.child(&args[0])?),
            ("pod_containers", 1) => Node::PodContainers(self.child(&args[0])?),
            ("image_registry", 1) => {
                Node::Native(NativeFn::Image(ImagePart::Registry), Box::new([*self.child(&args[0])?]))
            }
            ("image_repository", 1) => Node::Native(
                NativeFn::Image(ImagePart::Repository),
                Box::new([*self.child(&args[0])?]),
            ),
            ("image_tag", 1) => Node::Native(NativeFn::Image(ImagePart::Tag), Box::new([*self.child(&args[0])?])),
            ("image_digest", 1) => Node::Native(NativeFn::Image(ImagePart::Digest), Box::new([*self.child(&args[0])?])),
            ("exec_command", 1) => Node::Native(NativeFn::ExecCommand, Box::new([*self.child(&args[0])?])),
            ("isIP", 1) => Node::Native(NativeFn::IsIp, Box::new([*self.child(&args[0])?])),
            ("falco_field", 3) => {
                let text = |e: &Expression| match &e.expr {
                    Expr::Literal(LiteralValue::String(s)) => Ok(s.inner().to_string()),
                    _ => Err(Unsupported),
                };
                let (field, arg) = (text(&args[1])?, text(&args[2])?);
                let root = match &args[0].expr {
                    Expr::Ident(n) if !self.bound.contains(n) => match self.symbols.get(n) {
                        Some(Symbol::Top) => Root::Top,
                        None => Root::Field(n.clone()),
                        Some(_) => return Err(Unsupported),
                    },
                    _ => return Err(Unsupported),
                };
                let root = Self::intern(
                    &mut self.out.roots,
                    (root, crate::engine::functions::falco::root_keys(&field)),
                );
                let key = (root, field, arg);
                Node::FalcoField(Self::intern(&mut self.out.falco, key))
            }
            ("falco_op", 3) => Node::FalcoOp(Box::new([
                *self.child(&args[0])?,
                *self.child(&args[1])?,
                *self.child(&args[2])?,
            ])),
            _ => return Err(Unsupported),
        };
        Ok(node)
    }

    fn pattern(&mut self, expr: &Expression) -> Result<Pattern, Unsupported> {
        match &expr.expr {
            Expr::Literal(LiteralValue::String(p)) => super::functions::compiled_regex(p.inner())
                .map(Pattern::Fixed)
                .map_err(|_| Unsupported),
            _ => Ok(Pattern::Computed(self.child(expr)?)),
        }
    }
}

/// The guard and the item of a `map`/`filter` comprehension: its accumulator starts as `[]`, it
/// always continues, its step is `@result + [item]` (or `guard ? @result + [item] : @result`)
/// and its result is `@result`.
fn append_step(c: &cel::common::ast::ComprehensionExpr) -> Option<(Option<&Expression>, &Expression)> {
    let is_accu = |e: &Expression| matches!(&e.expr, Expr::Ident(n) if *n == c.accu_var);
    fn item_of<'c>(e: &'c Expression, is_accu: &dyn Fn(&Expression) -> bool) -> Option<&'c Expression> {
        match &e.expr {
            Expr::Call(call) if call.func_name == operators::ADD && call.target.is_none() => match call.args.as_slice()
            {
                [accu, list] if is_accu(accu) => match &list.expr {
                    Expr::List(l) if l.elements.len() == 1 && l.optional_indices.is_empty() => Some(&l.elements[0]),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        }
    }
    let empty_init = matches!(&c.accu_init.expr, Expr::List(l) if l.elements.is_empty());
    let continues = matches!(&c.loop_cond.expr, Expr::Literal(LiteralValue::Boolean(b)) if *b.inner());
    if !empty_init || !continues || !is_accu(&c.result) {
        return None;
    }
    match &c.loop_step.expr {
        Expr::Call(call) if call.func_name == operators::CONDITIONAL && call.target.is_none() => {
            match call.args.as_slice() {
                [guard, step, otherwise] if is_accu(otherwise) => Some((Some(guard), item_of(step, &is_accu)?)),
                _ => None,
            }
        }
        _ => Some((None, item_of(&c.loop_step, &is_accu)?)),
    }
}

/// An expression's structure as text, node ids left out: equal for equal sub-expressions.
fn shape(expr: &Expression) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    // (expression, or a closing text to write)
    let mut stack: Vec<Result<&Expression, &str>> = vec![Ok(expr)];
    while let Some(item) = stack.pop() {
        let e = match item {
            Ok(e) => e,
            Err(text) => {
                out.push_str(text);
                continue;
            }
        };
        match &e.expr {
            Expr::Literal(l) => {
                let _ = write!(out, "{l:?}");
            }
            Expr::Ident(n) => {
                let _ = write!(out, "${n}");
            }
            Expr::Select(s) => {
                let _ = write!(out, "sel{}({}:", if s.test { "?" } else { "" }, s.field);
                stack.push(Err(")"));
                stack.push(Ok(&s.operand));
            }
            Expr::Call(c) => {
                let _ = write!(out, "{}(", c.func_name);
                stack.push(Err(")"));
                for a in c.args.iter().rev() {
                    stack.push(Err(","));
                    stack.push(Ok(a));
                }
                if let Some(t) = &c.target {
                    stack.push(Err("|"));
                    stack.push(Ok(t));
                }
            }
            Expr::List(l) => {
                let _ = write!(out, "list{:?}[", l.optional_indices);
                stack.push(Err("]"));
                for a in l.elements.iter().rev() {
                    stack.push(Err(","));
                    stack.push(Ok(a));
                }
            }
            Expr::Comprehension(c) => {
                let _ = write!(out, "comp({},{:?},{}:", c.iter_var, c.iter_var2, c.accu_var);
                stack.push(Err(")"));
                for part in [&c.result, &c.loop_step, &c.loop_cond, &c.accu_init, &c.iter_range] {
                    stack.push(Err(";"));
                    stack.push(Ok(part));
                }
            }
            // Maps and structs are never shared (their entries carry ids).
            other => {
                let _ = write!(out, "#{}", e.id);
                let _ = other;
            }
        }
    }
    out
}

/// The segments of a dotted name `a.b.c` (a chain of field selections on a name).
fn qualified_name(expr: &Expression) -> Option<Vec<&str>> {
    let mut segments = Vec::new();
    let mut e = expr;
    loop {
        match &e.expr {
            Expr::Select(s) if !s.test => {
                segments.push(s.field.as_str());
                e = &s.operand;
            }
            Expr::Ident(name) => {
                segments.push(name.as_str());
                segments.reverse();
                return Some(segments);
            }
            _ => return None,
        }
    }
}

fn literal(lit: &LiteralValue) -> Result<Const, Unsupported> {
    Ok(match lit {
        LiteralValue::Boolean(b) => Const::Bool(*b.inner()),
        LiteralValue::Int(i) => Const::Int(*i.inner()),
        LiteralValue::UInt(u) => Const::UInt(*u.inner()),
        LiteralValue::Double(d) => Const::Double(*d.inner()),
        LiteralValue::Null => Const::Null,
        LiteralValue::String(s) => Const::Str(s.inner().to_string()),
        LiteralValue::Bytes(_) => return Err(Unsupported),
    })
}

mod eval;
mod lower;
mod node;

pub use node::*;

pub use eval::{with_arena, Frame, Outcome};

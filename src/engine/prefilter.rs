//! The prefilter: which rules can possibly match an event, from four cheap keys.
//!
//! Each rule's condition is read (macros followed) for what it demands of `verb`,
//! `objectRef.resource`, `objectRef.subresource` and `stage`: `verb == 'create'`,
//! `verb in ['get', 'create']`, `objectRef.resource in some_list`, combined through `&&`
//! (intersection) and `||` (union). Anything else demands nothing. Nobody declares these by
//! hand, so they cannot drift from the condition. At run time four hash lookups and a few
//! word-wide ANDs give the candidate rules; most audit events (reads) skip CEL entirely.

use crate::audit::RouteKeys;
use cel::common::ast::{Expr, LiteralValue};
use cel::parser::Expression;
use std::collections::{BTreeSet, HashMap};

/// What a rule allows in one dimension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Any,
    Only(BTreeSet<String>),
}

impl Allowed {
    fn and(self, other: Allowed) -> Allowed {
        match (self, other) {
            (Allowed::Any, x) | (x, Allowed::Any) => x,
            (Allowed::Only(a), Allowed::Only(b)) => Allowed::Only(a.intersection(&b).cloned().collect()),
        }
    }
    fn or(self, other: Allowed) -> Allowed {
        match (self, other) {
            (Allowed::Any, _) | (_, Allowed::Any) => Allowed::Any,
            (Allowed::Only(mut a), Allowed::Only(b)) => {
                a.extend(b);
                Allowed::Only(a)
            }
        }
    }
}

pub const DIMENSIONS: [&str; 4] = ["verb", "objectRef.resource", "objectRef.subresource", "stage"];

/// What a condition demands of the four keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route(pub [Allowed; 4]);

impl Route {
    pub fn any() -> Route {
        Route([Allowed::Any, Allowed::Any, Allowed::Any, Allowed::Any])
    }
    fn only(dim: usize, values: BTreeSet<String>) -> Route {
        let mut r = Route::any();
        r.0[dim] = Allowed::Only(values);
        r
    }
    fn and(self, other: Route) -> Route {
        let [a0, a1, a2, a3] = self.0;
        let [b0, b1, b2, b3] = other.0;
        Route([a0.and(b0), a1.and(b1), a2.and(b2), a3.and(b3)])
    }
    fn or(self, other: Route) -> Route {
        let [a0, a1, a2, a3] = self.0;
        let [b0, b1, b2, b3] = other.0;
        Route([a0.or(b0), a1.or(b1), a2.or(b2), a3.or(b3)])
    }
}

/// Names the analysis can see through.
pub trait Names {
    fn macro_expr(&self, name: &str) -> Option<&Expression>;
    fn list_strings(&self, name: &str) -> Option<Vec<String>>;
}

/// Reads what `expr` demands of the prefilter keys.
pub fn analyze(expr: &Expression, names: &dyn Names) -> Route {
    analyze_depth(expr, names, 0)
}

fn analyze_depth(expr: &Expression, names: &dyn Names, depth: usize) -> Route {
    if depth > 64 {
        return Route::any();
    }
    match &expr.expr {
        Expr::Ident(name) => match names.macro_expr(name) {
            Some(body) => analyze_depth(body, names, depth + 1),
            None => Route::any(),
        },
        Expr::Call(call) if call.target.is_none() && call.args.len() == 2 => {
            let (a, b) = (&call.args[0], &call.args[1]);
            match call.func_name.as_str() {
                "_&&_" => analyze_depth(a, names, depth + 1).and(analyze_depth(b, names, depth + 1)),
                "_||_" => analyze_depth(a, names, depth + 1).or(analyze_depth(b, names, depth + 1)),
                "_==_" => match (dimension(a), string_literal(b), dimension(b), string_literal(a)) {
                    (Some(d), Some(s), _, _) | (_, _, Some(d), Some(s)) => Route::only(d, [s].into()),
                    _ => Route::any(),
                },
                "@in" => match (dimension(a), strings(b, names)) {
                    (Some(d), Some(values)) => Route::only(d, values),
                    _ => Route::any(),
                },
                _ => Route::any(),
            }
        }
        _ => Route::any(),
    }
}

/// The event's top-level fields `expr` reads (macros followed; lists and comprehension
/// variables are not fields). What a rule needs of the audit level follows from it: a rule that
/// reads `requestObject` needs `Request`.
pub fn reads(expr: &Expression, names: &dyn Names) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    collect_reads(expr, names, &mut Vec::new(), &mut out, 0);
    out
}

fn collect_reads(
    expr: &Expression,
    names: &dyn Names,
    bound: &mut Vec<String>,
    out: &mut BTreeSet<String>,
    depth: usize,
) {
    if depth > 64 {
        return;
    }
    match &expr.expr {
        Expr::Ident(name) => {
            if let Some(body) = names.macro_expr(name) {
                collect_reads(body, names, bound, out, depth + 1);
            } else if names.list_strings(name).is_none() && !bound.contains(name) {
                out.insert(name.clone());
            }
        }
        Expr::Select(select) => collect_reads(&select.operand, names, bound, out, depth + 1),
        Expr::Call(call) => {
            if let Some(target) = &call.target {
                collect_reads(target, names, bound, out, depth + 1);
            }
            for arg in &call.args {
                collect_reads(arg, names, bound, out, depth + 1);
            }
        }
        Expr::List(list) => {
            for e in &list.elements {
                collect_reads(e, names, bound, out, depth + 1);
            }
        }
        Expr::Map(map) => {
            for entry in &map.entries {
                if let cel::common::ast::EntryExpr::MapEntry(e) = &entry.expr {
                    collect_reads(&e.key, names, bound, out, depth + 1);
                    collect_reads(&e.value, names, bound, out, depth + 1);
                }
            }
        }
        Expr::Comprehension(c) => {
            collect_reads(&c.iter_range, names, bound, out, depth + 1);
            bound.push(c.iter_var.clone());
            bound.push(c.accu_var.clone());
            collect_reads(&c.accu_init, names, bound, out, depth + 1);
            collect_reads(&c.loop_cond, names, bound, out, depth + 1);
            collect_reads(&c.loop_step, names, bound, out, depth + 1);
            collect_reads(&c.result, names, bound, out, depth + 1);
            bound.pop();
            bound.pop();
        }
        _ => {}
    }
}

fn dimension(expr: &Expression) -> Option<usize> {
    match &expr.expr {
        Expr::Ident(name) if name == "verb" => Some(0),
        Expr::Ident(name) if name == "stage" => Some(3),
        Expr::Select(select) if !select.test => match &select.operand.expr {
            Expr::Ident(obj) if obj == "objectRef" => match select.field.as_str() {
                "resource" => Some(1),
                "subresource" => Some(2),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn string_literal(expr: &Expression) -> Option<String> {
    match &expr.expr {
        Expr::Literal(LiteralValue::String(s)) => Some(s.inner().to_string()),
        _ => None,
    }
}

fn strings(expr: &Expression, names: &dyn Names) -> Option<BTreeSet<String>> {
    match &expr.expr {
        Expr::List(list) => list.elements.iter().map(string_literal).collect(),
        Expr::Ident(name) => names.list_strings(name).map(|v| v.into_iter().collect()),
        _ => None,
    }
}

/// Rule sets as bitsets per key value.
#[derive(Debug, Default)]
pub struct Prefilter {
    words: usize,
    dims: [Dimension; 4],
}

#[derive(Debug, Default)]
struct Dimension {
    any: Vec<u64>,
    by_value: HashMap<String, Vec<u64>>,
}

impl Prefilter {
    /// `routes[i]` is rule `i`'s route, `None` for a rule that never runs (disabled).
    pub fn new(routes: &[Option<Route>]) -> Prefilter {
        let words = routes.len().div_ceil(64).max(1);
        let mut dims: [Dimension; 4] = Default::default();
        for dim in &mut dims {
            dim.any = vec![0; words];
        }
        for (i, route) in routes.iter().enumerate() {
            let Some(route) = route else { continue };
            let (word, bit) = (i / 64, 1u64 << (i % 64));
            for (d, allowed) in route.0.iter().enumerate() {
                match allowed {
                    Allowed::Any => dims[d].any[word] |= bit,
                    Allowed::Only(values) => {
                        for v in values {
                            dims[d].by_value.entry(v.clone()).or_insert_with(|| vec![0; words])[word] |= bit;
                        }
                    }
                }
            }
        }
        Prefilter { words, dims }
    }

    /// The rules that may match an event with these keys, as a bitset.
    pub fn candidates(&self, keys: &RouteKeys, out: &mut Vec<u64>) {
        out.clear();
        out.resize(self.words, u64::MAX);
        let values = [&keys.verb, &keys.resource, &keys.subresource, &keys.stage];
        for (dim, value) in self.dims.iter().zip(values) {
            let listed = value.as_deref().and_then(|v| dim.by_value.get(v));
            for (w, word) in out.iter_mut().enumerate() {
                *word &= dim.any[w] | listed.map_or(0, |l| l[w]);
            }
        }
    }
}

/// The indices of the set bits, in order.
pub fn bits(set: &[u64]) -> impl Iterator<Item = usize> + '_ {
    set.iter().enumerate().flat_map(|(w, &word)| {
        let mut word = word;
        std::iter::from_fn(move || {
            if word == 0 {
                return None;
            }
            let bit = word.trailing_zeros() as usize;
            word &= word - 1;
            Some(w * 64 + bit)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    struct NoNames(HashMap<String, Expression>);
    impl Names for NoNames {
        fn macro_expr(&self, name: &str) -> Option<&Expression> {
            self.0.get(name)
        }
        fn list_strings(&self, name: &str) -> Option<Vec<String>> {
            (name == "exec_verbs").then(|| vec!["get".into(), "create".into()])
        }
    }

    fn route(src: &str) -> Route {
        let env = cel::Env::stdlib();
        let mut macros = HashMap::new();
        macros.insert(
            "pod_write".to_string(),
            env.compile("objectRef.resource == 'pods' && verb in ['create', 'update']")
                .unwrap()
                .expression()
                .clone(),
        );
        analyze(env.compile(src).unwrap().expression(), &NoNames(macros))
    }

    fn only(values: &[&str]) -> Allowed {
        Allowed::Only(values.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn derives_routes_from_conditions() {
        let r = route("pod_write && stage == 'ResponseComplete' && requestObject.x == 1");
        assert_eq!(
            r.0,
            [
                only(&["create", "update"]),
                only(&["pods"]),
                Allowed::Any,
                only(&["ResponseComplete"])
            ]
        );
        let r = route("verb in exec_verbs && objectRef.subresource in ['exec', 'attach']");
        assert_eq!(r.0[0], only(&["create", "get"]));
        assert_eq!(r.0[2], only(&["attach", "exec"]));
        let r = route("verb == 'create' || verb == 'delete'");
        assert_eq!(r.0[0], only(&["create", "delete"]));
        let r = route("verb == 'create' || user.username == 'x'");
        assert_eq!(r, Route::any());
        assert_eq!(route("!(verb == 'get')"), Route::any());
        assert_eq!(route("[1].exists(verb, verb == 'get')"), Route::any());
    }

    #[test]
    fn index_selects_candidates() {
        let routes = vec![
            Some(route("verb == 'create' && objectRef.resource == 'pods'")),
            Some(route("objectRef.subresource == 'exec'")),
            None,
            Some(route("true")),
        ];
        let pf = Prefilter::new(&routes);
        let keys = |verb: &'static str, res: &'static str, sub: Option<&'static str>| RouteKeys {
            verb: Some(Cow::Borrowed(verb)),
            resource: Some(Cow::Borrowed(res)),
            subresource: sub.map(Cow::Borrowed),
            stage: Some(Cow::Borrowed("ResponseComplete")),
        };
        let mut out = Vec::new();
        pf.candidates(&keys("create", "pods", None), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [0, 3]);
        pf.candidates(&keys("get", "pods", Some("exec")), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [1, 3]);
        pf.candidates(&keys("get", "secrets", None), &mut out);
        assert_eq!(bits(&out).collect::<Vec<_>>(), [3]);
    }
}

//! Cheaper forms of the loops CEL's `exists` and `all` macros expand to, chosen at load.
//!
//! A macro's comprehension carries an accumulator and a loop condition that the compiled path
//! would evaluate for every item; [`quantifier`] recognises the shape and runs the body alone
//! ([`Node::Quantifier`]). Over a list known at load (a rule file's list, a list of literals)
//! with a body that holds no loop of its own, the loop is unrolled into `||` (or `&&`) of the
//! body with each item put in, folded (`'system:serviceaccount:' + ns + ':'` becomes one
//! string), and runs of the same test on the same value become one node that reads the value
//! once ([`Node::StrAny`], [`Node::InNets`]). Each form gives what the loop gives, errors
//! included: CEL's `||` and `&&` absorb errors as the macros' folds do, and a run is only ever
//! of adjacent terms, so the last error is still the one reported.

use super::{Const, Loop, NativeFn, Node, Quantifier};
use crate::engine::net::parse_cidr;

/// The longest literal list a quantifier is unrolled over.
const UNROLL_MAX: usize = 64;

/// `l` as a quantifier, unrolled where it can be; any other comprehension as it is.
pub(super) fn quantifier(l: Loop) -> Node {
    let Some(absorbing) = macro_shape(&l) else {
        return Node::Comprehension(Box::new(l));
    };
    let Loop { range, step, accu, .. } = l;
    let body = match step {
        Node::Or(_, body) | Node::And(_, body) => *body,
        _ => unreachable!("macro_shape checked the step"),
    };
    match range {
        Node::List(list) if list.items.len() <= UNROLL_MAX && unrollable(&body, accu) => {
            let terms = list
                .items
                .iter()
                .map(|item| substitute(body.clone(), accu + 1, item))
                .collect();
            chain(runs(terms, absorbing), absorbing)
        }
        range => Node::Quantifier(Box::new(Quantifier {
            range,
            body,
            accu,
            absorbing,
        })),
    }
}

/// `Some(absorbing)` when `l` is `exists` (`true`) or `all` (`false`) as CEL expands them:
/// the accumulator starts at the other value, the loop goes on while it is not the absorbing
/// one, each step is `@result || body` (or `&&`), and the result is the accumulator.
fn macro_shape(l: &Loop) -> Option<bool> {
    let absorbing = l.fold?;
    let is_accu = |n: &Node| matches!(n, Node::Var(s) if *s == l.accu);
    let starts = matches!(l.init, Node::Const(Const::Bool(b)) if b != absorbing);
    let goes_on = match &l.cond {
        Node::NotStrictlyFalse(c) if absorbing => matches!(&**c, Node::Not(a) if is_accu(a)),
        Node::NotStrictlyFalse(c) => is_accu(c),
        _ => false,
    };
    let body = match (&l.step, absorbing) {
        (Node::Or(a, body), true) | (Node::And(a, body), false) if is_accu(a) => body,
        _ => return None,
    };
    let reads_accu = body.any(&|n| matches!(n, Node::Var(s) if *s == l.accu));
    (starts && goes_on && is_accu(&l.result) && !reads_accu).then_some(absorbing)
}

/// Whether a body can have its variable replaced by each item: it holds no loop whose slots
/// would move.
fn unrollable(body: &Node, accu: usize) -> bool {
    !body.any(&|n| {
        matches!(n, Node::Comprehension(_) | Node::Quantifier(_) | Node::Collect(_))
            || matches!(n, Node::Var(s) if *s > accu + 1)
    })
}

/// `body` with the variable in `slot` replaced by `item`, folded.
fn substitute(body: Node, slot: usize, item: &Const) -> Node {
    body.rewrite(&mut |n| match n {
        Node::Var(s) if s == slot => Node::Const(item.clone()),
        Node::Add(a, b) => match (*a, *b) {
            (Node::Const(Const::Str(x)), Node::Const(Const::Str(y))) => Node::Const(Const::Str(x + &y)),
            (a, b) => Node::Add(Box::new(a), Box::new(b)),
        },
        n => n,
    })
}

/// The terms with each run of adjacent tests of one value against constants made one node.
/// Under `all`, a run of negated tests is the negation of their run (De Morgan holds for CEL's
/// error-absorbing logic: every term of a run fails alike when the tested value does).
fn runs(terms: Vec<Node>, absorbing: bool) -> Vec<Node> {
    let mut out: Vec<Node> = Vec::new();
    for term in terms {
        let (negated, test) = match term {
            Node::Not(t) if !absorbing => (true, single(*t)),
            t => (false, single(t)),
        };
        let run = match out.last_mut() {
            Some(Node::Not(inner)) if negated => Some(&mut **inner),
            Some(last) if !negated => Some(last),
            _ => None,
        };
        let left = match run {
            Some(run) => merge(run, test),
            None => Err(test),
        };
        if let Err(test) = left {
            out.push(if negated { Node::Not(Box::new(test)) } else { test });
        }
    }
    out
}

/// A test of a value against one constant as a run of one; any other node unchanged.
fn single(test: Node) -> Node {
    match test {
        Node::Str(f, target, arg) => match *arg {
            Node::Const(Const::Str(c)) => Node::StrAny(f, target, vec![c]),
            arg => Node::Str(f, target, Box::new(arg)),
        },
        Node::Native(NativeFn::CidrContainsIp, args) => {
            let net = match &*args {
                [Node::Const(Const::Str(net)), _] => parse_cidr(net).ok(),
                _ => None,
            };
            match net {
                Some(net) => {
                    let [_, ip]: [Node; 2] = args.into_vec().try_into().expect("two arguments");
                    Node::InNets(Box::new(ip), vec![net])
                }
                None => Node::Native(NativeFn::CidrContainsIp, args),
            }
        }
        other => other,
    }
}

/// Appends the run `next` to the run `run` if both test the same value the same way; else
/// gives it back.
fn merge(run: &mut Node, next: Node) -> Result<(), Node> {
    match (run, next) {
        (Node::StrAny(f, target, consts), Node::StrAny(g, t, more)) if *f == g && same(target, &t) => {
            consts.extend(more);
            Ok(())
        }
        (Node::InNets(target, nets), Node::InNets(t, more)) if same(target, &t) => {
            nets.extend(more);
            Ok(())
        }
        (_, next) => Err(next),
    }
}

/// Whether two nodes always give the same value within one evaluation (only the simple
/// forms a run's tested value takes are compared; anything else is "not the same").
fn same(a: &Node, b: &Node) -> bool {
    match (a, b) {
        (Node::Const(x), Node::Const(y)) => x == y,
        (Node::Field(x), Node::Field(y)) | (Node::Var(x), Node::Var(y)) | (Node::Macro(x), Node::Macro(y)) => x == y,
        (Node::FalcoField(x), Node::FalcoField(y)) => x == y,
        (Node::Cluster, Node::Cluster) => true,
        (Node::Select(x, f), Node::Select(y, g))
        | (Node::OptSelect(x, f), Node::OptSelect(y, g))
        | (Node::Has(x, f), Node::Has(y, g)) => f == g && same(x, y),
        (Node::OrValue(x, d), Node::OrValue(y, e)) => same(x, y) && same(d, e),
        _ => false,
    }
}

/// The terms joined by `||` (`absorbing` true) or `&&`, left to right as the loop visits
/// them; no terms is the loop's value over an empty list.
fn chain(terms: Vec<Node>, absorbing: bool) -> Node {
    let mut terms = terms.into_iter();
    let Some(first) = terms.next() else {
        return Node::Const(Const::Bool(!absorbing));
    };
    terms.fold(first, |acc, t| {
        if absorbing {
            Node::Or(Box::new(acc), Box::new(t))
        } else {
            Node::And(Box::new(acc), Box::new(t))
        }
    })
}

#[cfg(test)]
mod tests {
    use crate::audit::EventView;
    use crate::engine::compiled::Node;
    use crate::engine::{EvalPath, Matching, RuleSet, Verdict};

    const CONDITIONS: &[&str] = &[
        "['kube-system', 'gke-system'].exists(ns, user.username.startsWith('system:serviceaccount:' + ns + ':'))",
        "sourceIPs.exists(a, !isIP(a) || !['10.0.0.0/8', 'fc00::/7'].exists(n, cidr(n).containsIP(a)))",
        "['curl', 'python'].all(p, !userAgent.startsWith(p))",
        "user.groups.exists(g, g in ['system:masters'])",
        "['get', 1].exists(x, verb == x)",
        "[].exists(x, verb == x)",
        "['x', 'y'].exists(v, user.username.startsWith(v) || verb.startsWith(v))",
        "['curl', 'py'].exists(p, userAgent.startsWith(p)) && ['a'].exists(p, verb.endsWith(p))",
        "[verb, user.username].exists(x, x == 'get')",
        "size([verb, objectRef.resource]) == 2",
        "userAgent.split('/')[0] == 'curl'",
    ];

    fn rules() -> RuleSet {
        let mut text = String::new();
        for (i, c) in CONDITIONS.iter().enumerate() {
            text.push_str(&format!(
                "- rule: r{i}\n  desc: d\n  condition: {}\n  output: o\n  priority: notice\n",
                serde_json::to_string(c).unwrap()
            ));
        }
        RuleSet::from_text("lower.yaml", &text, Matching::All).unwrap()
    }

    #[test]
    fn known_lists_are_unrolled_into_runs_and_other_macros_become_quantifiers() {
        let set = rules();
        let c = &set.compiled.conditions;
        assert!(
            matches!(&c[0], Node::StrAny(_, _, consts) if consts.len() == 2),
            "{:?}",
            c[0]
        );
        let nets = c[1].any(&|n| matches!(n, Node::InNets(_, nets) if nets.len() == 2));
        assert!(nets && matches!(&c[1], Node::Quantifier(_)), "{:?}", c[1]);
        assert!(
            matches!(&c[2], Node::Not(n) if matches!(&**n, Node::StrAny(..))),
            "{:?}",
            c[2]
        );
        assert!(matches!(&c[3], Node::Quantifier(_)), "{:?}", c[3]);
        assert!(matches!(&c[5], Node::Const(_)), "{:?}", c[5]);
        let first = |n: &Node| matches!(n, Node::Native(crate::engine::compiled::NativeFn::SplitFirst, _));
        assert!(c[10].any(&first), "{:?}", c[10]);
        // A list of fields is built natively, not left to the interpreter.
        assert!(c.iter().all(|n| n.interpreted_parts() == 0));
    }

    #[test]
    fn unrolled_and_quantified_loops_answer_as_the_interpreter_does() {
        let set = rules();
        let events = [
            r#"{"user":{"username":"system:serviceaccount:kube-system:x","groups":["system:masters"]},"sourceIPs":["10.1.2.3"],"userAgent":"curl/8","verb":"get"}"#,
            r#"{"user":{"username":"system:serviceaccount:team:x","groups":[1,"g"]},"sourceIPs":["fd00::1","203.0.113.9"],"userAgent":"kubectl","verb":"a"}"#,
            r#"{"user":{"username":7,"groups":"x"},"sourceIPs":["not-an-ip",5],"userAgent":3,"verb":2}"#,
            r#"{"user":{},"sourceIPs":[],"verb":"get"}"#,
            r#"{"sourceIPs":"10.0.0.1","userAgent":"python-requests/2","verb":"list"}"#,
            r#"{"user":{"username":"x"},"sourceIPs":["::ffff:10.0.0.1"],"userAgent":"py","verb":"xa"}"#,
        ];
        let mut seen = std::collections::HashSet::new();
        let events = events.map(|e| e.replacen('{', r#"{"auditID":"a","stage":"ResponseComplete","#, 1));
        for e in &events {
            let view = EventView::parse(e).unwrap();
            let compiled = set.verdicts(&view, "c1", EvalPath::Compiled);
            assert_eq!(compiled, set.verdicts(&view, "c1", EvalPath::Interpreted), "{e}");
            seen.extend(compiled);
        }
        // The events reach every kind of answer.
        assert_eq!(seen.len(), 4, "{seen:?}");
        let first = EventView::parse(&events[0]).unwrap();
        let v = set.verdicts(&first, "c1", EvalPath::Compiled);
        use Verdict::*;
        assert_eq!(
            v,
            [Match, NoMatch, NoMatch, Match, Match, NoMatch, NoMatch, NoMatch, Match, Missing, Match]
        );
    }
}

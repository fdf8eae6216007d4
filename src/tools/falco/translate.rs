//! Falco conditions as CEL: a rule's condition, macros and exceptions, parsed by
//! [`super::condition`], written as kaudit CEL over Falco's field extraction (see the parent
//! module for the semantics kept).

use super::condition::{self, Check, Expr, Value};
use crate::engine::functions::falco as fields;
use crate::engine::rules::{ExceptionValue, RuleDef, RuleSource, Scalar};
use indexmap::IndexMap;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// A YAML double-quoted scalar (JSON string syntax is valid YAML).
pub(super) fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// A CEL string literal.
fn cel_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// CEL's reserved words and the names kaudit binds: a Falco macro or list with one of these
/// names gets a trailing `_` in CEL.
const RESERVED: &[&str] = &[
    "as",
    "break",
    "const",
    "continue",
    "else",
    "false",
    "for",
    "function",
    "if",
    "import",
    "in",
    "let",
    "loop",
    "package",
    "namespace",
    "null",
    "return",
    "true",
    "var",
    "void",
    "while",
    "cluster",
    "_top",
    "verb",
    "stage",
    "user",
    "objectRef",
    "requestObject",
    "responseObject",
    "responseStatus",
    "annotations",
    "sourceIPs",
    "userAgent",
    "requestURI",
    "auditID",
    "level",
    "kind",
    "apiVersion",
    "impersonatedUser",
];

/// The CEL name of a Falco macro or list.
pub(super) fn cel_name(name: &str) -> String {
    if RESERVED.contains(&name) {
        format!("{name}_")
    } else {
        name.to_string()
    }
}

pub(super) struct Translator<'a> {
    loaded: &'a RuleSource,
    /// Translated macros: kaudit name → CEL.
    pub(super) macros: IndexMap<String, String>,
    /// Lists the translated conditions use.
    pub(super) lists: BTreeSet<String>,
    visiting: Vec<String>,
}

impl<'a> Translator<'a> {
    pub(super) fn new(loaded: &'a RuleSource) -> Translator<'a> {
        Translator {
            loaded,
            macros: IndexMap::new(),
            lists: BTreeSet::new(),
            visiting: Vec::new(),
        }
    }
}

/// The four prefilter keys, compared directly where a check is not negated.
fn direct(field: &str, arg: Option<&str>) -> Option<&'static str> {
    match (field, arg) {
        ("ka.verb", None) => Some("verb"),
        ("ka.target.resource", None) => Some("objectRef.resource"),
        ("ka.target.subresource", None) => Some("objectRef.subresource"),
        ("ka.stage", None) | ("jevt.value" | "json.value", Some("/stage")) => Some("stage"),
        _ => None,
    }
}

impl Translator<'_> {
    /// A rule as kaudit YAML.
    pub(super) fn rule(&mut self, name: &str, rule: &RuleDef) -> Result<String, String> {
        let mut expr = condition::parse(&rule.condition).map_err(|e| format!("condition: {e}"))?;
        if let Some(exceptions) = self.exceptions(rule)? {
            expr = Expr::And(Box::new(expr), Box::new(Expr::Not(Box::new(exceptions))));
        }
        let cel = self.expr(&expr, true)?;
        let output = self.output(&rule.output)?;
        let priority = rule.priority.as_str().to_ascii_lowercase();
        let mut y = String::new();
        let _ = writeln!(y, "- rule: {}", q(name));
        let _ = writeln!(y, "  desc: {}", q(rule.desc.trim()));
        let _ = writeln!(y, "  condition: {}", q(&cel));
        let _ = writeln!(y, "  output: {}", q(&output));
        let _ = writeln!(y, "  priority: {}", q(&priority));
        let tags: Vec<String> = rule.tags.iter().map(|t| q(t)).collect();
        let _ = writeln!(y, "  tags: [{}]", tags.join(", "));
        let _ = writeln!(y, "  falco: [{}]", q(name));
        // Falco has no dedup: a Falco rule keeps Falco's behaviour, one alert per match.
        let _ = writeln!(y, "  dedup: off");
        if !rule.enabled {
            let _ = writeln!(y, "  enabled: false");
        }
        y.push('\n');
        Ok(y)
    }

    /// A rule's exceptions as one Falco expression (`e1 or e2 …`), `None` when they add nothing.
    /// (The loader wrote the short form out as the long one.)
    fn exceptions(&self, rule: &RuleDef) -> Result<Option<Expr>, String> {
        let mut any: Option<Expr> = None;
        for e in &rule.exceptions {
            for row in &e.values {
                if row.len() != e.fields.len() {
                    return Err(format!(
                        "exception '{}': {} values for {} fields",
                        e.name,
                        row.len(),
                        e.fields.len()
                    ));
                }
                let mut all: Option<Expr> = None;
                for (i, field) in e.fields.iter().enumerate() {
                    let comp = e.comps.get(i).map_or("=", String::as_str);
                    let check = exception_check(field, comp, &row[i]);
                    all = Some(match all {
                        None => check,
                        Some(a) => Expr::And(Box::new(a), Box::new(check)),
                    });
                }
                if let Some(alt) = all {
                    any = Some(match any {
                        None => alt,
                        Some(a) => Expr::Or(Box::new(a), Box::new(alt)),
                    });
                }
            }
        }
        Ok(any)
    }

    fn expr(&mut self, e: &Expr, positive: bool) -> Result<String, String> {
        Ok(match e {
            Expr::Or(a, b) => format!("({} || {})", self.expr(a, positive)?, self.expr(b, positive)?),
            Expr::And(a, b) => format!("({} && {})", self.expr(a, positive)?, self.expr(b, positive)?),
            Expr::Not(a) => format!("!({})", self.expr(a, !positive)?),
            Expr::Macro(name) => self.macro_ref(name, positive)?,
            Expr::Check(c) => self.check(c, positive)?,
        })
    }

    fn macro_ref(&mut self, name: &str, positive: bool) -> Result<String, String> {
        let body = self
            .loaded
            .macros
            .get(name)
            .ok_or(format!("macro '{name}' is not defined"))?
            .clone();
        if !is_ident(name) {
            return Err(format!("macro name '{name}' is not an identifier kaudit can use"));
        }
        let ours = if positive {
            cel_name(name)
        } else {
            format!("{name}__safe")
        };
        if self.macros.contains_key(&ours) {
            return Ok(ours);
        }
        if self.visiting.contains(&ours) {
            return Err(format!("macro '{name}' refers to itself"));
        }
        self.visiting.push(ours.clone());
        let parsed = condition::parse(&body.condition).map_err(|e| format!("macro '{name}': {e}"));
        let translated = parsed.and_then(|p| self.expr(&p, positive).map_err(|e| format!("macro '{name}': {e}")));
        self.visiting.pop();
        self.macros.insert(ours.clone(), translated?);
        Ok(ours)
    }

    /// A value set as a CEL list: literals, and list names (as kaudit lists).
    fn set(&mut self, values: &[Value]) -> String {
        let mut literals = Vec::new();
        let mut parts = Vec::new();
        for v in values {
            if !v.quoted && self.loaded.lists.contains_key(&v.text) && is_ident(&v.text) {
                self.lists.insert(v.text.clone());
                parts.push(cel_name(&v.text));
            } else {
                literals.push(cel_str(&v.text));
            }
        }
        if !literals.is_empty() || parts.is_empty() {
            parts.insert(0, format!("[{}]", literals.join(", ")));
        }
        if parts.len() == 1 {
            parts.remove(0)
        } else {
            format!("({})", parts.join(" + "))
        }
    }

    fn check(&mut self, c: &Check, positive: bool) -> Result<String, String> {
        let info = fields::info(&c.field, c.arg.as_deref()).ok_or(format!(
            "field `{}` is not a Falco k8s_audit or json field kaudit knows",
            c.field
        ))?;
        let arg = c.arg.clone().unwrap_or_default();
        let fv = format!("falco_field({}, {}, {})", info.root, cel_str(&c.field), cel_str(&arg));
        let op = c.op.as_str();
        if positive && c.modifier.is_none() {
            if let Some(key) = direct(&c.field, c.arg.as_deref()) {
                match op {
                    "=" => return Ok(format!("{key} == {}", cel_str(&c.values[0].text))),
                    "in" | "intersects" => return Ok(format!("{key} in {}", self.set(&c.values))),
                    _ => {}
                }
            }
        }
        if op == "exists" {
            return Ok(format!("size({fv}) > 0"));
        }
        if info.list {
            return match op {
                "in" => Ok(format!("(size({fv}) > 0 && {fv}.all(v, v in {}))", self.set(&c.values))),
                "intersects" => Ok(format!("{fv}.exists(v, v in {})", self.set(&c.values))),
                other => Err(format!(
                    "`{}` is a list field: only exists, in and intersects apply to it, not `{other}`",
                    c.field
                )),
            };
        }
        if let Some(modifier) = &c.modifier {
            let set = self.set(&c.values);
            let pred = predicate(op, "v", "x")?;
            let quantifier = match modifier.as_str() {
                "anyof" => "exists",
                "allof" => "all",
                _ => "exists_one",
            };
            return Ok(format!("{fv}.exists(v, {set}.{quantifier}(x, {pred}))"));
        }
        match op {
            "in" | "intersects" => Ok(format!("{fv}.exists(v, v in {})", self.set(&c.values))),
            "pmatch" => Ok(format!(
                "{fv}.exists(v, {}.exists(p, falco_op('pmatch', v, p)))",
                self.set(&c.values)
            )),
            _ => {
                let x = cel_str(&c.values[0].text);
                Ok(format!("{fv}.exists(v, {})", predicate(op, "v", &x)?))
            }
        }
    }

    /// `%field` tokens as `{field: expression}` placeholders (the longest known field wins).
    fn output(&mut self, output: &str) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = output.trim();
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at].replace('{', "{{").replace('}', "}}"));
            rest = &rest[at + 1..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._[]/~-".contains(c)))
                .unwrap_or(rest.len());
            let mut token = &rest[..end];
            // Trailing text glued to a field (`%ka.target.name/%…`, `%ka.verb.`) is not part of it.
            let mut known = None;
            while !token.is_empty() {
                let (field, arg) = match token.find('[') {
                    Some(i) if token.ends_with(']') => (&token[..i], Some(&token[i + 1..token.len() - 1])),
                    _ => (token, None),
                };
                if let Some(info) = fields::info(field, arg) {
                    known = Some((token.len(), field.to_string(), arg.map(str::to_string), info));
                    break;
                }
                token = &token[..token.len() - 1];
            }
            match known {
                Some((len, field, arg, info)) => {
                    let fv = format!(
                        "falco_field({}, {}, {})",
                        info.root,
                        cel_str(&field),
                        cel_str(arg.as_deref().unwrap_or_default())
                    );
                    let name = match &arg {
                        Some(a) => format!("{field}.{a}"),
                        None => field.clone(),
                    };
                    let name: String = name
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '.' || c == '_' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let expr = if info.list { fv } else { format!("{fv}[0]") };
                    let _ = write!(out, "{{{name}: {expr}}}");
                    rest = &rest[len..];
                }
                None => {
                    // Not a field we know (evt.time, a syscall field): kept as text.
                    out.push('%');
                }
            }
        }
        out.push_str(&rest.replace('{', "{{").replace('}', "}}"));
        Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// One exception check: `field comp value`, the value a set under set operators.
fn exception_check(field: &str, comp: &str, exception_value: &ExceptionValue) -> Expr {
    let (f, arg) = match field.find('[') {
        Some(i) if field.ends_with(']') => (field[..i].to_string(), Some(field[i + 1..field.len() - 1].to_string())),
        _ => (field.to_string(), None),
    };
    let value = |v: &Scalar| Value {
        text: v.text(),
        quoted: false,
    };
    let values = match exception_value {
        ExceptionValue::Many(items) => items.iter().map(value).collect(),
        ExceptionValue::One(v) => vec![value(v)],
    };
    let op = if comp == "==" {
        "=".to_string()
    } else {
        comp.to_string()
    };
    Expr::Check(Check {
        field: f,
        arg,
        op,
        modifier: None,
        values,
    })
}

/// A scalar comparison of `v` with `x` (both CEL expressions).
fn predicate(op: &str, v: &str, x: &str) -> Result<String, String> {
    Ok(match op {
        "=" => format!("{v} == {x}"),
        "!=" => format!("{v} != {x}"),
        "<" | "<=" | ">" | ">=" => format!("{v} {op} {x}"),
        "contains" => format!("{v}.contains({x})"),
        "startswith" => format!("{v}.startsWith({x})"),
        "endswith" => format!("{v}.endsWith({x})"),
        "icontains" | "glob" | "iglob" | "regex" | "pmatch" => format!("falco_op('{op}', {v}, {x})"),
        "in" | "intersects" => format!("{v} == {x}"),
        other => return Err(format!("operator `{other}` cannot be translated")),
    })
}

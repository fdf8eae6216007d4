//! Output templates: `Privileged pod (user={user.username} ns={objectRef.namespace})`.
//!
//! Each `{...}` holds a CEL expression (a field path is the usual one) evaluated against the
//! event when the rule fires; `{name: expression}` names it in `output_fields` (otherwise the
//! expression's text is its name); `{{` and `}}` are literal braces. The rendered text is
//! trimmed, so YAML folded scalars (`>`) need no care. A value that cannot be had
//! renders as `<NA>`, as in Falco, and as `null` in `output_fields`.

use cel::{Context, Env, Program, Value};
use serde_json::Map;

pub struct Template {
    parts: Vec<Part>,
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Template")
            .field("placeholders", &self.programs().count())
            .finish()
    }
}

enum Part {
    Text(String),
    Field { name: String, program: Program },
}

impl Template {
    /// Parses and compiles a template; the error says which placeholder and why.
    pub fn compile(env: &Env, text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let end = placeholder_end(&text[i + 1..])
                        .ok_or_else(|| format!("placeholder at column {} has no closing `}}`", i + 1))?;
                    let inner = text[i + 1..i + 1 + end].trim();
                    let (name, expr) = split_name(inner);
                    if expr.is_empty() {
                        return Err(format!("empty placeholder at column {}", i + 1));
                    }
                    let program = env
                        .compile(expr)
                        .map_err(|e| format!("placeholder `{{{inner}}}`: {e}"))?;
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    parts.push(Part::Field {
                        name: name.to_string(),
                        program,
                    });
                    while chars.peek().is_some_and(|(j, _)| *j <= i + 1 + end) {
                        chars.next();
                    }
                }
                '}' => return Err(format!("unmatched `}}` at column {} (write `}}}}` for a brace)", i + 1)),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// The programs of the placeholders (for analysis such as regex validation).
    pub fn programs(&self) -> impl Iterator<Item = &Program> {
        self.parts.iter().filter_map(|p| match p {
            Part::Field { program, .. } => Some(program),
            Part::Text(_) => None,
        })
    }

    /// Renders the text and the fields it quoted.
    pub fn render(&self, ctx: &Context) -> (String, Map<String, serde_json::Value>) {
        self.render_with(|_, program| value(program, ctx))
    }

    /// Renders with each placeholder's value given by `value` (its index and program).
    pub fn render_with(
        &self,
        mut value: impl FnMut(usize, &Program) -> serde_json::Value,
    ) -> (String, Map<String, serde_json::Value>) {
        let mut text = String::new();
        let mut fields = Map::new();
        let mut index = 0;
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Field { name, program } => {
                    let value = value(index, program);
                    index += 1;
                    match &value {
                        serde_json::Value::Null => text.push_str("<NA>"),
                        serde_json::Value::String(s) => text.push_str(s),
                        other => text.push_str(&other.to_string()),
                    }
                    fields.insert(name.clone(), value);
                }
            }
        }
        // Trimmed in place: most texts have nothing to trim.
        let end = text.trim_end().len();
        text.truncate(end);
        let start = text.len() - text.trim_start().len();
        text.drain(..start);
        (text, fields)
    }
}

/// A program's value as JSON, in the interpreter; `null` when it cannot be had.
pub fn value(program: &Program, ctx: &Context) -> serde_json::Value {
    super::bind::catch_panic(|| program.execute(ctx))
        .ok()
        .and_then(|r| r.ok())
        .map(|v| to_json(&v))
        .unwrap_or(serde_json::Value::Null)
}

/// `images: expr` → (`images`, `expr`); a bare expression names itself.
fn split_name(inner: &str) -> (&str, &str) {
    if let Some((name, expr)) = inner.split_once(':') {
        let name = name.trim();
        let is_ident = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if is_ident {
            return (name, expr.trim());
        }
    }
    (inner, inner)
}

/// Where the placeholder that starts `rest` ends: braces balance, quotes hide braces.
fn placeholder_end(rest: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in rest.char_indices() {
        if let Some(q) = quote {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                c if c == q => quote = None,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' | '"' => quote = Some(c),
            '{' => depth += 1,
            '}' if depth == 0 => return Some(i),
            '}' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// A CEL value as JSON.
pub fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        Value::String(s) => J::String(s.to_string()),
        Value::List(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(map) => {
            let mut entries: Vec<(String, J)> = map
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => s.to_string(),
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                    };
                    (key, to_json(v))
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            J::Object(entries.into_iter().collect())
        }
        Value::Timestamp(t) => J::String(t.to_rfc3339()),
        Value::Duration(d) => J::String(format!("{}s", d.num_milliseconds() as f64 / 1000.0)),
        Value::Bytes(b) => J::String(String::from_utf8_lossy(b).into_owned()),
        other => J::String(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_placeholders_and_escapes() {
        let env = Env::stdlib();
        let t = Template::compile(&env, "a {x} {{b}} {m['k}'] } {{").unwrap();
        assert_eq!(t.programs().count(), 2);
        assert!(Template::compile(&env, "a {x").unwrap_err().contains("closing"));
        assert!(Template::compile(&env, "a } b").unwrap_err().contains("unmatched"));
        assert!(Template::compile(&env, "a {1 +} b")
            .unwrap_err()
            .contains("placeholder"));
    }

    #[test]
    fn renders_values_and_missing_fields() {
        let env = Env::stdlib();
        let t = Template::compile(
            &env,
            " u={x} n={missing} l={list: [1,'a']} t={x == 'a' ? 1 : 2} {{ok}}\n",
        )
        .unwrap();
        let mut ctx = Context::default();
        ctx.add_variable_from_value("x", "alice");
        let (text, fields) = t.render(&ctx);
        assert_eq!(text, "u=alice n=<NA> l=[1,\"a\"] t=2 {ok}");
        assert_eq!(fields["list"], serde_json::json!([1, "a"]));
        assert_eq!(fields["x == 'a' ? 1 : 2"], 2);
        assert_eq!(fields["x"], "alice");
        assert!(fields["missing"].is_null());
    }
}

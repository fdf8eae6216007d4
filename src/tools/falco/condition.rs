//! Falco's condition language, parsed (libs `parser.h`, as the reference describes it):
//! `or` < `and` < `not`; a check is `(expr)`, a macro name (no dot), or `field op value`;
//! values are quoted or bare text, lists are `(a, b, c)` or a bare list name after
//! `in`/`intersects`/`pmatch`.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Macro(String),
    Check(Check),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub field: String,
    pub arg: Option<String>,
    pub op: String,
    /// `anyof`, `allof` or `oneof` before the operand, if any.
    pub modifier: Option<String>,
    /// One value for scalar operators; the set for `in`, `intersects`, `pmatch` (list names
    /// are still names here: the importer expands them).
    pub values: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub text: String,
    /// Written in quotes (then never a list name).
    pub quoted: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Comma,
    Op(String),
    Word(String),
    Quoted(String),
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::Comma => f.write_str(","),
            Token::Op(s) | Token::Word(s) => f.write_str(s),
            Token::Quoted(s) => write!(f, "{s:?}"),
        }
    }
}

const SET_OPS: [&str; 3] = ["in", "intersects", "pmatch"];
const WORD_OPS: [&str; 12] = [
    "contains",
    "icontains",
    "bcontains",
    "startswith",
    "bstartswith",
    "endswith",
    "glob",
    "iglob",
    "regex",
    "in",
    "intersects",
    "pmatch",
];

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push(Token::LParen);
                i += 1;
            }
            ')' => {
                tokens.push(Token::RParen);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(format!("unterminated string starting {quote}{s}")),
                        Some('\\') if chars.get(i + 1).is_some() => {
                            s.push(chars[i + 1]);
                            i += 2;
                        }
                        Some(&ch) if ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(&ch) => {
                            s.push(ch);
                            i += 1;
                        }
                    }
                }
                tokens.push(Token::Quoted(s));
            }
            '=' | '!' | '<' | '>' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                if ["==", "!=", "<=", ">="].contains(&two.as_str()) {
                    tokens.push(Token::Op(two));
                    i += 2;
                } else if c == '!' {
                    return Err("`!` is not an operator (use `not` or `!=`)".into());
                } else {
                    tokens.push(Token::Op(c.to_string()));
                    i += 1;
                }
            }
            _ => {
                // A bare word: a field (with an optional [arg]), a macro, a keyword or a value.
                let mut s = String::new();
                while let Some(&ch) = chars.get(i) {
                    if ch.is_whitespace() || "(),=\"'".contains(ch) || (ch == '!' && chars.get(i + 1) == Some(&'=')) {
                        break;
                    }
                    if (ch == '<' || ch == '>') && !s.is_empty() && !s.contains('[') {
                        break;
                    }
                    if ch == '[' {
                        // The argument runs to the matching bracket, whatever it holds.
                        while let Some(&b) = chars.get(i) {
                            s.push(b);
                            i += 1;
                            if b == ']' {
                                break;
                            }
                        }
                        continue;
                    }
                    s.push(ch);
                    i += 1;
                }
                tokens.push(Token::Word(s));
            }
        }
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

pub fn parse(text: &str) -> Result<Expr, String> {
    let mut p = Parser {
        tokens: tokenize(text)?,
        at: 0,
    };
    if p.tokens.is_empty() {
        return Err("empty condition".into());
    }
    let expr = p.or()?;
    match p.peek() {
        None => Ok(expr),
        Some(t) => Err(format!("unexpected `{t}` after a complete condition")),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }
    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Token::Word(w)) if w == word)
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.not()?;
        while self.keyword("and") {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            self.at += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.check()
    }

    fn check(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Token::LParen) => {
                let e = self.or()?;
                match self.next() {
                    Some(Token::RParen) => Ok(e),
                    other => Err(format!("expected `)`, found {}", describe(other))),
                }
            }
            Some(Token::Word(w)) if !w.contains('.') => {
                if ["and", "or", "not"].contains(&w.as_str()) {
                    return Err(format!("`{w}` where a check was expected"));
                }
                Ok(Expr::Macro(w))
            }
            Some(Token::Word(w)) => self.field_check(w),
            other => Err(format!("expected a check, found {}", describe(other))),
        }
    }

    fn field_check(&mut self, word: String) -> Result<Expr, String> {
        let (field, arg) = match word.find('[') {
            Some(open) if word.ends_with(']') => (
                word[..open].to_string(),
                Some(
                    word[open + 1..word.len() - 1]
                        .trim_matches(|c| c == '"' || c == '\'')
                        .to_string(),
                ),
            ),
            Some(_) => return Err(format!("`{word}`: unclosed `[`")),
            None => (word, None),
        };
        let op = match self.next() {
            Some(Token::Op(op)) => op,
            Some(Token::Word(w)) if w == "exists" => {
                return Ok(Expr::Check(Check {
                    field,
                    arg,
                    op: w,
                    modifier: None,
                    values: Vec::new(),
                }))
            }
            Some(Token::Word(w)) if WORD_OPS.contains(&w.as_str()) => w,
            other => return Err(format!("`{field}`: expected an operator, found {}", describe(other))),
        };
        let op = if op == "==" { "=".to_string() } else { op };
        let modifier = match self.peek() {
            Some(Token::Word(m)) if ["anyof", "allof", "oneof"].contains(&m.as_str()) => {
                let m = m.clone();
                self.at += 1;
                Some(m)
            }
            _ => None,
        };
        let values = if SET_OPS.contains(&op.as_str()) || modifier.is_some() {
            self.set()?
        } else {
            vec![self.value(&field)?]
        };
        Ok(Expr::Check(Check {
            field,
            arg,
            op,
            modifier,
            values,
        }))
    }

    fn value(&mut self, field: &str) -> Result<Value, String> {
        match self.next() {
            Some(Token::Word(w)) => Ok(Value { text: w, quoted: false }),
            Some(Token::Quoted(s)) => Ok(Value { text: s, quoted: true }),
            other => Err(format!("`{field}`: expected a value, found {}", describe(other))),
        }
    }

    /// `(a, b, c)` or a bare list name.
    fn set(&mut self) -> Result<Vec<Value>, String> {
        match self.next() {
            Some(Token::LParen) => {
                let mut values = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::RParen) => return Ok(values),
                        Some(Token::Comma) => {}
                        Some(Token::Word(w)) => values.push(Value { text: w, quoted: false }),
                        Some(Token::Quoted(s)) => values.push(Value { text: s, quoted: true }),
                        other => return Err(format!("in a value list: unexpected {}", describe(other))),
                    }
                }
            }
            Some(Token::Word(w)) => Ok(vec![Value { text: w, quoted: false }]),
            other => Err(format!("expected `(` or a list name, found {}", describe(other))),
        }
    }
}

fn describe(t: Option<Token>) -> String {
    match t {
        None => "the end".into(),
        Some(t) => format!("`{t}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(field: &str, op: &str, values: &[&str]) -> Expr {
        Expr::Check(Check {
            field: field.into(),
            arg: None,
            op: op.into(),
            modifier: None,
            values: values
                .iter()
                .map(|v| Value {
                    text: v.to_string(),
                    quoted: false,
                })
                .collect(),
        })
    }

    #[test]
    fn precedence_and_checks() {
        let e = parse("kevt and not ka.verb=get or ka.user.name in (a, b)").unwrap();
        assert_eq!(
            e,
            Expr::Or(
                Box::new(Expr::And(
                    Box::new(Expr::Macro("kevt".into())),
                    Box::new(Expr::Not(Box::new(check("ka.verb", "=", &["get"]))))
                )),
                Box::new(check("ka.user.name", "in", &["a", "b"]))
            )
        );
        let e = parse("jevt.value[/stage]=ResponseStarted").unwrap();
        let Expr::Check(c) = e else { panic!() };
        assert_eq!(
            (c.field.as_str(), c.arg.as_deref(), c.values[0].text.as_str()),
            ("jevt.value", Some("/stage"), "ResponseStarted")
        );
        let e = parse("ka.uri startswith /healthz? and ka.req.pod.containers.privileged[0] intersects (true)").unwrap();
        let Expr::And(a, b) = e else { panic!() };
        assert_eq!(*a, check("ka.uri", "startswith", &["/healthz?"]));
        let Expr::Check(c) = *b else { panic!() };
        assert_eq!(c.arg.as_deref(), Some("0"));
        assert!(parse("ka.target.subresource exists and not ka.verb != \"a b\"").is_ok());
        assert!(parse("ka.verb in mylist").is_ok());
        assert!(parse("(ka.verb = a").unwrap_err().contains("expected `)`"));
        assert!(parse("ka.verb").unwrap_err().contains("expected an operator"));
    }
}

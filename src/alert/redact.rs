//! Redaction: nothing secret leaves the process in an alert.
//!
//! Rules match on the original event; redaction happens when an output encodes an alert, so it
//! covers `output`, `output_fields` and any embedded event alike:
//!
//! - **By structure**, in the event: the values of a Secret's `data` and `stringData` (a Secret
//!   object, any object of a `secrets` request or response, lists included, and the `value` of
//!   every JSON-patch operation on them); a ConfigMap's `binaryData`; every container `env`
//!   value; the token of a TokenRequest (`serviceaccounts/token`); object annotations that carry
//!   whole objects (`kubectl.kubernetes.io/last-applied-configuration`) or look like
//!   credentials; any string under a credential-like key ([`credential_key`]), in objects and in
//!   JSON-patch paths. The values removed this way are then also scrubbed from `output` and
//!   `output_fields` wherever a rule quoted them.
//! - **By syntax**, in every string: one mechanism for key–value text (`k = v`, `k: v`, `k=v`,
//!   `export K=v`, JSON or YAML inside a string, query strings, `--flag v`, `--flag=v`, `-pV`)
//!   whose key is credential-like; URL userinfo (`postgres://app:PW@db`); every PEM and PGP
//!   block; bearer tokens, JWTs and well-known token formats (GitHub, GitLab, Slack and its
//!   webhooks, Stripe, Google, AWS, Azure SAS); the operator's own regexes (`[redaction]
//!   patterns`, a group named `value` narrowing the replacement). A percent-encoded string (an
//!   exec URI) is decoded first when its decoded form holds a secret.

use crate::engine::json::{self, J};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// What replaces a secret.
    pub marker: String,
    /// More regexes (RE2 syntax) whose matches are secrets; a group named `value` narrows the
    /// replacement to it.
    pub patterns: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        RedactionConfig {
            marker: "[REDACTED]".into(),
            patterns: Vec::new(),
        }
    }
}

/// Built-in patterns of secrets in free text (a group named `value` is what is replaced).
const PATTERNS: &[&str] = &[
    // URL userinfo: scheme://user:PASSWORD@host
    r"[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]*:(?P<value>[^/\s@]+)@",
    r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9._~+/=\-]{8,})",
    r"(?i)\bbasic\s+(?P<value>[A-Za-z0-9+/=]{8,})",
    r"(?P<value>eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,})",
    // Every PEM block (keys, certificates) and PGP armor, to its end or the end of the text.
    r"-----BEGIN [A-Z0-9 ]+-----[\s\S]*?(?:-----END [A-Z0-9 ]+-----|$)",
    // Well-known token formats.
    r"\b(?P<value>gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})",
    r"\b(?P<value>glpat-[A-Za-z0-9_\-]{20,})",
    r"\b(?P<value>xox[abposrec]-[A-Za-z0-9\-]{10,})",
    r"hooks\.slack\.com/(?:services|workflows)/(?P<value>[A-Za-z0-9/_\-]+)",
    r"\b(?P<value>(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,})",
    r"\b(?P<value>AIza[0-9A-Za-z_\-]{30,})",
    r"\b(?P<value>(?:AKIA|ASIA)[A-Z0-9]{16})\b",
    r"(?i)[?&;]sig=(?P<value>[A-Za-z0-9%+/=]{16,})",
];

/// `key <sep> value` in text: `k = v`, `k: v`, `"k": "v"`, `export K=v`, `k=v&…`. The value
/// is replaced when [`credential_key`] says the key names a credential.
const KEY_VALUE: &str = r#"(?P<key>[A-Za-z_][A-Za-z0-9_.\-]*)["']?[ \t]*[:=][ \t]*(?:(?i:bearer|basic|digest|token)[ \t]+)?(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s,;&"'}\]\)]+)"#;

/// `--flag value` and `--flag=value` (also `&command=` between them: an exec URI's argv), and
/// `-pVALUE` (MySQL's client).
const FLAG_VALUE: &str = r#"(?:^|[\s"'=])--?(?P<key>[A-Za-z][A-Za-z0-9_.\-]*)(?:=|[ \t]+|&command=)(?P<value>"(?:[^"\\]|\\.)*"|'[^']*'|[^\s"'&\-][^\s"'&]*)"#;
const SHORT_PASSWORD: &str = r#"(?:^|[\s=])-p(?P<value>[^\s&\-][^\s&]*)"#;

/// What every key [`credential_key`] accepts holds (lower-cased).
const CREDENTIAL_STEMS: &[&str] = &[
    "pass", "pwd", "secret", "token", "key", "auth", "cred", "session", "cookie",
];

/// Words that name a credential when they end a key (`DB_PASSWORD`, `githubToken`, `x-api-key`).
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "pass",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
    "creds",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "cookie",
    "privatekey",
    "accesskey",
    "secretkey",
];

/// Words before `key` that make it a credential (`api_key`, `private-key`, `aws_secret_access_key`).
const KEY_KINDS: &[&str] = &[
    "api",
    "access",
    "private",
    "secret",
    "signing",
    "encryption",
    "master",
    "ssh",
    "auth",
    "session",
    "client",
];

/// Whether a key names a credential: split into words (at `_`, `-`, `.`, `/`, spaces and
/// camelCase), any case, its last word (after a trailing `value`, `data` or `b64`) is one of
/// [`CREDENTIAL_WORDS`], or `key` after one of [`KEY_KINDS`]. `secretName`, `tokenFile` and
/// `sessionAffinity` are not credentials; `SECRET_KEY`, `slack.token` and `--db-password` are.
pub fn credential_key(key: &str) -> bool {
    // Most keys hold none of the credential words: no need to split them (one pass, no copy).
    static STEMS: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .build(CREDENTIAL_STEMS)
            .expect("the credential stems build a searcher")
    });
    if !STEMS.is_match(key) {
        return false;
    }
    let mut words: Vec<String> = Vec::new();
    let mut word = String::new();
    let mut previous_lower = false;
    for c in key.chars() {
        if !c.is_alphanumeric() {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        word.extend(c.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    while words.len() > 1
        && matches!(
            words.last().map(String::as_str),
            Some("value" | "data" | "b64" | "base64")
        )
    {
        words.pop();
    }
    match words.as_slice() {
        [.., last] if CREDENTIAL_WORDS.contains(&last.as_str()) => true,
        [.., kind, last] if matches!(last.as_str(), "key" | "keys") => KEY_KINDS.contains(&kind.as_str()),
        _ => false,
    }
}

/// Where [`KEY_VALUE`], [`FLAG_VALUE`] or [`SHORT_PASSWORD`] could replace a value: a key
/// holding a credential stem (as every key [`credential_key`] accepts does) right before
/// `:`/`=`, or after a dash before a flag's separator; or `-p` and a value. A text without one
/// is not scanned for keys (a URI naming `secrets` is no `key=value` of a credential).
fn mentions() -> String {
    let stems = CREDENTIAL_STEMS.join("|");
    let key = r"[A-Za-z0-9_.\-]*";
    format!(r#"(?i)(?:{stems}){key}["']?[ \t]*[:=]|-{key}(?:{stems}){key}(?:[ \t]|&command=)|(?:^|[\s=])-p[^\s&\-]"#)
}

/// Annotations that repeat a whole object (secrets included).
const WHOLE_OBJECT_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

#[derive(Debug)]
pub struct Redactor {
    marker: String,
    patterns: Vec<Regex>,
    /// The same patterns as one automaton: most strings match none, found in one pass.
    any: regex::RegexSet,
    /// [`KEY_VALUE`] (at [`Redactor::KEY_VALUE_AT`]), [`FLAG_VALUE`], [`SHORT_PASSWORD`].
    key_values: [Regex; 3],
    /// Whether a text has a credential-like key where the key-value scan could find one
    /// ([`mentions`]; the scan is skipped if not).
    mentions: Regex,
    /// [`Redactor::any`]'s patterns and [`mentions`] as one automaton: most texts match
    /// neither, told in one pass over them. The two stay for a text it passes: asking the gate
    /// which of its patterns match cost more than their own smaller automata do.
    gate: regex::RegexSet,
}

impl Redactor {
    /// The redactor of the built-in patterns and marker (the offline tools', and a pipeline's
    /// that configures none), made once.
    pub fn builtin() -> Arc<Redactor> {
        static BUILTIN: std::sync::OnceLock<Arc<Redactor>> = std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Arc::new(Redactor::new(&RedactionConfig::default()).expect("the built-in patterns compile"))
            })
            .clone()
    }

    pub fn new(config: &RedactionConfig) -> anyhow::Result<Redactor> {
        let mut patterns = Vec::new();
        for p in PATTERNS {
            patterns.push(Regex::new(p)?);
        }
        for (i, p) in config.patterns.iter().enumerate() {
            patterns.push(Regex::new(p).map_err(|e| anyhow::anyhow!("redaction.patterns[{i}]: {e}"))?);
        }
        let gate = regex::RegexSet::new(patterns.iter().map(Regex::as_str).chain([mentions().as_str()]))?;
        Ok(Redactor {
            marker: config.marker.clone(),
            any: regex::RegexSet::new(patterns.iter().map(Regex::as_str))?,
            patterns,
            key_values: [
                Regex::new(KEY_VALUE)?,
                Regex::new(FLAG_VALUE)?,
                Regex::new(SHORT_PASSWORD)?,
            ],
            mentions: Regex::new(&mentions())?,
            gate,
        })
    }

    /// Redacts an audit event in place (structure, then patterns over every string); returns
    /// the values it removed by structure (so they can be scrubbed from text that quotes them).
    pub fn event(&self, event: &mut Value) -> Vec<String> {
        let removed = self.structure(event);
        self.scrub_value(event, &removed);
        removed
    }

    /// The top-level fields [`Redactor::structure`] reads: an output that does not show the
    /// event hands it only these (an event with none of the last three holds nothing it removes).
    pub const STRUCTURE_FIELDS: [&'static str; 4] = ["objectRef", "requestObject", "responseObject", "annotations"];

    /// Whether [`Redactor::structure`] could remove anything from an event: it has a request or
    /// response body, or an annotation of its own whose key is credential-like (not the
    /// apiserver's `authorization.k8s.io/` decision and reason), or annotations that are no
    /// object of strings' keys (then the pass decides). Most alerts are on reads with neither;
    /// they are not parsed for it.
    pub fn structure_reads(view: &crate::audit::EventView<'_>) -> bool {
        if view.get("requestObject").is_some() || view.get("responseObject").is_some() {
            return true;
        }
        let Some(raw) = view.get("annotations") else {
            return false;
        };
        // The keys read in place, none kept.
        struct AnyCredentialKey;
        impl<'de> serde::de::Visitor<'de> for AnyCredentialKey {
            type Value = bool;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of annotations")
            }
            fn visit_none<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                let mut any = false;
                while let Some(crate::audit::CowStr(k)) = map.next_key()? {
                    any = any || (!k.starts_with("authorization.k8s.io/") && credential_key(&k));
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
                Ok(any)
            }
        }
        let mut de = serde_json::Deserializer::from_str(raw);
        use serde::Deserializer as _;
        let any = (&mut de)
            .deserialize_option(AnyCredentialKey)
            .and_then(|any| de.end().map(|()| any));
        any.unwrap_or(true)
    }

    /// The structural part alone, on the event an output shows (redacted in place); returns
    /// the values it removed.
    pub fn structure(&self, event: &mut Value) -> Vec<String> {
        let mut pass = Pass::new(self, true);
        pass.event(&*event);
        let Pass { removed, found, .. } = pass;
        for path in found.unwrap_or_default() {
            let mut at = Some(&mut *event);
            for step in &path {
                at = at.and_then(|v| match step {
                    Step::Key(k) => v.get_mut(k.as_ref()),
                    Step::Index(i) => v.get_mut(*i),
                });
            }
            if let Some(Value::String(s)) = at {
                *s = self.marker.clone();
            }
        }
        self.removed(removed)
    }

    /// The values [`Redactor::structure`] would remove from an event an output does not show:
    /// only those are needed (to scrub the text that may quote them), so the fields it reads
    /// are read as borrowed trees ([`J`]), nothing copied but what is removed.
    pub fn structure_of(&self, view: &crate::audit::EventView<'_>) -> Vec<String> {
        if !Redactor::structure_reads(view) {
            return Vec::new();
        }
        let arena = bumpalo::Bump::new();
        let mut fields = bumpalo::collections::Vec::new_in(&arena);
        for name in Redactor::STRUCTURE_FIELDS {
            if let Some(tree) = view.get(name).and_then(|raw| json::parse(raw, &arena).ok()) {
                fields.push((name, tree));
            }
        }
        let event = J::Obj(fields.into_bump_slice());
        let mut pass = Pass::new(self, false);
        pass.event(&event);
        self.removed(pass.removed)
    }

    fn removed(&self, mut removed: Vec<String>) -> Vec<String> {
        removed.retain(|s| s.len() >= 4 && s != &self.marker);
        removed.sort();
        removed.dedup();
        removed
    }

    /// Text with the removed values, credential key–values and every pattern's matches
    /// replaced. Percent-encoded text whose decoded form holds a secret comes out decoded and
    /// redacted.
    pub fn text<'a>(&self, text: &'a str, removed: &[String]) -> Cow<'a, str> {
        let out = self.plain_text(text, removed);
        if !text.contains('%') {
            return out;
        }
        let decoded = percent_decode(&out);
        if decoded == out {
            return out;
        }
        match self.plain_text(&decoded, removed) {
            Cow::Owned(redacted) => Cow::Owned(redacted),
            Cow::Borrowed(_) => out,
        }
    }

    fn plain_text<'a>(&self, text: &'a str, removed: &[String]) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in removed {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), &self.marker));
            }
        }
        // Neither a key-value scan nor a pattern could change a text the gate passes.
        if !self.gate.is_match(&out) {
            return out;
        }
        if out.contains([':', '=', '-']) && self.mentions.is_match(&out) {
            for i in 0..self.key_values.len() {
                if let Some(redacted) = self.key_values_in(i, &out) {
                    out = Cow::Owned(redacted);
                }
            }
        }
        // Most texts match none: `is_match` can tell sooner than `matches`.
        if !self.any.is_match(&out) {
            return out;
        }
        let matching = self.any.matches(&out);
        for pattern in matching.iter().map(|i| &self.patterns[i]) {
            let replaced = pattern
                .replace_all(&out, |caps: &regex::Captures| match caps.name("value") {
                    Some(v) => {
                        let whole = caps.get(0).expect("group 0");
                        let mut s = String::with_capacity(whole.len());
                        s.push_str(&whole.as_str()[..v.start() - whole.start()]);
                        s.push_str(&self.marker);
                        s.push_str(&whole.as_str()[v.end() - whole.start()..]);
                        s
                    }
                    None => self.marker.clone(),
                })
                .into_owned();
            out = Cow::Owned(replaced);
        }
        out
    }

    /// `text` with the value of every credential-like key of `key_values[i]` replaced, or
    /// `None` if it has none. A match whose key is no credential is looked at again from its
    /// value on (`command=password = x` holds `password = x`).
    fn key_values_in(&self, i: usize, text: &str) -> Option<String> {
        let mut out = String::new();
        let mut copied = 0;
        let mut at = 0;
        while let Some(found) = self.key_value_at(i, text, at) {
            let (whole, value) = (found.whole, found.value);
            let credential = found.key.is_none_or(|k| credential_key(&text[k]));
            if !credential || text[value.clone()] == self.marker {
                at = if credential { whole.end } else { value.start };
                // Step at least one character.
                if at <= whole.start {
                    at = whole.start + text[whole.start..].chars().next().map_or(1, char::len_utf8);
                }
                continue;
            }
            let v = &text[value.clone()];
            let quoted = v.len() >= 2 && (v.starts_with('"') || v.starts_with('\''));
            out.push_str(&text[copied..value.start]);
            if quoted {
                out.push_str(&v[..1]);
                out.push_str(&self.marker);
                out.push_str(&v[..1]);
            } else {
                out.push_str(&self.marker);
            }
            copied = value.end;
            at = value.end;
        }
        if copied == 0 {
            return None;
        }
        out.push_str(&text[copied..]);
        Some(out)
    }

    const KEY_VALUE_AT: usize = 0;

    /// The first match of `key_values[i]` from `at`. A [`KEY_VALUE`] match (most texts hold
    /// several, and most keys are no credential) has its groups read off the match where they
    /// are forced ([`key_value_groups`]), without the slower search for captures.
    fn key_value_at(&self, i: usize, text: &str, at: usize) -> Option<Groups> {
        let re = &self.key_values[i];
        if i == Self::KEY_VALUE_AT {
            let m = re.find_at(text, at)?;
            if let Some((key, value)) = key_value_groups(text.as_bytes(), m.range()) {
                return Some(Groups {
                    whole: m.range(),
                    key: Some(key),
                    value,
                });
            }
        }
        let caps = re.captures_at(text, at)?;
        Some(Groups {
            whole: caps.get(0).expect("group 0").range(),
            key: caps.name("key").map(|k| k.range()),
            value: caps.name("value")?.range(),
        })
    }

    /// [`Redactor::scrub_value`] on a copy, made (in one pass) only if it changes something.
    pub fn scrubbed(&self, value: &Value, removed: &[String]) -> Option<Value> {
        match value {
            Value::String(s) => match self.text(s, removed) {
                Cow::Owned(t) => Some(Value::String(t)),
                Cow::Borrowed(_) => None,
            },
            Value::Array(items) => {
                let mut copy: Option<Vec<Value>> = None;
                for (i, item) in items.iter().enumerate() {
                    if let Some(clean) = self.scrubbed(item, removed) {
                        copy.get_or_insert_with(|| items.clone())[i] = clean;
                    }
                }
                copy.map(Value::Array)
            }
            Value::Object(map) => {
                let mut copy: Option<serde_json::Map<String, Value>> = None;
                for (key, item) in map {
                    if let Some(clean) = self.scrubbed(item, removed) {
                        copy.get_or_insert_with(|| map.clone()).insert(key.clone(), clean);
                    }
                }
                copy.map(Value::Object)
            }
            _ => None,
        }
    }

    /// Every string in a JSON value through [`Redactor::text`].
    pub fn scrub_value(&self, value: &mut Value, removed: &[String]) {
        match value {
            Value::String(s) => {
                if let Cow::Owned(t) = self.text(s, removed) {
                    *s = t;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.scrub_value(v, removed)),
            Value::Object(map) => map.values_mut().for_each(|v| self.scrub_value(v, removed)),
            _ => {}
        }
    }
}

/// A JSON tree the structural pass reads: the `serde_json::Value` of an event an output shows,
/// or the borrowed tree of the fields it reads ([`Redactor::structure_of`]). One pass for both,
/// so what is removed does not depend on whether the event is shown.
trait Tree: Sized {
    fn get(&self, key: &str) -> Option<&Self>;
    fn str(&self) -> Option<&str>;
    /// An object's entries (none for another value).
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)>;
    /// An array's items (none for another value).
    fn items(&self) -> &[Self];
}

impl Tree for Value {
    fn get(&self, key: &str) -> Option<&Self> {
        self.as_object()?.get(key)
    }
    fn str(&self) -> Option<&str> {
        self.as_str()
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        self.as_object().into_iter().flatten().map(|(k, v)| (k.as_str(), v))
    }
    fn items(&self) -> &[Self] {
        self.as_array().map_or(&[], Vec::as_slice)
    }
}

/// A borrowed tree is nested as deep as an event's value ([`crate::audit::MAX_VALUE_DEPTH`],
/// [`J::TooDeep`] reading as the value's placeholder); it drops `null` members (none is a
/// string the pass could remove, but `"op": null` makes no patch operation of its object) and
/// holds a repeated key's every occurrence (each is read: a value the event no longer means
/// is still one its sender wrote).
impl<'a> Tree for J<'a> {
    fn get(&self, key: &str) -> Option<&Self> {
        J::get(self, key)
    }
    fn str(&self) -> Option<&str> {
        match self {
            J::Str(s) => Some(s),
            // What the value of an event has in its place ([`crate::audit::to_value`]).
            J::TooDeep => Some(crate::audit::TOO_DEEP),
            _ => None,
        }
    }
    fn entries(&self) -> impl Iterator<Item = (&str, &Self)> {
        let entries: &[(&str, J<'a>)] = match self {
            J::Obj(entries) => entries,
            _ => &[],
        };
        entries.iter().map(|(k, v)| (*k, v))
    }
    fn items(&self) -> &[Self] {
        match self {
            J::Arr(items) => items,
            _ => &[],
        }
    }
}

/// A step from a value to one inside it.
enum Step<'t> {
    Key(Cow<'t, str>),
    Index(usize),
}

/// One structural pass over an event: what it removed and, when the event is to be redacted
/// in place, where.
struct Pass<'r, 't> {
    redactor: &'r Redactor,
    removed: Vec<String>,
    /// Where the pass is.
    at: Vec<Step<'t>>,
    /// Where it removed a string (kept only when asked).
    found: Option<Vec<Vec<Step<'static>>>>,
}

impl<'r, 't> Pass<'r, 't> {
    fn new(redactor: &'r Redactor, locate: bool) -> Self {
        Pass {
            redactor,
            removed: Vec::new(),
            at: Vec::new(),
            found: locate.then(Vec::new),
        }
    }

    fn within<T: Tree>(&mut self, step: Step<'t>, value: &'t T, f: impl FnOnce(&mut Self, &'t T)) {
        self.at.push(step);
        f(self, value);
        self.at.pop();
    }

    fn member<T: Tree>(&mut self, object: &'t T, key: &'t str, f: impl FnOnce(&mut Self, &'t T)) {
        if let Some(value) = object.get(key) {
            self.within(Step::Key(Cow::Borrowed(key)), value, f);
        }
    }

    fn each_entry<T: Tree>(&mut self, object: &'t T, mut f: impl FnMut(&mut Self, &'t str, &'t T)) {
        for (key, value) in object.entries() {
            self.within(Step::Key(Cow::Borrowed(key)), value, |pass, value| f(pass, key, value));
        }
    }

    fn each_item<T: Tree>(&mut self, array: &'t T, mut f: impl FnMut(&mut Self, &'t T)) {
        for (i, item) in array.items().iter().enumerate() {
            self.within(Step::Index(i), item, &mut f);
        }
    }

    /// The event: its bodies by what they are, then everywhere; its own annotations.
    fn event<T: Tree>(&mut self, event: &'t T) {
        let object_ref = |name| event.get("objectRef").and_then(|o| o.get(name)).and_then(T::str);
        let resource = object_ref("resource").unwrap_or_default();
        let subresource = object_ref("subresource").unwrap_or_default();
        for body in ["requestObject", "responseObject"] {
            self.member(event, body, |pass, object| {
                if resource == "secrets" {
                    pass.secret_data(object);
                    // A JSON patch: every value it writes under data/stringData.
                    pass.each_item(object, |pass, op| {
                        let path = op.get("path").and_then(T::str).unwrap_or_default();
                        let under =
                            |field: &str| path == field || path.strip_prefix(field).is_some_and(|r| r.starts_with('/'));
                        if under("/data") || under("/stringData") || path.is_empty() || path == "/" {
                            pass.member(op, "value", Pass::replace_all);
                        }
                    });
                    pass.member(object, "items", |pass, items| pass.each_item(items, Pass::secret_data));
                }
                if resource == "serviceaccounts" && subresource == "token" {
                    pass.member(object, "status", |pass, status| {
                        pass.member(status, "token", Pass::replace)
                    });
                }
                pass.walk(object);
            });
        }
        // The audit event's own annotations: credentials-like keys, but not the apiserver's
        // authorization decision and reason.
        self.member(event, "annotations", |pass, annotations| {
            pass.each_entry(annotations, |pass, key, value| {
                if !key.starts_with("authorization.k8s.io/") && credential_key(key) {
                    pass.replace(value);
                }
            })
        });
    }

    fn secret_data<T: Tree>(&mut self, object: &'t T) {
        for field in ["data", "stringData", "binaryData"] {
            self.member(object, field, |pass, data| {
                pass.each_entry(data, |pass, _, v| pass.replace(v))
            });
        }
    }

    /// Every string in a value (a patch's object, a list).
    fn replace_all<T: Tree>(&mut self, value: &'t T) {
        self.replace(value);
        self.each_item(value, Pass::replace_all);
        self.each_entry(value, |pass, _, v| pass.replace_all(v));
    }

    /// A string value removed (and, for base64, its text), and where it was.
    fn replace<T: Tree>(&mut self, value: &'t T) {
        let Some(s) = value.str() else { return };
        if s == self.redactor.marker {
            return;
        }
        use base64::Engine as _;
        if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
            if let Ok(text) = String::from_utf8(decoded) {
                self.removed.push(text);
            }
        }
        self.removed.push(s.to_string());
        if let Some(found) = &mut self.found {
            found.push(
                self.at
                    .iter()
                    .map(|step| match step {
                        Step::Key(k) => Step::Key(Cow::Owned(k.to_string())),
                        Step::Index(i) => Step::Index(*i),
                    })
                    .collect(),
            );
        }
    }

    /// Structure anywhere in an object: Secrets, env values, annotations, credential keys.
    fn walk<T: Tree>(&mut self, value: &'t T) {
        self.member(value, "binaryData", |pass, data| {
            pass.each_entry(data, |pass, _, v| pass.replace(v))
        });
        // A JSON-patch operation writing under a credential-like key.
        if value.get("op").is_some() {
            let path = value.get("path").and_then(T::str).unwrap_or_default();
            if path
                .split('/')
                .any(|segment| credential_key(segment) || segment == "binaryData")
            {
                self.member(value, "value", Pass::replace_all);
            }
        }
        let kind = value.get("kind").and_then(T::str);
        if kind == Some("Secret") {
            for field in ["data", "stringData"] {
                self.member(value, field, |pass, data| {
                    pass.each_entry(data, |pass, _, v| pass.replace(v))
                });
            }
        }
        if kind == Some("TokenRequest") {
            self.member(value, "status", |pass, status| {
                pass.member(status, "token", Pass::replace)
            });
        }
        self.member(value, "env", |pass, env| {
            pass.each_item(env, |pass, var| pass.member(var, "value", Pass::replace))
        });
        self.member(value, "metadata", |pass, metadata| {
            pass.member(metadata, "annotations", |pass, annotations| {
                pass.each_entry(annotations, |pass, key, v| {
                    if WHOLE_OBJECT_ANNOTATIONS.contains(&key) || credential_key(key) {
                        pass.replace(v);
                    }
                })
            })
        });
        self.each_entry(value, |pass, key, v| {
            if v.str().is_some() && credential_key(key) {
                pass.replace(v);
            } else {
                pass.walk(v);
            }
        });
        // argv: `["--password", "VALUE"]`, the value in the element after its flag (a flag
        // itself removed as a value is no flag).
        let items = value.items();
        let mut removed_flag = false;
        for i in 1..items.len() {
            let flag = if removed_flag {
                self.redactor.marker.as_str()
            } else {
                items[i - 1].str().unwrap_or_default()
            };
            removed_flag =
                flag.starts_with('-') && !flag.contains('=') && credential_key(flag) && items[i].str().is_some();
            if removed_flag {
                self.within(Step::Index(i), &items[i], Pass::replace);
            }
        }
        self.each_item(value, Pass::walk);
    }
}

/// Where a key–value match, its key and its value are in a text.
struct Groups {
    whole: Range<usize>,
    key: Option<Range<usize>>,
    value: Range<usize>,
}

/// The key and value of a [`KEY_VALUE`] match at `whole`, read off the text: the key is the run
/// of key characters it starts with (none of what may follow a key is one); a quote, blanks,
/// `:` or `=` and blanks follow, as many as there are (a value starts with none of them); then
/// the value, after a scheme word (`Bearer`) and blanks when the match goes on past the word (a
/// value that began with the word would end at the blank). `None` where the text after the key
/// is not ASCII (`(?i)` also folds `ſ` and `K` into the words): the captures decide.
fn key_value_groups(text: &[u8], whole: Range<usize>) -> Option<(Range<usize>, Range<usize>)> {
    let end = whole.end;
    let blanks = |mut p: usize| {
        while p < end && matches!(text[p], b' ' | b'\t') {
            p += 1;
        }
        p
    };
    let mut p = whole.start;
    while p < end && (text[p].is_ascii_alphanumeric() || matches!(text[p], b'_' | b'.' | b'-')) {
        p += 1;
    }
    let key = whole.start..p;
    if !text[p..end].is_ascii() {
        return None;
    }
    if p < end && matches!(text[p], b'"' | b'\'') {
        p += 1;
    }
    p = blanks(p);
    if p >= end || !matches!(text[p], b':' | b'=') {
        return None;
    }
    p = blanks(p + 1);
    for word in ["bearer", "basic", "digest", "token"] {
        let after = p + word.len();
        if end > after && text[p..after].eq_ignore_ascii_case(word.as_bytes()) && blanks(after) > after {
            return Some((key, blanks(after)..end));
        }
    }
    Some((key, p..end))
}

/// `%XX` sequences decoded (and `+` left alone); invalid UTF-8 replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redactor() -> Redactor {
        Redactor::new(&RedactionConfig {
            patterns: vec![r"ACME-(?P<value>[0-9]{6})".into()],
            ..Default::default()
        })
        .unwrap()
    }

    /// The key-value scan runs only where [`mentions`] finds a credential key: every text the
    /// scan redacts has one, and a credential word outside a key (a URI naming `secrets`) is
    /// none.
    #[test]
    fn the_key_value_scan_is_skipped_only_where_it_finds_nothing() {
        let r = redactor();
        let redacted = [
            "DB_PASSWORD=hunter2",
            "x-api-key: abcdef",
            "{\"clientSecret\": \"abc\"}",
            "export GITHUB_TOKEN = ghx",
            "curl -H 'Authorization: Digest abc' --user-session s3ss http://x",
            "mysql -u root -phunter2 db",
            "/exec?command=sh&command=-c&command=--db-password&command=hunter2",
            "run --Auth-Token=t0k3n",
            "command=password = x",
        ];
        for text in redacted {
            assert!(r.mentions.is_match(text), "{text}");
            assert!(
                (0..r.key_values.len()).any(|i| r.key_values_in(i, text).is_some()),
                "{text}"
            );
        }
        let plain =
            "target=obj-97/secrets verb=list uri=/api/v1/namespaces/kube-public/secrets resp=200 (user=kube-proxy)";
        assert!(!r.mentions.is_match(plain));
        assert!((0..r.key_values.len()).all(|i| r.key_values_in(i, plain).is_none()));
    }

    /// The groups read off a [`KEY_VALUE`] match are its captures' (the reference), on texts
    /// made of the pieces that decide them: quotes, blanks, separators, scheme words in any case
    /// (and with `ſ` or `K`), escapes, characters that end a value, non-ASCII.
    #[test]
    fn key_value_groups_are_the_captures() {
        use rand::{Rng, SeedableRng};
        let re = Regex::new(KEY_VALUE).unwrap();
        let pieces = [
            "key", "pw", "x.y-z", "_", "1", " ", "\t", ":", "=", "\"", "'", "\\", ",", ";", "&", "}", "]", ")", "\n",
            "Bearer", "bearer ", "BASIC\t", "digest", "token  ", "toKen ", "baſic ", "beare", "é", "a=b", "v\"w",
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (mut derived, mut taken) = (0, 0);
        for _ in 0..30_000 {
            let text: String = (0..rng.random_range(1..14))
                .map(|_| pieces[rng.random_range(0..pieces.len())])
                .collect();
            let mut at = 0;
            while let Some(caps) = re.captures_at(&text, at) {
                let whole = caps.get(0).unwrap();
                let value = caps.name("value").unwrap();
                if let Some(groups) = key_value_groups(text.as_bytes(), whole.range()) {
                    derived += 1;
                    let key = caps.name("key").unwrap();
                    assert_eq!(groups, (key.range(), value.range()), "{text:?} from {at}");
                    taken += usize::from(
                        value.start() > key.end() + 1
                            && text[key.end()..value.start()]
                                .trim_end()
                                .ends_with(|c: char| c.is_ascii_alphabetic()),
                    );
                }
                at = whole.start() + text[whole.start()..].chars().next().unwrap().len_utf8();
            }
        }
        assert!(
            derived > 20_000 && taken > 500,
            "{derived} derived, {taken} after a scheme word"
        );
    }

    /// An event is parsed for the structural pass when it has a body or an annotation of its
    /// own with a credential-like key, or annotations that are no object (then the pass decides).
    #[test]
    fn events_with_nothing_to_remove_by_structure_are_not_parsed_for_it() {
        let reads = |fields: &str| {
            let text = format!(r#"{{"auditID":"1","stage":"ResponseComplete","verb":"get"{fields}}}"#);
            let event = crate::audit::Event::from_json(text.into_bytes()).unwrap();
            Redactor::structure_reads(&event.view())
        };
        assert!(!reads(""));
        assert!(!reads(r#","annotations":null"#));
        assert!(!reads(r#","annotations":{}"#));
        let decision = r#""authorization.k8s.io/decision":"allow","authorization.k8s.io/token":"x""#;
        assert!(!reads(&format!(r#","annotations":{{{decision}}}"#)));
        assert!(reads(&format!(
            r#","annotations":{{{decision},"example.com/api-token":"t0k"}}"#
        )));
        assert!(reads(
            r#","annotations":{"example.com/api-token":{"nested":[1]},"a":"b"}"#
        ));
        assert!(reads(r#","annotations":"not an object""#));
        assert!(reads(r#","annotations":[]"#));
        assert!(reads(r#","requestObject":{}"#));
        // A null body is no body.
        assert!(!reads(r#","responseObject":null,"annotations":{}"#));
    }

    /// The copying scrub gives what the in-place one does, and nothing where it changes nothing.
    #[test]
    fn a_scrubbed_copy_is_made_only_where_something_changes() {
        let r = redactor();
        let removed = vec!["hunter22".to_string()];
        let value = json!({"a": ["keep", {"b": "pw is hunter22", "c": 1}], "d": "token=abcdef", "e": "plain"});
        let mut in_place = value.clone();
        r.scrub_value(&mut in_place, &removed);
        assert_eq!(r.scrubbed(&value, &removed), Some(in_place));
        assert_eq!(
            r.scrubbed(&json!({"a": ["keep", {"c": 1}], "e": "plain"}), &removed),
            None
        );
    }

    #[test]
    fn secrets_env_tokens_and_annotations_by_structure() {
        let r = redactor();
        let mut event = json!({
            "objectRef": {"resource": "secrets"},
            "annotations": {"authorization.k8s.io/decision": "allow", "example.com/api-token": "t0ps3cret"},
            "requestObject": {"kind": "Secret", "data": {"pw": "aHVudGVyMg=="}, "stringData": {"key": "plain-value"},
                              "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"pw\":\"aHVudGVyMg==\"}}"}}},
            "responseObject": {"items": [{"data": {"a": "c2VjcmV0LWE="}}]}
        });
        let removed = r.event(&mut event);
        let text = event.to_string();
        for secret in [
            "aHVudGVyMg==",
            "plain-value",
            "c2VjcmV0LWE=",
            "t0ps3cret",
            "last-applied-configuration\":\"{",
        ] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(event["annotations"]["authorization.k8s.io/decision"], "allow");
        assert!(removed.contains(&"hunter2".to_string()), "{removed:?}");
        // Quoted by a rule's output: scrubbed there too.
        assert_eq!(r.text("password is hunter2!", &removed), "password is [REDACTED]!");
    }

    #[test]
    fn env_values_token_requests_and_credential_keys() {
        let r = redactor();
        let mut event = json!({
            "objectRef": {"resource": "serviceaccounts", "subresource": "token"},
            "requestObject": {"spec": {"template": {"spec": {"containers": [
                {"name": "c", "env": [{"name": "DB_URL", "value": "postgres://u:p@db/x"}, {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s"}}}],
                 "volumes": [{"secret": {"secretName": "keep-me"}}]}]}}}},
            "responseObject": {"kind": "TokenRequest", "status": {"token": "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"}},
        });
        r.event(&mut event);
        let text = event.to_string();
        assert!(!text.contains("postgres://") && !text.contains("eyJhbGci"), "{text}");
        assert!(text.contains("keep-me") && text.contains("secretKeyRef"), "{text}");
        let mut cm = json!({"objectRef": {"resource": "configmaps"}, "requestObject": {"data": {"aws_secret_access_key": "wJalrXUtnFEMIK7MDENG", "plain": "ok"}}});
        r.event(&mut cm);
        assert_eq!(
            cm["requestObject"]["data"],
            json!({"aws_secret_access_key": "[REDACTED]", "plain": "ok"})
        );
    }

    #[test]
    fn patterns_keep_the_key_and_hide_the_value() {
        let r = redactor();
        let creds = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        let out = r.text(creds, &[]);
        assert!(out.contains("aws_secret_access_key = [REDACTED]"), "{out}");
        assert!(!out.contains("wJalr"), "{out}");
        assert_eq!(r.text("db password: hunter2", &[]), "db password: [REDACTED]");
        assert_eq!(
            r.text("Authorization: Bearer abcdefgh12345", &[]),
            "Authorization: Bearer [REDACTED]"
        );
        assert_eq!(r.text("id ACME-123456 here", &[]), "id ACME-[REDACTED] here");
        let pem = "x -----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY----- y";
        assert_eq!(r.text(pem, &[]), "x [REDACTED] y");
        assert_eq!(r.text("nothing to see", &[]), "nothing to see");
        assert!(Redactor::new(&RedactionConfig {
            patterns: vec!["(".into()],
            ..Default::default()
        })
        .unwrap_err()
        .to_string()
        .contains("redaction.patterns[0]"));
    }
}

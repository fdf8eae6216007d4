//! Redaction: nothing secret leaves the process in an alert.
//!
//! Rules match on the original event; redaction happens when an output encodes an alert, so it
//! covers `output`, `output_fields` and any embedded event alike:
//!
//! - **By structure**, in the event: the values of a Secret's `data` and `stringData` (a Secret
//!   object, or any object of a `secrets` request or response, lists included); every container
//!   `env` value; the token of a TokenRequest (`serviceaccounts/token`); object annotations that
//!   carry whole objects (`kubectl.kubernetes.io/last-applied-configuration`) or look like
//!   credentials; any string under a key that names a credential (`password`, `api_key`,
//!   `aws_secret_access_key`, `token`, …). The values removed this way are then also scrubbed
//!   from `output` and `output_fields` wherever a rule quoted them.
//! - **By pattern**, everywhere: AWS secret keys written as `aws_secret_access_key = …`,
//!   `password: …`, bearer tokens, JWTs, PEM private keys, and the operator's own regexes
//!   (`[redaction] patterns`). A pattern with a group named `value` replaces that group only
//!   (the key stays readable), otherwise the whole match.

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

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

/// Built-in patterns of secrets in free text.
const PATTERNS: &[&str] = &[
    r"(?i)(?:aws_secret_access_key|aws_session_token|secret_access_key|aws_secret_key)\s*[:=]\s*['\x22]?(?P<value>[A-Za-z0-9/+=]{8,})",
    r"(?i)\b(?:password|passwd|passphrase|pwd|client_secret|api[_-]?key|auth[_-]?token|access[_-]?token)\s*[:=]\s*['\x22]?(?P<value>[^\s'\x22,;}]{3,})",
    r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9._~+/=-]{8,})",
    r"(?P<value>eyJ[A-Za-z0-9_-]{6,}\.eyJ[A-Za-z0-9_-]{6,}\.[A-Za-z0-9_-]{6,})",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)",
];

/// Keys whose string values are credentials wherever they appear in an object.
const SENSITIVE_KEY: &str = r"(?i)(password|passwd|passphrase|secret[_-]?(access[_-]?)?key|access[_-]?key[_-]?id|api[_-]?key|token|credential|private[_-]?key|client[_-]?secret|authorization)";

/// Annotations that repeat a whole object (secrets included).
const WHOLE_OBJECT_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

#[derive(Debug)]
pub struct Redactor {
    marker: String,
    patterns: Vec<Regex>,
    /// The same patterns as one automaton: most strings match none, found in one pass.
    any: regex::RegexSet,
    sensitive_key: Regex,
}

impl Redactor {
    pub fn new(config: &RedactionConfig) -> anyhow::Result<Redactor> {
        let mut patterns = Vec::new();
        for p in PATTERNS {
            patterns.push(Regex::new(p)?);
        }
        for (i, p) in config.patterns.iter().enumerate() {
            patterns.push(Regex::new(p).map_err(|e| anyhow::anyhow!("redaction.patterns[{i}]: {e}"))?);
        }
        Ok(Redactor {
            marker: config.marker.clone(),
            any: regex::RegexSet::new(patterns.iter().map(Regex::as_str))?,
            patterns,
            sensitive_key: Regex::new(SENSITIVE_KEY)?,
        })
    }

    /// Redacts an audit event in place (structure, then patterns over every string); returns
    /// the values it removed by structure (so they can be scrubbed from text that quotes them).
    pub fn event(&self, event: &mut Value) -> Vec<String> {
        let removed = self.structure(event);
        self.scrub_value(event, &removed);
        removed
    }

    /// The structural part alone: what an output that does not show the event needs to know
    /// to scrub the text that may quote it.
    pub fn structure(&self, event: &mut Value) -> Vec<String> {
        let mut removed = Vec::new();
        let resource = event
            .pointer("/objectRef/resource")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let subresource = event
            .pointer("/objectRef/subresource")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        for body in ["requestObject", "responseObject"] {
            let Some(object) = event.get_mut(body) else { continue };
            if resource == "secrets" {
                self.secret_data(object, &mut removed);
                if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
                    for item in items {
                        self.secret_data(item, &mut removed);
                    }
                }
            }
            if resource == "serviceaccounts" && subresource == "token" {
                if let Some(token) = object.pointer_mut("/status/token") {
                    self.replace(token, &mut removed);
                }
            }
            self.walk(object, &mut removed);
        }
        // The audit event's own annotations: credentials-like keys, but not the apiserver's
        // authorization decision and reason.
        if let Some(annotations) = event.get_mut("annotations").and_then(Value::as_object_mut) {
            for (key, value) in annotations.iter_mut() {
                if !key.starts_with("authorization.k8s.io/") && self.sensitive_key.is_match(key) {
                    self.replace(value, &mut removed);
                }
            }
        }
        removed.retain(|s| s.len() >= 4 && s != &self.marker);
        removed.sort();
        removed.dedup();
        removed
    }

    fn secret_data(&self, object: &mut Value, removed: &mut Vec<String>) {
        for field in ["data", "stringData"] {
            if let Some(data) = object.get_mut(field).and_then(Value::as_object_mut) {
                for value in data.values_mut() {
                    self.replace(value, removed);
                }
            }
        }
    }

    /// Replaces a string value with the marker, remembering it (and, for base64, its text).
    fn replace(&self, value: &mut Value, removed: &mut Vec<String>) {
        if let Value::String(s) = value {
            if *s == self.marker {
                return;
            }
            use base64::Engine as _;
            if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(s.as_bytes()) {
                if let Ok(text) = String::from_utf8(decoded) {
                    removed.push(text);
                }
            }
            removed.push(std::mem::replace(s, self.marker.clone()));
        }
    }

    /// Structure anywhere in an object: Secrets, env values, annotations, credential keys.
    fn walk(&self, value: &mut Value, removed: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("kind").and_then(Value::as_str) == Some("Secret") {
                    for field in ["data", "stringData"] {
                        if let Some(data) = map.get_mut(field).and_then(Value::as_object_mut) {
                            for v in data.values_mut() {
                                self.replace(v, removed);
                            }
                        }
                    }
                }
                if map.get("kind").and_then(Value::as_str) == Some("TokenRequest") {
                    if let Some(token) = map.get_mut("status").and_then(|s| s.get_mut("token")) {
                        self.replace(token, removed);
                    }
                }
                if let Some(env) = map.get_mut("env").and_then(Value::as_array_mut) {
                    for var in env {
                        if let Some(v) = var.get_mut("value") {
                            self.replace(v, removed);
                        }
                    }
                }
                if let Some(annotations) = map
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut("annotations"))
                    .and_then(Value::as_object_mut)
                {
                    for (key, v) in annotations.iter_mut() {
                        if WHOLE_OBJECT_ANNOTATIONS.contains(&key.as_str()) || self.sensitive_key.is_match(key) {
                            self.replace(v, removed);
                        }
                    }
                }
                for (key, v) in map.iter_mut() {
                    if v.is_string() && self.sensitive_key.is_match(key) {
                        self.replace(v, removed);
                    } else {
                        self.walk(v, removed);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.walk(item, removed);
                }
            }
            _ => {}
        }
    }

    /// Text with the removed values and every pattern's matches replaced.
    pub fn text<'a>(&self, text: &'a str, removed: &[String]) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in removed {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), &self.marker));
            }
        }
        let matching = self.any.matches(&out);
        if !matching.matched_any() {
            return out;
        }
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

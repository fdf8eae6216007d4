//! Alerts in the shape each consumer expects, chosen per output:
//!
//! - [`Encoding::Falco`] (default): Falco's JSON output plus kaudit's fields ([`super::Alert`]),
//!   which falcosidekick and parsers written for Falco read unchanged;
//! - [`Encoding::Ocsf`]: an OCSF Detection Finding ([`ocsf`]);
//! - [`Encoding::Ecs`]: Elastic Common Schema with the `kubernetes.audit.*` names of Elastic's own
//!   integration ([`ecs`]).
//!
//! Every encoding goes through the output's [`Redactor`] first (on unless the output says
//! `redact = false`): `output`, `output_fields` and the event are redacted before they are
//! written. With `include_event` the (redacted) triggering event is attached: `event` in Falco
//! JSON, `evidences[].data` in OCSF, the request and response bodies under `kubernetes.audit` in
//! ECS.

pub mod ecs;
pub mod ocsf;

use super::redact::Redactor;
use super::Alert;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Falco,
    Ocsf,
    Ecs,
}

impl Encoding {
    /// CloudEvents `type` of an alert in this encoding.
    pub fn ce_type(self) -> &'static str {
        match self {
            Encoding::Falco => "dev.kaudit.alert.falco.v1",
            Encoding::Ocsf => "dev.kaudit.alert.ocsf.v1",
            Encoding::Ecs => "dev.kaudit.alert.ecs.v1",
        }
    }

    /// The message's content type: JSON, with the schema it follows as a parameter.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Falco => "application/json; profile=falco",
            Encoding::Ocsf => "application/json; profile=\"ocsf-1.3.0/detection_finding\"",
            Encoding::Ecs => "application/json; profile=\"ecs-8.11\"",
        }
    }

    /// CloudEvents `dataschema`.
    pub fn dataschema(self) -> &'static str {
        match self {
            Encoding::Falco => "https://falco.org/docs/concepts/outputs/formatting/",
            Encoding::Ocsf => "https://schema.ocsf.io/1.3.0/classes/detection_finding",
            Encoding::Ecs => "https://www.elastic.co/guide/en/ecs/8.11/ecs-field-reference.html",
        }
    }
}

/// How one output writes alerts.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub encoding: Encoding,
    pub include_event: bool,
    /// `None` only where an output turned redaction off.
    pub redactor: Option<Arc<Redactor>>,
}

/// An alert made ready for an encoding: redacted, its event parsed.
pub struct Prepared<'a> {
    pub alert: &'a Alert,
    /// The alert's own where redaction changed nothing.
    pub output: Cow<'a, str>,
    pub output_fields: Cow<'a, Map<String, Value>>,
    /// The triggering event (redacted), when the alert has one.
    pub event: Option<Value>,
    pub include_event: bool,
}

impl Prepared<'_> {
    /// A string at a JSON pointer of the event.
    pub fn event_str(&self, pointer: &str) -> Option<&str> {
        self.event.as_ref()?.pointer(pointer)?.as_str()
    }
}

impl Encoder {
    /// An encoder redacting with the built-in patterns, unless `redact` is off (the offline
    /// tools'; a pipeline's outputs share the redactor its config makes: `sink::build`).
    pub fn builtin(encoding: Encoding, include_event: bool, redact: bool) -> Encoder {
        Encoder {
            encoding,
            include_event,
            redactor: redact.then(Redactor::builtin),
        }
    }

    pub fn encode(&self, alert: &Alert) -> anyhow::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(1024);
        self.encode_with(alert, &mut Memo::default(), &mut out)?;
        Ok(out)
    }

    /// [`Encoder::encode`] appended to `out`, for one of several alerts encoded in turn with the
    /// same `memo` (and, for lines, the same buffer). On an error `out` is as it was.
    pub fn encode_with(&self, alert: &Alert, memo: &mut Memo, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let start = out.len();
        let written = self.write(alert, memo, &mut *out);
        if written.is_err() {
            out.truncate(start);
        }
        written
    }

    fn write(&self, alert: &Alert, memo: &mut Memo, out: &mut Vec<u8>) -> anyhow::Result<()> {
        let prepared = self.prepare(alert, memo);
        match self.encoding {
            Encoding::Falco => {
                #[derive(serde::Serialize)]
                struct WithEvent<'a> {
                    #[serde(flatten)]
                    alert: &'a Alert,
                    event: &'a Value,
                }
                let redacted;
                let mut alert = alert;
                if matches!(prepared.output, Cow::Owned(_)) || matches!(prepared.output_fields, Cow::Owned(_)) {
                    redacted = Alert {
                        output: prepared.output.into_owned(),
                        output_fields: prepared.output_fields.into_owned(),
                        ..alert.clone()
                    };
                    alert = &redacted;
                }
                match prepared.event.as_ref().filter(|_| self.include_event) {
                    Some(event) => serde_json::to_writer(out, &WithEvent { alert, event })?,
                    None => serde_json::to_writer(out, alert)?,
                }
            }
            Encoding::Ocsf => serde_json::to_writer(out, &ocsf::finding(&prepared))?,
            Encoding::Ecs => serde_json::to_writer(out, &ecs::document(&prepared))?,
        }
        Ok(())
    }

    fn prepare<'a>(&self, alert: &'a Alert, memo: &mut Memo) -> Prepared<'a> {
        // The event is read when it is shown (OCSF and ECS show parts of it always) or when
        // redaction must know what it holds; once for the alerts of one event in a row.
        let shown = self.include_event || self.encoding != Encoding::Falco;
        let text = alert.origin.event.as_ref().map(|e| e.as_str());
        let id = text.map(|t| (t.as_ptr() as usize, t.len()));
        if id.is_none() || memo.event != id {
            let mut event: Option<Value> = match &alert.origin.event {
                Some(e) if shown => crate::audit::to_value(e.as_str()).ok(),
                _ => None,
            };
            memo.removed = match (&self.redactor, event.as_mut(), &alert.origin.event) {
                (Some(redactor), Some(e), _) => redactor.event(e),
                // Redaction alone reads only the fields its structural pass looks at, in place.
                (Some(redactor), None, Some(e)) if !shown => redactor.structure_of(&e.view()),
                _ => Vec::new(),
            };
            memo.event = id;
            memo.shown = if shown { event } else { None };
        }
        let event = memo.shown.clone();
        let mut output = Cow::Borrowed(alert.output.as_str());
        let mut output_fields = Cow::Borrowed(&alert.output_fields);
        if let Some(redactor) = &self.redactor {
            output = redactor.text(&alert.output, &memo.removed);
            for (key, value) in &alert.output_fields {
                if let Some(clean) = redactor.scrubbed(value, &memo.removed) {
                    output_fields.to_mut().insert(key.clone(), clean);
                }
            }
        }
        Prepared {
            alert,
            output,
            output_fields,
            event,
            include_event: self.include_event,
        }
    }
}

/// What the encoder learnt of the last event it read: several alerts of one event, encoded in
/// turn, have it read and redacted once.
#[derive(Default)]
pub struct Memo {
    /// Where the event's text is and how long it is: the alerts of one event share the text
    /// (and no other event can take its place while they live).
    event: Option<(usize, usize)>,
    /// The values redaction removed from it (to scrub from the text that quotes them).
    removed: Vec<String>,
    /// The event as the encoding shows it (redacted), if it does.
    shown: Option<Value>,
}

/// MITRE ATT&CK from an alert's tags: tactics (`mitre_<tactic>`, as Falco names them) and
/// technique ids (`T1610`, `T1552.007`).
pub struct Mitre {
    pub tactics: Vec<(&'static str, &'static str)>,
    pub techniques: Vec<String>,
}

const TACTICS: &[(&str, &str, &str)] = &[
    ("reconnaissance", "TA0043", "Reconnaissance"),
    ("resource_development", "TA0042", "Resource Development"),
    ("initial_access", "TA0001", "Initial Access"),
    ("execution", "TA0002", "Execution"),
    ("persistence", "TA0003", "Persistence"),
    ("privilege_escalation", "TA0004", "Privilege Escalation"),
    ("defense_evasion", "TA0005", "Defense Evasion"),
    ("credential_access", "TA0006", "Credential Access"),
    ("discovery", "TA0007", "Discovery"),
    ("lateral_movement", "TA0008", "Lateral Movement"),
    ("collection", "TA0009", "Collection"),
    ("command_and_control", "TA0011", "Command and Control"),
    ("exfiltration", "TA0010", "Exfiltration"),
    ("impact", "TA0040", "Impact"),
];

pub fn mitre(tags: &[String]) -> Mitre {
    let mut tactics = Vec::new();
    let mut techniques = Vec::new();
    for tag in tags {
        if let Some(name) = tag.strip_prefix("mitre_") {
            if let Some((_, id, title)) = TACTICS.iter().find(|(n, _, _)| *n == name) {
                tactics.push((*id, *title));
            }
        } else if is_technique(tag) {
            techniques.push(tag.clone());
        }
    }
    Mitre { tactics, techniques }
}

fn is_technique(tag: &str) -> bool {
    let Some(rest) = tag.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = rest.split_once('.').unwrap_or((rest, ""));
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && (sub.is_empty() || (sub.len() == 3 && sub.bytes().all(|b| b.is_ascii_digit())))
}

/// Milliseconds since the epoch of an RFC 3339 time (0 when unreadable).
pub fn epoch_ms(time: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0)
}

/// A stable id of a rule (its name, hashed): rules are identified by name in rule files.
pub fn rule_uid(name: &str) -> String {
    crate::ids::digest(&["rule", name])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mitre_tags() {
        let tags: Vec<String> = [
            "k8s",
            "mitre_privilege_escalation",
            "T1610",
            "T1552.007",
            "T16",
            "mitre_nope",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let m = mitre(&tags);
        assert_eq!(m.tactics, [("TA0004", "Privilege Escalation")]);
        assert_eq!(m.techniques, ["T1610", "T1552.007"]);
        assert_eq!(epoch_ms("2018-10-25T14:09:12.581541Z"), 1540476552581);
    }
}

//! Where alerts go: stdout (JSON lines), a file (JSON lines, appended), or the alerts topic
//! of the bus; each output in its own encoding (`falco`, `ocsf`, `ecs`), redacted unless it says
//! otherwise, with or without the triggering event. A sink's `send` returns only when the alerts are written (and, for the topic,
//! acknowledged by the broker): the detector commits its input after that.

use super::encode::{Encoder, Encoding, Memo};
use super::redact::{RedactionConfig, Redactor};
use super::Alert;
use crate::bus::{headers, Bus, Message};
use async_trait::async_trait;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// One `[[outputs]]` entry: where alerts go and in which shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    pub kind: OutputKind,
    /// `file`: the file alerts are appended to.
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `topic`: the bus topic (default `bus.alerts_topic`).
    #[serde(default)]
    pub topic: Option<String>,
    /// `topic` on Kafka: publish to `<topic>.<priority>` (NATS subjects end in the priority
    /// always: `kaudit.alerts.warning`).
    #[serde(default)]
    pub per_priority: bool,
    /// `falco` (default), `ocsf` or `ecs`.
    #[serde(default)]
    pub encoding: Encoding,
    /// Attach the (redacted) triggering event.
    #[serde(default)]
    pub include_event: bool,
    /// Redact secrets before writing (default on).
    #[serde(default = "yes")]
    pub redact: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    Stdout,
    File,
    Topic,
}

impl OutputConfig {
    pub fn stdout() -> OutputConfig {
        OutputConfig {
            kind: OutputKind::Stdout,
            path: None,
            topic: None,
            per_priority: false,
            encoding: Encoding::Falco,
            include_event: false,
            redact: true,
        }
    }

    /// Checks that the options fit the kind.
    pub fn validate(&self, index: usize) -> anyhow::Result<()> {
        let what = format!("outputs[{index}] (kind = {:?})", self.kind).to_lowercase();
        match self.kind {
            OutputKind::File if self.path.is_none() => anyhow::bail!("{what}: `path` is required"),
            OutputKind::Stdout | OutputKind::Topic if self.path.is_some() => {
                anyhow::bail!("{what}: `path` belongs to kind = \"file\"")
            }
            OutputKind::Stdout | OutputKind::File if self.topic.is_some() || self.per_priority => {
                anyhow::bail!("{what}: `topic` and `per_priority` belong to kind = \"topic\"")
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()>;
}

/// Encoded alerts as JSON lines.
pub fn json_lines(encoder: &Encoder, alerts: &[Alert]) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(alerts.len() * 1024);
    let mut memo = Default::default();
    for a in alerts {
        encoder.encode_with(a, &mut memo, &mut buf)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// JSON lines to a writer: stdout, or a file opened for appending.
pub struct LinesSink {
    out: Mutex<Box<dyn Write + Send>>,
    encoder: Encoder,
}

impl LinesSink {
    pub fn stdout(encoder: Encoder) -> LinesSink {
        LinesSink {
            out: Mutex::new(Box::new(std::io::stdout())),
            encoder,
        }
    }

    pub fn file(path: &std::path::Path, encoder: Encoder) -> anyhow::Result<LinesSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open alert file {}: {e}", path.display()))?;
        Ok(LinesSink {
            out: Mutex::new(Box::new(file)),
            encoder,
        })
    }
}

#[async_trait]
impl Sink for LinesSink {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let buf = json_lines(&self.encoder, alerts)?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&buf)?;
        out.flush()?;
        Ok(())
    }
}

/// Alerts as messages: key = dedup key (one key's alerts stay in order), CloudEvents headers
/// in binary mode (`ce_id` = alert id, so consumers can drop redeliveries; `ce_source` = the
/// cluster; `ce_type`, `ce_dataschema` and `content-type` per encoding).
pub struct TopicSink {
    pub bus: Arc<dyn Bus>,
    pub topic: String,
    pub per_priority: bool,
    pub encoder: Encoder,
}

pub fn alert_message(alert: &Alert, encoder: &Encoder) -> anyhow::Result<Message> {
    alert_message_with(alert, encoder, &mut Default::default())
}

/// [`alert_message`] for one of several alerts made into messages in turn with one `memo`.
fn alert_message_with(alert: &Alert, encoder: &Encoder, memo: &mut Memo) -> anyhow::Result<Message> {
    let encoding = encoder.encoding;
    let mut payload = Vec::with_capacity(1024);
    encoder.encode_with(alert, memo, &mut payload)?;
    let mut message = Message {
        key: alert.dedup.key.clone(),
        route: alert.priority.to_ascii_lowercase(),
        id: Some(alert.id.clone()),
        payload: payload.into(),
        headers: vec![
            (headers::CLUSTER.into(), alert.cluster.clone()),
            ("ce_specversion".into(), "1.0".into()),
            ("ce_id".into(), alert.id.clone()),
            ("ce_type".into(), encoding.ce_type().into()),
            ("ce_source".into(), alert.cluster.clone()),
            ("ce_subject".into(), alert.rule.clone()),
            ("ce_time".into(), alert.time.clone()),
            ("ce_dataschema".into(), encoding.dataschema().into()),
            ("content-type".into(), encoding.content_type().into()),
        ],
    };
    if let Some(tp) = &alert.origin.traceparent {
        message.headers.push((headers::TRACEPARENT.into(), tp.clone()));
    }
    if let Some(received) = &alert.origin.received {
        message.headers.push((headers::RECEIVED.into(), received.clone()));
    }
    Ok(message)
}

/// Falco's priorities, in the lower case of topic names.
const PRIORITIES: [&str; 8] = [
    "emergency",
    "alert",
    "critical",
    "error",
    "warning",
    "notice",
    "informational",
    "debug",
];

#[async_trait]
impl Sink for TopicSink {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let mut memo = Memo::default();
        let messages = alerts
            .iter()
            .map(|a| alert_message_with(a, &self.encoder, &mut memo))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if !self.per_priority {
            self.bus.publish(&self.topic, messages).await?;
            return Ok(());
        }
        let mut by_topic: std::collections::BTreeMap<String, Vec<Message>> = Default::default();
        for m in messages {
            by_topic
                .entry(format!("{}.{}", self.topic, m.route))
                .or_default()
                .push(m);
        }
        for (topic, messages) in by_topic {
            self.bus.publish(&topic, messages).await?;
        }
        Ok(())
    }
}

/// Builds the sinks a config names (stdout when it names none), each with its encoder.
pub async fn build(
    outputs: &[OutputConfig],
    bus: &Arc<dyn Bus>,
    bus_config: &crate::bus::BusConfig,
    redaction: &RedactionConfig,
) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    let redactor = Arc::new(Redactor::new(redaction)?);
    let default = [OutputConfig::stdout()];
    let outputs = if outputs.is_empty() { &default[..] } else { outputs };
    let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
    for (index, o) in outputs.iter().enumerate() {
        o.validate(index)?;
        let encoder = Encoder {
            encoding: o.encoding,
            include_event: o.include_event,
            redactor: o.redact.then(|| redactor.clone()),
        };
        if !o.redact {
            tracing::warn!("outputs[{index}]: redaction is off: secrets in events may reach this output");
        }
        sinks.push(match o.kind {
            OutputKind::Stdout => Arc::new(LinesSink::stdout(encoder)),
            OutputKind::File => Arc::new(LinesSink::file(o.path.as_deref().expect("validated"), encoder)?),
            OutputKind::Topic => {
                let topic = o.topic.clone().unwrap_or_else(|| bus_config.alerts_topic.clone());
                // NATS subjects end in the priority already; Kafka needs topics of its own.
                let per_priority = o.per_priority && bus_config.kind == crate::bus::BusKind::Kafka;
                let topics: Vec<String> = if per_priority {
                    PRIORITIES.iter().map(|p| format!("{topic}.{p}")).collect()
                } else {
                    vec![topic.clone()]
                };
                bus.ensure_topics(&topics.iter().map(String::as_str).collect::<Vec<_>>())
                    .await?;
                Arc::new(TopicSink {
                    bus: bus.clone(),
                    topic,
                    per_priority,
                    encoder,
                })
            }
        });
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            id: "a1".into(),
            time: "2026-11-20T10:00:00Z".into(),
            rule: "Privileged container".into(),
            priority: "Warning".into(),
            source: "k8s_audit".into(),
            output: "o".into(),
            output_fields: Default::default(),
            tags: vec![],
            hostname: "h".into(),
            cluster: "prod".into(),
            audit_id: "x".into(),
            dedup: crate::alert::Dedup {
                key: "k1".into(),
                count: 1,
                suppressed: 0,
                first_seen: "2026-11-20T10:00:00Z".into(),
                last_seen: "2026-11-20T10:00:00Z".into(),
            },
            window: None,
            origin: Default::default(),
        }
    }

    #[test]
    fn messages_carry_cloudevents_headers_per_encoding() {
        for encoding in [Encoding::Falco, Encoding::Ocsf, Encoding::Ecs] {
            let encoder = Encoder {
                encoding,
                include_event: false,
                redactor: None,
            };
            let m = alert_message(&alert(), &encoder).unwrap();
            assert_eq!(m.key, "k1", "key = dedup key");
            assert_eq!(m.route, "warning");
            assert_eq!(m.id.as_deref(), Some("a1"));
            for (name, value) in [
                ("ce_specversion", "1.0"),
                ("ce_id", "a1"),
                ("ce_source", "prod"),
                ("ce_time", "2026-11-20T10:00:00Z"),
                ("ce_type", encoding.ce_type()),
                ("content-type", encoding.content_type()),
            ] {
                assert_eq!(m.header(name), Some(value), "{encoding:?} {name}");
            }
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap();
        }
    }

    /// Alerts of one event, encoded in turn, share the event's redaction; the next event's is
    /// its own: each line is scrubbed of its own event's secret, whatever came before it.
    #[test]
    fn alerts_of_one_event_in_a_row_are_each_redacted_by_their_own_event() {
        use base64::Engine as _;
        let secret_event = |value: &str| {
            let data = base64::engine::general_purpose::STANDARD.encode(value);
            let text = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"secrets","namespace":"n","name":"s"}},"requestObject":{{"kind":"Secret","data":{{"blob":"{data}"}}}}}}"#
            );
            crate::audit::Event::from_json(bytes::Bytes::from(text)).unwrap()
        };
        let (first, second) = (secret_event("first-hidden-value"), secret_event("second-hidden-value"));
        let quoting = |event: &crate::audit::Event, value: &str| Alert {
            output: format!("the secret holds {value}"),
            origin: crate::alert::Origin {
                event: Some(event.clone()),
                ..Default::default()
            },
            ..alert()
        };
        let alerts = [
            quoting(&first, "first-hidden-value"),
            quoting(&first, "first-hidden-value"),
            quoting(&second, "second-hidden-value"),
            quoting(&first, "first-hidden-value"),
        ];
        for encoding in [Encoding::Falco, Encoding::Ocsf] {
            let encoder = Encoder {
                encoding,
                include_event: true,
                redactor: Some(Redactor::builtin()),
            };
            let lines = String::from_utf8(json_lines(&encoder, &alerts).unwrap()).unwrap();
            assert_eq!(lines.lines().count(), 4);
            for line in lines.lines() {
                assert!(!line.contains("hidden-value"), "{encoding:?}: {line}");
                assert!(!line.contains(&base64::engine::general_purpose::STANDARD.encode("first-hidden-value")));
                assert!(line.contains("the secret holds"), "{line}");
            }
        }
    }

    /// A Falco alert without the event on a body-less read: an annotation of the event's own
    /// with a credential key is still found (and scrubbed where the output quotes it), while
    /// the apiserver's own annotations alone leave the event unread.
    #[test]
    fn a_quoted_credential_annotation_of_a_read_is_scrubbed() {
        let event = |annotations: &str| {
            let text = format!(
                r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a","stage":"ResponseComplete","verb":"get","objectRef":{{"resource":"pods"}},"annotations":{annotations}}}"#
            );
            crate::audit::Event::from_json(bytes::Bytes::from(text)).unwrap()
        };
        let quoting = |event: crate::audit::Event| Alert {
            output: "the note says opaque-4711-value".into(),
            origin: crate::alert::Origin {
                event: Some(event),
                ..Default::default()
            },
            ..alert()
        };
        let encoder = Encoder::builtin(Encoding::Falco, false, true);
        let credential =
            event(r#"{"authorization.k8s.io/decision":"allow","example.com/session-token":"opaque-4711-value"}"#);
        assert!(Redactor::structure_reads(&credential.view()));
        let line = String::from_utf8(json_lines(&encoder, &[quoting(credential)]).unwrap()).unwrap();
        assert!(
            !line.contains("opaque-4711-value") && line.contains("the note says"),
            "{line}"
        );
        for plain in [
            r#"{"authorization.k8s.io/decision":"allow","authorization.k8s.io/reason":"RBAC"}"#,
            "null",
        ] {
            let plain = event(plain);
            assert!(!Redactor::structure_reads(&plain.view()));
            let line = String::from_utf8(json_lines(&encoder, &[quoting(plain)]).unwrap()).unwrap();
            assert!(line.contains("opaque-4711-value"), "{line}");
        }
        // What the pass cannot read as keys, it reads whole.
        assert!(Redactor::structure_reads(&event(r#"["x"]"#).view()));
        assert!(!Redactor::structure_reads(&event(r#"{"a":"b"}"#).view()));
    }

    #[test]
    fn options_must_fit_the_kind() {
        let mut o = OutputConfig::stdout();
        assert!(o.validate(0).is_ok());
        o.kind = OutputKind::File;
        assert!(o.validate(0).unwrap_err().to_string().contains("`path` is required"));
        o.path = Some("x".into());
        o.per_priority = true;
        assert!(o.validate(1).unwrap_err().to_string().contains("outputs[1]"));
    }
}

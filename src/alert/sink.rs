//! Where alerts go: stdout (JSON lines), a file (JSON lines, appended), or the alerts topic
//! of the bus. A sink's `send` returns only when the alerts are written (and, for the topic,
//! acknowledged by the broker): the detector commits its input after that.

use super::Alert;
use crate::bus::{headers, Bus, Message};
use async_trait::async_trait;
use serde::Deserialize;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum OutputConfig {
    Stdout,
    File {
        path: PathBuf,
    },
    /// The bus's alerts topic (`bus.alerts_topic`), or `topic` when given.
    Topic {
        #[serde(default)]
        topic: Option<String>,
    },
}

#[async_trait]
pub trait Sink: Send + Sync {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()>;
}

fn json_lines(alerts: &[Alert]) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(alerts.len() * 1024);
    for a in alerts {
        serde_json::to_writer(&mut buf, a)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

/// JSON lines to a writer: stdout, or a file opened for appending.
pub struct LinesSink {
    out: Mutex<Box<dyn Write + Send>>,
}

impl LinesSink {
    pub fn stdout() -> LinesSink {
        LinesSink {
            out: Mutex::new(Box::new(std::io::stdout())),
        }
    }

    pub fn file(path: &std::path::Path) -> anyhow::Result<LinesSink> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open alert file {}: {e}", path.display()))?;
        Ok(LinesSink {
            out: Mutex::new(Box::new(file)),
        })
    }
}

#[async_trait]
impl Sink for LinesSink {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let buf = json_lines(alerts)?;
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        out.write_all(&buf)?;
        out.flush()?;
        Ok(())
    }
}

/// Alerts as messages: key = dedup key (one key's alerts stay in order), headers for the
/// cluster and CloudEvents-style `ce_id` (= alert id, so consumers can drop redeliveries).
pub struct TopicSink {
    pub bus: Arc<dyn Bus>,
    pub topic: String,
}

pub fn alert_message(alert: &Alert) -> anyhow::Result<Message> {
    let mut message = Message {
        key: alert.dedup.key.clone(),
        route: alert.priority.to_ascii_lowercase(),
        id: Some(alert.id.clone()),
        payload: serde_json::to_vec(alert)?.into(),
        headers: vec![
            (headers::CLUSTER.into(), alert.cluster.clone()),
            ("ce_id".into(), alert.id.clone()),
            ("ce_type".into(), "dev.kaudit.alert".into()),
            ("ce_source".into(), alert.cluster.clone()),
            ("ce_time".into(), alert.time.clone()),
            ("content-type".into(), "application/json".into()),
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

#[async_trait]
impl Sink for TopicSink {
    async fn send(&self, alerts: &[Alert]) -> anyhow::Result<()> {
        if alerts.is_empty() {
            return Ok(());
        }
        let messages = alerts.iter().map(alert_message).collect::<anyhow::Result<Vec<_>>>()?;
        self.bus.publish(&self.topic, messages).await?;
        Ok(())
    }
}

/// Builds the sinks a config names (stdout when it names none).
pub fn build(outputs: &[OutputConfig], bus: &Arc<dyn Bus>, alerts_topic: &str) -> anyhow::Result<Vec<Arc<dyn Sink>>> {
    if outputs.is_empty() {
        return Ok(vec![Arc::new(LinesSink::stdout())]);
    }
    outputs
        .iter()
        .map(|o| -> anyhow::Result<Arc<dyn Sink>> {
            Ok(match o {
                OutputConfig::Stdout => Arc::new(LinesSink::stdout()),
                OutputConfig::File { path } => Arc::new(LinesSink::file(path)?),
                OutputConfig::Topic { topic } => Arc::new(TopicSink {
                    bus: bus.clone(),
                    topic: topic.clone().unwrap_or_else(|| alerts_topic.to_string()),
                }),
            })
        })
        .collect()
}

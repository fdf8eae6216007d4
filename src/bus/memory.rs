//! The in-process bus of `kaudit run`: one bounded queue per topic.
//!
//! A message holds one unit of the topic's capacity from publish until it is committed, so a
//! consumer that falls behind makes publishers see [`PublishError::Saturated`] (the shim turns
//! that into 429 + Retry-After) instead of memory growing. A publish is acknowledged once its
//! messages are queued. Messages published and not yet committed are lost with the process:
//! the memory bus is for one process, and the apiserver resends what it did not see acked.
//!
//! Nothing reads an in-process dead-letter topic, so the memory bus does not queue dead letters:
//! a publish to that topic appends them to a file rotated at a size (`dead_letter_file`), or logs
//! them (rate-limited, truncated), and acknowledges. They never hold any topic's capacity, so a
//! batch holding a bad item keeps being accepted.

use super::{Bus, Delivery, Message, PublishError, Subscription};
use async_trait::async_trait;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemoryConfig {
    /// Messages a topic holds, queued or being processed.
    pub capacity: usize,
    /// Where dead letters go (JSON lines); without it they are logged (truncated). Either way
    /// they are counted in `kaudit_events_dead_lettered`.
    pub dead_letter_file: Option<std::path::PathBuf>,
    /// Size at which the dead-letter file is renamed to `<file>.1` (replacing the previous one)
    /// and a new one begun: at most twice this on disk.
    pub dead_letter_file_max_bytes: u64,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            capacity: 100_000,
            dead_letter_file: None,
            dead_letter_file_max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Where an in-process bus puts dead letters: a file rotated at a size, or the log.
struct DeadLetters {
    config: MemoryConfig,
    log: crate::telemetry::LogLimiter,
}

impl DeadLetters {
    fn write(&mut self, messages: &[Message]) -> Result<(), PublishError> {
        use std::io::Write as _;
        let Some(path) = &self.config.dead_letter_file else {
            for m in messages {
                if self.log.allow() {
                    let text = String::from_utf8_lossy(&m.payload);
                    tracing::warn!("dead letter: {}", crate::telemetry::truncated(&text, 512));
                }
            }
            return Ok(());
        };
        let written = (|| -> std::io::Result<()> {
            if std::fs::metadata(path).is_ok_and(|m| m.len() >= self.config.dead_letter_file_max_bytes) {
                let mut rotated = path.clone().into_os_string();
                rotated.push(".1");
                std::fs::rename(path, rotated)?;
            }
            let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            let mut lines = Vec::new();
            for m in messages {
                lines.extend_from_slice(&m.payload);
                lines.push(b'\n');
            }
            file.write_all(&lines)
        })();
        written.map_err(|e| PublishError::Unavailable(format!("dead-letter file {}: {e}", path.display())))
    }
}

struct Topic {
    permits: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Message>,
    rx: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Message>>>,
}

pub struct MemoryBus {
    config: MemoryConfig,
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    dead_letter_topic: String,
    dead_letters: Mutex<DeadLetters>,
}

impl MemoryBus {
    pub fn new(config: MemoryConfig, dead_letter_topic: &str) -> MemoryBus {
        MemoryBus {
            topics: Mutex::new(HashMap::new()),
            dead_letter_topic: dead_letter_topic.to_string(),
            dead_letters: Mutex::new(DeadLetters {
                config: config.clone(),
                log: crate::telemetry::LogLimiter::new(Duration::from_secs(10), 10),
            }),
            config,
        }
    }

    fn topic(&self, name: &str) -> Arc<Topic> {
        let mut topics = self.topics.lock().unwrap_or_else(|e| e.into_inner());
        topics
            .entry(name.to_string())
            .or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                Arc::new(Topic {
                    permits: Arc::new(Semaphore::new(self.config.capacity)),
                    tx,
                    rx: Arc::new(tokio::sync::Mutex::new(rx)),
                })
            })
            .clone()
    }

    /// Messages queued or in flight on `topic`.
    pub fn depth(&self, topic: &str) -> usize {
        self.config.capacity - self.topic(topic).permits.available_permits()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), PublishError> {
        if topic == self.dead_letter_topic {
            return self
                .dead_letters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write(&messages);
        }
        let t = self.topic(topic);
        let n = u32::try_from(messages.len()).map_err(|_| PublishError::Saturated(Duration::from_secs(1)))?;
        match t.permits.try_acquire_many(n) {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(PublishError::Saturated(Duration::from_secs(1))),
        }
        for m in messages {
            t.tx.send(m)
                .map_err(|_| PublishError::Unavailable("memory bus closed".into()))?;
        }
        Ok(())
    }

    fn max_batch(&self) -> Option<usize> {
        Some(self.config.capacity)
    }

    async fn subscribe(&self, topic: &str, _group: &str) -> anyhow::Result<Box<dyn Subscription>> {
        Ok(Box::new(MemorySubscription {
            topic: self.topic(topic),
        }))
    }
}

struct MemorySubscription {
    topic: Arc<Topic>,
}

#[async_trait]
impl Subscription for MemorySubscription {
    async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<Delivery>>> {
        let mut rx = self.topic.rx.lock().await;
        let mut buf = Vec::with_capacity(max.min(1024));
        if rx.recv_many(&mut buf, max.max(1)).await == 0 {
            return Ok(None);
        }
        Ok(Some(
            buf.into_iter()
                .map(|message| Delivery::new(message, 0, None, ()))
                .collect(),
        ))
    }

    async fn commit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        self.topic.permits.add_permits(deliveries.len());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(i: usize) -> Message {
        Message {
            key: "c".into(),
            route: "c".into(),
            id: None,
            payload: Bytes::from(i.to_string()),
            headers: vec![],
        }
    }

    #[tokio::test]
    async fn bounded_until_committed() {
        let bus = MemoryBus::new(
            MemoryConfig {
                capacity: 3,
                ..Default::default()
            },
            "dead",
        );
        bus.publish("t", vec![msg(1), msg(2)]).await.unwrap();
        assert!(matches!(
            bus.publish("t", vec![msg(3), msg(4)]).await,
            Err(PublishError::Saturated(_))
        ));
        let mut sub = bus.subscribe("t", "g").await.unwrap();
        let got = sub.next(10).await.unwrap().unwrap();
        assert_eq!(got.len(), 2);
        // Delivered but not committed still counts.
        assert!(bus.publish("t", vec![msg(3), msg(4)]).await.is_err());
        sub.commit(got).await.unwrap();
        bus.publish("t", vec![msg(3), msg(4), msg(5)]).await.unwrap();
        assert_eq!(bus.depth("t"), 3);
    }

    #[tokio::test]
    async fn dead_letters_go_to_a_rotated_file_and_hold_no_capacity() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dead.jsonl");
        let config = MemoryConfig {
            capacity: 3,
            dead_letter_file: Some(file.clone()),
            dead_letter_file_max_bytes: 10,
        };
        let bus = MemoryBus::new(config, "dead");
        // Far more dead letters than the capacity: all taken, the events topic untouched.
        for i in 0..20 {
            bus.publish("dead", vec![msg(i)]).await.unwrap();
        }
        bus.publish("t", vec![msg(1), msg(2), msg(3)]).await.unwrap();
        assert_eq!(bus.depth("dead"), 0);
        // Rotated at 10 bytes: the file and its one predecessor hold the newest letters.
        let now = std::fs::read_to_string(&file).unwrap();
        let before = std::fs::read_to_string(dir.path().join("dead.jsonl.1")).unwrap();
        assert!(now.len() <= 10 + 3 && before.len() <= 10 + 3, "{now:?} {before:?}");
        assert!(now.ends_with("19\n"), "{now:?}");
        // An unwritable file is an unacknowledged publish, never a silent loss.
        let bus = MemoryBus::new(
            MemoryConfig {
                dead_letter_file: Some(dir.path().join("no/such/dir/dead.jsonl")),
                ..Default::default()
            },
            "dead",
        );
        assert!(matches!(
            bus.publish("dead", vec![msg(1)]).await,
            Err(PublishError::Unavailable(_))
        ));
    }
}

//! The in-process bus of `kaudit run`: one bounded queue per topic.
//!
//! A message holds one unit of the topic's capacity from publish until it is committed, so a
//! consumer that falls behind makes publishers see [`PublishError::Saturated`] (the shim turns
//! that into 429 + Retry-After) instead of memory growing. A publish is acknowledged once its
//! messages are queued. Messages published and not yet committed are lost with the process:
//! the memory bus is for one process, and the apiserver resends what it did not see acked.

use super::{AckToken, Bus, Delivery, Message, PublishError, Subscription};
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
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig { capacity: 100_000 }
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
}

impl MemoryBus {
    pub fn new(config: MemoryConfig) -> MemoryBus {
        MemoryBus {
            config,
            topics: Mutex::new(HashMap::new()),
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
                .map(|message| Delivery {
                    message,
                    token: AckToken::Memory,
                })
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
        let bus = MemoryBus::new(MemoryConfig { capacity: 3 });
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
}

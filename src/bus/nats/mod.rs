//! NATS JetStream transport.
//!
//! Each topic is a stream (`kaudit.events` → stream `KAUDIT_EVENTS`, subjects `kaudit.events.>`),
//! created or checked at start. The events topic is partitioned ([`partitions`]): an event goes
//! to `kaudit.events.<partition>.<cluster>` and each detector consumes the partitions it holds a
//! lease on, so one cluster's events reach one detector. Other topics are not: a message goes to
//! `<topic>.<route>` (`kaudit.alerts.<priority>`) and readers share one durable pull consumer.
//! Publish waits for every JetStream ack; consumers (`max_ack_pending` and `ack_wait` from the
//! config) acknowledge only after their alerts are stored, and a commit returns once the server
//! has read every ack ([`ack`]). Every message carries a `Nats-Msg-Id` — its own id (alerts: the
//! alert id; a log line's: file and offset) or else a digest of its key and payload
//! ([`content_id`]) — and the stream drops one it has stored within its duplicate window: the
//! events of a batch an apiserver re-sends after a refusal are stored once, even those stored
//! before the refusal.

mod handover;
pub mod partitions;

use super::{Bus, Delivery, Gathering, Message, PublishError, Subscription};
use async_nats::jetstream::{self, consumer::pull, stream};
use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use std::future::IntoFuture;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL(s), comma-separated.
    pub url: String,
    /// Credentials file (`.creds`), optional.
    pub credentials_file: Option<std::path::PathBuf>,
    /// Create streams that do not exist (otherwise their absence is an error).
    pub create_streams: bool,
    /// How long streams keep messages.
    pub max_age_secs: u64,
    /// Window in which a repeated `Nats-Msg-Id` is dropped.
    pub duplicate_window_secs: u64,
    /// Unacknowledged deliveries a consumer may have out; the bound on detector memory.
    pub max_ack_pending: i64,
    /// A delivery not acknowledged within this is handed out again (another detector).
    pub ack_wait_secs: u64,
    /// How long a publish may wait for its acks before the shim answers 503.
    pub publish_timeout_secs: u64,
    /// Stream replicas (1 for a single server).
    pub replicas: usize,
    /// Partitions of the events topic: the most detectors that can share the work.
    pub partitions: u32,
    /// A detector that stops renewing its partition leases loses them after this long.
    pub lease_secs: u64,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            create_streams: true,
            max_age_secs: 7 * 24 * 3600,
            duplicate_window_secs: 120,
            max_ack_pending: 20_000,
            ack_wait_secs: 30,
            publish_timeout_secs: 10,
            replicas: 1,
            partitions: 8,
            lease_secs: 10,
        }
    }
}

pub struct NatsBus {
    js: jetstream::Context,
    config: NatsConfig,
    /// Topics whose messages are spread over partitions (the events topic).
    partitioned: Vec<String>,
}

/// The id of a message that came without one: its key (for events, the cluster) and its payload.
/// An apiserver re-sends a refused batch unchanged, so its events keep their ids; another
/// cluster's identical event has another id, so one cluster cannot make another's events vanish.
fn content_id(key: &str, payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(key.as_bytes());
    hash.update([0]);
    hash.update(payload);
    hex::encode(&hash.finalize()[..16])
}

/// `kaudit.events` → `KAUDIT_EVENTS`.
pub fn stream_name(topic: &str) -> String {
    topic
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// A subject token from a free string (cluster names, priorities): no dots, wildcards or spaces.
fn token(s: &str) -> String {
    let t: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

impl NatsBus {
    /// Connects and makes sure the topics' streams exist; `partitioned` names the topics whose
    /// consumers split them by partition.
    pub async fn connect(config: NatsConfig, topics: &[&str], partitioned: &[&str]) -> anyhow::Result<NatsBus> {
        let mut options = async_nats::ConnectOptions::new()
            .name("kaudit")
            .retry_on_initial_connect();
        if let Some(creds) = &config.credentials_file {
            options = options.credentials_file(creds).await?;
        }
        let client = tokio::time::timeout(Duration::from_secs(10), options.connect(config.url.as_str()))
            .await
            .map_err(|_| anyhow::anyhow!("NATS at {} did not answer within 10s", config.url))??;
        let js = jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(config.publish_timeout_secs))
            .build(client);
        let bus = NatsBus {
            js,
            config,
            partitioned: partitioned.iter().map(|t| t.to_string()).collect(),
        };
        for topic in topics {
            bus.ensure_stream(topic).await?;
        }
        Ok(bus)
    }

    async fn ensure_stream(&self, topic: &str) -> anyhow::Result<stream::Stream> {
        let name = stream_name(topic);
        if !self.config.create_streams {
            return self.js.get_stream(&name).await.map_err(|e| {
                anyhow::anyhow!("JetStream stream {name} (for {topic}) is missing and create_streams is off: {e}")
            });
        }
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("{topic}.>")],
            max_age: Duration::from_secs(self.config.max_age_secs),
            duplicate_window: Duration::from_secs(self.config.duplicate_window_secs),
            storage: stream::StorageType::File,
            num_replicas: self.config.replicas,
            ..Default::default()
        };
        self.js
            .get_or_create_stream(config)
            .await
            .map_err(|e| anyhow::anyhow!("JetStream stream {name}: {e}"))
    }
}

#[async_trait]
impl Bus for NatsBus {
    async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        for topic in topics {
            self.ensure_stream(topic).await?;
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), PublishError> {
        let mut acks = Vec::with_capacity(messages.len());
        for m in messages {
            let mut headers = async_nats::HeaderMap::new();
            for (k, v) in &m.headers {
                headers.insert(k.as_str(), v.as_str());
            }
            let id = m.id.clone().unwrap_or_else(|| content_id(&m.key, &m.payload));
            let publish = jetstream::message::PublishMessage::build()
                .payload(m.payload)
                .headers(headers)
                .message_id(id);
            let subject = if self.partitioned.iter().any(|t| t == topic) {
                let p = partitions::partition(&m.key, self.config.partitions);
                format!("{topic}.{p}.{}", token(&m.route))
            } else {
                format!("{topic}.{}", token(&m.route))
            };
            let ack = self
                .js
                .send_publish(subject, publish)
                .await
                .map_err(|e| PublishError::Unavailable(e.to_string()))?;
            acks.push(ack);
        }
        let timeout = Duration::from_secs(self.config.publish_timeout_secs);
        let all = futures::future::join_all(acks.into_iter().map(IntoFuture::into_future));
        let results = tokio::time::timeout(timeout, all)
            .await
            .map_err(|_| PublishError::Unavailable(format!("no JetStream ack within {timeout:?}")))?;
        for r in results {
            r.map_err(|e| PublishError::Unavailable(e.to_string()))?;
        }
        Ok(())
    }

    async fn subscribe(&self, topic: &str, group: &str) -> anyhow::Result<Box<dyn Subscription>> {
        let stream = self.ensure_stream(topic).await?;
        if self.partitioned.iter().any(|t| t == topic) {
            let sub = partitions::PartitionedSubscription::start(&self.js, stream, topic, group, &self.config).await?;
            return Ok(Box::new(sub));
        }
        let consumer: jetstream::consumer::Consumer<pull::Config> = stream
            .get_or_create_consumer(
                group,
                pull::Config {
                    durable_name: Some(group.to_string()),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: Duration::from_secs(self.config.ack_wait_secs),
                    max_ack_pending: self.config.max_ack_pending,
                    filter_subject: format!("{topic}.>"),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("JetStream consumer {group} on {topic}: {e}"))?;
        Ok(Box::new(NatsSubscription::new(consumer, 0)))
    }
}

struct NatsSubscription {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    messages: Option<pull::Stream>,
    /// The batch [`Subscription::next`] gathers (kept across a dropped `next`: its messages
    /// would otherwise come again only after `ack_wait`, out of order).
    batch: Gathering,
    _lag: LagProbe,
}

impl NatsSubscription {
    /// Reads `consumer`, which reads `partition`.
    fn new(consumer: jetstream::consumer::Consumer<pull::Config>, partition: u32) -> NatsSubscription {
        NatsSubscription {
            _lag: LagProbe::start(consumer.clone(), partition),
            consumer,
            messages: None,
            batch: Gathering::default(),
        }
    }
}

/// How often a consumer's lag is asked for.
const LAG_EVERY: Duration = Duration::from_secs(10);

/// Reports a consumer's lag (`kaudit_consumer_lag`: messages not yet delivered plus delivered
/// and not yet acknowledged) while its subscription lives; 0 once it is dropped.
struct LagProbe {
    task: tokio::task::JoinHandle<()>,
    partition: u32,
}

impl LagProbe {
    fn start(consumer: jetstream::consumer::Consumer<pull::Config>, partition: u32) -> LagProbe {
        let task = tokio::spawn(async move {
            let label = [opentelemetry::KeyValue::new("partition", i64::from(partition))];
            let mut every = tokio::time::interval(LAG_EVERY);
            loop {
                every.tick().await;
                if let Ok(info) = consumer.get_info().await {
                    let lag = info.num_pending + info.num_ack_pending as u64;
                    crate::telemetry::metrics().consumer_lag.record(lag, &label);
                }
            }
        });
        LagProbe { task, partition }
    }
}

impl Drop for LagProbe {
    fn drop(&mut self) {
        self.task.abort();
        let label = [opentelemetry::KeyValue::new("partition", i64::from(self.partition))];
        crate::telemetry::metrics().consumer_lag.record(0, &label);
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    /// Cancel-safe: what was received before the future was dropped waits in `batch`.
    async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<Delivery>>> {
        let max = max.max(1);
        while self.batch.len() < max {
            if self.messages.is_none() {
                let stream = self
                    .consumer
                    .stream()
                    .max_messages_per_batch(max.min(1000))
                    .messages()
                    .await?;
                self.messages = Some(stream);
            }
            let messages = self.messages.as_mut().expect("set above");
            let Some(next) = self.batch.wait(messages.next()).await else {
                break;
            };
            match next {
                Some(Ok(m)) => self.batch.push(delivery(m)),
                Some(Err(e)) => {
                    // E.g. 409 "Exceeded MaxRequest*": the stream ended; subscribe again.
                    tracing::warn!("JetStream pull: {e}; resubscribing");
                    self.messages = None;
                    if !self.batch.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                None => {
                    self.messages = None;
                    if !self.batch.is_empty() {
                        break;
                    }
                }
            }
        }
        Ok(Some(self.batch.take()))
    }

    async fn commit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        ack(deliveries).await
    }
}

/// Acknowledges deliveries: one `+ACK` each, then a flush, which returns when the server has
/// read every one of them (a ping answered after them on the same connection). An ack a server
/// loses after that (it fails before applying it) is a redelivery, which at-least-once allows and
/// a checkpoint's or hand-over's positions skip. `double_ack` asked the same of the server one
/// delivery at a time, with a subscription of its own each: four protocol messages per event,
/// most of the server's work.
async fn ack(deliveries: Vec<Delivery>) -> anyhow::Result<()> {
    let mut client = None;
    for m in deliveries
        .into_iter()
        .filter_map(Delivery::into_token::<jetstream::Message>)
    {
        m.ack().await.map_err(|e| anyhow::anyhow!("JetStream ack: {e}"))?;
        client.get_or_insert_with(|| m.context.client());
    }
    if let Some(client) = client {
        client
            .flush()
            .await
            .map_err(|e| anyhow::anyhow!("JetStream ack (flush): {e}"))?;
    }
    Ok(())
}

fn delivery(m: jetstream::Message) -> Delivery {
    let headers = m
        .headers
        .as_ref()
        .map(|h| {
            h.iter()
                .flat_map(|(k, vs)| vs.iter().map(move |v| (k.to_string(), v.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let key = m.subject.rsplit('.').next().unwrap_or_default().to_string();
    let message = Message {
        key: key.clone(),
        route: key,
        id: None,
        payload: m.payload.clone(),
        headers,
    };
    // The partition subject is `<topic>.<partition>.<cluster>`.
    let shard = m.subject.rsplit('.').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let position = m.info().ok().map(|i| i.stream_sequence);
    Delivery::new(message, shard, position, m)
}

#[cfg(test)]
mod tests {
    use super::content_id;

    #[test]
    fn messages_without_an_id_get_one_from_their_key_and_payload() {
        let (a, b) = (br#"{"auditID":"a"}"#.as_slice(), br#"{"auditID":"b"}"#.as_slice());
        // A re-sent event: the same id, which the stream stores once.
        assert_eq!(content_id("prod", a), content_id("prod", a));
        assert_ne!(content_id("prod", a), content_id("prod", b));
        // The same text from another cluster is another event; the key cannot run into the text.
        assert_ne!(content_id("prod", a), content_id("staging", a));
        assert_ne!(content_id("ab", b"c"), content_id("a", b"bc"));
        assert_eq!(content_id("prod", a).len(), 32);
    }
}

//! The bus: the one seam between the stages. Publish resolves only when the broker has
//! acknowledged every message; a subscription hands out deliveries and takes them back as
//! committed only after the consumer has finished with them (its alerts acknowledged).
//!
//! Implementations: [`memory`] (bounded, in process: `kaudit run`), Kafka and NATS JetStream.

pub mod kafka;
pub mod memory;
pub mod nats;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// Header names every transport carries.
pub mod headers {
    pub const CLUSTER: &str = "kaudit-cluster";
    /// Receive time at the shim, RFC 3339.
    pub const RECEIVED: &str = "kaudit-received";
    /// W3C trace context of the batch that carried the event.
    pub const TRACEPARENT: &str = "traceparent";
}

/// One message: payload bytes, a partitioning key, and headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Partitioning key (Kafka): the cluster for events, the dedup key for alerts.
    pub key: String,
    /// The last subject token (NATS): the cluster for events, the priority for alerts.
    pub route: String,
    /// A deduplication id (NATS `Nats-Msg-Id`): the alert id for alerts.
    pub id: Option<String>,
    pub payload: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Message {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a publish did not go through. Callers map these to HTTP answers.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The bus is full: try again shortly (HTTP 429 with Retry-After).
    #[error("bus saturated; retry after {0:?}")]
    Saturated(Duration),
    /// The broker is not reachable or did not acknowledge in time (HTTP 503 with Retry-After).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// A message taken from a topic, to be committed when done.
#[derive(Debug)]
pub struct Delivery {
    pub message: Message,
    shard: Shard,
    position: Option<u64>,
    /// What the transport that made the delivery needs to commit it: its own type, which only
    /// it reads back. The bus's seam names no transport.
    token: Box<dyn std::any::Any + Send>,
}

/// The batch a subscription's [`Subscription::next`] gathers: kept in the subscription, so that
/// a `next` dropped midway (the detector races it with its commit timer and its stop) loses
/// nothing, and the next call finishes the same batch.
#[derive(Default)]
pub(crate) struct Gathering {
    deliveries: Vec<Delivery>,
    /// When the batch stops waiting for more: [`BATCH_LINGER`] after its first delivery.
    until: Option<tokio::time::Instant>,
}

/// How long `next` keeps collecting once it has a first delivery.
const BATCH_LINGER: Duration = Duration::from_millis(5);

impl Gathering {
    /// Waits for `receive`: as long as it takes while the batch is empty, else until the batch
    /// stops waiting (`None` then).
    pub(crate) async fn wait<T>(&mut self, receive: impl std::future::Future<Output = T>) -> Option<T> {
        if self.deliveries.is_empty() {
            return Some(receive.await);
        }
        let until = *self
            .until
            .get_or_insert_with(|| tokio::time::Instant::now() + BATCH_LINGER);
        tokio::time::timeout_at(until, receive).await.ok()
    }

    pub(crate) fn push(&mut self, delivery: Delivery) {
        self.deliveries.push(delivery);
    }

    pub(crate) fn len(&self) -> usize {
        self.deliveries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.deliveries.is_empty()
    }

    /// Keeps the deliveries `keep` says to.
    pub(crate) fn retain(&mut self, keep: impl FnMut(&Delivery) -> bool) {
        self.deliveries.retain(keep);
    }

    /// The batch, to return; the next one starts empty.
    pub(crate) fn take(&mut self) -> Vec<Delivery> {
        self.until = None;
        std::mem::take(&mut self.deliveries)
    }
}

/// A partition of the input (a Kafka partition, a NATS partition subject; 0 where the input is
/// not partitioned): state kept per key (dedup, windows) belongs to one and moves with it.
pub type Shard = u32;

impl Delivery {
    /// A delivery of `message`, from `shard` at `position`, committed by the transport with
    /// `token`.
    pub(crate) fn new<T: std::any::Any + Send>(
        message: Message,
        shard: Shard,
        position: Option<u64>,
        token: T,
    ) -> Self {
        Delivery {
            message,
            shard,
            position,
            token: Box::new(token),
        }
    }

    /// The partition the delivery came from: a Kafka partition, a NATS partition subject
    /// (`<topic>.<partition>.<cluster>`), 0 where the topic is not partitioned. State kept per
    /// key (dedup, windows) moves with it.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// Where the delivery is in its partition (a Kafka offset, a JetStream stream sequence
    /// number): a redelivery has the same. `None` where the bus keeps no positions.
    pub fn position(&self) -> Option<u64> {
        self.position
    }

    /// The transport's token, when it is of type `T`.
    pub(crate) fn token<T: std::any::Any>(&self) -> Option<&T> {
        self.token.downcast_ref()
    }

    /// Takes the transport's token out, when it is of type `T`.
    pub(crate) fn into_token<T: std::any::Any>(self) -> Option<T> {
        self.token.downcast().ok().map(|t| *t)
    }
}

#[async_trait]
pub trait Bus: Send + Sync {
    /// Publishes to `topic`; resolves when every message is acknowledged by the broker.
    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), PublishError>;

    /// Joins consumer group `group` on `topic`.
    async fn subscribe(&self, topic: &str, group: &str) -> anyhow::Result<Box<dyn Subscription>>;

    /// Makes sure topics beyond the configured three exist (Kafka creates them when
    /// `create_topics` is on); buses without topics to create have nothing to do.
    async fn ensure_topics(&self, _topics: &[&str]) -> anyhow::Result<()> {
        Ok(())
    }

    /// The most messages one publish can ever take (a bounded in-process queue); `None` when
    /// only the broker's own limits apply.
    fn max_batch(&self) -> Option<usize> {
        None
    }
}

/// State a consumer keeps per partition (dedup, windows), moved with the partition: when this
/// consumer gives a partition up, the bus takes the state and stores it; whichever consumer takes
/// the partition next gets it before the partition's first delivery.
pub trait PartitionState: Send + Sync {
    /// Removes and returns the state of a partition given up.
    fn give_up(&self, shard: Shard) -> Vec<u8>;
    /// The state of a partition when it took in deliveries since its last checkpoint: stored
    /// (where hand-overs are) before those deliveries are committed.
    fn checkpoint(&self, shard: Shard) -> Option<Vec<u8>>;
    /// The last checkpoint of a partition is stored.
    fn stored(&self, shard: Shard);
    /// Installs the state stored for a partition taken over.
    fn take_over(&self, shard: Shard, state: &[u8]) -> anyhow::Result<()>;
}

/// Installs a partition's stored state (as read from the broker), saying what happened: a
/// partition whose hand-over cannot be read or installed starts afresh (more alerts, never fewer).
fn take_over(state: &dyn PartitionState, partition: u32, stored: anyhow::Result<Option<Vec<u8>>>) {
    match stored {
        Ok(Some(bytes)) => match state.take_over(partition, &bytes) {
            Ok(()) => tracing::info!(partition, bytes = bytes.len(), "took over the state of a partition"),
            Err(e) => tracing::warn!(partition, "starting the partition afresh: {e:#}"),
        },
        Ok(None) => {}
        Err(e) => tracing::warn!(
            partition,
            "could not read the partition's hand-over; starting it afresh: {e:#}"
        ),
    }
}

/// The partitions of `deliveries` with the state to store before the deliveries are committed.
fn checkpoints(state: &dyn PartitionState, deliveries: &[Delivery]) -> Vec<(Shard, Vec<u8>)> {
    let shards: std::collections::BTreeSet<Shard> = deliveries.iter().map(Delivery::shard).collect();
    shards
        .into_iter()
        .filter_map(|shard| state.checkpoint(shard).map(|bytes| (shard, bytes)))
        .inspect(|(shard, bytes)| tracing::debug!(shard, bytes = bytes.len(), "checkpoint"))
        .collect()
}

/// Says how storing a partition's state went.
fn handed_over(partition: u32, bytes: usize, stored: anyhow::Result<()>) {
    match stored {
        Ok(()) => tracing::info!(partition, bytes, "handed over the state of a partition given up"),
        Err(e) => tracing::warn!(
            partition,
            "could not hand over the state of a partition given up; its next owner starts from the \
             previous hand-over: {e:#}"
        ),
    }
}

#[async_trait]
pub trait Subscription: Send {
    /// Waits for at least one delivery, then returns up to `max`; `None` when the bus closed.
    /// Cancel-safe: a `next` dropped before it returns loses nothing it received (the detector
    /// races it with its commit timer and its stop); the next call returns it.
    async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<Delivery>>>;

    /// Marks deliveries as done; the broker will not hand them out again. Where state is kept,
    /// the checkpoint of the state they changed is stored first.
    async fn commit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()>;

    /// Moves `state` with the partitions this subscription is given and gives up, and stores
    /// its checkpoint before each commit; returns whether it does (the consumer then commits
    /// less often, as a checkpoint costs more than a commit). A bus whose one consumer never
    /// loses its input (the in-process bus) has nothing to move.
    async fn keep_state(&mut self, _state: std::sync::Arc<dyn PartitionState>) -> anyhow::Result<bool> {
        Ok(false)
    }

    /// Gives every partition up, with its state, before the subscriber stops (NATS: hands the
    /// leases back; Kafka does it when the subscription is dropped, as its consumer leaves).
    async fn leave(&mut self) {}
}

/// Which bus a pipeline uses, and the topics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// `memory`, `kafka` or `nats`.
    pub kind: BusKind,
    pub events_topic: String,
    pub alerts_topic: String,
    pub dead_letter_topic: String,
    pub memory: memory::MemoryConfig,
    pub kafka: kafka::KafkaConfig,
    pub nats: nats::NatsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    #[default]
    Memory,
    Kafka,
    Nats,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            events_topic: "kaudit.events".into(),
            alerts_topic: "kaudit.alerts".into(),
            dead_letter_topic: "kaudit.deadletter".into(),
            memory: memory::MemoryConfig::default(),
            kafka: kafka::KafkaConfig::default(),
            nats: nats::NatsConfig::default(),
        }
    }
}

/// Connects the bus a config names.
pub async fn connect(config: &BusConfig) -> anyhow::Result<Arc<dyn Bus>> {
    let topics = [
        config.events_topic.as_str(),
        config.alerts_topic.as_str(),
        config.dead_letter_topic.as_str(),
    ];
    match config.kind {
        BusKind::Memory => Ok(Arc::new(memory::MemoryBus::new(
            config.memory.clone(),
            &config.dead_letter_topic,
        ))),
        BusKind::Kafka => Ok(Arc::new(kafka::KafkaBus::connect(config.kafka.clone(), &topics).await?)),
        BusKind::Nats => Ok(Arc::new(
            nats::NatsBus::connect(config.nats.clone(), &topics, &[config.events_topic.as_str()]).await?,
        )),
    }
}

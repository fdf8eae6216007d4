//! Kafka transport (rdkafka / librdkafka).
//!
//! Producer: `acks=all` and idempotence; message key = cluster (events) or dedup key (alerts),
//! so one key stays in one partition and in order; headers carry cluster and receive time.
//! A publish resolves when every message is acknowledged; a full local queue is `Saturated`,
//! a broker that does not acknowledge within `message.timeout.ms` is `Unavailable` (the shim
//! answers 503). Consumer: one group for all detectors, no auto-commit: a batch's offsets are
//! committed only after its alerts are acknowledged. On a rebalance the offsets of finished
//! batches are committed before partitions are given up; deliveries in progress on revoked
//! partitions are handed to the new owner again (at least once, same alert ids).
//! TLS and SASL (PLAIN/SCRAM) are librdkafka properties passed through from the config.
//! A detector's per-partition state moves with the partition through a hand-over topic
//! ([`handover`]).
//! Dropping a subscription leaves the group (committing finished batches) on a thread of its own
//! and waits for that at most [`CLOSE_WAIT`]: librdkafka's close waits without bound for a broker
//! that is gone, and a detector must stop within its deadline all the same.

mod handover;

use super::{Bus, Delivery, Gathering, Message, PartitionState, PublishError, Subscription};
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Message as _, Offset, TopicPartitionList};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub brokers: String,
    /// Create missing topics at start (otherwise a missing topic is an error).
    pub create_topics: bool,
    pub partitions: i32,
    pub replication: i32,
    /// How long a message may wait for its acknowledgement (librdkafka `message.timeout.ms`).
    pub message_timeout_ms: u64,
    /// Static group membership (`group.instance.id`), e.g. the pod name of a StatefulSet: a
    /// detector that restarts under the same id takes its partitions back at once, without a
    /// rebalance of the whole group.
    pub group_instance_id: Option<String>,
    /// Any librdkafka property, for TLS and SASL: `"security.protocol" = "SASL_SSL"`,
    /// `"sasl.mechanism" = "SCRAM-SHA-512"`, `"sasl.username"`, `"ssl.ca.location"`, ...
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            create_topics: true,
            partitions: 6,
            replication: 1,
            message_timeout_ms: 10_000,
            group_instance_id: None,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        // Small batches must not wait for Nagle (and some brokers are slow without this).
        c.set("socket.nagle.disable", "true");
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        c
    }
}

pub struct KafkaBus {
    config: KafkaConfig,
    /// Replaced when librdkafka reports a fatal error (an idempotent producer fenced after
    /// its messages timed out in an outage never recovers by itself).
    producer: std::sync::RwLock<FutureProducer>,
}

impl KafkaBus {
    pub async fn connect(config: KafkaConfig, topics: &[&str]) -> anyhow::Result<KafkaBus> {
        let producer = Self::producer(&config)?;
        let bus = KafkaBus {
            config,
            producer: std::sync::RwLock::new(producer),
        };
        bus.ensure_topics(topics).await?;
        Ok(bus)
    }

    fn producer(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
        Ok(config
            .client()
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "2")
            .set("message.timeout.ms", config.message_timeout_ms.to_string())
            .set("queue.buffering.max.messages", "200000")
            .create()?)
    }

    fn current(&self) -> FutureProducer {
        self.producer.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// After a failed publish: a producer in a fatal state, or fenced by the broker, or that
    /// did not answer in time, is replaced by a new one (with a new producer id).
    fn recover(&self, failed: &FutureProducer, cause: Option<String>) {
        let reason = match (failed.client().fatal_error(), cause) {
            (Some((code, reason)), _) => format!("{code}: {reason}"),
            (None, Some(cause)) => cause,
            (None, None) => return,
        };
        let mut producer = self.producer.write().unwrap_or_else(|e| e.into_inner());
        if producer.client().native_ptr() != failed.client().native_ptr() {
            return; // another request replaced it already
        }
        match Self::producer(&self.config) {
            Ok(p) => {
                tracing::warn!("Kafka producer unusable ({reason}); replaced it");
                *producer = p;
            }
            Err(e) => tracing::warn!("Kafka producer unusable ({reason}); cannot replace it yet: {e}"),
        }
    }

    async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        let metadata = {
            let producer = self.current();
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, Duration::from_secs(10)))
                .await??
        };
        let existing: Vec<String> = metadata.topics().iter().map(|t| t.name().to_string()).collect();
        let missing: Vec<&str> = topics
            .iter()
            .copied()
            .filter(|t| !existing.iter().any(|e| e == t))
            .collect();
        if !missing.is_empty() {
            self.create_topics(&missing).await?;
        }
        self.learn_leaders(topics).await
    }

    /// Looks up where each topic's partitions lead, so that the first publish to a topic does
    /// not wait for that lookup (measured: 40 ms a topic on a loopback broker, paid by the first
    /// alerts of a detector, once per output topic).
    async fn learn_leaders(&self, topics: &[&str]) -> anyhow::Result<()> {
        for topic in topics {
            let producer = self.current();
            let name = topic.to_string();
            tokio::task::spawn_blocking(move || producer.client().fetch_metadata(Some(&name), Duration::from_secs(10)))
                .await??;
        }
        Ok(())
    }

    async fn create_topics(&self, missing: &[&str]) -> anyhow::Result<()> {
        if !self.config.create_topics {
            anyhow::bail!(
                "Kafka topics {missing:?} do not exist at {} and create_topics is off",
                self.config.brokers
            );
        }
        let admin: AdminClient<DefaultClientContext> = self.config.client().create()?;
        let new: Vec<NewTopic> = missing
            .iter()
            .map(|t| {
                NewTopic::new(
                    t,
                    self.config.partitions,
                    TopicReplication::Fixed(self.config.replication),
                )
            })
            .collect();
        for result in admin
            .create_topics(
                &new,
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?
        {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => anyhow::bail!("cannot create Kafka topic {topic}: {code}"),
            }
        }
        tracing::info!(?missing, partitions = self.config.partitions, "created Kafka topics");
        Ok(())
    }
}

#[async_trait]
impl Bus for KafkaBus {
    async fn ensure_topics(&self, topics: &[&str]) -> anyhow::Result<()> {
        KafkaBus::ensure_topics(self, topics).await
    }

    async fn publish(&self, topic: &str, messages: Vec<Message>) -> Result<(), PublishError> {
        let producer = self.current();
        let deadline = Duration::from_millis(self.config.message_timeout_ms) + Duration::from_secs(5);
        match tokio::time::timeout(deadline, publish_with(&producer, topic, &messages)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err((error, code))) => {
                let fenced = matches!(
                    code,
                    Some(
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::UnknownProducerId
                            | RDKafkaErrorCode::OutOfOrderSequenceNumber
                            | RDKafkaErrorCode::InvalidProducerIdMapping
                    )
                );
                self.recover(&producer, fenced.then(|| format!("{code:?}")));
                Err(error)
            }
            Err(_) => {
                self.recover(&producer, Some(format!("no acknowledgement within {deadline:?}")));
                Err(PublishError::Unavailable(format!(
                    "no acknowledgement within {deadline:?}"
                )))
            }
        }
    }

    async fn subscribe(&self, topic: &str, group: &str) -> anyhow::Result<Box<dyn Subscription>> {
        let done: Arc<Mutex<HashMap<(String, i32), i64>>> = Arc::default();
        let mut client = self.config.client();
        if let Some(id) = &self.config.group_instance_id {
            client.set("group.instance.id", id);
        }
        let context = GroupContext {
            done: done.clone(),
            handover: Arc::default(),
            revokes: Arc::default(),
        };
        let (handover, revokes) = (context.handover.clone(), context.revokes.clone());
        let consumer: StreamConsumer<GroupContext> = client
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .set("fetch.wait.max.ms", "20")
            .set("statistics.interval.ms", LAG_EVERY)
            .create_with_context(context)?;
        consumer.subscribe(&[topic])?;
        Ok(Box::new(KafkaSubscription {
            consumer: Some(consumer),
            done,
            started: Default::default(),
            handover,
            revokes,
            topic: topic.to_string(),
            group: group.to_string(),
            config: self.config.clone(),
            producer: self.current(),
            batch: Gathering::default(),
            revokes_seen: 0,
        }))
    }
}

type Failure = (PublishError, Option<RDKafkaErrorCode>);

fn failure(e: KafkaError) -> Failure {
    let code = e.rdkafka_error_code();
    (PublishError::Unavailable(e.to_string()), code)
}

/// Sends every message and waits for all acknowledgements.
async fn publish_with(producer: &FutureProducer, topic: &str, messages: &[Message]) -> Result<(), Failure> {
    let mut deliveries = Vec::with_capacity(messages.len());
    for m in messages {
        let mut headers = OwnedHeaders::new_with_capacity(m.headers.len());
        for (k, v) in &m.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let record = FutureRecord::to(topic)
            .key(m.key.as_bytes())
            .payload(&m.payload[..])
            .headers(headers);
        match producer.send_result(record) {
            Ok(d) => deliveries.push(d),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                return Err((PublishError::Saturated(Duration::from_secs(1)), None))
            }
            Err((e, _)) => return Err(failure(e)),
        }
    }
    for d in futures::future::join_all(deliveries).await {
        match d {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(failure(e)),
            Err(_) => return Err((PublishError::Unavailable("producer dropped the message".into()), None)),
        }
    }
    Ok(())
}

/// Commits finished offsets before partitions are revoked, and moves partition state.
struct GroupContext {
    done: Arc<Mutex<HashMap<(String, i32), i64>>>,
    /// Set once the subscriber keeps state per partition.
    handover: Arc<Mutex<Option<handover::Handover>>>,
    /// Revocations so far: deliveries fetched before one may belong to a partition given up.
    revokes: Arc<AtomicU64>,
}

fn partition_numbers(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|p| p.partition()).collect()
}

impl ClientContext for GroupContext {
    /// librdkafka's statistics (every `LAG_EVERY`): the lag of each partition of the subscribed
    /// topic, from the last committed offset; -1 (not ours) counts as 0.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for topic in statistics.topics.values() {
            for (p, partition) in &topic.partitions {
                if *p < 0 {
                    continue;
                }
                let label = [opentelemetry::KeyValue::new("partition", i64::from(*p))];
                let lag = if partition.desired {
                    partition.consumer_lag.max(0)
                } else {
                    0
                };
                crate::telemetry::metrics().consumer_lag.record(lag as u64, &label);
            }
        }
    }
}

/// How often librdkafka reports a consumer's statistics (its lag among them).
const LAG_EVERY: &str = "10000";

impl ConsumerContext for GroupContext {
    fn post_rebalance(&self, _consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => tracing::info!("partitions assigned: {}", partitions(tpl)),
            Rebalance::Revoke(tpl) => tracing::info!("partitions revoked: {}", partitions(tpl)),
            Rebalance::Error(e) => tracing::warn!("rebalance failed: {e}"),
        }
    }

    fn pre_rebalance(&self, consumer: &rdkafka::consumer::BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let handover = self.handover.lock().unwrap_or_else(|e| e.into_inner());
        if let (Rebalance::Assign(partitions), Some(handover)) = (rebalance, handover.as_ref()) {
            handover.take_over(&partition_numbers(partitions));
        }
        if let Rebalance::Revoke(partitions) = rebalance {
            self.revokes.fetch_add(1, Ordering::SeqCst);
            let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            let mut tpl = TopicPartitionList::new();
            for p in partitions.elements() {
                if let Some(next) = done.get(&(p.topic().to_string(), p.partition())) {
                    let _ = tpl.add_partition_offset(p.topic(), p.partition(), Offset::Offset(*next));
                }
            }
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!("commit on revoke failed: {e}");
                }
            }
            if let Some(handover) = handover.as_ref() {
                handover.give_up(&partition_numbers(partitions));
            }
        }
    }
}

fn partitions(tpl: &TopicPartitionList) -> String {
    let list: Vec<String> = tpl
        .elements()
        .iter()
        .map(|p| format!("{}[{}]", p.topic(), p.partition()))
        .collect();
    if list.is_empty() {
        "none".into()
    } else {
        list.join(" ")
    }
}

struct KafkaSubscription {
    /// Taken only by `drop`, which closes it on a thread of its own.
    consumer: Option<StreamConsumer<GroupContext>>,
    done: Arc<Mutex<HashMap<(String, i32), i64>>>,
    /// Partitions this consumer has read from, to log where it started in each.
    started: HashSet<(String, i32)>,
    handover: Arc<Mutex<Option<handover::Handover>>>,
    revokes: Arc<AtomicU64>,
    topic: String,
    group: String,
    config: KafkaConfig,
    producer: FutureProducer,
    /// The batch [`Subscription::next`] gathers (kept across a dropped `next`).
    batch: Gathering,
    /// `revokes` when `batch` was last checked against the assignment.
    revokes_seen: u64,
}

/// The delivery of a message read from the events topic: its key routes it, its headers carry
/// the cluster and the receive time.
fn delivery(m: &rdkafka::message::BorrowedMessage<'_>) -> Delivery {
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
    let message = Message {
        route: key.clone(),
        key,
        id: None,
        payload: bytes::Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        headers,
    };
    let at = At {
        topic: m.topic().to_string(),
        partition: m.partition(),
        offset: m.offset(),
    };
    Delivery::new(message, m.partition() as u32, u64::try_from(m.offset()).ok(), at)
}

/// Where a delivery was read: what its commit names.
struct At {
    topic: String,
    partition: i32,
    offset: i64,
}

/// How long dropping a subscription waits for the consumer to leave its group.
pub const CLOSE_WAIT: Duration = Duration::from_secs(5);

impl Drop for KafkaSubscription {
    fn drop(&mut self) {
        let Some(consumer) = self.consumer.take() else { return };
        let (closed, wait) = std::sync::mpsc::channel::<()>();
        let spawned = std::thread::Builder::new().name("kafka-close".into()).spawn(move || {
            drop(consumer);
            let _ = closed.send(());
        });
        if spawned.is_err() {
            return;
        }
        if wait.recv_timeout(CLOSE_WAIT).is_err() {
            tracing::warn!(
                "the Kafka consumer did not leave its group within {CLOSE_WAIT:?} (is the broker gone?): \
                 the group moves its partitions after the session timeout instead"
            );
        }
    }
}

impl KafkaSubscription {
    fn consumer(&self) -> &StreamConsumer<GroupContext> {
        self.consumer.as_ref().expect("the consumer is taken only on drop")
    }
}

#[async_trait]
impl Subscription for KafkaSubscription {
    /// Cancel-safe: what was received before the future was dropped waits in `batch`.
    async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<Delivery>>> {
        let max = max.max(1);
        let consumer = self.consumer.as_ref().expect("the consumer is taken only on drop");
        while self.batch.len() < max {
            let Some(next) = self.batch.wait(consumer.recv()).await else {
                break;
            };
            match next {
                Ok(m) => {
                    if self.started.insert((m.topic().to_string(), m.partition())) {
                        tracing::info!("consuming {}[{}] from offset {}", m.topic(), m.partition(), m.offset());
                    }
                    self.batch.push(delivery(&m));
                }
                Err(e) => {
                    tracing::warn!("Kafka consume: {e}");
                    if !self.batch.is_empty() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        if self.revokes.load(Ordering::SeqCst) != self.revokes_seen {
            self.revokes_seen = self.revokes.load(Ordering::SeqCst);
            // Partitions were given up (with their state) since these were fetched: what came
            // from them is their new owner's to evaluate.
            let assigned: HashSet<(String, i32)> = self
                .consumer()
                .assignment()?
                .elements()
                .iter()
                .map(|p| (p.topic().to_string(), p.partition()))
                .collect();
            self.batch.retain(|d| {
                d.token::<At>()
                    .is_none_or(|at| assigned.contains(&(at.topic.clone(), at.partition)))
            });
        }
        Ok(Some(self.batch.take()))
    }

    async fn keep_state(&mut self, state: Arc<dyn PartitionState>) -> anyhow::Result<bool> {
        let topic = handover::topic(&self.topic, &self.group);
        ensure_handover_topic(&self.config, &self.topic, &topic).await?;
        *self.handover.lock().unwrap_or_else(|e| e.into_inner()) = Some(handover::Handover {
            state,
            producer: self.producer.clone(),
            topic,
            config: self.config.clone(),
        });
        Ok(true)
    }

    async fn commit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        let checkpoints = {
            let handover = self.handover.lock().unwrap_or_else(|e| e.into_inner());
            handover.as_ref().map(|h| {
                let state = h.state.clone();
                (crate::bus::checkpoints(&*state, &deliveries), state, h.topic.clone())
            })
        };
        if let Some((checkpoints, state, topic)) = checkpoints {
            for (p, bytes) in checkpoints {
                handover::store(&self.producer, &topic, p as i32, &bytes)
                    .await
                    .map_err(|e| anyhow::anyhow!("storing the checkpoint of partition {p}: {e:#}"))?;
                state.stored(p);
            }
        }
        let mut next: HashMap<(String, i32), i64> = HashMap::new();
        for d in deliveries {
            if let Some(At {
                topic,
                partition,
                offset,
            }) = d.into_token::<At>()
            {
                let e = next.entry((topic, partition)).or_insert(offset + 1);
                *e = (*e).max(offset + 1);
            }
        }
        if next.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in &next {
            tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
        }
        self.done.lock().unwrap_or_else(|e| e.into_inner()).extend(next);
        match self.consumer().commit(&tpl, CommitMode::Async) {
            Ok(()) => Ok(()),
            // The partition moved to another detector meanwhile: it will redeliver; not an error.
            Err(e) => {
                tracing::debug!("commit: {e}");
                Ok(())
            }
        }
    }
}

/// Makes the hand-over topic of an events topic: as many partitions (partition p's state goes to
/// partition p), compacted, kept a week.
async fn ensure_handover_topic(config: &KafkaConfig, events: &str, topic: &str) -> anyhow::Result<()> {
    // Asked through a client that never creates what it asks about: a producer's metadata
    // request would create the topic with the broker's defaults (not compacted).
    let lookup: Arc<rdkafka::consumer::BaseConsumer> =
        Arc::new(config.client().set("allow.auto.create.topics", "false").create()?);
    let partitions = |name: &str| {
        let (lookup, name) = (lookup.clone(), name.to_string());
        async move {
            let metadata = tokio::task::spawn_blocking(move || {
                lookup.client().fetch_metadata(Some(&name), Duration::from_secs(10))
            })
            .await??;
            anyhow::Ok(
                metadata
                    .topics()
                    .first()
                    .filter(|t| t.error().is_none())
                    .map(|t| t.partitions().len() as i32)
                    .unwrap_or(0),
            )
        }
    };
    let wanted = partitions(events).await?;
    anyhow::ensure!(
        wanted > 0,
        "the events topic {events} has no partitions at {}",
        config.brokers
    );
    let existing = partitions(topic).await?;
    if existing >= wanted {
        return Ok(());
    }
    anyhow::ensure!(
        existing == 0,
        "the hand-over topic {topic} has {existing} partitions, fewer than {events}'s {wanted}: \
         add partitions to it (kafka-topics --alter --partitions {wanted})"
    );
    anyhow::ensure!(
        config.create_topics,
        "the hand-over topic {topic} does not exist at {} and create_topics is off: create it with \
         {wanted} partitions",
        config.brokers
    );
    let admin: AdminClient<DefaultClientContext> = config.client().create()?;
    let new = NewTopic::new(topic, wanted, TopicReplication::Fixed(config.replication))
        .set("cleanup.policy", "compact,delete")
        .set("segment.ms", handover::SEGMENT_MS)
        .set("retention.ms", handover::RETENTION_MS);
    for result in admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await?
    {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("cannot create Kafka topic {topic}: {code}"),
        }
    }
    tracing::info!(topic, partitions = wanted, "created the hand-over topic");
    Ok(())
}

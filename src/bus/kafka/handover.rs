//! A partition's detector state moves with the partition (Kafka).
//!
//! When the group takes a partition of the events topic from this consumer (a detector joined
//! or left, or this one is closing), the revoke callback asks the [`PartitionState`] for the
//! partition's state and writes it to the same partition of the hand-over topic
//! (`<events topic>.handover.<group>`), in chunks that fit a Kafka message, and waits for the
//! broker's acknowledgement. The eager rebalance protocol revokes from every member before it
//! assigns to any, so the state is stored before another member can take the partition. When a
//! partition is assigned, the newest complete hand-over in its partition of that topic is read
//! and installed before the partition's first event is delivered.
//!
//! Before a batch of deliveries is committed, the state they changed is stored the same way (a
//! checkpoint): a detector killed without a revoke leaves its successor the state of its last
//! commit, and the positions that state holds already. The topic is compacted, its chunks keyed
//! by their index: a partition keeps its newest state, not every checkpoint of the week.

use super::KafkaConfig;
use crate::bus::PartitionState;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Largest chunk of a hand-over: under Kafka's default 1 MB message limit.
const CHUNK: usize = 512 * 1024;
/// Header naming the hand-over a chunk belongs to (a random id per hand-over).
const GENERATION: &str = "kaudit-handover";
/// Header `i/n`: which chunk of how many.
const CHUNK_OF: &str = "kaudit-chunk";
/// Longest a hand-over read may take.
const READ_WAIT: Duration = Duration::from_secs(30);
/// Hand-overs older than this are gone: a week is longer than any dedup or rule window.
pub const RETENTION_MS: &str = "604800000";
/// The topic is compacted (a checkpoint a second would otherwise pile up for the week): each
/// partition keeps the newest message per chunk key, in segments rolled this often.
pub const SEGMENT_MS: &str = "600000";

pub(super) struct Handover {
    pub state: Arc<dyn PartitionState>,
    pub producer: FutureProducer,
    pub topic: String,
    pub config: KafkaConfig,
}

/// The hand-over topic of a group reading an events topic (Kafka topic names allow
/// `[A-Za-z0-9._-]`: anything else in the group's name becomes `_`).
pub fn topic(events_topic: &str, group: &str) -> String {
    let group: String = group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{events_topic}.handover.{group}")
}

impl Handover {
    /// Stores the state of partitions given up; a failure is logged (the partition's next owner
    /// then starts from the hand-over before).
    pub fn give_up(&self, partitions: &[i32]) {
        for &p in partitions {
            let state = self.state.give_up(p as u32);
            crate::bus::handed_over(p as u32, state.len(), self.write(p, &state));
        }
    }

    /// Installs the stored state of partitions taken over.
    pub fn take_over(&self, partitions: &[i32]) {
        for &p in partitions {
            crate::bus::take_over(&*self.state, p as u32, self.read(p));
        }
    }

    /// Stores a partition's state from the consumer's thread (the rebalance callback); the
    /// producer's own thread acknowledges.
    fn write(&self, partition: i32, state: &[u8]) -> anyhow::Result<()> {
        futures::executor::block_on(store(&self.producer, &self.topic, partition, state))
    }

    /// The newest complete hand-over of a partition, if any.
    fn read(&self, partition: i32) -> anyhow::Result<Option<Vec<u8>>> {
        let consumer: BaseConsumer = self
            .config
            .client()
            .set("group.id", "kaudit-handover-reader")
            .set("enable.auto.commit", "false")
            .create()?;
        let (low, high) = consumer.fetch_watermarks(&self.topic, partition, READ_WAIT)?;
        if high <= low {
            return Ok(None);
        }
        // The newest hand-over ends at the last message; its chunk header says where it began.
        let last = read_range(&consumer, &self.topic, partition, high - 1, high)?;
        let start = match last.first().map(|c| (c.index, c.count)) {
            Some((i, n)) if i + 1 == n => (high - n as i64).max(low),
            _ => low,
        };
        let newest = newest_complete(read_range(&consumer, &self.topic, partition, start, high)?);
        if newest.is_none() && start > low {
            return Ok(newest_complete(read_range(
                &consumer,
                &self.topic,
                partition,
                low,
                high,
            )?));
        }
        Ok(newest)
    }
}

/// Stores a partition's state (a hand-over or a checkpoint) in its partition of the hand-over
/// topic; resolves when the broker has acknowledged every chunk.
pub(super) async fn store(producer: &FutureProducer, topic: &str, partition: i32, state: &[u8]) -> anyhow::Result<()> {
    let generation = format!("{:016x}", rand::random::<u64>());
    let chunks: Vec<&[u8]> = state.chunks(CHUNK).collect();
    let chunks = if chunks.is_empty() { vec![&[][..]] } else { chunks };
    let n = chunks.len();
    let mut acks = Vec::with_capacity(n);
    for (i, chunk) in chunks.into_iter().enumerate() {
        let of = format!("{i}/{n}");
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: GENERATION,
                value: Some(generation.as_bytes()),
            })
            .insert(Header {
                key: CHUNK_OF,
                value: Some(of.as_bytes()),
            });
        // Keyed by chunk: compaction keeps the newest of each.
        let key = format!("chunk-{i}");
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .key(key.as_bytes())
            .payload(chunk)
            .headers(headers);
        acks.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for ack in acks {
        match ack.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => anyhow::bail!("the producer dropped the hand-over"),
        }
    }
    Ok(())
}

struct Chunk {
    generation: String,
    index: usize,
    count: usize,
    payload: Vec<u8>,
}

/// Reads offsets `from..to` of one partition.
fn read_range(consumer: &BaseConsumer, topic: &str, partition: i32, from: i64, to: i64) -> anyhow::Result<Vec<Chunk>> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let deadline = Instant::now() + READ_WAIT;
    let mut chunks = Vec::new();
    let mut next = from;
    while next < to {
        if Instant::now() > deadline {
            anyhow::bail!("reading {topic}[{partition}] offsets {from}..{to} took over {READ_WAIT:?}");
        }
        let Some(message) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let message = message?;
        next = message.offset() + 1;
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        let (Some(generation), Some(of)) = (header(GENERATION), header(CHUNK_OF)) else {
            continue;
        };
        let Some((index, count)) = of
            .split_once('/')
            .and_then(|(i, n)| Some((i.parse().ok()?, n.parse().ok()?)))
        else {
            continue;
        };
        chunks.push(Chunk {
            generation,
            index,
            count,
            payload: message.payload().unwrap_or_default().to_vec(),
        });
    }
    Ok(chunks)
}

/// The last hand-over whose chunks all arrived, in order, as one.
fn newest_complete(chunks: Vec<Chunk>) -> Option<Vec<u8>> {
    let mut newest = None;
    let mut building: Option<(String, usize, Vec<u8>)> = None;
    for c in chunks {
        if c.index == 0 {
            building = Some((c.generation.clone(), 0, Vec::new()));
        }
        match &mut building {
            Some((generation, next, bytes)) if *generation == c.generation && *next == c.index => {
                bytes.extend_from_slice(&c.payload);
                *next += 1;
                if *next == c.count {
                    newest = building.take().map(|(_, _, bytes)| bytes);
                }
            }
            _ => building = None,
        }
    }
    newest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(generation: &str, index: usize, count: usize, payload: &str) -> Chunk {
        Chunk {
            generation: generation.into(),
            index,
            count,
            payload: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn the_newest_complete_hand_over_wins_and_a_torn_one_is_skipped() {
        let chunks = vec![
            chunk("a", 0, 2, "old-"),
            chunk("a", 1, 2, "state"),
            chunk("b", 0, 3, "new-"),
            chunk("b", 1, 3, "but-"),
            // b's last chunk never came (its writer died): a stays the newest.
        ];
        assert_eq!(newest_complete(chunks).as_deref(), Some(&b"old-state"[..]));
        let interleaved = vec![chunk("a", 0, 2, "x"), chunk("b", 0, 1, "whole"), chunk("a", 1, 2, "y")];
        assert_eq!(newest_complete(interleaved).as_deref(), Some(&b"whole"[..]));
        assert_eq!(newest_complete(Vec::new()), None);
    }

    #[test]
    fn topic_names_stay_legal() {
        assert_eq!(
            topic("kaudit.events", "kaudit-detectors"),
            "kaudit.events.handover.kaudit-detectors"
        );
        assert_eq!(topic("e", "a b/c"), "e.handover.a_b_c");
    }
}

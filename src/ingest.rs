//! From decoded records to messages on the events topic: what the webhook shim and `kaudit tail`
//! do alike, so both publish the same messages (key and subject = cluster, headers for the
//! cluster, the receive time and a trace) and dead-letter alike.
//!
//! The cluster of an event is the source's own (the shim's credential, the tail's `--cluster`)
//! unless its envelope names one (EKS log group, GKE `cluster_name`, AKS `resourceId`); a source
//! that may not speak for the cluster its envelope names has that record dead-lettered, never
//! relabelled.

use crate::audit::{Event, Malformed, Position, Record};
use crate::bus::{headers, Bus, BusConfig, Message, PublishError};
use crate::telemetry::metrics;
use opentelemetry::KeyValue;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest cluster name taken (EKS allows 100 characters; GKE and AKS fewer).
pub const MAX_CLUSTER_NAME: usize = 100;

/// A cluster name is a label in metrics, a NATS subject token and a Kafka key: letters, digits,
/// `-` and `_` (EKS and AKS names have `_`), starting with a letter or digit, at most
/// [`MAX_CLUSTER_NAME`] characters. Anything else (`eks-/../prod`, NUL bytes, 60 KB names) is
/// refused, never cleaned up into another name.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let shown: String = name.chars().take(64).flat_map(char::escape_default).collect();
    if name.is_empty() || name.len() > MAX_CLUSTER_NAME {
        return Err(format!(
            "cluster name `{shown}` must have 1 to {MAX_CLUSTER_NAME} characters"
        ));
    }
    let ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        return Err(format!(
            "cluster name `{shown}` may hold only letters, digits, `-` and `_`, starting with a letter or digit"
        ));
    }
    Ok(())
}

/// One decoded item and, where the source has one, a stable id for it (NATS drops a message
/// whose id it has seen within its duplicate window, so a re-sent item is stored once).
pub struct Item {
    pub record: Result<Record, Malformed>,
    pub id: Option<String>,
}

impl From<Result<Record, Malformed>> for Item {
    fn from(record: Result<Record, Malformed>) -> Item {
        Item { record, id: None }
    }
}

/// Who is publishing: its own cluster, and which clusters its envelopes may name.
pub struct Source<'a> {
    pub cluster: &'a str,
    pub may_name: &'a (dyn Fn(&str) -> bool + Sync),
}

/// A batch ready to publish.
#[derive(Default)]
pub struct Batch {
    pub events: Vec<Message>,
    pub dead: Vec<Message>,
}

impl Batch {
    /// Turns `items` into event and dead-letter messages. Events larger than `max_event_bytes`
    /// lose their objects (as the apiserver truncates) or, still too large, are dead-lettered.
    /// `trace` is the publishing span: its context rides on every event message (one trace per
    /// batch), and a detector continues it.
    pub fn build(
        items: impl IntoIterator<Item = Item>,
        source: &Source,
        max_event_bytes: usize,
        trace: &opentelemetry::Context,
    ) -> Batch {
        let received_at = now_rfc3339();
        let trace_headers = crate::telemetry::otel::inject(trace);
        let mut batch = Batch::default();
        for (index, item) in items.into_iter().enumerate() {
            let checked = item.record.and_then(|record| {
                let cluster = match record.cluster {
                    Some(named) if check_cluster_name(&named).is_err() => {
                        return Err(Malformed::new(
                            Position::Item(index),
                            check_cluster_name(&named).err().unwrap_or_default(),
                            record.event.bytes(),
                        ))
                    }
                    Some(named) if named != source.cluster && !(source.may_name)(&named) => {
                        return Err(Malformed::new(
                            Position::Item(index),
                            format!("the record names cluster {named}, which this source may not publish for"),
                            record.event.bytes(),
                        ))
                    }
                    Some(named) => named,
                    None => source.cluster.to_string(),
                };
                Ok((fit(record.event, max_event_bytes, index)?, cluster))
            });
            match checked {
                Ok((event, cluster)) => batch.events.push(Message {
                    key: cluster.clone(),
                    route: cluster.clone(),
                    id: item.id,
                    payload: event.bytes().clone(),
                    headers: [
                        (headers::CLUSTER.into(), cluster),
                        (headers::RECEIVED.into(), received_at.clone()),
                    ]
                    .into_iter()
                    .chain(trace_headers.iter().cloned())
                    .collect(),
                }),
                Err(bad) => {
                    let cluster = source.cluster.to_string();
                    crate::telemetry::log_bad_input(&cluster, "dead-lettering", &bad.to_string());
                    let record = serde_json::json!({
                        "cluster": cluster, "received": received_at, "position": bad.position.to_string(),
                        "reason": bad.reason, "item": bad.text,
                    });
                    batch.dead.push(Message {
                        key: cluster.clone(),
                        route: cluster.clone(),
                        id: item.id.map(|id| format!("{id}:dead")),
                        payload: serde_json::to_vec(&record).unwrap_or_default().into(),
                        headers: vec![
                            (headers::CLUSTER.into(), cluster),
                            (headers::RECEIVED.into(), received_at.clone()),
                        ],
                    });
                }
            }
        }
        let mut received = tally(&batch.events);
        for (cluster, n) in tally(&batch.dead) {
            *received.entry(cluster).or_default() += n;
        }
        add(&metrics().events_received, received);
        batch
    }

    /// Publishes the dead letters, then the events, each acknowledged by the bus before this
    /// returns `Ok`; counts what was published.
    pub async fn publish(self, to: &Destination) -> Result<(), PublishError> {
        let (published, dead_lettered) = (tally(&self.events), tally(&self.dead));
        if !self.dead.is_empty() {
            to.bus.publish(&to.dead_letter_topic, self.dead).await?;
        }
        if !self.events.is_empty() {
            to.bus.publish(&to.events_topic, self.events).await?;
        }
        add(&metrics().events_published, published);
        add(&metrics().events_dead_lettered, dead_lettered);
        Ok(())
    }
}

/// Where the sources publish: the bus, its events topic and its dead-letter topic.
#[derive(Clone)]
pub struct Destination {
    pub bus: Arc<dyn Bus>,
    pub events_topic: String,
    pub dead_letter_topic: String,
}

impl Destination {
    /// The topics `config` names, on `bus`.
    pub fn new(bus: Arc<dyn Bus>, config: &BusConfig) -> Destination {
        Destination {
            bus,
            events_topic: config.events_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
        }
    }
}

/// Messages per cluster.
fn tally(messages: &[Message]) -> BTreeMap<String, u64> {
    let mut per_cluster = BTreeMap::new();
    for message in messages {
        *per_cluster.entry(message.route.clone()).or_default() += 1;
    }
    per_cluster
}

fn add(counter: &opentelemetry::metrics::Counter<u64>, per_cluster: BTreeMap<String, u64>) {
    for (cluster, n) in per_cluster {
        counter.add(
            n,
            &[KeyValue::new("cluster", crate::telemetry::cluster_label(&cluster))],
        );
    }
}

/// An event that fits the bus, truncated if it must be.
fn fit(event: Event, max: usize, index: usize) -> Result<Event, Malformed> {
    if event.bytes().len() <= max {
        return Ok(event);
    }
    let size = event.bytes().len();
    let truncated = event.truncated();
    if truncated.bytes().len() <= max {
        tracing::warn!(size, audit_id = %truncated.view().audit_id(), "event over max_event_bytes: published without its objects");
        metrics().events_truncated.add(1, &[]);
        return Ok(truncated);
    }
    Err(Malformed::new(
        Position::Item(index),
        format!("event of {size} bytes exceeds max_event_bytes ({max}) even without its objects"),
        &truncated.bytes()[..max],
    ))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

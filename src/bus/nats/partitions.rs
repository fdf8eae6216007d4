//! Partitioned consumption of the events topic on JetStream, so that one detector sees all the
//! events of a cluster, as Kafka's consumer groups give: dedup and stateful windows are then
//! exact across replicas without shared state.
//!
//! The shim publishes an event to `<topic>.<partition>.<cluster>`, the partition being the
//! CRC-32 of the cluster modulo `partitions` (Kafka's default partitioner does the same). Each
//! partition has its own durable pull consumer. Which detector consumes which partition is
//! decided by leases in a JetStream key-value bucket (`kaudit_leases`, entries expire after the
//! lease time): every detector heartbeats `<group>.members.<id>`, takes free partitions with
//! `create` (which fails when another holds them) up to its fair share, renews its own with a
//! compare-and-set `update`, and hands back what exceeds its share when others join. A detector
//! that dies stops renewing: after the lease time its partitions are free and the others take
//! them, and what it had not acknowledged is redelivered after `ack_wait`.
//!
//! A detector's per-partition state moves with the partition ([`super::handover`]): a partition
//! handed back (share exceeded, or the detector stopping) has its state stored before its lease
//! is deleted, and a partition taken has the stored state installed before its first delivery.
//! Both happen inside [`Subscription::next`], between the detector's batches.
//!
//! The gap a lease cannot close: a detector frozen past its lease time (a long GC-like stall)
//! may consume for a moment beside the new owner; Kafka's session timeout has the same hole.

use super::{handover, NatsConfig, NatsSubscription};
use crate::bus::{Delivery, PartitionState, Subscription};
use async_nats::jetstream::{self, consumer::pull, kv};
use async_trait::async_trait;
use futures::TryStreamExt;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The KV bucket holding leases and members, for every group.
const BUCKET: &str = "kaudit_leases";

/// Deliveries a partition's consumer fetches at once.
const FETCH: usize = 500;

/// The partition of a key (a cluster): CRC-32 modulo the partition count.
pub fn partition(key: &str, partitions: u32) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(key.as_bytes());
    crc.sum() % partitions.max(1)
}

/// One detector's leases.
struct Leases {
    kv: kv::Store,
    group: String,
    member: String,
    partitions: u32,
}

enum Change {
    Acquired(u32),
    /// Over our share: to hand back (with its state) and then delete the lease.
    HandBack(u32),
    /// The lease was lost (not renewed in time): another may hold the partition already.
    Lost(u32),
}

impl Leases {
    fn owner_key(&self, p: u32) -> String {
        format!("{}.owner.{p}", self.group)
    }

    /// One round: heartbeat, renew what we hold, give back what exceeds our share, take free
    /// partitions up to it.
    async fn round(&self, owned: &BTreeSet<u32>) -> anyhow::Result<Vec<Change>> {
        let members_prefix = format!("{}.members.", self.group);
        self.kv
            .put(format!("{members_prefix}{}", self.member), "alive".into())
            .await?;
        let keys: Vec<String> = self.kv.keys().await?.try_collect().await?;
        let members = keys.iter().filter(|k| k.starts_with(&members_prefix)).count().max(1) as u32;
        let share = self.partitions.div_ceil(members) as usize;
        let mut changes = Vec::new();
        let mut holding = BTreeSet::new();
        for &p in owned {
            let entry = self.kv.entry(self.owner_key(p)).await?;
            let renewed = match entry {
                Some(e) if e.operation == kv::Operation::Put && e.value.as_ref() == self.member.as_bytes() => self
                    .kv
                    .update(self.owner_key(p), self.member.clone().into(), e.revision)
                    .await
                    .is_ok(),
                _ => false,
            };
            if renewed {
                holding.insert(p);
            } else {
                changes.push(Change::Lost(p));
            }
        }
        while holding.len() > share {
            let p = *holding.iter().next_back().expect("not empty");
            holding.remove(&p);
            changes.push(Change::HandBack(p));
        }
        // Start looking at a member-specific partition, so that joiners do not all race for 0.
        let start = partition(&self.member, self.partitions);
        for i in 0..self.partitions {
            if holding.len() >= share {
                break;
            }
            let p = (start + i) % self.partitions;
            if holding.contains(&p) {
                continue;
            }
            if self
                .kv
                .create(self.owner_key(p), self.member.clone().into())
                .await
                .is_ok()
            {
                holding.insert(p);
                changes.push(Change::Acquired(p));
            }
        }
        Ok(changes)
    }
}

/// What the lease manager tells the subscription about partitions (in order, before any
/// delivery of a partition acquired).
#[derive(Debug, Clone, Copy)]
enum Control {
    Acquired(u32),
    HandBack(u32),
    Lost(u32),
}

type Tasks = Arc<Mutex<BTreeMap<u32, JoinHandle<()>>>>;

/// A subscription to the partitions this detector holds a lease on.
pub struct PartitionedSubscription {
    rx: mpsc::Receiver<Vec<Delivery>>,
    control: mpsc::UnboundedReceiver<Control>,
    /// Controls received and not yet applied: one leaves only once applied, so that a `next`
    /// dropped in the middle of applying it (the detector races `next` with its timers) applies
    /// it again at the next call.
    controls: VecDeque<Control>,
    /// A partition's state taken for a hand-back whose store has not finished: a hand-back
    /// applied again stores it, not the empty state left behind.
    handing_back: Option<(u32, Vec<u8>)>,
    /// Deliveries received and not yet returned (kept across a dropped `next`).
    leftover: Vec<Delivery>,
    manager: JoinHandle<()>,
    /// Each partition's consuming task.
    tasks: Tasks,
    leases: Arc<Leases>,
    /// Partitions whose deliveries this detector evaluates.
    held: BTreeSet<u32>,
    /// Partitions given up: deliveries from them still queued here are their new owner's.
    given_up: HashSet<u32>,
    js: jetstream::Context,
    replicas: usize,
    /// Set by [`Subscription::keep_state`]: the state and where hand-overs are stored.
    state: Option<(Arc<dyn PartitionState>, kv::Store)>,
}

impl Drop for PartitionedSubscription {
    fn drop(&mut self) {
        self.manager.abort();
        for task in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).values() {
            task.abort();
        }
    }
}

impl PartitionedSubscription {
    pub async fn start(
        js: &jetstream::Context,
        stream: jetstream::stream::Stream,
        topic: &str,
        group: &str,
        config: &NatsConfig,
    ) -> anyhow::Result<PartitionedSubscription> {
        let ttl = Duration::from_secs(config.lease_secs.max(1));
        let kv = lease_bucket(js, ttl, config.replicas).await?;
        let leases = Arc::new(Leases {
            kv,
            group: super::token(group),
            member: format!(
                "{}-{}-{:08x}",
                super::token(crate::ids::hostname()),
                std::process::id(),
                rand::random::<u32>()
            ),
            partitions: config.partitions.max(1),
        });
        let (tx, rx) = mpsc::channel(4);
        let (control_tx, control) = mpsc::unbounded_channel();
        let tasks: Tasks = Arc::default();
        let (topic, ack_wait, max_ack_pending) = (topic.to_string(), config.ack_wait_secs, config.max_ack_pending);
        let consumer_config = move |name: String, p: u32| pull::Config {
            durable_name: Some(name),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(ack_wait),
            max_ack_pending,
            filter_subject: format!("{topic}.{p}.>"),
            ..Default::default()
        };
        let (manager_leases, consuming) = (leases.clone(), tasks.clone());
        let manager = tokio::spawn(async move {
            let leases = manager_leases;
            let stop = |p: u32| {
                if let Some(task) = consuming.lock().unwrap_or_else(|e| e.into_inner()).remove(&p) {
                    task.abort();
                }
            };
            loop {
                let owned: BTreeSet<u32> = consuming
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .keys()
                    .copied()
                    .collect();
                match leases.round(&owned).await {
                    Ok(changes) if !changes.is_empty() => {
                        for change in changes {
                            match change {
                                Change::Lost(p) => {
                                    stop(p);
                                    let _ = control_tx.send(Control::Lost(p));
                                }
                                Change::HandBack(p) => {
                                    stop(p);
                                    let _ = control_tx.send(Control::HandBack(p));
                                }
                                Change::Acquired(p) => {
                                    let name = format!("{}-p{p}", leases.group);
                                    match stream
                                        .get_or_create_consumer(&name, consumer_config(name.clone(), p))
                                        .await
                                    {
                                        Ok(consumer) => {
                                            let _ = control_tx.send(Control::Acquired(p));
                                            let task =
                                                tokio::spawn(forward(NatsSubscription::new(consumer, p), tx.clone()));
                                            consuming.lock().unwrap_or_else(|e| e.into_inner()).insert(p, task);
                                        }
                                        Err(e) => {
                                            tracing::warn!(
                                                "JetStream consumer for partition {p}: {e}; giving the lease back"
                                            );
                                            let _ = leases.kv.delete(leases.owner_key(p)).await;
                                        }
                                    }
                                }
                            }
                        }
                        let list: Vec<String> = consuming
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .keys()
                            .map(u32::to_string)
                            .collect();
                        tracing::info!(
                            member = leases.member,
                            "partitions assigned: {}",
                            if list.is_empty() {
                                "none".to_string()
                            } else {
                                list.join(",")
                            }
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!("partition leases: {e:#}"),
                }
                tokio::time::sleep(ttl / 3).await;
            }
        });
        Ok(PartitionedSubscription {
            rx,
            control,
            controls: VecDeque::new(),
            handing_back: None,
            leftover: Vec::new(),
            manager,
            tasks,
            leases,
            held: BTreeSet::new(),
            given_up: HashSet::new(),
            js: js.clone(),
            replicas: config.replicas,
            state: None,
        })
    }

    /// Acts on what the lease manager said, in order.
    async fn apply_control(&mut self) {
        while let Ok(control) = self.control.try_recv() {
            self.controls.push_back(control);
        }
        while let Some(&control) = self.controls.front() {
            self.apply_one(control).await;
            self.controls.pop_front();
        }
    }

    async fn apply_one(&mut self, control: Control) {
        {
            match control {
                Control::Acquired(p) => {
                    self.held.insert(p);
                    self.given_up.remove(&p);
                    self.take_over(p).await;
                }
                Control::HandBack(p) => self.hand_back(p).await,
                Control::Lost(p) => {
                    self.give_up(p).await;
                    if let Some((state, _)) = &self.state {
                        // Another detector may hold the partition already: what we knew of it
                        // is not ours to store.
                        state.give_up(p);
                    }
                }
            }
        }
    }

    /// Stops evaluating a partition: deliveries of it still queued here go back to the stream.
    async fn give_up(&mut self, p: u32) {
        self.held.remove(&p);
        self.given_up.insert(p);
        let (theirs, ours): (Vec<Delivery>, Vec<Delivery>) = std::mem::take(&mut self.leftover)
            .into_iter()
            .partition(|d| d.shard() == p);
        self.leftover = ours;
        nak(theirs).await;
    }

    /// Stores a partition's state, then deletes our lease on it.
    async fn hand_back(&mut self, p: u32) {
        self.give_up(p).await;
        if let Some((state, store)) = &self.state {
            let bytes = match self.handing_back.take() {
                Some((q, bytes)) if q == p => bytes,
                _ => state.give_up(p),
            };
            self.handing_back = Some((p, bytes));
            let bytes = &self.handing_back.as_ref().expect("set above").1;
            let stored = handover::write(store, &self.leases.group, p, bytes).await;
            crate::bus::handed_over(p, bytes.len(), stored);
            self.handing_back = None;
        }
        let key = self.leases.owner_key(p);
        match self.leases.kv.entry(&key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put && e.value.as_ref() == self.leases.member.as_bytes() => {
                if let Err(e) = self.leases.kv.delete_expect_revision(&key, Some(e.revision)).await {
                    tracing::warn!(partition = p, "could not hand the lease back (it expires instead): {e}");
                }
            }
            _ => {}
        }
    }

    async fn take_over(&mut self, p: u32) {
        let Some((state, store)) = &self.state else { return };
        crate::bus::take_over(&**state, p, handover::read(store, &self.leases.group, p).await);
    }

    /// Keeps the deliveries of partitions still held; the others go back to the stream.
    async fn keep_held(&mut self, batch: Vec<Delivery>) {
        if self.given_up.is_empty() {
            self.leftover.extend(batch);
            return;
        }
        let (theirs, ours): (Vec<Delivery>, Vec<Delivery>) =
            batch.into_iter().partition(|d| self.given_up.contains(&d.shard()));
        self.leftover.extend(ours);
        nak(theirs).await;
    }
}

/// Hands deliveries back to the stream at once (rather than after `ack_wait`).
async fn nak(deliveries: Vec<Delivery>) {
    for d in deliveries {
        if let Some(m) = d.into_token::<jetstream::Message>() {
            let _ = m.ack_with(jetstream::AckKind::Nak(None)).await;
        }
    }
}

/// The leases bucket (entries expire after the lease time).
async fn lease_bucket(js: &jetstream::Context, ttl: Duration, replicas: usize) -> anyhow::Result<kv::Store> {
    kv_bucket(js, BUCKET, ttl, replicas, "partition leases").await
}

/// A key-value bucket whose entries are kept `max_age`. Its stream is made by hand, the way
/// JetStream's key-value convention lays it out (`KV_<bucket>`, subjects `$KV.<bucket>.>`),
/// because async-nats's `create_key_value` cannot read the answer of servers before 2.10.
pub(super) async fn kv_bucket(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
    replicas: usize,
    what: &str,
) -> anyhow::Result<kv::Store> {
    let config = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age,
        discard: jetstream::stream::DiscardPolicy::New,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    js.get_or_create_stream(config)
        .await
        .map_err(|e| anyhow::anyhow!("JetStream stream KV_{bucket} ({what}): {e}"))?;
    js.get_key_value(bucket)
        .await
        .map_err(|e| anyhow::anyhow!("JetStream key-value bucket {bucket}: {e}"))
}

/// Moves one partition's deliveries into the subscription's channel until aborted.
async fn forward(mut sub: NatsSubscription, tx: mpsc::Sender<Vec<Delivery>>) {
    loop {
        match sub.next(FETCH).await {
            Ok(Some(batch)) if !batch.is_empty() => {
                if tx.send(batch).await.is_err() {
                    return;
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("JetStream partition pull: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

#[async_trait]
impl Subscription for PartitionedSubscription {
    async fn next(&mut self, max: usize) -> anyhow::Result<Option<Vec<Delivery>>> {
        loop {
            self.apply_control().await;
            if !self.leftover.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                control = self.control.recv() => {
                    // Applied at the top of the loop.
                    self.controls.extend(control);
                }
                batch = self.rx.recv() => match batch {
                    Some(batch) => self.keep_held(batch).await,
                    None => return Ok(None),
                },
            }
        }
        while self.leftover.len() < max {
            // A partition acquired meanwhile has its state installed before its deliveries.
            self.apply_control().await;
            match self.rx.try_recv() {
                Ok(more) => self.keep_held(more).await,
                Err(_) => break,
            }
        }
        let rest = self.leftover.split_off(max.min(self.leftover.len()));
        Ok(Some(std::mem::replace(&mut self.leftover, rest)))
    }

    async fn commit(&mut self, deliveries: Vec<Delivery>) -> anyhow::Result<()> {
        if let Some((state, store)) = &self.state {
            for (p, bytes) in crate::bus::checkpoints(&**state, &deliveries) {
                handover::write(store, &self.leases.group, p, &bytes)
                    .await
                    .map_err(|e| anyhow::anyhow!("storing the checkpoint of partition {p}: {e:#}"))?;
                state.stored(p);
            }
        }
        super::ack(deliveries).await
    }

    async fn keep_state(&mut self, state: Arc<dyn PartitionState>) -> anyhow::Result<bool> {
        let store = handover::bucket(&self.js, self.replicas).await?;
        self.state = Some((state, store));
        Ok(true)
    }

    async fn leave(&mut self) {
        self.manager.abort();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()))
            .into_values()
            .collect();
        for task in tasks {
            task.abort();
        }
        self.apply_control().await;
        for p in self.held.clone() {
            self.hand_back(p).await;
        }
        let member = format!("{}.members.{}", self.leases.group, self.leases.member);
        let _ = self.leases.kv.delete(member).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        assert_eq!(partition("eu-prod", 8), partition("eu-prod", 8));
        let used: BTreeSet<u32> = (0..64).map(|i| partition(&format!("cluster-{i}"), 8)).collect();
        assert_eq!(used.len(), 8);
    }
}

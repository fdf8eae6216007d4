//! kaudit's own Kafka-side publish cost, without a broker's: the shim's path (batches of 400,
//! eight in flight, every message acknowledged) through the Kafka bus against librdkafka's
//! in-process mock cluster. `cargo run --release --example kafka_mock -- [EVENTS]`
//! (The mock cluster stopped serving consumer fetches after ~8 MB here, so the consume side is
//! measured through tansu instead: integration/bench-broker.sh kafka.)

use kaudit::bus::kafka::{KafkaBus, KafkaConfig};
use kaudit::bus::{Bus, Message};
use std::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic("kaudit.events", 6, 1)?;
    let config = KafkaConfig {
        brokers: mock.bootstrap_servers(),
        create_topics: false,
        ..Default::default()
    };
    let bus = KafkaBus::connect(config, &["kaudit.events"]).await?;
    let event = std::fs::read_to_string("rules/fixtures/privileged_container/positive.jsonl")?;
    let payload = bytes::Bytes::from(event.lines().next().unwrap_or_default().to_string());
    let batch: Vec<Message> = (0..400)
        .map(|i| Message {
            key: format!("cluster-{}", i % 3),
            route: String::new(),
            id: None,
            payload: payload.clone(),
            headers: vec![("kaudit-cluster".into(), format!("cluster-{}", i % 3))],
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0;
    let mut inflight = Vec::new();
    while sent < n {
        // Eight batches in flight, as eight concurrent webhook requests would be.
        inflight.push(bus.publish("kaudit.events", batch.clone()));
        sent += batch.len();
        if inflight.len() == 8 {
            for r in futures::future::join_all(inflight.drain(..)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(inflight).await {
        r?;
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "publish: {sent} events ({} B each) acknowledged in {secs:.2}s: {:.0} events/s",
        payload.len(),
        sent as f64 / secs
    );
    Ok(())
}

//! `kaudit tail` as a process publishing to a real NATS JetStream: append, rotate by rename,
//! rotate by copy-truncate, `kill -9` in the middle of a large append and restart, append more.
//! Every event reaches the events stream exactly once (the stable message ids let JetStream drop
//! the batch a killed tail re-sends), in the order of the file.

mod common;

use common::brokers::{Broker, Kind, Proc};
use kaudit::bus::{self, BusConfig, BusKind};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

fn event(n: usize) -> String {
    format!(
        "{{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v1\",\"level\":\"Metadata\",\"auditID\":\"ev-{n:06}\",\"stage\":\"ResponseComplete\",\"requestURI\":\"/api/v1/namespaces/default/pods\",\"verb\":\"list\",\"user\":{{\"username\":\"alice\"}},\"objectRef\":{{\"resource\":\"pods\",\"namespace\":\"default\"}},\"stageTimestamp\":\"2026-11-26T10:00:00.000000Z\"}}\n"
    )
}

/// Appends events `range` to `path`, one write per event (as the log backend writes).
fn append(path: &Path, range: std::ops::Range<usize>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for n in range {
        f.write_all(event(n).as_bytes()).unwrap();
    }
}

/// The checkpoint's offset, once it reads the whole live file (or panics after a while).
fn wait_caught_up(file: &Path, checkpoint: &Path, tail: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let len = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(file).unwrap());
        if let Ok(text) = std::fs::read_to_string(checkpoint) {
            let cp: serde_json::Value = serde_json::from_str(&text).unwrap();
            if cp["offset"] == len && cp["file"]["ino"] == ino {
                return;
            }
        }
        assert!(Instant::now() < deadline, "tail did not catch up:\n{}", tail.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn checkpoint_offset(checkpoint: &Path) -> u64 {
    std::fs::read_to_string(checkpoint)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|cp| cp["offset"].as_u64())
        .unwrap_or(0)
}

#[test]
fn tail_survives_rotations_and_kill_9_exactly_once_in_order() {
    let broker = Broker::start(Kind::Nats);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let checkpoint = dir.path().join("audit.log.kaudit-checkpoint");
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\nkind = \"nats\"\n[bus.nats]\nurl = \"{}\"\npartitions = 2\n",
            broker.url()
        ),
    )
    .unwrap();
    let tail_args = [
        "tail",
        log.to_str().unwrap(),
        "--pipeline",
        config.to_str().unwrap(),
        "--cluster",
        "c1",
        "--batch-lines",
        "40",
    ];
    let spawn = |name: &str| Proc::spawn(name, &tail_args, &[], dir.path());

    // Append, then a rename rotation with lines written just before it.
    append(&log, 0..200);
    let mut tail = spawn("tail-1");
    wait_caught_up(&log, &checkpoint, &tail);
    append(&log, 200..260);
    std::fs::rename(&log, dir.path().join("audit-2026-11-26T10-00-00.000.log")).unwrap();
    append(&log, 260..360);
    wait_caught_up(&log, &checkpoint, &tail);

    // Copy-truncate, the writer going on right after the truncation.
    append(&log, 360..420);
    std::fs::copy(&log, dir.path().join("audit.log.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, 420..500);
    wait_caught_up(&log, &checkpoint, &tail);

    // kill -9 in the middle of a large append, restart, append more.
    let before = checkpoint_offset(&checkpoint);
    append(&log, 500..8000);
    let deadline = Instant::now() + Duration::from_secs(30);
    while checkpoint_offset(&checkpoint) <= before {
        assert!(Instant::now() < deadline, "{}", tail.log_text());
        std::thread::sleep(Duration::from_millis(5));
    }
    tail.kill9();
    let killed_at = checkpoint_offset(&checkpoint);
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(
        killed_at < len,
        "the kill came too late to test anything ({killed_at} of {len})"
    );
    let mut tail = spawn("tail-2");
    append(&log, 8000..8100);
    wait_caught_up(&log, &checkpoint, &tail);
    tail.terminate();

    // Read the events stream back.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<(String, String)> = runtime.block_on(async {
        let mut c = BusConfig {
            kind: BusKind::Nats,
            ..Default::default()
        };
        c.nats.url = broker.url();
        c.nats.partitions = 2;
        let bus = bus::connect(&c).await.unwrap();
        let mut sub = bus.subscribe(&c.events_topic, "tail-test").await.unwrap();
        let mut ids = Vec::new();
        let mut quiet_since = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(60);
        // Until nothing more arrives for 3 s after all were seen.
        while Instant::now() < deadline && (ids.len() < 8100 || quiet_since.elapsed() < Duration::from_secs(3)) {
            if let Ok(Ok(Some(batch))) = tokio::time::timeout(Duration::from_millis(500), sub.next(1000)).await {
                quiet_since = Instant::now();
                for d in &batch {
                    let v: serde_json::Value = serde_json::from_slice(&d.message.payload).unwrap();
                    let cluster = d.message.header("kaudit-cluster").unwrap_or_default().to_string();
                    ids.push((v["auditID"].as_str().unwrap().to_string(), cluster));
                }
                sub.commit(batch).await.unwrap();
            }
        }
        ids
    });
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (id, _) in &ids {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let missing: Vec<usize> = (0..8100)
        .filter(|n| !seen.contains_key(format!("ev-{n:06}").as_str()))
        .collect();
    let repeated: Vec<_> = seen.iter().filter(|(_, &c)| c > 1).collect();
    assert!(
        missing.is_empty(),
        "{} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(
        repeated.is_empty(),
        "{} repeated: {:?}",
        repeated.len(),
        &repeated[..repeated.len().min(10)]
    );
    assert_eq!(ids.len(), 8100);
    // One cluster is one partition: the stream holds the file's order.
    let order: Vec<&str> = ids.iter().map(|(id, _)| id.as_str()).collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted, "events out of the file's order");
    assert!(ids.iter().all(|(_, c)| c == "c1"));
}

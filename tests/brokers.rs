//! The pipeline through real brokers, for Apache Kafka and NATS JetStream: a shim process and
//! two detector processes. End to end with three clusters, a `kill -9` of a detector in the
//! middle of a 50k-event stream, a broker outage under load (these with dedup off: they check
//! that every match arrives), a burst deduplicated exactly across two detectors, and (Kafka)
//! dedup state moving with partitions as a detector joins and another leaves.

mod common;

#[path = "../integration/events.rs"]
#[allow(dead_code)]
mod events;

use common::brokers::{free_port, wait_for_port, Broker, Kind, Proc};
use kaudit::alert::Alert;
use kaudit::audit::Event;
use kaudit::bus::{self, BusConfig, BusKind};
use kaudit::engine::{Matching, RuleSet};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Pipeline {
    broker: Broker,
    dir: tempfile::TempDir,
    shim_port: u16,
    shim: Option<Proc>,
    detectors: Vec<(Proc, u16)>,
    config: std::path::PathBuf,
}

fn bus_config(broker: &Broker) -> BusConfig {
    let mut c = BusConfig::default();
    match broker.kind {
        Kind::Nats => {
            c.kind = BusKind::Nats;
            c.nats.url = broker.url();
            c.nats.ack_wait_secs = 5;
            c.nats.publish_timeout_secs = 3;
            c.nats.partitions = 2;
            c.nats.lease_secs = 3;
        }
        Kind::Kafka => {
            c.kind = BusKind::Kafka;
            c.kafka.brokers = broker.url();
            c.kafka.message_timeout_ms = 3000;
        }
    }
    c
}

impl Pipeline {
    /// A broker, `detectors` detector processes and a shim; `dedup` on or off.
    fn start(kind: Kind, detectors: usize, dedup: bool) -> Pipeline {
        Pipeline::start_with(kind, detectors, dedup, &rules_path(kind), "")
    }

    /// The same with the rules at `rules` and more `[detector]` settings.
    fn start_with(kind: Kind, detectors: usize, dedup: bool, rules: &std::path::Path, detector: &str) -> Pipeline {
        let broker = Broker::start(kind);
        let dir = tempfile::tempdir().unwrap();
        let bus = match kind {
            Kind::Nats => format!(
                "kind = \"nats\"\n[bus.nats]\nurl = \"{}\"\nack_wait_secs = 5\npublish_timeout_secs = 3\npartitions = 2\nlease_secs = 3\n",
                broker.url()
            ),
            Kind::Kafka => format!(
                "kind = \"kafka\"\n[bus.kafka]\nbrokers = \"{}\"\nmessage_timeout_ms = 3000\n",
                broker.url()
            ),
        };
        let config = dir.path().join("pipeline.toml");
        std::fs::write(
            &config,
            format!(
                "[shim]\nallow_unauthenticated = true\nrequest_timeout_secs = 20\n[detector]\nrules = [\"{}\"]\n{detector}\n[detector.dedup]\nenabled = {dedup}\n[[outputs]]\nkind = \"topic\"\n[bus]\n{bus}",
                rules.display()
            ),
        )
        .unwrap();
        let mut p = Pipeline {
            broker,
            dir,
            shim_port: free_port(),
            shim: None,
            detectors: Vec::new(),
            config,
        };
        for i in 0..detectors {
            p.add_detector(i);
        }
        p.start_shim();
        p
    }

    fn start_shim(&mut self) {
        let env = [("KAUDIT__SHIM__LISTEN", format!("127.0.0.1:{}", self.shim_port))];
        let config = self.config.display().to_string();
        self.shim = Some(Proc::spawn(
            "shim",
            &["shim", "--pipeline", &config],
            &env,
            self.dir.path(),
        ));
        assert!(
            wait_for_port(self.shim_port, Duration::from_secs(30)),
            "shim did not start: {}",
            self.shim.as_ref().unwrap().log_text()
        );
    }

    fn add_detector(&mut self, i: usize) {
        self.add_detector_named(i, &format!("detector-{i}"));
    }

    /// A detector with static member id `detector-{i}`, logging to `name`.
    fn add_detector_named(&mut self, i: usize, name: &str) {
        let port = free_port();
        let env = [
            ("KAUDIT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}")),
            ("KAUDIT__BUS__KAFKA__GROUP_INSTANCE_ID", format!("detector-{i}")),
        ];
        let config = self.config.display().to_string();
        let proc = Proc::spawn(name, &["detect", "--pipeline", &config], &env, self.dir.path());
        assert!(
            wait_for_port(port, Duration::from_secs(30)),
            "detector did not start: {}",
            proc.log_text()
        );
        self.detectors.push((proc, port));
    }

    /// Waits until every detector holds partitions (Kafka: the consumer group's rebalances;
    /// NATS: the partition leases), so that the test does not race the first assignments.
    async fn settled(&self) {
        let detectors = &self.detectors;
        wait_until(
            "the consumer group to assign partitions to every detector",
            Duration::from_secs(60),
            || {
                detectors.iter().all(|(p, _)| {
                    p.log_text()
                        .lines()
                        .rev()
                        .find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"))
                        .is_some_and(|l| l.contains("partitions assigned") && !l.contains("assigned: none"))
                })
            },
        )
        .await;
    }

    fn url(&self, cluster: &str) -> String {
        format!("http://127.0.0.1:{}/k8s_audit/{cluster}", self.shim_port)
    }

    fn logs(&self) -> String {
        let mut s = String::new();
        for p in self.shim.iter().chain(self.detectors.iter().map(|(p, _)| p)) {
            let text = p.log_text();
            let tail: Vec<&str> = text.lines().rev().filter(|l| !l.contains(" DEBUG ")).take(25).collect();
            s.push_str(&format!(
                "--- {} ---\n{}\n",
                p.name,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        s
    }
}

async fn evaluated(port: u16) -> Option<u64> {
    common::evaluated(&format!("127.0.0.1:{port}")).await
}

/// Collects alerts from the alerts topic (a consumer group of the test's own).
fn collect_alerts(config: BusConfig) -> Arc<Mutex<Vec<Alert>>> {
    collect_alerts_as(config, "test-reader")
}

fn collect_alerts_as(config: BusConfig, group: &'static str) -> Arc<Mutex<Vec<Alert>>> {
    let seen: Arc<Mutex<Vec<Alert>>> = Arc::default();
    let out = seen.clone();
    tokio::spawn(async move {
        let bus = bus::connect(&config).await.unwrap();
        let mut sub = bus.subscribe(&config.alerts_topic, group).await.unwrap();
        // The reader outlives broker outages: errors mean "try again" (redeliveries are fine).
        loop {
            let batch = match sub.next(1000).await {
                Ok(Some(batch)) => batch,
                Ok(None) => break,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            for d in &batch {
                out.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&d.message.payload).unwrap());
            }
            let _ = sub.commit(batch).await;
        }
    });
    seen
}

/// The rules the detectors of a test pipeline load: the default rules, all of them, on both
/// brokers. (On tansu, the stand-in the Kafka tests used before Apache Kafka, the `kill -9`
/// test found acknowledged alerts missing with all 61 rules and ran with 12; Apache Kafka
/// answers that question: see the kill test.)
fn rules_path(_kind: Kind) -> std::path::PathBuf {
    common::repo().join("rules")
}

/// Alert ids the rules give for these events with rate limits off (stateful rules through their
/// windows), as `kaudit scan --no-dedup` would: id → cluster.
fn expected(events: &[(String, String)], kind: Kind) -> HashMap<String, String> {
    expected_alerts(events, kind)
        .into_iter()
        .map(|a| (a.id, a.cluster))
        .collect()
}

fn expected_alerts(events: &[(String, String)], kind: Kind) -> Vec<Alert> {
    let rules = RuleSet::load(&[rules_path(kind)], Matching::All).unwrap();
    let deduper = kaudit::dedup::Deduper::new(&kaudit::dedup::DedupConfig::off()).unwrap();
    let detect = kaudit::detect::Detect::new(&rules, &deduper);
    let mut alerts = Vec::new();
    for (cluster, json) in events {
        let event = Event::from_json(json.clone().into_bytes()).unwrap();
        let source = kaudit::detect::Source {
            cluster,
            ..Default::default()
        };
        detect.event(&event, &source, &mut alerts);
    }
    alerts
}

/// Rules with a window: a detector killed with `kill -9` hands none of their state over.
fn stateful_rules(kind: Kind) -> HashSet<String> {
    let rules = RuleSet::load(&[rules_path(kind)], Matching::All).unwrap();
    rules
        .rules()
        .iter()
        .filter(|r| r.window.is_some())
        .map(|r| r.name.clone())
        .collect()
}

async fn wait_until(what: &str, timeout: Duration, done: impl FnMut() -> bool) {
    assert!(eventually(timeout, done).await, "timed out waiting for {what}");
}

async fn eventually(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

fn event_list(items: &[&str]) -> String {
    format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        items.join(",")
    )
}

/// Cluster names whose Kafka partitions (librdkafka hashes keys with CRC-32) fall in both
/// halves of six partitions, so that each of two detectors owns at least one (the NATS
/// partitions, CRC-32 modulo two, are split by these names too: checked below).
fn clusters() -> [&'static str; 3] {
    let partition = |name: &str| {
        let mut crc = flate2::Crc::new();
        crc.update(name.as_bytes());
        crc.sum() % 6
    };
    let candidates = [
        "eu-prod",
        "us-prod",
        "ap-staging",
        "eu-dev",
        "us-dev",
        "ap-prod",
        "ci",
        "edge",
        "lab",
    ];
    let low: Vec<_> = candidates.iter().copied().filter(|c| partition(c) < 3).collect();
    let high: Vec<_> = candidates.iter().copied().filter(|c| partition(c) >= 3).collect();
    let chosen = [low[0], high[0], if low.len() > 1 { low[1] } else { high[1] }];
    let nats: HashSet<u32> = chosen
        .iter()
        .map(|c| kaudit::bus::nats::partitions::partition(c, 2))
        .collect();
    assert_eq!(nats.len(), 2, "the clusters should cover both NATS partitions");
    chosen
}

fn falco_trace_events() -> Vec<String> {
    let shared = common::shared().expect("../shared holds the Falco traces the broker tests post");
    let mut traces: Vec<_> = std::fs::read_dir(shared.join("falco/traces"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    traces.sort();
    // Some traces repeat an event of another (same audit ID, stage and receive time, sometimes
    // with other contents): each request is posted once per cluster, as an apiserver would.
    let mut seen = HashSet::new();
    let identity = |e: &String| {
        let v: serde_json::Value = serde_json::from_str(e).unwrap();
        format!("{}/{}/{}", v["auditID"], v["stage"], v["requestReceivedTimestamp"])
    };
    traces
        .iter()
        .filter(|p| !p.ends_with("fal_01_003.json"))
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|e| seen.insert(identity(e)))
        .collect()
}

async fn end_to_end(kind: Kind) {
    let p = Pipeline::start(kind, 2, false);
    p.settled().await;
    let alerts = collect_alerts(bus_config(&p.broker));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let events = falco_trace_events();
    let mut posted = Vec::new();
    for cluster in clusters() {
        let items: Vec<&str> = events.iter().map(String::as_str).collect();
        let r = client
            .post(p.url(cluster))
            .body(event_list(&items))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", p.logs());
        posted.extend(events.iter().map(|e| (cluster.to_string(), e.clone())));
    }
    let want = expected(&posted, kind);
    assert!(
        want.len() >= 3 * 15,
        "the traces should fire many rules: {}",
        want.len()
    );
    let missing = || {
        let got: HashSet<String> = alerts.lock().unwrap().iter().map(|a| a.id.clone()).collect();
        want.keys().filter(|id| !got.contains(*id)).count()
    };
    let complete = eventually(Duration::from_secs(90), || missing() == 0).await;
    if !complete {
        let got = alerts.lock().unwrap().clone();
        let ids: HashSet<&str> = got.iter().map(|a| a.id.as_str()).collect();
        let lacking: Vec<(String, String, String)> = expected_alerts(&posted, kind)
            .into_iter()
            .filter(|a| !ids.contains(a.id.as_str()))
            .map(|a| (a.cluster, a.rule, a.audit_id))
            .collect();
        let unexpected: Vec<(String, String)> = got
            .iter()
            .filter(|a| !want.contains_key(&a.id))
            .map(|a| (a.rule.clone(), a.output.clone()))
            .collect();
        panic!(
            "{} of {} alerts missing: {lacking:?}\nunexpected: {unexpected:?}\n{}",
            missing(),
            want.len(),
            p.logs()
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = alerts.lock().unwrap().clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for a in &got {
        *counts.entry(a.id.as_str()).or_default() += 1;
        assert_eq!(want.get(&a.id), Some(&a.cluster), "unexpected alert {a:?}");
    }
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(
        twice.is_empty(),
        "alerts arrived more than once: {twice:?}\n{}",
        p.logs()
    );
    assert_eq!(counts.len(), want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_end_to_end_three_clusters_two_detectors() {
    end_to_end(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_end_to_end_three_clusters_two_detectors() {
    end_to_end(Kind::Kafka).await;
}

/// 50k generated events (about 2.7% fire a rule) in batches of 400 from the three clusters.
fn generated(n: usize) -> Vec<(String, String)> {
    let mut rng = events::Rng(0x5DEE_CE66_D1CE_4E5B);
    let clusters = clusters();
    (0..n)
        .map(|i| {
            (
                clusters[(i / 400) % 3].to_string(),
                events::event(&mut rng, i as u64).to_string(),
            )
        })
        .collect()
}

async fn kill_a_detector(kind: Kind) {
    let mut p = Pipeline::start(kind, 2, false);
    p.settled().await;
    let alerts = collect_alerts(bus_config(&p.broker));
    let events = generated(50_000);
    // Every per-event alert must arrive. Stateful rules' windows go on from the last checkpoint
    // (`state_survives_a_kill`), but after JetStream's redelivery, which comes after newer
    // events, the alert that fills a window may be another event's: their ids are not compared.
    let stateful = stateful_rules(kind);
    let expected_list: Vec<Alert> = expected_alerts(&events, kind)
        .into_iter()
        .filter(|a| !stateful.contains(&a.rule))
        .collect();
    let want: HashMap<String, String> = expected_list
        .iter()
        .map(|a| (a.id.clone(), a.cluster.clone()))
        .collect();
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let batches: Vec<(String, String)> = events
        .chunks(400)
        .map(|c| {
            (
                c[0].0.clone(),
                event_list(&c.iter().map(|(_, e)| e.as_str()).collect::<Vec<_>>()),
            )
        })
        .collect();
    let (mut shares, mut killed) = (None, false);
    for (i, (cluster, body)) in batches.iter().enumerate() {
        loop {
            let r = client.post(p.url(cluster)).body(body.clone()).send().await.unwrap();
            if r.status() == 200 {
                break;
            }
            // 429/503 with Retry-After: the bus pushes back; the apiserver would wait too.
            assert!(r.headers().contains_key("retry-after"), "{}", r.status());
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if i == batches.len() / 3 && !killed {
            // Let both detectors work on the first third, then take their shares and kill one.
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let a = evaluated(p.detectors[0].1).await.unwrap_or(0);
                let b = evaluated(p.detectors[1].1).await.unwrap_or(0);
                if (a > 0 && b > 0) || Instant::now() > deadline {
                    shares = Some((a, b));
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            p.detectors[1].0.kill9();
            killed = true;
            if kind == Kind::Kafka {
                // A killed static member keeps its partitions until its session times out (45 s);
                // a detector restarted with its static member id (as a pod restarted by
                // Kubernetes is) takes them over at once, from the committed offsets.
                p.add_detector_named(1, "detector-1-restarted");
            }
        }
    }
    let (a, b) = shares.unwrap();
    eprintln!("{kind:?}: before the kill, detector 0 evaluated {a} events and detector 1 {b}");
    assert!(
        a > 0 && b > 0,
        "both detectors should take a share: {a} and {b}\n{}",
        p.logs()
    );
    let all_there = eventually(Duration::from_secs(240), || {
        let got: HashSet<String> = alerts.lock().unwrap().iter().map(|a| a.id.clone()).collect();
        want.keys().all(|id| got.contains(id))
    })
    .await;
    let (missing, examples) = {
        let got: HashSet<String> = alerts.lock().unwrap().iter().map(|a| a.id.clone()).collect();
        let missing: Vec<&Alert> = expected_list.iter().filter(|a| !got.contains(&a.id)).collect();
        let examples: Vec<String> = missing
            .iter()
            .take(8)
            .map(|a| format!("{} {} {} {}", a.rule, a.cluster, a.audit_id, a.time))
            .collect();
        (missing.len(), examples)
    };
    if !all_there {
        // Are they on the topic at all? A second reader from the start tells the broker's loss
        // from the first reader's.
        let again = collect_alerts_as(bus_config(&p.broker), "test-second-reader");
        tokio::time::sleep(Duration::from_secs(30)).await;
        let second: HashSet<String> = again.lock().unwrap().iter().map(|a| a.id.clone()).collect();
        let on_topic = expected_list
            .iter()
            .filter(|a| !alerts.lock().unwrap().iter().any(|g| g.id == a.id) && second.contains(&a.id))
            .count();
        // A rule that could not evaluate an event says so in an alert: show those.
        let degraded: Vec<String> = alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.rule == kaudit::engine::DEGRADED)
            .map(|a| a.output.clone())
            .collect();
        panic!(
            "{missing} of {} expected alerts missing after the kill ({on_topic} of them found by a second reader), e.g. {examples:#?}\ndegraded: {degraded:#?}\n{}",
            want.len(),
            p.logs()
        );
    }
    let got: Vec<Alert> = alerts
        .lock()
        .unwrap()
        .iter()
        .filter(|a| !stateful.contains(&a.rule))
        .cloned()
        .collect();
    for a in &got {
        assert_eq!(want.get(&a.id), Some(&a.cluster), "an alert no event explains: {a:?}");
    }
    let distinct: HashSet<&str> = got.iter().map(|a| a.id.as_str()).collect();
    eprintln!(
        "{kind:?}: {} alerts expected, {} received ({} distinct)",
        want.len(),
        got.len(),
        distinct.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kill_9_of_a_detector_loses_no_alert() {
    kill_a_detector(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_kill_9_of_a_detector_loses_no_alert() {
    kill_a_detector(Kind::Kafka).await;
}

/// Exec event `i` of the state test: alice's, but bob's at 4 and 12.
fn stateful_event(i: usize) -> String {
    let user = if i == 4 || i == 12 { "bob" } else { "alice" };
    format!(
        r#"{{"auditID":"state-{i}","stage":"ResponseStarted","verb":"get","user":{{"username":"{user}"}},"requestReceivedTimestamp":"2026-11-20T12:00:{i:02}.000000Z","stageTimestamp":"2026-11-20T12:00:{i:02}.000000Z","objectRef":{{"resource":"pods","namespace":"prod","name":"web","subresource":"exec"}},"responseStatus":{{"code":101}}}}"#
    )
}

/// A detector killed with `kill -9` mid-window, after a checkpoint and with three events
/// evaluated (their alerts sent) but not committed: its successor installs the checkpoint, the
/// redelivered events are applied once, and the alerts of the whole stream are those of one
/// detector never killed: the window fills once across the kill, a term learned before it does
/// not fire again, and the rate limit's counts add up.
async fn state_survives_a_kill(kind: Kind) {
    const CLUSTER: &str = "eu-prod";
    let rules_dir = tempfile::tempdir().unwrap();
    let rules = rules_dir.path().join("stateful.yaml");
    let text = format!(
        "{}{}",
        common::WINDOWED_RULES,
        r#"
- rule: Exec
  desc: every exec, one alert an hour per user
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted'
  output: exec by {user.username}
  priority: notice
  dedup: { window: 1h }
"#
    );
    std::fs::write(&rules, text).unwrap();
    // Checkpoints every 5 s: the kill comes between two.
    let mut p = Pipeline::start_with(kind, 1, true, &rules, "checkpoint_ms = 5000");
    p.settled().await;
    let alerts = collect_alerts(bus_config(&p.broker));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let url = p.url(CLUSTER);
    let post = |range: std::ops::Range<usize>| {
        let (client, url) = (&client, url.clone());
        async move {
            let events: Vec<String> = range.map(stateful_event).collect();
            let items: Vec<&str> = events.iter().map(String::as_str).collect();
            let r = client.post(url).body(event_list(&items)).send().await.unwrap();
            assert_eq!(r.status(), 200);
        }
    };
    post(0..6).await;
    let log = |p: &Pipeline| p.detectors[0].0.log_text();
    wait_until("a checkpoint of events 0..6", Duration::from_secs(60), || {
        log(&p).contains("checkpoint stored")
    })
    .await;
    post(6..9).await;
    let port = p.detectors[0].1;
    wait_until("events 6..9 evaluated", Duration::from_secs(60), || {
        futures::executor::block_on(evaluated(port)).unwrap_or(0) >= 9
    })
    .await;
    assert_eq!(
        log(&p).matches("checkpoint stored").count(),
        1,
        "no checkpoint after events 6..9 yet\n{}",
        p.logs()
    );
    p.detectors[0].0.kill9();
    p.add_detector_named(0, "detector-0-restarted");
    post(9..15).await;
    let restarted = p.detectors[1].1;
    // Events 6..9 come again (uncommitted; JetStream after its ack wait), then 9..15.
    wait_until(
        "the successor to evaluate events 6..15",
        Duration::from_secs(90),
        || futures::executor::block_on(evaluated(restarted)).unwrap_or(0) >= 9,
    )
    .await;
    // Stopping summarizes the rate limit's repeats.
    p.detectors[1].0.terminate();
    // One detector, never killed, over the same stream.
    let rule_set = RuleSet::load(std::slice::from_ref(&rules), Matching::All).unwrap();
    let deduper = kaudit::dedup::Deduper::new(&kaudit::dedup::DedupConfig::default()).unwrap();
    let detect = kaudit::detect::Detect::new(&rule_set, &deduper);
    let mut want = Vec::new();
    for i in 0..15 {
        let event = Event::from_json(stateful_event(i).into_bytes()).unwrap();
        let source = kaudit::detect::Source {
            cluster: CLUSTER,
            ..Default::default()
        };
        detect.event(&event, &source, &mut want);
    }
    deduper.flush(&mut want);
    // JetStream redelivers what was not acknowledged after its ack wait, after newer events:
    // the same counts, but the alert that fills a window (and the sample a summary is made of)
    // may then be another event's, with another id. Kafka redelivers in order: the same ids.
    let key = |a: &Alert| {
        let id = if kind == Kind::Kafka || a.rule == "First exec by a user" {
            a.id.clone()
        } else {
            String::new()
        };
        (id, a.rule.clone(), a.dedup.count, a.dedup.suppressed)
    };
    let want: std::collections::BTreeSet<_> = want.iter().map(key).collect();
    let got = || -> std::collections::BTreeSet<_> { alerts.lock().unwrap().iter().map(key).collect() };
    let complete = eventually(Duration::from_secs(60), || got().len() >= want.len()).await;
    // A moment for anything extra to arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        complete && got() == want,
        "{kind:?}: got {:#?}\nwant {want:#?}\n{}",
        got(),
        p.logs()
    );
    let successor = p.detectors[1].0.log_text();
    assert!(successor.contains("took over the state"), "{successor}");
    if kind == Kind::Kafka {
        // A checkpoint a second: the hand-over topic keeps the newest per chunk, not them all.
        use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", p.broker.url())
            .create()
            .unwrap();
        let topic = "kaudit.events.handover.kaudit-detectors";
        let described = admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &AdminOptions::new())
            .await
            .unwrap();
        let config = described[0].as_ref().unwrap();
        let policy = config.get("cleanup.policy").and_then(|e| e.value.clone());
        assert_eq!(policy.as_deref(), Some("compact,delete"), "{topic}");
    }
    eprintln!("{kind:?}: {} alerts across the kill, as without it", want.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_state_survives_a_kill_9_mid_window() {
    state_survives_a_kill(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_state_survives_a_kill_9_mid_window() {
    state_survives_a_kill(Kind::Kafka).await;
}

/// An exec event (each fires one alert) with a unique audit ID.
fn exec_event(id: usize) -> String {
    format!(
        r#"{{"auditID":"outage-{id}","stage":"ResponseStarted","verb":"get","user":{{"username":"alice"}},"requestReceivedTimestamp":"2026-11-20T10:00:00.{id:06}Z","stageTimestamp":"2026-11-20T10:00:00.{id:06}Z","objectRef":{{"resource":"pods","namespace":"default","name":"web","subresource":"exec"}},"responseStatus":{{"code":101}}}}"#
    )
}

async fn broker_outage(kind: Kind) {
    let mut p = Pipeline::start(kind, 1, false);
    let alerts = collect_alerts(bus_config(&p.broker));
    let accepted: Arc<Mutex<Vec<usize>>> = Arc::default();
    let refused = Arc::new(Mutex::new(Vec::<(u16, Option<String>)>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut posters = Vec::new();
    for w in 0..2usize {
        let (url, accepted, refused, stop) = (p.url("prod"), accepted.clone(), refused.clone(), stop.clone());
        posters.push(tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .http2_prior_knowledge()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
            let mut batch = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let ids: Vec<usize> = (0..50).map(|i| (w * 1_000_000) + batch * 50 + i).collect();
                batch += 1;
                let items: Vec<String> = ids.iter().map(|&i| exec_event(i)).collect();
                let body = event_list(&items.iter().map(String::as_str).collect::<Vec<_>>());
                match client.post(&url).body(body).send().await {
                    Ok(r) if r.status() == 200 => accepted.lock().unwrap().extend(ids),
                    Ok(r) => {
                        let retry = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
                        refused.lock().unwrap().push((r.status().as_u16(), retry));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    Err(e) => panic!("the shim must answer, even without a broker: {e}"),
                }
            }
        }));
    }
    let wait_accepting = |n: usize| {
        let accepted = accepted.clone();
        async move {
            wait_until("accepted batches", Duration::from_secs(60), || {
                accepted.lock().unwrap().len() >= n
            })
            .await
        }
    };
    wait_accepting(500).await;
    p.broker.kill();
    wait_until("a 503 while the broker is down", Duration::from_secs(60), || {
        refused.lock().unwrap().iter().any(|(s, _)| *s == 503)
    })
    .await;
    p.broker.restart();
    let before = accepted.lock().unwrap().len();
    let recovered = eventually(Duration::from_secs(90), || {
        accepted.lock().unwrap().len() >= before + 500
    })
    .await;
    assert!(
        recovered,
        "no batch accepted after the broker came back ({} refusals)\n{}",
        refused.lock().unwrap().len(),
        p.logs()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for poster in posters {
        poster.await.unwrap();
    }
    for (status, retry) in refused.lock().unwrap().iter() {
        assert!(matches!(status, 429 | 503), "refused with {status}");
        assert!(retry.is_some(), "a {status} without Retry-After");
    }
    let want: HashSet<String> = accepted.lock().unwrap().iter().map(|i| format!("outage-{i}")).collect();
    let missing = || {
        let got: HashSet<String> = alerts.lock().unwrap().iter().map(|a| a.audit_id.clone()).collect();
        want.iter().filter(|id| !got.contains(*id)).count()
    };
    let complete = eventually(Duration::from_secs(120), || missing() == 0).await;
    assert!(
        complete,
        "{} of {} accepted events have no alert\n{}",
        missing(),
        want.len(),
        p.logs()
    );
    eprintln!(
        "{kind:?}: {} events accepted, {} requests refused during the outage",
        want.len(),
        refused.lock().unwrap().len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_outage_answers_503_and_loses_no_accepted_event() {
    broker_outage(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_outage_answers_503_and_loses_no_accepted_event() {
    broker_outage(Kind::Kafka).await;
}

/// `n` exec events by one user in `cluster`, within a minute.
fn burst_events(cluster: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                r#"{{"auditID":"burst-{cluster}-{i}","stage":"ResponseStarted","verb":"get","user":{{"username":"mallory"}},"requestReceivedTimestamp":"2026-11-20T11:00:{s:02}.{i:06}Z","stageTimestamp":"2026-11-20T11:00:{s:02}.{i:06}Z","objectRef":{{"resource":"pods","namespace":"prod","name":"web","subresource":"exec"}},"responseStatus":{{"code":101}}}}"#,
                s = i * 60 / n
            )
        })
        .collect()
}

/// The same burst from three clusters through two detectors: exactly one first alert per key,
/// and once the detectors stop (summarizing what their windows hold) the counts add up to the
/// events, per cluster: no key was split between the detectors.
async fn burst_dedup(kind: Kind) {
    const N: usize = 300;
    let mut p = Pipeline::start(kind, 2, true);
    p.settled().await;
    let alerts = collect_alerts(bus_config(&p.broker));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let bursts: Vec<(&str, Vec<String>)> = clusters().iter().map(|c| (*c, burst_events(c, N))).collect();
    // Interleave the clusters, 50 events a request, as three apiservers would send them.
    for chunk in 0..N / 50 {
        for (cluster, events) in &bursts {
            let items: Vec<&str> = events[chunk * 50..(chunk + 1) * 50]
                .iter()
                .map(String::as_str)
                .collect();
            let r = client
                .post(p.url(cluster))
                .body(event_list(&items))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{}", p.logs());
        }
    }
    let exec = |a: &Alert| a.rule == "Exec or attach into pod";
    wait_until("a first alert per cluster", Duration::from_secs(60), || {
        alerts.lock().unwrap().iter().filter(|a| exec(a)).count() >= 3
    })
    .await;
    // Every event evaluated (a stopping detector drains only what it already fetched; the rest
    // would wait, uncommitted, for the next detector).
    let ports: Vec<u16> = p.detectors.iter().map(|(_, port)| *port).collect();
    wait_until("every event evaluated", Duration::from_secs(60), || {
        let evaluated: u64 = ports
            .iter()
            .map(|port| futures::executor::block_on(evaluated(*port)).unwrap_or(0))
            .sum();
        evaluated >= (3 * N) as u64
    })
    .await;
    // Stopping a detector summarizes the windows it holds.
    for (proc, _) in &mut p.detectors {
        proc.terminate();
    }
    let sums = || {
        let mut sums: HashMap<String, u64> = HashMap::new();
        for a in alerts.lock().unwrap().iter().filter(|a| exec(a)) {
            *sums.entry(a.cluster.clone()).or_default() += a.dedup.count;
        }
        sums
    };
    let complete = eventually(Duration::from_secs(60), || {
        let s = sums();
        s.len() == 3 && s.values().all(|&n| n >= N as u64)
    })
    .await;
    let got: Vec<Alert> = alerts.lock().unwrap().iter().filter(|a| exec(a)).cloned().collect();
    assert!(complete, "counts per cluster: {:?}\n{got:#?}\n{}", sums(), p.logs());
    for cluster in clusters() {
        let firsts: Vec<&Alert> = got
            .iter()
            .filter(|a| a.cluster == cluster && a.dedup.suppressed == 0)
            .collect();
        assert_eq!(
            firsts.len(),
            1,
            "{kind:?} {cluster}: first alerts {firsts:#?}\n{}",
            p.logs()
        );
        let summaries: Vec<&Alert> = got
            .iter()
            .filter(|a| a.cluster == cluster && a.dedup.suppressed > 0)
            .collect();
        assert_eq!(summaries.len(), 1, "{kind:?} {cluster}: one summary: {summaries:#?}");
        assert_eq!(summaries[0].dedup.suppressed, N as u64 - 1);
    }
    eprintln!("{kind:?}: {} alerts for {} events in three clusters", got.len(), 3 * N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_burst_yields_one_first_alert_per_key_across_two_detectors() {
    burst_dedup(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_burst_yields_one_first_alert_per_key_across_two_detectors() {
    burst_dedup(Kind::Kafka).await;
}

/// Partitions moving between detectors mid-burst: a second detector joins after the first third
/// of six clusters' bursts, the first leaves after the second third. The dedup state moves with
/// each partition (hand-over), so the group sends exactly one first alert per cluster's key and
/// the counts of all alerts add up to the events.
async fn handover_on_join_and_leave(kind: Kind) {
    const N: usize = 300;
    // CRC-32 spreads these over both NATS partitions (3 and 3) and all six Kafka ones.
    let clusters = ["east-1", "east-2", "west-3", "prod-a", "prod-b", "ap-1"];
    let mut p = Pipeline::start(kind, 1, true);
    p.settled().await;
    let alerts = collect_alerts(bus_config(&p.broker));
    let client = reqwest::Client::builder().http2_prior_knowledge().build().unwrap();
    let bursts: Vec<(&str, Vec<String>)> = clusters.iter().map(|c| (*c, burst_events(c, N))).collect();
    let shim = p.url("");
    let post = |range: std::ops::Range<usize>| {
        let (client, bursts, shim) = (&client, &bursts, &shim);
        async move {
            for start in range.step_by(50) {
                for (cluster, events) in bursts {
                    let items: Vec<&str> = events[start..start + 50].iter().map(String::as_str).collect();
                    let r = client
                        .post(format!("{shim}{cluster}"))
                        .body(event_list(&items))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            }
        }
    };
    let evaluated_by = |ports: &[u16]| -> u64 {
        ports
            .iter()
            .map(|port| futures::executor::block_on(evaluated(*port)).unwrap_or(0))
            .sum()
    };
    let first = p.detectors[0].1;
    post(0..N / 3).await;
    wait_until("the first third evaluated", Duration::from_secs(60), || {
        evaluated_by(&[first]) >= (clusters.len() * N / 3) as u64
    })
    .await;
    // A detector joins: every partition is revoked (state handed over) and reassigned.
    p.add_detector(1);
    p.settled().await;
    let second = p.detectors[1].1;
    post(N / 3..2 * N / 3).await;
    wait_until("the second third evaluated", Duration::from_secs(60), || {
        evaluated_by(&[first, second]) >= (clusters.len() * 2 * N / 3) as u64
    })
    .await;
    assert!(
        evaluated_by(&[second]) > 0,
        "the second detector should have taken partitions\n{}",
        p.logs()
    );
    // The first leaves: its partitions (and their state) go to the second.
    let by_first = evaluated_by(&[first]);
    p.detectors[0].0.terminate();
    let second_log = |p: &Pipeline| p.detectors[1].0.log_text();
    wait_until(
        "the second detector to take every partition",
        Duration::from_secs(60),
        || holds_every_partition(&second_log(&p), kind),
    )
    .await;
    post(2 * N / 3..N).await;
    wait_until("every event evaluated", Duration::from_secs(60), || {
        by_first + evaluated_by(&[second]) >= (clusters.len() * N) as u64
    })
    .await;
    p.detectors[1].0.terminate();
    let exec = |a: &Alert| a.rule == "Exec or attach into pod";
    let sums = || {
        let mut sums: HashMap<String, u64> = HashMap::new();
        let distinct: HashMap<String, Alert> = alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| exec(a))
            .map(|a| (a.id.clone(), a.clone()))
            .collect();
        for a in distinct.values() {
            *sums.entry(a.cluster.clone()).or_default() += a.dedup.count;
        }
        (sums, distinct)
    };
    let complete = eventually(Duration::from_secs(60), || {
        let (s, _) = sums();
        s.len() == clusters.len() && s.values().all(|&n| n >= N as u64)
    })
    .await;
    let (counts, distinct) = sums();
    assert!(complete, "counts per cluster: {counts:?}\n{}", p.logs());
    for cluster in clusters {
        let firsts: Vec<&Alert> = distinct
            .values()
            .filter(|a| a.cluster == cluster && a.dedup.suppressed == 0)
            .collect();
        assert_eq!(
            firsts.len(),
            1,
            "{kind:?} {cluster}: first alerts {firsts:#?}\n{}",
            p.logs()
        );
        assert_eq!(
            counts[cluster], N as u64,
            "{kind:?} {cluster}: counts add up to the events"
        );
    }
    let handed = second_log(&p).matches("took over the state").count();
    eprintln!(
        "{kind:?}: {} distinct alerts for {} events of {} clusters; the second detector took over {handed} partitions' state",
        distinct.len(),
        clusters.len() * N,
        clusters.len()
    );
}

/// Whether a detector's newest assignment (its log's last) is every partition of the events
/// topic (the test pipelines': Kafka 6, NATS 2).
fn holds_every_partition(log: &str, kind: Kind) -> bool {
    let newest = log
        .lines()
        .rev()
        .find(|l| l.contains("partitions assigned") || l.contains("partitions revoked"));
    let Some(held) = newest.and_then(|l| l.split("partitions assigned: ").nth(1)) else {
        return false;
    };
    match kind {
        // `kaudit.events[0] kaudit.events[1] ...`
        Kind::Kafka => held.matches('[').count() == 6,
        // `0,1 member=...`
        Kind::Nats => held.split_whitespace().next().map_or(0, |l| l.split(',').count()) == 2,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_dedup_state_moves_with_partitions_on_join_and_leave() {
    handover_on_join_and_leave(Kind::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_dedup_state_moves_with_partitions_on_join_and_leave() {
    handover_on_join_and_leave(Kind::Nats).await;
}

/// An OCSF output on a topic of its own: the topic is made at start (Kafka topic, NATS stream),
/// and its messages carry the dedup key and the CloudEvents headers of the encoding.
async fn ocsf_output_on_its_own_topic(kind: Kind) {
    let broker = Broker::start(kind);
    let config = bus_config(&broker);
    let bus = bus::connect(&config).await.unwrap();
    let output: kaudit::alert::sink::OutputConfig =
        toml_output("kind = \"topic\"\ntopic = \"kaudit.findings.ocsf\"\nencoding = \"ocsf\"\n");
    let sinks = kaudit::alert::sink::build(&[output], &bus, &config, &Default::default())
        .await
        .unwrap();
    let alerts = expected_alerts(&[("prod".to_string(), exec_event(7))], kind);
    assert_eq!(alerts.len(), 1);
    sinks[0].send(&alerts).await.unwrap();
    let mut sub = bus.subscribe("kaudit.findings.ocsf", "test-ocsf").await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(30), sub.next(10))
        .await
        .expect("the finding arrives")
        .unwrap()
        .unwrap();
    let m = &batch[0].message;
    let finding: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(finding["class_uid"], 2004);
    assert_eq!(finding["finding_info"]["uid"], alerts[0].dedup.key.as_str());
    assert_eq!(m.header("ce_id"), Some(alerts[0].id.as_str()));
    assert_eq!(m.header("ce_type"), Some("dev.kaudit.alert.ocsf.v1"));
    assert_eq!(m.header("ce_source"), Some("prod"));
    if kind == Kind::Kafka {
        assert_eq!(m.key, alerts[0].dedup.key, "the message key is the dedup key");
    }
}

fn toml_output(text: &str) -> kaudit::alert::sink::OutputConfig {
    let file = tempfile::NamedTempFile::with_suffix(".toml").unwrap();
    std::fs::write(file.path(), format!("[[outputs]]\n{text}")).unwrap();
    let config = kaudit::config::PipelineConfig::load_with_env(Some(file.path()), Some(Default::default())).unwrap();
    config.outputs.into_iter().next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_ocsf_output_on_its_own_topic() {
    ocsf_output_on_its_own_topic(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_ocsf_output_on_its_own_topic() {
    ocsf_output_on_its_own_topic(Kind::Kafka).await;
}

/// A detector whose broker is gone stops on SIGTERM within its shutdown deadline (it used to
/// wait on the broker for over 30 s, past Kubernetes' grace period) and says what it left:
/// here a dedup summary of suppressed repeats that it cannot publish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detector_stops_within_its_deadline_when_the_broker_is_gone() {
    let mut broker = Broker::start(Kind::Nats);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[detector]\nrules = [\"{}\"]\nshutdown_timeout_secs = 2\n[[outputs]]\nkind = \"topic\"\n[bus]\nkind = \"nats\"\n[bus.nats]\nurl = \"{}\"\npartitions = 2\nlease_secs = 3\n",
            rules_path(Kind::Nats).display(),
            broker.url()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut detector = Proc::spawn(
        "detector",
        &["detect", "--pipeline", &config.display().to_string()],
        &[("KAUDIT__TELEMETRY__LISTEN", format!("127.0.0.1:{port}"))],
        dir.path(),
    );
    assert!(wait_for_port(port, Duration::from_secs(30)), "{}", detector.log_text());
    // Three execs of one user: one alert, two repeats held for a summary.
    let bus = bus::connect(&bus_config(&broker)).await.unwrap();
    let messages = (0..3)
        .map(|i| kaudit::bus::Message {
            key: "prod".into(),
            route: "prod".into(),
            id: None,
            payload: exec_event(i).into_bytes().into(),
            headers: vec![(kaudit::bus::headers::CLUSTER.into(), "prod".into())],
        })
        .collect();
    bus.publish("kaudit.events", messages).await.unwrap();
    wait_until("the detector evaluated the execs", Duration::from_secs(30), || {
        futures::executor::block_on(evaluated(port)) == Some(3)
    })
    .await;
    broker.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    detector.terminate();
    let stopped = Instant::now();
    let status = loop {
        if let Some(status) = detector.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(20),
            "still running 25 s after SIGTERM: {}",
            detector.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "{status}: {}", detector.log_text());
    assert!(
        detector.log_text().contains("did not stop within 2s"),
        "{}",
        detector.log_text()
    );
}

/// `Subscription::next` is cancel-safe: the detector races it with its commit timer, and a
/// `next` dropped while it gathered a batch used to lose that batch (Kafka: for good, as the
/// offsets after it were committed). Read here under a timer shorter than a batch's gathering,
/// every message of the events topic (partitioned) and of the alerts topic arrives, once.
async fn reads_raced_with_a_timer_lose_nothing(kind: Kind) {
    let broker = Broker::start(kind);
    let config = bus_config(&broker);
    let bus = bus::connect(&config).await.unwrap();
    for topic in [&config.events_topic, &config.alerts_topic] {
        let mut sub = bus.subscribe(topic, "cancel-safety").await.unwrap();
        let sent: Vec<String> = (0..200).map(|i| format!("{topic} {i}")).collect();
        let messages = sent
            .iter()
            .enumerate()
            .map(|(i, text)| kaudit::bus::Message {
                key: format!("cluster-{}", i % 7),
                route: format!("cluster-{}", i % 7),
                id: None,
                payload: text.clone().into_bytes().into(),
                headers: vec![],
            })
            .collect();
        bus.publish(topic, messages).await.unwrap();
        let mut got: HashMap<String, usize> = HashMap::new();
        let (mut cancelled, mut batches) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < sent.len() && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(3), sub.next(1000)).await {
                Err(_) => cancelled += 1,
                Ok(batch) => {
                    let batch = batch.unwrap().unwrap();
                    batches += 1;
                    for d in &batch {
                        *got.entry(String::from_utf8_lossy(&d.message.payload).into_owned())
                            .or_default() += 1;
                    }
                    sub.commit(batch).await.unwrap();
                }
            }
        }
        let missing: Vec<&String> = sent.iter().filter(|s| !got.contains_key(*s)).collect();
        assert!(
            missing.is_empty(),
            "{topic}: {} of {} messages never came ({cancelled} reads cut short, {batches} batches): {:?}",
            missing.len(),
            sent.len(),
            &missing[..missing.len().min(5)]
        );
        let repeated: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(repeated.is_empty(), "{topic}: delivered more than once: {repeated:?}");
        eprintln!(
            "{topic}: {} messages in {batches} batches, {cancelled} reads cut short",
            sent.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_reads_raced_with_a_timer_lose_nothing() {
    reads_raced_with_a_timer_lose_nothing(Kind::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_reads_raced_with_a_timer_lose_nothing() {
    reads_raced_with_a_timer_lose_nothing(Kind::Nats).await;
}

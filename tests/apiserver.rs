//! A real kube-apiserver as the shim's client (see `common::apiserver`). Its webhook kubeconfig is
//! what `kaudit webhook-config` prints: a bearer token over TLS, verified against the shim's CA
//! (and, for a second apiserver, a client certificate whose CN names its cluster).
//! Its own start-up (bootstrap RBAC as `system:apiserver`) raises no alert; kubectl actions give
//! exactly the alerts they should, naming the cluster of the token; and its file backend's log,
//! scanned, gives the same alerts as the webhook.

mod common;

use common::apiserver::{request_response_policy, Apiserver};
use common::brokers::{Broker, Kind};
use kaudit::alert::Alert;
use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles, Running};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTER: &str = "kapi-test";
const TOKEN: &str = "kapi-test-webhook-token-0123456789";
/// The cluster of the second apiserver, which authenticates with a client certificate.
const MTLS_CLUSTER: &str = "kapi-mtls";

fn alerts(file: &Path) -> Vec<Alert> {
    common::json_lines(file)
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect()
}

/// Events the apiserver wrote to its file log so far.
fn logged(server: &Apiserver) -> usize {
    common::json_lines(&server.audit_log()).len()
}

/// `kaudit_events_evaluated_total` of the in-process pipeline.
async fn evaluated(telemetry: std::net::SocketAddr) -> u64 {
    common::evaluated(&telemetry.to_string()).await.unwrap_or(0)
}

/// Waits until the detector has evaluated `before` events plus as many as `server`'s file log
/// holds now (the webhook is sent the same events, in batches every second); returns that count.
async fn wait_for_webhook(server: &Apiserver, before: usize, telemetry: std::net::SocketAddr) -> usize {
    let want = before + logged(server);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = evaluated(telemetry).await as usize;
        if got >= want {
            // The count moves when a batch is evaluated, just before its alerts are written.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return want;
        }
        assert!(
            Instant::now() < deadline,
            "{} of the {} logged events came through the webhook\n{}",
            got.saturating_sub(before),
            want - before,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An attacker's session, as kubectl sends it.
fn session(server: &Apiserver) {
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "kubectl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(server.kubectl(&["create", "namespace", "shop"], None));
    ok(server.kubectl(&["apply", "-f", "-"], Some(PRIVILEGED_POD)));
    ok(server.kubectl(
        &[
            "-n",
            "shop",
            "create",
            "configmap",
            "aws-creds",
            "--from-literal=aws_access_key_id=AKIAIOSFODNN7EXAMPLE",
            "--from-literal=aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        ],
        None,
    ));
    ok(server.kubectl(
        &[
            "create",
            "clusterrolebinding",
            "attacker-admin",
            "--clusterrole=cluster-admin",
            "--user=attacker",
        ],
        None,
    ));
    // No kubelet runs: the exec fails after being audited (a WebSocket `get`, then SPDY `create`).
    let _ = server.kubectl(&["-n", "shop", "exec", "priv-pod", "--", "id"], None);
    // A user without rights lists secrets: 403.
    let refused = server.kubectl(&["--context", "dev", "-n", "shop", "get", "secrets"], None);
    assert!(!refused.status.success());
}

fn by_rule(alerts: &[Alert]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry(a.rule.clone()).or_default() += 1;
    }
    m
}

/// The tests of this file read process-wide metrics: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// kaudit in this process as the apiservers' webhook: the shim on TLS with a token cluster and a
/// certificate cluster, a detector with the default rules (no rate limit), alerts to a file.
struct Kaudit {
    dir: tempfile::TempDir,
    pki: common::pki::Pki,
    token_file: PathBuf,
    alerts_file: PathBuf,
    running: Running,
    port: u16,
    telemetry: std::net::SocketAddr,
}

impl Kaudit {
    /// With `bus`, a `[bus]` section (empty: the memory bus).
    async fn start(bus: &str) -> Kaudit {
        common::logs();
        let dir = tempfile::tempdir().unwrap();
        let pki = common::pki::pki();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let alerts_file = dir.path().join("alerts.jsonl");
        let toml = format!(
            r#"
[shim]
listen = "127.0.0.1:0"
clusters = [
  {{ name = "{CLUSTER}", token_file = "{token}" }},
  {{ name = "{MTLS_CLUSTER}", client_cert_cn = "apiserver-prod" }},
]
tls = {tls}
[detector]
rules = ["{rules}"]
dedup = {{ enabled = false }}
[telemetry]
listen = "127.0.0.1:0"
[[outputs]]
kind = "file"
path = "{alerts}"
{bus}
"#,
            token = token_file.display(),
            tls = pki.shim_tls(dir.path(), true),
            rules = common::repo().join("rules").display(),
            alerts = alerts_file.display(),
        );
        let config_file = dir.path().join("pipeline.toml");
        std::fs::write(&config_file, toml).unwrap();
        let config = PipelineConfig::load_with_env(Some(&config_file), Some(Default::default())).unwrap();
        let running = start(config, Roles::All).await.unwrap();
        let port = running.addr.unwrap().port();
        let telemetry = running.telemetry_addr.unwrap();
        Kaudit {
            dir,
            pki,
            token_file,
            alerts_file,
            running,
            port,
            telemetry,
        }
    }

    /// What `kaudit webhook-config` prints for the token cluster, or with `certificate` for the
    /// certificate cluster, as a file.
    fn webhook_kubeconfig(&self, certificate: bool) -> PathBuf {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kaudit"));
        cmd.args(["webhook-config", "--server"])
            .arg(format!("https://localhost:{}", self.port))
            .arg("--certificate-authority")
            .arg(self.dir.path().join("ca.pem"));
        let file = if certificate {
            let write = |name: &str, text: &str| {
                let path = self.dir.path().join(name);
                std::fs::write(&path, text).unwrap();
                path
            };
            cmd.args(["--cluster", MTLS_CLUSTER])
                .arg("--client-certificate")
                .arg(write("client.pem", &self.pki.client.0))
                .arg("--client-key")
                .arg(write("client.key", &self.pki.client.1));
            self.dir.path().join("webhook-mtls.kubeconfig")
        } else {
            cmd.args(["--cluster", CLUSTER])
                .arg("--token-file")
                .arg(&self.token_file);
            self.dir.path().join("webhook.kubeconfig")
        };
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(&file, &out.stdout).unwrap();
        file
    }

    fn alerts(&self) -> Vec<Alert> {
        alerts(&self.alerts_file)
    }
}

/// The seed scenario: an apiserver whose webhook kubeconfig carries the token starts (its
/// start-up raises nothing), then the session gives exactly the rules it should, each alert
/// naming the token's cluster. Returns the apiserver, how many events it logged, the alerts.
async fn seed(k: &Kaudit, name: &str) -> (Apiserver, usize, Vec<Alert>) {
    let before = evaluated(k.telemetry).await as usize;
    let seen = k.alerts().len();
    let server = Apiserver::start(
        &k.dir.path().join(name),
        &request_response_policy(),
        &k.webhook_kubeconfig(false),
    );
    // Start-up: the apiserver bootstraps its RBAC policy as system:apiserver. Nothing to alert on.
    let startup = wait_for_webhook(&server, before, k.telemetry).await - before;
    assert!(startup > 100, "only {startup} start-up events");
    let quiet: Vec<Alert> = k.alerts().into_iter().skip(seen).collect();
    assert!(
        quiet.is_empty(),
        "the apiserver's start-up raised {:?}",
        by_rule(&quiet)
    );

    session(&server);
    let total = wait_for_webhook(&server, before, k.telemetry).await - before;
    let want: BTreeSet<&str> = EXPECTED.iter().copied().collect();
    // Alerts are written after their batch is counted as evaluated (through a broker, a
    // loaded machine can take a while): wait for the expected set, then hold it to exactly that.
    let deadline = Instant::now() + Duration::from_secs(15);
    let got = loop {
        let got: Vec<Alert> = k.alerts().into_iter().skip(seen).collect();
        let rules: BTreeSet<&str> = got.iter().map(|a| a.rule.as_str()).collect();
        if rules == want || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!(
        "{name}: {startup} start-up events, {} in the session; alerts: {:#?}",
        total - startup,
        by_rule(&got)
    );
    for a in &got {
        assert_eq!(a.cluster, CLUSTER, "{a:?}");
    }
    let rules: BTreeSet<&str> = got.iter().map(|a| a.rule.as_str()).collect();
    assert_eq!(rules, want, "{:#?}", by_rule(&got));
    (server, total, got)
}

/// The `[bus]` section for `broker` (publishes give up after 2 s: the outage test waits for 503s).
fn bus_section(broker: &Broker) -> String {
    match broker.kind {
        Kind::Nats => format!(
            "[bus]\nkind = \"nats\"\n[bus.nats]\nurl = \"{}\"\npublish_timeout_secs = 2\n",
            broker.url()
        ),
        Kind::Kafka => format!("[bus]\nkind = \"kafka\"\n[bus.kafka]\nbrokers = \"{}\"\n", broker.url()),
    }
}

/// The seed scenario with a real broker between the shim and the detector.
async fn seed_through(kind: Kind) {
    let _serial = SERIAL.lock().await;
    let broker = Broker::start(kind);
    let k = Kaudit::start(&bus_section(&broker)).await;
    let (server, _, _) = seed(&k, "apiserver").await;
    drop(server);
    k.running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_through_nats() {
    seed_through(Kind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scenario_through_kafka() {
    seed_through(Kind::Kafka).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_apiservers_post_over_tls_with_a_token_or_a_certificate_and_their_startup_is_quiet() {
    let _serial = SERIAL.lock().await;
    let k = Kaudit::start("").await;
    let telemetry = k.telemetry;
    let (server, _, got) = seed(&k, "apiserver").await;

    // The file backend's log, scanned, gives the same alerts as the webhook.
    let scan = Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["scan", "--no-dedup", "--cluster", CLUSTER])
        .arg(server.audit_log())
        .output()
        .unwrap();
    assert!(scan.status.success(), "{}", String::from_utf8_lossy(&scan.stderr));
    let scanned: Vec<Alert> = String::from_utf8(scan.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids = |alerts: &[Alert]| -> BTreeSet<(String, String)> {
        alerts.iter().map(|a| (a.rule.clone(), a.audit_id.clone())).collect()
    };
    assert_eq!(ids(&scanned), ids(&got));

    // `kaudit tail` following the same file (a process of its own, on its own memory bus) gives
    // the webhook's alerts too, including those of a change made while it follows.
    let tail_alerts = k.dir.path().join("tail-alerts.jsonl");
    let tail_pipeline = k.dir.path().join("tail.toml");
    std::fs::write(
        &tail_pipeline,
        format!(
            "[detector]\nrules = [\"{}\"]\ndedup = {{ enabled = false }}\n[[outputs]]\nkind = \"file\"\npath = \"{}\"\n",
            common::repo().join("rules").display(),
            tail_alerts.display()
        ),
    )
    .unwrap();
    let mut tail = common::brokers::Proc::spawn(
        "tail",
        &[
            "tail",
            &server.audit_log().display().to_string(),
            "--pipeline",
            &tail_pipeline.display().to_string(),
            "--cluster",
            CLUSTER,
            "--checkpoint",
            &k.dir.path().join("tail.checkpoint").display().to_string(),
        ],
        &[],
        k.dir.path(),
    );
    let late = server.kubectl(
        &[
            "create",
            "clusterrolebinding",
            "late-admin",
            "--clusterrole=cluster-admin",
            "--user=late",
        ],
        None,
    );
    assert!(late.status.success(), "{}", String::from_utf8_lossy(&late.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let webhook: Vec<Alert> = k.alerts().into_iter().filter(|a| a.cluster == CLUSTER).collect();
        let followed = alerts(&tail_alerts);
        let late_seen = webhook.iter().any(|a| a.output.contains("late-admin"));
        if late_seen && ids(&followed) == ids(&webhook) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tail: {:#?}\nwebhook: {:#?}\n{}",
            by_rule(&followed),
            by_rule(&webhook),
            tail.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tail.terminate();
    drop(server);

    // A second apiserver authenticates with a client certificate (its CN names the cluster).
    let baseline = k.alerts().len();
    let evaluated_before = evaluated(telemetry).await as usize;
    let second = Apiserver::start(
        &k.dir.path().join("apiserver-mtls"),
        &request_response_policy(),
        &k.webhook_kubeconfig(true),
    );
    let before = wait_for_webhook(&second, evaluated_before, telemetry).await;
    assert_eq!(k.alerts().len(), baseline, "the second start-up raised alerts");
    let created = second.kubectl(
        &[
            "create",
            "clusterrolebinding",
            "intruder-admin",
            "--clusterrole=cluster-admin",
            "--user=intruder",
        ],
        None,
    );
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let new: Vec<Alert> = k.alerts().into_iter().skip(baseline).collect();
        if new.iter().any(|a| a.rule == "Binding to cluster-admin") {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "{:#?} ({before} events)\n{}",
            by_rule(&new),
            second.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(new.iter().all(|a| a.cluster == MTLS_CLUSTER), "{new:#?}");
    drop(second);

    // `kaudit policy check` against what a third apiserver, with the Kubernetes documentation's
    // example policy (most resources at Metadata), really sends: a rule it says can never
    // fire does not fire in the session, and every rule of the session it finds nothing wrong
    // with does.
    let policy_file = common::shared_dir().join("policy/k8s-website-audit-policy.yaml");
    let policy = kaudit::tools::policy::Policy::parse(&std::fs::read_to_string(&policy_file).unwrap()).unwrap();
    let set = kaudit::engine::RuleSet::load(&[common::repo().join("rules")], kaudit::engine::Matching::All).unwrap();
    let checks = kaudit::tools::policy::check(&policy, &set);
    let never: BTreeSet<&str> = checks
        .iter()
        .filter(|c| c.never_fires)
        .map(|c| c.rule.as_str())
        .collect();
    let flagged: BTreeSet<&str> = checks.iter().map(|c| c.rule.as_str()).collect();
    // RBAC objects are logged at Metadata: no body, no roleRef. ConfigMaps are logged with their
    // body in kube-system only: flagged, but not "never".
    assert!(never.contains("Binding to cluster-admin"), "{never:?}");
    assert!(
        flagged.contains("ConfigMap with private credentials") && !never.contains("ConfigMap with private credentials")
    );
    let before = evaluated(telemetry).await as usize;
    let seen = k.alerts().len();
    let third = Apiserver::start(
        &k.dir.path().join("apiserver-policy"),
        &policy_file,
        &k.webhook_kubeconfig(false),
    );
    session(&third);
    wait_for_webhook(&third, before, telemetry).await;
    let fired: Vec<Alert> = k.alerts().into_iter().skip(seen).collect();
    let fired_rules: BTreeSet<&str> = fired.iter().map(|a| a.rule.as_str()).collect();
    let wrongly_never: Vec<&&str> = never.intersection(&fired_rules).collect();
    assert!(
        wrongly_never.is_empty(),
        "policy check said these could never fire: {wrongly_never:?}"
    );
    let unflagged_missing: Vec<&&str> = EXPECTED
        .iter()
        .filter(|r| !flagged.contains(**r) && !fired_rules.contains(**r))
        .collect();
    assert!(
        unflagged_missing.is_empty(),
        "policy check found nothing wrong with these, yet they did not fire: {unflagged_missing:?}\n{:#?}",
        by_rule(&fired)
    );
    eprintln!(
        "with the documentation's policy: {} rules can never fire, {} more flagged; the session fired {:?}",
        never.len(),
        flagged.len() - never.len(),
        by_rule(&fired)
    );
    drop(third);
    k.running.shutdown().await.unwrap();
}

/// The rules the session above must fire, and no other.
const EXPECTED: &[&str] = &[
    // kubectl create namespace shop (a person). "Namespace outside the allowed set" stays quiet:
    // this site lists no namespaces (`requires: [allowed_namespaces]`).
    "Namespace created or deleted",
    // The pod: privileged, hostPID and hostNetwork, hostPath /.
    "Privileged container",
    "Host namespace shared",
    "Sensitive host path mounted",
    // The ConfigMap holding AWS keys (its data is in the event at RequestResponse level).
    "ConfigMap created or deleted",
    "ConfigMap with private credentials",
    // The binding of cluster-admin to `attacker`.
    "ClusterRoleBinding created or deleted",
    "Binding to cluster-admin",
    // kubectl exec: a WebSocket `get` (kubectl >= 1.30) and the SPDY `create`.
    "Exec or attach into pod",
    // `admin` is in system:masters: each of its writes.
    "Full administrative access used",
    // `dev` lists secrets: 403.
    "Secret read refused",
];

const PRIVILEGED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: priv-pod, namespace: shop}
spec:
  hostPID: true
  hostNetwork: true
  containers:
  - name: c
    image: busybox:1.36
    command: ["sleep", "3600"]
    securityContext: {privileged: true}
    volumeMounts: [{name: host, mountPath: /host}]
  volumes: [{name: host, hostPath: {path: /}}]
"#;

/// Every event stored on the NATS events stream, by (audit ID, stage): how many times each.
async fn stored_events(url: &str) -> BTreeMap<(String, String), usize> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("KAUDIT_EVENTS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut seen = BTreeMap::new();
    for seq in state.first_sequence..=state.last_sequence {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_slice(&message.payload).unwrap();
        let key = (
            event["auditID"].as_str().unwrap().to_string(),
            event["stage"].as_str().unwrap().to_string(),
        );
        *seen.entry(key).or_default() += 1;
    }
    seen
}

/// The retry contract with the real client: the broker dies while kubectl acts; the shim answers
/// 503 with Retry-After (never 500, after which the apiserver drops a batch on its fifth try), the
/// apiserver retries, and once the broker is back every event of its own file log is on the
/// events stream, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_no_event_of_a_real_apiserver() {
    let _serial = SERIAL.lock().await;
    let mut broker = Broker::start(Kind::Nats);
    let k = Kaudit::start(&bus_section(&broker)).await;
    let server = Apiserver::start(
        &k.dir.path().join("apiserver"),
        &request_response_policy(),
        &k.webhook_kubeconfig(false),
    );

    broker.kill();
    for i in 0..5 {
        let out = server.kubectl(
            &[
                "create",
                "configmap",
                &format!("during-outage-{i}"),
                "--from-literal=k=v",
            ],
            None,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let logged_during: Vec<serde_json::Value> = common::json_lines(&server.audit_log());
    broker.restart();

    let want: BTreeSet<(String, String)> = logged_during
        .iter()
        .map(|e| {
            (
                e["auditID"].as_str().unwrap().to_string(),
                e["stage"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let stored = loop {
        let stored = stored_events(&broker.url()).await;
        let missing = want.iter().filter(|k| !stored.contains_key(*k)).count();
        if missing == 0 {
            break stored;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} events the apiserver logged are not on the events stream\n{}",
            want.len(),
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let repeated: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "stored more than once: {repeated:?}");
    let log = std::fs::read_to_string(server.state.join("logs/kube-apiserver.log")).unwrap_or_default();
    assert!(
        !log.contains("Error in audit plugin 'webhook'"),
        "the apiserver dropped a batch:\n{}",
        server.log()
    );
    // The outage was seen: batches were refused with 503 (the shim has no other answer for a
    // broker that is gone; a 500 would have been counted under another reason).
    let metrics = reqwest::get(format!("http://{}/metrics", k.telemetry))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let refusals = |reason: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("kaudit_requests_rejected_total") && l.contains(&format!("reason=\"{reason}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let rejected: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("kaudit_requests_rejected_total"))
        .collect();
    assert!(
        refusals("unavailable") >= 1.0,
        "no 503 during the outage: {rejected:#?}"
    );
    assert_eq!(
        rejected.len(),
        1,
        "refusals for other reasons than the outage: {rejected:#?}"
    );
    eprintln!(
        "{} events logged by the apiserver, all on the stream once; {} batches refused with 503 on the way",
        want.len(),
        refusals("unavailable")
    );
    drop(server);
    k.running.shutdown().await.unwrap();
}

//! The shim as an apiserver sees it: HTTP/2 over TLS, batches of 400, concurrent batches, bearer tokens
//! of two clusters, malformed items, gzip bombs, overload. In process, on the memory bus.

mod common;

use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles, Running};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

const TOKEN_A: &str = "cluster-a-token-0123456789";
const TOKEN_B: &str = "cluster-b-token-9876543210";

/// The shim's certificates: tokens travel over TLS, as an apiserver sends them.
fn pki() -> &'static common::pki::Pki {
    static PKI: std::sync::OnceLock<common::pki::Pki> = std::sync::OnceLock::new();
    PKI.get_or_init(common::pki::pki)
}

fn config(dir: &Path, capacity: usize) -> PipelineConfig {
    std::fs::write(dir.join("a.token"), TOKEN_A).unwrap();
    std::fs::write(dir.join("b.token"), TOKEN_B).unwrap();
    let toml = format!(
        r#"
[shim]
listen = "127.0.0.1:0"
max_body_bytes = 8388608
max_decompressed_bytes = 16777216
clusters = [
  {{ name = "cluster-a", token_file = "{a}" }},
  {{ name = "cluster-b", token_file = "{b}" }},
]
tls = {tls}
[telemetry]
listen = "127.0.0.1:0"
[bus]
memory = {{ capacity = {capacity}, dead_letter_file = "{dead}" }}
[detector]
rules = ["{rules}"]
# These tests count every match through the shim; dedup has its own test below.
dedup = {{ enabled = false }}
[[outputs]]
kind = "file"
path = "{out}"
"#,
        tls = pki().shim_tls(dir, false),
        a = dir.join("a.token").display(),
        b = dir.join("b.token").display(),
        rules = common::repo().join("rules").display(),
        out = dir.join("alerts.jsonl").display(),
        dead = dir.join("dead.jsonl").display(),
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml).unwrap();
    PipelineConfig::load_with_env(Some(&file), Some(Default::default())).unwrap()
}

/// The dead letters `kaudit run` wrote to its dead-letter file.
fn read_dead(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("dead.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A client of the telemetry listener (plain HTTP).
fn client() -> reqwest::Client {
    reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
}

/// A client of the shim: TLS with the test CA, HTTP/2 by ALPN, as an apiserver.
fn shim_client() -> reqwest::Client {
    pki().client(None)
}

/// The shim's URL for `path` (its certificate is for `localhost`).
fn shim_url(running: &Running, path: &str) -> String {
    format!("https://localhost:{}{path}", running.addr.unwrap().port())
}

/// An exec event (fires "Exec or attach into pod") or a read (fires nothing).
fn event(i: usize, exec: bool) -> Value {
    let mut e = json!({
        "level": "Metadata", "auditID": format!("id-{i}"), "stage": "ResponseStarted",
        "verb": "get", "user": {"username": "alice"}, "requestURI": "/api/v1/namespaces/default/pods/web/exec",
        "objectRef": {"resource": "pods", "namespace": "default", "name": "web", "subresource": "exec"},
        "responseStatus": {"code": 101}, "stageTimestamp": "2026-11-20T10:00:00.000000Z"
    });
    if !exec {
        e["stage"] = json!("ResponseComplete");
        e["objectRef"] = json!({"resource": "configmaps", "namespace": "default"});
    }
    e
}

fn event_list(items: Vec<Value>) -> Value {
    json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items})
}

/// Posts an EventList of `items` over h2 in a task of its own (for concurrent batches).
fn spawn_post(
    running: &Running,
    path: &str,
    token: &'static str,
    items: Vec<Value>,
) -> tokio::task::JoinHandle<reqwest::Response> {
    let url = shim_url(running, path);
    let body = serde_json::to_vec(&event_list(items)).unwrap();
    tokio::spawn(async move {
        shim_client()
            .post(url)
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap()
    })
}

/// Posts an EventList of `items` as cluster A; the answer must be 200; returns its body.
async fn post_items(running: &Running, items: Vec<Value>) -> Value {
    let body = serde_json::to_vec(&event_list(items)).unwrap();
    let r = post(running, "/k8s_audit", Some(TOKEN_A), body, false).await;
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

fn read_alerts(dir: &Path) -> Vec<Value> {
    common::json_lines(&dir.join("alerts.jsonl"))
}

async fn wait_for(mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn post(running: &Running, path: &str, token: Option<&str>, body: Vec<u8>, gzip: bool) -> reqwest::Response {
    let mut req = shim_client()
        .post(shim_url(running, path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if gzip {
        req = req.header("content-encoding", "gzip");
    }
    req.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_h2_batches_of_two_clusters_keep_their_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 100_000), Roles::All).await.unwrap();
    let mut posts = Vec::new();
    for batch in 0..10 {
        let (token, path) = if batch % 2 == 0 {
            (TOKEN_A, "/k8s_audit")
        } else {
            (TOKEN_B, "/k8s_audit/cluster-b")
        };
        let items: Vec<Value> = (0..400).map(|i| event(batch * 400 + i, i % 4 == 0)).collect();
        let post = spawn_post(&running, path, token, items);
        posts.push(tokio::spawn(async move {
            let r = post.await.unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            (r.status(), r.json::<Value>().await.unwrap())
        }));
    }
    for p in posts {
        let (status, body) = p.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["accepted"], 400);
    }
    // 10 batches × 100 exec events.
    wait_for(|| read_alerts(dir.path()).len() >= 1000).await;
    let alerts = read_alerts(dir.path());
    assert_eq!(alerts.len(), 1000);
    for a in &alerts {
        let batch = a["audit_id"].as_str().unwrap()[3..].parse::<usize>().unwrap() / 400;
        let want = if batch % 2 == 0 { "cluster-a" } else { "cluster-b" };
        assert_eq!(a["cluster"], want, "{a}");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_decide_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let body = || serde_json::to_vec(&event_list(vec![event(1, true)])).unwrap();
    assert_eq!(post(&running, "/k8s_audit", None, body(), false).await.status(), 401);
    assert_eq!(
        post(&running, "/k8s_audit", Some("wrong-token-000000000"), body(), false)
            .await
            .status(),
        401
    );
    // Cluster A's token cannot post as cluster B.
    assert_eq!(
        post(&running, "/k8s_audit/cluster-b", Some(TOKEN_A), body(), false)
            .await
            .status(),
        403
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(read_alerts(dir.path()).is_empty(), "nothing refused may be published");
    assert!(read_dead(dir.path()).is_empty(), "nothing refused may be dead-lettered");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_items_are_dead_lettered_and_the_rest_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let items = vec![event(1, true), json!({"kind": 0}), event(2, true), json!("text")];
    assert_eq!(
        post_items(&running, items).await,
        json!({"accepted": 2, "dead_lettered": 2})
    );
    let dead = read_dead(dir.path());
    assert_eq!(dead.len(), 2);
    let first = &dead[0];
    assert_eq!(first["cluster"], "cluster-a");
    assert_eq!(first["position"], "item 1");
    assert_eq!(first["item"], r#"{"kind":0}"#);
    wait_for(|| read_alerts(dir.path()).len() >= 2).await;
    assert_eq!(read_alerts(dir.path()).len(), 2);

    // Not JSON at all: 400.
    let r = post(&running, "/k8s_audit", Some(TOKEN_A), b"hello".to_vec(), false).await;
    assert_eq!(r.status(), 400);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bodies_are_read_and_bombs_refused() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let gz = |bytes: &[u8]| {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    };
    let ok = gz(&serde_json::to_vec(&event_list(vec![event(1, true)])).unwrap());
    assert_eq!(
        post(&running, "/k8s_audit", Some(TOKEN_A), ok, true).await.status(),
        200
    );
    // 64 MiB of spaces compress to ~64 KiB: far past the 16 MiB decompressed cap.
    let mut bomb = b"[".to_vec();
    bomb.extend(std::iter::repeat_n(b' ', 64 << 20));
    let bomb = gz(&bomb);
    assert!(bomb.len() < 8 << 20);
    assert_eq!(
        post(&running, "/k8s_audit", Some(TOKEN_A), bomb, true).await.status(),
        413
    );
    // A body past max_body_bytes is refused before it is read whole.
    let big = vec![b' '; 9 << 20];
    assert_eq!(
        post(&running, "/k8s_audit", Some(TOKEN_A), big, false).await.status(),
        413
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_answers_retry_after_and_every_accepted_event_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    // A bus of 1000: concurrent batches of 400 outrun the detector.
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let stats = running.detector_stats.clone().unwrap();
    let mut posts = Vec::new();
    for batch in 0..40 {
        let items: Vec<Value> = (0..400).map(|i| event(batch * 400 + i, i % 10 == 0)).collect();
        let post = spawn_post(&running, "/k8s_audit", TOKEN_A, items);
        posts.push(tokio::spawn(async move {
            let r = post.await.unwrap();
            let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry_after)
        }));
    }
    let (mut accepted, mut refused) = (0u64, 0u64);
    for p in posts {
        match p.await.unwrap() {
            (200, _) => accepted += 400,
            (429 | 503, Some(secs)) => {
                assert_eq!(secs, "1");
                refused += 1;
            }
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(refused > 0, "the bus never pushed back");
    assert!(accepted > 0);
    wait_for(|| stats.events.load(Ordering::Relaxed) >= accepted).await;
    running.shutdown().await.unwrap();
    // Every event that got a 2xx was evaluated; nothing else was.
    assert_eq!(stats.events.load(Ordering::Relaxed), accepted);
    assert_eq!(read_alerts(dir.path()).len() as u64, accepted / 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let metrics = || async {
        client()
            .get(format!("http://{}/metrics", running.telemetry_addr.unwrap()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let value = |text: &str, series: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let before = metrics().await;
    post(
        &running,
        "/k8s_audit",
        Some(TOKEN_B),
        serde_json::to_vec(&event_list(vec![event(1, true)])).unwrap(),
        false,
    )
    .await;
    post(&running, "/k8s_audit", None, b"{}".to_vec(), false).await;
    wait_for(|| read_alerts(dir.path()).len() == 1).await;
    let after = metrics().await;
    assert!(after.contains("# TYPE kaudit_events_received_total counter"), "{after}");
    let received = r#"kaudit_events_received_total{cluster="cluster-b"}"#;
    assert_eq!(value(&after, received) - value(&before, received), 1.0, "{after}");
    let rejected = r#"kaudit_requests_rejected_total{reason="unauthenticated"}"#;
    assert!(value(&after, rejected) - value(&before, rejected) >= 1.0, "{after}");
    let alerts = r#"kaudit_alerts_total{priority="Notice",rule="Exec or attach into pod"}"#;
    assert!(value(&after, alerts) >= 1.0, "{after}");
    assert!(after.contains("kaudit_publish_seconds_bucket"), "{after}");
    let health = shim_client().get(shim_url(&running, "/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // The ingest port tells nothing about clusters or rules: telemetry has its own listener.
    for path in ["/metrics", "/readyz"] {
        let on_ingest = shim_client().get(shim_url(&running, path)).send().await.unwrap();
        assert_eq!(on_ingest.status(), 404, "{path}");
        let on_telemetry = client()
            .get(format!("http://{}{path}", running.telemetry_addr.unwrap()))
            .send()
            .await
            .unwrap();
        assert_eq!(on_telemetry.status(), 200, "{path}");
    }
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_events_are_truncated_like_the_apiserver_does_or_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000), Roles::All).await.unwrap();
    let mut big = event(1, true);
    big["requestObject"] = json!({"junk": "x".repeat(2 << 20)});
    let mut hopeless = event(2, true);
    hopeless["userAgent"] = json!("y".repeat(2 << 20));
    let items = vec![big, hopeless, event(3, true)];
    assert_eq!(
        post_items(&running, items).await,
        json!({"accepted": 2, "dead_lettered": 1})
    );
    let record = read_dead(dir.path()).remove(0);
    assert_eq!(record["position"], "item 1");
    assert!(
        record["reason"].as_str().unwrap().contains("max_event_bytes"),
        "{record}"
    );
    wait_for(|| read_alerts(dir.path()).len() >= 2).await;
    let ids: Vec<String> = read_alerts(dir.path())
        .iter()
        .map(|a| a["audit_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["id-1", "id-3"]);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_detector_applies_dedup_policies() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), 1000);
    let rules = dir.path().join("dedup.yaml");
    std::fs::write(
        &rules,
        "- rule: Exec deduped\n  desc: d\n  condition: objectRef.subresource == 'exec'\n  output: exec {user.username}\n  priority: notice\n  dedup: { window: 10m }\n",
    )
    .unwrap();
    config.detector.rules = vec![rules];
    config.detector.dedup.enabled = true;
    let running = start(config, Roles::All).await.unwrap();
    // Five execs by one user in one batch: one alert, four repeats held back and counted, then
    // summarized when the detector stops.
    assert_eq!(
        post_items(&running, (0..5).map(|i| event(i, true)).collect()).await["accepted"],
        5
    );
    let want = r#"kaudit_alerts_suppressed_total{rule="Exec deduped"} 4"#;
    let mut text = String::new();
    for _ in 0..200 {
        text = client()
            .get(format!("http://{}/metrics", running.telemetry_addr.unwrap()))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    running.shutdown().await.unwrap();
    assert!(text.contains(want), "{text}");
    let alerts = read_alerts(dir.path());
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(
        (&alerts[0]["dedup"]["count"], &alerts[1]["dedup"]["suppressed"]),
        (&Value::from(1), &Value::from(4))
    );
}

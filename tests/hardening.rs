//! What an adversarial round found at the shim, each reproduced: bodies of unauthenticated
//! clients, dead letters filling the in-process bus, batches larger than the bus, invalid UTF-8,
//! crafted cluster names, inflation inside envelopes, idle connections and too many of them.
//! In process, on the memory bus, over loopback.

mod common;

use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles, Running};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "cluster-a-token-0123456789";

/// A pipeline with one token cluster (`cluster-a`, allowed to forward for `eks-*`), extra TOML
/// appended to `[shim]`.
fn config(dir: &Path, capacity: usize, shim: &str) -> PipelineConfig {
    std::fs::write(dir.join("a.token"), TOKEN).unwrap();
    let toml = format!(
        r#"
[shim]
listen = "127.0.0.1:0"
max_body_bytes = 67108864
max_decompressed_bytes = 16777216
clusters = [ {{ name = "cluster-a", token_file = "{a}", forwards = ["eks-*"] }} ]
{shim}
[bus]
memory = {{ capacity = {capacity}, dead_letter_file = "{dead}" }}
[detector]
rules = ["{rules}"]
[[outputs]]
kind = "file"
path = "{out}"
"#,
        a = dir.join("a.token").display(),
        rules = common::repo().join("rules").display(),
        out = dir.join("alerts.jsonl").display(),
        dead = dir.join("dead.jsonl").display(),
    );
    let file = dir.join("pipeline.toml");
    std::fs::write(&file, toml).unwrap();
    PipelineConfig::load_with_env(Some(&file), Some(Default::default())).unwrap()
}

fn event(i: usize) -> Value {
    json!({
        "level": "Metadata", "auditID": format!("id-{i}"), "stage": "ResponseComplete",
        "verb": "get", "user": {"username": "alice"}, "requestURI": "/api/v1/namespaces/default/configmaps",
        "objectRef": {"resource": "configmaps", "namespace": "default"},
        "responseStatus": {"code": 200}, "stageTimestamp": "2026-11-20T10:00:00.000000Z"
    })
}

fn event_list(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})).unwrap()
}

async fn post(running: &Running, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("http://{}{path}", running.addr.unwrap()))
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn dead_letters(dir: &Path) -> Vec<Value> {
    common::json_lines(&dir.join("dead.jsonl"))
}

/// Peak resident memory of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_bodies_are_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000, ""), Roles::All).await.unwrap();
    // One 62 MB body, shared by every request (a clone of `Bytes` copies nothing).
    let body = bytes::Bytes::from(vec![b'x'; 62 * 1024 * 1024]);
    let before = peak_rss();
    for http2 in [false, true] {
        let client = if http2 {
            reqwest::Client::builder().http2_prior_knowledge().build().unwrap()
        } else {
            reqwest::Client::new()
        };
        let posts: Vec<_> = (0..20)
            .map(|_| {
                let request = client
                    .post(format!("http://{}/k8s_audit", running.addr.unwrap()))
                    .body(body.clone())
                    .send();
                tokio::spawn(request)
            })
            .collect();
        for p in posts {
            // A 401 before the body is read, or the connection closed under the upload.
            if let Ok(r) = p.await.unwrap() {
                assert_eq!(r.status(), 401);
            }
        }
    }
    // 40 uploads of 62 MB: the shim buffered none of them (before, ~1 GB over HTTP/1.1 and
    // 2.4 GB over HTTP/2).
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 200 * 1024 * 1024, "peak RSS grew by {} MB", grown >> 20);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_body_bytes_are_capped_across_requests() {
    let dir = tempfile::tempdir().unwrap();
    // Room for one 6 MB body at a time.
    let running = start(config(dir.path(), 100_000, "max_buffered_bytes = 8388608"), Roles::All)
        .await
        .unwrap();
    let item = json!({"padding": "p".repeat(6 * 1024 * 1024)});
    let body = event_list(vec![item]);
    let (status, _) = post(&running, "/k8s_audit", Some(TOKEN), body.clone()).await;
    assert_eq!(status, 200, "one fits");
    let posts: Vec<_> = (0..6)
        .map(|_| {
            let url = format!("http://{}/k8s_audit", running.addr.unwrap());
            let body = body.clone();
            tokio::spawn(async move {
                match reqwest::Client::new()
                    .post(url)
                    .bearer_auth(TOKEN)
                    .body(body)
                    .send()
                    .await
                {
                    Ok(r) => (r.status().as_u16(), r.headers().get("retry-after").is_some()),
                    // Refused before its body was read: the upload broke off, which a client
                    // retries like any failed request.
                    Err(e) if e.is_request() => (0, true),
                    Err(e) => panic!("{e}"),
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for p in posts {
        answers.push(p.await.unwrap());
    }
    // Those that found the budget spent were told to come back; none was lost silently.
    assert!(
        answers
            .iter()
            .all(|(s, retry)| *s == 200 || (matches!(s, 503 | 0) && *retry)),
        "{answers:?}"
    );
    assert!(
        answers.iter().any(|(s, _)| *s != 200),
        "six 6 MB bodies at once cannot all fit 8 MB: {answers:?}"
    );
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_never_fill_the_in_process_bus() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 5, ""), Roles::All).await.unwrap();
    // Four times the bus capacity in dead letters, each batch with good events beside them.
    for i in 0..20 {
        let (status, body) = post(
            &running,
            "/k8s_audit",
            Some(TOKEN),
            event_list(vec![event(i), json!({"kind": "Pod"})]),
        )
        .await;
        assert_eq!(status, 200, "batch {i}: {body}");
        assert_eq!(body, json!({"accepted": 1, "dead_lettered": 1}));
    }
    assert_eq!(dead_letters(dir.path()).len(), 20);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_the_bus_is_413_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 10, ""), Roles::All).await.unwrap();
    let (status, body) = post(
        &running,
        "/k8s_audit",
        Some(TOKEN),
        event_list((0..11).map(event).collect()),
    )
    .await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("batch-max-size"), "{body}");
    let (status, _) = post(
        &running,
        "/k8s_audit",
        Some(TOKEN),
        event_list((0..10).map(event).collect()),
    )
    .await;
    assert_eq!(status, 200);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_with_invalid_utf8_is_dead_lettered_alone() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000, ""), Roles::All).await.unwrap();
    let mut bad = event(2).to_string().into_bytes();
    let at = bad.windows(5).position(|w| w == b"alice").unwrap();
    bad[at] = 0xff;
    let mut body = br#"{"kind":"EventList","items":["#.to_vec();
    body.extend(event(1).to_string().as_bytes());
    body.push(b',');
    body.extend(&bad);
    body.push(b',');
    body.extend(event(3).to_string().as_bytes());
    body.extend(b"]}");
    let (status, answer) = post(&running, "/k8s_audit", Some(TOKEN), body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer, json!({"accepted": 2, "dead_lettered": 1}));
    let dead = dead_letters(dir.path());
    assert_eq!(dead[0]["position"], "item 1");
    assert!(dead[0]["reason"].as_str().unwrap().contains("not UTF-8"), "{}", dead[0]);
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crafted_cluster_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 1000, "allow_unauthenticated = true"), Roles::All)
        .await
        .unwrap();
    let one = event_list(vec![event(1)]);
    for path in ["/k8s_audit/prod%00x", "/k8s_audit/-lead", "/k8s_audit/a.b"] {
        let (status, body) = post(&running, path, None, one.clone()).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let long = format!("/k8s_audit/{}", "c".repeat(101));
    assert_eq!(post(&running, &long, None, one.clone()).await.0, 400);
    assert_eq!(post(&running, "/k8s_audit/prod_us-1", None, one.clone()).await.0, 200);
    // A forwarder's envelope naming a crafted cluster: that record is dead-lettered.
    let record = |group: &str| json!({"logGroup": group, "logEvents": [{"message": event(7).to_string()}]});
    let (status, body) = post(
        &running,
        "/ingest/eks",
        Some(TOKEN),
        serde_json::to_vec(&json!([
            record("/aws/eks/eks-/../prod-us/cluster"),
            record("/aws/eks/eks-1/cluster")
        ]))
        .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"accepted": 1, "dead_lettered": 1})));
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_share_one_inflation_budget_per_request() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let running = start(config(dir.path(), 100_000, ""), Roles::All).await.unwrap();
    // One awslogs record inflating to ~1 MB (a payload of padding), gzip-compressed to ~1 KB.
    let payload = json!({"logGroup": "/aws/eks/eks-1/cluster", "logEvents": [], "pad": "z".repeat(1 << 20)});
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(payload.to_string().as_bytes()).unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let records = |n: usize| -> Vec<u8> {
        serde_json::to_vec(&(0..n).map(|_| json!({"awslogs": {"data": data}})).collect::<Vec<_>>()).unwrap()
    };
    // Ten fit the 16 MiB the request may inflate to; forty do not, however small each one is.
    assert_eq!(post(&running, "/ingest/eks", Some(TOKEN), records(10)).await.0, 200);
    let (status, body) = post(&running, "/ingest/eks", Some(TOKEN), records(40)).await;
    assert_eq!(status, 413, "{body}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_and_connections_capped() {
    let dir = tempfile::tempdir().unwrap();
    let running = start(
        config(dir.path(), 1000, "idle_timeout_secs = 1\nmax_connections = 3"),
        Roles::All,
    )
    .await
    .unwrap();
    let addr = running.addr.unwrap();
    let closed_within = |mut s: std::net::TcpStream, secs: u64| {
        s.set_read_timeout(Some(Duration::from_secs(secs))).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    };
    // Three idle connections take every slot; a fourth is closed at once.
    let idle: Vec<_> = (0..3).map(|_| std::net::TcpStream::connect(addr).unwrap()).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fourth = std::net::TcpStream::connect(addr).unwrap();
    assert!(
        tokio::task::spawn_blocking(move || closed_within(fourth, 1))
            .await
            .unwrap(),
        "a connection over max_connections must be closed"
    );
    // The idle ones are closed after the idle timeout, which frees their slots.
    for s in idle {
        assert!(
            tokio::task::spawn_blocking(move || closed_within(s, 10)).await.unwrap(),
            "an idle connection must be closed"
        );
    }
    // A keep-alive connection is closed once its request is answered and it stays idle.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    s.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(tokio::task::spawn_blocking(move || closed_within(s, 10)).await.unwrap());
    running.shutdown().await.unwrap();
}

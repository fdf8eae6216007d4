//! Managed clusters' envelopes (EKS CloudWatch Logs, GKE Cloud Audit Logs, AKS diagnostic
//! records): the same actions as the native fixture — a privileged pod, an exec into it, a list —
//! give the same alerts (rule, audit ID, user, namespace, object) with the cluster the envelope
//! names, through `kaudit scan` and end to end through the shim's `/ingest/{format}`.

mod common;

use kaudit::alert::Alert;
use kaudit::audit::Format;
use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    common::repo().join("integration/fixtures/managed").join(name)
}

fn scan(file: &Path, format: Format) -> (kaudit::tools::scan::Summary, Vec<Alert>) {
    let options = kaudit::tools::scan::Options {
        format,
        dedup: kaudit::dedup::DedupConfig::off(),
        ..Default::default()
    };
    common::scan(&[file.to_path_buf()], &options)
}

/// The two detections the fixtures are about (other rules may fire too, and some read what GKE
/// does not log: groups, the exec command).
const COMPARED: [&str; 2] = ["Exec or attach into pod", "Privileged container"];

/// What must agree between a native alert and its envelope's: rule, audit ID, and the output
/// fields (user, namespace, object, images, verb) except the cluster. The request URI is compared
/// without its query: GKE's LogEntry has the path only (so an exec's command is not known there).
fn essence(alert: &Value) -> (String, String, Value) {
    let mut fields = alert["output_fields"].clone();
    let fields_map = fields.as_object_mut().unwrap();
    fields_map.remove("cluster");
    if let Some(Value::String(uri)) = fields_map.get_mut("requestURI") {
        uri.truncate(uri.find('?').unwrap_or(uri.len()));
    }
    (
        alert["rule"].as_str().unwrap().to_string(),
        alert["audit_id"].as_str().unwrap().to_string(),
        fields,
    )
}

fn native_essence() -> Vec<(String, String, Value)> {
    let (_, alerts) = scan(&fixture("native.jsonl"), Format::Native);
    let mut out: Vec<_> = alerts
        .iter()
        .filter(|a| COMPARED.contains(&a.rule.as_str()))
        .map(|a| essence(&serde_json::to_value(a).unwrap()))
        .collect();
    out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    out
}

#[test]
fn every_envelope_gives_the_native_alerts_with_its_cluster() {
    let native = native_essence();
    assert_eq!(native.len(), 2, "{native:?}");
    assert_eq!(native[0].0, "Exec or attach into pod");
    assert_eq!(native[1].0, "Privileged container");
    assert_eq!(native[1].2["user.username"], "alice@example.com");
    assert_eq!(native[1].2["objectRef.namespace"], "shop");
    for (file, cluster) in [
        ("eks.json", "prod-eks"),
        ("aks.json", "prod-aks"),
        ("gke.jsonl", "prod-gke"),
        ("gke-pubsub-push.jsonl", "prod-gke"),
    ] {
        for format in [Format::Auto, file[..3].parse().unwrap()] {
            let (summary, alerts) = scan(&fixture(file), format);
            assert_eq!((summary.events, summary.malformed), (3, 0), "{file} as {format}");
            let mut got: Vec<_> = alerts
                .iter()
                .filter(|a| COMPARED.contains(&a.rule.as_str()))
                .map(|a| essence(&serde_json::to_value(a).unwrap()))
                .collect();
            got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
            assert_eq!(got, native, "{file} as {format}");
            assert!(alerts.iter().all(|a| a.cluster == cluster), "{file}: {alerts:?}");
        }
    }
}

#[test]
fn an_explicit_format_refuses_other_shapes_saying_why() {
    let (summary, alerts) = scan(&fixture("eks.json"), Format::Gke);
    assert_eq!((summary.events, summary.malformed, alerts.len()), (0, 1, 0));
    assert!(
        summary.malformed_examples[0].contains("protoPayload"),
        "{:?}",
        summary.malformed_examples
    );
    let (summary, _) = scan(&fixture("gke.jsonl"), Format::Native);
    assert_eq!((summary.events, summary.malformed), (0, 3));
}

const FORWARDER: &str = "forwarder-token-0123456789";
const CLUSTER_A: &str = "cluster-a-token-0123456789";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_posted_to_the_shim_alert_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("fwd.token"), FORWARDER).unwrap();
    std::fs::write(dir.path().join("a.token"), CLUSTER_A).unwrap();
    let toml = format!(
        r#"
[shim]
listen = "127.0.0.1:0"
clusters = [
  {{ name = "cloud-forwarder", token_file = "{fwd}", forwards = ["prod-*"] }},
  {{ name = "cluster-a", token_file = "{a}" }},
]
[detector]
rules = ["{rules}"]
dedup = {{ enabled = false }}
[[outputs]]
kind = "file"
path = "{out}"
"#,
        fwd = dir.path().join("fwd.token").display(),
        a = dir.path().join("a.token").display(),
        rules = common::repo().join("rules").display(),
        out = dir.path().join("alerts.jsonl").display(),
    );
    std::fs::write(dir.path().join("pipeline.toml"), toml).unwrap();
    let config =
        PipelineConfig::load_with_env(Some(&dir.path().join("pipeline.toml")), Some(Default::default())).unwrap();
    let running = start(config, Roles::All).await.unwrap();
    let base = format!("http://{}", running.addr.unwrap());
    let client = reqwest::Client::new();
    let post = |path: String, token: &'static str, body: Vec<u8>| {
        let request = client.post(format!("{base}{path}")).bearer_auth(token).body(body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap_or_default())
        }
    };
    let read = |name: &str| std::fs::read(fixture(name)).unwrap();

    // A forwarder: EKS's subscription batch, AKS's Event Hub records (auto-detected), GKE's
    // entries one Pub/Sub push each.
    assert_eq!(post("/ingest/eks".into(), FORWARDER, read("eks.json")).await.0, 200);
    assert_eq!(post("/ingest/auto".into(), FORWARDER, read("aks.json")).await.0, 200);
    // Pub/Sub push cannot set a header: the token rides in the URL.
    for line in String::from_utf8(read("gke-pubsub-push.jsonl")).unwrap().lines() {
        let url = format!("{base}/ingest/gke?token={FORWARDER}");
        let response = client.post(url).body(line.to_string()).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!((status, &body["accepted"]), (200, &Value::from(1)), "{body}");
    }
    let wrong = client
        .post(format!("{base}/ingest/gke?token=nope-nope-nope-nope"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    // A cluster's own credential cannot speak for another cluster: dead-lettered, not relabelled.
    let (status, body) = post("/ingest/eks".into(), CLUSTER_A, read("eks.json")).await;
    assert_eq!(
        (status, &body["accepted"], &body["dead_lettered"]),
        (200, &Value::from(0), &Value::from(3))
    );
    assert_eq!(post("/ingest/nope".into(), FORWARDER, read("eks.json")).await.0, 404);
    // A cluster in the path must be the credential's, as on /k8s_audit/{cluster}.
    assert_eq!(
        post("/ingest/eks/cluster-a".into(), FORWARDER, read("eks.json"))
            .await
            .0,
        403
    );

    let alerts_file = dir.path().join("alerts.jsonl");
    let read_alerts = || common::json_lines(&alerts_file);
    for _ in 0..200 {
        if read_alerts()
            .iter()
            .filter(|a| COMPARED.iter().any(|r| a["rule"] == *r))
            .count()
            >= 6
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    running.shutdown().await.unwrap();
    let alerts: Vec<Value> = read_alerts()
        .into_iter()
        .filter(|a| COMPARED.iter().any(|r| a["rule"] == *r))
        .collect();
    let native = native_essence();
    for cluster in ["prod-eks", "prod-aks", "prod-gke"] {
        let mut got: Vec<_> = alerts.iter().filter(|a| a["cluster"] == cluster).map(essence).collect();
        got.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(got, native, "{cluster}: {alerts:?}");
    }
    assert_eq!(alerts.len(), 6, "{alerts:?}");
}

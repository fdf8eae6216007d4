//! TLS with HTTP/2 (ALPN), and mTLS: a client certificate's CN names the cluster.

mod common;

use common::pki::pki;
use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_client_certificate_names_the_cluster_over_h2() {
    let dir = tempfile::tempdir().unwrap();
    let p = pki();
    let toml = format!(
        r#"
[shim]
listen = "127.0.0.1:0"
clusters = [{{ name = "prod", client_cert_cn = "apiserver-prod" }}]
tls = {}
[detector]
rules = ["{}"]
dedup = {{ enabled = false }}
[[outputs]]
kind = "file"
path = "{}"
"#,
        p.shim_tls(dir.path(), true),
        common::repo().join("rules").display(),
        dir.path().join("alerts.jsonl").display(),
    );
    let file = dir.path().join("p.toml");
    std::fs::write(&file, toml).unwrap();
    let config = PipelineConfig::load_with_env(Some(&file), Some(Default::default())).unwrap();
    let running = start(config, Roles::All).await.unwrap();
    let url = format!("https://localhost:{}/k8s_audit", running.addr.unwrap().port());
    let client_with = |identity: Option<&(String, String)>| p.client(identity);
    let body = std::fs::read(common::repo().join("rules/fixtures/exec_or_attach_into_pod/positive.jsonl")).unwrap();

    let r = client_with(Some(&p.client))
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    // The path cannot claim another cluster than the certificate's.
    let r = client_with(Some(&p.client))
        .post(format!("{url}/staging"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // No certificate, no token: 401. A certificate from another CA fails the handshake.
    let r = client_with(None).post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(client_with(Some(&p.stranger))
        .post(&url)
        .body(body.clone())
        .send()
        .await
        .is_err());

    // The exec rule's alerts (other rules may fire on the same events too).
    let alerts_file = dir.path().join("alerts.jsonl");
    let exec_alerts = || -> Vec<String> {
        std::fs::read_to_string(&alerts_file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(r#""rule":"Exec or attach into pod""#))
            .map(str::to_string)
            .collect()
    };
    for _ in 0..100 {
        if exec_alerts().len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let alerts = exec_alerts();
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    let all = std::fs::read_to_string(&alerts_file).unwrap();
    assert!(all.lines().all(|l| l.contains(r#""cluster":"prod""#)), "{all}");
    running.shutdown().await.unwrap();
}

//! Hot reload of rule files: under a steady load, a rule file that adds a rule makes it fire, a
//! broken one is refused with its location while the previous set keeps running, and no event
//! is dropped or evaluated twice; SIGHUP reloads a running `kaudit run` without a restart.

mod common;

use common::brokers::{free_port, wait_for_port, Proc};
use kaudit::config::PipelineConfig;
use kaudit::pipeline::{start, Roles};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PROBE_RULE: &str = "- rule: Lease patched by prober
  desc: A test rule added while the detector runs.
  condition: objectRef.resource == 'leases' && verb == 'patch'
  output: lease patched (user={user.username})
  priority: notice
  dedup: off
";

const BROKEN_RULE: &str = "- rule: Lease patched by prober
  desc: The same rule, broken.
  condition: objectRef.resource == 'leases' && verb ==
  output: lease patched (user={user.username})
  priority: notice
";

fn exec(n: usize) -> Value {
    json!({
        "level": "Metadata", "auditID": format!("exec-{n}"), "stage": "ResponseStarted", "verb": "create",
        "user": {"username": "alice"}, "requestURI": "/api/v1/namespaces/default/pods/web/exec",
        "objectRef": {"resource": "pods", "namespace": "default", "name": "web", "subresource": "exec"},
        "responseStatus": {"code": 101}, "stageTimestamp": "2026-11-20T10:00:00.000000Z"
    })
}

fn lease_patch(n: usize) -> Value {
    json!({
        "level": "Metadata", "auditID": format!("lease-{n}"), "stage": "ResponseComplete", "verb": "patch",
        "user": {"username": "prober"}, "requestURI": "/apis/coordination.k8s.io/v1/namespaces/default/leases/l",
        "objectRef": {"resource": "leases", "namespace": "default", "name": "l", "apiGroup": "coordination.k8s.io"},
        "responseStatus": {"code": 200}, "stageTimestamp": "2026-11-20T10:00:00.000000Z"
    })
}

fn rules_dir(dir: &Path) -> std::path::PathBuf {
    let rules = dir.join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::copy(
        common::repo().join("rules/kaudit_rules.yaml"),
        rules.join("kaudit_rules.yaml"),
    )
    .unwrap();
    rules
}

fn read_alerts(file: &Path) -> Vec<Value> {
    common::json_lines(file)
}

fn count(alerts: &[Value], rule: &str) -> usize {
    alerts.iter().filter(|a| a["rule"] == rule).count()
}

async fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_adds_a_rule_refuses_a_broken_file_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(dir.path());
    let alerts_file = dir.path().join("alerts.jsonl");
    let toml = format!(
        "[shim]\nlisten = \"127.0.0.1:0\"\nallow_unauthenticated = true\n[detector]\nrules = [\"{}\"]\nreload_poll_secs = 1\ndedup = {{ enabled = false }}\n[[outputs]]\nkind = \"file\"\npath = \"{}\"\n",
        rules.display(),
        alerts_file.display()
    );
    std::fs::write(dir.path().join("pipeline.toml"), toml).unwrap();
    let config =
        PipelineConfig::load_with_env(Some(&dir.path().join("pipeline.toml")), Some(Default::default())).unwrap();
    let running = start(config, Roles::All).await.unwrap();
    let url = format!("http://{}/k8s_audit/c1", running.addr.unwrap());
    let reloader = running.rules.clone().unwrap();
    let stats = running.detector_stats.clone().unwrap();

    // The load: batches of 20 execs and 20 lease patches, back to back, until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (execs, leases) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, execs, leases) = (stop.clone(), execs.clone(), leases.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let items: Vec<Value> = (n..n + 20).flat_map(|i| [exec(i), lease_patch(i)]).collect();
                let body = json!({"kind": "EventList", "items": items});
                let r = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                execs.fetch_add(20, Ordering::Relaxed);
                leases.fetch_add(20, Ordering::Relaxed);
                n += 20;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count(&read_alerts(&alerts_file), "Lease patched by prober"), 0);

    // A file that adds a rule: it starts firing.
    std::fs::write(rules.join("zz_probe.yaml"), PROBE_RULE).unwrap();
    wait_until("the new rule to fire", Duration::from_secs(15), || {
        count(&read_alerts(&alerts_file), "Lease patched by prober") > 0
    })
    .await;
    assert!(reloader.last_error().is_none());

    // A broken file: refused with its location; the previous set keeps running.
    std::fs::write(rules.join("zz_probe.yaml"), BROKEN_RULE).unwrap();
    wait_until("the broken file to be refused", Duration::from_secs(15), || {
        reloader.last_error().is_some()
    })
    .await;
    let error = reloader.last_error().unwrap();
    assert!(error.contains("zz_probe.yaml:3:"), "{error}");
    assert!(error.contains("Lease patched by prober"), "{error}");
    let metrics = kaudit::telemetry::metrics().render();
    assert!(metrics.contains("kaudit_rules_reload_failed 1"), "{metrics}");
    let probes_then = count(&read_alerts(&alerts_file), "Lease patched by prober");
    wait_until("the previous set to go on firing", Duration::from_secs(15), || {
        count(&read_alerts(&alerts_file), "Lease patched by prober") > probes_then + 40
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let posted = execs.load(Ordering::Relaxed) + leases.load(Ordering::Relaxed);
    wait_until("the detector to evaluate every event", Duration::from_secs(15), || {
        stats.events.load(Ordering::Relaxed) as usize >= posted
    })
    .await;
    running.shutdown().await.unwrap();

    // Nothing dropped, nothing twice: one exec alert per exec posted, all distinct.
    assert_eq!(stats.events.load(Ordering::Relaxed) as usize, posted);
    let alerts = read_alerts(&alerts_file);
    assert_eq!(count(&alerts, "Exec or attach into pod"), execs.load(Ordering::Relaxed));
    let ids: HashSet<&str> = alerts.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), alerts.len(), "an alert appeared twice");
    let probes = count(&alerts, "Lease patched by prober");
    assert!(probes > 40 && probes < leases.load(Ordering::Relaxed), "{probes}");
}

#[test]
fn sighup_reloads_a_running_process() {
    let dir = tempfile::tempdir().unwrap();
    let rules = rules_dir(dir.path());
    let alerts_file = dir.path().join("alerts.jsonl");
    let port = free_port();
    let config = dir.path().join("pipeline.toml");
    std::fs::write(
        &config,
        format!(
            "[shim]\nlisten = \"127.0.0.1:{port}\"\nallow_unauthenticated = true\n[detector]\nrules = [\"{}\"]\nreload_poll_secs = 0\n[[outputs]]\nkind = \"file\"\npath = \"{}\"\n",
            rules.display(),
            alerts_file.display()
        ),
    )
    .unwrap();
    let mut run = Proc::spawn("run", &["run", "--pipeline", config.to_str().unwrap()], &[], dir.path());
    assert!(wait_for_port(port, Duration::from_secs(30)), "{}", run.log_text());
    let pid = run.child.id();
    let post = |n: usize| {
        let body = json!({"kind": "EventList", "items": [lease_patch(n)]}).to_string();
        let status = std::process::Command::new("curl")
            .args([
                "-sf",
                "-o",
                "/dev/null",
                "-H",
                "content-type: application/json",
                "--data-binary",
                &body,
            ])
            .arg(format!("http://127.0.0.1:{port}/k8s_audit"))
            .status()
            .unwrap();
        assert!(status.success());
    };
    std::fs::write(rules.join("zz_probe.yaml"), PROBE_RULE).unwrap();
    // Without polling, a changed file alone changes nothing.
    post(1);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(count(&read_alerts(&alerts_file), "Lease patched by prober"), 0);
    std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut n = 2;
    while count(&read_alerts(&alerts_file), "Lease patched by prober") == 0 {
        assert!(Instant::now() < deadline, "{}", run.log_text());
        post(n);
        n += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        run.child.try_wait().unwrap().is_none(),
        "the process is still the same one"
    );
    assert!(run.log_text().contains("SIGHUP: reloading rules"), "{}", run.log_text());
    run.terminate();
}

/// Dedup and window state are keyed by rule name and key values: after a reload (a new rule
/// set, another rule added before it), a rule that still exists keeps its rate limit.
#[test]
fn dedup_state_survives_a_reload_for_rules_that_remain() {
    use kaudit::audit::Event;
    use kaudit::dedup::{DedupConfig, Deduper, Verdict};
    use kaudit::engine::{Matching, RuleSet};
    let rule =
        "- rule: Exec\n  desc: d\n  condition: objectRef.subresource == 'exec'\n  output: exec\n  priority: notice\n";
    let before = RuleSet::from_text("r.yaml", rule, Matching::All).unwrap();
    let after = RuleSet::from_text(
        "r.yaml",
        &format!("- rule: New\n  desc: d\n  condition: verb == 'create'\n  output: new\n  priority: notice\n{rule}"),
        Matching::All,
    )
    .unwrap();
    let deduper = Deduper::new(&DedupConfig::default()).unwrap();
    let verdict = |set: &RuleSet, n: usize| {
        let event = Event::from_json(exec(n).to_string()).unwrap();
        let detect = kaudit::detect::Detect::new(set, &deduper);
        let source = kaudit::detect::Source {
            cluster: "c1",
            ..Default::default()
        };
        let verdicts = detect.event(&event, &source, &mut Vec::new());
        verdicts
            .into_iter()
            .find(|(rule, _)| set.rule(*rule).name == "Exec")
            .unwrap()
            .1
    };
    assert_eq!(verdict(&before, 1), Verdict::Passed);
    assert_eq!(verdict(&after, 2), Verdict::Suppressed, "the key's window carried over");
}

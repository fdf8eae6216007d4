//! `deploy/`: the kustomize overlays render, a real kube-apiserver accepts every object of a kind
//! it serves (`kubectl apply --dry-run=server`), and the rendered objects agree with kaudit: the
//! roles and flags exist, the pipeline file parses, every file it names is mounted (or in the
//! image), ports and probes point where kaudit listens, the local rules load after ours.
//! And the Grafana dashboard and the PrometheusRule ask only for metrics a running kaudit exports,
//! by labels it sets.

mod common;

use common::apiserver::{request_response_policy, Apiserver};
use common::brokers::{free_port, wait_for_port, Broker, Kind, Proc};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn kaudit(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

/// `kubectl kustomize` of an overlay, as objects.
fn render(overlay: &str) -> (String, Vec<Value>) {
    let out = Command::new("kubectl")
        .args(["kustomize", &format!("deploy/overlays/{overlay}")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("kubectl is installed (integration/test.sh installs kubernetes-client)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let objects: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    (text, objects)
}

/// `objects` as one `v1` List, which kubectl applies item by item.
fn to_list(objects: &[&Value]) -> String {
    serde_json::json!({ "apiVersion": "v1", "kind": "List", "items": objects }).to_string()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(name)))
        .unwrap_or_else(|| panic!("no {kind} {name} in {objects:#?}"))
}

/// What the image's last stage `COPY`s into its working directory (`COPY rules rules`): paths
/// a pipeline may name without a mount.
fn image_paths() -> Vec<PathBuf> {
    let dockerfile = std::fs::read_to_string(common::repo().join("Dockerfile")).unwrap();
    let mut workdir = PathBuf::from("/");
    let mut paths = Vec::new();
    for line in dockerfile.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            // Only the last stage is the image.
            ["FROM", ..] => {
                workdir = PathBuf::from("/");
                paths.clear();
            }
            ["WORKDIR", dir] => workdir = PathBuf::from(dir),
            ["COPY", from, to] if !from.starts_with("--") => paths.push(workdir.join(to)),
            _ => {}
        }
    }
    paths
}

/// Checks one rendered Deployment's container against kaudit: a role that exists, a pipeline
/// file that parses, every file it names reachable, ports where kaudit listens.
fn check_container(objects: &[Value], deployment: &str, role: &str) {
    let d = find(objects, "Deployment", deployment);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(c["image"], "kaudit:0.1.0", "{deployment}: the image kustomize sets");
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], role, "{deployment}");
    // The role and its flags exist: `kaudit ROLE --help` names them.
    let help = kaudit(&[role, "--help"]);
    assert!(help.status.success(), "kaudit {role} --help");
    let help = String::from_utf8_lossy(&help.stdout).to_string();
    for flag in args.iter().filter(|a| a.starts_with("--")) {
        assert!(help.contains(flag), "kaudit {role} has no {flag}:\n{help}");
    }
    let pipeline_path = args[args.iter().position(|a| *a == "--pipeline").unwrap() + 1];

    // Mounts: path → (volume kind, object name).
    let volumes: BTreeMap<&str, (&str, &str)> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap();
            if let Some(cm) = v.get("configMap") {
                (name, ("configMap", cm["name"].as_str().unwrap()))
            } else {
                (name, ("secret", v["secret"]["secretName"].as_str().unwrap()))
            }
        })
        .collect();
    let mounts: Vec<(PathBuf, (&str, &str))> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                PathBuf::from(m["mountPath"].as_str().unwrap()),
                volumes[m["name"].as_str().unwrap()],
            )
        })
        .collect();
    let mounted = |file: &Path| {
        mounts
            .iter()
            .find(|(at, _)| file.starts_with(at))
            .map(|(at, v)| (at.clone(), *v))
    };

    // The pipeline file comes from a rendered ConfigMap, and kaudit reads it.
    let (at, (kind, name)) = mounted(Path::new(pipeline_path)).expect("the pipeline file is mounted");
    assert_eq!(kind, "configMap");
    let key = Path::new(pipeline_path).strip_prefix(&at).unwrap().to_str().unwrap();
    let text = find(objects, "ConfigMap", name)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {name} has no {key}"))
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pipeline.toml");
    std::fs::write(&file, &text).unwrap();
    let config = kaudit::config::PipelineConfig::load(Some(&file)).unwrap_or_else(|e| panic!("{deployment}: {e:#}"));

    // Every file the role reads is mounted from the object that should hold it, or in the image.
    let image = image_paths();
    let reachable = |path: &str, want: Option<(&str, &str)>| {
        let path = Path::new(path);
        match mounted(path) {
            Some((_, volume)) => {
                if let Some(want) = want {
                    assert_eq!(
                        volume,
                        want,
                        "{deployment}: {} comes from the wrong volume",
                        path.display()
                    );
                }
            }
            None => assert!(
                image.iter().any(|p| path.starts_with(p)),
                "{deployment}: {} is neither mounted nor in the image ({image:?})",
                path.display()
            ),
        }
    };
    let port = |listen: &str| listen.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    let ports: BTreeMap<&str, i64> = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        ports["metrics"],
        port(config.telemetry.listen.as_deref().unwrap()),
        "{deployment}: metrics port"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{deployment}: {probe}");
    }
    match role {
        "shim" => {
            assert_eq!(ports["ingest"], port(&config.shim.listen), "{deployment}: ingest port");
            let tls = config.shim.tls.as_ref().expect("the shim serves TLS in a cluster");
            reachable(tls.cert_file.to_str().unwrap(), Some(("secret", "kaudit-shim-tls")));
            reachable(tls.key_file.to_str().unwrap(), Some(("secret", "kaudit-shim-tls")));
            assert!(!config.shim.clusters.is_empty() && !config.shim.allow_unauthenticated);
            for cluster in &config.shim.clusters {
                let token = cluster.token_file.as_ref().expect("token clusters");
                reachable(token.to_str().unwrap(), Some(("secret", "kaudit-cluster-tokens")));
            }
        }
        "detect" => {
            for rules in &config.detector.rules {
                reachable(rules.to_str().unwrap(), None);
            }
            let local = config.detector.rules.iter().find(|r| r.starts_with("/etc")).unwrap();
            assert_eq!(mounted(local).unwrap().1, ("configMap", "kaudit-rules"));
            // The local rules load after ours: lint them together.
            let cm = find(objects, "ConfigMap", "kaudit-rules");
            let local_dir = dir.path().join("local");
            std::fs::create_dir(&local_dir).unwrap();
            for (key, value) in cm["data"].as_object().unwrap() {
                std::fs::write(local_dir.join(key), value.as_str().unwrap()).unwrap();
            }
            let lint = kaudit(&["rules", "lint", "rules", local_dir.to_str().unwrap()]);
            assert!(lint.status.success(), "{}", String::from_utf8_lossy(&lint.stdout));
        }
        _ => unreachable!(),
    }

    // Services and NetworkPolicies name ports the pods have; selectors match the pods.
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    let selects = |selector: &Value| {
        selector
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| labels[k.as_str()] == *v)
    };
    assert!(selects(&d["spec"]["selector"]["matchLabels"]));
    for o in objects {
        let (ports_of, selector) = match o["kind"].as_str().unwrap() {
            "Service" => (
                o["spec"]["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["targetPort"].clone())
                    .collect::<Vec<_>>(),
                &o["spec"]["selector"],
            ),
            "NetworkPolicy" => (
                o["spec"]["ingress"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|i| i["ports"].as_array().unwrap().iter().map(|p| p["port"].clone()))
                    .collect(),
                &o["spec"]["podSelector"]["matchLabels"],
            ),
            "PodDisruptionBudget" => (Vec::new(), &o["spec"]["selector"]["matchLabels"]),
            _ => continue,
        };
        if !selects(selector) {
            continue;
        }
        for p in ports_of {
            let p = p.as_str().unwrap();
            assert!(
                ports.contains_key(p),
                "{} {} names port {p}, which {deployment} lacks",
                o["kind"],
                o["metadata"]["name"]
            );
        }
    }
}

/// A webhook kubeconfig for an apiserver whose audit events nobody here reads.
fn unread_webhook(dir: &Path) -> PathBuf {
    let file = dir.join("webhook.kubeconfig");
    std::fs::write(
        &file,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: k\n  cluster:\n    server: http://127.0.0.1:{}/k8s_audit\n\
             contexts:\n- name: k\n  context:\n    cluster: k\n    user: k\ncurrent-context: k\nusers:\n- name: k\n  user: {{}}\n",
            free_port()
        ),
    )
    .unwrap();
    file
}

#[test]
fn the_overlays_apply_to_a_real_apiserver_and_agree_with_kaudit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Apiserver::start(
        &dir.path().join("kapi"),
        &request_response_policy(),
        &unread_webhook(dir.path()),
    );
    let served = server.kubectl(&["api-versions"], None);
    assert!(served.status.success(), "{}", String::from_utf8_lossy(&served.stderr));
    let served: BTreeSet<String> = String::from_utf8_lossy(&served.stdout)
        .lines()
        .map(String::from)
        .collect();
    // A server-side dry run needs the namespace to exist.
    let ns = server.kubectl(&["create", "namespace", "kaudit"], None);
    assert!(ns.status.success(), "{}", String::from_utf8_lossy(&ns.stderr));

    for overlay in ["nats", "kafka"] {
        let (_, objects) = render(overlay);
        let (kept, skipped): (Vec<&Value>, Vec<&Value>) = objects
            .iter()
            .filter(|o| o["kind"] != "Namespace")
            .partition(|o| served.contains(o["apiVersion"].as_str().unwrap()));
        // v1.20 predates policy/v1 (1.21), and the Prometheus Operator's kinds are CRDs: nothing else
        // may be left out.
        let skipped_kinds: BTreeSet<(String, String)> = skipped
            .iter()
            .map(|o| {
                (
                    o["apiVersion"].as_str().unwrap().to_string(),
                    o["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: BTreeSet<(String, String)> = [
            ("monitoring.coreos.com/v1", "PrometheusRule"),
            ("monitoring.coreos.com/v1", "ServiceMonitor"),
            ("policy/v1", "PodDisruptionBudget"),
        ]
        .into_iter()
        .map(|(a, k)| (a.to_string(), k.to_string()))
        .collect();
        assert_eq!(
            skipped_kinds, expected,
            "{overlay}: only CRD kinds and kinds newer than v1.20 skipped"
        );
        // The PodDisruptionBudgets' spec is the same in policy/v1beta1, which this server validates.
        let pdbs: Vec<Value> = skipped
            .iter()
            .filter(|o| o["kind"] == "PodDisruptionBudget")
            .map(|o| {
                let mut o = (*o).clone();
                o["apiVersion"] = "policy/v1beta1".into();
                o
            })
            .collect();
        let mut apply: Vec<&Value> = kept.clone();
        apply.extend(pdbs.iter());
        let out = server.kubectl(
            &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
            Some(&to_list(&apply)),
        );
        assert!(
            out.status.success(),
            "{overlay}: the apiserver refused:\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        let accepted: Value = serde_json::from_slice(&out.stdout).unwrap();
        let accepted: Vec<Value> = match accepted["kind"].as_str() {
            Some("List") => accepted["items"].as_array().unwrap().clone(),
            _ => vec![accepted],
        };
        assert_eq!(accepted.len(), apply.len(), "{overlay}: every object accepted");
        // What the server made of them (defaults filled in) still agrees with kaudit.
        let mut checked = accepted.clone();
        checked.extend(skipped.iter().map(|o| (*o).clone()));
        check_container(&checked, "kaudit-shim", "shim");
        check_container(&checked, "kaudit-detector", "detect");
        let pipeline = find(&checked, "ConfigMap", "kaudit-pipeline")["data"]["pipeline.toml"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            pipeline.contains(&format!("kind = \"{overlay}\"")),
            "{overlay}: {pipeline}"
        );
    }
}

/// Metric names and label names in PromQL text.
fn promql_names(expr: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let metric = regex::Regex::new(r"\bkaudit_[a-z_]+\b").unwrap();
    let by = regex::Regex::new(r"\bby \(([^)]*)\)").unwrap();
    let matcher = regex::Regex::new(r"\{([^}]*)\}").unwrap();
    let label = regex::Regex::new(r"([a-z_]+)\s*(=~|!~|!=|=)").unwrap();
    let metrics = metric.find_iter(expr).map(|m| m.as_str().to_string()).collect();
    let mut labels: BTreeSet<String> = by
        .captures_iter(expr)
        .flat_map(|c| c[1].split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>())
        .collect();
    for m in matcher.captures_iter(expr) {
        labels.extend(label.captures_iter(&m[1]).map(|l| l[1].to_string()));
    }
    (metrics, labels)
}

/// Series names and their label names, from Prometheus text.
fn exported(text: &str, into: &mut BTreeMap<String, BTreeSet<String>>) {
    for line in text.lines().filter(|l| l.starts_with("kaudit_")) {
        let name = line.split(['{', ' ']).next().unwrap().to_string();
        let labels = into.entry(name).or_default();
        if let (Some(open), Some(close)) = (line.find('{'), line.rfind('}')) {
            for pair in line[open + 1..close].split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_string());
                }
            }
        }
    }
}

fn scrape(port: u16) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let r = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await.unwrap();
        r.text().await.unwrap()
    })
}

fn post(url: &str, body: String, token: Option<&str>) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut request = reqwest::Client::new().post(url).body(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.map(|r| r.status().as_u16()).unwrap_or(0)
    })
}

#[test]
fn the_dashboard_and_the_alerting_rules_ask_only_for_what_kaudit_exports() {
    // A pipeline on NATS (consumer lag is a broker's), fed over the shim and by `kaudit tail`,
    // made to do a bit of everything: alerts, dedup, a refusal, a dead letter, a truncation, a
    // reload.
    let nats = Broker::start(Kind::Nats);
    let dir = tempfile::tempdir().unwrap();
    let (shim, telemetry, tail_telemetry) = (free_port(), free_port(), free_port());
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "dashboard-test-token-0123456789").unwrap();
    let pipeline = |telemetry: u16| {
        format!(
            r#"
[shim]
listen = "127.0.0.1:{shim}"
max_event_bytes = 4096
[[shim.clusters]]
name = "dash"
token_file = "{}"
[bus]
kind = "nats"
[bus.nats]
url = "{}"
partitions = 2
[detector]
rules = ["rules"]
[detector.dedup]
default = {{ window = "1s", burst = 1 }}
[telemetry]
listen = "127.0.0.1:{telemetry}"
[[outputs]]
kind = "topic"
"#,
            token_file.display(),
            nats.url()
        )
    };
    let run_file = dir.path().join("run.toml");
    std::fs::write(&run_file, pipeline(telemetry)).unwrap();
    let tail_file = dir.path().join("tail.toml");
    std::fs::write(&tail_file, pipeline(tail_telemetry)).unwrap();
    let run = Proc::spawn(
        "run",
        &["run", "--pipeline", run_file.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert!(wait_for_port(shim, Duration::from_secs(60)), "{}", run.log_text());
    let fixture = common::repo().join("rules/fixtures/exec_or_attach_into_pod/positive.jsonl");
    let exec = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let url = format!("http://127.0.0.1:{shim}/k8s_audit");
    let token = Some("dashboard-test-token-0123456789");
    for _ in 0..3 {
        assert_eq!(post(&url, exec.clone(), token), 200);
    }
    assert_eq!(post(&url, exec.clone(), None), 401);
    let mut big: Value = serde_json::from_str(&exec).unwrap();
    big["requestObject"] = serde_json::json!({ "padding": "x".repeat(8000) });
    let batch = format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{big},{{"kind":"Event"}}]}}"#);
    assert_eq!(post(&url, batch, token), 200);
    let log = dir.path().join("audit.log");
    std::fs::write(&log, format!("{exec}\n")).unwrap();
    let tail = Proc::spawn(
        "tail",
        &[
            "tail",
            log.to_str().unwrap(),
            "--pipeline",
            tail_file.to_str().unwrap(),
            "--cluster",
            "dash",
        ],
        &[],
        dir.path(),
    );
    let _ = Command::new("kill")
        .args(["-HUP", &run.child.id().to_string()])
        .status();

    let mut series: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let wanted = [
        "kaudit_consumer_lag",
        "kaudit_rules_reloads_total",
        "kaudit_alerts_summarized_total",
        "kaudit_tail_lag_bytes",
        "kaudit_events_truncated_total",
        "kaudit_events_dead_lettered_total",
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        series.clear();
        exported(&scrape(telemetry), &mut series);
        if wait_for_port(tail_telemetry, Duration::from_millis(100)) {
            exported(&scrape(tail_telemetry), &mut series);
        }
        if wanted.iter().all(|w| series.contains_key(*w)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    for w in wanted {
        assert!(
            series.contains_key(w),
            "{w} not exported: {:?}\n{}\n{}",
            series.keys(),
            run.log_text(),
            tail.log_text()
        );
    }

    // Every query of the dashboard and of the PrometheusRule.
    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(common::repo().join("deploy/grafana/kaudit.json")).unwrap())
            .unwrap();
    let mut queries: Vec<(String, String)> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push((
                format!("panel {}", panel["title"]),
                target["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    assert!(queries.len() >= 15, "{queries:?}");
    let (_, objects) = render("nats");
    let rules = find(&objects, "PrometheusRule", "kaudit");
    for group in rules["spec"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            queries.push((
                format!("alert {}", rule["alert"]),
                rule["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    // Labels Prometheus adds, and the histogram's bucket label.
    let added: BTreeSet<&str> = ["job", "instance", "le"].into();
    // The shim's refusal reasons, as its code names them.
    let shim_code: String = std::fs::read_dir(common::repo().join("src/shim"))
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
        .collect();
    let reason = regex::Regex::new(r#"reason=~"([^"]*)""#).unwrap();
    for (what, expr) in &queries {
        let (metrics, labels) = promql_names(expr);
        assert!(!metrics.is_empty(), "{what} names no kaudit metric: {expr}");
        for m in &metrics {
            assert!(
                series.contains_key(m),
                "{what}: {m} is not a metric kaudit exports ({expr})"
            );
        }
        for l in labels.iter().filter(|l| !added.contains(l.as_str())) {
            assert!(
                metrics.iter().any(|m| series[m].contains(l)),
                "{what}: no metric of `{expr}` has the label {l}"
            );
        }
        if let Some(reasons) = reason.captures(expr) {
            for reason in reasons[1].split('|') {
                assert!(
                    shim_code.contains(&format!("\"{reason}\"")),
                    "{what}: the shim has no reason {reason}"
                );
            }
        }
    }
}

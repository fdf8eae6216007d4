//! OpenTelemetry export against a real OTLP receiver: Jaeger v2 (an OpenTelemetry Collector
//! distribution), which `integration/test.sh` builds from the Go module proxy into
//! `KAUDIT_JAEGER` (default `~/.cache/kaudit/jaeger-v1.76.0/bin/jaeger`). One event posted to the shim
//! must arrive as one trace, from the request to the alert's publishing and the commit, over
//! gRPC and over HTTP/protobuf; kaudit's metrics must arrive through the receiver's metrics
//! pipeline.

mod common;

use common::brokers::{free_port, wait_for_port, Proc};
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn jaeger_binary() -> PathBuf {
    let path = std::env::var_os("KAUDIT_JAEGER").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kaudit/jaeger-v1.76.0/bin/jaeger")
    });
    assert!(
        path.is_file(),
        "no Jaeger at {}: run ./integration/test.sh, which builds it from the Go module proxy",
        path.display()
    );
    path
}

/// Jaeger with OTLP receivers (gRPC and HTTP), in-memory trace storage, its query API, and a
/// metrics pipeline from OTLP to a Prometheus endpoint, all on free loopback ports.
struct Jaeger {
    child: Child,
    grpc: u16,
    http: u16,
    query: u16,
    metrics: u16,
    log: PathBuf,
}

impl Jaeger {
    fn start(dir: &Path) -> Jaeger {
        let (grpc, http, query, query_grpc, metrics, own) = (
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
            free_port(),
        );
        let config = format!(
            r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
    metrics:
      receivers: [otlp]
      exporters: [prometheus]
  telemetry:
    metrics:
      level: none
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {own}
extensions:
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 10000
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{query}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
  prometheus:
    endpoint: 127.0.0.1:{metrics}
"#
        );
        let file = dir.join("jaeger.yaml");
        std::fs::write(&file, config).unwrap();
        let log = dir.join("jaeger.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(jaeger_binary())
            .arg("--config")
            .arg(&file)
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("jaeger starts");
        let jaeger = Jaeger {
            child,
            grpc,
            http,
            query,
            metrics,
            log,
        };
        for port in [grpc, http, query, metrics] {
            assert!(
                wait_for_port(port, Duration::from_secs(60)),
                "Jaeger did not listen on {port}:\n{}",
                jaeger.log_text()
            );
        }
        jaeger
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The traces Jaeger holds for kaudit.
    fn traces(&self) -> Vec<Value> {
        let url = format!(
            "http://127.0.0.1:{}/api/traces?service=kaudit&limit=100&lookback=1h",
            self.query
        );
        match get(&url).and_then(|body| serde_json::from_str::<Value>(&body).ok()) {
            Some(v) => v["data"].as_array().cloned().unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// What the metrics pipeline exposes (metrics received over OTLP).
    fn received_metrics(&self) -> String {
        get(&format!("http://127.0.0.1:{}/metrics", self.metrics)).unwrap_or_default()
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn get(url: &str) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let response = reqwest::get(url).await.ok()?;
        response.text().await.ok()
    })
}

fn post(url: &str, body: String) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(url)
            .body(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}

/// A span of a Jaeger trace: its name, parent, tags, and the service that sent it.
struct Span {
    name: String,
    id: String,
    parent: Option<String>,
    tags: HashMap<String, Value>,
    service: String,
    process_tags: HashMap<String, Value>,
}

fn spans(trace: &Value) -> Vec<Span> {
    let tags = |list: &Value| -> HashMap<String, Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .map(|t| (t["key"].as_str().unwrap_or_default().to_string(), t["value"].clone()))
            .collect()
    };
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let process = &trace["processes"][s["processID"].as_str().unwrap()];
            Span {
                name: s["operationName"].as_str().unwrap().to_string(),
                id: s["spanID"].as_str().unwrap().to_string(),
                parent: s["references"]
                    .as_array()
                    .and_then(|r| r.iter().find(|r| r["refType"] == "CHILD_OF"))
                    .map(|r| r["spanID"].as_str().unwrap().to_string()),
                tags: tags(&s["tags"]),
                service: process["serviceName"].as_str().unwrap_or_default().to_string(),
                process_tags: tags(&process["tags"]),
            }
        })
        .collect()
}

/// Posts one exec event to `kaudit run` exporting as `otlp` (a `[telemetry.otlp]` table) and
/// `env` say, and checks what Jaeger received.
fn one_event_is_one_trace(otlp: impl Fn(&Jaeger) -> String, env: impl Fn(&Jaeger) -> Vec<(&'static str, String)>) {
    let dir = tempfile::tempdir().unwrap();
    let jaeger = Jaeger::start(dir.path());
    let shim = free_port();
    let pipeline = dir.path().join("pipeline.toml");
    std::fs::write(
        &pipeline,
        format!(
            r#"
[shim]
listen = "127.0.0.1:{shim}"
allow_unauthenticated = true
[bus]
kind = "memory"
[detector]
rules = ["rules"]
[[outputs]]
kind = "stdout"
[telemetry.otlp]
{}
"#,
            otlp(&jaeger)
        ),
    )
    .unwrap();
    let mut env = env(&jaeger);
    env.push(("OTEL_BSP_SCHEDULE_DELAY", "100".into()));
    env.push(("OTEL_METRIC_EXPORT_INTERVAL", "500".into()));
    let kaudit = Proc::spawn(
        "kaudit",
        &["run", "--pipeline", pipeline.to_str().unwrap()],
        &env,
        dir.path(),
    );
    assert!(wait_for_port(shim, Duration::from_secs(60)), "{}", kaudit.log_text());
    // An exec into a pod, with a shell: alerts.
    let fixture = common::repo().join("rules/fixtures/exec_or_attach_into_pod/positive.jsonl");
    let event = std::fs::read_to_string(fixture)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert_eq!(post(&format!("http://127.0.0.1:{shim}/k8s_audit"), event), 200);

    // The whole trace: the shim's four spans and the detector's four.
    let expected = [
        "shim request",
        "authenticate",
        "decode",
        "publish",
        "detect",
        "evaluate",
        "publish alerts",
        "commit",
    ];
    let deadline = Instant::now() + Duration::from_secs(30);
    let traces = loop {
        let traces = jaeger.traces();
        let complete = traces
            .iter()
            .any(|t| t["spans"].as_array().map_or(0, Vec::len) >= expected.len());
        if complete || Instant::now() > deadline {
            break traces;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        traces.len(),
        1,
        "one event, one trace: {traces:#?}\n{}\n{}",
        kaudit.log_text(),
        jaeger.log_text()
    );
    let spans = spans(&traces[0]);
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(names, want);
    let by_name = |name: &str| spans.iter().find(|s| s.name == name).unwrap();
    let parent_of = |name: &str| {
        let parent = by_name(name).parent.clone();
        parent.map(|p| spans.iter().find(|s| s.id == p).unwrap().name.clone())
    };
    assert_eq!(parent_of("shim request"), None);
    for child in ["authenticate", "decode", "publish"] {
        assert_eq!(parent_of(child).as_deref(), Some("shim request"), "{child}");
    }
    // Across the bus: the detector's span continues the shim's publish.
    assert_eq!(parent_of("detect").as_deref(), Some("publish"));
    for child in ["evaluate", "publish alerts", "commit"] {
        assert_eq!(parent_of(child).as_deref(), Some("detect"), "{child}");
    }
    let alerts = kaudit.log_text().lines().filter(|l| l.starts_with("{\"id\"")).count();
    assert!(alerts >= 1, "{}", kaudit.log_text());
    assert_eq!(by_name("publish alerts").tags["kaudit.alerts.event"], alerts as i64);
    assert_eq!(by_name("publish").tags["kaudit.events"], 1);
    assert_eq!(by_name("shim request").tags["http.response.status_code"], 200);
    assert_eq!(by_name("shim request").tags["kaudit.cluster"], "default");
    let resource = by_name("detect");
    assert_eq!(resource.service, "kaudit");
    assert_eq!(resource.process_tags["kaudit.role"], "run");

    // Metrics arrive over OTLP too, beside Prometheus scraping.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = jaeger.received_metrics();
        if text.contains("kaudit_events_evaluated") && text.contains("kaudit_alerts") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no kaudit metrics reached the receiver:\n{text}\n{}",
            kaudit.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_event_arrives_as_one_trace_over_grpc_from_the_standard_variables() {
    one_event_is_one_trace(
        |_| String::new(),
        |j| {
            vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{}", j.grpc)),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
                ("OTEL_TRACES_SAMPLER", "always_on".into()),
            ]
        },
    );
}

#[test]
fn one_event_arrives_as_one_trace_over_http_from_the_pipeline_config() {
    one_event_is_one_trace(
        |j| {
            format!(
                "endpoint = \"http://127.0.0.1:{}\"\nprotocol = \"http/protobuf\"\nsample_ratio = 1.0",
                j.http
            )
        },
        |_| Vec::new(),
    );
}

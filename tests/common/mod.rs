//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// A threshold window and a new-terms rule over exec sessions: state that must survive a
/// detector's `kill -9`.
pub const WINDOWED_RULES: &str = r#"
- rule: Many execs
  desc: ten execs by one user within ten minutes
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted'
  output: execs by {user.username}
  priority: warning
  threshold: { count: 10, window: 10m, key: [cluster, user.username] }
- rule: First exec by a user
  desc: a user's first exec
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted'
  output: first exec by {user.username}
  priority: notice
  new_terms: { field: user.username, key: [cluster], horizon: 30d, learn: 0s }
"#;

/// `../shared`, where the Falco reference data lives; `None` (with a printed reason) when absent.
pub fn shared() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("falco/traces").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (it holds the Falco reference data)",
            dir.display()
        );
        None
    }
}

/// `../shared`, for tests that cannot run without it (CI has it beside the repository).
pub fn shared_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        dir.is_dir(),
        "{} is absent: this test needs ../shared beside the repository",
        dir.display()
    );
    dir
}

/// `kaudit_events_evaluated_total` of the kaudit whose telemetry listens on `addr`
/// (`host:port`), all clusters together; `None` while it does not answer.
pub async fn evaluated(addr: &str) -> Option<u64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("kaudit_events_evaluated_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum(),
    )
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `kaudit scan` of `files` with the default rules and `options`: its summary and its alerts,
/// each read back from its JSON line as `T` (an `Alert`, or a `serde_json::Value` for the other
/// encodings).
pub fn scan<T: serde::de::DeserializeOwned>(
    files: &[PathBuf],
    options: &kaudit::tools::scan::Options,
) -> (kaudit::tools::scan::Summary, Vec<T>) {
    let rules = kaudit::engine::RuleSet::load(&[repo().join("rules")], kaudit::engine::Matching::All).unwrap();
    let mut out = Vec::new();
    let summary = kaudit::tools::scan::scan(files, &rules, options, &mut out).unwrap();
    let alerts = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (summary, alerts)
}

/// The JSON lines of an alert file written so far: complete lines only, as a file sink may be
/// in the middle of writing one.
pub fn json_lines(file: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    complete.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}
pub mod apiserver;
pub mod brokers;
pub mod pki;

/// kaudit's logs in this test process, at `KAUDIT_LOG` (`kaudit=info` by default), through the
/// test harness's capture: shown beside a failing test's message, hidden otherwise.
pub fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG").unwrap_or_else(|_| "kaudit=info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

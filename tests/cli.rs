//! The `kaudit` binary as a user runs it.

mod common;

use std::process::Command;

fn kaudit() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kaudit"));
    c.current_dir(common::repo());
    c
}

#[test]
fn lint_names_file_rule_and_position_of_a_syntax_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.yaml");
    let mut text = String::new();
    for (i, condition) in [
        "verb == 'get'",
        "verb == 'list'",
        "verb == 'create' && (objectRef.resource == 'pods'",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "- rule: R{i}\n  desc: d\n  condition: \"{condition}\"\n  output: o\n  priority: notice\n"
        ));
    }
    std::fs::write(&file, text).unwrap();
    let out = kaudit().args(["rules", "lint"]).arg(&file).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    let line = stdout.lines().next().unwrap();
    assert!(line.starts_with(&format!("{}:13:", file.display())), "{stdout}");
    assert!(line.contains("rule 'R2'") && line.contains("column"), "{stdout}");
}

#[test]
fn lint_accepts_the_default_rules() {
    let out = kaudit().args(["rules", "lint", "rules"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn lint_explains_what_the_engine_derived_for_a_rule() {
    let out = kaudit()
        .args(["rules", "lint", "rules", "--explain", "Privileged container"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("rule 'Privileged container'"), "{stdout}");
    assert!(stdout.contains("prefilter verb: create, patch, update"), "{stdout}");
    assert!(
        stdout.contains("reads: ") && stdout.contains("requestObject"),
        "{stdout}"
    );
    assert!(stdout.contains("evaluation: compiled"), "{stdout}");
}

/// Three exec events by one user in one namespace: the default dedup gives the first alert of
/// the exec rule and a summary of the two repeats; `--no-dedup` every match. (Two of the execs
/// run `sh`, which the suspicious-command rule also reports.)
#[test]
fn scan_reads_stdin_and_reports_on_stderr() {
    let exec_alerts = |stdout: &str| -> Vec<serde_json::Value> {
        stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|a| a["rule"] == "Exec or attach into pod")
            .collect()
    };
    let stdout = scan_stdin(&[]);
    let alerts = exec_alerts(&stdout);
    assert_eq!(alerts.len(), 2, "{stdout}");
    assert_eq!(alerts[1]["dedup"]["suppressed"], 2, "{stdout}");
    assert_eq!(exec_alerts(&scan_stdin(&["--no-dedup"])).len(), 3);
}

fn scan_stdin(flags: &[&str]) -> String {
    use std::io::Write;
    let mut child = kaudit()
        .args(["scan", "-", "--cluster", "edge"])
        .args(flags)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let fixture = std::fs::read(common::repo().join("rules/fixtures/exec_or_attach_into_pod/positive.jsonl")).unwrap();
    child.stdin.take().unwrap().write_all(&fixture).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(stdout.lines().all(|l| l.contains("\"cluster\":\"edge\"")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scanned 3 events (0 malformed)"), "{stderr}");
    stdout
}

/// README's first command: `kaudit run`, then an EventList posted with an HTTP client; the
/// privileged-pod alert is on stdout within a second, and SIGTERM ends the process cleanly.
#[test]
fn run_prints_the_alert_for_a_posted_event_list() {
    use std::io::{BufRead, BufReader, Read};
    use std::time::{Duration, Instant};
    let Some(shared) = common::shared() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = kaudit()
        .arg("run")
        .env("KAUDIT__SHIM__LISTEN", format!("127.0.0.1:{port}"))
        .env("KAUDIT__TELEMETRY__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("shim listening") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "kaudit run exited early");
    }
    let trace = std::fs::read_to_string(shared.join("falco/traces/create_nginx_pod_privileged.json")).unwrap();
    let body = format!(
        r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#,
        trace.trim()
    );
    let posted = Instant::now();
    let status = http_post(port, "/k8s_audit", &body);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let alert = rx
        .recv_timeout(Duration::from_secs(1))
        .expect("no alert within a second");
    assert!(posted.elapsed() < Duration::from_secs(1));
    let alert: serde_json::Value = serde_json::from_str(&alert).unwrap();
    assert_eq!(alert["rule"], "Privileged container");
    assert_eq!(alert["cluster"], "default");

    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("shutting down"), "{rest}");
}

/// A minimal HTTP/1.1 POST (the test needs no client library for this).
fn http_post(port: u16, path: &str, body: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn webhook_config_prints_a_kubeconfig() {
    let webhook_config = |server: &str| {
        kaudit()
            .args(["webhook-config", "--cluster", "prod", "--server", server])
            .args(["--token-file", "/etc/kaudit/token"])
            .output()
            .unwrap()
    };
    let out = webhook_config("https://kaudit.example:8765/");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(r#"server: "https://kaudit.example:8765/k8s_audit/prod""#),
        "{text}"
    );
    assert!(text.contains(r#"tokenFile: "/etc/kaudit/token""#), "{text}");
    assert!(text.contains("kind: Config"), "{text}");
    // A token for an http:// server would never be sent: refused, saying why.
    let out = webhook_config("http://kaudit.example:8765");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("only to an https:// server"), "{err}");
}

/// `scan --profile` lists the rules by the time they took, with how often each was evaluated
/// and matched: the exec fixture's rule is there, evaluated on all three events.
#[test]
fn scan_profile_lists_the_rules_by_time() {
    let out = kaudit()
        .args([
            "scan",
            "--profile",
            "rules/fixtures/exec_or_attach_into_pod/positive.jsonl",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let table = stderr.split("rule time: ").nth(1).unwrap_or_else(|| panic!("{stderr}"));
    let row = table
        .lines()
        .find(|l| l.ends_with("  Exec or attach into pod"))
        .unwrap_or_else(|| panic!("{stderr}"));
    let columns: Vec<&str> = row.split_whitespace().collect();
    // share, ms, evaluated, ns/eval, matched
    assert_eq!((columns[2], columns[4]), ("3", "3"), "{row}");
    assert!(columns[0].ends_with('%'), "{row}");
}

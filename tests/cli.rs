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
fn scan_reads_stdin_and_reports_on_stderr() {
    use std::io::Write;
    let mut child = kaudit()
        .args(["scan", "-", "--cluster", "edge"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let fixture = std::fs::read(common::repo().join("rules/fixtures/exec_or_attach_into_pod/positive.jsonl")).unwrap();
    child.stdin.take().unwrap().write_all(&fixture).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 3, "{stdout}");
    assert!(stdout.lines().all(|l| l.contains("\"cluster\":\"edge\"")));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("scanned 3 events (0 malformed)"), "{stderr}");
}

//! Rate-limited dedup on event time, through `kaudit scan`'s path: repeats inside a window are
//! suppressed and counted, keys are separate, windows expire, `--no-dedup` shows everything.

mod common;

use kaudit::alert::Alert;
use kaudit::engine::{Matching, RuleSet};

const RULES: &str = r#"
- rule: Exec
  desc: exec into a pod
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted'
  output: exec by {user.username}
  priority: notice
  dedup: { window: 10m }
- rule: Exec burst
  desc: the same with a burst of 3 per 10 minutes, keyed by user only
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted' && user.username == 'carol'
  output: exec by {user.username}
  priority: notice
  dedup: { key: [user.username], window: 10m, burst: 3 }
"#;

/// One exec event by `user` at `secs` seconds after 10:00:00.
fn exec(i: usize, user: &str, secs: f64) -> String {
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z").unwrap()
        + chrono::Duration::microseconds((secs * 1e6) as i64);
    let ts = t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    format!(
        r#"{{"auditID":"a-{i}","stage":"ResponseStarted","verb":"get","user":{{"username":"{user}"}},"requestReceivedTimestamp":"{ts}","stageTimestamp":"{ts}","objectRef":{{"resource":"pods","namespace":"prod","name":"web","subresource":"exec"}}}}"#
    )
}

fn scan(lines: &[String], dedup: bool) -> Vec<Alert> {
    let rules = RuleSet::from_text("dedup.yaml", RULES, Matching::All).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut out = Vec::new();
    kaudit::scan::scan(&[file], &rules, "c1", &mut out, false, dedup).unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn ten_thousand_repeats_in_a_minute_give_one_alert_and_one_count() {
    let lines: Vec<String> = (0..10_000).map(|i| exec(i, "alice", i as f64 * 0.006)).collect();
    let alerts: Vec<Alert> = scan(&lines, true).into_iter().filter(|a| a.rule == "Exec").collect();
    assert_eq!(
        alerts.len(),
        2,
        "the first alert, then the summary of the suppressed ones"
    );
    let (first, summary) = (&alerts[0], &alerts[1]);
    assert_eq!(first.audit_id, "a-0");
    assert_eq!((first.dedup.count, first.dedup.suppressed), (1, 0));
    assert_eq!(summary.dedup.suppressed, 9999);
    assert_eq!(summary.dedup.count, 9999);
    assert_eq!(summary.dedup.first_seen, "2026-11-20T10:00:00.006000Z");
    assert_eq!(summary.dedup.last_seen, "2026-11-20T10:00:59.994000Z");
    assert_eq!(summary.dedup.key, first.dedup.key);

    // Without dedup every match is an alert.
    let all = scan(&lines, false).into_iter().filter(|a| a.rule == "Exec").count();
    assert_eq!(all, 10_000);
}

#[test]
fn the_next_alert_after_the_window_carries_the_count() {
    let mut lines: Vec<String> = (0..100).map(|i| exec(i, "alice", i as f64)).collect();
    lines.push(exec(100, "alice", 700.0)); // 11 min 40 s: the window has passed
    let alerts: Vec<Alert> = scan(&lines, true).into_iter().filter(|a| a.rule == "Exec").collect();
    assert_eq!(alerts.len(), 2);
    let next = &alerts[1];
    assert_eq!(next.audit_id, "a-100");
    assert_eq!((next.dedup.count, next.dedup.suppressed), (100, 99));
    assert_eq!(next.dedup.first_seen, "2026-11-20T10:00:01.000000Z");
    assert_eq!(next.dedup.last_seen, "2026-11-20T10:11:40.000000Z");
}

#[test]
fn keys_are_separate_and_bursts_pass() {
    let lines: Vec<String> = (0..20)
        .map(|i| exec(i, ["alice", "bob"][i % 2], i as f64))
        .chain((20..30).map(|i| exec(i, "carol", i as f64)))
        .collect();
    let alerts = scan(&lines, true);
    let exec: Vec<&Alert> = alerts
        .iter()
        .filter(|a| a.rule == "Exec" && a.dedup.suppressed == 0)
        .collect();
    let users: Vec<&str> = exec.iter().map(|a| a.output.trim_start_matches("exec by ")).collect();
    assert_eq!(users, ["alice", "bob", "carol"], "one first alert per user");
    let burst: Vec<&Alert> = alerts.iter().filter(|a| a.rule == "Exec burst").collect();
    assert_eq!(burst.len(), 4, "three let through, then the summary of seven");
    assert_eq!(burst[3].dedup.suppressed, 7);
}

#[test]
fn stale_keys_are_purged() {
    use kaudit::dedup::{DedupPolicy, Deduper};
    let rules = RuleSet::from_text("dedup.yaml", RULES, Matching::All).unwrap();
    let deduper = Deduper::new();
    let policy = DedupPolicy {
        window: std::time::Duration::from_secs(60),
        burst: std::num::NonZeroU32::new(1).unwrap(),
    };
    // 20,000 users, each once, over about five hours of event time: only the last window's keys stay.
    for i in 0..20_000 {
        let event = kaudit::audit::Event::from_json(exec(i, &format!("user-{i}"), i as f64)).unwrap();
        let view = event.view();
        let firing = rules.evaluate(&view, "c1").into_iter().next().unwrap();
        let mut alert = Alert::new(&rules.rules()[firing.rule], firing, &view, "c1", "h");
        assert!(deduper.admit(&mut alert, Some(&policy)));
    }
    assert!(deduper.live_keys() < 200, "{} keys live", deduper.live_keys());
}

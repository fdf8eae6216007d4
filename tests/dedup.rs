//! Rate-limited dedup on event time, through `kaudit scan`'s path: repeats inside a window are
//! suppressed and counted, keys are separate, windows expire, the pipeline default applies to
//! rules that say nothing, `--no-dedup` shows everything, keys are purged and capped.

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
- rule: Exec default
  desc: no dedup item of its own, so the pipeline default
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted' && user.username == 'dave'
  output: exec by {user.username}
  priority: notice
- rule: Exec off
  desc: dedup off
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted' && user.username == 'dave'
  output: exec by {user.username}
  priority: notice
  dedup: off
"#;

use kaudit::dedup::{DedupConfig, Deduper, Verdict};

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
    scan_with(
        lines,
        &if dedup {
            DedupConfig::default()
        } else {
            DedupConfig::off()
        },
    )
}

fn scan_with(lines: &[String], config: &DedupConfig) -> Vec<Alert> {
    let rules = RuleSet::from_text("dedup.yaml", RULES, Matching::All).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    std::fs::write(&file, lines.join("\n")).unwrap();
    let mut out = Vec::new();
    let options = kaudit::tools::scan::Options {
        cluster: "c1".into(),
        dedup: config.clone(),
        ..Default::default()
    };
    kaudit::tools::scan::scan(&[file], &rules, &options, &mut out).unwrap();
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
fn a_closed_window_yields_its_summary_or_the_next_alert_carries_the_count() {
    let mut lines: Vec<String> = (0..100).map(|i| exec(i, "alice", i as f64)).collect();
    lines.push(exec(100, "alice", 700.0)); // 11 min 40 s: the window has passed
    let alerts: Vec<Alert> = scan(&lines, true).into_iter().filter(|a| a.rule == "Exec").collect();
    assert_eq!(alerts.len(), 3, "first, the summary of the closed window, the next one");
    let (summary, next) = (&alerts[1], &alerts[2]);
    assert_eq!((summary.dedup.count, summary.dedup.suppressed), (99, 99));
    assert_eq!(summary.dedup.first_seen, "2026-11-20T10:00:01.000000Z");
    assert_eq!(summary.dedup.last_seen, "2026-11-20T10:01:39.000000Z");
    assert_eq!((next.audit_id.as_str(), next.dedup.count), ("a-100", 1));
    let total: u64 = alerts.iter().map(|a| a.dedup.count).sum();
    assert_eq!(total, 101, "the counts add up to the matches");

    // Without summaries, the next alert carries the repeats.
    let config = DedupConfig {
        summaries: false,
        ..DedupConfig::default()
    };
    let alerts: Vec<Alert> = scan_with(&lines, &config)
        .into_iter()
        .filter(|a| a.rule == "Exec")
        .collect();
    assert_eq!(alerts.len(), 2);
    let next = &alerts[1];
    assert_eq!(next.audit_id, "a-100");
    assert_eq!((next.dedup.count, next.dedup.suppressed), (100, 99));
    assert_eq!(next.dedup.first_seen, "2026-11-20T10:00:01.000000Z");
    assert_eq!(next.dedup.last_seen, "2026-11-20T10:11:40.000000Z");
}

#[test]
fn the_default_policy_applies_to_rules_that_name_none() {
    let lines: Vec<String> = (0..50).map(|i| exec(i, "dave", i as f64)).collect();
    let alerts = scan(&lines, true);
    let count = |rule: &str| alerts.iter().filter(|a| a.rule == rule).count();
    assert_eq!(
        count("Exec default"),
        2,
        "the first and the summary (default: 10m window)"
    );
    assert_eq!(count("Exec off"), 50, "dedup: off");
    let config = DedupConfig {
        default: kaudit::engine::rules::DedupDef::Word("off".into()),
        ..DedupConfig::default()
    };
    let alerts = scan_with(&lines, &config);
    assert_eq!(alerts.iter().filter(|a| a.rule == "Exec default").count(), 50);
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

/// Admits one `Exec` alert for each of `users` users, one a second.
fn admit_users(deduper: &Deduper, users: usize) -> usize {
    let rules = RuleSet::from_text("dedup.yaml", RULES, Matching::All).unwrap();
    let mut passed = 0;
    for i in 0..users {
        let event = kaudit::audit::Event::from_json(exec(i, &format!("user-{i}"), i as f64)).unwrap();
        let view = event.view();
        let firing = rules.evaluate(&view, "c1").into_iter().next().unwrap();
        let rule = rules.rule(firing.rule);
        let alert = kaudit::detect::alert(rule, firing, &view, "c1", "h");
        let mut out = Vec::new();
        if deduper.limit(rule, alert, 0, &mut out) == Verdict::Passed {
            passed += 1;
        }
    }
    passed
}

#[test]
fn stale_keys_are_purged() {
    let deduper = Deduper::new(&DedupConfig::default()).unwrap();
    // 2,000 users, each once, over 33 minutes of event time.
    assert_eq!(admit_users(&deduper, 2000), 2000);
    deduper.tick(&mut Vec::new());
    let (live, _) = deduper.live_keys();
    assert!(
        (590..=610).contains(&live),
        "only the last 10 minutes' keys stay: {live}"
    );
}

#[test]
fn live_keys_are_capped_and_evictions_counted() {
    let config = DedupConfig {
        max_keys: 500,
        ..DedupConfig::default()
    };
    let deduper = Deduper::new(&config).unwrap();
    assert_eq!(
        admit_users(&deduper, 3000),
        3000,
        "an evicted key alerts again: more, never fewer"
    );
    let (live, _) = deduper.live_keys();
    assert!(live <= 500, "{live} keys live");
    assert!(deduper.evicted() > 0);
}

/// A partition moving from one detector to another mid-burst: the state handed over keeps one
/// first alert per key, the repeats' count whole, and a threshold window filling on.
#[test]
fn state_handed_over_with_a_shard_keeps_first_alerts_counts_and_windows() {
    const WINDOWED: &str = r#"
- rule: Many execs
  desc: five execs by one user within ten minutes
  condition: objectRef.subresource == 'exec' && stage == 'ResponseStarted'
  output: execs by {user.username}
  priority: warning
  threshold: { count: 5, window: 10m, key: [cluster, user.username] }
"#;
    let mut text = RULES.to_string();
    text.push_str(WINDOWED);
    let rules = RuleSet::from_text("dedup.yaml", &text, Matching::All).unwrap();
    let admit = |deduper: &Deduper, range: std::ops::Range<usize>, shard: u32, out: &mut Vec<Alert>| {
        let detect = kaudit::detect::Detect::new(&rules, deduper);
        let source = kaudit::detect::Source {
            cluster: "c1",
            shard,
            ..Default::default()
        };
        for i in range {
            let event = kaudit::audit::Event::from_json(exec(i, "alice", i as f64)).unwrap();
            detect.event(&event, &source, out);
        }
    };
    let (first, second) = (
        Deduper::new(&DedupConfig::default()).unwrap(),
        Deduper::new(&DedupConfig::default()).unwrap(),
    );
    let mut out = Vec::new();
    admit(&first, 0..3, 3, &mut out);
    // Another shard stays behind.
    admit(&first, 100..101, 4, &mut out);
    second.take_over(3, &first.give_up(3)).unwrap();
    assert_eq!(first.live_keys().1, 1, "shard 4's window stays with its owner");
    admit(&second, 3..10, 3, &mut out);
    second.flush(&mut out);
    let exec_alerts: Vec<&Alert> = out.iter().filter(|a| a.rule == "Exec" && a.cluster == "c1").collect();
    let firsts = exec_alerts.iter().filter(|a| a.dedup.suppressed == 0).count();
    assert_eq!(
        firsts, 2,
        "one first alert for shard 3's key and one for shard 4's: {exec_alerts:#?}"
    );
    let summary: Vec<&&Alert> = exec_alerts.iter().filter(|a| a.dedup.suppressed > 0).collect();
    assert_eq!(summary.len(), 1, "{exec_alerts:#?}");
    assert_eq!(
        summary[0].dedup.suppressed, 9,
        "two repeats before the move, seven after"
    );
    assert_eq!(summary[0].dedup.first_seen, "2026-11-20T10:00:01.000000Z");
    let windows: Vec<&Alert> = out.iter().filter(|a| a.rule == "Many execs").collect();
    assert_eq!(
        windows.len(),
        2,
        "matches 0-4 (three before the move) and 5-9: {windows:#?}"
    );
    assert_eq!(
        windows[0].window.as_ref().unwrap().first_seen,
        "2026-11-20T10:00:00.000000Z"
    );
    // What cannot be read is an error naming the shard, never a silent fresh start.
    let err = second.take_over(5, b"{not json").unwrap_err().to_string();
    assert!(err.contains("shard 5"), "{err}");
}

/// A detector killed without a hand-over: its successor installs the shard's last checkpoint,
/// skips the redelivered events the checkpoint holds, and applies the rest once. Whether the
/// kill came before the checkpoint's commit (everything since the previous commit is
/// redelivered) or after it (only what came later is), the dedup count, the window and the
/// terms learned come out exactly as without the kill.
#[test]
fn a_checkpoint_lets_a_successor_go_on_exactly_after_a_kill() {
    let mut text = RULES.to_string();
    text.push_str(common::WINDOWED_RULES);
    let rules = RuleSet::from_text("dedup.yaml", &text, Matching::All).unwrap();
    // Event i (at position 100 + i of shard 2): alice, but bob at 4 and 12.
    let user = |i: usize| if i == 4 || i == 12 { "bob" } else { "alice" };
    let run = |deduper: &Deduper, range: std::ops::Range<usize>, out: &mut Vec<Alert>| -> usize {
        let detect = kaudit::detect::Detect::new(&rules, deduper);
        let source = kaudit::detect::Source {
            cluster: "c1",
            shard: 2,
            ..Default::default()
        };
        let mut skipped = 0;
        for i in range {
            let event = kaudit::audit::Event::from_json(exec(i, user(i), i as f64)).unwrap();
            if detect.delivery(&event, &source, Some(100 + i as u64), out).is_none() {
                skipped += 1;
            }
        }
        skipped
    };
    // What one detector makes of events 0..15, never killed.
    let alone = Deduper::new(&DedupConfig::default()).unwrap();
    let mut want = Vec::new();
    run(&alone, 0..15, &mut want);
    alone.flush(&mut want);

    for killed_before_commit in [true, false] {
        let first = Deduper::new(&DedupConfig::default()).unwrap();
        let mut got = Vec::new();
        run(&first, 0..6, &mut got);
        let checkpoint = first.checkpoint(2).expect("events 0..6 changed the state");
        first.stored(2);
        assert!(
            first.checkpoint(2).is_none(),
            "nothing changed since the last checkpoint"
        );
        // Events 6..9 reach the killed detector after its checkpoint: their alerts went out,
        // they were never committed.
        run(&first, 6..9, &mut got);
        let successor = Deduper::new(&DedupConfig::default()).unwrap();
        successor.take_over(2, &checkpoint).unwrap();
        let redelivered = if killed_before_commit { 0..15 } else { 6..15 };
        let skipped = run(&successor, redelivered, &mut got);
        assert_eq!(skipped, if killed_before_commit { 6 } else { 0 });
        successor.flush(&mut got);
        // Alerts sent twice (before the kill and again after it) have one id.
        let distinct = |alerts: &[Alert]| {
            let mut by_id: Vec<(String, String, u64, u64)> = alerts
                .iter()
                .map(|a| (a.id.clone(), a.rule.clone(), a.dedup.count, a.dedup.suppressed))
                .collect();
            by_id.sort();
            by_id.dedup();
            by_id
        };
        assert_eq!(
            distinct(&got),
            distinct(&want),
            "killed before the commit: {killed_before_commit}"
        );
    }
    let count = |rule: &str| want.iter().filter(|a| a.rule == rule).count();
    assert_eq!(count("Many execs"), 1, "the window fills once, across the kill");
    assert_eq!(count("First exec by a user"), 2, "alice and bob, once each");
    let exec: u64 = want.iter().filter(|a| a.rule == "Exec").map(|a| a.dedup.count).sum();
    assert_eq!(exec, 15, "every exec, in first alerts and summaries");
}

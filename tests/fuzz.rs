//! 50,000 mutated records (type swaps at every depth, deletions, nesting up to 5,000 levels,
//! huge values, unicode, EKS/GKE/AKS envelopes) through decode → engine → every encoding with
//! the event attached and redacted: no panic, every alert whole JSON, the bad ones counted.
//! `integration/fuzz.sh` runs a million.

#[path = "../integration/events.rs"]
#[allow(dead_code)]
mod events;
#[path = "../integration/mutate.rs"]
mod mutate;

#[test]
fn fifty_thousand_mutated_records_through_every_stage() {
    let rules_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let rules = kaudit::engine::RuleSet::load(&[rules_dir], kaudit::engine::Matching::All).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut mutator = mutate::Mutator::new(7, &mutate::fixtures());
    let mut counts = mutate::Counts::default();
    for _ in 0..5 {
        let chunk: Vec<String> = (0..10_000).map(|_| mutator.next_line()).collect();
        mutate::run(&chunk, &rules, dir.path(), &mut counts);
    }
    println!("{counts:?}");
    assert_eq!(counts.records, 50_000);
    // Most mutations leave an event; some make records that are not events, which are counted.
    assert!(counts.events > 35_000 && counts.malformed > 100, "{counts:?}");
    // The same alerts in every encoding.
    assert!(counts.alerts[0] > 1_000, "{counts:?}");
    assert_eq!(counts.alerts[0], counts.alerts[1], "{counts:?}");
    assert_eq!(counts.alerts[0], counts.alerts[2], "{counts:?}");
}

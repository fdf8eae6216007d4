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

/// Structural redaction reads an event an output does not show as borrowed trees
/// (`Redactor::structure_of`) and one it shows as a value (`Redactor::structure`, which also
/// redacts it in place): the same values removed, over mutated records (deep nesting included:
/// a body deeper than the borrowed tree holds is read as a value) and events built to hold
/// secrets everywhere the pass looks.
#[test]
fn structural_redaction_removes_the_same_from_either_tree() {
    let redactor = kaudit::alert::redact::Redactor::builtin();
    let mut mutator = mutate::Mutator::new(11, &mutate::fixtures());
    let mut lines: Vec<String> = (0..20_000).map(|_| mutator.next_line()).collect();
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(5);
    lines.extend((0..3_000).map(|_| secret_event(&mut rng).to_string()));
    let (mut compared, mut removing, mut deep) = (0, 0, 0);
    for line in &lines {
        let Ok(event) = kaudit::audit::Event::from_json(line.clone()) else {
            continue;
        };
        // What an output that does not show the event read before: the fields as values.
        let mut value = serde_json::Map::new();
        for name in kaudit::alert::redact::Redactor::STRUCTURE_FIELDS {
            if let Some(field) = event.view().get(name).and_then(|raw| kaudit::audit::to_value(raw).ok()) {
                value.insert(name.to_string(), field);
            }
        }
        let mut value = serde_json::Value::Object(value);
        let by_value = redactor.structure(&mut value);
        let borrowed = redactor.structure_of(&event.view());
        assert_eq!(borrowed, by_value, "{}", &line[..line.len().min(3000)]);
        compared += 1;
        removing += usize::from(!by_value.is_empty());
        deep += usize::from(by_value.iter().any(|s| s == kaudit::audit::TOO_DEEP));
        // In place: no body string is a removed value any more (but the lookalikes, `kept…`,
        // which one place may hold as a secret and another as none, and the placeholder of a
        // part nested too deep).
        let mut strings = Vec::new();
        for body in ["requestObject", "responseObject"] {
            collect_strings(&value[body], &mut strings);
        }
        for s in strings
            .into_iter()
            .filter(|s| !s.starts_with("kept") && *s != kaudit::audit::TOO_DEEP)
        {
            assert!(!by_value.contains(s), "{s} left in {value}");
        }
    }
    assert!(
        compared > 12_000 && removing > 2_000 && deep > 30,
        "{compared} {removing} {deep}"
    );
}

fn collect_strings<'v>(value: &'v serde_json::Value, out: &mut Vec<&'v String>) {
    match value {
        serde_json::Value::String(s) => out.push(s),
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        serde_json::Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// An event whose bodies hold secrets where the structural pass looks (and lookalikes where
/// it does not), some nested 60–110 levels deep.
fn secret_event(rng: &mut rand::rngs::StdRng) -> serde_json::Value {
    use rand::Rng;
    use serde_json::json;
    fn secret(rng: &mut rand::rngs::StdRng) -> serde_json::Value {
        use base64::Engine as _;
        let len = rng.random_range(2..14);
        let text: String = (0..len).map(|_| rng.random_range(b'a'..=b'z') as char).collect();
        match rng.random_range(0..4) {
            0 => json!(base64::engine::general_purpose::STANDARD.encode(&text)),
            1 => json!({ "nested": text }),
            _ => json!(text),
        }
    }
    fn part(rng: &mut rand::rngs::StdRng, depth: u32) -> serde_json::Value {
        let s = secret(rng);
        let mut piece = match rng.random_range(0..15) {
            0 => json!({"kind": "Secret", "data": {"k": s}, "stringData": {"other": secret(rng)}}),
            1 => {
                json!({"env": [{"name": "DB", "value": s}, {"name": "X", "valueFrom": {"secretKeyRef": {"name": "n"}}}]})
            }
            2 => json!({"metadata": {"annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": s, "api-token": secret(rng), "note": "kept-text"}}}),
            3 => {
                json!([{"op": "add", "path": "/data/x", "value": s}, {"op": "replace", "path": "/spec/password", "value": secret(rng)}])
            }
            4 => json!(["run", "--password", s, "--db-password=inline", "--verbose", "kept"]),
            5 => json!({"kind": "TokenRequest", "status": {"token": s}}),
            6 => json!({"binaryData": {"b": s}, "data": {"plain": "kept-value"}}),
            7 => json!({"db_password": s, "secretName": "kept-name", "sessionAffinity": "None"}),
            8 => json!({"items": [{"data": {"a": s}}, {"stringData": {"b": secret(rng)}}]}),
            9 => json!({"op": "add", "path": "/metadata/annotations/api-key", "value": {"inner": s}}),
            10 => json!({"status": {"token": s}, "data": {"z": secret(rng)}}),
            11 => json!({"value": s, "path": "/data/y"}),
            // A credential key around the depth where an event's value stops.
            12 => {
                let mut v = json!({"password": {"deep": "kept"}, "data": {"k": s}});
                for _ in 0..rng.random_range(60..66) {
                    v = json!({ "a": v });
                }
                v
            }
            _ if depth < 3 => json!({"spec": part(rng, depth + 1), "list": [part(rng, depth + 1), "kept"]}),
            _ => json!("kept"),
        };
        if depth == 0 && rng.random_ratio(1, 8) {
            for _ in 0..rng.random_range(35..55) {
                piece = json!([{ "a": piece }]);
            }
        }
        piece
    }
    let resource = ["secrets", "serviceaccounts", "pods", "configmaps"][rng.random_range(0..4)];
    let subresource = if rng.random_ratio(1, 2) { "token" } else { "" };
    let mut event = json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "a", "stage": "ResponseComplete", "verb": "create",
        "objectRef": {"resource": resource, "subresource": subresource, "namespace": "default"},
        "annotations": {"authorization.k8s.io/decision": "allow", "x-auth-token": secret(rng), "plain": "kept"},
    });
    if rng.random_ratio(3, 4) {
        event["requestObject"] = part(rng, 0);
    }
    if rng.random_ratio(1, 2) {
        event["responseObject"] = part(rng, 0);
    }
    event
}

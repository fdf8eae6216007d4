use super::*;
use crate::audit::Event;

const RULES: &str = r#"
- list: exec_subresources
  items: [exec, attach]
- macro: pod_create
  condition: objectRef.resource == 'pods' && verb == 'create' && stage == 'ResponseComplete'
- rule: Privileged
  desc: privileged container
  condition: pod_create && pod_containers(requestObject).exists(c, c.securityContext.privileged == true)
  output: priv user={user.username} image={pod_containers(requestObject).map(c, c.image)}
  priority: warning
  tags: [k8s]
- rule: Exec
  desc: exec
  condition: objectRef.subresource in exec_subresources && verb in ['get', 'create']
  output: exec {objectRef.name}
  priority: notice
  exceptions:
    - name: ops
      fields: [user.username, objectRef.namespace]
      values: [[ops, tools]]
- rule: Anything by alice
  desc: d
  condition: user.username == 'alice' || requestObject.spec.nodeName.startsWith('x')
  output: alice
  priority: debug
"#;

fn set(matching: Matching) -> RuleSet {
    RuleSet::from_text("t.yaml", RULES, matching).unwrap()
}

fn event(json: &str) -> Event {
    Event::from_json(json.as_bytes().to_vec()).unwrap()
}

fn fire(set: &RuleSet, json: &str) -> Vec<String> {
    let e = event(json);
    set.evaluate(&e.view(), "c1")
        .into_iter()
        .map(|f| set.rule(f.rule).name.clone())
        .collect()
}

const PRIV: &str = r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","user":{"username":"alice"},
  "objectRef":{"resource":"pods","namespace":"default"},
  "requestObject":{"spec":{"initContainers":[{"image":"busybox"}],"containers":[{"image":"nginx","securityContext":{"privileged":true}}]}}}"#;

#[test]
fn fires_with_rendered_output() {
    let s = set(Matching::All);
    let e = event(PRIV);
    let firings = s.evaluate(&e.view(), "c1");
    assert_eq!(firings.len(), 2);
    assert_eq!(firings[0].output, r#"priv user=alice image=["nginx","busybox"]"#);
    assert_eq!(firings[0].output_fields["user.username"], "alice");
    assert_eq!(fire(&set(Matching::First), PRIV), ["Privileged"]);
}

#[test]
fn missing_fields_never_hide_a_match_nor_count_as_errors() {
    let s = set(Matching::All);
    // No requestObject at all: the `||` alternative still matches on user.
    let got = fire(
        &s,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","user":{"username":"alice"},"objectRef":{"resource":"pods"}}"#,
    );
    assert_eq!(got, ["Anything by alice"]);
    let priv_rule = &s.rules()[0];
    assert_eq!(priv_rule.stats.errors.load(Ordering::Relaxed), 0);
    // No user: the condition's first disjunct is missing; the second matches.
    let got = fire(
        &s,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"get","requestObject":{"spec":{"nodeName":"xyz"}}}"#,
    );
    assert_eq!(got, ["Anything by alice"]);
}

#[test]
fn exceptions_suppress_only_their_tuples() {
    let s = set(Matching::All);
    let exec = |user: &str, ns: &str, verb: &str| {
        fire(
            &s,
            &format!(
                r#"{{"auditID":"1","stage":"ResponseComplete","verb":"{verb}","user":{{"username":"{user}"}},
            "objectRef":{{"resource":"pods","subresource":"exec","namespace":"{ns}","name":"p"}}}}"#
            ),
        )
    };
    assert_eq!(exec("bob", "tools", "get"), ["Exec"]);
    assert_eq!(exec("bob", "tools", "create"), ["Exec"]);
    assert_eq!(exec("ops", "tools", "get"), Vec::<String>::new());
    assert_eq!(exec("ops", "prod", "get"), ["Exec"]);
    assert_eq!(exec("bob", "tools", "delete"), Vec::<String>::new());
}

#[test]
fn wrong_types_are_no_match_with_errors_counted_and_no_panic() {
    let s = set(Matching::All);
    let crafted = [
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods"},"requestObject":"a string"}"#,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods"},"requestObject":{"spec":{"containers":null}}}"#,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods"},"requestObject":{"spec":{"containers":[7,"x",null,{"securityContext":"yes"}]}}}"#,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods"},"requestObject":{"spec":[1,2]}}"#,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":5,"objectRef":{"resource":"pods","subresource":7},"user":{"username":42}}"#,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"get","objectRef":"pods","user":[],"requestObject":{"spec":{"nodeName":9}}}"#,
    ];
    let mut degraded = 0;
    for json in crafted {
        let fired = fire(&s, json);
        degraded += fired.iter().filter(|r| *r == DEGRADED).count();
        assert!(fired.iter().all(|r| r == DEGRADED), "{json}: {fired:?}");
    }
    // Each evaluation error is an alert of the engine's own rule, not a silent "no match".
    assert!(degraded >= 4, "degraded firings: {degraded}");
    // A null user is still an exec; the exception on user names does not apply to it.
    let null_user = r#"{"auditID":"1","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"pods","subresource":"exec"},"user":{"username":null}}"#;
    assert_eq!(fire(&s, null_user), ["Exec"]);
    let errors: u64 = s.rules().iter().map(|r| r.stats.errors.load(Ordering::Relaxed)).sum();
    assert!(errors >= 4, "errors counted: {errors}");
    assert!(s.rules()[0].stats.last_error.lock().unwrap().is_some());
}

#[test]
fn load_errors_name_the_rule_and_position() {
    let text = r#"
- rule: A
  desc: d
  condition: verb == 'get'
  output: o
  priority: info
- rule: B
  desc: d
  condition: verb == 'get'
  output: o
  priority: info
- rule: C
  desc: d
  condition: verb == 'get' &&& stage
  output: o
  priority: info
- rule: D
  desc: d
  condition: nosuchthing == 1
  output: "{verb"
  priority: info
- rule: E
  desc: d
  condition: verb.matches('(')
  output: o
  priority: info
"#;
    let errors = RuleSet::from_text("bad.yaml", text, Matching::All).unwrap_err().0;
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(
        text[0].starts_with("bad.yaml:14:") && text[0].contains("rule 'C'") && text[0].contains("column"),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("rule 'D'") && t.contains("closing")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("rule 'D'") && t.contains("nosuchthing")),
        "{text:?}"
    );
    assert!(
        text.iter().any(|t| t.contains("rule 'E'") && t.contains("regex")),
        "{text:?}"
    );
}

#[test]
fn macro_cycles_and_shadowing_are_refused() {
    let text = "- macro: a\n  condition: b\n- macro: b\n  condition: a\n- list: verb\n  items: [x]\n";
    let errors = RuleSet::from_text("m.yaml", text, Matching::All).unwrap_err().0;
    let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    assert!(text.iter().any(|t| t.contains("refers to itself")), "{text:?}");
    assert!(text.iter().any(|t| t.contains("list 'verb'")), "{text:?}");
}

#[test]
fn prefilter_skips_rules_that_cannot_match() {
    let s = set(Matching::All);
    fire(
        &s,
        r#"{"auditID":"1","stage":"ResponseComplete","verb":"list","objectRef":{"resource":"secrets"},"user":{"username":"bob"}}"#,
    );
    assert_eq!(s.rules()[0].stats.evaluated.load(Ordering::Relaxed), 0);
    assert_eq!(s.rules()[1].stats.evaluated.load(Ordering::Relaxed), 0);
    assert_eq!(s.rules()[2].stats.evaluated.load(Ordering::Relaxed), 1);
}

#[test]
fn optional_field_syntax_reads_absent_paths_as_defaults() {
    let text = r#"
- rule: Host network
  desc: d
  condition: pod_spec(requestObject).?hostNetwork.orValue(false) == true || pod_containers(requestObject).exists(c, c.?securityContext.?privileged.orValue(false) == true)
  output: o
  priority: info
"#;
    let s = RuleSet::from_text("o.yaml", text, Matching::All).unwrap();
    assert_eq!(
        fire(
            &s,
            r#"{"auditID":"1","stage":"s","requestObject":{"spec":{"hostNetwork":true}}}"#
        ),
        ["Host network"]
    );
    assert_eq!(
        fire(
            &s,
            r#"{"auditID":"1","stage":"s","requestObject":{"spec":{"template":{"spec":{"containers":[{"securityContext":{"privileged":true}}]}}}}}"#
        ),
        ["Host network"]
    );
    assert_eq!(
        fire(
            &s,
            r#"{"auditID":"1","stage":"s","requestObject":{"spec":{"containers":[{"name":"x"}]}}}"#
        ),
        Vec::<String>::new()
    );
    assert_eq!(s.rules()[0].stats.errors.load(Ordering::Relaxed), 0);
    assert_eq!(s.rules()[0].stats.missing.load(Ordering::Relaxed), 0);
}

#[test]
fn dedup_policies_parse_and_bad_ones_are_load_errors() {
    let rule = |dedup: &str| {
        format!("- rule: R\n  desc: d\n  condition: verb == 'get'\n  output: o\n  priority: info\n  dedup: {dedup}\n")
    };
    let s = RuleSet::from_text(
        "d.yaml",
        &rule("{ key: [user.username], window: 5m, burst: 2 }"),
        Matching::All,
    )
    .unwrap();
    let stateful::DedupSetting::Policy(policy) = s.rules()[0].dedup.clone() else {
        panic!("a policy")
    };
    assert_eq!((policy.window.as_secs(), policy.burst.get()), (300, 2));
    let s = RuleSet::from_text("d.yaml", &rule("off"), Matching::All).unwrap();
    assert_eq!(s.rules()[0].dedup, stateful::DedupSetting::Off);
    for bad in [
        "{ window: soon }",
        "{ window: 0s }",
        "{ window: 1m, burst: 0 }",
        "maybe",
        "{ window: 1m, key: ['(('] }",
    ] {
        let errors = RuleSet::from_text("d.yaml", &rule(bad), Matching::All).unwrap_err().0;
        assert!(
            errors[0].to_string().contains("rule 'R'") && errors[0].to_string().contains("dedup"),
            "{bad}: {errors:?}"
        );
    }
}

#[test]
fn stateful_rules_load_and_bad_ones_name_what_is_wrong() {
    let text = r#"
- macro: grant
  condition: objectRef.resource == 'clusterrolebindings' && verb == 'create'
- rule: Seq
  desc: d
  sequence: { steps: [grant, "objectRef.resource == 'pods' && verb == 'create'"], window: 5m }
  output: o
  priority: warning
- rule: Many
  desc: d
  condition: objectRef.resource == 'secrets'
  distinct: { field: objectRef.name, count: 15, window: 30m, key: [cluster, user.username] }
  output: o
  priority: warning
"#;
    let s = RuleSet::from_text("s.yaml", text, Matching::All).unwrap();
    let seq = s.rules()[0].window.as_ref().unwrap();
    assert_eq!(seq.policy.kind, stateful::WindowKind::Sequence { steps: 2 });
    // Only events of one of the steps reach the rule; each says which steps it matched.
    let pod = r#"{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{"resource":"pods"}}"#;
    let get = r#"{"auditID":"2","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"pods"}}"#;
    let fired = s.evaluate(&event(pod).view(), "c1");
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].observation.unwrap().steps, 0b10);
    assert!(fire(&s, get).is_empty());

    let rule = |body: &str| format!("- rule: R\n  desc: d\n  output: o\n  priority: info\n{body}");
    for (bad, says) in [
        ("  condition: 'true'\n  threshold: { count: 2, window: 1m }\n  distinct: { field: verb, count: 2, window: 1m }\n", "not several"),
        ("  threshold: { count: 2, window: 1m }\n", "needs `desc`, `condition`"),
        ("  condition: 'true'\n  threshold: { count: 0, window: 1m }\n", "count must be at least 1"),
        ("  sequence: { steps: [\"verb == 'get'\"], window: 1m }\n", "2 to 16 steps"),
        ("  sequence: { steps: [\"verb == 'get'\", \"verb ==\"], window: 1m }\n", "sequence step 2"),
        ("  condition: 'true'\n  distinct: { field: nosuchfield, count: 2, window: 1m }\n", "distinct field names `nosuchfield`"),
    ] {
        let errors = RuleSet::from_text("d.yaml", &rule(bad), Matching::All).unwrap_err().0;
        let text = errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n");
        assert!(text.contains(says) && text.contains("d.yaml:"), "{bad}: {text}");
    }
}

/// A JSON value nested `depth` levels: `{"x":{"x":…{"x":1}…}}`.
fn nested(depth: usize) -> String {
    format!("{}1{}", r#"{"x":"#.repeat(depth), "}".repeat(depth))
}

fn default_rules() -> RuleSet {
    RuleSet::load(
        &[PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("rules")],
        Matching::All,
    )
    .unwrap()
}

/// A privileged patch to a Deployment whose body also holds a field nested `depth` levels.
fn privileged_patch(depth: usize) -> String {
    format!(
        r#"{{"auditID":"p1","stage":"ResponseComplete","verb":"patch","user":{{"username":"mallory"}},
        "objectRef":{{"resource":"deployments","namespace":"default","name":"web","apiGroup":"apps"}},
        "responseStatus":{{"code":200}},
        "requestObject":{{"spec":{{"template":{{"spec":{{"deep":{deep},
          "containers":[{{"name":"a","image":"nginx","securityContext":{{"privileged":true}}}}]}}}}}}}}}}"#,
        deep = nested(depth)
    )
}

#[test]
fn a_deeply_nested_sibling_does_not_hide_a_privileged_patch() {
    let s = default_rules();
    for depth in [10, 130, 5_000] {
        let fired = fire(&s, &privileged_patch(depth));
        assert!(
            fired.contains(&"Privileged container".to_string()),
            "depth {depth}: {fired:?}"
        );
        // Rules that do not read the deep field raise no error over it.
        assert!(!fired.contains(&DEGRADED.to_string()), "depth {depth}: {fired:?}");
    }
}

#[test]
fn a_rule_that_reads_a_too_deep_value_is_an_error_not_a_no_match() {
    // Paths that reach past the depth limit, directly and through a macro.
    let deep_path = format!("requestObject{}", ".x".repeat(bind::MAX_VALUE_DEPTH + 2));
    let text = format!(
        r#"
- rule: Deep
  desc: d
  condition: verb == 'patch' && {deep_path} == 'never'
  output: o
  priority: debug
- macro: deep_macro
  condition: {deep_path} == 1
- rule: Through a macro
  desc: d
  condition: verb == 'patch' && !deep_macro
  output: o
  priority: debug
- rule: Shallow
  desc: d
  condition: verb == 'patch' && has(requestObject.x.x)
  output: o
  priority: debug
"#
    );
    let s = on_detector_stack(move || RuleSet::from_text("d.yaml", &text, Matching::All).unwrap());
    let deep = format!(
        r#"{{"auditID":"1","stage":"ResponseComplete","verb":"patch","requestObject":{}}}"#,
        nested(bind::MAX_VALUE_DEPTH + 10)
    );
    let e = event(&deep);
    let firings = s.evaluate(&e.view(), "c1");
    let outcome: Vec<String> = firings
        .iter()
        .map(|f| match s.rule(f.rule).name.as_str() {
            DEGRADED => format!("degraded: {}", f.output_fields["kaudit.rule"].as_str().unwrap()),
            name => name.to_string(),
        })
        .collect();
    // Both rules that reach past the limit are errors with a degraded alert naming them; the
    // rule reading the shallow part matches as usual.
    assert_eq!(outcome, ["degraded: Deep", "degraded: Through a macro", "Shallow"]);
    assert!(firings[0].output_fields["kaudit.error"]
        .as_str()
        .unwrap()
        .contains("nested deeper than 64"));
    let errors: Vec<u64> = s
        .rules()
        .iter()
        .map(|r| r.stats.errors.load(Ordering::Relaxed))
        .collect();
    assert_eq!(errors, [1, 1, 0]);
}

/// Runs `f` on a thread with a detector's stack (a debug build's parser and interpreter need it).
fn on_detector_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(crate::EVALUATION_STACK_BYTES)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap()
}

#[test]
fn rules_too_deep_to_evaluate_are_load_errors_naming_them() {
    on_detector_stack(too_deep_rules)
}

fn too_deep_rules() {
    let long = format!("verb == 'create' && {} > 0", vec!["1"; 1_500].join(" + "));
    let text = format!("- rule: Long sum\n  desc: d\n  condition: \"{long}\"\n  output: o\n  priority: debug\n");
    let errors = RuleSet::from_text("long.yaml", &text, Matching::All).unwrap_err().0;
    let message = errors[0].to_string();
    assert!(message.starts_with("long.yaml:1:"), "{message}");
    assert!(
        message.contains("rule 'Long sum'") && message.contains("1502 levels deep"),
        "{message}"
    );

    // Macros count in: three macros of 40 levels, each at the bottom of the next, make over 100.
    let chain = |n: usize| vec!["1"; n].join(" + ");
    let text = format!(
        "- macro: m1\n  condition: \"{c} > 0\"\n- macro: m2\n  condition: \"(m1 ? 1 : 0) + {c} > 0\"\n- macro: m3\n  condition: \"(m2 ? 1 : 0) + {c} > 0\"\n",
        c = chain(40)
    );
    let errors = RuleSet::from_text("m.yaml", &text, Matching::All).unwrap_err().0;
    assert!(
        errors.iter().any(|e| e.to_string().contains("macro 'm3'")),
        "{errors:?}"
    );

    // A rule at the limit loads and evaluates (on a detector-sized stack, in a debug build).
    let at_limit = format!("verb == 'create' && {} > 0", chain(MAX_EXPR_DEPTH - 3));
    let text =
        format!("- rule: At the limit\n  desc: d\n  condition: \"{at_limit}\"\n  output: o\n  priority: debug\n");
    let s = RuleSet::from_text("ok.yaml", &text, Matching::All).unwrap();
    let fired = fire(&s, r#"{"auditID":"1","stage":"ResponseComplete","verb":"create"}"#);
    assert_eq!(fired, ["At the limit"]);
}

#[test]
fn exceptions_with_many_values_stay_shallow() {
    let values: Vec<String> = (0..5_000).map(|i| format!("[user{i}]")).collect();
    let text = format!(
        "- rule: R\n  desc: d\n  condition: verb == 'get'\n  output: o\n  priority: debug\n  exceptions:\n    - name: many\n      fields: [user.username]\n      values: [{}]\n",
        values.join(", ")
    );
    let s = RuleSet::from_text("x.yaml", &text, Matching::All).unwrap();
    let get = |user: &str| {
        format!(r#"{{"auditID":"1","stage":"ResponseComplete","verb":"get","user":{{"username":"{user}"}}}}"#)
    };
    assert_eq!(fire(&s, &get("user4999")), Vec::<String>::new());
    assert_eq!(fire(&s, &get("eve")), ["R"]);
}

#[test]
fn an_event_over_its_budget_skips_the_rest_and_says_which() {
    let s = set(Matching::All);
    let e = event(PRIV);
    // A zero budget is spent after the first rule.
    let firings = s.evaluate_within(&e.view(), "c1", Some(Duration::ZERO));
    let names: Vec<&str> = firings.iter().map(|f| s.rule(f.rule).name.as_str()).collect();
    assert_eq!(names, ["Privileged", DEGRADED]);
    assert_eq!(
        firings[1].output_fields["kaudit.skipped_rules"],
        serde_json::json!(["Anything by alice"])
    );
    assert!(firings[1].output.contains("budget"), "{}", firings[1].output);
    // Also when the rule that spent it did not match.
    let plain = event(&PRIV.replace(r#""privileged":true"#, r#""privileged":false"#));
    let firings = s.evaluate_within(&plain.view(), "c1", Some(Duration::ZERO));
    let names: Vec<&str> = firings.iter().map(|f| s.rule(f.rule).name.as_str()).collect();
    assert_eq!(names, [DEGRADED]);
    assert_eq!(
        firings[0].output_fields["kaudit.skipped_rules"],
        serde_json::json!(["Anything by alice"])
    );
    // A generous one changes nothing.
    let all = s.evaluate_within(&e.view(), "c1", Some(Duration::from_secs(60)));
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|f| s.rule(f.rule).name != DEGRADED));
}

/// Window keys travel in checkpoints and hand-overs: their hash is pinned (SipHash-1-3, zero
/// keys; the values `DefaultHasher` gave with Rust 1.95, when the hash moved to `siphasher`).
#[test]
fn window_keys_hash_the_same_in_every_build() {
    let hash = |parts: &[&str]| {
        let mut h = Hash64::default();
        for p in parts {
            h.part(p.as_bytes());
        }
        h.finish()
    };
    assert_eq!(
        hash(&["Secrets read across many names", "\"team-a\""]),
        0x5c57dc8829f95713
    );
    assert_eq!(hash(&[""]), 0x30406ea523c53def);
    assert_ne!(hash(&["a", "b"]), hash(&["ab"]));
}

#[test]
fn repeated_members_route_as_the_conditions_read_them() {
    // A member written twice is its last value for the conditions (compiled and interpreter)
    // and for the prefilter alike: the rule is left out exactly where it cannot match.
    let rules = "- rule: Secrets\n  desc: d\n  condition: objectRef.resource == 'secrets' && user.username == 'alice'\n  output: o\n  priority: notice\n";
    let s = RuleSet::from_text("t.yaml", rules, Matching::All).unwrap();
    for (resource, user, matches) in [
        (r#""secrets","resource":"pods""#, r#""alice""#, false),
        (r#""pods","resource":"secrets""#, r#""bob","username":"alice""#, true),
        (r#""secrets","resource":null"#, r#""alice""#, false),
    ] {
        let text = format!(
            r#"{{"auditID":"1","stage":"ResponseComplete","verb":"get","objectRef":{{"resource":{resource}}},"user":{{"username":{user}}}}}"#
        );
        let e = event(&text);
        let view = e.view();
        let interpreted = s.verdicts(&view, "c", EvalPath::Interpreted)[0];
        assert_eq!(interpreted, s.verdicts(&view, "c", EvalPath::Compiled)[0], "{text}");
        assert_eq!(interpreted == Verdict::Match, matches, "{text}");
        assert_eq!(s.candidates(&view)[0], matches, "{text}");
    }
}

/// Objects of many keys (past the few a scan reads) are read as small ones are: a member is
/// its last entry, a null entry takes its key away, `size` counts keys once; on both paths.
/// (Their lookups once scanned every entry: a ConfigMap of 60k keys indexed per key cost 8 s.)
#[test]
fn large_objects_read_as_small_ones_do() {
    let rules = "- rule: Big\n  desc: d\n  condition: >\n    requestObject.data.exists(k, requestObject.data[k] == 'hit-' + k)\n    && size(requestObject.data) == SIZE && has(requestObject.data.k7) && !has(requestObject.data.k8)\n    && requestObject.data.?k9.orValue('none') == 'late' && !('k8' in requestObject.data)\n  output: o\n  priority: notice\n";
    for keys in [20, 300] {
        let s = RuleSet::from_text("t.yaml", &rules.replace("SIZE", &(keys - 1).to_string()), Matching::All).unwrap();
        let data = |last: &str| {
            let mut entries: Vec<String> = (0..keys).map(|i| format!(r#""k{i}":"v""#)).collect();
            entries.extend([
                r#""k5":"hit-k5""#.into(),
                r#""k8":null"#.into(),
                r#""k9":"late""#.into(),
                last.into(),
            ]);
            format!(
                r#"{{"auditID":"1","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"configmaps"}},"requestObject":{{"data":{{{}}}}}}}"#,
                entries.join(",")
            )
        };
        for (text, matches) in [(data(r#""k1":"v""#), true), (data(r#""k5":"miss""#), false)] {
            let e = event(&text);
            let view = e.view();
            let interpreted = s.verdicts(&view, "c", EvalPath::Interpreted)[0];
            assert_eq!(
                interpreted,
                s.verdicts(&view, "c", EvalPath::Compiled)[0],
                "{keys} keys"
            );
            assert_eq!(interpreted == Verdict::Match, matches, "{keys} keys, {matches}");
        }
    }
}

//! The compiled evaluation path against the interpreter, the reference: the same verdict per
//! rule and event (match, no match, missing field, error) for the default rules, Falco's rules
//! imported, and conditions written to reach every corner of CEL the compiled path models or
//! hands back. `integration/differential.sh` runs a million events.

#[path = "../integration/differential.rs"]
mod differential;
#[path = "../integration/events.rs"]
#[allow(dead_code)]
mod events;
#[path = "../integration/mutate.rs"]
#[allow(dead_code)]
mod mutate;

use kaudit::engine::{EvalPath, Matching, RuleSet, Verdict};

fn report(tally: &differential::Tally) {
    println!(
        "{} events, {} verdicts {:?}, {} outputs ({} differing only in a map's key order), {} mismatches ({} of the prefilter); {} errors of rules left out",
        tally.events, tally.verdicts, tally.kinds, tally.renders, tally.map_order, tally.mismatch_count, tally.prefilter_count,
        tally.left_out_errors
    );
    assert_eq!(tally.mismatch_count, 0, "{}", tally.mismatches.join("\n\n"));
}

#[test]
fn fifty_thousand_mutated_events_give_the_same_verdicts_on_both_paths() {
    let sets = differential::rule_sets();
    let mut mutator = mutate::Mutator::new(11, &mutate::fixtures());
    let mut tally = differential::Tally::default();
    while tally.events < 50_000 {
        let chunk: Vec<String> = (0..5_000).map(|_| mutator.next_line()).collect();
        differential::compare(&sets, &chunk, &mut tally);
    }
    report(&tally);
    // Both answers occur on both rule sets, and errors too (mutations swap types).
    for kind in ["Match", "NoMatch", "Missing", "Error"] {
        assert!(
            tally.kinds.get(kind).copied().unwrap_or(0) > 0,
            "{kind}: {:?}",
            tally.kinds
        );
    }
}

/// Conditions at the edges: absorption of errors by `&&`/`||`, comparisons across types,
/// mixed lists, every list macro, optionals, the helpers, dynamic regexes, and parts the
/// compiled path leaves to the interpreter (timestamps, maps, arithmetic).
const EDGES: &[&str] = &[
    "objectRef.nope == 'x' || verb == 'get'",
    "objectRef.nope == 'x' && verb == 'nothing'",
    "verb == 'get' && objectRef.nope == 'x'",
    "verb + 1 == 2 || true",
    "verb + 1 == 2 && false",
    "true && verb + 1 == 2",
    "!(verb == 'get')",
    "!verb",
    "verb == 1",
    "responseStatus.code == 200.0",
    "responseStatus.code in [200, 201]",
    "responseStatus.code >= 400 && responseStatus.code < 500",
    "verb in mixed_list",
    "verb in ['get', 'list'] && objectRef.resource in sensitive",
    "user.groups.exists(g, g == 'system:masters')",
    "user.groups.all(g, g.startsWith('system:'))",
    "user.groups.exists_one(g, g == 'system:authenticated')",
    "size(user.groups.filter(g, g.startsWith('system:'))) > 1",
    "user.groups.map(g, g + '!').exists(g, g == 'system:masters!')",
    "size(pod_containers(requestObject).map(c, c.image).filter(i, i.endsWith(':latest'))) > 0",
    "'nginx' in pod_containers(requestObject).map(c, c.?image.orValue(''))",
    "user.groups.map(g, g.startsWith('system:'), g)[0] == 'system:masters'",
    "'system:masters' in user.groups",
    "size(requestObject) > 2 || size(user.username) > 10",
    "has(requestObject.spec) && has(requestObject.spec.containers)",
    "requestObject.?spec.?hostPID.orValue(false)",
    "requestObject.?spec.?hostPID.orValue(false) == true",
    "annotations[?'authorization.k8s.io/decision'].orValue('') == 'allow'",
    "sourceIPs[?0].orValue('') == '10.0.0.1' || user.groups[?5].hasValue()",
    "requestObject.?data.orValue({}).exists(k, k.startsWith('aws') || string(requestObject.data[k]).contains('secret'))",
    "string(responseStatus.code) == '200' || string(verb) == 'get' || string(true) == 'true'",
    "requestObject.?metadata.?labels.orValue({}).all(k, k != 'app')",
    "pod_containers(requestObject).exists(c, c.?securityContext.?privileged.orValue(false) == true)",
    "pod_spec(requestObject).?hostNetwork.orValue(false) == true",
    "pod_containers(requestObject).exists(c, image_registry(c.image) != 'docker.io' && image_tag(c.image) == '')",
    "image_repository(requestObject.spec.containers[0].image) == 'nginx'",
    "requestURI.matches('exec') && requestURI.matches('command=' + verb)",
    "user.username.matches(verb + '(')",
    "matches(requestURI, '^/api')",
    "cluster == 'c1' && verb.size() > 2",
    "responseStatus.code > 399 ? verb == 'get' : objectRef.resource == 'pods'",
    "responseStatus.?code.orValue(0) > 399 ? verb : false",
    "annotations['authorization.k8s.io/decision'] == 'allow'",
    "sourceIPs[0].startsWith('10.')",
    "sourceIPs[3] == '10.0.0.1' || sourceIPs[-1] == 'x'",
    "falco_field(_top, 'ka.verb', '')[1] == 'get'",
    "user.extra.x.exists(v, v == 'y')",
    "objectRef.?subresource.orValue('') == ''",
    "requestObject.spec.containers.exists(c, c.image.endsWith(':latest'))",
    "requestObject.spec.containers.all(c, has(c.securityContext))",
    "timestamp(requestReceivedTimestamp) > timestamp('2020-01-01T00:00:00Z')",
    "[verb, objectRef.resource].exists(x, x == 'pods')",
    "{'a': verb}.a == 'get'",
    "-responseStatus.code < 0",
    "responseStatus.code % 2 == 0 && sensitive_read",
    "double(responseStatus.code) > 1.0",
    "user.username.contains('admin') || user.username.endsWith('@corp')",
    "requestObject.metadata.name == objectRef.name",
    "requestObject.kind == 'Pod' && requestObject.spec.containers.size() > 0",
    "sensitive_read && !human",
    "falco_field(_top, 'ka.verb', '') == ['get']",
    "falco_field(requestObject, 'ka.req.pod.containers.image', '').exists(v, falco_op('glob', v, '*:latest'))",
    "falco_field(user, 'ka.user.groups', '').exists(v, v in ['system:masters', 'system:nodes'])",
    "exec_command(requestURI).exists(a, a.matches('^(\\\\S*/)?(sh|bash)(\\\\s|$)'))",
    "exec_command(requestURI).join(' ').contains('-c') || exec_command(requestURI).join() == ''",
    "size(exec_command(requestURI)) > 1",
    "requestURI.split('/')[1] == 'api' || userAgent.split('/')[0] == 'kubectl'",
    "requestURI.split('')[0] == '/'",
    "sourceIPs.exists(a, isIP(a)) && sourceIPs.join(',').contains('.')",
    "sourceIPs.exists(a, !isIP(a) || !['10.0.0.0/8', '::1/128'].exists(n, cidr(n).containsIP(a)))",
    "cidr(verb).containsIP('10.0.0.1')",
    "objectRef.join(',') == '' || user.groups.join(', ') == 'system:masters'",
    "[1, 2].join(',') == '1,2'",
];

fn edge_rules() -> RuleSet {
    let mut text = String::from(
        "- list: mixed_list\n  items: [get, 1, true]\n\
         - list: sensitive\n  items: [secrets, configmaps]\n\
         - macro: sensitive_read\n  condition: objectRef.resource in sensitive && verb in ['get', 'list']\n\
         - macro: human\n  condition: \"!user.?username.orValue('').startsWith('system:')\"\n",
    );
    for (i, condition) in EDGES.iter().enumerate() {
        text.push_str(&format!(
            "- rule: edge {i}\n  desc: d\n  condition: {}\n  output: o\n  priority: notice\n",
            serde_json::to_string(condition).unwrap()
        ));
    }
    RuleSet::from_text("edges.yaml", &text, Matching::All).unwrap()
}

#[test]
fn conditions_at_the_edges_give_the_same_verdicts_on_both_paths() {
    let sets = vec![("edges".to_string(), edge_rules())];
    let mut mutator = mutate::Mutator::new(23, &mutate::fixtures());
    let mut tally = differential::Tally::default();
    while tally.events < 10_000 {
        let chunk: Vec<String> = (0..2_000).map(|_| mutator.next_line()).collect();
        differential::compare(&sets, &chunk, &mut tally);
    }
    report(&tally);
}

#[test]
fn the_compiled_path_covers_every_default_and_imported_rule() {
    for (name, set) in differential::rule_sets() {
        for (i, rule) in set.rules().iter().enumerate() {
            assert_eq!(
                set.interpreted_parts(i),
                0,
                "{name} / {}: a part runs in the interpreter",
                rule.name
            );
        }
    }
    // What it does not model is left to the interpreter, part by part.
    let edges = edge_rules();
    let interpreted: Vec<&str> = (0..edges.rules().len())
        .filter(|i| edges.interpreted_parts(*i) > 0)
        .map(|i| EDGES[i])
        .collect();
    assert!(interpreted.contains(&"{'a': verb}.a == 'get'"), "{interpreted:?}");
    assert!(
        !interpreted.contains(&"user.groups.exists(g, g == 'system:masters')"),
        "{interpreted:?}"
    );
}

#[test]
fn a_value_nested_too_deep_is_an_error_on_the_compiled_path_too() {
    // The value converts to 64 levels; `hostPID` is at level 2, so 63 indexes reach the cut.
    let reach = format!("requestObject.spec.hostPID{} == 1", "[0]".repeat(63));
    let shallow = "requestObject.spec.hostPID == true".to_string();
    let mut text = String::new();
    for (i, c) in [&reach, &shallow].iter().enumerate() {
        text.push_str(&format!(
            "- rule: r{i}\n  desc: d\n  condition: {}\n  output: o\n  priority: notice\n",
            serde_json::to_string(c).unwrap()
        ));
    }
    let set = RuleSet::from_text("deep.yaml", &text, Matching::All).unwrap();
    let deep = format!("{}1{}", "[".repeat(100), "]".repeat(100));
    let event = format!(
        r#"{{"kind":"Event","auditID":"a","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"pods"}},"requestObject":{{"kind":"Pod","spec":{{"hostPID":{deep}}}}}}}"#
    );
    let view = kaudit::audit::EventView::parse(&event).unwrap();
    let compiled = set.verdicts(&view, "c1", EvalPath::Compiled);
    assert_eq!(compiled, set.verdicts(&view, "c1", EvalPath::Interpreted));
    // Reading into the cut part is an error; comparing the list whole is not.
    assert_eq!(compiled, [Verdict::Error, Verdict::NoMatch]);
}

#[test]
fn a_case_the_compiled_path_does_not_model_goes_to_the_interpreter_and_is_counted() {
    let text = "- rule: cross type\n  desc: d\n  condition: verb == 1 || objectRef.resource == 'pods'\n  output: o\n  priority: notice\n\
                - rule: same type\n  desc: d\n  condition: verb == 'get'\n  output: o\n  priority: notice\n";
    let set = RuleSet::from_text("cross.yaml", text, Matching::All).unwrap();
    let event =
        r#"{"kind":"Event","auditID":"a","stage":"ResponseComplete","verb":"get","objectRef":{"resource":"pods"}}"#;
    let view = kaudit::audit::EventView::parse(event).unwrap();
    let firings = set.evaluate(&view, "c1");
    // Both fire; the comparison of a string with an int was the interpreter's to decide.
    assert_eq!(firings.len(), 2);
    let interpreted = |i: usize| {
        set.rules()[i]
            .stats
            .interpreted
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    assert_eq!((interpreted(0), interpreted(1)), (1, 0));
}

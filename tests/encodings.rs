//! The three alert encodings against the required fields of their schemas (written from the
//! published field lists: Falco's JSON output as falcosidekick reads it, OCSF 1.3.0 Detection
//! Finding 2004, ECS 8.11 and the field names of Elastic's Kubernetes audit integration), the
//! OCSF finding lifecycle across dedup, and redaction of a credential in all three.

mod common;

use kaudit::alert::encode::{Encoder, Encoding};
use kaudit::alert::redact::Redactor;
use serde_json::Value;
use std::path::Path;
use std::sync::Arc;

fn scan(file: &Path, encoding: Encoding, include_event: bool, dedup: bool) -> Vec<Value> {
    let options = kaudit::tools::scan::Options {
        encoder: Encoder::builtin(encoding, include_event, true),
        dedup: if dedup {
            Default::default()
        } else {
            kaudit::dedup::DedupConfig::off()
        },
        cluster: "prod".into(),
        ..Default::default()
    };
    common::scan(&[file.to_path_buf()], &options).1
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn rfc3339(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
}

/// Falco's JSON output, as falcosidekick and Falco parsers read it.
fn falco_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    for f in ["output", "rule", "source", "hostname"] {
        if !v.get(f).is_some_and(Value::is_string) {
            p.push(format!("{f}: string required"));
        }
    }
    let priorities = [
        "Emergency",
        "Alert",
        "Critical",
        "Error",
        "Warning",
        "Notice",
        "Informational",
        "Debug",
    ];
    if !v["priority"].as_str().is_some_and(|s| priorities.contains(&s)) {
        p.push("priority: one of Falco's priorities".into());
    }
    if !rfc3339(v.get("time")) {
        p.push("time: RFC 3339".into());
    }
    if !v["output_fields"].is_object() {
        p.push("output_fields: object".into());
    }
    if !v["tags"].as_array().is_some_and(|t| t.iter().all(Value::is_string)) {
        p.push("tags: array of strings".into());
    }
    p
}

/// Attributes of the Detection Finding class (OCSF 1.3.0, base event and finding attributes).
const OCSF_2004_ATTRIBUTES: &[&str] = &[
    "activity_id",
    "activity_name",
    "category_name",
    "category_uid",
    "class_name",
    "class_uid",
    "comment",
    "confidence",
    "confidence_id",
    "confidence_score",
    "count",
    "duration",
    "end_time",
    "enrichments",
    "evidences",
    "finding_info",
    "impact",
    "impact_id",
    "impact_score",
    "is_alert",
    "malware",
    "message",
    "metadata",
    "observables",
    "raw_data",
    "remediation",
    "resources",
    "risk_level",
    "risk_level_id",
    "risk_score",
    "severity",
    "severity_id",
    "start_time",
    "status",
    "status_code",
    "status_detail",
    "status_id",
    "time",
    "timezone_offset",
    "type_name",
    "type_uid",
    "unmapped",
    "vulnerabilities",
];

/// Evidence attributes of which OCSF requires at least one.
const OCSF_EVIDENCE_ONE_OF: &[&str] = &[
    "actor",
    "api",
    "connection_info",
    "container",
    "database",
    "databucket",
    "device",
    "dst_endpoint",
    "email",
    "file",
    "process",
    "query",
    "reg_key",
    "reg_value",
    "resources",
    "src_endpoint",
    "url",
    "user",
    "job",
    "script",
];

fn ocsf_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    let int = |f: &str| at(v, f).and_then(Value::as_i64);
    let activity = int("activity_id");
    if !matches!(activity, Some(0..=3) | Some(99)) {
        p.push("activity_id: 0-3 or 99".into());
    }
    if int("category_uid") != Some(2) {
        p.push("category_uid: 2 (Findings)".into());
    }
    if int("class_uid") != Some(2004) {
        p.push("class_uid: 2004".into());
    }
    if int("type_uid") != activity.map(|a| 2004 * 100 + a) {
        p.push("type_uid: class_uid * 100 + activity_id".into());
    }
    if !matches!(int("severity_id"), Some(0..=6) | Some(99)) {
        p.push("severity_id: 0-6 or 99".into());
    }
    if int("time").is_none_or(|t| t <= 0) {
        p.push("time: epoch milliseconds".into());
    }
    if !at(v, "metadata.product").is_some_and(|m| m.get("name").is_some() || m.get("vendor_name").is_some()) {
        p.push("metadata.product: required".into());
    }
    if !at(v, "metadata.version").is_some_and(Value::is_string) {
        p.push("metadata.version: required".into());
    }
    if at(v, "finding_info.uid")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        p.push("finding_info.uid: required".into());
    }
    if let Some(analytic) = at(v, "finding_info.analytic") {
        if analytic.get("type_id").and_then(Value::as_i64).is_none() {
            p.push("finding_info.analytic.type_id: required".into());
        }
    }
    for (i, e) in v["evidences"].as_array().into_iter().flatten().enumerate() {
        if !OCSF_EVIDENCE_ONE_OF.iter().any(|k| e.get(*k).is_some()) {
            p.push(format!(
                "evidences[{i}]: needs one of actor, api, src_endpoint, resources, …"
            ));
        }
        if let Some(api) = e.get("api") {
            if !api.get("operation").is_some_and(Value::is_string) {
                p.push(format!("evidences[{i}].api.operation: required"));
            }
        }
        if let Some(src) = e.get("src_endpoint") {
            if [
                "ip",
                "hostname",
                "name",
                "uid",
                "domain",
                "instance_uid",
                "interface_uid",
                "svc_name",
            ]
            .iter()
            .all(|k| src.get(*k).is_none())
            {
                p.push(format!("evidences[{i}].src_endpoint: needs an ip, hostname, …"));
            }
        }
    }
    for key in v.as_object().unwrap().keys() {
        if !OCSF_2004_ATTRIBUTES.contains(&key.as_str()) {
            p.push(format!("{key}: not an attribute of Detection Finding"));
        }
    }
    p
}

const ECS_EVENT_KINDS: &[&str] = &[
    "alert",
    "asset",
    "enrichment",
    "event",
    "metric",
    "state",
    "pipeline_error",
    "signal",
];
const ECS_EVENT_CATEGORIES: &[&str] = &[
    "api",
    "authentication",
    "configuration",
    "database",
    "driver",
    "email",
    "file",
    "host",
    "iam",
    "intrusion_detection",
    "library",
    "malware",
    "network",
    "package",
    "process",
    "registry",
    "session",
    "threat",
    "vulnerability",
    "web",
];

fn ecs_problems(v: &Value) -> Vec<String> {
    let mut p = Vec::new();
    if !rfc3339(v.get("@timestamp")) {
        p.push("@timestamp: required, ISO 8601".into());
    }
    if !at(v, "ecs.version").is_some_and(Value::is_string) {
        p.push("ecs.version: required".into());
    }
    if !at(v, "event.kind")
        .and_then(Value::as_str)
        .is_some_and(|k| ECS_EVENT_KINDS.contains(&k))
    {
        p.push("event.kind: an allowed value".into());
    }
    if !at(v, "event.category").and_then(Value::as_array).is_some_and(|c| {
        c.iter()
            .all(|c| c.as_str().is_some_and(|c| ECS_EVENT_CATEGORIES.contains(&c)))
    }) {
        p.push("event.category: allowed values".into());
    }
    for f in ["event.severity", "event.risk_score"] {
        if !at(v, f).is_some_and(Value::is_number) {
            p.push(format!("{f}: number"));
        }
    }
    for f in ["message", "rule.name", "orchestrator.cluster.name"] {
        if !at(v, f).is_some_and(Value::is_string) {
            p.push(format!("{f}: string"));
        }
    }
    if let Some(ip) = at(v, "source.ip") {
        if ip.as_str().and_then(|s| s.parse::<std::net::IpAddr>().ok()).is_none() {
            p.push("source.ip: an IP address".into());
        }
    }
    // What Elastic's prebuilt Kubernetes rules query.
    let audit = at(v, "kubernetes.audit");
    for f in ["verb", "user", "objectRef", "annotations"] {
        if audit.and_then(|a| a.get(f)).is_none() {
            p.push(format!("kubernetes.audit.{f}: required by Elastic's rules"));
        }
    }
    if audit
        .and_then(|a| a.get("annotations"))
        .and_then(|a| a.get("authorization_k8s_io/decision"))
        .is_none()
    {
        p.push("kubernetes.audit.annotations.authorization_k8s_io/decision: the integration's name".into());
    }
    p
}

#[test]
fn privileged_pod_alert_passes_each_schema_check() {
    let Some(shared) = common::shared() else { return };
    let trace = shared.join("falco/traces/create_nginx_pod_privileged.json");
    for (encoding, check) in [
        (Encoding::Falco, falco_problems as fn(&Value) -> Vec<String>),
        (Encoding::Ocsf, ocsf_problems),
        (Encoding::Ecs, ecs_problems),
    ] {
        for include_event in [false, true] {
            let alerts = scan(&trace, encoding, include_event, true);
            assert_eq!(alerts.len(), 1, "{encoding:?}");
            let problems = check(&alerts[0]);
            assert!(problems.is_empty(), "{encoding:?}: {problems:?}\n{:#}", alerts[0]);
        }
    }
    // The checks are not vacuous: the Falco alert is not an OCSF finding, nor an ECS document.
    let falco = &scan(&trace, Encoding::Falco, false, true)[0];
    assert!(!ocsf_problems(falco).is_empty() && !ecs_problems(falco).is_empty());
    let ocsf = &scan(&trace, Encoding::Ocsf, true, true)[0];
    assert_eq!(ocsf["severity_id"], 3, "Warning is Medium");
    assert_eq!(ocsf["evidences"][0]["api"]["operation"], "create");
    assert_eq!(
        ocsf["evidences"][0]["api"]["request"]["uid"],
        "a362d22b-db3c-4590-9505-23782f12925f"
    );
    assert_eq!(ocsf["evidences"][0]["data"]["objectRef"]["resource"], "pods");
    assert_eq!(ocsf["finding_info"]["attacks"][0]["technique"]["uid"], "T1610");
    let ecs = &scan(&trace, Encoding::Ecs, false, true)[0];
    assert_eq!(ecs["event"]["action"], "create");
    assert_eq!(ecs["kubernetes"]["audit"]["objectRef"]["resource"], "pods");
    assert!(
        ecs["kubernetes"]["audit"].get("requestObject").is_none(),
        "bodies only with include_event"
    );
    assert_eq!(ecs["orchestrator"]["cluster"]["name"], "prod");
    assert_eq!(ecs["threat"]["technique"]["id"][0], "T1610");
}

fn write_events(dir: &Path, lines: &[String]) -> std::path::PathBuf {
    let file = dir.join("events.jsonl");
    std::fs::write(&file, lines.join("\n")).unwrap();
    file
}

fn exec(i: usize) -> String {
    serde_json::json!({
        "kind": "Event", "level": "Metadata", "auditID": format!("x-{i}"), "stage": "ResponseStarted", "verb": "create",
        "user": {"username": "mallory"}, "sourceIPs": ["10.0.0.9"], "requestURI": "/api/v1/namespaces/shop/pods/web/exec?command=sh",
        "objectRef": {"resource": "pods", "namespace": "shop", "name": "web", "subresource": "exec", "apiVersion": "v1"},
        "responseStatus": {"code": 101}, "annotations": {"authorization.k8s.io/decision": "allow"},
        "stageTimestamp": format!("2026-11-20T10:00:{:02}.000000Z", i)
    })
    .to_string()
}

#[test]
fn an_ocsf_finding_and_its_dedup_update_share_finding_uid() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_events(dir.path(), &(0..5).map(exec).collect::<Vec<_>>());
    let alerts: Vec<Value> = scan(&file, Encoding::Ocsf, false, true)
        .into_iter()
        .filter(|a| a["finding_info"]["title"] == "Exec or attach into pod")
        .collect();
    assert_eq!(
        alerts.len(),
        2,
        "the first alert, then the summary of 4 repeats: {alerts:#?}"
    );
    let (create, update) = (&alerts[0], &alerts[1]);
    assert_eq!(
        (create["activity_id"].as_i64(), create["type_uid"].as_i64()),
        (Some(1), Some(200401))
    );
    assert_eq!(
        (update["activity_id"].as_i64(), update["type_uid"].as_i64()),
        (Some(2), Some(200402))
    );
    assert_eq!(create["finding_info"]["uid"], update["finding_info"]["uid"]);
    assert_ne!(create["metadata"]["uid"], update["metadata"]["uid"]);
    assert_eq!(update["count"], 4);
    assert_eq!(update["finding_info"]["related_events_count"], 4);
    for a in &alerts {
        assert!(ocsf_problems(a).is_empty(), "{:?}", ocsf_problems(a));
    }
}

#[test]
fn a_credential_in_a_configmap_never_leaves_in_any_encoding() {
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let event = serde_json::json!({
        "kind": "Event", "level": "RequestResponse", "auditID": "cm-1", "stage": "ResponseComplete", "verb": "create",
        "user": {"username": "alice"}, "sourceIPs": ["10.0.0.7"], "requestURI": "/api/v1/namespaces/shop/configmaps",
        "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "aws", "apiVersion": "v1"},
        "responseStatus": {"code": 201}, "annotations": {"authorization.k8s.io/decision": "allow"},
        "stageTimestamp": "2026-11-20T10:00:00.000000Z",
        "requestObject": {"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": "aws", "namespace": "shop", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":{{\"credentials\":\"aws_secret_access_key = {secret}\"}}}}")}},
            "data": {"credentials": format!("[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = {secret}\n"),
                     "aws_secret_access_key": secret}},
        "responseObject": {"kind": "ConfigMap", "data": {"credentials": format!("aws_secret_access_key = {secret}")}}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = write_events(dir.path(), &[event.to_string()]);
    // Every 8-character piece of the secret.
    let pieces: Vec<&str> = (0..=secret.len() - 8).map(|i| &secret[i..i + 8]).collect();
    for encoding in [Encoding::Falco, Encoding::Ocsf, Encoding::Ecs] {
        let alerts = scan(&file, encoding, true, false);
        let credential_rule = alerts.iter().filter(|a| {
            a["rule"] == "ConfigMap with private credentials"
                || a["finding_info"]["title"] == "ConfigMap with private credentials"
                || a["rule"]["name"] == "ConfigMap with private credentials"
        });
        assert_eq!(
            credential_rule.count(),
            1,
            "the rule matched on the original: {encoding:?}"
        );
        // Every alert of the event (other rules fire on it too) is checked.
        let bytes = serde_json::to_string(&alerts).unwrap();
        for piece in &pieces {
            assert!(!bytes.contains(piece), "{encoding:?} leaks {piece}: {bytes}");
        }
        assert!(bytes.contains("[REDACTED]"), "{encoding:?}: {bytes}");
        assert!(
            bytes.contains("aws_secret_access_key"),
            "the key stays readable: {bytes}"
        );
    }
    // Without redaction it would have leaked (the check can fail).
    assert!(unredacted(&file).contains(secret));
}

/// The alerts of a scan with the event attached and no redaction, as one JSON text.
fn unredacted(file: &Path) -> String {
    let options = kaudit::tools::scan::Options {
        encoder: Encoder::builtin(Encoding::Falco, true, false),
        dedup: kaudit::dedup::DedupConfig::off(),
        ..Default::default()
    };
    let (_, alerts): (_, Vec<Value>) = common::scan(&[file.to_path_buf()], &options);
    serde_json::to_string(&alerts).unwrap()
}

/// Where and how a secret is planted: a template with `{S}` for the secret.
const PLANTED: &[&str] = &[
    "aws_secret_access_key = {S}",
    "DB_PASSWORD={S}\nSECRET_KEY={S}\n",
    "export GITHUB_TOKEN=ghp_{S}{S}",
    "SLACK_TOKEN=xoxb-{S}",
    "{\"password\": \"{S}\"}",
    "{\"db\": {\"auth\": {\"token\": \"{S}\"}}}",
    "db:\n  password: 'p,{S}'\n",
    "password: 'p,{S}'",
    "url: postgres://app:{S}@db:5432/shop",
    "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{S}\n-----END PGP PRIVATE KEY BLOCK-----",
    "-----BEGIN CERTIFICATE-----\n{S}\n-----END CERTIFICATE-----",
    "--password {S}",
    "--token={S}",
    "--db-password {S}",
    "mysql -uroot -p{S} shop",
    "Authorization: Bearer {S}",
    "https://hooks.slack.com/services/T0000/B0000/{S}",
    "api-key={S}",
    "X_API_KEY: {S}",
    "session={S}",
    "cookie: {S}",
    "client_secret = {S}",
    "sk_live_{S}",
    "glpat-{S}",
    "AIza{S}{S}",
    "privateKey: {S}",
];

/// A random secret of letters and digits.
fn secret(rng: &mut impl rand::Rng) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..20)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Events of a person in system:masters (every write alerts) holding `text` in one place each:
/// a ConfigMap's data (under a plain key, and under keys named `secret` and `pass`), its
/// binaryData, an annotation, a container's args (as one string and as argv), an env value, a
/// JSON patch on a Secret, and an exec URI (percent-encoded).
fn planted_events(text: &str, raw: &str, i: usize) -> Vec<Value> {
    use serde_json::json;
    let base = |n: usize, verb: &str, resource: &str, uri: String, body: Value| {
        json!({
            "kind": "Event", "level": "RequestResponse", "auditID": format!("p-{i}-{n}"), "stage": "ResponseComplete",
            "verb": verb, "user": {"username": "alice", "groups": ["system:masters", "system:authenticated"]},
            "sourceIPs": ["10.0.0.7"], "requestURI": uri,
            "objectRef": {"resource": resource, "namespace": "shop", "name": "x", "apiVersion": "v1"},
            "responseStatus": {"code": 201}, "stageTimestamp": "2026-11-20T10:00:00.000000Z",
            "requestObject": body
        })
    };
    let encoded: String = text
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    vec![
        base(
            0,
            "create",
            "configmaps",
            "/api/v1/namespaces/shop/configmaps".into(),
            json!({"kind": "ConfigMap", "data": {"app.conf": text, "secret": raw, "pass": raw}, "binaryData": {"blob": raw}}),
        ),
        base(
            1,
            "create",
            "pods",
            "/api/v1/namespaces/shop/pods".into(),
            json!({"kind": "Pod", "metadata": {"annotations": {"example.com/note": text}},
                   "spec": {"containers": [{"name": "c", "image": "app", "args": [text, "--password", raw, "--db-token", raw],
                   "command": ["sh", "-c", text], "env": [{"name": "NOTE", "value": text}]}]}}),
        ),
        base(
            2,
            "patch",
            "secrets",
            "/api/v1/namespaces/shop/secrets/x".into(),
            json!([{"op": "replace", "path": "/data/password", "value": raw}, {"op": "add", "path": "/stringData", "value": {"k": raw}}]),
        ),
        base(
            3,
            "create",
            "pods",
            format!("/api/v1/namespaces/shop/pods/x/exec?command=sh&command=-c&command={encoded}"),
            json!({"kind": "PodExecOptions", "command": ["sh", "-c", text]}),
        ),
    ]
}

#[test]
fn planted_secrets_never_leave_in_any_encoding() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let dir = tempfile::tempdir().unwrap();
    let mut lines = Vec::new();
    let mut secrets = Vec::new();
    for (i, template) in PLANTED.iter().enumerate() {
        for round in 0..3 {
            let s = secret(&mut rng);
            let text = template.replace("{S}", &s);
            for event in planted_events(&text, &s, i * 10 + round) {
                lines.push(event.to_string());
            }
            secrets.push((template, s));
        }
    }
    let file = write_events(dir.path(), &lines);
    for encoding in [Encoding::Falco, Encoding::Ocsf, Encoding::Ecs] {
        let alerts = scan(&file, encoding, true, false);
        // Every event raised an alert carrying it.
        assert!(
            alerts.len() >= lines.len(),
            "{encoding:?}: {} alerts for {} events",
            alerts.len(),
            lines.len()
        );
        let text = serde_json::to_string(&alerts).unwrap();
        for (template, s) in &secrets {
            for piece in (0..=s.len() - 8).map(|i| &s[i..i + 8]) {
                if let Some(at) = text.find(piece) {
                    let around = &text[at.saturating_sub(300)..(at + 100).min(text.len())];
                    panic!("{encoding:?}: a piece of the secret planted as {template:?} leaks: {piece} in …{around}…");
                }
            }
        }
    }
    // The check can fail: without redaction every secret is there.
    let text = unredacted(&file);
    assert!(secrets.iter().all(|(_, s)| text.contains(s.as_str())));
}

#[test]
fn a_secret_a_rule_quotes_is_redacted_when_the_event_is_not_attached() {
    // Falco's encoding without the event reads only the fields redaction's structure pass needs.
    let rules = kaudit::engine::RuleSet::from_text(
        "quote.yaml",
        "- rule: Quote\n  desc: quotes a secret\n  condition: objectRef.resource == 'secrets'\n  output: 'data={requestObject.data.password} uri={requestURI}'\n  priority: warning\n",
        kaudit::engine::Matching::All,
    )
    .unwrap();
    let secret = "c3VwZXJzZWNyZXQxMjM="; // base64 of "supersecret123"
    let event = serde_json::json!({
        "kind": "Event", "level": "Request", "auditID": "s-1", "stage": "ResponseComplete", "verb": "create",
        "user": {"username": "alice"}, "requestURI": "/api/v1/namespaces/shop/secrets",
        "objectRef": {"resource": "secrets", "namespace": "shop", "name": "db"},
        "stageTimestamp": "2026-11-20T10:00:00.000000Z",
        "requestObject": {"kind": "Secret", "data": {"password": secret}}
    });
    let dir = tempfile::tempdir().unwrap();
    let file = write_events(dir.path(), &[event.to_string()]);
    let run = |redactor: Option<Arc<Redactor>>| {
        let options = kaudit::tools::scan::Options {
            encoder: Encoder {
                encoding: Encoding::Falco,
                include_event: false,
                redactor,
            },
            dedup: kaudit::dedup::DedupConfig::off(),
            ..Default::default()
        };
        let mut out = Vec::new();
        kaudit::tools::scan::scan(std::slice::from_ref(&file), &rules, &options, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let redacted = run(Some(Arc::new(Redactor::new(&Default::default()).unwrap())));
    assert!(redacted.contains("data=[REDACTED]"), "{redacted}");
    assert!(!redacted.contains(secret), "{redacted}");
    assert!(run(None).contains(secret));
}

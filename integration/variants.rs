//! Per-namespace variants of the default rules, for the benchmarks of cost against rule count:
//! each default rule's condition `&& objectRef.?namespace.orValue('') == 'team-K'`, as one rule
//! file to load after `rules/`.

use serde_json::Value;

/// `n` variant rules as YAML (one JSON flow mapping per rule).
pub fn variants(n: usize) -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut rules = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let items: Vec<Value> = serde_saphyr::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        rules.extend(
            items
                .into_iter()
                .filter(|i| i.get("rule").is_some() && i.get("condition").is_some()),
        );
    }
    let mut out = String::new();
    for k in 0..n {
        let mut rule = rules[k % rules.len()].clone();
        let obj = rule.as_object_mut().unwrap();
        obj.retain(|key, _| !matches!(key.as_str(), "fixtures" | "falco" | "covers"));
        let team = k / rules.len();
        let name = format!("{} (team-{team})", obj["rule"].as_str().unwrap());
        let condition = format!(
            "({}) && objectRef.?namespace.orValue('') == 'team-{team}'",
            obj["condition"].as_str().unwrap().trim()
        );
        obj.insert("rule".into(), name.into());
        obj.insert("condition".into(), condition.into());
        out.push_str(&format!("- {}\n", serde_json::to_string(&rule).unwrap()));
    }
    out
}

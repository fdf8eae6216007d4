//! What a rule set covers, for people: the Markdown table of the README (`kaudit rules doc`),
//! generated from the rules themselves (name, description, priority, the audit level each
//! needs, MITRE ATT&CK tags, the detection ideas and Falco rules each covers), so it cannot drift
//! from them.

use crate::engine::{Rule, RuleSet};

/// The first sentence of a description, on one line.
fn summary(desc: &str) -> String {
    let one_line = desc.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.find(". ") {
        Some(i) => one_line[..=i].to_string(),
        None => one_line,
    }
}

/// The description's summary, and the lists a rule is quiet without.
fn what(rule: &Rule) -> String {
    let mut text = summary(&rule.desc);
    if !rule.meta.requires.is_empty() {
        let lists: Vec<String> = rule.meta.requires.iter().map(|l| format!("`{l}`")).collect();
        text.push_str(&format!(" *Quiet until {} has items.*", lists.join(" and ")));
    }
    text
}

fn mitre(tags: &[String]) -> String {
    let mut out: Vec<String> = tags
        .iter()
        .filter(|t| t.starts_with("mitre_") || (t.starts_with('T') && t[1..].starts_with(|c: char| c.is_ascii_digit())))
        .map(|t| t.trim_start_matches("mitre_").replace('_', " "))
        .collect();
    out.dedup();
    out.join(", ")
}

/// One Markdown table row per enabled rule, in rule order.
pub fn markdown(set: &RuleSet) -> String {
    let mut out = String::from(
        "| rule | what it detects | priority | needs | MITRE ATT&CK | ideas | Falco rules |\n| --- | --- | --- | --- | --- | --- | --- |\n",
    );
    for rule in set.rules().iter().filter(|r| r.enabled) {
        let kind = match &rule.window {
            None => String::new(),
            Some(w) => format!(" ({})", w.policy.kind.name()),
        };
        out.push_str(&format!(
            "| {}{kind} | {} | {} | {} | {} | {} | {} |\n",
            rule.name,
            what(rule).replace('|', "\\|"),
            rule.priority.as_str(),
            rule.needs(),
            mitre(&rule.tags),
            rule.meta.covers.join(", "),
            rule.meta.falco.join(", ").replace('|', "\\|"),
        ));
    }
    out
}

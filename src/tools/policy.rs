//! `kaudit policy check`: which rules a cluster's audit Policy lets fire.
//!
//! A rule sees only what the apiserver logs. The Policy is evaluated the way the apiserver does
//! (`pkg/audit/policy/checker.go`): rules in order, the first that matches sets the level, none
//! means `None`; a rule matches when every field it sets matches (`users`, `userGroups`, `verbs`,
//! `resources` with groups, subresources, `*`, `*/sub`, `res/*` and `resourceNames`,
//! `namespaces`; a rule with `nonResourceURLs` never matches a resource request); `omitStages` of
//! the policy and of the matching rule add up. For every request a detection rule looks at (its
//! verbs, resources, subresources and stage, read from its condition by the prefilter) the level
//! is compared with what the rule needs (`needs:`, or what its condition reads: `requestObject`
//! needs `Request`). A policy rule that applies to some users, groups, namespaces or object
//! names only is reported beside the outcome for everyone else.

use crate::audit::Level;
use crate::engine::prefilter::Allowed;
use crate::engine::{Rule, RuleSet};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    #[serde(default)]
    pub omit_stages: Vec<String>,
    pub rules: Vec<PolicyRule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRule {
    pub level: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub user_groups: Vec<String>,
    #[serde(default)]
    pub verbs: Vec<String>,
    #[serde(default)]
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    pub omit_stages: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupResources {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub resource_names: Vec<String>,
}

impl Policy {
    pub fn parse(text: &str) -> anyhow::Result<Policy> {
        let policy: Policy = serde_saphyr::from_str(text)?;
        if policy.rules.is_empty() {
            anyhow::bail!("a Policy needs at least one rule (the apiserver refuses an empty one)");
        }
        for (i, r) in policy.rules.iter().enumerate() {
            if Level::parse(&r.level).is_none() {
                anyhow::bail!(
                    "rules[{i}]: level {:?} is not None, Metadata, Request or RequestResponse",
                    r.level
                );
            }
        }
        Ok(policy)
    }
}

/// One request a detection rule looks at.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

impl Request {
    fn combined(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }
}

/// Whether a policy rule matches a request, for everyone or only for some.
#[derive(Debug, PartialEq)]
enum Match {
    No,
    Everyone,
    /// Only some users, groups, namespaces or object names: which.
    Some(String),
}

fn rule_match(rule: &PolicyRule, req: &Request) -> Match {
    if !rule.non_resource_urls.is_empty() {
        return Match::No;
    }
    if !rule.verbs.is_empty() && !rule.verbs.iter().any(|v| v == &req.verb || v == "*") {
        return Match::No;
    }
    let mut names = BTreeSet::new();
    if !rule.resources.is_empty() {
        let combined = req.combined();
        let mut matched = false;
        for gr in &rule.resources {
            if gr.group != req.group && gr.group != "*" {
                continue;
            }
            let hit = gr.resources.is_empty()
                || gr.resources.iter().any(|r| {
                    r == &combined
                        || r == "*"
                        || (!req.subresource.is_empty() && r.strip_prefix("*/") == Some(req.subresource.as_str()))
                        || r.strip_suffix("/*") == Some(req.resource.as_str())
                });
            if hit {
                if gr.resource_names.is_empty() {
                    matched = true;
                    names.clear();
                    break;
                }
                names.extend(gr.resource_names.iter().cloned());
            }
        }
        if !matched && names.is_empty() {
            return Match::No;
        }
    }
    let mut only = Vec::new();
    if !rule.users.is_empty() {
        only.push(format!("users {}", rule.users.join(", ")));
    }
    if !rule.user_groups.is_empty() {
        only.push(format!("groups {}", rule.user_groups.join(", ")));
    }
    if !rule.namespaces.is_empty() {
        let ns: Vec<&str> = rule
            .namespaces
            .iter()
            .map(|n| if n.is_empty() { "(cluster-scoped)" } else { n })
            .collect();
        only.push(format!("namespaces {}", ns.join(", ")));
    }
    if !names.is_empty() {
        only.push(format!(
            "objects named {}",
            names.into_iter().collect::<Vec<_>>().join(", ")
        ));
    }
    if only.is_empty() {
        Match::Everyone
    } else {
        Match::Some(only.join(" and "))
    }
}

/// What the policy does with one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub level: Level,
    /// 1-based index of the policy rule that decided, `None` when none matched.
    pub by: Option<usize>,
    pub omitted_stages: BTreeSet<String>,
    /// Policy rules before it that apply to some requests only: (who, level, index).
    pub exceptions: Vec<(String, Level, usize)>,
}

pub fn evaluate(policy: &Policy, req: &Request) -> Outcome {
    let mut exceptions = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        let level = Level::parse(&rule.level).unwrap_or(Level::None);
        match rule_match(rule, req) {
            Match::No => {}
            Match::Some(who) => exceptions.push((who, level, i + 1)),
            Match::Everyone => {
                let omitted_stages = policy.omit_stages.iter().chain(&rule.omit_stages).cloned().collect();
                return Outcome {
                    level,
                    by: Some(i + 1),
                    omitted_stages,
                    exceptions,
                };
            }
        }
    }
    Outcome {
        level: Level::None,
        by: None,
        omitted_stages: policy.omit_stages.iter().cloned().collect(),
        exceptions,
    }
}

/// The API group of a resource kaudit's rules name (the rules say the resource, not its group).
pub fn group_of(resource: &str) -> &'static str {
    match resource {
        "deployments" | "replicasets" | "statefulsets" | "daemonsets" | "controllerrevisions" => "apps",
        "jobs" | "cronjobs" => "batch",
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => "rbac.authorization.k8s.io",
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "ingresses" | "networkpolicies" | "ingressclasses" => "networking.k8s.io",
        "customresourcedefinitions" => "apiextensions.k8s.io",
        "certificatesigningrequests" => "certificates.k8s.io",
        "tokenreviews" => "authentication.k8s.io",
        "subjectaccessreviews"
        | "selfsubjectaccessreviews"
        | "selfsubjectrulesreviews"
        | "localsubjectaccessreviews" => "authorization.k8s.io",
        "podsecuritypolicies" | "poddisruptionbudgets" => "policy",
        "leases" => "coordination.k8s.io",
        "priorityclasses" => "scheduling.k8s.io",
        "storageclasses" | "csidrivers" | "volumeattachments" => "storage.k8s.io",
        "horizontalpodautoscalers" => "autoscaling",
        "apiservices" => "apiregistration.k8s.io",
        _ => "",
    }
}

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// The requests a rule looks at: its verbs × resources × subresources (all verbs where it names
/// none; one unnamed resource, `*`, where it names none).
fn requests(rule: &Rule) -> Vec<Request> {
    let [verbs, resources, subresources, ..] = &rule.route.0;
    let verbs: Vec<String> = match verbs {
        Allowed::Any => VERBS.iter().map(|v| v.to_string()).collect(),
        Allowed::Only(v) => v.iter().cloned().collect(),
    };
    let resources: Vec<String> = match resources {
        Allowed::Any => vec!["*".into()],
        Allowed::Only(r) => r.iter().cloned().collect(),
    };
    let subresources: Vec<String> = match subresources {
        Allowed::Any => vec![String::new()],
        Allowed::Only(s) => s.iter().cloned().collect(),
    };
    let mut out = Vec::new();
    for resource in &resources {
        for sub in &subresources {
            for verb in &verbs {
                out.push(Request {
                    verb: verb.clone(),
                    group: group_of(resource).into(),
                    resource: resource.clone(),
                    subresource: sub.clone(),
                });
            }
        }
    }
    out
}

/// What keeps a rule from seeing one request, if anything.
fn problem(rule: &Rule, req: &Request, outcome: &Outcome) -> Option<String> {
    let by = match outcome.by {
        Some(i) => format!("policy rule {i}"),
        None => "no policy rule matches".into(),
    };
    if outcome.level == Level::None {
        return Some(format!("not logged (level None, {by})"));
    }
    if let Allowed::Only(stages) = &rule.route.0[3] {
        if !stages.is_empty() && stages.iter().all(|s| outcome.omitted_stages.contains(s)) {
            let stages: Vec<&str> = stages.iter().map(String::as_str).collect();
            return Some(format!("its stage {} is omitted ({by})", stages.join(", ")));
        }
    }
    let needs = rule.needs_for(&req.verb);
    if outcome.level < needs {
        let missing = if needs == Level::RequestResponse && outcome.level == Level::Request {
            "no response body"
        } else {
            "no request body"
        };
        return Some(format!(
            "logged at {} ({by}): {missing}, the rule needs {needs}",
            outcome.level
        ));
    }
    None
}

/// One detection rule's findings.
#[derive(Debug)]
pub struct RuleCheck {
    pub rule: String,
    pub needs: Level,
    /// Every request the rule looks at is out of its sight, for everyone.
    pub never_fires: bool,
    /// `what: why`, grouped by resource.
    pub problems: Vec<String>,
}

/// Checks every enabled rule of `set` against `policy`; only rules with problems are returned.
pub fn check(policy: &Policy, set: &RuleSet) -> Vec<RuleCheck> {
    let mut out = Vec::new();
    for rule in set.rules().iter().filter(|r| r.enabled) {
        let reqs = requests(rule);
        // (resource, why) → verbs: verbs with the same outcome on one resource are one line.
        let mut problems: Vec<((String, String), Vec<String>)> = Vec::new();
        let mut blocked = 0;
        for req in &reqs {
            let outcome = evaluate(policy, req);
            let Some(mut why) = problem(rule, req, &outcome) else {
                continue;
            };
            // An exception that logs enough (for some namespaces, users, …) lets the rule fire there.
            let stage_omitted = why.contains("is omitted");
            if stage_omitted
                || !outcome
                    .exceptions
                    .iter()
                    .any(|(_, level, _)| *level >= rule.needs_for(&req.verb))
            {
                blocked += 1;
            }
            for (who, level, i) in &outcome.exceptions {
                let _ = write!(why, "; for {who}: {level} (policy rule {i})");
            }
            let group = if req.group.is_empty() {
                "core"
            } else {
                req.group.as_str()
            };
            let key = (format!("{} ({group})", req.combined()), why);
            match problems.iter_mut().find(|(k, _)| *k == key) {
                Some((_, verbs)) => verbs.push(req.verb.clone()),
                None => problems.push((key, vec![req.verb.clone()])),
            }
        }
        if problems.is_empty() {
            continue;
        }
        out.push(RuleCheck {
            rule: rule.name.clone(),
            needs: rule.needs(),
            never_fires: blocked == reqs.len(),
            problems: problems
                .into_iter()
                .map(|((what, why), verbs)| format!("{} {what}: {why}", verbs.join(", ")))
                .collect(),
        });
    }
    out
}

/// The findings as people read them; how many rules were checked first.
pub fn report(checks: &[RuleCheck], total: usize, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let never = checks.iter().filter(|c| c.never_fires).count();
    writeln!(
        out,
        "{total} rules checked: {never} can never fire, {} fire only in part, {} unaffected",
        checks.len() - never,
        total - checks.len()
    )?;
    for c in checks {
        let verdict = if c.never_fires {
            "can never fire"
        } else {
            "fires only in part"
        };
        writeln!(out, "\n{} ({verdict}; needs {})", c.rule, c.needs)?;
        for p in &c.problems {
            writeln!(out, "  {p}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
    resources: [{group: "", resources: ["endpoints"]}]
  - level: RequestResponse
    resources: [{group: "", resources: ["pods"]}]
  - level: Metadata
    resources: [{group: "", resources: ["pods/*"]}]
  - level: Request
    resources: [{group: "", resources: ["configmaps"]}]
    namespaces: ["kube-system"]
  - level: None
    resources: [{group: "", resources: ["configmaps"], resourceNames: ["leader"]}]
  - level: Metadata
    resources: [{group: "*", resources: ["*/scale"]}]
  - level: Metadata
    omitStages: ["ResponseStarted"]
"#;

    fn req(verb: &str, group: &str, resource: &str, sub: &str) -> Request {
        Request {
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
        }
    }

    #[test]
    fn first_match_wins_with_the_apiservers_resource_rules() {
        let p = Policy::parse(POLICY).unwrap();
        let o = evaluate(&p, &req("create", "", "pods", ""));
        assert_eq!((o.level, o.by), (Level::RequestResponse, Some(2)));
        // `pods` does not match a subresource; `pods/*` does.
        let o = evaluate(&p, &req("create", "", "pods", "exec"));
        assert_eq!((o.level, o.by), (Level::Metadata, Some(3)));
        // A namespace- or name-limited rule is an exception, not the answer.
        let o = evaluate(&p, &req("create", "", "configmaps", ""));
        assert_eq!((o.level, o.by), (Level::Metadata, Some(7)));
        assert_eq!(o.exceptions.len(), 2, "{:?}", o.exceptions);
        assert!(o.omitted_stages.contains("ResponseStarted") && o.omitted_stages.contains("RequestReceived"));
        let o = evaluate(&p, &req("update", "apps", "deployments", "scale"));
        assert_eq!(o.by, Some(6));
        let o = evaluate(&p, &req("watch", "", "endpoints", ""));
        assert_eq!(o.by, Some(7));
        assert!(o.exceptions[0].0.contains("users system:kube-proxy"));
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(Policy::parse("rules: []").is_err());
        assert!(Policy::parse("rules: [{level: Everything}]")
            .unwrap_err()
            .to_string()
            .contains("rules[0]"));
    }
}

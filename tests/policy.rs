//! `kaudit policy check` on the Kubernetes documentation's example policy and on Falco's
//! recommended one: for each affected rule, why it cannot fire or fires without its body.

mod common;

use kaudit::engine::{Matching, RuleSet};
use kaudit::tools::policy::{check, Policy, RuleCheck};

fn checks(policy_text: &str) -> Vec<RuleCheck> {
    let rules = RuleSet::load(&[common::repo().join("rules")], Matching::All).unwrap();
    check(&Policy::parse(policy_text).unwrap(), &rules)
}

fn find<'a>(checks: &'a [RuleCheck], rule: &str) -> Option<&'a RuleCheck> {
    checks.iter().find(|c| c.rule == rule)
}

#[test]
fn the_kubernetes_docs_example_policy() {
    let Some(shared) = common::shared() else { return };
    let text = std::fs::read_to_string(shared.join("policy/k8s-website-audit-policy.yaml")).unwrap();
    let c = checks(&text);
    // RBAC objects fall to the catch-all Metadata rule: no body, so rules reading the role's
    // rules or the binding's roleRef can never fire.
    for rule in ["Role with wildcard permissions", "Binding to cluster-admin"] {
        let r = find(&c, rule).unwrap_or_else(|| panic!("{rule}: {c:#?}"));
        assert!(r.never_fires, "{r:#?}");
        assert!(
            r.problems
                .iter()
                .all(|p| p.contains("logged at Metadata") && p.contains("no request body")),
            "{r:#?}"
        );
    }
    // ConfigMaps: Metadata, except kube-system at Request: fires there only.
    let cm = find(&c, "ConfigMap with private credentials").unwrap();
    assert!(!cm.never_fires);
    assert!(
        cm.problems[0].contains("for namespaces kube-system: Request"),
        "{cm:#?}"
    );
    // Pods are logged with bodies; workloads of other groups are not.
    let privileged = find(&c, "Privileged container").unwrap();
    assert!(!privileged.never_fires);
    assert!(
        privileged.problems.iter().any(|p| p.contains("deployments (apps)")),
        "{privileged:#?}"
    );
    assert!(
        !privileged.problems.iter().any(|p| p.contains(" pods ")),
        "{privileged:#?}"
    );
    // Exec (pods/exec at Request by the core-group rule) and the secret rules are fine.
    for fine in [
        "Exec or attach into pod",
        "Forbidden secret reads burst",
        "Secrets read across many names",
    ] {
        assert!(find(&c, fine).is_none(), "{fine}: {c:#?}");
    }
}

#[test]
fn falcos_recommended_policy() {
    let Some(shared) = common::shared() else { return };
    let text = std::fs::read_to_string(shared.join("falco/plugin_configs/audit-policy.yaml")).unwrap();
    let c = checks(&text);
    // Ingresses (networking.k8s.io), CSRs' signers, RoleBindings' subjects and workload patches
    // (apps) fall to its Metadata catch-all.
    let never: Vec<&str> = c.iter().filter(|r| r.never_fires).map(|r| r.rule.as_str()).collect();
    assert_eq!(
        never,
        [
            "Ingress without TLS",
            "Certificate signing request for an unusual signer",
            "Role bound to a service account of another namespace",
            "Workload container image changed by a person"
        ],
        "{c:#?}"
    );
    // Its policy lists deployments under the core group, so real deployments (apps) get Metadata.
    let privileged = find(&c, "Privileged container").unwrap();
    assert!(
        privileged
            .problems
            .iter()
            .any(|p| p.contains("deployments (apps): logged at Metadata")),
        "{privileged:#?}"
    );
    // clusterroles are logged with bodies; namespaced roles are not.
    let wildcard = find(&c, "Role with wildcard permissions").unwrap();
    assert!(
        wildcard.problems.iter().all(|p| p.contains(" roles (")),
        "{wildcard:#?}"
    );
    assert!(find(&c, "ConfigMap with private credentials").is_none(), "{c:#?}");
}

#[test]
fn omitted_stages_and_unlogged_resources() {
    let c = checks(
        "rules:\n  - level: None\n    resources: [{group: \"\", resources: [secrets]}]\n  - level: RequestResponse\n    omitStages: [ResponseStarted]\n",
    );
    let exec = find(&c, "Exec or attach into pod").unwrap();
    assert!(
        exec.never_fires && exec.problems[0].contains("its stage ResponseStarted is omitted"),
        "{exec:#?}"
    );
    let secrets = find(&c, "Forbidden secret reads burst").unwrap();
    assert!(
        secrets.never_fires && secrets.problems[0].contains("not logged (level None, policy rule 1)"),
        "{secrets:#?}"
    );
}

#[test]
fn the_cli_prints_each_affected_rule_and_why() {
    let Some(shared) = common::shared() else { return };
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kaudit"))
        .args(["policy", "check"])
        .arg(shared.join("policy/k8s-website-audit-policy.yaml"))
        .current_dir(common::repo())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("Role with wildcard permissions (can never fire; needs Request)"),
        "{text}"
    );
    assert!(
        text.contains("clusterroles (rbac.authorization.k8s.io): logged at Metadata (policy rule 9): no request body"),
        "{text}"
    );
}

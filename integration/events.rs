//! Synthetic audit events for benchmarks (used by `gen_events` and `loadgen`). About 80% reads
//! (get/list/watch), 20% writes: pod creates (some privileged, some with hostPath), configmaps
//! (some with credentials), exec sessions, RBAC bindings, services, deletes. Deterministic.

use serde_json::{json, Value};

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const USERS: &[&str] = &[
    "system:serviceaccount:kube-system:replicaset-controller",
    "system:kube-scheduler",
    "system:node:node-1",
    "alice@example.com",
    "bob@example.com",
    "system:serviceaccount:ci:deployer",
];
const NAMESPACES: &[&str] = &["default", "prod", "staging", "kube-system", "monitoring"];
const READ_RESOURCES: &[&str] = &[
    "pods",
    "configmaps",
    "secrets",
    "nodes",
    "endpoints",
    "leases",
    "services",
    "deployments",
];

fn base(rng: &mut Rng, i: u64, verb: &str, resource: &str, stage: &str) -> Value {
    let ns = rng.pick(NAMESPACES);
    let ts = format!(
        "2026-11-20T10:{:02}:{:02}.{:06}Z",
        (i / 60_000) % 60,
        (i / 1000) % 60,
        i % 1_000_000
    );
    json!({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
        "auditID": format!("00000000-0000-4000-8000-{i:012}"), "stage": stage,
        "requestURI": format!("/api/v1/namespaces/{ns}/{resource}"), "verb": verb,
        "user": {"username": rng.pick(USERS), "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/abc",
        "objectRef": {"resource": resource, "namespace": ns, "name": format!("obj-{}", rng.below(500)), "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": ts, "stageTimestamp": ts,
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": "RBAC: allowed by ClusterRoleBinding"}
    })
}

fn container(rng: &mut Rng, privileged: bool) -> Value {
    json!({
        "name": "app", "image": format!("registry.example.com/team/app:{}", rng.below(20)),
        "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
        "env": [{"name": "MODE", "value": "prod"}, {"name": "PORT", "value": "8080"}],
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "securityContext": {"privileged": privileged, "runAsNonRoot": !privileged},
        "terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"
    })
}

pub fn event(rng: &mut Rng, i: u64) -> Value {
    let roll = rng.below(100);
    if roll < 80 {
        let verb = rng.pick(&["get", "get", "list", "watch"]);
        let resource = rng.pick(READ_RESOURCES);
        let mut e = base(rng, i, verb, resource, "ResponseComplete");
        e.as_object_mut().unwrap().remove("requestObject");
        return e;
    }
    let kind = rng.below(20);
    let mut e;
    match kind {
        0..=7 => {
            e = base(rng, i, "create", "pods", "ResponseComplete");
            let privileged = rng.below(50) == 0;
            let mut spec = json!({"containers": [container(rng, privileged), container(rng, false)],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst", "serviceAccountName": "default"});
            if rng.below(50) == 0 {
                spec["volumes"] = json!([{"name": "sock", "hostPath": {"path": "/var/run/docker.sock"}}]);
            }
            e["requestObject"] = json!({"kind": "Pod", "apiVersion": "v1", "metadata": {"name": format!("pod-{i}"),
                "labels": {"app": "web", "tier": "frontend"}}, "spec": spec});
            e["responseStatus"]["code"] = json!(201);
        }
        8..=11 => {
            let verb = rng.pick(&["update", "patch"]);
            e = base(rng, i, verb, "configmaps", "ResponseComplete");
            let leak = rng.below(100) == 0;
            e["requestObject"] = json!({"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "cfg"},
                "data": {"app.yaml": "mode: prod\nreplicas: 3\n", "extra": if leak { "aws_secret_access_key = abc" } else { "none" }}});
        }
        12..=13 => {
            let verb = rng.pick(&["get", "create"]);
            e = base(rng, i, verb, "pods", "ResponseStarted");
            e["objectRef"]["subresource"] = json!("exec");
            e["responseStatus"]["code"] = json!(101);
        }
        14..=15 => {
            e = base(rng, i, "create", "rolebindings", "ResponseComplete");
            let role = if rng.below(20) == 0 { "cluster-admin" } else { "view" };
            e["requestObject"] = json!({"kind": "RoleBinding", "roleRef": {"kind": "ClusterRole", "name": role},
                "subjects": [{"kind": "User", "name": "carol"}]});
        }
        16..=17 => {
            e = base(rng, i, "create", "services", "ResponseComplete");
            let t = if rng.below(10) == 0 { "NodePort" } else { "ClusterIP" };
            e["requestObject"] = json!({"kind": "Service", "spec": {"type": t, "ports": [{"port": 80}]}});
        }
        _ => {
            let resource = rng.pick(READ_RESOURCES);
            e = base(rng, i, "delete", resource, "ResponseComplete");
        }
    }
    e
}

#!/usr/bin/env bash
# What one crafted event costs a detector: events of the shim's largest size (900 KB) shaped to
# make the work grow faster than their size (objects of tens of thousands of keys indexed per
# key, nulls that take keys away, long lists read by rules and Falco's fields, a long user name,
# an exec URI of 60k arguments, a JSON patch of 15k operations), each scanned alone with the
# default and Falco's rules, in the Falco encoding and in OCSF (which embeds the redacted event).
# Seconds per event, loading the rules (~0.06 s) included; a detector's per-event budget (`detector.event_budget_ms`) bounds the rest.
# Usage: ./integration/bench-crafted.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin kaudit
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
./target/release/kaudit rules import-falco ../shared/falco/k8s_audit_rules.yaml > "$dir/falco.yaml" 2>/dev/null
python3 - "$dir" <<'EOF'
import json, sys
out = sys.argv[1]
base = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "x",
        "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/d/pods", "verb": "create",
        "user": {"username": "alice", "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.7"],
        "objectRef": {"resource": "pods", "namespace": "d", "name": "x"}, "responseStatus": {"code": 201},
        "stageTimestamp": "2026-11-20T10:00:00.000000Z"}
def event(name, **fields):
    with open(f"{out}/{name}.json", "w") as f:
        f.write(json.dumps({**base, **fields}))
keys = ",".join(f'"k{i}":1' for i in range(60000))
half = ",".join(f'"k{i}":1' for i in range(30000))
nulls = ",".join(f'"k{i}":null' for i in range(30000))
cm = {"objectRef": {"resource": "configmaps", "namespace": "d", "name": "x"}}
# Raw text: duplicate keys and nulls do not survive a Python dict.
for name, data in [("configmap-60k-keys", "{" + keys + "}"), ("configmap-30k-nulls", "{" + half + "," + nulls + "}")]:
    text = json.dumps({**base, **cm})[:-1] + ',"requestObject":{"kind":"ConfigMap","data":' + data + "}}"
    open(f"{out}/{name}.json", "w").write(text)
event("pod-12k-containers", requestObject={"kind": "Pod", "spec": {"containers": [
    {"name": f"c{i}", "image": f"i{i}", "securityContext": {"privileged": False}} for i in range(12000)]}})
event("pod-25k-env", requestObject={"kind": "Pod", "spec": {"containers": [
    {"name": "c", "image": "i", "env": [{"name": f"E{i}", "value": "v"} for i in range(25000)]}]}})
event("pod-40k-labels", requestObject={"kind": "Pod", "metadata": {"labels": {f"l{i}": "v" for i in range(40000)}},
                                       "spec": {"containers": [{"name": "c", "image": "i"}]}})
event("user-800k-name", user={"username": "a" * 800000})
event("audit-50k-annotations", annotations={f"k{i}": "v" for i in range(50000)})
event("rolebinding-25k-subjects", objectRef={"resource": "rolebindings", "namespace": "d", "name": "x"},
      requestObject={"kind": "RoleBinding", "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
                     "subjects": [{"kind": "User", "name": f"u{i}"} for i in range(25000)]})
event("clusterrole-15k-rules", objectRef={"resource": "clusterroles", "name": "x"},
      requestObject={"kind": "ClusterRole", "rules": [{"apiGroups": ["*"], "resources": [f"r{i}"], "verbs": ["get"]} for i in range(15000)]})
event("secret-15k-patch-ops", verb="patch", objectRef={"resource": "secrets", "namespace": "d", "name": "x"},
      requestObject=[{"op": "add", "path": f"/data/k{i}", "value": "dg=="} for i in range(15000)])
event("exec-60k-arguments", objectRef={"resource": "pods", "subresource": "exec", "namespace": "d", "name": "x"},
      requestURI="/api/v1/namespaces/d/pods/x/exec?" + "&".join(f"command=a{i}" for i in range(60000)))
EOF
t() { local s e; s=$(date +%s.%N); "$@" > /dev/null 2>&1; e=$(date +%s.%N); echo "$e - $s" | bc; }
printf '%-28s %8s %10s %10s\n' event KB falco-s ocsf-s
for f in "$dir"/*.json; do
    rules=(--rules rules --rules "$dir/falco.yaml")
    printf '%-28s %8d %10.2f %10.2f\n' "$(basename "$f" .json)" $(( $(wc -c < "$f") / 1024 )) \
        "$(t ./target/release/kaudit scan "${rules[@]}" "$f")" \
        "$(t ./target/release/kaudit scan --format ocsf "${rules[@]}" "$f")"
done

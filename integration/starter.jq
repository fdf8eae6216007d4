# The starter detections of rules/kaudit_rules.yaml as one jq filter, for the scan benchmark
# (integration/bench-scan.sh). Prints one line per match: the rule name and the audit ID.
def write: .verb as $v | ["create","update","patch"] | index($v) != null;
def complete: .stage == "ResponseComplete";
def ok: ((.responseStatus.code // 200) < 400);
def workload: (.objectRef.resource // "") as $r
  | (["pods","deployments","replicasets","statefulsets","daemonsets","jobs","cronjobs","replicationcontrollers"] | index($r) != null)
  and write and complete and ok;
def podspec: (.requestObject // {}) | if type != "object" then {} else
  (.spec.template.spec // .spec.jobTemplate.spec.template.spec // .spec // {}) end;
def containers: podspec | ((.containers // []) + (.initContainers // []) + (.ephemeralContainers // []));
def sensitive: ["/","/proc","/sys","/dev","/boot","/etc","/root","/home/admin","/var/run/docker.sock",
  "/run/containerd/containerd.sock","/var/run/containerd/containerd.sock","/var/run/crio/crio.sock",
  "/run/crio/crio.sock","/var/lib/kubelet","/etc/kubernetes","/var/lib/etcd","/var/log"];
def cred: test("(?i)(aws[_-]?(s3[_-]?)?(access|secret)[_-]?(access[_-]?)?key|password|passphrase|private[_-]?key|-----BEGIN [A-Z ]*PRIVATE KEY-----)");
[
  (select(workload and (containers | any(.securityContext.privileged == true))) | "Privileged container"),
  (select(workload and (podspec | (.volumes // []) | any(.hostPath.path as $p | $p != null and
     (sensitive | any(. as $s | $p == $s or ($s != "/" and ($p | startswith($s + "/")))))))) | "Sensitive host path mounted"),
  (select(workload and (podspec | (.hostNetwork == true or .hostPID == true or .hostIPC == true))) | "Host namespace shared"),
  (select(.objectRef.resource == "pods" and ((.objectRef.subresource // "") | IN("exec","attach"))
     and (.verb | IN("create","get")) and .stage == "ResponseStarted") | "Exec or attach into pod"),
  (select(.objectRef.resource == "configmaps" and write and complete and ok
     and ((.requestObject.data // {}) | to_entries | any((.key | cred) or ((.value | tostring) | cred)))) | "ConfigMap with private credentials"),
  (select(.user.username == "system:anonymous" and complete and .annotations["authorization.k8s.io/decision"] == "allow"
     and ((.requestURI // "") | test("^/(healthz|livez|readyz|version)([?/].*)?$") | not)) | "Anonymous request allowed"),
  (select(((.objectRef.resource // "") | IN("clusterrolebindings","rolebindings")) and write and complete and ok
     and .requestObject.roleRef.name == "cluster-admin") | "Binding to cluster-admin"),
  (select(((.objectRef.resource // "") | IN("clusterroles","roles")) and write and complete and ok
     and ((.requestObject.rules // []) | any(((.verbs // []) | index("*") != null) or ((.resources // []) | index("*") != null)))) | "Role with wildcard permissions"),
  (select(.objectRef.resource == "services" and write and complete and ok and .requestObject.spec.type == "NodePort") | "NodePort service created")
][] + " " + .auditID

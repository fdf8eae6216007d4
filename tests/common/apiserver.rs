//! A real kube-apiserver (v1.20.2) with etcd on loopback, from `../shared/tools/kube-apiserver`:
//! `integration/test.sh` builds it once into `KAUDIT_KUBE_APISERVER_DIR` (default
//! `~/.cache/kaudit/kube-apiserver`); a test starts one with its own ports, state folder, audit
//! policy and webhook kubeconfig, drives it with kubectl, and stops it on drop.

use super::brokers::free_port;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/tools/kube-apiserver`: the scripts that build and run the apiserver.
fn tools() -> PathBuf {
    super::shared_dir().join("tools/kube-apiserver")
}

/// Where build.sh put the apiserver.
fn build_dir() -> PathBuf {
    let dir = std::env::var_os("KAUDIT_KUBE_APISERVER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/kaudit/kube-apiserver")
        });
    assert!(
        dir.join("bin/kube-apiserver").is_file(),
        "no kube-apiserver in {}: run ./integration/test.sh (it builds one, about 5 minutes the first time), or \
         ../shared/tools/kube-apiserver/build.sh {}",
        dir.display(),
        dir.display()
    );
    dir
}

pub struct Apiserver {
    build: PathBuf,
    pub state: PathBuf,
    pub port: u16,
}

impl Apiserver {
    /// Starts etcd and the apiserver with `policy`, posting audit batches as
    /// `webhook_kubeconfig` says (every `batch_max_wait`), and writing them to `audit_log()` too.
    pub fn start(state: &Path, policy: &Path, webhook_kubeconfig: &Path) -> Apiserver {
        let build = build_dir();
        let port = free_port();
        let out = Command::new("bash")
            .arg(tools().join("run.sh"))
            .env("KAPI_DIR", &build)
            .env("STATE", state)
            .env("AUDIT_POLICY", policy)
            .env("SECURE_PORT", port.to_string())
            .env("ETCD_CLIENT_PORT", free_port().to_string())
            .env("ETCD_PEER_PORT", free_port().to_string())
            .env("BATCH_MAX_WAIT", "1s")
            // The last occurrence of a flag wins: kaudit's kubeconfig replaces run.sh's own.
            .env(
                "EXTRA_APISERVER_FLAGS",
                format!("--audit-webhook-config-file={}", webhook_kubeconfig.display()),
            )
            .output()
            .expect("bash runs");
        let server = Apiserver {
            build,
            state: state.to_path_buf(),
            port,
        };
        assert!(
            out.status.success(),
            "run.sh failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            server.log()
        );
        server
    }

    /// The file backend's audit log: the same events the webhook is sent.
    pub fn audit_log(&self) -> PathBuf {
        self.state.join("logs/audit.log")
    }

    /// The apiserver's own log, for failure messages.
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.state.join("logs/kube-apiserver.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// kubectl as `admin` (system:masters) or, with `--context dev`, as a user with no rights.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", self.state.join("kubeconfig"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("kubectl is installed (integration/test.sh installs kubernetes-client)");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        child.wait_with_output().unwrap()
    }
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(tools().join("stop.sh"))
            .env("KAPI_DIR", &self.build)
            .env("STATE", &self.state)
            .output();
    }
}

/// `../shared/tools/kube-apiserver/audit-policy-requestresponse.yaml`: every request at
/// RequestResponse level.
pub fn request_response_policy() -> PathBuf {
    tools().join("audit-policy-requestresponse.yaml")
}

//! `kaudit webhook-config`: the kubeconfig a kube-apiserver's `--audit-webhook-config-file`
//! reads to post its audit events to the shim.
//!
//! It refuses what would fail silently on the apiserver's side: client-go reads a kubeconfig's
//! credentials (token file, client certificate) only for an `https://` server, so with
//! `http://` every batch would arrive without them, get 401 and be dropped after the apiserver's
//! retries. Values are written as double-quoted scalars (JSON string syntax, which YAML reads
//! the same), so no path or name can change the document's structure.

use std::path::{Path, PathBuf};

/// What the apiserver needs to reach and authenticate to the shim.
#[derive(Debug, Default, Clone)]
pub struct WebhookKubeconfig {
    /// The cluster the apiserver belongs to; it goes into the URL path.
    pub cluster: String,
    /// The shim's base URL (`https://host:port`).
    pub server: String,
    /// File with the cluster's bearer token, as the apiserver will read it.
    pub token_file: Option<PathBuf>,
    /// CA the apiserver verifies the shim's certificate with.
    pub certificate_authority: Option<PathBuf>,
    /// Client certificate and key for mTLS (the certificate's CN names the cluster in the shim).
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

fn path(p: &Path) -> String {
    quoted(&p.to_string_lossy())
}

impl WebhookKubeconfig {
    /// The kubeconfig's text, or what is wrong with the request for it.
    pub fn render(&self) -> anyhow::Result<String> {
        crate::ingest::check_cluster_name(&self.cluster).map_err(|e| anyhow::anyhow!("--cluster: {e}"))?;
        let base = self.server.trim_end_matches('/');
        let https = base.starts_with("https://");
        if !https && !base.starts_with("http://") {
            anyhow::bail!("--server {:?}: give the shim's URL, https://host:port", self.server);
        }
        if self.client_certificate.is_some() != self.client_key.is_some() {
            anyhow::bail!("--client-certificate and --client-key go together");
        }
        let credentials = self.token_file.is_some() || self.client_certificate.is_some();
        if !https && credentials {
            anyhow::bail!(
                "--server {}: the apiserver sends a kubeconfig's token or client certificate only to an \
                 https:// server (client-go drops them for http://), so every batch would get 401 and be \
                 lost after its retries. Give the shim [shim.tls] and use https:// with --certificate-authority",
                self.server
            );
        }
        if !https && self.certificate_authority.is_some() {
            anyhow::bail!("--certificate-authority is for an https:// server, not {}", self.server);
        }
        let mut out = String::from("# kube-apiserver --audit-webhook-config-file for kaudit\n");
        out.push_str("apiVersion: v1\nkind: Config\nclusters:\n  - name: kaudit\n    cluster:\n");
        out.push_str(&format!(
            "      server: {}\n",
            quoted(&format!("{base}/k8s_audit/{}", self.cluster))
        ));
        if let Some(ca) = &self.certificate_authority {
            out.push_str(&format!("      certificate-authority: {}\n", path(ca)));
        }
        out.push_str("users:\n  - name: kaudit-webhook\n    user:");
        let mut user = Vec::new();
        if let Some(f) = &self.token_file {
            user.push(format!("      tokenFile: {}\n", path(f)));
        }
        if let (Some(cert), Some(key)) = (&self.client_certificate, &self.client_key) {
            user.push(format!("      client-certificate: {}\n", path(cert)));
            user.push(format!("      client-key: {}\n", path(key)));
        }
        if user.is_empty() {
            out.push_str(" {}\n");
        } else {
            out.push('\n');
            out.extend(user);
        }
        out.push_str("contexts:\n  - name: kaudit\n    context:\n      cluster: kaudit\n      user: kaudit-webhook\n");
        out.push_str("current-context: kaudit\n");
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> serde_json::Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn credentials_only_for_https_and_values_cannot_break_the_document() {
        let mut k = WebhookKubeconfig {
            cluster: "prod".into(),
            server: "http://kaudit:8765".into(),
            token_file: Some("/etc/kaudit/token".into()),
            ..Default::default()
        };
        let e = k.render().unwrap_err().to_string();
        assert!(e.contains("only to an https:// server"), "{e}");
        k.token_file = None;
        k.client_certificate = Some("/c.pem".into());
        assert!(k.render().unwrap_err().to_string().contains("go together"));
        k.client_key = Some("/k.pem".into());
        assert!(k.render().unwrap_err().to_string().contains("https://"));
        // Without credentials, plain HTTP is allowed (loopback demos with allow_unauthenticated).
        k.client_certificate = None;
        k.client_key = None;
        let doc = parsed(&k.render().unwrap());
        assert_eq!(
            doc["clusters"][0]["cluster"]["server"],
            "http://kaudit:8765/k8s_audit/prod"
        );
        assert_eq!(doc["users"][0]["user"], serde_json::json!({}));

        let k = WebhookKubeconfig {
            cluster: "prod".into(),
            server: "https://kaudit:8765/".into(),
            token_file: Some("/etc/kaudit/a: b\n#x".into()),
            certificate_authority: Some("/etc/kaudit/ca.pem".into()),
            client_certificate: Some("/c.pem".into()),
            client_key: Some("/k.pem".into()),
        };
        let doc = parsed(&k.render().unwrap());
        let user = &doc["users"][0]["user"];
        assert_eq!(user["tokenFile"], "/etc/kaudit/a: b\n#x");
        assert_eq!(user["client-certificate"], "/c.pem");
        assert_eq!(user["client-key"], "/k.pem");
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority"],
            "/etc/kaudit/ca.pem"
        );
        assert_eq!(doc["current-context"], "kaudit");
        let bad = WebhookKubeconfig {
            cluster: "prod/../x".into(),
            server: "https://kaudit".into(),
            ..Default::default()
        };
        assert!(bad.render().unwrap_err().to_string().contains("--cluster"));
    }
}

//! Who is posting: the cluster comes from the credential, never from the body.
//!
//! A per-cluster bearer token (read from a file named in the config) or an mTLS client
//! certificate whose subject CN maps to a cluster identifies the cluster. A path cluster
//! (`/k8s_audit/{cluster}`) must agree with the credential. Without any credential the request
//! is refused, unless `allow_unauthenticated` is set (loopback demos), where the path names the
//! cluster (or `default`).

use super::ClusterConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No credential, or one we do not know (401).
    Unauthenticated,
    /// A valid credential for another cluster than the path names (403).
    WrongCluster { credential: String, path: String },
}

/// The cluster of an mTLS client, set on the connection by the server.
#[derive(Debug, Clone)]
pub struct PeerCluster(pub Option<String>);

#[derive(Debug, Default)]
pub struct Authenticator {
    /// sha256(token) → cluster: lookups do not compare secrets byte by byte.
    tokens: HashMap<[u8; 32], String>,
    cert_names: HashMap<String, String>,
    /// cluster → patterns of the clusters its envelopes may name (`forwards`).
    forwards: HashMap<String, Vec<String>>,
    allow_unauthenticated: bool,
}

fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Authenticator {
    pub fn new(clusters: &[ClusterConfig], allow_unauthenticated: bool) -> anyhow::Result<Authenticator> {
        let mut auth = Authenticator {
            allow_unauthenticated,
            ..Default::default()
        };
        for c in clusters {
            if c.name.is_empty()
                || !c
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            {
                anyhow::bail!("cluster name {:?}: use letters, digits, '-', '_' and '.'", c.name);
            }
            if let Some(file) = &c.token_file {
                let token = std::fs::read_to_string(file)
                    .map_err(|e| anyhow::anyhow!("cluster {}: token_file {}: {e}", c.name, file.display()))?;
                let token = token.trim();
                if token.len() < 16 {
                    anyhow::bail!(
                        "cluster {}: token in {} is shorter than 16 characters",
                        c.name,
                        file.display()
                    );
                }
                if auth.tokens.insert(token_digest(token), c.name.clone()).is_some() {
                    anyhow::bail!("cluster {}: its token is also another cluster's", c.name);
                }
            }
            if let Some(cn) = &c.client_cert_cn {
                auth.cert_names.insert(cn.clone(), c.name.clone());
            }
            auth.forwards.insert(c.name.clone(), c.forwards.clone());
        }
        Ok(auth)
    }

    /// Whether a request authenticated as `cluster` may publish a record whose envelope names
    /// `named`: its own name, a cluster its `forwards` patterns match (`*` alone matches any, a
    /// trailing `*` a prefix), or anything when requests are not authenticated at all (demos).
    pub fn may_name(&self, cluster: &str, named: &str) -> bool {
        if cluster == named || self.allow_unauthenticated {
            return true;
        }
        self.forwards.get(cluster).is_some_and(|patterns| {
            patterns.iter().any(|p| match p.strip_suffix('*') {
                Some(prefix) => named.starts_with(prefix),
                None => p == named,
            })
        })
    }

    /// The cluster an mTLS client certificate with this subject CN stands for.
    pub fn cluster_of_cert(&self, common_name: &str) -> Option<String> {
        self.cert_names.get(common_name).cloned()
    }

    /// Decides the cluster of a request.
    pub fn cluster(
        &self,
        peer: Option<&str>,
        authorization: Option<&str>,
        path_cluster: Option<&str>,
    ) -> Result<String, Refusal> {
        let bearer = authorization.and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")));
        let credential = match (bearer, peer) {
            (Some(token), _) => Some(
                self.tokens
                    .get(&token_digest(token.trim()))
                    .cloned()
                    .ok_or(Refusal::Unauthenticated)?,
            ),
            (None, Some(peer)) => Some(peer.to_string()),
            (None, None) => None,
        };
        match (credential, path_cluster) {
            (Some(c), Some(p)) if c != p => Err(Refusal::WrongCluster {
                credential: c,
                path: p.to_string(),
            }),
            (Some(c), _) => Ok(c),
            (None, _) if !self.allow_unauthenticated => Err(Refusal::Unauthenticated),
            (None, Some(p)) => Ok(p.to_string()),
            (None, None) => Ok("default".to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(allow: bool) -> (Authenticator, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, "token-of-cluster-a-0123\n").unwrap();
        std::fs::write(&b, "token-of-cluster-b-4567").unwrap();
        let clusters = vec![
            ClusterConfig {
                name: "a".into(),
                token_file: Some(a),
                client_cert_cn: None,
                forwards: vec!["eks-*".into(), "gke-one".into()],
            },
            ClusterConfig {
                name: "b".into(),
                token_file: Some(b),
                client_cert_cn: Some("apiserver-b".into()),
                forwards: Vec::new(),
            },
        ];
        (Authenticator::new(&clusters, allow).unwrap(), dir)
    }

    #[test]
    fn envelopes_may_name_only_forwarded_clusters() {
        let (a, _d) = auth(false);
        assert!(a.may_name("a", "a") && a.may_name("a", "eks-prod") && a.may_name("a", "gke-one"));
        assert!(!a.may_name("a", "gke-two") && !a.may_name("a", "b") && !a.may_name("b", "eks-prod"));
        let (open, _d) = auth(true);
        assert!(open.may_name("b", "anything"));
    }

    #[test]
    fn tokens_name_their_cluster_and_no_other() {
        let (a, _d) = auth(false);
        assert_eq!(
            a.cluster(None, Some("Bearer token-of-cluster-a-0123"), None),
            Ok("a".into())
        );
        assert_eq!(
            a.cluster(None, Some("Bearer token-of-cluster-a-0123"), Some("a")),
            Ok("a".into())
        );
        assert!(matches!(
            a.cluster(None, Some("Bearer token-of-cluster-a-0123"), Some("b")),
            Err(Refusal::WrongCluster { .. })
        ));
        assert_eq!(
            a.cluster(None, Some("Bearer nope"), Some("a")),
            Err(Refusal::Unauthenticated)
        );
        assert_eq!(a.cluster(None, None, Some("a")), Err(Refusal::Unauthenticated));
        assert_eq!(a.cluster_of_cert("apiserver-b"), Some("b".into()));
        assert_eq!(a.cluster(Some("b"), None, Some("b")), Ok("b".into()));
        assert!(a.cluster(Some("b"), None, Some("a")).is_err());
    }

    #[test]
    fn unauthenticated_only_when_allowed() {
        let (a, _d) = auth(true);
        assert_eq!(a.cluster(None, None, Some("x")), Ok("x".into()));
        assert_eq!(a.cluster(None, None, None), Ok("default".into()));
        // A wrong token is still refused.
        assert_eq!(
            a.cluster(None, Some("Bearer nope"), None),
            Err(Refusal::Unauthenticated)
        );
    }
}

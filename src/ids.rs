//! Identities every stage shares: stable digests (alert ids, dedup keys, summary ids) and this
//! host's name. At the bottom of the tree, so that the engine (which makes dedup keys) and the
//! alert (which makes ids) need not import each other.

use sha2::{Digest, Sha256};

/// A stable 128-bit hex digest of the parts (NUL-separated, so parts cannot run together).
pub fn digest(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// This machine's name, as alerts carry it (`hostname`, as in Falco); read once.
pub fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_separates_parts() {
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&["a"]).len(), 32);
    }
}

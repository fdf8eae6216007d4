//! Identities every stage shares: stable digests (alert ids, dedup keys, summary ids) and this
//! host's name. At the bottom of the tree, so that the engine (which makes dedup keys) and the
//! alert (which makes ids) need not import each other.

use sha2::{Digest, Sha256};

/// A stable 128-bit hex digest of the parts (NUL-separated, so parts cannot run together).
pub fn digest(parts: &[&str]) -> String {
    let mut d = Digester::default();
    for p in parts {
        d.part(p.as_bytes());
    }
    d.finish()
}

/// [`digest`] fed one part at a time.
#[derive(Default)]
pub struct Digester(Sha256);

impl Digester {
    pub fn part(&mut self, part: &[u8]) {
        self.0.update(part);
        self.0.update([0]);
    }

    pub fn finish(self) -> String {
        hex::encode(&self.0.finalize()[..16])
    }
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

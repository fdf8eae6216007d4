//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared`, where the Falco reference data lives; `None` (with a printed reason) when absent.
pub fn shared() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    if dir.join("falco/traces").is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipping: {} is absent (it holds the Falco reference data)",
            dir.display()
        );
        None
    }
}

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
pub mod brokers;

pub mod alert;
pub mod audit;
pub mod engine;
pub mod falco;
pub mod scan;

/// This machine's name, as alerts carry it (`hostname`, as in Falco).
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
pub mod bus;
pub mod config;
pub mod dedup;
pub mod detector;
pub mod ingest;
pub mod pipeline;
pub mod policy;
pub mod shim;
pub mod tail;
pub mod telemetry;

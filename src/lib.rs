//! kaudit: threat detection on Kubernetes audit events as they stream.
//!
//! Data flows one way: `audit` decodes records (native Events, EventLists, EKS/GKE/AKS
//! envelopes) → the sources (`shim` for apiservers' webhooks, `tail` for log files) hand them to
//! `ingest`, which publishes one message per event on the `bus` (memory, Kafka, NATS) → a
//! `detector` consumes and runs each event through the `detect` stage: the `engine` evaluates
//! the rules (compiled path, the CEL interpreter as reference), `dedup` applies windows and rate
//! limits (state per partition, moved with it and checkpointed through the bus before each
//! commit) → `alert` encodes, redacts and publishes.
//! `pipeline` wires the roles; `scan`, `policy` and `falco` are the offline tools; `telemetry`
//! exports metrics, traces (one trace per event, across the bus) and health; `cli` is the
//! command line over all of it.

pub mod alert;
pub mod audit;
pub mod cli;
pub mod engine;
pub mod tools;

/// Stack of the threads that evaluate rules (the runtime's workers and blocking pool): room for
/// [`engine::MAX_EXPR_DEPTH`] levels of the interpreter's recursion even in a debug build.
pub const EVALUATION_STACK_BYTES: usize = 16 * 1024 * 1024;

pub mod backoff;
pub mod bus;
pub mod config;
pub mod dedup;
pub mod detect;
pub mod detector;
pub mod ids;
pub mod ingest;
pub mod pipeline;
pub mod reload;
pub mod shim;
pub mod shutdown;
pub mod tail;
pub mod telemetry;

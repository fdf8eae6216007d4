//! kaudit: threat detection on Kubernetes audit events as they stream.
//!
//! Data flows one way: `audit` decodes records (native Events, EventLists, EKS/GKE/AKS
//! envelopes) → the sources (`shim` for apiservers' webhooks, `tail` for log files) hand them to
//! `ingest`, which publishes one message per event on the `bus` (memory, Kafka, NATS) → a
//! `detector` consumes and runs each event through the `detect` stage: the `engine` (pure: load,
//! compile, evaluate; the compiled path, the CEL interpreter as reference) evaluates the rules,
//! `dedup` applies windows and rate limits (state per partition, moved with it and checkpointed
//! through the bus before each commit), `detect` makes the `alert` → the `alert` sinks encode,
//! redact and publish. `ids` (digests, the host name), `shutdown` and `backoff` are the ground
//! floor every layer may use; `telemetry` exports metrics (fed by callbacks, knowing no rule
//! set), traces (one trace per event, across the bus) and health. `pipeline` wires the roles,
//! `reload` swaps the detector's rules; `tools` holds the offline tools (scan, rule fixtures, the
//! catalog, the Falco importer, the policy check); `cli` is the command line over all of it.

pub mod alert;
pub mod audit;
pub mod backoff;
pub mod bus;
pub mod cli;
pub mod config;
pub mod dedup;
pub mod detect;
pub mod detector;
pub mod engine;
pub mod ids;
pub mod ingest;
pub mod pipeline;
pub mod reload;
pub mod shim;
pub mod shutdown;
pub mod tail;
pub mod telemetry;
pub mod tools;

/// Stack of the threads that evaluate rules (the runtime's workers and blocking pool): room for
/// [`engine::MAX_EXPR_DEPTH`] levels of the interpreter's recursion even in a debug build.
pub const EVALUATION_STACK_BYTES: usize = 16 * 1024 * 1024;

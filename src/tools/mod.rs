//! The offline tools: what works on files and rule sets rather than on the stream. Each is a
//! library function the command line (`cli`) calls; none runs in a pipeline.
//!
//! - [`scan`]: `kaudit scan`, the detect stage over audit log files;
//! - [`fixtures`]: `kaudit rules test`, every rule against the events it must and must not fire on;
//! - [`catalog`]: `kaudit rules doc`, the README's table of rules;
//! - [`falco`]: `kaudit rules import-falco`, Falco's k8s_audit rule files as kaudit rules;
//! - [`policy`]: `kaudit policy check`, an apiserver audit policy against what the rules need.

pub mod catalog;
pub mod falco;
pub mod fixtures;
pub mod policy;
pub mod scan;

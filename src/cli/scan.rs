//! `kaudit scan`: the engine over files, alerts as JSON lines on stdout, a summary on stderr.

use crate::alert::encode::{Encoder, Encoding};
use crate::audit::Format;
use crate::engine::{Matching, RuleSet};
use clap::Args;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args)]
pub struct ScanArgs {
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Rule files or directories, loaded in order (later files override earlier ones).
    #[arg(long = "rules", default_value = "rules")]
    rules: Vec<PathBuf>,
    /// Cluster of the events whose envelope names none.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Shape of the records: auto (recognised per record), native, eks, gke, aks.
    #[arg(long, default_value = "auto")]
    input: Format,
    /// Encoding of the alerts: falco (Falco's JSON plus kaudit's fields), ocsf, ecs.
    #[arg(long, value_enum, default_value_t = Encoding::Falco)]
    format: Encoding,
    /// Attach the (redacted) triggering event to every alert.
    #[arg(long)]
    include_event: bool,
    /// Do not redact secrets from the alerts (a local investigation of your own files).
    #[arg(long)]
    no_redact: bool,
    /// Stop at the first matching rule per event (Falco's default) or fire all.
    #[arg(long, value_enum, default_value_t = Matching::All)]
    rule_matching: Matching,
    /// Show every match: no rate limits (stateful rules still alert when their window fires).
    #[arg(long)]
    no_dedup: bool,
    /// Measure each rule's evaluation time and print the costliest rules after the summary.
    #[arg(long)]
    profile: bool,
}

pub fn run(args: ScanArgs) -> anyhow::Result<ExitCode> {
    let mut rules = RuleSet::load(&args.rules, args.rule_matching)?;
    if args.profile {
        rules.profile();
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let options = crate::tools::scan::Options {
        cluster: args.cluster,
        format: args.input,
        encoder: Encoder::builtin(args.format, args.include_event, !args.no_redact),
        progress: std::io::stderr().is_terminal(),
        dedup: if args.no_dedup {
            crate::dedup::DedupConfig::off()
        } else {
            crate::dedup::DedupConfig::default()
        },
    };
    let summary = crate::tools::scan::scan(&args.files, &rules, &options, &mut out)?;
    crate::tools::scan::report(&summary, &rules, &mut std::io::stderr())?;
    if args.profile {
        crate::tools::scan::profile(&rules, &mut std::io::stderr())?;
    }
    Ok(ExitCode::SUCCESS)
}

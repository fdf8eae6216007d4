//! The `kaudit` command line: parses arguments and calls the library.

use clap::{Parser, Subcommand};
use kaudit::engine::{Matching, RuleSet};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kaudit",
    version,
    about = "Streaming threat detection for Kubernetes audit events"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan audit log files (JSON lines, EventList, JSON array, .gz; `-` for stdin) and print alerts as JSON lines.
    Scan {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Rule files or directories, loaded in order (later files override earlier ones).
        #[arg(long = "rules", default_value = "rules")]
        rules: Vec<PathBuf>,
        /// Cluster name to put on the alerts.
        #[arg(long, default_value = "default")]
        cluster: String,
        /// Stop at the first matching rule per event (Falco's default) or fire all.
        #[arg(long, value_enum, default_value_t = Matching::All)]
        rule_matching: Matching,
    },
    /// Work with rule files.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Load and compile rule files; print every problem; exit non-zero on any.
    Lint {
        #[arg(default_value = "rules")]
        paths: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("KAUDIT_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaudit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Scan {
            files,
            rules,
            cluster,
            rule_matching,
        } => {
            let rules = RuleSet::load(&rules, rule_matching)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let summary = kaudit::scan::scan(&files, &rules, &cluster, &mut out, std::io::stderr().is_terminal())?;
            kaudit::scan::report(&summary, &rules, &mut std::io::stderr())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command: RulesCommand::Lint { paths },
        } => match RuleSet::load(&paths, Matching::All) {
            Ok(set) => {
                let enabled = set.rules().iter().filter(|r| r.enabled).count();
                println!("ok: {} rules ({} enabled)", set.rules().len(), enabled);
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors.0 {
                    println!("{e}");
                }
                println!("{} problem(s)", errors.0.len());
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

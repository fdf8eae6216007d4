//! The `kaudit` command line: the commands, their arguments, and what each runs. One file per
//! family: [`serve`] (run, shim, detect, tail: the long-running roles), [`scan`], [`rules`]
//! (lint, test, doc, import-falco), [`policy`]; `webhook-config` is a few lines here. Errors
//! end as `kaudit: …` on stderr and exit code 2; a check that finds problems exits with 1.

mod policy;
mod rules;
mod scan;
mod serve;

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kaudit",
    version,
    about = "Streaming threat detection for Kubernetes audit events"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Scan audit log files (JSON lines, EventList, JSON array, .gz, EKS/GKE/AKS records; `-` for stdin) and print alerts as JSON lines.
    Scan(scan::ScanArgs),
    /// Run shim, detector and alert output in one process (the embedded default: in-memory bus).
    Run {
        /// Pipeline config (TOML); KAUDIT__SECTION__KEY environment variables override it.
        #[arg(long, default_value = serve::DEFAULT_PIPELINE)]
        pipeline: PathBuf,
    },
    /// Run the webhook shim only: receive audit events and publish them to the bus.
    Shim {
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Run a detector only: consume events from the bus, evaluate, publish alerts.
    Detect {
        #[arg(long)]
        pipeline: PathBuf,
    },
    /// Follow an audit log file (the apiserver's log backend) and publish its events to the bus,
    /// through rotations and restarts. With the in-memory bus, a detector runs in this process.
    Tail(serve::TailArgs),
    /// Print a kubeconfig for the kube-apiserver's --audit-webhook-config-file.
    WebhookConfig(WebhookConfigArgs),
    /// Check an apiserver audit Policy against the rules: which can never fire, which fire
    /// without the request body they need.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Work with rule files.
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
}

#[derive(Args)]
struct WebhookConfigArgs {
    /// The cluster this apiserver belongs to (it goes into the URL path).
    #[arg(long)]
    cluster: String,
    /// The shim's base URL, e.g. https://kaudit.example.com:8765
    #[arg(long)]
    server: String,
    /// File with this cluster's bearer token, as the apiserver will read it.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// CA file the apiserver uses to verify the shim's certificate.
    #[arg(long)]
    certificate_authority: Option<PathBuf>,
    /// Client certificate for mTLS (its CN is a cluster's `client_cert_cn` in the shim).
    #[arg(long, requires = "client_key")]
    client_certificate: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long, requires = "client_certificate")]
    client_key: Option<PathBuf>,
}

/// Parses the arguments, runs the command, and turns an error into `kaudit: …` and exit code 2.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaudit: {e:#}");
            ExitCode::from(2)
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    use crate::pipeline::Roles;
    match cli.command {
        Command::Scan(args) => scan::run(args),
        Command::Run { pipeline } => serve::run(pipeline, Roles::All),
        Command::Shim { pipeline } => serve::run(pipeline, Roles::Shim),
        Command::Detect { pipeline } => serve::run(pipeline, Roles::Detector),
        Command::Tail(args) => serve::tail(args),
        Command::WebhookConfig(args) => {
            let kubeconfig = crate::shim::kubeconfig::WebhookKubeconfig {
                cluster: args.cluster,
                server: args.server,
                token_file: args.token_file,
                certificate_authority: args.certificate_authority,
                client_certificate: args.client_certificate,
                client_key: args.client_key,
            };
            print!("{}", kubeconfig.render()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => policy::run(command),
        Command::Rules { command } => rules::run(command),
    }
}

//! `kaudit run | shim | detect | tail`: the long-running roles, on a multi-threaded runtime
//! whose threads have the stack deep evaluation needs, until SIGTERM or SIGINT.

use crate::audit::Format;
use crate::config::PipelineConfig;
use crate::pipeline::Roles;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// `kaudit run`'s pipeline when none is named; optional (the built-in defaults apply without it).
pub const DEFAULT_PIPELINE: &str = "pipelines/all-in-one.toml";

#[derive(Args)]
pub struct TailArgs {
    file: PathBuf,
    #[arg(long, default_value = DEFAULT_PIPELINE)]
    pipeline: PathBuf,
    /// Cluster of the events whose envelope names none.
    #[arg(long, default_value = "default")]
    cluster: String,
    /// Shape of the lines: auto (recognised per line), native, eks, gke, aks.
    #[arg(long, default_value = "auto")]
    input: Format,
    /// Where the position is kept [default: FILE.kaudit-checkpoint].
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Most lines per published batch.
    #[arg(long, default_value_t = 500)]
    batch_lines: usize,
}

pub fn tail(args: TailArgs) -> anyhow::Result<ExitCode> {
    let mut tail = crate::tail::TailConfig::new(args.file);
    tail.cluster = args.cluster;
    tail.format = args.input;
    tail.batch_lines = args.batch_lines.max(1);
    if let Some(checkpoint) = args.checkpoint {
        tail.checkpoint = checkpoint;
    }
    run(args.pipeline, Roles::Tail(tail))
}

pub fn run(pipeline: PathBuf, roles: Roles) -> anyhow::Result<ExitCode> {
    let file = (pipeline.as_os_str() != DEFAULT_PIPELINE || pipeline.is_file()).then_some(pipeline.as_path());
    let config = PipelineConfig::load(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(crate::EVALUATION_STACK_BYTES)
        .build()?;
    let role = match &roles {
        Roles::All => "run",
        Roles::Shim => "shim",
        Roles::Detector => "detect",
        Roles::Tail(_) => "tail",
    };
    runtime.block_on(async {
        // Flushes buffered spans and metrics once the pipeline has stopped.
        let _exported = crate::telemetry::otel::init(&config.telemetry.otlp, role)?;
        let running = crate::pipeline::start(config, roles).await?;
        running.until_signalled().await
    })?;
    Ok(ExitCode::SUCCESS)
}

//! The `kaudit` command line: parses arguments and calls the library.

use clap::{Parser, Subcommand};
use kaudit::alert::encode::Encoding;
use kaudit::audit::Format;
use kaudit::config::PipelineConfig;
use kaudit::engine::{Matching, RuleSet};
use kaudit::pipeline::Roles;
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
    /// Scan audit log files (JSON lines, EventList, JSON array, .gz, EKS/GKE/AKS records; `-` for stdin) and print alerts as JSON lines.
    Scan {
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
    },
    /// Run shim, detector and alert output in one process (the embedded default: in-memory bus).
    Run {
        /// Pipeline config (TOML); KAUDIT__SECTION__KEY environment variables override it.
        #[arg(long, default_value = DEFAULT_PIPELINE)]
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
    Tail {
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
    },
    /// Print a kubeconfig for the kube-apiserver's --audit-webhook-config-file.
    WebhookConfig {
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
    },
    /// Check an apiserver audit Policy against the rules: which can never fire, which fire
    /// without the request body they need.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
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
        /// Also show, for the rules whose name contains this text, what the engine derived:
        /// the prefilter's keys, the fields read, the audit level needed, and how much of the
        /// condition runs compiled.
        #[arg(long, value_name = "RULE")]
        explain: Option<String>,
    },
    /// Translate Falco k8s_audit rule files (loaded in order, as Falco does) into one kaudit rule
    /// file; every untranslatable construct is an error naming its rule.
    ImportFalco {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Where to write the rules (default: stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Leave out rules that cannot be translated (listed on stderr) instead of failing.
        #[arg(long)]
        lenient: bool,
    },
    /// Print the rules as the README's Markdown table (what each detects, needs, MITRE tags,
    /// the ideas and Falco rules it covers).
    Doc {
        #[arg(default_value = "rules")]
        paths: Vec<PathBuf>,
    },
    /// Run every rule's fixtures (inline, or fixtures/<rule>/ beside its file); print a table;
    /// exit non-zero on any failure.
    Test {
        #[arg(default_value = "rules")]
        paths: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Evaluate POLICY as the apiserver does for every request each rule looks at.
    Check {
        policy: PathBuf,
        #[arg(long = "rules", default_value = "rules")]
        rules: Vec<PathBuf>,
    },
}

const DEFAULT_PIPELINE: &str = "pipelines/all-in-one.toml";

fn main() -> ExitCode {
    kaudit::telemetry::init_logs();
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kaudit: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn serve(pipeline: PathBuf, roles: Roles) -> anyhow::Result<ExitCode> {
    // The default pipeline file is optional: without it the built-in defaults apply.
    let file = (pipeline.as_os_str() != DEFAULT_PIPELINE || pipeline.is_file()).then_some(pipeline.as_path());
    let config = PipelineConfig::load(file)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(kaudit::EVALUATION_STACK_BYTES)
        .build()?;
    runtime.block_on(async {
        let running = kaudit::pipeline::start(config, roles).await?;
        running.until_signalled().await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { pipeline } => serve(pipeline, Roles::All),
        Command::Shim { pipeline } => serve(pipeline, Roles::Shim),
        Command::Detect { pipeline } => serve(pipeline, Roles::Detector),
        Command::Tail {
            file,
            pipeline,
            cluster,
            input,
            checkpoint,
            batch_lines,
        } => {
            let mut tail = kaudit::tail::TailConfig::new(file);
            tail.cluster = cluster;
            tail.format = input;
            tail.batch_lines = batch_lines.max(1);
            if let Some(checkpoint) = checkpoint {
                tail.checkpoint = checkpoint;
            }
            serve(pipeline, Roles::Tail(tail))
        }
        Command::WebhookConfig {
            cluster,
            server,
            token_file,
            certificate_authority,
            client_certificate,
            client_key,
        } => {
            let kubeconfig = kaudit::shim::kubeconfig::WebhookKubeconfig {
                cluster,
                server,
                token_file,
                certificate_authority,
                client_certificate,
                client_key,
            };
            print!("{}", kubeconfig.render()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Scan {
            files,
            rules,
            cluster,
            input,
            format,
            include_event,
            no_redact,
            rule_matching,
            no_dedup,
        } => {
            let rules = RuleSet::load(&rules, rule_matching)?;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
            let redactor = (!no_redact)
                .then(|| kaudit::alert::redact::Redactor::new(&Default::default()))
                .transpose()?
                .map(std::sync::Arc::new);
            let options = kaudit::scan::Options {
                cluster,
                format: input,
                encoder: kaudit::alert::encode::Encoder {
                    encoding: format,
                    include_event,
                    redactor,
                },
                progress: std::io::stderr().is_terminal(),
                dedup: if no_dedup {
                    kaudit::dedup::DedupConfig::off()
                } else {
                    kaudit::dedup::DedupConfig::default()
                },
            };
            let summary = kaudit::scan::scan(&files, &rules, &options, &mut out)?;
            kaudit::scan::report(&summary, &rules, &mut std::io::stderr())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Check { policy, rules },
        } => {
            let text = std::fs::read_to_string(&policy)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", policy.display()))?;
            let parsed =
                kaudit::policy::Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", policy.display()))?;
            let set = RuleSet::load(&rules, Matching::All)?;
            let checks = kaudit::policy::check(&parsed, &set);
            let total = set.rules().iter().filter(|r| r.enabled).count();
            kaudit::policy::report(&checks, total, &mut std::io::stdout().lock())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command: RulesCommand::ImportFalco { files, output, lenient },
        } => match kaudit::falco::import(&files, lenient) {
            Ok(imported) => {
                // What we write must load: check before anyone relies on it.
                if let Err(e) = RuleSet::from_text("imported", &imported.yaml, Matching::First) {
                    eprintln!("kaudit: the translation does not load (a bug): {e}");
                    return Ok(ExitCode::from(2));
                }
                for s in &imported.skipped {
                    eprintln!("left out: {s}");
                }
                match &output {
                    Some(path) => std::fs::write(path, &imported.yaml)
                        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?,
                    None => print!("{}", imported.yaml),
                }
                eprintln!(
                    "imported {} k8s_audit rules ({} left out); Falco evaluates the first matching rule only: use --rule-matching first for parity",
                    imported.rules,
                    imported.skipped.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} problem(s); nothing written", errors.len());
                Ok(ExitCode::FAILURE)
            }
        },
        Command::Rules {
            command: RulesCommand::Doc { paths },
        } => {
            let set = RuleSet::load(&paths, Matching::All)?;
            print!("{}", kaudit::engine::catalog::markdown(&set));
            Ok(ExitCode::SUCCESS)
        }
        Command::Rules {
            command: RulesCommand::Test { paths },
        } => {
            let set = match RuleSet::load(&paths, Matching::All) {
                Ok(set) => set,
                Err(errors) => {
                    for e in &errors.0 {
                        println!("{e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let results = kaudit::engine::fixtures::run(&set);
            let passed = kaudit::engine::fixtures::report(&results, &mut std::io::stdout().lock())?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        Command::Rules {
            command: RulesCommand::Lint { paths, explain },
        } => match RuleSet::load(&paths, Matching::All) {
            Ok(set) => {
                let enabled = set.rules().iter().filter(|r| r.enabled).count();
                println!("ok: {} rules ({} enabled)", set.rules().len(), enabled);
                if let Some(text) = explain {
                    for (i, _) in set.rules().iter().enumerate().filter(|(_, r)| r.name.contains(&text)) {
                        print!("{}", set.explain(i));
                    }
                }
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

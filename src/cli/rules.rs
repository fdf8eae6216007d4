//! `kaudit rules lint | test | doc | import-falco`: rule files checked, tested, documented and
//! translated from Falco's.

use crate::engine::{Matching, RuleSet};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum RulesCommand {
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

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Lint { paths, explain } => lint(&paths, explain.as_deref()),
        RulesCommand::ImportFalco { files, output, lenient } => import_falco(&files, output.as_deref(), lenient),
        RulesCommand::Doc { paths } => {
            let set = RuleSet::load(&paths, Matching::All)?;
            print!("{}", crate::tools::catalog::markdown(&set));
            Ok(ExitCode::SUCCESS)
        }
        RulesCommand::Test { paths } => {
            let results = match crate::engine::rules::RuleSource::load_paths(&paths)
                .and_then(|source| crate::tools::fixtures::run(&source))
            {
                Ok(results) => results,
                Err(errors) => {
                    for e in &errors.0 {
                        println!("{e}");
                    }
                    return Ok(ExitCode::FAILURE);
                }
            };
            let passed = crate::tools::fixtures::report(&results, &mut std::io::stdout().lock())?;
            Ok(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
    }
}

fn lint(paths: &[PathBuf], explain: Option<&str>) -> anyhow::Result<ExitCode> {
    match RuleSet::load(paths, Matching::All) {
        Ok(set) => {
            let enabled = set.rules().iter().filter(|r| r.enabled).count();
            println!("ok: {} rules ({} enabled)", set.rules().len(), enabled);
            for rule in set.rules().iter().filter(|r| r.enabled) {
                if let Some(lists) = &rule.dormant {
                    println!("quiet: '{}' until {lists} has items", rule.name);
                }
            }
            if let Some(text) = explain {
                for (i, _) in set.rules().iter().enumerate().filter(|(_, r)| r.name.contains(text)) {
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
    }
}

fn import_falco(files: &[PathBuf], output: Option<&std::path::Path>, lenient: bool) -> anyhow::Result<ExitCode> {
    let imported = match crate::tools::falco::import(files, lenient) {
        Ok(imported) => imported,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} problem(s); nothing written", errors.len());
            return Ok(ExitCode::FAILURE);
        }
    };
    // What we write must load: check before anyone relies on it.
    if let Err(e) = RuleSet::from_text("imported", &imported.yaml, Matching::First) {
        eprintln!("kaudit: the translation does not load (a bug): {e}");
        return Ok(ExitCode::from(2));
    }
    for s in &imported.skipped {
        eprintln!("left out: {s}");
    }
    match output {
        Some(path) => {
            std::fs::write(path, &imported.yaml).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?
        }
        None => print!("{}", imported.yaml),
    }
    eprintln!(
        "imported {} k8s_audit rules ({} left out); Falco evaluates the first matching rule only: use --rule-matching first for parity",
        imported.rules,
        imported.skipped.len()
    );
    Ok(ExitCode::SUCCESS)
}

//! `kaudit policy check`: which rules an apiserver audit Policy keeps from firing
//! ([`crate::tools::policy`]).

use crate::engine::{Matching, RuleSet};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Evaluate POLICY as the apiserver does for every request each rule looks at.
    Check {
        policy: PathBuf,
        #[arg(long = "rules", default_value = "rules")]
        rules: Vec<PathBuf>,
    },
}

pub fn run(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let PolicyCommand::Check { policy, rules } = command;
    let text =
        std::fs::read_to_string(&policy).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", policy.display()))?;
    let parsed =
        crate::tools::policy::Policy::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", policy.display()))?;
    let set = RuleSet::load(&rules, Matching::All)?;
    let checks = crate::tools::policy::check(&parsed, &set);
    let total = set.rules().iter().filter(|r| r.enabled).count();
    crate::tools::policy::report(&checks, total, &mut std::io::stdout().lock())?;
    Ok(ExitCode::SUCCESS)
}

//! The `kaudit` command line: logs set up, then [`kaudit::cli`] parses the arguments and runs
//! the command.

use std::process::ExitCode;

fn main() -> ExitCode {
    kaudit::telemetry::init_logs();
    kaudit::cli::main()
}

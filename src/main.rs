//! The `kaudit` command line: logs set up, then [`kaudit::cli`] parses the arguments and runs
//! the command.

use std::process::ExitCode;

/// mimalloc: a detector allocates and frees many small strings and trees per event (parsed
/// fields, rendered outputs, redaction); glibc's allocator took a quarter of `kaudit scan`'s time
/// with Falco's rules imported.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    kaudit::telemetry::init_logs();
    kaudit::cli::main()
}

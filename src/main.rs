//! The `the-eye` command: parses the command line and calls into the library (see
//! `cli/`, one file per command group).

mod cli;

use std::process::ExitCode;

/// glibc's allocator spent over a third of the service's CPU when batches of thousands of
/// rows (each a handful of small strings) are built and freed together; see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    cli::run().await
}

//! The `krunner` binary: parse the command line, set up logging, run one command, map the
//! result to an exit code (0 success, 1 failure, 2 usage error from clap).
//!
//! krunner re-executes itself for its VM children (`__krun-child`, `__ns-child`, `__ns-init`).
//! Those entries are recognised here, before any async runtime or thread exists: libkrun
//! spawns its own threads and takes over the process, and namespace setup wants a
//! single-threaded process.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(code) = krunner::launcher::child_entry(&args) {
        return ExitCode::from(code);
    }
    let cli = krunner::cli::Cli::parse();
    krunner::commands::init_logging(&cli.global);
    match krunner::commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            // `{:#}` prints the whole cause chain on one line.
            eprintln!("krunner: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

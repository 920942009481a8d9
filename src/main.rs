//! The `krunner` binary: parse the command line, set up logging, run one command, map the
//! result to an exit code (0 success, 1 failure, 2 usage error from clap).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
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

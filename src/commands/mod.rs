//! One function per subcommand: turn parsed arguments into library calls and print results.
//! Errors get context here (anyhow) and are printed once by `main`.

mod completions;
mod doctor;
mod exec;
mod images;
mod prune;
mod pull;
mod run;
mod status;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{Cli, Command, GlobalArgs};
use crate::image::cache::Cache;

/// Sets up `tracing` on stderr from -v/-q (`RUST_LOG` overrides).
pub fn init_logging(global: &GlobalArgs) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    // Dependencies stay at warn below -vv: their debug lines are noise (and URLs).
    let deps = if global.verbose >= 2 { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{deps},krunner={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Runs the command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Pull(args) => pull::run(&cli.global, args),
        Command::Images(args) => images::run(&cli.global, args),
        Command::Exec(args) => exec::run(&cli.global, args),
        Command::Doctor(args) => doctor::run(&cli.global, args),
        Command::Prune(args) => prune::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, *args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}

/// The cache directory: the option, or the default for this user.
fn cache_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &global.cache_dir {
        return Ok(d.clone());
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(PathBuf::from("/var/lib/krunner"));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("krunner"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "cannot choose a cache directory: neither --cache-dir, $XDG_CACHE_HOME nor $HOME is set",
    )?;
    Ok(PathBuf::from(home).join(".cache/krunner"))
}

/// Opens the cache, with the directory in the error.
fn open_cache(global: &GlobalArgs) -> anyhow::Result<Cache> {
    let dir = cache_dir(global)?;
    Cache::open(&dir).with_context(|| format!("cannot open the image cache at {}", dir.display()))
}

/// A multi-threaded runtime for commands that do network I/O.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

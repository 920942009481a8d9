//! `krunner completions SHELL` and `krunner man DIR`: shell completions and man pages generated
//! from the clap definitions in [`crate::cli`], so they always match `--help`.
//!
//! They are subcommands of the built binary rather than build.rs output because `cli.rs` uses
//! krunner's own types (image platforms, backends, secrets): build.rs could only include it by
//! compiling half the crate twice. Packaging runs the release binary once to write them (see
//! `packaging/build-assets.sh`).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, ManArgs};

/// Prints the completion script for one shell on stdout.
pub fn completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    // clap_complete panics on a failed write: generate into memory, then write (a closed pipe
    // is an ordinary error, not a panic).
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "krunner", &mut script);
    let mut out = std::io::stdout().lock();
    out.write_all(&script)
        .and_then(|()| out.flush())
        .context("cannot write the completion script to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `krunner.1` and `krunner-COMMAND.1` for every visible command into the directory.
pub fn man(args: ManArgs) -> anyhow::Result<ExitCode> {
    write_man_pages(&args.out_dir)
        .with_context(|| format!("cannot write man pages into {}", args.out_dir.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn write_man_pages(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let cmd = Cli::command();
    clap_mangen::generate_to(cmd, dir)
}

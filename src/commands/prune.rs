//! `krunner prune`: free disk space in the cache.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, PruneArgs};
use crate::image::cache::PruneOptions;
use crate::image::progress::human_bytes;

/// Runs the command.
pub fn run(global: &GlobalArgs, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let cache = super::open_cache(global)?;
    let report = cache
        .prune(&PruneOptions {
            keep: args.keep,
            all: args.all,
        })
        .with_context(|| format!("cannot prune the cache at {}", cache.root().display()))?;
    for r in &report.refs_removed {
        println!("removed {r}");
    }
    println!(
        "removed {} images, {} root filesystems, {} blobs, {} leftovers; freed {}",
        report.refs_removed.len(),
        report.rootfs_removed,
        report.blobs_removed,
        report.leftovers_removed,
        human_bytes(report.bytes_freed)
    );
    Ok(ExitCode::SUCCESS)
}

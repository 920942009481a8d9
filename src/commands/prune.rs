//! `krunner prune`: free disk space in the cache.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, PruneArgs};
use crate::image::cache::PruneOptions;
use crate::image::progress::human_bytes;
use crate::runner::store::RunnerStore;

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
    // Provided runners: all that nothing uses with --all; else all but the newest of each
    // architecture, which `krunner run --offline` would start from.
    let store = RunnerStore::new(cache.clone());
    let mut keep: Vec<String> = Vec::new();
    let mut arches = Vec::new();
    // Newest first: the first of each architecture stays.
    for i in store.list().into_iter().filter(|_| !args.all) {
        if !arches.contains(&i.arch) {
            arches.push(i.arch);
            keep.push(i.sha256);
        }
    }
    let keep: Vec<&str> = keep.iter().map(String::as_str).collect();
    let runners = store
        .prune(&keep)
        .with_context(|| format!("cannot prune the runners in {}", cache.root().display()))?;
    for r in &runners {
        println!("removed runner {} ({})", r.version, r.arch);
    }
    println!(
        "removed {} images, {} root filesystems, {} blobs, {} runners, {} leftovers; freed {}",
        report.refs_removed.len(),
        report.rootfs_removed,
        report.blobs_removed,
        runners.len(),
        report.leftovers_removed,
        human_bytes(report.bytes_freed + runners.iter().map(|r| r.size).sum::<u64>())
    );
    Ok(ExitCode::SUCCESS)
}

//! `krunner images`: what the cache holds: images, then provided actions runners.

use std::process::ExitCode;

use anyhow::Context;

use crate::cli::{GlobalArgs, ImagesArgs};
use crate::image::cache::{LockMode, LockName};
use crate::image::progress::human_bytes;
use crate::runner::store::RunnerStore;

/// Runs the command.
pub fn run(global: &GlobalArgs, args: ImagesArgs) -> anyhow::Result<ExitCode> {
    let cache = super::open_cache(global)?;
    let mut refs = cache.load_refs().context("cannot read the image index")?;
    refs.sort_by_key(|r| std::cmp::Reverse(r.last_used));
    let now = crate::image::cache::now_secs();
    let rows: Vec<serde_json::Value> = refs
        .iter()
        .map(|r| {
            let meta = cache.rootfs_meta(&r.manifest);
            serde_json::json!({
                "kind": "image",
                "reference": r.reference,
                "platform": r.platform.to_string(),
                "digest": r.manifest.as_str(),
                "size": meta.as_ref().map(|m| m.size),
                "ready": meta.is_some(),
                "last_used": r.last_used,
                "rootfs": cache.rootfs_dir(&r.manifest).join("rootfs"),
            })
        })
        .collect();
    let runners = RunnerStore::new(cache.clone()).list();
    let in_use = |sha: &str| {
        matches!(
            cache.try_lock(&LockName::Runner(sha.to_string()), LockMode::Exclusive),
            Ok(None)
        )
    };
    if args.json {
        let mut rows = rows;
        rows.extend(runners.iter().map(|i| {
            serde_json::json!({
                "kind": "runner",
                "version": i.version.to_string(),
                "platform": i.arch.platform(),
                "sha256": i.sha256,
                "size": i.size,
                "installed": i.created,
                "in_use": in_use(&i.sha256),
                "tree": i.tree,
            })
        }));
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<50} {:<16} {:<19} {:>10} LAST USED",
        "REFERENCE", "PLATFORM", "DIGEST", "SIZE"
    );
    for r in &refs {
        let size = match cache.rootfs_meta(&r.manifest) {
            Some(m) => human_bytes(m.size),
            None => "(missing)".to_string(),
        };
        println!(
            "{:<50} {:<16} {:<19} {:>10} {}",
            r.reference,
            r.platform.to_string(),
            r.manifest.short(),
            size,
            ago(now.saturating_sub(r.last_used))
        );
    }
    if !runners.is_empty() {
        println!(
            "\n{:<14} {:<12} {:<19} {:>10} {:<16} IN USE",
            "RUNNER", "PLATFORM", "SHA256", "SIZE", "INSTALLED"
        );
        for i in &runners {
            println!(
                "{:<14} {:<12} {:<19} {:>10} {:<16} {}",
                i.version.to_string(),
                i.arch.platform(),
                &i.sha256[..i.sha256.len().min(12)],
                human_bytes(i.size),
                ago(now.saturating_sub(i.created)),
                if in_use(&i.sha256) { "yes" } else { "no" }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn ago(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=86399 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86400),
    }
}

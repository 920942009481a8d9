//! Embeds what `krunner --version` and `krunner doctor` report about this build: the git
//! revision (when built from a checkout), the libkrun version (from the `sys/` crate's build
//! script, through cargo's `links` metadata) and the cargo features enabled.
//! Linking libkrun is the `sys/` crate's business, not this script's.

use std::path::PathBuf;
use std::process::Command;

/// `git` with these arguments in the package directory, its trimmed stdout if it succeeded.
fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    // Ask git where HEAD and the refs live: in a worktree `.git` is a file, and a path that
    // does not exist would make cargo rerun this script (and rebuild krunner) every time.
    for what in ["HEAD", "refs/heads", "packed-refs"] {
        if let Some(p) = git(&["rev-parse", "--git-path", what]) {
            if PathBuf::from(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
    // A crates.io or tarball build has no .git: say so rather than fail.
    let rev = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KRUNNER_GIT_REV={rev}");

    // Set by sys/build.rs (`cargo:libkrun_version=…`, `links = "krunner_krun"`).
    println!("cargo:rerun-if-env-changed=DEP_KRUNNER_KRUN_LIBKRUN_VERSION");
    println!("cargo:rerun-if-env-changed=DEP_KRUNNER_KRUN_LIBKRUN_LINK");
    let libkrun =
        std::env::var("DEP_KRUNNER_KRUN_LIBKRUN_VERSION").unwrap_or_else(|_| "unknown".into());
    let link = std::env::var("DEP_KRUNNER_KRUN_LIBKRUN_LINK").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=KRUNNER_LIBKRUN_VERSION={libkrun}");
    println!("cargo:rustc-env=KRUNNER_LIBKRUN_LINK={link}");

    // Cargo sets CARGO_FEATURE_<NAME> for each enabled feature (upper case, `-` as `_`).
    let mut features: Vec<String> = std::env::vars()
        .filter_map(|(k, _)| k.strip_prefix("CARGO_FEATURE_").map(str::to_string))
        .filter(|f| f != "DEFAULT")
        .map(|f| f.to_lowercase().replace('_', "-"))
        .collect();
    features.sort();
    let features = if features.is_empty() {
        "none".to_string()
    } else {
        features.join(",")
    };
    println!("cargo:rustc-env=KRUNNER_FEATURES={features}");
}

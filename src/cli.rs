//! The command line, declared with clap derive. Each doc comment is the help text. Parsing
//! only validates; nothing here does I/O. Every option can also come from an environment
//! variable `KRUNNER_<OPTION>`; the command line wins.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand};

use crate::image::reference::{Platform, DEFAULT_IMAGE_REPO};

/// Ephemeral, isolated self-hosted GitHub Actions runners, one libkrun microVM per job.
///
/// krunner pulls OCI runner images itself into a shared cache and (in later commands) boots
/// each job in a fresh microVM from a copy-on-write clone of the cached root filesystem.
#[derive(Debug, Parser)]
#[command(
    name = "krunner",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("KRUNNER_GIT_REV"), ")"),
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Image cache directory [default: /var/lib/krunner as root, $XDG_CACHE_HOME/krunner
    /// (~/.cache/krunner) otherwise].
    #[arg(long, global = true, env = "KRUNNER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// More log output on stderr: -v for debug, -vv for trace (KRUNNER_VERBOSE=1 or 2).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, env = "KRUNNER_VERBOSE")]
    pub verbose: u8,

    /// Only errors on stderr (no progress, no info lines).
    #[arg(
        short,
        long,
        global = true,
        env = "KRUNNER_QUIET",
        value_parser = FalseyValueParser::new(),
        conflicts_with = "verbose"
    )]
    pub quiet: bool,
}

/// krunner's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image into the cache and print the path of its ready root filesystem.
    ///
    /// stdout gets exactly one line: the absolute path of the rootfs. Progress goes to stderr
    /// (bars on a terminal, log lines otherwise). A re-pull of an unchanged tag costs one
    /// manifest request; layers already in the cache are never fetched again.
    Pull(PullArgs),
    /// List cached images: reference, platform, manifest digest, size, last use.
    Images(ImagesArgs),
    /// Remove cached blobs and root filesystems that no kept image needs.
    ///
    /// Without options, removes blobs and trees no reference names, plus leftovers of
    /// interrupted pulls. An image whose rootfs a run is using is never removed.
    Prune(PruneArgs),
}

/// Where images come from: shared by every command that pulls.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Repository prefix for the short names `ubuntu` and `fedora`
    /// (`ubuntu` is `<IMAGE_REPO>/runner-ubuntu:latest`).
    #[arg(long, env = "KRUNNER_IMAGE_REPO", default_value = DEFAULT_IMAGE_REPO, value_name = "PREFIX")]
    pub image_repo: String,

    /// Reach this registry over plain HTTP (repeatable, or comma-separated in the variable).
    /// Registries on loopback addresses (127.0.0.0/8, ::1, localhost) always are.
    #[arg(
        long = "insecure-registry",
        env = "KRUNNER_INSECURE_REGISTRY",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// Platform to pull from a multi-arch image [default: linux and this host's CPU].
    #[arg(long, env = "KRUNNER_PLATFORM", value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,

    /// How many layers to download at once.
    #[arg(long, env = "KRUNNER_PARALLEL_DOWNLOADS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel_downloads: u16,
}

/// `krunner pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `ubuntu`, `fedora`, or any reference (`alpine`,
    /// `ghcr.io/org/img:tag`, `registry:5000/img@sha256:…`).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Use the cache only: fail if the image is not there, never contact a registry.
    #[arg(long, env = "KRUNNER_OFFLINE", value_parser = FalseyValueParser::new())]
    pub offline: bool,
}

/// `krunner images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON (one array) instead of a table.
    #[arg(long, env = "KRUNNER_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
}

/// `krunner prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep only the N most recently used images (and everything they need).
    #[arg(long, env = "KRUNNER_KEEP", value_name = "N", conflicts_with = "all")]
    pub keep: Option<usize>,

    /// Remove every image not in use by a run.
    #[arg(long, env = "KRUNNER_ALL", value_parser = FalseyValueParser::new())]
    pub all: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pull_flags_parse() {
        let cli = Cli::try_parse_from([
            "krunner",
            "--cache-dir",
            "/c",
            "pull",
            "--platform",
            "linux/arm64/v8",
            "--insecure-registry",
            "a:5000",
            "--insecure-registry",
            "b",
            "alpine",
        ])
        .unwrap();
        let Command::Pull(p) = cli.command else {
            panic!("not pull")
        };
        assert_eq!(p.image, "alpine");
        assert_eq!(p.registry.insecure_registries, vec!["a:5000", "b"]);
        assert_eq!(p.registry.platform.unwrap().variant.as_deref(), Some("v8"));
        assert_eq!(cli.global.cache_dir, Some(PathBuf::from("/c")));
    }

    #[test]
    fn bad_platform_is_a_usage_error() {
        let e = Cli::try_parse_from(["krunner", "pull", "--platform", "darwin/arm64", "x"])
            .unwrap_err();
        assert!(e.to_string().contains("darwin/arm64"), "{e}");
    }

    #[test]
    fn keep_and_all_conflict() {
        assert!(Cli::try_parse_from(["krunner", "prune", "--keep", "2", "--all"]).is_err());
    }
}

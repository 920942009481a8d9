//! krunner: ephemeral, isolated self-hosted GitHub Actions runners, one libkrun microVM per job.
//!
//! The binary is a thin dispatcher over these modules; data flows one way:
//! CLI ([`cli`]) → commands ([`commands`]) → (GitHub client, image pipeline, launcher) → guest.
//!
//! - [`image`]: pulls multi-arch OCI images into a content-addressed cache and unpacks them
//!   safely into one read-only rootfs per platform manifest.
//! - [`rootfs`]: the per-run copy-on-write clone of a cached rootfs.
//! - [`launcher`]: one guest per run in a supervised, re-executed child: the libkrun microVM
//!   or the namespace backend; nothing left behind.
//! - [`runner`]: the actions runner a guest gets: the image's own, or a release krunner
//!   downloads, verifies and caches itself and keeps current.
//! - [`guestfs`]: what a guest's file system is made of (its root, its shares), below the
//!   modules that make, fill and mount it.
//! - [`guest`]: what the host writes into a clone (the guest agent and its configuration) and
//!   reads back (the runner's result).
//! - [`github`]: the GitHub REST client: PAT and App auth, JIT registrations, reconcile, rate
//!   limits and retries.
//! - [`doctor`]: host checks for `krunner doctor`.
//! - [`orchestrator`]: the pool behind `krunner run`: slots of ephemeral runners with
//!   backoff, a boot cap, a two-stage shutdown, a deletion queue that retries until each
//!   registration is gone, and the per-host-and-cache instance label.
//! - [`rootless`]: an ordinary user's krunner in a user namespace of its own.
//! - [`metrics`]: the optional Prometheus endpoint of `krunner run`.
//! - [`secret`]: a redacting string type for credentials.
//! - [`version`]: what `krunner --version` and `krunner doctor` say about this build.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

/// An error and all its causes on one line (`a: b: c`, as anyhow's `{:#}` prints), for logs
/// and for child processes that print one line and exit.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

pub mod cli;
pub mod commands;
pub mod doctor;
pub mod github;
pub mod guest;
pub mod guestfs;
pub mod image;
pub mod jail;
pub mod launcher;
pub mod metrics;
pub mod orchestrator;
pub mod rootfs;
pub mod rootless;
pub mod runner;
pub mod secret;
pub mod version;

//! krunner: ephemeral, isolated self-hosted GitHub Actions runners, one libkrun microVM per job.
//!
//! The binary is a thin dispatcher over these modules; data flows one way:
//! CLI ([`cli`]) → commands ([`commands`]) → image pipeline ([`image`]) and, in later
//! parts, the orchestrator, the GitHub client and the VM launcher → the guest.
//!
//! - [`image`]: pulls multi-arch OCI images into a content-addressed cache and unpacks them
//!   safely into one read-only rootfs per platform manifest.
//! - [`secret`]: a redacting string type for credentials.
#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod commands;
pub mod doctor;
pub mod github;
pub mod guest;
pub mod image;
pub mod launcher;
pub mod rootfs;
pub mod secret;

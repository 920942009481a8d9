//! The VM launcher: one guest per run, in a supervised child process, with nothing left behind.
//!
//! The async parent never calls libkrun or changes namespaces itself. It writes a
//! [`spec::LaunchSpec`] into the run directory and re-executes the krunner binary as a child:
//! - `__krun-child SPEC`: private mount namespace, overlay root, the VMM's jail (a user
//!   namespace and a minimal tree), libkrun configuration, then `krun_start_enter` (never
//!   returns on success) — see `krun_child` and `vmm_jail`;
//! - `__ns-child SPEC`: the namespace backend: new mount, pid, uts and ipc namespaces, the same
//!   overlay root and shares, then `__ns-init` as PID 1, which pivots into the root and runs
//!   the workload (in a user namespace of its own) — see `ns_child`.
//!
//! Modules:
//! - [`run`]: [`run::Launcher`] and one run's steps, from the request to its outcome;
//! - `prepare`: what a run writes before its child starts: per-run shares, the guest's
//!   files in the clone, the launch spec;
//! - [`supervise`]: the VM child from spawn to its end: output, stop requests, lifetime;
//! - [`leftovers`]: removing run directories and the mounts left under them;
//! - [`libkrunfw`]: finding the guest kernel library;
//! - [`spec`]: the parent–child contract: the launch spec and the child's events;
//! - [`privileges`]: what the VMM keeps of root; [`vmm_jail`]: its user namespace, idmapped
//!   mounts and minimal tree; [`ids`]: the host id range each guest's namespace maps to;
//! - [`cgroup`]: one cgroup v2 per run (memory, CPU, pids limits); [`seccomp`]: the system
//!   calls the VMM and the namespace workload are denied;
//! - [`untrusted`]: reading a file the guest wrote without trusting it;
//! - [`krun_child`], [`ns_child`]: the child entry points; [`sys`]: their system calls.

pub mod cgroup;
pub mod child_sys;
pub mod ids;
pub mod krun_child;
pub mod leftovers;
pub mod libkrunfw;
pub mod ns_child;
mod prepare;
pub mod privileges;
pub mod run;
pub mod seccomp;
pub mod spec;
pub mod supervise;
pub mod sys;
pub mod untrusted;
pub mod vmm_jail;

use std::ffi::OsString;
use std::path::Path;

/// Which way a guest runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A libkrun microVM (KVM on Linux, Hypervisor.framework on macOS).
    Krun,
    /// Linux namespaces around the same clone, shares and agent: far weaker isolation than a
    /// microVM; for hosts without usable KVM and for tests.
    Namespace,
}

/// Hidden argv[1] values that select a child entry point.
pub const NS_CHILD: &str = "__ns-child";
/// PID 1 of the namespace backend.
pub const NS_INIT: &str = "__ns-init";
/// The libkrun VM child.
pub const KRUN_CHILD: &str = "__krun-child";

/// Runs a child entry point if argv names one; returns its exit code.
pub fn child_entry(args: &[OsString]) -> Option<u8> {
    let entry = args.get(1)?.to_str()?;
    let arg = args.get(2).map(Path::new);
    let code = match (entry, arg) {
        (NS_CHILD, Some(spec)) => ns_child::ns_child_main(spec),
        (NS_INIT, Some(spec)) => ns_child::ns_init_main(spec),
        (KRUN_CHILD, Some(spec)) => krun_child::krun_child_main(spec),
        (crate::jail::netns::PASTA_KEEPER, _) => {
            crate::jail::netns::keeper_main(args.get(2..).unwrap_or_default())
        }
        (NS_CHILD | NS_INIT | KRUN_CHILD, _) => {
            eprintln!("krunner: {entry} is internal and needs a spec file");
            125
        }
        _ => return None,
    };
    Some(u8::try_from(code).unwrap_or(125))
}

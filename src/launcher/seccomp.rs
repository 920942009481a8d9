//! Seccomp deny-lists for the guest's host-side processes: the libkrun VMM, and the
//! namespace backend's workload. Built with `seccompiler` (Firecracker's BPF compiler).
//!
//! Deny-lists, not allow-lists: libkrun's VMM makes a wide and version-dependent set of
//! calls (KVM ioctls, eventfd and epoll, threads, the virtio-fs passthrough server's
//! `openat`/`fchownat`/`mknodat`/`*xattr`/…, TSI sockets), and an allow-list that missed one
//! would kill guests at random. What is denied is what neither the VMM nor a CI job has any
//! use for and what widens the kernel's attack surface or reaches beyond the run: kernel
//! modules, kexec, swap, BPF, perf, the kernel keyring, file handles (the "shocker" escape),
//! I/O ports, the system clock, process accounting — and, for the VMM alone, reboot, ptrace
//! and cross-process memory access, and the mount and namespace calls (it is configured;
//! it never mounts or unshares again). A denied call fails with EPERM rather than killing the
//! process: a library probing a feature gets an answer it can handle.
//!
//! The filter also checks the architecture: a system call through another ABI (32-bit
//! compat: `int 0x80` on x86_64, AArch32) kills the process, since its numbers differ and
//! would slip past the list. The x32 ABI (x86_64 numbers with bit 30 set) is denied by number.
//!
//! The namespace backend's filter is installed without no_new_privs (PID 1 is root with
//! CAP_SYS_ADMIN), so setuid programs such as `sudo` keep working in the job.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture has no filter (krunner supports x86_64 and aarch64).
    #[error("no seccomp filter for architecture {0}")]
    Arch(&'static str),
    /// seccompiler refused the filter or the kernel refused to install it.
    #[error("seccomp filter for {what}")]
    Filter {
        /// Which filter.
        what: &'static str,
        /// Why.
        #[source]
        source: seccompiler::Error,
    },
}

/// Which process a filter is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// The libkrun VMM (`__krun-child`), after configuration.
    Vmm,
    /// The namespace backend's workload (installed in PID 1 before it spawns the workload).
    Workload,
}

/// Denied for both profiles: nothing a VMM or a CI job needs.
const DENIED_ALWAYS: &[(&str, i64)] = &[
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("acct", libc::SYS_acct),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("lookup_dcookie", libc::SYS_lookup_dcookie),
    #[cfg(target_arch = "x86_64")]
    ("iopl", libc::SYS_iopl),
    #[cfg(target_arch = "x86_64")]
    ("ioperm", libc::SYS_ioperm),
];

/// Denied for the VMM only: a CI job may trace (gdb, strace), mount (a tmpfs, an image; newer
/// util-linux through the fsopen/fsmount API), unshare (a nested container) or read another
/// process's memory (a debugger); the VMM never does after configuration.
const DENIED_VMM: &[(&str, i64)] = &[
    ("reboot", libc::SYS_reboot),
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("fsopen", libc::SYS_fsopen),
    ("fsconfig", libc::SYS_fsconfig),
    ("fsmount", libc::SYS_fsmount),
    ("fspick", libc::SYS_fspick),
    ("open_tree", libc::SYS_open_tree),
    ("move_mount", libc::SYS_move_mount),
    ("mount_setattr", libc::SYS_mount_setattr),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
];

/// x32 system calls are x86_64's numbers with this bit set, plus a few of their own (the
/// ones whose structures differ, among them ptrace, process_vm_readv/writev, kexec_load).
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;
/// The x32-only numbers of denied calls (arch/x86/entry/syscalls/syscall_64.tbl).
#[cfg(target_arch = "x86_64")]
const X32_ONLY: &[(&str, i64, Profile)] = &[
    ("kexec_load (x32)", 528, Profile::Workload),
    ("ptrace (x32)", 521, Profile::Vmm),
    ("process_vm_readv (x32)", 539, Profile::Vmm),
    ("process_vm_writev (x32)", 540, Profile::Vmm),
];

/// The system calls `profile` denies, by name and number (native ABI only).
pub fn denied(profile: Profile) -> Vec<(&'static str, i64)> {
    let mut v = DENIED_ALWAYS.to_vec();
    if profile == Profile::Vmm {
        v.extend_from_slice(DENIED_VMM);
    }
    v
}

/// The numbers the filter matches: [`denied`], and on x86_64 their x32 twins.
fn denied_numbers(profile: Profile) -> Vec<i64> {
    #[allow(unused_mut)]
    let mut nrs: Vec<i64> = denied(profile).into_iter().map(|(_, nr)| nr).collect();
    #[cfg(target_arch = "x86_64")]
    {
        let x32: Vec<i64> = nrs.iter().map(|nr| nr | X32_SYSCALL_BIT).collect();
        nrs.extend(x32);
        for (_, nr, p) in X32_ONLY {
            // The workload's x32 kexec_load applies to the VMM too; the VMM ones to it alone.
            if *p == Profile::Workload || profile == Profile::Vmm {
                nrs.push(nr | X32_SYSCALL_BIT);
            }
        }
    }
    nrs
}

fn target_arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Arch(std::env::consts::ARCH))
    }
}

fn what(profile: Profile) -> &'static str {
    match profile {
        Profile::Vmm => "the VMM",
        Profile::Workload => "the workload",
    }
}

/// Compiles `profile`'s filter: EPERM for each denied call, everything else allowed.
pub fn compile(profile: Profile) -> Result<BpfProgram, SeccompError> {
    let err = |source| SeccompError::Filter {
        what: what(profile),
        source,
    };
    let rules: BTreeMap<i64, Vec<SeccompRule>> = denied_numbers(profile)
        .into_iter()
        .map(|nr| (nr, Vec::new()))
        .collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )
    .map_err(|e| err(seccompiler::Error::Backend(e)))?;
    filter
        .try_into()
        .map_err(|e| err(seccompiler::Error::Backend(e)))
}

/// Installs `profile`'s filter on every thread of this process (TSYNC).
///
/// The VMM's goes through seccompiler, which also sets no_new_privs (the VMM has it already,
/// see [`super::privileges`]). The workload's must not: a job's `sudo` needs setuid to work,
/// so it is installed with a plain seccomp(2), which without no_new_privs needs
/// CAP_SYS_ADMIN (PID 1 has it).
pub fn install(profile: Profile) -> Result<(), SeccompError> {
    let prog = compile(profile)?;
    let err = |source| SeccompError::Filter {
        what: what(profile),
        source,
    };
    match profile {
        Profile::Vmm => seccompiler::apply_filter_all_threads(&prog).map_err(err),
        Profile::Workload => {
            // seccompiler's instructions field by field into libc's (the same kernel layout),
            // so the raw call in `krunner_sys` needs no cast.
            let prog: Vec<libc::sock_filter> = prog
                .iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect();
            krunner_sys::seccomp_filter_tsync(&prog)
                .map_err(|e| err(seccompiler::Error::Seccomp(e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vmm_list_contains_the_workload_list_and_more() {
        let vmm = denied(Profile::Vmm);
        let wl = denied(Profile::Workload);
        assert!(wl.iter().all(|c| vmm.contains(c)));
        let names: Vec<&str> = vmm.iter().map(|c| c.0).collect();
        for n in [
            "init_module",
            "kexec_load",
            "bpf",
            "ptrace",
            "mount",
            "setns",
            "keyctl",
        ] {
            assert!(names.contains(&n), "{n}");
        }
        let wl_names: Vec<&str> = wl.iter().map(|c| c.0).collect();
        // A CI job may trace, mount and unshare.
        for n in ["ptrace", "mount", "unshare", "reboot"] {
            assert!(!wl_names.contains(&n), "{n}");
        }
        // What the VMM keeps using must never be on it.
        for nr in [
            libc::SYS_ioctl,
            libc::SYS_openat,
            libc::SYS_clone,
            libc::SYS_mknodat,
        ] {
            assert!(!denied_numbers(Profile::Vmm).contains(&nr));
        }
        #[cfg(target_arch = "x86_64")]
        assert!(denied_numbers(Profile::Vmm).contains(&(libc::SYS_bpf | X32_SYSCALL_BIT)));
    }

    #[test]
    fn both_filters_compile() {
        for p in [Profile::Vmm, Profile::Workload] {
            let prog = compile(p).unwrap();
            assert!(
                prog.len() > denied_numbers(p).len(),
                "{p:?}: {}",
                prog.len()
            );
        }
    }
}

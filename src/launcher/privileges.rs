//! What the VMM keeps of root once it is configured: the capabilities its virtio-fs server
//! needs to serve files as any guest user, nothing else, and no way to gain more.
//!
//! The set is virtiofsd's (which libkrun's passthrough file system derives from) plus
//! RLIMIT raising and low TSI ports. Dropped, among others: CAP_SYS_ADMIN (mounts, namespaces),
//! CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_PTRACE, CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_KILL.
//! A VMM escape is still a root process, but one that cannot load a module, mount, trace or
//! signal other processes, reconfigure the network or regain what it lost through an exec.

use caps::{CapSet, Capability, CapsHashSet};

/// The capabilities the VMM keeps.
pub const VMM_KEEPS: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_DAC_READ_SEARCH,
    Capability::CAP_FOWNER,
    Capability::CAP_FSETID,
    Capability::CAP_SETUID,
    Capability::CAP_SETGID,
    Capability::CAP_MKNOD,
    Capability::CAP_SETFCAP,
    Capability::CAP_SYS_RESOURCE,
    Capability::CAP_NET_BIND_SERVICE,
];

/// What the namespace backend's workload never holds, though it runs as root: the power to
/// reconfigure its network namespace, whose nftables rules are its egress policy.
pub const NS_WORKLOAD_DROPS: &[Capability] = &[Capability::CAP_NET_ADMIN];

/// Why the privileges could not be reduced (the child then refuses to start the guest).
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// prctl(PR_SET_NO_NEW_PRIVS) failed.
    #[error("prctl(PR_SET_NO_NEW_PRIVS)")]
    NoNewPrivs(#[source] nix::Error),
    /// A capability set could not be changed.
    #[error("dropping capabilities from the {set:?} set")]
    Caps {
        /// Which set.
        set: CapSet,
        /// Why.
        #[source]
        source: caps::errors::CapsError,
    },
}

/// Sets no_new_privs and reduces this thread's capabilities to `keep` in every set (bounding,
/// permitted, effective; inheritable and ambient emptied). Call it before any other thread
/// exists: threads inherit their creator's sets, and capset(2) changes only the caller's.
pub fn restrict_to(keep: &[Capability]) -> Result<(), PrivilegeError> {
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    let keep: CapsHashSet = keep.iter().copied().collect();
    let err = |set| move |source| PrivilegeError::Caps { set, source };
    // The bounding set first: dropping from it needs CAP_SETPCAP, which goes below.
    for cap in caps::runtime::thread_all_supported() {
        if !keep.contains(&cap) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err(CapSet::Bounding))?;
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(err(CapSet::Ambient))?;
    caps::clear(None, CapSet::Inheritable).map_err(err(CapSet::Inheritable))?;
    let permitted = caps::read(None, CapSet::Permitted).map_err(err(CapSet::Permitted))?;
    let kept: CapsHashSet = permitted.intersection(&keep).copied().collect();
    // Effective before permitted: the kernel refuses an effective set larger than permitted.
    caps::set(None, CapSet::Effective, &kept).map_err(err(CapSet::Effective))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(err(CapSet::Permitted))?;
    Ok(())
}

/// Removes `drop` from every set of this thread (the bounding set included, so no exec of a
/// setuid-root or file-capability program regains them). Unlike [`restrict_to`] it leaves
/// no_new_privs alone: the namespace backend's workload keeps `sudo`. Call it single-threaded.
pub fn drop_from_all(drop: &[Capability]) -> Result<(), PrivilegeError> {
    let err = |set| move |source| PrivilegeError::Caps { set, source };
    for &cap in drop {
        caps::drop(None, CapSet::Bounding, cap).map_err(err(CapSet::Bounding))?;
        caps::drop(None, CapSet::Ambient, cap).map_err(err(CapSet::Ambient))?;
        caps::drop(None, CapSet::Inheritable, cap).map_err(err(CapSet::Inheritable))?;
        caps::drop(None, CapSet::Effective, cap).map_err(err(CapSet::Effective))?;
        caps::drop(None, CapSet::Permitted, cap).map_err(err(CapSet::Permitted))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `restrict_to` in a thread of its own (capabilities are per thread) and reports
    /// what that thread holds afterwards.
    #[test]
    fn keeps_exactly_the_listed_capabilities_and_sets_no_new_privs() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: dropping capabilities needs root to have some");
            return;
        }
        let got = std::thread::spawn(|| {
            restrict_to(VMM_KEEPS).map_err(|e| e.to_string())?;
            let status =
                std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
            let eff = caps::read(None, CapSet::Effective).map_err(|e| e.to_string())?;
            let bnd = caps::read(None, CapSet::Bounding).map_err(|e| e.to_string())?;
            Ok::<_, String>((status, eff, bnd))
        })
        .join()
        .unwrap();
        let (status, eff, bnd) = got.unwrap();
        // What we had of the kept ones (a container's bounding set may lack some).
        let had = caps::read(None, CapSet::Permitted).unwrap();
        let want: CapsHashSet = VMM_KEEPS
            .iter()
            .copied()
            .filter(|c| had.contains(c))
            .collect();
        assert!(want.contains(&Capability::CAP_DAC_OVERRIDE), "{want:?}");
        assert_eq!(eff, want);
        assert!(
            bnd.is_subset(&VMM_KEEPS.iter().copied().collect()),
            "{bnd:?}"
        );
        assert!(!eff.contains(&Capability::CAP_SYS_ADMIN));
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        // This (test) thread is untouched.
        assert!(caps::has_cap(None, CapSet::Effective, Capability::CAP_SYS_ADMIN).unwrap());
    }

    #[test]
    fn the_namespace_workload_loses_net_admin_everywhere_and_keeps_the_rest() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("SKIP: dropping capabilities needs root to have some");
            return;
        }
        let got = std::thread::spawn(|| {
            drop_from_all(NS_WORKLOAD_DROPS).map_err(|e| e.to_string())?;
            let status =
                std::fs::read_to_string("/proc/thread-self/status").map_err(|e| e.to_string())?;
            let sets = [CapSet::Bounding, CapSet::Permitted, CapSet::Effective]
                .map(|s| caps::read(None, s).map_err(|e| e.to_string()));
            Ok::<_, String>((status, sets))
        })
        .join()
        .unwrap();
        let (status, sets) = got.unwrap();
        for set in sets {
            let set = set.unwrap();
            assert!(!set.contains(&Capability::CAP_NET_ADMIN), "{set:?}");
            assert!(set.contains(&Capability::CAP_SYS_ADMIN), "{set:?}");
        }
        assert!(status.contains("NoNewPrivs:\t0"), "{status}");
    }
}

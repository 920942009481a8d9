//! Host id ranges for jailed VMMs ([`super::vmm_jail`]): each running guest gets 65536 host
//! uids and gids of its own, so that two VMMs never share an id (one could signal the other).
//!
//! The ranges lie in `0x70000000..0x74000000` (1,879,048,192 on): above every range
//! useradd's `/etc/subuid` and systemd's container ranges (which end at 0x6FFFFFFF) hand out,
//! below systemd's "foreign" range and the sign bit. A range is leased with an flock on
//! `/run/krunner/ids/N.lock` (root's tmpfs, shared by every krunner on the host whatever its
//! cache): a crashed holder frees it, and the next lease skips ranges in use.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::spec::IdMap;

/// The first host id of the first range.
pub const FIRST: u32 = 0x7000_0000;
/// Ids per range: a guest's 0..65535.
pub const COUNT: u32 = 65536;
/// How many ranges there are (guests running at once on a host).
pub const RANGES: u32 = 1024;
/// Where the leases' lock files are.
pub const LOCK_DIR: &str = "/run/krunner/ids";

/// A leased range, free again when dropped.
#[derive(Debug)]
pub struct IdLease {
    /// The range.
    pub map: IdMap,
    _lock: File,
}

/// No range could be leased.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// The lock directory or a lock file failed.
    #[error("leasing a host id range for the VMM's user namespace: {op} {}", .path.display())]
    Io {
        /// What.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Every range is in use.
    #[error("all {RANGES} host id ranges for VMM user namespaces are in use (see {LOCK_DIR})")]
    Exhausted,
}

/// Where the next search starts: consecutive leases in one process take different ranges
/// without contending for the same lock first.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Leases a free range from the lock files in `dir` (normally [`LOCK_DIR`]).
pub fn lease_in(dir: &Path) -> Result<IdLease, IdError> {
    let io = |op, path: &Path| {
        let path = path.to_path_buf();
        move |source| IdError::Io { op, path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io("create", dir))?;
    let start = NEXT
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(std::process::id());
    for i in 0..RANGES {
        let n = start.wrapping_add(i) % RANGES;
        let path = dir.join(format!("{n}.lock"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {
                return Ok(IdLease {
                    map: IdMap {
                        host_first: FIRST + n * COUNT,
                        count: COUNT,
                    },
                    _lock: file,
                })
            }
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
    }
    Err(IdError::Exhausted)
}

/// Leases a free range from [`LOCK_DIR`].
pub fn lease() -> Result<IdLease, IdError> {
    lease_in(Path::new(LOCK_DIR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_stay_below_the_foreign_range_and_the_sign_bit() {
        let last = FIRST as u64 + RANGES as u64 * COUNT as u64;
        assert!(last <= 0x7FFE_0000, "{last:#x}");
    }

    #[test]
    fn leases_held_at_once_never_share_a_range_and_a_dropped_one_is_free_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = lease_in(dir.path()).expect("a");
        let b = lease_in(dir.path()).expect("b");
        assert_ne!(a.map, b.map);
        for l in [&a, &b] {
            assert_eq!(l.map.count, COUNT);
            assert_eq!((l.map.host_first - FIRST) % COUNT, 0);
        }
        let first = a.map;
        drop(a);
        // Every other range taken: the freed one is the only one left.
        let mut held = vec![b];
        while let Ok(l) = lease_in(dir.path()) {
            if l.map == first {
                return;
            }
            held.push(l);
        }
        panic!("the dropped range was never leased again");
    }

    #[test]
    fn exhaustion_is_an_error_not_a_shared_range() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held: Vec<IdLease> = (0..RANGES)
            .map_while(|_| lease_in(dir.path()).ok())
            .collect();
        assert_eq!(held.len(), RANGES as usize);
        assert!(matches!(lease_in(dir.path()), Err(IdError::Exhausted)));
    }
}

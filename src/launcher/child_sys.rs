//! The system calls behind [`super::sys::LinuxSys`]'s jail methods, which only the VM
//! children make (the VMM's jail in `__krun-child`, the workload's user namespace in
//! `__ns-child`): a user namespace as an fd and idmapped bind mounts (raw calls nix lacks, in
//! `krunner_sys::linux`), device nodes, owner shifting, and entering the namespace. The logic
//! that uses them is in [`super::vmm_jail`], over the [`super::sys::Sys`] trait, so that its
//! unit tests run against a recording fake.

use std::ffi::CString;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use krunner_sys::linux;
use nix::errno::Errno;

use super::spec::IdMap;
use super::vmm_jail::IdmapAttrs;

fn path_cstr(p: &Path) -> nix::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

/// A user namespace mapping `0..count` to `first..first+count` (uids and gids), as an fd.
pub fn new_user_ns(ids: IdMap) -> nix::Result<OwnedFd> {
    linux::new_user_ns(&format!("0 {} {}\n", ids.host_first, ids.count)).map_err(errno)
}

/// Mounts a clone of `src` at `dst`, idmapped through `userns`, never with devices (and
/// read-only or nosuid if asked).
pub fn idmap_bind(
    src: &Path,
    dst: &Path,
    userns: BorrowedFd<'_>,
    attrs: IdmapAttrs,
) -> nix::Result<()> {
    let mut set = linux::MOUNT_ATTR_NODEV;
    if attrs.read_only {
        set |= linux::MOUNT_ATTR_RDONLY;
    }
    if attrs.nosuid {
        set |= linux::MOUNT_ATTR_NOSUID;
    }
    linux::idmap_bind(&path_cstr(src)?, &path_cstr(dst)?, userns, set).map_err(errno)
}

/// mknod(2) of a character device.
pub fn mknod_char(path: &Path, major: u64, minor: u64, mode: u32) -> nix::Result<()> {
    nix::sys::stat::mknod(
        path,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(mode),
        nix::sys::stat::makedev(major, minor),
    )
}

/// Moves every owner in the tree at `dir` (krunner's own files, not the guest's: it has not
/// started) into the range: uid N becomes `first + N`; ids outside the map are left as they
/// are (the guest sees them as its overflow id). Symlinks are changed, never followed.
pub fn shift_owners(dir: &Path, ids: IdMap) -> nix::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let io = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
    let meta = std::fs::symlink_metadata(dir).map_err(io)?;
    if let (Some(uid), Some(gid)) = (ids.to_host(meta.uid()), ids.to_host(meta.gid())) {
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(io)?;
    }
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).map_err(io)? {
            shift_owners(&entry.map_err(io)?.path(), ids)?;
        }
    }
    Ok(())
}

/// Drops the supplementary groups, joins `userns` and becomes its root.
pub fn enter_user_ns(userns: BorrowedFd<'_>) -> nix::Result<()> {
    // Groups first, while we may: inside, setgroups(2) needs the namespace's permission.
    nix::unistd::setgroups(&[])?;
    nix::sched::setns(userns, nix::sched::CloneFlags::CLONE_NEWUSER)?;
    let root_gid = nix::unistd::Gid::from_raw(0);
    let root_uid = nix::unistd::Uid::from_raw(0);
    nix::unistd::setresgid(root_gid, root_gid, root_gid)?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifting_moves_owners_into_the_range_and_leaves_others() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chown to other ids needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("etc");
        std::fs::create_dir(&d).expect("mkdir");
        std::fs::write(d.join("hosts"), "x").expect("write");
        std::os::unix::fs::symlink("/etc/shadow", d.join("link")).expect("symlink");
        std::os::unix::fs::lchown(d.join("hosts"), Some(1001), Some(1001)).expect("chown");
        std::fs::write(d.join("far"), "x").expect("write");
        std::os::unix::fs::lchown(d.join("far"), Some(70000), Some(70000)).expect("chown");
        let ids = IdMap {
            host_first: 200_000,
            count: 65536,
        };
        shift_owners(dir.path(), ids).expect("shift");
        use std::os::unix::fs::MetadataExt;
        let owner = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.uid()).unwrap_or(0);
        assert_eq!(owner(dir.path()), 200_000);
        assert_eq!(owner(&d.join("hosts")), 201_001);
        assert_eq!(owner(&d.join("link")), 200_000);
        assert_eq!(owner(&d.join("far")), 70000);
        // The link's target was not touched.
        assert_eq!(owner(Path::new("/etc/shadow")), 0);
    }
}

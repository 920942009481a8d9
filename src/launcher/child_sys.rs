//! The system calls behind [`super::sys::LinuxSys`]'s jail methods, which only the VM
//! children make (the VMM's jail in `__krun-child`, the workload's user namespace in
//! `__ns-child`): a user namespace as an fd, idmapped bind mounts (`open_tree`,
//! `mount_setattr`, `move_mount`, for which nix has no wrapper), owner shifting, and entering
//! the namespace. The logic that uses them is in [`super::vmm_jail`], over the [`super::sys::Sys`]
//! trait, so that its unit tests run against a recording fake.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use super::spec::IdMap;
use super::vmm_jail::IdmapAttrs;

fn path_cstr(p: &Path) -> nix::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `struct mount_attr` (linux/mount.h), MOUNT_ATTR_SIZE_VER0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// A user namespace mapping `0..count` to `first..first+count` (uids and gids), as an fd.
/// A short-lived child unshares it; its maps are written from here; the fd keeps it alive.
pub fn new_user_ns(ids: IdMap) -> nix::Result<OwnedFd> {
    let (ready_r, ready_w) = nix::unistd::pipe()?;
    let (done_r, done_w) = nix::unistd::pipe()?;
    // SAFETY: the VM child is single-threaded here (the module header of krun_child says
    // why), so the forked child may run any code; it only unshares, writes and reads pipes,
    // and _exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(ready_r);
            drop(done_w);
            let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
            let _ = nix::unistd::write(&ready_w, if ok { b"1" } else { b"0" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(&done_r, &mut b);
            // SAFETY: _exit ends the forked child without running the parent's atexit
            // handlers or destructors.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(ready_w);
            drop(done_r);
            let mut b = [0u8; 1];
            let n = nix::unistd::read(&ready_r, &mut b);
            let result = match n {
                Ok(1) if b[0] == b'1' => map_and_open(child, ids),
                Ok(_) => Err(Errno::EPERM),
                Err(e) => Err(e),
            };
            drop(done_w);
            let _ = nix::sys::wait::waitpid(child, None);
            result
        }
    }
}

fn map_and_open(child: nix::unistd::Pid, ids: IdMap) -> nix::Result<OwnedFd> {
    let line = format!("0 {} {}\n", ids.host_first, ids.count);
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{child}/{file}"), &line)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    }
    std::fs::File::open(format!("/proc/{child}/ns/user"))
        .map(OwnedFd::from)
        .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

/// Mounts a clone of `src` at `dst`, idmapped through `userns` (and read-only if asked).
pub fn idmap_bind(
    src: &Path,
    dst: &Path,
    userns: BorrowedFd<'_>,
    attrs: IdmapAttrs,
) -> nix::Result<()> {
    let src_c = path_cstr(src)?;
    let dst_c = path_cstr(dst)?;
    // SAFETY: open_tree takes a NUL-terminated path that outlives the call and returns a new
    // fd (or -1); the fd is owned right below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src_c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `tree` is a fresh fd from open_tree that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let mut set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NODEV;
    if attrs.read_only {
        set |= MOUNT_ATTR_RDONLY;
    }
    if attrs.nosuid {
        set |= MOUNT_ATTR_NOSUID;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: `tree` is a detached mount fd; `attr` is a live MountAttr of the size passed;
    // the empty path with AT_EMPTY_PATH means the fd itself.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: `tree` is the detached mount above; `dst_c` is NUL-terminated and outlives the
    // call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    Ok(())
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

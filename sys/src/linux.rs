//! The Linux system calls krunner's jail makes that neither libc's safe wrappers nor nix
//! cover: idmapped bind mounts through the new mount API (`open_tree`, `mount_setattr`,
//! `move_mount`) and a user namespace held open by a short-lived forked child. Both only run
//! in krunner's VM children (the VMM's jail, the namespace backend's workload).

use std::ffi::CStr;
use std::io::{Error, Read, Result, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// `struct mount_attr` (linux/mount.h), MOUNT_ATTR_SIZE_VER0.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// MOUNT_ATTR_RDONLY (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
/// MOUNT_ATTR_NOSUID.
pub const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
/// MOUNT_ATTR_NODEV.
pub const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
/// MOUNT_ATTR_IDMAP.
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x0000_0004;

/// Mounts a clone of the tree at `src` on `dst`, idmapped through `userns`, with the
/// `MOUNT_ATTR_*` bits of `attr_set` (MOUNT_ATTR_IDMAP is added).
pub fn idmap_bind(src: &CStr, dst: &CStr, userns: BorrowedFd<'_>, attr_set: u64) -> Result<()> {
    // SAFETY: open_tree takes a NUL-terminated path that outlives the call and returns a new
    // fd (or -1); the fd is owned right below.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(Error::last_os_error());
    }
    // SAFETY: `tree` is a fresh fd from open_tree that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let attr = MountAttr {
        attr_set: attr_set | MOUNT_ATTR_IDMAP,
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
        return Err(Error::last_os_error());
    }
    // SAFETY: `tree` is the detached mount above; `dst` is NUL-terminated and outlives the
    // call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if ret < 0 {
        return Err(Error::last_os_error());
    }
    Ok(())
}

/// A new user namespace whose uid and gid maps are `map` (e.g. `"0 FIRST COUNT\n"`), as an
/// fd. A forked child unshares it and waits; its maps are written from here; the fd keeps the
/// namespace alive after the child is gone.
///
/// The caller must be single-threaded: the child runs Rust code after fork(2).
pub fn new_user_ns(map: &str) -> Result<OwnedFd> {
    let (mut ready_r, ready_w) = std::io::pipe()?;
    let (done_r, done_w) = std::io::pipe()?;
    // SAFETY: krunner's VM children call this before they start any thread, so the forked
    // child may run any code; it only unshares, writes and reads pipes, and _exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(Error::last_os_error());
    }
    if child == 0 {
        drop(ready_r);
        drop(done_w);
        // SAFETY: unshare takes flags only.
        let ok = unsafe { libc::unshare(libc::CLONE_NEWUSER) } == 0;
        let _ = (&ready_w).write_all(if ok { b"1" } else { b"0" });
        let _ = (&done_r).read(&mut [0u8; 1]);
        // SAFETY: _exit ends the forked child without running the parent's atexit handlers
        // or destructors.
        unsafe { libc::_exit(0) }
    }
    drop(ready_w);
    drop(done_r);
    let mut b = [0u8; 1];
    let result = match ready_r.read(&mut b) {
        Ok(1) if b[0] == b'1' => map_and_open(child, map),
        Ok(_) => Err(Error::from_raw_os_error(libc::EPERM)),
        Err(e) => Err(e),
    };
    drop(done_w);
    // SAFETY: waitpid on our own child with a null status pointer.
    unsafe { libc::waitpid(child, std::ptr::null_mut(), 0) };
    result
}

fn map_and_open(child: libc::pid_t, map: &str) -> Result<OwnedFd> {
    for file in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{child}/{file}"), map)?;
    }
    std::fs::File::open(format!("/proc/{child}/ns/user")).map(OwnedFd::from)
}

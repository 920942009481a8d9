//! The syscall seam of the VM children: a narrow [`Sys`] trait with exactly the calls their
//! mount and namespace setup makes, the real [`LinuxSys`] (nix's safe wrappers), and, for unit
//! tests, a `FakeSys` that records every call in order and fails chosen calls with chosen
//! errnos (the shape of youki's `syscall` module, but the implementation is always passed in
//! explicitly as `&dyn Sys`, never picked by `cfg`).
//!
//! It also holds the one setup step both backends share, [`prepare_private_root`]:
//! 1. `unshare(CLONE_NEWNS)`: from here on every mount is this process's own;
//! 2. `mount("/", MS_REC|MS_PRIVATE)`: systemd makes `/` shared, and without this step the
//!    overlay (and everything mounted after it) would propagate back into the host's namespace;
//! 3. for an overlay root, mount overlayfs at `merged`.
//!
//! Because every mount lives only in the private mount namespace, it goes away with the last
//! process in that namespace, even on SIGKILL: no mount leaks on the host, and no cleanup code
//! has to run.
//!
//! [`SetupError`] has one variant per setup step (for both backends' children); each message
//! names the path involved and, where the errno makes the cause likely, says what to fix. The
//! errno itself is the error's `source`, not repeated in the text.

#[cfg(test)]
use std::cell::RefCell;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::stat::{mkdirat, Mode};
use nix::sys::statvfs::{statvfs, FsFlags};
use std::os::fd::{BorrowedFd, OwnedFd};

use super::child_sys;
use super::spec::{IdMap, LaunchSpec, RootSpec};
use super::vmm_jail::IdmapAttrs;

/// The system calls the children's setup makes, and nothing else.
///
/// Paths are passed as given; implementations do not resolve them, except
/// [`Sys::mkdir_beneath`], the one call that walks a path inside the guest's (untrusted) root.
pub trait Sys {
    /// unshare(2).
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()>;
    /// setns(2) into the network namespace bound at `path`.
    fn join_netns(&self, path: &Path) -> nix::Result<()>;
    /// mount(2); `source` is a path or a file system name such as `overlay`.
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()>;
    /// umount2(2).
    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()>;
    /// pivot_root(2).
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()>;
    /// sethostname(2), in the process's UTS namespace.
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// chdir(2).
    fn chdir(&self, path: &Path) -> nix::Result<()>;
    /// `mkdir -p` for a trusted path (one krunner made, such as the fresh `/dev` tmpfs).
    fn mkdir_all(&self, path: &Path, mode: u32) -> nix::Result<()>;
    /// `mkdir -p root/rel` where `root` is trusted but its contents are not: every component
    /// of `rel` is created or opened beneath the one before without following any symlink
    /// (openat2 with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). A symlink anywhere in `rel`
    /// gives `ELOOP`, a `..` or non-relative `rel` gives `EINVAL`. Returns `root/rel`.
    fn mkdir_beneath(&self, root: &Path, rel: &Path, mode: u32) -> nix::Result<PathBuf>;
    /// Creates an empty regular file (a mount point for a device node) if none exists.
    fn create_file(&self, path: &Path, mode: u32) -> nix::Result<()>;
    /// symlink(2): `link` points at `target`.
    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()>;
    /// rmdir(2).
    fn rmdir(&self, path: &Path) -> nix::Result<()>;
    /// The per-mount flags (nosuid, nodev, noexec, atime) of the mount holding `path`, from
    /// statvfs(3), as mount(2) flags: a remount must repeat the locked ones.
    fn mount_flags(&self, path: &Path) -> nix::Result<MsFlags>;
    /// A new user namespace mapping `0..count` to the host range of `ids`, as an fd.
    fn new_user_ns(&self, ids: IdMap) -> nix::Result<OwnedFd>;
    /// Mounts a detached clone of `src` at `dst`, idmapped through `userns` (open_tree,
    /// mount_setattr with MOUNT_ATTR_IDMAP, move_mount); nodev, and read-only and nosuid if
    /// asked.
    fn idmap_bind(
        &self,
        src: &Path,
        dst: &Path,
        userns: BorrowedFd<'_>,
        attrs: IdmapAttrs,
    ) -> nix::Result<()>;
    /// Moves the owners of the trusted tree at `dir` into the range of `ids`.
    fn shift_owners(&self, dir: &Path, ids: IdMap) -> nix::Result<()>;
    /// mknod(2) of a character device.
    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> nix::Result<()>;
    /// lchown(2).
    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()>;
    /// chown(2), following symlinks (for /proc/self/fd links to krunner's own descriptors).
    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()>;
    /// Writes `content` to an existing file (a /proc/sys knob).
    fn write_file(&self, path: &Path, content: &[u8]) -> nix::Result<()>;
    /// Drops supplementary groups, setns(2) into `userns`, becomes uid and gid 0 there.
    fn enter_user_ns(&self, userns: BorrowedFd<'_>) -> nix::Result<()>;
}

/// The real system calls, through nix.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxSys;

/// An `std::io::Error` from std's file helpers as an errno.
fn io_errno(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Sys for LinuxSys {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        nix::sched::unshare(flags)
    }

    fn join_netns(&self, path: &Path) -> nix::Result<()> {
        let ns = std::fs::File::open(path).map_err(io_errno)?;
        nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        nix::mount::mount(source, target, fstype, flags, data)
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        nix::mount::umount2(target, flags)
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        nix::unistd::pivot_root(new_root, put_old)
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        nix::unistd::chdir(path)
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> nix::Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(io_errno)
    }

    fn mkdir_beneath(&self, root: &Path, rel: &Path, mode: u32) -> nix::Result<PathBuf> {
        let mut dir = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        // No O_NOFOLLOW: with O_PATH it would hand back the symlink itself instead of the
        // ELOOP that RESOLVE_NO_SYMLINKS gives for it (openat2(2)).
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        for component in rel.components() {
            let Component::Normal(name) = component else {
                return Err(Errno::EINVAL);
            };
            // mkdirat never follows a symlink in its last component (it fails with EEXIST),
            // and the openat2 below then refuses that symlink.
            match mkdirat(&dir, name, Mode::from_bits_truncate(mode)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(e),
            }
            dir = openat2(&dir, name, how)?;
        }
        Ok(root.join(rel))
    }

    fn create_file(&self, path: &Path, mode: u32) -> nix::Result<()> {
        OpenOptions::new()
            .write(true)
            .create(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map(drop)
            .map_err(io_errno)
    }

    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        std::os::unix::fs::symlink(target, link).map_err(io_errno)
    }

    fn rmdir(&self, path: &Path) -> nix::Result<()> {
        std::fs::remove_dir(path).map_err(io_errno)
    }

    fn mount_flags(&self, path: &Path) -> nix::Result<MsFlags> {
        let st = statvfs(path)?.flags();
        let pairs = [
            (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
            (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
            (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
            (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
            (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
            (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
        ];
        Ok(pairs
            .iter()
            .filter(|(st_flag, _)| st.contains(*st_flag))
            .fold(MsFlags::empty(), |acc, (_, ms)| acc | *ms))
    }

    fn new_user_ns(&self, ids: IdMap) -> nix::Result<OwnedFd> {
        child_sys::new_user_ns(ids)
    }

    fn idmap_bind(
        &self,
        src: &Path,
        dst: &Path,
        userns: BorrowedFd<'_>,
        attrs: IdmapAttrs,
    ) -> nix::Result<()> {
        child_sys::idmap_bind(src, dst, userns, attrs)
    }

    fn shift_owners(&self, dir: &Path, ids: IdMap) -> nix::Result<()> {
        child_sys::shift_owners(dir, ids)
    }

    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> nix::Result<()> {
        child_sys::mknod_char(path, major, minor, mode)
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(io_errno)
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_errno)
    }

    fn write_file(&self, path: &Path, content: &[u8]) -> nix::Result<()> {
        use std::io::Write;
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|mut f| f.write_all(content))
            .map_err(io_errno)
    }

    fn enter_user_ns(&self, userns: BorrowedFd<'_>) -> nix::Result<()> {
        child_sys::enter_user_ns(userns)
    }
}

/// A step of the children's namespace and mount setup failed.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A path in the launch spec cannot be used as given.
    #[error("invalid {what} {path} in the launch spec: {reason}")]
    InvalidPath {
        /// Which field.
        what: &'static str,
        /// The offending path.
        path: PathBuf,
        /// Why it is refused.
        reason: &'static str,
    },
    /// unshare(2) of new namespaces.
    #[error("unshare({namespaces}){}", privilege_hint(.source))]
    Unshare {
        /// The namespaces asked for.
        namespaces: &'static str,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Joining the guest's network namespace (its jail).
    #[error("joining the guest's network namespace {path}{}", privilege_hint(.source))]
    JoinNetns {
        /// The namespace file.
        path: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Making every mount private, so nothing propagates back to the host.
    #[error("making / recursively private (MS_REC|MS_PRIVATE){}", privilege_hint(.source))]
    MakePrivate {
        /// errno.
        #[source]
        source: Errno,
    },
    /// Mounting the guest's overlay root.
    #[error(
        "mounting overlayfs at {merged} (lowerdir {lower}, upperdir {upper}, workdir {work}){}",
        overlay_hint(.source)
    )]
    MountOverlay {
        /// Read-only image rootfs.
        lower: PathBuf,
        /// Per-run writable layer.
        upper: PathBuf,
        /// overlayfs work dir.
        work: PathBuf,
        /// Mount point.
        merged: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Bind-mounting a directory root onto itself: pivot_root needs a mount point.
    #[error("bind-mounting the root directory {root} onto itself{}", privilege_hint(.source))]
    BindRoot {
        /// The guest root.
        root: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// sethostname(2) in the new UTS namespace.
    #[error("setting the guest host name to {name:?}{}", hostname_hint(.source))]
    Hostname {
        /// The name asked for.
        name: String,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Creating a share's mount point inside the guest root.
    #[error("creating the mount point {guest} inside the guest root {root}{}", mount_point_hint(.source))]
    ShareMountPoint {
        /// Guest root on the host.
        root: PathBuf,
        /// Path in the guest.
        guest: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Bind-mounting a host directory into the guest.
    #[error("bind-mounting share {host} at {guest}{}", bind_hint(.source))]
    BindShare {
        /// Host directory.
        host: PathBuf,
        /// Path in the guest.
        guest: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Remounting a `:ro` share read-only.
    #[error("remounting share {guest} read-only{}", privilege_hint(.source))]
    RemountReadOnly {
        /// Path in the guest.
        guest: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Building the guest's minimal /dev.
    #[error("setting up the guest's /dev: {what} {path}{}", privilege_hint(.source))]
    MountDev {
        /// Which part (tmpfs, device node, symlink, devpts, shm).
        what: &'static str,
        /// Host path of that part.
        path: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// chdir(2) during the pivot.
    #[error("changing directory to {path}")]
    Chdir {
        /// Where to.
        path: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Creating `/proc`, `/sys` or `/.old` in the guest root before the pivot.
    #[error("creating {path} inside the guest root {root}{}", mount_point_hint(.source))]
    MakeDir {
        /// Guest root on the host.
        root: PathBuf,
        /// Path in the guest.
        path: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// pivot_root(2) into the guest root.
    #[error("pivot_root into {root}{}", pivot_hint(.source))]
    PivotRoot {
        /// Guest root on the host.
        root: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Mounting a proc for the new pid namespace.
    #[error("mounting a fresh proc on /proc in the guest{}", privilege_hint(.source))]
    MountProc {
        /// errno.
        #[source]
        source: Errno,
    },
    /// Detaching the host's file system tree after the pivot.
    #[error("detaching the old root from /.old in the guest")]
    UnmountOldRoot {
        /// errno.
        #[source]
        source: Errno,
    },
    /// Mounting sysfs read-only.
    #[error("mounting sysfs read-only on /sys in the guest{}", sysfs_hint(.source))]
    MountSys {
        /// errno.
        #[source]
        source: Errno,
    },
    /// A step of the VMM's jail (its user namespace and minimal tree).
    #[error("VMM jail: {step} ({path}){}", jail_hint(.source))]
    Jail {
        /// What was being done.
        step: &'static str,
        /// The path involved.
        path: PathBuf,
        /// errno.
        #[source]
        source: Errno,
    },
}

impl SetupError {
    /// A short, stable name of the failed step (for the `Failed` event).
    pub fn step(&self) -> &'static str {
        match self {
            SetupError::InvalidPath { .. } => "spec",
            SetupError::Unshare { .. } => "unshare",
            SetupError::JoinNetns { .. } => "join_netns",
            SetupError::MakePrivate { .. } => "make_private",
            SetupError::MountOverlay { .. } => "mount_overlay",
            SetupError::BindRoot { .. } => "bind_root",
            SetupError::Hostname { .. } => "sethostname",
            SetupError::ShareMountPoint { .. } => "share_mount_point",
            SetupError::BindShare { .. } => "bind_share",
            SetupError::RemountReadOnly { .. } => "remount_read_only",
            SetupError::MountDev { .. } => "mount_dev",
            SetupError::Chdir { .. } => "chdir",
            SetupError::MakeDir { .. } => "mkdir",
            SetupError::PivotRoot { .. } => "pivot_root",
            SetupError::MountProc { .. } => "mount_proc",
            SetupError::UnmountOldRoot { .. } => "umount_old_root",
            SetupError::MountSys { .. } => "mount_sys",
            SetupError::Jail { .. } => "vmm_jail",
        }
    }

    /// The errno of the failed system call, if one failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            SetupError::InvalidPath { .. } => None,
            SetupError::Unshare { source, .. }
            | SetupError::MakePrivate { source }
            | SetupError::JoinNetns { source, .. }
            | SetupError::MountOverlay { source, .. }
            | SetupError::BindRoot { source, .. }
            | SetupError::Hostname { source, .. }
            | SetupError::ShareMountPoint { source, .. }
            | SetupError::BindShare { source, .. }
            | SetupError::RemountReadOnly { source, .. }
            | SetupError::MountDev { source, .. }
            | SetupError::Chdir { source, .. }
            | SetupError::MakeDir { source, .. }
            | SetupError::PivotRoot { source, .. }
            | SetupError::MountProc { source }
            | SetupError::UnmountOldRoot { source }
            | SetupError::MountSys { source }
            | SetupError::Jail { source, .. } => Some(*source as i32),
        }
    }
}

/// What a jail step's errno most likely means.
fn jail_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EINVAL => ": the kernel or this file system does not support idmapped mounts (Linux 5.19 or later and ext4, xfs, btrfs, or tmpfs from 6.3 on); move it, or run with --user-namespace off",
        Errno::ENOSYS => ": this kernel has no new mount API (Linux 5.12 or later is needed); run with --user-namespace off",
        Errno::EPERM => ": needs root in the host's user namespace",
        _ => "",
    }
}

/// The namespace and mount calls need privilege in the host's user namespace.
fn privilege_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EPERM => ": needs root or CAP_SYS_ADMIN in the host's user namespace",
        _ => "",
    }
}

fn overlay_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EPERM => privilege_hint(e),
        Errno::ENODEV => ": the kernel has no overlay file system (modprobe overlay)",
        Errno::ENOENT => ": one of the four directories does not exist",
        Errno::EINVAL => {
            ": upperdir and workdir must be on the same file system, one that overlayfs \
             accepts as an upper layer (not NFS or another overlay), and must not overlap"
        }
        Errno::EBUSY => ": upperdir or workdir is already used by another overlay mount",
        _ => "",
    }
}

fn hostname_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EINVAL => ": host names are at most 64 bytes",
        _ => privilege_hint(e),
    }
}

fn sysfs_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EPERM => {
            ": sysfs may only be mounted by root of the user namespace that owns the network \
             namespace (root on the host, or a run with its own network namespace)"
        }
        _ => "",
    }
}

fn mount_point_hint(e: &Errno) -> &'static str {
    match e {
        Errno::ELOOP => {
            ": a component of the path is a symlink in the guest root, and krunner never \
             follows symlinks out of the root the guest may have written"
        }
        Errno::ENOTDIR => ": a component of the path is not a directory in the guest root",
        Errno::EXDEV => ": the path leaves the guest root",
        Errno::EROFS => ": the guest root is read-only",
        _ => "",
    }
}

fn bind_hint(e: &Errno) -> &'static str {
    match e {
        Errno::ENOENT => ": the host directory does not exist",
        Errno::ENOTDIR => ": the host path is not a directory",
        _ => privilege_hint(e),
    }
}

fn pivot_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EINVAL => {
            ": the new root must be a mount point other than the current root, with a \
             private (not shared) parent mount"
        }
        _ => privilege_hint(e),
    }
}

/// The path `guest` (absolute, in the guest) relative to the guest's `/`, refusing `..`
/// and the root itself: a mount point must be a real directory strictly inside the root.
pub fn guest_relative(what: &'static str, guest: &Path) -> Result<PathBuf, SetupError> {
    let invalid = |reason| SetupError::InvalidPath {
        what,
        path: guest.to_path_buf(),
        reason,
    };
    let mut components = guest.components();
    if components.next() != Some(Component::RootDir) {
        return Err(invalid("it must be absolute"));
    }
    let mut rel = PathBuf::new();
    for c in components {
        match c {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            _ => return Err(invalid("it must not contain `..`")),
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(invalid("it must not be the guest's root"));
    }
    Ok(rel)
}

/// overlayfs option text for the directories: `runner`, when given, is the lower layer above
/// `lower`. `,` separates options and `:` lower layers, so paths with them (or non-UTF-8
/// paths) cannot be passed and are refused.
fn overlay_options(
    lower: &Path,
    runner: Option<&Path>,
    upper: &Path,
    work: &Path,
) -> Result<String, SetupError> {
    let mut opts = String::new();
    let layers = runner
        .map(|r| ("overlay runner layer", "lowerdir", r))
        .into_iter()
        .chain([
            ("overlay lowerdir", "lowerdir", lower),
            ("overlay upperdir", "upperdir", upper),
            ("overlay workdir", "workdir", work),
        ]);
    let mut last_key = "";
    for (what, key, path) in layers {
        let invalid = |reason| SetupError::InvalidPath {
            what,
            path: path.to_path_buf(),
            reason,
        };
        let text = path.to_str().ok_or_else(|| invalid("it is not UTF-8"))?;
        if !path.is_absolute() {
            return Err(invalid("it must be absolute"));
        }
        if text.contains([',', ':', '\\', '\n']) {
            return Err(invalid(
                "overlayfs options cannot carry `,` `:` `\\` or newlines",
            ));
        }
        // Lower layers are one option, top first: lowerdir=RUNNER:IMAGE.
        if key == last_key {
            opts.push(':');
        } else {
            if !opts.is_empty() {
                opts.push(',');
            }
            opts.push_str(key);
            opts.push('=');
        }
        opts.push_str(text);
        last_key = key;
    }
    // In a user namespace (rootless) overlayfs may keep its metadata in user.* xattrs only.
    if !crate::rootless::in_initial_user_ns() {
        opts.push_str(",userxattr");
    }
    Ok(opts)
}

/// Gives the calling process a private mount namespace and, for an overlay root, mounts the
/// overlay at `merged` (see the module header for the order and why).
///
/// Shared by the libkrun child and the namespace backend's child. Call it single-threaded:
/// unshare(CLONE_NEWNS) fails with EINVAL in a process whose threads share its fs state.
pub fn prepare_private_root(sys: &dyn Sys, spec: &LaunchSpec) -> Result<(), SetupError> {
    // First, while the host's mounts (where the namespace file is bound) are still ours.
    if let Some(netns) = &spec.netns {
        sys.join_netns(netns)
            .map_err(|source| SetupError::JoinNetns {
                path: netns.clone(),
                source,
            })?;
    }
    sys.unshare(CloneFlags::CLONE_NEWNS)
        .map_err(|source| SetupError::Unshare {
            namespaces: "CLONE_NEWNS",
            source,
        })?;
    sys.mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )
    .map_err(|source| SetupError::MakePrivate { source })?;
    // A jailed VMM's overlay is mounted in its tree, over idmapped layers (vmm_jail::build).
    // So is the namespace backend's, when its workload has a user namespace of its own.
    if spec.vmm_jail.is_some() || spec.workload_ids.is_some() {
        return Ok(());
    }
    if let RootSpec::Overlay {
        lower,
        runner,
        upper,
        work,
        merged,
    } = &spec.root
    {
        let layers = OverlayLayers {
            image: lower,
            runner: runner.as_deref(),
            upper,
            work,
        };
        mount_overlay(sys, &layers, lower, merged)?;
    }
    Ok(())
}

/// The directories of an overlay mount, as overlayfs is to be given them.
pub(super) struct OverlayLayers<'a> {
    /// The image's rootfs (or an idmapped view of it).
    pub(super) image: &'a Path,
    /// The provided runner's tree above it (or its view).
    pub(super) runner: Option<&'a Path>,
    /// The run's writable layer.
    pub(super) upper: &'a Path,
    /// overlayfs's work directory.
    pub(super) work: &'a Path,
}

/// Mounts overlayfs with `layers` at `merged`; an error names `cached` (the rootfs in the
/// cache, which the image layer may be a view of).
pub(super) fn mount_overlay(
    sys: &dyn Sys,
    layers: &OverlayLayers<'_>,
    cached: &Path,
    merged: &Path,
) -> Result<(), SetupError> {
    let data = overlay_options(layers.image, layers.runner, layers.upper, layers.work)?;
    sys.mount(
        Some(Path::new("overlay")),
        merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(&data),
    )
    .map_err(|source| SetupError::MountOverlay {
        lower: cached.to_path_buf(),
        upper: layers.upper.to_path_buf(),
        work: layers.work.to_path_buf(),
        merged: merged.to_path_buf(),
        source,
    })
}

/// Test double: records every call as one line (`mount SRC TARGET TYPE FLAGS DATA`, `-` for
/// none) and fails the first call whose line starts with a chosen prefix.
#[cfg(test)]
#[derive(Debug)]
pub struct FakeSys {
    calls: RefCell<Vec<String>>,
    failures: RefCell<Vec<(String, Errno)>>,
    symlinks: Vec<PathBuf>,
    mount_flags: MsFlags,
}

#[cfg(test)]
impl Default for FakeSys {
    fn default() -> Self {
        FakeSys {
            calls: RefCell::default(),
            failures: RefCell::default(),
            symlinks: Vec::new(),
            mount_flags: MsFlags::empty(),
        }
    }
}

#[cfg(test)]
impl FakeSys {
    /// A fake on which every call succeeds.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first call whose recorded line starts with `prefix` fails with `errno` (once).
    pub fn fail(self, prefix: &str, errno: Errno) -> Self {
        self.failures.borrow_mut().push((prefix.to_string(), errno));
        self
    }

    /// `path` is a symlink: `mkdir_beneath` through it gives ELOOP, as the kernel does.
    pub fn with_symlink(mut self, path: &str) -> Self {
        self.symlinks.push(PathBuf::from(path));
        self
    }

    /// What `mount_flags` reports for every path.
    pub fn with_mount_flags(mut self, flags: MsFlags) -> Self {
        self.mount_flags = flags;
        self
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn record(&self, line: String) -> nix::Result<()> {
        let mut failures = self.failures.borrow_mut();
        let hit = failures
            .iter()
            .position(|(p, _)| line.starts_with(p.as_str()));
        self.calls.borrow_mut().push(line);
        match hit {
            Some(i) => Err(failures.remove(i).1),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
fn flag_names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "-".into()
    } else {
        names.join("|")
    }
}

#[cfg(test)]
impl Sys for FakeSys {
    fn unshare(&self, flags: CloneFlags) -> nix::Result<()> {
        self.record(format!(
            "unshare {}",
            flag_names(flags.iter_names().map(|(n, _)| n))
        ))
    }

    fn join_netns(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("setns CLONE_NEWNET {}", path.display()))
    }

    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> nix::Result<()> {
        self.record(format!(
            "mount {} {} {} {} {}",
            source.map_or("-".into(), |s| s.display().to_string()),
            target.display(),
            fstype.unwrap_or("-"),
            flag_names(flags.iter_names().map(|(n, _)| n)),
            data.unwrap_or("-"),
        ))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> nix::Result<()> {
        self.record(format!(
            "umount2 {} {}",
            target.display(),
            flag_names(flags.iter_names().map(|(n, _)| n))
        ))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> nix::Result<()> {
        self.record(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ))
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        self.record(format!("sethostname {name}"))
    }

    fn chdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("chdir {}", path.display()))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> nix::Result<()> {
        self.record(format!("mkdir_all {} {mode:o}", path.display()))
    }

    fn mkdir_beneath(&self, root: &Path, rel: &Path, mode: u32) -> nix::Result<PathBuf> {
        self.record(format!(
            "mkdir_beneath {} {} {mode:o}",
            root.display(),
            rel.display()
        ))?;
        let mut at = root.to_path_buf();
        for c in rel.components() {
            let Component::Normal(name) = c else {
                return Err(Errno::EINVAL);
            };
            at.push(name);
            if self.symlinks.contains(&at) {
                return Err(Errno::ELOOP);
            }
        }
        Ok(root.join(rel))
    }

    fn create_file(&self, path: &Path, mode: u32) -> nix::Result<()> {
        self.record(format!("create_file {} {mode:o}", path.display()))
    }

    fn symlink(&self, target: &Path, link: &Path) -> nix::Result<()> {
        self.record(format!("symlink {} {}", target.display(), link.display()))
    }

    fn rmdir(&self, path: &Path) -> nix::Result<()> {
        self.record(format!("rmdir {}", path.display()))
    }

    fn mount_flags(&self, path: &Path) -> nix::Result<MsFlags> {
        self.record(format!("mount_flags {}", path.display()))?;
        Ok(self.mount_flags)
    }

    fn new_user_ns(&self, ids: IdMap) -> nix::Result<OwnedFd> {
        self.record(format!("new_user_ns 0:{}:{}", ids.host_first, ids.count))?;
        std::fs::File::open("/dev/null")
            .map(OwnedFd::from)
            .map_err(io_errno)
    }

    fn idmap_bind(
        &self,
        src: &Path,
        dst: &Path,
        _userns: BorrowedFd<'_>,
        attrs: IdmapAttrs,
    ) -> nix::Result<()> {
        self.record(format!(
            "idmap_bind {} {} {}{}",
            src.display(),
            dst.display(),
            if attrs.read_only { "ro" } else { "rw" },
            if attrs.nosuid { ",nosuid" } else { "" }
        ))
    }

    fn shift_owners(&self, dir: &Path, ids: IdMap) -> nix::Result<()> {
        self.record(format!("shift_owners {} {}", dir.display(), ids.host_first))
    }

    fn mknod_char(&self, path: &Path, major: u64, minor: u64, mode: u32) -> nix::Result<()> {
        self.record(format!(
            "mknod_char {} {major}:{minor} {mode:o}",
            path.display()
        ))
    }

    fn lchown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        self.record(format!("lchown {} {uid} {gid}", path.display()))
    }

    fn chown(&self, path: &Path, uid: u32, gid: u32) -> nix::Result<()> {
        self.record(format!("chown {} {uid} {gid}", path.display()))
    }

    fn write_file(&self, path: &Path, content: &[u8]) -> nix::Result<()> {
        self.record(format!(
            "write_file {} {}",
            path.display(),
            String::from_utf8_lossy(content)
        ))
    }

    fn enter_user_ns(&self, _userns: BorrowedFd<'_>) -> nix::Result<()> {
        self.record("enter_user_ns".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::launcher::spec::GuestExec;

    pub(crate) fn overlay_spec() -> LaunchSpec {
        LaunchSpec {
            run_id: "r1".into(),
            parent_pid: 1,
            root: RootSpec::Overlay {
                lower: "/c/rootfs".into(),
                runner: None,
                upper: "/r/upper".into(),
                work: "/r/work".into(),
                merged: "/r/merged".into(),
            },
            cpus: 1,
            memory_mib: 512,
            shares: vec![],
            exec: GuestExec {
                path: "/bin/sh".into(),
                args: vec![],
                env: vec![],
                workdir: "/".into(),
            },
            hostname: "guest1".into(),
            netns: None,
            nofile: 1024,
            console_log: None,
            events: "/r/events".into(),
            krun_log_level: 0,
            libkrunfw_dir: None,
            cgroup: None,
            vmm_jail: None,
            workload_ids: None,
        }
    }

    #[test]
    fn private_root_unshares_then_privatises_then_mounts_the_overlay() {
        let sys = FakeSys::new();
        prepare_private_root(&sys, &overlay_spec()).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "unshare CLONE_NEWNS",
                "mount - / - MS_REC|MS_PRIVATE -",
                "mount overlay /r/merged overlay - lowerdir=/c/rootfs,upperdir=/r/upper,workdir=/r/work",
            ]
        );
    }

    #[test]
    fn a_provided_runner_is_the_lower_layer_above_the_image() {
        let sys = FakeSys::new();
        let mut spec = overlay_spec();
        if let RootSpec::Overlay { runner, .. } = &mut spec.root {
            *runner = Some("/c/runners/ab/tree".into());
        }
        prepare_private_root(&sys, &spec).unwrap();
        assert_eq!(
            sys.calls()[2],
            "mount overlay /r/merged overlay - lowerdir=/c/runners/ab/tree:/c/rootfs,upperdir=/r/upper,workdir=/r/work"
        );
        if let RootSpec::Overlay { runner, .. } = &mut spec.root {
            *runner = Some("/c/a:b".into());
        }
        let e = prepare_private_root(&FakeSys::new(), &spec).unwrap_err();
        assert!(e.to_string().contains("overlay runner layer /c/a:b"), "{e}");
    }

    #[test]
    fn a_directory_root_mounts_nothing() {
        let sys = FakeSys::new();
        let mut spec = overlay_spec();
        spec.root = RootSpec::Dir("/r/root".into());
        prepare_private_root(&sys, &spec).unwrap();
        assert_eq!(
            sys.calls(),
            ["unshare CLONE_NEWNS", "mount - / - MS_REC|MS_PRIVATE -"]
        );
    }

    #[test]
    fn overlay_eperm_names_the_mount_point_and_the_privilege() {
        let sys = FakeSys::new().fail("mount overlay", Errno::EPERM);
        let e = prepare_private_root(&sys, &overlay_spec()).unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::MountOverlay {
                    source: Errno::EPERM,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("/r/merged") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        assert_eq!(e.step(), "mount_overlay");
        assert_eq!(e.errno(), Some(libc::EPERM));
    }

    #[test]
    fn unshare_and_make_private_failures_have_their_own_variants() {
        let e = prepare_private_root(
            &FakeSys::new().fail("unshare", Errno::EPERM),
            &overlay_spec(),
        )
        .unwrap_err();
        assert!(matches!(
            e,
            SetupError::Unshare {
                source: Errno::EPERM,
                ..
            }
        ));
        assert!(e.to_string().contains("needs root"), "{e}");
        let sys = FakeSys::new().fail("mount - /", Errno::EINVAL);
        let e = prepare_private_root(&sys, &overlay_spec()).unwrap_err();
        assert!(matches!(
            e,
            SetupError::MakePrivate {
                source: Errno::EINVAL
            }
        ));
        assert_eq!(sys.calls().len(), 2, "stops at the failed step");
    }

    #[test]
    fn overlay_paths_that_break_the_option_string_are_refused() {
        let mut spec = overlay_spec();
        spec.root = RootSpec::Overlay {
            lower: "/c/a,upperdir=/etc".into(),
            runner: None,
            upper: "/r/upper".into(),
            work: "/r/work".into(),
            merged: "/r/merged".into(),
        };
        let sys = FakeSys::new();
        let e = prepare_private_root(&sys, &spec).unwrap_err();
        assert!(matches!(e, SetupError::InvalidPath { .. }), "{e:?}");
        assert!(e.to_string().contains("/c/a,upperdir=/etc"), "{e}");
        assert!(!sys.calls().iter().any(|c| c.starts_with("mount overlay")));
    }

    #[test]
    fn guest_paths_must_be_absolute_and_inside_the_root() {
        assert_eq!(
            guest_relative("share", Path::new("/a/./b")).unwrap(),
            Path::new("a/b")
        );
        assert!(guest_relative("share", Path::new("a/b")).is_err());
        assert!(guest_relative("share", Path::new("/a/../../etc")).is_err());
        assert!(guest_relative("share", Path::new("/")).is_err());
    }

    /// The real `mkdir_beneath` (no privilege needed): creates nested directories, refuses a
    /// symlink pointing out of the root without creating anything through it.
    #[test]
    fn linux_mkdir_beneath_refuses_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();
        std::os::unix::fs::symlink("inner", root.join("rel")).unwrap();
        std::fs::create_dir(root.join("inner")).unwrap();

        let got = LinuxSys
            .mkdir_beneath(&root, Path::new("a/b/c"), 0o755)
            .unwrap();
        assert_eq!(got, root.join("a/b/c"));
        assert!(root.join("a/b/c").is_dir());
        // Idempotent.
        LinuxSys
            .mkdir_beneath(&root, Path::new("a/b/c"), 0o755)
            .unwrap();

        assert_eq!(
            LinuxSys.mkdir_beneath(&root, Path::new("evil/x"), 0o755),
            Err(Errno::ELOOP)
        );
        assert!(
            !outside.join("x").exists(),
            "nothing created through the symlink"
        );
        // Even a symlink that stays inside is refused: one rule, no lexical judgement.
        assert_eq!(
            LinuxSys.mkdir_beneath(&root, Path::new("rel/x"), 0o755),
            Err(Errno::ELOOP)
        );
        assert_eq!(
            LinuxSys.mkdir_beneath(&root, Path::new("evil"), 0o755),
            Err(Errno::ELOOP)
        );
        assert_eq!(
            LinuxSys.mkdir_beneath(&root, Path::new("../outside/y"), 0o755),
            Err(Errno::EINVAL)
        );
        assert!(!outside.join("y").exists());
    }
}

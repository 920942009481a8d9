//! The namespace backend's two child processes: the same guest pipeline as the libkrun child,
//! but in Linux namespaces of the host kernel (for hosts without usable KVM, and for tests).
//! Both are synchronous and start no async runtime; `main.rs` dispatches to them first.
//!
//! `__ns-child SPEC` ([`ns_child_main`]) runs in the host's pid namespace, where the libkrun
//! child would run, and supervises:
//! 1. read and delete the spec, emit `Started`, enter the run's cgroup
//!    ([`super::cgroup::join`]), arm PR_SET_PDEATHSIG(SIGKILL), then exit if the parent is
//!    already gone (it may have died before the death signal was armed);
//! 2. [`setup_sandbox`]: a private mount namespace with the overlay root
//!    ([`prepare_private_root`]); a directory root is bind-mounted onto itself because
//!    pivot_root needs a mount point; new pid, uts and ipc namespaces (no network namespace:
//!    the guest shares the host's network, as libkrun's TSI gives it); the host name;
//! 3. every share bind-mounted at its guest path, the mount point created without following
//!    symlinks (the root holds image content and may point anywhere), `:ro` ones remounted
//!    read-only;
//! 4. a minimal `/dev` (busybox tools fail without `/dev/null`);
//! 5. emit `RootReady` (every inherited descriptor above stderr was made close-on-exec on
//!    entry), write PID 1's [`InitSpec`] as a 0600 file next to the spec and spawn
//!    `/proc/self/exe __ns-init FILE` with an empty environment (a token in krunner's
//!    environment must not reach the guest). Being the first child after unshare(NEWPID), it
//!    is PID 1 of the new pid namespace. Emit `Entering`;
//! 6. forward SIGTERM/SIGINT to that PID 1, wait for it, exit with its status.
//!
//! `__ns-init FILE` ([`ns_init_main`]) is PID 1 of the new pid namespace, in the ns-child's
//! mount namespace:
//! 1. read and delete FILE; arm PR_SET_PDEATHSIG(SIGKILL): if the ns-child dies, PID 1 dies,
//!    and the kernel kills everything else in the pid namespace;
//! 2. [`enter_root`]: pivot_root into the root, a fresh `/proc` (only this namespace's
//!    processes), detach the host's tree, sysfs read-only on `/sys`;
//! 3. RLIMIT_NOFILE, the workload's seccomp deny-list ([`super::seccomp`]), spawn the workload with a clean signal state (never exec it: a PID 1
//!    that drops privileges loses its death signal and outlives its supervisor), forward
//!    SIGTERM/SIGINT to it, reap every child (orphans are re-parented to PID 1) and exit with
//!    the workload's status.
//!
//! Signals reach both through a signalfd with the signals blocked. For PID 1 this is not just
//! convenient: the kernel drops a signal sent to a namespace's init from outside when that init
//! has no handler for it, but a blocked signal is queued (kernel `sig_ignored()`).
//!
//! Exit statuses: the workload's own, 128+N if signal N killed it; 125 when a setup step
//! failed (with a `Failed` event and one line on stderr); 126 when the workload is not
//! executable, 127 when it (or its working directory) does not exist.

use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{kill, signal, SigHandler, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getppid, Pid};
use serde::{Deserialize, Serialize};

use super::spec::{emit, Event, GuestExec, LaunchSpec, RootSpec, Share, SpecError};
use super::sys::{guest_relative, prepare_private_root, LinuxSys, SetupError, Sys};
use super::vmm_jail::{self, IdmapAttrs};
use super::{privileges, NS_INIT};

/// What PID 1 needs, handed from the ns-child to `__ns-init` as a 0600 JSON file that PID 1
/// reads once and deletes (it holds the workload's environment, which may carry secrets).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InitSpec {
    /// The guest root on the host (already mounted in the shared mount namespace).
    pub root: PathBuf,
    /// The workload.
    pub exec: GuestExec,
    /// RLIMIT_NOFILE, soft = hard.
    pub nofile: u64,
    /// The run's event log.
    pub events: PathBuf,
    /// The ns-child's pid: PID 1 exits if its parent is no longer that process.
    pub supervisor_pid: i32,
    /// The workload's user namespace, as a descriptor PID 1 inherits (None: the workload is
    /// root of the host's user namespace, `--user-namespace off`).
    #[serde(default)]
    pub userns_fd: Option<i32>,
}

/// A step of the namespace backend's children failed.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// Reading the launch spec.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A namespace or mount step.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Dropping the workload's network capabilities.
    #[error("dropping the workload's capabilities")]
    Privileges {
        /// Why.
        #[source]
        source: super::privileges::PrivilegeError,
    },
    /// prctl(PR_SET_PDEATHSIG).
    #[error("arming the parent-death signal (PR_SET_PDEATHSIG)")]
    DeathSignal {
        /// errno.
        #[source]
        source: Errno,
    },
    /// The supervising process died before the death signal was armed.
    #[error("the supervising process (pid {expected}) is gone (parent is now pid {actual}); not starting")]
    ParentGone {
        /// Who the parent should be.
        expected: i32,
        /// Who it is.
        actual: i32,
    },
    /// Blocking the handled signals and opening the signalfd.
    #[error("blocking SIGTERM, SIGINT and SIGCHLD and opening a signalfd for them")]
    Signals {
        /// errno.
        #[source]
        source: Errno,
    },
    /// Writing PID 1's spec.
    #[error("writing PID 1's spec {path}")]
    WriteInitSpec {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Reading PID 1's spec.
    #[error("reading PID 1's spec {path}")]
    ReadInitSpec {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// PID 1's spec does not parse.
    #[error("PID 1's spec {path} is invalid: {reason}")]
    ParseInitSpec {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Spawning `/proc/self/exe __ns-init`.
    #[error("starting PID 1 of the new pid namespace (/proc/self/exe {NS_INIT}){}", spawn_init_hint(.source))]
    SpawnInit {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// waitpid(2) or reading the signalfd while supervising.
    #[error("supervising pid {pid}")]
    Wait {
        /// The process waited for.
        pid: i32,
        /// errno.
        #[source]
        source: Errno,
    },
    /// setrlimit(RLIMIT_NOFILE).
    #[error("setting RLIMIT_NOFILE to {nofile}{}", rlimit_hint(.source))]
    Rlimit {
        /// The limit asked for.
        nofile: u64,
        /// errno.
        #[source]
        source: Errno,
    },
    /// Entering the run's cgroup.
    #[error("entering the run's cgroup")]
    Cgroup(#[source] super::cgroup::CgroupError),
    /// Installing the workload's seccomp filter.
    #[error("installing the workload's seccomp filter")]
    Seccomp(#[source] super::seccomp::SeccompError),
    /// Spawning the workload in the guest.
    #[error("starting the workload {path} (working directory {workdir}){}", workload_hint(.source))]
    SpawnWorkload {
        /// Path in the guest.
        path: String,
        /// Working directory in the guest.
        workdir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl NsError {
    /// A short, stable name of the failed step (for the `Failed` event).
    pub fn step(&self) -> &'static str {
        match self {
            NsError::Spec(_) => "read_spec",
            NsError::Setup(e) => e.step(),
            NsError::DeathSignal { .. } => "pdeathsig",
            NsError::ParentGone { .. } => "parent_check",
            NsError::Signals { .. } => "signalfd",
            NsError::WriteInitSpec { .. } => "write_init_spec",
            NsError::ReadInitSpec { .. } | NsError::ParseInitSpec { .. } => "read_init_spec",
            NsError::SpawnInit { .. } => "spawn_init",
            NsError::Wait { .. } => "wait",
            NsError::Rlimit { .. } => "setrlimit",
            NsError::SpawnWorkload { .. } => "spawn_workload",
            NsError::Privileges { .. } => "drop_caps",
            NsError::Cgroup(_) => "join_cgroup",
            NsError::Seccomp(_) => "seccomp",
        }
    }

    /// The errno of the failed system call, if one failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NsError::Spec(SpecError::Io { source, .. }) => source.raw_os_error(),
            NsError::Spec(_)
            | NsError::ParentGone { .. }
            | NsError::ParseInitSpec { .. }
            | NsError::Privileges { .. }
            | NsError::Seccomp(_) => None,
            NsError::Cgroup(e) => e.errno(),
            NsError::Setup(e) => e.errno(),
            NsError::DeathSignal { source }
            | NsError::Signals { source }
            | NsError::Wait { source, .. }
            | NsError::Rlimit { source, .. } => Some(*source as i32),
            NsError::WriteInitSpec { source, .. }
            | NsError::ReadInitSpec { source, .. }
            | NsError::SpawnInit { source }
            | NsError::SpawnWorkload { source, .. } => source.raw_os_error(),
        }
    }

    /// The process exit status for this failure: 127 workload not found, 126 not
    /// executable, 125 anything else (the conventions of `env` and container runtimes).
    pub fn exit_code(&self) -> i32 {
        match self {
            NsError::SpawnWorkload { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT) => 127,
                Some(libc::EACCES | libc::ENOEXEC) => 126,
                _ => 125,
            },
            _ => 125,
        }
    }
}

fn spawn_init_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => ": the new pid namespace already had a PID 1 that exited",
        _ => "",
    }
}

fn rlimit_hint(e: &Errno) -> &'static str {
    match e {
        Errno::EPERM => {
            ": raising the hard limit needs CAP_SYS_RESOURCE, and it cannot exceed the \
             sysctl fs.nr_open"
        }
        _ => "",
    }
}

fn workload_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ENOENT) => {
            ": the program, its interpreter or dynamic loader, or the working directory does \
             not exist in the guest root"
        }
        Some(libc::EACCES) => ": the program is not executable (or a directory is not searchable)",
        Some(libc::ENOEXEC) => ": the program is not a binary the kernel can run",
        _ => "",
    }
}

/// Reports a failed step: a `Failed` event, one line on stderr; returns the exit status.
fn fail(events: &Path, who: &str, e: &NsError) -> i32 {
    let message = crate::error_chain(e);
    emit(
        events,
        &Event::Failed {
            step: e.step().to_string(),
            errno: e.errno(),
            message: message.clone(),
        },
    );
    eprintln!("krunner: {who}: {message}");
    e.exit_code()
}

impl InitSpec {
    /// Writes the spec as a new 0600 file (never over an existing one).
    pub fn write(&self, path: &Path) -> Result<(), NsError> {
        let err = |source| NsError::WriteInitSpec {
            path: path.to_path_buf(),
            source,
        };
        let body = serde_json::to_vec(self).map_err(|e| err(e.into()))?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(&body).map_err(err)
    }

    /// Reads the spec and deletes the file.
    pub fn take(path: &Path) -> Result<InitSpec, NsError> {
        let body = fs::read(path).map_err(|source| NsError::ReadInitSpec {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = fs::remove_file(path);
        serde_json::from_slice(&body).map_err(|e| NsError::ParseInitSpec {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// Host device nodes bind-mounted into the guest's `/dev` (bind mounts rather than mknod:
/// they keep working where mknod is not allowed, and carry the host's permissions).
const DEV_NODES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks of the guest's `/dev`: (name, target).
const DEV_LINKS: [(&str, &str); 5] = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// The ns-child's namespace and mount setup (steps 2–4 of the module header), in order.
/// Runs in the ns-child; everything it mounts is private to its new mount namespace. With
/// `workload_ids`, returns the workload's user namespace, whose ids the root and the shares
/// are idmapped to (see [`super::vmm_jail::mount_root`]).
pub fn setup_sandbox(sys: &dyn Sys, spec: &LaunchSpec) -> Result<Option<OwnedFd>, SetupError> {
    prepare_private_root(sys, spec)?;
    let userns = match spec.workload_ids {
        Some(ids) => {
            let root = spec.root.guest_root();
            let userns = sys.new_user_ns(ids).map_err(|source| SetupError::Jail {
                step: "create the workload's user namespace",
                path: root.to_path_buf(),
                source,
            })?;
            let staging = root.with_file_name("layers");
            vmm_jail::mount_root(
                sys,
                &spec.root,
                root,
                &staging,
                Some((userns.as_fd(), ids)),
                false,
            )?;
            Some(userns)
        }
        None => None,
    };
    if let (RootSpec::Dir(root), None) = (&spec.root, &userns) {
        sys.mount(
            Some(root),
            root,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .map_err(|source| SetupError::BindRoot {
            root: root.clone(),
            source,
        })?;
    }
    // The new pid namespace applies to children only: the next process spawned becomes its
    // PID 1. No CLONE_NEWNET: the guest uses the host's network, as under libkrun's TSI.
    let namespaces = CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC;
    sys.unshare(namespaces)
        .map_err(|source| SetupError::Unshare {
            namespaces: "CLONE_NEWPID|CLONE_NEWUTS|CLONE_NEWIPC",
            source,
        })?;
    sys.sethostname(&spec.hostname)
        .map_err(|source| SetupError::Hostname {
            name: spec.hostname.clone(),
            source,
        })?;
    let root = spec.root.guest_root();
    for share in &spec.shares {
        bind_share(sys, root, share, userns.as_ref().map(|u| u.as_fd()))?;
    }
    populate_dev(sys, root)?;
    Ok(userns)
}

/// Bind-mounts one share at its guest path under `root`, read-only if asked.
///
/// The mount point is created with [`Sys::mkdir_beneath`], which refuses any symlink on the
/// way: the root is image content (and, for a directory root, a clone the guest may have
/// written), so a path component could point anywhere on the host. Nothing runs in the guest
/// yet, so the checked path cannot change before the mount.
pub fn bind_share(
    sys: &dyn Sys,
    root: &Path,
    share: &Share,
    userns: Option<BorrowedFd<'_>>,
) -> Result<(), SetupError> {
    let rel = guest_relative("share guest path", &share.guest)?;
    let target =
        sys.mkdir_beneath(root, &rel, 0o755)
            .map_err(|source| SetupError::ShareMountPoint {
                root: root.to_path_buf(),
                guest: share.guest.clone(),
                source,
            })?;
    // In the workload's user namespace: idmapped, read-only in the same step.
    if let Some(userns) = userns {
        let attrs = IdmapAttrs {
            read_only: share.read_only,
            nosuid: false,
        };
        return sys
            .idmap_bind(&share.host, &target, userns, attrs)
            .map_err(|source| SetupError::BindShare {
                host: share.host.clone(),
                guest: share.guest.clone(),
                source,
            });
    }
    sys.mount(
        Some(&share.host),
        &target,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None,
    )
    .map_err(|source| SetupError::BindShare {
        host: share.host.clone(),
        guest: share.guest.clone(),
        source,
    })?;
    if !share.read_only {
        return Ok(());
    }
    // A bind mount takes its read-only flag only from a remount (mount(2)); this covers the
    // top mount of the share, not mounts below it on the host.
    let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    let ro_err = |source| SetupError::RemountReadOnly {
        guest: share.guest.clone(),
        source,
    };
    match sys.mount(None, &target, None, remount, None) {
        Ok(()) => Ok(()),
        // EPERM: the source mount's nosuid/nodev/noexec/atime flags are locked (it came from a
        // less privileged mount namespace) and a remount must repeat them (mount(2), EPERM).
        Err(Errno::EPERM) => {
            let keep = sys.mount_flags(&share.host).map_err(ro_err)?;
            sys.mount(None, &target, None, remount | keep, None)
                .map_err(ro_err)
        }
        Err(source) => Err(ro_err(source)),
    }
}

/// Builds the guest's minimal `/dev` on a fresh tmpfs: the six usual device nodes bound from
/// the host, the `/proc/self/fd` symlinks, a private devpts instance and `/dev/shm`.
pub fn populate_dev(sys: &dyn Sys, root: &Path) -> Result<(), SetupError> {
    let dev = sys
        .mkdir_beneath(root, Path::new("dev"), 0o755)
        .map_err(|source| SetupError::MountDev {
            what: "mount point",
            path: root.join("dev"),
            source,
        })?;
    let dev_err = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| SetupError::MountDev { what, path, source }
    };
    // Options as runc uses for /dev: a small tmpfs, no setuid programs.
    sys.mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )
    .map_err(dev_err("tmpfs", &dev))?;
    // Everything below is inside the tmpfs just mounted: krunner's own, so plain paths are safe.
    for name in DEV_NODES {
        let node = dev.join(name);
        sys.create_file(&node, 0o666)
            .map_err(dev_err("device node mount point", &node))?;
        let host = Path::new("/dev").join(name);
        sys.mount(Some(&host), &node, None, MsFlags::MS_BIND, None)
            .map_err(dev_err("device node bind mount", &node))?;
    }
    for (name, target) in DEV_LINKS {
        let link = dev.join(name);
        sys.symlink(Path::new(target), &link)
            .map_err(dev_err("symlink", &link))?;
    }
    let pts = dev.join("pts");
    sys.mkdir_all(&pts, 0o755)
        .map_err(dev_err("directory", &pts))?;
    // newinstance: the guest gets its own pty numbering, not the host's /dev/pts.
    sys.mount(
        Some(Path::new("devpts")),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .map_err(dev_err("devpts", &pts))?;
    let shm = dev.join("shm");
    sys.mkdir_all(&shm, 0o755)
        .map_err(dev_err("directory", &shm))?;
    sys.mount(
        Some(Path::new("tmpfs")),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(dev_err("shm tmpfs", &shm))
}

/// PID 1's move into the guest root (step 2 of `__ns-init`): pivot_root, a fresh `/proc` for
/// the new pid namespace, sysfs read-only, the host's tree detached.
///
/// The mount points are created beforehand with [`Sys::mkdir_beneath`] (never through a
/// symlink of the image), while the host's paths still resolve.
pub fn enter_root(sys: &dyn Sys, root: &Path) -> Result<(), SetupError> {
    for (name, mode) in [("proc", 0o555), ("sys", 0o555), (".old", 0o700)] {
        sys.mkdir_beneath(root, Path::new(name), mode)
            .map_err(|source| SetupError::MakeDir {
                root: root.to_path_buf(),
                path: Path::new("/").join(name),
                source,
            })?;
    }
    sys.chdir(root).map_err(|source| SetupError::Chdir {
        path: root.to_path_buf(),
        source,
    })?;
    // pivot_root(".", ".old") with the root as working directory: the old root ends up under
    // the new one, from where it can be detached.
    sys.pivot_root(Path::new("."), Path::new(".old"))
        .map_err(|source| SetupError::PivotRoot {
            root: root.to_path_buf(),
            source,
        })?;
    sys.chdir(Path::new("/"))
        .map_err(|source| SetupError::Chdir {
            path: PathBuf::from("/"),
            source,
        })?;
    // A proc mounted by a process of the new pid namespace shows that namespace only.
    sys.mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|source| SetupError::MountProc { source })?;
    // Before the host's tree goes: in a user namespace (rootless) the kernel lets a sysfs be
    // mounted only while a fully visible one is in the mount namespace.
    sys.mount(
        Some(Path::new("sysfs")),
        Path::new("/sys"),
        Some("sysfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None,
    )
    .map_err(|source| SetupError::MountSys { source })?;
    // MNT_DETACH: the host's tree is busy (our own stdio, for one); detach it lazily.
    sys.umount2(Path::new("/.old"), MntFlags::MNT_DETACH)
        .map_err(|source| SetupError::UnmountOldRoot { source })?;
    // Cosmetic: an image that ships a non-empty /.old keeps it.
    let _ = sys.rmdir(Path::new("/.old"));
    Ok(())
}

/// Blocks SIGTERM, SIGINT and SIGCHLD and returns a signalfd that reads them. Blocking also
/// makes a namespace's PID 1 receive SIGTERM/SIGINT from outside, which it would otherwise
/// drop for lack of a handler. Children get an empty mask again from
/// [`reset_signals_in_child`].
fn block_signals() -> Result<SignalFd, NsError> {
    let mut mask = SigSet::empty();
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGCHLD] {
        mask.add(sig);
    }
    mask.thread_block()
        .map_err(|source| NsError::Signals { source })?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).map_err(|source| NsError::Signals { source })
}

/// Gives the process `cmd` starts a clean signal state: nothing blocked, nothing ignored, as
/// a guest's processes have under libkrun's init.
///
/// std no longer does this (children inherit the spawning thread's signal mask since Rust
/// 1.66, rust-lang/rust#101077), ignored signals survive exec (signal(7)), this process blocks
/// SIGTERM, SIGINT and SIGCHLD for its signalfd, and krunner's own parent may have left some
/// ignored (a shell's background job ignores SIGINT and SIGQUIT). A blocked SIGTERM in the
/// workload would make forwarding it a no-op; an ignored SIGCHLD in PID 1 would auto-reap.
#[allow(unsafe_code)]
fn reset_signals_in_child(cmd: &mut Command) -> &mut Command {
    let empty = SigSet::empty();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called. It calls sigaction(2) (through nix's
    // `signal`, installing SIG_DFL: no handler code can run) and pthread_sigmask(3) only, on
    // values built before the fork, and neither allocates nor takes a lock.
    unsafe {
        cmd.pre_exec(move || {
            for sig in Signal::iterator() {
                if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                    let _ = signal(sig, SigHandler::SigDfl);
                }
            }
            empty.thread_set_mask().map_err(std::io::Error::from)
        })
    }
}

/// CAP_NET_ADMIN's number (linux/capability.h), which libc does not export.
const CAP_NET_ADMIN: libc::c_ulong = 12;

/// Makes the process `cmd` starts enter the workload's user namespace `fd` before its exec,
/// as its root (host ids of the run's range), in a mount namespace of its own there (so a
/// job can still mount, on top of the locked mounts of the sandbox), without
/// CAP_NET_ADMIN (setns gives a full bounding set). PID 1 itself stays as it is: a credential
/// change would clear its parent-death signal. `fd` becomes close-on-exec here.
#[allow(unsafe_code)]
fn enter_user_ns_in_child(cmd: &mut Command, fd: i32) -> Result<(), NsError> {
    let setup_err = |source| {
        NsError::Setup(SetupError::Jail {
            step: "keep the workload's user namespace from the workload",
            path: PathBuf::from(format!("fd {fd}")),
            source,
        })
    };
    // SAFETY: `fd` was inherited from the ns-child for exactly this use and stays open for
    // this process's life; the borrow does not outlive the call.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    nix::fcntl::fcntl(
        borrowed,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(setup_err)?;
    let check = |r: libc::c_long| {
        if r < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    };
    // SAFETY: the closure runs in the child between fork and exec; it makes raw system calls
    // only (setgroups, setns, setresgid, setresuid, prctl, unshare: async-signal-safe, no
    // allocation, no lock) on integers captured before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::syscall(
                libc::SYS_setgroups,
                0,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::setns(fd, libc::CLONE_NEWUSER).into())?;
            check(libc::syscall(libc::SYS_setresgid, 0, 0, 0))?;
            check(libc::syscall(libc::SYS_setresuid, 0, 0, 0))?;
            check(libc::prctl(libc::PR_CAPBSET_DROP, CAP_NET_ADMIN, 0, 0, 0).into())?;
            check(libc::unshare(libc::CLONE_NEWNS).into())
        });
    }
    Ok(())
}

/// Forwards SIGTERM/SIGINT to `target`, reaps every child (PID 1 inherits orphans) and
/// returns `target`'s exit status (128+N if signal N killed it).
fn supervise(signals: &SignalFd, target: Pid) -> Result<i32, NsError> {
    let wait_err = |source| NsError::Wait {
        pid: target.as_raw(),
        source,
    };
    loop {
        // Reap before reading: a SIGCHLD that arrives after this loop stays queued (blocked),
        // so the read below cannot sleep through an exit.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) if pid == target => return Ok(code),
                Ok(WaitStatus::Signaled(pid, sig, _)) if pid == target => {
                    return Ok(128 + sig as i32)
                }
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(wait_err(e)),
            }
        }
        match signals.read_signal() {
            Ok(Some(info)) => {
                let signo = i32::try_from(info.ssi_signo).unwrap_or(0);
                if let Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) = Signal::try_from(signo) {
                    // ESRCH: it has just exited, and its SIGCHLD is queued behind this signal.
                    let _ = kill(target, sig);
                }
            }
            Ok(None) | Err(Errno::EINTR) => {}
            Err(e) => return Err(wait_err(e)),
        }
    }
}

/// Marks every inherited file descriptor above stderr close-on-exec, so that none reaches
/// PID 1 or the guest (whoever started krunner may have left pipes or sockets open without
/// FD_CLOEXEC). Best effort: CLOSE_RANGE_CLOEXEC needs Linux 5.11, and nix has no wrapper.
#[allow(unsafe_code)]
fn cloexec_inherited_fds() {
    let flags = libc::c_long::from(libc::CLOSE_RANGE_CLOEXEC);
    // SAFETY: close_range(2) with CLOSE_RANGE_CLOEXEC closes nothing; it only sets FD_CLOEXEC
    // on descriptors 3 and up, so no descriptor owned elsewhere in this process is
    // invalidated. The arguments are plain integers.
    let _ = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_long,
            libc::c_long::from(u32::MAX),
            flags,
        )
    };
}

/// `__ns-child SPEC`: sets up the namespaces and supervises PID 1 (see the module header).
/// Returns the process's exit status.
pub fn ns_child_main(spec_path: &Path) -> i32 {
    cloexec_inherited_fds();
    // Only for `ps` on the host: argv[0] of a re-exec through /proc/self/exe reads "exe".
    let _ = prctl::set_name(c"krunner-ns");
    let spec = match LaunchSpec::take(spec_path) {
        Ok(s) => s,
        Err(e) => {
            // No spec, no events file: stderr is all there is.
            eprintln!("krunner: ns-child: {}", crate::error_chain(&e));
            return 125;
        }
    };
    emit(
        &spec.events,
        &Event::Started {
            pid: i32::try_from(std::process::id()).unwrap_or(-1),
        },
    );
    match run_ns_child(&spec, spec_path) {
        Ok(code) => code,
        Err(e) => fail(&spec.events, "ns-child", &e),
    }
}

fn run_ns_child(spec: &LaunchSpec, spec_path: &Path) -> Result<i32, NsError> {
    // Into the run's cgroup first: PID 1 and the workload inherit it.
    if let Some(dir) = &spec.cgroup {
        super::cgroup::join(dir).map_err(NsError::Cgroup)?;
    }
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| NsError::DeathSignal { source })?;
    // The parent may have died between spawning us and the line above; we would then have
    // been re-parented and never get the death signal.
    let parent = getppid().as_raw();
    if parent != spec.parent_pid {
        return Err(NsError::ParentGone {
            expected: spec.parent_pid,
            actual: parent,
        });
    }
    let userns = setup_sandbox(&LinuxSys, spec)?;
    // PID 1 inherits it across its exec; it sets close-on-exec again before the workload.
    if let Some(fd) = &userns {
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        )
        .map_err(|source| SetupError::Jail {
            step: "hand the workload's user namespace to PID 1",
            path: spec.root.guest_root().to_path_buf(),
            source,
        })?;
    }
    emit(&spec.events, &Event::RootReady);

    let mut init_path = OsString::from(spec_path.as_os_str());
    init_path.push(".init");
    let init_path = PathBuf::from(init_path);
    let me = i32::try_from(std::process::id()).unwrap_or(-1);
    InitSpec {
        root: spec.root.guest_root().to_path_buf(),
        exec: spec.exec.clone(),
        nofile: spec.nofile,
        events: spec.events.clone(),
        supervisor_pid: me,
        userns_fd: userns.as_ref().map(|fd| fd.as_raw_fd()),
    }
    .write(&init_path)?;

    // Blocked before the spawn, so a SIGTERM arriving meanwhile is queued for forwarding
    // rather than killing us with PID 1 orphaned until its death signal fires.
    let signals = block_signals()?;
    let spawned = reset_signals_in_child(&mut Command::new("/proc/self/exe"))
        .arg0("krunner")
        .arg(NS_INIT)
        .arg(&init_path)
        .env_clear()
        .spawn();
    let child = match spawned {
        Ok(c) => c,
        Err(source) => {
            let _ = fs::remove_file(&init_path);
            return Err(NsError::SpawnInit { source });
        }
    };
    emit(&spec.events, &Event::Entering);
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1));
    let status = supervise(&signals, pid);
    // PID 1 deletes it on start; this covers a PID 1 that died before reading it.
    let _ = fs::remove_file(&init_path);
    status
}

/// The parent pid of this process as the host's (not the new namespace's) /proc reports
/// it; `None` if it cannot be read. `getppid()` gives 0 to a namespace's PID 1.
fn host_ppid() -> Option<i32> {
    let stat = fs::read_to_string("/proc/self/stat").ok()?;
    // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `__ns-init FILE`: PID 1 of the new pid namespace (see the module header). Returns the
/// process's exit status.
pub fn ns_init_main(init_path: &Path) -> i32 {
    let _ = prctl::set_name(c"krunner-init");
    let init = match InitSpec::take(init_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("krunner: ns-init: {}", crate::error_chain(&e));
            return 125;
        }
    };
    // The events file's host path is gone after the pivot; keep it open (close-on-exec, so
    // the workload does not inherit it) and write through /proc/self/fd, which resolves
    // before the pivot (host proc) and after it (the guest's proc).
    let events_file = OpenOptions::new().append(true).open(&init.events).ok();
    let events = events_file.as_ref().map_or_else(
        || init.events.clone(),
        |f| PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd())),
    );
    match run_ns_init(&init) {
        Ok(code) => code,
        Err(e) => fail(&events, "ns-init", &e),
    }
}

fn run_ns_init(init: &InitSpec) -> Result<i32, NsError> {
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(|source| NsError::DeathSignal { source })?;
    // PID 1 is not killed with its parent's death unless the death signal was armed in time;
    // the host's /proc (still mounted here) names the real parent.
    if let Some(parent) = host_ppid() {
        if parent != init.supervisor_pid {
            return Err(NsError::ParentGone {
                expected: init.supervisor_pid,
                actual: parent,
            });
        }
    }
    let signals = block_signals()?;
    enter_root(&LinuxSys, &init.root)?;
    setrlimit(Resource::RLIMIT_NOFILE, init.nofile, init.nofile).map_err(|source| {
        NsError::Rlimit {
            nofile: init.nofile,
            source,
        }
    })?;
    // Root in the guest, but never able to reconfigure the network (and so flush the egress
    // rules of its namespace, or touch the host's under --egress-policy open).
    privileges::drop_from_all(privileges::NS_WORKLOAD_DROPS)
        .map_err(|source| NsError::Privileges { source })?;
    // Last before the workload: PID 1 needs nothing on the list, the workload inherits it.
    super::seccomp::install(super::seccomp::Profile::Workload).map_err(NsError::Seccomp)?;
    let e = &init.exec;
    let mut cmd = Command::new(&e.path);
    reset_signals_in_child(&mut cmd);
    if let Some(fd) = init.userns_fd {
        enter_user_ns_in_child(&mut cmd, fd)?;
    }
    let child = cmd
        .args(&e.args)
        .env_clear()
        .envs(e.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&e.workdir)
        .spawn()
        .map_err(|source| NsError::SpawnWorkload {
            path: e.path.clone(),
            workdir: e.workdir.clone(),
            source,
        })?;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(-1));
    supervise(&signals, pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launcher::sys::FakeSys;

    fn spec() -> LaunchSpec {
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
            shares: vec![
                Share {
                    tag: "work".into(),
                    host: "/h/work".into(),
                    guest: "/home/runner/work".into(),
                    read_only: false,
                },
                Share {
                    tag: "cache".into(),
                    host: "/h/cache".into(),
                    guest: "/cache".into(),
                    read_only: true,
                },
            ],
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

    const DEV_CALLS: [&str; 23] = [
        "mkdir_beneath /r/merged dev 755",
        "mount tmpfs /r/merged/dev tmpfs MS_NOSUID|MS_STRICTATIME mode=755,size=65536k",
        "create_file /r/merged/dev/null 666",
        "mount /dev/null /r/merged/dev/null - MS_BIND -",
        "create_file /r/merged/dev/zero 666",
        "mount /dev/zero /r/merged/dev/zero - MS_BIND -",
        "create_file /r/merged/dev/full 666",
        "mount /dev/full /r/merged/dev/full - MS_BIND -",
        "create_file /r/merged/dev/random 666",
        "mount /dev/random /r/merged/dev/random - MS_BIND -",
        "create_file /r/merged/dev/urandom 666",
        "mount /dev/urandom /r/merged/dev/urandom - MS_BIND -",
        "create_file /r/merged/dev/tty 666",
        "mount /dev/tty /r/merged/dev/tty - MS_BIND -",
        "symlink /proc/self/fd /r/merged/dev/fd",
        "symlink /proc/self/fd/0 /r/merged/dev/stdin",
        "symlink /proc/self/fd/1 /r/merged/dev/stdout",
        "symlink /proc/self/fd/2 /r/merged/dev/stderr",
        "symlink pts/ptmx /r/merged/dev/ptmx",
        "mkdir_all /r/merged/dev/pts 755",
        "mount devpts /r/merged/dev/pts devpts MS_NOSUID|MS_NOEXEC newinstance,ptmxmode=0666,mode=620",
        "mkdir_all /r/merged/dev/shm 755",
        "mount tmpfs /r/merged/dev/shm tmpfs MS_NOSUID|MS_NODEV|MS_NOEXEC mode=1777,size=65536k",
    ];

    #[test]
    fn sandbox_setup_runs_in_order() {
        let sys = FakeSys::new();
        setup_sandbox(&sys, &spec()).unwrap();
        let mut expected = vec![
            "unshare CLONE_NEWNS",
            "mount - / - MS_REC|MS_PRIVATE -",
            "mount overlay /r/merged overlay - lowerdir=/c/rootfs,upperdir=/r/upper,workdir=/r/work",
            "unshare CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID",
            "sethostname guest1",
            "mkdir_beneath /r/merged home/runner/work 755",
            "mount /h/work /r/merged/home/runner/work - MS_BIND|MS_REC -",
            "mkdir_beneath /r/merged cache 755",
            "mount /h/cache /r/merged/cache - MS_BIND|MS_REC -",
            "mount - /r/merged/cache - MS_RDONLY|MS_REMOUNT|MS_BIND -",
        ];
        expected.extend(DEV_CALLS);
        assert_eq!(sys.calls(), expected);
    }

    #[test]
    fn a_directory_root_is_bound_onto_itself_for_pivot_root() {
        let sys = FakeSys::new();
        let mut s = spec();
        s.root = RootSpec::Dir("/r/root".into());
        s.shares.clear();
        setup_sandbox(&sys, &s).unwrap();
        assert_eq!(
            sys.calls()[..4],
            [
                "unshare CLONE_NEWNS",
                "mount - / - MS_REC|MS_PRIVATE -",
                "mount /r/root /r/root - MS_BIND|MS_REC -",
                "unshare CLONE_NEWUTS|CLONE_NEWIPC|CLONE_NEWPID",
            ]
        );
    }

    #[test]
    fn overlay_eperm_stops_the_setup_with_its_variant() {
        let sys = FakeSys::new().fail("mount overlay", Errno::EPERM);
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
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
            msg.contains("/r/merged") && msg.contains("needs root or CAP_SYS_ADMIN"),
            "{msg}"
        );
        assert_eq!(sys.calls().len(), 3, "nothing after the failed mount");
    }

    #[test]
    fn missing_share_source_names_both_paths() {
        let sys = FakeSys::new().fail("mount /h/work", Errno::ENOENT);
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
        let SetupError::BindShare {
            host,
            guest,
            source,
        } = &e
        else {
            panic!("{e:?}")
        };
        assert_eq!(
            (host.as_path(), guest.as_path()),
            (Path::new("/h/work"), Path::new("/home/runner/work"))
        );
        assert_eq!(*source, Errno::ENOENT);
        let msg = e.to_string();
        assert!(
            msg.contains("/h/work") && msg.contains("does not exist"),
            "{msg}"
        );
        let ns = NsError::from(e);
        assert_eq!(
            (ns.step(), ns.errno(), ns.exit_code()),
            ("bind_share", Some(libc::ENOENT), 125)
        );
        assert!(
            crate::error_chain(&ns).ends_with("ENOENT: No such file or directory"),
            "{}",
            crate::error_chain(&ns)
        );
    }

    #[test]
    fn share_through_a_symlink_is_refused_before_mounting() {
        let sys = FakeSys::new().with_symlink("/r/merged/home/runner");
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::ShareMountPoint {
                    source: Errno::ELOOP,
                    ..
                }
            ),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("/home/runner/work") && msg.contains("symlink"),
            "{msg}"
        );
        assert!(
            !sys.calls().iter().any(|c| c.starts_with("mount /h/")),
            "{:?}",
            sys.calls()
        );
    }

    #[test]
    fn share_guest_path_with_dotdot_is_refused() {
        let mut s = spec();
        s.shares[0].guest = "/x/../../etc".into();
        let e = setup_sandbox(&FakeSys::new(), &s).unwrap_err();
        assert!(matches!(e, SetupError::InvalidPath { .. }), "{e:?}");
        assert!(e.to_string().contains("/x/../../etc"));
    }

    #[test]
    fn read_only_remount_repeats_locked_flags_after_eperm() {
        let sys = FakeSys::new()
            .fail("mount - /r/merged/cache", Errno::EPERM)
            .with_mount_flags(MsFlags::MS_NOSUID | MsFlags::MS_NODEV);
        setup_sandbox(&sys, &spec()).unwrap();
        let calls = sys.calls();
        let i = calls
            .iter()
            .position(|c| c == "mount_flags /h/cache")
            .unwrap();
        assert_eq!(
            calls[i - 1],
            "mount - /r/merged/cache - MS_RDONLY|MS_REMOUNT|MS_BIND -"
        );
        assert_eq!(
            calls[i + 1],
            "mount - /r/merged/cache - MS_RDONLY|MS_NOSUID|MS_NODEV|MS_REMOUNT|MS_BIND -"
        );
    }

    #[test]
    fn read_only_remount_failure_has_its_variant() {
        let sys = FakeSys::new().fail("mount - /r/merged/cache", Errno::EINVAL);
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::RemountReadOnly {
                    source: Errno::EINVAL,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("/cache"));
    }

    #[test]
    fn dev_failures_name_the_part() {
        let sys = FakeSys::new().fail("mount devpts", Errno::EPERM);
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
        assert!(
            matches!(e, SetupError::MountDev { what: "devpts", .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("/r/merged/dev/pts") && msg.contains("CAP_SYS_ADMIN"),
            "{msg}"
        );
        let sys = FakeSys::new().with_symlink("/r/merged/dev");
        let e = setup_sandbox(&sys, &spec()).unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::MountDev {
                    source: Errno::ELOOP,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn hostname_and_unshare_failures_have_their_variants() {
        let e =
            setup_sandbox(&FakeSys::new().fail("sethostname", Errno::EINVAL), &spec()).unwrap_err();
        assert!(
            matches!(e, SetupError::Hostname { .. }) && e.to_string().contains("64 bytes"),
            "{e}"
        );
        let e = setup_sandbox(
            &FakeSys::new().fail("unshare CLONE_NEWUTS", Errno::EPERM),
            &spec(),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::Unshare {
                    source: Errno::EPERM,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("CLONE_NEWPID"));
    }

    #[test]
    fn pid1_pivots_in_order() {
        let sys = FakeSys::new();
        enter_root(&sys, Path::new("/r/merged")).unwrap();
        assert_eq!(
            sys.calls(),
            [
                "mkdir_beneath /r/merged proc 555",
                "mkdir_beneath /r/merged sys 555",
                "mkdir_beneath /r/merged .old 700",
                "chdir /r/merged",
                "pivot_root . .old",
                "chdir /",
                "mount proc /proc proc MS_NOSUID|MS_NODEV|MS_NOEXEC -",
                "mount sysfs /sys sysfs MS_RDONLY|MS_NOSUID|MS_NODEV|MS_NOEXEC -",
                "umount2 /.old MNT_DETACH",
                "rmdir /.old",
            ]
        );
    }

    #[test]
    fn pid1_step_failures_have_their_variants() {
        let root = Path::new("/r/merged");
        let e = enter_root(&FakeSys::new().fail("pivot_root", Errno::EINVAL), root).unwrap_err();
        assert!(matches!(e, SetupError::PivotRoot { .. }) && e.to_string().contains("/r/merged"));
        assert!(e.to_string().contains("mount point"), "{e}");
        let e = enter_root(&FakeSys::new().fail("mount proc", Errno::EPERM), root).unwrap_err();
        assert!(matches!(e, SetupError::MountProc { .. }), "{e:?}");
        let e = enter_root(&FakeSys::new().with_symlink("/r/merged/proc"), root).unwrap_err();
        assert!(
            matches!(
                e,
                SetupError::MakeDir {
                    source: Errno::ELOOP,
                    ..
                }
            ),
            "{e:?}"
        );
        // rmdir of /.old is best effort.
        enter_root(&FakeSys::new().fail("rmdir", Errno::ENOTEMPTY), root).unwrap();
    }

    #[test]
    fn workload_spawn_errors_map_to_shell_exit_codes() {
        let e = |errno| NsError::SpawnWorkload {
            path: "/bin/x".into(),
            workdir: "/w".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(e(libc::ENOENT).exit_code(), 127);
        assert_eq!(e(libc::EACCES).exit_code(), 126);
        assert_eq!(e(libc::E2BIG).exit_code(), 125);
        assert!(e(libc::ENOENT).to_string().contains("/bin/x"));
    }

    #[test]
    fn init_spec_is_private_and_read_once() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spec.json.init");
        let s = InitSpec {
            root: "/r/merged".into(),
            exec: spec().exec,
            nofile: 4096,
            events: "/r/events".into(),
            supervisor_pid: 42,
            userns_fd: Some(7),
        };
        s.write(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(s.write(&p).is_err(), "never overwrites");
        assert_eq!(InitSpec::take(&p).unwrap(), s);
        assert!(!p.exists());
    }
}

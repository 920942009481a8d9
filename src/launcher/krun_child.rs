//! The libkrun VM child (`krunner __krun-child SPEC`): the only place, with `sys/`, that calls
//! libkrun's C API.
//!
//! It runs in a process of its own, re-executed from the krunner binary before any thread
//! exists, because `krun_start_enter` takes the process over: on success it never returns and
//! the VMM `_exit`s with the guest workload's status. In order:
//! 1. take the spec (a 0600 file, deleted once read), arm PR_SET_PDEATHSIG and check that the
//!    parent is still the one that spawned us;
//! 2. enter a private mount namespace and mount the overlay root there (so it dies with us);
//!    with the VMM's jail (the default), build its minimal tree, pivot into it and enter its
//!    user namespace instead ([`super::vmm_jail`]);
//! 3. configure a libkrun context: vCPUs and RAM, the root, one virtio-fs device per share,
//!    workdir, rlimits, the workload with an explicit environment (never envp=NULL, which would
//!    copy krunner's whole environment into the guest), the console file;
//! 4. set no_new_privs and drop every capability but the file ones virtio-fs needs
//!    ([`super::privileges`]), then install the VMM's seccomp deny-list ([`super::seccomp`]);
//! 5. `krun_start_enter`.
//!
//! Before step 2 the child enters the run's cgroup ([`super::cgroup::join`]) when there is one.
//!
//! Every libkrun call's negative-errno return is checked and reported as a [`Event::Failed`]
//! naming the call. stdin is /dev/null (the parent arranges it): libkrun puts a TTY stdin into
//! raw mode.
#![allow(unsafe_code)]

use std::ffi::{CString, NulError};
use std::os::raw::c_char;
use std::path::Path;

use std::os::fd::AsFd;

use krunner_sys as krun;
use nix::sys::signal::Signal;

use super::spec::{Event, EventLog, LaunchSpec};
use super::sys::{prepare_private_root, LinuxSys};
use super::vmm_jail::{self, JailedPaths};
use super::{cgroup, privileges, seccomp};

/// A failed libkrun call: its name and the errno it returned.
#[derive(Debug, thiserror::Error)]
pub enum KrunError {
    /// A `krun_*` call returned a negative errno.
    #[error("{call} failed: {}", nix::errno::Errno::from_raw(*errno))]
    Call {
        /// Which function.
        call: &'static str,
        /// The errno (positive).
        errno: i32,
    },
    /// A string for libkrun contains a NUL byte.
    #[error("{what} contains a NUL byte")]
    Nul {
        /// Which value.
        what: &'static str,
        /// Where the NUL is.
        #[source]
        source: NulError,
    },
}

/// Turns libkrun's `0 or -errno` convention into a Result (Firecracker's SyscallReturnCode).
fn check(call: &'static str, ret: i32) -> Result<i32, KrunError> {
    if ret < 0 {
        Err(KrunError::Call { call, errno: -ret })
    } else {
        Ok(ret)
    }
}

fn cstr(what: &'static str, s: &str) -> Result<CString, KrunError> {
    CString::new(s).map_err(|source| KrunError::Nul { what, source })
}

fn cpath(what: &'static str, p: &Path) -> Result<CString, KrunError> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes()).map_err(|source| KrunError::Nul { what, source })
}

/// A NULL-terminated `char *[]` that owns its strings.
struct CStrArray {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl CStrArray {
    fn new(
        what: &'static str,
        items: impl IntoIterator<Item = String>,
    ) -> Result<CStrArray, KrunError> {
        let owned = items
            .into_iter()
            .map(|s| cstr(what, &s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut ptrs: Vec<*const c_char> = owned.iter().map(|c| c.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        Ok(CStrArray {
            _owned: owned,
            ptrs,
        })
    }

    fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

/// A libkrun configuration context, freed on drop unless `krun_start_enter` consumed it.
pub struct KrunCtx {
    id: u32,
}

impl KrunCtx {
    /// Creates a context (this also loads libkrunfw's symbols lazily, at start).
    pub fn new(log_level: u32) -> Result<KrunCtx, KrunError> {
        // SAFETY: krun_set_log_level takes a plain integer and only sets global logger state;
        // it is called once, before any context exists.
        check("krun_set_log_level", unsafe {
            krun::krun_set_log_level(log_level)
        })?;
        // SAFETY: no arguments; returns a new context id or -errno.
        let id = check("krun_create_ctx", unsafe { krun::krun_create_ctx() })?;
        Ok(KrunCtx { id: id as u32 })
    }

    /// Applies the whole spec, with the root, shares and console at `paths` (where this
    /// process sees them: in the jail's tree, or the spec's own paths); every call must
    /// return 0.
    pub fn configure(&self, spec: &LaunchSpec, paths: &JailedPaths) -> Result<(), KrunError> {
        let id = self.id;
        // SAFETY: `id` came from krun_create_ctx and has not been consumed by krun_start_enter.
        check("krun_set_vm_config", unsafe {
            krun::krun_set_vm_config(id, spec.cpus, spec.memory_mib)
        })?;
        let root = cpath("root path", &paths.root)?;
        // SAFETY: `id` is live; `root` is a NUL-terminated string that outlives the call
        // (libkrun copies it).
        check("krun_set_root", unsafe {
            krun::krun_set_root(id, root.as_ptr())
        })?;
        for (share, host) in spec.shares.iter().zip(&paths.shares) {
            let tag = cstr("share tag", &share.tag)?;
            let host = cpath("share path", host)?;
            // SAFETY: `id` is live; `tag` and `host` are NUL-terminated and outlive the call;
            // shm_size 0 means no DAX window.
            check("krun_add_virtiofs3", unsafe {
                krun::krun_add_virtiofs3(id, tag.as_ptr(), host.as_ptr(), 0, share.read_only)
            })?;
        }
        let workdir = cstr("workdir", &spec.exec.workdir)?;
        // SAFETY: `id` is live; `workdir` is NUL-terminated and outlives the call.
        check("krun_set_workdir", unsafe {
            krun::krun_set_workdir(id, workdir.as_ptr())
        })?;
        // RLIMIT_NOFILE is resource 7 on Linux; libkrun wants "ID=CUR:MAX".
        let rlimits = CStrArray::new("rlimit", [format!("7={n}:{n}", n = spec.nofile)])?;
        // SAFETY: `id` is live; `rlimits` is a NULL-terminated array of NUL-terminated strings
        // that outlives the call.
        check("krun_set_rlimits", unsafe {
            krun::krun_set_rlimits(id, rlimits.as_ptr())
        })?;
        let path = cstr("workload path", &spec.exec.path)?;
        let argv = CStrArray::new("argument", spec.exec.args.iter().cloned())?;
        // Always a real array, even when empty: envp == NULL would copy our environment.
        let envp = CStrArray::new(
            "environment",
            spec.exec.env.iter().map(|(k, v)| format!("{k}={v}")),
        )?;
        // SAFETY: `id` is live; `path` is NUL-terminated; `argv` and `envp` are
        // NULL-terminated arrays (envp is never NULL) that outlive the call.
        check("krun_set_exec", unsafe {
            krun::krun_set_exec(id, path.as_ptr(), argv.as_ptr(), envp.as_ptr())
        })?;
        if let Some(log) = &paths.console {
            let log = cpath("console log", log)?;
            // SAFETY: `id` is live; `log` is NUL-terminated and outlives the call.
            check("krun_set_console_output", unsafe {
                krun::krun_set_console_output(id, log.as_ptr())
            })?;
        }
        Ok(())
    }

    /// Boots. Returns only if libkrun could not start the VM.
    pub fn start_enter(self) -> KrunError {
        let id = self.id;
        std::mem::forget(self);
        // SAFETY: `id` is live and is consumed here: libkrun takes it out of its context map,
        // so it must not be freed afterwards (hence the forget above).
        let ret = unsafe { krun::krun_start_enter(id) };
        KrunError::Call {
            call: "krun_start_enter",
            errno: if ret < 0 { -ret } else { libc::EINVAL },
        }
    }
}

impl Drop for KrunCtx {
    fn drop(&mut self) {
        // SAFETY: `id` came from krun_create_ctx and was not consumed (start_enter forgets self).
        unsafe {
            krun::krun_free_ctx(self.id);
        }
    }
}

/// Entry point of `krunner __krun-child SPEC`; returns the exit code on failure.
pub fn krun_child_main(spec_path: &Path) -> i32 {
    let spec = match LaunchSpec::take(spec_path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("krunner vm child: {e}");
            return 125;
        }
    };
    // Held open: a jailed child no longer sees the path once it has pivoted.
    let events = EventLog::open(&spec.events);
    let fail = |step: &str, errno: Option<i32>, message: String| {
        eprintln!("krunner vm child: {step}: {message}");
        events.emit(&Event::Failed {
            step: step.to_string(),
            errno,
            message,
        });
        125
    };
    events.emit(&Event::Started {
        pid: std::process::id() as i32,
    });
    // Into the run's cgroup before anything else: the VMM and its threads inherit it.
    if let Some(dir) = &spec.cgroup {
        if let Err(e) = cgroup::join(dir) {
            return fail("join cgroup", e.errno(), crate::error_chain(&e));
        }
    }
    if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
        return fail("prctl(PR_SET_PDEATHSIG)", Some(e as i32), e.to_string());
    }
    // The parent may have died between spawning us and the line above.
    if nix::unistd::getppid().as_raw() != spec.parent_pid {
        return fail("parent check", None, "the krunner parent is gone".into());
    }
    if let Err(e) = prepare_private_root(&LinuxSys, &spec) {
        return fail(e.step(), e.errno(), crate::error_chain(&e));
    }
    let paths = match &spec.vmm_jail {
        Some(jail) => {
            // Before the pivot: the tree holds no library directory.
            if !preload_libkrunfw() {
                eprintln!("krunner vm child: libkrunfw.so.5 could not be loaded before the jail; libkrun will say why");
            }
            let built = vmm_jail::build(&LinuxSys, &spec, jail).and_then(|(userns, paths)| {
                vmm_jail::enter(&LinuxSys, jail, userns.as_ref().map(|u| u.as_fd())).map(|()| paths)
            });
            let paths = match built {
                Ok(paths) => paths,
                Err(e) => return fail(e.step(), e.errno(), crate::error_chain(&e)),
            };
            // The kernel clears the parent-death signal when the credentials change (the
            // new uid above): armed again, or a VMM would outlive a killed krunner.
            if let Err(e) = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL) {
                return fail(
                    "prctl(PR_SET_PDEATHSIG) in the jail",
                    Some(e as i32),
                    e.to_string(),
                );
            }
            if nix::unistd::getppid().as_raw() != spec.parent_pid {
                return fail("parent check", None, "the krunner parent is gone".into());
            }
            paths
        }
        None => JailedPaths {
            root: spec.root.guest_root().to_path_buf(),
            shares: spec.shares.iter().map(|s| s.host.clone()).collect(),
            console: spec.console_log.clone(),
        },
    };
    events.emit(&Event::RootReady);
    let ctx = match KrunCtx::new(spec.krun_log_level)
        .and_then(|c| c.configure(&spec, &paths).map(|()| c))
    {
        Ok(c) => c,
        Err(e) => {
            let errno = match &e {
                KrunError::Call { errno, .. } => Some(*errno),
                KrunError::Nul { .. } => None,
            };
            return fail("configure libkrun", errno, e.to_string());
        }
    };
    events.emit(&Event::Configured);
    // Mounts are done and libkrun is configured: what is left needs only file capabilities.
    // Still single-threaded here, so every VMM thread inherits the reduced sets.
    if let Err(e) = privileges::restrict_to(privileges::VMM_KEEPS) {
        return fail("drop privileges", None, crate::error_chain(&e));
    }
    // Last: the deny-list must not stop the configuration or the privilege drop above.
    if let Err(e) = seccomp::install(seccomp::Profile::Vmm) {
        return fail("seccomp", None, crate::error_chain(&e));
    }
    events.emit(&Event::Entering);
    let e = ctx.start_enter();
    let hint = match &e {
        KrunError::Call { errno, .. } if *errno == libc::ENOENT => {
            " (libkrunfw.so.5 not found: install libkrunfw, Debian testing/unstable libkrunfw5, or set --libkrunfw-dir)"
        }
        _ => "",
    };
    let errno = match &e {
        KrunError::Call { errno, .. } => Some(*errno),
        KrunError::Nul { .. } => None,
    };
    fail("krun_start_enter", errno, format!("{e}{hint}"))
}

/// KVM's ioctl numbers (linux/kvm.h): _IO(0xAE, 0x00) and _IO(0xAE, 0x01).
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
const KVM_CREATE_VM: libc::c_ulong = 0xAE01;

/// What the /dev/kvm probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvmProbe {
    /// /dev/kvm is missing.
    Missing,
    /// It exists but cannot be opened read-write by this user.
    NoAccess(String),
    /// KVM_GET_API_VERSION or KVM_CREATE_VM failed.
    CreateVmFailed(String),
    /// A VM could be created (the API version is given).
    Ok {
        /// KVM API version (12 on every current kernel).
        api_version: i32,
    },
}

/// Opens /dev/kvm and creates (then drops) an empty VM, without any guest.
pub fn probe_kvm() -> KvmProbe {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let dev = Path::new("/dev/kvm");
    if !dev.exists() {
        return KvmProbe::Missing;
    }
    let kvm = match std::fs::OpenOptions::new().read(true).write(true).open(dev) {
        Ok(f) => f,
        Err(e) => return KvmProbe::NoAccess(e.to_string()),
    };
    // SAFETY: `kvm` is an open /dev/kvm fd; KVM_GET_API_VERSION takes no argument and only
    // returns an integer.
    let api = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if api < 0 {
        return KvmProbe::CreateVmFailed(format!(
            "KVM_GET_API_VERSION: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `kvm` is an open /dev/kvm fd; KVM_CREATE_VM with machine type 0 returns a new
    // VM fd or -1, and touches no memory of ours.
    let vm = unsafe { libc::ioctl(kvm.as_raw_fd(), KVM_CREATE_VM, 0) };
    if vm < 0 {
        return KvmProbe::CreateVmFailed(format!(
            "KVM_CREATE_VM: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `vm` is a fresh fd returned by KVM_CREATE_VM that nothing else owns; OwnedFd
    // closes it once.
    drop(unsafe { OwnedFd::from_raw_fd(vm) });
    KvmProbe::Ok { api_version: api }
}

/// Loads libkrunfw now, while the host's library directories are in view: libkrun's own
/// dlopen of the same name, inside the tree, then finds it loaded. A failure here is left
/// to libkrun, which reports it at start.
fn preload_libkrunfw() -> bool {
    let name = if cfg!(target_os = "macos") {
        c"libkrunfw.5.dylib"
    } else {
        c"libkrunfw.so.5"
    };
    // SAFETY: `name` is a NUL-terminated constant; dlopen runs libkrunfw's constructors,
    // which only register its kernel bundle. The handle is deliberately never closed.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    !handle.is_null()
}

//! One cgroup v2 per run: the guest's memory, CPU and process count are capped, an
//! out-of-memory kill stays inside the run, and nothing of the cgroup outlives the run.
//!
//! Placement. cgroup v2's "no internal processes" rule forbids enabling controllers for the
//! children of a cgroup that itself holds processes (the root cgroup excepted). So, once per
//! process ([`host`]):
//! - krunner alone in its cgroup `C` (a systemd service with `Delegate=yes`, a container's
//!   cgroup): krunner moves itself into the leaf `C/supervisor`, enables the controllers in
//!   `C/cgroup.subtree_control`, and runs go to `C/run-<id>` — what systemd documents for
//!   delegation and container runtimes do;
//! - krunner in the root cgroup, or sharing `C` with other processes (a login shell, a test
//!   harness), or unable to change `C`: runs go to `/krunner/run-<id>` under the root of the
//!   hierarchy (as Docker's `/docker`), controllers enabled in the root's and `/krunner`'s
//!   `cgroup.subtree_control`. That needs root (or write access to the root cgroup);
//! - neither works (no cgroup2 mount, no memory controller in v2 — a v1 or hybrid host —,
//!   no permission): one warning, and runs go without limits (`krunner doctor` says why).
//!
//! A run's child enters its cgroup itself, first thing after reading the spec ([`join`]),
//! before it starts the VMM, PID 1 or the workload, which all inherit it. (clone3's
//! `CLONE_INTO_CGROUP` would do it at the fork, but neither std's nor tokio's `Command` can
//! pass it; writing `cgroup.procs` from the child costs one write and keeps the spawn code
//! unsafe-free.) After the run the cgroup's `memory.events` tells whether the OOM killer
//! acted, then [`RunCgroup::remove`] kills what is left (`cgroup.kill`, Linux 5.14+, else
//! SIGKILL per pid), waits until it is empty and removes it. [`sweep_leftovers`] removes the
//! run cgroups of krunner processes that died before they could.
//!
//! Limits ([`Limits::for_run`]): `memory.max` is the guest RAM plus an overhead (see
//! [`VMM_OVERHEAD_MIB`]; more with the network jail, whose pasta joins the run's cgroup),
//! `memory.swap.max` 0 (so the limit is RAM, not RAM plus swap),
//! `memory.oom.group` 1 (an OOM kill takes the whole run, never half of a job), `cpu.max`
//! `cpus × period`, `pids.max` a bound on forks.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::Backend;

/// The controllers krunner uses, in the order they are enabled. `memory` is required; the
/// others are used when the host has them.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Fixed part of the memory a libkrun VMM needs above the guest's RAM, in MiB: the VMM's own
/// heap and thread stacks (one thread per vCPU and per virtio device), the virtio-fs server's
/// buffers, and the page cache of the files it serves (reclaimable, but charged to the
/// cgroup, so it must not push the guest's RAM out). libkrun runs in a few tens of MiB; 256
/// leaves room for bursts of file I/O without reclaim stalls.
pub const VMM_OVERHEAD_MIB: u64 = 256;
/// Proportional part of the VMM overhead: 1/16 of the guest RAM, for what grows with it —
/// KVM's page tables and memory-slot bookkeeping for the guest memory, charged to the
/// cgroup as kernel memory (about 1/256 of RAM), with a wide margin.
pub const VMM_OVERHEAD_DIVISOR: u64 = 16;
/// Memory above `-m` for the namespace backend, in MiB: its supervisor and PID 1 (two small
/// krunner processes). The workload itself gets `-m`.
pub const NS_OVERHEAD_MIB: u64 = 32;
/// Memory above the rest for a run in the network jail, in MiB: its pasta, which runs in the
/// run's cgroup so that what a guest's traffic costs counts against the guest (about 30 MB
/// resident, mostly its packet buffers).
pub const NETWORK_JAIL_MIB: u64 = 64;
/// `cpu.max` period in microseconds (the kernel's default).
pub const CPU_PERIOD_US: u64 = 100_000;
/// `pids.max` of a libkrun run: the VMM's threads (vCPUs, devices, virtio-fs workers); guest
/// processes live inside the VM and do not count. A VMM that forks at all is misbehaving.
pub const KRUN_PIDS_MAX: u64 = 1024;
/// `pids.max` of a namespace run: every process and thread of the job counts; generous for
/// parallel builds, but it stops a fork bomb.
pub const NS_PIDS_MAX: u64 = 8192;

/// Errors setting up or using cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup2 file system is mounted.
    #[error("no cgroup v2 hierarchy is mounted (see /proc/self/mountinfo)")]
    NotMounted,
    /// /proc/self/cgroup has no v2 (`0::`) line.
    #[error("/proc/self/cgroup names no cgroup v2 path")]
    NoOwnCgroup,
    /// The memory controller is not available in v2 (a v1 or hybrid host binds it to v1).
    #[error("the memory controller is not available in the cgroup v2 hierarchy at {0} (a cgroup v1 or hybrid host keeps it in v1; boot with systemd.unified_cgroup_hierarchy=1)")]
    NoMemoryController(PathBuf),
    /// A cgroup file operation failed.
    #[error("{op} {}{}", .path.display(), permission_hint(.source))]
    Io {
        /// What.
        op: &'static str,
        /// Which file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Processes stayed in a run cgroup after it was killed.
    #[error("processes are still in {} after {:?}", .path.display(), .waited)]
    StillPopulated {
        /// The cgroup.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        ErrorKind::PermissionDenied => {
            ": creating cgroups needs root or a delegated cgroup (systemd Delegate=yes)"
        }
        _ => "",
    }
}

impl CgroupError {
    /// The errno of the failed file operation, if one failed.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_path_buf();
    move |source| CgroupError::Io { op, path, source }
}

/// Writes `value` to a cgroup interface file.
fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(io("write", path))
}

/// The limits of one run's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max` in bytes.
    pub memory_max: u64,
    /// `cpu.max` quota in microseconds per [`CPU_PERIOD_US`].
    pub cpu_quota_us: u64,
    /// `pids.max`.
    pub pids_max: u64,
}

impl Limits {
    /// The limits of a run of `backend` with `cpus` vCPUs and `memory_mib` MiB of RAM.
    pub fn for_run(backend: Backend, cpus: u8, memory_mib: u32) -> Limits {
        let ram = u64::from(memory_mib);
        let (overhead, pids_max) = match backend {
            Backend::Krun => (VMM_OVERHEAD_MIB + ram / VMM_OVERHEAD_DIVISOR, KRUN_PIDS_MAX),
            Backend::Namespace => (NS_OVERHEAD_MIB, NS_PIDS_MAX),
        };
        Limits {
            memory_max: (ram + overhead) * 1024 * 1024,
            cpu_quota_us: u64::from(cpus.max(1)) * CPU_PERIOD_US,
            pids_max,
        }
    }

    /// The same with room for the run's pasta ([`NETWORK_JAIL_MIB`]).
    pub fn with_network_jail(mut self) -> Limits {
        self.memory_max += NETWORK_JAIL_MIB * 1024 * 1024;
        self
    }

    /// The interface files to write, with their values, for the controllers in `enabled`.
    /// Files a kernel may lack (no swap accounting) are marked optional.
    fn files(&self, enabled: &[String]) -> Vec<(&'static str, String, bool)> {
        let on = |c: &str| enabled.iter().any(|e| e == c);
        let mut v = Vec::new();
        if on("memory") {
            v.push(("memory.max", self.memory_max.to_string(), false));
            v.push(("memory.swap.max", "0".to_string(), true));
            v.push(("memory.oom.group", "1".to_string(), true));
        }
        if on("cpu") {
            v.push((
                "cpu.max",
                format!("{} {CPU_PERIOD_US}", self.cpu_quota_us),
                false,
            ));
        }
        if on("pids") {
            v.push(("pids.max", self.pids_max.to_string(), false));
        }
        v
    }
}

/// Where krunner puts its run cgroups, once it has set that up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupBase {
    /// The parent of the `run-<id>` cgroups.
    pub dir: PathBuf,
    /// The controllers enabled for them (`memory` always among them).
    pub controllers: Vec<String>,
}

/// The mount point of the cgroup2 file system, from `/proc/self/mountinfo` text.
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        // "id parent maj:min root mountpoint options [optional...] - fstype source superopts"
        let (pre, post) = l.split_once(" - ")?;
        (post.split(' ').next()? == "cgroup2")
            .then(|| {
                pre.split(' ')
                    .nth(4)
                    .map(|p| PathBuf::from(super::leftovers::unescape_mountinfo(p)))
            })
            .flatten()
    })
}

/// This process's cgroup v2 path (`/a/b`), from `/proc/self/cgroup` text.
pub fn own_cgroup(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end().to_string())
}

/// Where run cgroups go, decided from where krunner is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// krunner is alone in `own`: move into `own/supervisor`, runs in `own/run-<id>`.
    Nested {
        /// krunner's cgroup directory.
        own: PathBuf,
    },
    /// Runs in `dir` = `<mount>/krunner`.
    UnderRoot {
        /// `<mount>/krunner`.
        dir: PathBuf,
    },
}

/// Chooses the placement (see the module docs): `own` is krunner's cgroup path, `alone`
/// whether its `cgroup.procs` lists krunner only.
pub fn choose(mount: &Path, own: &str, alone: bool) -> Placement {
    let rel = own.trim_start_matches('/');
    if rel.is_empty() || !alone {
        Placement::UnderRoot {
            dir: mount.join("krunner"),
        }
    } else {
        Placement::Nested {
            own: mount.join(rel),
        }
    }
}

/// Whether `cgroup.procs` of `dir` lists `pid` and nothing else.
fn alone_in(dir: &Path, pid: u32) -> bool {
    fs::read_to_string(dir.join("cgroup.procs")).is_ok_and(|s| {
        let mut pids = s.split_whitespace();
        pids.next() == Some(pid.to_string().as_str()) && pids.next().is_none()
    })
}

/// Enables [`CONTROLLERS`] for the children of `dir` as far as `dir` has them; returns the
/// enabled ones. Each is enabled on its own so that one the kernel refuses (cpu, with
/// realtime tasks about) does not cost the others.
fn enable_controllers(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let path = dir.join("cgroup.controllers");
    let available = fs::read_to_string(&path).map_err(io("read", &path))?;
    let control = dir.join("cgroup.subtree_control");
    let mut enabled = Vec::new();
    for c in CONTROLLERS {
        if !available.split_whitespace().any(|a| a == c) {
            continue;
        }
        match write(&control, &format!("+{c}")) {
            Ok(()) => enabled.push(c.to_string()),
            Err(e) if c == "memory" => return Err(e),
            Err(e) => tracing::warn!(
                "cgroup controller {c} stays off: {}",
                crate::error_chain(&e)
            ),
        }
    }
    if !enabled.iter().any(|c| c == "memory") {
        return Err(CgroupError::NoMemoryController(dir.to_path_buf()));
    }
    Ok(enabled)
}

/// Puts the placement in effect for process `pid`: moves it into `supervisor` (nested), creates
/// `<mount>/krunner` (under the root), enables the controllers.
pub fn establish(mount: &Path, placement: &Placement, pid: u32) -> Result<CgroupBase, CgroupError> {
    match placement {
        Placement::Nested { own } => {
            let sup = own.join("supervisor");
            mkdir(&sup)?;
            write(&sup.join("cgroup.procs"), &pid.to_string())?;
            let controllers = enable_controllers(own)?;
            Ok(CgroupBase {
                dir: own.clone(),
                controllers,
            })
        }
        Placement::UnderRoot { dir } => {
            enable_controllers(mount)?;
            mkdir(dir)?;
            let controllers = enable_controllers(dir)?;
            Ok(CgroupBase {
                dir: dir.clone(),
                controllers,
            })
        }
    }
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => Err(io("create", dir)(e)),
        _ => Ok(()),
    }
}

/// Finds the hierarchy and sets up krunner's place in it (see the module docs).
fn setup() -> Result<CgroupBase, CgroupError> {
    let info = fs::read_to_string("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    let mount = cgroup2_mount(&info).ok_or(CgroupError::NotMounted)?;
    let cg = fs::read_to_string("/proc/self/cgroup")
        .map_err(io("read", Path::new("/proc/self/cgroup")))?;
    let own = own_cgroup(&cg).ok_or(CgroupError::NoOwnCgroup)?;
    let pid = std::process::id();
    let alone = alone_in(&mount.join(own.trim_start_matches('/')), pid);
    let placement = choose(&mount, &own, alone);
    match establish(&mount, &placement, pid) {
        Err(e) if matches!(placement, Placement::Nested { .. }) => {
            // Not delegated to us after all (read-only, or a process joined meanwhile): the
            // hierarchy's root is the other place runs can go.
            tracing::debug!("cannot nest run cgroups under our own: {e}");
            establish(
                &mount,
                &Placement::UnderRoot {
                    dir: mount.join("krunner"),
                },
                pid,
            )
        }
        r => r,
    }
}

/// krunner's cgroup setup, done once per process: where runs go, or why they go without
/// limits. The first call warns (once) when cgroups are unusable.
fn state() -> &'static Result<CgroupBase, String> {
    static STATE: OnceLock<Result<CgroupBase, String>> = OnceLock::new();
    STATE.get_or_init(|| {
        setup().map_err(|e| {
            let why = crate::error_chain(&e);
            tracing::warn!(
                "cgroup v2 is not usable, so runs get no memory, CPU or process limits: {why}"
            );
            why
        })
    })
}

/// Where run cgroups go, once set up (see the module docs); `None` when cgroups are not
/// usable on this host.
pub fn host() -> Option<&'static CgroupBase> {
    state().as_ref().ok()
}

/// Where run cgroups go, or why cgroups are not usable here: for `krunner doctor`.
pub fn status() -> Result<CgroupBase, String> {
    state().clone()
}

/// Enters the cgroup at `dir` (the calling process and its future children).
pub fn join(dir: &Path) -> Result<(), CgroupError> {
    // "0" is the writing process itself.
    write(&dir.join("cgroup.procs"), "0")
}

/// One run's cgroup; removed by [`RunCgroup::remove`] or, failing that, on drop.
#[derive(Debug)]
pub struct RunCgroup {
    dir: PathBuf,
    limits: Limits,
}

impl CgroupBase {
    /// Creates run `run_id`'s cgroup with `limits` (removed again if a limit cannot be set).
    pub fn create_run(&self, run_id: &str, limits: Limits) -> Result<RunCgroup, CgroupError> {
        let dir = self.dir.join(format!("run-{run_id}"));
        fs::create_dir(&dir).map_err(io("create", &dir))?;
        let rc = RunCgroup { dir, limits };
        for (file, value, optional) in rc.limits.files(&self.controllers) {
            let path = rc.dir.join(file);
            if optional && !path.exists() {
                continue;
            }
            write(&path, &value)?;
        }
        Ok(rc)
    }
}

impl RunCgroup {
    /// The cgroup's directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// How many processes the OOM killer killed in it (`memory.events` `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        let events = fs::read_to_string(self.dir.join("memory.events")).unwrap_or_default();
        events_value(&events, "oom_kill").unwrap_or(0)
    }

    /// Kills whatever is left in it, waits until it is empty and removes it.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let dir = std::mem::take(&mut self.dir);
        remove_cgroup(&dir)
    }
}

impl Drop for RunCgroup {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            if let Err(e) = remove_cgroup(&self.dir) {
                tracing::warn!("cannot remove the run cgroup: {}", crate::error_chain(&e));
            }
        }
    }
}

/// A `key value` line's value in a cgroup file such as `memory.events` or `cgroup.events`.
pub fn events_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Whether processes are in the cgroup `dir` or below (false when unreadable).
fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .ok()
        .and_then(|t| events_value(&t, "populated"))
        .is_some_and(|v| v != 0)
}

/// SIGKILLs everything in cgroup `dir`, waits until it is empty, removes it.
fn remove_cgroup(dir: &Path) -> Result<(), CgroupError> {
    let limit = Duration::from_secs(10);
    let deadline = Instant::now() + limit;
    let kill_file = dir.join("cgroup.kill");
    while populated(dir) {
        if kill_file.exists() {
            write(&kill_file, "1")?;
        } else {
            // Before Linux 5.14: one by one (a fork in between is caught by the next round).
            let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::StillPopulated {
                path: dir.to_path_buf(),
                waited: limit,
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last exit and the cgroup's emptiness become visible a moment apart: EBUSY retries.
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(io("remove", dir)(e)),
        }
    }
}

/// The krunner pid in a run cgroup's name `run-<pid>-<suffix>`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("run-")?.split('-').next()?.parse().ok()
}

/// Removes the run cgroups under `base` whose krunner (the pid in the name) is gone; returns
/// how many. Another live krunner's runs (the same `/krunner` serves every krunner on the
/// host, whatever its cache) are left alone.
pub fn sweep_dir(base: &Path) -> usize {
    let Ok(entries) = fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Some(pid) = owner_pid(&name) else {
            continue;
        };
        // A live pid may be another process by now: its leftover then waits for a later sweep.
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match remove_cgroup(&e.path()) {
            Ok(()) => {
                tracing::info!("removed the leftover cgroup {name} of an earlier krunner");
                removed += 1;
            }
            Err(err) => tracing::warn!(
                "cannot remove the leftover cgroup {name}: {}",
                crate::error_chain(&err)
            ),
        }
    }
    removed
}

/// [`sweep_dir`] of krunner's run cgroup directory, if cgroups are in use.
pub fn sweep_leftovers() -> usize {
    host().map_or(0, |b| sweep_dir(&b.dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_follow_ram_and_cpus_with_the_vmm_overhead() {
        let mib = 1024 * 1024;
        let l = Limits::for_run(Backend::Krun, 2, 2048);
        assert_eq!(l.memory_max, (2048 + 256 + 128) * mib);
        assert_eq!(l.cpu_quota_us, 200_000);
        assert_eq!(l.pids_max, KRUN_PIDS_MAX);
        let l = Limits::for_run(Backend::Namespace, 1, 64);
        assert_eq!(l.memory_max, (64 + 32) * mib);
        assert_eq!(l.cpu_quota_us, 100_000);
        assert_eq!(l.pids_max, NS_PIDS_MAX);
        let jailed = Limits::for_run(Backend::Namespace, 1, 64).with_network_jail();
        assert_eq!(jailed.memory_max, (64 + 32 + 64) * mib);
        assert_eq!(jailed.cpu_quota_us, l.cpu_quota_us);
        // 0 vCPUs cannot reach here (clap refuses it), but must not mean "no CPU".
        assert_eq!(Limits::for_run(Backend::Krun, 0, 512).cpu_quota_us, 100_000);
        let all: Vec<String> = CONTROLLERS.iter().map(|c| c.to_string()).collect();
        let files = Limits::for_run(Backend::Krun, 4, 1024).files(&all);
        let get = |f: &str| files.iter().find(|x| x.0 == f).map(|x| x.1.clone());
        assert_eq!(get("cpu.max").as_deref(), Some("400000 100000"));
        assert_eq!(
            get("memory.max"),
            Some(((1024 + 256 + 64) * mib).to_string())
        );
        assert_eq!(get("memory.oom.group").as_deref(), Some("1"));
        assert_eq!(get("pids.max").as_deref(), Some("1024"));
        // Only the enabled controllers' files.
        let files = Limits::for_run(Backend::Krun, 4, 1024).files(&["memory".to_string()]);
        assert!(
            files.iter().all(|f| f.0.starts_with("memory.")),
            "{files:?}"
        );
    }

    #[test]
    fn the_cgroup2_mount_and_our_path_are_found() {
        let info = "25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                    26 25 0:23 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                    35 25 0:31 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(info),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
        assert_eq!(
            own_cgroup("4:memory:/x\n0::/system.slice/krunner.service\n").as_deref(),
            Some("/system.slice/krunner.service")
        );
        assert_eq!(own_cgroup("4:memory:/x\n"), None);
    }

    #[test]
    fn placement_nests_only_when_alone_and_not_in_the_root() {
        let m = Path::new("/sys/fs/cgroup");
        let under_root = Placement::UnderRoot {
            dir: m.join("krunner"),
        };
        assert_eq!(choose(m, "/", true), under_root);
        assert_eq!(choose(m, "/user.slice/session-1.scope", false), under_root);
        assert_eq!(
            choose(m, "/system.slice/krunner.service", true),
            Placement::Nested {
                own: m.join("system.slice/krunner.service")
            }
        );
    }

    /// A temp dir standing in for a cgroup: the interface files as plain files.
    fn fake_cgroup(dir: &Path, controllers: &str, procs: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        fs::write(dir.join("cgroup.subtree_control"), "").unwrap();
        fs::write(dir.join("cgroup.procs"), procs).unwrap();
    }

    #[test]
    fn establishing_nested_moves_us_to_the_supervisor_leaf() {
        let td = tempfile::tempdir().unwrap();
        let own = td.path().join("system.slice/k.service");
        fake_cgroup(&own, "cpuset cpu io memory pids\n", "4242\n");
        assert!(alone_in(&own, 4242));
        assert!(!alone_in(&own, 1));
        let placement = choose(td.path(), "/system.slice/k.service", alone_in(&own, 4242));
        let base = establish(td.path(), &placement, 4242).unwrap();
        assert_eq!(base.dir, own);
        assert_eq!(base.controllers, ["memory", "pids", "cpu"]);
        assert_eq!(
            fs::read_to_string(own.join("supervisor/cgroup.procs")).unwrap(),
            "4242"
        );
    }

    #[test]
    fn establishing_under_the_root_needs_the_memory_controller() {
        let td = tempfile::tempdir().unwrap();
        fake_cgroup(td.path(), "memory pids\n", "1\n");
        fake_cgroup(&td.path().join("krunner"), "memory pids\n", "");
        let base = establish(td.path(), &choose(td.path(), "/", true), 7).unwrap();
        assert_eq!(base.dir, td.path().join("krunner"));
        assert_eq!(base.controllers, ["memory", "pids"], "no cpu on this host");

        // A hybrid host: v2 without the memory controller.
        let td = tempfile::tempdir().unwrap();
        fake_cgroup(td.path(), "hugetlb\n", "1\n");
        let e = establish(td.path(), &choose(td.path(), "/", true), 7).unwrap_err();
        assert!(matches!(e, CgroupError::NoMemoryController(_)), "{e:?}");
        assert!(e.to_string().contains("unified_cgroup_hierarchy"), "{e}");
    }

    #[test]
    fn run_cgroups_get_their_limits_and_leftovers_of_dead_krunners_go() {
        let td = tempfile::tempdir().unwrap();
        let base = CgroupBase {
            dir: td.path().to_path_buf(),
            controllers: vec!["memory".into(), "cpu".into(), "pids".into()],
        };
        let rc = base
            .create_run("1-abc", Limits::for_run(Backend::Namespace, 2, 100))
            .unwrap();
        let read = |f: &str| fs::read_to_string(rc.path().join(f)).unwrap();
        assert_eq!(read("memory.max"), (132 * 1024 * 1024).to_string());
        assert_eq!(read("cpu.max"), "200000 100000");
        assert_eq!(read("pids.max"), "8192");
        assert!(
            !rc.path().join("memory.swap.max").exists(),
            "optional files are not made up"
        );
        fs::write(
            rc.path().join("memory.events"),
            "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(rc.oom_kills(), 1);
        std::mem::forget(rc);

        // A dead krunner's run (a reaped child's pid), a live one's (ours), and a stranger.
        let dead = std::process::Command::new("true").spawn().unwrap();
        let dead_pid = dead.id();
        let mut dead = dead;
        dead.wait().unwrap();
        let me = std::process::id();
        for name in [
            format!("run-{dead_pid}-deadbeef"),
            format!("run-{me}-live0000"),
            "supervisor".to_string(),
        ] {
            fs::create_dir(td.path().join(name)).unwrap();
        }
        assert_eq!(sweep_dir(td.path()), 1);
        let mut left = fs::read_dir(td.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect::<Vec<_>>();
        left.sort();
        assert_eq!(
            left,
            [
                "run-1-abc".to_string(),
                format!("run-{me}-live0000"),
                "supervisor".into()
            ]
        );
    }

    #[test]
    fn event_values_are_read_by_key() {
        let t = "populated 1\nfrozen 0\n";
        assert_eq!(events_value(t, "populated"), Some(1));
        assert_eq!(events_value(t, "frozen"), Some(0));
        assert_eq!(events_value(t, "pop"), None);
        assert_eq!(owner_pid("run-123-abcdef01"), Some(123));
        assert_eq!(owner_pid("supervisor"), None);
    }
}

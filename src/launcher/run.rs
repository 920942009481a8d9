//! The parent side of one run: prepare the run directory and the clone, spawn the VM child,
//! supervise it, and leave nothing behind.
//!
//! Order: sweep leftovers of dead krunner processes (once, in [`Launcher::new`]) → take the
//! image's rootfs lock shared (so `prune` keeps it) and the run's own lock → clone → write the
//! agent, the workload's argv and env files and the network files → write the spec (0600) →
//! spawn `krunner __<backend>-child SPEC` in its own process group with a clean environment,
//! its output through a pipe of ours → wait, with a hard lifetime and stop requests (the
//! control share's stop file, SIGTERM under namespaces, then SIGKILL after a grace period) →
//! read the child's events → remove the run directory.
//!
//! The child is spawned from an async task, i.e. from a runtime worker thread that lives as
//! long as the runtime: PR_SET_PDEATHSIG fires when the *thread* that forked the child exits,
//! so a short-lived blocking-pool thread must never spawn it.
//!
//! [`Launcher::run`] takes these steps in this module; the work of each lives in the module
//! for its concern: `prepare` (per-run shares, the guest's files, the spec), `supervise` (the
//! child from spawn to its end), `leftovers` (removing run directories and stray mounts) and
//! `libkrunfw`.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cgroup::{self, Limits, RunCgroup};
use super::leftovers::{self, RunDirGuard};
use super::libkrunfw::check_libkrunfw;
use super::prepare;
use super::spec::{self, Event, IdMap, Share, Stamped, VmmJail};
use super::supervise::{self, ChildOutput, StopHow};
use super::{untrusted, Backend};
use crate::guest::{self, GuestResult, RunnerJob};
use crate::image::cache::Digest;
use crate::image::cache::{self, Cache, LockGuard, LockMode, LockName};
use crate::image::Cancel;
use crate::jail::egress::EgressPolicy;
use crate::jail::netns::NetJail;
use crate::jail::{JailError, Tools};
use crate::rootfs::{self, CloneMethod};
use crate::runner::supply::Current;

/// What can go wrong around a run (not inside the guest: that is [`VmExit`]).
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The cache or a lock failed.
    #[error("run {run}: image cache")]
    Cache {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: cache::CacheError,
    },
    /// The clone failed.
    #[error("run {run}: preparing the root filesystem")]
    Clone {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: rootfs::CloneError,
    },
    /// The spec is unusable (e.g. too much for the kernel command line).
    #[error("run {run}: launch spec")]
    Spec {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: spec::SpecError,
    },
    /// A file or process operation of the parent failed.
    #[error("run {run}: {op}")]
    Io {
        /// Run id.
        run: String,
        /// What.
        op: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A share's host directory is missing.
    #[error("run {run}: share {host} does not exist or is not a directory")]
    ShareMissing {
        /// Run id.
        run: String,
        /// The host path.
        host: PathBuf,
    },
    /// The run's cgroup could not be created (cgroups work on this host otherwise).
    #[error("run {run}: creating its cgroup")]
    Cgroup {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: cgroup::CgroupError,
    },
    /// The guest's network jail could not be made.
    #[error("run {run}")]
    Jail {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: JailError,
    },
    /// No host id range for the VMM's user namespace.
    #[error("run {run}")]
    Ids {
        /// Run id.
        run: String,
        /// Why.
        #[source]
        source: super::ids::IdError,
    },
    /// libkrunfw cannot be found: no VM can start.
    #[error("libkrunfw.so.5 (the guest kernel libkrun loads) was not found{searched}. Install it: Fedora `dnf install libkrunfw`, Debian testing/unstable `apt install libkrunfw5`, macOS `brew install libkrunfw`; or point --libkrunfw-dir at it. Without KVM, use --backend namespace")]
    NoLibkrunfw {
        /// Where we looked.
        searched: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmExit {
    /// The child exited with this status: the guest workload's (or an init/VMM error code).
    Exited(i32),
    /// The child was killed by a signal it did not choose (not by krunner).
    Signaled(i32),
    /// krunner stopped it because it outlived `--max-lifetime`.
    LifetimeExceeded,
    /// krunner stopped it on request.
    Stopped,
}

impl VmExit {
    /// What the status means, for logs.
    pub fn describe(&self) -> String {
        match self {
            VmExit::Exited(0) => "exited 0".into(),
            VmExit::Exited(125) => {
                "exit 125: the guest could not be set up (init or VM child failure)".into()
            }
            VmExit::Exited(126) => "exit 126: the guest command could not be executed".into(),
            VmExit::Exited(127) => "exit 127: the guest command was not found".into(),
            VmExit::Exited(148) => "exit 148: the VMM died of a bad system call (SIGSYS)".into(),
            VmExit::Exited(149) => "exit 149: the VMM died of SIGBUS".into(),
            VmExit::Exited(150) => "exit 150: the VMM died of SIGSEGV".into(),
            VmExit::Exited(c) if *c > 128 => format!(
                "exit {c}: the guest command was killed by signal {}",
                c - 128
            ),
            VmExit::Exited(c) => format!("exit {c}"),
            VmExit::Signaled(s) => format!("the VM child was killed by signal {s}"),
            VmExit::LifetimeExceeded => "stopped: exceeded its maximum lifetime".into(),
            VmExit::Stopped => "stopped on request".into(),
        }
    }

    /// An exit status for `krunner exec`: the guest's, or 128+signal.
    pub fn code(&self) -> u8 {
        match self {
            VmExit::Exited(c) => u8::try_from(*c).unwrap_or(1),
            VmExit::Signaled(s) => u8::try_from(128 + s).unwrap_or(1),
            VmExit::LifetimeExceeded | VmExit::Stopped => 143,
        }
    }
}

/// Where the child's stdout and stderr go.
#[derive(Debug, Clone)]
pub enum Output {
    /// krunner's own (streams the guest's output: `krunner exec`).
    Inherit,
    /// Both into this file (a run's log).
    File(PathBuf),
    /// Captured and returned (tests, `doctor`).
    Capture,
}

/// One run to launch.
#[derive(Debug, Clone)]
pub struct RunRequest {
    /// Which backend.
    pub backend: Backend,
    /// The cached rootfs to clone.
    pub rootfs: PathBuf,
    /// Its manifest digest: the run holds that rootfs's lock shared, so `prune` keeps it.
    pub manifest: Option<Digest>,
    /// vCPUs.
    pub cpus: u8,
    /// RAM in MiB.
    pub memory_mib: u32,
    /// Host directories to share.
    pub shares: Vec<Share>,
    /// What the guest runs: a command, or the actions runner once.
    pub workload: Workload,
    /// Extra environment for the guest workload (added to PATH, HOME, HOSTNAME; it overrides
    /// them). Names must be shell identifiers: the agent exports them.
    pub env: Vec<(String, String)>,
    /// Guest working directory.
    pub workdir: String,
    /// Guest host name.
    pub hostname: String,
    /// DNS server for `/etc/resolv.conf`.
    pub dns: String,
    /// Hard limit on the VM's life.
    pub max_lifetime: Option<Duration>,
    /// How long a stopped guest may take to end by itself before it is killed. Under krun
    /// only a runner run can end by itself (the agent acts on the stop file); the VMM gets no
    /// SIGTERM.
    pub stop_grace: Duration,
    /// Where output goes.
    pub output: Output,
    /// libkrun log level.
    pub krun_log_level: u32,
    /// Extra directory holding libkrunfw.so.5.
    pub libkrunfw_dir: Option<PathBuf>,
    /// RLIMIT_NOFILE in the guest.
    pub nofile: u64,
    /// The guest's network: a jail of its own with an egress policy, or the host's.
    pub egress: EgressPolicy,
    /// Run the VMM (krun; with a minimal mount tree, see [`super::vmm_jail`]) or the workload
    /// (namespace backend) in a user namespace of its own; off only where idmapped mounts are
    /// not available.
    pub user_namespace: bool,
    /// A provided actions runner to present at `/opt/actions-runner` (a layer above the
    /// image; a copy when the clone is one). It is held in use (its lock, shared) for as long
    /// as the request lives, so no update prunes it under the run.
    pub runner: Option<Arc<Current>>,
}

/// What the guest agent runs.
#[derive(Debug, Clone)]
pub enum Workload {
    /// A command (`krunner exec`).
    Command(Vec<String>),
    /// The actions runner, once, with a registration passed through the secrets share.
    Runner(RunnerJob),
}

/// Host-side timings of a run, for the benchmark and debug logs.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Making the clone.
    pub clone: Duration,
    /// Writing agent, config and network files, and the spec.
    pub prepare: Duration,
    /// Making the guest's network namespace, its rules and its pasta (zero without a jail).
    pub jail: Duration,
    /// From spawning the child to the child's first event (exec of the krunner binary).
    pub spawn: Option<Duration>,
    /// From the child's start to `Entering` (namespaces or libkrun configuration).
    pub setup: Option<Duration>,
    /// From the start of `run` to `Entering`: all host-side work before the guest starts.
    pub to_entering: Option<Duration>,
    /// The whole run including cleanup.
    pub total: Duration,
}

/// How a run went.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// Run id.
    pub run_id: String,
    /// How it ended.
    pub exit: VmExit,
    /// What the child reported.
    pub events: Vec<Stamped>,
    /// Captured stdout and stderr ([`Output::Capture`]).
    pub captured: Option<(Vec<u8>, Vec<u8>)>,
    /// Timings.
    pub timings: Timings,
    /// What the guest agent reported (runner runs).
    pub guest_result: Option<GuestResult>,
    /// libkrun reported `KVM_EXIT_INTERNAL_ERROR`: this host's KVM cannot run the guest kernel
    /// (see [`crate::doctor::KVM_INTERNAL_ERROR_HELP`]).
    pub kvm_internal_error: bool,
    /// The OOM killer acted in the run's cgroup: the guest went past its memory limit.
    pub out_of_memory: Option<OutOfMemory>,
}

/// An out-of-memory kill in a run's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutOfMemory {
    /// `oom_kill` of the cgroup's `memory.events`: processes the OOM killer killed.
    pub kills: u64,
    /// The cgroup's `memory.max` in bytes.
    pub memory_max: u64,
}

impl RunOutcome {
    /// The first failure the child reported, if any.
    pub fn failure(&self) -> Option<&Event> {
        self.events
            .iter()
            .map(|s| &s.event)
            .find(|e| matches!(e, Event::Failed { .. }))
    }

    /// How the run ended, for logs: [`VmExit::describe`], and the out-of-memory kill behind
    /// it if there was one.
    pub fn describe_exit(&self) -> String {
        match &self.out_of_memory {
            Some(oom) => format!(
                "{}: killed for lack of memory (out of memory: the run's cgroup reached its limit of {} MiB, RAM plus overhead; the OOM killer killed {} process(es))",
                self.exit.describe(),
                oom.memory_max / (1024 * 1024),
                oom.kills
            ),
            None => self.exit.describe(),
        }
    }

    /// Whether the child got as far as starting the guest.
    pub fn entered(&self) -> bool {
        self.events.iter().any(|s| s.event == Event::Entering)
    }
}

impl LaunchError {
    /// For `map_err`: an I/O error of operation `op` in run `run`.
    pub(super) fn io(
        run: &str,
        op: impl Into<String>,
    ) -> impl FnOnce(std::io::Error) -> LaunchError {
        let (run, op) = (run.to_string(), op.into());
        move |source| LaunchError::Io { run, op, source }
    }

    /// For `map_err`: a cache or lock error in run `run`.
    pub(super) fn cache(run: &str) -> impl FnOnce(cache::CacheError) -> LaunchError {
        let run = run.to_string();
        move |source| LaunchError::Cache { run, source }
    }

    /// For `map_err`: a clone error in run `run`.
    pub(super) fn clone_failed(run: &str) -> impl FnOnce(rootfs::CloneError) -> LaunchError {
        let run = run.to_string();
        move |source| LaunchError::Clone { run, source }
    }

    /// For `map_err`: a spec error in run `run`.
    pub(super) fn spec(run: &str) -> impl FnOnce(spec::SpecError) -> LaunchError {
        let run = run.to_string();
        move |source| LaunchError::Spec { run, source }
    }
}

/// Launches runs from one cache.
#[derive(Debug, Clone)]
pub struct Launcher {
    cache: Cache,
    clone_method: CloneMethod,
    child_exe: PathBuf,
}

impl Launcher {
    /// Probes the clone method and removes what dead krunner processes left behind.
    pub fn new(cache: Cache) -> Result<Launcher, LaunchError> {
        let clone_method = match std::env::var("KRUNNER_CLONE_METHOD").as_deref() {
            // For benchmarks and tests: force a method (it must work on this cache).
            Ok("overlay") => CloneMethod::Overlay,
            Ok("reflink") => CloneMethod::Reflink,
            Ok("copy") => CloneMethod::Copy,
            _ => rootfs::probe(&cache.runs_dir()),
        };
        if clone_method == CloneMethod::Copy {
            tracing::warn!(
                "{} supports neither overlayfs (needs root) nor reflinks: every run makes a full copy of its image; put the cache on XFS or btrfs, or run as root",
                cache.root().display()
            );
        }
        let l = Launcher {
            cache,
            clone_method,
            child_exe: self_exe(),
        };
        l.sweep()?;
        Ok(l)
    }

    /// Re-executes `exe` (a krunner binary) for VM children instead of this process's own
    /// executable: for embedding the launcher in another program, such as a test harness.
    pub fn with_child_exe(mut self, exe: PathBuf) -> Launcher {
        self.child_exe = exe;
        self
    }

    /// The clone method in use.
    pub fn clone_method(&self) -> CloneMethod {
        self.clone_method
    }

    /// Removes run directories whose supervising krunner is gone (its run lock is free), with
    /// any mount left under them. Returns how many were removed.
    pub fn sweep(&self) -> Result<usize, LaunchError> {
        leftovers::sweep(&self.cache)
    }

    /// Runs one guest to completion (or until stopped) and cleans up.
    pub async fn run(&self, req: &RunRequest, stop: &Cancel) -> Result<RunOutcome, LaunchError> {
        let start = Instant::now();
        let run_id = format!("{}-{}", std::process::id(), &cache::random_suffix()[..8]);
        check_request(req, &run_id)?;
        let mut claimed = self.claim(req, &run_id).await?;
        // Rootless, krunner's own user namespace is the guest's: no host range can be mapped.
        claimed.ids = match req.user_namespace && crate::rootless::in_initial_user_ns() {
            true => Some(super::ids::lease().map_err(|source| LaunchError::Ids {
                run: run_id.clone(),
                source,
            })?),
            false => None,
        };
        let shares = prepare::run_shares(req, &claimed.dir, &run_id)?;
        // Before the network jail: its pasta runs in the run's cgroup.
        let cgroup = run_cgroup(req, &run_id)?;
        let cgroup_dir = cgroup.as_ref().map(|c| c.path().to_path_buf());
        let t = Instant::now();
        claimed.net = jail(
            req,
            &claimed.dir,
            &self.child_exe,
            &run_id,
            cgroup_dir.as_deref(),
        )
        .await?;
        let jail_time = t.elapsed();
        let netns = claimed.net.as_ref().map(|n| n.path().to_path_buf());
        let confined = Confinement {
            netns,
            cgroup: cgroup_dir,
            ids: claimed.ids.as_ref().map(|l| l.map),
        };
        let staged = self.stage(req, &shares.all, &run_id, &claimed.dir, confined)?;
        let spawned_at = spec::monotonic_ns();
        // Spawned here, on the run's own task: see the module docs on PR_SET_PDEATHSIG.
        let mut child = supervise::spawn(&self.child_exe, req, &staged.spec_path, &run_id)?;
        let how = StopHow::for_run(req, shares.control.as_deref());
        let exit = child.wait(req.max_lifetime, stop, &how, &run_id).await?;
        let output = child.output(&run_id).await;
        if let Some(net) = claimed.net.take() {
            net.shutdown().await;
        }
        let clock = Clock {
            start,
            clone: staged.clone,
            prepare: staged.prepare,
            jail: jail_time,
            spawned_at,
        };
        // Reading what the guest wrote and removing the run directory are blocking file work.
        let id = run_id.clone();
        let log = match &req.output {
            Output::File(p) => Some(p.clone()),
            _ => None,
        };
        tokio::task::spawn_blocking(move || {
            let outcome = claimed.collect(run_id, exit, output, &clock, cgroup)?;
            if let Some(log) = log {
                note_end(&log, &outcome);
            }
            Ok(outcome)
        })
        .await
        .map_err(|e| LaunchError::io(&id, "collect the run's outcome")(std::io::Error::other(e)))?
    }

    /// Takes the image's rootfs lock shared (so `prune` keeps it) and the run's own lock, and
    /// creates the run directory.
    async fn claim(&self, req: &RunRequest, run_id: &str) -> Result<ClaimedRun, LaunchError> {
        let image_lock = match &req.manifest {
            Some(m) => Some(
                self.lock(LockName::Rootfs(m.clone()), LockMode::Shared)
                    .await
                    .map_err(LaunchError::cache(run_id))?,
            ),
            None => None,
        };
        let run_lock = self
            .lock(LockName::Run(run_id.to_string()), LockMode::Exclusive)
            .await
            .map_err(LaunchError::cache(run_id))?;
        let dir = self.cache.runs_dir().join(run_id);
        // Private: the job's files (a setuid binary in the overlay's upper dir, say) are no
        // business of other local users.
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(LaunchError::io(run_id, format!("create {}", dir.display())))?;
        Ok(ClaimedRun {
            ids: None,
            net: None,
            guard: RunDirGuard::new(dir.clone(), self.cache.clone(), run_id.to_string()),
            dir,
            _run_lock: run_lock,
            _image_lock: image_lock,
        })
    }

    /// Clones the image into the run directory, then writes the guest's files into the clone
    /// and the spec next to it (with the network namespace to join, if jailed).
    fn stage(
        &self,
        req: &RunRequest,
        shares: &[Share],
        run_id: &str,
        run_dir: &Path,
        confined: Confinement,
    ) -> Result<Staged, LaunchError> {
        let t = Instant::now();
        let runner = req.runner.as_ref().map(|r| r.installed.tree.as_path());
        let root = rootfs::make_clone(self.clone_method, &req.rootfs, runner, run_dir)
            .map_err(LaunchError::clone_failed(run_id))?;
        let clone = t.elapsed();

        let t = Instant::now();
        let mut spec = prepare::prepare(req, shares, run_id, run_dir, root)?;
        spec.netns = confined.netns;
        spec.cgroup = confined.cgroup;
        let rootless = crate::rootless::active();
        if let (Some(ids), Backend::Namespace) = (confined.ids, req.backend) {
            spec.workload_ids = Some(ids);
        } else if confined.ids.is_some() || (rootless && req.backend == Backend::Krun) {
            let ids = confined.ids;
            // The mount point of the VMM's tree (a tmpfs in its own mount namespace).
            let dir = run_dir.join("jail");
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&dir)
                .map_err(LaunchError::io(run_id, format!("create {}", dir.display())))?;
            spec.vmm_jail = Some(VmmJail { dir, ids });
        }
        let spec_path = run_dir.join("spec.json");
        spec.write(&spec_path).map_err(LaunchError::spec(run_id))?;
        Ok(Staged {
            spec_path,
            clone,
            prepare: t.elapsed(),
        })
    }

    /// Takes a cache lock without blocking the runtime.
    async fn lock(&self, name: LockName, mode: LockMode) -> Result<LockGuard, cache::CacheError> {
        let c = self.cache.clone();
        match tokio::task::spawn_blocking(move || c.lock(&name, mode)).await {
            Ok(r) => r,
            Err(e) => Err(cache::CacheError::Io {
                op: "lock",
                path: self.cache.root().join("locks"),
                source: std::io::Error::other(e.to_string()),
            }),
        }
    }
}

/// Makes the run's network namespace when its policy jails it. Called on the run's own task:
/// pasta's keeper, like the VM child, must be forked by a thread that outlives the run.
async fn jail(
    req: &RunRequest,
    dir: &Path,
    exe: &Path,
    run_id: &str,
    cgroup: Option<&Path>,
) -> Result<Option<NetJail>, LaunchError> {
    let EgressPolicy::Public { allow } = &req.egress else {
        return Ok(None);
    };
    let err = |source| LaunchError::Jail {
        run: run_id.to_string(),
        source,
    };
    // Looked up once per process: the run loops would otherwise walk PATH for every guest.
    static TOOLS: std::sync::OnceLock<Tools> = std::sync::OnceLock::new();
    let tools = match TOOLS.get() {
        Some(t) => t,
        None => {
            let found = Tools::find().map_err(err)?;
            TOOLS.get_or_init(|| found)
        }
    };
    NetJail::create(dir, exe, allow, req.dns.parse().ok(), tools, cgroup)
        .await
        .map(Some)
        .map_err(err)
}

/// Creates the run's cgroup with the limits `req` asks for, when cgroups are usable here
/// (without them the run goes unlimited; [`cgroup::host`] has warned once).
fn run_cgroup(req: &RunRequest, run_id: &str) -> Result<Option<RunCgroup>, LaunchError> {
    let Some(base) = cgroup::host() else {
        return Ok(None);
    };
    let mut limits = Limits::for_run(req.backend, req.cpus, req.memory_mib);
    if matches!(req.egress, EgressPolicy::Public { .. }) {
        limits = limits.with_network_jail();
    }
    base.create_run(run_id, limits)
        .map(Some)
        .map_err(|source| LaunchError::Cgroup {
            run: run_id.to_string(),
            source,
        })
}

/// Reads whether the OOM killer acted in the run's cgroup, then removes the cgroup (killing
/// whatever is left in it).
fn finish_cgroup(cgroup: Option<RunCgroup>, run_id: &str) -> Option<OutOfMemory> {
    let cg = cgroup?;
    let kills = cg.oom_kills();
    let memory_max = cg.limits().memory_max;
    if let Err(e) = cg.remove() {
        tracing::warn!(run = %run_id, "cannot remove the run's cgroup: {}", crate::error_chain(&e));
    }
    (kills > 0).then_some(OutOfMemory { kills, memory_max })
}

/// Refuses a request that cannot start: a krun run without libkrunfw, a share whose host
/// directory is missing.
fn check_request(req: &RunRequest, run_id: &str) -> Result<(), LaunchError> {
    if req.backend == Backend::Krun {
        check_libkrunfw(req.libkrunfw_dir.as_deref())?;
    }
    for s in &req.shares {
        if !s.host.is_dir() {
            return Err(LaunchError::ShareMissing {
                run: run_id.to_string(),
                host: s.host.clone(),
            });
        }
    }
    Ok(())
}

/// A run's directory and the locks that keep it and its image ours. Dropped, on every path
/// out of [`Launcher::run`], it removes the directory first and then releases the locks
/// (fields drop in order).
/// What confines a run's child besides its root: set in its spec.
struct Confinement {
    /// The network namespace to join (the egress jail).
    netns: Option<PathBuf>,
    /// The run's cgroup.
    cgroup: Option<PathBuf>,
    /// The VMM's user namespace range (krun with `--user-namespace on`).
    ids: Option<IdMap>,
}

struct ClaimedRun {
    /// The VMM's host id range, held until the run is over.
    ids: Option<super::ids::IdLease>,
    /// The guest's network namespace and its pasta: torn down first.
    net: Option<NetJail>,
    /// Removes `dir`.
    guard: RunDirGuard,
    /// The run directory.
    dir: PathBuf,
    /// The run's own lock: a live krunner owns this directory.
    _run_lock: LockGuard,
    /// The image's rootfs lock, shared: `prune` keeps the image.
    _image_lock: Option<LockGuard>,
}

impl ClaimedRun {
    /// Reads what the child and the guest left in the run directory (events, the guest's
    /// result), removes the directory and puts the outcome together.
    fn collect(
        mut self,
        run_id: String,
        exit: VmExit,
        output: ChildOutput,
        clock: &Clock,
        cgroup: Option<RunCgroup>,
    ) -> Result<RunOutcome, LaunchError> {
        let out_of_memory = finish_cgroup(cgroup, &run_id);
        let events = spec::read_events(&self.dir.join("events"));
        let mut timings = clock.timings(&events);
        let guest_result = read_guest_result(&self.dir.join("results").join("result"), &run_id);
        self.guard.finish().map_err(LaunchError::cache(&run_id))?;
        timings.total = clock.start.elapsed();
        Ok(RunOutcome {
            run_id,
            exit,
            events,
            captured: output.captured,
            guest_result,
            kvm_internal_error: output.kvm_internal_error,
            out_of_memory,
            timings,
        })
    }
}

/// Ends the run's log with how the run ended, in krunner's words: the guest's own last lines
/// cannot say that it was killed for lack of memory or outlived its lifetime.
fn note_end(log: &Path, outcome: &RunOutcome) {
    let line = format!(
        "krunner: run {} ended: {}\n",
        outcome.run_id,
        outcome.describe_exit()
    );
    let res = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
    if let Err(e) = res {
        tracing::warn!(run = %outcome.run_id, "cannot note the run's end in {}: {e}", log.display());
    }
}

/// The most the host reads of the guest's result file: a few short `key=value` lines.
const RESULT_CAP: u64 = 64 * 1024;

/// The guest's result, if it wrote a sound one. The guest controls this file: a symlink, a
/// FIFO or a huge file is logged and ignored (see [`untrusted`]).
fn read_guest_result(path: &Path, run_id: &str) -> Option<GuestResult> {
    match untrusted::read_capped(path, RESULT_CAP) {
        Ok(text) => text.and_then(|t| guest::parse_result(&t)),
        Err(e) => {
            tracing::warn!(run = %run_id, "ignoring the guest's result: {e}");
            None
        }
    }
}

/// A run ready to spawn: its spec written, and how long getting there took.
struct Staged {
    /// The spec file.
    spec_path: PathBuf,
    /// Making the clone.
    clone: Duration,
    /// Writing the guest's files and the spec.
    prepare: Duration,
}

/// When a run's host-side steps happened, for its [`Timings`].
struct Clock {
    /// The start of [`Launcher::run`].
    start: Instant,
    /// Making the clone.
    clone: Duration,
    /// Writing the guest's files and the spec.
    prepare: Duration,
    /// Making the network jail.
    jail: Duration,
    /// CLOCK_MONOTONIC (as in the child's events) just before the child was spawned.
    spawned_at: u64,
}

impl Clock {
    /// The timings the child's `events` tell; `total` is left for the caller.
    fn timings(&self, events: &[Stamped]) -> Timings {
        let started = events
            .iter()
            .find(|s| matches!(s.event, Event::Started { .. }))
            .map(|s| s.ts_ns);
        let entering = events
            .iter()
            .find(|s| s.event == Event::Entering)
            .map(|s| s.ts_ns);
        let spawned_at = self.spawned_at;
        Timings {
            clone: self.clone,
            prepare: self.prepare,
            jail: self.jail,
            spawn: started.map(|t| Duration::from_nanos(t.saturating_sub(spawned_at))),
            setup: started
                .zip(entering)
                .map(|(s, e)| Duration::from_nanos(e.saturating_sub(s))),
            to_entering: entering.map(|e| {
                Duration::from_nanos(e.saturating_sub(spawned_at))
                    + self.clone
                    + self.prepare
                    + self.jail
            }),
            total: Duration::ZERO,
        }
    }
}

/// The path to re-execute ourselves.
fn self_exe() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("krunner"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_are_explained() {
        assert!(VmExit::Exited(127).describe().contains("not found"));
        assert!(VmExit::Exited(125).describe().contains("set up"));
        assert!(VmExit::Exited(137).describe().contains("signal 9"));
        assert_eq!(VmExit::Exited(7).code(), 7);
        assert_eq!(VmExit::Signaled(9).code(), 137);
        assert_eq!(VmExit::LifetimeExceeded.code(), 143);
    }
}

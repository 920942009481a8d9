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

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::spec::{self, Event, GuestExec, LaunchSpec, RootSpec, Share, Stamped};
use super::{Backend, KRUN_CHILD, NS_CHILD};
use crate::guest::{self, GuestResult, RunnerJob};
use crate::image::cache::Digest;
use crate::image::cache::{self, Cache, LockGuard, LockMode, LockName};
use crate::image::Cancel;
use crate::rootfs::{self, CloneMethod};

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
}

impl RunOutcome {
    /// The first failure the child reported, if any.
    pub fn failure(&self) -> Option<&Event> {
        self.events
            .iter()
            .map(|s| &s.event)
            .find(|e| matches!(e, Event::Failed { .. }))
    }

    /// Whether the child got as far as starting the guest.
    pub fn entered(&self) -> bool {
        self.events.iter().any(|s| s.event == Event::Entering)
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
        let runs = self.cache.runs_dir();
        let entries = std::fs::read_dir(&runs).map_err(|source| LaunchError::Io {
            run: "-".into(),
            op: format!("list {}", runs.display()),
            source,
        })?;
        let mut removed = 0;
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().to_string();
            let lock = self
                .cache
                .try_lock(&LockName::Run(id.clone()), LockMode::Exclusive)
                .map_err(|source| LaunchError::Cache {
                    run: id.clone(),
                    source,
                })?;
            if lock.is_none() {
                continue; // a live krunner owns it
            }
            unmount_under(&e.path());
            cache::remove_tree(&e.path()).map_err(|source| LaunchError::Cache {
                run: id.clone(),
                source,
            })?;
            self.cache.remove_run_lock(&id);
            tracing::info!(run = %id, "removed the leftovers of an earlier krunner");
            removed += 1;
        }
        Ok(removed)
    }

    /// Runs one guest to completion (or until stopped) and cleans up.
    pub async fn run(&self, req: &RunRequest, stop: &Cancel) -> Result<RunOutcome, LaunchError> {
        let start = Instant::now();
        let run_id = format!("{}-{}", std::process::id(), &cache::random_suffix()[..8]);
        let run_dir = self.cache.runs_dir().join(&run_id);
        let io = |op: String| {
            let run = run_id.clone();
            move |source| LaunchError::Io { run, op, source }
        };
        let cache_err = |source| LaunchError::Cache {
            run: run_id.clone(),
            source,
        };
        if req.backend == Backend::Krun {
            check_libkrunfw(req.libkrunfw_dir.as_deref())?;
        }
        for s in &req.shares {
            if !s.host.is_dir() {
                return Err(LaunchError::ShareMissing {
                    run: run_id.clone(),
                    host: s.host.clone(),
                });
            }
        }
        // Locks: the image stays (prune skips it), and this run dir is ours.
        let _image_lock = match &req.manifest {
            Some(m) => Some(
                self.lock(LockName::Rootfs(m.clone()), LockMode::Shared)
                    .await
                    .map_err(cache_err)?,
            ),
            None => None,
        };
        let _run_lock = self
            .lock(LockName::Run(run_id.clone()), LockMode::Exclusive)
            .await
            .map_err(cache_err)?;
        std::fs::create_dir(&run_dir).map_err(io(format!("create {}", run_dir.display())))?;
        let mut cleanup = RunDirGuard {
            dir: run_dir.clone(),
            cache: self.cache.clone(),
            id: run_id.clone(),
        };

        // The per-run secrets (0700 dir, 0600 file), results and control shares of a runner job.
        let mut shares = req.shares.clone();
        let results_dir = run_dir.join("results");
        let mut control_dir = None;
        if let Workload::Runner(job) = &req.workload {
            let secrets = run_dir.join("secrets");
            write_secret(
                &secrets,
                job.registration.file_name(),
                job.registration.secret().expose(),
            )
            .map_err(io(format!(
                "write the registration into {}",
                secrets.display()
            )))?;
            private_dir(&results_dir).map_err(io(format!("create {}", results_dir.display())))?;
            shares.push(Share {
                tag: "krunner-secrets".into(),
                host: secrets,
                guest: guest::SECRETS_GUEST.into(),
                read_only: false,
            });
            shares.push(Share {
                tag: "krunner-results".into(),
                host: results_dir.clone(),
                guest: guest::RESULTS_GUEST.into(),
                read_only: false,
            });
            // The stop channel: the host creates `stop` here, the agent's watcher sees it and
            // stops the runner (a signal to the VMM would never reach it).
            let control = run_dir.join("control");
            private_dir(&control).map_err(io(format!("create {}", control.display())))?;
            shares.push(Share {
                tag: "krunner-control".into(),
                host: control.clone(),
                guest: guest::CONTROL_GUEST.into(),
                read_only: true,
            });
            control_dir = Some(control);
        }

        let t = Instant::now();
        let root =
            rootfs::make_clone(self.clone_method, &req.rootfs, &run_dir).map_err(|source| {
                LaunchError::Clone {
                    run: run_id.clone(),
                    source,
                }
            })?;
        let clone_time = t.elapsed();

        let t = Instant::now();
        let spec = self.prepare(req, &shares, &run_id, &run_dir, root)?;
        let spec_path = run_dir.join("spec.json");
        spec.write(&spec_path).map_err(|source| LaunchError::Spec {
            run: run_id.clone(),
            source,
        })?;
        let prepare_time = t.elapsed();

        let spawned_at = spec::monotonic_ns();
        let mut cmd = tokio::process::Command::new(&self.child_exe);
        cmd.arg(match req.backend {
            Backend::Krun => KRUN_CHILD,
            Backend::Namespace => NS_CHILD,
        })
        .arg(&spec_path)
        // Nothing of krunner's environment (which may hold a token) reaches the child.
        .env_clear()
        .stdin(Stdio::null())
        // Its own process group: a terminal's Ctrl-C reaches krunner, which decides.
        .process_group(0)
        .kill_on_drop(true);
        if let Some(dir) = &req.libkrunfw_dir {
            cmd.env("LD_LIBRARY_PATH", dir);
        }
        // Under krun the child's stderr (and for a log file also its stdout and the guest
        // console) passes through a pipe to a task of ours that copies it on and watches for
        // libkrun's KVM_EXIT_INTERNAL_ERROR line. Under namespaces the guest writes to the
        // terminal or the log directly.
        let mut tee: Option<(tokio::net::unix::pipe::Receiver, Box<dyn TeeSink>)> = None;
        let pipe_err = || io("create the output pipe".into());
        match (&req.output, req.backend) {
            (Output::Inherit, Backend::Namespace) => {
                cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            }
            (Output::Inherit, Backend::Krun) => {
                let (r, w) = output_pipe().map_err(pipe_err())?;
                cmd.stdout(Stdio::inherit()).stderr(w);
                tee = Some((r, Box::new(tokio::io::stderr())));
            }
            (Output::File(p), backend) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(io(format!("open log {}", p.display())))?;
                if backend == Backend::Krun {
                    let (r, w) = output_pipe().map_err(pipe_err())?;
                    let w2 = w.try_clone().map_err(pipe_err())?;
                    cmd.stdout(w).stderr(w2);
                    tee = Some((r, Box::new(tokio::fs::File::from_std(f))));
                } else {
                    let f2 = f
                        .try_clone()
                        .map_err(io(format!("open log {}", p.display())))?;
                    cmd.stdout(f).stderr(f2);
                }
            }
            (Output::Capture, _) => {
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            }
        }
        let spawned = cmd.spawn();
        // The Command keeps its copies of the pipe's write end: drop them, or the tee task
        // would never see the end of the output.
        drop(cmd);
        let mut child = spawned.map_err(io("spawn the VM child".into()))?;
        let pid = child.id().and_then(|p| i32::try_from(p).ok());
        tracing::debug!(run = %run_id, backend = ?req.backend, pid, "VM child started");

        // Drain output concurrently so a chatty guest cannot block on a full pipe.
        let tee_task = tee.map(|(r, sink)| tokio::spawn(tee_output(r, sink)));
        let out_task = child.stdout.take().map(|mut s| {
            tokio::spawn(async move {
                let mut v = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut v).await;
                v
            })
        });
        let err_task = child.stderr.take().map(|mut s| {
            tokio::spawn(async move {
                let mut v = Vec::new();
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut v).await;
                v
            })
        });
        let stop_how = StopHow {
            grace: req.stop_grace,
            stop_file: control_dir.as_ref().map(|d| d.join("stop")),
            // libkrun's VMM does not turn SIGTERM into anything the guest sees: it dies at
            // once and takes the guest with it. So under krun a runner run is asked through
            // the stop file (the agent's watcher stops the runner, which can tell GitHub) and
            // gets no SIGTERM; a command run has no such watcher, so SIGTERM ends it at once
            // rather than after a useless grace period. Under namespaces SIGTERM reaches the
            // agent, which forwards it.
            term_first: req.backend == Backend::Namespace || control_dir.is_none(),
        };

        let lifetime = async {
            match req.max_lifetime {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let mut stopped_by_us = None;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = lifetime => { stopped_by_us = Some(VmExit::LifetimeExceeded); stop_child(&mut child, pid, &stop_how).await }
            _ = stop.cancelled() => { stopped_by_us = Some(VmExit::Stopped); stop_child(&mut child, pid, &stop_how).await }
        }
        .map_err(io("wait for the VM child".into()))?;
        // The child is reaped, but what it started may still be dying (its PID 1 and the
        // guest after a SIGKILL): wait until its process group is empty, so "the run ended"
        // means nothing of it is left.
        if let Some(p) = pid {
            wait_group_gone(p, Duration::from_secs(10)).await;
        }
        let exit = match stopped_by_us {
            Some(e) => e,
            None => match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => VmExit::Exited(c),
                (None, Some(s)) => VmExit::Signaled(s),
                (None, None) => VmExit::Exited(1),
            },
        };
        let captured = match (out_task, err_task) {
            (Some(o), Some(e)) => Some((
                finish_task(o, &run_id).await.unwrap_or_default(),
                finish_task(e, &run_id).await.unwrap_or_default(),
            )),
            _ => None,
        };
        let kvm_internal_error = match (tee_task, &captured) {
            (Some(t), _) => finish_task(t, &run_id).await.unwrap_or(false),
            (None, Some((_, err))) => mentions_kvm_internal_error(err),
            (None, None) => false,
        };
        let events = spec::read_events(&run_dir.join("events"));
        let started = events
            .iter()
            .find(|s| matches!(s.event, Event::Started { .. }))
            .map(|s| s.ts_ns);
        let entering = events
            .iter()
            .find(|s| s.event == Event::Entering)
            .map(|s| s.ts_ns);
        let spawn = started.map(|t| Duration::from_nanos(t.saturating_sub(spawned_at)));
        let setup = started
            .zip(entering)
            .map(|(s, e)| Duration::from_nanos(e.saturating_sub(s)));
        let to_entering = entering.map(|e| {
            Duration::from_nanos(e.saturating_sub(spawned_at)) + clone_time + prepare_time
        });

        let guest_result = std::fs::read_to_string(results_dir.join("result"))
            .ok()
            .and_then(|t| guest::parse_result(&t));
        cleanup.finish().map_err(|source| LaunchError::Cache {
            run: run_id.clone(),
            source,
        })?;
        Ok(RunOutcome {
            run_id,
            exit,
            events,
            captured,
            guest_result,
            kvm_internal_error,
            timings: Timings {
                clone: clone_time,
                prepare: prepare_time,
                spawn,
                setup,
                to_entering,
                total: start.elapsed(),
            },
        })
    }

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

    /// Writes the guest's files into the clone and builds the spec.
    fn prepare(
        &self,
        req: &RunRequest,
        shares: &[Share],
        run_id: &str,
        run_dir: &Path,
        root: RootSpec,
    ) -> Result<LaunchSpec, LaunchError> {
        let clone_err = |source| LaunchError::Clone {
            run: run_id.to_string(),
            source,
        };
        // Under krun the guest mounts its virtio-fs shares itself; under namespaces the
        // child has bind-mounted them already.
        let to_mount: &[Share] = match req.backend {
            Backend::Krun => shares,
            Backend::Namespace => &[],
        };
        let job = match &req.workload {
            Workload::Runner(job) => Some(job),
            Workload::Command(_) => None,
        };
        let conf = guest::agent_conf_for(to_mount, job).map_err(|reason| LaunchError::Spec {
            run: run_id.to_string(),
            source: spec::SpecError::CommandLine(reason),
        })?;
        rootfs::write_guest_file(
            &root,
            guest::AGENT_PATH,
            guest::AGENT_SCRIPT.as_bytes(),
            0o755,
        )
        .map_err(clone_err)?;
        rootfs::write_guest_file(&root, guest::AGENT_CONF, conf.as_bytes(), 0o644)
            .map_err(clone_err)?;
        rootfs::write_guest_file(
            &root,
            "/etc/resolv.conf",
            guest::resolv_conf(&req.dns).as_bytes(),
            0o644,
        )
        .map_err(clone_err)?;
        rootfs::write_guest_file(
            &root,
            "/etc/hostname",
            format!("{}\n", req.hostname).as_bytes(),
            0o644,
        )
        .map_err(clone_err)?;
        rootfs::write_guest_file(
            &root,
            "/etc/hosts",
            guest::hosts(&req.hostname).as_bytes(),
            0o644,
        )
        .map_err(clone_err)?;
        let mut env = vec![("HOSTNAME".to_string(), req.hostname.clone())];
        env.extend(req.env.iter().cloned());
        let argv = match &req.workload {
            Workload::Command(c) => Some(c.as_slice()),
            Workload::Runner(_) => None,
        };
        write_workload_files(&root, argv, &env, run_id)?;

        // All that travels on the kernel command line (krun) or to the namespace's PID 1: the
        // agent and what it needs itself. The rest is in the files written above.
        let env = vec![
            ("PATH".to_string(), guest::GUEST_PATH.to_string()),
            ("HOME".to_string(), "/root".to_string()),
            (
                "KRUNNER_BACKEND".to_string(),
                match req.backend {
                    Backend::Krun => "krun",
                    Backend::Namespace => "namespace",
                }
                .to_string(),
            ),
        ];
        let args = vec![guest::AGENT_PATH.to_string()];
        let spec = LaunchSpec {
            run_id: run_id.to_string(),
            parent_pid: std::process::id() as i32,
            root,
            cpus: req.cpus,
            memory_mib: req.memory_mib,
            shares: shares.to_vec(),
            exec: GuestExec {
                path: "/bin/sh".into(),
                args,
                env,
                workdir: req.workdir.clone(),
            },
            hostname: req.hostname.clone(),
            nofile: match req.backend {
                Backend::Krun => req.nofile,
                // In namespaces the limit cannot exceed our own hard limit without
                // CAP_SYS_RESOURCE.
                Backend::Namespace => {
                    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                        .map_or(req.nofile, |(_, hard)| req.nofile.min(hard))
                }
            },
            // libkrun opens the console file with File::create (O_TRUNC, its own offset): the
            // run's log itself would be truncated and overwritten. Our stderr is the output
            // pipe instead, which libkrun opens anew through /proc (O_TRUNC means nothing to a
            // pipe), so console and child messages reach the log in order, appended.
            console_log: match (&req.backend, &req.output) {
                (Backend::Krun, Output::File(_)) => Some(PathBuf::from("/proc/self/fd/2")),
                _ => None,
            },
            events: run_dir.join("events"),
            krun_log_level: req.krun_log_level,
            libkrunfw_dir: req.libkrunfw_dir.clone(),
        };
        if req.backend == Backend::Krun {
            spec.check_command_line()
                .map_err(|source| LaunchError::Spec {
                    run: run_id.to_string(),
                    source,
                })?;
        }
        Ok(spec)
    }
}

/// Creates `dir` readable by its owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Writes a secret as a new 0600 file `name` in a new 0700 directory `dir`.
fn write_secret(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    private_dir(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?;
    f.write_all(value.as_bytes())
}

/// How a run is stopped.
struct StopHow {
    /// How long the guest may take to end by itself.
    grace: Duration,
    /// Created first, when the run has a control share: the agent stops the runner.
    stop_file: Option<PathBuf>,
    /// Send SIGTERM to the VM child (namespace backend: it reaches the agent).
    term_first: bool,
}

/// Asks the guest to stop (the stop file, SIGTERM where it helps), then SIGKILLs the whole
/// process group if it has not ended after the grace period; returns the final status.
async fn stop_child(
    child: &mut tokio::process::Child,
    pid: Option<i32>,
    how: &StopHow,
) -> std::io::Result<std::process::ExitStatus> {
    if let Some(f) = &how.stop_file {
        if let Err(e) = std::fs::write(f, b"stop\n") {
            tracing::warn!("cannot create the stop file {}: {e}", f.display());
        }
    }
    if how.term_first {
        if let Some(p) = pid {
            let _ = kill(Pid::from_raw(p), Signal::SIGTERM);
        }
    }
    let grace = how.grace;
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(s) => s,
        Err(_) => {
            tracing::warn!(
                pid,
                "the guest did not end within {grace:?} of the stop request: killing it"
            );
            // The whole process group: the VM child, and under the namespace backend its
            // PID 1 and the guest processes that did not leave the group.
            if let Some(p) = pid {
                let _ = kill(Pid::from_raw(-p), Signal::SIGKILL);
            }
            child.start_kill()?;
            child.wait().await
        }
    }
}

/// Where the tee task copies output to: krunner's stderr or a run's log.
trait TeeSink: tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncWrite + Unpin + Send> TeeSink for T {}

/// A close-on-exec pipe for the child's output: our async read end, and the write end for the
/// child's stdio.
fn output_pipe() -> std::io::Result<(tokio::net::unix::pipe::Receiver, std::os::fd::OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    Ok((tokio::net::unix::pipe::Receiver::from_owned_fd(r)?, w))
}

/// Copies the child's output to `sink` as it comes (no waiting for whole lines) until every
/// writer is gone; returns whether libkrun reported `KVM_EXIT_INTERNAL_ERROR` in it.
async fn tee_output(
    mut from: tokio::net::unix::pipe::Receiver,
    mut sink: Box<dyn TeeSink>,
) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut scan = MarkerScan::default();
    let mut buf = vec![0u8; 64 * 1024];
    let mut sink_ok = true;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        scan.feed(&buf[..n]);
        // A sink that fails (a closed terminal, a full disk) must not stall the guest on a
        // full pipe: keep reading, stop writing.
        if sink_ok && sink.write_all(&buf[..n]).await.is_err() {
            sink_ok = false;
        }
    }
    let _ = sink.flush().await;
    scan.found
}

/// Awaits an output task: briefly, since it only ends when every process that inherited the
/// pipe is gone, and the run's process group already is.
async fn finish_task<T>(task: tokio::task::JoinHandle<T>, run_id: &str) -> Option<T> {
    let abort = task.abort_handle();
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(r) => r.ok(),
        Err(_) => {
            tracing::warn!(run = %run_id, "the run's output is still open after it ended; no longer reading it");
            abort.abort();
            None
        }
    }
}

/// What libkrun logs when KVM stops the vCPU because it cannot emulate the guest (nested
/// "PVM" KVM and libkrunfw's kernel).
const KVM_INTERNAL_ERROR: &[u8] = b"KVM_EXIT_INTERNAL_ERROR";

/// Whether `output` holds libkrun's `KVM_EXIT_INTERNAL_ERROR` report.
pub fn mentions_kvm_internal_error(output: &[u8]) -> bool {
    output
        .windows(KVM_INTERNAL_ERROR.len())
        .any(|w| w == KVM_INTERNAL_ERROR)
}

/// Finds [`KVM_INTERNAL_ERROR`] in a stream fed in pieces, also across piece boundaries,
/// keeping only the last few bytes.
#[derive(Default)]
struct MarkerScan {
    tail: Vec<u8>,
    found: bool,
}

impl MarkerScan {
    fn feed(&mut self, piece: &[u8]) {
        if self.found {
            return;
        }
        let keep = KVM_INTERNAL_ERROR.len() - 1;
        // The carried-over tail plus the start of this piece covers a split marker.
        let head = &piece[..piece.len().min(keep)];
        let mut joint = std::mem::take(&mut self.tail);
        joint.extend_from_slice(head);
        self.found = mentions_kvm_internal_error(&joint) || mentions_kvm_internal_error(piece);
        joint.extend_from_slice(&piece[head.len()..]);
        self.tail = joint[joint.len().saturating_sub(keep)..].to_vec();
    }
}

/// Writes the command's arguments (`argv`, a command run) and the extra environment into the
/// clone as files for the agent ([`guest::ARGV_DIR`], [`guest::ENV_DIR`]): exact bytes, no
/// quoting, no size limit of the kernel command line. Later `env` entries win.
fn write_workload_files(
    root: &RootSpec,
    argv: Option<&[String]>,
    env: &[(String, String)],
    run_id: &str,
) -> Result<(), LaunchError> {
    let spec_err = |source| LaunchError::Spec {
        run: run_id.to_string(),
        source,
    };
    let clone_err = |source| LaunchError::Clone {
        run: run_id.to_string(),
        source,
    };
    if let Some(argv) = argv {
        let mut files = Vec::with_capacity(argv.len());
        for (i, a) in argv.iter().enumerate() {
            if a.contains('\0') {
                return Err(spec_err(spec::SpecError::Nul(format!(
                    "argument {i} ({a:?})"
                ))));
            }
            files.push((i.to_string(), a.clone().into_bytes()));
        }
        rootfs::write_guest_dir(root, guest::ARGV_DIR, &files, 0o644).map_err(clone_err)?;
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        if !guest::is_env_name(k) {
            return Err(spec_err(spec::SpecError::EnvName(k.clone())));
        }
        if v.contains('\0') {
            return Err(spec_err(spec::SpecError::Nul(format!(
                "the value of environment variable {k}"
            ))));
        }
        files.retain(|(name, _)| name != k);
        files.push((k.clone(), v.clone().into_bytes()));
    }
    rootfs::write_guest_dir(root, guest::ENV_DIR, &files, 0o644).map_err(clone_err)
}

/// Waits (up to `limit`) until no process is left in process group `pgid`.
async fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = Instant::now() + limit;
    // kill(-pgid, 0) fails with ESRCH once the group has no member left.
    while kill(Pid::from_raw(-pgid), None).is_ok() {
        if Instant::now() >= deadline {
            tracing::warn!(
                pgid,
                "processes of a finished run are still alive after {limit:?}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Removes the run directory when dropped (also on error paths), unmounting anything that
/// was left mounted under it first.
struct RunDirGuard {
    dir: PathBuf,
    cache: Cache,
    id: String,
}

impl RunDirGuard {
    fn finish(&mut self) -> Result<(), cache::CacheError> {
        unmount_under(&self.dir);
        let r = cache::remove_tree(&self.dir);
        if r.is_ok() {
            self.cache.remove_run_lock(&self.id);
            self.dir = PathBuf::new();
        }
        r
    }
}

impl Drop for RunDirGuard {
    fn drop(&mut self) {
        if !self.dir.as_os_str().is_empty() {
            let _ = self.finish();
        }
    }
}

/// Detaches every mount at or below `dir` in krunner's own mount namespace. Mounts normally
/// live only in the child's namespace; this is for a child that failed in an odd way.
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!("cannot unmount leftover {}: {e}", p.display());
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path to re-execute ourselves.
fn self_exe() -> PathBuf {
    if cfg!(target_os = "linux") {
        PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("krunner"))
    }
}

/// Finds libkrunfw.so.5 where the dynamic loader would: `dir`, LD_LIBRARY_PATH, the loader
/// cache, the usual library directories.
pub fn find_libkrunfw(dir: Option<&Path>) -> Option<PathBuf> {
    let name = if cfg!(target_os = "macos") {
        "libkrunfw.5.dylib"
    } else {
        "libkrunfw.so.5"
    };
    let mut dirs: Vec<PathBuf> = dir.into_iter().map(Path::to_path_buf).collect();
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    if let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = text
            .lines()
            .filter(|l| l.trim_start().starts_with(name))
            .find_map(|l| l.rsplit(" => ").next())
        {
            dirs.push(
                Path::new(p.trim())
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
        }
    }
    for d in [
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/usr/local/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/homebrew/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.exists())
}

fn check_libkrunfw(dir: Option<&Path>) -> Result<(), LaunchError> {
    match find_libkrunfw(dir) {
        Some(_) => Ok(()),
        None => Err(LaunchError::NoLibkrunfw {
            searched: match dir {
                Some(d) => format!(
                    " in {}, LD_LIBRARY_PATH, the loader cache or the usual library directories",
                    d.display()
                ),
                None => " in LD_LIBRARY_PATH, the loader cache or the usual library directories"
                    .to_string(),
            },
        }),
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

    #[test]
    fn the_workload_travels_as_files_byte_for_byte() {
        let t = tempfile::tempdir().unwrap();
        let root = RootSpec::Dir(t.path().to_path_buf());
        let argv: Vec<String> = vec![
            "sh".into(),
            String::new(),
            "--".into(),
            "say \"hi\" 'there'\nline\n\n".into(),
            "héllo ✓".into(),
            "x".repeat(8192),
        ];
        let env = vec![
            ("HOSTNAME".to_string(), "h".to_string()),
            ("A_1".to_string(), "v\"al\nue\n".to_string()),
            ("HOSTNAME".to_string(), "later wins".to_string()),
        ];
        write_workload_files(&root, Some(&argv), &env, "r").unwrap();
        let dir = t.path().join(".krunner/argv");
        for (i, a) in argv.iter().enumerate() {
            assert_eq!(
                std::fs::read(dir.join(i.to_string())).unwrap(),
                a.as_bytes()
            );
        }
        assert!(!dir.join(argv.len().to_string()).exists());
        let env_dir = t.path().join(".krunner/env");
        assert_eq!(std::fs::read(env_dir.join("A_1")).unwrap(), b"v\"al\nue\n");
        assert_eq!(
            std::fs::read(env_dir.join("HOSTNAME")).unwrap(),
            b"later wins"
        );
        assert_eq!(std::fs::read_dir(&env_dir).unwrap().count(), 2);

        // A runner run writes no argv; a second write replaces the first completely.
        write_workload_files(&root, Some(&[]), &[], "r").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&env_dir).unwrap().count(), 0);
    }

    #[test]
    fn bad_environment_names_and_nul_bytes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = RootSpec::Dir(t.path().to_path_buf());
        for name in ["1X", "A-B", "a.b", "", "X Y"] {
            let e =
                write_workload_files(&root, None, &[(name.into(), "v".into())], "r").unwrap_err();
            let msg = crate::error_chain(&e);
            assert!(
                matches!(
                    &e,
                    LaunchError::Spec {
                        source: spec::SpecError::EnvName(n),
                        ..
                    } if n == name
                ),
                "{name:?}: {msg}"
            );
            assert!(msg.contains(&format!("{name:?}")), "{msg}");
        }
        assert!(matches!(
            write_workload_files(&root, None, &[("A".into(), "a\0b".into())], "r"),
            Err(LaunchError::Spec {
                source: spec::SpecError::Nul(_),
                ..
            })
        ));
        assert!(matches!(
            write_workload_files(&root, Some(&["a\0".into()]), &[], "r"),
            Err(LaunchError::Spec {
                source: spec::SpecError::Nul(_),
                ..
            })
        ));
    }

    #[test]
    fn kvm_internal_errors_are_noticed_in_whole_and_split_output() {
        let line = b"[ERROR vmm::linux::vstate] Received KVM_EXIT_INTERNAL_ERROR signal\n";
        assert!(mentions_kvm_internal_error(line));
        assert!(!mentions_kvm_internal_error(b"KVM_EXIT_INTERNAL error\n"));
        assert!(!mentions_kvm_internal_error(b""));
        // Fed in every possible split, and byte by byte.
        for cut in 0..line.len() {
            let mut scan = MarkerScan::default();
            scan.feed(&line[..cut]);
            scan.feed(&line[cut..]);
            assert!(scan.found, "split at {cut}");
        }
        let mut scan = MarkerScan::default();
        for b in line {
            scan.feed(std::slice::from_ref(b));
        }
        assert!(scan.found);
        let mut scan = MarkerScan::default();
        scan.feed(b"KVM_EXIT_INTERNAL");
        scan.feed(&[b'x'; 100]);
        scan.feed(b"_ERROR");
        assert!(!scan.found);
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
    }

    #[test]
    fn libkrunfw_search_honours_the_given_dir() {
        let d = tempfile::tempdir().unwrap();
        let name = if cfg!(target_os = "macos") {
            "libkrunfw.5.dylib"
        } else {
            "libkrunfw.so.5"
        };
        std::fs::write(d.path().join(name), b"").unwrap();
        assert_eq!(find_libkrunfw(Some(d.path())), Some(d.path().join(name)));
    }
}

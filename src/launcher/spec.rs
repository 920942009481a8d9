//! The backend-neutral description of one guest run, handed from the async parent to the VM
//! child as a 0600 JSON file in the run directory (never argv or env: it names secrets' paths
//! and may grow), plus the child→parent event log.
//!
//! Both backends read the same [`LaunchSpec`]; only the last step differs (krun_start_enter vs
//! namespaces + exec).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use crate::guestfs::{check_outside_cache, RootSpec, Share, ShareError};

/// A range of host user and group ids that a user namespace maps to `0..count`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct IdMap {
    /// The host id the namespace's 0 (the guest's root) is.
    pub host_first: u32,
    /// How many ids are mapped.
    pub count: u32,
}

impl IdMap {
    /// The host id of namespace id `id`, if the map covers it.
    pub fn to_host(&self, id: u32) -> Option<u32> {
        (id < self.count).then(|| self.host_first + id)
    }
}

/// The VMM's jail (krun): a user namespace with `ids`, and a minimal mount tree built in
/// `dir` that becomes the VMM's `/` (see [`super::vmm_jail`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmmJail {
    /// An empty directory in the run directory: the tmpfs of the minimal tree goes here.
    pub dir: PathBuf,
    /// The user namespace's map; `None` when krunner runs rootless, in a user namespace of its
    /// own that the VMM stays in (the tree, without idmapped mounts).
    pub ids: Option<IdMap>,
}

/// What the guest runs: the workload under libkrun's init, or PID 1's child in namespaces.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GuestExec {
    /// Absolute path in the guest.
    pub path: String,
    /// Arguments, without argv[0].
    pub args: Vec<String>,
    /// The complete environment: nothing of the host's is added.
    pub env: Vec<(String, String)>,
    /// Working directory in the guest.
    pub workdir: String,
}

/// Everything a VM child needs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LaunchSpec {
    /// Run identifier (also the run directory's name).
    pub run_id: String,
    /// The supervising krunner process: the child exits if it is gone.
    pub parent_pid: i32,
    /// Root filesystem.
    pub root: RootSpec,
    /// vCPUs.
    pub cpus: u8,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Shared directories.
    pub shares: Vec<Share>,
    /// The workload.
    pub exec: GuestExec,
    /// Guest host name.
    pub hostname: String,
    /// The network namespace to join first (the guest's jail, see [`crate::jail::netns`]);
    /// `None`: the host's network (`--egress-policy open`).
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// RLIMIT_NOFILE (soft = hard) for the workload.
    pub nofile: u64,
    /// krun: where the guest console goes (None: libkrun's default, the child's stdout and
    /// stderr as virtio-console ports).
    pub console_log: Option<PathBuf>,
    /// The child appends one line per step here (see [`Event`]).
    pub events: PathBuf,
    /// libkrun log level (0 off … 5 trace); errors such as KVM exits need ≥ 1.
    pub krun_log_level: u32,
    /// Extra directory to find libkrunfw.so.5 in (krun).
    pub libkrunfw_dir: Option<PathBuf>,
    /// The run's cgroup, which the child enters before it starts anything (None: cgroups are
    /// not usable on this host).
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    /// krun: the VMM's user namespace and minimal mount tree (None: `--user-namespace off`,
    /// the namespace backend).
    #[serde(default)]
    pub vmm_jail: Option<VmmJail>,
    /// Namespace backend: the user namespace the workload runs in, root of it but not of the
    /// host (None: `--user-namespace off`, krun).
    #[serde(default)]
    pub workload_ids: Option<IdMap>,
}

/// Errors reading or writing a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// File I/O.
    #[error("{op} launch spec {path}")]
    Io {
        /// What.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Bad JSON.
    #[error("launch spec {path} is invalid: {reason}")]
    Parse {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The workload does not fit libkrun's kernel command line.
    #[error("guest command line: {0}")]
    CommandLine(String),
    /// An environment variable the agent could not export.
    #[error(
        "environment variable name {0:?} is not a valid shell identifier ([A-Za-z_][A-Za-z0-9_]*)"
    )]
    EnvName(String),
    /// A NUL byte, which no argument or environment value of a process can hold.
    #[error("{0} contains a NUL byte")]
    Nul(String),
}

/// libkrunfw's kernel takes at most 32 argv and 32 envp entries (CONFIG_INIT_ENV_ARG_LIMIT);
/// the kernel adds HOME and TERM, init's own variables take a few more.
pub const MAX_GUEST_ENV: usize = 24;
/// See [`MAX_GUEST_ENV`].
pub const MAX_GUEST_ARGS: usize = 30;
/// The guest kernel reads about 2 KiB of command line; libkrun's own part takes ~250 bytes.
pub const MAX_GUEST_CMDLINE: usize = 1500;

impl LaunchSpec {
    /// Checks that env and argv survive the trip on the kernel command line (krun), where
    /// values are wrapped in `"` and names with `.` or kernel parameter names are eaten. Only
    /// the agent's small fixed part travels there (the user's command and environment are files
    /// in the clone, see [`crate::guest::ARGV_DIR`]); this guards it.
    pub fn check_command_line(&self) -> Result<(), SpecError> {
        let e = &self.exec;
        if e.env.len() > MAX_GUEST_ENV {
            return Err(SpecError::CommandLine(format!(
                "{} environment variables; libkrun passes at most {MAX_GUEST_ENV}",
                e.env.len()
            )));
        }
        if e.args.len() > MAX_GUEST_ARGS {
            return Err(SpecError::CommandLine(format!(
                "{} arguments; libkrun passes at most {MAX_GUEST_ARGS}",
                e.args.len()
            )));
        }
        let mut total = e.path.len() + e.workdir.len() + 40;
        for (k, v) in &e.env {
            if k.is_empty() || k.contains(['=', '.', '"', ' ']) {
                return Err(SpecError::CommandLine(format!(
                    "environment variable name {k:?} cannot travel on the kernel command line"
                )));
            }
            if v.contains('"') || v.contains('\n') {
                return Err(SpecError::CommandLine(format!(
                    "the value of {k} contains a quote or newline, which the kernel command line cannot carry"
                )));
            }
            total += k.len() + v.len() + 4;
        }
        for a in &e.args {
            if a.contains('"') || a.contains('\n') {
                return Err(SpecError::CommandLine(format!(
                    "argument {a:?} contains a quote or newline, which the kernel command line cannot carry"
                )));
            }
            total += a.len() + 3;
        }
        if total > MAX_GUEST_CMDLINE {
            return Err(SpecError::CommandLine(format!(
                "{total} bytes of env and arguments; the guest kernel command line holds about \
                 {MAX_GUEST_CMDLINE}"
            )));
        }
        Ok(())
    }

    /// Writes the spec as a new 0600 file.
    pub fn write(&self, path: &Path) -> Result<(), SpecError> {
        let io = |op| {
            move |source| SpecError::Io {
                op,
                path: path.to_path_buf(),
                source,
            }
        };
        let body = serde_json::to_vec(self).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io("create"))?;
        f.write_all(&body).map_err(io("write"))
    }

    /// Reads the spec and removes the file: it is for one child, once.
    pub fn take(path: &Path) -> Result<LaunchSpec, SpecError> {
        let body = fs::read(path).map_err(|source| SpecError::Io {
            op: "read",
            path: path.to_path_buf(),
            source,
        })?;
        let _ = fs::remove_file(path);
        serde_json::from_slice(&body).map_err(|e| SpecError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }
}

/// A step the child reached, appended to the events file as one line.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The child read its spec.
    Started {
        /// Its pid.
        pid: i32,
    },
    /// The root is mounted (overlay) or ready.
    RootReady,
    /// Every krun_* configuration call returned 0.
    Configured,
    /// About to call krun_start_enter (krun) or exec the workload (namespace).
    Entering,
    /// A step failed.
    Failed {
        /// Which step.
        step: String,
        /// errno, when a syscall or libkrun call failed.
        errno: Option<i32>,
        /// Human-readable.
        message: String,
    },
}

/// An event with the CLOCK_MONOTONIC time it happened at, comparable across processes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Stamped {
    /// Nanoseconds of CLOCK_MONOTONIC.
    pub ts_ns: u64,
    /// What happened.
    #[serde(flatten)]
    pub event: Event,
}

/// CLOCK_MONOTONIC in nanoseconds (0 if the clock cannot be read).
pub fn monotonic_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Appends an event (best effort: the child must not die because logging failed).
pub fn emit(path: &Path, event: &Event) {
    EventLog::open(path).emit(event);
}

/// The event log held open: a jailed VMM child loses the path with the host's tree.
#[derive(Debug)]
pub struct EventLog(Option<fs::File>);

impl EventLog {
    /// Opens (creating) the log for appending; a log that cannot be opened drops events.
    pub fn open(path: &Path) -> EventLog {
        EventLog(
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .ok(),
        )
    }

    /// Appends an event (best effort, as [`emit`]).
    pub fn emit(&self, event: &Event) {
        let stamped = Stamped {
            ts_ns: monotonic_ns(),
            event: event.clone(),
        };
        if let (Some(mut f), Ok(line)) = (self.0.as_ref(), serde_json::to_string(&stamped)) {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// Reads the events a child wrote, skipping lines that do not parse.
pub fn read_events(path: &Path) -> Vec<Stamped> {
    fs::read_to_string(path)
        .map(|s| {
            s.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> LaunchSpec {
        LaunchSpec {
            run_id: "r1".into(),
            parent_pid: 1,
            root: RootSpec::Dir("/tmp/x".into()),
            cpus: 1,
            memory_mib: 512,
            shares: vec![],
            exec: GuestExec {
                path: "/bin/sh".into(),
                args: vec!["-c".into(), "true".into()],
                env: vec![("PATH".into(), "/bin".into())],
                workdir: "/".into(),
            },
            hostname: "g".into(),
            netns: None,
            nofile: 1024,
            console_log: None,
            events: "/tmp/e".into(),
            krun_log_level: 1,
            libkrunfw_dir: None,
            cgroup: None,
            vmm_jail: None,
            workload_ids: None,
        }
    }

    #[test]
    fn spec_round_trips_through_a_private_file() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("spec.json");
        spec().write(&p).unwrap();
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(spec().write(&p).is_err(), "never overwrites");
        assert_eq!(LaunchSpec::take(&p).unwrap(), spec());
        assert!(!p.exists(), "read once");
    }

    #[test]
    fn command_line_limits_are_enforced() {
        assert!(spec().check_command_line().is_ok());
        // What the launcher puts there: the agent and a tiny fixed environment.
        let mut s = spec();
        s.exec.args = vec!["/.krunner/agent".into()];
        s.exec.env = vec![
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("HOME".into(), "/root".into()),
            ("KRUNNER_BACKEND".into(), "krun".into()),
        ];
        assert!(s.check_command_line().is_ok());
        let mut s = spec();
        s.exec.env = (0..30).map(|i| (format!("V{i}"), "x".into())).collect();
        assert!(s.check_command_line().is_err());
        let mut s = spec();
        s.exec.args = vec!["say \"hi\"".into()];
        assert!(s.check_command_line().is_err());
        let mut s = spec();
        s.exec.args = (0..40).map(|i| i.to_string()).collect();
        assert!(s.check_command_line().is_err());
        let mut s = spec();
        s.exec.env = vec![("BIG".into(), "x".repeat(3000))];
        assert!(s
            .check_command_line()
            .unwrap_err()
            .to_string()
            .contains("bytes"));
        let mut s = spec();
        s.exec.env = vec![("a.b".into(), "x".into())];
        assert!(s.check_command_line().is_err());
    }

    #[test]
    fn events_append_and_read_back() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("events");
        emit(&p, &Event::Started { pid: 7 });
        emit(&p, &Event::Entering);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(b"garbage\n")
            .unwrap();
        let got: Vec<Event> = read_events(&p).into_iter().map(|s| s.event).collect();
        assert_eq!(got, vec![Event::Started { pid: 7 }, Event::Entering]);
    }
}

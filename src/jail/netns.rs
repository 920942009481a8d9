//! One guest's network namespace: made by the parent before the VM child starts, filtered by
//! nftables, connected to the outside by a pasta process, and gone with the run — or with
//! krunner, however it dies.
//!
//! libkrun's TSI makes the guest's socket calls from the VMM process, so the VMM's network
//! namespace *is* the guest's network: its loopback is the guest's own, its listeners are
//! published nowhere, and what leaves it goes through pasta, which opens ordinary sockets on
//! the host for it. The namespace backend's guest lives in the same kind of namespace.
//!
//! Steps ([`NetJail::create`]):
//! 1. a short-lived thread of ours unshares a new network namespace (a namespace change is
//!    per thread; the thread ends with it, so no other work ever runs in it), opens it (that
//!    descriptor, kept by [`NetJail`], is what keeps it alive) and loads the egress rules with
//!    `nft -f -` (a process the thread spawns starts in its namespace);
//! 2. pasta is started through `krunner __pasta` (the *keeper*, [`keeper_main`]), which arms
//!    the parent-death signal, joins the run's cgroup (when it has one: what the guest's
//!    traffic costs pasta counts against the guest's limits), bind-mounts the namespace on
//!    `RUN/netns` in a mount namespace of its own, and execs pasta in the foreground with the safe options (no inbound port, no
//!    gateway mapping, only the allowed loopback ports; `../shared/reference/jail-network.md`).
//!    This pasta opens a namespace only by a mounted path, and a mount private to pasta dies
//!    with it: nothing is mounted on the host, and pasta dies with krunner, even by SIGKILL;
//! 3. pasta writes its PID file once the interface, routes and loopback are configured: the
//!    namespace is ready;
//! 4. the VM child joins it with setns(2) on `/proc/<krunner>/fd/<N>` before anything else.
//!
//! The namespace lives while the descriptor, pasta or the VM child holds it.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::prctl;
use nix::sys::signal::Signal;

use super::egress::{self, Allow};
use super::{JailError, Tools};

/// The keeper's hidden argv[1].
pub const PASTA_KEEPER: &str = "__pasta";
/// The mount point (in pasta's own mount namespace) in a run directory.
const NETNS_FILE: &str = "netns";
/// pasta's PID file in a run directory: written once the namespace is configured.
const PASTA_PID: &str = "pasta.pid";
/// pasta's log in a run directory (its startup errors are read from it).
const PASTA_LOG: &str = "pasta.log";
/// The keeper's own stderr (errors before pasta runs).
const KEEPER_ERR: &str = "pasta.err";
/// The keeper's CGROUP argument for a run without a cgroup.
const NO_CGROUP: &str = "-";
/// How long pasta may take to configure the namespace.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A live network namespace for one run, with its pasta. Dropped, pasta is killed and the
/// namespace goes once the VM child has gone too.
#[derive(Debug)]
pub struct NetJail {
    /// Keeps the namespace alive until pasta and the VM child hold it.
    ns: OwnedFd,
    /// `/proc/<krunner>/fd/<ns>`: what the VM child joins.
    path: PathBuf,
    /// pasta (the keeper, exec'd); killed on drop.
    pasta: tokio::process::Child,
}

impl NetJail {
    /// Makes the namespace for the run in `dir`: the rules for `allow` and `dns` (the
    /// guest's resolver, allowed on port 53), and pasta forwarding the allowed host loopback
    /// ports, in the run's cgroup `cgroup` if it has one. `exe` is the krunner binary (for the
    /// keeper).
    ///
    /// Call it from the run's own task, i.e. a runtime worker thread that lives as long as
    /// the runtime, never from `spawn_blocking`: the keeper's parent-death signal fires when
    /// the *thread* that forked it exits.
    pub async fn create(
        dir: &Path,
        exe: &Path,
        allow: &[Allow],
        dns: Option<IpAddr>,
        tools: &Tools,
        cgroup: Option<&Path>,
    ) -> Result<NetJail, JailError> {
        let rules = egress::ruleset(allow, dns, &egress::host_addresses());
        let nft = tools.nft.clone();
        let ns = tokio::task::spawn_blocking(move || make_namespace(&nft, &rules))
            .await
            .map_err(|e| JailError::io("make the network namespace")(std::io::Error::other(e)))??;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            ns.as_raw_fd()
        ));
        let ports = egress::loopback_ports(allow);
        let pasta = start_pasta(dir, exe, &path, &ports, tools, cgroup).await?;
        Ok(NetJail { ns, path, pasta })
    }

    /// The namespace the VM child joins (a `/proc/PID/fd/N` path of this process).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops pasta (SIGTERM, then SIGKILL after a second) and waits for it; the namespace
    /// goes with the last of this, pasta and the VM child.
    pub async fn shutdown(mut self) {
        if let Some(pid) = self.pasta.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGTERM);
            if tokio::time::timeout(Duration::from_secs(1), self.pasta.wait())
                .await
                .is_ok()
            {
                return;
            }
        }
        let _ = self.pasta.kill().await;
        drop(self.ns);
    }
}

/// Step 1 of the module docs, on a thread of its own; returns the namespace's descriptor.
fn make_namespace(nft: &Path, rules: &str) -> Result<OwnedFd, JailError> {
    let (nft, rules) = (nft.to_path_buf(), rules.to_string());
    let worker = std::thread::Builder::new()
        .name("krunner-netns".into())
        .spawn(move || -> Result<OwnedFd, JailError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|source| JailError::Sys {
                op: "unshare(CLONE_NEWNET)",
                source,
            })?;
            let ns = File::open("/proc/thread-self/ns/net")
                .map_err(JailError::io("open the new network namespace"))?;
            load_rules(&nft, &rules)?;
            Ok(OwnedFd::from(ns))
        })
        .map_err(JailError::io("start the namespace thread"))?;
    worker.join().unwrap_or_else(|_| {
        Err(JailError::io("make the network namespace")(
            std::io::Error::other("its thread panicked"),
        ))
    })
}

/// `nft -f -` with `rules` on stdin, in the calling thread's network namespace.
fn load_rules(nft: &Path, rules: &str) -> Result<(), JailError> {
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .env_clear()
        .spawn()
        .map_err(JailError::io(format!("run {}", nft.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(JailError::io("write the rules to nft"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(JailError::io("wait for nft"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(JailError::Tool {
        tool: "nft",
        status: out.status.to_string(),
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// pasta's arguments for the namespace mounted at `mountpoint`.
fn pasta_args(dir: &Path, mountpoint: &Path, ports: &[u16]) -> Vec<OsString> {
    let forward = if ports.is_empty() {
        "none".to_string()
    } else {
        let p: Vec<String> = ports.iter().map(u16::to_string).collect();
        p.join(",")
    };
    let mut a: Vec<OsString> = Vec::new();
    // As root pasta would switch to `nobody` and then fail to map it; it keeps only what it
    // needs (its own seccomp filter, no_new_privs) either way.
    if nix::unistd::geteuid().is_root() {
        a.extend(["--runas", "0"].map(OsString::from));
    }
    a.extend(["--foreground", "--quiet", "--config-net", "--netns"].map(OsString::from));
    a.push(mountpoint.into());
    // Nothing inbound: a guest's listener is never published on the host.
    a.extend(["-t", "none", "-u", "none"].map(OsString::from));
    // No UDP to the host's loopback, TCP only to the allowed ports.
    a.extend(["-U", "none", "-T"].map(OsString::from));
    a.push(forward.into());
    // With the gateway mapped, connecting to it reaches the host's whole loopback.
    a.push("--no-map-gw".into());
    a.push("--pid".into());
    a.push(dir.join(PASTA_PID).into());
    a.push("--log-file".into());
    a.push(dir.join(PASTA_LOG).into());
    a
}

/// Steps 2 and 3 of the module docs: the keeper, then pasta ready.
async fn start_pasta(
    dir: &Path,
    exe: &Path,
    netns: &Path,
    ports: &[u16],
    tools: &Tools,
    cgroup: Option<&Path>,
) -> Result<tokio::process::Child, JailError> {
    let mountpoint = dir.join(NETNS_FILE);
    let err_path = dir.join(KEEPER_ERR);
    let open = |p: &Path| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(p)
            .map_err(JailError::io(format!("create {}", p.display())))
    };
    drop(open(&mountpoint)?);
    let err_file = open(&err_path)?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(PASTA_KEEPER)
        .arg(std::process::id().to_string())
        .arg(cgroup.unwrap_or(Path::new(NO_CGROUP)))
        .arg(netns)
        .arg(&mountpoint)
        .arg(&tools.pasta)
        .args(pasta_args(dir, &mountpoint, ports))
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err_file)
        // Its own group: a terminal's Ctrl-C is krunner's to handle, and a draining guest
        // keeps its network.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(JailError::io(format!(
        "run {} {PASTA_KEEPER}",
        exe.display()
    )))?;
    let pid_file = dir.join(PASTA_PID);
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(JailError::Tool {
                tool: "pasta",
                status: status.to_string(),
                message: startup_errors(dir),
            });
        }
        if fs::metadata(&pid_file).is_ok_and(|m| m.len() > 0) {
            return Ok(child);
        }
        if start.elapsed() > READY_TIMEOUT {
            let _ = child.kill().await;
            return Err(JailError::Tool {
                tool: "pasta",
                status: format!("not ready after {} s", READY_TIMEOUT.as_secs()),
                message: startup_errors(dir),
            });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What the keeper and pasta said before failing.
fn startup_errors(dir: &Path) -> String {
    let logged = fs::read_to_string(dir.join(PASTA_LOG)).unwrap_or_default();
    let mut lines: Vec<String> = logged
        .lines()
        .filter_map(|l| l.split_once("ERROR:").map(|(_, m)| m.trim().to_string()))
        .collect();
    let keeper = fs::read_to_string(dir.join(KEEPER_ERR)).unwrap_or_default();
    lines.extend(
        keeper
            .lines()
            .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
            .map(str::to_string),
    );
    lines.dedup();
    let mut message = if lines.is_empty() {
        "no message".into()
    } else {
        lines.join("; ")
    };
    if message.contains("No external routable interface") {
        message.push_str(" (pasta copies the guest's addresses and routes from the host's interface with a default route, and this host has none: give it one, or run with --egress-policy open)");
    }
    message
}

/// Why the keeper could not exec pasta.
#[derive(Debug, thiserror::Error)]
enum KeeperError {
    #[error(
        "usage: krunner {PASTA_KEEPER} PARENT CGROUP NETNS MOUNTPOINT PASTA [ARGS…] (internal)"
    )]
    Usage,
    #[error("join the run's cgroup {0}")]
    Cgroup(PathBuf, #[source] std::io::Error),
    #[error("prctl(PR_SET_PDEATHSIG)")]
    DeathSignal(#[source] nix::Error),
    #[error("the krunner parent is gone")]
    ParentGone,
    #[error("{0}")]
    Sys(&'static str, #[source] nix::Error),
    #[error("exec {0}")]
    Exec(String, #[source] std::io::Error),
}

/// `krunner __pasta PARENT CGROUP NETNS MOUNTPOINT PASTA ARGS…` (CGROUP `-` for none): step 2
/// of the module docs. Returns only on failure, with the exit code.
pub fn keeper_main(args: &[OsString]) -> i32 {
    match keep(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("krunner {PASTA_KEEPER}: {}", crate::error_chain(&e));
            125
        }
    }
}

fn keep(args: &[OsString]) -> Result<std::convert::Infallible, KeeperError> {
    let [parent, cgroup, netns, mountpoint, pasta, rest @ ..] = args else {
        return Err(KeeperError::Usage);
    };
    let parent: i32 = parent
        .to_str()
        .and_then(|s| s.parse().ok())
        .ok_or(KeeperError::Usage)?;
    // Survives the exec (pasta is neither setuid nor file-capable, and as root it does not
    // change its user IDs): pasta dies with krunner, however krunner dies.
    prctl::set_pdeathsig(Signal::SIGKILL).map_err(KeeperError::DeathSignal)?;
    if nix::unistd::getppid().as_raw() != parent {
        return Err(KeeperError::ParentGone);
    }
    // Before pasta allocates anything: memory is charged to the cgroup that first touches it.
    if cgroup != NO_CGROUP {
        let procs = Path::new(cgroup).join("cgroup.procs");
        // "0" is the writing process itself.
        fs::write(&procs, "0").map_err(|e| KeeperError::Cgroup(PathBuf::from(cgroup), e))?;
    }
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| KeeperError::Sys("unshare(CLONE_NEWNS)", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| KeeperError::Sys("make / private", e))?;
    mount(
        Some(Path::new(netns)),
        Path::new(mountpoint),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| KeeperError::Sys("bind-mount the network namespace", e))?;
    let e = Command::new(pasta).args(rest).exec();
    Err(KeeperError::Exec(
        OsStr::new(pasta).to_string_lossy().into_owned(),
        e,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasta_forwards_only_the_allowed_loopback_ports_and_nothing_inbound() {
        let a = pasta_args(Path::new("/r"), Path::new("/r/netns"), &[53, 8080]);
        let a: Vec<String> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
        let after = |flag: &str| {
            let i = a.iter().position(|x| x == flag).unwrap();
            a[i + 1].clone()
        };
        assert_eq!(after("-t"), "none");
        assert_eq!(after("-u"), "none");
        assert_eq!(after("-U"), "none");
        assert_eq!(after("-T"), "53,8080");
        assert_eq!(after("--netns"), "/r/netns");
        assert_eq!(after("--pid"), "/r/pasta.pid");
        assert!(a.contains(&"--no-map-gw".to_string()));
        assert!(a.contains(&"--foreground".to_string()));
        let none = pasta_args(Path::new("/r"), Path::new("/r/netns"), &[]);
        assert!(none.windows(2).any(|w| w[0] == "-T" && w[1] == "none"));
    }

    #[test]
    fn the_keeper_refuses_bad_arguments() {
        assert!(matches!(keep(&[]), Err(KeeperError::Usage)));
        let args: Vec<OsString> = ["1", "-", "/n", "/m"].map(OsString::from).to_vec();
        assert!(matches!(keep(&args), Err(KeeperError::Usage)), "no pasta");
        let args: Vec<OsString> = ["x", "-", "/n", "/m", "/p"].map(OsString::from).to_vec();
        assert!(
            matches!(keep(&args), Err(KeeperError::Usage)),
            "no parent pid"
        );
    }
}

//! The VM child from spawn to its end: spawned with a clean environment in its own process
//! group, its output drained (under krun through a pipe of ours, watched for libkrun's
//! `KVM_EXIT_INTERNAL_ERROR`), stopped on request or at the end of its lifetime, and waited
//! for until nothing of its process group is left.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::task::JoinHandle;

use super::run::{LaunchError, Output, RunRequest, VmExit};
use super::{Backend, KRUN_CHILD, NS_CHILD};
use crate::image::Cancel;

/// A running VM child and the tasks draining its output.
pub(super) struct VmChild {
    child: tokio::process::Child,
    pid: Option<i32>,
    /// Copies the output pipe on (krun); says whether it saw `KVM_EXIT_INTERNAL_ERROR`.
    tee_task: Option<JoinHandle<bool>>,
    /// Captures stdout ([`Output::Capture`]).
    out_task: Option<JoinHandle<Vec<u8>>>,
    /// Captures stderr ([`Output::Capture`]).
    err_task: Option<JoinHandle<Vec<u8>>>,
}

/// What the VM child wrote, read once it has ended.
pub(super) struct ChildOutput {
    /// Captured stdout and stderr ([`Output::Capture`]).
    pub(super) captured: Option<(Vec<u8>, Vec<u8>)>,
    /// libkrun reported `KVM_EXIT_INTERNAL_ERROR`.
    pub(super) kvm_internal_error: bool,
}

/// The read end of the output pipe and where the tee task copies it to.
type Tee = (tokio::net::unix::pipe::Receiver, Box<dyn TeeSink>);

/// Spawns `exe __<backend>-child SPEC` for `req` and starts draining its output.
///
/// Call it from the run's async task, i.e. from a runtime worker thread that lives as long as
/// the runtime, never from `spawn_blocking`: PR_SET_PDEATHSIG fires when the *thread* that
/// forked the child exits.
pub(super) fn spawn(
    exe: &Path,
    req: &RunRequest,
    spec_path: &Path,
    run_id: &str,
) -> Result<VmChild, LaunchError> {
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(match req.backend {
        Backend::Krun => KRUN_CHILD,
        Backend::Namespace => NS_CHILD,
    })
    .arg(spec_path)
    // Nothing of krunner's environment (which may hold a token) reaches the child.
    .env_clear()
    .stdin(Stdio::null())
    // Its own process group: a terminal's Ctrl-C reaches krunner, which decides.
    .process_group(0)
    .kill_on_drop(true);
    if let Some(dir) = &req.libkrunfw_dir {
        cmd.env("LD_LIBRARY_PATH", dir);
    }
    let tee = connect_output(&mut cmd, &req.output, req.backend, run_id)?;
    let spawned = cmd.spawn();
    // The Command keeps its copies of the pipe's write end: drop them, or the tee task
    // would never see the end of the output.
    drop(cmd);
    let mut child = spawned.map_err(LaunchError::io(run_id, "spawn the VM child"))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    tracing::debug!(run = %run_id, backend = ?req.backend, pid, "VM child started");

    // Drain output concurrently so a chatty guest cannot block on a full pipe.
    let tee_task = tee.map(|(r, sink)| tokio::spawn(tee_output(r, sink)));
    let out_task = child.stdout.take().map(|s| tokio::spawn(read_all(s)));
    let err_task = child.stderr.take().map(|s| tokio::spawn(read_all(s)));
    Ok(VmChild {
        child,
        pid,
        tee_task,
        out_task,
        err_task,
    })
}

/// Points the child's stdout and stderr where `output` says; returns the output pipe for the
/// tee task when there is one.
///
/// Under krun the child's stderr (and for a log file also its stdout and the guest console)
/// passes through a pipe to a task of ours that copies it on and watches for libkrun's
/// KVM_EXIT_INTERNAL_ERROR line. Under namespaces the guest writes to the terminal or the log
/// directly.
fn connect_output(
    cmd: &mut tokio::process::Command,
    output: &Output,
    backend: Backend,
    run_id: &str,
) -> Result<Option<Tee>, LaunchError> {
    let pipe_err = || LaunchError::io(run_id, "create the output pipe");
    match (output, backend) {
        (Output::Inherit, Backend::Namespace) => {
            cmd.stdout(Stdio::inherit()).stderr(Stdio::inherit());
            Ok(None)
        }
        (Output::Inherit, Backend::Krun) => {
            let (r, w) = output_pipe().map_err(pipe_err())?;
            cmd.stdout(Stdio::inherit()).stderr(w);
            Ok(Some((r, Box::new(tokio::io::stderr()))))
        }
        (Output::File(p), backend) => {
            let log_err = || LaunchError::io(run_id, format!("open log {}", p.display()));
            // A job's log may hold what its steps print: readable by krunner's user alone.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(p)
                .map_err(log_err())?;
            if backend == Backend::Krun {
                let (r, w) = output_pipe().map_err(pipe_err())?;
                let w2 = w.try_clone().map_err(pipe_err())?;
                cmd.stdout(w).stderr(w2);
                Ok(Some((r, Box::new(tokio::fs::File::from_std(f)))))
            } else {
                let f2 = f.try_clone().map_err(log_err())?;
                cmd.stdout(f).stderr(f2);
                Ok(None)
            }
        }
        (Output::Capture, _) => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            Ok(None)
        }
    }
}

/// Reads `from` to its end (errors end it early).
async fn read_all<R: tokio::io::AsyncRead + Unpin>(mut from: R) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut from, &mut v).await;
    v
}

impl VmChild {
    /// Waits until the child ends, stopping it `how` when `max_lifetime` passes or `stop` is
    /// asked, then until its process group is empty; returns how the run ended.
    pub(super) async fn wait(
        &mut self,
        max_lifetime: Option<Duration>,
        stop: &Cancel,
        how: &StopHow,
        run_id: &str,
    ) -> Result<VmExit, LaunchError> {
        let lifetime = async {
            match max_lifetime {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let (child, pid) = (&mut self.child, self.pid);
        let mut stopped_by_us = None;
        let status = tokio::select! {
            s = child.wait() => s,
            _ = lifetime => { stopped_by_us = Some(VmExit::LifetimeExceeded); stop_child(child, pid, how).await }
            _ = stop.cancelled() => { stopped_by_us = Some(VmExit::Stopped); stop_child(child, pid, how).await }
        }
        .map_err(LaunchError::io(run_id, "wait for the VM child"))?;
        // The child is reaped, but what it started may still be dying (its PID 1 and the
        // guest after a SIGKILL): wait until its process group is empty, so "the run ended"
        // means nothing of it is left.
        if let Some(p) = pid {
            wait_group_gone(p, Duration::from_secs(10)).await;
        }
        Ok(match stopped_by_us {
            Some(e) => e,
            None => match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => VmExit::Exited(c),
                (None, Some(s)) => VmExit::Signaled(s),
                (None, None) => VmExit::Exited(1),
            },
        })
    }

    /// Collects what the ended child wrote: the captured output, and whether libkrun
    /// reported `KVM_EXIT_INTERNAL_ERROR`.
    pub(super) async fn output(self, run_id: &str) -> ChildOutput {
        let captured = match (self.out_task, self.err_task) {
            (Some(o), Some(e)) => Some((
                finish_task(o, run_id).await.unwrap_or_default(),
                finish_task(e, run_id).await.unwrap_or_default(),
            )),
            _ => None,
        };
        let kvm_internal_error = match (self.tee_task, &captured) {
            (Some(t), _) => finish_task(t, run_id).await.unwrap_or(false),
            (None, Some((_, err))) => mentions_kvm_internal_error(err),
            (None, None) => false,
        };
        ChildOutput {
            captured,
            kvm_internal_error,
        }
    }
}

/// How a run is stopped.
pub(super) struct StopHow {
    /// How long the guest may take to end by itself.
    grace: Duration,
    /// Created first, when the run has a control share: the agent stops the runner.
    stop_file: Option<PathBuf>,
    /// Send SIGTERM to the VM child (namespace backend: it reaches the agent).
    term_first: bool,
}

impl StopHow {
    /// How to stop `req`'s run, whose control share (runner runs) is `control_dir`.
    pub(super) fn for_run(req: &RunRequest, control_dir: Option<&Path>) -> StopHow {
        StopHow {
            grace: req.stop_grace,
            stop_file: control_dir.map(|d| d.join("stop")),
            // libkrun's VMM does not turn SIGTERM into anything the guest sees: it dies at
            // once and takes the guest with it. So under krun a runner run is asked through
            // the stop file (the agent's watcher stops the runner, which can tell GitHub) and
            // gets no SIGTERM; a command run has no such watcher, so SIGTERM ends it at once
            // rather than after a useless grace period. Under namespaces SIGTERM reaches the
            // agent, which forwards it.
            term_first: req.backend == Backend::Namespace || control_dir.is_none(),
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

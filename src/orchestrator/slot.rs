//! One slot: a loop of ephemeral runners, one guest each.
//!
//! Each turn: wait for a boot permit → register (JIT config, or a registration token) →
//! launch the guest with the registration in its secrets share → wait, while a drain watcher
//! and an online watcher stand by → hand the registration to the deletion queue (a runner
//! that ran a job has already been removed by GitHub; deleting an unknown runner counts as
//! done) → prune old run logs → next. Names are `{prefix}-{slot}-{seq}`, with `seq` counting
//! this slot's registrations on from the highest one in use at start, so no two runners share
//! a name, across restarts too. A failed registration asks for the same name again (its answer
//! may have been lost); a name held by a runner that is in use or not ours is skipped.
//!
//! A turn fails on a GitHub error, a launch error, a runner not online within
//! `online_timeout`, or a guest that did not exit 0; failures back off ([`super::backoff`])
//! and `max_failures` in a row stop the slot with the last error.
//! On a drain request the slot starts nothing new; its watcher stops the guest at once if
//! GitHub says the runner is not busy, otherwise after the drain timeout or a forced stop.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::backoff::{Backoff, Verdict};
use super::deleter::{Deleter, Target};
use super::state::SlotSink;
use super::{OrchestratorError, PoolConfig, RegistrationMode, Shutdown};
use crate::github::{runner_name, GitHub, GitHubError, JitRequest, RunnerId};
use crate::guest::{Registration, RunnerJob};
use crate::image::Cancel;
use crate::launcher::run::{
    LaunchError, Launcher, Output, RunOutcome, RunRequest, VmExit, Workload,
};

/// Why a slot stopped.
#[derive(Debug)]
pub enum SlotStop {
    /// It did its `repeat` runs.
    Done,
    /// A shutdown was requested.
    Shutdown,
    /// It failed `max_failures` times in a row; the last error.
    Failed(OrchestratorError),
}

/// What a slot did.
#[derive(Debug)]
pub struct SlotReport {
    /// The slot's index.
    pub index: usize,
    /// Runs that ended well.
    pub runs: u64,
    /// Failed turns, in total.
    pub failures: u64,
    /// Why it stopped.
    pub stop: SlotStop,
}

/// One slot's loop and what it shares with the others.
pub(crate) struct Slot {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<PoolConfig>,
    pub(crate) github: GitHub,
    pub(crate) launcher: Launcher,
    pub(crate) boots: Arc<Semaphore>,
    pub(crate) shutdown: Shutdown,
    /// Where transitions are reported (`krunner status`, metrics).
    pub(crate) sink: SlotSink,
    /// The instance's deletion queue.
    pub(crate) deleter: Deleter,
}

/// How a turn ended, when it did not fail.
enum TurnEnd {
    /// The runner ran and exited 0.
    Finished,
    /// Shutdown: stopped before or during the run.
    Stopped,
}

/// A registration this slot holds.
struct Held {
    name: String,
    /// Known for JIT; for token registration the runner is found by name.
    id: Option<RunnerId>,
    registration: Registration,
}

impl Slot {
    /// Runs the loop after `delay` (the staggered start) and reports how it ended.
    pub(crate) async fn run(self, delay: Duration) -> SlotReport {
        let mut report = SlotReport {
            index: self.index,
            runs: 0,
            failures: 0,
            stop: SlotStop::Shutdown,
        };
        if !self.sleep_unless_drained(delay).await {
            self.sink.stopped();
            return report;
        }
        let mut backoff = Backoff::new(self.cfg.backoff.clone());
        let mut seq = self.cfg.seq_floor.get(&self.index).copied().unwrap_or(0);
        // Set after a failed registration: its answer may have been lost after GitHub made it,
        // so the next turn asks for the same name, whose "already exists" removes that
        // registration, instead of leaving it behind next to a new one.
        let mut same_name = false;
        loop {
            if self.shutdown.requested() {
                report.stop = SlotStop::Shutdown;
                break;
            }
            if self.cfg.repeat > 0 && report.runs >= self.cfg.repeat {
                report.stop = SlotStop::Done;
                break;
            }
            if !same_name {
                seq += 1;
            }
            let turn = self.turn(seq).await;
            same_name = retry_same_name(&turn);
            match turn {
                Ok(TurnEnd::Finished) => {
                    self.sink.succeeded();
                    report.runs += 1;
                    backoff.success();
                }
                Ok(TurnEnd::Stopped) => {}
                Err(e) => {
                    self.sink.failed(&e);
                    report.failures += 1;
                    match backoff.failure() {
                        Verdict::GiveUp => {
                            tracing::error!(
                                slot = self.index,
                                "{}; stopping this slot after {} failures in a row",
                                crate::error_chain(&e),
                                backoff.failures()
                            );
                            report.stop = SlotStop::Failed(e);
                            break;
                        }
                        Verdict::Retry(wait) => {
                            self.sink.backing_off();
                            tracing::warn!(
                                slot = self.index,
                                "{}; retrying in {:.1} s (failure {} in a row)",
                                crate::error_chain(&e),
                                wait.as_secs_f64(),
                                backoff.failures()
                            );
                            if !self.sleep_unless_drained(wait).await {
                                report.stop = SlotStop::Shutdown;
                                break;
                            }
                        }
                    }
                }
            }
        }
        self.sink.stopped();
        tracing::debug!(slot = self.index, runs = report.runs, "slot stopped");
        report
    }

    /// One registration and one guest.
    async fn turn(&self, seq: u64) -> Result<TurnEnd, OrchestratorError> {
        let name = runner_name(&self.cfg.name_prefix, self.index, seq);
        self.sink.registering(&name);
        let Some(permit) = self.boot_permit().await? else {
            return Ok(TurnEnd::Stopped);
        };
        tracing::debug!(slot = self.index, runner = %name, "registering");
        let held = match self.register(&name).await {
            Ok(h) => h,
            // Gave up waiting because of the shutdown; a registration that got through
            // unanswered is removed by the next start's reconcile.
            Err(e) if self.shutdown.requested() => {
                tracing::info!(slot = self.index, runner = %name, "shutdown: registration abandoned: {}", crate::error_chain(&e));
                return Ok(TurnEnd::Stopped);
            }
            Err(e) => return Err(e),
        };
        self.sink.registered(held.id);
        if self.shutdown.requested() {
            // The request came while registering: undo it instead of booting.
            self.deregister(&held);
            return Ok(TurnEnd::Stopped);
        }
        let log = self.log_path(&name);
        let req = self.request(&held, &log);
        let vm_stop = Cancel::default();
        let watch = Watch {
            github: self.github.clone(),
            slot: self.index,
            name: held.name.clone(),
            id: held.id,
            label: self.cfg.instance_label.clone(),
            vm_stop: vm_stop.clone(),
        };
        let timed_out = Arc::new(AtomicBool::new(false));
        let watchers = [
            tokio::spawn(
                watch
                    .clone()
                    .drain(self.shutdown.clone(), self.cfg.drain_timeout),
            ),
            tokio::spawn(watch.online(self.cfg.online_timeout, timed_out.clone())),
        ];
        self.sink.booting();
        tracing::info!(slot = self.index, runner = %name, log = %log.display(), "starting runner");
        let outcome = self.launch(&req, &vm_stop, permit).await;
        for w in watchers {
            w.abort();
        }
        self.sink.vm_ended(
            outcome
                .as_ref()
                .ok()
                .and_then(|o| o.guest_result.as_ref())
                .and_then(|r| r.runner_started),
        );
        self.deregister(&held);
        prune_logs(&self.cfg.log_dir, &self.cfg.name_prefix, self.cfg.keep_logs);
        if timed_out.load(Ordering::SeqCst) {
            return Err(OrchestratorError::OnlineTimeout {
                slot: self.index,
                runner: name,
                after: self.cfg.online_timeout,
                log: log.display().to_string(),
            });
        }
        self.judge(name, &log, outcome)
    }

    /// A boot permit; `None` if a drain was requested first.
    async fn boot_permit(&self) -> Result<Option<OwnedSemaphorePermit>, OrchestratorError> {
        tokio::select! {
            p = self.boots.clone().acquire_owned() => p.map(Some).map_err(|e| OrchestratorError::Task {
                slot: self.index,
                reason: format!("boot semaphore: {e}"),
            }),
            _ = self.shutdown.drain.cancelled() => Ok(None),
        }
    }

    /// The run request for `held`'s guest, logging to `log`.
    fn request(&self, held: &Held, log: &Path) -> RunRequest {
        let mut req = self.cfg.template.clone();
        let (runner_root, layer) = self.cfg.runner.for_next_guest();
        req.runner = layer;
        req.workload = Workload::Runner(RunnerJob {
            registration: held.registration.clone(),
            work: "_work".into(),
            user: "runner".into(),
            root: runner_root,
        });
        req.output = Output::File(log.to_path_buf());
        req.hostname = held.name.clone();
        req
    }

    /// Runs the guest; the boot permit is released after the boot window or at its end.
    async fn launch(
        &self,
        req: &RunRequest,
        vm_stop: &Cancel,
        permit: OwnedSemaphorePermit,
    ) -> Result<RunOutcome, LaunchError> {
        let run = self.launcher.run(req, vm_stop);
        tokio::pin!(run);
        let window = tokio::time::sleep(self.cfg.boot_window);
        tokio::pin!(window);
        let mut permit = Some(permit);
        loop {
            tokio::select! {
                o = &mut run => break o,
                _ = &mut window, if permit.is_some() => permit = None,
            }
        }
    }

    /// How the turn ended, from the guest's outcome.
    // The same error type as every turn's (async, so not linted there); built once per turn.
    #[allow(clippy::result_large_err)]
    fn judge(
        &self,
        name: String,
        log: &Path,
        outcome: Result<RunOutcome, LaunchError>,
    ) -> Result<TurnEnd, OrchestratorError> {
        let outcome = outcome.map_err(|source| OrchestratorError::Launch {
            slot: self.index,
            runner: name.clone(),
            source,
        })?;
        match ending(&outcome) {
            Ending::Finished { runner_started } => {
                tracing::info!(slot = self.index, runner = %name, runner_started, "runner finished");
                Ok(TurnEnd::Finished)
            }
            Ending::Stopped => {
                tracing::info!(slot = self.index, runner = %name, "runner stopped");
                Ok(TurnEnd::Stopped)
            }
            Ending::Failed(how) => Err(OrchestratorError::Guest {
                slot: self.index,
                runner: name,
                how: format!("{how} (log: {})", log.display()),
            }),
        }
    }

    /// Registers runner `name`; gives up waiting for GitHub once a drain is requested.
    async fn register(&self, name: &str) -> Result<Held, OrchestratorError> {
        let gh = |op: String| {
            let slot = self.index;
            move |source| OrchestratorError::GitHub { slot, op, source }
        };
        let github = self.github.hurry_on(&self.shutdown.drain);
        match &self.cfg.registration {
            RegistrationMode::Jit => {
                let jit = github
                    .generate_jit_config(&JitRequest {
                        name: name.to_string(),
                        runner_group_id: self.cfg.runner_group,
                        labels: self.cfg.labels.clone(),
                        instance_label: self.cfg.instance_label.clone(),
                        work_folder: "_work".into(),
                    })
                    .await
                    .map_err(gh(format!("registering runner {name}")))?;
                Ok(Held {
                    name: name.to_string(),
                    id: Some(jit.runner.id),
                    registration: Registration::Jit(jit.encoded_jit_config),
                })
            }
            RegistrationMode::Token { web_url, group } => {
                let token = github
                    .registration_token()
                    .await
                    .map_err(gh(format!("getting a registration token for {name}")))?;
                Ok(Held {
                    name: name.to_string(),
                    id: None,
                    registration: Registration::Token {
                        token: token.token,
                        url: web_url.clone(),
                        name: name.to_string(),
                        labels: self.cfg.labels.clone(),
                        group: group.clone(),
                    },
                })
            }
        }
    }

    /// Hands the registration to the deletion queue (a runner that ran its job is gone
    /// already; the queue counts that as deleted).
    fn deregister(&self, held: &Held) {
        self.deleter.delete(Target {
            name: held.name.clone(),
            id: held.id,
        });
    }

    /// The log file of one run: `{log_dir}/{runner}-{unix seconds}.log`.
    fn log_path(&self, name: &str) -> PathBuf {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.cfg.log_dir.join(format!("{name}-{secs}.log"))
    }

    /// Sleeps `d`; false if a drain was requested first.
    async fn sleep_unless_drained(&self, d: Duration) -> bool {
        if d.is_zero() {
            return !self.shutdown.requested();
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.shutdown.requested(),
            _ = self.shutdown.drain.cancelled() => false,
        }
    }
}

/// Whether the next turn asks for the same name: after a failed registration (its answer
/// may have been lost after GitHub made it, and the name's "already exists" then removes
/// that registration instead of leaving it next to a new one), but not when the name is held
/// by a runner in use or someone else's: that one is skipped.
fn retry_same_name(turn: &Result<TurnEnd, OrchestratorError>) -> bool {
    matches!(
        turn,
        Err(OrchestratorError::GitHub { source, .. })
            if !matches!(source, GitHubError::NameConflict { .. })
    )
}

/// What the watchers of one guest share.
#[derive(Clone)]
struct Watch {
    github: GitHub,
    slot: usize,
    name: String,
    /// Known for JIT; token registrations are found by name and instance label.
    id: Option<RunnerId>,
    label: String,
    vm_stop: Cancel,
}

/// What GitHub says about a watched runner.
enum Seen {
    /// Online or busy.
    Up {
        /// Running a job.
        busy: bool,
    },
    /// Registered, offline and idle.
    Down,
    /// Not registered.
    Gone,
}

impl Watch {
    /// The runner's state on GitHub.
    async fn lookup(&self) -> Result<Seen, GitHubError> {
        let runner = match self.id {
            Some(id) => self.github.get_runner(id).await?,
            None => self.github.find_runner(&self.name, &self.label).await?,
        };
        Ok(match runner {
            Some(r) if r.busy || r.is_online() => Seen::Up { busy: r.busy },
            Some(_) => Seen::Down,
            None => Seen::Gone,
        })
    }

    /// Waits for a drain request, then stops the guest: at once if its runner is not busy,
    /// otherwise after `timeout` or a forced shutdown, whichever comes first.
    async fn drain(self, shutdown: Shutdown, timeout: Duration) {
        let (slot, name) = (self.slot, &self.name);
        shutdown.drain.cancelled().await;
        let busy = tokio::select! {
            b = self.lookup() => b.map(|s| matches!(s, Seen::Up { busy: true })),
            _ = shutdown.force.cancelled() => Ok(true),
        };
        let busy = busy.unwrap_or_else(|e| {
            // Unknown: treat it as busy, so a job is not killed because the API hiccupped.
            tracing::warn!(slot, runner = %name, "cannot tell whether the runner is busy: {}", crate::error_chain(&e));
            true
        });
        if !busy {
            tracing::info!(slot, runner = %name, "shutdown: stopping the idle runner");
            self.vm_stop.cancel();
            return;
        }
        if !shutdown.force.is_cancelled() {
            tracing::info!(
                slot,
                runner = %name,
                "shutdown: the runner is busy; letting it finish (at most {} s; signal again to force)",
                timeout.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(timeout) => {
                    tracing::warn!(slot, runner = %name, "drain timeout: stopping the busy runner");
                }
                _ = shutdown.force.cancelled() => {}
            }
        }
        tracing::info!(slot, runner = %name, "stopping the runner");
        self.vm_stop.cancel();
    }

    /// After `timeout`, asks GitHub once whether the runner came online; if it did not, sets
    /// `timed_out` and stops the guest. One call per guest, and only for guests that live
    /// that long. A JIT runner that is gone ran its job (GitHub removed it); a token runner
    /// that is not found never registered. If GitHub cannot say, asks again later rather than
    /// stopping a runner that may be working.
    async fn online(self, timeout: Duration, timed_out: Arc<AtomicBool>) {
        tokio::time::sleep(timeout).await;
        loop {
            match self.lookup().await {
                Ok(Seen::Up { .. }) => return,
                Ok(Seen::Gone) if self.id.is_some() => return,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(slot = self.slot, runner = %self.name, "cannot tell whether the runner came online: {}", crate::error_chain(&e));
                    tokio::time::sleep(ONLINE_RECHECK).await;
                }
            }
        }
        tracing::warn!(
            slot = self.slot,
            runner = %self.name,
            "the runner did not come online within {} s; stopping its guest",
            timeout.as_secs()
        );
        timed_out.store(true, Ordering::SeqCst);
        self.vm_stop.cancel();
    }
}

/// How long to wait before asking again whether a runner came online, after GitHub failed to
/// answer.
const ONLINE_RECHECK: Duration = Duration::from_secs(30);

/// Keeps the `keep` newest run logs of the instance with `prefix` in `dir`; best effort
/// (slots prune concurrently). Other instances may share the directory: only names of the
/// form the slots write for this prefix, `{prefix}-{slot}-{seq}-{secs}.log`, count.
pub fn prune_logs(dir: &Path, prefix: &str, keep: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut logs: Vec<(SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| is_log_of(&e.file_name().to_string_lossy(), prefix))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if logs.len() <= keep {
        return;
    }
    logs.sort();
    let excess = logs.len() - keep;
    for (_, p) in logs.into_iter().take(excess) {
        let _ = std::fs::remove_file(p);
    }
}

/// Whether `file` is `{prefix}-{slot}-{seq}-{secs}.log`: exactly three numbers after the
/// prefix, so prefix `a` does not claim the logs of prefix `a-1` (`a-1-0-1-…`).
fn is_log_of(file: &str, prefix: &str) -> bool {
    let Some(rest) = file
        .strip_suffix(".log")
        .and_then(|s| s.strip_prefix(prefix))
        .and_then(|s| s.strip_prefix('-'))
    else {
        return false;
    };
    let parts: Vec<&str> = rest.split('-').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// How a runner's guest ended, as the slot judges it.
#[derive(Debug, PartialEq)]
enum Ending {
    /// Exit 0 with the agent's result; whether the runner got to start.
    Finished { runner_started: bool },
    /// krunner stopped it on request.
    Stopped,
    /// Anything else, said for the log.
    Failed(String),
}

/// Judges a runner guest's outcome. Exit 0 without the agent's result is a failure: the
/// agent writes one on every path, so the guest ended before the agent was done (it crashed
/// or never booted), and a slot must back off rather than register runner after runner.
fn ending(outcome: &RunOutcome) -> Ending {
    match (&outcome.exit, &outcome.guest_result) {
        (VmExit::Exited(0), Some(r)) => Ending::Finished {
            runner_started: r.runner_started.is_some(),
        },
        (VmExit::Exited(0), None) => Ending::Failed(
            "exited 0 without the agent's result: the guest ended before its agent was done"
                .to_string(),
        ),
        (VmExit::Stopped, _) => Ending::Stopped,
        _ if outcome.kvm_internal_error => Ending::Failed(format!(
            "{}; {}",
            outcome.describe_exit(),
            crate::doctor::KVM_INTERNAL_ERROR_HELP
        )),
        _ => Ending::Failed(outcome.describe_exit()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest::GuestResult;

    fn outcome(exit: VmExit, result: Option<GuestResult>) -> RunOutcome {
        RunOutcome {
            run_id: "r".into(),
            exit,
            events: Vec::new(),
            captured: None,
            timings: Default::default(),
            guest_result: result,
            kvm_internal_error: false,
            out_of_memory: None,
        }
    }

    #[test]
    fn a_guest_ends_well_only_with_the_agents_result() {
        let result = |runner_started| GuestResult {
            exit_code: 0,
            started: 1,
            runner_started,
            ended: 2,
        };
        assert_eq!(
            ending(&outcome(VmExit::Exited(0), Some(result(Some(1))))),
            Ending::Finished {
                runner_started: true
            }
        );
        assert_eq!(
            ending(&outcome(VmExit::Exited(0), Some(result(None)))),
            Ending::Finished {
                runner_started: false
            }
        );
        let Ending::Failed(how) = ending(&outcome(VmExit::Exited(0), None)) else {
            panic!("exit 0 without a result is a failure");
        };
        assert!(how.contains("without the agent's result"), "{how}");
        assert_eq!(ending(&outcome(VmExit::Stopped, None)), Ending::Stopped);
        let Ending::Failed(how) = ending(&outcome(VmExit::Exited(3), Some(result(Some(1))))) else {
            panic!("exit 3 is a failure");
        };
        assert!(how.contains('3'), "{how}");
        let mut kvm = outcome(VmExit::Exited(1), None);
        kvm.kvm_internal_error = true;
        let Ending::Failed(how) = ending(&kvm) else {
            panic!("a KVM internal error is a failure");
        };
        assert!(
            how.contains(crate::doctor::KVM_INTERNAL_ERROR_HELP),
            "{how}"
        );
    }

    #[test]
    fn prune_keeps_the_newest_logs_of_this_instance_only() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, age: u64| {
            let p = dir.path().join(name);
            std::fs::write(&p, "x").unwrap();
            let t = UNIX_EPOCH + Duration::from_secs(1_000_000 + age);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        };
        for i in 0..5 {
            write(&format!("r-0-{i}-{}.log", 1_000 + i), i);
        }
        // Older logs of other instances sharing the directory, and other files.
        write("r-1-0-1-900.log", 0);
        write("other-0-1-900.log", 0);
        write("r-x-0-1-900.log", 0);
        write("r-0-1.log", 0);
        std::fs::write(dir.path().join("other.txt"), "y").unwrap();
        prune_logs(dir.path(), "r", 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![
                "other-0-1-900.log",
                "other.txt",
                "r-0-1.log",
                "r-0-3-1003.log",
                "r-0-4-1004.log",
                "r-1-0-1-900.log",
                "r-x-0-1-900.log",
            ]
        );
    }
}

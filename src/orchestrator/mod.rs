//! The pool behind `krunner run`: N slots, each a loop of ephemeral runners in fresh guests.
//!
//! [`Pool::run`] starts one task per slot ([`slot`]) with a staggered start (slot `i` begins
//! `i * stagger` after the first) and shares one semaphore that caps how many guests boot at
//! once, so `-n 16` does not stampede the API or the host. A slot's loop is: register (JIT) →
//! launch → wait → read the result → delete the registration if the runner left it behind →
//! next, `repeat` times (0: forever). Failures back off per slot ([`backoff`]); a slot that
//! fails `max_failures` times in a row stops with its error.
//!
//! Shutdown is two-staged through [`Shutdown`]: the first request (SIGINT/SIGTERM) starts no
//! new guest, stops idle runners at once and lets busy ones finish up to the drain timeout;
//! the second forces every guest to stop. Registrations to delete go to the instance's
//! [`deleter`] queue, which retries until each is gone or its deadline passes; the pool waits
//! for it before returning (after a forced stop, for [`deleter::FORCE_WINDOW`] at most) and
//! reports what is left for the next start's reconcile.
//!
//! A guest whose runner is not online `online_timeout` after the start is stopped, and the
//! turn fails (so the slot backs off) instead of holding the slot forever.
//!
//! Each slot reports its transitions through a [`state::SlotSink`]; the [`state::Reporter`]
//! behind them writes the state file `krunner status` reads and feeds the metrics.

pub mod backoff;
pub mod budget;
pub mod deleter;
pub mod identity;
pub mod pools;
pub mod scaleset;
pub mod slot;
pub mod state;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::github::{GitHub, GitHubError, RunnerGroupId};
use crate::image::Cancel;
use crate::launcher::run::{Launcher, RunRequest};

pub use backoff::{Backoff, BackoffPolicy, Verdict};
pub use slot::{SlotReport, SlotStop};

/// What can stop a slot.
#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    /// A GitHub call failed.
    #[error("slot {slot}: {op}")]
    GitHub {
        /// The slot.
        slot: usize,
        /// What was being done (names the runner).
        op: String,
        /// Why.
        #[source]
        source: GitHubError,
    },
    /// The guest could not be launched.
    #[error("slot {slot}: launching runner {runner}")]
    Launch {
        /// The slot.
        slot: usize,
        /// The runner's name.
        runner: String,
        /// Why.
        #[source]
        source: crate::launcher::run::LaunchError,
    },
    /// The guest ran but did not end well.
    #[error("slot {slot}: runner {runner}: the guest {how}")]
    Guest {
        /// The slot.
        slot: usize,
        /// The runner's name.
        runner: String,
        /// How it ended.
        how: String,
    },
    /// The runner did not come online in time; its guest was stopped.
    #[error("slot {slot}: runner {runner} did not come online within {} s; stopped its guest (log: {log})", .after.as_secs())]
    OnlineTimeout {
        /// The slot.
        slot: usize,
        /// The runner's name.
        runner: String,
        /// The timeout.
        after: Duration,
        /// The run's log.
        log: String,
    },
    /// A slot task panicked or was lost.
    #[error("slot {slot}: its task ended abnormally: {reason}")]
    Task {
        /// The slot.
        slot: usize,
        /// The join error.
        reason: String,
    },
}

/// How runners register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrationMode {
    /// A just-in-time configuration per runner (the default).
    Jit,
    /// A registration token and `config.sh` (servers without JIT); `web_url` is the scope's
    /// web address the runner registers with (`https://github.com/OWNER[/REPO]`, …).
    Token {
        /// The scope's web address.
        web_url: String,
        /// The runner group name (org and enterprise scope).
        group: Option<String>,
    },
}

/// Everything a pool needs besides the GitHub client and the launcher.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Number of slots (`-n`).
    pub slots: usize,
    /// Runs per slot; 0: forever (`-r`).
    pub repeat: u64,
    /// Runner name prefix; names are `{prefix}-{slot}-{seq}`.
    pub name_prefix: String,
    /// Per slot, the highest `seq` in use at start; the slot's names continue after it.
    pub seq_floor: BTreeMap<usize, u64>,
    /// Runner labels, this instance's label included.
    pub labels: Vec<String>,
    /// This instance's label ([`crate::github::instance_label`]): only runners carrying it
    /// are ever deleted.
    pub instance_label: String,
    /// How long a registration to delete is retried (`--delete-deadline`).
    pub delete_deadline: Duration,
    /// How long a started guest's runner may take to come online (`--online-timeout`).
    pub online_timeout: Duration,
    /// The runner group (`-G`, resolved).
    pub runner_group: RunnerGroupId,
    /// JIT or registration token.
    pub registration: RegistrationMode,
    /// Backoff and `--max-failures`.
    pub backoff: BackoffPolicy,
    /// How long busy runners may finish after the first shutdown request.
    pub drain_timeout: Duration,
    /// Delay between the starts of two consecutive slots.
    pub stagger: Duration,
    /// Guests that may be booting at once (registration and the first `boot_window` of a run).
    pub max_concurrent_boots: usize,
    /// How long a started guest counts as booting.
    pub boot_window: Duration,
    /// Where each run's log goes (one file per run).
    pub log_dir: PathBuf,
    /// Run logs kept in `log_dir`.
    pub keep_logs: usize,
    /// The request every run starts from: workload, output, host name and the provided
    /// runner are set per run.
    pub template: RunRequest,
    /// Which actions runner guests run.
    pub runner: crate::runner::Plan,
}

/// The two stages of a requested shutdown, shared by the signal handler and every slot.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    /// First request: drain.
    pub drain: Cancel,
    /// Second request: stop everything now.
    pub force: Cancel,
}

impl Shutdown {
    /// Moves to the next stage: drain first, then force. Returns the stage reached.
    pub fn escalate(&self) -> &'static str {
        if self.drain.is_cancelled() {
            self.force.cancel();
            "force"
        } else {
            self.drain.cancel();
            "drain"
        }
    }

    /// Whether a shutdown was requested.
    pub fn requested(&self) -> bool {
        self.drain.is_cancelled()
    }
}

/// How the pool ended.
#[derive(Debug)]
pub struct PoolReport {
    /// One report per slot, in slot order.
    pub slots: Vec<SlotReport>,
    /// Whether it ended because shutdown was requested.
    pub shutdown_requested: bool,
    /// Registrations that could not be deleted (the next start's reconcile removes them).
    pub left: Vec<String>,
}

impl PoolReport {
    /// Whether every slot stopped on an error.
    pub fn all_failed(&self) -> bool {
        !self.slots.is_empty()
            && self
                .slots
                .iter()
                .all(|s| matches!(s.stop, SlotStop::Failed(_)))
    }

    /// Runs that ended well, over all slots.
    pub fn runs(&self) -> u64 {
        self.slots.iter().map(|s| s.runs).sum()
    }
}

/// N slots sharing a GitHub client, a launcher and a boot cap.
#[derive(Debug)]
pub struct Pool {
    cfg: Arc<PoolConfig>,
    github: GitHub,
    launcher: Launcher,
    reporter: state::Reporter,
}

impl Pool {
    /// A pool; nothing starts before [`Pool::run`].
    pub fn new(cfg: PoolConfig, github: GitHub, launcher: Launcher) -> Pool {
        let reporter = state::Reporter::in_memory(cfg.slots);
        Pool {
            cfg: Arc::new(cfg),
            github,
            launcher,
            reporter,
        }
    }

    /// Reports every slot's transitions to `reporter` (state file, metrics) instead of
    /// keeping them in memory only.
    pub fn with_reporter(mut self, reporter: state::Reporter) -> Pool {
        self.reporter = reporter;
        self
    }

    /// Runs every slot until each has done its runs, stopped on errors, or shut down.
    pub async fn run(&self, shutdown: &Shutdown) -> PoolReport {
        let boots = Arc::new(Semaphore::new(self.cfg.max_concurrent_boots.max(1)));
        let deleter = deleter::Deleter::new(
            // After a forced stop each deletion gets short tries, within the force window.
            self.github.hurry_on(&shutdown.force),
            self.cfg.instance_label.clone(),
            self.cfg.delete_deadline,
            shutdown,
        );
        let mut tasks = Vec::with_capacity(self.cfg.slots);
        for index in 0..self.cfg.slots {
            let slot = slot::Slot {
                index,
                cfg: self.cfg.clone(),
                // A forced stop must not wait for GitHub: deletions get one short try.
                github: self.github.hurry_on(&shutdown.force),
                launcher: self.launcher.clone(),
                boots: boots.clone(),
                shutdown: shutdown.clone(),
                sink: self.reporter.slot(index),
                deleter: deleter.clone(),
            };
            let delay = self
                .cfg
                .stagger
                .checked_mul(u32::try_from(index).unwrap_or(u32::MAX))
                .unwrap_or(Duration::MAX);
            tasks.push(tokio::spawn(async move { slot.run(delay).await }));
        }
        let mut slots = Vec::with_capacity(tasks.len());
        for (index, t) in tasks.into_iter().enumerate() {
            let report = match t.await {
                Ok(r) => r,
                Err(e) => SlotReport {
                    index,
                    runs: 0,
                    failures: 0,
                    stop: SlotStop::Failed(OrchestratorError::Task {
                        slot: index,
                        reason: e.to_string(),
                    }),
                },
            };
            slots.push(report);
        }
        PoolReport {
            slots,
            shutdown_requested: shutdown.requested(),
            left: finish_deletions(&deleter).await,
        }
    }
}

/// Waits for the pending deletions and names each registration left behind.
async fn finish_deletions(deleter: &deleter::Deleter) -> Vec<String> {
    let left = deleter.finish().await;
    for name in &left {
        tracing::warn!(
            runner = %name,
            "registration left on GitHub; the next start's reconcile removes it once GitHub reports it offline"
        );
    }
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_escalates_drain_then_force() {
        let s = Shutdown::default();
        assert!(!s.requested());
        assert_eq!(s.escalate(), "drain");
        assert!(s.requested() && !s.force.is_cancelled());
        assert_eq!(s.escalate(), "force");
        assert!(s.force.is_cancelled());
    }
}

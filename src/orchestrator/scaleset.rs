//! A runner scale set: guests on demand (`krunner run --scale-set NAME`).
//!
//! Instead of N loops that each keep a runner waiting, one listener holds the scale set's
//! message session and learns from each message how many jobs GitHub has assigned to the set;
//! the reconciler keeps `min(min_idle + assigned, max)` guests, each a fresh scale-set runner
//! with a single-use JIT config, and nothing more. Order of things:
//!
//! 1. **Ensure the set**: find it by name in its runner group, or create it (labels: its name
//!    first). Its id, the session id and the last message id are kept in a small state file,
//!    so a restart after a crash can close the session the dead krunner left (the service
//!    answers 409 to a second session until it expires) and go on from its last message.
//! 2. **Session and poller**: a task long-polls the queue, telling the service the capacity
//!    left (`X-ScaleSetMaxCapacity`). A message is handed to the reconciler and acknowledged
//!    only once it has acted on it; an expired queue token is refreshed, a deleted scale set
//!    (GitHub removes sets that stay offline) re-created with a fresh session.
//! 3. **Reconciler** (the sole owner of the guests): on each message and every few seconds it
//!    starts guests up to the target, and removes surplus idle runners only when the service
//!    agrees they are idle (removing a busy runner is refused) and they have been up a while, so
//!    a job assigned a moment ago is not lost. A guest's exit is the truth about its runner,
//!    not `JobCompleted`; its registration is removed afterwards if the service still has it.
//! 4. **Shutdown**: the first signal closes the session, stops idle runners and lets busy ones
//!    finish up to the drain timeout; the second stops every guest.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::budget::{Budget, Lease, Size};
use super::state::{PoolStatus, Reporter};
use super::Shutdown;
use crate::github::actions::{Actions, ActionsError, Message, Session, Statistics};
use crate::guest::{Registration, RunnerJob};
use crate::image::Cancel;
use crate::launcher::run::{
    LaunchError, Launcher, Output, RunOutcome, RunRequest, VmExit, Workload,
};

/// How often the reconciler looks again without a message.
const TICK: Duration = Duration::from_secs(5);
/// An idle runner younger than this is never removed: a job may have just been given to it.
pub const MIN_IDLE_AGE: Duration = Duration::from_secs(30);
/// The longest wait between two tries after an error of the poller or the reconciler.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How long a session conflict (another or a dead listener's session) is waited out.
const CONFLICT_PATIENCE: Duration = Duration::from_secs(15 * 60);

/// One scale set and its guests.
#[derive(Debug, Clone)]
pub struct ScaleSetConfig {
    /// The scale set's name: what `runs-on` names.
    pub name: String,
    /// Extra labels (set when the scale set is created).
    pub labels: Vec<String>,
    /// The runner group's name.
    pub runner_group: String,
    /// Runners kept waiting for jobs.
    pub min_idle: u32,
    /// Guests at most.
    pub max: u32,
    /// Runner names are `{prefix}-{n}`.
    pub name_prefix: String,
    /// The session's owner name (this instance's label).
    pub owner: String,
    /// Where the set id, session id and last message id are kept.
    pub state_file: PathBuf,
    /// One log per run.
    pub log_dir: PathBuf,
    /// How long busy runners may finish after the first signal.
    pub drain_timeout: Duration,
    /// How long a runner waits before it may be removed as surplus ([`MIN_IDLE_AGE`]).
    pub min_idle_age: Duration,
    /// The request every guest starts from.
    pub template: RunRequest,
    /// Which actions runner guests get.
    pub runner: crate::runner::Plan,
    /// The host's capacity, shared with the other pools: a guest starts only with a lease of
    /// its size (`template.cpus`, `template.memory_mib`).
    pub budget: Arc<Budget>,
    /// Where the pool's status goes (`krunner status`, metrics).
    pub reporter: Option<Reporter>,
}

/// What the scale set's run did.
#[derive(Debug, Default)]
pub struct ScaleSetReport {
    /// Guests that ended well.
    pub runs: u64,
    /// Guests that did not.
    pub failures: u64,
    /// The most guests alive at once.
    pub peak: usize,
}

/// Why the scale set could not run.
#[derive(Debug, thiserror::Error)]
pub enum ScaleSetError {
    /// A call to the Actions service failed.
    #[error("scale set {set}: {op}")]
    Actions {
        /// The scale set's name.
        set: String,
        /// What was being done.
        op: String,
        /// Why.
        #[source]
        source: ActionsError,
    },
    /// Another listener holds the session, longer than krunner waits.
    #[error("scale set {set}: another listener has held its message session for {} min; is a second krunner serving it?", .waited.as_secs() / 60)]
    SessionHeld {
        /// The scale set's name.
        set: String,
        /// How long krunner waited.
        waited: Duration,
    },
}

/// What survives a restart (never a token).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Persisted {
    set_id: u64,
    session_id: Option<String>,
    last_message_id: u64,
}

fn load(path: &Path) -> Persisted {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn save(path: &Path, p: &Persisted) {
    let tmp = path.with_extension("tmp");
    let res = serde_json::to_vec(p)
        .map_err(std::io::Error::other)
        .and_then(|b| std::fs::write(&tmp, b))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        tracing::warn!(
            "cannot save the scale set's state to {}: {e}",
            path.display()
        );
    }
}

/// What the poller tells the reconciler.
enum Event {
    /// A message; the reconciler answers once it has acted, then the poller acknowledges it.
    Message(Message, oneshot::Sender<()>),
    /// A poll ended without a message, or a session opened: the demand now.
    Demand(Statistics),
}

/// One guest of the set.
struct Guest {
    id: u64,
    started: Instant,
    busy: bool,
    stop: Cancel,
    /// Its share of the host, given back when the guest is gone.
    _lease: Lease,
}

/// Runs the scale set until shutdown.
pub async fn run(
    cfg: ScaleSetConfig,
    actions: Actions,
    launcher: Launcher,
    shutdown: &Shutdown,
) -> Result<ScaleSetReport, ScaleSetError> {
    let err = |op: &str| {
        let set = cfg.name.clone();
        let op = op.to_string();
        move |source| ScaleSetError::Actions { set, op, source }
    };
    let mut state = load(&cfg.state_file);
    let group = actions
        .runner_group_id(&cfg.runner_group)
        .await
        .map_err(err("finding its runner group"))?;
    let set_id = ensure_set(&actions, &cfg, group, &mut state)
        .await
        .map_err(err("finding or creating it"))?;
    tracing::info!(set = %cfg.name, id = set_id, "scale set ready");
    sweep_offline(&actions, &cfg, set_id).await;
    let session = open_session(&actions, &cfg, &mut state, shutdown).await?;
    let Some(session) = session else {
        return Ok(ScaleSetReport::default());
    };
    let (events_tx, events_rx) = mpsc::channel(16);
    let (capacity_tx, capacity_rx) = watch::channel(cfg.max);
    // The poller re-creates a scale set GitHub deleted; the reconciler registers runners in
    // whichever set is current.
    let current_set = Arc::new(AtomicU64::new(set_id));
    events_tx.send(Event::Demand(session.statistics)).await.ok();
    let poller = tokio::spawn(poll(
        actions.clone(),
        cfg.clone(),
        group,
        current_set.clone(),
        session,
        state,
        events_tx,
        capacity_rx,
        shutdown.drain.clone(),
    ));
    let report = Reconciler {
        cfg: &cfg,
        actions: &actions,
        launcher: &launcher,
        set_id: current_set,
        guests: HashMap::new(),
        tasks: JoinSet::new(),
        assigned: 0,
        stats: Statistics::default(),
        assigned_at: HashMap::new(),
        seq: 0,
        report: ScaleSetReport::default(),
        failures_in_a_row: 0,
        next_start: Instant::now(),
    }
    .run(events_rx, capacity_tx, shutdown)
    .await;
    let _ = poller.await;
    Ok(report)
}

/// Finds the set (re-creating it when GitHub deleted it) and records its id; a new id resets
/// the last message id.
async fn ensure_set(
    actions: &Actions,
    cfg: &ScaleSetConfig,
    group: u64,
    state: &mut Persisted,
) -> Result<u64, ActionsError> {
    let set = match actions.find_scale_set(group, &cfg.name).await? {
        Some(s) => s,
        None => {
            tracing::info!(set = %cfg.name, "creating the scale set");
            actions
                .create_scale_set(group, &cfg.name, &cfg.labels)
                .await?
        }
    };
    if state.set_id != set.id {
        *state = Persisted {
            set_id: set.id,
            ..Persisted::default()
        };
        save(&cfg.state_file, state);
    }
    Ok(set.id)
}

/// Removes this instance's offline runners of the set that a crash left behind.
async fn sweep_offline(actions: &Actions, cfg: &ScaleSetConfig, set_id: u64) {
    let Ok(agents) = actions.agents(None).await else {
        return;
    };
    let ours = format!("{}-", cfg.name_prefix);
    for a in agents {
        if a.runner_scale_set_id == Some(set_id)
            && a.name.starts_with(&ours)
            && !a.status.eq_ignore_ascii_case("online")
        {
            match actions.remove_agent(a.id).await {
                Ok(true) => tracing::info!(runner = %a.name, "removed a runner left offline"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(runner = %a.name, "cannot remove it: {}", crate::error_chain(&e))
                }
            }
        }
    }
}

/// Opens the set's session. A conflict with the session a dead krunner left (its id is in the
/// state file) is resolved by closing that one; any other is waited out. None on shutdown.
async fn open_session(
    actions: &Actions,
    cfg: &ScaleSetConfig,
    state: &mut Persisted,
    shutdown: &Shutdown,
) -> Result<Option<Session>, ScaleSetError> {
    let began = Instant::now();
    let mut wait = Duration::from_secs(2);
    loop {
        match actions.create_session(state.set_id, &cfg.owner).await {
            Ok(s) => {
                state.session_id = Some(s.id.clone());
                save(&cfg.state_file, state);
                return Ok(Some(s));
            }
            Err(e) if e.session_conflict() => {
                if let Some(stale) = state.session_id.take() {
                    tracing::warn!(set = %cfg.name, "closing the message session a previous krunner left open");
                    if let Err(e) = actions.delete_session(state.set_id, &stale).await {
                        tracing::warn!("cannot close it: {}", crate::error_chain(&e));
                    }
                    save(&cfg.state_file, state);
                    continue;
                }
                if began.elapsed() > CONFLICT_PATIENCE {
                    return Err(ScaleSetError::SessionHeld {
                        set: cfg.name.clone(),
                        waited: began.elapsed(),
                    });
                }
                tracing::warn!(set = %cfg.name, "another listener holds the message session; waiting");
            }
            Err(e) => {
                return Err(ScaleSetError::Actions {
                    set: cfg.name.clone(),
                    op: "opening its message session".into(),
                    source: e,
                })
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.drain.cancelled() => return Ok(None),
        }
        wait = (wait * 2).min(MAX_BACKOFF);
    }
}

/// The poller: long-polls, hands messages over, acknowledges them once acted on, keeps the
/// session alive; closes it when the drain starts.
#[allow(clippy::too_many_arguments)]
async fn poll(
    actions: Actions,
    cfg: ScaleSetConfig,
    group: u64,
    current_set: Arc<AtomicU64>,
    mut session: Session,
    mut state: Persisted,
    events: mpsc::Sender<Event>,
    capacity: watch::Receiver<u32>,
    stop: Cancel,
) {
    let mut wait = Duration::from_secs(1);
    let mut set_id = current_set.load(Ordering::SeqCst);
    loop {
        current_set.store(set_id, Ordering::SeqCst);
        let cap = *capacity.borrow();
        let got = tokio::select! {
            r = actions.get_message(&session, state.last_message_id, cap) => r,
            _ = stop.cancelled() => break,
        };
        match got {
            Ok(Some(m)) => {
                wait = Duration::from_secs(1);
                if !deliver(&actions, &cfg, set_id, &session, &mut state, &events, m).await {
                    break;
                }
            }
            Ok(None) => {
                wait = Duration::from_secs(1);
            }
            Err(e) if e.status() == Some(401) => {
                match actions.refresh_session(set_id, &session.id).await {
                    Ok(s) => session = s,
                    Err(e2) => {
                        tracing::warn!(
                            "cannot refresh the session ({}); opening a new one",
                            crate::error_chain(&e2)
                        );
                        if let Some(s) = reopen(
                            &actions,
                            &cfg,
                            group,
                            (&mut set_id, &current_set),
                            &mut state,
                            &events,
                        )
                        .await
                        {
                            session = s;
                        }
                    }
                }
            }
            Err(e) if e.scale_set_gone() || e.status() == Some(404) => {
                tracing::warn!(set = %cfg.name, "the scale set or its session is gone; re-creating");
                if let Some(s) = reopen(
                    &actions,
                    &cfg,
                    group,
                    (&mut set_id, &current_set),
                    &mut state,
                    &events,
                )
                .await
                {
                    session = s;
                }
            }
            Err(e) => {
                tracing::warn!("polling the scale set failed: {}", crate::error_chain(&e));
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
                wait = (wait * 2).min(MAX_BACKOFF);
            }
        }
    }
    if let Err(e) = actions.delete_session(set_id, &session.id).await {
        tracing::warn!(
            "cannot close the message session: {}",
            crate::error_chain(&e)
        );
    } else {
        state.session_id = None;
        save(&cfg.state_file, &state);
    }
}

/// Acquires a message's available jobs, hands it to the reconciler, waits until it has acted,
/// then records and acknowledges the message. False once the reconciler is gone.
async fn deliver(
    actions: &Actions,
    cfg: &ScaleSetConfig,
    set_id: u64,
    session: &Session,
    state: &mut Persisted,
    events: &mpsc::Sender<Event>,
    m: Message,
) -> bool {
    let id = m.id;
    let available: Vec<u64> = m
        .jobs
        .iter()
        .filter(|j| j.message_type == "JobAvailable")
        .map(|j| j.runner_request_id)
        .collect();
    if !available.is_empty() {
        if let Err(e) = actions.acquire_jobs(set_id, session, &available).await {
            // Not acknowledged: the message comes again.
            tracing::warn!("cannot acquire jobs: {}", crate::error_chain(&e));
            return true;
        }
    }
    let (done_tx, done_rx) = oneshot::channel();
    if events.send(Event::Message(m, done_tx)).await.is_err() {
        return false;
    }
    let _ = done_rx.await;
    state.last_message_id = id;
    save(&cfg.state_file, state);
    if let Err(e) = actions.ack(session, id).await {
        tracing::warn!(
            "cannot acknowledge message {id}: {}",
            crate::error_chain(&e)
        );
    }
    true
}

/// Ensures the set again and opens a new session; tells the reconciler a new set id.
async fn reopen(
    actions: &Actions,
    cfg: &ScaleSetConfig,
    group: u64,
    (set_id, current): (&mut u64, &AtomicU64),
    state: &mut Persisted,
    events: &mpsc::Sender<Event>,
) -> Option<Session> {
    let id = match ensure_set(actions, cfg, group, state).await {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!("cannot re-create the scale set: {}", crate::error_chain(&e));
            tokio::time::sleep(Duration::from_secs(5)).await;
            return None;
        }
    };
    *set_id = id;
    current.store(id, Ordering::SeqCst);
    state.session_id = None;
    match actions.create_session(id, &cfg.owner).await {
        Ok(s) => {
            state.session_id = Some(s.id.clone());
            save(&cfg.state_file, state);
            let _ = events.send(Event::Demand(s.statistics)).await;
            Some(s)
        }
        Err(e) => {
            tracing::warn!("cannot open a new session: {}", crate::error_chain(&e));
            tokio::time::sleep(Duration::from_secs(5)).await;
            None
        }
    }
}

/// The sole owner of the set's guests.
struct Reconciler<'a> {
    cfg: &'a ScaleSetConfig,
    actions: &'a Actions,
    launcher: &'a Launcher,
    /// The current scale set's id (the poller changes it when it re-creates the set).
    set_id: Arc<AtomicU64>,
    guests: HashMap<String, Guest>,
    tasks: JoinSet<(String, Result<RunOutcome, LaunchError>)>,
    assigned: u64,
    /// The service's last word on the set's runners and jobs.
    stats: Statistics,
    /// When each job still waiting for a runner was seen assigned (for the wait metric).
    assigned_at: HashMap<String, Instant>,
    seq: u64,
    report: ScaleSetReport,
    failures_in_a_row: u32,
    /// No guest starts before this (backoff after failures).
    next_start: Instant,
}

impl Reconciler<'_> {
    async fn run(
        mut self,
        mut events: mpsc::Receiver<Event>,
        capacity: watch::Sender<u32>,
        shutdown: &Shutdown,
    ) -> ScaleSetReport {
        let mut tick = tokio::time::interval(TICK);
        let mut open = true;
        loop {
            tokio::select! {
                ev = events.recv(), if open && !shutdown.requested() => match ev {
                    Some(Event::Message(m, done)) => {
                        self.on_message(&m);
                        self.reconcile().await;
                        let _ = done.send(());
                    }
                    Some(Event::Demand(s)) => {
                        self.assigned = s.total_assigned_jobs;
                        self.stats = s;
                        self.reconcile().await;
                    }
                    // The poller ended (it only does on shutdown).
                    None => open = false,
                },
                Some(r) = self.tasks.join_next(), if !self.tasks.is_empty() => self.on_exit(r).await,
                _ = tick.tick() => if !shutdown.requested() { self.reconcile().await },
                // Another pool's guest ended: room for one of ours, maybe.
                _ = self.cfg.budget.freed(), if !shutdown.requested() => self.reconcile().await,
                _ = shutdown.drain.cancelled(), if !shutdown.requested() => {}
            }
            // What this pool can take now: guests it has that are free, plus what still fits.
            let busy = self.guests.values().filter(|g| g.busy).count() as u32;
            let have = self.guests.len() as u32;
            let can = (have + self.cfg.budget.fits(self.size())).min(self.cfg.max);
            capacity.send_replace(can.saturating_sub(busy));
            self.publish();
            if shutdown.requested() {
                break;
            }
        }
        self.drain(shutdown).await;
        self.report
    }

    fn size(&self) -> Size {
        Size {
            cpus: u32::from(self.cfg.template.cpus),
            memory_mib: u64::from(self.cfg.template.memory_mib),
        }
    }

    fn on_message(&mut self, m: &Message) {
        self.assigned = m.statistics.total_assigned_jobs;
        self.stats = m.statistics;
        for j in &m.jobs {
            let job = j.job_id.to_string();
            match j.message_type.as_str() {
                "JobAssigned" | "JobAvailable" => {
                    self.assigned_at.entry(job).or_insert_with(Instant::now);
                }
                "JobStarted" => {
                    if let Some(g) = j.runner_name.as_ref().and_then(|n| self.guests.get_mut(n)) {
                        g.busy = true;
                    }
                    if let (Some(t), Some(r)) = (self.assigned_at.remove(&job), &self.cfg.reporter)
                    {
                        r.metrics().pool_job_wait(&self.cfg.name, t.elapsed());
                    }
                }
                "JobCompleted" => {
                    // Cancelled before a runner took it: it comes again as a new assignment.
                    self.assigned_at.remove(&job);
                }
                _ => {}
            }
        }
    }

    /// Reports the pool's state (`krunner status`, metrics).
    fn publish(&self) {
        let Some(r) = &self.cfg.reporter else { return };
        let actual = self.guests.len() as u64;
        let busy = self.guests.values().filter(|g| g.busy).count() as u64;
        let idle = self
            .stats
            .total_idle_runners
            .min(actual.saturating_sub(busy));
        let status = PoolStatus {
            name: self.cfg.name.clone(),
            set_id: self.set_id.load(Ordering::SeqCst),
            assigned_jobs: self.assigned,
            running_jobs: self.stats.total_running_jobs,
            desired: (u64::from(self.cfg.min_idle) + self.assigned).min(u64::from(self.cfg.max)),
            actual,
            idle,
            busy,
            booting: actual.saturating_sub(busy + idle),
            runs_done: self.report.runs,
            failures: self.report.failures,
        };
        r.metrics().pool_status(&status);
        r.pool(status);
    }

    /// Starts guests up to the target; removes surplus idle ones the service agrees are idle.
    async fn reconcile(&mut self) {
        let target = (u64::from(self.cfg.min_idle) + self.assigned).min(u64::from(self.cfg.max));
        let target = usize::try_from(target).unwrap_or(usize::MAX);
        while self.guests.len() < target && Instant::now() >= self.next_start {
            if !self.start_guest().await {
                break;
            }
        }
        let mut surplus = self.guests.len().saturating_sub(target);
        if surplus == 0 {
            return;
        }
        let idle: Vec<(String, u64)> = self
            .guests
            .iter()
            .filter(|(_, g)| !g.busy && g.started.elapsed() >= self.cfg.min_idle_age)
            .map(|(n, g)| (n.clone(), g.id))
            .collect();
        for (name, id) in idle {
            if surplus == 0 {
                break;
            }
            match self.actions.remove_agent(id).await {
                Ok(true) => {
                    tracing::info!(runner = %name, "removing a surplus idle runner");
                    if let Some(g) = self.guests.get(&name) {
                        g.stop.cancel();
                    }
                    surplus -= 1;
                }
                Ok(false) => {
                    if let Some(g) = self.guests.get_mut(&name) {
                        g.busy = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(runner = %name, "cannot remove it: {}", crate::error_chain(&e))
                }
            }
        }
    }

    /// Registers and launches one guest; false if it could not (backing off).
    async fn start_guest(&mut self) -> bool {
        // Without room on the host, wait: a lease given back wakes the reconciler.
        let Some(lease) = self.cfg.budget.try_take(self.size()) else {
            return false;
        };
        self.seq += 1;
        let name = format!(
            "{}-{}-{}",
            self.cfg.name_prefix,
            crate::image::cache::now_secs() % 1_000_000,
            self.seq
        );
        let set = self.set_id.load(Ordering::SeqCst);
        let jit = match self.actions.generate_jit(set, &name).await {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(runner = %name, "cannot register it: {}", crate::error_chain(&e));
                self.failed();
                return false;
            }
        };
        let mut req = self.cfg.template.clone();
        let (root, layer) = self.cfg.runner.for_next_guest();
        req.runner = layer;
        req.workload = Workload::Runner(RunnerJob {
            registration: Registration::Jit(jit.config),
            work: "_work".into(),
            user: "runner".into(),
            root,
        });
        let secs = crate::image::cache::now_secs();
        req.output = Output::File(self.cfg.log_dir.join(format!("{name}-{secs}.log")));
        req.hostname = name.clone();
        let stop = Cancel::default();
        let launcher = self.launcher.clone();
        let (n, s) = (name.clone(), stop.clone());
        self.tasks.spawn(async move {
            let out = launcher.run(&req, &s).await;
            (n, out)
        });
        tracing::info!(runner = %name, "starting a scale-set runner");
        if let Some(r) = &self.cfg.reporter {
            r.metrics().runs_started.fetch_add(1, Ordering::Relaxed);
            r.metrics().active_vms.fetch_add(1, Ordering::Relaxed);
        }
        self.guests.insert(
            name,
            Guest {
                id: jit.runner_id,
                started: Instant::now(),
                busy: false,
                stop,
                _lease: lease,
            },
        );
        self.report.peak = self.report.peak.max(self.guests.len());
        true
    }

    fn failed(&mut self) {
        self.report.failures += 1;
        self.failures_in_a_row += 1;
        let secs = 2u64.saturating_pow(self.failures_in_a_row.min(6));
        self.next_start = Instant::now() + Duration::from_secs(secs).min(MAX_BACKOFF * 5);
    }

    /// A guest ended: count it, and remove its registration if the service still has it.
    async fn on_exit(
        &mut self,
        r: Result<(String, Result<RunOutcome, LaunchError>), tokio::task::JoinError>,
    ) {
        let Ok((name, outcome)) = r else {
            self.failed();
            return;
        };
        let Some(guest) = self.guests.remove(&name) else {
            return;
        };
        let ok =
            matches!(&outcome, Ok(o) if o.exit == VmExit::Exited(0) || o.exit == VmExit::Stopped);
        if let Some(r) = &self.cfg.reporter {
            let m = r.metrics();
            m.active_vms.fetch_sub(1, Ordering::Relaxed);
            let counter = if ok {
                &m.runs_succeeded
            } else {
                &m.runs_failed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            m.vm_lifetime.observe(guest.started.elapsed());
        }
        match &outcome {
            Ok(o) if o.exit == VmExit::Exited(0) || o.exit == VmExit::Stopped => {
                tracing::info!(runner = %name, "runner finished");
                self.report.runs += 1;
                self.failures_in_a_row = 0;
            }
            Ok(o) => {
                tracing::warn!(runner = %name, "the guest {}", o.describe_exit());
                self.failed();
            }
            Err(e) => {
                tracing::warn!(runner = %name, "cannot launch it: {}", crate::error_chain(e));
                self.failed();
            }
        }
        if let Err(e) = self.actions.remove_agent(guest.id).await {
            tracing::warn!(runner = %name, "cannot remove its registration: {}", crate::error_chain(&e));
        }
    }

    /// Stops idle guests now, busy ones after the drain timeout or a forced stop.
    async fn drain(&mut self, shutdown: &Shutdown) {
        for (name, g) in &self.guests {
            if !g.busy {
                match self.actions.remove_agent(g.id).await {
                    Ok(false) => {}
                    _ => {
                        tracing::info!(runner = %name, "stopping an idle runner");
                        g.stop.cancel();
                    }
                }
            }
        }
        let deadline = tokio::time::sleep(self.cfg.drain_timeout);
        tokio::pin!(deadline);
        let mut forced = false;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(r) = self.tasks.join_next() => self.on_exit(r).await,
                _ = &mut deadline, if !forced => forced = true,
                _ = shutdown.force.cancelled(), if !forced => forced = true,
            }
            if forced {
                for g in self.guests.values() {
                    g.stop.cancel();
                }
            }
        }
    }
}

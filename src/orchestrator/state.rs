//! What a running `krunner run` is doing, for `krunner status` and the metrics endpoint.
//!
//! One instance (one name prefix on one cache) holds an exclusive flock on
//! `$CACHE/locks/instance-<prefix>.lock` ([`InstanceLock`]) for its whole life, with its pid in
//! the file, so a second instance with the same prefix fails at once and names the first.
//! flock, not a pid file: a crashed holder releases it, so a stale file never blocks a restart.
//!
//! The [`Reporter`] keeps an [`InstanceState`] document that every slot updates through its
//! [`SlotSink`] at each transition; each change is written to `$CACHE/state/<prefix>.json`
//! atomically (temporary file, then rename), so a reader never sees half a document. The same
//! calls feed [`Metrics`]. Idle versus busy is not something a slot sees from the guest, so
//! [`Reporter::watch`] asks GitHub, about this instance's runners only (a listing of the
//! whole scope is many pages in a large organisation) and within a share of the hourly
//! budget.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Shutdown;
use crate::github::{GitHub, RateLimit, Runner, RunnerId};
use crate::metrics::Metrics;

/// How often [`Reporter::watch`] asks about the runners, at least.
pub const POLL_INTERVAL: Duration = Duration::from_secs(10);

/// The share of the hourly API budget the status poller may use; registrations and
/// deletions need the rest.
pub const POLL_BUDGET_SHARE: f64 = 0.1;

/// Below this share of the hourly budget left, the poller pauses until the reset.
pub const LOW_BUDGET_SHARE: f64 = 0.1;

/// GitHub's hourly budget for a PAT or an App installation on github.com, assumed until an
/// answer says otherwise.
const DEFAULT_HOURLY_LIMIT: u64 = 5_000;

/// The wait before the next poll after one that asked about `asked` runners: `base`, or
/// longer so that polling like this for an hour stays within [`POLL_BUDGET_SHARE`] of
/// `limit` requests.
pub fn poll_interval(base: Duration, asked: usize, limit: Option<u64>) -> Duration {
    let limit = limit.unwrap_or(DEFAULT_HOURLY_LIMIT).max(1) as f64;
    let per_hour = limit * POLL_BUDGET_SHARE;
    let spread = Duration::from_secs_f64(asked as f64 * 3600.0 / per_hour);
    base.max(spread)
}

/// How long to pause polling when less than [`LOW_BUDGET_SHARE`] of the budget is left:
/// until the reset (at least a second), or `None` to poll.
pub fn low_budget_wait(rate: &RateLimit, now: u64) -> Option<Duration> {
    let (Some(limit), Some(remaining)) = (rate.limit, rate.remaining) else {
        return None;
    };
    if (remaining as f64) >= limit as f64 * LOW_BUDGET_SHARE {
        return None;
    }
    let reset = rate.reset_epoch.unwrap_or(now + 60);
    Some(Duration::from_secs(
        reset.saturating_sub(now).clamp(1, 3600),
    ))
}

/// Longest `last_error` kept, in characters.
const MAX_ERROR: usize = 300;

/// State-file and lock errors, each naming its path.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another live instance holds the lock.
    #[error(
        "another krunner run with name prefix {prefix:?} is running on this cache ({holder}); lock {path}"
    )]
    Locked {
        /// The name prefix.
        prefix: String,
        /// "pid N", or why the pid is unknown.
        holder: String,
        /// The lock file.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A state file is not what krunner writes.
    #[error("cannot parse the state file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io { op, path, source }
}

/// What a slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SlotState {
    /// Waiting for a boot permit or registering its next runner.
    Registering,
    /// The guest is starting; the runner is not online yet.
    Booting,
    /// The runner is online and waiting for a job.
    Idle,
    /// The runner is running a job.
    Busy,
    /// Shutdown requested; the guest is being stopped or allowed to finish.
    Draining,
    /// Waiting after a failure.
    BackingOff,
    /// The slot ended (done, shut down, or too many failures).
    Stopped,
}

impl SlotState {
    /// The name used in the state file and by `krunner status`.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotState::Registering => "registering",
            SlotState::Booting => "booting",
            SlotState::Idle => "idle",
            SlotState::Busy => "busy",
            SlotState::Draining => "draining",
            SlotState::BackingOff => "backing-off",
            SlotState::Stopped => "stopped",
        }
    }
}

/// One slot in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The slot's index.
    pub index: usize,
    /// Its current (or last) runner's name; empty before the first registration.
    pub runner: String,
    /// What it is doing.
    pub state: SlotState,
    /// Since when, unix seconds.
    pub since: u64,
    /// Runs that ended well.
    pub runs_done: u64,
    /// Failures since the last success.
    pub failures_in_row: u64,
    /// Failures in total.
    pub failures_total: u64,
    /// The last failure, one line.
    pub last_error: Option<String>,
}

/// The state file's document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceState {
    /// The krunner process.
    pub pid: u32,
    /// When it started, unix seconds.
    pub started: u64,
    /// Its runner name prefix.
    pub name_prefix: String,
    /// Where its metrics endpoint listens, if it has one.
    pub metrics: Option<String>,
    /// One entry per slot.
    pub slots: Vec<SlotStatus>,
    /// One entry per scale set (`--scale-set`, `--config`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolStatus>,
}

/// One scale set in the state file: the demand and what krunner has to meet it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    /// The scale set's name.
    pub name: String,
    /// Its id at the Actions service.
    pub set_id: u64,
    /// Jobs assigned to the set (running or waiting), per the last message.
    pub assigned_jobs: u64,
    /// Jobs running.
    pub running_jobs: u64,
    /// Guests wanted: min(min idle + assigned, max).
    pub desired: u64,
    /// Guests alive.
    pub actual: u64,
    /// Of those, registered runners without a job (per the service).
    pub idle: u64,
    /// Runners with a job.
    pub busy: u64,
    /// Guests whose runner has not registered yet.
    pub booting: u64,
    /// Guests that ended well.
    pub runs_done: u64,
    /// Guests that did not.
    pub failures: u64,
}

/// Unix seconds now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The prefix as a file-name component: anything but `[A-Za-z0-9._-]` becomes `_`, and so
/// does a leading dot, so no prefix can name a path outside the directory.
pub fn file_stem(prefix: &str) -> String {
    let mut s: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with('.') {
        s.insert(0, '_');
    }
    s
}

/// `$CACHE/state`.
pub fn state_dir(cache: &Path) -> PathBuf {
    cache.join("state")
}

/// `$CACHE/state/<prefix>.json`.
pub fn state_path(cache: &Path, prefix: &str) -> PathBuf {
    state_dir(cache).join(format!("{}.json", file_stem(prefix)))
}

/// `$CACHE/locks/instance-<prefix>.lock`.
pub fn lock_path(cache: &Path, prefix: &str) -> PathBuf {
    cache
        .join("locks")
        .join(format!("instance-{}.lock", file_stem(prefix)))
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(bytes).map_err(io("write", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename into place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The held per-instance lock. Dropping it releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Takes the lock of `prefix` on `cache` or fails at once, naming the holder's pid.
    pub fn acquire(cache: &Path, prefix: &str) -> Result<InstanceLock, StateError> {
        let path = lock_path(cache, prefix);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
        }
        // No truncate on open: the file holds the current holder's pid until we own it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    prefix: prefix.to_string(),
                    holder: read_pid(&mut file)
                        .map_or_else(|| "pid unknown".into(), |p| format!("pid {p}")),
                    path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io("lock", &path)(e)),
        }
        file.set_len(0).map_err(io("truncate", &path))?;
        file.rewind().map_err(io("rewind", &path))?;
        file.write_all(format!("{}\n", std::process::id()).as_bytes())
            .map_err(io("write", &path))?;
        Ok(InstanceLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid written in a lock file.
fn read_pid(file: &mut File) -> Option<u32> {
    let mut s = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut s).ok()?;
    s.trim().parse().ok()
}

/// Per-slot bookkeeping that is not part of the document.
#[derive(Debug, Default, Clone)]
struct Live {
    /// When the current guest started (monotonic, and unix seconds).
    vm_started: Option<(Instant, u64)>,
    /// Whether the current guest's runner has been seen online.
    online_seen: bool,
    /// The current runner's id, when registered just in time.
    runner_id: Option<RunnerId>,
    /// Whether the current turn started a guest (a failure then counts as a failed run).
    vm_this_turn: bool,
}

#[derive(Debug)]
struct Shared {
    doc: InstanceState,
    live: Vec<Live>,
    /// Set by [`Reporter::close`]: nothing is written any more.
    closed: bool,
}

/// The instance's state, shared by every slot; writes the state file on each change.
#[derive(Debug, Clone)]
pub struct Reporter {
    shared: Arc<Mutex<Shared>>,
    file: Option<PathBuf>,
    metrics: Arc<Metrics>,
}

impl Reporter {
    /// A reporter for `slots` slots that writes `file` (if any) and feeds `metrics`.
    pub fn new(
        name_prefix: &str,
        slots: usize,
        file: Option<PathBuf>,
        metrics: Arc<Metrics>,
    ) -> Reporter {
        let now = now_secs();
        let doc = InstanceState {
            pid: std::process::id(),
            started: now,
            name_prefix: name_prefix.to_string(),
            metrics: None,
            slots: (0..slots)
                .map(|index| SlotStatus {
                    index,
                    runner: String::new(),
                    state: SlotState::Registering,
                    since: now,
                    runs_done: 0,
                    failures_in_row: 0,
                    failures_total: 0,
                    last_error: None,
                })
                .collect(),
            pools: Vec::new(),
        };
        let r = Reporter {
            shared: Arc::new(Mutex::new(Shared {
                doc,
                live: vec![Live::default(); slots],
                closed: false,
            })),
            file,
            metrics,
        };
        r.update(|_| {});
        r
    }

    /// A reporter that writes no file (tests, and pools built without one).
    pub fn in_memory(slots: usize) -> Reporter {
        Reporter::new("", slots, None, Arc::new(Metrics::default()))
    }

    /// The metrics it feeds.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A copy of the document.
    pub fn snapshot(&self) -> InstanceState {
        self.lock().doc.clone()
    }

    /// Records where the metrics endpoint listens.
    pub fn set_metrics_addr(&self, addr: String) {
        self.update(|s| s.doc.metrics = Some(addr));
    }

    /// The handle slot `index` reports through.
    pub fn slot(&self, index: usize) -> SlotSink {
        SlotSink {
            reporter: self.clone(),
            index,
        }
    }

    /// Replaces scale set `status.name`'s entry (adding it the first time).
    pub fn pool(&self, status: PoolStatus) {
        self.update(
            |s| match s.doc.pools.iter_mut().find(|p| p.name == status.name) {
                Some(p) => *p = status,
                None => s.doc.pools.push(status),
            },
        );
    }

    /// Stops writing and removes the state file (clean exit).
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A panicking slot must not take status reporting down with it.
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `f` and writes the file if the document changed.
    fn update(&self, f: impl FnOnce(&mut Shared)) {
        let mut s = self.lock();
        let before = s.doc.clone();
        f(&mut s);
        if s.closed || (s.doc == before && self.file.as_ref().is_some_and(|p| p.exists())) {
            return;
        }
        let Some(path) = &self.file else { return };
        // The lock is held while writing, so two writes never interleave their renames out
        // of order; the file is small.
        let result = serde_json::to_vec_pretty(&s.doc)
            .map_err(|source| StateError::Parse {
                path: path.clone(),
                source,
            })
            .and_then(|bytes| write_atomic(path, &bytes));
        if let Err(e) = result {
            tracing::debug!("state file: {}", crate::error_chain(&e));
        }
    }

    /// Polls GitHub and sets idle/busy for slots whose guest runs; on a drain request,
    /// marks those slots draining. Ends when the reporter is closed or the runtime ends.
    ///
    /// Each poll asks only about this instance's runners that can still change state
    /// (booting or idle; a busy ephemeral runner stays busy until its guest ends): one
    /// `GET …/runners/{id}` each, or one listing for runners registered by token, whose id
    /// is unknown. Polls are `interval` apart, stretched by [`poll_interval`] to keep within
    /// [`POLL_BUDGET_SHARE`] of the hourly budget, and paused until the reset while less
    /// than [`LOW_BUDGET_SHARE`] of it is left.
    pub fn watch(&self, github: GitHub, shutdown: Shutdown, interval: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut drained = false;
            let mut next = interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(next) => {}
                    _ = shutdown.drain.cancelled(), if !drained => {
                        drained = true;
                        me.mark_draining();
                        continue;
                    }
                }
                if me.lock().closed {
                    return;
                }
                let rate = github.rate_limit();
                next = match low_budget_wait(&rate, now_secs()) {
                    Some(wait) => {
                        tracing::info!(
                            "GitHub API budget low ({} left); status polls pause for {} s",
                            rate.remaining.unwrap_or(0),
                            wait.as_secs()
                        );
                        wait
                    }
                    None => {
                        let asked = me.poll(&github).await;
                        poll_interval(interval, asked, rate.limit)
                    }
                };
            }
        });
    }

    /// One poll; returns how many runners it asked about.
    async fn poll(&self, github: &GitHub) -> usize {
        let (by_id, by_name) = self.pollable();
        let mut seen = Vec::new();
        for id in &by_id {
            match github.get_runner(*id).await {
                Ok(Some(r)) => seen.push(observed(r)),
                Ok(None) => {}
                Err(e) => tracing::debug!("status poll: {}", crate::error_chain(&e)),
            }
        }
        if by_name > 0 {
            match github.list_runners().await {
                Ok(all) => seen.extend(all.into_iter().map(observed)),
                Err(e) => tracing::debug!("status poll: {}", crate::error_chain(&e)),
            }
        }
        self.apply_listing(&seen);
        by_id.len() + by_name
    }

    /// The runners a poll asks about: ids of JIT runners, and how many registered by token.
    fn pollable(&self) -> (Vec<RunnerId>, usize) {
        let s = self.lock();
        let mut ids = Vec::new();
        let mut by_name = 0;
        for (slot, live) in s.doc.slots.iter().zip(&s.live) {
            let changing = matches!(slot.state, SlotState::Booting | SlotState::Idle);
            if live.vm_started.is_none() || !changing {
                continue;
            }
            match live.runner_id {
                Some(id) => ids.push(id),
                None => by_name += 1,
            }
        }
        (ids, by_name)
    }

    fn mark_draining(&self) {
        self.update(|s| {
            let now = now_secs();
            for (slot, live) in s.doc.slots.iter_mut().zip(&s.live) {
                if live.vm_started.is_some() && slot.state != SlotState::Draining {
                    slot.state = SlotState::Draining;
                    slot.since = now;
                }
            }
        });
    }

    /// `seen`: (name, online, busy) of every runner GitHub lists.
    fn apply_listing(&self, seen: &[(String, bool, bool)]) {
        let metrics = self.metrics.clone();
        self.update(|s| {
            let now = now_secs();
            let Shared { doc, live, .. } = s;
            for (slot, live) in doc.slots.iter_mut().zip(live.iter_mut()) {
                let Some((started, _)) = live.vm_started else {
                    continue;
                };
                if slot.state == SlotState::Draining {
                    continue;
                }
                let Some((_, online, busy)) = seen.iter().find(|(n, _, _)| *n == slot.runner)
                else {
                    continue;
                };
                if !online && !busy {
                    continue;
                }
                if !live.online_seen {
                    live.online_seen = true;
                    metrics.time_to_online.observe(started.elapsed());
                }
                let state = if *busy {
                    SlotState::Busy
                } else {
                    SlotState::Idle
                };
                if slot.state != state {
                    slot.state = state;
                    slot.since = now;
                }
            }
        });
    }
}

/// (name, online, busy) of a runner, as [`Reporter::apply_listing`] takes them.
fn observed(r: Runner) -> (String, bool, bool) {
    let online = r.is_online();
    (r.name, online, r.busy)
}

/// Closes its [`Reporter`] when dropped, so every way out of `krunner run` short of a crash
/// removes the state file.
#[derive(Debug)]
pub struct CloseOnDrop(pub Reporter);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// One slot's handle on the [`Reporter`]; every call is one transition.
#[derive(Debug, Clone)]
pub struct SlotSink {
    reporter: Reporter,
    index: usize,
}

impl SlotSink {
    fn set(&self, f: impl FnOnce(&mut SlotStatus, &mut Live, &Metrics)) {
        let metrics = self.reporter.metrics.clone();
        let index = self.index;
        self.reporter.update(|s| {
            let Shared { doc, live, .. } = s;
            if let (Some(slot), Some(live)) = (doc.slots.get_mut(index), live.get_mut(index)) {
                let before = slot.state;
                f(slot, live, &metrics);
                if slot.state != before {
                    slot.since = now_secs();
                }
            }
        });
    }

    /// A turn starts: waiting for a boot permit, then registering `runner`.
    pub fn registering(&self, runner: &str) {
        self.set(|s, l, _| {
            s.runner = runner.to_string();
            s.state = SlotState::Registering;
            l.vm_this_turn = false;
        });
    }

    /// The turn's runner is registered; `id` is known for JIT runners.
    pub fn registered(&self, id: Option<RunnerId>) {
        self.set(|_, l, _| l.runner_id = id);
    }

    /// The guest is being started.
    pub fn booting(&self) {
        self.set(|s, l, m| {
            s.state = SlotState::Booting;
            l.vm_started = Some((Instant::now(), now_secs()));
            l.online_seen = false;
            l.vm_this_turn = true;
            m.runs_started.fetch_add(1, Ordering::Relaxed);
            m.active_vms.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// The guest ended; `runner_started` is the guest result's (unix seconds), if any.
    pub fn vm_ended(&self, runner_started: Option<u64>) {
        self.set(|_, l, m| {
            if let Some((started, started_unix)) = l.vm_started.take() {
                let _ = m
                    .active_vms
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
                m.vm_lifetime.observe(started.elapsed());
                // Too short-lived for the poll to see it online: the guest's own clock says.
                if let (false, Some(rs)) = (l.online_seen, runner_started) {
                    m.time_to_online
                        .observe(Duration::from_secs(rs.saturating_sub(started_unix)));
                }
            }
        });
    }

    /// The turn ended well.
    pub fn succeeded(&self) {
        self.set(|s, _, m| {
            s.runs_done += 1;
            s.failures_in_row = 0;
            m.runs_succeeded.fetch_add(1, Ordering::Relaxed);
        });
    }

    /// The turn failed with `error`.
    pub fn failed(&self, error: &dyn std::error::Error) {
        let line = one_line(&crate::error_chain(error));
        self.set(|s, l, m| {
            s.failures_in_row += 1;
            s.failures_total += 1;
            s.last_error = Some(line);
            if l.vm_this_turn {
                m.runs_failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    /// Waiting before the next attempt.
    pub fn backing_off(&self) {
        self.set(|s, _, _| s.state = SlotState::BackingOff);
    }

    /// The slot's loop ended.
    pub fn stopped(&self) {
        self.set(|s, _, _| s.state = SlotState::Stopped);
    }
}

/// The first line of `s`, without control characters, at most [`MAX_ERROR`] characters.
fn one_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("");
    let mut out: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR)
        .collect();
    if line.chars().count() > MAX_ERROR {
        out.push('…');
    }
    out
}

/// Whether an instance is alive, as far as `krunner status` can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its pid exists and (when `/proc/locks` is readable) its lock is held.
    Alive,
    /// Gone: the file is left from a crash.
    Dead,
}

/// One state file read by `krunner status`.
#[derive(Debug, Clone)]
pub struct FoundInstance {
    /// The file.
    pub path: PathBuf,
    /// Its document.
    pub state: InstanceState,
    /// Whether its krunner still runs.
    pub liveness: Liveness,
}

/// Reads the state files under `cache` (only `prefix`'s, if given), sorted by prefix.
pub fn find_instances(
    cache: &Path,
    prefix: Option<&str>,
) -> Result<Vec<FoundInstance>, StateError> {
    let dir = state_dir(cache);
    let paths: Vec<PathBuf> = match prefix {
        Some(p) => vec![state_path(cache, p)],
        None => match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.extension().is_some_and(|x| x == "json")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read directory", &dir)(e)),
        },
    };
    let mut found = Vec::new();
    for path in paths {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            // Removed between listing and reading: that instance just exited.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io("read", &path)(e)),
        };
        let state: InstanceState =
            serde_json::from_slice(&text).map_err(|source| StateError::Parse {
                path: path.clone(),
                source,
            })?;
        let liveness = liveness(cache, &state);
        found.push(FoundInstance {
            path,
            state,
            liveness,
        });
    }
    found.sort_by(|a, b| a.state.name_prefix.cmp(&b.state.name_prefix));
    Ok(found)
}

/// Alive if the pid exists and holds a lock on the instance's lock file. The lock is looked
/// up in `/proc/locks` rather than probed with a lock of our own, which could make a
/// `krunner run` starting at that moment fail.
fn liveness(cache: &Path, state: &InstanceState) -> Liveness {
    let Ok(pid) = i32::try_from(state.pid) else {
        return Liveness::Dead;
    };
    let pid_alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) | Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    };
    if !pid_alive {
        return Liveness::Dead;
    }
    let lock = lock_path(cache, &state.name_prefix);
    let Ok(meta) = std::fs::metadata(&lock) else {
        return Liveness::Dead;
    };
    match std::fs::read_to_string("/proc/locks") {
        Ok(locks) if !lock_listed(&locks, std::os::unix::fs::MetadataExt::ino(&meta)) => {
            Liveness::Dead
        }
        _ => Liveness::Alive,
    }
}

/// Whether `/proc/locks` lists a FLOCK on inode `ino` (`… FLOCK ADVISORY WRITE pid MAJ:MIN:INO …`).
fn lock_listed(locks: &str, ino: u64) -> bool {
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.contains(&"FLOCK")
            && f.iter().any(|w| {
                w.rsplit(':')
                    .next()
                    .is_some_and(|i| w.matches(':').count() == 2 && i.parse() == Ok(ino))
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reporter(dir: &Path, slots: usize) -> (Reporter, PathBuf) {
        let path = state_path(dir, "pre");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let r = Reporter::new("pre", slots, Some(path.clone()), Arc::default());
        (r, path)
    }

    fn read(path: &Path) -> InstanceState {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn state_file_follows_the_transitions() {
        let dir = tempfile::tempdir().unwrap();
        let (r, path) = reporter(dir.path(), 2);
        let doc = read(&path);
        assert_eq!(doc.pid, std::process::id());
        assert_eq!(doc.name_prefix, "pre");
        assert_eq!(doc.slots.len(), 2);
        assert!(doc
            .slots
            .iter()
            .all(|s| s.state == SlotState::Registering && s.runner.is_empty()));

        let s0 = r.slot(0);
        s0.registering("pre-0-1");
        s0.booting();
        assert_eq!(read(&path).slots[0].state, SlotState::Booting);
        r.apply_listing(&[("pre-0-1".into(), true, false)]);
        assert_eq!(read(&path).slots[0].state, SlotState::Idle);
        r.apply_listing(&[("pre-0-1".into(), true, true)]);
        assert_eq!(read(&path).slots[0].state, SlotState::Busy);
        s0.vm_ended(None);
        s0.succeeded();

        let s1 = r.slot(1);
        s1.registering("pre-1-1");
        s1.booting();
        s1.vm_ended(None);
        s1.failed(&std::io::Error::other("boom\nsecond line"));
        s1.backing_off();

        let doc = read(&path);
        assert_eq!(doc.slots[0].runs_done, 1);
        assert_eq!(doc.slots[0].runner, "pre-0-1");
        let s = &doc.slots[1];
        assert_eq!(
            (s.state, s.failures_in_row, s.failures_total),
            (SlotState::BackingOff, 1, 1)
        );
        assert_eq!(s.last_error.as_deref(), Some("boom"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"backing-off\""), "{text}");

        let m = r.metrics();
        assert_eq!(m.runs_started.load(Ordering::Relaxed), 2);
        assert_eq!(m.runs_succeeded.load(Ordering::Relaxed), 1);
        assert_eq!(m.runs_failed.load(Ordering::Relaxed), 1);
        assert_eq!(m.active_vms.load(Ordering::Relaxed), 0);
        assert_eq!(m.time_to_online.get().1, 1);
        assert_eq!(m.vm_lifetime.get().1, 2);

        // A success resets the run of failures, not the total.
        s1.registering("pre-1-2");
        s1.succeeded();
        let s = &read(&path).slots[1];
        assert_eq!((s.failures_in_row, s.failures_total), (0, 1));

        r.close();
        assert!(!path.exists());
        s1.stopped();
        assert!(!path.exists(), "nothing is written after close");
    }

    #[test]
    fn polls_stay_within_their_share_of_the_budget() {
        let base = Duration::from_secs(10);
        assert_eq!(poll_interval(base, 0, None), base);
        assert_eq!(poll_interval(base, 1, Some(5000)), base);
        assert_eq!(
            poll_interval(base, 2, Some(5000)),
            Duration::from_secs_f64(14.4)
        );
        // 8 runners against 5,000/h: 500/h for polls, so one poll per 57.6 s.
        assert_eq!(
            poll_interval(base, 8, Some(5000)),
            Duration::from_secs_f64(57.6)
        );
        assert_eq!(
            poll_interval(base, 8, None),
            poll_interval(base, 8, Some(5000))
        );
        // GitHub Enterprise Cloud's 15,000/h: 19.2 s.
        assert_eq!(
            poll_interval(base, 8, Some(15_000)),
            Duration::from_secs_f64(19.2)
        );
        let rate = |remaining, reset| RateLimit {
            limit: Some(5000),
            remaining: Some(remaining),
            reset_epoch: reset,
        };
        assert_eq!(low_budget_wait(&rate(500, Some(1100)), 1000), None);
        assert_eq!(
            low_budget_wait(&rate(499, Some(1100)), 1000),
            Some(Duration::from_secs(100))
        );
        assert_eq!(
            low_budget_wait(&rate(0, Some(900)), 1000),
            Some(Duration::from_secs(1))
        );
        assert_eq!(low_budget_wait(&RateLimit::default(), 1000), None);
    }

    #[test]
    fn only_booting_and_idle_runners_are_polled() {
        let r = Reporter::in_memory(4);
        for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
            r.slot(i).registering(name);
        }
        r.slot(0).registered(Some(RunnerId(10)));
        r.slot(0).booting();
        r.slot(1).registered(Some(RunnerId(11)));
        r.slot(1).booting();
        r.slot(2).registered(None);
        r.slot(2).booting();
        // Slot 3 registered but has no guest yet.
        r.slot(3).registered(Some(RunnerId(13)));
        assert_eq!(r.pollable(), (vec![RunnerId(10), RunnerId(11)], 1));
        r.apply_listing(&[("a".into(), true, false), ("b".into(), true, true)]);
        // b is busy: it stays so until its guest ends.
        assert_eq!(r.pollable(), (vec![RunnerId(10)], 1));
        r.mark_draining();
        assert_eq!(r.pollable(), (vec![], 0));
    }

    #[test]
    fn draining_sticks_until_the_guest_ends() {
        let r = Reporter::in_memory(2);
        r.slot(0).registering("a");
        r.slot(0).booting();
        r.mark_draining();
        r.apply_listing(&[("a".into(), true, true)]);
        let doc = r.snapshot();
        assert_eq!(doc.slots[0].state, SlotState::Draining);
        assert_eq!(doc.slots[1].state, SlotState::Registering, "no guest");
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("x.json")]);
        assert!(write_atomic(&dir.path().join("missing/x.json"), b"z").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn second_lock_fails_naming_the_pid() {
        let dir = tempfile::tempdir().unwrap();
        let held = InstanceLock::acquire(dir.path(), "p").unwrap();
        assert_eq!(
            std::fs::read_to_string(held.path()).unwrap().trim(),
            std::process::id().to_string()
        );
        let err = InstanceLock::acquire(dir.path(), "p")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("\"p\"") && err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        InstanceLock::acquire(dir.path(), "other").unwrap();
        drop(held);
        InstanceLock::acquire(dir.path(), "p").unwrap();
    }

    #[test]
    fn status_finds_live_and_dead_instances() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_instances(dir.path(), None).unwrap().is_empty());
        let _lock = InstanceLock::acquire(dir.path(), "pre").unwrap();
        let (_r, _) = reporter(dir.path(), 1);
        let mut dead = _r.snapshot();
        dead.name_prefix = "gone".into();
        dead.pid = i32::MAX as u32;
        write_atomic(
            &state_path(dir.path(), "gone"),
            &serde_json::to_vec(&dead).unwrap(),
        )
        .unwrap();
        let found = find_instances(dir.path(), None).unwrap();
        let got: Vec<_> = found
            .iter()
            .map(|f| (f.state.name_prefix.as_str(), f.liveness))
            .collect();
        assert_eq!(got, [("gone", Liveness::Dead), ("pre", Liveness::Alive)]);
        assert_eq!(find_instances(dir.path(), Some("pre")).unwrap().len(), 1);
        assert!(find_instances(dir.path(), Some("none")).unwrap().is_empty());
    }

    #[test]
    fn file_stems_stay_in_their_directory() {
        assert_eq!(file_stem("host-1"), "host-1");
        assert_eq!(file_stem("../x"), "_.._x");
        assert_eq!(file_stem(""), "_");
        assert_eq!(file_stem("a/b c"), "a_b_c");
    }

    #[test]
    fn proc_locks_lines() {
        let locks = "1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF\n2: POSIX  ADVISORY  READ 1 00:1f:99 0 EOF\n";
        assert!(lock_listed(locks, 1234));
        assert!(!lock_listed(locks, 99));
        assert!(!lock_listed(locks, 4242));
    }
}

//! The per-instance deletion queue: registrations this instance wants gone, retried until
//! they are.
//!
//! A slot hands its registration over ([`Deleter::delete`]) and goes on with its next turn; a
//! task per registration deletes it, retrying on whatever keeps it: GitHub's 422 for a runner
//! it still counts as busy (a force-stopped guest's runner stays busy until GitHub notices it
//! is gone), 5xx, rate limits, timeouts. It gives up at its deadline (`--delete-deadline`) and
//! names the registration, which the next start's reconcile removes once GitHub reports it
//! offline. Only runners that are ours are deleted: JIT registrations by the id GitHub gave
//! us, token registrations by name *and* instance label.
//!
//! At exit, [`Deleter::finish`] waits for what is pending: up to each deadline, but after a
//! forced shutdown no longer than [`FORCE_WINDOW`] from the force request, so a second signal
//! ends krunner promptly whatever GitHub does.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::Shutdown;
use crate::github::{GitHub, GitHubError, RunnerId};

/// How long pending deletions may still take after a forced shutdown.
pub const FORCE_WINDOW: Duration = Duration::from_secs(20);

/// The first wait between two attempts; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The longest wait between two attempts.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A registration to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The runner's name.
    pub name: String,
    /// Its id when known (JIT); token registrations are found by name and instance label.
    pub id: Option<RunnerId>,
}

struct Inner {
    github: GitHub,
    instance_label: String,
    deadline: Duration,
    /// Pending deletions by ticket.
    pending: Mutex<BTreeMap<u64, String>>,
    /// Registrations given up on at their deadline.
    abandoned: Mutex<Vec<String>>,
    next_ticket: AtomicU64,
    /// How many are pending; [`Deleter::finish`] waits for 0.
    count: watch::Sender<usize>,
    /// When a forced shutdown was requested.
    forced_at: Mutex<Option<Instant>>,
}

/// The queue; clones share it.
#[derive(Clone)]
pub struct Deleter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Deleter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deleter")
            .field("pending", &*lock(&self.inner.pending))
            .field("deadline", &self.inner.deadline)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking deletion task must not stop the others.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Deleter {
    /// A queue deleting with `github`, each registration tried for up to `deadline`; notes
    /// when `shutdown` is forced. Must be called within a tokio runtime.
    pub fn new(
        github: GitHub,
        instance_label: String,
        deadline: Duration,
        shutdown: &Shutdown,
    ) -> Deleter {
        let (count, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            github,
            instance_label,
            deadline,
            pending: Mutex::new(BTreeMap::new()),
            abandoned: Mutex::new(Vec::new()),
            next_ticket: AtomicU64::new(0),
            count,
            forced_at: Mutex::new(None),
        });
        let (me, force) = (inner.clone(), shutdown.force.clone());
        tokio::spawn(async move {
            force.cancelled().await;
            *lock(&me.forced_at) = Some(Instant::now());
        });
        Deleter { inner }
    }

    /// Queues `target` for deletion and returns at once.
    pub fn delete(&self, target: Target) {
        let ticket = self.inner.next_ticket.fetch_add(1, Ordering::Relaxed);
        self.set_pending(ticket, Some(target.name.clone()));
        let me = self.clone();
        tokio::spawn(async move { me.work(ticket, target).await });
    }

    /// Adds (`Some(name)`) or removes a pending ticket.
    fn set_pending(&self, ticket: u64, name: Option<String>) {
        let mut pending = lock(&self.inner.pending);
        match name {
            Some(n) => pending.insert(ticket, n),
            None => pending.remove(&ticket),
        };
        self.inner.count.send_replace(pending.len());
    }

    /// Tries until the runner is gone or the deadline passed.
    async fn work(&self, ticket: u64, target: Target) {
        let until = Instant::now() + self.inner.deadline;
        let mut wait = FIRST_RETRY;
        loop {
            let attempt = tokio::time::timeout_at(until, self.attempt(&target)).await;
            let e = match attempt {
                Ok(Ok(())) => break,
                Ok(Err(e)) => crate::error_chain(&e),
                Err(_) => "no answer before the deadline".to_string(),
            };
            if Instant::now() + wait >= until {
                tracing::warn!(
                    runner = %target.name,
                    "giving up deleting the registration after {} s: {e}",
                    self.inner.deadline.as_secs()
                );
                lock(&self.inner.abandoned).push(target.name.clone());
                break;
            }
            tracing::debug!(runner = %target.name, "cannot delete the registration yet ({e}); retrying in {} s", wait.as_secs());
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(MAX_RETRY);
        }
        self.set_pending(ticket, None);
    }

    /// One deletion attempt; a runner that is already gone counts as deleted.
    async fn attempt(&self, target: &Target) -> Result<(), GitHubError> {
        let github = &self.inner.github;
        let id = match target.id {
            Some(id) => id,
            None => match github
                .find_runner(&target.name, &self.inner.instance_label)
                .await?
            {
                Some(r) => r.id,
                None => return Ok(()),
            },
        };
        github.delete_runner(id).await?;
        tracing::debug!(runner = %target.name, %id, "deleted the registration");
        Ok(())
    }

    /// Waits until nothing is pending, or a forced shutdown's [`FORCE_WINDOW`] has passed;
    /// returns the names of the registrations left behind (given up on, or still pending).
    pub async fn finish(&self) -> Vec<String> {
        let mut count = self.inner.count.subscribe();
        loop {
            if *count.borrow_and_update() == 0 {
                break;
            }
            let forced_at = *lock(&self.inner.forced_at);
            let window_end = forced_at.map(|t| t + FORCE_WINDOW);
            tokio::select! {
                changed = count.changed() => if changed.is_err() { break },
                _ = tokio::time::sleep_until(window_end.unwrap_or_else(far_future)), if window_end.is_some() => break,
                // Re-evaluate the window once a force request arrives.
                _ = tokio::time::sleep(Duration::from_millis(500)), if window_end.is_none() => {}
            }
        }
        let mut left = lock(&self.inner.abandoned).clone();
        left.extend(lock(&self.inner.pending).values().cloned());
        left
    }
}

/// An instant that never comes in practice.
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

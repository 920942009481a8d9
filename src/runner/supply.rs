//! The provided runner while `krunner run` goes on: the one new guests get now, a check for
//! new releases at start and every `--runner-check-interval`, and pruning of versions no run
//! uses any more.
//!
//! The current runner is held (its lock shared) for as long as it is current, so another
//! krunner sharing the cache never prunes it between two runs; each run holds it too.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::releases::{self, Download, Release};
use super::store::{Installed, RunnerStore};
use super::{Arch, RunnerError, Wanted};
use crate::image::cache::LockGuard;

/// Where and how runners are found.
#[derive(Debug, Clone)]
pub struct Source {
    /// The releases listing (`--runner-releases-url`).
    pub releases_url: String,
    /// Latest or a pinned version (`--runner-version`).
    pub wanted: Wanted,
    /// The guest's architecture.
    pub arch: Arch,
    /// Only the cache, no network (`--offline`).
    pub offline: bool,
}

/// A runner handed out to new guests, held in use while it is.
#[derive(Debug)]
pub struct Current {
    /// The runner.
    pub installed: Installed,
    _hold: LockGuard,
}

/// The runner new guests get; cheap to clone.
#[derive(Debug, Clone)]
pub struct Supply {
    rx: watch::Receiver<Arc<Current>>,
}

impl Supply {
    /// The runner to give the next guest; it stays held while the returned value lives, even
    /// after an update has moved on.
    pub fn current(&self) -> Arc<Current> {
        self.rx.borrow().clone()
    }
}

/// Finds, installs and holds the runner to start with. Online, a listing or download that
/// fails falls back to the newest suitable runner in the cache, with a warning; with nothing
/// there it is an error.
pub async fn provision(
    store: &RunnerStore,
    http: &reqwest::Client,
    src: &Source,
) -> Result<(Supply, Updater), RunnerError> {
    let cached = || -> Result<Option<Current>, RunnerError> {
        match store.newest(src.arch, src.wanted.exact()) {
            Some(i) => hold(store, &i.sha256),
            None => Ok(None),
        }
    };
    let current = if src.offline {
        cached()?.ok_or(RunnerError::NotCached {
            wanted: src.wanted,
            arch: src.arch,
        })?
    } else {
        match fetch_and_hold(store, http, src).await {
            Ok(c) => c,
            Err(e) => match cached()? {
                Some(c) => {
                    tracing::warn!(
                        "cannot get the runner {} ({}); the cache's {} serves meanwhile",
                        src.wanted,
                        crate::error_chain(&e),
                        c.installed.version
                    );
                    c
                }
                None => return Err(e),
            },
        }
    };
    let current = Arc::new(current);
    let (tx, rx) = watch::channel(current);
    Ok((
        Supply { rx },
        Updater {
            store: store.clone(),
            http: http.clone(),
            src: src.clone(),
            tx,
        },
    ))
}

/// The release `src` asks for, from the listing.
pub async fn wanted_release(http: &reqwest::Client, src: &Source) -> Result<Release, RunnerError> {
    let list = releases::fetch(http, &src.releases_url).await?;
    match releases::pick(&list, src.wanted.exact()) {
        Some(r) => Ok(r.clone()),
        None => Err(match src.wanted {
            Wanted::Exact(version) => RunnerError::NoSuchVersion {
                version,
                url: src.releases_url.clone(),
            },
            Wanted::Latest => RunnerError::NoRelease {
                url: src.releases_url.clone(),
            },
        }),
    }
}

/// The installed runner `sha256`, held; None if it is not installed (or was pruned while
/// the lock was awaited).
fn hold(store: &RunnerStore, sha256: &str) -> Result<Option<Current>, RunnerError> {
    let Some(i) = store.get(sha256) else {
        return Ok(None);
    };
    let guard = store.hold(&i)?;
    Ok(store.get(sha256).map(|installed| Current {
        installed,
        _hold: guard,
    }))
}

/// The wanted release, installed if it is not yet, and held.
async fn fetch_and_hold(
    store: &RunnerStore,
    http: &reqwest::Client,
    src: &Source,
) -> Result<Current, RunnerError> {
    let release = wanted_release(http, src).await?;
    let download = release.download(src.arch)?;
    install_and_hold(store, http, &download, src.arch).await
}

/// `download`, installed if it is not yet, and held.
async fn install_and_hold(
    store: &RunnerStore,
    http: &reqwest::Client,
    download: &Download,
    arch: Arch,
) -> Result<Current, RunnerError> {
    // A prune by another krunner may remove it between the install and the hold: try again.
    for _ in 0..3 {
        if let Some(c) = hold(store, &download.sha256)? {
            return Ok(c);
        }
        tracing::info!(
            "downloading the actions runner {} ({})",
            download.version,
            download.asset
        );
        let i = store.install(http, download, arch).await?;
        tracing::info!("runner {} ready in the cache", i.version);
    }
    Err(RunnerError::Http {
        url: download.url.clone(),
        reason: format!(
            "runner {} was removed from the cache as soon as it was installed",
            download.version
        ),
    })
}

/// Moves new guests to new releases (`--runner-version latest`, online).
#[derive(Debug)]
pub struct Updater {
    store: RunnerStore,
    http: reqwest::Client,
    src: Source,
    tx: watch::Sender<Arc<Current>>,
}

impl Updater {
    /// One check: install the wanted release if it is new, switch to it, prune what nothing
    /// uses. On an error the current runner keeps serving. Returns whether it switched.
    pub async fn check(&self) -> Result<bool, RunnerError> {
        let release = wanted_release(&self.http, &self.src).await?;
        let download = release.download(self.src.arch)?;
        let switched = download.sha256 != self.tx.borrow().installed.sha256;
        if switched {
            let current =
                install_and_hold(&self.store, &self.http, &download, self.src.arch).await?;
            tracing::info!(
                "new guests get the actions runner {} (was {})",
                current.installed.version,
                self.tx.borrow().installed.version
            );
            self.tx.send_replace(Arc::new(current));
        }
        let keep = self.tx.borrow().installed.sha256.clone();
        let store = self.store.clone();
        let gone = tokio::task::spawn_blocking(move || store.prune(&[&keep]))
            .await
            .map_err(|e| RunnerError::Http {
                url: self.src.releases_url.clone(),
                reason: format!("prune task: {e}"),
            })??;
        for g in gone {
            tracing::info!("removed the unused runner {} from the cache", g.version);
        }
        Ok(switched)
    }

    /// Checks every `interval` until `stop` fires; a pinned version or `--offline` never
    /// changes, so then it only waits.
    pub async fn run(self, interval: Duration, stop: crate::image::Cancel) {
        if self.src.offline || self.src.wanted != Wanted::Latest {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.cancelled() => return,
            }
            tokio::select! {
                r = self.check() => if let Err(e) = r {
                    tracing::warn!(
                        "runner update check failed; {} keeps serving: {}",
                        self.tx.borrow().installed.version,
                        crate::error_chain(&e)
                    );
                },
                _ = stop.cancelled() => return,
            }
        }
    }
}

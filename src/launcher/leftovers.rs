//! What a run leaves on disk, and removing it: the guard that removes a run's directory on
//! every path out of [`Launcher::run`](super::run::Launcher::run), the sweep of directories
//! (and run cgroups, see [`super::cgroup::sweep_leftovers`]) whose krunner died, and
//! unmounting whatever is still mounted under them.

use std::path::{Path, PathBuf};

use super::run::LaunchError;
use crate::image::cache::{self, Cache, LockMode, LockName};

/// Removes run directories in `cache` whose supervising krunner is gone (its run lock is
/// free), with any mount left under them, and the run cgroups of dead krunner processes.
/// Returns how many run directories were removed.
pub(super) fn sweep(cache: &Cache) -> Result<usize, LaunchError> {
    // Run cgroups are not per cache: one krunner's run cgroups are found by its pid.
    super::cgroup::sweep_leftovers();
    let runs = cache.runs_dir();
    let entries = std::fs::read_dir(&runs)
        .map_err(LaunchError::io("-", format!("list {}", runs.display())))?;
    let mut removed = 0;
    for e in entries.flatten() {
        let id = e.file_name().to_string_lossy().to_string();
        let lock = cache
            .try_lock(&LockName::Run(id.clone()), LockMode::Exclusive)
            .map_err(LaunchError::cache(&id))?;
        if lock.is_none() {
            continue; // a live krunner owns it
        }
        unmount_under(&e.path());
        cache::remove_tree(&e.path()).map_err(LaunchError::cache(&id))?;
        cache.remove_run_lock(&id);
        tracing::info!(run = %id, "removed the leftovers of an earlier krunner");
        removed += 1;
    }
    Ok(removed)
}

/// Removes the run directory when dropped (also on error paths), unmounting anything that
/// was left mounted under it first.
pub(super) struct RunDirGuard {
    dir: PathBuf,
    cache: Cache,
    id: String,
}

impl RunDirGuard {
    /// Guards run `id`'s directory `dir` in `cache`.
    pub(super) fn new(dir: PathBuf, cache: Cache, id: String) -> RunDirGuard {
        RunDirGuard { dir, cache, id }
    }

    /// Unmounts what is left under the directory, removes it and the run's lock file; once
    /// that succeeded, dropping the guard does nothing.
    pub(super) fn finish(&mut self) -> Result<(), cache::CacheError> {
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
pub(super) fn unescape_mountinfo(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
        assert_eq!(unescape_mountinfo("/x\\134y"), "/x\\y");
    }
}

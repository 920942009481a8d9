//! What a guest's file system is made of: its root and the host directories shared into it.
//!
//! These types sit below the modules that use them: [`crate::rootfs`] makes a root,
//! [`crate::guest`] writes the agent's files and shares into it, and [`crate::launcher`]
//! mounts both for the VM child (its spec re-exports them).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How the guest's root filesystem is provided.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum RootSpec {
    /// overlayfs mounted by the child in its private mount namespace at `merged`.
    Overlay {
        /// The cached, read-only rootfs.
        lower: PathBuf,
        /// A read-only layer above it: the provided actions runner's tree.
        #[serde(default)]
        runner: Option<PathBuf>,
        /// Per-run writable layer.
        upper: PathBuf,
        /// overlayfs work dir (same filesystem as `upper`).
        work: PathBuf,
        /// Mount point.
        merged: PathBuf,
    },
    /// A private copy (reflink or full) that is already the root.
    Dir(PathBuf),
}

impl RootSpec {
    /// The directory the guest sees as `/` once the child has set it up.
    pub fn guest_root(&self) -> &Path {
        match self {
            RootSpec::Overlay { merged, .. } => merged,
            RootSpec::Dir(d) => d,
        }
    }
}

/// A host directory shared with the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Share {
    /// virtio-fs tag (krun); also a label in logs.
    pub tag: String,
    /// Host directory.
    pub host: PathBuf,
    /// Absolute path in the guest.
    pub guest: PathBuf,
    /// Guest may not write.
    pub read_only: bool,
}

/// A share that would hand guests the image cache.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} {share} {relation} the image cache {cache}: every job could read and change the cached images; share a directory outside it"
)]
pub struct ShareError {
    /// Which option gave it (`--job-cache`, `-M`).
    pub what: String,
    /// The shared host directory, resolved.
    pub share: String,
    /// "is", "lies inside" or "contains".
    pub relation: &'static str,
    /// The image cache directory, resolved.
    pub cache: String,
}

/// Refuses a host directory `host` (given by option `what`) that is, contains or lies inside
/// the image cache `cache`. Symlinks are resolved as far as the paths exist.
pub fn check_outside_cache(what: &str, host: &Path, cache: &Path) -> Result<(), ShareError> {
    let (h, c) = (resolve(host), resolve(cache));
    let relation = if h == c {
        "is"
    } else if h.starts_with(&c) {
        "lies inside"
    } else if c.starts_with(&h) {
        "contains"
    } else {
        return Ok(());
    };
    Err(ShareError {
        what: what.to_string(),
        share: h.display().to_string(),
        relation,
        cache: c.display().to_string(),
    })
}

/// `p` with symlinks resolved in its longest existing ancestor (a share may not exist yet).
fn resolve(p: &Path) -> PathBuf {
    if let Ok(c) = fs::canonicalize(p) {
        return c;
    }
    match (p.parent(), p.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => p.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_may_not_touch_the_image_cache() {
        let td = tempfile::tempdir().unwrap();
        let cache = td.path().join("cache");
        std::fs::create_dir_all(cache.join("blobs")).unwrap();
        let link = td.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        let rel = |host: &Path| {
            check_outside_cache("--job-cache", host, &cache)
                .err()
                .map(|e| e.relation)
        };
        assert_eq!(rel(&cache), Some("is"));
        assert_eq!(rel(&link), Some("is"), "through a symlink");
        assert_eq!(rel(&cache.join("blobs")), Some("lies inside"));
        assert_eq!(rel(&cache.join("not-yet/x")), Some("lies inside"));
        assert_eq!(rel(td.path()), Some("contains"));
        assert_eq!(rel(&td.path().join("cache-jobs")), None, "a sibling");
        assert_eq!(rel(&td.path().join("jobs")), None);
        let e = check_outside_cache("--job-cache", &cache, &cache).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("--job-cache "), "{msg}");
        assert!(
            msg.contains(&format!("is the image cache {}", resolve(&cache).display())),
            "{msg}"
        );
    }
}

//! The on-disk image cache: a content-addressed blob store, one immutable rootfs per platform
//! manifest, an index of references, and the file locks that make it safe to share.
//!
//! ```text
//! $CACHE/
//!   blobs/sha256/<hex>        manifests, indexes, configs, layers; immutable, verified before entry
//!   ingest/<hex>.part         a download in progress (only under locks/blob-<hex>.lock)
//!   rootfs/<hex>/rootfs/      the unpacked tree of platform manifest <hex>; never written after rename
//!   rootfs/<hex>/image.json   what it was built from (ImageMeta)
//!   runners/<hex>/tree/       a provided actions runner (tarball SHA-256 <hex>): opt/actions-runner
//!   runners/<hex>/runner.json its version and architecture (crate::runner::store)
//!   tmp/<hex>-<random>/       an unpack in progress (only under locks/rootfs-<hex>.lock)
//!   refs.json                 reference + platform -> digests, last used (RefRecord)
//!   runs/<id>/                one run's clone (upper/work/merged or a copy), spec, events
//!   locks/                    cache.lock, refs.lock, blob-<hex>.lock, rootfs-<hex>.lock,
//!                             runner-<hex>.lock
//! ```
//!
//! Locking (flock, so a crashed holder releases it): every pull holds `cache.lock` shared and
//! `prune` holds it exclusive; a blob download and a rootfs unpack hold their own lock
//! exclusive, so a second process waits and then finds the finished entry; a run that uses a
//! rootfs holds `rootfs-<hex>.lock` shared for its lifetime, which keeps `prune` away from it.
//! Anything in `ingest/` or `tmp/` is never read as a result: a crash leaves at most garbage
//! there, which the next holder of the same lock (or `prune`) removes.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::reference::Platform;

/// Bumped whenever the unpacker's output changes, so older trees are rebuilt.
pub const UNPACKER_VERSION: u32 = 1;

/// Cache errors, each naming the path involved.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What we tried.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A digest we cannot use as a file name.
    #[error("unsupported or malformed digest {0:?} (krunner stores sha256 digests only)")]
    BadDigest(String),
    /// A JSON file of the cache does not parse.
    #[error("cache file {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parser's words.
        reason: String,
    },
    /// Bytes whose hash is not the digest they claim.
    #[error("content of {digest} does not match its digest (got {actual})")]
    DigestMismatch {
        /// The expected digest.
        digest: String,
        /// What the bytes hash to.
        actual: String,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CacheError + 'a {
    move |source| CacheError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A validated `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(String);

impl Digest {
    /// The hex part, safe to use as a file name.
    pub fn hex(&self) -> &str {
        &self.0[7..]
    }

    /// The digest of some bytes.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A short form for humans: `sha256:0123456789ab`.
    pub fn short(&self) -> &str {
        &self.0[..19]
    }
}

impl TryFrom<String> for Digest {
    type Error = CacheError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        let ok = s.strip_prefix("sha256:").is_some_and(|h| {
            h.len() == 64
                && h.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        });
        if ok {
            Ok(Digest(s))
        } else {
            Err(CacheError::BadDigest(s))
        }
    }
}

impl TryFrom<&str> for Digest {
    type Error = CacheError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Digest::try_from(s.to_string())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of `refs.json`: what a reference resolved to for one platform.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefRecord {
    /// The full reference, e.g. `docker.io/library/alpine:latest`.
    pub reference: String,
    /// The platform it was pulled for.
    pub platform: Platform,
    /// What the reference itself resolved to (an index or a manifest).
    pub resolved: Digest,
    /// The platform manifest, which names the rootfs.
    pub manifest: Digest,
    /// Unix seconds of the last pull or use.
    pub last_used: u64,
}

/// What a rootfs was built from: `rootfs/<hex>/image.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    /// The platform manifest digest.
    pub manifest: Digest,
    /// The config blob digest.
    pub config: Digest,
    /// The platform.
    pub platform: Platform,
    /// Layer blob digests, bottom first.
    pub layers: Vec<Digest>,
    /// Bytes of file content in the tree.
    pub size: u64,
    /// Entries in the tree.
    pub entries: u64,
    /// The unpacker version that built it.
    pub unpacker: u32,
    /// Unix seconds when it was built.
    pub created: u64,
}

/// Which lock to take.
#[derive(Debug, Clone)]
pub enum LockName {
    /// The whole cache: shared by users, exclusive by prune.
    Cache,
    /// `refs.json`.
    Refs,
    /// One blob's download.
    Blob(Digest),
    /// One rootfs: exclusive while building, shared while in use.
    Rootfs(Digest),
    /// One run directory: held by the krunner process that supervises the run.
    Run(String),
    /// One provided actions runner (by the SHA-256 of its tarball): exclusive while it is
    /// installed or pruned, shared while a run or a `krunner run` uses it.
    Runner(String),
}

/// A held flock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
}

/// Shared or exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders.
    Shared,
    /// One holder.
    Exclusive,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// Seconds since the epoch, for records.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`, which is made absolute.
    pub fn open(root: &Path) -> Result<Cache, CacheError> {
        let root = std::path::absolute(root).map_err(io_err("resolve", root))?;
        for sub in [
            "blobs/sha256",
            "ingest",
            "rootfs",
            "runners",
            "tmp",
            "locks",
            "runs",
        ] {
            let p = root.join(sub);
            private_dirs(&p).map_err(io_err("create directory", &p))?;
        }
        make_private(&root).map_err(io_err("make private", &root))?;
        Ok(Cache { root })
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where run directories live.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// Removes the lock file of a finished run (only while holding it).
    pub fn remove_run_lock(&self, id: &str) {
        let _ = fs::remove_file(self.lock_path(&LockName::Run(id.to_string())));
    }

    /// Where a blob lives once verified.
    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    /// Where a blob is downloaded to before it is verified.
    pub fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(format!("{}.part", d.hex()))
    }

    /// Whether a blob is in the store (with the expected size, when known).
    pub fn has_blob(&self, d: &Digest, size: Option<u64>) -> bool {
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => m.is_file() && size.is_none_or(|s| s == m.len()),
            Err(_) => false,
        }
    }

    /// Reads a (small) blob and checks its digest again: JSON blobs are parsed from this.
    pub fn read_blob(&self, d: &Digest) -> Result<Vec<u8>, CacheError> {
        let p = self.blob_path(d);
        let bytes = fs::read(&p).map_err(io_err("read blob", &p))?;
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(CacheError::DigestMismatch {
                digest: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    /// Stores bytes already in memory (manifests, configs) after checking their digest.
    pub fn put_blob(&self, d: &Digest, bytes: &[u8]) -> Result<(), CacheError> {
        let actual = Digest::of(bytes);
        if &actual != d {
            return Err(CacheError::DigestMismatch {
                digest: d.to_string(),
                actual: actual.to_string(),
            });
        }
        if self.has_blob(d, Some(bytes.len() as u64)) {
            return Ok(());
        }
        let tmp = self
            .root
            .join("ingest")
            .join(format!("{}.{}.small", d.hex(), random_suffix()));
        write_atomic(&tmp, &self.blob_path(d), bytes)
    }

    /// Moves a verified download from `ingest/` into the store.
    pub fn commit_ingest(&self, d: &Digest) -> Result<PathBuf, CacheError> {
        let from = self.ingest_path(d);
        let to = self.blob_path(d);
        fs::rename(&from, &to).map_err(io_err("move verified blob into", &to))?;
        Ok(to)
    }

    /// The directory of one rootfs: `rootfs/<hex>` (the tree is its `rootfs/` child).
    pub fn rootfs_dir(&self, manifest: &Digest) -> PathBuf {
        self.root.join("rootfs").join(manifest.hex())
    }

    /// The metadata of a finished rootfs built by this unpacker version, if there is one.
    pub fn rootfs_meta(&self, manifest: &Digest) -> Option<ImageMeta> {
        let p = self.rootfs_dir(manifest).join("image.json");
        let meta: ImageMeta = serde_json::from_slice(&fs::read(p).ok()?).ok()?;
        (meta.unpacker == UNPACKER_VERSION && meta.manifest == *manifest).then_some(meta)
    }

    /// A fresh directory under `tmp/` to build the rootfs of `manifest` in.
    /// Call only under the rootfs lock: it removes earlier leftovers for the same manifest.
    pub fn new_build_dir(&self, manifest: &Digest) -> Result<PathBuf, CacheError> {
        let tmp = self.root.join("tmp");
        let prefix = format!("{}-", manifest.hex());
        for entry in fs::read_dir(&tmp).map_err(io_err("list", &tmp))?.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                remove_tree(&entry.path())?;
            }
        }
        let dir = tmp.join(format!("{prefix}{}", random_suffix()));
        fs::create_dir_all(dir.join("rootfs")).map_err(io_err("create directory", &dir))?;
        Ok(dir)
    }

    /// Moves a finished build into place. Any older tree (another unpacker version) goes first.
    pub fn install_rootfs(&self, build: &Path, manifest: &Digest) -> Result<PathBuf, CacheError> {
        let dest = self.rootfs_dir(manifest);
        if dest.exists() {
            // Only reached when the existing tree is stale (rootfs_meta said no) and we hold
            // the exclusive rootfs lock, so no run is using it.
            let old =
                self.root
                    .join("tmp")
                    .join(format!("{}-old-{}", manifest.hex(), random_suffix()));
            fs::rename(&dest, &old).map_err(io_err("move aside stale rootfs", &dest))?;
            remove_tree(&old)?;
        }
        fs::rename(build, &dest).map_err(io_err("move finished rootfs to", &dest))?;
        Ok(dest.join("rootfs"))
    }

    /// Takes a lock, waiting for it.
    pub fn lock(&self, name: &LockName, mode: LockMode) -> Result<LockGuard, CacheError> {
        let file = self.lock_file(name)?;
        let res = match mode {
            LockMode::Shared => file.lock_shared(),
            LockMode::Exclusive => file.lock(),
        };
        res.map_err(io_err("lock", &self.lock_path(name)))?;
        Ok(LockGuard { _file: file })
    }

    /// Takes a lock if nobody holds a conflicting one.
    pub fn try_lock(
        &self,
        name: &LockName,
        mode: LockMode,
    ) -> Result<Option<LockGuard>, CacheError> {
        let file = self.lock_file(name)?;
        let res = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match res {
            Ok(()) => Ok(Some(LockGuard { _file: file })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(io_err("lock", &self.lock_path(name))(e)),
        }
    }

    fn lock_path(&self, name: &LockName) -> PathBuf {
        let file = match name {
            LockName::Cache => "cache.lock".to_string(),
            LockName::Refs => "refs.lock".to_string(),
            LockName::Blob(d) => format!("blob-{}.lock", d.hex()),
            LockName::Rootfs(d) => format!("rootfs-{}.lock", d.hex()),
            LockName::Run(id) => format!("run-{id}.lock"),
            LockName::Runner(hex) => format!("runner-{hex}.lock"),
        };
        self.root.join("locks").join(file)
    }

    fn lock_file(&self, name: &LockName) -> Result<File, CacheError> {
        let p = self.lock_path(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(io_err("open lock file", &p))
    }

    /// Reads `refs.json` (empty when absent).
    pub fn load_refs(&self) -> Result<Vec<RefRecord>, CacheError> {
        let p = self.root.join("refs.json");
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| CacheError::Corrupt {
                path: p,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err("read", &p)(e)),
        }
    }

    /// Changes `refs.json` under its lock, writing it atomically.
    pub fn update_refs<T>(
        &self,
        f: impl FnOnce(&mut Vec<RefRecord>) -> T,
    ) -> Result<T, CacheError> {
        let _guard = self.lock(&LockName::Refs, LockMode::Exclusive)?;
        let mut refs = self.load_refs()?;
        let out = f(&mut refs);
        let p = self.root.join("refs.json");
        let body = serde_json::to_vec_pretty(&refs).map_err(|e| CacheError::Corrupt {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        let tmp = self.root.join(format!("refs.json.{}.tmp", random_suffix()));
        write_atomic(&tmp, &p, &body)?;
        Ok(out)
    }

    /// Records that `reference` for `platform` now resolves to these digests, used now.
    pub fn record_ref(&self, rec: RefRecord) -> Result<(), CacheError> {
        self.update_refs(|refs| {
            refs.retain(|r| !(r.reference == rec.reference && r.platform == rec.platform));
            refs.push(rec);
        })
    }

    /// Removes what no reference needs: see [`PruneOptions`].
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneReport, CacheError> {
        let _gc = self.lock(&LockName::Cache, LockMode::Exclusive)?;
        let mut report = PruneReport::default();
        // Decide which references go: everything beyond the `keep` most recently used, whose
        // rootfs no run holds.
        let mut refs = self.load_refs()?;
        refs.sort_by_key(|r| std::cmp::Reverse(r.last_used));
        let keep = if opts.all {
            0
        } else {
            opts.keep.unwrap_or(usize::MAX)
        };
        let mut kept = Vec::new();
        let mut in_use = BTreeSet::new();
        for (i, r) in refs.into_iter().enumerate() {
            let busy = self
                .try_lock(&LockName::Rootfs(r.manifest.clone()), LockMode::Exclusive)?
                .is_none();
            if busy {
                in_use.insert(r.manifest.clone());
            }
            if i < keep || busy {
                kept.push(r);
            } else {
                report.refs_removed.push(r.reference.clone());
            }
        }
        let kept_manifests: BTreeSet<Digest> = kept.iter().map(|r| r.manifest.clone()).collect();
        self.update_refs(|refs| *refs = kept.clone())?;

        // Rootfs trees no kept reference names.
        let rootfs = self.root.join("rootfs");
        for entry in fs::read_dir(&rootfs)
            .map_err(io_err("list", &rootfs))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let Ok(d) = Digest::try_from(format!("sha256:{name}")) else {
                continue;
            };
            if kept_manifests.contains(&d) || in_use.contains(&d) {
                continue;
            }
            if let Some(_g) = self.try_lock(&LockName::Rootfs(d.clone()), LockMode::Exclusive)? {
                report.bytes_freed += tree_size(&entry.path());
                remove_tree(&entry.path())?;
                report.rootfs_removed += 1;
            }
        }

        // Blobs reachable from kept references: their index/manifest, config and layers.
        let mut live = BTreeSet::new();
        for r in &kept {
            live.insert(r.resolved.clone());
            live.insert(r.manifest.clone());
            if let Some(meta) = self.rootfs_meta(&r.manifest) {
                live.insert(meta.config.clone());
                live.extend(meta.layers.iter().cloned());
            } else if let Ok(bytes) = self.read_blob(&r.manifest) {
                live.extend(super::manifest_children(&bytes));
            }
        }
        let blobs = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&blobs)
            .map_err(io_err("list", &blobs))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().to_string();
            let keep_it =
                Digest::try_from(format!("sha256:{name}")).is_ok_and(|d| live.contains(&d));
            if !keep_it {
                report.bytes_freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
                fs::remove_file(entry.path()).map_err(io_err("remove blob", &entry.path()))?;
                report.blobs_removed += 1;
            }
        }

        // Leftovers of interrupted pulls: with the cache lock exclusive, no pull is running.
        for sub in ["ingest", "tmp"] {
            let dir = self.root.join(sub);
            for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))?.flatten() {
                report.bytes_freed += tree_size(&entry.path());
                remove_tree(&entry.path())?;
                report.leftovers_removed += 1;
            }
        }
        Ok(report)
    }
}

/// What `prune` may remove.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Keep only the N most recently used references (and what they need).
    pub keep: Option<usize>,
    /// Remove every reference whose rootfs is not in use.
    pub all: bool,
}

/// What `prune` removed.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// References dropped from the index.
    pub refs_removed: Vec<String>,
    /// Rootfs trees deleted.
    pub rootfs_removed: usize,
    /// Blobs deleted.
    pub blobs_removed: usize,
    /// Interrupted downloads and unpacks deleted.
    pub leftovers_removed: usize,
    /// Bytes freed (file sizes).
    pub bytes_freed: u64,
}

/// Writes `bytes` to `tmp` and renames it to `dest`, so readers see all or nothing.
fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let res = (|| {
        let mut f = File::create(tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(tmp, dest)
    })();
    if res.is_err() {
        let _ = fs::remove_file(tmp);
    }
    res.map_err(io_err("write", dest))
}

/// Removes a tree without following symlinks (std's remove_dir_all is symlink-safe), after
/// giving directories write permission back: an image may contain read-only directories.
pub fn remove_tree(path: &Path) -> Result<(), CacheError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) if path.is_file() || path.is_symlink() => {
            fs::remove_file(path).map_err(io_err("remove", path))
        }
        Err(e) => {
            // As root this never happens; unprivileged, a 0555 directory blocks its children.
            make_dirs_writable(path);
            fs::remove_dir_all(path).map_err(|_| io_err("remove", path)(e))
        }
    }
}

/// Creates `dir` and its missing parents readable by their owner only.
fn private_dirs(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Takes group and other permissions off the cache root. Images' device nodes, setuid files
/// and file capabilities, and every job's files, sit below it: no other local user may
/// reach them.
fn make_private(root: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::info!(cache = %root.display(), "making the cache private (mode 0700)");
        fs::set_permissions(root, fs::Permissions::from_mode(mode & 0o700))?;
    }
    Ok(())
}

fn make_dirs_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let _ = fs::set_permissions(
        path,
        fs::Permissions::from_mode(meta.permissions().mode() | 0o700),
    );
    if let Ok(rd) = fs::read_dir(path) {
        for e in rd.flatten() {
            make_dirs_writable(&e.path());
        }
    }
}

/// Total size of regular files under `path` (not following symlinks).
pub fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    fs::read_dir(path)
        .map(|rd| rd.flatten().map(|e| tree_size(&e.path())).sum())
        .unwrap_or(0)
}

/// A random suffix for temporary names.
pub fn random_suffix() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Digest {
        Digest::of(s.as_bytes())
    }

    #[test]
    fn digests_are_validated_before_becoming_paths() {
        assert!(Digest::try_from("sha256:../../etc/passwd").is_err());
        assert!(Digest::try_from(format!("sha256:{}", "A".repeat(64))).is_err());
        assert!(Digest::try_from(format!("sha512:{}", "a".repeat(128))).is_err());
        let ok = Digest::try_from(format!("sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(ok.hex(), "a".repeat(64));
    }

    #[test]
    fn put_blob_refuses_wrong_content() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let e = c.put_blob(&d("x"), b"y").unwrap_err();
        assert!(matches!(e, CacheError::DigestMismatch { .. }));
        assert!(!c.has_blob(&d("x"), None));
        c.put_blob(&d("x"), b"x").unwrap();
        assert!(c.has_blob(&d("x"), Some(1)));
        assert!(!c.has_blob(&d("x"), Some(2)));
        assert_eq!(c.read_blob(&d("x")).unwrap(), b"x");
        assert_eq!(fs::read_dir(t.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn exclusive_lock_excludes_and_is_released() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let name = LockName::Rootfs(d("m"));
        let g = c.lock(&name, LockMode::Shared).unwrap();
        assert!(c.try_lock(&name, LockMode::Shared).unwrap().is_some());
        assert!(c.try_lock(&name, LockMode::Exclusive).unwrap().is_none());
        drop(g);
        assert!(c.try_lock(&name, LockMode::Exclusive).unwrap().is_some());
    }

    #[test]
    fn prune_keeps_what_is_in_use_and_recent() {
        let t = tempfile::tempdir().unwrap();
        let c = Cache::open(t.path()).unwrap();
        let plat: Platform = "linux/amd64".parse().unwrap();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            let m = d(name);
            c.put_blob(&m, name.as_bytes()).unwrap();
            fs::create_dir_all(c.rootfs_dir(&m).join("rootfs")).unwrap();
            c.record_ref(RefRecord {
                reference: format!("r/{name}:latest"),
                platform: plat.clone(),
                resolved: m.clone(),
                manifest: m,
                last_used: i as u64,
            })
            .unwrap();
        }
        c.put_blob(&d("orphan"), b"orphan").unwrap();
        fs::write(c.ingest_path(&d("z")), b"partial").unwrap();
        // "a" is the least recently used but in use by a run.
        let _run = c.lock(&LockName::Rootfs(d("a")), LockMode::Shared).unwrap();
        let rep = c
            .prune(&PruneOptions {
                keep: Some(1),
                all: false,
            })
            .unwrap();
        assert_eq!(rep.refs_removed, vec!["r/b:latest".to_string()]);
        assert!(c.rootfs_dir(&d("a")).exists());
        assert!(!c.rootfs_dir(&d("b")).exists());
        assert!(c.rootfs_dir(&d("c")).exists());
        assert!(!c.has_blob(&d("orphan"), None));
        assert!(!c.has_blob(&d("b"), None));
        assert!(c.has_blob(&d("a"), None));
        assert!(!c.ingest_path(&d("z")).exists());
        let left: Vec<String> = c
            .load_refs()
            .unwrap()
            .into_iter()
            .map(|r| r.reference)
            .collect();
        assert_eq!(
            left,
            vec!["r/c:latest".to_string(), "r/a:latest".to_string()]
        );
    }
}

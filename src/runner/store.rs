//! Provided runners in the cache: `runners/<sha256>/tree/opt/actions-runner`, named by the
//! SHA-256 of the release tarball they were unpacked from, with `runner.json` beside the tree.
//!
//! An install happens under `locks/runner-<sha256>.lock` held exclusive: the tarball is
//! streamed into `ingest/`, hashed on the way and refused unless it matches the published
//! checksum, unpacked into `tmp/` with the image unpacker, and only then renamed into place.
//! So a second process waits and finds it finished, and an error or a crash leaves nothing in
//! `runners/`. A run holds the lock shared, and so does every `krunner run` for the runner
//! it currently hands out, which keeps [`RunnerStore::prune`] away from both.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::releases::Download;
use super::{Arch, RunnerError, Version, PROVIDED_ROOT};
use crate::image::cache::{self, Cache, LockGuard, LockMode, LockName};
use crate::image::unpack::{self, Compression, LayerInfo, UnpackOptions};

/// The runner user's uid and gid in every image that takes a provided runner.
pub const RUNNER_UID: u32 = 1001;

/// The largest tarball accepted (releases are about 200 MB).
const MAX_TARBALL: u64 = 2 << 30;

/// `runner.json`: what an installed runner is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Its version.
    pub version: Version,
    /// Its architecture.
    pub arch: Arch,
    /// The SHA-256 of its tarball (lower-case hex), also its directory's name.
    pub sha256: String,
    /// The tarball's file name.
    pub asset: String,
    /// Bytes of file content in the tree.
    pub size: u64,
    /// Unix seconds of the install.
    pub created: u64,
    /// The directory holding `opt/actions-runner` (filled in when read).
    #[serde(skip)]
    pub tree: PathBuf,
}

/// The provided runners of one cache.
#[derive(Debug, Clone)]
pub struct RunnerStore {
    cache: Cache,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> RunnerError + 'a {
    move |source| RunnerError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

impl RunnerStore {
    /// The store of `cache`.
    pub fn new(cache: Cache) -> RunnerStore {
        RunnerStore { cache }
    }

    fn dir(&self, sha256: &str) -> PathBuf {
        self.cache.root().join("runners").join(sha256)
    }

    /// The installed runner whose tarball had this SHA-256, if it is complete.
    pub fn get(&self, sha256: &str) -> Option<Installed> {
        let dir = self.dir(sha256);
        let mut i: Installed =
            serde_json::from_slice(&fs::read(dir.join("runner.json")).ok()?).ok()?;
        i.tree = dir.join("tree");
        (i.sha256 == sha256).then_some(i)
    }

    /// Every complete installed runner, newest version first.
    pub fn list(&self) -> Vec<Installed> {
        let mut out: Vec<Installed> = fs::read_dir(self.cache.root().join("runners"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| self.get(e.file_name().to_str()?))
            .collect();
        out.sort_by(|a, b| b.version.cmp(&a.version).then(b.created.cmp(&a.created)));
        out
    }

    /// The newest installed runner for `arch` (of `version`, if given): what `--offline` uses.
    pub fn newest(&self, arch: Arch, version: Option<Version>) -> Option<Installed> {
        self.list()
            .into_iter()
            .find(|i| i.arch == arch && version.is_none_or(|v| v == i.version))
    }

    /// Holds `installed` in use (a shared lock) until the guard is dropped.
    pub fn hold(&self, installed: &Installed) -> Result<LockGuard, RunnerError> {
        Ok(self.cache.lock(
            &LockName::Runner(installed.sha256.clone()),
            LockMode::Shared,
        )?)
    }

    /// Downloads, verifies and unpacks `download` unless it is installed already.
    pub async fn install(
        &self,
        http: &reqwest::Client,
        download: &Download,
        arch: Arch,
    ) -> Result<Installed, RunnerError> {
        let lock = LockName::Runner(download.sha256.clone());
        // Waiting for another installer blocks: do it off the runtime's threads. The cache
        // lock, shared, keeps `krunner prune` from removing the download under way.
        let cache = self.cache.clone();
        let (_cache_guard, _guard) = tokio::task::spawn_blocking(move || {
            let c = cache.lock(&LockName::Cache, LockMode::Shared)?;
            Ok::<_, crate::image::cache::CacheError>((c, cache.lock(&lock, LockMode::Exclusive)?))
        })
        .await
        .map_err(|e| RunnerError::Http {
            url: download.url.clone(),
            reason: format!("lock task: {e}"),
        })??;
        if let Some(i) = self.get(&download.sha256) {
            return Ok(i);
        }
        let part = self
            .cache
            .root()
            .join("ingest")
            .join(format!("runner-{}.part", download.sha256));
        let build = self.cache.root().join("tmp").join(format!(
            "runner-{}-{}",
            download.sha256,
            cache::random_suffix()
        ));
        // Whatever happens below (an error, or the future dropped on shutdown), neither the
        // partial download nor the partial tree stays.
        let _cleanup = Cleanup(vec![part.clone(), build.clone()]);
        let size = fetch_verified(http, download, &part).await?;
        let (part2, build2, d2) = (part.clone(), build.clone(), download.clone());
        let installed =
            tokio::task::spawn_blocking(move || unpack_tree(&part2, size, &build2, &d2, arch))
                .await
                .map_err(|e| RunnerError::Http {
                    url: download.url.clone(),
                    reason: format!("unpack task: {e}"),
                })??;
        let dest = self.dir(&download.sha256);
        if dest.exists() {
            // An incomplete leftover (no valid runner.json): only reached under the lock.
            cache::remove_tree(&dest)?;
        }
        fs::rename(&build, &dest).map_err(io("move the finished runner to", &dest))?;
        Ok(Installed {
            tree: dest.join("tree"),
            ..installed
        })
    }

    /// Removes every installed runner except `keep` (SHA-256s) that nothing holds; returns
    /// what went.
    pub fn prune(&self, keep: &[&str]) -> Result<Vec<Installed>, RunnerError> {
        let mut gone = Vec::new();
        for i in self.list() {
            if keep.contains(&i.sha256.as_str()) {
                continue;
            }
            let Some(guard) = self
                .cache
                .try_lock(&LockName::Runner(i.sha256.clone()), LockMode::Exclusive)?
            else {
                continue;
            };
            let dir = self.dir(&i.sha256);
            // Out of runners/ first, so no reader ever sees a half-removed tree.
            let aside = self.cache.root().join("tmp").join(format!(
                "runner-{}-old-{}",
                i.sha256,
                cache::random_suffix()
            ));
            fs::rename(&dir, &aside).map_err(io("move aside", &dir))?;
            // Out of sight now: the lock can go before the slow part.
            drop(guard);
            cache::remove_tree(&aside)?;
            gone.push(i);
        }
        Ok(gone)
    }
}

/// Removes its paths when dropped (they are gone already after a success).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                let _ = cache::remove_tree(p);
            } else {
                let _ = fs::remove_file(p);
            }
        }
    }
}

/// Streams the tarball into `part`, hashing it; refuses it unless it has the published
/// SHA-256. Returns its size.
async fn fetch_verified(
    http: &reqwest::Client,
    d: &Download,
    part: &Path,
) -> Result<u64, RunnerError> {
    let err = |reason: String| RunnerError::Http {
        url: d.url.clone(),
        reason: format!("{}: {reason}", d.asset),
    };
    let mut resp = http
        .get(&d.url)
        .send()
        .await
        .map_err(|e| err(crate::error_chain(&e)))?;
    if !resp.status().is_success() {
        return Err(err(format!("the server answered {}", resp.status())));
    }
    let mut file = fs::File::create(part).map_err(io("create", part))?;
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| err(crate::error_chain(&e)))?
    {
        size += chunk.len() as u64;
        if size > MAX_TARBALL {
            return Err(err(format!("larger than {MAX_TARBALL} bytes")));
        }
        hash.update(&chunk);
        file.write_all(&chunk).map_err(io("write", part))?;
    }
    file.sync_all().map_err(io("sync", part))?;
    let actual = hex::encode(hash.finalize());
    if actual != d.sha256 {
        return Err(RunnerError::ChecksumMismatch {
            version: d.version,
            asset: d.asset.clone(),
            expected: d.sha256.clone(),
            actual,
        });
    }
    Ok(size)
}

/// Unpacks the verified tarball into `build/tree/opt/actions-runner`, makes it the runner
/// user's, hides an image's own `/opt/actions-runner` below it, and writes `runner.json`.
fn unpack_tree(
    tarball: &Path,
    size: u64,
    build: &Path,
    d: &Download,
    arch: Arch,
) -> Result<Installed, RunnerError> {
    let root = build
        .join("tree")
        .join(PROVIDED_ROOT.trim_start_matches('/'));
    fs::create_dir_all(&root).map_err(io("create", &root))?;
    let file = fs::File::open(tarball).map_err(io("open", tarball))?;
    let digest = format!("sha256:{}", d.sha256);
    let stats = unpack::apply_layer(
        &root,
        &LayerInfo {
            digest: &digest,
            compression: Compression::Gzip,
            diff_id: None,
            compressed_size: size,
        },
        file,
        &UnpackOptions::default(),
    )
    .map_err(|source| RunnerError::Unpack {
        version: d.version,
        asset: d.asset.clone(),
        source: Box::new(source),
    })?;
    let listener = root.join("bin/Runner.Listener");
    if !fs::symlink_metadata(&listener).is_ok_and(|m| m.is_file()) {
        return Err(RunnerError::NotARunner {
            version: d.version,
            asset: d.asset.clone(),
        });
    }
    if nix::unistd::geteuid().is_root() {
        // The runner writes into its own directory (.runner, _diag, _work): it is the runner
        // user's, as an install in an image makes it. Once here, not per run.
        chown_tree(&root, RUNNER_UID)?;
        // overlayfs: an opaque directory hides what the layers below have at that path, so
        // an image's own, older runner does not show through the provided one.
        let name = format!("{}opaque", crate::rootless::overlay_xattr_prefix());
        xattr::set(&root, &name, b"y").map_err(io("mark opaque", &root))?;
    }
    let meta = Installed {
        version: d.version,
        arch,
        sha256: d.sha256.clone(),
        asset: d.asset.clone(),
        size: stats.bytes,
        created: cache::now_secs(),
        tree: PathBuf::new(),
    };
    let json = build.join("runner.json");
    let body = serde_json::to_vec_pretty(&meta).map_err(|e| {
        io("serialize", &json)(std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    })?;
    fs::write(&json, body).map_err(io("write", &json))?;
    Ok(meta)
}

/// Gives every entry under `dir` (itself included, links not followed) to `uid`:`uid`.
fn chown_tree(dir: &Path, uid: u32) -> Result<(), RunnerError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = fs::symlink_metadata(&p).map_err(io("stat", &p))?;
        if m.uid() != uid || m.gid() != uid {
            std::os::unix::fs::lchown(&p, Some(uid), Some(uid)).map_err(io("chown", &p))?;
        }
        if m.is_dir() {
            for e in fs::read_dir(&p).map_err(io("list", &p))? {
                stack.push(e.map_err(io("list", &p))?.path());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(files: &[(&str, &str)]) -> Vec<u8> {
        let mut b = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::fast(),
        ));
        for (name, body) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o755);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, name, body.as_bytes()).unwrap();
        }
        b.into_inner().unwrap().finish().unwrap()
    }

    fn download(t: &[u8]) -> Download {
        Download {
            version: Version(2, 330, 0),
            asset: "actions-runner-linux-x64-2.330.0.tar.gz".into(),
            url: "http://unused".into(),
            sha256: hex::encode(Sha256::digest(t)),
        }
    }

    #[test]
    fn a_tarball_becomes_a_tree_with_its_metadata() {
        let t = tempfile::tempdir().unwrap();
        let tb = tarball(&[
            ("./bin/Runner.Listener", "#!/bin/sh\n"),
            ("./config.sh", "x"),
        ]);
        let f = t.path().join("r.tgz");
        fs::write(&f, &tb).unwrap();
        let d = download(&tb);
        let build = t.path().join("build");
        let i = unpack_tree(&f, tb.len() as u64, &build, &d, Arch::X64).unwrap();
        assert_eq!(i.version, Version(2, 330, 0));
        assert!(build
            .join("tree/opt/actions-runner/bin/Runner.Listener")
            .is_file());
        let back: Installed =
            serde_json::from_slice(&fs::read(build.join("runner.json")).unwrap()).unwrap();
        assert_eq!(back.sha256, d.sha256);
        if nix::unistd::geteuid().is_root() {
            let m = fs::metadata(build.join("tree/opt/actions-runner/config.sh")).unwrap();
            assert_eq!((m.uid(), m.gid()), (RUNNER_UID, RUNNER_UID));
        }
    }

    #[test]
    fn a_tarball_without_a_listener_is_no_runner() {
        let t = tempfile::tempdir().unwrap();
        let tb = tarball(&[("./config.sh", "x")]);
        let f = t.path().join("r.tgz");
        fs::write(&f, &tb).unwrap();
        let e = unpack_tree(&f, 1, &t.path().join("b"), &download(&tb), Arch::X64)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("2.330.0") && e.contains("Runner.Listener"),
            "{e}"
        );
    }

    #[test]
    fn listing_and_pruning_skip_what_is_held() {
        let t = tempfile::tempdir().unwrap();
        let cache = Cache::open(t.path()).unwrap();
        let store = RunnerStore::new(cache);
        for (v, sha) in [(1, "a".repeat(64)), (2, "b".repeat(64))] {
            let dir = t.path().join("runners").join(&sha);
            fs::create_dir_all(dir.join("tree")).unwrap();
            let i = Installed {
                version: Version(2, v, 0),
                arch: Arch::X64,
                sha256: sha.clone(),
                asset: "a".into(),
                size: 1,
                created: 1,
                tree: PathBuf::new(),
            };
            fs::write(dir.join("runner.json"), serde_json::to_vec(&i).unwrap()).unwrap();
        }
        // Incomplete: no runner.json.
        fs::create_dir_all(t.path().join("runners").join("c".repeat(64))).unwrap();
        let l = store.list();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].version, Version(2, 2, 0));
        assert_eq!(
            store
                .newest(Arch::X64, Some(Version(2, 1, 0)))
                .unwrap()
                .sha256,
            "a".repeat(64)
        );
        assert!(store.newest(Arch::Arm64, None).is_none());
        let held = store.hold(&l[1]).unwrap();
        assert!(store.prune(&[]).unwrap().len() == 1);
        assert_eq!(store.list().len(), 1, "the held one stays");
        drop(held);
        assert_eq!(store.prune(&[]).unwrap().len(), 1);
        assert!(store.list().is_empty());
    }
}

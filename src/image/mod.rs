//! Images: from a name on the command line to a ready, shared root filesystem on disk.
//!
//! [`ImageStore::pull`] runs these steps, each of which can end the pull early when the cache
//! already has what follows from it:
//! 1. resolve the name ([`reference`]) and the platform (host's unless given);
//! 2. fetch the manifest or index by tag (one request; an unchanged tag stops here), pick the
//!    platform's manifest from an index;
//! 3. under the rootfs lock, fetch the config and the layers in parallel into the blob store
//!    ([`cache`], [`registry`]), each verified by size and digest before it enters;
//! 4. apply the layers in order ([`unpack`]) into a temporary tree as soon as each one and
//!    those below it are there, then rename the tree into place.
//!
//! Nothing enters `blobs/` or `rootfs/` unverified or unfinished; an error or Ctrl-C removes
//! the partial download and the partial tree.

pub mod auth;
pub mod cache;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod unpack;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oci_client::manifest::OciDescriptor;
use oci_client::Reference;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use cache::{Cache, CacheError, Digest, ImageMeta, LockMode, LockName, RefRecord};
use progress::Progress;
use reference::{Platform, ReferenceError};
use registry::{Registry, RegistryError, RegistryOptions};

/// Why a pull failed. Every variant names the image.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The name or platform is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// The registry failed or refused.
    #[error("pull {image}")]
    Registry {
        /// The image.
        image: String,
        /// What happened.
        #[source]
        source: Box<RegistryError>,
    },
    /// The cache failed.
    #[error("pull {image}: image cache")]
    Cache {
        /// The image.
        image: String,
        /// What happened.
        #[source]
        source: CacheError,
    },
    /// A layer could not be applied.
    #[error("pull {image}")]
    Unpack {
        /// The image.
        image: String,
        /// What happened (names the layer and entry).
        #[source]
        source: unpack::UnpackError,
    },
    /// The index has no manifest for the platform.
    #[error("pull {image}: no manifest for platform {wanted}; the image has: {available}")]
    NoPlatform {
        /// The image.
        image: String,
        /// The platform asked for.
        wanted: Platform,
        /// What the index lists.
        available: String,
    },
    /// A manifest, index or config that is not what the spec says.
    #[error("pull {image}: {what} {digest} is invalid: {reason}")]
    BadManifest {
        /// The image.
        image: String,
        /// manifest, index or config.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// Why.
        reason: String,
    },
    /// A layer type we cannot apply.
    #[error("pull {image}: layer {digest} has unsupported media type {media_type:?}")]
    UnsupportedLayer {
        /// The image.
        image: String,
        /// The layer.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// `--offline` and the image is not cached.
    #[error(
        "{image} ({platform}) is not in the cache at {cache} and --offline forbids fetching it"
    )]
    NotCached {
        /// The image.
        image: String,
        /// The platform.
        platform: Platform,
        /// The cache directory.
        cache: PathBuf,
    },
    /// Ctrl-C or another cancellation.
    #[error("pull {image}: interrupted")]
    Interrupted {
        /// The image.
        image: String,
    },
    /// A worker thread died (a bug).
    #[error("pull {image}: internal error: {reason}")]
    Internal {
        /// The image.
        image: String,
        /// What.
        reason: String,
    },
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform to pick; the host's when None.
    pub platform: Option<Platform>,
    /// Prefix for the short names.
    pub image_repo: String,
    /// Registry access.
    pub registry: RegistryOptions,
    /// Use the cache only.
    pub offline: bool,
    /// Progress bars (else log lines).
    pub interactive: bool,
    /// Parallel layer downloads.
    pub parallel_downloads: usize,
    /// Unpacker limits and privileges.
    pub unpack: unpack::UnpackOptions,
}

/// A ready image.
#[derive(Debug, Clone)]
pub struct PulledImage {
    /// The full reference.
    pub reference: String,
    /// The platform manifest digest.
    pub manifest: Digest,
    /// The rootfs tree (read-only by contract: runs clone it).
    pub rootfs: PathBuf,
    /// What it was built from.
    pub meta: ImageMeta,
}

/// A cancellation signal shared by the pull's tasks and its unpack thread.
#[derive(Clone, Debug)]
pub struct Cancel(Arc<watch::Sender<bool>>);

impl Default for Cancel {
    fn default() -> Self {
        Cancel(Arc::new(watch::channel(false).0))
    }
}

impl Cancel {
    /// Asks everything to stop.
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }

    /// Whether stop was asked.
    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when stop is asked.
    pub async fn cancelled(&self) {
        let mut rx = self.0.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }
}

#[derive(Deserialize)]
struct IndexJson {
    manifests: Vec<IndexEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: i64,
    platform: Option<PlatformJson>,
}

#[derive(Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
}

#[derive(Deserialize)]
struct ManifestJson {
    config: OciDescriptor,
    layers: Vec<OciDescriptor>,
}

#[derive(Deserialize)]
struct ConfigJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    variant: Option<String>,
    rootfs: RootfsJson,
}

#[derive(Deserialize)]
struct RootfsJson {
    diff_ids: Vec<String>,
}

/// The blobs an image manifest names (config and layers); empty for anything else.
pub fn manifest_children(bytes: &[u8]) -> Vec<Digest> {
    let Ok(m) = serde_json::from_slice::<ManifestJson>(bytes) else {
        return Vec::new();
    };
    std::iter::once(&m.config)
        .chain(m.layers.iter())
        .filter_map(|d| Digest::try_from(d.digest.as_str()).ok())
        .collect()
}

/// The image cache plus the logic to fill it.
#[derive(Debug, Clone)]
pub struct ImageStore {
    cache: Cache,
}

/// Runs a blocking closure off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    tokio::task::spawn_blocking(f).await
}

/// Removes a path on drop unless disarmed: partial downloads and trees never outlive an error.
struct Scrap(Option<PathBuf>);

impl Scrap {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Scrap {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = cache::remove_tree(&p);
        }
    }
}

impl ImageStore {
    /// An image store over a cache directory.
    pub fn new(cache: Cache) -> ImageStore {
        ImageStore { cache }
    }

    /// The cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Makes sure `name` is in the cache as a ready rootfs and returns it.
    pub async fn pull(
        &self,
        name: &str,
        opts: &PullOptions,
        cancel: &Cancel,
    ) -> Result<PulledImage, PullError> {
        let reference = reference::resolve(name, &opts.image_repo)?;
        let platform = match &opts.platform {
            Some(p) => p.clone(),
            None => Platform::host()?,
        };
        let image = reference.whole();
        let ctx = Ctx {
            image: image.clone(),
            cache: self.cache.clone(),
        };
        let c = self.cache.clone();
        let _shared = blocking(move || c.lock(&LockName::Cache, LockMode::Shared))
            .await
            .map_err(|e| ctx.internal(e))?
            .map_err(|e| ctx.cache(e))?;

        // A digest reference, or --offline: the cache may answer without the network.
        let known = self.find_ref(&image, &platform).map_err(|e| ctx.cache(e))?;
        if let Some(done) = self.answer_offline(&ctx, &reference, known.as_ref(), &platform, opts) {
            return done;
        }

        let reg =
            Arc::new(Registry::connect(&reference, &opts.registry).map_err(|e| ctx.registry(e))?);
        let (top, top_digest) = tokio::select! {
            r = reg.manifest(&reference) => r.map_err(|e| ctx.registry(e))?,
            _ = cancel.cancelled() => return Err(ctx.interrupted()),
        };
        // An unchanged tag: one manifest request, nothing else.
        if let Some(rec) = &known {
            if rec.resolved == top_digest {
                if let Some(meta) = self.cache.rootfs_meta(&rec.manifest) {
                    tracing::debug!(image = %image, "unchanged since the last pull");
                    return ctx.finish(top_digest, &platform, meta);
                }
            }
        }
        self.cache
            .put_blob(&top_digest, &top)
            .map_err(|e| ctx.cache(e))?;

        let (manifest_digest, manifest_bytes) = self
            .platform_manifest(&ctx, &reference, &reg, &top, &top_digest, &platform, cancel)
            .await?;

        if let Some(meta) = self.cache.rootfs_meta(&manifest_digest) {
            return ctx.finish(top_digest, &platform, meta);
        }
        // Build it, unless another process is doing so: then wait and use its result.
        let c = self.cache.clone();
        let md = manifest_digest.clone();
        let _build_lock = blocking(move || c.lock(&LockName::Rootfs(md), LockMode::Exclusive))
            .await
            .map_err(|e| ctx.internal(e))?
            .map_err(|e| ctx.cache(e))?;
        if let Some(meta) = self.cache.rootfs_meta(&manifest_digest) {
            return ctx.finish(top_digest, &platform, meta);
        }
        let meta = self
            .build(
                &ctx,
                &reference,
                reg,
                &manifest_digest,
                &manifest_bytes,
                &platform,
                opts,
                cancel,
            )
            .await?;
        ctx.finish(top_digest, &platform, meta)
    }

    /// What the cache alone can answer: an image pinned by a digest it already holds, or
    /// anything cached under `--offline` (and, offline, the error when it is not cached).
    fn answer_offline(
        &self,
        ctx: &Ctx,
        reference: &Reference,
        known: Option<&RefRecord>,
        platform: &Platform,
        opts: &PullOptions,
    ) -> Option<Result<PulledImage, PullError>> {
        if let Some(rec) = known {
            let pinned_hit = reference
                .digest()
                .is_some_and(|d| d == rec.resolved.as_str() || d == rec.manifest.as_str());
            if opts.offline || pinned_hit {
                if let Some(meta) = self.cache.rootfs_meta(&rec.manifest) {
                    return Some(ctx.finish(rec.resolved.clone(), platform, meta));
                }
            }
        }
        opts.offline.then(|| {
            Err(PullError::NotCached {
                image: ctx.image.clone(),
                platform: platform.clone(),
                cache: self.cache.root().to_path_buf(),
            })
        })
    }

    /// The image manifest for `platform`: `top` itself, or the one an index names for it (from
    /// the cache when it is there, else fetched by digest and checked against it).
    #[allow(clippy::too_many_arguments)]
    async fn platform_manifest(
        &self,
        ctx: &Ctx,
        reference: &Reference,
        reg: &Registry,
        top: &[u8],
        top_digest: &Digest,
        platform: &Platform,
        cancel: &Cancel,
    ) -> Result<(Digest, Vec<u8>), PullError> {
        if !is_index(top) {
            return Ok((top_digest.clone(), top.to_vec()));
        }
        let chosen = pick_platform(ctx, top, top_digest, platform)?;
        if self.cache.has_blob(&chosen, None) {
            let bytes = self.cache.read_blob(&chosen).map_err(|e| ctx.cache(e))?;
            return Ok((chosen, bytes));
        }
        let by_digest = Reference::with_digest(
            reference.registry().to_string(),
            reference.repository().to_string(),
            chosen.to_string(),
        );
        let (b, d) = tokio::select! {
            r = reg.manifest(&by_digest) => r.map_err(|e| ctx.registry(e))?,
            _ = cancel.cancelled() => return Err(ctx.interrupted()),
        };
        if d != chosen {
            return Err(ctx.bad("manifest", &chosen, format!("registry sent {d}")));
        }
        self.cache.put_blob(&d, &b).map_err(|e| ctx.cache(e))?;
        Ok((chosen, b.to_vec()))
    }

    /// The cached record of `image` for `platform`.
    fn find_ref(&self, image: &str, platform: &Platform) -> Result<Option<RefRecord>, CacheError> {
        Ok(self
            .cache
            .load_refs()?
            .into_iter()
            .find(|r| r.reference == image && &r.platform == platform))
    }

    /// Fetches config and layers and unpacks them into a new rootfs (under the rootfs lock).
    #[allow(clippy::too_many_arguments)]
    async fn build(
        &self,
        ctx: &Ctx,
        reference: &Reference,
        reg: Arc<Registry>,
        manifest_digest: &Digest,
        manifest_bytes: &[u8],
        platform: &Platform,
        opts: &PullOptions,
        cancel: &Cancel,
    ) -> Result<ImageMeta, PullError> {
        let manifest: ManifestJson = serde_json::from_slice(manifest_bytes)
            .map_err(|e| ctx.bad("manifest", manifest_digest, e.to_string()))?;
        let config_digest = Digest::try_from(manifest.config.digest.as_str())
            .map_err(|e| ctx.bad("manifest", manifest_digest, e.to_string()))?;
        // Validate every layer before downloading anything.
        let layers = checked_layers(ctx, &manifest, manifest_digest)?;
        let src = Source {
            ctx,
            reg,
            reference,
            cancel,
        };
        // The config first: it has the diff_ids that check each unpacked layer.
        let config = self
            .fetch_config(
                &src,
                &manifest.config,
                &config_digest,
                platform,
                layers.len(),
            )
            .await?;

        let build_dir = self
            .cache
            .new_build_dir(manifest_digest)
            .map_err(|e| ctx.cache(e))?;
        let mut scrap = Scrap(Some(build_dir.clone()));
        let progress = Progress::new(&ctx.image, opts.interactive);
        let stats = self
            .download_and_unpack(
                &src,
                &layers,
                &config.rootfs.diff_ids,
                build_dir.join("rootfs"),
                opts,
                &progress,
            )
            .await;
        progress.finish();
        let stats = stats?;

        let meta = ImageMeta {
            manifest: manifest_digest.clone(),
            config: config_digest,
            platform: platform.clone(),
            layers: layers.iter().map(|l| l.digest.clone()).collect(),
            size: stats.bytes,
            entries: stats.entries,
            unpacker: cache::UNPACKER_VERSION,
            created: cache::now_secs(),
        };
        self.install(ctx, &build_dir, &meta)?;
        scrap.disarm();
        progress.step(&format!(
            "unpacked {} layers: {} entries, {}",
            layers.len(),
            stats.entries,
            progress::human_bytes(stats.bytes)
        ));
        Ok(meta)
    }

    /// Fetches the image config and checks it against the platform and the layer count.
    async fn fetch_config(
        &self,
        src: &Source<'_>,
        desc: &OciDescriptor,
        digest: &Digest,
        platform: &Platform,
        layer_count: usize,
    ) -> Result<ConfigJson, PullError> {
        let ctx = src.ctx;
        fetch_blob(ctx, &src.reg, src.reference, desc, digest, None, src.cancel).await?;
        let bytes = self.cache.read_blob(digest).map_err(|e| ctx.cache(e))?;
        let config: ConfigJson =
            serde_json::from_slice(&bytes).map_err(|e| ctx.bad("config", digest, e.to_string()))?;
        if !config.os.is_empty()
            && !platform.matches(&config.os, &config.architecture, config.variant.as_deref())
        {
            return Err(PullError::NoPlatform {
                image: ctx.image.clone(),
                wanted: platform.clone(),
                available: format_platform(
                    &config.os,
                    &config.architecture,
                    config.variant.as_deref(),
                ),
            });
        }
        if config.rootfs.diff_ids.len() != layer_count {
            return Err(ctx.bad(
                "config",
                digest,
                format!(
                    "{} diff_ids for {} layers",
                    config.rootfs.diff_ids.len(),
                    layer_count
                ),
            ));
        }
        Ok(config)
    }

    /// Downloads the layers in parallel while one thread applies layer i into `root` once
    /// layers 0..=i are there. On any error both sides stop before this returns, so the
    /// caller's scrap guard removes a tree nobody writes to any more.
    async fn download_and_unpack(
        &self,
        src: &Source<'_>,
        layers: &[Layer],
        diff_ids: &[String],
        root: PathBuf,
        opts: &PullOptions,
        progress: &Progress,
    ) -> Result<TreeStats, PullError> {
        let ctx = src.ctx;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<usize>();
        let abort = Arc::new(AtomicBool::new(false));
        let unpack_job = UnpackJob {
            root,
            layers: layers
                .iter()
                .zip(diff_ids)
                .map(|(l, diff_id)| LayerJob {
                    path: self.cache.blob_path(&l.digest),
                    digest: l.digest.to_string(),
                    diff_id: diff_id.clone(),
                    compression: l.compression,
                    size: u64::try_from(l.desc.size).unwrap_or(0),
                })
                .collect(),
            opts: opts.unpack.clone(),
            cancel: src.cancel.clone(),
            abort: abort.clone(),
            progress: progress.clone(),
        };
        let mut unpacker = tokio::task::spawn_blocking(move || unpack_job.run(ready_rx));
        let mut downloads = spawn_downloads(src, layers, opts.parallel_downloads, progress);

        let count = layers.len();
        let mut ready = vec![false; count];
        let mut next = 0;
        let mut unpack_result = None;
        let mut download_error = None;
        while !downloads.is_empty() {
            tokio::select! {
                joined = downloads.join_next() => {
                    let Some(joined) = joined else { break };
                    let i = match joined.map_err(|e| ctx.internal(e)).and_then(|r| r) {
                        Ok(i) => i,
                        Err(e) => {
                            download_error = Some(e);
                            break;
                        }
                    };
                    ready[i] = true;
                    while next < count && ready[next] {
                        // A send error means the unpacker stopped early; its result says why.
                        let _ = ready_tx.send(next);
                        next += 1;
                    }
                }
                r = &mut unpacker => {
                    // The unpacker finished before all downloads did: only possible on error.
                    unpack_result = Some(r);
                    break;
                }
            }
        }
        drop(ready_tx);
        if let Some(e) = download_error {
            abort.store(true, Ordering::Relaxed);
            downloads.abort_all();
            let _ = unpacker.await;
            return Err(e);
        }
        let result = match unpack_result {
            Some(r) => r,
            None => unpacker.await,
        }
        .map_err(|e| ctx.internal(e))?;
        result.map_err(|failure| match failure {
            UnpackFailure::Cancelled => ctx.interrupted(),
            UnpackFailure::Layer(source) => PullError::Unpack {
                image: ctx.image.clone(),
                source,
            },
            UnpackFailure::Open(path, e) => ctx.cache(CacheError::Io {
                op: "open blob",
                path,
                source: e,
            }),
        })
    }

    /// Writes the image's record into its build directory and moves the tree into place.
    fn install(&self, ctx: &Ctx, build_dir: &Path, meta: &ImageMeta) -> Result<(), PullError> {
        let meta_json = serde_json::to_vec_pretty(meta).map_err(|e| ctx.internal(e))?;
        let meta_path = build_dir.join("image.json");
        std::fs::write(&meta_path, meta_json).map_err(|e| {
            ctx.cache(CacheError::Io {
                op: "write",
                path: meta_path.clone(),
                source: e,
            })
        })?;
        self.cache
            .install_rootfs(build_dir, &meta.manifest)
            .map_err(|e| ctx.cache(e))?;
        Ok(())
    }
}

/// Where one pull downloads from, and what stops it.
struct Source<'a> {
    ctx: &'a Ctx,
    reg: Arc<Registry>,
    reference: &'a Reference,
    cancel: &'a Cancel,
}

/// One layer of a manifest, checked: its digest, how it is compressed, its descriptor.
struct Layer {
    digest: Digest,
    compression: unpack::Compression,
    desc: OciDescriptor,
}

/// The manifest's layers, each with a valid digest, a known media type and a size.
fn checked_layers(
    ctx: &Ctx,
    manifest: &ManifestJson,
    manifest_digest: &Digest,
) -> Result<Vec<Layer>, PullError> {
    manifest
        .layers
        .iter()
        .map(|l| {
            let digest = Digest::try_from(l.digest.as_str())
                .map_err(|e| ctx.bad("manifest", manifest_digest, e.to_string()))?;
            let compression =
                unpack::compression_for_media_type(&l.media_type).ok_or_else(|| {
                    PullError::UnsupportedLayer {
                        image: ctx.image.clone(),
                        digest: l.digest.clone(),
                        media_type: l.media_type.clone(),
                    }
                })?;
            if l.size < 0 {
                return Err(ctx.bad(
                    "manifest",
                    manifest_digest,
                    format!("layer {digest} has a negative size"),
                ));
            }
            Ok(Layer {
                digest,
                compression,
                desc: l.clone(),
            })
        })
        .collect()
}

/// Starts every layer's download, at most `parallel` at a time; each yields its index.
fn spawn_downloads(
    src: &Source<'_>,
    layers: &[Layer],
    parallel: usize,
    progress: &Progress,
) -> JoinSet<Result<usize, PullError>> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
    let mut downloads = JoinSet::new();
    let count = layers.len();
    for (i, l) in layers.iter().enumerate() {
        let size = u64::try_from(l.desc.size).unwrap_or(0);
        let lp = progress.layer(i, count, l.digest.as_str(), size);
        let (reg, reference, desc, digest, sem) = (
            src.reg.clone(),
            src.reference.clone(),
            l.desc.clone(),
            l.digest.clone(),
            sem.clone(),
        );
        let ctx = src.ctx.clone();
        let cancel = src.cancel.clone();
        downloads.spawn(async move {
            let _permit = sem.acquire_owned().await;
            fetch_blob(&ctx, &reg, &reference, &desc, &digest, Some(lp), &cancel)
                .await
                .map(|()| i)
        });
    }
    downloads
}

/// The image being pulled, for errors and for recording the result.
#[derive(Clone)]
struct Ctx {
    image: String,
    cache: Cache,
}

impl Ctx {
    fn cache(&self, source: CacheError) -> PullError {
        PullError::Cache {
            image: self.image.clone(),
            source,
        }
    }

    fn registry(&self, source: RegistryError) -> PullError {
        PullError::Registry {
            image: self.image.clone(),
            source: Box::new(source),
        }
    }

    fn internal(&self, e: impl std::fmt::Display) -> PullError {
        PullError::Internal {
            image: self.image.clone(),
            reason: e.to_string(),
        }
    }

    fn interrupted(&self) -> PullError {
        PullError::Interrupted {
            image: self.image.clone(),
        }
    }

    fn bad(&self, what: &'static str, digest: &Digest, reason: String) -> PullError {
        PullError::BadManifest {
            image: self.image.clone(),
            what,
            digest: digest.to_string(),
            reason,
        }
    }

    /// Records the reference and returns the image.
    fn finish(
        &self,
        resolved: Digest,
        platform: &Platform,
        meta: ImageMeta,
    ) -> Result<PulledImage, PullError> {
        self.cache
            .record_ref(RefRecord {
                reference: self.image.clone(),
                platform: platform.clone(),
                resolved,
                manifest: meta.manifest.clone(),
                last_used: cache::now_secs(),
            })
            .map_err(|e| self.cache(e))?;
        Ok(PulledImage {
            reference: self.image.clone(),
            manifest: meta.manifest.clone(),
            rootfs: self.cache.rootfs_dir(&meta.manifest).join("rootfs"),
            meta,
        })
    }
}

fn is_index(bytes: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Probe {
        manifests: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Probe>(bytes).is_ok_and(|p| p.manifests.is_some())
}

fn format_platform(os: &str, arch: &str, variant: Option<&str>) -> String {
    match variant {
        Some(v) if !v.is_empty() => format!("{os}/{arch}/{v}"),
        _ => format!("{os}/{arch}"),
    }
}

/// Chooses the platform's manifest from an index, or lists what the index has.
fn pick_platform(
    ctx: &Ctx,
    bytes: &[u8],
    digest: &Digest,
    want: &Platform,
) -> Result<Digest, PullError> {
    let index: IndexJson =
        serde_json::from_slice(bytes).map_err(|e| ctx.bad("index", digest, e.to_string()))?;
    let mut available = BTreeSet::new();
    for m in &index.manifests {
        let Some(p) = &m.platform else { continue };
        // Attestations and other artifacts carry "unknown/unknown".
        if p.os == "unknown" || m.media_type.contains("index") {
            continue;
        }
        if want.matches(&p.os, &p.architecture, p.variant.as_deref()) {
            if m.size <= 0 {
                return Err(ctx.bad("index", digest, format!("entry {} has no size", m.digest)));
            }
            return Digest::try_from(m.digest.as_str())
                .map_err(|e| ctx.bad("index", digest, e.to_string()));
        }
        available.insert(format_platform(
            &p.os,
            &p.architecture,
            p.variant.as_deref(),
        ));
    }
    Err(PullError::NoPlatform {
        image: ctx.image.clone(),
        wanted: want.clone(),
        available: if available.is_empty() {
            "no platforms".to_string()
        } else {
            available.into_iter().collect::<Vec<_>>().join(", ")
        },
    })
}

/// Puts one blob in the store unless it is there: lock, download to `ingest/`, verify, rename.
async fn fetch_blob(
    ctx: &Ctx,
    reg: &Registry,
    reference: &Reference,
    desc: &OciDescriptor,
    digest: &Digest,
    progress: Option<progress::LayerProgress>,
    cancel: &Cancel,
) -> Result<(), PullError> {
    let size = u64::try_from(desc.size).ok();
    if ctx.cache.has_blob(digest, size) {
        if let Some(p) = &progress {
            p.cached();
        }
        return Ok(());
    }
    let c = ctx.cache.clone();
    let d = digest.clone();
    let _lock = blocking(move || c.lock(&LockName::Blob(d), LockMode::Exclusive))
        .await
        .map_err(|e| ctx.internal(e))?
        .map_err(|e| ctx.cache(e))?;
    // Another process may have fetched it while we waited.
    if ctx.cache.has_blob(digest, size) {
        if let Some(p) = &progress {
            p.cached();
        }
        return Ok(());
    }
    let ingest = ctx.cache.ingest_path(digest);
    let mut scrap = Scrap(Some(ingest.clone()));
    let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = match &progress {
        Some(p) => {
            let p = p.clone();
            Arc::new(move |n| p.inc(n))
        }
        None => Arc::new(|_| {}),
    };
    tokio::select! {
        r = reg.blob_to_file(reference, desc, &ingest, on_bytes) => { r.map_err(|e| ctx.registry(e))?; }
        _ = cancel.cancelled() => return Err(ctx.interrupted()),
    }
    ctx.cache.commit_ingest(digest).map_err(|e| ctx.cache(e))?;
    scrap.disarm();
    if let Some(p) = &progress {
        p.done();
    }
    Ok(())
}

struct LayerJob {
    path: PathBuf,
    digest: String,
    diff_id: String,
    compression: unpack::Compression,
    size: u64,
}

struct UnpackJob {
    root: PathBuf,
    layers: Vec<LayerJob>,
    opts: unpack::UnpackOptions,
    cancel: Cancel,
    /// Set when a download failed: stop the layer being applied.
    abort: Arc<AtomicBool>,
    progress: Progress,
}

enum UnpackFailure {
    Cancelled,
    Open(PathBuf, std::io::Error),
    Layer(unpack::UnpackError),
}

/// Sums what the layers did.
#[derive(Default)]
struct TreeStats {
    entries: u64,
    bytes: u64,
}

impl UnpackJob {
    /// Applies layer i when its index arrives; stops when the sender goes away early.
    fn run(self, ready: std::sync::mpsc::Receiver<usize>) -> Result<TreeStats, UnpackFailure> {
        let mut stats = TreeStats::default();
        for (i, layer) in self.layers.iter().enumerate() {
            match ready.recv() {
                Ok(n) if n == i => {}
                _ => return Err(UnpackFailure::Cancelled),
            }
            if self.cancel.is_cancelled() || self.abort.load(Ordering::Relaxed) {
                return Err(UnpackFailure::Cancelled);
            }
            let file = std::fs::File::open(&layer.path)
                .map_err(|e| UnpackFailure::Open(layer.path.clone(), e))?;
            let reader = CancellableReader {
                inner: file,
                cancel: &self.cancel,
                abort: &self.abort,
            };
            let info = unpack::LayerInfo {
                digest: &layer.digest,
                compression: layer.compression,
                diff_id: Some(&layer.diff_id),
                compressed_size: layer.size,
            };
            let s = unpack::apply_layer(Path::new(&self.root), &info, reader, &self.opts).map_err(
                |e| {
                    if self.cancel.is_cancelled() || self.abort.load(Ordering::Relaxed) {
                        UnpackFailure::Cancelled
                    } else {
                        UnpackFailure::Layer(e)
                    }
                },
            )?;
            self.progress.step(&format!(
                "layer {}/{} {}: applied {} entries",
                i + 1,
                self.layers.len(),
                &layer.digest[..19.min(layer.digest.len())],
                s.entries
            ));
            stats.entries += s.entries;
            stats.bytes += s.bytes;
        }
        Ok(stats)
    }
}

/// A reader that fails once the pull is cancelled, so a long unpack stops promptly.
struct CancellableReader<'a, R> {
    inner: R,
    cancel: &'a Cancel,
    abort: &'a AtomicBool,
}

impl<R: std::io::Read> std::io::Read for CancellableReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.cancel.is_cancelled() || self.abort.load(Ordering::Relaxed) {
            // Not ErrorKind::Interrupted: readers retry on that.
            return Err(std::io::Error::other("pull cancelled"));
        }
        self.inner.read(buf)
    }
}

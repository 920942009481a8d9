//! Layer applier: applies one OCI/Docker image layer (a compressed tar blob) on top of a
//! rootfs directory, with the overlay semantics of the OCI image-spec `layer.md`
//! (whiteouts, opaque directories, "apply, don't just extract").
//!
//! # Threat model
//!
//! The layer content is hostile: it may carry names with `..` or a leading `/`, symlinks
//! that point outside the rootfs followed by entries "inside" them, hard links to host
//! files, a symlink named `.` that would replace the rootfs itself (CVE-2021-29136),
//! whiteouts that try to delete through such symlinks, a bare `.wh.`, decompression
//! bombs and truncated or corrupt streams. Nothing may be created, changed or removed
//! outside `root`. The rootfs directory itself is trusted, and nothing else writes to it
//! while a layer is applied (no defence against concurrent local attackers beyond what
//! the `*at` calls give for free).
//!
//! Containment works on file descriptors, never on path strings: each entry's parent
//! directory is opened from an `O_PATH` fd of `root` with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so in-image symlinks that stay
//! inside are followed and any that lead outside fail with `EXDEV` (refused as
//! [`UnpackErrorKind::EscapingSymlink`]). The final component is never followed: every
//! change is an `*at(parent_fd, name, …)` call with no-follow semantics. Needs Linux ≥ 5.6.
//!
//! # Order of steps
//!
//! 1. Decompress (gzip / zstd / none), count the decompressed bytes against the bomb
//!    limit and hash them with SHA-256, all while streaming.
//! 2. Parse entries with `tar::Archive::entries()` (parsing only). For each: normalise
//!    the name, handle whiteouts (`.wh.NAME` at once, `.wh..wh..opq` recorded), resolve
//!    the parent safely, create the entry, then set ownership → mode → xattrs → mtime.
//!    Directory metadata is only recorded.
//! 3. Drain the rest of the stream and compare its digest with the layer's `diff_id`.
//! 4. Opaque directories: remove every child not written by this layer.
//! 5. Directory metadata, deepest first (children would otherwise bump the mtime, and a
//!    read-only mode would block the directory's own children).
//!
//! A stream that ends early is refused as truncated, except a plain tar cut exactly at
//! an entry boundary, which only the `diff_id` check can catch: pass it whenever known.
//! Hard links get no metadata of their own (they share their target's inode).
//!
//! On error the rootfs is left half-applied: callers unpack into a scratch directory and
//! discard it on failure.

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Permissions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::rc::Rc;

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, UnlinkatFlags};
use sha2::{Digest, Sha256};
use xattr::FileExt;

/// Buffer for file contents and draining; large so each read goes deep into the decoder.
const COPY_BUF: usize = 256 * 1024;
/// Buffer between the blob reader and the decompressor.
const INPUT_BUF: usize = 256 * 1024;
/// Mode of parent directories the layer does not list itself.
const IMPLICIT_DIR_MODE: u32 = 0o755;

/// How a layer blob is compressed (from its media type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip (possibly several concatenated members).
    Gzip,
    /// zstd (possibly several concatenated frames).
    Zstd,
}

/// Which layer is being applied: used in errors and for the diff_id check.
#[derive(Debug, Clone, Copy)]
pub struct LayerInfo<'a> {
    /// Digest of the compressed blob (`sha256:<hex>`), for messages.
    pub digest: &'a str,
    /// How the blob is compressed.
    pub compression: Compression,
    /// Expected digest of the uncompressed tar (`config.rootfs.diff_ids[i]`), if known.
    pub diff_id: Option<&'a str>,
    /// Size of the compressed blob in bytes, the base of the decompression-bomb limit.
    pub compressed_size: u64,
}

/// Knobs. `Default`: privileged = (geteuid()==0), host_root = root of the host,
/// max_expansion_ratio = 100, min_expansion_allowance = 512 MiB.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Running with root privileges: apply ownership, all xattr namespaces, create FIFOs.
    pub privileged: bool,
    /// Root of the host, not of a user namespace (rootless): device nodes can be made and
    /// `trusted.*` xattrs set. Without it they are skipped.
    pub host_root: bool,
    /// The decompressed stream may be at most this many times the compressed size …
    pub max_expansion_ratio: u64,
    /// … or this many bytes, whichever is larger.
    pub min_expansion_allowance: u64,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        Self {
            privileged: nix::unistd::geteuid().is_root(),
            host_root: crate::rootless::host_root(),
            max_expansion_ratio: 100,
            min_expansion_allowance: 512 * 1024 * 1024,
        }
    }
}

/// What applying one layer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LayerStats {
    /// Tar entries processed (including whiteouts; not counting global PAX headers).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
    /// Device and FIFO entries skipped because the run is not privileged.
    pub skipped_devices: u64,
}

/// Why a layer could not be applied.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackErrorKind {
    /// A name has a `..` component.
    #[error("path climbs out of the rootfs with \"..\"")]
    PathTraversal,
    /// A name starts with `/`.
    #[error("absolute path in a layer")]
    AbsolutePath,
    /// A name is empty.
    #[error("empty path")]
    EmptyPath,
    /// A name contains a NUL byte.
    #[error("path contains a NUL byte")]
    NulInPath,
    /// The parent path goes through a symlink that leads outside the rootfs.
    #[error("parent path goes through a symlink that leads outside the rootfs")]
    EscapingSymlink,
    /// A hard link's target is outside the rootfs (or is the rootfs itself).
    #[error("hard link target {target:?} is outside the rootfs")]
    HardlinkOutside {
        /// The link target as written in the layer.
        target: String,
    },
    /// A non-directory entry is named `.`, i.e. would replace the rootfs itself.
    #[error("non-directory entry would replace the rootfs directory itself")]
    ReplacesRoot,
    /// A whiteout `.wh.` that names nothing.
    #[error("bare whiteout \".wh.\" names no file")]
    BareWhiteout,
    /// A whiteout of `.` or `..`.
    #[error("whiteout names \".\" or \"..\"")]
    InvalidWhiteout,
    /// A symlink or hard link entry without a target.
    #[error("link entry has no target")]
    MissingLinkTarget,
    /// The `diff_id` is not `sha256:<64 hex digits>`.
    #[error("unsupported diff_id {0:?} (expected sha256:<64 hex digits>)")]
    BadDiffId(String),
    /// The uncompressed stream does not hash to the `diff_id`.
    #[error("diff_id mismatch: expected {expected}, got {actual}")]
    DiffIdMismatch {
        /// The diff_id from the image config.
        expected: String,
        /// The digest of what was read.
        actual: String,
    },
    /// The stream ended before the archive did.
    #[error("layer stream ended early (truncated)")]
    Truncated,
    /// The compressed stream or the tar structure is damaged.
    #[error("layer stream is corrupt")]
    Corrupt {
        /// What the decoder or tar parser said.
        #[source]
        source: io::Error,
    },
    /// The decompressed stream exceeds the allowed size (decompression bomb).
    #[error("decompressed layer exceeds the limit of {limit} bytes (decompression bomb?)")]
    TooLarge {
        /// The limit that was exceeded.
        limit: u64,
    },
    /// A tar entry type this applier does not handle.
    #[error("unsupported tar entry type {0:?}")]
    UnsupportedEntryType(char),
    /// A filesystem operation failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A layer could not be applied: which layer, which entry, and why.
#[derive(Debug)]
pub struct UnpackError {
    /// Digest of the layer blob.
    pub digest: String,
    /// The entry name as written in the layer, when the error concerns one entry.
    pub entry: Option<String>,
    /// What went wrong.
    pub kind: UnpackErrorKind,
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer {}: ", self.digest)?;
        if let Some(entry) = &self.entry {
            write!(f, "entry {entry:?}: ")?;
        }
        write!(f, "{}", self.kind)
    }
}

impl std::error::Error for UnpackError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The kind's text is already in our Display; point straight at its cause.
        std::error::Error::source(&self.kind)
    }
}

type KResult<T> = Result<T, UnpackErrorKind>;

fn io_err(op: &'static str) -> impl FnOnce(io::Error) -> UnpackErrorKind {
    move |source| UnpackErrorKind::Io { op, source }
}

fn errno_err(op: &'static str) -> impl FnOnce(Errno) -> UnpackErrorKind {
    move |e| UnpackErrorKind::Io {
        op,
        source: e.into(),
    }
}

fn corrupt(e: io::Error) -> UnpackErrorKind {
    UnpackErrorKind::Corrupt { source: e }
}

/// Maps an OCI/Docker layer media type to a Compression (None for an unknown type → caller errors).
pub fn compression_for_media_type(mt: &str) -> Option<Compression> {
    use oci_spec::image::MediaType;
    match MediaType::from(mt) {
        MediaType::ImageLayer | MediaType::ImageLayerNonDistributable => Some(Compression::None),
        MediaType::ImageLayerGzip | MediaType::ImageLayerNonDistributableGzip => {
            Some(Compression::Gzip)
        }
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd => {
            Some(Compression::Zstd)
        }
        // Docker's schema 2 layer types, which oci-spec does not name.
        MediaType::Other(o)
            if o == "application/vnd.docker.image.rootfs.diff.tar.gzip"
                || o == "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" =>
        {
            Some(Compression::Gzip)
        }
        _ => None,
    }
}

/// Applies one layer (compressed blob as a reader) on top of the directory `root`.
pub fn apply_layer<R: std::io::Read>(
    root: &std::path::Path,
    layer: &LayerInfo<'_>,
    blob: R,
    opts: &UnpackOptions,
) -> Result<LayerStats, UnpackError> {
    let fail = |kind| UnpackError {
        digest: layer.digest.to_owned(),
        entry: None,
        kind,
    };
    // Check the diff_id before touching the disk.
    let expected = layer.diff_id.map(parse_diff_id).transpose().map_err(fail)?;
    let limit = layer
        .compressed_size
        .saturating_mul(opts.max_expansion_ratio)
        .max(opts.min_expansion_allowance);
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(errno_err("open rootfs directory")(e)))?;

    let input = BufReader::with_capacity(INPUT_BUF, blob);
    let decoder = match layer.compression {
        Compression::None => Decoder::Plain(input),
        Compression::Gzip => Decoder::Gzip(Box::new(flate2::bufread::MultiGzDecoder::new(input))),
        Compression::Zstd => Decoder::Zstd(
            zstd::stream::read::Decoder::with_buffer(input)
                .map_err(|e| fail(io_err("start zstd decoder")(e)))?,
        ),
    };
    let bomb = Rc::new(Cell::new(false));
    let mut tee = Tee {
        inner: decoder,
        hasher: Sha256::new(),
        total: 0,
        limit,
        bomb: Rc::clone(&bomb),
    };
    let mut ap = Applier {
        digest: layer.digest,
        opts,
        root: Rc::new(root_fd),
        cache: None,
        written: HashSet::new(),
        opaque: Vec::new(),
        dirs: Vec::new(),
        buf: vec![0; COPY_BUF],
        bomb,
        limit,
        stats: LayerStats::default(),
    };

    {
        let mut archive = tar::Archive::new(&mut tee);
        let entries = archive
            .entries()
            .map_err(|e| ap.fail(None, ap.stream_kind(e)))?;
        for item in entries {
            let mut entry = item.map_err(|e| ap.fail(None, ap.stream_kind(e)))?;
            ap.apply_entry(&mut entry)?;
        }
    }
    // The digest covers the whole stream, including the tar's trailing zero blocks.
    loop {
        match tee.read(&mut ap.buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ap.fail(None, ap.stream_kind(e))),
        }
    }
    let actual = hex::encode(tee.hasher.finalize());
    if let Some(expected) = expected {
        if expected != actual {
            return Err(ap.fail(
                None,
                UnpackErrorKind::DiffIdMismatch {
                    expected: format!("sha256:{expected}"),
                    actual: format!("sha256:{actual}"),
                },
            ));
        }
    }
    ap.apply_opaques()?;
    ap.apply_dir_meta()?;
    tracing::debug!(
        layer = layer.digest,
        entries = ap.stats.entries,
        bytes = ap.stats.bytes,
        decompressed = tee.total,
        "applied layer"
    );
    Ok(ap.stats)
}

/// Returns the lowercase hex of a `sha256:<hex>` diff_id.
fn parse_diff_id(d: &str) -> KResult<String> {
    match d.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(h.to_ascii_lowercase())
        }
        _ => Err(UnpackErrorKind::BadDiffId(d.to_owned())),
    }
}

enum Decoder<R: BufRead> {
    Plain(R),
    // Boxed: the gzip state is large and the enum moves around by value.
    Gzip(Box<flate2::bufread::MultiGzDecoder<R>>),
    Zstd(zstd::stream::read::Decoder<'static, R>),
}

impl<R: BufRead> Read for Decoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(r) => r.read(buf),
            Decoder::Gzip(r) => r.read(buf),
            Decoder::Zstd(r) => r.read(buf),
        }
    }
}

/// Hashes and counts the decompressed stream; fails the read that crosses the limit.
struct Tee<R> {
    inner: R,
    hasher: Sha256,
    total: u64,
    limit: u64,
    bomb: Rc<Cell<bool>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.total = self.total.saturating_add(n as u64);
        if self.total > self.limit {
            // The tar crate may wrap this error, so flag it out of band as well.
            self.bomb.set(true);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Metadata taken from a header (and its PAX records).
struct Meta {
    uid: u32,
    gid: u32,
    mode: u32,
    mtime: TimeSpec,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What `remove_entry` removed; anything but a regular file may sit on a cached path.
#[derive(Debug, PartialEq, Eq)]
enum Removed {
    Nothing,
    File,
    Other,
}

struct Applier<'a> {
    digest: &'a str,
    opts: &'a UnpackOptions,
    root: Rc<OwnedFd>,
    /// Last resolved parent directory, by normalised path. Cleared whenever a directory
    /// or symlink is removed, since the cached fd might then be for a stale path.
    cache: Option<(Vec<u8>, Rc<OwnedFd>)>,
    /// Normalised paths this layer wrote, with all their ancestors (for opaque dirs).
    written: HashSet<Vec<u8>>,
    opaque: Vec<Vec<u8>>,
    dirs: Vec<(Vec<u8>, Meta)>,
    buf: Vec<u8>,
    bomb: Rc<Cell<bool>>,
    limit: u64,
    stats: LayerStats,
}

impl Applier<'_> {
    fn fail(&self, entry: Option<&[u8]>, kind: UnpackErrorKind) -> UnpackError {
        UnpackError {
            digest: self.digest.to_owned(),
            entry: entry.map(|e| String::from_utf8_lossy(e).into_owned()),
            kind,
        }
    }

    /// Classifies an error from reading the layer stream.
    fn stream_kind(&self, e: io::Error) -> UnpackErrorKind {
        if self.bomb.get() {
            UnpackErrorKind::TooLarge { limit: self.limit }
        } else if e.kind() == io::ErrorKind::UnexpectedEof {
            UnpackErrorKind::Truncated
        } else {
            corrupt(e)
        }
    }

    fn apply_entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        if entry.header().entry_type().is_pax_global_extensions() {
            return Ok(());
        }
        self.stats.entries += 1;
        // `Entry::path_bytes` applies PAX `path` and GNU long names (not the raw field).
        let raw = entry.path_bytes().into_owned();
        self.entry_inner(entry, &raw)
            .map_err(|k| self.fail(Some(&raw), k))
    }

    fn entry_inner<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, raw: &[u8]) -> KResult<()> {
        use tar::EntryType as E;
        let path = normalise(raw)?;
        let (dir, name) = split(&path);
        let mut ty = entry.header().entry_type();
        // Pre-POSIX tars mark directories as old-style regular files named `x/`.
        if entry.header().as_old().linkflag[0] == 0 && raw.ends_with(b"/") {
            ty = E::Directory;
        }

        if let Some(rest) = name.strip_prefix(b".wh.") {
            if rest == b".wh..opq" {
                return self.opaque_marker(dir);
            }
            if rest.starts_with(b".wh.") {
                return Ok(()); // other AUFS metadata
            }
            if rest.is_empty() {
                return Err(UnpackErrorKind::BareWhiteout);
            }
            if rest == b"." || rest == b".." {
                return Err(UnpackErrorKind::InvalidWhiteout);
            }
            return self.whiteout(dir, rest);
        }
        if path.is_empty() && ty != E::Directory {
            return Err(UnpackErrorKind::ReplacesRoot);
        }

        match ty {
            E::Directory => self.directory(entry, &path),
            E::Regular | E::Continuous | E::GNUSparse => self.regular(entry, &path),
            E::Symlink => self.symlink(entry, &path),
            E::Link => self.hardlink(entry, &path),
            E::Char | E::Block | E::Fifo => self.special(entry, &path),
            other => Err(UnpackErrorKind::UnsupportedEntryType(char::from(
                other.as_byte(),
            ))),
        }
    }

    /// Opens (and optionally creates) directory `dir` (normalised, relative to root).
    /// `Ok(None)`: it does not exist and `create` is false.
    fn parent(&mut self, dir: &[u8], create: bool) -> KResult<Option<Rc<OwnedFd>>> {
        if dir.is_empty() {
            return Ok(Some(Rc::clone(&self.root)));
        }
        if let Some((key, fd)) = &self.cache {
            if key.as_slice() == dir {
                return Ok(Some(Rc::clone(fd)));
            }
        }
        let fd = match open_beneath(&self.root, dir) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => self.create_dirs(dir)?,
            Err(Errno::ENOENT | Errno::ENOTDIR) if !create => return Ok(None),
            Err(e) => return Err(resolve_err(e)),
        };
        let fd = Rc::new(fd);
        self.cache = Some((dir.to_vec(), Rc::clone(&fd)));
        Ok(Some(fd))
    }

    fn parent_required(&mut self, dir: &[u8]) -> KResult<Rc<OwnedFd>> {
        self.parent(dir, true)?.ok_or_else(|| UnpackErrorKind::Io {
            op: "resolve parent directory",
            source: Errno::ENOENT.into(),
        })
    }

    /// Creates the missing directories of `dir` one component at a time, each looked up
    /// through the same `RESOLVE_BENEATH` resolution as everything else.
    fn create_dirs(&mut self, dir: &[u8]) -> KResult<OwnedFd> {
        let mut cur: Option<OwnedFd> = None;
        let mut start = 0;
        while start <= dir.len() {
            let end = dir[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(dir.len(), |i| start + i);
            let prefix = &dir[..end];
            let comp = &dir[start..end];
            start = end + 1;
            match open_beneath(&self.root, prefix) {
                Ok(fd) => {
                    cur = Some(fd);
                    continue;
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(resolve_err(e)),
            }
            let pfd = match &cur {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            match nix::sys::stat::mkdirat(pfd, comp, Mode::from_bits_truncate(IMPLICIT_DIR_MODE)) {
                Ok(()) => {
                    let fd = nix::fcntl::openat(
                        pfd,
                        comp,
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno_err("open new parent directory"))?;
                    // mkdir's mode is filtered by the umask; the spec'd mode is 0755.
                    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(IMPLICIT_DIR_MODE))
                        .map_err(errno_err("chmod new parent directory"))?;
                    cur = Some(fd);
                }
                Err(Errno::EEXIST) => {
                    cur = Some(open_beneath(&self.root, prefix).map_err(resolve_err)?);
                }
                Err(e) => return Err(errno_err("create parent directory")(e)),
            }
        }
        cur.ok_or(UnpackErrorKind::EmptyPath)
    }

    /// Removes `name` from `parent` (recursively, never following symlinks).
    fn remove_at(&mut self, parent: BorrowedFd<'_>, name: &[u8]) -> KResult<()> {
        let removed = remove_entry(parent, name).map_err(errno_err("remove existing entry"))?;
        if removed == Removed::Other {
            self.cache = None;
        }
        Ok(())
    }

    fn mark_written(&mut self, path: &[u8]) {
        let mut p = path;
        loop {
            // Ancestors of a recorded path are always recorded, so stop at the first hit.
            if self.written.contains(p) {
                return;
            }
            self.written.insert(p.to_vec());
            match p.iter().rposition(|&b| b == b'/') {
                Some(i) => p = &p[..i],
                None => return,
            }
        }
    }

    fn whiteout(&mut self, dir: &[u8], target: &[u8]) -> KResult<()> {
        let Some(parent) = self.parent(dir, false)? else {
            return Ok(()); // nothing there to hide
        };
        self.remove_at(parent.as_fd(), target)
    }

    fn opaque_marker(&mut self, dir: &[u8]) -> KResult<()> {
        // Resolve now so a marker under an escaping symlink is refused like any entry.
        self.parent_required(dir)?;
        self.mark_written(dir);
        self.opaque.push(dir.to_vec());
        Ok(())
    }

    fn meta<R: Read>(&self, entry: &mut tar::Entry<'_, R>) -> KResult<Meta> {
        let h = entry.header();
        let old = h.as_old();
        let mode = numeric(h.mode().map(u64::from), &old.mode)? & 0o7777;
        let uid = numeric(h.uid(), &old.uid)?;
        let gid = numeric(h.gid(), &old.gid)?;
        let secs = i64::try_from(numeric(h.mtime(), &old.mtime)?).unwrap_or(i64::MAX);
        let (mode, uid, gid) = match (u32::try_from(mode), u32::try_from(uid), u32::try_from(gid)) {
            (Ok(m), Ok(u), Ok(g)) => (m, u, g),
            _ => return Err(corrupt(io::Error::other("uid or gid out of range"))),
        };
        let mut mtime = TimeSpec::new(secs, 0);
        let mut xattrs = Vec::new();
        if let Some(exts) = entry.pax_extensions().map_err(corrupt)? {
            for ext in exts {
                let ext = ext.map_err(corrupt)?;
                let key = ext.key_bytes();
                if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
                    // Unprivileged, only the user namespace can be written.
                    if self.opts.privileged || name.starts_with(b"user.") {
                        xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
                    }
                } else if key == b"mtime" {
                    if let Some(ts) = parse_pax_time(ext.value_bytes()) {
                        mtime = ts;
                    }
                }
            }
        }
        Ok(Meta {
            uid,
            gid,
            mode,
            mtime,
            xattrs,
        })
    }

    fn directory<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> KResult<()> {
        let meta = self.meta(entry)?;
        if !path.is_empty() {
            let (dir, name) = split(path);
            let parent = self.parent_required(dir)?;
            let mode = Mode::from_bits_truncate(0o700);
            match nix::sys::stat::mkdirat(parent.as_fd(), name, mode) {
                Ok(()) => {}
                Err(Errno::EEXIST) => {
                    let st =
                        nix::sys::stat::fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(errno_err("stat existing entry"))?;
                    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                        self.remove_at(parent.as_fd(), name)?;
                        nix::sys::stat::mkdirat(parent.as_fd(), name, mode)
                            .map_err(errno_err("create directory"))?;
                    }
                }
                Err(e) => return Err(errno_err("create directory")(e)),
            }
            self.mark_written(path);
        }
        // Mode, owner, xattrs and mtime are applied at the end, deepest first.
        self.dirs.push((path.to_vec(), meta));
        Ok(())
    }

    fn regular<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> KResult<()> {
        let meta = self.meta(entry)?;
        let (dir, name) = split(path);
        let parent = self.parent_required(dir)?;
        let fd = match create_excl(parent.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) => {
                self.remove_at(parent.as_fd(), name)?;
                create_excl(parent.as_fd(), name).map_err(errno_err("create file"))?
            }
            Err(e) => return Err(errno_err("create file")(e)),
        };
        let mut file = File::from(fd);
        let written = self.copy(entry, &mut file)?;
        if entry.header().entry_type() != tar::EntryType::GNUSparse && written != entry.size() {
            return Err(UnpackErrorKind::Truncated);
        }
        self.stats.bytes += written;
        self.fd_meta(&file, &meta)?;
        self.mark_written(path);
        Ok(())
    }

    fn copy<R: Read>(&mut self, src: &mut R, dst: &mut File) -> KResult<u64> {
        let mut total = 0u64;
        loop {
            let n = match src.read(&mut self.buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.stream_kind(e)),
            };
            dst.write_all(&self.buf[..n])
                .map_err(io_err("write file contents"))?;
            total += n as u64;
        }
    }

    fn symlink<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> KResult<()> {
        let meta = self.meta(entry)?;
        // `Entry::link_name_bytes` applies PAX `linkpath` and GNU long link names.
        let target = entry
            .link_name_bytes()
            .ok_or(UnpackErrorKind::MissingLinkTarget)?
            .into_owned();
        if target.is_empty() {
            return Err(UnpackErrorKind::MissingLinkTarget);
        }
        let (dir, name) = split(path);
        let parent = self.parent_required(dir)?;
        let target = OsStr::from_bytes(&target);
        match nix::unistd::symlinkat(target, parent.as_fd(), name) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove_at(parent.as_fd(), name)?;
                nix::unistd::symlinkat(target, parent.as_fd(), name)
                    .map_err(errno_err("create symlink"))?;
            }
            Err(e) => return Err(errno_err("create symlink")(e)),
        }
        self.at_meta(parent.as_fd(), name, &meta, false)?;
        self.mark_written(path);
        Ok(())
    }

    fn hardlink<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> KResult<()> {
        let raw_target = entry
            .link_name_bytes()
            .ok_or(UnpackErrorKind::MissingLinkTarget)?
            .into_owned();
        let outside = || UnpackErrorKind::HardlinkOutside {
            target: String::from_utf8_lossy(&raw_target).into_owned(),
        };
        let target = match normalise(&raw_target) {
            Ok(t) if t.is_empty() => return Err(outside()),
            Ok(t) => t,
            Err(UnpackErrorKind::AbsolutePath | UnpackErrorKind::PathTraversal) => {
                return Err(outside())
            }
            Err(UnpackErrorKind::EmptyPath) => return Err(UnpackErrorKind::MissingLinkTarget),
            Err(e) => return Err(e),
        };
        if target == path {
            return Ok(()); // a link to itself: replacing it would destroy the target
        }
        let (dir, name) = split(path);
        let parent = self.parent_required(dir)?;
        let (tdir, tname) = split(&target);
        // Looked up without touching the cache, which holds the new link's parent.
        let tparent = match open_dir_uncached(&self.root, &self.cache, tdir) {
            Ok(fd) => fd,
            Err(Errno::EXDEV) => return Err(outside()),
            Err(e) => return Err(errno_err("resolve hard link target")(e)),
        };
        let link = |tp: &OwnedFd| {
            nix::unistd::linkat(tp.as_fd(), tname, parent.as_fd(), name, AtFlags::empty())
        };
        match link(&tparent) {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove_at(parent.as_fd(), name)?;
                link(&tparent).map_err(errno_err("create hard link"))?;
            }
            Err(e) => return Err(errno_err("create hard link")(e)),
        }
        // A hard link shares its target's inode, whose metadata came with the target.
        self.mark_written(path);
        Ok(())
    }

    fn special<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>, path: &[u8]) -> KResult<()> {
        /// A device number field: an empty (all NUL or blank) field is 0, as Go's archive/tar
        /// and umoci read it; anything else that is not a number is corrupt.
        fn lenient_dev(parsed: std::io::Result<Option<u32>>, raw: Option<[u8; 8]>) -> KResult<u32> {
            match parsed {
                Ok(v) => Ok(v.unwrap_or(0)),
                Err(_) if raw.is_some_and(|r| r.iter().all(|b| *b == 0 || *b == b' ')) => Ok(0),
                Err(e) => Err(corrupt(e)),
            }
        }
        let ty = entry.header().entry_type();
        // A FIFO needs only root of a user namespace; a device node, root of the host.
        let allowed = match ty {
            tar::EntryType::Fifo => self.opts.privileged,
            _ => self.opts.privileged && self.opts.host_root,
        };
        if !allowed {
            tracing::warn!(
                layer = self.digest,
                entry = %String::from_utf8_lossy(path),
                "skipping device/FIFO entry: not running as root of the host"
            );
            self.stats.skipped_devices += 1;
            return Ok(());
        }
        let meta = self.meta(entry)?;
        let h = entry.header();
        let kind = match ty {
            tar::EntryType::Char => SFlag::S_IFCHR,
            tar::EntryType::Block => SFlag::S_IFBLK,
            _ => SFlag::S_IFIFO,
        };
        // A FIFO has no device number; writers often leave its fields empty (all NUL).
        let (major, minor) = if kind == SFlag::S_IFIFO {
            (0, 0)
        } else {
            let raw = |major: bool| {
                h.as_ustar()
                    .map(|u| if major { u.dev_major } else { u.dev_minor })
                    .or_else(|| {
                        h.as_gnu()
                            .map(|g| if major { g.dev_major } else { g.dev_minor })
                    })
            };
            (
                lenient_dev(h.device_major(), raw(true))?,
                lenient_dev(h.device_minor(), raw(false))?,
            )
        };
        let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
        let (dir, name) = split(path);
        let parent = self.parent_required(dir)?;
        let perm = Mode::from_bits_truncate(0o600);
        let mk = || nix::sys::stat::mknodat(parent.as_fd(), name, kind, perm, dev);
        match mk() {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                self.remove_at(parent.as_fd(), name)?;
                mk().map_err(errno_err("create device node"))?;
            }
            Err(e) => return Err(errno_err("create device node")(e)),
        }
        self.at_meta(parent.as_fd(), name, &meta, true)?;
        self.mark_written(path);
        Ok(())
    }

    /// Ownership, then mode (chown clears setuid/setgid), xattrs, mtime: on an open fd.
    fn fd_meta(&self, file: &File, m: &Meta) -> KResult<()> {
        if self.opts.privileged {
            std::os::unix::fs::fchown(file, Some(m.uid), Some(m.gid)).map_err(io_err("chown"))?;
        }
        file.set_permissions(Permissions::from_mode(m.mode))
            .map_err(io_err("chmod"))?;
        for (name, value) in &m.xattrs {
            self.xattr_result(name, file.set_xattr(OsStr::from_bytes(name), value))?;
        }
        nix::sys::stat::futimens(file, &m.mtime, &m.mtime).map_err(errno_err("set mtime"))
    }

    /// The same as `fd_meta`, by name in `parent` without following a symlink.
    fn at_meta(&self, parent: BorrowedFd<'_>, name: &[u8], m: &Meta, chmod: bool) -> KResult<()> {
        if self.opts.privileged {
            nix::unistd::fchownat(
                parent,
                name,
                Some(Uid::from_raw(m.uid)),
                Some(Gid::from_raw(m.gid)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(errno_err("chown"))?;
        }
        if chmod {
            nix::sys::stat::fchmodat(
                parent,
                name,
                Mode::from_bits_truncate(m.mode),
                FchmodatFlags::NoFollowSymlink,
            )
            .map_err(errno_err("chmod"))?;
        }
        if !m.xattrs.is_empty() {
            // No safe fd-relative lsetxattr here: go through the pinned parent's magic
            // link; lsetxattr does not follow the final component.
            let mut p = PathBuf::from(format!("/proc/self/fd/{}", parent.as_raw_fd()));
            p.push(OsStr::from_bytes(name));
            for (xname, value) in &m.xattrs {
                self.xattr_result(xname, xattr::set(&p, OsStr::from_bytes(xname), value))?;
            }
        }
        nix::sys::stat::utimensat(
            parent,
            name,
            &m.mtime,
            &m.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(errno_err("set mtime"))
    }

    fn xattr_result(&self, name: &[u8], r: io::Result<()>) -> KResult<()> {
        let Err(e) = r else { return Ok(()) };
        let errno = e.raw_os_error().map(Errno::from_raw);
        let ignorable = match errno {
            // The filesystem has no xattrs (or not this namespace).
            Some(Errno::EOPNOTSUPP) => true,
            // user.* is refused on symlinks and devices; unprivileged, more is refused.
            // In a user namespace, trusted.* and security.* other than capabilities are.
            Some(Errno::EPERM) => {
                !self.opts.privileged || !self.opts.host_root || name.starts_with(b"user.")
            }
            _ => false,
        };
        if ignorable {
            tracing::debug!(
                xattr = %String::from_utf8_lossy(name),
                error = %e,
                "ignoring xattr the filesystem refused"
            );
            Ok(())
        } else {
            Err(UnpackErrorKind::Io {
                op: "set xattr",
                source: e,
            })
        }
    }

    /// After the layer: under each opaque dir, remove everything this layer did not write.
    fn apply_opaques(&mut self) -> Result<(), UnpackError> {
        for dir in std::mem::take(&mut self.opaque) {
            let file = match self.open_dir_nofollow(&dir) {
                Ok(Some(f)) => f,
                Ok(None) => continue,
                Err(k) => return Err(self.fail(Some(&dir), k)),
            };
            let mut prefix = dir.clone();
            self.prune(OwnedFd::from(file), &mut prefix)
                .map_err(|k| self.fail(Some(&dir), k))?;
            self.cache = None;
        }
        Ok(())
    }

    fn prune(&self, dirfd: OwnedFd, prefix: &mut Vec<u8>) -> KResult<()> {
        let mut d = Dir::from_fd(dirfd).map_err(errno_err("read opaque directory"))?;
        let children = list_dir(&mut d).map_err(errno_err("read opaque directory"))?;
        for (name, ty) in children {
            let base = prefix.len();
            if !prefix.is_empty() {
                prefix.push(b'/');
            }
            prefix.extend_from_slice(&name);
            if self.written.contains(prefix.as_slice()) {
                // Written by this layer; if it is a directory, its lower children still go.
                let is_dir = match ty {
                    Some(t) => t == Type::Directory,
                    None => {
                        nix::sys::stat::fstatat(d.as_fd(), &name[..], AtFlags::AT_SYMLINK_NOFOLLOW)
                            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
                    }
                };
                if is_dir {
                    let sub = nix::fcntl::openat(
                        d.as_fd(),
                        &name[..],
                        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(errno_err("open directory"))?;
                    self.prune(sub, prefix)?;
                }
            } else {
                remove_entry(d.as_fd(), &name).map_err(errno_err("remove hidden entry"))?;
            }
            prefix.truncate(base);
        }
        Ok(())
    }

    /// Opens directory `path` itself (final component not followed); `None` if it is
    /// gone or no longer a directory.
    fn open_dir_nofollow(&mut self, path: &[u8]) -> KResult<Option<File>> {
        let (parent, name): (Rc<OwnedFd>, &[u8]) = if path.is_empty() {
            (Rc::clone(&self.root), b".")
        } else {
            let (dir, name) = split(path);
            match self.parent(dir, false)? {
                Some(p) => (p, name),
                None => return Ok(None),
            }
        };
        match nix::fcntl::openat(
            parent.as_fd(),
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => Ok(None),
            Err(e) => Err(errno_err("open directory")(e)),
        }
    }

    fn apply_dir_meta(&mut self) -> Result<(), UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        // Deepest first; siblings stay together for the parent cache; the sort is stable
        // so a later entry for the same dir wins.
        dirs.sort_by(|(a, _), (b, _)| {
            (Reverse(depth(a)), a.as_slice()).cmp(&(Reverse(depth(b)), b.as_slice()))
        });
        for (path, meta) in &dirs {
            let r = self
                .open_dir_nofollow(path)
                .and_then(|f| f.map_or(Ok(()), |f| self.fd_meta(&f, meta)));
            r.map_err(|k| self.fail(Some(path), k))?;
        }
        Ok(())
    }
}

/// A parsed numeric header field; an empty field (all NUL/space) counts as 0, as in
/// Go's archive/tar, which wrote most layers in the wild.
fn numeric(parsed: io::Result<u64>, raw: &[u8]) -> KResult<u64> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|&b| b == 0 || b == b' ') => Ok(0),
        Err(e) => Err(corrupt(e)),
    }
}

/// Cleans a layer name: strips `./`, `.` and empty components and a trailing `/`;
/// refuses absolute names, `..`, NUL and empty names. The root itself becomes `""`.
fn normalise(raw: &[u8]) -> KResult<Vec<u8>> {
    if raw.is_empty() {
        return Err(UnpackErrorKind::EmptyPath);
    }
    if raw.contains(&0) {
        return Err(UnpackErrorKind::NulInPath);
    }
    if raw[0] == b'/' {
        return Err(UnpackErrorKind::AbsolutePath);
    }
    let mut out = Vec::with_capacity(raw.len());
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err(UnpackErrorKind::PathTraversal),
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out)
}

/// Splits a normalised path into (parent, name).
fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

fn depth(path: &[u8]) -> usize {
    if path.is_empty() {
        0
    } else {
        1 + path.iter().filter(|&&b| b == b'/').count()
    }
}

/// Parses a PAX time (`secs[.frac]`, possibly negative).
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = int.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: i64 = 0;
    for i in 0..9 {
        nanos = nanos * 10 + frac.as_bytes().get(i).map_or(0, |d| i64::from(d - b'0'));
    }
    Some(if neg {
        if nanos == 0 {
            TimeSpec::new(-secs, 0)
        } else {
            TimeSpec::new(-secs - 1, 1_000_000_000 - nanos)
        }
    } else {
        TimeSpec::new(secs, nanos)
    })
}

fn resolve_err(e: Errno) -> UnpackErrorKind {
    match e {
        Errno::EXDEV => UnpackErrorKind::EscapingSymlink,
        Errno::ENOSYS => errno_err("openat2 (needs Linux 5.6 or later)")(e),
        e => errno_err("resolve parent directory")(e),
    }
}

/// Opens directory `dir` below `root`, following only symlinks that stay beneath it.
fn open_beneath(root: &OwnedFd, dir: &[u8]) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let mut tries = 0;
    loop {
        match nix::fcntl::openat2(root.as_fd(), dir, how) {
            // The kernel asks for a retry when a rename raced with the lookup.
            Err(Errno::EAGAIN) if tries < 8 => tries += 1,
            r => return r,
        }
    }
}

/// Like `Applier::parent(dir, false)`, but leaves the cache alone.
fn open_dir_uncached(
    root: &Rc<OwnedFd>,
    cache: &Option<(Vec<u8>, Rc<OwnedFd>)>,
    dir: &[u8],
) -> nix::Result<Rc<OwnedFd>> {
    if dir.is_empty() {
        return Ok(Rc::clone(root));
    }
    if let Some((key, fd)) = cache {
        if key.as_slice() == dir {
            return Ok(Rc::clone(fd));
        }
    }
    open_beneath(root, dir).map(Rc::new)
}

fn create_excl(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        parent,
        name,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
}

fn list_dir(d: &mut Dir) -> nix::Result<Vec<(Vec<u8>, Option<Type>)>> {
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push((n.to_vec(), e.file_type()));
        }
    }
    Ok(out)
}

/// Removes `name` from `parent`, recursively if it is a directory; never follows a
/// symlink (the entry is looked at with `AT_SYMLINK_NOFOLLOW`, directories are opened
/// with `O_NOFOLLOW` and emptied through their own fd).
fn remove_entry(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Removed> {
    let st = match nix::sys::stat::fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::ENOENT) => return Ok(Removed::Nothing),
        Err(e) => return Err(e),
    };
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => {
            clear_dir(parent, name)?;
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir)?;
            Ok(Removed::Other)
        }
        libc::S_IFREG => {
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
            Ok(Removed::File)
        }
        _ => {
            nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)?;
            Ok(Removed::Other)
        }
    }
}

fn clear_dir(parent: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    let mut d = Dir::openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // Collect first: removing while readdir is under way may skip entries.
    let children = list_dir(&mut d)?;
    let fd = d.as_fd();
    for (child, ty) in children {
        match ty {
            Some(Type::Directory) => {
                clear_dir(fd, &child)?;
                nix::unistd::unlinkat(fd, &child[..], UnlinkatFlags::RemoveDir)?;
            }
            Some(_) => nix::unistd::unlinkat(fd, &child[..], UnlinkatFlags::NoRemoveDir)?,
            None => {
                remove_entry(fd, &child)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    use std::path::Path;
    use tar::{EntryType, Header};

    const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const MTIME: u64 = 1_600_000_000;

    fn is_root(test: &str) -> bool {
        let root = nix::unistd::geteuid().is_root();
        if !root {
            // CI sets KRUNNER_IT_REQUIRE_ALL: there every skip is a failure.
            assert!(
                std::env::var_os("KRUNNER_IT_REQUIRE_ALL").is_none(),
                "{test} needs root (KRUNNER_IT_REQUIRE_ALL is set)"
            );
            eprintln!("skipping {test}: needs root (chown, devices, security.* xattrs)");
        }
        root
    }

    /// A tempdir holding `root/` next to a `canary` file and a `canarydir/keep` file.
    struct Env {
        tmp: tempfile::TempDir,
        root: PathBuf,
    }

    impl Env {
        fn new() -> Env {
            let tmp = tempfile::tempdir().unwrap();
            let root = tmp.path().join("root");
            fs::create_dir(&root).unwrap();
            fs::write(tmp.path().join("canary"), b"canary\n").unwrap();
            fs::create_dir(tmp.path().join("canarydir")).unwrap();
            fs::write(tmp.path().join("canarydir/keep"), b"keep\n").unwrap();
            Env { tmp, root }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        /// Nothing outside `root` was created, changed or removed.
        fn assert_canary(&self) {
            let t = self.tmp.path();
            assert_eq!(fs::read(t.join("canary")).unwrap(), b"canary\n");
            assert_eq!(fs::symlink_metadata(t.join("canary")).unwrap().nlink(), 1);
            assert_eq!(fs::read(t.join("canarydir/keep")).unwrap(), b"keep\n");
            let names: BTreeSet<String> = fs::read_dir(t)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            let want: BTreeSet<String> = ["canary", "canarydir", "root"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            assert_eq!(names, want);
            let inner: Vec<_> = fs::read_dir(t.join("canarydir")).unwrap().collect();
            assert_eq!(inner.len(), 1);
            assert!(fs::symlink_metadata(&self.root).unwrap().is_dir());
        }

        fn abs(&self) -> String {
            self.tmp.path().to_string_lossy().into_owned()
        }

        fn apply(&self, tar: &[u8]) -> Result<LayerStats, UnpackError> {
            self.apply_with(tar, Compression::None, None, &UnpackOptions::default())
        }

        fn apply_with(
            &self,
            tar: &[u8],
            c: Compression,
            diff_id: Option<&str>,
            opts: &UnpackOptions,
        ) -> Result<LayerStats, UnpackError> {
            let blob = compress(tar, c);
            apply_blob(&self.root, &blob, c, diff_id, opts)
        }
    }

    fn apply_blob(
        root: &Path,
        blob: &[u8],
        c: Compression,
        diff_id: Option<&str>,
        opts: &UnpackOptions,
    ) -> Result<LayerStats, UnpackError> {
        let info = LayerInfo {
            digest: DIGEST,
            compression: c,
            diff_id,
            compressed_size: blob.len() as u64,
        };
        apply_layer(root, &info, blob, opts)
    }

    fn compress(tar: &[u8], c: Compression) -> Vec<u8> {
        match c {
            Compression::None => tar.to_vec(),
            Compression::Gzip => gz(tar),
            Compression::Zstd => zstd::encode_all(tar, 3).unwrap(),
        }
    }

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn unpriv() -> UnpackOptions {
        UnpackOptions {
            privileged: false,
            ..UnpackOptions::default()
        }
    }

    fn kind(r: Result<LayerStats, UnpackError>) -> UnpackErrorKind {
        match r {
            Ok(s) => panic!("expected an error, got {s:?}"),
            Err(e) => e.kind,
        }
    }

    fn mode(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn exists(p: &Path) -> bool {
        fs::symlink_metadata(p).is_ok()
    }

    /// Builds test tars; `raw` writes names and link names verbatim (hostile ones too).
    struct Tb {
        b: tar::Builder<Vec<u8>>,
    }

    impl Tb {
        fn new() -> Tb {
            Tb {
                b: tar::Builder::new(Vec::new()),
            }
        }

        fn raw_owned(
            &mut self,
            ty: EntryType,
            name: &[u8],
            link: &[u8],
            mode: u32,
            (uid, gid): (u64, u64),
            data: &[u8],
        ) -> &mut Tb {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name);
            h.set_link_name_literal(link).unwrap();
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_uid(uid);
            h.set_gid(gid);
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }

        fn raw(
            &mut self,
            ty: EntryType,
            name: &str,
            link: &str,
            mode: u32,
            data: &[u8],
        ) -> &mut Tb {
            self.raw_owned(ty, name.as_bytes(), link.as_bytes(), mode, (0, 0), data)
        }

        /// A V7-style entry: typeflag NUL, a directory only by its trailing `/`.
        fn old_style(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tb {
            let mut h = Header::new_old();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.as_old_mut().linkflag[0] = 0;
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(MTIME);
            h.set_size(data.len() as u64);
            h.set_cksum();
            self.b.append(&h, data).unwrap();
            self
        }

        fn dir(&mut self, name: &str, mode: u32) -> &mut Tb {
            self.raw(EntryType::Directory, name, "", mode, b"")
        }

        fn file(&mut self, name: &str, mode: u32, data: &[u8]) -> &mut Tb {
            self.raw(EntryType::Regular, name, "", mode, data)
        }

        fn symlink(&mut self, name: &str, target: &str) -> &mut Tb {
            self.raw(EntryType::Symlink, name, target, 0o777, b"")
        }

        fn hardlink(&mut self, name: &str, target: &str) -> &mut Tb {
            self.raw(EntryType::Link, name, target, 0o644, b"")
        }

        fn device(
            &mut self,
            name: &str,
            ty: EntryType,
            major: u32,
            minor: u32,
            mode: u32,
        ) -> &mut Tb {
            let mut h = Header::new_gnu();
            h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
            h.set_entry_type(ty);
            h.set_mode(mode);
            h.set_mtime(MTIME);
            h.set_size(0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            h.set_cksum();
            self.b.append(&h, &b""[..]).unwrap();
            self
        }

        fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tb {
            self.b
                .append_pax_extensions(records.iter().copied())
                .unwrap();
            self
        }

        fn finish(&mut self) -> Vec<u8> {
            let b = std::mem::replace(&mut self.b, tar::Builder::new(Vec::new()));
            b.into_inner().unwrap()
        }
    }

    #[test]
    fn media_types() {
        use Compression as C;
        let cases = [
            ("application/vnd.oci.image.layer.v1.tar", Some(C::None)),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Some(C::Gzip)),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Some(C::Zstd)),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
                Some(C::None),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                Some(C::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
                Some(C::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(C::Gzip),
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                Some(C::Gzip),
            ),
            ("application/vnd.oci.image.config.v1+json", None),
            ("application/vnd.oci.image.layer.v1.tar+bzip2", None),
        ];
        for (mt, want) in cases {
            assert_eq!(compression_for_media_type(mt), want, "{mt}");
        }
    }

    #[test]
    fn ordinary_files_dirs_symlinks_hardlinks() {
        let env = Env::new();
        let tar = Tb::new()
            .dir("etc/", 0o755)
            .file("etc/passwd", 0o644, b"root:x:0:0::/root:/bin/sh\n")
            .file("./bin/tool", 0o750, b"#!/bin/sh\n") // no bin/ entry: implicit parent
            .symlink("bin/sh", "tool")
            .symlink("bin/abs", "/etc/passwd")
            .hardlink("bin/tool2", "bin/tool")
            .dir("usr/", 0o755)
            .dir("usr/lib/", 0o755)
            .symlink("lib", "usr/lib") // relative, stays inside: followed
            .file("lib/libc.so", 0o644, b"elf")
            .dir("ro/", 0o555)
            .file("ro/f", 0o444, b"read-only")
            .pax(&[("mtime", b"1600000123.25")])
            .file("precise", 0o600, b"")
            .finish();
        let stats = env.apply(&tar).unwrap();
        assert_eq!(stats.entries, 13);
        assert_eq!(stats.bytes, 26 + 10 + 3 + 9);
        assert_eq!(stats.skipped_devices, 0);

        assert_eq!(
            fs::read(env.p("etc/passwd")).unwrap(),
            b"root:x:0:0::/root:/bin/sh\n"
        );
        assert_eq!(mode(&env.p("etc/passwd")), 0o644);
        assert_eq!(mode(&env.p("etc")), 0o755);
        assert_eq!(mode(&env.p("bin")), 0o755);
        assert_eq!(mode(&env.p("bin/tool")), 0o750);
        assert_eq!(fs::read_link(env.p("bin/sh")).unwrap(), Path::new("tool"));
        assert_eq!(
            fs::read_link(env.p("bin/abs")).unwrap(),
            Path::new("/etc/passwd")
        );
        let a = fs::metadata(env.p("bin/tool")).unwrap();
        let b = fs::metadata(env.p("bin/tool2")).unwrap();
        assert_eq!(a.ino(), b.ino());
        assert_eq!(a.nlink(), 2);
        assert!(fs::symlink_metadata(env.p("lib"))
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(env.p("usr/lib/libc.so")).unwrap(), b"elf");
        assert_eq!(mode(&env.p("ro")), 0o555);
        assert_eq!(mode(&env.p("ro/f")), 0o444);
        assert_eq!(fs::read(env.p("ro/f")).unwrap(), b"read-only");

        // mtimes, directories included although children were created in them later
        for p in ["etc/passwd", "etc", "usr/lib", "ro", "ro/f", "bin/tool"] {
            assert_eq!(
                fs::symlink_metadata(env.p(p)).unwrap().mtime(),
                MTIME as i64,
                "{p}"
            );
        }
        assert_eq!(
            fs::symlink_metadata(env.p("bin/sh")).unwrap().mtime(),
            MTIME as i64
        );
        let precise = fs::metadata(env.p("precise")).unwrap();
        assert_eq!(precise.mtime(), 1_600_000_123);
        assert_eq!(precise.mtime_nsec(), 250_000_000);
        env.assert_canary();
    }

    #[test]
    fn old_style_directory_entries() {
        let env = Env::new();
        let tar = Tb::new()
            .old_style("olddir/", 0o750, b"")
            .old_style("olddir/f", 0o644, b"f")
            .finish();
        env.apply(&tar).unwrap();
        assert!(fs::symlink_metadata(env.p("olddir")).unwrap().is_dir());
        assert_eq!(mode(&env.p("olddir")), 0o750);
        assert_eq!(fs::read(env.p("olddir/f")).unwrap(), b"f");
        env.assert_canary();
    }

    #[test]
    fn root_dir_entry_sets_root_metadata() {
        let env = Env::new();
        let tar = Tb::new().dir("./", 0o750).file("a", 0o644, b"a").finish();
        env.apply(&tar).unwrap();
        assert_eq!(mode(&env.root), 0o750);
        assert_eq!(fs::metadata(&env.root).unwrap().mtime(), MTIME as i64);
        assert_eq!(fs::read(env.p("a")).unwrap(), b"a");
        env.assert_canary();
    }

    #[test]
    fn setuid_setgid_sticky_with_non_root_owner() {
        if !is_root("setuid_setgid_sticky_with_non_root_owner") {
            return;
        }
        let env = Env::new();
        let mut tb = Tb::new();
        tb.raw_owned(
            EntryType::Directory,
            b"tmp/",
            b"",
            0o1777,
            (1000, 1000),
            b"",
        );
        tb.raw_owned(EntryType::Regular, b"su", b"", 0o4755, (1000, 1001), b"x");
        tb.raw_owned(EntryType::Regular, b"sg", b"", 0o2711, (1002, 1003), b"y");
        tb.raw_owned(EntryType::Directory, b"shared/", b"", 0o2775, (0, 50), b"");
        tb.raw_owned(EntryType::Symlink, b"lnk", b"su", 0o777, (1004, 1005), b"");
        env.apply(&tb.finish()).unwrap();
        let check = |p: &str, m: u32, uid: u32, gid: u32| {
            let md = fs::symlink_metadata(env.p(p)).unwrap();
            assert_eq!(md.mode() & 0o7777, m, "{p} mode");
            assert_eq!((md.uid(), md.gid()), (uid, gid), "{p} owner");
        };
        check("tmp", 0o1777, 1000, 1000);
        check("su", 0o4755, 1000, 1001);
        check("sg", 0o2711, 1002, 1003);
        check("shared", 0o2775, 0, 50);
        let l = fs::symlink_metadata(env.p("lnk")).unwrap();
        assert_eq!((l.uid(), l.gid()), (1004, 1005));

        // Unprivileged: ownership is not applied.
        let env2 = Env::new();
        let mut tb = Tb::new();
        tb.raw_owned(EntryType::Regular, b"su", b"", 0o755, (1000, 1001), b"x");
        env2.apply_with(&tb.finish(), Compression::None, None, &unpriv())
            .unwrap();
        assert_eq!(fs::metadata(env2.p("su")).unwrap().uid(), 0);
        env.assert_canary();
        env2.assert_canary();
    }

    #[test]
    fn xattrs_user_and_capability() {
        let env = Env::new();
        // VFS_CAP_REVISION_2 | effective, permitted = CAP_NET_RAW (13)
        let cap: [u8; 20] = [
            1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        let tar = Tb::new()
            .pax(&[("SCHILY.xattr.user.test", b"hello")])
            .file("f", 0o644, b"data")
            .pax(&[("SCHILY.xattr.user.dir", b"d")])
            .dir("d/", 0o755)
            .pax(&[("SCHILY.xattr.security.capability", &cap[..])])
            .file("ping", 0o755, b"elf")
            .pax(&[("SCHILY.xattr.user.onlink", b"ignored")])
            .symlink("s", "f")
            .finish();
        env.apply_with(&tar, Compression::None, None, &unpriv())
            .unwrap();
        assert_eq!(
            xattr::get(env.p("f"), "user.test").unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(xattr::get(env.p("d"), "user.dir").unwrap().unwrap(), b"d");
        // unprivileged: only user.* is attempted
        assert_eq!(
            xattr::get(env.p("ping"), "security.capability").unwrap(),
            None
        );
        assert!(fs::symlink_metadata(env.p("s"))
            .unwrap()
            .file_type()
            .is_symlink());

        if is_root("xattrs_user_and_capability (security.capability part)") {
            let env2 = Env::new();
            env2.apply(&tar).unwrap();
            assert_eq!(
                xattr::get(env2.p("ping"), "security.capability")
                    .unwrap()
                    .unwrap(),
                cap
            );
            assert_eq!(
                xattr::get(env2.p("f"), "user.test").unwrap().unwrap(),
                b"hello"
            );
            env2.assert_canary();
        }
        env.assert_canary();
    }

    #[test]
    fn whiteouts_remove_lower_entries() {
        let env = Env::new();
        let lower = Tb::new()
            .dir("a/", 0o755)
            .file("a/b", 0o644, b"b")
            .file("a/c", 0o644, b"c")
            .symlink("a/lnk", "../../canarydir")
            .dir("d/", 0o755)
            .dir("d/e/", 0o755)
            .file("d/e/f", 0o644, b"f")
            .symlink("d/e/up", "/")
            .finish();
        env.apply(&lower).unwrap();
        let upper = Tb::new()
            .file("a/.wh.b", 0o644, b"")
            .file("a/.wh.missing", 0o644, b"")
            .file("a/.wh.lnk", 0o644, b"")
            .file(".wh.d", 0o644, b"")
            .file("a/.wh..wh.plnk", 0o644, b"") // AUFS metadata: ignored
            .finish();
        let stats = env.apply(&upper).unwrap();
        assert_eq!(stats.entries, 5);
        assert!(!exists(&env.p("a/b")));
        assert!(!exists(&env.p("a/lnk")));
        assert!(!exists(&env.p("d")));
        assert_eq!(fs::read(env.p("a/c")).unwrap(), b"c");
        let names: Vec<_> = fs::read_dir(env.p("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c")]);
        env.assert_canary();
    }

    #[test]
    fn opaque_dir_keeps_entries_of_the_same_layer() {
        let env = Env::new();
        let lower = Tb::new()
            .dir("d/", 0o755)
            .file("d/old1", 0o644, b"1")
            .dir("d/sub/", 0o755)
            .file("d/sub/old2", 0o644, b"2")
            .dir("d/keepdir/", 0o755)
            .symlink("d/out", "../../canarydir")
            .dir("other/", 0o755)
            .file("other/keep", 0o644, b"k")
            .finish();
        env.apply(&lower).unwrap();
        let upper = Tb::new()
            .dir("d/", 0o711)
            .file("d/new1", 0o644, b"n1")
            .dir("d/sub/", 0o755)
            .file("d/sub/new2", 0o644, b"n2")
            .file("d/.wh..wh..opq", 0o644, b"")
            .file("d/after", 0o644, b"a")
            .finish();
        env.apply(&upper).unwrap();
        assert_eq!(fs::read(env.p("d/new1")).unwrap(), b"n1");
        assert_eq!(fs::read(env.p("d/sub/new2")).unwrap(), b"n2");
        assert_eq!(fs::read(env.p("d/after")).unwrap(), b"a");
        assert!(!exists(&env.p("d/old1")));
        assert!(!exists(&env.p("d/sub/old2")));
        assert!(!exists(&env.p("d/keepdir")));
        assert!(!exists(&env.p("d/out")));
        assert!(!exists(&env.p("d/.wh..wh..opq")));
        assert_eq!(fs::read(env.p("other/keep")).unwrap(), b"k");
        assert_eq!(mode(&env.p("d")), 0o711);
        assert_eq!(fs::metadata(env.p("d")).unwrap().mtime(), MTIME as i64);
        env.assert_canary();
    }

    #[test]
    fn hardlink_into_lower_layer() {
        let env = Env::new();
        env.apply(
            &Tb::new()
                .dir("bin/", 0o755)
                .file("bin/busybox", 0o755, b"bb")
                .finish(),
        )
        .unwrap();
        let upper = Tb::new()
            .hardlink("bin/sh", "bin/busybox")
            .hardlink("usr/bin/env", "./bin/busybox")
            .finish();
        env.apply(&upper).unwrap();
        let bb = fs::metadata(env.p("bin/busybox")).unwrap();
        assert_eq!(bb.nlink(), 3);
        assert_eq!(fs::metadata(env.p("bin/sh")).unwrap().ino(), bb.ino());
        assert_eq!(fs::metadata(env.p("usr/bin/env")).unwrap().ino(), bb.ino());
        env.assert_canary();
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink_itself() {
        let env = Env::new();
        let tar = Tb::new()
            .symlink("s", "/etc/passwd")
            .hardlink("h", "s")
            .finish();
        env.apply(&tar).unwrap();
        let s = fs::symlink_metadata(env.p("s")).unwrap();
        let h = fs::symlink_metadata(env.p("h")).unwrap();
        assert!(h.file_type().is_symlink());
        assert_eq!(s.ino(), h.ino());
        env.assert_canary();
    }

    #[test]
    fn long_linkpath_and_path_via_pax() {
        let env = Env::new();
        let long_dir = "d".repeat(143);
        let long_path = format!("{long_dir}/target"); // 150 bytes
        assert_eq!(long_path.len(), 150);
        let tar = Tb::new()
            .dir(&format!("{}/", &long_dir[..99]), 0o755) // a decoy dir with a truncated name
            .pax(&[("path", long_path.as_bytes())])
            .file("decoy-name", 0o644, b"long")
            .pax(&[("linkpath", long_path.as_bytes())])
            .symlink("sym", "decoy-target")
            .pax(&[("linkpath", long_path.as_bytes())])
            .hardlink("hard", "decoy-target")
            .finish();
        env.apply(&tar).unwrap();
        assert_eq!(fs::read(env.p(&long_path)).unwrap(), b"long");
        assert!(!exists(&env.p("decoy-name")));
        assert_eq!(fs::read_link(env.p("sym")).unwrap(), Path::new(&long_path));
        assert_eq!(
            fs::metadata(env.p("hard")).unwrap().ino(),
            fs::metadata(env.p(&long_path)).unwrap().ino()
        );
        env.assert_canary();
    }

    fn devices_tar() -> Vec<u8> {
        Tb::new()
            .dir("dev/", 0o755)
            .device("dev/null", EntryType::Char, 1, 3, 0o666)
            .device("dev/loop0", EntryType::Block, 7, 0, 0o660)
            .device("run/fifo", EntryType::Fifo, 0, 0, 0o640)
            .finish()
    }

    #[test]
    fn devices_and_fifo_as_root() {
        if !is_root("devices_and_fifo_as_root") {
            return;
        }
        let env = Env::new();
        let stats = env.apply(&devices_tar()).unwrap();
        assert_eq!(stats.skipped_devices, 0);
        let null = fs::symlink_metadata(env.p("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!(null.rdev(), nix::sys::stat::makedev(1, 3));
        assert_eq!(null.mode() & 0o7777, 0o666);
        let lp = fs::symlink_metadata(env.p("dev/loop0")).unwrap();
        assert!(lp.file_type().is_block_device());
        assert_eq!(lp.rdev(), nix::sys::stat::makedev(7, 0));
        assert_eq!(lp.mode() & 0o7777, 0o660);
        let fifo = fs::symlink_metadata(env.p("run/fifo")).unwrap();
        assert!(fifo.file_type().is_fifo());
        assert_eq!(fifo.mode() & 0o7777, 0o640);
        assert_eq!(fifo.mtime(), MTIME as i64);
        // Applying again replaces the existing nodes.
        env.apply(&devices_tar()).unwrap();
        assert!(fs::symlink_metadata(env.p("dev/null"))
            .unwrap()
            .file_type()
            .is_char_device());
        env.assert_canary();
    }

    #[test]
    fn devices_skipped_when_unprivileged() {
        let env = Env::new();
        let stats = env
            .apply_with(&devices_tar(), Compression::None, None, &unpriv())
            .unwrap();
        assert_eq!(stats.skipped_devices, 3);
        assert!(!exists(&env.p("dev/null")));
        assert!(!exists(&env.p("dev/loop0")));
        assert!(!exists(&env.p("run")));
        env.assert_canary();
    }

    #[test]
    fn replace_dir_by_file_and_file_by_dir() {
        let env = Env::new();
        let lower = Tb::new()
            .dir("x/", 0o755)
            .file("x/child", 0o644, b"c")
            .dir("x/sub/", 0o755)
            .file("x/sub/deep", 0o644, b"d")
            .file("y", 0o644, b"y")
            .symlink("z", "x")
            .finish();
        env.apply(&lower).unwrap();
        let upper = Tb::new()
            .file("x", 0o600, b"now a file")
            .dir("y/", 0o700)
            .file("y/inner", 0o644, b"i")
            .dir("z/", 0o755)
            .file("z/own", 0o644, b"o")
            .finish();
        env.apply(&upper).unwrap();
        assert!(fs::symlink_metadata(env.p("x")).unwrap().is_file());
        assert_eq!(fs::read(env.p("x")).unwrap(), b"now a file");
        assert_eq!(mode(&env.p("x")), 0o600);
        assert!(fs::symlink_metadata(env.p("y")).unwrap().is_dir());
        assert_eq!(mode(&env.p("y")), 0o700);
        assert_eq!(fs::read(env.p("y/inner")).unwrap(), b"i");
        assert!(fs::symlink_metadata(env.p("z")).unwrap().is_dir());
        assert_eq!(fs::read(env.p("z/own")).unwrap(), b"o");
        env.assert_canary();
    }

    #[test]
    fn replacements_invalidate_the_parent_cache() {
        let env = Env::new();
        let tar = Tb::new()
            .dir("p/", 0o755)
            .file("p/a", 0o644, b"a") // caches p
            .file("p", 0o644, b"file") // removes the cached dir
            .dir("p/", 0o755)
            .file("p/b", 0o644, b"b") // must land in the new p
            .dir("real/", 0o755)
            .symlink("s", "real")
            .file("s/f1", 0o644, b"1") // caches s -> real
            .dir("s/", 0o755) // replaces the symlink
            .file("s/f2", 0o644, b"2")
            .finish();
        env.apply(&tar).unwrap();
        assert_eq!(fs::read(env.p("p/b")).unwrap(), b"b");
        assert!(!exists(&env.p("p/a")));
        assert_eq!(fs::read(env.p("real/f1")).unwrap(), b"1");
        assert!(!exists(&env.p("real/f2")));
        assert!(fs::symlink_metadata(env.p("s")).unwrap().is_dir());
        assert_eq!(fs::read(env.p("s/f2")).unwrap(), b"2");
        env.assert_canary();
    }

    #[test]
    fn gzip_zstd_plain_and_diff_id() {
        let tar = Tb::new()
            .dir("a/", 0o755)
            .file("a/big", 0o644, &vec![7u8; 3 * COPY_BUF + 11])
            .file("a/small", 0o600, b"small")
            .finish();
        let diff_id = sha(&tar);
        for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let env = Env::new();
            let stats = env
                .apply_with(&tar, c, Some(&diff_id), &UnpackOptions::default())
                .unwrap();
            assert_eq!(stats.entries, 3, "{c:?}");
            assert_eq!(stats.bytes, (3 * COPY_BUF + 11 + 5) as u64, "{c:?}");
            assert_eq!(
                fs::read(env.p("a/big")).unwrap(),
                vec![7u8; 3 * COPY_BUF + 11]
            );
            assert_eq!(fs::read(env.p("a/small")).unwrap(), b"small");
            env.assert_canary();
        }
        // Several gzip members, split in the middle of an entry.
        let env = Env::new();
        let mut blob = gz(&tar[..700]);
        blob.extend(gz(&tar[700..]));
        apply_blob(
            &env.root,
            &blob,
            Compression::Gzip,
            Some(&diff_id),
            &UnpackOptions::default(),
        )
        .unwrap();
        assert_eq!(fs::read(env.p("a/small")).unwrap(), b"small");
        // Upper-case hex is accepted too.
        let env = Env::new();
        let upper = format!("sha256:{}", diff_id["sha256:".len()..].to_ascii_uppercase());
        env.apply_with(
            &tar,
            Compression::Zstd,
            Some(&upper),
            &UnpackOptions::default(),
        )
        .unwrap();
    }

    #[test]
    fn refuses_dotdot_traversal() {
        for name in ["../x", "etc/../../x", "a/../b"] {
            let env = Env::new();
            let tar = Tb::new().file(name, 0o644, b"pwned").finish();
            let err = env.apply(&tar).unwrap_err();
            assert!(
                matches!(err.kind, UnpackErrorKind::PathTraversal),
                "{name}: {err}"
            );
            assert_eq!(err.entry.as_deref(), Some(name));
            assert!(!exists(&env.tmp.path().join("x")));
            env.assert_canary();
        }
        let env = Env::new();
        let err = env
            .apply(&Tb::new().file("etc/../../x", 0o644, b"").finish())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "layer {DIGEST}: entry \"etc/../../x\": path climbs out of the rootfs with \"..\""
            )
        );
    }

    #[test]
    fn refuses_absolute_names() {
        let env = Env::new();
        let name = format!("{}/canary", env.abs());
        let tar = Tb::new().file(&name, 0o644, b"pwned").finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::AbsolutePath
        ));
        let tar = Tb::new().file("/x", 0o644, b"pwned").finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::AbsolutePath
        ));
        env.assert_canary();
    }

    #[test]
    fn refuses_writing_through_escaping_symlinks() {
        let probe = format!("krunner-unpack-escape-{}", std::process::id());
        let cases: Vec<(String, String)> = vec![
            ("/".into(), probe.clone()),
            ("ABS".into(), "canary".into()),
            ("../../..".into(), probe.clone()),
            ("..".into(), "canary".into()),
            ("../canarydir".into(), "keep".into()),
            ("../canarydir".into(), "newdir/".into()),
        ];
        for (target, child) in cases {
            let env = Env::new();
            let case = if target == "ABS" {
                env.abs()
            } else {
                target.clone()
            };
            let mut tb = Tb::new();
            tb.symlink("evil", &case);
            assert!(case.len() < 100, "symlink target must fit the header");
            if let Some(d) = child.strip_suffix('/') {
                tb.dir(&format!("evil/{d}/"), 0o755);
            } else {
                tb.file(&format!("evil/{child}"), 0o644, b"pwned");
            }
            let err = env.apply(&tb.finish()).unwrap_err();
            assert!(
                matches!(err.kind, UnpackErrorKind::EscapingSymlink),
                "evil -> {target}, evil/{child}: {err}"
            );
            assert!(
                err.to_string().contains(&format!("entry \"evil/{child}")),
                "{err}"
            );
            assert!(!exists(&Path::new("/").join(&probe)));
            env.assert_canary();
        }
        // Nested, and via a symlink from a lower layer.
        let env = Env::new();
        env.apply(
            &Tb::new()
                .dir("a/", 0o755)
                .symlink("a/b", "../../..")
                .finish(),
        )
        .unwrap();
        let tar = Tb::new()
            .file(&format!("a/b/{probe}"), 0o644, b"x")
            .finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::EscapingSymlink
        ));
        assert!(!exists(&Path::new("/").join(&probe)));
        env.assert_canary();
    }

    #[test]
    fn refuses_hardlinks_outside() {
        let cases = ["../canary", "../../canary", "/etc/passwd", "a/../../canary"];
        for target in cases {
            let env = Env::new();
            let tar = Tb::new().hardlink("h", target).finish();
            match kind(env.apply(&tar)) {
                UnpackErrorKind::HardlinkOutside { target: t } => assert_eq!(t, target),
                k => panic!("{target}: {k:?}"),
            }
            assert!(!exists(&env.p("h")));
            env.assert_canary();
        }
        // Through an escaping symlink.
        let env = Env::new();
        let tar = Tb::new()
            .symlink("e", &env.abs())
            .hardlink("h", "e/canary")
            .finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::HardlinkOutside { .. }
        ));
        assert!(!exists(&env.p("h")));
        env.assert_canary();
    }

    #[test]
    fn refuses_replacing_the_root() {
        for name in [".", "./"] {
            let env = Env::new();
            let tar = Tb::new()
                .symlink(name, &env.abs())
                .file("canary", 0o644, b"pwned")
                .finish();
            let err = env.apply(&tar).unwrap_err();
            assert!(
                matches!(err.kind, UnpackErrorKind::ReplacesRoot),
                "{name}: {err}"
            );
            assert!(fs::symlink_metadata(&env.root).unwrap().is_dir());
            assert_eq!(fs::read_dir(&env.root).unwrap().count(), 0);
            env.assert_canary();
        }
        let env = Env::new();
        let tar = Tb::new().file(".", 0o644, b"x").finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::ReplacesRoot
        ));
        env.assert_canary();
    }

    #[test]
    fn refuses_whiteouts_through_escaping_symlinks() {
        let env0 = Env::new();
        for (target, marker) in [
            (env0.abs(), "ln/.wh.canary"),
            ("/".to_string(), "ln/.wh.canary"),
            ("..".to_string(), "ln/.wh.canary"),
            ("../canarydir".to_string(), "ln/.wh..wh..opq"),
        ] {
            let env = Env::new();
            let target = target.replace(&env0.abs(), &env.abs());
            let tar = Tb::new()
                .symlink("ln", &target)
                .file(marker, 0o644, b"")
                .finish();
            let err = env.apply(&tar).unwrap_err();
            assert!(
                matches!(err.kind, UnpackErrorKind::EscapingSymlink),
                "{target} {marker}: {err}"
            );
            env.assert_canary();
        }
    }

    #[test]
    fn refuses_bare_and_dot_whiteouts() {
        let env = Env::new();
        env.apply(
            &Tb::new()
                .dir("dir/", 0o755)
                .file("dir/f", 0o644, b"f")
                .finish(),
        )
        .unwrap();
        let err = env
            .apply(&Tb::new().file("dir/.wh.", 0o644, b"").finish())
            .unwrap_err();
        assert!(matches!(err.kind, UnpackErrorKind::BareWhiteout), "{err}");
        let err = env
            .apply(&Tb::new().file(".wh.", 0o644, b"").finish())
            .unwrap_err();
        assert!(matches!(err.kind, UnpackErrorKind::BareWhiteout), "{err}");
        let err = env
            .apply(&Tb::new().file("dir/.wh..", 0o644, b"").finish())
            .unwrap_err();
        assert!(
            matches!(err.kind, UnpackErrorKind::InvalidWhiteout),
            "{err}"
        );
        assert_eq!(fs::read(env.p("dir/f")).unwrap(), b"f");
        env.assert_canary();
    }

    #[test]
    fn refuses_diff_id_mismatch() {
        let env = Env::new();
        let tar = Tb::new().file("f", 0o644, b"data").finish();
        let wrong = sha(b"something else");
        match kind(env.apply_with(
            &tar,
            Compression::Gzip,
            Some(&wrong),
            &UnpackOptions::default(),
        )) {
            UnpackErrorKind::DiffIdMismatch { expected, actual } => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha(&tar));
            }
            k => panic!("{k:?}"),
        }
        // A malformed diff_id is refused before anything is written.
        let env = Env::new();
        let r = env.apply_with(
            &tar,
            Compression::None,
            Some("md5:abcd"),
            &UnpackOptions::default(),
        );
        assert!(matches!(kind(r), UnpackErrorKind::BadDiffId(_)));
        assert_eq!(fs::read_dir(&env.root).unwrap().count(), 0);
        env.assert_canary();
    }

    #[test]
    fn refuses_truncated_streams() {
        let tar = Tb::new()
            .file("a", 0o644, &vec![1u8; 100_000])
            .file("b", 0o644, &vec![2u8; 100_000])
            .finish();
        let blob = gz(&tar);
        let env = Env::new();
        let r = apply_blob(
            &env.root,
            &blob[..blob.len() / 2],
            Compression::Gzip,
            None,
            &UnpackOptions::default(),
        );
        let err = r.unwrap_err();
        assert!(matches!(err.kind, UnpackErrorKind::Truncated), "{err}");
        assert!(
            err.to_string().starts_with(&format!("layer {DIGEST}: ")),
            "{err}"
        );
        // Only the gzip trailer missing.
        let env = Env::new();
        let r = apply_blob(
            &env.root,
            &blob[..blob.len() - 4],
            Compression::Gzip,
            None,
            &UnpackOptions::default(),
        );
        assert!(matches!(
            kind(r),
            UnpackErrorKind::Truncated | UnpackErrorKind::Corrupt { .. }
        ));
        // zstd cut short.
        let z = compress(&tar, Compression::Zstd);
        let env = Env::new();
        let r = apply_blob(
            &env.root,
            &z[..z.len() / 2],
            Compression::Zstd,
            None,
            &UnpackOptions::default(),
        );
        assert!(matches!(
            kind(r),
            UnpackErrorKind::Truncated | UnpackErrorKind::Corrupt { .. }
        ));
        // Plain tar cut in the middle of a file's contents.
        let env = Env::new();
        let r = apply_blob(
            &env.root,
            &tar[..50_000],
            Compression::None,
            None,
            &UnpackOptions::default(),
        );
        assert!(matches!(kind(r), UnpackErrorKind::Truncated));
        // Garbage is corrupt.
        let env = Env::new();
        let r = apply_blob(
            &env.root,
            b"this is not gzip at all",
            Compression::Gzip,
            None,
            &UnpackOptions::default(),
        );
        assert!(matches!(kind(r), UnpackErrorKind::Corrupt { .. }));
        env.assert_canary();
    }

    #[test]
    fn refuses_decompression_bombs() {
        let size = 8 * 1024 * 1024;
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut h = Header::new_gnu();
        h.set_path("zeros").unwrap();
        h.set_entry_type(EntryType::Regular);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        e.write_all(h.as_bytes()).unwrap();
        let chunk = vec![0u8; 1024 * 1024];
        for _ in 0..8 {
            e.write_all(&chunk).unwrap();
        }
        e.write_all(&[0u8; 1024]).unwrap();
        let blob = e.finish().unwrap();
        assert!(blob.len() < 200 * 1024);
        let env = Env::new();
        let opts = UnpackOptions {
            privileged: false,
            host_root: false,
            max_expansion_ratio: 2,
            min_expansion_allowance: 1024 * 1024,
        };
        let r = apply_blob(&env.root, &blob, Compression::Gzip, None, &opts);
        match kind(r) {
            UnpackErrorKind::TooLarge { limit } => assert_eq!(limit, 1024 * 1024),
            k => panic!("{k:?}"),
        }
        // Stopped as soon as the limit was crossed, not after writing everything.
        assert!(fs::metadata(env.p("zeros")).unwrap().len() <= 1024 * 1024);
        env.assert_canary();
        // The same blob passes with the default allowance.
        let env = Env::new();
        apply_blob(&env.root, &blob, Compression::Gzip, None, &unpriv()).unwrap();
        assert_eq!(fs::metadata(env.p("zeros")).unwrap().len(), size);
    }

    #[test]
    fn refuses_unsupported_entry_types() {
        let env = Env::new();
        let tar = Tb::new()
            .raw(EntryType::new(b'Z'), "weird", "", 0o644, b"")
            .finish();
        assert!(matches!(
            kind(env.apply(&tar)),
            UnpackErrorKind::UnsupportedEntryType('Z')
        ));
        env.assert_canary();
    }

    #[test]
    fn error_display_and_source() {
        let err = UnpackError {
            digest: DIGEST.into(),
            entry: Some("a/b".into()),
            kind: UnpackErrorKind::Io {
                op: "create file",
                source: io::Error::from_raw_os_error(libc::EACCES),
            },
        };
        assert_eq!(
            err.to_string(),
            format!("layer {DIGEST}: entry \"a/b\": create file failed")
        );
        let src = std::error::Error::source(&err).unwrap();
        assert!(src.to_string().contains("ermission denied"), "{src}");
    }
}

//! Building OCI images by hand: tar layers written header by header (so hostile names such as
//! `../x`, `/abs` or a symlink named `.` go in verbatim), compressed with gzip, zstd or not at
//! all, with config, manifest and index JSON, written as an OCI image layout for skopeo or
//! served from memory by the fake registry.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::json;

use super::sha256_digest;

/// Fixed mtime of entries unless a test sets one (2020-09-13).
pub const MTIME: u64 = 1_600_000_000;

/// The type of a tar entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Hard link.
    Hardlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
}

/// One tar entry, with every field under the test's control.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name, raw bytes (nothing is cleaned or checked).
    pub path: Vec<u8>,
    /// The type.
    pub kind: EntryKind,
    /// Mode bits (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: u64,
    /// Link target (symlinks and hard links), raw bytes.
    pub link: Vec<u8>,
    /// Content (files).
    pub data: Vec<u8>,
    /// Device numbers.
    pub dev: (u32, u32),
    /// PAX `SCHILY.xattr.*` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Entry {
    fn new(path: impl AsRef<[u8]>, kind: EntryKind, mode: u32) -> Entry {
        Entry {
            path: path.as_ref().to_vec(),
            kind,
            mode,
            uid: 0,
            gid: 0,
            mtime: MTIME,
            link: Vec::new(),
            data: Vec::new(),
            dev: (0, 0),
            xattrs: Vec::new(),
        }
    }

    /// A regular file, mode 0644.
    pub fn file(path: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(path, EntryKind::File, 0o644);
        e.data = data.as_ref().to_vec();
        e
    }

    /// A directory, mode 0755.
    pub fn dir(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Dir, 0o755)
    }

    /// A symbolic link.
    pub fn symlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(path, EntryKind::Symlink, 0o777);
        e.link = target.as_ref().to_vec();
        e
    }

    /// A hard link to `target` (a name in the image).
    pub fn hardlink(path: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> Entry {
        let mut e = Entry::new(path, EntryKind::Hardlink, 0o644);
        e.link = target.as_ref().to_vec();
        e
    }

    /// A named pipe, mode 0644.
    pub fn fifo(path: impl AsRef<[u8]>) -> Entry {
        Entry::new(path, EntryKind::Fifo, 0o644)
    }

    /// A character device, mode 0666.
    pub fn char_dev(path: impl AsRef<[u8]>, major: u32, minor: u32) -> Entry {
        let mut e = Entry::new(path, EntryKind::Char, 0o666);
        e.dev = (major, minor);
        e
    }

    /// A whiteout `.wh.<name>` for `<dir>/<name>`.
    pub fn whiteout(path: &str) -> Entry {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        Entry::file(format!("{dir}.wh.{name}"), "")
    }

    /// The opaque marker `<dir>/.wh..wh..opq`.
    pub fn opaque(dir: &str) -> Entry {
        Entry::file(format!("{dir}/.wh..wh..opq"), "")
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: u32) -> Entry {
        self.mode = mode;
        self
    }

    /// Sets the owner.
    pub fn owner(mut self, uid: u64, gid: u64) -> Entry {
        self.uid = uid;
        self.gid = gid;
        self
    }

    /// Sets the mtime.
    pub fn mtime(mut self, mtime: u64) -> Entry {
        self.mtime = mtime;
        self
    }

    /// Adds an extended attribute.
    pub fn xattr(mut self, name: &str, value: impl AsRef<[u8]>) -> Entry {
        self.xattrs
            .push((name.to_string(), value.as_ref().to_vec()));
        self
    }
}

/// A `security.capability` value (VFS_CAP_REVISION_2, effective) granting
/// `cap_net_bind_service` (bit 10).
pub fn cap_net_bind_service() -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x0200_0001u32.to_le_bytes()); // revision 2 | effective
    v.extend_from_slice(&(1u32 << 10).to_le_bytes()); // permitted, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, low word
    v.extend_from_slice(&0u32.to_le_bytes()); // permitted, high word
    v.extend_from_slice(&0u32.to_le_bytes()); // inheritable, high word
    v
}

/// Writes a tar stream entry by entry.
#[derive(Default)]
pub struct Tar {
    out: Vec<u8>,
    nul_device_fields: bool,
}

impl Tar {
    /// An empty archive.
    pub fn new() -> Tar {
        Tar::default()
    }

    /// Leaves the device number fields of non-device entries all NUL, as writers that start
    /// from `tar::Header::new_ustar()` do, instead of `0000000` (Go, GNU tar, tar-rs's
    /// `Builder`).
    pub fn nul_device_fields(mut self) -> Tar {
        self.nul_device_fields = true;
        self
    }

    /// Adds entries.
    pub fn with(mut self, entries: impl IntoIterator<Item = Entry>) -> Tar {
        for e in entries {
            self.add(&e);
        }
        self
    }

    /// Appends one entry; a PAX header comes first when the name or link is longer than the
    /// USTAR fields or there are xattrs.
    pub fn add(&mut self, e: &Entry) {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        if e.path.len() > 100 {
            pax.push(("path".into(), e.path.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        for (k, v) in &e.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        if !pax.is_empty() {
            let body = pax_records(&pax);
            let mut h = tar::Header::new_ustar();
            set_raw(&mut h.as_old_mut().name, b"PaxHeaders/entry");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_size(body.len() as u64);
            h.set_mtime(e.mtime);
            h.set_cksum();
            self.push(&h, &body);
        }
        let mut h = tar::Header::new_ustar();
        set_raw(&mut h.as_old_mut().name, &e.path);
        set_raw(&mut h.as_old_mut().linkname, &e.link);
        h.set_entry_type(match e.kind {
            EntryKind::File => tar::EntryType::Regular,
            EntryKind::Dir => tar::EntryType::Directory,
            EntryKind::Symlink => tar::EntryType::Symlink,
            EntryKind::Hardlink => tar::EntryType::Link,
            EntryKind::Fifo => tar::EntryType::Fifo,
            EntryKind::Char => tar::EntryType::Char,
            EntryKind::Block => tar::EntryType::Block,
        });
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, EntryKind::Char | EntryKind::Block) || !self.nul_device_fields {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        self.push(&h, &e.data);
    }

    fn push(&mut self, h: &tar::Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }

    /// The archive with its end-of-archive blocks.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend(std::iter::repeat_n(0u8, 1024));
        self.out
    }
}

/// Copies `src` into a fixed-size header field (truncating; the PAX record has the full value).
fn set_raw(field: &mut [u8], src: &[u8]) {
    field.fill(0);
    let n = src.len().min(field.len());
    field[..n].copy_from_slice(&src[..n]);
}

/// PAX records `"<len> <key>=<value>\n"`, where `<len>` counts the whole record.
fn pax_records(records: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3; // ' ', '=', '\n'
        let mut len = rest + 1;
        while len != rest + len.to_string().len() {
            len = rest + len.to_string().len();
        }
        out.extend_from_slice(format!("{len} {k}=").as_bytes());
        out.extend_from_slice(v);
        out.push(b'\n');
    }
    out
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip`.
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
    /// `application/vnd.oci.image.layer.v1.tar`.
    None,
}

/// A layer blob ready for a manifest.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Media type.
    pub media_type: String,
    /// The blob as stored.
    pub blob: Vec<u8>,
    /// `sha256:` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
}

impl Layer {
    /// Compresses a tar archive.
    pub fn new(tar: &[u8], c: Compression) -> Layer {
        let (media_type, blob) = match c {
            Compression::Gzip => {
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                enc.write_all(tar).unwrap();
                (
                    "application/vnd.oci.image.layer.v1.tar+gzip",
                    enc.finish().unwrap(),
                )
            }
            Compression::Zstd => (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                zstd::encode_all(tar, 3).unwrap(),
            ),
            Compression::None => ("application/vnd.oci.image.layer.v1.tar", tar.to_vec()),
        };
        Layer {
            media_type: media_type.to_string(),
            blob,
            diff_id: sha256_digest(tar),
        }
    }

    /// A gzip layer of `entries`.
    pub fn gzip(entries: impl IntoIterator<Item = Entry>) -> Layer {
        Layer::new(&Tar::new().with(entries).finish(), Compression::Gzip)
    }

    /// The blob digest.
    pub fn digest(&self) -> String {
        sha256_digest(&self.blob)
    }
}

/// A blob of an image.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Media type.
    pub media_type: String,
    /// Content.
    pub bytes: Vec<u8>,
}

/// A descriptor of a manifest or index.
#[derive(Debug, Clone)]
pub struct Desc {
    /// Media type.
    pub media_type: String,
    /// `sha256:…`.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

/// One platform manifest of an image.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The manifest's descriptor.
    pub desc: Desc,
    /// Its architecture.
    pub arch: String,
    /// The config digest.
    pub config: String,
    /// Layer digests, bottom first.
    pub layers: Vec<String>,
}

/// A built image: every blob (layers, configs, manifests, index) by digest, and the top
/// descriptor (a manifest, or an index over several).
#[derive(Debug, Clone)]
pub struct Image {
    /// All blobs, by digest.
    pub blobs: BTreeMap<String, Blob>,
    /// What a tag points at.
    pub top: Desc,
    /// The platform manifests.
    pub manifests: Vec<Manifest>,
}

/// Builds a single-platform image.
pub struct ImageBuilder {
    arch: String,
    layers: Vec<Layer>,
    bad_diff_id: Option<usize>,
}

impl ImageBuilder {
    /// A linux image for the host's architecture.
    pub fn new() -> ImageBuilder {
        ImageBuilder {
            arch: super::host_arch().to_string(),
            layers: Vec::new(),
            bad_diff_id: None,
        }
    }

    /// Sets the architecture.
    pub fn arch(mut self, arch: &str) -> ImageBuilder {
        self.arch = arch.to_string();
        self
    }

    /// Adds a layer on top.
    pub fn layer(mut self, l: Layer) -> ImageBuilder {
        self.layers.push(l);
        self
    }

    /// Writes a wrong diff_id for layer `i` into the config.
    pub fn bad_diff_id(mut self, i: usize) -> ImageBuilder {
        self.bad_diff_id = Some(i);
        self
    }

    /// Builds config and manifest.
    pub fn build(self) -> Image {
        let mut blobs = BTreeMap::new();
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if self.bad_diff_id == Some(i) {
                    sha256_digest(b"not the layer")
                } else {
                    l.diff_id.clone()
                }
            })
            .collect();
        let config = json!({
            "architecture": self.arch,
            "os": "linux",
            "config": {
                "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "Cmd": ["/bin/sh"],
            },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
            "history": self.layers.iter().map(|_| json!({"created_by": "krunner tests"})).collect::<Vec<_>>(),
        });
        let config = serde_json::to_vec(&config).unwrap();
        let config_digest = sha256_digest(&config);
        let config_size = config.len();
        blobs.insert(
            config_digest.clone(),
            Blob {
                media_type: "application/vnd.oci.image.config.v1+json".into(),
                bytes: config,
            },
        );
        let mut layer_descs = Vec::new();
        let mut layer_digests = Vec::new();
        for l in self.layers {
            let d = l.digest();
            layer_descs.push(json!({
                "mediaType": l.media_type,
                "digest": d,
                "size": l.blob.len(),
            }));
            layer_digests.push(d.clone());
            blobs.insert(
                d,
                Blob {
                    media_type: l.media_type,
                    bytes: l.blob,
                },
            );
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config_size,
            },
            "layers": layer_descs,
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let desc = Desc {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: sha256_digest(&manifest),
            size: manifest.len() as u64,
        };
        blobs.insert(
            desc.digest.clone(),
            Blob {
                media_type: desc.media_type.clone(),
                bytes: manifest,
            },
        );
        Image {
            blobs,
            top: desc.clone(),
            manifests: vec![Manifest {
                desc,
                arch: self.arch,
                config: config_digest,
                layers: layer_digests,
            }],
        }
    }
}

impl Default for ImageBuilder {
    fn default() -> Self {
        ImageBuilder::new()
    }
}

impl Image {
    /// A single-platform image (host architecture) of gzip layers, one per entry list.
    pub fn of_layers(layers: Vec<Vec<Entry>>) -> Image {
        layers
            .into_iter()
            .fold(ImageBuilder::new(), |b, l| b.layer(Layer::gzip(l)))
            .build()
    }

    /// An OCI index over single-platform images.
    pub fn index(images: Vec<Image>) -> Image {
        let mut blobs = BTreeMap::new();
        let mut manifests = Vec::new();
        let mut entries = Vec::new();
        for img in images {
            for m in &img.manifests {
                entries.push(json!({
                    "mediaType": m.desc.media_type,
                    "digest": m.desc.digest,
                    "size": m.desc.size,
                    "platform": { "architecture": m.arch, "os": "linux" },
                }));
            }
            manifests.extend(img.manifests);
            blobs.extend(img.blobs);
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": entries,
        });
        let index = serde_json::to_vec(&index).unwrap();
        let top = Desc {
            media_type: "application/vnd.oci.image.index.v1+json".into(),
            digest: sha256_digest(&index),
            size: index.len() as u64,
        };
        blobs.insert(
            top.digest.clone(),
            Blob {
                media_type: top.media_type.clone(),
                bytes: index,
            },
        );
        Image {
            blobs,
            top,
            manifests,
        }
    }

    /// Whether the top is an index.
    pub fn is_index(&self) -> bool {
        self.top.media_type.contains("index")
    }

    /// The only platform manifest (panics for a multi-platform index).
    pub fn manifest(&self) -> &Manifest {
        assert_eq!(self.manifests.len(), 1, "image has several platforms");
        &self.manifests[0]
    }

    /// The platform manifest for `arch`.
    pub fn manifest_for(&self, arch: &str) -> &Manifest {
        self.manifests
            .iter()
            .find(|m| m.arch == arch)
            .unwrap_or_else(|| panic!("no {arch} manifest"))
    }

    /// Digests of every blob a pull of the only platform downloads (config and layers).
    pub fn pulled_blobs(&self) -> Vec<String> {
        let m = self.manifest();
        let mut v = vec![m.config.clone()];
        v.extend(m.layers.iter().cloned());
        v
    }

    /// Writes an OCI image layout at `dir`, the top tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).unwrap();
        fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        for (digest, blob) in &self.blobs {
            fs::write(blobs.join(&digest["sha256:".len()..]), &blob.bytes).unwrap();
        }
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": self.top.media_type,
                "digest": self.top.digest,
                "size": self.top.size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }],
        });
        fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    }
}

/// The entries of a busybox image: `/bin/busybox` from busybox-static, one symlink per applet,
/// `/etc/passwd`, `/etc/group` and `/etc/shadow` from `tests/fixtures/busybox`, a home owned
/// by uid 1000, a sticky `/tmp`.
pub fn busybox_entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let busybox = fs::read("/bin/busybox").expect("read /bin/busybox (busybox-static)");
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/busybox");
        let list = Command::new("/bin/busybox")
            .arg("--list-full")
            .stderr(Stdio::inherit())
            .output()
            .expect("busybox --list-full");
        let mut e = vec![
            Entry::dir("bin"),
            Entry::dir("sbin"),
            Entry::dir("usr"),
            Entry::dir("usr/bin"),
            Entry::dir("usr/sbin"),
            Entry::dir("etc"),
            Entry::dir("root").mode(0o700),
            Entry::dir("home"),
            Entry::dir("home/user").mode(0o750).owner(1000, 1000),
            Entry::file("home/user/.profile", "export PS1='$ '\n").owner(1000, 1000),
            Entry::dir("tmp").mode(0o1777),
            Entry::dir("dev"),
            Entry::dir("proc"),
            Entry::file("bin/busybox", busybox).mode(0o755),
        ];
        for f in ["passwd", "group", "shadow"] {
            let data = fs::read(fixtures.join(f)).unwrap();
            let mut entry = Entry::file(format!("etc/{f}"), data);
            if f == "shadow" {
                entry = entry.mode(0o640).owner(0, 42);
            }
            e.push(entry);
        }
        for applet in String::from_utf8(list.stdout).unwrap().lines() {
            let applet = applet.trim();
            if applet.is_empty() || applet == "bin/busybox" {
                continue;
            }
            e.push(Entry::symlink(applet, "/bin/busybox"));
        }
        e
    })
}

/// A one-layer busybox image for the host (built once per test run).
pub fn busybox_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| Image::of_layers(vec![busybox_entries().to_vec()]))
}

/// A gzip "decompression bomb" layer: one file of `size` zero bytes (a multiple of 1 MiB).
///
/// Compressing hundreds of MiB in a debug build is slow, so the deflate stream is assembled:
/// one fully flushed block for the tar header, the fully flushed compression of 1 MiB of zeros
/// repeated (each copy decodes on its own because a full flush resets the compressor), the
/// end-of-archive zeros, a final empty block, and a gzip trailer whose CRC is combined
/// arithmetically. The diff_id comes from `sha256sum` fed the uncompressed stream.
pub fn bomb_layer(size: u64) -> Layer {
    const MIB: usize = 1 << 20;
    assert_eq!(size % MIB as u64, 0);
    let mut h = tar::Header::new_ustar();
    set_raw(&mut h.as_old_mut().name, b"zeros");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(size);
    h.set_mtime(MTIME);
    h.set_cksum();
    let header = h.as_bytes().to_vec();

    let deflate_chunk = |data: &[u8], finish: bool| -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let mut out = Vec::with_capacity(data.len() / 2 + 1024);
        let flush = if finish {
            flate2::FlushCompress::Finish
        } else {
            flate2::FlushCompress::Full
        };
        loop {
            let consumed = c.total_in() as usize;
            let status = c.compress_vec(&data[consumed..], &mut out, flush).unwrap();
            if (finish && status == flate2::Status::StreamEnd)
                || (!finish && c.total_in() as usize == data.len() && out.len() < out.capacity())
            {
                break;
            }
            out.reserve(64 * 1024);
        }
        out
    };
    let zeros = vec![0u8; MIB];
    let head_block = deflate_chunk(&header, false);
    let zero_block = deflate_chunk(&zeros, false);
    let end_block = deflate_chunk(&zeros[..1024], false);
    let final_block = deflate_chunk(&[], true);

    let mib_count = size / MIB as u64;
    let mut gz = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    gz.extend_from_slice(&head_block);
    for _ in 0..mib_count {
        gz.extend_from_slice(&zero_block);
    }
    gz.extend_from_slice(&end_block);
    gz.extend_from_slice(&final_block);

    let mut crc = flate2::Crc::new();
    crc.update(&header);
    let mut zero_crc = flate2::Crc::new();
    zero_crc.update(&zeros);
    for _ in 0..mib_count {
        crc.combine(&zero_crc);
    }
    let mut end_crc = flate2::Crc::new();
    end_crc.update(&zeros[..1024]);
    crc.combine(&end_crc);
    let total = header.len() as u64 + size + 1024;
    gz.extend_from_slice(&crc.sum().to_le_bytes());
    gz.extend_from_slice(&(total as u32).to_le_bytes());

    // diff_id: sha256 of the uncompressed stream, by a fast external tool.
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run sha256sum");
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&header).unwrap();
        for _ in 0..mib_count {
            stdin.write_all(&zeros).unwrap();
        }
        stdin.write_all(&zeros[..1024]).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let hex = String::from_utf8(out.stdout).unwrap();
    let hex = hex.split_whitespace().next().unwrap().to_string();
    Layer {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        blob: gz,
        diff_id: format!("sha256:{hex}"),
    }
}

#[test]
fn bomb_layer_is_valid_gzip_of_a_tar() {
    use std::io::Read as _;
    let l = bomb_layer(3 << 20);
    let mut tar = Vec::new();
    flate2::read::GzDecoder::new(&l.blob[..])
        .read_to_end(&mut tar)
        .expect("the bomb decodes");
    assert_eq!(tar.len(), 512 + (3 << 20) + 1024);
    assert_eq!(sha256_digest(&tar), l.diff_id);
    let mut a = tar::Archive::new(&tar[..]);
    let entries: Vec<_> = a.entries().unwrap().map(|e| e.unwrap().size()).collect();
    assert_eq!(entries, vec![3 << 20]);
}

#[test]
fn tar_writer_keeps_hostile_names_and_pax_records() {
    let long = "d/".repeat(80) + "leaf";
    let tar = Tar::new()
        .with([
            Entry::file("../x", "a"),
            Entry::file("/abs", "b"),
            Entry::symlink(".", "/"),
            Entry::file(long.as_str(), "c").xattr("user.k", b"v\0w"),
        ])
        .finish();
    let mut a = tar::Archive::new(&tar[..]);
    let mut names = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        names.push(String::from_utf8(e.path_bytes().to_vec()).unwrap());
        if let Some(exts) = e.pax_extensions().unwrap() {
            let x: Vec<_> = exts
                .map(|r| r.unwrap())
                .filter(|r| r.key().unwrap().starts_with("SCHILY"))
                .map(|r| r.value_bytes().to_vec())
                .collect();
            assert_eq!(x, vec![b"v\0w".to_vec()]);
        }
    }
    assert_eq!(names, vec!["../x", "/abs", ".", long.as_str()]);
}

/// A layer over busybox that meets krunner's image contract for a runner: user `runner`
/// (uid 1001, in group docker) and `/opt/actions-runner` with `listener` as
/// `bin/Runner.Listener` and, if given, `config_sh` as `config.sh`.
pub fn runner_layer(listener: &str, config_sh: Option<&str>) -> Vec<Entry> {
    let passwd = "root:x:0:0:root:/root:/bin/sh\nrunner:x:1001:1001:runner:/home/runner:/bin/sh\n";
    let group = "root:x:0:\nrunner:x:1001:\ndocker:x:121:runner\n";
    let mut layer = vec![
        Entry::file("etc/passwd", passwd),
        Entry::file("etc/group", group),
        Entry::dir("home/runner").mode(0o750).owner(1001, 1001),
        Entry::dir("opt"),
        Entry::dir("opt/actions-runner").owner(1001, 1001),
        Entry::dir("opt/actions-runner/bin").owner(1001, 1001),
        Entry::file("opt/actions-runner/bin/Runner.Listener", listener)
            .mode(0o755)
            .owner(1001, 1001),
    ];
    if let Some(c) = config_sh {
        layer.push(
            Entry::file("opt/actions-runner/config.sh", c)
                .mode(0o755)
                .owner(1001, 1001),
        );
    }
    layer
}

/// busybox plus [`runner_layer`], pushed once per test process under `repo_tag`.
pub fn runner_image(
    reg: &super::registry::Registry,
    once: &'static std::sync::Once,
    repo_tag: &str,
    listener: &str,
    config_sh: Option<&str>,
) -> String {
    once.call_once(|| {
        let layers = vec![
            busybox_entries().to_vec(),
            runner_layer(listener, config_sh),
        ];
        reg.push(&Image::of_layers(layers), repo_tag);
    });
    reg.reference(repo_tag)
}

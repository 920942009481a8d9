//! The test harness: a temporary directory per test, a runner for the `krunner` binary with a
//! clean environment, snapshots of directory trees (for canaries and tree comparisons), skip
//! checks for root and Debian tools, and a tiny HTTP client for poking registries.
//!
//! The fixtures live in submodules: [`registry`] (Debian's `docker-registry` on loopback),
//! [`fake_registry`] (an in-process registry that misbehaves on request), [`oci`] (building
//! images and hostile layers by hand) and [`github_sim`] (a GitHub API simulator with real state
//! and fault injection).

pub mod fake_registry;
pub mod github_sim;
pub mod http;
pub mod oci;
pub mod registry;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

/// `sha256:<hex>` of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A temporary directory for one test, removed on drop unless `KRUNNER_IT_KEEP` is set.
///
/// It holds the cache (`cache/`), a `home/` used as `$HOME` for krunner, and whatever the test
/// puts there (canaries, image layouts, auth files).
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    /// A fresh directory named after the test.
    pub fn new(name: &str) -> TestDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("krunner-it-{name}-"))
            .tempdir()
            .expect("create test directory");
        let path = dir.path().to_path_buf();
        fs::create_dir_all(path.join("home")).unwrap();
        if std::env::var_os("KRUNNER_IT_KEEP").is_some() {
            eprintln!("keeping test directory {}", path.display());
            let _ = dir.keep();
            return TestDir { dir: None, path };
        }
        TestDir {
            dir: Some(dir),
            path,
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path inside the directory.
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.path.join(p)
    }

    /// The krunner cache of this test.
    pub fn cache(&self) -> PathBuf {
        self.join("cache")
    }

    /// `$HOME` for krunner runs of this test.
    pub fn home(&self) -> PathBuf {
        self.join("home")
    }

    /// A `krunner` command using this directory's cache and home.
    pub fn krunner(&self) -> Krunner {
        Krunner::new(self)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if let Some(d) = self.dir.take() {
            // Best effort: a test that failed half-way may leave odd modes behind.
            let _ = d.close();
        }
    }
}

/// Runs the built `krunner` binary with a clean environment: only `PATH`, `HOME` (the test's
/// own), `NO_COLOR`, `KRUNNER_CACHE_DIR` and whatever the test adds.
pub struct Krunner {
    cmd: Command,
    shown: Vec<String>,
}

impl Krunner {
    /// A command whose cache and home are in `td`.
    pub fn new(td: &TestDir) -> Krunner {
        let mut k = Krunner::bare(td);
        k.env("KRUNNER_CACHE_DIR", td.cache());
        k
    }

    /// A command without `KRUNNER_CACHE_DIR` (the test passes `--cache-dir` itself).
    pub fn bare(td: &TestDir) -> Krunner {
        Krunner::through(td, &[])
    }

    /// A command run through `wrapper` (a program and its arguments, which end with the
    /// krunner binary's path), with this test's cache and home: e.g. inside network
    /// namespaces a script makes first.
    pub fn wrapped(td: &TestDir, wrapper: &[&OsStr]) -> Krunner {
        let mut k = Krunner::through(td, wrapper);
        k.env("KRUNNER_CACHE_DIR", td.cache());
        k
    }

    /// Like [`Krunner::wrapped`], with another krunner binary (a copy another user can run).
    pub fn wrapped_exe(td: &TestDir, wrapper: &[&OsStr], exe: &Path) -> Krunner {
        let mut k = Krunner::through_exe(td, wrapper, exe.as_os_str());
        k.env("KRUNNER_CACHE_DIR", td.cache());
        k
    }

    fn through(td: &TestDir, wrapper: &[&OsStr]) -> Krunner {
        Krunner::through_exe(td, wrapper, OsStr::new(env!("CARGO_BIN_EXE_krunner")))
    }

    fn through_exe(td: &TestDir, wrapper: &[&OsStr], exe: &OsStr) -> Krunner {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", td.home())
            .env("NO_COLOR", "1")
            .env("TERM", "dumb")
            .stdin(Stdio::null());
        Krunner {
            cmd,
            shown: vec!["krunner".into()],
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> &mut Krunner {
        self.shown.push(a.as_ref().to_string_lossy().into_owned());
        self.cmd.arg(a);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Krunner
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        for a in args {
            self.arg(a);
        }
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, k: &str, v: impl AsRef<OsStr>) -> &mut Krunner {
        self.shown
            .insert(0, format!("{k}={}", v.as_ref().to_string_lossy()));
        self.cmd.env(k, v);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, k: &str) -> &mut Krunner {
        self.cmd.env_remove(k);
        self
    }

    /// Starts it with piped output; finish with [`Running::wait`].
    pub fn spawn(&mut self) -> Running {
        let child = self
            .cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn krunner");
        Running {
            child,
            shown: self.shown.join(" "),
        }
    }

    /// Runs it to completion.
    pub fn run(&mut self) -> Outcome {
        self.spawn().wait()
    }
}

/// A `krunner` process started by [`Krunner::spawn`].
pub struct Running {
    child: Child,
    shown: String,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for it and collects its output.
    pub fn wait(self) -> Outcome {
        let out = self.child.wait_with_output().expect("wait for krunner");
        Outcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            cmdline: self.shown,
        }
    }
}

/// What a `krunner` run did.
pub struct Outcome {
    /// Exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
    /// The command line, for messages.
    pub cmdline: String,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "command: {}", self.cmdline)?;
        writeln!(f, "exit code: {:?}", self.code)?;
        writeln!(f, "--- stdout ---\n{}", self.stdout)?;
        write!(f, "--- stderr ---\n{}--------------", self.stderr)
    }
}

impl Outcome {
    /// Panics unless it exited 0.
    #[track_caller]
    pub fn success(&self) -> &Outcome {
        assert_eq!(self.code, Some(0), "krunner failed\n{self}");
        self
    }

    /// Panics unless it exited with `code`.
    #[track_caller]
    pub fn failure(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "expected exit code {code}\n{self}");
        self
    }

    /// Panics unless the error lines of stderr contain one of `needles` (without case).
    #[track_caller]
    pub fn error_has_any(&self, needles: &[&str]) -> &Outcome {
        let low = self.error_text().to_lowercase();
        assert!(
            needles.iter().any(|n| low.contains(&n.to_lowercase())),
            "the error message mentions none of {needles:?}\n{self}"
        );
        self
    }

    /// The lines of stderr that report the error (those mentioning "error"), joined.
    pub fn error_text(&self) -> String {
        self.stderr
            .lines()
            .filter(|l| l.to_lowercase().contains("error"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Panics unless the error lines of stderr contain `needle`.
    #[track_caller]
    pub fn error_has(&self, needle: &str) -> &Outcome {
        assert!(
            self.error_text().contains(needle),
            "the error message does not mention {needle:?}\n{self}"
        );
        self
    }

    /// Panics if stdout or stderr contains `secret`.
    #[track_caller]
    pub fn never_shows(&self, secret: &str) -> &Outcome {
        assert!(
            !self.stdout.contains(secret) && !self.stderr.contains(secret),
            "output shows the secret {secret:?}\n{self}"
        );
        self
    }

    /// The rootfs path of a successful pull: stdout must be exactly one line holding an
    /// absolute path to an existing directory.
    #[track_caller]
    pub fn rootfs(&self) -> PathBuf {
        self.success();
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout must be exactly one line\n{self}");
        assert!(
            self.stdout.ends_with('\n'),
            "stdout must end with a newline\n{self}"
        );
        let p = PathBuf::from(lines[0]);
        assert!(p.is_absolute(), "not an absolute path: {p:?}\n{self}");
        assert!(p.is_dir(), "not a directory: {p:?}\n{self}");
        p
    }
}

/// The path krunner must print for platform manifest `digest` in `cache`.
pub fn expected_rootfs(cache: &Path, manifest_digest: &str) -> PathBuf {
    let hex = manifest_digest.strip_prefix("sha256:").unwrap();
    cache.join("rootfs").join(hex).join("rootfs")
}

/// Something a test needs from the machine.
#[derive(Debug, Clone, Copy)]
pub enum Need {
    /// Running as root (devices, ownership).
    Root,
    /// A program on `PATH`.
    Tool(&'static str),
}

/// Whether a program is on `PATH`.
pub fn have_tool(name: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            fs::metadata(dir.join(name)).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
    })
}

/// Whether we run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns true (after printing why) when a need is missing and the test should return.
/// With `KRUNNER_IT_REQUIRE_ALL` set, a missing need fails the test instead.
#[track_caller]
pub fn skip(needs: &[Need]) -> bool {
    let missing: Vec<String> = needs
        .iter()
        .filter_map(|n| match n {
            Need::Root if !is_root() => Some("root".to_string()),
            Need::Tool(t) if !have_tool(t) => Some(format!("`{t}` on PATH")),
            _ => None,
        })
        .collect();
    if missing.is_empty() {
        return false;
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let why = format!("SKIP {name}: needs {}", missing.join(", "));
    assert!(
        std::env::var_os("KRUNNER_IT_REQUIRE_ALL").is_none(),
        "{why} (KRUNNER_IT_REQUIRE_ALL is set)"
    );
    eprintln!("{why}");
    true
}

/// Skips the rest of a test for a reason [`skip`] cannot see (a file, a kernel feature): prints
/// why, and with `KRUNNER_IT_REQUIRE_ALL` set fails instead. Always returns true.
#[track_caller]
pub fn skip_because(why: &str) -> bool {
    let name = std::thread::current()
        .name()
        .unwrap_or("this test")
        .to_string();
    let why = format!("SKIP {name}: {why}");
    assert!(
        std::env::var_os("KRUNNER_IT_REQUIRE_ALL").is_none(),
        "{why} (KRUNNER_IT_REQUIRE_ALL is set)"
    );
    eprintln!("{why}");
    true
}

/// The needs of a test that pushes to the Debian registry with skopeo.
pub const REGISTRY: &[Need] = &[Need::Tool("docker-registry"), Need::Tool("skopeo")];

/// The host's architecture in OCI terms.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The kind of a filesystem entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Socket.
    Socket,
}

/// What a tree walk records about one entry (never following symlinks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Entry type.
    pub kind: Kind,
    /// Permission bits including setuid/setgid/sticky (07777).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes (files only; 0 otherwise).
    pub size: u64,
    /// sha256 of the content (files only).
    pub content: Option<String>,
    /// Symlink target.
    pub target: Option<PathBuf>,
    /// (major, minor) of devices.
    pub rdev: Option<(u64, u64)>,
    /// Extended attributes, without `user.rootlesscontainers`.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// Link count.
    pub nlink: u64,
    /// Modification time, seconds.
    pub mtime: i64,
    /// Inode number (to find hard-link groups; never compared across trees).
    pub ino: u64,
}

/// Every entry under `root` (not `root` itself), keyed by its path relative to `root`.
pub fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
    let dir = root.join(rel);
    let mut names: Vec<_> = match fs::read_dir(&dir) {
        Ok(rd) => rd.map(|e| e.unwrap().file_name()).collect(),
        Err(e) => panic!("read_dir {}: {e}", dir.display()),
    };
    names.sort();
    for name in names {
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let node = node(&path);
        let is_dir = node.kind == Kind::Dir;
        out.insert(rel.clone(), node);
        if is_dir {
            walk(root, &rel, out);
        }
    }
}

/// What [`snapshot`] records about one path.
pub fn node(path: &Path) -> Node {
    let md = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = md.file_type();
    let kind = if ft.is_file() {
        Kind::File
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_char_device() {
        Kind::Char
    } else if ft.is_block_device() {
        Kind::Block
    } else {
        Kind::Socket
    };
    let content = (kind == Kind::File).then(|| {
        let bytes = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        sha256_digest(&bytes)
    });
    let target = (kind == Kind::Symlink).then(|| fs::read_link(path).unwrap());
    let rdev = matches!(kind, Kind::Char | Kind::Block).then(|| dev_major_minor(md.rdev()));
    let mut xattrs = BTreeMap::new();
    if let Ok(names) = xattr::list(path) {
        for n in names {
            let n = n.to_string_lossy().into_owned();
            if n == "user.rootlesscontainers" {
                continue;
            }
            if let Ok(Some(v)) = xattr::get(path, &n) {
                xattrs.insert(n, v);
            }
        }
    }
    Node {
        kind,
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        size: if kind == Kind::File { md.size() } else { 0 },
        content,
        target,
        rdev,
        xattrs,
        nlink: md.nlink(),
        mtime: md.mtime(),
        ino: md.ino(),
    }
}

/// glibc's encoding of `dev_t`.
fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// A canary directory outside the cache: hostile layers aim at it, and it must come out of
/// every pull exactly as it went in.
pub struct Canary {
    /// The canary directory.
    pub dir: PathBuf,
    before: BTreeMap<PathBuf, Node>,
}

impl Canary {
    /// Makes `<td>/canary/` with a `secret` file and a `sub/` directory.
    pub fn new(td: &TestDir) -> Canary {
        let dir = td.join("canary");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("secret"), "do not touch\n").unwrap();
        fs::write(dir.join("sub/inner"), "inner\n").unwrap();
        let before = snapshot(&dir);
        Canary { dir, before }
    }

    /// Panics if anything under the canary changed (entries, content, modes, link counts).
    #[track_caller]
    pub fn assert_untouched(&self, context: &dyn fmt::Display) {
        let after = snapshot(&self.dir);
        let diff = diff_trees(&self.before, &after, true);
        assert!(
            diff.is_empty(),
            "the canary {} changed:\n{}\n{context}",
            self.dir.display(),
            diff.join("\n")
        );
    }
}

/// Human-readable differences between two snapshots (`a` is "expected", `b` "actual").
/// With `strict`, mtimes and link counts are compared too.
pub fn diff_trees(
    a: &BTreeMap<PathBuf, Node>,
    b: &BTreeMap<PathBuf, Node>,
    strict: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    for (p, na) in a {
        let Some(nb) = b.get(p) else {
            out.push(format!("only in expected: {} ({:?})", p.display(), na.kind));
            continue;
        };
        let mut d = Vec::new();
        if na.kind != nb.kind {
            d.push(format!("type {:?} != {:?}", na.kind, nb.kind));
        }
        if na.mode != nb.mode {
            d.push(format!("mode {:o} != {:o}", na.mode, nb.mode));
        }
        if (na.uid, na.gid) != (nb.uid, nb.gid) {
            d.push(format!(
                "owner {}:{} != {}:{}",
                na.uid, na.gid, nb.uid, nb.gid
            ));
        }
        if na.content != nb.content || na.size != nb.size {
            d.push(format!(
                "content {:?} ({} bytes) != {:?} ({} bytes)",
                na.content, na.size, nb.content, nb.size
            ));
        }
        if na.target != nb.target {
            d.push(format!("link target {:?} != {:?}", na.target, nb.target));
        }
        if na.rdev != nb.rdev {
            d.push(format!("device {:?} != {:?}", na.rdev, nb.rdev));
        }
        if na.xattrs != nb.xattrs {
            d.push(format!(
                "xattrs {:?} != {:?}",
                show_xattrs(&na.xattrs),
                show_xattrs(&nb.xattrs)
            ));
        }
        if strict && na.mtime != nb.mtime {
            d.push(format!("mtime {} != {}", na.mtime, nb.mtime));
        }
        if strict && na.nlink != nb.nlink && na.kind != Kind::Dir {
            d.push(format!("nlink {} != {}", na.nlink, nb.nlink));
        }
        if !d.is_empty() {
            out.push(format!("{}: {}", p.display(), d.join("; ")));
        }
    }
    for (p, nb) in b {
        if !a.contains_key(p) {
            out.push(format!("only in actual: {} ({:?})", p.display(), nb.kind));
        }
    }
    out
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> Vec<String> {
    x.iter()
        .map(|(k, v)| format!("{k}={}", hex::encode(v)))
        .collect()
}

/// Sets of paths that share an inode (hard-link groups with more than one member), each
/// sorted, the whole list sorted.
pub fn hardlink_groups(tree: &BTreeMap<PathBuf, Node>) -> Vec<Vec<PathBuf>> {
    let mut by_ino: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
    for (p, n) in tree {
        if n.kind != Kind::Dir {
            by_ino.entry(n.ino).or_default().push(p.clone());
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_ino.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort();
    }
    groups.sort();
    groups
}

/// Checks the cache after a failed pull: no rootfs entry other than those in `rootfs_before`,
/// and every file in `blobs/sha256/` hashes to its name.
#[track_caller]
pub fn assert_cache_clean(cache: &Path, rootfs_before: &[String], context: &dyn fmt::Display) {
    let rootfs = list_names(&cache.join("rootfs"));
    let new: Vec<&String> = rootfs
        .iter()
        .filter(|n| !rootfs_before.contains(n))
        .collect();
    assert!(
        new.is_empty(),
        "a failed pull left rootfs entries {new:?}\n{context}"
    );
    let blobs = cache.join("blobs/sha256");
    for name in list_names(&blobs) {
        let bytes = fs::read(blobs.join(&name)).unwrap();
        let actual = sha256_digest(&bytes);
        assert_eq!(
            actual,
            format!("sha256:{name}"),
            "blob {name} in the cache does not match its name ({} bytes)\n{context}",
            bytes.len()
        );
    }
}

/// Names in a directory (empty if it does not exist), sorted.
pub fn list_names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Every path under `root` whose file name starts with `prefix` (never following symlinks).
pub fn find_named(root: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with(prefix) {
                found.push(p.clone());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    found
}

/// A minimal HTTP/1.1 response.
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
}

impl HttpResponse {
    /// The first header of that (lowercase) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request to `host` (`127.0.0.1:PORT`) over a fresh connection, read to the end.
pub fn http(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<HttpResponse> {
    let mut s = TcpStream::connect(host)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse { status, headers })
}

/// Writes a containers-style `auth.json` for `host` and returns its path.
pub fn write_auth_file(path: &Path, host: &str, user: &str, pass: &str) -> PathBuf {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
    let json = serde_json::json!({ "auths": { host: { "auth": auth } } });
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, serde_json::to_vec_pretty(&json).unwrap()).unwrap();
    path.to_path_buf()
}

/// The `auth` value [`write_auth_file`] stores (so a test can check it never leaks).
pub fn basic_auth_value(user: &str, pass: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// Runs a program and panics with its output unless it exits 0; returns stdout.
#[track_caller]
pub fn run_tool(cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

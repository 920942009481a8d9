//! Rootless operation: an ordinary user's krunner runs inside a user namespace of its own.
//!
//! At start, before any thread exists, [`enter`] moves the process into a new user namespace
//! that maps id 0 to the user and ids `1..=count` to the user's subordinate range from
//! `/etc/subuid` and `/etc/subgid` (written by the setuid helpers `newuidmap`/`newgidmap` of
//! Debian's `uidmap` package, the only programs allowed to map ranges the user does not own),
//! and into a mount namespace of its own. krunner is then root *there*: it can unpack an
//! image with its owners (as subordinate ids on the host), mount overlayfs, make network
//! namespaces and nftables rules, and jail a VMM, while on the host it never holds more than
//! the user's rights. A guest's root is the user; its other ids are the subordinate range.
//!
//! What differs from running as host root (see [`in_initial_user_ns`], which the rest of
//! krunner asks):
//! - no device nodes in unpacked images (mknod needs host root); FIFOs are made;
//! - overlayfs keeps its metadata in `user.overlay.*` xattrs (`userxattr`), not `trusted.*`;
//! - the VMM gets no user namespace of its own (no host range can be mapped from here): it
//!   runs as krunner's namespace root, in the same minimal tree, with the same capability,
//!   no_new_privs and seccomp limits; its tree shows the host's `/proc`, since a procfs of its
//!   own needs a pid namespace;
//! - run cgroups need a delegated cgroup (systemd's `Delegate=yes`), else runs go without.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use nix::sched::CloneFlags;

/// The smallest subordinate range krunner accepts: every id a Linux image uses (0–65535,
/// `nobody` at 65534) must exist in the guest.
pub const MIN_RANGE: u32 = 65535;

/// Why krunner could not enter its user namespace.
#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    /// The user has no subordinate range in the file.
    #[error(
        "{file} gives {user} no subordinate id range: add a line `{user}:100000:65536` \
         (or run `usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}` as root)"
    )]
    NoRange {
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
        /// The user's name (or uid when it has none).
        user: String,
    },
    /// The range is smaller than [`MIN_RANGE`].
    #[error(
        "{file} gives {user} only {count} subordinate ids; krunner needs at least {MIN_RANGE}"
    )]
    RangeTooSmall {
        /// /etc/subuid or /etc/subgid.
        file: PathBuf,
        /// The user.
        user: String,
        /// Its size.
        count: u32,
    },
    /// A file could not be read.
    #[error("cannot read {file}")]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// newuidmap or newgidmap is not installed.
    #[error("{tool} is not installed (Debian package `uidmap`): rootless krunner needs it to map the subordinate ids")]
    MissingTool {
        /// The program.
        tool: &'static str,
    },
    /// A step failed.
    #[error("{step}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// newuidmap/newgidmap refused.
    #[error("writing the user namespace's id maps failed ({status}): {stderr}")]
    Map {
        /// Their exit status.
        status: std::process::ExitStatus,
        /// What they printed.
        stderr: String,
    },
}

/// One user's subordinate range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubRange {
    /// First host id.
    pub start: u32,
    /// How many.
    pub count: u32,
}

/// Whether this process is in the initial user namespace (so that being root means host
/// root). Read once from `/proc/self/uid_map`: the initial namespace's map is the whole
/// 32-bit range onto itself.
pub fn in_initial_user_ns() -> bool {
    static INITIAL: OnceLock<bool> = OnceLock::new();
    *INITIAL.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| is_identity_map(&m))
            // No /proc (or not Linux): assume the ordinary case.
            .unwrap_or(true)
    })
}

/// Whether a `uid_map` text is the initial namespace's.
fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| !f.is_empty())
        .collect();
    matches!(lines.as_slice(), [f] if f.as_slice() == ["0", "0", "4294967295"])
}

/// Whether this process is root of the host: euid 0 in the initial user namespace.
pub fn host_root() -> bool {
    nix::unistd::geteuid().is_root() && in_initial_user_ns()
}

/// Whether krunner runs rootless: root of a user namespace that is not the initial one.
pub fn active() -> bool {
    nix::unistd::geteuid().is_root() && !in_initial_user_ns()
}

/// The xattr namespace overlayfs keeps its metadata in here: `trusted.overlay.` as host
/// root, `user.overlay.` in a user namespace (where only the `userxattr` mount option works).
pub fn overlay_xattr_prefix() -> &'static str {
    if in_initial_user_ns() {
        "trusted.overlay."
    } else {
        "user.overlay."
    }
}

/// The range `user` (or, by number, `id`) has in a subuid/subgid file's text. The first
/// matching line counts, as for shadow's tools.
pub fn parse_range(text: &str, user: &str, id: u32) -> Option<SubRange> {
    let id = id.to_string();
    text.lines().find_map(|line| {
        let mut f = line.trim().splitn(3, ':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        if who != user && who != id {
            return None;
        }
        let start = start.trim().parse().ok()?;
        let count = count.trim().parse().ok()?;
        Some(SubRange { start, count })
    })
}

/// Reads `user`'s range from `file`, refusing none or a too small one.
pub fn range_from(file: &Path, user: &str, id: u32) -> Result<SubRange, RootlessError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => {
            return Err(RootlessError::Read {
                file: file.to_path_buf(),
                source,
            })
        }
    };
    let range = parse_range(&text, user, id).ok_or_else(|| RootlessError::NoRange {
        file: file.to_path_buf(),
        user: user.to_string(),
    })?;
    if range.count < MIN_RANGE {
        return Err(RootlessError::RangeTooSmall {
            file: file.to_path_buf(),
            user: user.to_string(),
            count: range.count,
        });
    }
    Ok(range)
}

/// The user's name for the subid files (its uid as text when it has none).
fn user_name(uid: nix::unistd::Uid) -> String {
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string())
}

/// The subordinate ranges this user would be given: uid range, gid range.
pub fn ranges() -> Result<(SubRange, SubRange), RootlessError> {
    let uid = nix::unistd::getuid();
    let name = user_name(uid);
    Ok((
        range_from(Path::new("/etc/subuid"), &name, uid.as_raw())?,
        range_from(Path::new("/etc/subgid"), &name, uid.as_raw())?,
    ))
}

static ENTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// [`enter`] once per process; later calls give the first one's outcome (as text).
pub fn enter_once() -> Result<(), String> {
    ENTERED
        .get_or_init(|| enter().map_err(|e| crate::error_chain(&e)))
        .clone()
}

/// How [`enter_once`] went, if it was called: for `krunner doctor`.
pub fn entered() -> Option<Result<(), String>> {
    ENTERED.get().cloned()
}

/// Enters a new user namespace (0 → this user, `1..` → its subordinate ranges) and a mount
/// namespace of its own. Call it while the process is single-threaded (unshare(2) refuses
/// CLONE_NEWUSER otherwise): before the async runtime starts.
pub fn enter() -> Result<(), RootlessError> {
    let (subuid, subgid) = ranges()?;
    let newuidmap = crate::jail::find_program("newuidmap")
        .ok_or(RootlessError::MissingTool { tool: "newuidmap" })?;
    let newgidmap = crate::jail::find_program("newgidmap")
        .ok_or(RootlessError::MissingTool { tool: "newgidmap" })?;
    let uid = nix::unistd::getuid().as_raw().to_string();
    let gid = nix::unistd::getgid().as_raw().to_string();
    let pid = std::process::id().to_string();
    // The helpers must be spawned from the host's namespace (a setuid program started inside
    // an unmapped namespace runs without its privilege) but act after the unshare below: they
    // wait for a line on stdin.
    let script = r#"read -r _ || exit 1
"$1" "$3" 0 "$4" 1 1 "$6" "$7" && exec "$2" "$3" 0 "$5" 1 1 "$8" "$9""#;
    let mut helper = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&newuidmap)
        .arg(&newgidmap)
        .arg(&pid)
        .arg(&uid)
        .arg(&gid)
        .arg(subuid.start.to_string())
        .arg(subuid.count.to_string())
        .arg(subgid.start.to_string())
        .arg(subgid.count.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| RootlessError::Step {
            step: "start newuidmap/newgidmap",
            source,
        })?;
    let unshared = nix::sched::unshare(CloneFlags::CLONE_NEWUSER);
    // Let the helper go (or end) either way, so it never waits forever.
    let go = helper.stdin.take().map(|mut s| {
        if unshared.is_ok() {
            s.write_all(b"\n")
        } else {
            Ok(())
        }
    });
    let out = helper
        .wait_with_output()
        .map_err(|source| RootlessError::Step {
            step: "wait for newuidmap/newgidmap",
            source,
        })?;
    unshared.map_err(|e| RootlessError::Step {
        step: "unshare(CLONE_NEWUSER) (are unprivileged user namespaces disabled?)",
        source: e.into(),
    })?;
    if let Some(Err(source)) = go {
        return Err(RootlessError::Step {
            step: "signal newuidmap/newgidmap",
            source,
        });
    }
    if !out.status.success() {
        return Err(RootlessError::Map {
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    // Mapped now: become the namespace's root for real (the effective ids follow the maps,
    // the saved ones too, but say it rather than rely on it).
    let zero_u = nix::unistd::Uid::from_raw(0);
    let zero_g = nix::unistd::Gid::from_raw(0);
    nix::unistd::setresgid(zero_g, zero_g, zero_g).map_err(|e| RootlessError::Step {
        step: "setresgid(0) in the user namespace",
        source: e.into(),
    })?;
    nix::unistd::setresuid(zero_u, zero_u, zero_u).map_err(|e| RootlessError::Step {
        step: "setresuid(0) in the user namespace",
        source: e.into(),
    })?;
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| RootlessError::Step {
        step: "unshare(CLONE_NEWNS)",
        source: e.into(),
    })?;
    // Nothing krunner mounts may reach the host's namespace (and nothing of it may be
    // unmounted under us by a propagation).
    nix::mount::mount::<str, str, str, str>(
        None,
        "/",
        None,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_SLAVE,
        None,
    )
    .map_err(|e| RootlessError::Step {
        step: "make / a slave mount",
        source: e.into(),
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_map_is_the_initial_namespace_and_nothing_else_is() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("0 1001 1\n1 100000 65536\n"));
        assert!(!is_identity_map("0 0 65536\n"));
        assert!(!is_identity_map(""));
    }

    #[test]
    fn a_range_is_found_by_name_or_uid_and_the_first_line_wins() {
        let text = "alice:100000:65536\nbob:165536:65536\n1002:231072:70000\nbob:1:1\n";
        assert_eq!(
            parse_range(text, "bob", 1001),
            Some(SubRange {
                start: 165536,
                count: 65536
            })
        );
        assert_eq!(
            parse_range(text, "carol", 1002),
            Some(SubRange {
                start: 231072,
                count: 70000
            })
        );
        assert_eq!(parse_range(text, "dave", 1003), None);
        assert_eq!(parse_range("eve:x:65536\n", "eve", 1), None);
    }

    #[test]
    fn no_range_or_a_small_one_is_refused_with_the_file_and_the_user() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("subuid");
        std::fs::write(&f, "small:100000:1000\n").unwrap();
        let e = range_from(&f, "small", 5).unwrap_err().to_string();
        assert!(e.contains("only 1000") && e.contains("subuid"), "{e}");
        let e = range_from(&f, "other", 6).unwrap_err().to_string();
        assert!(e.contains("gives other no subordinate id range"), "{e}");
        let e = range_from(&t.path().join("missing"), "x", 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no subordinate id range"), "{e}");
    }
}

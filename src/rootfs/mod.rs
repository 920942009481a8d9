//! Per-run root filesystems: a copy-on-write clone of a cached rootfs that is thrown away
//! after the run, so writes never reach the cache or the next run.
//!
//! The method is probed once per cache directory, cheapest first:
//! 1. **overlay** (Linux, root): the lower dir is the cached rootfs, upper/work live in the run
//!    directory. Nothing is mounted here: the VM child mounts it inside its own private mount
//!    namespace, so the mount disappears with the child, even on SIGKILL. O(1) in image size.
//! 2. **reflink** (`cp -a --reflink=always`; XFS, btrfs; on macOS `cp -c`, i.e. clonefile(2)):
//!    data is shared, metadata is copied.
//! 3. **copy** (`cp -a`): a full copy, with a warning: it costs the image's size in time and disk.
//!
//! Before boot the host writes a few non-secret files into the clone's writable top (the upper
//! dir, or the copy): see [`write_guest_file`].

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use crate::guestfs::RootSpec;

/// How runs get their private root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CloneMethod {
    /// overlayfs in the child's mount namespace.
    Overlay,
    /// Reflink copy (shared data blocks).
    Reflink,
    /// Full copy.
    Copy,
}

impl std::fmt::Display for CloneMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CloneMethod::Overlay => "overlay",
            CloneMethod::Reflink => "reflink",
            CloneMethod::Copy => "copy",
        })
    }
}

/// Errors while making or filling a clone.
#[derive(Debug, thiserror::Error)]
pub enum CloneError {
    /// A filesystem operation failed.
    #[error("{op} {path}")]
    Io {
        /// What.
        op: &'static str,
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// `cp` failed.
    #[error("copying {from} to {to} failed: {stderr}")]
    Copy {
        /// Source tree.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// What cp said.
        stderr: String,
    },
    /// A guest file path that would pass through a symlink or leave the root.
    #[error("cannot write {path} into the guest root: {reason}")]
    UnsafeGuestPath {
        /// The guest path.
        path: String,
        /// Why.
        reason: &'static str,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CloneError + 'a {
    move |source| CloneError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Picks the cheapest method that works for clones of trees under `scratch` (a directory on
/// the cache's filesystem).
pub fn probe(scratch: &Path) -> CloneMethod {
    if cfg!(target_os = "linux") && nix::unistd::geteuid().is_root() && overlay_supported() {
        return CloneMethod::Overlay;
    }
    if reflink_works(scratch) {
        return CloneMethod::Reflink;
    }
    CloneMethod::Copy
}

/// Whether the kernel knows overlayfs (it may still be a module that loads on first mount).
fn overlay_supported() -> bool {
    fs::read_to_string("/proc/filesystems")
        .is_ok_and(|s| s.lines().any(|l| l.ends_with("\toverlay")))
        || Path::new("/sys/module/overlay").exists()
}

fn reflink_works(scratch: &Path) -> bool {
    let a = scratch.join(format!(".reflink-probe-{}", std::process::id()));
    let b = scratch.join(format!(".reflink-probe-{}.2", std::process::id()));
    let ok = fs::write(&a, b"probe").is_ok()
        && cp_command(true)
            .arg(&a)
            .arg(&b)
            .output()
            .is_ok_and(|o| o.status.success());
    let _ = fs::remove_file(&a);
    let _ = fs::remove_file(&b);
    ok
}

fn cp_command(reflink_only: bool) -> Command {
    let mut c = Command::new("cp");
    if cfg!(target_os = "macos") {
        // -c: clonefile(2); -R recursive; -p keeps modes, owners (when privileged) and times.
        c.args(if reflink_only {
            ["-c", "-R", "-p"]
        } else {
            ["-R", "-p", "-P"]
        });
    } else {
        c.arg("-a").arg("--no-target-directory");
        c.arg(if reflink_only {
            "--reflink=always"
        } else {
            "--reflink=never"
        });
    }
    c
}

/// Makes the clone of `lower` for one run inside `run_dir`, and returns how the child finds it.
/// `runner`, a provided runner's tree (holding `opt/actions-runner`), goes above the image: as
/// a second overlay layer, or copied into a copy.
pub fn make_clone(
    method: CloneMethod,
    lower: &Path,
    runner: Option<&Path>,
    run_dir: &Path,
) -> Result<RootSpec, CloneError> {
    match method {
        CloneMethod::Overlay => {
            let (upper, work, merged) = (
                run_dir.join("upper"),
                run_dir.join("work"),
                run_dir.join("merged"),
            );
            for d in [&upper, &work, &merged] {
                fs::create_dir_all(d).map_err(io("create", d))?;
            }
            // The upper dir is the guest's "/" where nothing was changed: give it the lower
            // root's owner and mode, or the guest's / would look like the run dir's.
            copy_dir_meta(lower, &upper)?;
            Ok(RootSpec::Overlay {
                lower: lower.to_path_buf(),
                runner: runner.map(Path::to_path_buf),
                upper,
                work,
                merged,
            })
        }
        CloneMethod::Reflink | CloneMethod::Copy => {
            let dest = run_dir.join("rootfs");
            let out = cp_command(method == CloneMethod::Reflink)
                .arg(lower)
                .arg(&dest)
                .output()
                .map_err(io("run cp for", &dest))?;
            if !out.status.success() {
                return Err(CloneError::Copy {
                    from: lower.to_path_buf(),
                    to: dest,
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            let root = RootSpec::Dir(dest);
            if let Some(tree) = runner {
                copy_runner(&root, tree, method)?;
            }
            Ok(root)
        }
    }
}

/// Replaces the copy's `/opt/actions-runner` with the provided runner's (the same symlink
/// rules as [`write_guest_file`] for `/opt`).
fn copy_runner(root: &RootSpec, tree: &Path, method: CloneMethod) -> Result<(), CloneError> {
    let guest = crate::runner::PROVIDED_ROOT;
    let unsafe_path = |reason| CloneError::UnsafeGuestPath {
        path: guest.to_string(),
        reason,
    };
    let comps = guest_components(guest, &unsafe_path)?;
    let Some((name, parents)) = comps.split_last() else {
        return Err(unsafe_path("names the root itself"));
    };
    let (dir, _) = guest_dirs(root, parents, &unsafe_path)?;
    let dest = dir.join(name);
    match fs::symlink_metadata(&dest) {
        Ok(m) if m.is_dir() => {
            crate::image::cache::remove_tree(&dest).map_err(|e| CloneError::Io {
                op: "remove the image's runner",
                path: dest.clone(),
                source: std::io::Error::other(crate::error_chain(&e)),
            })?
        }
        Ok(_) => fs::remove_file(&dest).map_err(io("remove", &dest))?,
        Err(_) => {}
    }
    let from = tree.join(guest.trim_start_matches('/'));
    let out = cp_command(method == CloneMethod::Reflink)
        .arg(&from)
        .arg(&dest)
        .output()
        .map_err(io("run cp for", &dest))?;
    if !out.status.success() {
        return Err(CloneError::Copy {
            from,
            to: dest,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Gives `to` the owner and mode of `from` (best effort for the owner when not root).
fn copy_dir_meta(from: &Path, to: &Path) -> Result<(), CloneError> {
    let m = fs::metadata(from).map_err(io("stat", from))?;
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(to, Some(m.uid()), Some(m.gid())).map_err(io("chown", to))?;
    }
    fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io("chmod", to))
}

/// The directory host-side writes go to, and the read-only image below it (overlay only).
fn write_target(root: &RootSpec) -> (&Path, Option<&Path>) {
    match root {
        RootSpec::Overlay { lower, upper, .. } => (upper, Some(lower)),
        RootSpec::Dir(d) => (d, None),
    }
}

/// Splits an absolute guest path into its components, refusing `.`, `..` and relative paths.
fn guest_components<'a>(
    guest_path: &'a str,
    unsafe_path: &dyn Fn(&'static str) -> CloneError,
) -> Result<Vec<&'a std::ffi::OsStr>, CloneError> {
    let rel = Path::new(guest_path)
        .strip_prefix("/")
        .map_err(|_| unsafe_path("not absolute"))?;
    rel.components()
        .map(|c| match c {
            Component::Normal(n) => Ok(n),
            _ => Err(unsafe_path("has . or .. components")),
        })
        .collect()
}

/// Makes sure each of `comps` (below the guest root) is a real directory in the clone's
/// writable top, creating missing ones with the image's owner and mode. Returns the last one
/// in the writable top and, for overlay, in the image.
fn guest_dirs(
    root: &RootSpec,
    comps: &[&std::ffi::OsStr],
    unsafe_path: &dyn Fn(&'static str) -> CloneError,
) -> Result<(PathBuf, Option<PathBuf>), CloneError> {
    let (top, lower) = write_target(root);
    let mut dir = top.to_path_buf();
    let mut image_dir = lower.map(Path::to_path_buf);
    for c in comps {
        dir.push(c);
        if let Some(l) = image_dir.as_mut() {
            l.push(c);
        }
        // The image's view of this component decides: lower for overlay, the copy otherwise.
        let image_view = image_dir.as_deref().unwrap_or(&dir);
        match fs::symlink_metadata(image_view) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path("a parent directory is a symlink in the image"))
            }
            Ok(m) if !m.is_dir() => {
                return Err(unsafe_path("a parent is not a directory in the image"))
            }
            _ => {}
        }
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path("a parent directory is a symlink"))
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(unsafe_path("a parent is not a directory")),
            Err(_) => {
                fs::create_dir(&dir).map_err(io("create directory", &dir))?;
                match image_dir.as_deref().filter(|l| l.is_dir()) {
                    Some(l) => copy_dir_meta(l, &dir)?,
                    None => fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
                        .map_err(io("chmod", &dir))?,
                }
            }
        }
    }
    Ok((dir, image_dir))
}

/// Creates `path` (which must not exist) without following a symlink, with `content`.
fn create_file(path: &Path, content: &[u8], mode: u32) -> Result<(), CloneError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(path)
        .map_err(io("create", path))?;
    f.write_all(content).map_err(io("write", path))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Writes a non-secret file into the clone at absolute guest path `guest_path`, before boot.
///
/// Missing parent directories are created with the image's owner and mode. A parent that is a
/// symlink in the image is refused (the write would land elsewhere, maybe on the host); an
/// existing file or symlink at the final name is replaced, never followed.
pub fn write_guest_file(
    root: &RootSpec,
    guest_path: &str,
    content: &[u8],
    mode: u32,
) -> Result<(), CloneError> {
    let unsafe_path = |reason| CloneError::UnsafeGuestPath {
        path: guest_path.to_string(),
        reason,
    };
    let comps = guest_components(guest_path, &unsafe_path)?;
    let Some((name, parents)) = comps.split_last() else {
        return Err(unsafe_path("names the root itself"));
    };
    let (dir, _) = guest_dirs(root, parents, &unsafe_path)?;
    let path = dir.join(name);
    if let Ok(m) = fs::symlink_metadata(&path) {
        if m.is_dir() {
            return Err(unsafe_path("a directory is in the way"));
        }
        fs::remove_file(&path).map_err(io("replace", &path))?;
    }
    create_file(&path, content, mode)
}

/// Makes `guest_dir` in the clone hold exactly `files` (name, content), each with `mode`: what
/// the image had there is removed (copy) or hidden (overlay: the directory is made opaque), so
/// the guest never sees a stale entry. The same symlink rules as [`write_guest_file`] apply;
/// a name must be a single plain path component.
pub fn write_guest_dir(
    root: &RootSpec,
    guest_dir: &str,
    files: &[(String, Vec<u8>)],
    mode: u32,
) -> Result<(), CloneError> {
    let unsafe_path = |reason| CloneError::UnsafeGuestPath {
        path: guest_dir.to_string(),
        reason,
    };
    let comps = guest_components(guest_dir, &unsafe_path)?;
    if comps.is_empty() {
        return Err(unsafe_path("names the root itself"));
    }
    for (name, _) in files {
        let mut c = Path::new(name).components();
        if !matches!((c.next(), c.next()), (Some(Component::Normal(n)), None) if n == name.as_str())
        {
            return Err(CloneError::UnsafeGuestPath {
                path: format!("{guest_dir}/{name}"),
                reason: "a file name must be one plain path component",
            });
        }
    }
    let (dir, image_dir) = guest_dirs(root, &comps, &unsafe_path)?;
    // Empty it: entries of the copy, or of an earlier write into the upper dir. remove_dir_all
    // does not follow symlinks.
    for e in fs::read_dir(&dir).map_err(io("list", &dir))? {
        let p = e.map_err(io("list", &dir))?.path();
        let r = match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
            _ => fs::remove_file(&p),
        };
        r.map_err(io("remove", &p))?;
    }
    // Overlay: the image's own entries would show through the upper dir unless it is opaque.
    if let Some(lower) = image_dir.filter(|l| l.is_dir()) {
        let has_entries = fs::read_dir(&lower)
            .map_err(io("list", &lower))?
            .next()
            .is_some();
        if has_entries {
            let name = format!("{}opaque", crate::rootless::overlay_xattr_prefix());
            xattr::set(&dir, &name, b"y").map_err(io("make opaque (overlay xattr)", &dir))?;
        }
    }
    for (name, content) in files {
        create_file(&dir.join(name), content, mode)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlay_spec(t: &Path) -> RootSpec {
        let lower = t.join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(t.join("run")).unwrap();
        make_clone(CloneMethod::Overlay, &lower, None, &t.join("run")).unwrap()
    }

    #[test]
    fn guest_files_go_to_the_upper_dir_with_image_metadata() {
        let t = tempfile::tempdir().unwrap();
        let root = overlay_spec(t.path());
        fs::set_permissions(
            t.path().join("lower/etc"),
            fs::Permissions::from_mode(0o750),
        )
        .unwrap();
        write_guest_file(&root, "/etc/resolv.conf", b"options use-vc\n", 0o644).unwrap();
        write_guest_file(&root, "/.krunner/agent", b"#!/bin/sh\n", 0o755).unwrap();
        let upper = t.path().join("run/upper");
        assert_eq!(
            fs::read(upper.join("etc/resolv.conf")).unwrap(),
            b"options use-vc\n"
        );
        assert_eq!(
            fs::metadata(upper.join("etc"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        assert_eq!(
            fs::metadata(upper.join(".krunner/agent"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert!(
            !t.path().join("lower/etc/resolv.conf").exists(),
            "the cache is untouched"
        );
    }

    #[test]
    fn symlinked_parents_and_odd_paths_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = overlay_spec(t.path());
        std::os::unix::fs::symlink("/tmp", t.path().join("lower/evil")).unwrap();
        for p in ["/evil/x", "relative", "/a/../b", "/"] {
            assert!(
                matches!(
                    write_guest_file(&root, p, b"x", 0o644),
                    Err(CloneError::UnsafeGuestPath { .. })
                ),
                "{p}"
            );
        }
        // A final-component symlink is replaced, not followed.
        let copy = RootSpec::Dir(t.path().join("copy"));
        fs::create_dir_all(t.path().join("copy/etc")).unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, t.path().join("copy/etc/hostname")).unwrap();
        write_guest_file(&copy, "/etc/hostname", b"guest\n", 0o644).unwrap();
        assert_eq!(fs::read(&outside).unwrap(), b"keep");
        assert_eq!(
            fs::read(t.path().join("copy/etc/hostname")).unwrap(),
            b"guest\n"
        );
    }

    #[test]
    fn guest_dirs_hold_exactly_the_given_files() {
        let t = tempfile::tempdir().unwrap();
        // A copy whose image already has the directory, with a stale entry and a symlink.
        let copy = RootSpec::Dir(t.path().join("copy"));
        let argv = t.path().join("copy/.krunner/argv");
        fs::create_dir_all(argv.join("sub")).unwrap();
        fs::write(argv.join("7"), b"stale").unwrap();
        let outside = t.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        std::os::unix::fs::symlink(&outside, argv.join("0")).unwrap();
        let files = vec![
            ("0".to_string(), b"a\n\n".to_vec()),
            ("1".to_string(), Vec::new()),
        ];
        write_guest_dir(&copy, "/.krunner/argv", &files, 0o644).unwrap();
        let mut names: Vec<String> = fs::read_dir(&argv)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["0", "1"]);
        assert_eq!(fs::read(argv.join("0")).unwrap(), b"a\n\n");
        assert_eq!(
            fs::read(outside).unwrap(),
            b"keep",
            "the symlink was not followed"
        );
        assert_eq!(
            fs::metadata(argv.join("1")).unwrap().permissions().mode() & 0o777,
            0o644
        );
        for bad in ["a/b", "..", ".", ""] {
            assert!(
                write_guest_dir(&copy, "/.krunner/argv", &[(bad.into(), vec![])], 0o644).is_err(),
                "{bad:?}"
            );
        }
        // A symlinked directory in the image is refused.
        std::os::unix::fs::symlink("/tmp", t.path().join("copy/.krunner/env")).unwrap();
        assert!(matches!(
            write_guest_dir(&copy, "/.krunner/env", &[], 0o644),
            Err(CloneError::UnsafeGuestPath { .. })
        ));

        // Overlay: the image's entries are hidden by an opaque upper directory (root only:
        // trusted.* xattrs).
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = overlay_spec(t.path());
        fs::create_dir_all(t.path().join("lower/.krunner/env")).unwrap();
        fs::write(t.path().join("lower/.krunner/env/OLD"), b"x").unwrap();
        write_guest_dir(
            &root,
            "/.krunner/env",
            &[("NEW".into(), b"v".to_vec())],
            0o644,
        )
        .unwrap();
        let upper = t.path().join("run/upper/.krunner/env");
        assert_eq!(fs::read(upper.join("NEW")).unwrap(), b"v");
        assert_eq!(
            xattr::get(&upper, "trusted.overlay.opaque").unwrap(),
            Some(b"y".to_vec())
        );
    }

    #[test]
    fn copy_clones_are_independent() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        fs::create_dir_all(lower.join("d")).unwrap();
        fs::write(lower.join("d/f"), b"1").unwrap();
        std::os::unix::fs::symlink("d/f", lower.join("l")).unwrap();
        fs::create_dir_all(t.path().join("run")).unwrap();
        let method = if reflink_works(t.path()) {
            CloneMethod::Reflink
        } else {
            CloneMethod::Copy
        };
        let RootSpec::Dir(d) = make_clone(method, &lower, None, &t.path().join("run")).unwrap()
        else {
            panic!("copy gives a dir")
        };
        assert_eq!(fs::read_link(d.join("l")).unwrap(), Path::new("d/f"));
        fs::write(d.join("d/f"), b"2").unwrap();
        assert_eq!(fs::read(lower.join("d/f")).unwrap(), b"1");
    }

    #[test]
    fn a_copy_gets_the_provided_runner_instead_of_the_images() {
        let t = tempfile::tempdir().unwrap();
        let lower = t.path().join("lower");
        fs::create_dir_all(lower.join("opt/actions-runner")).unwrap();
        fs::write(lower.join("opt/actions-runner/old.dll"), b"old").unwrap();
        let tree = t.path().join("tree");
        fs::create_dir_all(tree.join("opt/actions-runner/bin")).unwrap();
        fs::write(tree.join("opt/actions-runner/bin/Runner.Listener"), b"new").unwrap();
        fs::create_dir_all(t.path().join("run")).unwrap();
        let RootSpec::Dir(d) = make_clone(
            CloneMethod::Copy,
            &lower,
            Some(&tree),
            &t.path().join("run"),
        )
        .unwrap() else {
            panic!("copy gives a dir")
        };
        assert_eq!(
            fs::read(d.join("opt/actions-runner/bin/Runner.Listener")).unwrap(),
            b"new"
        );
        assert!(!d.join("opt/actions-runner/old.dll").exists());
        // An image whose /opt is a link gets no runner written through it.
        let evil = t.path().join("evil");
        fs::create_dir_all(&evil).unwrap();
        std::os::unix::fs::symlink(t.path().join("outside"), evil.join("opt")).unwrap();
        fs::create_dir_all(t.path().join("run2")).unwrap();
        let e = make_clone(
            CloneMethod::Copy,
            &evil,
            Some(&tree),
            &t.path().join("run2"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("/opt/actions-runner") && e.contains("symlink"),
            "{e}"
        );
        assert!(!t.path().join("outside").exists());
    }
}

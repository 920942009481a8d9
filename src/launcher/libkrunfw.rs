//! Finding libkrunfw, the library holding the guest kernel that libkrun loads: a krun run
//! cannot start without it, so the launcher checks for it before it claims anything.

use std::path::{Path, PathBuf};

use super::run::LaunchError;

/// Finds libkrunfw.so.5 where the dynamic loader would: `dir`, LD_LIBRARY_PATH, the loader
/// cache, the usual library directories.
pub fn find_libkrunfw(dir: Option<&Path>) -> Option<PathBuf> {
    let name = if cfg!(target_os = "macos") {
        "libkrunfw.5.dylib"
    } else {
        "libkrunfw.so.5"
    };
    let mut dirs: Vec<PathBuf> = dir.into_iter().map(Path::to_path_buf).collect();
    if let Some(p) = std::env::var_os("LD_LIBRARY_PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    if let Ok(out) = std::process::Command::new("ldconfig").arg("-p").output() {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(p) = text
            .lines()
            .filter(|l| l.trim_start().starts_with(name))
            .find_map(|l| l.rsplit(" => ").next())
        {
            dirs.push(
                Path::new(p.trim())
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default(),
            );
        }
    }
    for d in [
        "/usr/lib64",
        "/usr/lib",
        "/usr/local/lib",
        "/usr/local/lib64",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/opt/homebrew/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.exists())
}

/// Fails with [`LaunchError::NoLibkrunfw`], saying where it looked, when
/// [`find_libkrunfw`] finds nothing.
pub(super) fn check_libkrunfw(dir: Option<&Path>) -> Result<(), LaunchError> {
    match find_libkrunfw(dir) {
        Some(_) => Ok(()),
        None => Err(LaunchError::NoLibkrunfw {
            searched: match dir {
                Some(d) => format!(
                    " in {}, LD_LIBRARY_PATH, the loader cache or the usual library directories",
                    d.display()
                ),
                None => " in LD_LIBRARY_PATH, the loader cache or the usual library directories"
                    .to_string(),
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libkrunfw_search_honours_the_given_dir() {
        let d = tempfile::tempdir().unwrap();
        let name = if cfg!(target_os = "macos") {
            "libkrunfw.5.dylib"
        } else {
            "libkrunfw.so.5"
        };
        std::fs::write(d.path().join(name), b"").unwrap();
        assert_eq!(find_libkrunfw(Some(d.path())), Some(d.path().join(name)));
    }
}

//! The actions runner a guest runs: the image's own, or one krunner provides from the host.
//!
//! A provided runner is a release of actions/runner that krunner finds in the releases API
//! ([`releases`]), downloads once per version and architecture, verifies against the SHA-256
//! in the release notes and unpacks into the cache ([`store`]). Each guest then sees it at
//! `/opt/actions-runner` as an overlay layer between the image and the run's writable layer
//! (a copy only where overlayfs is not available), so nothing is copied per run. While
//! `krunner run` goes on, [`supply`] checks for new releases and moves new guests to them, so
//! the runner never lags behind what GitHub accepts.

pub mod releases;
pub mod store;
pub mod supply;

use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use crate::image::cache::CacheError;

/// Where a provided runner appears in every guest.
pub const PROVIDED_ROOT: &str = "/opt/actions-runner";

/// Where an image's own runner may be: krunner's images (and most self-built ones) use
/// `/opt/actions-runner`; GitHub's `ghcr.io/actions/actions-runner` image uses `/home/runner`.
pub const IMAGE_ROOTS: [&str; 2] = ["/opt/actions-runner", "/home/runner"];

/// Which runner a guest gets (`--runner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Choice {
    /// The image's runner if it has one, else a provided one.
    Auto,
    /// Always the provided one, also over an image's own.
    Provided,
    /// The image's own; an image without one is refused at start.
    Image,
}

/// A runner version, `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u32, pub u32, pub u32);

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Version, String> {
        let t = s.strip_prefix('v').unwrap_or(s);
        let mut parts = t.split('.').map(|p| {
            (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u32>().ok())
                .flatten()
        });
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Some(a)), Some(Some(b)), Some(Some(c)), None) => Ok(Version(a, b, c)),
            _ => Err(format!(
                "{s:?} is not a runner version (MAJOR.MINOR.PATCH, e.g. 2.330.0)"
            )),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

impl serde::Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Version, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `--runner-version`: the newest release, or exactly one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The newest published release, followed while krunner runs.
    Latest,
    /// This version, pinned.
    Exact(Version),
}

impl FromStr for Wanted {
    type Err = String;
    fn from_str(s: &str) -> Result<Wanted, String> {
        if s == "latest" {
            return Ok(Wanted::Latest);
        }
        s.parse().map(Wanted::Exact)
    }
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wanted::Latest => f.write_str("latest"),
            Wanted::Exact(v) => v.fmt(f),
        }
    }
}

impl Wanted {
    /// The pinned version, if any.
    pub fn exact(self) -> Option<Version> {
        match self {
            Wanted::Latest => None,
            Wanted::Exact(v) => Some(v),
        }
    }
}

/// The runner's architectures, named as its release assets name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// x86-64 (`linux-x64`).
    X64,
    /// 64-bit ARM (`linux-arm64`).
    Arm64,
}

impl Arch {
    /// For a guest platform's GOARCH (`amd64`, `arm64`); None for one without a runner.
    pub fn of_goarch(goarch: &str) -> Option<Arch> {
        match goarch {
            "amd64" => Some(Arch::X64),
            "arm64" => Some(Arch::Arm64),
            _ => None,
        }
    }

    /// The asset platform: `linux-x64` or `linux-arm64`.
    pub fn platform(self) -> &'static str {
        match self {
            Arch::X64 => "linux-x64",
            Arch::Arm64 => "linux-arm64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.platform())
    }
}

/// Why a runner could not be provided. Each names the version, asset or URL involved.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The releases API or a download could not be reached or answered badly.
    #[error("runner releases at {url}: {reason}")]
    Http {
        /// The URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The release has no tarball for the architecture.
    #[error("runner {version}: the release has no asset {asset}")]
    MissingAsset {
        /// The release.
        version: Version,
        /// The file name looked for.
        asset: String,
    },
    /// The release notes carry no checksum for the tarball.
    #[error(
        "runner {version}: the release notes hold no SHA-256 for {asset}, so it cannot be verified"
    )]
    NoChecksum {
        /// The release.
        version: Version,
        /// The tarball.
        asset: String,
    },
    /// The download's SHA-256 is not the published one.
    #[error("runner {version}: {asset} does not match its published SHA-256 (expected {expected}, got {actual}); nothing was cached")]
    ChecksumMismatch {
        /// The release.
        version: Version,
        /// The tarball.
        asset: String,
        /// Published.
        expected: String,
        /// Downloaded.
        actual: String,
    },
    /// The release listing has no such version.
    #[error("runner {version} is not among the releases at {url}")]
    NoSuchVersion {
        /// Asked for.
        version: Version,
        /// Where we looked.
        url: String,
    },
    /// The listing has no published release at all.
    #[error("the releases at {url} list no published runner")]
    NoRelease {
        /// Where we looked.
        url: String,
    },
    /// Offline and nothing suitable in the cache.
    #[error("no provided runner {wanted} for {arch} in the cache, and krunner may not download one (--offline)")]
    NotCached {
        /// What was asked for.
        wanted: Wanted,
        /// For which architecture.
        arch: Arch,
    },
    /// The tarball could not be unpacked.
    #[error("runner {version}: cannot unpack {asset}")]
    Unpack {
        /// The release.
        version: Version,
        /// The tarball.
        asset: String,
        /// Why (boxed: it is large, and rare).
        #[source]
        source: Box<crate::image::unpack::UnpackError>,
    },
    /// A runner tarball without `bin/Runner.Listener`.
    #[error("runner {version}: {asset} holds no bin/Runner.Listener")]
    NotARunner {
        /// The release.
        version: Version,
        /// The tarball.
        asset: String,
    },
    /// The cache could not be read or written.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// Another file operation failed.
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
}

/// Which runner each guest of `krunner run` gets, decided at start.
#[derive(Debug, Clone)]
pub enum Plan {
    /// The image's own, in this guest directory.
    Image {
        /// Where it is.
        root: String,
    },
    /// A provided one: whichever the supply hands out when the guest starts.
    Provided(supply::Supply),
}

impl Plan {
    /// The runner's directory in the guest, and the layer to present there (provided only),
    /// held in use while the caller keeps it.
    pub fn for_next_guest(&self) -> (String, Option<std::sync::Arc<supply::Current>>) {
        match self {
            Plan::Image { root } => (root.clone(), None),
            Plan::Provided(s) => (PROVIDED_ROOT.to_string(), Some(s.current())),
        }
    }
}

/// A runner the image brings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRunner {
    /// Its directory in the guest.
    pub root: &'static str,
    /// Its version, when the image's runner tells it (`bin/Runner.Listener.deps.json`).
    pub version: Option<Version>,
}

/// The runner in the image tree `rootfs`, looked up at [`IMAGE_ROOTS`] without following
/// symbolic links (the tree is the image's, and a link could point anywhere on the host).
pub fn find_in_image(rootfs: &Path) -> Option<ImageRunner> {
    IMAGE_ROOTS.into_iter().find_map(|root| {
        let listener = format!("{root}/bin/Runner.Listener");
        let host = within(rootfs, &listener)?;
        let m = std::fs::symlink_metadata(&host).ok()?;
        m.is_file().then(|| ImageRunner {
            root,
            version: within(rootfs, &format!("{root}/bin/Runner.Listener.deps.json"))
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| version_in_deps(&t)),
        })
    })
}

/// `rootfs` joined with the absolute guest path `guest`, if no component on the way is a
/// symbolic link.
fn within(rootfs: &Path, guest: &str) -> Option<PathBuf> {
    let mut p = rootfs.to_path_buf();
    for c in Path::new(guest).components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => {
                p.push(n);
                if std::fs::symlink_metadata(&p).ok()?.file_type().is_symlink() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(p)
}

/// The runner's version from its .NET dependency file: `"Runner.Listener/2.330.0"`.
pub fn version_in_deps(text: &str) -> Option<Version> {
    let at = text.find("\"Runner.Listener/")? + "\"Runner.Listener/".len();
    let end = text[at..].find('"')?;
    text[at..at + end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_order() {
        let v: Version = "v2.330.0".parse().unwrap();
        assert_eq!(v, Version(2, 330, 0));
        assert!(Version(2, 330, 0) > Version(2, 99, 9));
        for bad in [
            "2.330",
            "2.330.0.1",
            "2.x.0",
            "",
            "2..0",
            "+1.2.3",
            "latest",
        ] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert_eq!("latest".parse::<Wanted>().unwrap(), Wanted::Latest);
        assert_eq!(
            "2.1.0".parse::<Wanted>().unwrap(),
            Wanted::Exact(Version(2, 1, 0))
        );
        assert!("newest".parse::<Wanted>().unwrap_err().contains("newest"));
    }

    #[test]
    fn arches() {
        assert_eq!(Arch::of_goarch("amd64"), Some(Arch::X64));
        assert_eq!(Arch::of_goarch("arm64").unwrap().platform(), "linux-arm64");
        assert_eq!(Arch::of_goarch("riscv64"), None);
    }

    #[test]
    fn the_image_runner_is_found_where_images_put_it_and_never_through_a_link() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(find_in_image(r), None);
        std::fs::create_dir_all(r.join("home/runner/bin")).unwrap();
        std::fs::write(r.join("home/runner/bin/Runner.Listener"), "x").unwrap();
        std::fs::write(
            r.join("home/runner/bin/Runner.Listener.deps.json"),
            r#"{"libraries": {"Runner.Listener/2.329.1": {"type": "project"}}}"#,
        )
        .unwrap();
        assert_eq!(
            find_in_image(r),
            Some(ImageRunner {
                root: "/home/runner",
                version: Some(Version(2, 329, 1))
            })
        );
        // /opt/actions-runner comes first; a link there is not followed.
        std::fs::create_dir_all(r.join("opt")).unwrap();
        std::os::unix::fs::symlink("/", r.join("opt/actions-runner")).unwrap();
        assert_eq!(find_in_image(r).unwrap().root, "/home/runner");
        std::fs::remove_file(r.join("opt/actions-runner")).unwrap();
        std::fs::create_dir_all(r.join("opt/actions-runner/bin")).unwrap();
        std::fs::write(r.join("opt/actions-runner/bin/Runner.Listener"), "x").unwrap();
        assert_eq!(
            find_in_image(r),
            Some(ImageRunner {
                root: "/opt/actions-runner",
                version: None
            })
        );
    }
}

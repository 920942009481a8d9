//! Image names and platforms: what the user typed, turned into a registry reference and the
//! platform to pick from a multi-arch index.
//!
//! Short names `ubuntu` and `fedora` mean krunner's own runner images under the configurable
//! image repository; anything else follows Docker's rules (`alpine` is
//! `docker.io/library/alpine:latest`), with digests (`@sha256:…`) accepted.

use std::fmt;
use std::str::FromStr;

use oci_client::Reference;

/// The default repository prefix that the short names `ubuntu` and `fedora` live under:
/// `ghcr.io/krunner`, where the images workflow of github.com/krunner/krunner (Cargo.toml's
/// `repository`) pushes them, or `KRUNNER_DEFAULT_IMAGE_REPO` at build time. The release
/// workflow sets that to `ghcr.io/<owner>`, where the same repository's images workflow
/// pushes, so a fork's released binaries use the fork's images. `tests/it/images.rs` checks
/// that this default, Cargo.toml and the images workflow name the same owner.
pub const DEFAULT_IMAGE_REPO: &str = match option_env!("KRUNNER_DEFAULT_IMAGE_REPO") {
    Some(repo) => repo,
    None => "ghcr.io/krunner",
};

/// The short names that resolve to krunner's runner images.
pub const SHORT_NAMES: &[&str] = &["ubuntu", "fedora"];

/// Errors about an image name or a platform string.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// The name does not parse as an image reference.
    #[error("invalid image reference {name:?}: {reason}")]
    Invalid {
        /// What the user gave.
        name: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The platform string is not `os/arch[/variant]`.
    #[error("invalid platform {0:?}: expected os/arch[/variant], e.g. linux/arm64/v8")]
    Platform(String),
    /// The guest must be Linux.
    #[error("platform {0:?}: krunner guests run Linux, so the os must be \"linux\"")]
    NotLinux(String),
    /// The host CPU has no matching guest architecture.
    #[error("this host's architecture {0:?} has no krunner guest; use --platform")]
    HostArch(String),
}

/// Turns what the user typed into a full reference.
///
/// `image_repo` is the prefix for the short names (`ubuntu` → `<image_repo>/runner-ubuntu:latest`).
pub fn resolve(name: &str, image_repo: &str) -> Result<Reference, ReferenceError> {
    let (base, suffix) = split_short(name);
    let full = if SHORT_NAMES.contains(&base) {
        format!("{}/runner-{base}{suffix}", image_repo.trim_end_matches('/'))
    } else {
        name.to_string()
    };
    parse_reference(&full).map_err(|reason| ReferenceError::Invalid {
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

/// Parses `[domain/]path[:tag][@digest]` with Docker's rules, defaulting to `docker.io`,
/// `library/` and `latest`.
///
/// Written out rather than using oci-spec's `Reference::from_str`, whose grammar is one large
/// regex compiled at every process start (about 40 ms of CPU, most of a warm `pull`).
fn parse_reference(full: &str) -> Result<Reference, &'static str> {
    if full.is_empty() || full.len() > 512 {
        return Err("empty or too long");
    }
    let (rest, digest) = match full.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (full, None),
    };
    if let Some(d) = digest {
        let (algo, hex) = d.split_once(':').ok_or("a digest is algorithm:hex")?;
        let hex_ok = |len: usize| {
            hex.len() == len
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        let ok = match algo {
            "sha256" => hex_ok(64),
            "sha512" => hex_ok(128),
            _ => false,
        };
        if !ok {
            return Err("a digest must be sha256:<64 hex> or sha512:<128 hex>");
        }
    }
    // A tag follows the last ':' that comes after the last '/' (a ':' before it is a port).
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let mut b = t.bytes();
        let first_ok = b
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
        if !first_ok
            || t.len() > 128
            || !b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        {
            return Err("a tag is up to 128 of [A-Za-z0-9_.-], not starting with . or -");
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((d, p))
            if d.contains(['.', ':'])
                || d == "localhost"
                || d.bytes().any(|c| c.is_ascii_uppercase()) =>
        {
            (d.to_string(), p.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let domain = if domain == "index.docker.io" {
        "docker.io".to_string()
    } else {
        domain
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    if domain.is_empty()
        || !domain
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b".-:[]_".contains(&c))
    {
        return Err("invalid registry host");
    }
    if path.len() > 255 || !path.split('/').all(path_component_ok) {
        return Err(
            "repository path components are lowercase [a-z0-9] joined by '.', '_', '__' or '-'",
        );
    }
    let tag = tag.map(String::from);
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(domain, path, t, d.to_string()),
        (None, Some(d)) => Reference::with_digest(domain, path, d.to_string()),
        (Some(t), None) => Reference::with_tag(domain, path, t),
        (None, None) => Reference::with_tag(domain, path, "latest".to_string()),
    })
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn path_component_ok(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        let ch = b[i];
        if ch.is_ascii_lowercase() || ch.is_ascii_digit() {
            i += 1;
            continue;
        }
        // A separator: '.', '_', '__' or a run of '-', always followed by [a-z0-9].
        let start = i;
        match ch {
            b'.' => i += 1,
            b'_' => i += if b.get(i + 1) == Some(&b'_') { 2 } else { 1 },
            b'-' => {
                while b.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == start
            || !b
                .get(i)
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            return false;
        }
    }
    true
}

/// Splits `ubuntu:24.04` into (`ubuntu`, `:24.04`) so short names keep their tag or digest.
fn split_short(name: &str) -> (&str, &str) {
    match name.find([':', '@']) {
        Some(i) if !name[..i].contains('/') => (&name[..i], &name[i..]),
        _ => (name, ""),
    }
}

/// An OCI platform: always `linux` for a krunner guest, an architecture and maybe a variant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    /// Operating system, always `linux` for a guest.
    pub os: String,
    /// GOARCH-style architecture: `amd64`, `arm64`, …
    pub architecture: String,
    /// Optional variant (`v8` for arm64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform a guest on this host runs: Linux on the host's CPU, on macOS too.
    pub fn host() -> Result<Platform, ReferenceError> {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            other => return Err(ReferenceError::HostArch(other.to_string())),
        };
        Ok(Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(String::from),
        })
    }

    /// Whether an index entry's platform fits this one.
    ///
    /// Variants follow containerd's normalisation: an arm64 entry without a variant is `v8`,
    /// and when no variant was asked for, any entry variant of the right architecture fits
    /// only if it is the architecture's default one.
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        let norm_arch = |a: &str| match a {
            "x86_64" => "amd64".to_string(),
            "aarch64" => "arm64".to_string(),
            a => a.to_string(),
        };
        if os != self.os || norm_arch(architecture) != norm_arch(&self.architecture) {
            return false;
        }
        let default_variant = match norm_arch(architecture).as_str() {
            "arm64" => Some("v8"),
            _ => None,
        };
        let want = self.variant.as_deref().or(default_variant);
        let have = variant.filter(|v| !v.is_empty()).or(default_variant);
        match (want, have) {
            (Some(w), Some(h)) => w == h,
            (None, None) => true,
            // amd64 entries may carry v1..v4; with nothing requested, only the baseline fits.
            (None, Some(h)) => h == "v1",
            (Some(_), None) => false,
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let (os, architecture, variant) = match parts.as_slice() {
            [os, arch] => (*os, *arch, None),
            [os, arch, variant] => (*os, *arch, Some(*variant)),
            _ => return Err(ReferenceError::Platform(s.to_string())),
        };
        if os.is_empty() || architecture.is_empty() || variant.is_some_and(str::is_empty) {
            return Err(ReferenceError::Platform(s.to_string()));
        }
        if os != "linux" {
            return Err(ReferenceError::NotLinux(s.to_string()));
        }
        Ok(Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(String::from),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_under_the_image_repo() {
        let r = resolve("ubuntu", "127.0.0.1:5000/ci").unwrap();
        assert_eq!(r.whole(), "127.0.0.1:5000/ci/runner-ubuntu:latest");
        let r = resolve("fedora:41", DEFAULT_IMAGE_REPO).unwrap();
        assert_eq!(r.whole(), format!("{DEFAULT_IMAGE_REPO}/runner-fedora:41"));
        if option_env!("KRUNNER_DEFAULT_IMAGE_REPO").is_none() {
            assert_eq!(DEFAULT_IMAGE_REPO, "ghcr.io/krunner");
            assert_eq!(r.whole(), "ghcr.io/krunner/runner-fedora:41");
        }
    }

    #[test]
    fn docker_defaults_apply_to_other_names() {
        let r = resolve("alpine", DEFAULT_IMAGE_REPO).unwrap();
        assert_eq!(r.registry(), "docker.io");
        assert_eq!(r.repository(), "library/alpine");
        assert_eq!(r.tag(), Some("latest"));
        let d = format!("sha256:{}", "a".repeat(64));
        let r = resolve(&format!("localhost:5000/x/y@{d}"), DEFAULT_IMAGE_REPO).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.digest(), Some(d.as_str()));
        assert_eq!(r.tag(), None);
    }

    #[test]
    fn parsing_follows_dockers_grammar() {
        let ok = |s: &str| parse_reference(s).map(|r| r.whole()).unwrap();
        assert_eq!(ok("alpine"), "docker.io/library/alpine:latest");
        assert_eq!(ok("index.docker.io/foo/bar:1"), "docker.io/foo/bar:1");
        assert_eq!(ok("localhost/x"), "localhost/x:latest");
        assert_eq!(ok("reg:5000/a/b-c__d.e:v1.2"), "reg:5000/a/b-c__d.e:v1.2");
        assert_eq!(ok("[::1]:5000/a:t"), "[::1]:5000/a:t");
        let d = "sha256:".to_string() + &"0".repeat(64);
        assert_eq!(ok(&format!("q.io/a:t@{d}")), format!("q.io/a:t@{d}"));
        for bad in [
            "",
            "a/B",
            "a:",
            "a:-x",
            "a@sha256:12",
            "a//b",
            "-a",
            "a-",
            "a..b",
            "a___b",
            "x.io/a b",
            "a@md5:00",
        ] {
            assert!(parse_reference(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn bad_names_are_named_in_the_error() {
        let e = resolve("UPPER/Case:x", DEFAULT_IMAGE_REPO).unwrap_err();
        assert!(e.to_string().contains("UPPER/Case:x"), "{e}");
    }

    #[test]
    fn platforms_parse_and_match_variants() {
        let p: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches("linux", "arm64", None));
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", Some("v9")));
        assert!(!p.matches("linux", "amd64", None));
        let v7: Platform = "linux/arm/v7".parse().unwrap();
        assert!(v7.matches("linux", "arm", Some("v7")));
        assert!(!v7.matches("linux", "arm", Some("v6")));
        assert!(!v7.matches("linux", "arm", None));
        let amd: Platform = "linux/amd64".parse().unwrap();
        assert!(amd.matches("linux", "amd64", None));
        assert!(!amd.matches("linux", "amd64", Some("v3")));
        assert!(!amd.matches("windows", "amd64", None));
        assert!("darwin/arm64".parse::<Platform>().is_err());
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/arm64/".parse::<Platform>().is_err());
    }

    #[test]
    fn host_platform_is_linux() {
        if let Ok(p) = Platform::host() {
            assert_eq!(p.os, "linux");
        }
    }
}

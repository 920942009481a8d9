//! Registry credentials from the files Docker and the containers tools keep.
//!
//! Looked up, first match wins: `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
//! `~/.config/containers/auth.json`, `$DOCKER_CONFIG/config.json` (default `~/.docker/config.json`).
//! Within a file the most specific key wins (`host/namespace/repo` before `host`), as in
//! containers-auth.json(5). Only inline credentials (`auth` or `username`/`password`) are read;
//! credential helpers are not run. A missing file means anonymous; a malformed one is an error
//! that names it. Passwords go straight into a [`Secret`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use crate::secret::Secret;

/// Basic credentials for one registry.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
    /// The file they came from, for log lines.
    pub source: PathBuf,
}

/// An auth file that exists but cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file cannot be read.
    #[error("cannot read registry auth file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not the JSON we expect.
    #[error("registry auth file {path} is not valid JSON: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's words (never the file's content).
        reason: String,
    },
    /// An `auth` entry that is not base64 of `user:password`.
    #[error("registry auth file {path}: the entry for {key:?} is not base64 of user:password")]
    BadEntry {
        /// The file.
        path: PathBuf,
        /// The registry key.
        key: String,
    },
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The auth files to consult, in order, given an environment lookup.
pub fn candidate_files(env: impl Fn(&str) -> Option<String>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Some(f) = env("REGISTRY_AUTH_FILE").filter(|s| !s.is_empty()) {
        files.push(PathBuf::from(f));
    }
    if let Some(d) = env("XDG_RUNTIME_DIR").filter(|s| !s.is_empty()) {
        files.push(Path::new(&d).join("containers/auth.json"));
    }
    let home = env("HOME").filter(|s| !s.is_empty());
    if let Some(h) = &home {
        files.push(Path::new(h).join(".config/containers/auth.json"));
    }
    match env("DOCKER_CONFIG").filter(|s| !s.is_empty()) {
        Some(d) => files.push(Path::new(&d).join("config.json")),
        None => {
            if let Some(h) = &home {
                files.push(Path::new(h).join(".docker/config.json"));
            }
        }
    }
    files
}

/// Finds credentials for `registry` (as in a reference: `host[:port]`) and `repository`.
pub fn lookup(
    files: &[PathBuf],
    registry: &str,
    repository: &str,
) -> Result<Option<Credentials>, AuthError> {
    for path in files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(AuthError::Read {
                    path: path.clone(),
                    source,
                })
            }
        };
        let file: AuthFile = serde_json::from_str(&text).map_err(|e| AuthError::Parse {
            path: path.clone(),
            // serde_json's message has line/column, never the value itself.
            reason: e.to_string(),
        })?;
        if let Some((key, entry)) = best_entry(&file.auths, registry, repository) {
            return decode(path, key, entry).map(Some);
        }
    }
    Ok(None)
}

/// Picks the most specific key for this registry and repository.
fn best_entry<'a>(
    auths: &'a BTreeMap<String, AuthEntry>,
    registry: &str,
    repository: &str,
) -> Option<(&'a str, &'a AuthEntry)> {
    let hosts: Vec<&str> = if registry == "docker.io" {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![registry]
    };
    let mut best: Option<(usize, &str, &AuthEntry)> = None;
    for (key, entry) in auths {
        let normalized = normalize_key(key);
        for host in &hosts {
            let specificity = if normalized == *host {
                Some(0)
            } else {
                normalized
                    .strip_prefix(host)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .filter(|path| {
                        repository == *path || repository.starts_with(&format!("{path}/"))
                    })
                    .map(|path| path.len() + 1)
            };
            if let Some(s) = specificity {
                if best.as_ref().is_none_or(|(b, _, _)| s > *b) {
                    best = Some((s, key.as_str(), entry));
                }
            }
        }
    }
    best.map(|(_, k, e)| (k, e))
}

/// Strips a scheme and Docker's legacy `/v1/` suffix from a key.
fn normalize_key(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    k.strip_suffix("/v1/")
        .or_else(|| k.strip_suffix("/v1"))
        .or_else(|| k.strip_suffix('/'))
        .unwrap_or(k)
}

fn decode(path: &Path, key: &str, entry: &AuthEntry) -> Result<Credentials, AuthError> {
    let bad = || AuthError::BadEntry {
        path: path.to_path_buf(),
        key: key.to_string(),
    };
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Credentials {
            username: u.clone(),
            password: Secret::new(p.clone()),
            source: path.to_path_buf(),
        });
    }
    let encoded = entry.auth.as_deref().ok_or_else(bad)?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| bad())?;
    let text = Secret::new(String::from_utf8(raw).map_err(|_| bad())?);
    let (u, p) = text.expose().split_once(':').ok_or_else(bad)?;
    Ok(Credentials {
        username: u.to_string(),
        password: Secret::new(p),
        source: path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    }

    #[test]
    fn finds_inline_credentials_most_specific_first() {
        let d = tempfile::tempdir().unwrap();
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let f = write(
            d.path(),
            "auth.json",
            &format!(
                r#"{{"auths":{{"reg.example:5000":{{"auth":"{}"}},
                   "reg.example:5000/team/app":{{"auth":"{}"}},
                   "https://index.docker.io/v1/":{{"auth":"{}"}}}}}}"#,
                enc("all:pw1"),
                enc("team:pw2"),
                enc("hub:pw3")
            ),
        );
        let files = vec![d.path().join("missing.json"), f];
        let c = lookup(&files, "reg.example:5000", "team/app")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("team", "pw2"));
        let c = lookup(&files, "reg.example:5000", "other")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("all", "pw1"));
        let c = lookup(&files, "docker.io", "library/alpine")
            .unwrap()
            .unwrap();
        assert_eq!(c.username, "hub");
        assert!(lookup(&files, "elsewhere", "x").unwrap().is_none());
        // A prefix that is not a path boundary must not match.
        assert_eq!(
            lookup(&files, "reg.example:5000", "team/application")
                .unwrap()
                .unwrap()
                .username,
            "all"
        );
    }

    #[test]
    fn malformed_files_are_named_and_secrets_not_shown() {
        let d = tempfile::tempdir().unwrap();
        let f = write(d.path(), "bad.json", "{ not json s3cret");
        let e = lookup(std::slice::from_ref(&f), "r", "x").unwrap_err();
        assert!(e.to_string().contains("bad.json"));
        assert!(!e.to_string().contains("s3cret"));
        let f = write(d.path(), "bad2.json", r#"{"auths":{"r":{"auth":"!!!"}}}"#);
        let e = lookup(&[f], "r", "x").unwrap_err();
        assert!(matches!(e, AuthError::BadEntry { .. }), "{e}");
    }

    #[test]
    fn candidate_order_follows_the_tools() {
        let env = |k: &str| match k {
            "REGISTRY_AUTH_FILE" => Some("/a.json".to_string()),
            "HOME" => Some("/home/u".to_string()),
            _ => None,
        };
        let files = candidate_files(env);
        assert_eq!(
            files,
            vec![
                PathBuf::from("/a.json"),
                PathBuf::from("/home/u/.config/containers/auth.json"),
                PathBuf::from("/home/u/.docker/config.json"),
            ]
        );
    }
}

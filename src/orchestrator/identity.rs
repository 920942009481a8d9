//! The instance id: what makes an instance's label (`krunner-{prefix}-{id}`) unique per host
//! and cache.
//!
//! `$CACHE/instance-id` holds 16 random hex digits, written once. The id is the first 8 hex
//! digits of SHA-256 over the machine id (`/etc/machine-id`, when readable) and that value.
//! So two hosts with the same host name (and prefix) get different labels, whether they have
//! their own caches or share one, and one host and cache keeps its label across restarts,
//! which the reconcile at start relies on to find what a crash left.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Where the machine id is read from.
const MACHINE_ID: &str = "/etc/machine-id";

/// Reading or creating the instance id failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} the instance id file {path}")]
pub struct IdentityError {
    /// What was being done.
    op: &'static str,
    /// The file.
    path: PathBuf,
    /// Why.
    #[source]
    source: std::io::Error,
}

/// `$CACHE/instance-id`.
pub fn id_path(cache: &Path) -> PathBuf {
    cache.join("instance-id")
}

/// The id of this host and cache (8 hex digits), creating the cache's random part if needed.
pub fn instance_id(cache: &Path) -> Result<String, IdentityError> {
    let random = cache_random(&id_path(cache))?;
    let machine = std::fs::read_to_string(MACHINE_ID).unwrap_or_default();
    Ok(derive(machine.trim(), &random))
}

/// The id from a machine id and the cache's random value.
fn derive(machine: &str, random: &str) -> String {
    let digest = Sha256::digest(format!("{machine}\n{random}").as_bytes());
    hex::encode(digest)[..8].to_string()
}

/// The random value in `path`, written first if the file does not exist. `create_new`, so
/// two krunners starting at once on a new cache agree on the first one written.
fn cache_random(path: &Path) -> Result<String, IdentityError> {
    let err = |op| {
        let path = path.to_path_buf();
        move |source| IdentityError { op, path, source }
    };
    let fresh = format!("{:016x}\n", rand::random::<u64>());
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(mut f) => f.write_all(fresh.as_bytes()).map_err(err("write"))?,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err("create")(e)),
    }
    let text = std::fs::read_to_string(path).map_err(err("read"))?;
    let value = text.trim();
    if value.is_empty() {
        // Left empty by a crash between create and write: start over.
        std::fs::remove_file(path).map_err(err("remove"))?;
        return cache_random(path);
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_is_stable_per_cache_and_differs_between_caches_and_machines() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let first = instance_id(a.path()).unwrap();
        assert_eq!(first.len(), 8);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()), "{first}");
        assert_eq!(
            instance_id(a.path()).unwrap(),
            first,
            "stable across restarts"
        );
        assert_ne!(instance_id(b.path()).unwrap(), first, "another cache");
        assert_ne!(
            derive("m1", "r"),
            derive("m2", "r"),
            "a shared cache on two hosts"
        );
        std::fs::write(id_path(b.path()), "").unwrap();
        assert_eq!(
            instance_id(b.path()).unwrap().len(),
            8,
            "an empty file is replaced"
        );
    }
}

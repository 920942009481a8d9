//! The pools file of `krunner run --config FILE`: several scale sets, each with its own image
//! and guest size, served by one krunner from one host budget.
//!
//! ```toml
//! [host]            # optional; default: the host's CPUs and RAM less a reserve
//! cpus = 8
//! memory_mib = 16384
//!
//! [[pool]]
//! name = "krun-small"   # the scale set: `runs-on: krun-small`
//! image = "ubuntu"      # default: --image
//! cpus = 2              # default: -c
//! memory_mib = 4096     # default: -m
//! labels = ["linux"]    # extra labels, set when krunner creates the set
//! group = "Default"     # default: -G
//! min_idle = 1          # default 0
//! max = 4               # required
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why the pools file cannot be used; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum PoolsError {
    /// It cannot be read.
    #[error("cannot read the pools file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not valid TOML of this shape.
    #[error("the pools file {path} is not valid: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's words (line and column included).
        reason: String,
    },
    /// A value that cannot work.
    #[error("the pools file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolsFile {
    /// The host budget, if given.
    #[serde(default)]
    pub host: Option<HostSection>,
    /// The pools.
    #[serde(default, rename = "pool")]
    pub pools: Vec<PoolSection>,
}

/// `[host]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSection {
    /// vCPUs all guests may take together.
    pub cpus: Option<u32>,
    /// RAM in MiB all guests may take together.
    pub memory_mib: Option<u64>,
}

/// One `[[pool]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// The scale set's name.
    pub name: String,
    /// Its image (default: `--image`).
    pub image: Option<String>,
    /// vCPUs per guest (default: `-c`).
    pub cpus: Option<u8>,
    /// RAM per guest in MiB (default: `-m`).
    pub memory_mib: Option<u32>,
    /// Extra labels.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Runner group (default: `-G`).
    pub group: Option<String>,
    /// Runners kept waiting.
    #[serde(default)]
    pub min_idle: u32,
    /// Guests at most.
    pub max: u32,
}

/// Reads and checks `path`.
pub fn load(path: &Path) -> Result<PoolsFile, PoolsError> {
    let text = std::fs::read_to_string(path).map_err(|source| PoolsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text)
}

/// Parses and checks the text of `path`.
pub fn parse(path: &Path, text: &str) -> Result<PoolsFile, PoolsError> {
    let f: PoolsFile = toml::from_str(text).map_err(|e| PoolsError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string().trim().to_string(),
    })?;
    let invalid = |reason: String| PoolsError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    if f.pools.is_empty() {
        return Err(invalid("no [[pool]]".into()));
    }
    let mut names: Vec<&str> = Vec::new();
    for p in &f.pools {
        if p.name.is_empty() || p.name.contains(char::is_whitespace) {
            return Err(invalid(format!(
                "pool name {:?}: a scale set name has no blanks",
                p.name
            )));
        }
        if names.contains(&p.name.as_str()) {
            return Err(invalid(format!("pool {} is given twice", p.name)));
        }
        names.push(&p.name);
        if p.max == 0 {
            return Err(invalid(format!("pool {}: max must be at least 1", p.name)));
        }
        if p.min_idle > p.max {
            return Err(invalid(format!(
                "pool {}: min_idle {} is more than max {}",
                p.name, p.min_idle, p.max
            )));
        }
        if p.cpus == Some(0) || p.memory_mib.is_some_and(|m| m < 128) {
            return Err(invalid(format!(
                "pool {}: a guest needs at least 1 CPU and 128 MiB",
                p.name
            )));
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("pools.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start().to_string() + "\n")
            .collect();
        let f = parse(Path::new("x.toml"), &example).unwrap();
        assert_eq!(f.host.unwrap().cpus, Some(8));
        assert_eq!(f.pools[0].name, "krun-small");
        assert_eq!((f.pools[0].min_idle, f.pools[0].max), (1, 4));
    }

    #[test]
    fn bad_files_name_the_file_and_the_pool() {
        let p = Path::new("/etc/krunner/pools.toml");
        for (text, says) in [
            ("", "no [[pool]]"),
            ("[[pool]]\nname = \"a\"\n", "max"),
            (
                "[[pool]]\nname = \"a\"\nmax = 1\nmin_idle = 2\n",
                "min_idle 2 is more than max 1",
            ),
            (
                "[[pool]]\nname = \"a\"\nmax = 1\n[[pool]]\nname = \"a\"\nmax = 1\n",
                "given twice",
            ),
            ("[[pool]]\nname = \"a\"\nmax = 1\ncolour = 3\n", "colour"),
            ("[[pool]]\nname = \"a b\"\nmax = 1\n", "no blanks"),
        ] {
            let e = parse(p, text).unwrap_err().to_string();
            assert!(
                e.contains("/etc/krunner/pools.toml") && e.contains(says),
                "{text:?}: {e}"
            );
        }
    }
}

//! The guest's network jail: a network namespace per guest with user-mode outbound
//! connectivity (pasta) and an egress policy (nftables).
//!
//! - [`egress`]: the policy: `--egress-allow` values, the blocked ranges, the rule set;
//! - [`netns`]: one run's namespace, its rules and its pasta, from creation to teardown.
//!
//! The orchestrator and the commands hold an [`egress::EgressPolicy`]; the launcher makes a
//! [`netns::NetJail`] per run from it.

pub mod egress;
pub mod netns;

use std::path::{Path, PathBuf};

/// The programs the jail runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// pasta (Debian/Ubuntu/Fedora package `passt`).
    pub pasta: PathBuf,
    /// nft (package `nftables`).
    pub nft: PathBuf,
}

/// Why a guest's network jail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// A program the jail needs is not installed.
    #[error("the network jail needs `{tool}`, which is not installed (Debian/Ubuntu/Fedora package `{package}`); or run with --egress-policy open, which gives guests the host's network and loopback")]
    Missing {
        /// The program.
        tool: &'static str,
        /// Its package.
        package: &'static str,
    },
    /// The jail needs root of the host or of krunner's rootless user namespace.
    #[error("the network jail needs root or rootless krunner (a subordinate id range, see `krunner doctor`); else run with --egress-policy open")]
    NotRoot,
    /// Rootless, pasta opens /dev/net/tun as the user.
    #[error("the network jail cannot open /dev/net/tun as this user: rootless, pasta needs it readable and writable by everyone (mode 0666, Debian's default); else run with --egress-policy open")]
    TunDenied(#[source] std::io::Error),
    /// A system call failed.
    #[error("network jail: {op}")]
    Sys {
        /// What.
        op: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// A file or process operation failed.
    #[error("network jail: {op}")]
    Io {
        /// What.
        op: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// nft or pasta failed.
    #[error("network jail: {tool} failed ({status}): {message}")]
    Tool {
        /// Which program.
        tool: &'static str,
        /// Its exit status.
        status: String,
        /// What it said.
        message: String,
    },
}

impl JailError {
    /// For `map_err`: an I/O error of operation `op`.
    pub(crate) fn io(op: impl Into<String>) -> impl FnOnce(std::io::Error) -> JailError {
        let op = op.into();
        move |source| JailError::Io { op, source }
    }
}

impl Tools {
    /// Finds pasta and nft on PATH or in the sbin directories (nft lives in /usr/sbin, which
    /// an ordinary user's PATH may lack), and checks that this process can use them.
    pub fn find() -> Result<Tools, JailError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(JailError::NotRoot);
        }
        if crate::rootless::active() {
            // Root of our namespace is not root of the device node.
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .map_err(JailError::TunDenied)?;
        }
        let pasta = find_program("pasta").ok_or(JailError::Missing {
            tool: "pasta",
            package: "passt",
        })?;
        let nft = find_program("nft").ok_or(JailError::Missing {
            tool: "nft",
            package: "nftables",
        })?;
        Ok(Tools { pasta, nft })
    }
}

/// The first executable `name` on PATH or in the usual system directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let fixed = [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ];
    std::env::split_paths(&path)
        .chain(fixed.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    p.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

//! One function per subcommand: turn parsed arguments into library calls and print results.
//! Errors get context here (anyhow) and are printed once by `main`.

mod completions;
mod doctor;
mod exec;
mod images;
mod prune;
mod pull;
mod run;
mod scaleset;
mod status;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use std::net::{IpAddr, ToSocketAddrs};

use anyhow::Context;

use crate::cli::{Cli, Command, GlobalArgs, GuestArgs};
use crate::image::cache::Cache;
use crate::jail::egress::{self, Allow, EgressPolicy};
use crate::jail::Tools;

/// Sets up `tracing` on stderr from -v/-q (`RUST_LOG` overrides).
pub fn init_logging(global: &GlobalArgs) {
    let level = if global.quiet {
        "error"
    } else {
        match global.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    // Dependencies stay at warn below -vv: their debug lines are noise (and URLs).
    let deps = if global.verbose >= 2 { "debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{deps},krunner={level}")));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Runs the command.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    enter_rootless(&cli.command)?;
    match cli.command {
        Command::Pull(args) => pull::run(&cli.global, args),
        Command::Images(args) => images::run(&cli.global, args),
        Command::Exec(args) => exec::run(&cli.global, args),
        Command::Doctor(args) => doctor::run(&cli.global, args),
        Command::Prune(args) => prune::run(&cli.global, args),
        Command::Run(args) => run::run(&cli.global, *args),
        Command::Status(args) => status::run(&cli.global, args),
        Command::Completions(args) => completions::completions(args),
        Command::Man(args) => completions::man(args),
    }
}

/// As an ordinary user, moves krunner into a user namespace of its own before any command
/// that touches the cache or starts guests ([`crate::rootless`]). Without a subordinate id
/// range, commands that start guests fail with how to get one; the others go on as the
/// user alone (images unpacked without their owners) and say so once.
fn enter_rootless(command: &Command) -> anyhow::Result<()> {
    if nix::unistd::geteuid().is_root() || !cfg!(target_os = "linux") {
        return Ok(());
    }
    let starts_guests = match command {
        Command::Exec(_) | Command::Run(_) => true,
        Command::Pull(_) | Command::Images(_) | Command::Prune(_) | Command::Doctor(_) => false,
        _ => return Ok(()),
    };
    match crate::rootless::enter_once() {
        Ok(()) => {
            tracing::debug!("rootless: running as root of a user namespace of our own");
            Ok(())
        }
        Err(e) if starts_guests => Err(anyhow::anyhow!("{e}"))
            .context("krunner runs rootless as an ordinary user and could not set that up"),
        Err(e) => {
            tracing::warn!("not rootless ({e}): going on as this user alone");
            Ok(())
        }
    }
}

/// The cache directory: the option, or the default for this user.
fn cache_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &global.cache_dir {
        return Ok(d.clone());
    }
    // Root of a rootless namespace is still the user: its cache is under $HOME.
    if crate::rootless::host_root() {
        return Ok(PathBuf::from("/var/lib/krunner"));
    }
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Ok(PathBuf::from(x).join("krunner"));
    }
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).context(
        "cannot choose a cache directory: neither --cache-dir, $XDG_CACHE_HOME nor $HOME is set",
    )?;
    Ok(PathBuf::from(home).join(".cache/krunner"))
}

/// Opens the cache, with the directory in the error.
fn open_cache(global: &GlobalArgs) -> anyhow::Result<Cache> {
    let dir = cache_dir(global)?;
    Cache::open(&dir).with_context(|| format!("cannot open the image cache at {}", dir.display()))
}

/// The guests' egress policy from the options, checked before any guest starts: the jail's
/// tools must be there (or every run would fail alike). `server` is the GitHub server the
/// guests' runners talk to: when it sits in a blocked range (GitHub Enterprise Server on a
/// private network, the simulator on loopback), its port is opened, since no runner can work
/// without it.
fn egress_policy(guest: &GuestArgs, server: Option<&url::Url>) -> anyhow::Result<EgressPolicy> {
    let mut policy = guest.egress();
    if !policy.is_jailed() {
        tracing::warn!(
            "--egress-policy open: guests share the host's network; a job reaches every service on the host's loopback and every network the host does"
        );
        return Ok(policy);
    }
    Tools::find().context("guests cannot be jailed")?;
    if let Some(url) = server {
        for a in server_exceptions(url) {
            tracing::info!("egress: guests may reach the GitHub server at {a}");
            policy.allow(a);
        }
    }
    Ok(policy)
}

/// The blocked addresses of `url`'s host, with its port, as exceptions.
fn server_exceptions(url: &url::Url) -> Vec<Allow> {
    let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) else {
        return Vec::new();
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(a) => vec![a],
        Err(_) => (host, port)
            .to_socket_addrs()
            .map(|it| it.map(|s| s.ip()).collect())
            .unwrap_or_default(),
    };
    let own = egress::host_addresses();
    addrs
        .into_iter()
        .filter(|a| egress::is_blocked_range(*a) || own.contains(a))
        .map(|a| {
            // The host's loopback is reachable only through pasta, at 127.0.0.1 or ::1.
            let a = match a {
                IpAddr::V4(v4) if v4.is_loopback() => IpAddr::from([127, 0, 0, 1]),
                other => other,
            };
            Allow {
                net: a.into(),
                port: Some(port),
            }
        })
        .collect()
}

/// A multi-threaded runtime for commands that do network I/O.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exceptions(url: &str) -> Vec<String> {
        server_exceptions(&url::Url::parse(url).unwrap())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_github_server_in_a_blocked_range_gets_its_port_opened() {
        assert_eq!(exceptions("http://127.0.0.1:8080/"), ["127.0.0.1:8080"]);
        // Any loopback address is reached through pasta at 127.0.0.1.
        assert_eq!(exceptions("http://127.0.0.2:8080/"), ["127.0.0.1:8080"]);
        assert_eq!(exceptions("https://10.0.0.5/api/v3"), ["10.0.0.5:443"]);
        assert_eq!(
            exceptions("https://[fd00::5]:8443/api/v3"),
            ["[fd00::5]:8443"]
        );
        // A public server needs no exception.
        assert!(exceptions("https://140.82.112.6/").is_empty());
    }
}

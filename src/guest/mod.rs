//! What the host puts into each run's clone before boot — the guest agent, its configuration,
//! the workload's argv and env files, the network files — and what it reads back after the
//! guest ended. None of what is written
//! into the clone is secret: the registration travels in the per-run secrets share, which the
//! agent empties and unmounts before the runner starts.

use crate::guestfs::Share;
use crate::secret::Secret;

/// Where the per-run secrets share appears in the guest.
pub const SECRETS_GUEST: &str = "/.krunner/secrets";
/// Where the per-run results share appears in the guest.
pub const RESULTS_GUEST: &str = "/.krunner/results";
/// Where the per-run control share appears in the guest (runner runs, read-only): the host
/// creates `stop` in it to ask the agent to stop the runner.
pub const CONTROL_GUEST: &str = "/.krunner/control";
/// The command's arguments, one file each, `0`, `1`, …, holding the exact bytes: they never
/// travel on the kernel command line, which cannot carry `--`, quotes or newlines.
pub const ARGV_DIR: &str = "/.krunner/argv";
/// The workload's extra environment, one file per variable: the file's name is the variable's,
/// its content the value.
pub const ENV_DIR: &str = "/.krunner/env";

/// How the guest's runner registers: the host obtained it, the guest only uses it.
#[derive(Debug, Clone)]
pub enum Registration {
    /// A single-use JIT configuration (`encoded_jit_config`).
    Jit(Secret),
    /// A registration token for `config.sh` (servers without JIT).
    Token {
        /// The token.
        token: Secret,
        /// `https://github.com/OWNER[/REPO]`, `…/enterprises/ENT`, or a GHES URL.
        url: String,
        /// Runner name.
        name: String,
        /// Labels (GitHub adds self-hosted, OS and arch).
        labels: Vec<String>,
        /// Runner group (org or enterprise scope only).
        group: Option<String>,
    },
}

impl Registration {
    /// The file name in the secrets share.
    pub fn file_name(&self) -> &'static str {
        match self {
            Registration::Jit(_) => "jitconfig",
            Registration::Token { .. } => "token",
        }
    }

    /// The secret itself.
    pub fn secret(&self) -> &Secret {
        match self {
            Registration::Jit(s) | Registration::Token { token: s, .. } => s,
        }
    }
}

/// One run of the actions runner in the guest.
#[derive(Debug, Clone)]
pub struct RunnerJob {
    /// How it registers.
    pub registration: Registration,
    /// Its work folder (relative to the runner's directory).
    pub work: String,
    /// The user it runs as.
    pub user: String,
    /// The runner's directory in the guest: `/opt/actions-runner` (krunner's images, a
    /// provided runner) or where the image has it (`/home/runner` in GitHub's image).
    pub root: String,
}

/// What the agent reported after the guest ended (`RESULTS/result`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestResult {
    /// The runner's exit status.
    pub exit_code: i32,
    /// Unix seconds: agent start.
    pub started: u64,
    /// Unix seconds: runner start (None if it never started).
    pub runner_started: Option<u64>,
    /// Unix seconds: runner end.
    pub ended: u64,
}

/// Parses the agent's result file; None if it is missing a field (the agent died early).
pub fn parse_result(text: &str) -> Option<GuestResult> {
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|r| r.strip_prefix('=')))
            .map(str::trim)
    };
    Some(GuestResult {
        exit_code: get("exit_code")?.parse().ok()?,
        started: get("started")?.parse().ok()?,
        runner_started: get("runner_started").and_then(|v| v.parse().ok()),
        ended: get("ended")?.parse().ok()?,
    })
}

/// Whether `name` can be an environment variable the agent exports: a shell identifier,
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// A value for the agent configuration: one line, and no blanks unless `spaces` (the last
/// field of its line).
fn conf_value(key: &str, v: &str, spaces: bool) -> Result<(), String> {
    if v.is_empty()
        || v.contains(['\n', '\r', '\0'])
        || (!spaces && v.contains(char::is_whitespace))
    {
        return Err(format!(
            "{key} {v:?} cannot go into the agent configuration"
        ));
    }
    Ok(())
}

/// The agent configuration for a runner job: its shares to mount (krun), where the secrets and
/// results shares are, and the non-secret runner settings.
pub fn agent_conf_for(
    shares_to_mount: &[Share],
    job: Option<&RunnerJob>,
) -> Result<String, String> {
    let mut s = agent_conf(shares_to_mount);
    let Some(job) = job else { return Ok(s) };
    s.push_str(&format!(
        "secrets {SECRETS_GUEST}\nresults {RESULTS_GUEST}\ncontrol {CONTROL_GUEST}\n"
    ));
    conf_value("user", &job.user, false)?;
    conf_value("work", &job.work, false)?;
    conf_value("root", &job.root, false)?;
    s.push_str(&format!(
        "user {}\nwork {}\nroot {}\n",
        job.user, job.work, job.root
    ));
    match &job.registration {
        Registration::Jit(_) => s.push_str("runner jit\n"),
        Registration::Token {
            url,
            name,
            labels,
            group,
            ..
        } => {
            conf_value("url", url, false)?;
            conf_value("name", name, false)?;
            s.push_str(&format!("runner token\nurl {url}\nname {name}\n"));
            if !labels.is_empty() {
                let l = labels.join(",");
                conf_value("labels", &l, false)?;
                s.push_str(&format!("labels {l}\n"));
            }
            if let Some(g) = group {
                conf_value("group", g, true)?;
                s.push_str(&format!("group {g}\n"));
            }
        }
    }
    Ok(s)
}

/// Where the agent lives in the guest.
pub const AGENT_PATH: &str = "/.krunner/agent";
/// Its configuration.
pub const AGENT_CONF: &str = "/.krunner/agent.conf";
/// The agent itself: POSIX sh, so any image with `/bin/sh` and `mount` can run it.
pub const AGENT_SCRIPT: &str = include_str!("agent.sh");

/// The PATH every guest workload gets (libkrun's init sets none).
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The agent configuration: one `mount TAG PATH rw|ro` line per share the guest must mount
/// itself (krun); empty when the host mounted them (namespace backend).
pub fn agent_conf(shares_to_mount: &[Share]) -> String {
    let mut s =
        String::from("# written by krunner: shares to mount (virtio-fs tag, guest path, mode)\n");
    for sh in shares_to_mount {
        s.push_str(&format!(
            "mount {} {} {}\n",
            sh.tag,
            sh.guest.display(),
            if sh.read_only { "ro" } else { "rw" }
        ));
    }
    s
}

/// `/etc/resolv.conf`: libkrun's TSI carries DNS over TCP only, hence `use-vc`.
pub fn resolv_conf(dns: &str) -> String {
    format!("# written by krunner\noptions use-vc\nnameserver {dns}\n")
}

/// `/etc/hosts` with the guest's own name.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_conf_carries_no_secret_and_refuses_odd_values() {
        let job = RunnerJob {
            registration: Registration::Token {
                token: Secret::new("AAAtoken"),
                url: "https://github.com/o/r".into(),
                name: "host-0-1".into(),
                labels: vec!["krun".into(), "ubuntu".into()],
                group: Some("My Group".into()),
            },
            work: "_work".into(),
            user: "runner".into(),
            root: "/home/runner".into(),
        };
        let c = agent_conf_for(&[], Some(&job)).unwrap();
        assert!(!c.contains("AAAtoken"));
        for line in [
            "runner token",
            "url https://github.com/o/r",
            "labels krun,ubuntu",
            "group My Group",
            "secrets /.krunner/secrets",
            "control /.krunner/control",
            "root /home/runner",
        ] {
            assert!(c.contains(&format!("{line}\n")), "{line}: {c}");
        }
        let mut bad = job.clone();
        if let Registration::Token { name, .. } = &mut bad.registration {
            *name = "a b".into();
        }
        assert!(agent_conf_for(&[], Some(&bad)).is_err());
        let jit = RunnerJob {
            registration: Registration::Jit(Secret::new("J")),
            ..job
        };
        assert!(agent_conf_for(&[], Some(&jit))
            .unwrap()
            .contains("runner jit\n"));
    }

    #[test]
    fn results_parse() {
        let r = parse_result("exit_code=3\nstarted=10\nrunner_started=\nended=12\n").unwrap();
        assert_eq!(
            r,
            GuestResult {
                exit_code: 3,
                started: 10,
                runner_started: None,
                ended: 12
            }
        );
        assert!(parse_result("exit_code=3\n").is_none());
    }

    #[test]
    fn agent_conf_lists_mounts() {
        let s = agent_conf(&[Share {
            tag: "krunner-cache".into(),
            host: "/h".into(),
            guest: "/cache".into(),
            read_only: true,
        }]);
        assert!(s.contains("mount krunner-cache /cache ro\n"), "{s}");
        assert!(resolv_conf("1.1.1.1").contains("options use-vc\nnameserver 1.1.1.1\n"));
    }

    #[test]
    fn env_names_are_shell_identifiers() {
        for ok in ["A", "_", "a_1", "PATH", "_X9"] {
            assert!(is_env_name(ok), "{ok}");
        }
        for bad in ["", "1A", "A-B", "a.b", "A B", "A=B", "É", "A\n"] {
            assert!(!is_env_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn agent_script_is_posix_sh() {
        assert!(AGENT_SCRIPT.starts_with("#!/bin/sh\n"));
    }
}

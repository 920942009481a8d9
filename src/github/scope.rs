//! Where runners are registered (repo, org or enterprise), which API base to talk to, and how
//! krunner names its runners.
//!
//! Names are validated here once, so every path built from a [`Scope`] is safe to put in a URL
//! without escaping. Runner names are deterministic (`{prefix}-{slot}-{attempt}`): a request
//! retried after a lost answer asks for the same name again, and GitHub's "already exists"
//! then tells us it had been created, instead of a second runner appearing for one slot.

use std::fmt;

use url::{Host, Url};

use super::error::GitHubError;

/// The level runners are registered at, with its principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One repository.
    Repo {
        /// Owner (user or org).
        owner: String,
        /// Repository name.
        repo: String,
    },
    /// An organization.
    Org(String),
    /// An enterprise, by slug.
    Enterprise(String),
}

impl Scope {
    /// Parses `-s KIND -p PRINCIPAL`: `repo owner/name`, `org name` or `enterprise slug`.
    pub fn parse(kind: &str, principal: &str) -> Result<Scope, GitHubError> {
        match kind {
            "repo" => {
                let Some((owner, repo)) = principal.split_once('/') else {
                    return Err(GitHubError::Config(format!(
                        "repo scope needs the principal as OWNER/REPO, got {principal:?}"
                    )));
                };
                check_name("repository owner", owner)?;
                check_name("repository name", repo)?;
                Ok(Scope::Repo {
                    owner: owner.to_string(),
                    repo: repo.to_string(),
                })
            }
            "org" => {
                check_name("organization", principal)?;
                Ok(Scope::Org(principal.to_string()))
            }
            "enterprise" => {
                check_name("enterprise slug", principal)?;
                Ok(Scope::Enterprise(principal.to_string()))
            }
            other => Err(GitHubError::Config(format!(
                "unknown scope {other:?}: expected repo, org or enterprise"
            ))),
        }
    }

    /// The path prefix of the scope's endpoints: `/repos/o/r`, `/orgs/o` or `/enterprises/e`.
    pub fn path_prefix(&self) -> String {
        match self {
            Scope::Repo { owner, repo } => format!("/repos/{owner}/{repo}"),
            Scope::Org(org) => format!("/orgs/{org}"),
            Scope::Enterprise(ent) => format!("/enterprises/{ent}"),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Repo { owner, repo } => write!(f, "repo {owner}/{repo}"),
            Scope::Org(org) => write!(f, "org {org}"),
            Scope::Enterprise(ent) => write!(f, "enterprise {ent}"),
        }
    }
}

/// GitHub names are ASCII letters, digits, `-`, `_` and `.`; anything else (a `/`, `%`, `?`)
/// would change the path, so it is refused rather than escaped.
fn check_name(what: &str, name: &str) -> Result<(), GitHubError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(GitHubError::Config(format!(
            "invalid {what} {name:?}: only letters, digits, '-', '_' and '.' are allowed"
        )))
    }
}

/// The REST API base URL.
///
/// `https://api.github.com` by default; `-g HOST` gives GitHub Enterprise Server's
/// `https://HOST/api/v3`; `--api-url URL` replaces the base entirely. Plain `http` is accepted
/// only for loopback hosts (127.0.0.0/8, ::1, localhost), where a test server or a local proxy
/// lives; anywhere else it would send the token in clear text.
pub fn api_base(ghes_host: Option<&str>, api_url: Option<&str>) -> Result<Url, GitHubError> {
    let url = match (api_url, ghes_host) {
        (Some(u), _) => {
            Url::parse(u).map_err(|e| GitHubError::Config(format!("invalid API URL {u:?}: {e}")))?
        }
        (None, Some(host)) => {
            if host.is_empty() || host.contains(['/', '?', '#', '@']) {
                return Err(GitHubError::Config(format!(
                    "invalid GitHub Enterprise Server host {host:?}: give HOST[:PORT] without a scheme or path"
                )));
            }
            Url::parse(&format!("https://{host}/api/v3")).map_err(|e| {
                GitHubError::Config(format!(
                    "invalid GitHub Enterprise Server host {host:?}: {e}"
                ))
            })?
        }
        (None, None) => Url::parse("https://api.github.com")
            .map_err(|e| GitHubError::Config(format!("default API URL: {e}")))?,
    };
    let shown = without_credentials(&url);
    if !url.username().is_empty() || url.password().is_some() {
        return Err(GitHubError::Config(format!(
            "API URL {shown} must not contain credentials; use a token option"
        )));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(GitHubError::Config(format!(
            "API URL {shown} must not have a query or fragment"
        )));
    }
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(url.host()) => {}
        "http" => {
            return Err(GitHubError::Config(format!(
            "API URL {shown} uses plain http, which is allowed only for loopback hosts; use https"
        )))
        }
        other => {
            return Err(GitHubError::Config(format!(
                "API URL {shown} has scheme {other:?}; expected https"
            )))
        }
    }
    if url.host().is_none() {
        return Err(GitHubError::Config(format!("API URL {shown} has no host")));
    }
    // One canonical form without a trailing slash, so endpoint paths can simply be appended.
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

fn is_loopback_host(host: Option<Host<&str>>) -> bool {
    match host {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The URL as it may appear in a message: user name and password removed.
fn without_credentials(url: &Url) -> String {
    let mut u = url.clone();
    // Both fail only for URLs that cannot have credentials, which then have none to hide.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

/// The name of the runner for `slot`'s `attempt`-th registration: `{prefix}-{slot}-{attempt}`.
///
/// Deterministic, so a retried registration asks for the same name; unique per slot and
/// attempt, so two live runners never share one. A slot's `attempt` continues after the
/// highest one in use at start ([`super::ReconcileReport::last_seq`]), so names stay unique
/// across restarts too.
pub fn runner_name(prefix: &str, slot: usize, attempt: u64) -> String {
    format!("{prefix}-{slot}-{attempt}")
}

/// The slot and sequence number of a name made by [`runner_name`] with `prefix`.
pub fn parse_runner_name(prefix: &str, name: &str) -> Option<(usize, u64)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let (slot, seq) = rest.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(slot) || !digits(seq) {
        return None;
    }
    Some((slot.parse().ok()?, seq.parse().ok()?))
}

/// The default `--name-prefix`: the host name, lowercased, reduced to `[a-z0-9-]`, at most
/// 40 characters; `krunner` when nothing usable is left.
pub fn default_name_prefix() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    sanitize_prefix(&host)
}

/// The label that marks runners of the instance with `prefix` and instance id `id`
/// (`krunner-{prefix}-{id}`, see [`crate::orchestrator::identity`]); krunner deletes only
/// runners that carry it, so runners someone else named alike, even another host with the
/// same host name and prefix, are never touched.
pub fn instance_label(prefix: &str, id: &str) -> String {
    format!("krunner-{prefix}-{id}")
}

/// Maximum length of a name prefix: leaves room for `-{slot}-{attempt}` within GitHub's
/// 64-character runner names.
const MAX_PREFIX: usize = 40;

/// The longest runner name GitHub accepts.
pub const MAX_RUNNER_NAME: usize = 64;

/// Digits kept free for a loop's registration counter in a runner name (10^10 runs).
const SEQ_DIGITS: usize = 10;

/// The longest `--name-prefix` for `slots` loops: `{prefix}-{slot}-{seq}` stays within
/// [`MAX_RUNNER_NAME`] with 10 digits for `seq` (10^10 runs).
pub fn max_name_prefix(slots: usize) -> usize {
    let slot_digits = slots.saturating_sub(1).to_string().len();
    MAX_RUNNER_NAME.saturating_sub(2 + slot_digits + SEQ_DIGITS)
}

/// Checks a `--name-prefix` for `slots` loops: not empty; only ASCII letters, digits, `-`,
/// `_` and `.` (what GitHub takes in a runner name, and safe in file names); not starting
/// with `.` or `-`; at most [`max_name_prefix`] characters.
pub fn validate_name_prefix(prefix: &str, slots: usize) -> Result<(), GitHubError> {
    let bad = |reason: String| GitHubError::NamePrefix {
        prefix: prefix.to_string(),
        reason,
    };
    if prefix.is_empty() {
        return Err(bad("it is empty".into()));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(bad(format!(
            "{c:?} is not allowed; use letters, digits, '-', '_' and '.'"
        )));
    }
    if prefix.starts_with(['.', '-']) {
        return Err(bad("it must start with a letter, a digit or '_'".into()));
    }
    let max = max_name_prefix(slots);
    let len = prefix.len();
    if len > max {
        return Err(bad(format!(
            "{len} characters, at most {max} with -n {slots}: runner names PREFIX-LOOP-SEQ must stay within GitHub's {MAX_RUNNER_NAME}"
        )));
    }
    Ok(())
}

pub(crate) fn sanitize_prefix(raw: &str) -> String {
    let mut out = String::new();
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        // Collapse runs of separators: "a..b" → "a-b", not "a--b".
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.truncate(MAX_PREFIX);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() {
        "krunner".to_string()
    } else {
        trimmed.to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn name_prefixes_github_takes() {
        for ok in ["build1", "b_1.x-y", "_x", "A9"] {
            validate_name_prefix(ok, 8).unwrap();
        }
        assert_eq!(max_name_prefix(1), 51);
        assert_eq!(max_name_prefix(10), 51);
        assert_eq!(max_name_prefix(11), 50);
        assert_eq!(max_name_prefix(1024), 48);
        validate_name_prefix(&"a".repeat(51), 1).unwrap();
        let reason = |p: &str, n| match validate_name_prefix(p, n) {
            Err(GitHubError::NamePrefix { reason, .. }) => reason,
            other => panic!("{p:?}: {other:?}"),
        };
        assert!(reason(&"a".repeat(52), 1).contains("at most 51 with -n 1"));
        assert!(reason(&"a".repeat(49), 1024).contains("at most 48"));
        assert!(reason("", 1).contains("empty"));
        assert!(reason("a b", 1).contains("' '"));
        assert!(reason("a/b", 1).contains("'/'"));
        assert!(reason("hôte", 1).contains("'ô'"));
        assert!(reason(".x", 1).contains("start"));
        assert!(reason("-x", 1).contains("start"));
        // The longest prefix with the largest slot and a 10-digit counter is 64 characters.
        let name = runner_name(&"a".repeat(48), 1023, 9_999_999_999);
        assert_eq!(name.len(), MAX_RUNNER_NAME);
        let e = validate_name_prefix("a b", 1).unwrap_err().to_string();
        assert!(e.contains("--name-prefix \"a b\""), "{e}");
    }

    use super::*;

    #[test]
    fn scope_paths() {
        let r = Scope::parse("repo", "octo/hello.rs").unwrap();
        assert_eq!(r.path_prefix(), "/repos/octo/hello.rs");
        assert_eq!(r.to_string(), "repo octo/hello.rs");
        assert_eq!(
            Scope::parse("org", "octo-org").unwrap().path_prefix(),
            "/orgs/octo-org"
        );
        assert_eq!(
            Scope::parse("enterprise", "big_co").unwrap().path_prefix(),
            "/enterprises/big_co"
        );
    }

    #[test]
    fn scope_rejects_bad_input() {
        for (kind, p) in [
            ("repo", "noslash"),
            ("repo", "a/b/c"),
            ("repo", "/b"),
            ("repo", "a/.."),
            ("org", ""),
            ("org", "a?b"),
            ("org", "a%2fb"),
            ("enterprise", "x y"),
            ("team", "x"),
        ] {
            let e = Scope::parse(kind, p).unwrap_err();
            assert!(matches!(e, GitHubError::Config(_)), "{kind} {p}: {e}");
        }
    }

    #[test]
    fn api_bases() {
        assert_eq!(
            api_base(None, None).unwrap().as_str(),
            "https://api.github.com/"
        );
        assert_eq!(
            api_base(Some("ghe.example.com"), None).unwrap().as_str(),
            "https://ghe.example.com/api/v3"
        );
        assert_eq!(
            api_base(Some("ghe.example.com:8443"), None)
                .unwrap()
                .as_str(),
            "https://ghe.example.com:8443/api/v3"
        );
        // --api-url wins over -g.
        assert_eq!(
            api_base(Some("ghe"), Some("https://proxy.example/gh/"))
                .unwrap()
                .as_str(),
            "https://proxy.example/gh"
        );
        for ok in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3/api/v3",
            "http://[::1]:9000/",
            "http://localhost:1234",
        ] {
            assert!(api_base(None, Some(ok)).is_ok(), "{ok}");
        }
    }

    #[test]
    fn plain_http_refused_off_loopback() {
        for bad in [
            "http://api.github.com",
            "http://10.0.0.1:8080",
            "http://[::2]/",
            "http://localhost.evil.com",
        ] {
            let e = api_base(None, Some(bad)).unwrap_err().to_string();
            assert!(e.contains("plain http"), "{bad}: {e}");
            assert!(e.contains(bad.trim_end_matches('/')), "{bad}: {e}");
        }
        assert!(api_base(None, Some("ftp://x")).is_err());
        assert!(api_base(None, Some("not a url")).is_err());
        assert!(api_base(Some("https://host"), None).is_err());
        let e = api_base(None, Some("https://user:pw-secret@host"))
            .unwrap_err()
            .to_string();
        assert!(!e.contains("pw-secret"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(runner_name("build1", 3, 7), "build1-3-7");
        assert_ne!(runner_name("p", 1, 11), runner_name("p", 11, 1));
        assert_eq!(instance_label("build1", "0a1b"), "krunner-build1-0a1b");
        assert_eq!(parse_runner_name("a-b", "a-b-3-17"), Some((3, 17)));
        assert_eq!(
            parse_runner_name("a-b", &runner_name("a-b", 0, 9)),
            Some((0, 9))
        );
        for other in [
            "a-b-3",
            "a-bc-3-1",
            "a-b-x-1",
            "a-b-3-1-2",
            "a-b-3-",
            "b-3-1",
        ] {
            assert_eq!(parse_runner_name("a-b", other), None, "{other}");
        }
    }

    #[test]
    fn prefix_rules() {
        assert_eq!(
            sanitize_prefix("Build-Host.Example.COM"),
            "build-host-example-com"
        );
        assert_eq!(sanitize_prefix("ä_b__c"), "b-c");
        assert_eq!(sanitize_prefix("---"), "krunner");
        assert_eq!(sanitize_prefix(""), "krunner");
        let long = sanitize_prefix(&"a".repeat(100));
        assert_eq!(long.len(), 40);
        // Truncation never leaves a trailing '-'.
        let cut = sanitize_prefix(&format!("{}.b", "a".repeat(39)));
        validate_name_prefix(&cut, 1024).unwrap();
        assert_eq!(cut, "a".repeat(39));
        let d = default_name_prefix();
        assert!(!d.is_empty() && d.len() <= 40);
        assert!(d
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
    }
}

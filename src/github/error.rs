//! Errors of the GitHub client, one variant per way a call can fail.
//!
//! Every variant that comes from a request names the endpoint as `METHOD /path` (never a URL
//! with credentials, never a token) and carries GitHub's own `message` and
//! `documentation_url` when the response had them. 401/403/404 add a hint about the token
//! scopes or App permissions the call needs, because that is almost always the cause.

/// What can go wrong talking to GitHub.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitHubError {
    /// GitHub answered with an error status not covered by a more specific variant.
    #[error(
        "GitHub {method} {path}: HTTP {status}: {message}{}",
        doc_suffix(documentation_url)
    )]
    Api {
        /// HTTP method.
        method: String,
        /// Path (and query) below the API base.
        path: String,
        /// HTTP status code.
        status: u16,
        /// GitHub's `message`, or the start of the body when it had none.
        message: String,
        /// GitHub's `documentation_url`, if any.
        documentation_url: Option<String>,
    },
    /// 401: the token or JWT was not accepted.
    #[error("GitHub {method} {path}: 401 Unauthorized: {message} (hint: {hint})")]
    Unauthorized {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// GitHub's `message`.
        message: String,
        /// What credentials the call needs.
        hint: String,
    },
    /// 403 that is not a rate limit: the credentials lack a permission.
    #[error(
        "GitHub {method} {path}: 403 Forbidden: {message}{} (hint: {hint})",
        doc_suffix(documentation_url)
    )]
    Forbidden {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// GitHub's `message`.
        message: String,
        /// GitHub's `documentation_url`, if any.
        documentation_url: Option<String>,
        /// What permission the call needs.
        hint: String,
    },
    /// 404: the resource does not exist, or (GitHub's way of hiding it) the credentials may not see it.
    #[error(
        "GitHub {method} {path}: 404 Not Found: {message}{} (hint: {hint})",
        doc_suffix(documentation_url)
    )]
    NotFound {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// GitHub's `message`.
        message: String,
        /// GitHub's `documentation_url`, if any.
        documentation_url: Option<String>,
        /// Check the name and the permissions.
        hint: String,
    },
    /// Still rate limited after every retry.
    #[error("GitHub {method} {path}: rate limited after {attempts} attempts{}", reset_suffix(*reset))]
    RateLimited {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// Requests sent for this call.
        attempts: u32,
        /// `x-ratelimit-reset` (UTC epoch seconds) of the last answer, if given.
        reset: Option<u64>,
    },
    /// The request did not get an answer: connection refused or reset, TLS, timeout.
    #[error("GitHub {method} {path}: request failed")]
    Transport {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// krunner is stopping and the request got no answer in its last, short attempt.
    #[error("GitHub {method} {path}: no answer, and krunner is stopping")]
    Abandoned {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
    },
    /// A 2xx body that does not have the shape we expect.
    #[error("GitHub {method} {path}: unexpected response body: {reason}")]
    Decode {
        /// HTTP method.
        method: String,
        /// Path below the API base.
        path: String,
        /// The JSON path that broke and why.
        reason: String,
    },
    /// The GitHub App private key cannot be used.
    #[error("GitHub App private key {origin}: {reason}")]
    AppKey {
        /// Where the key came from (a file name, or "given inline").
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No installation of the GitHub App covers the scope.
    #[error("the GitHub App {app_id} is not installed for {scope} (install it there, or pass --installation-id)")]
    InstallationNotFound {
        /// The App.
        app_id: u64,
        /// The scope, as `repo owner/name`, `org name` or `enterprise slug`.
        scope: String,
    },
    /// The runner group name does not exist in the scope.
    #[error(
        "runner group {name:?} not found in {scope}; available: {}",
        list_or_none(available)
    )]
    RunnerGroupNotFound {
        /// The name asked for.
        name: String,
        /// The scope searched.
        scope: String,
        /// The groups that do exist.
        available: Vec<String>,
    },
    /// A runner with the JIT name already exists and cannot be removed: it is in use, or it
    /// is not this instance's.
    #[error("a runner named {name:?} already exists and is {state}; not removing it")]
    NameConflict {
        /// The runner name.
        name: String,
        /// Its state, such as "online", "busy" or "not ours (…)".
        state: String,
    },
    /// A `--name-prefix` GitHub would not take in runner names.
    #[error("--name-prefix {prefix:?} cannot be used: {reason}")]
    NamePrefix {
        /// The prefix given.
        prefix: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Invalid settings: scope, API base, runner group for the repo scope.
    #[error("{0}")]
    Config(String),
}

fn doc_suffix(url: &Option<String>) -> String {
    url.as_deref()
        .map(|u| format!(" (see {u})"))
        .unwrap_or_default()
}

fn reset_suffix(reset: Option<u64>) -> String {
    reset
        .map(|r| format!("; the limit resets at epoch {r}"))
        .unwrap_or_default()
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl GitHubError {
    /// The HTTP status GitHub answered with, when the error came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            GitHubError::Api { status, .. } => Some(*status),
            GitHubError::Unauthorized { .. } => Some(401),
            GitHubError::Forbidden { .. } => Some(403),
            GitHubError::NotFound { .. } => Some(404),
            _ => None,
        }
    }
}

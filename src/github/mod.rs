//! The GitHub side of krunner: registering, querying and removing self-hosted runners.
//!
//! Only the host talks to GitHub; credentials never enter a guest. A [`GitHub`] client is built
//! from a [`ClientConfig`] (API base, [`Scope`], [`Auth`], [`RetryPolicy`]) and is cheap to
//! clone. Every call goes through one `send()` in [`http`](self) that adds GitHub's headers,
//! the bearer token (PAT, or a GitHub App installation token from [`auth`](self)), a timeout,
//! retries per GitHub's rate-limit rules, and serializes mutating calls.
//!
//! Runner lifecycle as the orchestrator uses it:
//! 1. [`GitHub::reconcile`] at start: delete offline runners this instance left behind
//!    (name prefix *and* instance label; nothing else is ever deleted).
//! 2. [`GitHub::runner_group_id`] once, then [`GitHub::generate_jit_config`] per VM with the
//!    deterministic [`runner_name`]; an "already exists" from a retried registration is
//!    resolved by deleting the stale offline runner of that name and asking once more.
//! 3. [`GitHub::get_runner`] for drain decisions, [`GitHub::delete_runner`] when a VM ended
//!    without its runner using the registration. Servers without JIT use
//!    [`GitHub::registration_token`] and [`GitHub::remove_token`].

pub mod actions;
mod auth;
mod error;
mod http;
mod models;
mod scope;
mod usage;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use url::Url;

use crate::image::Cancel;

pub use auth::Auth;
pub use error::GitHubError;
pub use http::RetryPolicy;
pub use models::{
    JitConfig, JitRequest, RateLimit, ReconcileReport, RegistrationToken, Runner, RunnerGroupId,
    RunnerId,
};
pub use scope::{
    api_base, default_name_prefix, instance_label, max_name_prefix, parse_runner_name, runner_name,
    validate_name_prefix, Scope, MAX_RUNNER_NAME,
};

use auth::Credentials;
use http::{Cred, Response, Sleeper};
use models::{WireGroupList, WireJitConfig, WireJitRequest, WireRunner, WireRunnerList, WireToken};

/// Everything needed to build a [`GitHub`] client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// REST API base (see [`api_base`]).
    pub api_base: Url,
    /// Where runners are registered.
    pub scope: Scope,
    /// Credentials.
    pub auth: Auth,
    /// Retries and timeouts.
    pub retry: RetryPolicy,
}

/// A GitHub REST client for one scope. Clones share the connection pool, token cache,
/// rate-limit state and mutation lock.
#[derive(Clone)]
pub struct GitHub {
    inner: Arc<Inner>,
    /// When it fires, calls stop waiting (see [`GitHub::hurry_on`]).
    hurry: Option<Cancel>,
}

pub(crate) struct Inner {
    http: reqwest::Client,
    /// The API base without a trailing slash; endpoint paths are appended to it.
    base_str: String,
    scope: Scope,
    creds: Credentials,
    retry: RetryPolicy,
    rate: Mutex<RateLimit>,
    calls: usage::CallLog,
    /// Held for the whole retry loop of a mutating call (GitHub: serialize content creation).
    mutate: tokio::sync::Mutex<()>,
    sleeper: Sleeper,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_base", &self.inner.base_str)
            .field("scope", &self.inner.scope)
            .field("auth", &self.inner.creds.kind())
            .field("retry", &self.inner.retry)
            .field("api_calls", &self.api_calls())
            .finish()
    }
}

/// Safety stop for pagination, far above any real runner count (100 per page).
pub(crate) const MAX_PAGES: u32 = 1_000;
/// Page size for list calls; GitHub's maximum.
const PER_PAGE: usize = 100;
/// The repo scope has no runner-groups API; its runners all live in group 1, "Default".
const REPO_DEFAULT_GROUP: RunnerGroupId = RunnerGroupId(1);

impl GitHub {
    /// Builds a client. Checks the API base and, for a GitHub App, that the key can sign;
    /// sends no request.
    pub fn new(cfg: ClientConfig) -> Result<GitHub, GitHubError> {
        Self::build(cfg, http::tokio_sleeper())
    }

    fn build(cfg: ClientConfig, sleeper: Sleeper) -> Result<GitHub, GitHubError> {
        // Re-checked here so a hand-built Url can't bypass the https-or-loopback rule.
        let base = api_base(None, Some(cfg.api_base.as_str()))?;
        let creds = Credentials::from_auth(&cfg.auth)?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("krunner/", env!("CARGO_PKG_VERSION")))
            .timeout(cfg.retry.request_timeout)
            .connect_timeout(cfg.retry.request_timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| GitHubError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(GitHub {
            inner: Arc::new(Inner {
                http,
                base_str: base.as_str().trim_end_matches('/').to_string(),
                scope: cfg.scope,
                creds,
                retry: cfg.retry,
                rate: Mutex::new(RateLimit::default()),
                calls: usage::CallLog::default(),
                mutate: tokio::sync::Mutex::new(()),
                sleeper,
            }),
            hurry: None,
        })
    }

    /// A clone whose calls stop waiting once `signal` fires: a retry wait (`retry-after`, a
    /// rate-limit reset, a backoff) ends at once and the call gives up with its last answer,
    /// the mutation lock is not waited for, and a request gets one attempt of at most 5 s.
    /// What a stopping krunner uses, so a stalled or rate-limiting API cannot hold a shutdown.
    pub fn hurry_on(&self, signal: &Cancel) -> GitHub {
        GitHub {
            inner: self.inner.clone(),
            hurry: Some(signal.clone()),
        }
    }

    /// Whether this clone was told to hurry.
    fn is_hurried(&self) -> bool {
        self.hurry.as_ref().is_some_and(Cancel::is_cancelled)
    }

    /// Resolves when this clone is told to hurry; never without a hurry signal.
    async fn hurried(&self) {
        match &self.hurry {
            Some(c) => c.cancelled().await,
            None => std::future::pending().await,
        }
    }

    /// The scope this client registers runners in.
    pub fn scope(&self) -> &Scope {
        &self.inner.scope
    }

    /// Resolves a runner group name (`-G`) to its id.
    ///
    /// Repo scope has no groups API: "Default" is group 1 and anything else is an error.
    /// Org and enterprise: lists the groups (all pages) and matches the name, exactly first,
    /// then ignoring case; an unknown name is an error listing the groups that exist.
    pub async fn runner_group_id(&self, name: &str) -> Result<RunnerGroupId, GitHubError> {
        if let Scope::Repo { .. } = self.inner.scope {
            return if name.eq_ignore_ascii_case("default") {
                Ok(REPO_DEFAULT_GROUP)
            } else {
                Err(GitHubError::Config(format!(
                    "runner group {name:?}: repository runners can only be in the \"Default\" group; runner groups exist at org and enterprise scope"
                )))
            };
        }
        let mut groups = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!(
                "{}/actions/runner-groups?per_page={PER_PAGE}&page={page}",
                self.inner.scope.path_prefix()
            );
            let list: WireGroupList = self.get(&path).await?;
            let n = list.runner_groups.len();
            groups.extend(list.runner_groups);
            if n < PER_PAGE || list.total_count.is_some_and(|t| groups.len() as u64 >= t) {
                break;
            }
        }
        let hit = groups
            .iter()
            .find(|g| g.name == name)
            .or_else(|| groups.iter().find(|g| g.name.eq_ignore_ascii_case(name)));
        match hit {
            Some(g) => Ok(RunnerGroupId(g.id)),
            None => Err(GitHubError::RunnerGroupNotFound {
                name: name.to_string(),
                scope: self.inner.scope.to_string(),
                available: groups.into_iter().map(|g| g.name).collect(),
            }),
        }
    }

    /// Registers a just-in-time runner and returns its id and single-use config.
    ///
    /// A 409/422 "already exists" means an earlier attempt with this (deterministic) name got
    /// through: that runner is deleted if it is offline, idle and carries the request's
    /// instance label, and the request is sent once more. An online or busy runner of that
    /// name, or one without the label (someone else's), is never touched: that is an error.
    pub async fn generate_jit_config(&self, req: &JitRequest) -> Result<JitConfig, GitHubError> {
        let path = format!("{}/generate-jitconfig", self.runners_path());
        let body = serde_json::to_vec(&WireJitRequest {
            name: &req.name,
            runner_group_id: req.runner_group_id.0,
            labels: &req.labels,
            work_folder: &req.work_folder,
        })
        .map_err(|e| GitHubError::Config(format!("cannot encode the JIT request: {e}")))?;
        let mut cleared = false;
        loop {
            match self
                .send(Method::POST, &path, Some(body.clone()), Cred::Token)
                .await
            {
                Ok(resp) => {
                    let w: WireJitConfig = resp.decode(&Method::POST, &path)?;
                    tracing::debug!(runner = %req.name, id = w.runner.id, "registered JIT runner");
                    return Ok(JitConfig {
                        runner: w.runner.into(),
                        encoded_jit_config: w.encoded_jit_config,
                    });
                }
                Err(GitHubError::Api {
                    status: 409 | 422,
                    ref message,
                    ..
                }) if !cleared && message.to_ascii_lowercase().contains("already exists") => {
                    cleared = true;
                    tracing::info!(runner = %req.name, "runner name already registered; removing the stale registration");
                    self.clear_stale_runner(&req.name, &req.instance_label)
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes the runner called `name` if it is offline, idle and carries `label`.
    async fn clear_stale_runner(&self, name: &str, label: &str) -> Result<(), GitHubError> {
        let Some(runner) = self.runner_named(name).await? else {
            // Gone in the meantime (or GitHub's list lags): asking again is all we can do.
            return Ok(());
        };
        let state = if !runner.has_label(label) {
            format!("not ours (no label {label})")
        } else if runner.busy {
            "busy".to_string()
        } else if runner.is_online() {
            "online".to_string()
        } else {
            return self.delete_runner(runner.id).await;
        };
        Err(GitHubError::NameConflict {
            name: name.to_string(),
            state,
        })
    }

    /// The runner called `name`, whoever registered it.
    async fn runner_named(&self, name: &str) -> Result<Option<Runner>, GitHubError> {
        let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let path = format!("{}?name={encoded}&per_page={PER_PAGE}", self.runners_path());
        let list: WireRunnerList = self.get(&path).await?;
        Ok(list
            .runners
            .into_iter()
            .map(Runner::from)
            .find(|r| r.name == name))
    }

    /// The runner called `name` if it carries `label`; a runner of that name without the label
    /// is someone else's and is not returned.
    pub async fn find_runner(
        &self,
        name: &str,
        label: &str,
    ) -> Result<Option<Runner>, GitHubError> {
        Ok(self
            .runner_named(name)
            .await?
            .filter(|r| r.has_label(label)))
    }

    /// A registration token for `config.sh` (servers without JIT).
    pub async fn registration_token(&self) -> Result<RegistrationToken, GitHubError> {
        self.token_call("registration-token").await
    }

    /// A remove token for `config.sh remove`.
    pub async fn remove_token(&self) -> Result<RegistrationToken, GitHubError> {
        self.token_call("remove-token").await
    }

    async fn token_call(&self, which: &str) -> Result<RegistrationToken, GitHubError> {
        let path = format!("{}/{which}", self.runners_path());
        let resp = self.send(Method::POST, &path, None, Cred::Token).await?;
        let w: WireToken = resp.decode(&Method::POST, &path)?;
        Ok(RegistrationToken {
            token: w.token,
            expires_at: w.expires_at,
        })
    }

    /// All self-hosted runners of the scope (100 per page, every page).
    pub async fn list_runners(&self) -> Result<Vec<Runner>, GitHubError> {
        let mut runners = Vec::new();
        for page in 1..=MAX_PAGES {
            let path = format!("{}?per_page={PER_PAGE}&page={page}", self.runners_path());
            let list: WireRunnerList = self.get(&path).await?;
            let n = list.runners.len();
            runners.extend(list.runners.into_iter().map(Runner::from));
            if n < PER_PAGE || list.total_count.is_some_and(|t| runners.len() as u64 >= t) {
                break;
            }
        }
        Ok(runners)
    }

    /// One runner by id; `None` if GitHub does not know it (anymore).
    pub async fn get_runner(&self, id: RunnerId) -> Result<Option<Runner>, GitHubError> {
        let path = format!("{}/{id}", self.runners_path());
        match self.get::<WireRunner>(&path).await {
            Ok(w) => Ok(Some(w.into())),
            Err(GitHubError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a runner by id; one that is already gone counts as deleted.
    pub async fn delete_runner(&self, id: RunnerId) -> Result<(), GitHubError> {
        let path = format!("{}/{id}", self.runners_path());
        match self.send(Method::DELETE, &path, None, Cred::Token).await {
            Ok(_) => {
                tracing::debug!(%id, "deleted runner");
                Ok(())
            }
            Err(GitHubError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the offline runners this instance registered earlier: name starting with
    /// `{name_prefix}-`, carrying `instance_label`, offline and idle. Runners of this instance
    /// that are online or busy are reported as kept; runners of anyone else are not touched.
    /// Also reports the highest sequence number each slot's names reached.
    pub async fn reconcile(
        &self,
        name_prefix: &str,
        instance_label: &str,
    ) -> Result<ReconcileReport, GitHubError> {
        if name_prefix.is_empty() || instance_label.is_empty() {
            return Err(GitHubError::Config(
                "reconcile needs a non-empty name prefix and instance label".into(),
            ));
        }
        let start = format!("{name_prefix}-");
        let mut report = ReconcileReport::default();
        for runner in self.list_runners().await? {
            if let Some((slot, seq)) = parse_runner_name(name_prefix, &runner.name) {
                let last = report.last_seq.entry(slot).or_insert(0);
                *last = (*last).max(seq);
            }
            let ours = runner.name.starts_with(&start) && runner.has_label(instance_label);
            if !ours {
                continue;
            }
            if runner.is_online() || runner.busy {
                report.kept.push(runner);
                continue;
            }
            match self.delete_runner(runner.id).await {
                Ok(()) => {
                    tracing::info!(runner = %runner.name, id = %runner.id, "removed stale runner");
                    report.deleted.push(runner);
                }
                // GitHub refuses to delete a runner that picked up a job since we listed it.
                Err(GitHubError::Api { status: 422, .. }) => {
                    tracing::info!(runner = %runner.name, "runner became busy; keeping it");
                    report.kept.push(runner);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// The last `x-ratelimit-*` headers seen, for metrics.
    pub fn rate_limit(&self) -> RateLimit {
        *self
            .inner
            .rate
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// HTTP requests sent so far, retries and token requests included.
    pub fn api_calls(&self) -> u64 {
        self.inner.calls.total()
    }

    /// HTTP requests sent in the last hour (GitHub's rate-limit window), per minute.
    pub fn api_calls_last_hour(&self) -> u64 {
        self.inner.calls.last_hour()
    }

    fn runners_path(&self) -> String {
        format!("{}/actions/runners", self.inner.scope.path_prefix())
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, GitHubError> {
        let resp: Response = self.send(Method::GET, path, None, Cred::Token).await?;
        resp.decode(&Method::GET, path)
    }

    /// Which token scope or App permission the scope's runner endpoints need.
    fn permission_hint(&self) -> String {
        let scope = &self.inner.scope;
        match (&self.inner.creds, scope) {
            (Credentials::Pat(_), Scope::Repo { .. }) => "a classic PAT needs the `repo` scope; a fine-grained token needs repository Administration: read and write".into(),
            (Credentials::Pat(_), Scope::Org(_)) => "a classic PAT needs the `admin:org` scope (and `repo` for private repositories); a fine-grained token needs organization Self-hosted runners: read and write".into(),
            (Credentials::Pat(_), Scope::Enterprise(_)) => "a classic PAT needs the `manage_runners:enterprise` scope, held by an enterprise admin".into(),
            (Credentials::App(_), Scope::Repo { .. }) => format!("the GitHub App needs repository Administration: read and write, and an installation on {scope}"),
            (Credentials::App(_), Scope::Org(_)) => format!("the GitHub App needs organization Self-hosted runners: read and write, and an installation on {scope}"),
            (Credentials::App(_), Scope::Enterprise(_)) => format!("the GitHub App needs enterprise Self-hosted runners: read and write, and an installation on {scope}"),
        }
    }
}

#[cfg(test)]
mod tests;

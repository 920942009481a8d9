//! Typed values the client hands out, and the wire shapes GitHub sends them in.
//!
//! Public types are what callers use (ids as newtypes so a runner id can't stand in for a group
//! id; secrets in [`Secret`]). The `Wire*` types mirror GitHub's JSON and stay private to the
//! module; they ignore fields we don't use, so additions on GitHub's side don't break decoding.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::Secret;

/// A self-hosted runner's id, what `DELETE …/actions/runners/{id}` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunnerId(pub u64);

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A runner group's id (repo scope: always 1, "Default").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunnerGroupId(pub u64);

impl fmt::Display for RunnerGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A self-hosted runner as GitHub reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runner {
    /// Its id.
    pub id: RunnerId,
    /// Its name, unique within the scope.
    pub name: String,
    /// `"online"` or `"offline"`.
    pub status: String,
    /// Whether it is running a job.
    pub busy: bool,
    /// Label names, default and custom.
    pub labels: Vec<String>,
}

impl Runner {
    /// Whether GitHub sees it connected.
    pub fn is_online(&self) -> bool {
        self.status.eq_ignore_ascii_case("online")
    }

    /// Whether it carries `label` (GitHub compares labels ignoring case).
    pub fn has_label(&self, label: &str) -> bool {
        self.labels.iter().any(|l| l.eq_ignore_ascii_case(label))
    }
}

/// What to register one just-in-time runner with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JitRequest {
    /// Runner name (see [`super::runner_name`]).
    pub name: String,
    /// Group to put it in (see [`super::GitHub::runner_group_id`]).
    pub runner_group_id: RunnerGroupId,
    /// Custom labels, 1 to 100.
    pub labels: Vec<String>,
    /// The label that marks this instance's runners (one of `labels`): a stale runner of the
    /// same name is removed only if it carries it.
    pub instance_label: String,
    /// Work folder relative to the runner directory (GitHub's default is `_work`).
    pub work_folder: String,
}

/// A registered just-in-time runner and the single-use config that lets it connect.
#[derive(Debug, Clone)]
pub struct JitConfig {
    /// The runner GitHub created.
    pub runner: Runner,
    /// The base64 config for `run.sh --jitconfig`; a credential.
    pub encoded_jit_config: Secret,
}

/// A registration or remove token for `config.sh`.
#[derive(Debug, Clone)]
pub struct RegistrationToken {
    /// The token; a credential.
    pub token: Secret,
    /// When it expires, as GitHub wrote it (ISO 8601).
    pub expires_at: String,
}

/// The last rate-limit headers seen, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// `x-ratelimit-limit`: requests per hour.
    pub limit: Option<u64>,
    /// `x-ratelimit-remaining`.
    pub remaining: Option<u64>,
    /// `x-ratelimit-reset`: when the window resets, UTC epoch seconds.
    pub reset_epoch: Option<u64>,
}

/// What [`super::GitHub::reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Offline runners of this instance that were deleted.
    pub deleted: Vec<Runner>,
    /// Runners of this instance left alone because they are online or busy.
    pub kept: Vec<Runner>,
    /// Per slot, the highest sequence number of any runner named `{prefix}-{slot}-{seq}`
    /// (anyone's, deleted or kept): new names continue after it, so none collides with a
    /// runner an earlier run left online.
    pub last_seq: std::collections::BTreeMap<usize, u64>,
}

// ---- wire shapes ----

#[derive(Debug, Deserialize)]
pub(crate) struct WireLabel {
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRunner {
    pub id: u64,
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub busy: bool,
    #[serde(default)]
    pub labels: Vec<WireLabel>,
}

impl From<WireRunner> for Runner {
    fn from(w: WireRunner) -> Self {
        Runner {
            id: RunnerId(w.id),
            name: w.name,
            status: w.status,
            busy: w.busy,
            labels: w.labels.into_iter().map(|l| l.name).collect(),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireRunnerList {
    #[serde(default)]
    pub total_count: Option<u64>,
    pub runners: Vec<WireRunner>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireGroup {
    pub id: u64,
    pub name: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireGroupList {
    #[serde(default)]
    pub total_count: Option<u64>,
    pub runner_groups: Vec<WireGroup>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireJitConfig {
    pub runner: WireRunner,
    #[serde(deserialize_with = "secret")]
    pub encoded_jit_config: Secret,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireToken {
    #[serde(deserialize_with = "secret")]
    pub token: Secret,
    pub expires_at: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireAccount {
    #[serde(default)]
    pub login: Option<String>,
    #[serde(default)]
    pub slug: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireInstallation {
    pub id: u64,
    #[serde(default)]
    pub account: Option<WireAccount>,
}

/// GitHub's error body; both fields are optional in practice (proxies send HTML).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WireError {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub documentation_url: Option<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct WireJitRequest<'a> {
    pub name: &'a str,
    pub runner_group_id: u64,
    pub labels: &'a [String],
    pub work_folder: &'a str,
}

/// Reads a credential straight into a [`Secret`], so no plain `String` field ever holds it.
fn secret<'de, D: Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
    String::deserialize(d).map(Secret::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runner_from_github_json() {
        let json = r#"{"id":23,"name":"mbp","os":"macos","status":"online","busy":true,
            "ephemeral":true,"labels":[{"id":5,"name":"self-hosted","type":"read-only"},
            {"id":7,"name":"krunner-x","type":"custom"}]}"#;
        let w: WireRunner = serde_json::from_str(json).unwrap();
        let r = Runner::from(w);
        assert_eq!(r.id, RunnerId(23));
        assert!(r.is_online() && r.busy);
        assert_eq!(r.labels, ["self-hosted", "krunner-x"]);
    }

    #[test]
    fn jit_config_is_redacted() {
        let json = r#"{"runner":{"id":1,"name":"a","status":"offline","busy":false,"labels":[]},
            "encoded_jit_config":"eyJTRUNSRVQtSklUIjoiMSJ9"}"#;
        let w: WireJitConfig = serde_json::from_str(json).unwrap();
        let cfg = JitConfig {
            runner: w.runner.into(),
            encoded_jit_config: w.encoded_jit_config,
        };
        assert!(!format!("{cfg:?}").contains("eyJTRUNSRVQtSklUIjoiMSJ9"));
        assert_eq!(cfg.encoded_jit_config.expose(), "eyJTRUNSRVQtSklUIjoiMSJ9");
    }
}

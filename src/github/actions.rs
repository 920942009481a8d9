//! The Actions service behind runner scale sets: the undocumented API that GitHub's own
//! scale-set listener (actions/scaleset, used by ARC) speaks. The REST API only bootstraps it:
//! a registration token is exchanged (`POST {api}/actions/runner-registration`, `RemoteAuth`)
//! for the service's URL and an admin token, used as a bearer for every call below, with
//! `api-version=6.0-preview`. A message session per scale set gives a long-polled queue of
//! job messages, each carrying the set's statistics (how many jobs are assigned to it now).
//!
//! Errors are `{typeName, message}`; [`ActionsError::type_name`] lets callers tell a session
//! conflict, a deleted scale set or a busy runner from a failure.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use url::Url;

use super::{GitHub, GitHubError};
use crate::secret::Secret;

/// The API version every service call names.
const API_VERSION: &str = "6.0-preview";
/// An ordinary call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// A message poll's timeout: the service answers 202 after about 50 s without a message.
const POLL_TIMEOUT: Duration = Duration::from_secs(120);
/// Refresh the admin token when it has less than this left.
const REFRESH_BEFORE: u64 = 120;
/// Transient failures (network, 5xx, 429) retried within one call.
const TRIES: u32 = 4;

/// Why an Actions service call failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionsError {
    /// The service answered with an error.
    #[error("the Actions service answered {status} to {what}: {type_name}: {message}")]
    Service {
        /// The call.
        what: String,
        /// HTTP status.
        status: u16,
        /// Its `typeName` (e.g. `RunnerScaleSetSessionConflictException`), or empty.
        type_name: String,
        /// Its `message`.
        message: String,
    },
    /// The service could not be reached.
    #[error("{what}: {reason}")]
    Transport {
        /// The call.
        what: String,
        /// Why.
        reason: String,
    },
    /// The answer was not what the protocol says.
    #[error("{what}: unexpected answer: {reason}")]
    Decode {
        /// The call.
        what: String,
        /// Why.
        reason: String,
    },
    /// No registration token for the bootstrap.
    #[error("cannot get a registration token for the Actions service")]
    Token(#[source] Box<GitHubError>),
}

impl ActionsError {
    /// The service's `typeName` without its namespace and assembly, if it sent one (it may
    /// send `GitHub.Actions.Runtime.WebApi.X, GitHub.Actions.Runtime.WebApi` or just `X`).
    pub fn type_name(&self) -> Option<&str> {
        match self {
            ActionsError::Service { type_name, .. } if !type_name.is_empty() => {
                let t = type_name.split(',').next().unwrap_or(type_name).trim();
                Some(t.rsplit('.').next().unwrap_or(t))
            }
            _ => None,
        }
    }

    /// The HTTP status, if the service answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ActionsError::Service { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether the scale set is gone (GitHub deletes sets that stay offline).
    pub fn scale_set_gone(&self) -> bool {
        self.type_name() == Some("RunnerScaleSetNotFoundException")
    }

    /// Whether another session holds the scale set.
    pub fn session_conflict(&self) -> bool {
        self.status() == Some(409)
            || self.type_name() == Some("RunnerScaleSetSessionConflictException")
    }
}

/// A scale set's statistics: the demand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Statistics {
    /// Jobs available to acquire (older flow).
    pub total_available_jobs: u64,
    /// Jobs acquired.
    pub total_acquired_jobs: u64,
    /// Jobs assigned to the set, running or waiting for a runner: what to scale on.
    pub total_assigned_jobs: u64,
    /// Jobs running.
    pub total_running_jobs: u64,
    /// Runners registered in the set.
    pub total_registered_runners: u64,
    /// Busy runners.
    pub total_busy_runners: u64,
    /// Idle runners.
    pub total_idle_runners: u64,
}

/// A scale set.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSet {
    /// Its id.
    pub id: u64,
    /// Its name: also the label `runs-on` names.
    pub name: String,
    /// Its runner group.
    #[serde(default)]
    pub runner_group_id: u64,
}

/// A message session: the set's queue, while this listener holds it.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id (to refresh or close it).
    pub id: String,
    /// The queue to poll.
    pub queue_url: String,
    /// The queue's bearer token.
    pub queue_token: Secret,
    /// The demand when it opened.
    pub statistics: Statistics,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireSession {
    session_id: String,
    message_queue_url: String,
    message_queue_access_token: String,
    #[serde(default)]
    statistics: Option<Statistics>,
}

impl From<WireSession> for Session {
    fn from(w: WireSession) -> Session {
        Session {
            id: w.session_id,
            queue_url: w.message_queue_url,
            queue_token: Secret::new(w.message_queue_access_token),
            statistics: w.statistics.unwrap_or_default(),
        }
    }
}

/// One message from the queue.
#[derive(Debug, Clone)]
pub struct Message {
    /// Its id: acknowledged by it, and the next poll's `lastMessageId`.
    pub id: u64,
    /// The job events in it.
    pub jobs: Vec<JobEvent>,
    /// The demand now.
    pub statistics: Statistics,
}

/// A job event of a message body.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobEvent {
    /// `JobAvailable`, `JobAssigned`, `JobStarted` or `JobCompleted`.
    pub message_type: String,
    /// The request id (`acquirejobs` takes these).
    #[serde(default)]
    pub runner_request_id: u64,
    /// The job, as the service names it (a string or a number).
    #[serde(default)]
    pub job_id: Value,
    /// The runner that took it (`JobStarted`, `JobCompleted`).
    #[serde(default)]
    pub runner_name: Option<String>,
    /// `JobCompleted`: succeeded, failed, canceled….
    #[serde(default)]
    pub result: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMessage {
    message_id: u64,
    message_type: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    statistics: Option<Statistics>,
}

/// A runner of the scope as the service lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: String,
    /// `online` or `offline`.
    #[serde(default)]
    pub status: String,
    /// Whether it runs a job.
    #[serde(default)]
    pub busy: bool,
    /// Its scale set, if any.
    #[serde(default)]
    pub runner_scale_set_id: Option<u64>,
}

/// A scale-set runner's registration.
#[derive(Debug, Clone)]
pub struct ScaleSetJit {
    /// The runner's id.
    pub runner_id: u64,
    /// The JIT config, for the guest only.
    pub config: Secret,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireLabel<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

/// The service's address and admin token.
struct Admin {
    base: Url,
    token: Secret,
    exp: u64,
}

/// A client of one scope's Actions service; clones share the admin token.
#[derive(Clone)]
pub struct Actions {
    http: reqwest::Client,
    github: GitHub,
    /// `{api}/actions/runner-registration`.
    registration_url: Url,
    /// The scope's web URL (`https://github.com/owner/repo`).
    config_url: String,
    admin: std::sync::Arc<tokio::sync::Mutex<Option<Admin>>>,
}

impl std::fmt::Debug for Actions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actions")
            .field("config_url", &self.config_url)
            .finish_non_exhaustive()
    }
}

fn transport(what: &str) -> impl FnOnce(reqwest::Error) -> ActionsError + '_ {
    move |e| ActionsError::Transport {
        what: what.to_string(),
        reason: crate::error_chain(&e),
    }
}

/// The `exp` of a JWT, read without verifying it (the service checks it; this only decides
/// when to get a new one).
fn jwt_exp(token: &str) -> Option<u64> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()?
        .get("exp")?
        .as_u64()
}

/// The service's error body: `{typeName, message}`, maybe after a UTF-8 BOM.
fn service_error(what: &str, status: StatusCode, body: &[u8]) -> ActionsError {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    ActionsError::Service {
        what: what.to_string(),
        status: status.as_u16(),
        type_name: s("typeName"),
        message: {
            let m = s("message");
            if m.is_empty() {
                String::from_utf8_lossy(body).chars().take(200).collect()
            } else {
                m
            }
        },
    }
}

fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ActionsError> {
    let body = body.strip_prefix(b"\xef\xbb\xbf").unwrap_or(body);
    serde_json::from_slice(body).map_err(|e| ActionsError::Decode {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

impl Actions {
    /// A client for `github`'s scope; `api_base` is the REST base and `config_url` the
    /// scope's web URL. Sends nothing yet.
    pub fn new(
        github: GitHub,
        api_base: &Url,
        config_url: String,
    ) -> Result<Actions, ActionsError> {
        let mut registration_url = api_base.clone();
        let path = format!(
            "{}/actions/runner-registration",
            registration_url.path().trim_end_matches('/')
        );
        registration_url.set_path(&path);
        let http = reqwest::Client::builder()
            .user_agent(concat!("krunner/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(20))
            .build()
            .map_err(transport("build the Actions service client"))?;
        Ok(Actions {
            http,
            github,
            registration_url,
            config_url,
            admin: Default::default(),
        })
    }

    /// The service base and a current admin token, bootstrapping or refreshing as needed.
    async fn admin(&self) -> Result<(Url, Secret), ActionsError> {
        let mut guard = self.admin.lock().await;
        let now = crate::image::cache::now_secs();
        if let Some(a) = guard.as_ref() {
            if a.exp > now + REFRESH_BEFORE {
                return Ok((a.base.clone(), a.token.clone()));
            }
        }
        let fresh = self.bootstrap().await?;
        let out = (fresh.base.clone(), fresh.token.clone());
        *guard = Some(fresh);
        Ok(out)
    }

    /// Forgets the admin token (the service refused it).
    async fn drop_admin(&self) {
        *self.admin.lock().await = None;
    }

    /// Registration token → service URL and admin token. A fresh registration token can be
    /// refused for a moment, so 401/403 are tried again too.
    async fn bootstrap(&self) -> Result<Admin, ActionsError> {
        let what = "the Actions service bootstrap (runner-registration)";
        let mut last = None;
        for attempt in 0..5u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * (1 << attempt))).await;
            }
            let reg = self
                .github
                .registration_token()
                .await
                .map_err(|e| ActionsError::Token(Box::new(e)))?;
            let resp = self
                .http
                .post(self.registration_url.clone())
                .header(
                    "Authorization",
                    format!("RemoteAuth {}", reg.token.expose()),
                )
                .header("Accept", "application/json")
                .timeout(CALL_TIMEOUT)
                .json(&json!({"url": self.config_url, "runner_event": "register"}))
                .send()
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    last = Some(transport(what)(e));
                    continue;
                }
            };
            let status = resp.status();
            let body = resp.bytes().await.map_err(transport(what))?;
            if status.is_success() {
                #[derive(Deserialize)]
                struct Conn {
                    url: String,
                    token: String,
                }
                let c: Conn = decode(what, &body)?;
                let mut base = Url::parse(&c.url).map_err(|e| ActionsError::Decode {
                    what: what.into(),
                    reason: format!("service URL {:?}: {e}", c.url),
                })?;
                if !base.path().ends_with('/') {
                    let p = format!("{}/", base.path());
                    base.set_path(&p);
                }
                let exp = jwt_exp(&c.token).unwrap_or(crate::image::cache::now_secs() + 600);
                return Ok(Admin {
                    base,
                    token: Secret::new(c.token),
                    exp,
                });
            }
            let err = service_error(what, status, &body);
            let again = matches!(status.as_u16(), 401 | 403 | 429) || status.is_server_error();
            if !again {
                return Err(err);
            }
            last = Some(err);
        }
        Err(last.unwrap_or(ActionsError::Transport {
            what: what.into(),
            reason: "no answer".into(),
        }))
    }

    /// One call to the service at `path` (relative to its base), retried on transient
    /// failures; returns the status and body of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(StatusCode, bytes::Bytes), ActionsError> {
        let mut last = None;
        for attempt in 0..TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(500 * (1 << attempt))).await;
            }
            let (base, token) = self.admin().await?;
            let mut url = base.join(path).map_err(|e| ActionsError::Decode {
                what: what.into(),
                reason: e.to_string(),
            })?;
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())))
                .append_pair("api-version", API_VERSION);
            let mut req = self
                .http
                .request(method.clone(), url)
                .bearer_auth(token.expose())
                .header("Accept", "application/json")
                .timeout(CALL_TIMEOUT);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(transport(what)(e));
                    continue;
                }
            };
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(transport(what))?;
            if status.is_success() {
                return Ok((status, bytes));
            }
            let err = service_error(what, status, &bytes);
            if status == StatusCode::UNAUTHORIZED {
                // An admin token the service no longer takes: a new one, once more.
                self.drop_admin().await;
                last = Some(err);
                continue;
            }
            if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                last = Some(err);
                continue;
            }
            return Err(err);
        }
        Err(last.unwrap_or(ActionsError::Transport {
            what: what.into(),
            reason: "no answer".into(),
        }))
    }

    /// The id of runner group `name` (`Default` is 1 everywhere).
    pub async fn runner_group_id(&self, name: &str) -> Result<u64, ActionsError> {
        let what = format!("finding the runner group {name:?}");
        let (_, body) = self
            .call(
                Method::GET,
                "_apis/runtime/runnergroups/",
                &[("groupName", name.to_string())],
                None,
                &what,
            )
            .await?;
        #[derive(Deserialize)]
        struct Group {
            id: u64,
            name: String,
        }
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            value: Vec<Group>,
        }
        let l: List = decode(&what, &body)?;
        l.value
            .into_iter()
            .find(|g| g.name.eq_ignore_ascii_case(name))
            .map(|g| g.id)
            .ok_or(ActionsError::Service {
                what,
                status: 404,
                type_name: "RunnerGroupNotFound".into(),
                message: format!("no runner group named {name:?}"),
            })
    }

    /// The scale set `name` in group `group`, if it exists.
    pub async fn find_scale_set(
        &self,
        group: u64,
        name: &str,
    ) -> Result<Option<ScaleSet>, ActionsError> {
        let what = format!("finding the scale set {name:?}");
        let (_, body) = self
            .call(
                Method::GET,
                "_apis/runtime/runnerscalesets",
                &[
                    ("runnerGroupId", group.to_string()),
                    ("name", name.to_string()),
                ],
                None,
                &what,
            )
            .await?;
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            value: Vec<ScaleSet>,
        }
        let l: List = decode(&what, &body)?;
        Ok(l.value.into_iter().find(|s| s.name == name))
    }

    /// Creates scale set `name` in group `group` with `labels` (the name is always the first).
    pub async fn create_scale_set(
        &self,
        group: u64,
        name: &str,
        labels: &[String],
    ) -> Result<ScaleSet, ActionsError> {
        let what = format!("creating the scale set {name:?}");
        let mut all = vec![WireLabel {
            name,
            kind: "System",
        }];
        all.extend(
            labels
                .iter()
                .filter(|l| l.as_str() != name)
                .map(|l| WireLabel {
                    name: l,
                    kind: "System",
                }),
        );
        let body = json!({
            "name": name,
            "runnerGroupId": group,
            "labels": all,
            "runnerSetting": {"ephemeral": true, "disableUpdate": true},
        });
        let (_, bytes) = self
            .call(
                Method::POST,
                "_apis/runtime/runnerscalesets",
                &[],
                Some(&body),
                &what,
            )
            .await?;
        decode(&what, &bytes)
    }

    /// A runner registration in scale set `set`.
    pub async fn generate_jit(&self, set: u64, name: &str) -> Result<ScaleSetJit, ActionsError> {
        let what = format!("registering the scale-set runner {name}");
        let (_, bytes) = self
            .call(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{set}/generatejitconfig"),
                &[],
                Some(&json!({"name": name, "workFolder": "_work"})),
                &what,
            )
            .await?;
        #[derive(Deserialize)]
        struct R {
            id: u64,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct J {
            runner: R,
            #[serde(rename = "encodedJITConfig")]
            encoded: String,
        }
        let j: J = decode(&what, &bytes)?;
        Ok(ScaleSetJit {
            runner_id: j.runner.id,
            config: Secret::new(j.encoded),
        })
    }

    /// The scope's runner named `name`, if any.
    pub async fn find_agent(&self, name: &str) -> Result<Option<Agent>, ActionsError> {
        Ok(self
            .agents(Some(name))
            .await?
            .into_iter()
            .find(|a| a.name == name))
    }

    /// The scope's runners (all, or the one named `name`).
    pub async fn agents(&self, name: Option<&str>) -> Result<Vec<Agent>, ActionsError> {
        let what = "listing the runners".to_string();
        let q: Vec<(&str, String)> = name
            .map(|n| ("agentName", n.to_string()))
            .into_iter()
            .collect();
        let (_, bytes) = self
            .call(
                Method::GET,
                "_apis/distributedtask/pools/0/agents",
                &q,
                None,
                &what,
            )
            .await?;
        #[derive(Deserialize)]
        struct List {
            #[serde(default)]
            value: Vec<Agent>,
        }
        Ok(decode::<List>(&what, &bytes)?.value)
    }

    /// Removes runner `id`; `Ok(false)` when it runs a job (the service refuses), `Ok(true)`
    /// when it is gone (also when it was already).
    pub async fn remove_agent(&self, id: u64) -> Result<bool, ActionsError> {
        let what = format!("removing the runner {id}");
        match self
            .call(
                Method::DELETE,
                &format!("_apis/distributedtask/pools/0/agents/{id}"),
                &[],
                None,
                &what,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.type_name() == Some("JobStillRunningException") => Ok(false),
            Err(e) if e.status() == Some(404) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Opens the message session of scale set `set` as `owner`.
    pub async fn create_session(&self, set: u64, owner: &str) -> Result<Session, ActionsError> {
        let what = "opening the scale set's message session";
        let (_, bytes) = self
            .call(
                Method::POST,
                &format!("_apis/runtime/runnerscalesets/{set}/sessions"),
                &[],
                Some(&json!({"ownerName": owner})),
                what,
            )
            .await?;
        Ok(decode::<WireSession>(what, &bytes)?.into())
    }

    /// A fresh queue token for `session`.
    pub async fn refresh_session(&self, set: u64, session: &str) -> Result<Session, ActionsError> {
        let what = "refreshing the message session";
        let (_, bytes) = self
            .call(
                Method::PATCH,
                &format!("_apis/runtime/runnerscalesets/{set}/sessions/{session}"),
                &[],
                None,
                what,
            )
            .await?;
        Ok(decode::<WireSession>(what, &bytes)?.into())
    }

    /// Closes `session` (also one a crashed krunner left); gone already counts as closed.
    pub async fn delete_session(&self, set: u64, session: &str) -> Result<(), ActionsError> {
        match self
            .call(
                Method::DELETE,
                &format!("_apis/runtime/runnerscalesets/{set}/sessions/{session}"),
                &[],
                None,
                "closing the message session",
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.status(), Some(404 | 400)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Waits for the next message after `last` (the service answers 202, `None`, after about
    /// 50 s without one), telling the service how many jobs this listener can take now.
    pub async fn get_message(
        &self,
        session: &Session,
        last: u64,
        capacity: u32,
    ) -> Result<Option<Message>, ActionsError> {
        let what = "polling the scale set's messages";
        let mut url = Url::parse(&session.queue_url).map_err(|e| ActionsError::Decode {
            what: what.into(),
            reason: format!("queue URL: {e}"),
        })?;
        if last > 0 {
            url.query_pairs_mut()
                .append_pair("lastMessageId", &last.to_string());
        }
        let resp = self
            .http
            .get(url)
            .bearer_auth(session.queue_token.expose())
            .header(
                "Accept",
                format!("application/json; api-version={API_VERSION}"),
            )
            .header("X-ScaleSetMaxCapacity", capacity.to_string())
            .timeout(POLL_TIMEOUT)
            .send()
            .await
            .map_err(transport(what))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport(what))?;
        if status == StatusCode::ACCEPTED || (status.is_success() && bytes.is_empty()) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(service_error(what, status, &bytes));
        }
        let m: WireMessage = decode(what, &bytes)?;
        let jobs = if m.message_type == "RunnerScaleSetJobMessages" && !m.body.is_empty() {
            decode::<Vec<JobEvent>>(what, m.body.as_bytes())?
        } else {
            Vec::new()
        };
        Ok(Some(Message {
            id: m.message_id,
            jobs,
            statistics: m.statistics.unwrap_or_default(),
        }))
    }

    /// Acknowledges message `id`: it is not delivered again.
    pub async fn ack(&self, session: &Session, id: u64) -> Result<(), ActionsError> {
        let what = "acknowledging a message";
        let url = format!("{}/{id}", session.queue_url.trim_end_matches('/'));
        let resp = self
            .http
            .delete(url)
            .bearer_auth(session.queue_token.expose())
            .timeout(CALL_TIMEOUT)
            .send()
            .await
            .map_err(transport(what))?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let bytes = resp.bytes().await.map_err(transport(what))?;
        Err(service_error(what, status, &bytes))
    }

    /// Acquires available jobs (the `JobAvailable` flow, still used by GHES).
    pub async fn acquire_jobs(
        &self,
        set: u64,
        session: &Session,
        ids: &[u64],
    ) -> Result<Vec<u64>, ActionsError> {
        let what = "acquiring jobs";
        let (base, _) = self.admin().await?;
        let mut url = base
            .join(&format!("_apis/runtime/runnerscalesets/{set}/acquirejobs"))
            .map_err(|e| ActionsError::Decode {
                what: what.into(),
                reason: e.to_string(),
            })?;
        url.query_pairs_mut()
            .append_pair("api-version", API_VERSION);
        let resp = self
            .http
            .post(url)
            .bearer_auth(session.queue_token.expose())
            .timeout(CALL_TIMEOUT)
            .json(ids)
            .send()
            .await
            .map_err(transport(what))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(transport(what))?;
        if !status.is_success() {
            return Err(service_error(what, status, &bytes));
        }
        #[derive(Deserialize)]
        struct L {
            #[serde(default)]
            value: Vec<u64>,
        }
        Ok(decode::<L>(what, &bytes)?.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_expiry_is_read_unverified() {
        use base64::Engine as _;
        let p = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1800000000}"#);
        assert_eq!(jwt_exp(&format!("h.{p}.s")), Some(1_800_000_000));
        assert_eq!(jwt_exp("nojwt"), None);
    }

    #[test]
    fn service_errors_keep_type_name_and_skip_a_bom() {
        let e = service_error(
            "x",
            StatusCode::CONFLICT,
            b"\xef\xbb\xbf{\"typeName\":\"RunnerScaleSetSessionConflictException\",\"message\":\"busy\"}",
        );
        assert!(e.session_conflict());
        assert_eq!(
            e.type_name(),
            Some("RunnerScaleSetSessionConflictException")
        );
        assert!(e.to_string().contains("busy"));
        let gone = service_error(
            "x",
            StatusCode::NOT_FOUND,
            b"{\"typeName\":\"RunnerScaleSetNotFoundException\",\"message\":\"no\"}",
        );
        assert!(gone.scale_set_gone() && !gone.session_conflict());
        let qualified = service_error(
            "x",
            StatusCode::BAD_REQUEST,
            b"{\"typeName\":\"GitHub.Actions.Runtime.WebApi.JobStillRunningException, GitHub.Actions.Runtime.WebApi\"}",
        );
        assert_eq!(qualified.type_name(), Some("JobStillRunningException"));
    }

    #[test]
    fn job_messages_parse() {
        let body = r#"[{"messageType":"JobAssigned","runnerRequestId":7,"jobId":"j1"},
                       {"messageType":"JobCompleted","runnerRequestId":7,"jobId":"j1","runnerName":"r","result":"succeeded"}]"#;
        let v: Vec<JobEvent> = serde_json::from_str(body).unwrap();
        assert_eq!(v[0].message_type, "JobAssigned");
        assert_eq!(v[1].runner_name.as_deref(), Some("r"));
        let s: Statistics = serde_json::from_str(r#"{"totalAssignedJobs":3}"#).unwrap();
        assert_eq!(s.total_assigned_jobs, 3);
    }
}

//! The Actions service side of GitHub's runner scale sets, as `actions/scaleset` (the Go client)
//! and `/work/shared/reference/scaleset.md` describe it: a part of the GitHub simulator
//! (`github_sim.rs` includes this file and re-exports its public items).
//!
//! **Bootstrap.** `POST {api}/actions/runner-registration` with `Authorization: RemoteAuth <reg
//! token>` (one from `POST …/actions/runners/registration-token`) and
//! `{"url": "{server}/owner/repo" | "{server}/org" | "{server}/enterprises/e",
//! "runner_event": "register"}` answers 200 `{"url": "{server}/_services/actions/", "token":
//! <admin JWT>}`. The admin token is JWT-shaped (`base64url(header).base64url(payload).sig`, the
//! signature meaningless) and its payload's `exp` is when the simulator stops taking it
//! ([`GitHubSim::set_admin_token_ttl`], default [`DEFAULT_ADMIN_TOKEN_TTL`]). A registration
//! token the simulator did not issue (or [`GitHubSim::expire_registration_tokens`]) is 401; a
//! `url` that names no scope of the simulator (or another scope than the token's) is 404. Like
//! GitHub (and unlike the rest of the REST API here) it needs neither `Accept` nor
//! `X-GitHub-Api-Version` (the Go client sends neither), only a `User-Agent`.
//!
//! **Service.** Every path under `{server}/_services/actions/` takes `Authorization: Bearer
//! <admin JWT>` (401 if unknown or expired) and `?api-version=6.0-preview` (400 if missing or
//! another); errors are the Actions service's `{"$id", "innerException", "message", "typeName",
//! "typeKey", "errorCode", "eventId"}`, and answers carry an `ActivityId` header. Request bodies
//! may start with a UTF-8 BOM and their keys are read case-insensitively (as the .NET service
//! and Go's decoder do: the Go client sends `RunnerSetting`, the service answers
//! `runnerSetting`). Routes, relative to the service URL:
//!
//! - `GET _apis/runtime/runnergroups/?groupName=X` → `{count, value: [{id, name,
//!   isDefaultGroup, size}]}`, the name matched case-insensitively (the Go client asks for
//!   `default`); a repository has only `Default` (id 1), an organization or enterprise its
//!   groups ([`GitHubSim::add_runner_group`]);
//! - `GET _apis/runtime/runnerscalesets?runnerGroupId=G&name=N` → `{count, value}` (both
//!   filters optional, the name case-insensitive), `GET …/runnerscalesets/{id}`,
//!   `POST …/runnerscalesets` (200; a name is unique per runner group, else 409
//!   `RunnerScaleSetExistsException`; no labels means `[{name, type: "System"}]`; no or 0
//!   `runnerGroupId` means 1), `PATCH …/runnerscalesets/{id}` (`name`, `runnerGroupId`,
//!   `labels`, `runnerSetting`), `DELETE …/runnerscalesets/{id}` → 204 (its runners, sessions,
//!   queue and jobs go with it);
//! - `POST …/runnerscalesets/{id}/generatejitconfig` `{name, workFolder}` → `{runner: {id, name,
//!   runnerScaleSetId}, encodedJITConfig}`, the config in the REST generate-jitconfig's format
//!   (so the stand-in runners report to `/_sim/runners/{id}/…`); a name taken in the scope is
//!   409 `AgentExistsException`. Its runner is ephemeral, in the set's runner group, labelled
//!   with the set's labels;
//! - `POST …/runnerscalesets/{id}/sessions` `{ownerName}` → `{sessionId, ownerName,
//!   runnerScaleSet, messageQueueUrl, messageQueueAccessToken, statistics}`; while a session is
//!   alive, 409 `RunnerScaleSetSessionConflictException`. `PATCH …/sessions/{sid}` → the session
//!   with a new queue token (the old one stops working); `DELETE …/sessions/{sid}` → 204. An
//!   unknown or deleted session is 404 `RunnerAdminException` ("runner referenced a session ID
//!   that doesn't exist", as GitHub answers a refresh of an evicted session); deleting one that
//!   expired is 400 `RunnerScaleSetSessionExpiredException` (ARC #4285). A session expires when
//!   nobody polled or refreshed it for [`GitHubSim::set_session_ttl`] (default
//!   [`DEFAULT_SESSION_TTL`]);
//! - `POST …/runnerscalesets/{id}/acquirejobs` `[runnerRequestId, …]`, with the **queue** token
//!   → `{count, value: [the ids acquired]}` (jobs offered with `JobAvailable`);
//! - `GET _apis/distributedtask/pools/0/agents[?agentName=N]` → `{count, value: [{id, name,
//!   status: "online"|"offline", busy, ephemeral, enabled, runnerScaleSetId (0 outside a set),
//!   labels}]}` (every runner of the scope), `GET …/agents/{id}`, `DELETE …/agents/{id}` → 204,
//!   400 `JobStillRunningException` while busy, 404 `AgentNotFoundException`.
//!
//! A scale set id that does not exist (in the token's scope) is 404
//! `RunnerScaleSetNotFoundException` on every route, the queue included.
//!
//! **Message queue.** `GET {messageQueueUrl}[?lastMessageId=N]` (`{server}/_sim/scaleset-queue/
//! {set id}`) with `Bearer <queue token>` answers the oldest unacknowledged message whose id is
//! above N: 200 `{messageId, messageType: "RunnerScaleSetJobMessages", body: "<JSON array of
//! job messages>", statistics}`; with none it waits up to [`GitHubSim::set_poll_wait`] (default
//! [`DEFAULT_POLL_WAIT`]) and answers 202 with no body. A wrong or expired queue token (see
//! [`GitHubSim::expire_queue_tokens`]) is 401. `X-ScaleSetMaxCapacity` is recorded
//! ([`GitHubSim::max_capacity_seen`]). `DELETE {messageQueueUrl}/{messageId}` acknowledges
//! (204, also for an id already acknowledged). Message ids count from 1 per scale set. Job
//! messages are batched: an event joins the newest message while that one has not been
//! delivered yet (at most 50 a message).
//!
//! Job messages carry `messageType, runnerRequestId, jobId (a string), repositoryName,
//! ownerName, jobWorkflowRef, jobDisplayName, workflowRunId, eventName, requestLabels,
//! queueTime, scaleSetAssignTime, runnerAssignTime, finishTime` (times not reached yet are
//! `0001-01-01T00:00:00Z`, Go's zero time), plus `acquireJobUrl` (`JobAvailable`), `runnerId,
//! runnerName` (`JobStarted`), `result, runnerId, runnerName` (`JobCompleted`).
//! Statistics count the set's jobs and runners: `totalAvailableJobs` (offered, not acquired),
//! `totalAcquiredJobs` and `totalAssignedJobs` (assigned or running: the simulator assigns as
//! it acquires), `totalRunningJobs`, `totalRegisteredRunners`, `totalBusyRunners`,
//! `totalIdleRunners` (online and not busy).
//!
//! **Jobs.** [`GitHubSim::queue_job`] (or `POST /_sim/scalesets/{id}/jobs`) assigns a job to
//! the set (`JobAssigned`); with [`GitHubSim::set_job_available_flow`] it is first offered
//! (`JobAvailable`) and assigned once acquired. A stand-in runner of the set asks for work with
//! `GET /_sim/runners/{id}/job?secret=…`: 200 `{jobId, runnerRequestId}` once the simulator
//! gives it an assigned job (to an online, idle runner, first come first served, the oldest job
//! first; the same job again until it starts), else 204. `POST …/job-started` then sends
//! `JobStarted` (a runner that starts without asking takes the oldest job nobody took), and
//! `POST …/job-finished[?result=failed]` sends `JobCompleted` (`succeeded` by default) and
//! deletes the ephemeral runner. A job no runner started within
//! [`GitHubSim::set_reassign_after`] (default [`DEFAULT_REASSIGN_AFTER`]) is cancelled
//! (`JobCompleted`, `result: "canceled"`, empty `runnerName`) and assigned again, up to
//! [`MAX_REASSIGNMENTS`] times; then it stays cancelled. A runner that goes offline (its
//! report, or heartbeats missing for [`GitHubSim::set_dead_after`]) while running a job fails
//! it (`JobCompleted`, `result: "failed"`); one that only held an assignment gives it back.
//!
//! **Test hooks** (also over HTTP for `examples/github_sim.rs`: `GET /_sim/scalesets`,
//! `GET|POST /_sim/scalesets/{id}/jobs`, `POST /_sim/scalesets/{id}/delete`,
//! `POST /_sim/scalesets/{id}/stale-session`, `POST /_sim/expire-queue-tokens`,
//! `POST /_sim/expire-admin-tokens`): see the `impl GitHubSim` below.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

use super::{
    bearer, epoch, epoch_f64, iso8601, jit_config, random_token, runner_secret, AuthKind,
    GitHubSim, Reply, Request, SimRunner, SimScope, State, READ_ONLY_LABELS,
};

/// The `api-version` every Actions service call carries.
pub const ACTIONS_API_VERSION: &str = "6.0-preview";

/// Where the Actions service lives on the simulator's server (its URL is the server URL plus
/// this).
pub const ACTIONS_SERVICE_PREFIX: &str = "/_services/actions/";

/// Path prefix of the message queues: `{server}/_sim/scaleset-queue/{scale set id}` (for
/// [`GitHubSim::fail_next`] and [`GitHubSim::count`]).
pub const SCALESET_QUEUE_PREFIX: &str = "/_sim/scaleset-queue/";

/// The bootstrap's API path (under the API base).
pub const RUNNER_REGISTRATION_PATH: &str = "/actions/runner-registration";

/// How long an empty queue poll waits before its 202, by default (GitHub: about 50 s).
pub const DEFAULT_POLL_WAIT: Duration = Duration::from_secs(50);

/// How long an assigned job waits for a runner before it is cancelled and reassigned.
pub const DEFAULT_REASSIGN_AFTER: Duration = Duration::from_secs(300);

/// How long a session nobody polls or refreshes stays alive (and blocks a new one).
pub const DEFAULT_SESSION_TTL: Duration = Duration::from_secs(600);

/// Lifetime of the admin tokens runner-registration issues, by default.
pub const DEFAULT_ADMIN_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How many times a job nobody took is reassigned before it stays cancelled.
pub const MAX_REASSIGNMENTS: u32 = 3;

/// Most job messages in one queue message (GitHub batches up to 50).
const MAX_BATCH: usize = 50;

/// A time not reached yet in a job message (Go's zero `time.Time`).
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A stand-in scale-set runner (busybox sh) for `bin/Runner.Listener` in a test image: it
/// decodes `ACTIONS_RUNNER_INPUT_JITCONFIG` (or `--jitconfig`), records its report URL in
/// `/record/{name}` when `/record` exists, reports `online`, sends a heartbeat every second,
/// asks `…/job` every 0.5 s until the simulator gives it a job, reports `job-started`, works
/// for the seconds in `/mode/busy-{name}` or `/mode/busy` (else 1), reports `job-finished`
/// (with `?result=` from `/mode/result` if that exists) and exits 0. With `/mode/job-delay` it
/// waits that many seconds before it first asks for a job. SIGTERM ends it at once
/// with 0 (nothing reported, like a killed guest). If `…/job` fails ten times in a row (its
/// runner was removed, or the scale set deleted) it exits 6. It uses `busybox wget`, like
/// `run_e2e`'s stand-in: the namespace backend shares the host's network.
pub const SCALESET_LISTENER: &str = r#"#!/bin/sh
# Stand-in for a scale-set runner, driven by the GitHub simulator's JIT config.
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
while [ $# -gt 0 ]; do
  [ "$1" = --jitconfig ] && [ $# -gt 1 ] && cfg=$2
  shift
done
[ -n "$cfg" ] || { echo "scale-set runner stand-in: no JIT config" >&2; exit 2; }
files=$(echo "$cfg" | busybox base64 -d)
runner=$(echo "$files" | busybox sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | busybox base64 -d)
creds=$(echo "$files" | busybox sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | busybox base64 -d)
url=$(echo "$runner" | busybox sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
name=$(echo "$runner" | busybox sed 's/.*"agentName":"\([^"]*\)".*/\1/')
secret=$(echo "$creds" | busybox sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
[ -d /record ] && echo "$url" > "/record/$name"
# Stopped: gone at once, nothing reported (the guest of a real runner is killed).
trap 'exit 0' TERM
busybox wget -q -O /dev/null --post-data="$secret" "$url/online" || exit 7
# The real runner's session: GitHub sees it alive as long as this goes on.
(while busybox sleep 1; do
  busybox wget -q -O /dev/null --post-data="$secret" "$url/heartbeat" 2>/dev/null
done) &
hb=$!
trap 'kill "$hb" 2>/dev/null' EXIT
# A slow runner: it asks for a job only after /mode/job-delay seconds.
[ -f /mode/job-delay ] && busybox sleep "$(busybox cat /mode/job-delay)"
fails=0
while :; do
  if out=$(busybox wget -q -O- "$url/job?secret=$secret" 2>/dev/null); then
    fails=0
    case "$out" in *'"jobId"'*) break ;; esac
  else
    fails=$((fails + 1))
    [ "$fails" -ge 10 ] && { echo "scale-set runner stand-in: $name was removed" >&2; exit 6; }
  fi
  busybox sleep 0.5 &
  wait $!
done
busybox wget -q -O /dev/null --post-data="$secret" "$url/job-started" || exit 8
len=$(busybox cat "/mode/busy-$name" 2>/dev/null || busybox cat /mode/busy 2>/dev/null || echo 1)
busybox sleep "$len" &
wait $!
result=$(busybox cat /mode/result 2>/dev/null || echo succeeded)
busybox wget -q -O /dev/null --post-data="$secret" "$url/job-finished?result=$result" || exit 9
exit 0
"#;

/// A runner scale set as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimScaleSet {
    /// Its id (from 1).
    pub id: u64,
    /// The scope that owns it.
    pub scope: SimScope,
    /// Its name (the `runs-on` label).
    pub name: String,
    /// Its runner group.
    pub runner_group_id: u64,
    /// That group's name.
    pub runner_group_name: String,
    /// (name, type) of each label, in order.
    pub labels: Vec<(String, String)>,
    /// `runnerSetting.disableUpdate`.
    pub disable_update: bool,
    /// `runnerSetting.ephemeral` as sent (its runners are ephemeral either way).
    pub ephemeral: bool,
}

/// Where a job of a scale set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimJobState {
    /// Offered with `JobAvailable`, not acquired yet.
    Available,
    /// Assigned to the set (`JobAssigned`); maybe given to a runner that has not started it.
    Assigned,
    /// A runner started it (`JobStarted`).
    Running,
    /// Finished (`JobCompleted`, `succeeded` or `failed`).
    Completed,
    /// Cancelled for good: nobody took it after [`MAX_REASSIGNMENTS`] reassignments, or its
    /// scale set was deleted.
    Canceled,
}

/// A job of a scale set.
#[derive(Debug, Clone)]
pub struct SimJob {
    /// `jobId` (a UUID string, as GitHub's).
    pub job_id: String,
    /// `runnerRequestId`.
    pub runner_request_id: u64,
    /// `requestLabels`.
    pub labels: Vec<String>,
    /// Its state.
    pub state: SimJobState,
    /// The runner that was given it, runs it or ran it.
    pub runner_id: Option<u64>,
    /// That runner's name.
    pub runner_name: Option<String>,
    /// `succeeded`, `failed` or `canceled` once it is over.
    pub result: Option<String>,
    /// How many times it was cancelled and assigned again.
    pub reassignments: u32,
}

/// What became of a message session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimSessionState {
    /// Alive: a new session of its scale set gets 409.
    Alive,
    /// Deleted (`DELETE …/sessions/{id}`).
    Deleted,
    /// Nobody polled or refreshed it for the session TTL.
    Expired,
}

/// A message session of a scale set.
#[derive(Debug, Clone)]
pub struct SimSession {
    /// `sessionId` (a UUID).
    pub session_id: String,
    /// `ownerName`.
    pub owner_name: String,
    /// Its state.
    pub state: SimSessionState,
    /// Opened by [`GitHubSim::open_stale_session`] (a crashed listener's).
    pub stale: bool,
    /// How many times it was refreshed (`PATCH`).
    pub refreshes: u32,
}

/// The scale-set part of the simulator's state.
pub(super) struct Actions {
    admin_tokens: HashMap<String, AdminToken>,
    admin_token_ttl: Duration,
    dead_registration_tokens: HashSet<String>,
    sets: BTreeMap<u64, ScaleSet>,
    next_set_id: u64,
    next_request_id: u64,
    next_run_id: u64,
    poll_wait: Duration,
    reassign_after: Duration,
    session_ttl: Duration,
    job_available_flow: bool,
    registration_bom: bool,
    qualified_type_names: bool,
    max_capacity: HashMap<u64, u32>,
}

impl Default for Actions {
    fn default() -> Actions {
        Actions {
            admin_tokens: HashMap::new(),
            admin_token_ttl: DEFAULT_ADMIN_TOKEN_TTL,
            dead_registration_tokens: HashSet::new(),
            sets: BTreeMap::new(),
            next_set_id: 1,
            next_request_id: 7_000_001,
            next_run_id: 9_000_001,
            poll_wait: DEFAULT_POLL_WAIT,
            reassign_after: DEFAULT_REASSIGN_AFTER,
            session_ttl: DEFAULT_SESSION_TTL,
            job_available_flow: false,
            registration_bom: false,
            qualified_type_names: false,
            max_capacity: HashMap::new(),
        }
    }
}

struct AdminToken {
    scope: SimScope,
    /// Unix seconds (fractional) when it stops working.
    expires: f64,
    revoked: bool,
}

struct ScaleSet {
    info: SimScaleSet,
    created: u64,
    sessions: Vec<Session>,
    messages: Vec<Message>,
    next_message_id: u64,
    acks: Vec<u64>,
    jobs: Vec<Job>,
}

struct Session {
    id: String,
    owner: String,
    queue_token: String,
    token_revoked: bool,
    state: SimSessionState,
    last_used: Instant,
    stale: bool,
    refreshes: u32,
}

struct Message {
    id: u64,
    entries: Vec<Value>,
    delivered: bool,
    acked: bool,
}

struct Job {
    id: String,
    request_id: u64,
    run_id: u64,
    labels: Vec<String>,
    repo: String,
    owner: String,
    display: String,
    queue_time: u64,
    assign_time: Option<u64>,
    runner_assign_time: Option<u64>,
    finish_time: Option<u64>,
    state: SimJobState,
    /// The runner given the job (while assigned), running it, or that ran it.
    runner: Option<(u64, String)>,
    result: Option<String>,
    reassignments: u32,
    /// When it was last assigned (or offered), for reassignment.
    since: Instant,
}

impl ScaleSet {
    /// Adds a job message: to the newest message while it was not delivered, else in a new one.
    fn push(&mut self, entry: Value) {
        match self.messages.last_mut() {
            Some(m) if !m.delivered && !m.acked && m.entries.len() < MAX_BATCH => {
                m.entries.push(entry)
            }
            _ => {
                let id = self.next_message_id;
                self.next_message_id += 1;
                self.messages.push(Message {
                    id,
                    entries: vec![entry],
                    delivered: false,
                    acked: false,
                });
            }
        }
    }

    fn alive_session(&mut self) -> Option<&mut Session> {
        self.sessions
            .iter_mut()
            .find(|s| s.state == SimSessionState::Alive)
    }
}

impl Job {
    /// A job message of `kind` about this job.
    fn entry(&self, kind: &str) -> Value {
        let t = |e: Option<u64>| e.map_or_else(|| ZERO_TIME.to_string(), |e| iso8601(e, false));
        json!({
            "messageType": kind,
            "runnerRequestId": self.request_id,
            "repositoryName": self.repo,
            "ownerName": self.owner,
            "jobId": self.id,
            "jobWorkflowRef": format!(
                "{}/{}/.github/workflows/ci.yml@refs/heads/main",
                self.owner, self.repo
            ),
            "jobDisplayName": self.display,
            "workflowRunId": self.run_id,
            "eventName": "push",
            "requestLabels": self.labels,
            "queueTime": t(Some(self.queue_time)),
            "scaleSetAssignTime": t(self.assign_time),
            "runnerAssignTime": t(self.runner_assign_time),
            "finishTime": t(self.finish_time),
        })
    }

    fn public(&self) -> SimJob {
        SimJob {
            job_id: self.id.clone(),
            runner_request_id: self.request_id,
            labels: self.labels.clone(),
            state: self.state,
            runner_id: self.runner.as_ref().map(|r| r.0),
            runner_name: self.runner.as_ref().map(|r| r.1.clone()),
            result: self.result.clone(),
            reassignments: self.reassignments,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Test API

impl GitHubSim {
    /// `{server}/_services/actions/`: the `url` runner-registration answers.
    pub fn actions_service_url(&self) -> String {
        format!("{}{ACTIONS_SERVICE_PREFIX}", self.server_url())
    }

    /// The `messageQueueUrl` of scale set `set_id`'s sessions.
    pub fn scale_set_queue_url(&self, set_id: u64) -> String {
        format!("{}{SCALESET_QUEUE_PREFIX}{set_id}", self.server_url())
    }

    /// Lifetime of the admin tokens issued from now on (default [`DEFAULT_ADMIN_TOKEN_TTL`]);
    /// their `exp` says it.
    pub fn set_admin_token_ttl(&self, ttl: Duration) {
        self.st().scale.admin_token_ttl = ttl;
    }

    /// Makes every admin token issued so far invalid (401), as if it had expired.
    pub fn expire_admin_tokens(&self) {
        for t in self.st().scale.admin_tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// How many admin tokens runner-registration issued.
    pub fn admin_tokens_issued(&self) -> usize {
        self.st().scale.admin_tokens.len()
    }

    /// Makes every registration token issued so far unusable for runner-registration (401).
    pub fn expire_registration_tokens(&self) {
        let mut st = self.st();
        let tokens: Vec<String> = st
            .registration_tokens
            .iter()
            .map(|(_, t)| t.clone())
            .collect();
        st.scale.dead_registration_tokens.extend(tokens);
    }

    /// How long an empty queue poll waits before answering 202 (default [`DEFAULT_POLL_WAIT`];
    /// tests use about a second). Polls already waiting keep the wait they started with.
    pub fn set_poll_wait(&self, wait: Duration) {
        self.st().scale.poll_wait = wait;
    }

    /// How long an assigned job waits for a runner to start it before it is cancelled and
    /// reassigned (default [`DEFAULT_REASSIGN_AFTER`]).
    pub fn set_reassign_after(&self, after: Duration) {
        self.st().scale.reassign_after = after;
    }

    /// How long a session nobody polls or refreshes stays alive (default
    /// [`DEFAULT_SESSION_TTL`]).
    pub fn set_session_ttl(&self, ttl: Duration) {
        self.st().scale.session_ttl = ttl;
    }

    /// Jobs queued from now on are first offered (`JobAvailable` with `acquireJobUrl`) and
    /// assigned only once acquired (`acquirejobs`), as on GHES; a cancelled assignment is
    /// offered again.
    pub fn set_job_available_flow(&self, on: bool) {
        self.st().scale.job_available_flow = on;
    }

    /// Starts runner-registration answers with a UTF-8 byte order mark (GitHub sometimes
    /// does; clients strip it).
    pub fn set_registration_bom(&self, on: bool) {
        self.st().scale.registration_bom = on;
    }

    /// Sends error `typeName`s assembly-qualified, as GitHub does for some
    /// (`GitHub.Actions.Runtime.WebApi.RunnerScaleSetSessionConflictException,
    /// GitHub.Actions.Runtime.WebApi`, ARC #4285), so a client must match them by their
    /// short name inside.
    pub fn set_qualified_type_names(&self, on: bool) {
        self.st().scale.qualified_type_names = on;
    }

    /// Creates scale set `name` in `scope` and runner group `runner_group_id` directly (labels:
    /// `labels` as `System` labels, or the name); returns its id. Panics on an unknown scope or
    /// group or a taken name.
    pub fn add_scale_set(
        &self,
        scope: &SimScope,
        name: &str,
        runner_group_id: u64,
        labels: &[&str],
    ) -> u64 {
        let mut st = self.st();
        assert!(st.scopes.contains(scope), "unknown scope {scope:?}");
        let group_name = group_name(&st, scope, runner_group_id)
            .unwrap_or_else(|| panic!("no runner group {runner_group_id} in {scope:?}"));
        assert!(
            find_set(&st, scope, runner_group_id, name).is_none(),
            "scale set {name} exists"
        );
        let labels = if labels.is_empty() {
            vec![(name.to_string(), "System".to_string())]
        } else {
            labels
                .iter()
                .map(|l| (l.to_string(), "System".to_string()))
                .collect()
        };
        new_set(
            &mut st,
            SimScaleSet {
                id: 0,
                scope: scope.clone(),
                name: name.into(),
                runner_group_id,
                runner_group_name: group_name,
                labels,
                disable_update: true,
                ephemeral: true,
            },
        )
    }

    /// Every scale set, by id.
    pub fn scale_sets(&self) -> Vec<SimScaleSet> {
        self.st()
            .scale
            .sets
            .values()
            .map(|s| s.info.clone())
            .collect()
    }

    /// A scale set by id.
    pub fn scale_set(&self, id: u64) -> Option<SimScaleSet> {
        self.st().scale.sets.get(&id).map(|s| s.info.clone())
    }

    /// Deletes scale set `id` as GitHub does with one that stayed offline: its runners,
    /// sessions, queue and jobs go, and the next call on it is 404
    /// `RunnerScaleSetNotFoundException`. False if there was none.
    pub fn delete_scale_set(&self, id: u64) -> bool {
        remove_set(&mut self.st(), id)
    }

    /// Queues a job for scale set `set_id` with these `requestLabels` and assigns it to the set
    /// (`JobAssigned`, or `JobAvailable` in the JobAvailable flow); returns its `jobId`.
    /// Panics if there is no such set.
    pub fn queue_job(&self, set_id: u64, labels: &[&str]) -> String {
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        queue(&mut self.st(), set_id, labels, None, None)
            .unwrap_or_else(|| panic!("no scale set {set_id}"))
            .0
    }

    /// The jobs of scale set `set_id`, oldest first (empty if there is no such set).
    pub fn scale_set_jobs(&self, set_id: u64) -> Vec<SimJob> {
        self.st()
            .scale
            .sets
            .get(&set_id)
            .map(|s| s.jobs.iter().map(Job::public).collect())
            .unwrap_or_default()
    }

    /// The `statistics` of scale set `set_id` now.
    pub fn scale_set_statistics(&self, set_id: u64) -> Option<Value> {
        let st = self.st();
        st.scale
            .sets
            .contains_key(&set_id)
            .then(|| statistics(&st, set_id))
    }

    /// The message sessions of scale set `set_id`, oldest first.
    pub fn sessions(&self, set_id: u64) -> Vec<SimSession> {
        self.st()
            .scale
            .sets
            .get(&set_id)
            .map(|s| {
                s.sessions
                    .iter()
                    .map(|s| SimSession {
                        session_id: s.id.clone(),
                        owner_name: s.owner.clone(),
                        state: s.state,
                        stale: s.stale,
                        refreshes: s.refreshes,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Opens a session for scale set `set_id` as a listener that then crashed would have left
    /// it: the next create gets 409 until it is deleted or the session TTL passes. Returns its
    /// id. Panics if there is no such set or a session is alive.
    pub fn open_stale_session(&self, set_id: u64, owner: &str) -> String {
        let mut st = self.st();
        let set = st
            .scale
            .sets
            .get_mut(&set_id)
            .unwrap_or_else(|| panic!("no scale set {set_id}"));
        assert!(set.alive_session().is_none(), "a session is alive");
        let id = uuid4();
        set.sessions.push(Session {
            id: id.clone(),
            owner: owner.into(),
            queue_token: random_token("", 48),
            token_revoked: false,
            state: SimSessionState::Alive,
            last_used: Instant::now(),
            stale: true,
            refreshes: 0,
        });
        id
    }

    /// Makes every queue token issued so far invalid (401), as if it had expired: a client
    /// refreshes its session (`PATCH`) for a new one.
    pub fn expire_queue_tokens(&self) {
        expire_queue_tokens(&mut self.st());
    }

    /// The message ids acknowledged on scale set `set_id`'s queue, in order.
    pub fn acks(&self, set_id: u64) -> Vec<u64> {
        self.st()
            .scale
            .sets
            .get(&set_id)
            .map(|s| s.acks.clone())
            .unwrap_or_default()
    }

    /// The last `X-ScaleSetMaxCapacity` a queue poll of scale set `set_id` sent.
    pub fn max_capacity_seen(&self, set_id: u64) -> Option<u32> {
        self.st().scale.max_capacity.get(&set_id).copied()
    }
}

// ---------------------------------------------------------------------------------------------
// Hooks the rest of the simulator calls

/// Whether `api_path` is served here (bootstrap, service or queue).
pub(super) fn is_scaleset_path(api_path: &str) -> bool {
    api_path == RUNNER_REGISTRATION_PATH
        || api_path.starts_with(ACTIONS_SERVICE_PREFIX)
        || api_path.starts_with(SCALESET_QUEUE_PREFIX)
}

/// The token of `Authorization: RemoteAuth <token>`.
pub(super) fn remote_auth(req: &Request) -> Option<&str> {
    req.header("authorization")?
        .strip_prefix("RemoteAuth ")
        .map(str::trim)
}

/// How a request to the bootstrap, the service or a queue authenticates, without failing.
pub(super) fn classify(st: &State, req: &Request, _api_path: &str) -> AuthKind {
    if req.header("authorization").is_none() {
        return AuthKind::None;
    }
    if let Some(t) = remote_auth(req) {
        return if registration_scope(st, t).is_some() {
            AuthKind::RemoteAuth
        } else {
            AuthKind::Invalid
        };
    }
    let Some(t) = bearer(req) else {
        return AuthKind::Invalid;
    };
    if admin_token_scope(st, t).is_some() {
        AuthKind::ActionsAdmin
    } else if st.scale.sets.values().any(|s| {
        s.sessions
            .iter()
            .any(|x| x.state == SimSessionState::Alive && !x.token_revoked && x.queue_token == t)
    }) {
        AuthKind::MessageQueue
    } else {
        AuthKind::Invalid
    }
}

/// Lets time pass: sessions nobody used expire, assigned jobs nobody started are reassigned.
pub(super) fn tick(st: &mut State) {
    let (ttl, after, flow) = (
        st.scale.session_ttl,
        st.scale.reassign_after,
        st.scale.job_available_flow,
    );
    let service = service_url(st);
    for set in st.scale.sets.values_mut() {
        for s in &mut set.sessions {
            if s.state == SimSessionState::Alive && s.last_used.elapsed() > ttl {
                s.state = SimSessionState::Expired;
            }
        }
        for i in 0..set.jobs.len() {
            if set.jobs[i].state == SimJobState::Assigned && set.jobs[i].since.elapsed() >= after {
                cancel_assignment(set, i, flow, &service);
            }
        }
    }
}

/// A scale-set runner went offline or silent: its running job fails, a job it was only given
/// goes back to the set.
pub(super) fn runner_lost(st: &mut State, runner_id: u64) {
    let Some(set_id) = st.runners.get(&runner_id).and_then(|r| r.scale_set_id) else {
        return;
    };
    let Some(set) = st.scale.sets.get_mut(&set_id) else {
        return;
    };
    for i in 0..set.jobs.len() {
        let j = &mut set.jobs[i];
        if j.runner.as_ref().map(|r| r.0) != Some(runner_id) {
            continue;
        }
        match j.state {
            SimJobState::Assigned => {
                j.runner = None;
                j.runner_assign_time = None;
            }
            SimJobState::Running => {
                j.state = SimJobState::Completed;
                j.result = Some("failed".into());
                j.finish_time = Some(epoch());
                let entry = completed_entry(j, "failed");
                set.push(entry);
            }
            _ => {}
        }
    }
}

/// A runner is about to be deleted (REST or service `DELETE`, never a busy one).
pub(super) fn runner_removed(st: &mut State, runner_id: u64) {
    runner_lost(st, runner_id);
}

/// A scale-set runner's report (`job-started`, `job-finished`, `offline`), before the
/// simulator applies it to the runner.
pub(super) fn runner_event(st: &mut State, req: &Request, runner_id: u64, event: &str) {
    let Some(r) = st.runners.get(&runner_id) else {
        return;
    };
    let (Some(set_id), name) = (r.scale_set_id, r.name.clone()) else {
        return;
    };
    if event == "offline" {
        return runner_lost(st, runner_id);
    }
    let Some(set) = st.scale.sets.get_mut(&set_id) else {
        return;
    };
    let mine =
        |j: &Job, state| j.state == state && j.runner.as_ref().map(|r| r.0) == Some(runner_id);
    let start = |set: &mut ScaleSet| {
        // Its own job, else the oldest assigned job nobody was given.
        let i = set
            .jobs
            .iter()
            .position(|j| mine(j, SimJobState::Assigned))
            .or_else(|| {
                set.jobs
                    .iter()
                    .position(|j| j.state == SimJobState::Assigned && j.runner.is_none())
            })?;
        let j = &mut set.jobs[i];
        j.state = SimJobState::Running;
        j.runner = Some((runner_id, name.clone()));
        j.runner_assign_time.get_or_insert(epoch());
        let mut entry = j.entry("JobStarted");
        entry["runnerId"] = json!(runner_id);
        entry["runnerName"] = json!(name);
        set.push(entry);
        Some(i)
    };
    match event {
        "job-started" => {
            start(set);
        }
        "job-finished" => {
            let running = set.jobs.iter().position(|j| mine(j, SimJobState::Running));
            // A runner that finishes without having reported the start did start.
            let Some(i) = running.or_else(|| start(set)) else {
                return;
            };
            let result = req
                .query_param("result")
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "succeeded".into());
            let j = &mut set.jobs[i];
            j.state = SimJobState::Completed;
            j.result = Some(result.clone());
            j.finish_time = Some(epoch());
            let entry = completed_entry(j, &result);
            set.push(entry);
        }
        _ => {}
    }
}

/// `GET|POST /_sim/runners/{id}/job`: a stand-in runner asks for work.
pub(super) fn runner_job(st: &mut State, req: &Request, id: &str) -> Reply {
    let Some(r) = id.parse::<u64>().ok().and_then(|id| st.runners.get(&id)) else {
        return Reply::not_found();
    };
    if runner_secret(req) != r.secret {
        return Reply::error(403, "wrong runner secret");
    }
    let (runner_id, name) = (r.id, r.name.clone());
    let ready = r.status == "online" && !r.busy;
    let Some(set) = r.scale_set_id.and_then(|s| st.scale.sets.get_mut(&s)) else {
        return Reply::empty(204);
    };
    if !ready {
        return Reply::empty(204);
    }
    let given = set.jobs.iter().position(|j| {
        j.state == SimJobState::Assigned && j.runner.as_ref().map(|r| r.0) == Some(runner_id)
    });
    let free = || {
        set.jobs
            .iter()
            .position(|j| j.state == SimJobState::Assigned && j.runner.is_none())
    };
    let Some(i) = given.or_else(free) else {
        return Reply::empty(204);
    };
    let j = &mut set.jobs[i];
    if j.runner.is_none() {
        j.runner = Some((runner_id, name));
        j.runner_assign_time = Some(epoch());
    }
    Reply::json(
        200,
        &json!({"jobId": j.id, "runnerRequestId": j.request_id}),
    )
}

/// `/_sim/scalesets…`, `/_sim/expire-queue-tokens`, `/_sim/expire-admin-tokens` (`segs`
/// without the leading `_sim`).
pub(super) fn sim_endpoint(st: &mut State, req: &Request, segs: &[&str]) -> Reply {
    let set_of = |id: &str| id.parse::<u64>().ok();
    match (req.method.as_str(), segs) {
        ("GET", ["scalesets"]) => {
            let all: Vec<Value> = st
                .scale
                .sets
                .values()
                .map(|s| {
                    let mut v = set_json(st, s);
                    v["scope"] = json!(s.info.scope.tag());
                    v["sessions"] = json!(s
                        .sessions
                        .iter()
                        .map(|x| json!({"sessionId": x.id, "ownerName": x.owner,
                            "state": format!("{:?}", x.state).to_lowercase()}))
                        .collect::<Vec<_>>());
                    v["acks"] = json!(s.acks);
                    v["maxCapacity"] = json!(st.scale.max_capacity.get(&s.info.id));
                    v
                })
                .collect();
            Reply::json(200, &Value::Array(all))
        }
        ("GET", ["scalesets", id, "jobs"]) => {
            match set_of(id).and_then(|i| st.scale.sets.get(&i)) {
                Some(s) => {
                    let jobs: Vec<Value> = s
                        .jobs
                        .iter()
                        .map(|j| {
                            json!({"jobId": j.id, "runnerRequestId": j.request_id,
                            "requestLabels": j.labels,
                            "state": format!("{:?}", j.state).to_lowercase(),
                            "runnerId": j.runner.as_ref().map(|r| r.0),
                            "runnerName": j.runner.as_ref().map(|r| r.1.clone()),
                            "result": j.result, "reassignments": j.reassignments})
                        })
                        .collect();
                    Reply::json(200, &Value::Array(jobs))
                }
                None => Reply::not_found(),
            }
        }
        ("POST", ["scalesets", id, "jobs"]) => {
            let body = if req.body.is_empty() {
                json!({})
            } else {
                match body_json(req) {
                    Some(v) => v,
                    None => return Reply::error(400, "Problems parsing JSON"),
                }
            };
            let labels: Vec<String> = body["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let repo = body["repository"].as_str().map(str::to_string);
            let display = body["displayName"].as_str().map(str::to_string);
            match set_of(id).and_then(|i| queue(st, i, labels, repo, display)) {
                Some((job_id, request_id)) => Reply::json(
                    201,
                    &json!({"jobId": job_id, "runnerRequestId": request_id}),
                ),
                None => Reply::not_found(),
            }
        }
        ("POST", ["scalesets", id, "delete"]) => match set_of(id) {
            Some(i) if remove_set(st, i) => Reply::empty(204),
            _ => Reply::not_found(),
        },
        ("POST", ["scalesets", id, "stale-session"]) => {
            let owner = body_json(req)
                .and_then(|b| b["ownerName"].as_str().map(str::to_string))
                .unwrap_or_else(|| "crashed-listener".into());
            let Some(set) = set_of(id).and_then(|i| st.scale.sets.get_mut(&i)) else {
                return Reply::not_found();
            };
            if set.alive_session().is_some() {
                return Reply::error(409, "a session is alive");
            }
            let sid = uuid4();
            set.sessions.push(Session {
                id: sid.clone(),
                owner,
                queue_token: random_token("", 48),
                token_revoked: false,
                state: SimSessionState::Alive,
                last_used: Instant::now(),
                stale: true,
                refreshes: 0,
            });
            Reply::json(201, &json!({"sessionId": sid}))
        }
        ("POST", ["expire-queue-tokens"]) => {
            expire_queue_tokens(st);
            Reply::empty(204)
        }
        ("POST", ["expire-admin-tokens"]) => {
            for t in st.scale.admin_tokens.values_mut() {
                t.revoked = true;
            }
            Reply::empty(204)
        }
        _ => Reply::not_found(),
    }
}

// ---------------------------------------------------------------------------------------------
// Bootstrap

/// `POST {api}/actions/runner-registration`.
pub(super) fn runner_registration(st: &mut State, req: &Request) -> (Reply, AuthKind) {
    if req.method != "POST" {
        return (Reply::not_found(), AuthKind::None);
    }
    if req.header("user-agent").is_none_or(str::is_empty) {
        return (
            Reply::error(
                403,
                "Request forbidden by administrative rules. Please make sure your request has \
                 a User-Agent header.",
            ),
            AuthKind::None,
        );
    }
    let Some(token) = remote_auth(req) else {
        let auth = if req.header("authorization").is_some() {
            AuthKind::Invalid
        } else {
            AuthKind::None
        };
        return (Reply::error(401, "Requires authentication"), auth);
    };
    let Some(token_scope) = registration_scope(st, token) else {
        return (Reply::error(401, "Bad credentials"), AuthKind::Invalid);
    };
    let Some(body) = body_json(req) else {
        return (
            Reply::error(400, "Problems parsing JSON"),
            AuthKind::RemoteAuth,
        );
    };
    let (Some(url), Some(event)) = (body["url"].as_str(), body["runner_event"].as_str()) else {
        return (
            Reply::error(
                422,
                "Invalid request.\n\nurl and runner_event are required.",
            ),
            AuthKind::RemoteAuth,
        );
    };
    if event != "register" {
        return (
            Reply::error(
                422,
                &format!("Invalid request.\n\nunknown runner_event {event:?}"),
            ),
            AuthKind::RemoteAuth,
        );
    }
    match scope_of_url(st, url) {
        Some(scope) if scope == token_scope && st.scopes.contains(&scope) => {
            let token = issue_admin_token(st, scope);
            let mut reply = Reply::json(200, &json!({"url": service_url(st), "token": token}));
            if st.scale.registration_bom {
                reply.body.splice(0..0, *b"\xef\xbb\xbf");
            }
            (reply, AuthKind::RemoteAuth)
        }
        _ => (Reply::not_found(), AuthKind::RemoteAuth),
    }
}

fn registration_scope(st: &State, token: &str) -> Option<SimScope> {
    if st.scale.dead_registration_tokens.contains(token) {
        return None;
    }
    st.registration_tokens
        .iter()
        .find(|(_, t)| t == token)
        .map(|(s, _)| s.clone())
}

/// The scope a config URL names: `{server}/o/r`, `{server}/org`, `{server}/enterprises/e`.
fn scope_of_url(st: &State, url: &str) -> Option<SimScope> {
    let rest = url
        .strip_prefix(st.server_url.as_str())?
        .strip_prefix('/')?;
    let parts: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["enterprises", e] if !e.is_empty() => Some(SimScope::Enterprise((*e).into())),
        [o, r] if !o.is_empty() && !r.is_empty() => Some(SimScope::Repo(format!("{o}/{r}"))),
        [o] if !o.is_empty() => Some(SimScope::Org((*o).into())),
        _ => None,
    }
}

fn issue_admin_token(st: &mut State, scope: SimScope) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = epoch_f64();
    let expires = now + st.scale.admin_token_ttl.as_secs_f64();
    let header = json!({"typ": "JWT", "alg": "RS256", "x5t": random_token("", 27)});
    let payload = json!({
        "nameid": format!("sim-runner-admin:{}", scope.tag()),
        "scp": "Actions.RunnerAdmin",
        "iss": st.server_url,
        "aud": format!("{}{ACTIONS_SERVICE_PREFIX}", st.server_url),
        "nbf": now as u64,
        "iat": now as u64,
        // Rounded down: a client that trusts `exp` never uses the token past its end.
        "exp": expires as u64,
        "jti": uuid4(),
    });
    let token = format!(
        "{}.{}.{}",
        b64.encode(header.to_string()),
        b64.encode(payload.to_string()),
        random_token("", 43)
    );
    st.scale.admin_tokens.insert(
        token.clone(),
        AdminToken {
            scope,
            expires,
            revoked: false,
        },
    );
    token
}

fn admin_token_scope(st: &State, token: &str) -> Option<SimScope> {
    st.scale
        .admin_tokens
        .get(token)
        .filter(|t| !t.revoked && epoch_f64() < t.expires)
        .map(|t| t.scope.clone())
}

// ---------------------------------------------------------------------------------------------
// The service

fn service_url(st: &State) -> String {
    format!("{}{ACTIONS_SERVICE_PREFIX}", st.server_url)
}

fn queue_url(st: &State, set_id: u64) -> String {
    format!("{}{SCALESET_QUEUE_PREFIX}{set_id}", st.server_url)
}

/// An Actions service error, in its shape.
fn ex(st: &State, status: u16, type_name: &str, message: &str) -> Reply {
    let qualified = if st.scale.qualified_type_names {
        format!("GitHub.Actions.Runtime.WebApi.{type_name}, GitHub.Actions.Runtime.WebApi")
    } else {
        type_name.to_string()
    };
    Reply::json(
        status,
        &json!({"$id": "1", "innerException": null, "message": message, "typeName": qualified,
                "typeKey": type_name, "errorCode": 0, "eventId": 3000}),
    )
}

fn set_not_found(st: &State, id: &str) -> Reply {
    ex(
        st,
        404,
        "RunnerScaleSetNotFoundException",
        &format!("No runner scale set found with identifier {id}."),
    )
}

fn session_not_found(st: &State, sid: &str) -> Reply {
    ex(
        st,
        404,
        "RunnerAdminException",
        &format!("runner referenced a session ID that doesn't exist: {sid}"),
    )
}

fn unauthorized(st: &State) -> Reply {
    ex(
        st,
        401,
        "VssUnauthorizedException",
        "VS30063: You are not authorized to access the Actions service.",
    )
    .header("WWW-Authenticate", "Bearer")
}

/// The request body as JSON, a leading UTF-8 BOM skipped.
fn body_json(req: &Request) -> Option<Value> {
    let b = req
        .body
        .strip_prefix(b"\xef\xbb\xbf".as_slice())
        .unwrap_or(&req.body);
    serde_json::from_slice(b).ok()
}

/// `v[key]`, the key matched case-insensitively.
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v)
}

/// A request under `{server}/_services/actions/`.
pub(super) fn service(st: &mut State, req: &Request, path: &str) -> (Reply, AuthKind) {
    let (reply, auth) = service_inner(st, req, path);
    (reply.header("ActivityId", uuid4()), auth)
}

fn service_inner(st: &mut State, req: &Request, path: &str) -> (Reply, AuthKind) {
    let rest = path.strip_prefix(ACTIONS_SERVICE_PREFIX).unwrap_or("");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let method = req.method.as_str();
    let token = bearer(req).unwrap_or("");

    // acquirejobs takes the session's queue token; everything else the admin token.
    if let ("POST", ["_apis", "runtime", "runnerscalesets", id, "acquirejobs"]) =
        (method, segs.as_slice())
    {
        let Some(set_id) = id
            .parse::<u64>()
            .ok()
            .filter(|i| st.scale.sets.contains_key(i))
        else {
            let auth = classify(st, req, path);
            return (set_not_found(st, id), auth);
        };
        let valid = st.scale.sets.get_mut(&set_id).and_then(|s| {
            s.alive_session()
                .filter(|x| !x.token_revoked && x.queue_token == token)
                .map(|x| x.last_used = Instant::now())
        });
        if valid.is_none() {
            let auth = classify(st, req, path);
            return (unauthorized(st), auth);
        }
        if let Some(r) = check_api_version(st, req) {
            return (r, AuthKind::MessageQueue);
        }
        return (acquire_jobs(st, req, set_id), AuthKind::MessageQueue);
    }

    let Some(scope) = admin_token_scope(st, token) else {
        let auth = classify(st, req, path);
        return (unauthorized(st), auth);
    };
    if let Some(r) = check_api_version(st, req) {
        return (r, AuthKind::ActionsAdmin);
    }
    let reply = match (method, segs.as_slice()) {
        ("GET", ["_apis", "runtime", "runnergroups"]) => runner_groups(st, req, &scope),
        ("GET", ["_apis", "runtime", "runnerscalesets"]) => {
            let group = req
                .query_param("runnerGroupId")
                .and_then(|g| g.parse::<u64>().ok());
            let name = req.query_param("name");
            let sets: Vec<Value> = st
                .scale
                .sets
                .values()
                .filter(|s| s.info.scope == scope)
                .filter(|s| group.is_none_or(|g| s.info.runner_group_id == g))
                .filter(|s| {
                    name.as_ref()
                        .is_none_or(|n| s.info.name.eq_ignore_ascii_case(n))
                })
                .map(|s| set_json(st, s))
                .collect();
            Reply::json(200, &json!({"count": sets.len(), "value": sets}))
        }
        ("POST", ["_apis", "runtime", "runnerscalesets"]) => create_set(st, req, &scope),
        (m, ["_apis", "runtime", "runnerscalesets", id, rest @ ..]) => {
            let Some(set_id) = id
                .parse::<u64>()
                .ok()
                .filter(|i| st.scale.sets.get(i).is_some_and(|s| s.info.scope == scope))
            else {
                return (set_not_found(st, id), AuthKind::ActionsAdmin);
            };
            set_route(st, req, m, rest, set_id)
        }
        ("GET", ["_apis", "distributedtask", "pools", "0", "agents"]) => {
            let name = req.query_param("agentName");
            let agents: Vec<Value> = st
                .runners
                .values()
                .filter(|r| r.scope == scope && name.as_ref().is_none_or(|n| &r.name == n))
                .map(agent_json)
                .collect();
            Reply::json(200, &json!({"count": agents.len(), "value": agents}))
        }
        (m @ ("GET" | "DELETE"), ["_apis", "distributedtask", "pools", "0", "agents", id]) => {
            let Some(r) = id
                .parse::<u64>()
                .ok()
                .and_then(|i| st.runners.get(&i))
                .filter(|r| r.scope == scope)
            else {
                let msg = format!("Agent {id} does not exist in pool 0.");
                return (
                    ex(st, 404, "AgentNotFoundException", &msg),
                    AuthKind::ActionsAdmin,
                );
            };
            match m {
                "GET" => Reply::json(200, &agent_json(r)),
                _ if r.busy => {
                    let msg = format!(
                        "Runner {} is currently running a job and cannot be deleted.",
                        r.name
                    );
                    ex(st, 400, "JobStillRunningException", &msg)
                }
                _ => {
                    let id = r.id;
                    runner_removed(st, id);
                    st.runners.remove(&id);
                    Reply::empty(204)
                }
            }
        }
        _ => ex(
            st,
            404,
            "VssResourceNotFoundException",
            &format!("The resource {method} {rest} does not exist."),
        ),
    };
    (reply, AuthKind::ActionsAdmin)
}

fn check_api_version(st: &State, req: &Request) -> Option<Reply> {
    match req.query_param("api-version") {
        Some(v) if v == ACTIONS_API_VERSION => None,
        Some(v) => Some(ex(
            st,
            400,
            "VssVersionNotSupportedException",
            &format!(
                "The requested REST API version of {v} is not supported by this simulator \
                 ({ACTIONS_API_VERSION} is)."
            ),
        )),
        None => Some(ex(
            st,
            400,
            "VssVersionNotSpecifiedException",
            "No api-version was supplied for the request.",
        )),
    }
}

/// (id, name, default) of the runner groups of `scope` (a repository has only `Default`).
fn groups_of(st: &State, scope: &SimScope) -> Vec<(u64, String, bool)> {
    if scope.has_groups() {
        st.groups
            .iter()
            .filter(|g| &g.scope == scope)
            .map(|g| (g.id, g.name.clone(), g.default))
            .collect()
    } else {
        vec![(1, "Default".into(), true)]
    }
}

fn group_name(st: &State, scope: &SimScope, id: u64) -> Option<String> {
    groups_of(st, scope)
        .into_iter()
        .find(|g| g.0 == id)
        .map(|g| g.1)
}

fn runner_groups(st: &State, req: &Request, scope: &SimScope) -> Reply {
    let name = req.query_param("groupName");
    let groups: Vec<Value> = groups_of(st, scope)
        .into_iter()
        .filter(|g| name.as_ref().is_none_or(|n| g.1.eq_ignore_ascii_case(n)))
        .map(|(id, name, default)| {
            let size = st
                .runners
                .values()
                .filter(|r| &r.scope == scope && r.runner_group_id == id)
                .count();
            json!({"id": id, "name": name, "isDefaultGroup": default, "size": size})
        })
        .collect();
    Reply::json(200, &json!({"count": groups.len(), "value": groups}))
}

fn find_set(st: &State, scope: &SimScope, group: u64, name: &str) -> Option<u64> {
    st.scale
        .sets
        .values()
        .find(|s| {
            &s.info.scope == scope
                && s.info.runner_group_id == group
                && s.info.name.eq_ignore_ascii_case(name)
        })
        .map(|s| s.info.id)
}

fn new_set(st: &mut State, mut info: SimScaleSet) -> u64 {
    let id = st.scale.next_set_id;
    st.scale.next_set_id += 1;
    info.id = id;
    st.scale.sets.insert(
        id,
        ScaleSet {
            info,
            created: epoch(),
            sessions: Vec::new(),
            messages: Vec::new(),
            next_message_id: 1,
            acks: Vec::new(),
            jobs: Vec::new(),
        },
    );
    id
}

fn remove_set(st: &mut State, id: u64) -> bool {
    if st.scale.sets.remove(&id).is_none() {
        return false;
    }
    st.runners.retain(|_, r| r.scale_set_id != Some(id));
    st.scale.max_capacity.remove(&id);
    true
}

fn set_json(st: &State, s: &ScaleSet) -> Value {
    let i = &s.info;
    let labels: Vec<Value> = i
        .labels
        .iter()
        .map(|(name, kind)| json!({"name": name, "type": kind}))
        .collect();
    json!({
        "id": i.id,
        "name": i.name,
        "runnerGroupId": i.runner_group_id,
        "runnerGroupName": i.runner_group_name,
        "labels": labels,
        "runnerSetting": {
            "ephemeral": i.ephemeral,
            "isElastic": false,
            "disableUpdate": i.disable_update,
        },
        "enabled": true,
        "createdOn": iso8601(s.created, false),
        "runnerJitConfigUrl": format!(
            "{}_apis/runtime/runnerscalesets/{}/generatejitconfig",
            service_url(st),
            i.id
        ),
        "statistics": statistics(st, i.id),
    })
}

fn statistics(st: &State, set_id: u64) -> Value {
    let jobs = st
        .scale
        .sets
        .get(&set_id)
        .map(|s| s.jobs.as_slice())
        .unwrap_or(&[]);
    let count = |state: SimJobState| jobs.iter().filter(|j| j.state == state).count();
    let assigned = count(SimJobState::Assigned) + count(SimJobState::Running);
    let runners: Vec<&SimRunner> = st
        .runners
        .values()
        .filter(|r| r.scale_set_id == Some(set_id))
        .collect();
    json!({
        "totalAvailableJobs": count(SimJobState::Available),
        "totalAcquiredJobs": assigned,
        "totalAssignedJobs": assigned,
        "totalRunningJobs": count(SimJobState::Running),
        "totalRegisteredRunners": runners.len(),
        "totalBusyRunners": runners.iter().filter(|r| r.busy).count(),
        "totalIdleRunners": runners.iter().filter(|r| r.status == "online" && !r.busy).count(),
    })
}

fn agent_json(r: &SimRunner) -> Value {
    let labels: Vec<Value> = r
        .labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            // Like every runner of the simulator, a scale set's carries the read-only labels
            // first.
            let system = i < READ_ONLY_LABELS.len();
            json!({"name": l, "type": if system { "system" } else { "user" }})
        })
        .collect();
    json!({
        "id": r.id,
        "name": r.name,
        "version": "2.330.0",
        "osDescription": "Linux",
        "enabled": true,
        "status": r.status,
        "busy": r.busy,
        "ephemeral": r.ephemeral,
        "runnerScaleSetId": r.scale_set_id.unwrap_or(0),
        "labels": labels,
    })
}

/// `{name, type}` labels of a request (type `System` by default); `None` if malformed.
fn parse_labels(v: Option<&Value>) -> Option<Vec<(String, String)>> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Some(Vec::new());
    };
    v.as_array()?
        .iter()
        .map(|l| {
            let name = get_ci(l, "name")?.as_str().filter(|n| !n.is_empty())?;
            let kind = get_ci(l, "type")
                .and_then(Value::as_str)
                .unwrap_or("System");
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

fn create_set(st: &mut State, req: &Request, scope: &SimScope) -> Reply {
    let Some(body) = body_json(req) else {
        return ex(
            st,
            400,
            "ArgumentException",
            "The request body is not JSON.",
        );
    };
    let Some(name) = get_ci(&body, "name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return ex(st, 400, "ArgumentException", "name is required.");
    };
    let group = get_ci(&body, "runnerGroupId")
        .and_then(Value::as_u64)
        .filter(|g| *g != 0)
        .unwrap_or(1);
    let Some(group_name) = group_name(st, scope, group) else {
        let msg = format!("No runner group found with identifier {group}.");
        return ex(st, 404, "RunnerGroupNotFoundException", &msg);
    };
    let Some(mut labels) = parse_labels(get_ci(&body, "labels")) else {
        return ex(
            st,
            400,
            "ArgumentException",
            "labels must be [{name, type}].",
        );
    };
    if labels.is_empty() {
        labels.push((name.to_string(), "System".into()));
    }
    if find_set(st, scope, group, name).is_some() {
        let msg =
            format!("A runner scale set named {name} already exists in runner group {group_name}.");
        return ex(st, 409, "RunnerScaleSetExistsException", &msg);
    }
    let setting = get_ci(&body, "runnerSetting");
    let flag = |k: &str| {
        setting
            .and_then(|s| get_ci(s, k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let info = SimScaleSet {
        id: 0,
        scope: scope.clone(),
        name: name.into(),
        runner_group_id: group,
        runner_group_name: group_name,
        labels,
        disable_update: flag("disableUpdate"),
        ephemeral: flag("ephemeral"),
    };
    let id = new_set(st, info);
    Reply::json(200, &set_json(st, &st.scale.sets[&id]))
}

/// The routes under `…/runnerscalesets/{id}` (the set exists in the caller's scope).
fn set_route(st: &mut State, req: &Request, method: &str, rest: &[&str], set_id: u64) -> Reply {
    match (method, rest) {
        ("GET", []) => Reply::json(200, &set_json(st, &st.scale.sets[&set_id])),
        ("PATCH", []) => update_set(st, req, set_id),
        ("DELETE", []) => {
            remove_set(st, set_id);
            Reply::empty(204)
        }
        ("POST", ["generatejitconfig"]) => scale_set_jit(st, req, set_id),
        ("POST", ["sessions"]) => {
            let owner = body_json(req)
                .and_then(|b| {
                    get_ci(&b, "ownerName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .filter(|o| !o.is_empty());
            let Some(owner) = owner else {
                return ex(st, 400, "ArgumentException", "ownerName is required.");
            };
            let set = st.scale.sets.get_mut(&set_id).unwrap();
            if let Some(alive) = set
                .sessions
                .iter()
                .find(|s| s.state == SimSessionState::Alive)
            {
                let msg = format!(
                    "The actions runner scale set {} already has an active session for owner {}.",
                    set.info.name, alive.owner
                );
                return ex(st, 409, "RunnerScaleSetSessionConflictException", &msg);
            }
            set.sessions.push(Session {
                id: uuid4(),
                owner,
                queue_token: random_token("", 48),
                token_revoked: false,
                state: SimSessionState::Alive,
                last_used: Instant::now(),
                stale: false,
                refreshes: 0,
            });
            let i = set.sessions.len() - 1;
            Reply::json(200, &session_json(st, set_id, i))
        }
        (m @ ("PATCH" | "DELETE"), ["sessions", sid]) => {
            let set = st.scale.sets.get_mut(&set_id).unwrap();
            let Some(i) = set
                .sessions
                .iter()
                .position(|s| s.id.eq_ignore_ascii_case(sid))
            else {
                return session_not_found(st, sid);
            };
            let s = &mut set.sessions[i];
            match (m, s.state) {
                ("PATCH", SimSessionState::Alive) => {
                    s.queue_token = random_token("", 48);
                    s.token_revoked = false;
                    s.refreshes += 1;
                    s.last_used = Instant::now();
                    Reply::json(200, &session_json(st, set_id, i))
                }
                ("DELETE", SimSessionState::Alive) => {
                    s.state = SimSessionState::Deleted;
                    Reply::empty(204)
                }
                ("DELETE", SimSessionState::Expired) => {
                    let msg = format!("The session {sid} has expired.");
                    ex(st, 400, "RunnerScaleSetSessionExpiredException", &msg)
                }
                _ => session_not_found(st, sid),
            }
        }
        _ => ex(
            st,
            404,
            "VssResourceNotFoundException",
            &format!(
                "The resource {method} …/runnerscalesets/{set_id}/{} does not exist.",
                rest.join("/")
            ),
        ),
    }
}

fn update_set(st: &mut State, req: &Request, set_id: u64) -> Reply {
    let Some(body) = body_json(req) else {
        return ex(
            st,
            400,
            "ArgumentException",
            "The request body is not JSON.",
        );
    };
    let mut info = st.scale.sets[&set_id].info.clone();
    if let Some(name) = get_ci(&body, "name").and_then(Value::as_str) {
        if !name.is_empty() {
            info.name = name.into();
        }
    }
    if let Some(group) = get_ci(&body, "runnerGroupId")
        .and_then(Value::as_u64)
        .filter(|g| *g != 0)
    {
        let Some(group_name) = group_name(st, &info.scope, group) else {
            let msg = format!("No runner group found with identifier {group}.");
            return ex(st, 404, "RunnerGroupNotFoundException", &msg);
        };
        info.runner_group_id = group;
        info.runner_group_name = group_name;
    }
    match parse_labels(get_ci(&body, "labels")) {
        None => {
            return ex(
                st,
                400,
                "ArgumentException",
                "labels must be [{name, type}].",
            )
        }
        Some(l) if !l.is_empty() => info.labels = l,
        Some(_) => {}
    }
    if let Some(setting) = get_ci(&body, "runnerSetting") {
        let flag = |k: &str| get_ci(setting, k).and_then(Value::as_bool).unwrap_or(false);
        info.disable_update = flag("disableUpdate");
        info.ephemeral = flag("ephemeral");
    }
    if find_set(st, &info.scope, info.runner_group_id, &info.name).is_some_and(|i| i != set_id) {
        let msg = format!(
            "A runner scale set named {} already exists in runner group {}.",
            info.name, info.runner_group_name
        );
        return ex(st, 409, "RunnerScaleSetExistsException", &msg);
    }
    st.scale.sets.get_mut(&set_id).unwrap().info = info;
    Reply::json(200, &set_json(st, &st.scale.sets[&set_id]))
}

fn scale_set_jit(st: &mut State, req: &Request, set_id: u64) -> Reply {
    let body = body_json(req).unwrap_or(Value::Null);
    let Some(name) = get_ci(&body, "name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
    else {
        return ex(st, 400, "ArgumentException", "name is required.");
    };
    let work = get_ci(&body, "workFolder")
        .and_then(Value::as_str)
        .filter(|w| !w.is_empty())
        .unwrap_or("_work");
    let info = st.scale.sets[&set_id].info.clone();
    if st
        .runners
        .values()
        .any(|r| r.scope == info.scope && r.name == name)
    {
        let msg = format!("Agent exists with name {name} in pool 0.");
        return ex(st, 409, "AgentExistsException", &msg);
    }
    let labels: Vec<String> = info.labels.iter().map(|l| l.0.clone()).collect();
    let id = st.new_runner(&info.scope, name, &labels, info.runner_group_id, work, true);
    let r = st.runners.get_mut(&id).unwrap();
    r.scale_set_id = Some(set_id);
    r.ephemeral = true;
    let runner = r.clone();
    let config = jit_config(st, &info.scope, &runner, &info.runner_group_name);
    Reply::json(
        200,
        &json!({
            "runner": {"id": id, "name": runner.name, "runnerScaleSetId": set_id},
            "encodedJITConfig": config,
        }),
    )
}

fn session_json(st: &State, set_id: u64, i: usize) -> Value {
    let set = &st.scale.sets[&set_id];
    let s = &set.sessions[i];
    json!({
        "sessionId": s.id,
        "ownerName": s.owner,
        "runnerScaleSet": set_json(st, set),
        "messageQueueUrl": queue_url(st, set_id),
        "messageQueueAccessToken": s.queue_token,
        "statistics": statistics(st, set_id),
    })
}

fn expire_queue_tokens(st: &mut State) {
    for set in st.scale.sets.values_mut() {
        for s in &mut set.sessions {
            s.token_revoked = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Jobs

/// Queues a job on `set_id`: (jobId, runnerRequestId), `None` if there is no such set.
fn queue(
    st: &mut State,
    set_id: u64,
    labels: Vec<String>,
    repo: Option<String>,
    display: Option<String>,
) -> Option<(String, u64)> {
    let service = service_url(st);
    let flow = st.scale.job_available_flow;
    let request_id = st.scale.next_request_id;
    let run_id = st.scale.next_run_id;
    let set = st.scale.sets.get_mut(&set_id)?;
    st.scale.next_request_id += 1;
    st.scale.next_run_id += 1;
    let (owner, default_repo) = match &set.info.scope {
        SimScope::Repo(r) => {
            let (o, n) = r.split_once('/').unwrap_or((r, r));
            (o.to_string(), n.to_string())
        }
        s => (s.account().to_string(), "app".to_string()),
    };
    let now = epoch();
    let mut job = Job {
        id: uuid4(),
        request_id,
        run_id,
        labels,
        repo: repo.unwrap_or(default_repo),
        owner,
        display: display.unwrap_or_else(|| format!("build ({})", set.jobs.len() + 1)),
        queue_time: now,
        assign_time: None,
        runner_assign_time: None,
        finish_time: None,
        state: SimJobState::Assigned,
        runner: None,
        result: None,
        reassignments: 0,
        since: Instant::now(),
    };
    let entry = offer(&mut job, flow, &service, set_id);
    let id = job.id.clone();
    set.jobs.push(job);
    set.push(entry);
    Some((id, request_id))
}

/// Assigns `job` to its set (or, in the JobAvailable flow, offers it): its new state and the
/// message that says so.
fn offer(job: &mut Job, available_flow: bool, service: &str, set_id: u64) -> Value {
    job.since = Instant::now();
    job.runner = None;
    job.runner_assign_time = None;
    if available_flow {
        job.state = SimJobState::Available;
        job.assign_time = None;
        let mut entry = job.entry("JobAvailable");
        entry["acquireJobUrl"] = json!(format!(
            "{service}_apis/runtime/runnerscalesets/{set_id}/acquirejobs"
        ));
        entry
    } else {
        job.state = SimJobState::Assigned;
        job.assign_time = Some(epoch());
        job.entry("JobAssigned")
    }
}

fn completed_entry(j: &Job, result: &str) -> Value {
    let mut entry = j.entry("JobCompleted");
    entry["result"] = json!(result);
    entry["runnerId"] = json!(j.runner.as_ref().map_or(0, |r| r.0));
    entry["runnerName"] = json!(j.runner.as_ref().map_or("", |r| r.1.as_str()));
    entry
}

/// Nobody started job `i` in time: cancelled (`JobCompleted`, `canceled`, no runner), then
/// assigned again, or cancelled for good after [`MAX_REASSIGNMENTS`].
fn cancel_assignment(set: &mut ScaleSet, i: usize, flow: bool, service: &str) {
    let set_id = set.info.id;
    let j = &mut set.jobs[i];
    j.runner = None;
    j.runner_assign_time = None;
    j.finish_time = Some(epoch());
    let cancelled = completed_entry(j, "canceled");
    j.finish_time = None;
    if j.reassignments >= MAX_REASSIGNMENTS {
        j.state = SimJobState::Canceled;
        j.result = Some("canceled".into());
        j.finish_time = Some(epoch());
        set.push(cancelled);
        return;
    }
    j.reassignments += 1;
    let again = offer(j, flow, service, set_id);
    set.push(cancelled);
    set.push(again);
}

/// `POST …/runnerscalesets/{id}/acquirejobs` (queue token checked).
fn acquire_jobs(st: &mut State, req: &Request, set_id: u64) -> Reply {
    let Some(ids) = body_json(req).and_then(|b| {
        b.as_array()?
            .iter()
            .map(Value::as_u64)
            .collect::<Option<Vec<u64>>>()
    }) else {
        return ex(
            st,
            400,
            "ArgumentException",
            "The body must be [runnerRequestId, …].",
        );
    };
    let set = st.scale.sets.get_mut(&set_id).unwrap();
    let mut acquired = Vec::new();
    for id in ids {
        let Some(i) = set
            .jobs
            .iter()
            .position(|j| j.request_id == id && j.state == SimJobState::Available)
        else {
            continue;
        };
        let entry = offer(&mut set.jobs[i], false, "", set_id);
        set.push(entry);
        acquired.push(id);
    }
    Reply::json(200, &json!({"count": acquired.len(), "value": acquired}))
}

// ---------------------------------------------------------------------------------------------
// The message queue

/// (set id, message id) of a queue path.
fn queue_path(path: &str) -> Option<(&str, Option<&str>)> {
    let rest = path.strip_prefix(SCALESET_QUEUE_PREFIX)?;
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [set] => Some((set, None)),
        [set, m] => Some((set, Some(m))),
        _ => None,
    }
}

/// Checks the set and the queue token; marks the session used.
fn queue_auth(st: &mut State, req: &Request, set: &str) -> Result<u64, (Reply, AuthKind)> {
    let Some(set_id) = set
        .parse::<u64>()
        .ok()
        .filter(|i| st.scale.sets.contains_key(i))
    else {
        let auth = classify(st, req, "");
        return Err((set_not_found(st, set), auth));
    };
    let token = bearer(req).unwrap_or("");
    let ok = st.scale.sets.get_mut(&set_id).and_then(|s| {
        s.alive_session()
            .filter(|x| !x.token_revoked && x.queue_token == token)
            .map(|x| x.last_used = Instant::now())
    });
    match ok {
        Some(()) => Ok(set_id),
        None => {
            let auth = classify(st, req, "");
            Err((unauthorized(st), auth))
        }
    }
}

/// One look at the queue: the answer, or `None` if there is no message yet.
fn try_get(st: &mut State, req: &Request, path: &str) -> Option<(Reply, AuthKind)> {
    let Some((set, None)) = queue_path(path) else {
        return Some((Reply::not_found(), AuthKind::None));
    };
    let set_id = match queue_auth(st, req, set) {
        Ok(id) => id,
        Err(e) => return Some(e),
    };
    if let Some(cap) = req
        .header("x-scalesetmaxcapacity")
        .and_then(|c| c.trim().parse::<u32>().ok())
    {
        st.scale.max_capacity.insert(set_id, cap);
    }
    let last = match req.query_param("lastMessageId") {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                let r = ex(
                    st,
                    400,
                    "ArgumentException",
                    "lastMessageId must be a number.",
                );
                return Some((r, AuthKind::MessageQueue));
            }
        },
    };
    let set = st.scale.sets.get_mut(&set_id).unwrap();
    let m = set.messages.iter_mut().find(|m| !m.acked && m.id > last)?;
    m.delivered = true;
    let (id, body) = (m.id, Value::Array(m.entries.clone()).to_string());
    let reply = Reply::json(
        200,
        &json!({"messageId": id, "messageType": "RunnerScaleSetJobMessages", "body": body,
                "statistics": statistics(st, set_id)}),
    );
    Some((reply, AuthKind::MessageQueue))
}

/// `GET {messageQueueUrl}`: looks until a message is there or the poll wait is over (202),
/// holding the state only while it looks.
pub(super) fn poll_queue(state: &Mutex<State>, req: &Request, path: &str) -> (Reply, AuthKind) {
    let start = Instant::now();
    let mut wait = None;
    loop {
        let mut st = state.lock().unwrap();
        st.reap();
        if let Some(answer) = try_get(&mut st, req, path) {
            return answer;
        }
        let wait = *wait.get_or_insert(st.scale.poll_wait);
        let left = wait.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (Reply::empty(202), AuthKind::MessageQueue);
        }
        drop(st);
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Other queue requests: `DELETE {messageQueueUrl}/{messageId}` (ack).
pub(super) fn queue_request(st: &mut State, req: &Request, path: &str) -> (Reply, AuthKind) {
    match (req.method.as_str(), queue_path(path)) {
        ("GET", Some((_, None))) => {
            try_get(st, req, path).unwrap_or_else(|| (Reply::empty(202), AuthKind::MessageQueue))
        }
        ("DELETE", Some((set, Some(m)))) => {
            let set_id = match queue_auth(st, req, set) {
                Ok(id) => id,
                Err(e) => return e,
            };
            let Ok(mid) = m.parse::<u64>() else {
                let r = ex(
                    st,
                    400,
                    "ArgumentException",
                    "The message id must be a number.",
                );
                return (r, AuthKind::MessageQueue);
            };
            let set = st.scale.sets.get_mut(&set_id).unwrap();
            if let Some(msg) = set.messages.iter_mut().find(|x| x.id == mid && !x.acked) {
                msg.acked = true;
                set.acks.push(mid);
            }
            (Reply::empty(204), AuthKind::MessageQueue)
        }
        _ => (Reply::not_found(), AuthKind::None),
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// A random version-4 UUID, lower case.
fn uuid4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    //! The scale-set side over raw HTTP, as a client written from scaleset.md would call it.

    use super::super::tests::{call, decode_jit, raw, Resp};
    use super::super::{AuthKind, Fault, RunnerState};
    use super::*;

    const UA: (&str, &str) = ("user-agent", "sim-scaleset-test");

    /// A repository `o/r` with PAT `pat`, and an admin token for it.
    fn setup() -> (GitHubSim, String) {
        let sim = GitHubSim::start();
        let repo = sim.add_repo("o/r");
        sim.add_pat("pat", &[&repo]);
        let admin = admin_token(&sim, "/repos/o/r", &format!("{}/o/r", sim.server_url()));
        (sim, admin)
    }

    fn registration_token(sim: &GitHubSim, scope_path: &str) -> String {
        let path = format!("{scope_path}/actions/runners/registration-token");
        let r = call(sim, "POST", &path, Some("pat"), None);
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    fn register(sim: &GitHubSim, auth: Option<&str>, url: &str) -> Resp {
        let body = json!({"url": url, "runner_event": "register"}).to_string();
        let mut headers = vec![UA, ("content-type", "application/json")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let path = format!("{}{RUNNER_REGISTRATION_PATH}", sim.base);
        raw(sim.addr(), "POST", &path, &headers, body.as_bytes()).unwrap()
    }

    fn admin_token(sim: &GitHubSim, scope_path: &str, url: &str) -> String {
        let token = registration_token(sim, scope_path);
        let r = register(sim, Some(&format!("RemoteAuth {token}")), url);
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["token"].as_str().unwrap().to_string()
    }

    /// A service call with `api-version`.
    fn svc(sim: &GitHubSim, method: &str, rel: &str, token: &str, body: Option<Value>) -> Resp {
        let sep = if rel.contains('?') { '&' } else { '?' };
        let path = format!("{ACTIONS_SERVICE_PREFIX}{rel}{sep}api-version={ACTIONS_API_VERSION}");
        svc_raw(sim, method, &path, token, body)
    }

    fn svc_raw(
        sim: &GitHubSim,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Resp {
        let auth = format!("Bearer {token}");
        let headers = [
            UA,
            ("content-type", "application/json"),
            ("authorization", &auth),
        ];
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        raw(sim.addr(), method, path, &headers, body.as_bytes()).unwrap()
    }

    fn type_name(r: &Resp) -> &str {
        r.body["typeName"].as_str().unwrap_or("")
    }

    fn create_set(sim: &GitHubSim, admin: &str, name: &str, group: u64) -> u64 {
        let body = json!({"name": name, "runnerGroupId": group,
            "labels": [{"name": name, "type": "System"}],
            "RunnerSetting": {"disableUpdate": true}});
        let r = svc(
            sim,
            "POST",
            "_apis/runtime/runnerscalesets",
            admin,
            Some(body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["id"].as_u64().unwrap()
    }

    fn open_session(sim: &GitHubSim, admin: &str, set: u64) -> Value {
        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions");
        let r = svc(
            sim,
            "POST",
            &path,
            admin,
            Some(json!({"ownerName": "host-1"})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.body
    }

    fn poll(sim: &GitHubSim, set: u64, token: &str, last: u64, cap: Option<&str>) -> Resp {
        let mut path = format!("{SCALESET_QUEUE_PREFIX}{set}");
        if last > 0 {
            path.push_str(&format!("?lastMessageId={last}"));
        }
        let auth = format!("Bearer {token}");
        let mut headers = vec![
            UA,
            ("accept", "application/json; api-version=6.0-preview"),
            ("authorization", &auth),
        ];
        if let Some(c) = cap {
            headers.push(("x-scalesetmaxcapacity", c));
        }
        raw(sim.addr(), "GET", &path, &headers, b"").unwrap()
    }

    fn ack(sim: &GitHubSim, set: u64, token: &str, message: u64) -> u16 {
        let path = format!("{SCALESET_QUEUE_PREFIX}{set}/{message}");
        svc_raw(sim, "DELETE", &path, token, None).status
    }

    /// The job messages in a queue message's `body`.
    fn entries(r: &Resp) -> Vec<Value> {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["messageType"], "RunnerScaleSetJobMessages");
        serde_json::from_str(r.body["body"].as_str().unwrap()).unwrap()
    }

    /// Every job message until the queue is empty, each message acknowledged.
    fn drain(sim: &GitHubSim, set: u64, token: &str) -> Vec<Value> {
        let mut all = Vec::new();
        loop {
            let r = poll(sim, set, token, 0, Some("4"));
            if r.status == 202 {
                return all;
            }
            all.extend(entries(&r));
            assert_eq!(
                ack(sim, set, token, r.body["messageId"].as_u64().unwrap()),
                204
            );
        }
    }

    fn kinds(entries: &[Value]) -> Vec<String> {
        entries
            .iter()
            .map(|e| {
                let k = e["messageType"].as_str().unwrap().to_string();
                match e["result"].as_str() {
                    Some(r) => format!("{k}:{r}"),
                    None => k,
                }
            })
            .collect()
    }

    /// (runner id, report URL, secret) of a scale-set JIT runner.
    fn jit(sim: &GitHubSim, admin: &str, set: u64, name: &str) -> (u64, String, String) {
        let path = format!("_apis/runtime/runnerscalesets/{set}/generatejitconfig");
        let r = svc(
            sim,
            "POST",
            &path,
            admin,
            Some(json!({"name": name, "workFolder": "_work"})),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["runner"]["name"], name);
        assert_eq!(r.body["runner"]["runnerScaleSetId"], set);
        let files = decode_jit(r.body["encodedJITConfig"].as_str().unwrap());
        let url = files[".runner"]["simRunnerUrl"]
            .as_str()
            .unwrap()
            .to_string();
        let secret = files[".credentials"]["data"]["simSecret"]
            .as_str()
            .unwrap()
            .to_string();
        (r.body["runner"]["id"].as_u64().unwrap(), url, secret)
    }

    /// A stand-in runner's report: (status, body).
    fn report(sim: &GitHubSim, id: u64, what: &str, secret: &str) -> (u16, Value) {
        let (method, path, body) = if what == "job" {
            ("GET", format!("/_sim/runners/{id}/job?secret={secret}"), "")
        } else {
            ("POST", format!("/_sim/runners/{id}/{what}"), secret)
        };
        let r = raw(sim.addr(), method, &path, &[], body.as_bytes()).unwrap();
        (r.status, r.body)
    }

    fn jwt_claims(token: &str) -> Value {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(&b64.decode(payload).unwrap()).unwrap()
    }

    #[test]
    fn bootstrap_exchanges_a_registration_token_for_an_admin_jwt() {
        let sim = GitHubSim::start_at("/api/v3");
        let repo = sim.add_repo("o/r");
        let org = sim.add_org("acme");
        let gpu = sim.add_runner_group(&org, "gpu");
        sim.add_pat("pat", &[&repo, &org]);
        let url = format!("{}/o/r", sim.server_url());
        let token = registration_token(&sim, "/repos/o/r");
        let auth = format!("RemoteAuth {token}");

        let r = register(&sim, Some(&auth), &url);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["url"], sim.actions_service_url());
        assert_eq!(
            sim.actions_service_url(),
            format!("{}/_services/actions/", sim.server_url())
        );
        let admin = r.body["token"].as_str().unwrap().to_string();
        assert_eq!(admin.split('.').count(), 3);
        let exp = jwt_claims(&admin)["exp"].as_u64().unwrap();
        let now = epoch();
        assert!((now + 3590..=now + 3600).contains(&exp), "{exp} vs {now}");
        let l = sim.requests().pop().unwrap();
        assert_eq!(
            (l.path.as_str(), l.auth, l.bearer.as_deref()),
            (
                RUNNER_REGISTRATION_PATH,
                AuthKind::RemoteAuth,
                Some(token.as_str())
            )
        );
        // The same registration token works again (until it expires).
        assert_eq!(register(&sim, Some(&auth), &url).status, 200);
        assert_eq!(sim.admin_tokens_issued(), 2);

        // Refusals.
        assert_eq!(register(&sim, None, &url).status, 401);
        assert_eq!(register(&sim, Some("RemoteAuth nope"), &url).status, 401);
        assert_eq!(
            register(&sim, Some(&format!("Bearer {token}")), &url).status,
            401
        );
        let other = format!("{}/o/nope", sim.server_url());
        assert_eq!(register(&sim, Some(&auth), &other).status, 404);
        // Another scope than the token's, another server.
        let acme = format!("{}/acme", sim.server_url());
        assert_eq!(register(&sim, Some(&auth), &acme).status, 404);
        assert_eq!(
            register(&sim, Some(&auth), "http://127.0.0.2:9/o/r").status,
            404
        );
        let bad_event = json!({"url": url, "runner_event": "remove"}).to_string();
        let path = format!("/api/v3{RUNNER_REGISTRATION_PATH}");
        let headers = [UA, ("authorization", auth.as_str())];
        let r = raw(sim.addr(), "POST", &path, &headers, bad_event.as_bytes()).unwrap();
        assert_eq!(r.status, 422);

        // The service takes the admin token and api-version.
        let groups = svc(
            &sim,
            "GET",
            "_apis/runtime/runnergroups/?groupName=default",
            &admin,
            None,
        );
        assert_eq!(groups.status, 200, "{}", groups.body);
        assert_eq!(
            groups.body,
            json!({"count": 1, "value": [{"id": 1, "name": "Default", "isDefaultGroup": true, "size": 0}]})
        );
        assert!(groups.headers.contains_key("activityid"));
        let no_version = svc_raw(
            &sim,
            "GET",
            "/_services/actions/_apis/runtime/runnergroups/",
            &admin,
            None,
        );
        assert_eq!(no_version.status, 400, "{}", no_version.body);
        let r = svc(&sim, "GET", "_apis/runtime/runnergroups/", "nope", None);
        assert_eq!((r.status, type_name(&r)), (401, "VssUnauthorizedException"));
        assert_eq!(sim.requests().pop().unwrap().auth, AuthKind::Invalid);

        // An organization's groups, by name.
        let acme_admin = admin_token(&sim, "/orgs/acme", &acme);
        let g = svc(
            &sim,
            "GET",
            "_apis/runtime/runnergroups/?groupName=GPU",
            &acme_admin,
            None,
        );
        assert_eq!(g.body["value"][0]["id"], gpu);
        let all = svc(
            &sim,
            "GET",
            "_apis/runtime/runnergroups/",
            &acme_admin,
            None,
        );
        assert_eq!(all.body["count"], 2);

        // Expiry: by TTL (its exp says so), by hook; registration tokens by hook.
        sim.set_admin_token_ttl(Duration::from_millis(1500));
        let short = admin_token(&sim, "/repos/o/r", &url);
        let exp = jwt_claims(&short)["exp"].as_u64().unwrap();
        // Rounded down: at most the TTL ahead.
        assert!(exp <= epoch() + 2, "{exp}");
        assert_eq!(
            svc(&sim, "GET", "_apis/runtime/runnergroups/", &short, None).status,
            200
        );
        std::thread::sleep(Duration::from_millis(1600));
        assert_eq!(
            svc(&sim, "GET", "_apis/runtime/runnergroups/", &short, None).status,
            401
        );
        sim.expire_admin_tokens();
        assert_eq!(
            svc(&sim, "GET", "_apis/runtime/runnergroups/", &admin, None).status,
            401
        );
        sim.expire_registration_tokens();
        assert_eq!(register(&sim, Some(&auth), &url).status, 401);

        // A byte order mark on request.
        sim.set_registration_bom(true);
        let fresh = registration_token(&sim, "/repos/o/r");
        let r = register(&sim, Some(&format!("RemoteAuth {fresh}")), &url);
        assert_eq!(r.status, 200);
        assert_eq!(&r.bytes[..3], b"\xef\xbb\xbf");
        let v: Value = serde_json::from_slice(&r.bytes[3..]).unwrap();
        assert_eq!(v["url"], sim.actions_service_url());
    }

    #[test]
    fn scale_sets_are_created_found_updated_and_deleted() {
        let (sim, admin) = setup();
        let sets = "_apis/runtime/runnerscalesets";
        let body = json!({"name": "krunner-x", "runnerGroupId": 1,
            "labels": [{"name": "krunner-x", "type": "System"}, {"name": "gpu"}],
            "RunnerSetting": {"disableUpdate": true, "ephemeral": true}});
        let r = svc(&sim, "POST", sets, &admin, Some(body.clone()));
        assert_eq!(r.status, 200, "{}", r.body);
        let id = r.body["id"].as_u64().unwrap();
        assert_eq!(r.body["name"], "krunner-x");
        assert_eq!(r.body["runnerGroupId"], 1);
        assert_eq!(r.body["runnerGroupName"], "Default");
        assert_eq!(
            r.body["labels"],
            json!([{"name": "krunner-x", "type": "System"}, {"name": "gpu", "type": "System"}])
        );
        assert_eq!(r.body["runnerSetting"]["disableUpdate"], true);
        assert_eq!(r.body["runnerSetting"]["ephemeral"], true);
        assert_eq!(r.body["statistics"]["totalAssignedJobs"], 0);
        assert_eq!(
            sim.scale_set(id).unwrap().labels,
            [
                ("krunner-x".into(), "System".into()),
                ("gpu".into(), "System".into())
            ]
        );

        // Found by group and name (any case), by id; 0 when absent.
        let q = format!("{sets}?runnerGroupId=1&name=KRUNNER-X");
        let found = svc(&sim, "GET", &q, &admin, None);
        assert_eq!(
            (
                found.body["count"].as_u64(),
                found.body["value"][0]["id"].as_u64()
            ),
            (Some(1), Some(id))
        );
        let none = svc(
            &sim,
            "GET",
            &format!("{sets}?runnerGroupId=1&name=other"),
            &admin,
            None,
        );
        assert_eq!(none.body, json!({"count": 0, "value": []}));
        assert_eq!(
            svc(&sim, "GET", &format!("{sets}/{id}"), &admin, None).body["name"],
            "krunner-x"
        );

        // Unique per group.
        let dup = svc(&sim, "POST", sets, &admin, Some(body));
        assert_eq!(
            (dup.status, type_name(&dup)),
            (409, "RunnerScaleSetExistsException")
        );
        // A repository has only group 1; no labels means the name.
        let r = svc(
            &sim,
            "POST",
            sets,
            &admin,
            Some(json!({"name": "y", "runnerGroupId": 2})),
        );
        assert_eq!(r.status, 404, "{}", r.body);
        let r = svc(&sim, "POST", sets, &admin, Some(json!({"name": "y"})));
        assert_eq!(r.body["labels"], json!([{"name": "y", "type": "System"}]));
        assert_eq!(r.body["runnerGroupId"], 1);
        let y = r.body["id"].as_u64().unwrap();
        assert_eq!(
            svc(&sim, "POST", sets, &admin, Some(json!({"labels": []}))).status,
            400
        );

        // Renamed (not onto a taken name).
        let r = svc(
            &sim,
            "PATCH",
            &format!("{sets}/{y}"),
            &admin,
            Some(json!({"name": "z"})),
        );
        assert_eq!((r.status, r.body["name"].as_str()), (200, Some("z")));
        let r = svc(
            &sim,
            "PATCH",
            &format!("{sets}/{y}"),
            &admin,
            Some(json!({"name": "krunner-x"})),
        );
        assert_eq!(r.status, 409);

        // Deleted: 404 RunnerScaleSetNotFoundException from then on.
        assert_eq!(
            svc(&sim, "DELETE", &format!("{sets}/{id}"), &admin, None).status,
            204
        );
        let gone = svc(&sim, "GET", &format!("{sets}/{id}"), &admin, None);
        assert_eq!(
            (gone.status, type_name(&gone)),
            (404, "RunnerScaleSetNotFoundException")
        );
        assert_eq!(gone.body["typeKey"], "RunnerScaleSetNotFoundException");
        assert_eq!(
            sim.scale_sets().iter().map(|s| s.id).collect::<Vec<_>>(),
            [y]
        );
        // Sets of another scope do not exist for this token.
        let org = sim.add_org("acme");
        let other = sim.add_scale_set(&org, "theirs", 1, &[]);
        let r = svc(&sim, "GET", &format!("{sets}/{other}"), &admin, None);
        assert_eq!(r.status, 404);
        // Assembly-qualified type names, on request.
        sim.set_qualified_type_names(true);
        let r = svc(&sim, "GET", &format!("{sets}/{id}"), &admin, None);
        assert_eq!(
            type_name(&r),
            "GitHub.Actions.Runtime.WebApi.RunnerScaleSetNotFoundException, GitHub.Actions.Runtime.WebApi"
        );
    }

    #[test]
    fn one_session_at_a_time() {
        let (sim, admin) = setup();
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let sid = s["sessionId"].as_str().unwrap().to_string();
        assert_eq!(sid.len(), 36);
        assert_eq!(sid.matches('-').count(), 4);
        assert_eq!(s["ownerName"], "host-1");
        assert_eq!(s["runnerScaleSet"]["id"], set);
        assert_eq!(s["messageQueueUrl"], sim.scale_set_queue_url(set));
        assert_eq!(
            sim.scale_set_queue_url(set),
            format!("{}/_sim/scaleset-queue/{set}", sim.server_url())
        );
        assert!(s["messageQueueAccessToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty()));
        assert_eq!(s["statistics"]["totalRegisteredRunners"], 0);

        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions");
        let again = svc(
            &sim,
            "POST",
            &path,
            &admin,
            Some(json!({"ownerName": "host-2"})),
        );
        assert_eq!(
            (again.status, type_name(&again)),
            (409, "RunnerScaleSetSessionConflictException")
        );
        assert!(again.body["message"]
            .as_str()
            .unwrap()
            .contains("already has an active session"));
        let one = format!("{path}/{sid}");
        assert_eq!(svc(&sim, "DELETE", &one, &admin, None).status, 204);
        assert_eq!(svc(&sim, "DELETE", &one, &admin, None).status, 404);
        assert_eq!(svc(&sim, "PATCH", &one, &admin, None).status, 404);
        let s2 = open_session(&sim, &admin, set);
        let sid2 = s2["sessionId"].as_str().unwrap();
        assert_eq!(
            svc(&sim, "DELETE", &format!("{path}/{sid2}"), &admin, None).status,
            204
        );

        // A crashed listener's session blocks until its TTL passes (or someone deletes it).
        let stale = sim.open_stale_session(set, "crashed");
        let r = svc(
            &sim,
            "POST",
            &path,
            &admin,
            Some(json!({"ownerName": "host-1"})),
        );
        assert_eq!(r.status, 409);
        assert!(r.body["message"].as_str().unwrap().contains("crashed"));
        sim.set_session_ttl(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(400));
        open_session(&sim, &admin, set);
        let states: Vec<(SimSessionState, bool)> = sim
            .sessions(set)
            .iter()
            .map(|s| (s.state, s.stale))
            .collect();
        use SimSessionState::*;
        assert_eq!(
            states,
            [
                (Deleted, false),
                (Deleted, false),
                (Expired, true),
                (Alive, false)
            ]
        );
        // Deleting the expired one: 400 SessionExpired (ARC #4285).
        let r = svc(&sim, "DELETE", &format!("{path}/{stale}"), &admin, None);
        assert_eq!(
            (r.status, type_name(&r)),
            (400, "RunnerScaleSetSessionExpiredException")
        );
        // No owner: refused.
        sim.set_session_ttl(DEFAULT_SESSION_TTL);
        let r = svc(&sim, "POST", &path, &admin, Some(json!({})));
        assert_eq!(r.status, 400);
    }

    #[test]
    fn an_empty_poll_waits_then_answers_202() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(800));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap();
        assert_eq!(sim.max_capacity_seen(set), None);
        let t = Instant::now();
        let r = poll(&sim, set, token, 0, Some("3"));
        assert_eq!((r.status, r.bytes.len()), (202, 0));
        assert!(
            t.elapsed() >= Duration::from_millis(750),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(sim.max_capacity_seen(set), Some(3));
        let l = sim.requests().pop().unwrap();
        assert_eq!((l.auth, l.status), (AuthKind::MessageQueue, 202));

        // A job queued while a poll waits ends the wait.
        sim.set_poll_wait(Duration::from_secs(5));
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(200));
                sim.queue_job(set, &["s"]);
            });
            let t = Instant::now();
            let r = poll(&sim, set, token, 0, Some("0"));
            assert_eq!(r.status, 200);
            assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
        });
        assert_eq!(sim.max_capacity_seen(set), Some(0));
    }

    #[test]
    fn a_queued_job_is_a_job_assigned_message_until_acknowledged() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(300));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap();
        let job = sim.queue_job(set, &["s", "big"]);

        let r = poll(&sim, set, token, 0, Some("2"));
        let e = entries(&r);
        assert_eq!(r.body["messageId"], 1);
        assert_eq!(r.body["statistics"]["totalAssignedJobs"], 1);
        assert_eq!(r.body["statistics"]["totalAvailableJobs"], 0);
        assert_eq!(e.len(), 1);
        let a = &e[0];
        assert_eq!(a["messageType"], "JobAssigned");
        assert_eq!(a["jobId"], job.as_str());
        assert!(a["runnerRequestId"].as_u64().is_some());
        assert_eq!(a["requestLabels"], json!(["s", "big"]));
        assert_eq!(
            (a["repositoryName"].as_str(), a["ownerName"].as_str()),
            (Some("r"), Some("o"))
        );
        for k in [
            "jobDisplayName",
            "jobWorkflowRef",
            "queueTime",
            "scaleSetAssignTime",
            "runnerAssignTime",
            "finishTime",
            "eventName",
        ] {
            assert!(a[k].is_string(), "{k}: {a}");
        }
        assert_eq!(a["runnerAssignTime"], ZERO_TIME);
        assert_eq!(sim.scale_set_jobs(set)[0].state, SimJobState::Assigned);

        // Unacknowledged: it comes again from 0, not after its own id.
        assert_eq!(poll(&sim, set, token, 0, None).body["messageId"], 1);
        assert_eq!(poll(&sim, set, token, 1, None).status, 202);
        assert_eq!(ack(&sim, set, token, 1), 204);
        assert_eq!(ack(&sim, set, token, 1), 204);
        assert_eq!(sim.acks(set), [1]);
        assert_eq!(poll(&sim, set, token, 0, None).status, 202);
        // Events before a delivery are batched into one message.
        sim.queue_job(set, &["s"]);
        sim.queue_job(set, &["s"]);
        let r = poll(&sim, set, token, 1, None);
        assert_eq!(
            (r.body["messageId"].as_u64(), entries(&r).len()),
            (Some(2), 2)
        );
        assert_eq!(r.body["statistics"]["totalAssignedJobs"], 3);
        // The session's statistics are the demand too.
        let s2 = sim.scale_set_statistics(set).unwrap();
        assert_eq!(s2["totalAssignedJobs"], 3);
    }

    #[test]
    fn a_scale_set_runner_takes_its_job_through_the_job_endpoint() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(200));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap().to_string();
        let (id, url, secret) = jit(&sim, &admin, set, "vm-1");
        assert_eq!(url, format!("{}/_sim/runners/{id}", sim.server_url()));
        let r = sim.runner(id).unwrap();
        assert_eq!(
            (r.scale_set_id, r.ephemeral, r.jit),
            (Some(set), true, true)
        );
        assert!(r.has_label("s"));
        // The name is taken (in the scope).
        let path = format!("_apis/runtime/runnerscalesets/{set}/generatejitconfig");
        let dup = svc(
            &sim,
            "POST",
            &path,
            &admin,
            Some(json!({"name": "vm-1", "workFolder": "_work"})),
        );
        assert_eq!((dup.status, type_name(&dup)), (409, "AgentExistsException"));
        // Listed with the set; REST runners too, with 0.
        sim.add_runner(
            &sim.runners()[0].scope.clone(),
            "plain",
            &[],
            RunnerState::Offline,
        );
        let agents = svc(
            &sim,
            "GET",
            "_apis/distributedtask/pools/0/agents",
            &admin,
            None,
        );
        assert_eq!(agents.body["count"], 2);
        let a = &agents.body["value"][0];
        assert_eq!(
            (
                a["name"].as_str(),
                a["status"].as_str(),
                a["busy"].as_bool()
            ),
            (Some("vm-1"), Some("offline"), Some(false))
        );
        assert_eq!(a["runnerScaleSetId"], set);
        assert_eq!(agents.body["value"][1]["runnerScaleSetId"], 0);
        let by_name = svc(
            &sim,
            "GET",
            "_apis/distributedtask/pools/0/agents?agentName=vm-1",
            &admin,
            None,
        );
        assert_eq!(
            (
                by_name.body["count"].as_u64(),
                by_name.body["value"][0]["id"].as_u64()
            ),
            (Some(1), Some(id))
        );
        assert_eq!(
            svc(
                &sim,
                "GET",
                &format!("_apis/distributedtask/pools/0/agents/{id}"),
                &admin,
                None
            )
            .body["name"],
            "vm-1"
        );

        // Not online yet, or no job: 204.
        assert_eq!(report(&sim, id, "job", &secret).0, 204);
        assert_eq!(report(&sim, id, "job", "wrong").0, 403);
        assert_eq!(report(&sim, id, "online", &secret).0, 200);
        assert_eq!(report(&sim, id, "job", &secret).0, 204);
        let job = sim.queue_job(set, &["s"]);
        let (status, body) = report(&sim, id, "job", &secret);
        assert_eq!((status, body["jobId"].as_str()), (200, Some(job.as_str())));
        assert_eq!(report(&sim, id, "job", &secret).1["jobId"], job.as_str());
        let stats = sim.scale_set_statistics(set).unwrap();
        assert_eq!(
            (
                stats["totalRegisteredRunners"].as_u64(),
                stats["totalIdleRunners"].as_u64(),
                stats["totalAssignedJobs"].as_u64()
            ),
            (Some(1), Some(1), Some(1))
        );
        let j = &sim.scale_set_jobs(set)[0];
        assert_eq!((j.state, j.runner_id), (SimJobState::Assigned, Some(id)));

        assert_eq!(report(&sim, id, "job-started", &secret).0, 200);
        assert_eq!(sim.runner(id).unwrap().state(), RunnerState::Busy);
        let del = format!("_apis/distributedtask/pools/0/agents/{id}");
        let busy = svc(&sim, "DELETE", &del, &admin, None);
        assert_eq!(
            (busy.status, type_name(&busy)),
            (400, "JobStillRunningException")
        );
        let stats = sim.scale_set_statistics(set).unwrap();
        assert_eq!(
            (
                stats["totalRunningJobs"].as_u64(),
                stats["totalBusyRunners"].as_u64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(report(&sim, id, "job-finished", &secret).0, 200);
        assert!(sim.runner(id).is_none(), "deleted after its job");
        let gone = svc(&sim, "GET", &del, &admin, None);
        assert_eq!(
            (gone.status, type_name(&gone)),
            (404, "AgentNotFoundException")
        );
        assert_eq!(svc(&sim, "DELETE", &del, &admin, None).status, 404);

        let e = drain(&sim, set, &token);
        assert_eq!(
            kinds(&e),
            ["JobAssigned", "JobStarted", "JobCompleted:succeeded"]
        );
        assert!(e.iter().all(|x| x["jobId"] == job.as_str()));
        assert_eq!(
            (e[1]["runnerId"].as_u64(), e[1]["runnerName"].as_str()),
            (Some(id), Some("vm-1"))
        );
        assert_eq!(
            (e[2]["runnerId"].as_u64(), e[2]["runnerName"].as_str()),
            (Some(id), Some("vm-1"))
        );
        assert_ne!(e[2]["finishTime"], ZERO_TIME);
        let j = &sim.scale_set_jobs(set)[0];
        assert_eq!(
            (j.state, j.runner_name.as_deref(), j.result.as_deref()),
            (SimJobState::Completed, Some("vm-1"), Some("succeeded"))
        );
        let stats = sim.scale_set_statistics(set).unwrap();
        assert_eq!(
            (
                stats["totalAssignedJobs"].as_u64(),
                stats["totalRegisteredRunners"].as_u64()
            ),
            (Some(0), Some(0))
        );
        // An idle runner can be removed.
        let (id2, _, _) = jit(&sim, &admin, set, "vm-2");
        assert_eq!(
            svc(
                &sim,
                "DELETE",
                &format!("_apis/distributedtask/pools/0/agents/{id2}"),
                &admin,
                None
            )
            .status,
            204
        );
        assert!(sim.runner(id2).is_none());
    }

    #[test]
    fn a_runner_that_dies_fails_its_job_and_gives_back_an_unstarted_one() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(200));
        sim.set_dead_after(Duration::from_secs(1));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap().to_string();
        let (a, _, sa) = jit(&sim, &admin, set, "a");
        let (b, _, sb) = jit(&sim, &admin, set, "b");
        for (id, secret) in [(a, &sa), (b, &sb)] {
            assert_eq!(report(&sim, id, "online", secret).0, 200);
        }
        let j1 = sim.queue_job(set, &["s"]);
        let j2 = sim.queue_job(set, &["s"]);
        // First come, first served, the oldest job first.
        assert_eq!(report(&sim, b, "job", &sb).1["jobId"], j1.as_str());
        assert_eq!(report(&sim, a, "job", &sa).1["jobId"], j2.as_str());
        assert_eq!(report(&sim, b, "job-started", &sb).0, 200);
        // a goes offline before starting: its job goes back; b falls silent while busy.
        assert_eq!(report(&sim, a, "offline", &sa).0, 200);
        let jobs = sim.scale_set_jobs(set);
        assert_eq!(
            (jobs[1].state, jobs[1].runner_id),
            (SimJobState::Assigned, None)
        );
        std::thread::sleep(Duration::from_millis(1200));
        let jobs = sim.scale_set_jobs(set);
        assert_eq!(
            (jobs[0].state, jobs[0].result.as_deref()),
            (SimJobState::Completed, Some("failed"))
        );
        assert_eq!(sim.runner(b).unwrap().state(), RunnerState::Offline);
        assert_eq!(
            kinds(&drain(&sim, set, &token)),
            [
                "JobAssigned",
                "JobAssigned",
                "JobStarted",
                "JobCompleted:failed"
            ]
        );
    }

    #[test]
    fn a_job_nobody_takes_is_cancelled_and_reassigned_three_times() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(100));
        sim.set_reassign_after(Duration::from_millis(500));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap().to_string();
        let job = sim.queue_job(set, &["s"]);
        std::thread::sleep(Duration::from_millis(650));
        let j = &sim.scale_set_jobs(set)[0];
        assert_eq!((j.state, j.reassignments), (SimJobState::Assigned, 1));
        let e = drain(&sim, set, &token);
        assert_eq!(
            kinds(&e),
            ["JobAssigned", "JobCompleted:canceled", "JobAssigned"]
        );
        assert_eq!(
            (e[1]["runnerName"].as_str(), e[1]["runnerId"].as_u64()),
            (Some(""), Some(0))
        );
        assert!(e.iter().all(|x| x["jobId"] == job.as_str()));
        // One reassignment a period at most, however late the simulator looks.
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(650));
            sim.scale_set_jobs(set);
        }
        let j = &sim.scale_set_jobs(set)[0];
        assert_eq!(
            (j.state, j.reassignments, j.result.as_deref()),
            (SimJobState::Canceled, MAX_REASSIGNMENTS, Some("canceled"))
        );
        assert_eq!(
            kinds(&drain(&sim, set, &token)),
            [
                "JobCompleted:canceled",
                "JobAssigned",
                "JobCompleted:canceled",
                "JobAssigned",
                "JobCompleted:canceled"
            ]
        );
        assert_eq!(
            sim.scale_set_statistics(set).unwrap()["totalAssignedJobs"],
            0
        );
    }

    #[test]
    fn an_expired_queue_token_is_401_until_the_session_is_refreshed() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(100));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let sid = s["sessionId"].as_str().unwrap();
        let old = s["messageQueueAccessToken"].as_str().unwrap();
        assert_eq!(poll(&sim, set, old, 0, None).status, 202);
        sim.expire_queue_tokens();
        let r = poll(&sim, set, old, 0, None);
        assert_eq!(r.status, 401);
        assert_eq!(ack(&sim, set, old, 1), 401);
        assert_eq!(poll(&sim, set, "garbage", 0, None).status, 401);
        // The admin token is no queue token.
        assert_eq!(poll(&sim, set, &admin, 0, None).status, 401);
        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions/{sid}");
        let r = svc(&sim, "PATCH", &path, &admin, None);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body["sessionId"], sid);
        let new = r.body["messageQueueAccessToken"].as_str().unwrap();
        assert_ne!(new, old);
        assert_eq!(poll(&sim, set, new, 0, None).status, 202);
        assert_eq!(poll(&sim, set, old, 0, None).status, 401);
        assert_eq!(sim.sessions(set)[0].refreshes, 1);
        // A refresh also replaces a token that still worked.
        let r = svc(&sim, "PATCH", &path, &admin, None);
        let newer = r.body["messageQueueAccessToken"].as_str().unwrap();
        assert_eq!(poll(&sim, set, new, 0, None).status, 401);
        assert_eq!(poll(&sim, set, newer, 0, None).status, 202);
    }

    #[test]
    fn a_deleted_scale_set_is_404_everywhere() {
        let (sim, admin) = setup();
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap();
        let (id, _, _) = jit(&sim, &admin, set, "vm-1");
        sim.queue_job(set, &["s"]);
        assert!(sim.delete_scale_set(set));
        assert!(!sim.delete_scale_set(set));
        assert!(sim.runner(id).is_none(), "its runners go with it");
        assert!(sim.scale_set_jobs(set).is_empty());
        let base = format!("_apis/runtime/runnerscalesets/{set}");
        for (method, path, body) in [
            ("GET", base.clone(), None),
            (
                "POST",
                format!("{base}/sessions"),
                Some(json!({"ownerName": "h"})),
            ),
            (
                "POST",
                format!("{base}/generatejitconfig"),
                Some(json!({"name": "x"})),
            ),
            ("DELETE", base.clone(), None),
        ] {
            let r = svc(&sim, method, &path, &admin, body);
            assert_eq!(
                (r.status, type_name(&r)),
                (404, "RunnerScaleSetNotFoundException"),
                "{method} {path}"
            );
        }
        let r = poll(&sim, set, token, 0, None);
        assert_eq!(
            (r.status, type_name(&r)),
            (404, "RunnerScaleSetNotFoundException")
        );
        let r = svc(
            &sim,
            "POST",
            &format!("{base}/acquirejobs"),
            token,
            Some(json!([1])),
        );
        assert_eq!(r.status, 404);
        // Re-created: a new id.
        let again = create_set(&sim, &admin, "s", 1);
        assert_ne!(again, set);
    }

    #[test]
    fn the_job_available_flow_assigns_once_acquired() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(100));
        sim.set_job_available_flow(true);
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap().to_string();
        sim.queue_job(set, &["s"]);
        let r = poll(&sim, set, &token, 0, None);
        let e = entries(&r);
        assert_eq!(kinds(&e), ["JobAvailable"]);
        assert_eq!(
            e[0]["acquireJobUrl"],
            format!(
                "{}_apis/runtime/runnerscalesets/{set}/acquirejobs",
                sim.actions_service_url()
            )
        );
        assert_eq!(r.body["statistics"]["totalAvailableJobs"], 1);
        assert_eq!(r.body["statistics"]["totalAssignedJobs"], 0);
        ack(&sim, set, &token, r.body["messageId"].as_u64().unwrap());
        let rid = e[0]["runnerRequestId"].as_u64().unwrap();
        let path = format!("_apis/runtime/runnerscalesets/{set}/acquirejobs");
        // With the queue token, not the admin token.
        assert_eq!(
            svc(&sim, "POST", &path, &admin, Some(json!([rid]))).status,
            401
        );
        let r = svc(&sim, "POST", &path, &token, Some(json!([rid, 999])));
        assert_eq!(r.body, json!({"count": 1, "value": [rid]}), "{}", r.body);
        assert_eq!(sim.requests().pop().unwrap().auth, AuthKind::MessageQueue);
        let r = poll(&sim, set, &token, 0, None);
        assert_eq!(kinds(&entries(&r)), ["JobAssigned"]);
        assert_eq!(r.body["statistics"]["totalAssignedJobs"], 1);
        // Acquired once only.
        let r = svc(&sim, "POST", &path, &token, Some(json!([rid])));
        assert_eq!(r.body["count"], 0);
    }

    #[test]
    fn faults_reach_the_service_and_the_queue() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(100));
        let sets = format!("{ACTIONS_SERVICE_PREFIX}_apis/runtime/runnerscalesets");
        sim.fail_next("POST", &sets, 1, Fault::Status(503));
        let body = json!({"name": "s"});
        let r = svc(
            &sim,
            "POST",
            "_apis/runtime/runnerscalesets",
            &admin,
            Some(body.clone()),
        );
        assert_eq!(r.status, 503);
        assert!(sim.scale_sets().is_empty());
        let r = svc(
            &sim,
            "POST",
            "_apis/runtime/runnerscalesets",
            &admin,
            Some(body),
        );
        assert_eq!(r.status, 200);
        let set = r.body["id"].as_u64().unwrap();
        let l = sim.requests();
        assert_eq!(
            l.iter()
                .rev()
                .take(2)
                .map(|l| (l.auth, l.status))
                .collect::<Vec<_>>(),
            [(AuthKind::ActionsAdmin, 200), (AuthKind::ActionsAdmin, 503)]
        );
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap();
        sim.fail_next("GET", SCALESET_QUEUE_PREFIX, 1, Fault::Status(500));
        assert_eq!(poll(&sim, set, token, 0, None).status, 500);
        sim.fail_next("GET", SCALESET_QUEUE_PREFIX, 1, Fault::Reset);
        let path = format!("{SCALESET_QUEUE_PREFIX}{set}");
        assert!(raw(
            sim.addr(),
            "GET",
            &path,
            &[("authorization", &format!("Bearer {token}"))],
            b""
        )
        .is_err());
        sim.fail_next("*", RUNNER_REGISTRATION_PATH, 1, Fault::Status(502));
        let t = registration_token(&sim, "/repos/o/r");
        let url = format!("{}/o/r", sim.server_url());
        assert_eq!(
            register(&sim, Some(&format!("RemoteAuth {t}")), &url).status,
            502
        );
        assert_eq!(sim.requests().pop().unwrap().auth, AuthKind::RemoteAuth);
        assert_eq!(sim.count("GET", SCALESET_QUEUE_PREFIX), 2);
        // A lost answer: the session exists although the client never heard of it.
        let sessions = format!("{sets}/{set}/sessions");
        let sid = s["sessionId"].as_str().unwrap();
        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions/{sid}");
        assert_eq!(svc(&sim, "DELETE", &path, &admin, None).status, 204);
        sim.fail_next("POST", &sessions, 1, Fault::ResetAfterProcessing);
        let p = format!("{sessions}?api-version={ACTIONS_API_VERSION}");
        let auth = format!("Bearer {admin}");
        let lost = raw(
            sim.addr(),
            "POST",
            &p,
            &[UA, ("authorization", &auth)],
            br#"{"ownerName":"h"}"#,
        );
        assert!(lost.is_err());
        let r = svc(
            &sim,
            "POST",
            &format!("_apis/runtime/runnerscalesets/{set}/sessions"),
            &admin,
            Some(json!({"ownerName": "h"})),
        );
        assert_eq!(r.status, 409);
    }

    #[test]
    fn the_http_test_endpoints() {
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(100));
        let set = create_set(&sim, &admin, "s", 1);
        let post =
            |path: &str, body: &str| raw(sim.addr(), "POST", path, &[], body.as_bytes()).unwrap();
        let r = post(
            &format!("/_sim/scalesets/{set}/jobs"),
            r#"{"labels":["s"],"repository":"web","displayName":"test"}"#,
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let job = r.body["jobId"].as_str().unwrap().to_string();
        assert_eq!(post("/_sim/scalesets/99/jobs", "{}").status, 404);
        let jobs = raw(
            sim.addr(),
            "GET",
            &format!("/_sim/scalesets/{set}/jobs"),
            &[],
            b"",
        )
        .unwrap();
        assert_eq!(
            (
                jobs.body[0]["jobId"].as_str(),
                jobs.body[0]["state"].as_str()
            ),
            (Some(job.as_str()), Some("assigned"))
        );
        let all = raw(sim.addr(), "GET", "/_sim/scalesets", &[], b"").unwrap();
        assert_eq!(
            (all.body[0]["id"].as_u64(), all.body[0]["scope"].as_str()),
            (Some(set), Some("repo:o/r"))
        );
        assert_eq!(all.body[0]["statistics"]["totalAssignedJobs"], 1);
        // A stale session, expired tokens, a deleted set.
        assert_eq!(
            post(&format!("/_sim/scalesets/{set}/stale-session"), "").status,
            201
        );
        let path = format!("_apis/runtime/runnerscalesets/{set}/sessions");
        assert_eq!(
            svc(&sim, "POST", &path, &admin, Some(json!({"ownerName": "h"}))).status,
            409
        );
        assert_eq!(post("/_sim/expire-admin-tokens", "").status, 204);
        assert_eq!(
            svc(&sim, "GET", &path.replace("/sessions", ""), &admin, None).status,
            401
        );
        assert_eq!(post("/_sim/expire-queue-tokens", "").status, 204);
        assert_eq!(
            post(&format!("/_sim/scalesets/{set}/delete"), "").status,
            204
        );
        assert!(sim.scale_sets().is_empty());
        let msgs = sim.scale_set_jobs(set);
        assert!(msgs.is_empty());
        let r = raw(sim.addr(), "GET", "/_sim/scalesets", &[], b"").unwrap();
        assert_eq!(r.body, json!([]));
        // The repository and display name reach the messages.
        let admin = admin_token(&sim, "/repos/o/r", &format!("{}/o/r", sim.server_url()));
        let set = create_set(&sim, &admin, "t", 1);
        let s = open_session(&sim, &admin, set);
        post(
            &format!("/_sim/scalesets/{set}/jobs"),
            r#"{"repository":"web","displayName":"test"}"#,
        );
        let e = entries(&poll(
            &sim,
            set,
            s["messageQueueAccessToken"].as_str().unwrap(),
            0,
            None,
        ));
        assert_eq!(
            (
                e[0]["repositoryName"].as_str(),
                e[0]["jobDisplayName"].as_str()
            ),
            (Some("web"), Some("test"))
        );
    }

    /// The stand-in script, run by the host's busybox against the simulator: two runners, one
    /// job; the first to ask takes it, the other idles until SIGTERM.
    #[test]
    fn the_stand_in_scale_set_runner_runs_one_job() {
        if std::process::Command::new("busybox")
            .arg("true")
            .status()
            .is_err()
        {
            eprintln!("skipped: no busybox");
            return;
        }
        let (sim, admin) = setup();
        sim.set_poll_wait(Duration::from_millis(200));
        let set = create_set(&sim, &admin, "s", 1);
        let s = open_session(&sim, &admin, set);
        let token = s["messageQueueAccessToken"].as_str().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("Runner.Listener");
        std::fs::write(&script, SCALESET_LISTENER).unwrap();
        let spawn = |name: &str| {
            let path = format!("_apis/runtime/runnerscalesets/{set}/generatejitconfig");
            let r = svc(
                &sim,
                "POST",
                &path,
                &admin,
                Some(json!({"name": name, "workFolder": "_work"})),
            );
            let id = r.body["runner"]["id"].as_u64().unwrap();
            let child = std::process::Command::new("sh")
                .arg(&script)
                .env(
                    "ACTIONS_RUNNER_INPUT_JITCONFIG",
                    r.body["encodedJITConfig"].as_str().unwrap(),
                )
                .spawn()
                .unwrap();
            (id, child)
        };
        let (a, mut child_a) = spawn("a");
        let wait_online = |id: u64| {
            let t = Instant::now();
            while sim.runner(id).map(|r| r.state()) != Some(RunnerState::Online) {
                assert!(
                    t.elapsed() < Duration::from_secs(10),
                    "{id} never came online"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        wait_online(a);
        let job = sim.queue_job(set, &["s"]);
        let t = Instant::now();
        let status = loop {
            if let Some(s) = child_a.try_wait().unwrap() {
                break s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(15),
                "the runner never finished"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status:?}");
        let j = &sim.scale_set_jobs(set)[0];
        assert_eq!(
            (j.job_id.as_str(), j.state, j.runner_id, j.result.as_deref()),
            (
                job.as_str(),
                SimJobState::Completed,
                Some(a),
                Some("succeeded")
            )
        );
        assert!(sim.runner(a).is_none());
        assert_eq!(
            kinds(&drain(&sim, set, &token)),
            ["JobAssigned", "JobStarted", "JobCompleted:succeeded"]
        );

        // An idle one keeps asking (and beating) until stopped; SIGTERM ends it with 0.
        let (b, mut child_b) = spawn("b");
        wait_online(b);
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(sim.runner(b).unwrap().state(), RunnerState::Online);
        assert!(sim.count("GET", &format!("/_sim/runners/{b}/job")) >= 2);
        std::process::Command::new("kill")
            .args(["-TERM", &child_b.id().to_string()])
            .status()
            .unwrap();
        let status = child_b.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

//! A GitHub REST API simulator on `127.0.0.1`, with real state, for every test that would
//! otherwise need github.com: repositories, organizations and enterprises; runner groups;
//! runners; personal access tokens; GitHub Apps with installations and expiring installation
//! tokens; registration and remove tokens; a per-token rate-limit budget.
//!
//! It answers like GitHub: `401 Requires authentication` / `Bad credentials`, `404 Not Found`
//! for a repository the token cannot see, `403` without rights, `409 Already exists`, `422`
//! for a malformed JIT request, `x-ratelimit-*` headers on every answer. It is stricter than
//! GitHub in one way: `X-GitHub-Api-Version: 2022-11-28`, `Accept` and `User-Agent` are
//! required, so a client that forgets them fails here instead of drifting.
//!
//! JIT configs have the real shape (base64 of `{filename: base64(content)}` with `.runner`,
//! `.credentials` and `.credentials_rsaparams`). `.runner` names the runner and points
//! `serverUrl` at the simulator; `.credentials` holds a per-runner secret (`simSecret`) that a
//! stand-in runner posts back (plain `POST`s, so busybox `wget --post-data=SECRET` is enough):
//!
//! - `POST /_sim/runners/{id}/online`: the runner is online and idle;
//! - `POST /_sim/runners/{id}/job-started`: it is busy;
//! - `POST /_sim/runners/{id}/job-finished`: it is idle again, and an ephemeral runner is
//!   deleted, as GitHub does;
//! - `POST /_sim/runners/{id}/offline`: it went away without a job;
//! - `POST /_sim/runners/{id}/heartbeat`: it is still alive (the stand-in sends one a second);
//! - `GET /_sim/runners/{id}/job?secret=…`: a scale-set runner asks for work (200 `{jobId}` or
//!   204; see `github_sim_scaleset.rs`).
//!
//! Like GitHub, the simulator notices a dead runner only after a while: a runner that has
//! reported `online` and then sends no heartbeat for [`GitHubSim::set_dead_after`] (default
//! [`DEFAULT_DEAD_AFTER`]) keeps its last state (online, or busy) until then, and is then offline
//! and idle. `DELETE` of a busy runner answers 422, as GitHub does.
//!
//! For tests that start it as a process (`examples/github_sim.rs`) the state is also readable
//! and steerable over HTTP: `GET /_sim/runners`, `GET /_sim/requests`, `POST /_sim/runners`
//! (add a runner), `POST /_sim/faults` (arm a fault), `DELETE /_sim/faults`.
//!
//! Faults are injected by rule (method and API path prefix; the next N matching requests or a
//! seeded probability): 5xx, 429 with `retry-after`, 403 secondary and primary rate limits,
//! slow answers, connection resets before or after the request took effect.
//!
//! Every request is logged (method, API path without the base prefix, auth kind, status) so
//! tests can count calls. One thread accepts; each connection gets a thread and may carry many
//! requests (keep-alive).
//!
//! It also serves the actions/runner releases, as krunner's `--runner-releases-url` reads them
//! ([`GitHubSim::add_runner_release`], [`GitHubSim::runner_releases_url`]):
//!
//! - `GET {api}/repos/actions/runner/releases`: the releases, newest `published_at` first,
//!   paged by `per_page` (default 30) and `page` with a `Link` header as GitHub sends. Drafts
//!   are listed too (as GitHub lists them to a caller with push access; their `published_at`
//!   is `null`), so a test can check a client skips them;
//! - `GET {api}/repos/actions/runner/releases/latest` (the newest release that is neither a
//!   draft nor a pre-release; 404 if none), `…/releases/tags/v{version}`, `…/releases/{id}`;
//! - `GET {server}/_sim/runner-releases/download/v{version}/{name}`: an asset's bytes (each
//!   asset's `browser_download_url`).
//!
//! These take anonymous callers and need no `X-GitHub-Api-Version` (GitHub does not either,
//! and a releases client sends no token); `Accept` and `User-Agent` are checked on the listing
//! as on every API route, not on downloads. Unlike the rest of `/_sim/`, downloads go through
//! fault injection like any API request (path prefix `/_sim/runner-releases/download/`), and
//! [`GitHubSim::asset_downloads`] counts the ones that were sent whole.
//! [`runner_tarball`] and [`stand_in_release`] build stand-in releases with the real layout and
//! checksum blocks.
//!
//! It also plays the Actions service side of runner scale sets (the bootstrap
//! `POST {api}/actions/runner-registration`, the service under `{server}/_services/actions/`,
//! message sessions and their long-polled queue, jobs and the stand-in runners that take them):
//! see `github_sim_scaleset.rs` next to this file, whose items are re-exported here.

// A fixture library shared by several tests and a standalone binary: not every helper has a
// user in every build that includes this file.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};

use super::http::{read_request, Request};

// Runner scale sets (the Actions service): a sibling file, so both users of this file (the
// integration tests' `util` and `examples/github_sim.rs`) get it through this one.
#[path = "github_sim_scaleset.rs"]
mod scaleset;
// Not every build that includes this file uses every item.
#[allow(unused_imports)]
pub use scaleset::{
    SimJob, SimJobState, SimScaleSet, SimSession, SimSessionState, ACTIONS_API_VERSION,
    ACTIONS_SERVICE_PREFIX, DEFAULT_ADMIN_TOKEN_TTL, DEFAULT_POLL_WAIT, DEFAULT_REASSIGN_AFTER,
    DEFAULT_SESSION_TTL, MAX_REASSIGNMENTS, RUNNER_REGISTRATION_PATH, SCALESET_LISTENER,
    SCALESET_QUEUE_PREFIX,
};

/// The only REST API version the simulator accepts.
pub const API_VERSION: &str = "2022-11-28";

/// `documentation_url` of most error bodies.
const DOCS: &str = "https://docs.github.com/rest";
const DOCS_RATE: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";
const SECONDARY_MESSAGE: &str = "You have exceeded a secondary rate limit. Please wait a few \
     minutes before you try again. If you reach out to GitHub Support for help, please include \
     the request ID 0000:1111:2222:3333:44444444.";

/// Largest `per_page` GitHub serves.
const MAX_PER_PAGE: usize = 100;

/// How long a runner that stopped sending heartbeats stays as it was, by default.
pub const DEFAULT_DEAD_AFTER: Duration = Duration::from_secs(8);

/// Where runners live: a repository (`owner/repo`), an organization or an enterprise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimScope {
    /// `owner/repo`.
    Repo(String),
    /// Organization login.
    Org(String),
    /// Enterprise slug.
    Enterprise(String),
}

impl SimScope {
    /// `repo`/`org`/`enterprise` and a principal, as krunner's `-s`/`-p` take them.
    pub fn parse(kind: &str, principal: &str) -> Option<SimScope> {
        match kind {
            "repo" if principal.split('/').count() == 2 => Some(SimScope::Repo(principal.into())),
            "org" => Some(SimScope::Org(principal.into())),
            "enterprise" => Some(SimScope::Enterprise(principal.into())),
            _ => None,
        }
    }

    /// The API path of the scope: `/repos/o/r`, `/orgs/o` or `/enterprises/e`.
    pub fn path(&self) -> String {
        match self {
            SimScope::Repo(r) => format!("/repos/{r}"),
            SimScope::Org(o) => format!("/orgs/{o}"),
            SimScope::Enterprise(e) => format!("/enterprises/{e}"),
        }
    }

    /// The account that owns it (repository owner, organization, enterprise).
    pub fn account(&self) -> &str {
        match self {
            SimScope::Repo(r) => r.split('/').next().unwrap_or(r),
            SimScope::Org(o) => o,
            SimScope::Enterprise(e) => e,
        }
    }

    /// Repositories have no runner-group API (their runners are in group 1).
    fn has_groups(&self) -> bool {
        !matches!(self, SimScope::Repo(_))
    }

    /// `repo:o/r`, `org:o`, `enterprise:e` (the form `POST /_sim/runners` takes).
    pub fn tag(&self) -> String {
        match self {
            SimScope::Repo(r) => format!("repo:{r}"),
            SimScope::Org(o) => format!("org:{o}"),
            SimScope::Enterprise(e) => format!("enterprise:{e}"),
        }
    }

    fn from_tag(tag: &str) -> Option<SimScope> {
        let (kind, principal) = tag.split_once(':')?;
        SimScope::parse(kind, principal)
    }
}

/// What a runner is doing, as GitHub shows it (`status` and `busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerState {
    /// `status: "offline"`, not busy.
    Offline,
    /// `status: "online"`, idle.
    Online,
    /// `status: "online"`, running a job.
    Busy,
}

/// A runner as the simulator holds it.
#[derive(Debug, Clone)]
pub struct SimRunner {
    /// The runner id (what `DELETE` takes).
    pub id: u64,
    /// Its name, unique in its scope.
    pub name: String,
    /// Where it is registered.
    pub scope: SimScope,
    /// Always `Linux`.
    pub os: String,
    /// `online` or `offline`.
    pub status: String,
    /// Running a job.
    pub busy: bool,
    /// Label names: the read-only ones (`self-hosted`, `Linux`, `X64`) first, then the custom
    /// ones.
    pub labels: Vec<String>,
    /// Its runner group.
    pub runner_group_id: u64,
    /// Deleted after one job.
    pub ephemeral: bool,
    /// Created through generate-jitconfig.
    pub jit: bool,
    /// `work_folder` of the JIT request.
    pub work_folder: String,
    /// The secret its JIT config carries (for the `/_sim/runners/{id}/…` endpoints).
    pub secret: String,
    /// The runner scale set it belongs to (created through the scale set's generatejitconfig).
    pub scale_set_id: Option<u64>,
    label_ids: Vec<u64>,
    /// The last report or heartbeat of its process; `None` until it reported once.
    last_seen: Option<Instant>,
}

impl SimRunner {
    /// Its state.
    pub fn state(&self) -> RunnerState {
        match (self.status.as_str(), self.busy) {
            (_, true) => RunnerState::Busy,
            ("online", false) => RunnerState::Online,
            _ => RunnerState::Offline,
        }
    }

    /// Whether it carries label `name`.
    pub fn has_label(&self, name: &str) -> bool {
        self.labels.iter().any(|l| l == name)
    }

    fn set_state(&mut self, s: RunnerState) {
        self.status = if s == RunnerState::Offline {
            "offline"
        } else {
            "online"
        }
        .into();
        self.busy = s == RunnerState::Busy;
    }

    fn json(&self) -> Value {
        let labels: Vec<Value> = self
            .labels
            .iter()
            .zip(&self.label_ids)
            .enumerate()
            .map(|(i, (name, id))| {
                let kind = if i < READ_ONLY_LABELS.len() {
                    "read-only"
                } else {
                    "custom"
                };
                json!({"id": id, "name": name, "type": kind})
            })
            .collect();
        json!({
            "id": self.id,
            "name": self.name,
            "os": self.os,
            "status": self.status,
            "busy": self.busy,
            "ephemeral": self.ephemeral,
            "runner_group_id": self.runner_group_id,
            "labels": labels,
        })
    }
}

const READ_ONLY_LABELS: [&str; 3] = ["self-hosted", "Linux", "X64"];

/// The API path of the actions/runner releases listing (under the base prefix).
pub const RUNNER_RELEASES_PATH: &str = "/repos/actions/runner/releases";

/// The path prefix of release asset downloads (on the server, outside the base prefix), for
/// [`GitHubSim::fail_next`] and [`GitHubSim::count`].
pub const RUNNER_DOWNLOAD_PREFIX: &str = "/_sim/runner-releases/download/";

/// One actions/runner release the simulator serves.
#[derive(Debug, Clone)]
pub struct SimRelease {
    /// The version without `v`: `2.330.0` (the tag is `v2.330.0`).
    pub version: String,
    /// Unix seconds of publication (also its `created_at`); the listing is newest first.
    pub published_at: u64,
    /// A draft: listed (with `published_at: null`), never `latest`.
    pub draft: bool,
    /// A pre-release: listed, never `latest`.
    pub prerelease: bool,
    /// The release notes (where actions/runner puts its checksums; see
    /// [`runner_release_body`]).
    pub body: String,
    /// (file name, bytes) of each asset.
    pub assets: Vec<(String, Vec<u8>)>,
}

/// A release as served: the ids GitHub would have given it and its assets.
#[derive(Debug, Clone)]
struct StoredRelease {
    id: u64,
    asset_ids: Vec<u64>,
    release: SimRelease,
}

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// No `Authorization` header (or a `/_sim/` endpoint).
    None,
    /// A known personal access token.
    Pat,
    /// A valid GitHub App JWT.
    Jwt,
    /// A valid installation token.
    Installation,
    /// Something that was rejected with 401.
    Invalid,
    /// `RemoteAuth <registration token>` (the scale-set bootstrap).
    RemoteAuth,
    /// `Bearer <admin JWT>` of the Actions service.
    ActionsAdmin,
    /// `Bearer <message queue token>` of a scale-set message session.
    MessageQueue,
}

/// One request as the simulator saw it, logged when it arrives and completed when answered.
#[derive(Debug, Clone)]
pub struct Logged {
    /// Arrival number, from 1.
    pub seq: u64,
    /// `GET`, `POST`, …
    pub method: String,
    /// The API path without the base prefix (`/orgs/acme/actions/runners`), or the full path
    /// of a `/_sim/` request or of one outside the base.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// How it authenticated.
    pub auth: AuthKind,
    /// The status sent; 0 when the connection was closed without an answer, or while the
    /// answer is still being prepared (a slow one).
    pub status: u16,
    /// The fault injected, if any.
    pub fault: Option<String>,
    /// When it arrived (monotonic, to measure waits between requests).
    pub at: Instant,
    /// When it arrived (wall clock, to compare with `x-ratelimit-reset`).
    pub wall: SystemTime,
    /// The bearer token or JWT it carried (so a test can check none leaks into messages).
    pub bearer: Option<String>,
    /// Its `User-Agent`.
    pub user_agent: Option<String>,
}

/// A fault to inject instead of (or around) the normal answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// That status (500, 502, 503, …) with a GitHub error body.
    Status(u16),
    /// 429 with `retry-after: N` seconds.
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// 403 "You have exceeded a secondary rate limit", with or without `retry-after`.
    SecondaryLimit {
        /// Seconds, when sent.
        retry_after: Option<u64>,
    },
    /// 403 primary limit: `x-ratelimit-remaining: 0` and a reset this long after the rule was
    /// armed.
    PrimaryLimit {
        /// Time from arming the rule to `x-ratelimit-reset`.
        reset_in: Duration,
    },
    /// Answer with this status and raw body instead (a recorded or malformed answer).
    Respond {
        /// HTTP status.
        status: u16,
        /// The body, sent as `application/json`.
        body: String,
    },
    /// Sleep this long, then answer normally.
    Slow(Duration),
    /// Close the connection without answering (the request has no effect).
    Reset,
    /// Carry the request out, then close the connection without answering (the response is
    /// lost; a retried JIT request then meets its own runner).
    ResetAfterProcessing,
    /// Answer normally, but close the connection after this many bytes of the body (the
    /// head announces the whole length): a download cut short.
    CutBody {
        /// Body bytes sent before the connection is closed.
        after: usize,
    },
}

impl Fault {
    fn describe(&self) -> String {
        match self {
            Fault::Status(s) => format!("status {s}"),
            Fault::TooManyRequests { retry_after } => format!("429 retry-after {retry_after}"),
            Fault::SecondaryLimit { retry_after } => format!("secondary limit {retry_after:?}"),
            Fault::PrimaryLimit { reset_in } => format!("primary limit reset in {reset_in:?}"),
            Fault::Respond { status, .. } => format!("canned {status}"),
            Fault::Slow(d) => format!("slow {d:?}"),
            Fault::Reset => "reset".into(),
            Fault::ResetAfterProcessing => "reset after processing".into(),
            Fault::CutBody { after } => format!("body cut after {after} bytes"),
        }
    }
}

/// When a fault rule fires.
#[derive(Debug, Clone)]
enum Trigger {
    /// The next N matching requests.
    Next(usize),
    /// Each matching request with this probability (seeded splitmix64).
    Probability { p: f64, rng: u64 },
}

#[derive(Debug, Clone)]
struct FaultRule {
    method: String,
    prefix: String,
    trigger: Trigger,
    fault: Fault,
    /// Epoch seconds of `x-ratelimit-reset` for [`Fault::PrimaryLimit`].
    reset_epoch: u64,
}

impl FaultRule {
    fn matches(&self, method: &str, path: &str) -> bool {
        (self.method == "*" || self.method.eq_ignore_ascii_case(method))
            && path.starts_with(&self.prefix)
    }

    /// Whether it fires for this request (consuming one of its N).
    fn fire(&mut self) -> bool {
        match &mut self.trigger {
            Trigger::Next(0) => false,
            Trigger::Next(n) => {
                *n -= 1;
                true
            }
            Trigger::Probability { p, rng } => {
                let x = splitmix64(rng);
                ((x >> 11) as f64 / (1u64 << 53) as f64) < *p
            }
        }
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[derive(Debug, Clone)]
struct Group {
    id: u64,
    scope: SimScope,
    name: String,
    default: bool,
}

struct App {
    /// DER of the public key (PKCS#1 `RSAPublicKey` or X.509 `SubjectPublicKeyInfo`).
    public_der: Vec<u8>,
}

#[derive(Debug, Clone)]
struct Installation {
    id: u64,
    app_id: u64,
    scopes: Vec<SimScope>,
}

#[derive(Debug, Clone)]
struct InstallationToken {
    installation_id: u64,
    expires_epoch: u64,
    revoked: bool,
}

#[derive(Debug, Clone)]
struct Budget {
    limit: u64,
    used: u64,
    reset_epoch: u64,
}

struct State {
    base: String,
    server_url: String,
    scopes: BTreeSet<SimScope>,
    groups: Vec<Group>,
    runners: BTreeMap<u64, SimRunner>,
    next_runner_id: u64,
    next_group_id: u64,
    next_label_id: u64,
    next_installation_id: u64,
    pats: HashMap<String, Vec<SimScope>>,
    apps: HashMap<u64, App>,
    installations: BTreeMap<u64, Installation>,
    installation_tokens: HashMap<String, InstallationToken>,
    installation_token_ttl: Duration,
    registration_tokens: Vec<(SimScope, String)>,
    remove_tokens: Vec<(SimScope, String)>,
    rate_limit: u64,
    budgets: HashMap<String, Budget>,
    faults: Vec<FaultRule>,
    latency: Duration,
    log: Vec<Logged>,
    seq: u64,
    /// How long a runner without heartbeats keeps its state (see the module header).
    dead_after: Duration,
    /// actions/runner releases, in the order they were added.
    releases: Vec<StoredRelease>,
    next_release_id: u64,
    next_asset_id: u64,
    /// Asset file name to the number of times it was sent whole.
    asset_downloads: HashMap<String, usize>,
    /// Runner scale sets, their sessions, queues and jobs (`github_sim_scaleset.rs`).
    scale: scaleset::Actions,
}

/// The simulator; stops accepting connections when dropped.
pub struct GitHubSim {
    addr: String,
    base: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl GitHubSim {
    /// A simulator on an ephemeral port serving the API at the root (like api.github.com).
    pub fn start() -> GitHubSim {
        GitHubSim::start_with(0, "")
    }

    /// A simulator serving the API under `base` (e.g. `/api/v3`, like GitHub Enterprise
    /// Server).
    pub fn start_at(base: &str) -> GitHubSim {
        GitHubSim::start_with(0, base)
    }

    /// A simulator on `port` (0: any) serving the API under `base` (`""` or `/api/v3`).
    pub fn start_with(port: u16, base: &str) -> GitHubSim {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the GitHub simulator");
        let addr = listener.local_addr().unwrap().to_string();
        let base = base.trim_end_matches('/').to_string();
        let state = Arc::new(Mutex::new(State {
            base: base.clone(),
            server_url: format!("http://{addr}"),
            scopes: BTreeSet::new(),
            groups: Vec::new(),
            runners: BTreeMap::new(),
            next_runner_id: 1001,
            next_group_id: 2,
            next_label_id: 1,
            next_installation_id: 5001,
            pats: HashMap::new(),
            apps: HashMap::new(),
            installations: BTreeMap::new(),
            installation_tokens: HashMap::new(),
            installation_token_ttl: Duration::from_secs(3600),
            registration_tokens: Vec::new(),
            remove_tokens: Vec::new(),
            rate_limit: 5000,
            budgets: HashMap::new(),
            faults: Vec::new(),
            latency: Duration::ZERO,
            log: Vec::new(),
            seq: 0,
            dead_after: DEFAULT_DEAD_AFTER,
            releases: Vec::new(),
            next_release_id: 270_000_001,
            next_asset_id: 310_000_001,
            asset_downloads: HashMap::new(),
            scale: scaleset::Actions::default(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, sp) = (st.clone(), sp.clone());
                std::thread::spawn(move || serve_connection(conn, &st, &sp));
            }
        });
        GitHubSim {
            addr,
            base,
            state,
            stop,
        }
    }

    fn st(&self) -> MutexGuard<'_, State> {
        let mut st = self.state.lock().unwrap();
        st.reap();
        st
    }

    /// How long a runner whose process stopped sending heartbeats keeps its state (online or
    /// busy) before it is offline and idle, like GitHub noticing a dead runner.
    pub fn set_dead_after(&self, d: Duration) {
        self.st().dead_after = d;
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// `http://127.0.0.1:PORT` (the `serverUrl` of JIT configs, the `/_sim/` endpoints).
    pub fn server_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The API base a client uses: `http://127.0.0.1:PORT` plus the base prefix.
    pub fn api_url(&self) -> String {
        format!("http://{}{}", self.addr, self.base)
    }

    /// Adds repository `owner/repo` (its runners are in group 1).
    pub fn add_repo(&self, owner_repo: &str) -> SimScope {
        self.add_scope(SimScope::Repo(owner_repo.into()))
    }

    /// Adds an organization with its `Default` runner group (id 1).
    pub fn add_org(&self, org: &str) -> SimScope {
        self.add_scope(SimScope::Org(org.into()))
    }

    /// Adds an enterprise with its `Default` runner group (id 1).
    pub fn add_enterprise(&self, slug: &str) -> SimScope {
        self.add_scope(SimScope::Enterprise(slug.into()))
    }

    /// Adds a scope (idempotent).
    pub fn add_scope(&self, scope: SimScope) -> SimScope {
        let mut st = self.st();
        if st.scopes.insert(scope.clone()) && scope.has_groups() {
            st.groups.push(Group {
                id: 1,
                scope: scope.clone(),
                name: "Default".into(),
                default: true,
            });
        }
        scope
    }

    /// Adds runner group `name` to an organization or enterprise; returns its id.
    pub fn add_runner_group(&self, scope: &SimScope, name: &str) -> u64 {
        assert!(scope.has_groups(), "repositories have no runner groups");
        let mut st = self.st();
        let id = st.next_group_id;
        st.next_group_id += 1;
        st.groups.push(Group {
            id,
            scope: scope.clone(),
            name: name.into(),
            default: false,
        });
        id
    }

    /// A personal access token with admin rights on `scopes` (and no others).
    pub fn add_pat(&self, token: &str, scopes: &[&SimScope]) {
        self.st()
            .pats
            .insert(token.into(), scopes.iter().map(|s| (*s).clone()).collect());
    }

    /// A GitHub App `app_id` whose JWTs are checked against this public key (PEM, `PUBLIC
    /// KEY` or `RSA PUBLIC KEY`).
    pub fn add_app(&self, app_id: u64, public_key_pem: &str) {
        let public_der = pem_to_der(public_key_pem).expect("a PEM public key");
        self.st().apps.insert(app_id, App { public_der });
    }

    /// Installs app `app_id` on the account of `scopes` with runner admin rights on them;
    /// returns the installation id.
    pub fn add_installation(&self, app_id: u64, scopes: &[&SimScope]) -> u64 {
        let mut st = self.st();
        assert!(st.apps.contains_key(&app_id), "unknown app {app_id}");
        let id = st.next_installation_id;
        st.next_installation_id += 1;
        let scopes = scopes.iter().map(|s| (*s).clone()).collect();
        st.installations
            .insert(id, Installation { id, app_id, scopes });
        id
    }

    /// Lifetime of installation tokens issued from now on (default 1 h).
    pub fn set_installation_token_ttl(&self, ttl: Duration) {
        self.st().installation_token_ttl = ttl;
    }

    /// Makes every installation token issued so far invalid (401 `Bad credentials`), as if
    /// they had expired.
    pub fn expire_installation_tokens(&self) {
        for t in self.st().installation_tokens.values_mut() {
            t.revoked = true;
        }
    }

    /// How many installation tokens were issued.
    pub fn installation_tokens_issued(&self) -> usize {
        self.st().installation_tokens.len()
    }

    /// Registration tokens issued so far, oldest first.
    pub fn registration_tokens(&self) -> Vec<String> {
        self.st()
            .registration_tokens
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Remove tokens issued so far, oldest first.
    pub fn remove_tokens(&self) -> Vec<String> {
        self.st()
            .remove_tokens
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Every runner, by id.
    pub fn runners(&self) -> Vec<SimRunner> {
        self.st().runners.values().cloned().collect()
    }

    /// The runners of one scope, by id.
    pub fn runners_in(&self, scope: &SimScope) -> Vec<SimRunner> {
        self.st()
            .runners
            .values()
            .filter(|r| &r.scope == scope)
            .cloned()
            .collect()
    }

    /// A runner by id.
    pub fn runner(&self, id: u64) -> Option<SimRunner> {
        self.st().runners.get(&id).cloned()
    }

    /// A runner by name (in any scope).
    pub fn runner_by_name(&self, name: &str) -> Option<SimRunner> {
        self.st().runners.values().find(|r| r.name == name).cloned()
    }

    /// Registers a runner directly (not through JIT), e.g. a stale offline one for a reconcile
    /// test or an online one that must never be deleted. It is ephemeral and in group 1;
    /// `labels` are the custom labels. Returns its id.
    pub fn add_runner(
        &self,
        scope: &SimScope,
        name: &str,
        labels: &[&str],
        state: RunnerState,
    ) -> u64 {
        let mut st = self.st();
        assert!(st.scopes.contains(scope), "unknown scope {scope:?}");
        let labels: Vec<String> = labels.iter().map(|l| l.to_string()).collect();
        let id = st.new_runner(scope, name, &labels, 1, "_work", false);
        st.runners.get_mut(&id).unwrap().set_state(state);
        id
    }

    /// Sets a runner's state; false if there is no such runner.
    pub fn set_runner_state(&self, id: u64, state: RunnerState) -> bool {
        match self.st().runners.get_mut(&id) {
            Some(r) => {
                r.set_state(state);
                true
            }
            None => false,
        }
    }

    /// Primary rate limit per token and hour for budgets started from now on (default 5000).
    pub fn set_rate_limit(&self, limit: u64) {
        self.st().rate_limit = limit;
    }

    /// Delay before every answer.
    pub fn set_latency(&self, latency: Duration) {
        self.st().latency = latency;
    }

    /// Injects `fault` into the next `times` requests whose method is `method` (`*`: any) and
    /// whose API path (without the base prefix) starts with `path_prefix`.
    pub fn fail_next(&self, method: &str, path_prefix: &str, times: usize, fault: Fault) {
        self.st()
            .add_fault(method, path_prefix, Trigger::Next(times), fault);
    }

    /// Injects `fault` into each matching request with `probability`, drawn from an RNG seeded
    /// with `seed` (so a run is reproducible).
    pub fn fail_randomly(
        &self,
        method: &str,
        path_prefix: &str,
        probability: f64,
        seed: u64,
        fault: Fault,
    ) {
        let trigger = Trigger::Probability {
            p: probability,
            rng: seed,
        };
        self.st().add_fault(method, path_prefix, trigger, fault);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.st().faults.clear();
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.st().log.clone()
    }

    /// How many requests had this method (`*`: any) and an API path starting with
    /// `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.st()
            .log
            .iter()
            .filter(|l| {
                (method == "*" || l.method.eq_ignore_ascii_case(method))
                    && l.path.starts_with(path_prefix)
            })
            .count()
    }

    /// Serves `r` among the actions/runner releases, in place of one of the same version (with
    /// new ids, as a re-created release has).
    pub fn add_runner_release(&self, r: SimRelease) {
        let mut st = self.st();
        st.releases.retain(|s| s.release.version != r.version);
        let id = st.next_release_id;
        st.next_release_id += 1;
        let first_asset = st.next_asset_id;
        st.next_asset_id += r.assets.len() as u64;
        let asset_ids = (first_asset..st.next_asset_id).collect();
        st.releases.push(StoredRelease {
            id,
            asset_ids,
            release: r,
        });
    }

    /// Stops serving release `version` (and its assets).
    pub fn remove_runner_release(&self, version: &str) {
        self.st().releases.retain(|s| s.release.version != version);
    }

    /// The releases listing URL to give krunner as `--runner-releases-url`:
    /// [`api_url`](Self::api_url) plus `/repos/actions/runner/releases`.
    pub fn runner_releases_url(&self) -> String {
        format!("{}{RUNNER_RELEASES_PATH}", self.api_url())
    }

    /// The `browser_download_url` of asset `name` of release `version`.
    pub fn runner_asset_url(&self, version: &str, name: &str) -> String {
        format!("{}{}", self.server_url(), runner_asset_path(version, name))
    }

    /// How many times the asset named `name` (in any release) was sent whole; a download
    /// failed by a fault or cut short does not count.
    pub fn asset_downloads(&self, name: &str) -> usize {
        self.st().asset_downloads.get(name).copied().unwrap_or(0)
    }

    /// Forgets the request log.
    pub fn clear_log(&self) {
        self.st().log.clear();
    }

    /// The log as text, one `METHOD path?query -> status [auth] (fault)` a line, for
    /// assertion messages.
    pub fn log_text(&self) -> String {
        self.st()
            .log
            .iter()
            .map(|l| {
                let q = if l.query.is_empty() {
                    String::new()
                } else {
                    format!("?{}", l.query)
                };
                let f = l
                    .fault
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default();
                format!(
                    "{} {}{q} -> {} [{:?}]{f}",
                    l.method, l.path, l.status, l.auth
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for GitHubSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

impl State {
    /// Turns runners whose process went silent for `dead_after` offline and idle (a scale-set
    /// runner's job fails with it), then lets time pass for scale sets (sessions expire, jobs
    /// nobody took are reassigned).
    fn reap(&mut self) {
        let dead_after = self.dead_after;
        let mut dead = Vec::new();
        for r in self.runners.values_mut() {
            if r.last_seen.is_some_and(|t| t.elapsed() > dead_after) {
                r.set_state(RunnerState::Offline);
                r.last_seen = None;
                if r.scale_set_id.is_some() {
                    dead.push(r.id);
                }
            }
        }
        for id in dead {
            scaleset::runner_lost(self, id);
        }
        scaleset::tick(self);
    }

    fn add_fault(&mut self, method: &str, prefix: &str, trigger: Trigger, fault: Fault) {
        let reset_epoch = match &fault {
            Fault::PrimaryLimit { reset_in } => {
                (epoch_f64() + reset_in.as_secs_f64()).ceil() as u64
            }
            _ => 0,
        };
        self.faults.push(FaultRule {
            method: method.to_string(),
            prefix: prefix.to_string(),
            trigger,
            fault,
            reset_epoch,
        });
    }

    fn new_runner(
        &mut self,
        scope: &SimScope,
        name: &str,
        custom_labels: &[String],
        group: u64,
        work_folder: &str,
        jit: bool,
    ) -> u64 {
        let id = self.next_runner_id;
        self.next_runner_id += 1;
        let mut labels: Vec<String> = READ_ONLY_LABELS.iter().map(|l| l.to_string()).collect();
        labels.extend(custom_labels.iter().cloned());
        let label_ids = labels
            .iter()
            .map(|_| {
                self.next_label_id += 1;
                self.next_label_id
            })
            .collect();
        self.runners.insert(
            id,
            SimRunner {
                id,
                name: name.into(),
                scope: scope.clone(),
                os: "Linux".into(),
                status: "offline".into(),
                busy: false,
                labels,
                runner_group_id: group,
                ephemeral: true,
                jit,
                work_folder: work_folder.into(),
                secret: random_token("", 40),
                scale_set_id: None,
                label_ids,
                last_seen: None,
            },
        );
        id
    }

    /// Charges one request to `key`'s budget; returns it after the charge, or `None` when the
    /// budget was already empty.
    fn charge(&mut self, key: &str) -> (Budget, bool) {
        let now = epoch();
        let limit = self.rate_limit;
        let b = self.budgets.entry(key.to_string()).or_insert(Budget {
            limit,
            used: 0,
            reset_epoch: now + 3600,
        });
        if now >= b.reset_epoch {
            *b = Budget {
                limit,
                used: 0,
                reset_epoch: now + 3600,
            };
        }
        if b.used >= b.limit {
            return (b.clone(), false);
        }
        b.used += 1;
        (b.clone(), true)
    }

    fn peek(&self, key: &str) -> Budget {
        self.budgets.get(key).cloned().unwrap_or(Budget {
            limit: self.rate_limit,
            used: 0,
            reset_epoch: epoch() + 3600,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP

impl Request {
    fn query_param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k) == name).then(|| percent_decode(v))
        })
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The release asset this answer carries, counted once it was sent whole.
    asset: Option<String>,
    /// [`Fault::CutBody`]: close after this many body bytes.
    cut_after: Option<usize>,
}

impl Reply {
    fn json(status: u16, body: &Value) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: serde_json::to_vec(body).unwrap(),
            asset: None,
            cut_after: None,
        }
    }

    fn empty(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            asset: None,
            cut_after: None,
        }
    }

    fn error(status: u16, message: &str) -> Reply {
        Reply::json(
            status,
            &json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
        )
    }

    fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }

    fn header(mut self, k: &str, v: impl ToString) -> Reply {
        self.headers.push((k.into(), v.to_string()));
        self
    }

    fn rate_headers(self, b: &Budget) -> Reply {
        self.header("x-ratelimit-limit", b.limit)
            .header("x-ratelimit-remaining", b.limit.saturating_sub(b.used))
            .header("x-ratelimit-used", b.used)
            .header("x-ratelimit-reset", b.reset_epoch)
            .header("x-ratelimit-resource", "core")
    }
}

/// What to do with a request.
enum Outcome {
    Reply(Reply),
    /// Close the connection without answering.
    Close,
}

fn serve_connection(conn: TcpStream, state: &Mutex<State>, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(read_half) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(read_half);
    loop {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) | Err(_) => return,
        };
        if stop.load(Ordering::SeqCst) {
            let _ = conn.shutdown(Shutdown::Both);
            return;
        }
        let close = req
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"));
        match handle(state, &req) {
            Outcome::Close => {
                let _ = conn.shutdown(Shutdown::Both);
                return;
            }
            Outcome::Reply(reply) => {
                if write_reply(&conn, &reply, close, state).is_err() || close {
                    let _ = conn.shutdown(Shutdown::Both);
                    return;
                }
            }
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        409 => "Conflict",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

/// Sends `reply`; an error (or a [`Fault::CutBody`]) closes the connection.
fn write_reply(
    mut conn: &TcpStream,
    reply: &Reply,
    close: bool,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        reply.status,
        reason(reply.status),
        reply.body.len(),
        if close { "close" } else { "keep-alive" }
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if let Some(n) = reply.cut_after {
        out.extend_from_slice(&reply.body[..n.min(reply.body.len())]);
        conn.write_all(&out)?;
        conn.flush()?;
        return Err(std::io::Error::other("body cut short"));
    }
    out.extend_from_slice(&reply.body);
    let Some(asset) = &reply.asset else {
        conn.write_all(&out)?;
        return conn.flush();
    };
    // A served asset is counted before its last byte leaves, so a client holding the whole
    // body always finds it counted; it is uncounted again if that byte cannot be sent.
    let count = |delta: isize| {
        let mut st = state.lock().unwrap();
        let n = st.asset_downloads.entry(asset.clone()).or_default();
        *n = n.saturating_add_signed(delta);
    };
    let (most, last) = out.split_at(out.len() - 1);
    conn.write_all(most)?;
    count(1);
    match conn.write_all(last).and_then(|()| conn.flush()) {
        Ok(()) => Ok(()),
        Err(e) => {
            count(-1);
            Err(e)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Dispatch

fn handle(state: &Mutex<State>, req: &Request) -> Outcome {
    let arrived = Instant::now();
    let wall = SystemTime::now();
    let (latency, fault, api_path, seq) = {
        let mut st = state.lock().unwrap();
        st.reap();
        let api_path = match req.path.strip_prefix(st.base.as_str()) {
            Some(p) if !st.base.is_empty() && (p.is_empty() || p.starts_with('/')) => {
                if p.is_empty() {
                    "/".to_string()
                } else {
                    p.to_string()
                }
            }
            _ => req.path.clone(),
        };
        let fault = if sim_control(&api_path) {
            None
        } else {
            let method = req.method.as_str();
            st.faults
                .iter_mut()
                .find_map(|f| (f.matches(method, &api_path) && f.fire()).then_some(&*f))
                .map(|f| (f.fault.clone(), f.reset_epoch))
        };
        st.seq += 1;
        let seq = st.seq;
        st.log.push(Logged {
            seq,
            method: req.method.clone(),
            path: api_path.clone(),
            query: req.query.clone(),
            auth: AuthKind::None,
            status: 0,
            fault: fault.as_ref().map(|(f, _)| f.describe()),
            at: arrived,
            wall,
            bearer: bearer(req)
                .or_else(|| scaleset::remote_auth(req))
                .map(str::to_string),
            user_agent: req.header("user-agent").map(str::to_string),
        });
        (st.latency, fault, api_path, seq)
    };
    if !latency.is_zero() {
        std::thread::sleep(latency);
    }
    if let Some((Fault::Slow(d), _)) = &fault {
        std::thread::sleep(*d);
    }

    let download = api_path.starts_with(RUNNER_DOWNLOAD_PREFIX);
    let service = api_path.starts_with(ACTIONS_SERVICE_PREFIX);
    let queue = api_path.starts_with(SCALESET_QUEUE_PREFIX);
    let passes_through = fault.as_ref().is_none_or(|(f, _)| {
        matches!(
            f,
            Fault::Slow(_) | Fault::ResetAfterProcessing | Fault::CutBody { .. }
        )
    });
    // A message-queue poll may wait for a message: it takes the state only while it looks.
    let polled = (queue && req.method == "GET" && passes_through)
        .then(|| scaleset::poll_queue(state, req, &api_path));
    let mut st = state.lock().unwrap();
    let (outcome, auth) = if sim_control(&api_path) {
        (
            Outcome::Reply(sim_endpoint(&mut st, req, &api_path)),
            AuthKind::None,
        )
    } else {
        match &fault {
            Some((Fault::Reset, _)) => {
                let (auth, _) = fault_auth(&mut st, req, &api_path);
                (Outcome::Close, auth)
            }
            Some((f, reset_epoch)) if !passes_through => {
                let (auth, key) = fault_auth(&mut st, req, &api_path);
                let budget = st.peek(&key);
                (Outcome::Reply(fault_reply(f, *reset_epoch, &budget)), auth)
            }
            _ => {
                let (mut reply, auth) = if let Some(polled) = polled {
                    polled
                } else if download {
                    (download_asset(&st, req, &api_path), AuthKind::None)
                } else if service {
                    scaleset::service(&mut st, req, &api_path)
                } else if queue {
                    scaleset::queue_request(&mut st, req, &api_path)
                } else {
                    api(&mut st, req, &api_path)
                };
                match fault {
                    Some((Fault::ResetAfterProcessing, _)) => (Outcome::Close, auth),
                    Some((Fault::CutBody { after }, _)) => {
                        reply.cut_after = Some(after);
                        (Outcome::Reply(reply), auth)
                    }
                    _ => (Outcome::Reply(reply), auth),
                }
            }
        }
    };
    let status = match &outcome {
        Outcome::Reply(r) => r.status,
        Outcome::Close => 0,
    };
    if let Some(l) = st.log.iter_mut().rev().find(|l| l.seq == seq) {
        l.status = status;
        l.auth = auth;
    }
    match outcome {
        Outcome::Reply(r) => Outcome::Reply(
            r.header("x-github-api-version-selected", API_VERSION)
                .header("x-github-request-id", format!("SIM:{seq:X}")),
        ),
        Outcome::Close => Outcome::Close,
    }
}

/// A `/_sim/` endpoint that steers the simulator or takes a stand-in runner's report: never
/// faulted. Asset downloads and scale-set message queues are under `/_sim/` too but are
/// served like API requests (faults apply).
fn sim_control(api_path: &str) -> bool {
    api_path.starts_with("/_sim/")
        && !api_path.starts_with(RUNNER_DOWNLOAD_PREFIX)
        && !api_path.starts_with(SCALESET_QUEUE_PREFIX)
}

/// How a request that meets a fault authenticated: (kind, rate-limit budget key).
fn fault_auth(st: &mut State, req: &Request, api_path: &str) -> (AuthKind, String) {
    if scaleset::is_scaleset_path(api_path) {
        (scaleset::classify(st, req, api_path), "anonymous".into())
    } else {
        classify_auth(st, req)
    }
}

fn fault_reply(fault: &Fault, reset_epoch: u64, budget: &Budget) -> Reply {
    match fault {
        Fault::Status(s) => {
            let msg = match s {
                502 => "Server Error: bad gateway",
                503 => "Service Unavailable",
                504 => "We couldn't respond to your request in time.",
                _ => "Server Error",
            };
            Reply::error(*s, msg).rate_headers(budget)
        }
        Fault::TooManyRequests { retry_after } => Reply::json(
            429,
            &json!({"message": SECONDARY_MESSAGE, "documentation_url": DOCS_RATE}),
        )
        .rate_headers(budget)
        .header("retry-after", retry_after),
        Fault::SecondaryLimit { retry_after } => {
            let r = Reply::json(
                403,
                &json!({"message": SECONDARY_MESSAGE, "documentation_url": DOCS_RATE}),
            )
            .rate_headers(budget);
            match retry_after {
                Some(s) => r.header("retry-after", s),
                None => r,
            }
        }
        Fault::PrimaryLimit { .. } => {
            let exhausted = Budget {
                limit: budget.limit,
                used: budget.limit,
                reset_epoch,
            };
            Reply::json(
                403,
                &json!({"message": "API rate limit exceeded for user ID 1. If you reach out to GitHub Support for help, please include the request ID 0000:1111.", "documentation_url": DOCS_RATE}),
            )
            .rate_headers(&exhausted)
        }
        Fault::Respond { status, body } => Reply {
            status: *status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.clone().into_bytes(),
            asset: None,
            cut_after: None,
        }
        .rate_headers(budget),
        Fault::Slow(_) | Fault::Reset | Fault::ResetAfterProcessing | Fault::CutBody { .. } => {
            Reply::error(500, "unreachable")
        }
    }
}

/// Who is calling.
enum Caller {
    Anonymous,
    Pat(Vec<SimScope>),
    App(u64),
    Installation(u64),
}

/// Classifies the `Authorization` header without failing: (kind, budget key).
fn classify_auth(st: &mut State, req: &Request) -> (AuthKind, String) {
    match authenticate(st, req) {
        Ok(Caller::Anonymous) => (AuthKind::None, "anonymous".into()),
        Ok(Caller::Pat(_)) => (AuthKind::Pat, budget_key_of(req)),
        Ok(Caller::App(id)) => (AuthKind::Jwt, format!("app:{id}")),
        Ok(Caller::Installation(id)) => (AuthKind::Installation, format!("installation:{id}")),
        Err(_) => (AuthKind::Invalid, "anonymous".into()),
    }
}

fn budget_key_of(req: &Request) -> String {
    format!("token:{}", bearer(req).unwrap_or_default())
}

fn bearer(req: &Request) -> Option<&str> {
    let h = req.header("authorization")?;
    h.strip_prefix("Bearer ")
        .or_else(|| h.strip_prefix("bearer "))
        .or_else(|| h.strip_prefix("token "))
        .map(str::trim)
}

fn authenticate(st: &mut State, req: &Request) -> Result<Caller, Reply> {
    if req.header("authorization").is_none() {
        return Ok(Caller::Anonymous);
    }
    let Some(token) = bearer(req) else {
        return Err(Reply::error(401, "Bad credentials").header("www-authenticate", "Bearer"));
    };
    if looks_like_jwt(token) {
        return verify_jwt(st, token)
            .map(Caller::App)
            .map_err(|m| Reply::error(401, &m));
    }
    if let Some(scopes) = st.pats.get(token) {
        return Ok(Caller::Pat(scopes.clone()));
    }
    if let Some(t) = st.installation_tokens.get(token) {
        if !t.revoked && epoch() < t.expires_epoch {
            return Ok(Caller::Installation(t.installation_id));
        }
    }
    Err(Reply::error(401, "Bad credentials"))
}

fn looks_like_jwt(token: &str) -> bool {
    token.starts_with("eyJ") && token.split('.').count() == 3
}

/// Checks an App JWT like GitHub: RS256, signed by the app named in `iss`, `exp` in the future
/// and at most 10 minutes ahead, `iat` not in the future. Returns the app id.
fn verify_jwt(st: &State, jwt: &str) -> Result<u64, String> {
    const UNDECODABLE: &str = "A JSON web token could not be decoded";
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(UNDECODABLE.into());
    };
    let header: Value = b64
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(UNDECODABLE)?;
    let claims: Value = b64
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(UNDECODABLE)?;
    let sig = b64.decode(s).map_err(|_| UNDECODABLE)?;
    if header["alg"] != "RS256" {
        return Err(UNDECODABLE.into());
    }
    let app_id = match &claims["iss"] {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or("'Issuer' claim ('iss') must be an Integer")?;
    let app = st.apps.get(&app_id).ok_or("Integration not found")?;
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
        &app.public_der,
    );
    key.verify(format!("{h}.{p}").as_bytes(), &sig)
        .map_err(|_| UNDECODABLE)?;
    let now = epoch() as i64;
    let iat = claims["iat"]
        .as_i64()
        .ok_or("'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued")?;
    let exp = claims["exp"]
        .as_i64()
        .ok_or("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires")?;
    if iat > now + 5 {
        return Err(
            "'Issued at' claim ('iat') must be an Integer representing a time in the past".into(),
        );
    }
    if exp <= now {
        return Err("'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires".into());
    }
    if exp > now + 600 || exp <= iat {
        return Err("'Expiration time' claim ('exp') is too far in the future".into());
    }
    Ok(app_id)
}

/// The API proper: header checks, auth, rate limit, routes.
fn api(st: &mut State, req: &Request, path: &str) -> (Reply, AuthKind) {
    if !st.base.is_empty() && !req.path.starts_with(&format!("{}/", st.base)) {
        return (Reply::not_found(), AuthKind::None);
    }
    // The scale-set bootstrap takes `RemoteAuth` and, like GitHub, no API version header.
    if path == RUNNER_REGISTRATION_PATH {
        return scaleset::runner_registration(st, req);
    }
    let accept = req.header("accept").unwrap_or("");
    if !(accept.contains("application/vnd.github") || accept.contains("application/json")) {
        let msg =
            format!("Unsupported 'Accept' header: {accept:?}. Must accept 'application/json'.");
        return (Reply::error(415, &msg), AuthKind::None);
    }
    // The releases listing is public and read by clients that may point at a mirror: like
    // GitHub, it takes requests without a version header.
    let releases =
        path == RUNNER_RELEASES_PATH || path.starts_with(&format!("{RUNNER_RELEASES_PATH}/"));
    match req.header("x-github-api-version") {
        Some(API_VERSION) => {}
        None if releases => {}
        Some(v) => {
            let msg = format!("API version {v} is not supported.");
            return (Reply::error(400, &msg), AuthKind::None);
        }
        None => {
            let msg = format!(
                "X-GitHub-Api-Version header missing (this simulator requires {API_VERSION})"
            );
            return (Reply::error(400, &msg), AuthKind::None);
        }
    }
    if req.header("user-agent").is_none_or(str::is_empty) {
        return (
            Reply::error(403, "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/rest/overview/resources-in-the-rest-api#user-agent-required)."),
            AuthKind::None,
        );
    }

    let caller = match authenticate(st, req) {
        Ok(c) => c,
        Err(reply) => {
            let b = st.charge("anonymous").0;
            return (reply.rate_headers(&b), AuthKind::Invalid);
        }
    };
    let (kind, key) = match &caller {
        Caller::Anonymous => (AuthKind::None, "anonymous".to_string()),
        Caller::Pat(_) => (AuthKind::Pat, budget_key_of(req)),
        Caller::App(id) => (AuthKind::Jwt, format!("app:{id}")),
        Caller::Installation(id) => (AuthKind::Installation, format!("installation:{id}")),
    };
    let (budget, ok) = st.charge(&key);
    if !ok {
        let reply = Reply::json(
            403,
            &json!({"message": "API rate limit exceeded for this token.", "documentation_url": DOCS_RATE}),
        );
        return (reply.rate_headers(&budget), kind);
    }
    let reply = route(st, req, path, &caller);
    (reply.rate_headers(&budget), kind)
}

fn route(st: &mut State, req: &Request, path: &str, caller: &Caller) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method.as_str();
    if let ["app", rest @ ..] = segs.as_slice() {
        let Caller::App(app_id) = caller else {
            return match caller {
                Caller::Anonymous => requires_auth(),
                _ => Reply::error(401, "A JSON web token could not be decoded"),
            };
        };
        return app_route(st, req, method, rest, *app_id);
    }
    if let ["repos", "actions", "runner", "releases", rest @ ..] = segs.as_slice() {
        // Public: any caller that authenticated (or none) may read them.
        return releases_route(st, req, method, rest);
    }
    let (scope, rest) = match segs.as_slice() {
        ["repos", o, r, rest @ ..] => (SimScope::Repo(format!("{o}/{r}")), rest),
        ["orgs", o, rest @ ..] => (SimScope::Org((*o).into()), rest),
        ["enterprises", e, rest @ ..] => (SimScope::Enterprise((*e).into()), rest),
        _ => return Reply::not_found(),
    };

    if rest == ["installation"] {
        if method != "GET" {
            return Reply::not_found();
        }
        return match caller {
            Caller::Anonymous => requires_auth(),
            Caller::App(app_id) => {
                if matches!(scope, SimScope::Enterprise(_)) {
                    return Reply::not_found();
                }
                match st
                    .installations
                    .values()
                    .find(|i| i.app_id == *app_id && i.scopes.contains(&scope))
                {
                    Some(i) => Reply::json(200, &installation_json(st, i)),
                    None => Reply::not_found(),
                }
            }
            _ => Reply::error(401, "A JSON web token could not be decoded"),
        };
    }

    // Everything else is the runner API and needs runner admin rights on the scope.
    let rights = match caller {
        Caller::Anonymous => return requires_auth(),
        Caller::App(_) => {
            return Reply::error(403, "Resource not accessible by integration");
        }
        Caller::Pat(scopes) => scopes.contains(&scope),
        Caller::Installation(id) => st
            .installations
            .get(id)
            .is_some_and(|i| i.scopes.contains(&scope)),
    };
    if !st.scopes.contains(&scope) {
        return Reply::not_found();
    }
    if !rights {
        return match (caller, &scope) {
            // A repository the token cannot see does not exist for it.
            (Caller::Pat(_), SimScope::Repo(_)) => Reply::not_found(),
            (Caller::Pat(_), _) => {
                Reply::error(403, "Resource not accessible by personal access token")
            }
            _ => Reply::error(403, "Resource not accessible by integration"),
        };
    }

    match (method, rest) {
        ("GET", ["actions", "runners"]) => list_runners(st, req, &scope),
        ("POST", ["actions", "runners", "generate-jitconfig"]) => generate_jit(st, req, &scope),
        ("POST", ["actions", "runners", "registration-token"]) => {
            let token = random_token("A", 29).to_uppercase();
            st.registration_tokens.push((scope.clone(), token.clone()));
            Reply::json(
                201,
                &json!({"token": token, "expires_at": iso8601(epoch() + 3600, true)}),
            )
        }
        ("POST", ["actions", "runners", "remove-token"]) => {
            let token = random_token("A", 29).to_uppercase();
            st.remove_tokens.push((scope.clone(), token.clone()));
            Reply::json(
                201,
                &json!({"token": token, "expires_at": iso8601(epoch() + 3600, true)}),
            )
        }
        ("GET", ["actions", "runners", id]) => match runner_in(st, &scope, id) {
            Some(r) => Reply::json(200, &r.json()),
            None => Reply::not_found(),
        },
        ("DELETE", ["actions", "runners", id]) => match runner_in(st, &scope, id) {
            Some(r) if r.busy => Reply::error(
                422,
                &format!(
                    "Bad request - Runner \"{}\" is still running a job\"",
                    r.name
                ),
            ),
            Some(r) => {
                let id = r.id;
                scaleset::runner_removed(st, id);
                st.runners.remove(&id);
                Reply::empty(204)
            }
            None => Reply::not_found(),
        },
        ("GET", ["actions", "runner-groups"]) if scope.has_groups() => {
            let groups: Vec<Value> = st
                .groups
                .iter()
                .filter(|g| g.scope == scope)
                .map(|g| {
                    json!({
                        "id": g.id,
                        "name": g.name,
                        "visibility": "all",
                        "default": g.default,
                        "inherited": false,
                        "allows_public_repositories": false,
                        "restricted_to_workflows": false,
                        "selected_workflows": [],
                        "workflow_restrictions_read_only": false,
                        "runners_url": format!("{}{}{}/actions/runner-groups/{}/runners", st.server_url, st.base, scope.path(), g.id),
                    })
                })
                .collect();
            let (total, page) = paginate(req, groups);
            Reply::json(200, &json!({"total_count": total, "runner_groups": page}))
        }
        _ => Reply::not_found(),
    }
}

fn requires_auth() -> Reply {
    Reply::error(401, "Requires authentication")
}

fn runner_in<'a>(st: &'a State, scope: &SimScope, id: &str) -> Option<&'a SimRunner> {
    let id: u64 = id.parse().ok()?;
    st.runners.get(&id).filter(|r| &r.scope == scope)
}

/// `per_page` (default 30, at most 100) and `page` (from 1) of a request.
fn page_params(req: &Request) -> (usize, usize) {
    let per_page = req
        .query_param("per_page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(30)
        .clamp(1, MAX_PER_PAGE);
    let page = req
        .query_param("page")
        .and_then(|p| p.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    (per_page, page)
}

/// `per_page` (default 30, at most 100) and `page` (from 1) applied to `items`.
fn paginate(req: &Request, items: Vec<Value>) -> (usize, Vec<Value>) {
    let (per_page, page) = page_params(req);
    let total = items.len();
    let page = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    (total, page)
}

fn list_runners(st: &State, req: &Request, scope: &SimScope) -> Reply {
    let name = req.query_param("name");
    let runners: Vec<Value> = st
        .runners
        .values()
        .filter(|r| &r.scope == scope && name.as_ref().is_none_or(|n| &r.name == n))
        .map(SimRunner::json)
        .collect();
    let (total, page) = paginate(req, runners);
    Reply::json(200, &json!({"total_count": total, "runners": page}))
}

fn invalid(detail: &str) -> Reply {
    Reply::error(422, &format!("Invalid request.\n\n{detail}"))
}

fn generate_jit(st: &mut State, req: &Request, scope: &SimScope) -> Reply {
    let Ok(body) = serde_json::from_slice::<Value>(&req.body) else {
        return Reply::error(400, "Problems parsing JSON");
    };
    let Some(obj) = body.as_object() else {
        return invalid("For 'links/0/schema', the request body is not an object.");
    };
    let Some(name) = obj.get("name") else {
        return invalid("missing required key: name");
    };
    let Some(name) = name.as_str().filter(|n| !n.is_empty()) else {
        return invalid("For 'properties/name', the value is not a non-empty string.");
    };
    let Some(group) = obj.get("runner_group_id") else {
        return invalid("missing required key: runner_group_id");
    };
    let Some(group) = group.as_u64() else {
        return invalid("For 'properties/runner_group_id', the value is not an integer.");
    };
    let Some(labels) = obj.get("labels") else {
        return invalid("missing required key: labels");
    };
    let Some(labels) = labels.as_array().and_then(|a| {
        a.iter()
            .map(|l| l.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
    }) else {
        return invalid("For 'properties/labels', the value is not an array of strings.");
    };
    if labels.is_empty() {
        return invalid("For 'properties/labels', [] has fewer items than 1.");
    }
    if labels.len() > 100 {
        return invalid("For 'properties/labels', the array has more items than 100.");
    }
    let work_folder = match obj.get("work_folder") {
        None => "_work".to_string(),
        Some(Value::String(w)) => w.clone(),
        Some(_) => return invalid("For 'properties/work_folder', the value is not a string."),
    };
    let group_name = if scope.has_groups() {
        match st
            .groups
            .iter()
            .find(|g| &g.scope == scope && g.id == group)
        {
            Some(g) => g.name.clone(),
            None => return Reply::not_found(),
        }
    } else if group == 1 {
        "Default".to_string()
    } else {
        return Reply::not_found();
    };
    if st
        .runners
        .values()
        .any(|r| &r.scope == scope && r.name == name)
    {
        return Reply::error(
            409,
            &format!("Already exists - A runner with the name {name} already exists."),
        );
    }
    let id = st.new_runner(scope, name, &labels, group, &work_folder, true);
    let runner = st.runners[&id].clone();
    let config = jit_config(st, scope, &runner, &group_name);
    Reply::json(
        201,
        &json!({"runner": runner.json(), "encoded_jit_config": config}),
    )
}

/// The real `encoded_jit_config` shape: base64 of `{filename: base64(content)}`.
fn jit_config(st: &State, scope: &SimScope, r: &SimRunner, group_name: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let sim_url = format!("{}/_sim/runners/{}", st.server_url, r.id);
    let git_hub_url = match scope {
        SimScope::Repo(x) | SimScope::Org(x) => format!("{}/{x}", st.server_url),
        SimScope::Enterprise(e) => format!("{}/enterprises/{e}", st.server_url),
    };
    let runner = json!({
        "agentId": r.id,
        "agentName": r.name,
        "poolId": r.runner_group_id,
        "poolName": group_name,
        "serverUrl": st.server_url,
        "gitHubUrl": git_hub_url,
        "workFolder": r.work_folder,
        "ephemeral": true,
        "disableUpdate": false,
        "useV2Flow": true,
        "simRunnerUrl": sim_url,
    });
    let credentials = json!({
        "scheme": "OAuth",
        "data": {
            "clientId": random_token("", 32),
            "authorizationUrl": format!("{sim_url}/token"),
            "requireFipsCryptography": "True",
            "simSecret": r.secret,
        },
    });
    let rand_b64 = |n: usize| b64.encode((0..n).map(|_| rand::random::<u8>()).collect::<Vec<u8>>());
    let rsaparams = json!({
        "d": rand_b64(256), "dp": rand_b64(128), "dq": rand_b64(128), "exponent": "AQAB",
        "inverseQ": rand_b64(128), "modulus": rand_b64(256), "p": rand_b64(128), "q": rand_b64(128),
    });
    let files = json!({
        ".runner": b64.encode(runner.to_string()),
        ".credentials": b64.encode(credentials.to_string()),
        ".credentials_rsaparams": b64.encode(rsaparams.to_string()),
    });
    b64.encode(files.to_string())
}

fn installation_json(st: &State, i: &Installation) -> Value {
    let first = i.scopes.first();
    let login = first.map(|s| s.account().to_string()).unwrap_or_default();
    let (target_type, selection) = match first {
        Some(SimScope::Enterprise(_)) => ("Enterprise", "all"),
        Some(SimScope::Org(_)) => ("Organization", "all"),
        Some(SimScope::Repo(_)) if st.scopes.contains(&SimScope::Org(login.clone())) => {
            ("Organization", "selected")
        }
        _ => ("User", "selected"),
    };
    json!({
        "id": i.id,
        "app_id": i.app_id,
        "target_type": target_type,
        "target_id": 100 + i.id,
        "account": {"login": login, "id": 100 + i.id, "type": target_type},
        "repository_selection": selection,
        "access_tokens_url": format!("{}{}/app/installations/{}/access_tokens", st.server_url, st.base, i.id),
        "permissions": {
            "administration": "write",
            "organization_self_hosted_runners": "write",
            "enterprise_self_hosted_runners": "write",
            "metadata": "read",
        },
        "events": [],
    })
}

fn app_route(st: &mut State, req: &Request, method: &str, rest: &[&str], app_id: u64) -> Reply {
    match (method, rest) {
        ("GET", []) => Reply::json(
            200,
            &json!({"id": app_id, "slug": format!("sim-app-{app_id}"), "name": format!("Sim App {app_id}")}),
        ),
        ("GET", ["installations"]) => {
            let all: Vec<Value> = st
                .installations
                .values()
                .filter(|i| i.app_id == app_id)
                .map(|i| installation_json(st, i))
                .collect();
            let (_, page) = paginate(req, all);
            Reply::json(200, &Value::Array(page))
        }
        ("GET", ["installations", id]) => match installation_of(st, id, app_id) {
            Some(i) => Reply::json(200, &installation_json(st, &i)),
            None => Reply::not_found(),
        },
        ("POST", ["installations", id, "access_tokens"]) => {
            let Some(i) = installation_of(st, id, app_id) else {
                return Reply::not_found();
            };
            if !req.body.is_empty() && serde_json::from_slice::<Value>(&req.body).is_err() {
                return Reply::error(400, "Problems parsing JSON");
            }
            let token = random_token("ghs_", 36);
            let expires = epoch() + st.installation_token_ttl.as_secs();
            st.installation_tokens.insert(
                token.clone(),
                InstallationToken {
                    installation_id: i.id,
                    expires_epoch: expires,
                    revoked: false,
                },
            );
            let selection = installation_json(st, &i)["repository_selection"].clone();
            Reply::json(
                201,
                &json!({
                    "token": token,
                    "expires_at": iso8601(expires, false),
                    "permissions": {"administration": "write", "organization_self_hosted_runners": "write", "metadata": "read"},
                    "repository_selection": selection,
                }),
            )
        }
        _ => Reply::not_found(),
    }
}

fn installation_of(st: &State, id: &str, app_id: u64) -> Option<Installation> {
    let id: u64 = id.parse().ok()?;
    st.installations
        .get(&id)
        .filter(|i| i.app_id == app_id)
        .cloned()
}

// ---------------------------------------------------------------------------------------------
// actions/runner releases and their downloads

/// `GET /repos/actions/runner/releases[/latest|/tags/TAG|/ID]`.
fn releases_route(st: &State, req: &Request, method: &str, rest: &[&str]) -> Reply {
    if method != "GET" {
        return Reply::not_found();
    }
    // Newest first, as GitHub lists them (the later added first among equals).
    let mut all: Vec<&StoredRelease> = st.releases.iter().collect();
    all.sort_by_key(|s| std::cmp::Reverse((s.release.published_at, s.id)));
    let one = |found: Option<&&StoredRelease>| match found {
        Some(s) => Reply::json(200, &release_json(st, s)),
        None => Reply::not_found(),
    };
    match rest {
        [] => {
            let (per_page, page) = page_params(req);
            let items: Vec<Value> = all.iter().map(|s| release_json(st, s)).collect();
            let (total, items) = paginate(req, items);
            let reply = Reply::json(200, &Value::Array(items));
            match link_header(st, req, total, per_page, page) {
                Some(link) => reply.header("Link", link),
                None => reply,
            }
        }
        ["latest"] => one(all
            .iter()
            .find(|s| !s.release.draft && !s.release.prerelease)),
        ["tags", tag] => one(all
            .iter()
            .find(|s| tag.strip_prefix('v') == Some(&s.release.version))),
        [id] => one(all.iter().find(|s| id.parse() == Ok(s.id))),
        _ => Reply::not_found(),
    }
}

/// GitHub's `Link` header for page `page` of `total` items: `first`/`prev` after the first
/// page, `next`/`last` before the last; `None` when everything fits on one page.
fn link_header(
    st: &State,
    req: &Request,
    total: usize,
    per_page: usize,
    page: usize,
) -> Option<String> {
    let last = total.div_ceil(per_page).max(1);
    let url = |p: usize| {
        format!(
            "<{}{}?per_page={per_page}&page={p}>",
            st.server_url, req.path
        )
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    (!links.is_empty()).then(|| links.join(", "))
}

/// The path of asset `name` of release `version` on the simulator:
/// `/_sim/runner-releases/download/v{version}/{name}` (for [`GitHubSim::fail_next`] and
/// [`GitHubSim::count`]).
pub fn runner_asset_path(version: &str, name: &str) -> String {
    format!("{RUNNER_DOWNLOAD_PREFIX}v{version}/{name}")
}

/// A release as GitHub's REST API shows it.
fn release_json(st: &State, s: &StoredRelease) -> Value {
    let r = &s.release;
    let tag = format!("v{}", r.version);
    let time = iso8601(r.published_at, false);
    let assets: Vec<Value> = r
        .assets
        .iter()
        .zip(&s.asset_ids)
        .map(|((name, bytes), id)| {
            json!({
                "id": id,
                "name": name,
                "label": "",
                "content_type": "application/gzip",
                "state": "uploaded",
                "size": bytes.len(),
                "download_count": st.asset_downloads.get(name).copied().unwrap_or(0),
                "created_at": time,
                "updated_at": time,
                "browser_download_url": format!("{}{}", st.server_url, runner_asset_path(&r.version, name)),
            })
        })
        .collect();
    json!({
        "url": format!("{}{}{RUNNER_RELEASES_PATH}/{}", st.server_url, st.base, s.id),
        "html_url": format!("{}/actions/runner/releases/tag/{tag}", st.server_url),
        "id": s.id,
        "tag_name": tag,
        "target_commitish": "main",
        "name": tag,
        "draft": r.draft,
        "prerelease": r.prerelease,
        "created_at": time,
        "published_at": if r.draft { Value::Null } else { json!(time) },
        "body": r.body,
        "assets": assets,
    })
}

/// `GET /_sim/runner-releases/download/v{version}/{name}`: the asset's bytes.
fn download_asset(st: &State, req: &Request, path: &str) -> Reply {
    let found = path
        .strip_prefix(RUNNER_DOWNLOAD_PREFIX)
        .and_then(|rest| rest.split_once('/'))
        .filter(|_| req.method == "GET")
        .and_then(|(tag, name)| {
            let version = tag.strip_prefix('v')?;
            let s = st.releases.iter().find(|s| s.release.version == version)?;
            s.release.assets.iter().find(|(n, _)| n == name)
        });
    match found {
        Some((name, bytes)) => Reply {
            status: 200,
            headers: vec![("Content-Type".into(), "application/octet-stream".into())],
            body: bytes.clone(),
            asset: Some(name.clone()),
            cut_after: None,
        },
        None => Reply::not_found(),
    }
}

// ---------------------------------------------------------------------------------------------
// /_sim/: the stand-in runner's reports and control for tests that run the simulator as a
// process.

fn sim_endpoint(st: &mut State, req: &Request, path: &str) -> Reply {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (req.method.as_str(), &segs[1..]) {
        ("GET", ["runners"]) => {
            let all: Vec<Value> = st
                .runners
                .values()
                .map(|r| {
                    let mut v = r.json();
                    v["scope"] = json!(r.scope.tag());
                    v["jit"] = json!(r.jit);
                    v["scale_set_id"] = json!(r.scale_set_id);
                    v
                })
                .collect();
            Reply::json(200, &Value::Array(all))
        }
        ("POST", ["runners"]) => {
            let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
                return Reply::error(400, "Problems parsing JSON");
            };
            let scope = v["scope"].as_str().and_then(SimScope::from_tag);
            let (Some(scope), Some(name)) = (scope, v["name"].as_str()) else {
                return Reply::error(422, "need scope (repo:o/r, org:o, enterprise:e) and name");
            };
            if !st.scopes.contains(&scope) {
                return Reply::not_found();
            }
            let labels: Vec<String> = v["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let state = match v["state"].as_str().unwrap_or("offline") {
                "online" => RunnerState::Online,
                "busy" => RunnerState::Busy,
                _ => RunnerState::Offline,
            };
            let id = st.new_runner(&scope, name, &labels, 1, "_work", false);
            let r = st.runners.get_mut(&id).unwrap();
            r.set_state(state);
            Reply::json(201, &r.json())
        }
        ("GET", ["requests"]) => {
            let all: Vec<Value> = st
                .log
                .iter()
                .map(|l| {
                    let wall_ms = l
                        .wall
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    json!({"method": l.method, "path": l.path, "query": l.query,
                           "auth": format!("{:?}", l.auth), "status": l.status, "fault": l.fault,
                           "wall_ms": wall_ms})
                })
                .collect();
            Reply::json(200, &Value::Array(all))
        }
        ("POST", ["faults"]) => match parse_fault(&req.body) {
            Ok((method, prefix, trigger, fault)) => {
                st.add_fault(&method, &prefix, trigger, fault);
                Reply::empty(204)
            }
            Err(m) => Reply::error(422, &m),
        },
        ("DELETE", ["faults"]) => {
            st.faults.clear();
            Reply::empty(204)
        }
        ("GET" | "POST", ["runners", id, "job"]) => scaleset::runner_job(st, req, id),
        (_, ["scalesets", ..] | ["expire-queue-tokens" | "expire-admin-tokens"]) => {
            scaleset::sim_endpoint(st, req, &segs[1..])
        }
        ("POST", ["runners", id, event]) => {
            let Some(id) = id
                .parse::<u64>()
                .ok()
                .filter(|id| st.runners.contains_key(id))
            else {
                return Reply::not_found();
            };
            if runner_secret(req) != st.runners[&id].secret {
                return Reply::error(403, "wrong runner secret");
            }
            if st.runners[&id].scale_set_id.is_some() {
                // Its job (JobStarted, JobCompleted) before its state changes.
                scaleset::runner_event(st, req, id, event);
            }
            let r = st.runners.get_mut(&id).unwrap();
            r.last_seen = Some(Instant::now());
            match *event {
                "online" => r.set_state(RunnerState::Online),
                "job-started" => r.set_state(RunnerState::Busy),
                "heartbeat" if r.status == "offline" => r.set_state(RunnerState::Online),
                "heartbeat" => {}
                "offline" => {
                    r.set_state(RunnerState::Offline);
                    r.last_seen = None;
                }
                "job-finished" => {
                    r.set_state(RunnerState::Online);
                    if r.ephemeral {
                        let id = r.id;
                        st.runners.remove(&id);
                        return Reply::json(200, &json!({"deleted": true}));
                    }
                }
                _ => return Reply::not_found(),
            }
            Reply::json(200, &r.json())
        }
        _ => Reply::not_found(),
    }
}

/// The secret a stand-in runner sent: the whole body (`--post-data=SECRET`), `secret=…` in the
/// body, or `?secret=…`.
fn runner_secret(req: &Request) -> String {
    let body = String::from_utf8_lossy(&req.body).trim().to_string();
    body.strip_prefix("secret=")
        .map(percent_decode)
        .or_else(|| req.query_param("secret"))
        .unwrap_or(body)
}

/// `{"method":"POST","path_prefix":"/orgs/","times":2,"probability":0.5,"seed":1,
///   "fault":"status"|"429"|"secondary"|"primary"|"slow"|"reset"|"reset-after"|"cut-body",
///   "status":503,"retry_after":1,"reset_in_ms":1000,"delay_ms":500,"after_bytes":100}`
fn parse_fault(body: &[u8]) -> Result<(String, String, Trigger, Fault), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let method = v["method"].as_str().unwrap_or("*").to_string();
    let prefix = v["path_prefix"].as_str().unwrap_or("/").to_string();
    let trigger = match v["probability"].as_f64() {
        Some(p) => Trigger::Probability {
            p,
            rng: v["seed"].as_u64().unwrap_or(0),
        },
        None => Trigger::Next(v["times"].as_u64().unwrap_or(1) as usize),
    };
    let ms = |k: &str| Duration::from_millis(v[k].as_u64().unwrap_or(1000));
    let fault = match v["fault"].as_str().unwrap_or("") {
        "status" => Fault::Status(v["status"].as_u64().unwrap_or(500) as u16),
        "429" => Fault::TooManyRequests {
            retry_after: v["retry_after"].as_u64().unwrap_or(1),
        },
        "secondary" => Fault::SecondaryLimit {
            retry_after: v["retry_after"].as_u64(),
        },
        "primary" => Fault::PrimaryLimit {
            reset_in: ms("reset_in_ms"),
        },
        "slow" => Fault::Slow(ms("delay_ms")),
        "reset" => Fault::Reset,
        "reset-after" => Fault::ResetAfterProcessing,
        "cut-body" => Fault::CutBody {
            after: v["after_bytes"].as_u64().unwrap_or(0) as usize,
        },
        other => return Err(format!("unknown fault {other:?}")),
    };
    Ok((method, prefix, trigger, fault))
}

// ---------------------------------------------------------------------------------------------
// Stand-in actions/runner releases

/// The asset name GitHub uses: `actions-runner-{platform}-{version}.tar.gz`, platform
/// `linux-x64` or `linux-arm64`.
pub fn runner_asset_name(platform: &str, version: &str) -> String {
    format!("actions-runner-{platform}-{version}.tar.gz")
}

/// A `linux-x64` stand-in runner tarball: see [`runner_tarball_for`].
pub fn runner_tarball(version: &str, listener: &str) -> Vec<u8> {
    runner_tarball_for("linux-x64", version, listener)
}

/// A stand-in runner tarball (gzip, GNU tar) with the real actions-runner layout, its entries
/// prefixed `./` as in the real tarballs:
///
/// `./`, `./bin/`, `./bin/Runner.Listener` (= `listener`), `./bin/Runner.Listener.deps.json`
/// (naming `"Runner.Listener/{version}"` and the runtime `…/{platform}` as the real .NET deps
/// file does, so a version can be read from it), `./bin/Runner.Worker` (a stub that fails),
/// `./bin/installdependencies.sh`, `./config.sh` (runs `bin/Runner.Listener configure`),
/// `./env.sh`, `./externals/` (empty), `./run-helper.sh.template`, `./run.sh` (copies the
/// template to `run-helper.sh` in its own directory, which must then be writable, and runs it:
/// `bin/Runner.Listener run "$@"`, the real chain) and `./safe_sleep.sh`.
///
/// Scripts are `#!/bin/sh` and mode 0755, other files 0644, directories 0755: all readable by
/// others. Entries belong to 1001:127 (`runner`:`docker`, a CI build's owner, not root) and
/// carry a fixed mtime, so the same arguments give the same bytes (and checksum).
/// `platform` makes the tarballs of one version differ by platform, as real ones do.
pub fn runner_tarball_for(platform: &str, version: &str, listener: &str) -> Vec<u8> {
    const CONFIG_SH: &str = "#!/bin/sh\n# Stand-in for the actions runner's config.sh.\n\
        dir=$(cd \"$(dirname \"$0\")\" && pwd) || exit 1\n\
        exec \"$dir/bin/Runner.Listener\" configure \"$@\"\n";
    const RUN_SH: &str = "#!/bin/sh\n# Stand-in for the actions runner's run.sh: like the real \
        one, it copies run-helper.sh.template\n# next to itself and runs the copy.\n\
        dir=$(cd \"$(dirname \"$0\")\" && pwd) || exit 1\n\
        cp -f \"$dir/run-helper.sh.template\" \"$dir/run-helper.sh\" || exit 1\n\
        exec \"$dir/run-helper.sh\" \"$@\"\n";
    const RUN_HELPER: &str = "#!/bin/sh\n# Stand-in for the actions runner's run-helper.sh.\n\
        dir=$(cd \"$(dirname \"$0\")\" && pwd) || exit 1\n\
        exec \"$dir/bin/Runner.Listener\" run \"$@\"\n";
    const ENV_SH: &str = "#!/bin/sh\n# Stand-in for the actions runner's env.sh: records PATH \
        and LANG for the runner.\n\
        dir=$(cd \"$(dirname \"$0\")\" && pwd) || exit 1\n\
        printf '%s\\n' \"$PATH\" >\"$dir/.path\"\n\
        printf 'LANG=%s\\n' \"${LANG:-C.UTF-8}\" >\"$dir/.env\"\n";
    const SAFE_SLEEP: &str =
        "#!/bin/sh\n# Stand-in for the actions runner's safe_sleep.sh.\nexec sleep \"$1\"\n";
    const WORKER: &str = "#!/bin/sh\n# Stand-in for the actions runner's Runner.Worker: it \
        runs no job.\necho 'Runner.Worker: a stand-in runs no job' >&2\nexit 1\n";
    const INSTALL_DEPS: &str = "#!/bin/sh\n# Stand-in for the actions runner's \
        installdependencies.sh.\necho 'installdependencies.sh: nothing to install'\n";
    let rid = format!(".NETCoreApp,Version=v8.0/{platform}");
    let lib = |name: &str| format!("{name}/{version}");
    let deps = json!({
        "runtimeTarget": {"name": rid, "signature": ""},
        "compilationOptions": {},
        "targets": {
            ".NETCoreApp,Version=v8.0": {},
            rid.clone(): {
                lib("Runner.Listener"): {
                    "dependencies": {"Runner.Common": version, "Runner.Sdk": version},
                    "runtime": {"Runner.Listener.dll": {}},
                },
                lib("Runner.Common"): {"runtime": {"Runner.Common.dll": {}}},
                lib("Runner.Sdk"): {"runtime": {"Runner.Sdk.dll": {}}},
            },
        },
        "libraries": {
            lib("Runner.Listener"): {"type": "project", "serviceable": false, "sha512": ""},
            lib("Runner.Common"): {"type": "project", "serviceable": false, "sha512": ""},
            lib("Runner.Sdk"): {"type": "project", "serviceable": false, "sha512": ""},
        },
    });
    let deps = serde_json::to_string_pretty(&deps).unwrap();
    // (path, mode, contents); a path ending in `/` is a directory.
    let entries: [(&str, u32, &str); 12] = [
        ("./", 0o755, ""),
        ("./bin/", 0o755, ""),
        ("./bin/Runner.Listener", 0o755, listener),
        ("./bin/Runner.Listener.deps.json", 0o644, &deps),
        ("./bin/Runner.Worker", 0o755, WORKER),
        ("./bin/installdependencies.sh", 0o755, INSTALL_DEPS),
        ("./config.sh", 0o755, CONFIG_SH),
        ("./env.sh", 0o755, ENV_SH),
        ("./externals/", 0o755, ""),
        ("./run-helper.sh.template", 0o755, RUN_HELPER),
        ("./run.sh", 0o755, RUN_SH),
        ("./safe_sleep.sh", 0o755, SAFE_SLEEP),
    ];
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, mode, contents) in entries {
        let mut h = tar::Header::new_gnu();
        // Written by hand: the tar crate drops a leading `./`.
        h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
        if path.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(contents.len() as u64);
        }
        h.set_mode(mode);
        h.set_uid(1001);
        h.set_gid(127);
        h.set_username("runner").unwrap();
        h.set_groupname("docker").unwrap();
        h.set_mtime(1_767_225_600);
        h.set_cksum();
        tar.append(&h, contents.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// The SHA-256 of `bytes`, lower-case hex (as the release notes give it).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A release body like actions/runner's: some release notes, then one checksum line per
/// (platform, SHA-256 hex) in the real format:
/// `- actions-runner-linux-x64-2.330.0.tar.gz <!-- BEGIN SHA linux-x64 -->HEX<!-- END SHA linux-x64 -->`.
pub fn runner_release_body(version: &str, sums: &[(&str, &str)]) -> String {
    let mut body = format!(
        "## What's Changed\n* A stand-in release of the GitHub simulator ({version})\n\n\
         **Full Changelog**: v{version}\n\n_Note: Actions Runner follows a progressive release \
         policy, so the latest release might not be available to your enterprise, organization, \
         or repository yet._\n"
    );
    for (platform, _) in sums {
        let name = runner_asset_name(platform, version);
        body.push_str(&format!(
            "\n## {platform}\n\n``` bash\n# Create a folder\nmkdir actions-runner && cd \
             actions-runner\n# Extract the installer\ntar xzf ./{name}\n```\n"
        ));
    }
    body.push_str(
        "\n## SHA-256 Checksums\n\nThe SHA-256 checksums for the packages included in this \
         build are shown below:\n\n",
    );
    for (platform, sum) in sums {
        let name = runner_asset_name(platform, version);
        body.push_str(&format!(
            "- {name} <!-- BEGIN SHA {platform} -->{sum}<!-- END SHA {platform} -->\n"
        ));
    }
    body
}

/// A whole release for `linux-x64` and `linux-arm64` with `listener` as `bin/Runner.Listener`,
/// its checksums in the body: the common case for tests.
pub fn stand_in_release(version: &str, published_at: u64, listener: &str) -> SimRelease {
    let assets: Vec<(String, Vec<u8>)> = ["linux-x64", "linux-arm64"]
        .iter()
        .map(|p| {
            (
                runner_asset_name(p, version),
                runner_tarball_for(p, version, listener),
            )
        })
        .collect();
    let sums: Vec<(&str, String)> = ["linux-x64", "linux-arm64"]
        .into_iter()
        .zip(&assets)
        .map(|(p, (_, bytes))| (p, sha256_hex(bytes)))
        .collect();
    let sums: Vec<(&str, &str)> = sums.iter().map(|(p, s)| (*p, s.as_str())).collect();
    SimRelease {
        version: version.into(),
        published_at,
        draft: false,
        prerelease: false,
        body: runner_release_body(version, &sums),
        assets,
    }
}

// ---------------------------------------------------------------------------------------------
// Small helpers

fn epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn epoch_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `prefix` plus `len` random alphanumerics.
fn random_token(prefix: &str, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut s = prefix.to_string();
    s.extend((0..len).map(|_| ALNUM[rand::random_range(0..ALNUM.len())] as char));
    s
}

/// An RFC 3339 UTC time: `2024-05-01T12:00:00Z`, or with `millis_offset`
/// `2024-05-01T12:00:00.000+00:00` (registration tokens carry that form on GitHub).
pub fn iso8601(epoch: u64, millis_offset: bool) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    // Days since 1970-01-01 to a civil date (proleptic Gregorian), by 400-year eras.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if millis_offset {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.000+00:00")
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (b[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The DER inside a PEM block.
fn pem_to_der(pem: &str) -> Option<Vec<u8>> {
    let body: String = pem
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("-----"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    //! The simulator's own tests, over raw HTTP (independent of krunner's client).

    use super::*;
    use aws_lc_rs::signature::KeyPair as _;
    use std::io::{BufRead, Read};

    pub(super) struct Resp {
        pub(super) status: u16,
        pub(super) headers: HashMap<String, String>,
        pub(super) body: Value,
        pub(super) bytes: Vec<u8>,
    }

    pub(super) const STD_HEADERS: [(&str, &str); 3] = [
        ("accept", "application/vnd.github+json"),
        ("x-github-api-version", API_VERSION),
        ("user-agent", "sim-self-test"),
    ];

    pub(super) fn raw(
        addr: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<Resp> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        s.write_all(body)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| std::io::Error::other("no answer"))?;
        let head = String::from_utf8_lossy(&out[..split]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let bytes = out[split + 4..].to_vec();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            headers,
            body,
            bytes,
        })
    }

    pub(super) fn call(
        sim: &GitHubSim,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = STD_HEADERS.to_vec();
        if let Some(a) = &auth {
            headers.push(("authorization", a));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let path = format!("{}{path}", sim.base);
        raw(sim.addr(), method, &path, &headers, body.as_bytes()).unwrap()
    }

    fn jit_body(name: &str, group: u64) -> Value {
        json!({"name": name, "runner_group_id": group, "labels": ["krunner"], "work_folder": "_work"})
    }

    pub(super) fn decode_jit(encoded: &str) -> HashMap<String, Value> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let files: HashMap<String, String> =
            serde_json::from_slice(&b64.decode(encoded).unwrap()).unwrap();
        files
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_slice(&b64.decode(v).unwrap()).unwrap()))
            .collect()
    }

    #[test]
    fn headers_and_auth_are_checked_like_github() {
        let sim = GitHubSim::start();
        let org = sim.add_org("acme");
        sim.add_pat("pat-1", &[&org]);
        let r = call(&sim, "GET", "/orgs/acme/actions/runners", None, None);
        assert_eq!(
            (r.status, r.body["message"].as_str()),
            (401, Some("Requires authentication"))
        );
        assert!(r.body["documentation_url"].is_string());
        let r = call(
            &sim,
            "GET",
            "/orgs/acme/actions/runners",
            Some("nope"),
            None,
        );
        assert_eq!(
            (r.status, r.body["message"].as_str()),
            (401, Some("Bad credentials"))
        );

        let no_version = [
            STD_HEADERS[0],
            STD_HEADERS[2],
            ("authorization", "Bearer pat-1"),
        ];
        let r = raw(
            sim.addr(),
            "GET",
            "/orgs/acme/actions/runners",
            &no_version,
            b"",
        )
        .unwrap();
        assert_eq!(r.status, 400);
        let wrong = [
            STD_HEADERS[0],
            ("x-github-api-version", "2099-01-01"),
            STD_HEADERS[2],
            ("authorization", "Bearer pat-1"),
        ];
        assert_eq!(
            raw(sim.addr(), "GET", "/orgs/acme/actions/runners", &wrong, b"")
                .unwrap()
                .status,
            400
        );
        let no_ua = [
            STD_HEADERS[0],
            STD_HEADERS[1],
            ("authorization", "Bearer pat-1"),
        ];
        assert_eq!(
            raw(sim.addr(), "GET", "/orgs/acme/actions/runners", &no_ua, b"")
                .unwrap()
                .status,
            403
        );

        let a = call(
            &sim,
            "GET",
            "/orgs/acme/actions/runners",
            Some("pat-1"),
            None,
        );
        let b = call(
            &sim,
            "GET",
            "/orgs/acme/actions/runners",
            Some("pat-1"),
            None,
        );
        assert_eq!(a.status, 200);
        assert_eq!(a.body, json!({"total_count": 0, "runners": []}));
        let rem = |r: &Resp| r.headers["x-ratelimit-remaining"].parse::<u64>().unwrap();
        assert_eq!(a.headers["x-ratelimit-limit"], "5000");
        assert_eq!(rem(&a), rem(&b) + 1);
        assert_eq!(b.headers["x-ratelimit-used"], "2");
        assert!(b.headers["x-ratelimit-reset"].parse::<u64>().unwrap() > epoch());
        assert_eq!(sim.count("GET", "/orgs/acme/actions/runners"), 7);
        let last = sim.requests().pop().unwrap();
        assert_eq!((last.auth, last.status), (AuthKind::Pat, 200));
    }

    #[test]
    fn tokens_only_reach_their_scopes() {
        let sim = GitHubSim::start();
        let mine = sim.add_repo("me/mine");
        sim.add_repo("other/theirs");
        let org = sim.add_org("acme");
        sim.add_enterprise("big");
        sim.add_pat("pat-1", &[&mine]);
        assert_eq!(
            call(
                &sim,
                "GET",
                "/repos/me/mine/actions/runners",
                Some("pat-1"),
                None
            )
            .status,
            200
        );
        assert_eq!(
            call(
                &sim,
                "GET",
                "/repos/other/theirs/actions/runners",
                Some("pat-1"),
                None
            )
            .status,
            404
        );
        assert_eq!(
            call(
                &sim,
                "GET",
                "/repos/no/such/actions/runners",
                Some("pat-1"),
                None
            )
            .status,
            404
        );
        assert_eq!(
            call(
                &sim,
                "GET",
                "/orgs/acme/actions/runners",
                Some("pat-1"),
                None
            )
            .status,
            403
        );
        assert_eq!(
            call(
                &sim,
                "GET",
                "/enterprises/big/actions/runner-groups",
                Some("pat-1"),
                None
            )
            .status,
            403
        );
        sim.add_pat("pat-2", &[&org]);
        let g = call(
            &sim,
            "GET",
            "/orgs/acme/actions/runner-groups",
            Some("pat-2"),
            None,
        );
        assert_eq!(g.body["runner_groups"][0]["name"], "Default");
        assert_eq!(g.body["runner_groups"][0]["id"], 1);
        // Repositories have no runner-group API.
        assert_eq!(
            call(
                &sim,
                "GET",
                "/repos/me/mine/actions/runner-groups",
                Some("pat-1"),
                None
            )
            .status,
            404
        );
    }

    #[test]
    fn jit_configs_are_real_shaped_and_drive_the_runner_lifecycle() {
        let sim = GitHubSim::start();
        let org = sim.add_org("acme");
        let gpu = sim.add_runner_group(&org, "gpu");
        sim.add_pat("pat", &[&org]);
        let url = "/orgs/acme/actions/runners/generate-jitconfig";
        let r = call(
            &sim,
            "POST",
            url,
            Some("pat"),
            Some(jit_body("vm-1-1", gpu)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["runner"]["id"].as_u64().unwrap();
        assert_eq!(r.body["runner"]["name"], "vm-1-1");
        assert_eq!(r.body["runner"]["status"], "offline");
        assert_eq!(r.body["runner"]["runner_group_id"], gpu);
        let labels = &r.body["runner"]["labels"];
        assert_eq!(
            labels[3],
            json!({"id": labels[3]["id"], "name": "krunner", "type": "custom"})
        );
        assert_eq!(labels[0]["type"], "read-only");

        let files = decode_jit(r.body["encoded_jit_config"].as_str().unwrap());
        let mut names: Vec<&String> = files.keys().collect();
        names.sort();
        assert_eq!(names, [".credentials", ".credentials_rsaparams", ".runner"]);
        assert_eq!(files[".runner"]["agentName"], "vm-1-1");
        assert_eq!(files[".runner"]["agentId"], id);
        assert_eq!(files[".runner"]["serverUrl"], sim.server_url());
        let secret = files[".credentials"]["data"]["simSecret"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(secret, sim.runner(id).unwrap().secret);

        // Shape errors.
        let dup = call(
            &sim,
            "POST",
            url,
            Some("pat"),
            Some(jit_body("vm-1-1", gpu)),
        );
        assert_eq!(dup.status, 409);
        assert_eq!(
            dup.body["message"],
            "Already exists - A runner with the name vm-1-1 already exists."
        );
        let r = call(
            &sim,
            "POST",
            url,
            Some("pat"),
            Some(json!({"name": "x", "labels": ["a"]})),
        );
        assert_eq!(r.status, 422);
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("missing required key: runner_group_id"));
        let r = call(
            &sim,
            "POST",
            url,
            Some("pat"),
            Some(json!({"name": "x", "runner_group_id": 1, "labels": []})),
        );
        assert_eq!(r.status, 422);
        let many: Vec<String> = (0..101).map(|i| format!("l{i}")).collect();
        let r = call(
            &sim,
            "POST",
            url,
            Some("pat"),
            Some(json!({"name": "x", "runner_group_id": 1, "labels": many})),
        );
        assert_eq!(r.status, 422);
        assert_eq!(
            call(&sim, "POST", url, Some("pat"), Some(jit_body("x", 77))).status,
            404
        );
        assert_eq!(sim.runners().len(), 1);

        // The stand-in runner reports with a plain POST carrying the secret.
        let report = |event: &str, body: &str| {
            raw(
                sim.addr(),
                "POST",
                &format!("/_sim/runners/{id}/{event}"),
                &[],
                body.as_bytes(),
            )
            .unwrap()
            .status
        };
        assert_eq!(report("online", "wrong"), 403);
        assert_eq!(report("online", &secret), 200);
        assert_eq!(sim.runner(id).unwrap().state(), RunnerState::Online);
        assert_eq!(report("job-started", &format!("secret={secret}")), 200);
        assert_eq!(sim.runner(id).unwrap().state(), RunnerState::Busy);
        // A busy runner cannot be deleted.
        let del = format!("/orgs/acme/actions/runners/{id}");
        assert_eq!(call(&sim, "DELETE", &del, Some("pat"), None).status, 422);
        assert_eq!(report("job-finished", &secret), 200);
        assert!(
            sim.runner(id).is_none(),
            "an ephemeral runner is gone after its job"
        );
        assert_eq!(call(&sim, "GET", &del, Some("pat"), None).status, 404);
    }

    #[test]
    fn list_get_delete_and_pagination() {
        let sim = GitHubSim::start_at("/api/v3");
        let repo = sim.add_repo("o/r");
        sim.add_pat("pat", &[&repo]);
        let ids: Vec<u64> = (0..5)
            .map(|i| sim.add_runner(&repo, &format!("r-{i}"), &["x"], RunnerState::Offline))
            .collect();
        let page2 = call(
            &sim,
            "GET",
            "/repos/o/r/actions/runners?per_page=2&page=2",
            Some("pat"),
            None,
        );
        assert_eq!(page2.body["total_count"], 5);
        let names: Vec<&str> = page2.body["runners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["r-2", "r-3"]);
        let one = call(
            &sim,
            "GET",
            "/repos/o/r/actions/runners?name=r-4",
            Some("pat"),
            None,
        );
        assert_eq!(one.body["total_count"], 1);
        assert_eq!(one.body["runners"][0]["id"], ids[4]);
        let got = call(
            &sim,
            "GET",
            &format!("/repos/o/r/actions/runners/{}", ids[1]),
            Some("pat"),
            None,
        );
        assert_eq!(got.body["name"], "r-1");
        assert_eq!(
            call(
                &sim,
                "DELETE",
                &format!("/repos/o/r/actions/runners/{}", ids[1]),
                Some("pat"),
                None
            )
            .status,
            204
        );
        assert_eq!(sim.runners().len(), 4);
        // JIT in a repository takes group 1 only.
        let url = "/repos/o/r/actions/runners/generate-jitconfig";
        assert_eq!(
            call(&sim, "POST", url, Some("pat"), Some(jit_body("j", 2))).status,
            404
        );
        assert_eq!(
            call(&sim, "POST", url, Some("pat"), Some(jit_body("j", 1))).status,
            201
        );
        // Outside the base prefix there is nothing; the log shows paths without the prefix.
        let outside = raw(
            sim.addr(),
            "GET",
            "/repos/o/r/actions/runners",
            &STD_HEADERS,
            b"",
        )
        .unwrap();
        assert_eq!(outside.status, 404);
        assert_eq!(
            sim.count("POST", "/repos/o/r/actions/runners/generate-jitconfig"),
            2
        );
        let r = call(
            &sim,
            "POST",
            "/repos/o/r/actions/runners/registration-token",
            Some("pat"),
            None,
        );
        assert_eq!(r.status, 201);
        assert_eq!(
            r.body["token"].as_str(),
            sim.registration_tokens().first().map(String::as_str)
        );
        assert!(r.body["expires_at"].as_str().unwrap().ends_with("+00:00"));
        assert_eq!(
            call(
                &sim,
                "POST",
                "/repos/o/r/actions/runners/remove-token",
                Some("pat"),
                None
            )
            .status,
            201
        );
        assert_eq!(sim.remove_tokens().len(), 1);
    }

    fn b64url(b: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    }

    fn jwt(key: &aws_lc_rs::rsa::KeyPair, claims: &Value) -> String {
        let msg = format!(
            "{}.{}",
            b64url(br#"{"alg":"RS256","typ":"JWT"}"#),
            b64url(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; key.public_modulus_len()];
        key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            msg.as_bytes(),
            &mut sig,
        )
        .unwrap();
        format!("{msg}.{}", b64url(&sig))
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn app_jwts_installations_and_expiring_tokens() {
        let sim = GitHubSim::start();
        let repo = sim.add_repo("me/mine");
        let org = sim.add_org("acme");
        let key = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let other = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        sim.add_app(42, &pem("RSA PUBLIC KEY", key.public_key().as_ref()));
        let repo_inst = sim.add_installation(42, &[&repo]);
        let org_inst = sim.add_installation(42, &[&org]);
        let now = epoch() as i64;
        let good = jwt(&key, &json!({"iat": now - 60, "exp": now + 540, "iss": 42}));
        let good_str_iss = jwt(
            &key,
            &json!({"iat": now - 60, "exp": now + 600, "iss": "42"}),
        );

        for bad in [
            jwt(
                &other,
                &json!({"iat": now - 60, "exp": now + 540, "iss": 42}),
            ),
            jwt(&key, &json!({"iat": now - 60, "exp": now + 900, "iss": 42})),
            jwt(&key, &json!({"iat": now - 700, "exp": now - 10, "iss": 42})),
            jwt(&key, &json!({"iat": now - 60, "exp": now + 540, "iss": 43})),
            "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOjQyfQ.c2ln".to_string(),
        ] {
            let r = call(&sim, "GET", "/app/installations", Some(&bad), None);
            assert_eq!(r.status, 401, "{}", r.body);
        }
        // A PAT is no JWT.
        sim.add_pat("pat", &[&repo]);
        assert_eq!(
            call(&sim, "GET", "/app/installations", Some("pat"), None).status,
            401
        );

        let all = call(&sim, "GET", "/app/installations", Some(&good), None);
        assert_eq!(all.status, 200);
        assert_eq!(all.body.as_array().unwrap().len(), 2);
        assert_eq!(all.body[1]["account"]["login"], "acme");
        let r = call(
            &sim,
            "GET",
            "/repos/me/mine/installation",
            Some(&good_str_iss),
            None,
        );
        assert_eq!(r.body["id"], repo_inst);
        let r = call(&sim, "GET", "/orgs/acme/installation", Some(&good), None);
        assert_eq!(r.body["id"], org_inst);
        assert_eq!(
            call(&sim, "GET", "/orgs/other/installation", Some(&good), None).status,
            404
        );
        // A JWT cannot manage runners itself.
        assert_eq!(
            call(&sim, "GET", "/orgs/acme/actions/runners", Some(&good), None).status,
            403
        );

        let t = call(
            &sim,
            "POST",
            &format!("/app/installations/{org_inst}/access_tokens"),
            Some(&good),
            None,
        );
        assert_eq!(t.status, 201);
        let token = t.body["token"].as_str().unwrap().to_string();
        assert!(token.starts_with("ghs_"));
        assert!(t.body["expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            call(
                &sim,
                "GET",
                "/orgs/acme/actions/runners",
                Some(&token),
                None
            )
            .status,
            200
        );
        // Only its installation's scopes.
        assert_eq!(
            call(
                &sim,
                "GET",
                "/repos/me/mine/actions/runners",
                Some(&token),
                None
            )
            .status,
            403
        );
        assert_eq!(sim.installation_tokens_issued(), 1);
        sim.expire_installation_tokens();
        let r = call(
            &sim,
            "GET",
            "/orgs/acme/actions/runners",
            Some(&token),
            None,
        );
        assert_eq!(
            (r.status, r.body["message"].as_str()),
            (401, Some("Bad credentials"))
        );
        // A token past its lifetime is refused: issued with none, it is expired at once (a
        // short lifetime and a sleep would race the clock on a loaded machine).
        sim.set_installation_token_ttl(Duration::ZERO);
        let t = call(
            &sim,
            "POST",
            &format!("/app/installations/{org_inst}/access_tokens"),
            Some(&good),
            None,
        );
        let token = t.body["token"].as_str().unwrap().to_string();
        assert_eq!(
            call(
                &sim,
                "GET",
                "/orgs/acme/actions/runners",
                Some(&token),
                None
            )
            .status,
            401
        );
    }

    #[test]
    fn faults_fire_by_rule() {
        let sim = GitHubSim::start();
        let org = sim.add_org("acme");
        sim.add_pat("pat", &[&org]);
        let list = "/orgs/acme/actions/runners";
        sim.fail_next("GET", list, 2, Fault::Status(503));
        assert_eq!(call(&sim, "GET", list, Some("pat"), None).status, 503);
        // Another method does not match.
        assert_eq!(
            call(
                &sim,
                "POST",
                "/orgs/acme/actions/runners/registration-token",
                Some("pat"),
                None
            )
            .status,
            201
        );
        assert_eq!(call(&sim, "GET", list, Some("pat"), None).status, 503);
        assert_eq!(call(&sim, "GET", list, Some("pat"), None).status, 200);

        sim.fail_next("*", "/orgs/", 1, Fault::TooManyRequests { retry_after: 3 });
        let r = call(&sim, "GET", list, Some("pat"), None);
        assert_eq!((r.status, r.headers["retry-after"].as_str()), (429, "3"));
        sim.fail_next(
            "*",
            "/orgs/",
            1,
            Fault::SecondaryLimit { retry_after: None },
        );
        let r = call(&sim, "GET", list, Some("pat"), None);
        assert_eq!(r.status, 403);
        assert!(r.body["message"]
            .as_str()
            .unwrap()
            .contains("secondary rate limit"));
        assert!(!r.headers.contains_key("retry-after"));
        assert_ne!(r.headers["x-ratelimit-remaining"], "0");
        sim.fail_next(
            "*",
            "/orgs/",
            1,
            Fault::PrimaryLimit {
                reset_in: Duration::from_secs(5),
            },
        );
        let r = call(&sim, "GET", list, Some("pat"), None);
        assert_eq!(
            (r.status, r.headers["x-ratelimit-remaining"].as_str()),
            (403, "0")
        );
        let reset: u64 = r.headers["x-ratelimit-reset"].parse().unwrap();
        assert!((epoch() + 4..=epoch() + 6).contains(&reset), "{reset}");

        sim.fail_next("*", "/orgs/", 1, Fault::Reset);
        assert!(raw(
            sim.addr(),
            "GET",
            list,
            &[
                STD_HEADERS[0],
                STD_HEADERS[1],
                STD_HEADERS[2],
                ("authorization", "Bearer pat")
            ],
            b""
        )
        .is_err());
        sim.fail_next(
            "POST",
            "/orgs/acme/actions/runners/generate-jitconfig",
            1,
            Fault::ResetAfterProcessing,
        );
        let headers = [
            STD_HEADERS[0],
            STD_HEADERS[1],
            STD_HEADERS[2],
            ("authorization", "Bearer pat"),
        ];
        let body = jit_body("lost", 1).to_string();
        assert!(raw(
            sim.addr(),
            "POST",
            "/orgs/acme/actions/runners/generate-jitconfig",
            &headers,
            body.as_bytes()
        )
        .is_err());
        assert!(
            sim.runner_by_name("lost").is_some(),
            "the request took effect"
        );

        sim.fail_next("GET", list, 1, Fault::Slow(Duration::from_millis(300)));
        let t = Instant::now();
        assert_eq!(call(&sim, "GET", list, Some("pat"), None).status, 200);
        assert!(t.elapsed() >= Duration::from_millis(300));

        // Seeded probabilities are reproducible.
        let pattern = |seed| {
            let sim = GitHubSim::start();
            let org = sim.add_org("acme");
            sim.add_pat("pat", &[&org]);
            sim.fail_randomly("GET", "/orgs/", 0.5, seed, Fault::Status(500));
            (0..16)
                .map(|_| call(&sim, "GET", list, Some("pat"), None).status)
                .collect::<Vec<_>>()
        };
        let a = pattern(7);
        assert_eq!(a, pattern(7));
        assert!(a.contains(&500) && a.contains(&200), "{a:?}");
        let statuses: Vec<u16> = sim.requests().iter().map(|l| l.status).collect();
        assert!(statuses.contains(&0), "resets are logged with status 0");
    }

    #[test]
    fn keep_alive_connections_carry_several_requests() {
        let sim = GitHubSim::start();
        let org = sim.add_org("acme");
        sim.add_pat("pat", &[&org]);
        let mut s = TcpStream::connect(sim.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req = format!(
            "GET /orgs/acme/actions/runners HTTP/1.1\r\nHost: x\r\naccept: application/vnd.github+json\r\nx-github-api-version: {API_VERSION}\r\nuser-agent: t\r\nauthorization: Bearer pat\r\n\r\n"
        );
        let mut reader = BufReader::new(s.try_clone().unwrap());
        for _ in 0..3 {
            s.write_all(req.as_bytes()).unwrap();
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
            let mut len = 0;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                if h == "\r\n" {
                    break;
                }
                if let Some(v) = h.to_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
        }
        assert_eq!(sim.count("GET", "/orgs/acme/actions/runners"), 3);
    }

    #[test]
    fn control_endpoints_for_process_users() {
        let sim = GitHubSim::start();
        sim.add_enterprise("big");
        let add = json!({"scope": "enterprise:big", "name": "keep-me", "labels": ["a"], "state": "online"}).to_string();
        assert_eq!(
            raw(sim.addr(), "POST", "/_sim/runners", &[], add.as_bytes())
                .unwrap()
                .status,
            201
        );
        assert_eq!(
            sim.runner_by_name("keep-me").unwrap().state(),
            RunnerState::Online
        );
        let all = raw(sim.addr(), "GET", "/_sim/runners", &[], b"").unwrap();
        assert_eq!(all.body[0]["scope"], "enterprise:big");
        let fault = json!({"method": "GET", "path_prefix": "/enterprises/", "times": 1, "fault": "status", "status": 502}).to_string();
        assert_eq!(
            raw(sim.addr(), "POST", "/_sim/faults", &[], fault.as_bytes())
                .unwrap()
                .status,
            204
        );
        sim.add_pat("p", &[&SimScope::Enterprise("big".into())]);
        assert_eq!(
            call(
                &sim,
                "GET",
                "/enterprises/big/actions/runners",
                Some("p"),
                None
            )
            .status,
            502
        );
        assert_eq!(
            call(
                &sim,
                "GET",
                "/enterprises/big/actions/runners",
                Some("p"),
                None
            )
            .status,
            200
        );
        let log = raw(sim.addr(), "GET", "/_sim/requests", &[], b"").unwrap();
        assert!(log
            .body
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["status"] == 502));
    }

    /// What a stand-in runner in a test image does with only busybox: decode the config, find
    /// its report URL and secret, and report online, job started, job finished.
    #[test]
    fn busybox_stand_in_runner_reports_back() {
        use crate::util::{skip, Need};
        if skip(&[Need::Tool("busybox")]) {
            return;
        }
        let sim = GitHubSim::start();
        let repo = sim.add_repo("o/r");
        sim.add_pat("pat", &[&repo]);
        let url = "/repos/o/r/actions/runners/generate-jitconfig";
        let r = call(&sim, "POST", url, Some("pat"), Some(jit_body("bb-1", 1)));
        let id = r.body["runner"]["id"].as_u64().unwrap();
        let script = r#"
            set -e
            files=$(echo "$CONFIG" | busybox base64 -d)
            runner=$(echo "$files" | busybox sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | busybox base64 -d)
            creds=$(echo "$files" | busybox sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | busybox base64 -d)
            url=$(echo "$runner" | busybox sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
            secret=$(echo "$creds" | busybox sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
            busybox wget -q -O- --post-data="$secret" "$url/online"
            busybox wget -q -O- --post-data="$secret" "$url/job-started"
            busybox wget -q -O- --post-data="$secret" "$url/job-finished"
        "#;
        let out = std::process::Command::new("busybox")
            .args(["sh", "-c", script])
            .env("CONFIG", r.body["encoded_jit_config"].as_str().unwrap())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            sim.runner(id).is_none(),
            "the ephemeral runner finished and is gone"
        );
        let events: Vec<String> = sim
            .requests()
            .iter()
            .filter(|l| l.path.starts_with("/_sim/"))
            .map(|l| format!("{} {}", l.path, l.status))
            .collect();
        let want: Vec<String> = ["online", "job-started", "job-finished"]
            .iter()
            .map(|e| format!("/_sim/runners/{id}/{e} 200"))
            .collect();
        assert_eq!(events, want);
    }

    #[test]
    fn a_dead_runner_stays_busy_for_a_while_and_cannot_be_deleted_meanwhile() {
        let sim = GitHubSim::start();
        let repo = sim.add_repo("o/r");
        sim.add_pat("pat", &[&repo]);
        sim.set_dead_after(Duration::from_millis(1500));
        let jit = "/repos/o/r/actions/runners/generate-jitconfig";
        let r = call(&sim, "POST", jit, Some("pat"), Some(jit_body("dead-1", 1)));
        let id = r.body["runner"]["id"].as_u64().unwrap();
        let secret = sim.runner(id).unwrap().secret;
        let report = |event: &str| {
            let path = format!("/_sim/runners/{id}/{event}");
            raw(sim.addr(), "POST", &path, &[], secret.as_bytes())
                .unwrap()
                .status
        };
        assert_eq!(report("online"), 200);
        assert_eq!(report("job-started"), 200);
        let started = Instant::now();
        // Heartbeats keep it alive past the delay.
        for _ in 0..4 {
            std::thread::sleep(Duration::from_millis(500));
            assert_eq!(report("heartbeat"), 200);
        }
        assert_eq!(sim.runner(id).unwrap().state(), RunnerState::Busy);
        // The process dies: no heartbeat. Busy, and not deletable, until the simulator notices.
        let died = Instant::now();
        let del = format!("/repos/o/r/actions/runners/{id}");
        loop {
            let state = sim.runner(id).unwrap().state();
            if state == RunnerState::Offline {
                break;
            }
            assert_eq!(state, RunnerState::Busy);
            assert_eq!(call(&sim, "DELETE", &del, Some("pat"), None).status, 422);
            assert!(died.elapsed() < Duration::from_secs(30), "never noticed");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(died.elapsed() >= Duration::from_millis(1500));
        assert!(started.elapsed() >= Duration::from_secs(3));
        assert_eq!(call(&sim, "DELETE", &del, Some("pat"), None).status, 204);
        assert!(sim.runner(id).is_none());
    }

    /// What krunner's releases client sends: no token, no API version.
    const RELEASES_HEADERS: [(&str, &str); 2] = [
        ("accept", "application/vnd.github+json"),
        ("user-agent", "krunner/test"),
    ];

    const LISTENER: &str = "#!/bin/sh\necho stand-in listener \"$@\"\n";

    /// 2026-11-01T12:00:00Z.
    const NOV_1: u64 = 1_793_534_400;

    fn get_releases(sim: &GitHubSim, query: &str) -> Resp {
        let path = format!("{}{RUNNER_RELEASES_PATH}{query}", sim.base);
        raw(sim.addr(), "GET", &path, &RELEASES_HEADERS, b"").unwrap()
    }

    /// The server-relative path of a URL the simulator gave.
    fn local_path<'a>(sim: &GitHubSim, url: &'a str) -> &'a str {
        let server = sim.server_url();
        url.strip_prefix(server.as_str()).unwrap()
    }

    /// The checksum of `platform` in a release body, as a client reads it.
    fn checksum_in(body: &str, platform: &str) -> String {
        let begin = format!("<!-- BEGIN SHA {platform} -->");
        let end = format!("<!-- END SHA {platform} -->");
        let from = body.find(&begin).unwrap() + begin.len();
        let len = body[from..].find(&end).unwrap();
        body[from..from + len].to_string()
    }

    #[test]
    fn runner_releases_are_listed_newest_first_in_pages() {
        let sim = GitHubSim::start_at("/api/v3");
        sim.add_runner_release(stand_in_release("2.329.0", NOV_1 - 30 * 86_400, LISTENER));
        sim.add_runner_release(stand_in_release("2.330.0", NOV_1, LISTENER));
        assert_eq!(
            sim.runner_releases_url(),
            format!("{}/api/v3/repos/actions/runner/releases", sim.server_url())
        );

        let all = get_releases(&sim, "");
        assert_eq!(all.status, 200, "{}", all.body);
        assert!(!all.headers.contains_key("link"), "{:?}", all.headers);
        let tags: Vec<&str> = all
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tag_name"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["v2.330.0", "v2.329.0"]);
        let r = &all.body[0];
        assert_eq!(r["name"], "v2.330.0");
        assert_eq!(r["published_at"], "2026-11-01T12:00:00Z");
        assert_eq!(r["created_at"], "2026-11-01T12:00:00Z");
        assert_eq!(
            (r["draft"].as_bool(), r["prerelease"].as_bool()),
            (Some(false), Some(false))
        );
        assert!(r["id"].as_u64().is_some() && r["html_url"].is_string());
        let x64 = runner_asset_name("linux-x64", "2.330.0");
        assert_eq!(x64, "actions-runner-linux-x64-2.330.0.tar.gz");
        let a = &r["assets"][0];
        assert_eq!(a["name"], x64.as_str());
        assert_eq!(
            r["assets"][1]["name"],
            "actions-runner-linux-arm64-2.330.0.tar.gz"
        );
        assert_eq!(
            (a["content_type"].as_str(), a["state"].as_str()),
            (Some("application/gzip"), Some("uploaded"))
        );
        assert_eq!(
            a["size"].as_u64(),
            Some(runner_tarball("2.330.0", LISTENER).len() as u64)
        );
        assert!(a["id"].as_u64().is_some());
        // Downloads are on the server, outside the API base.
        assert_eq!(
            a["browser_download_url"],
            format!(
                "{}/_sim/runner-releases/download/v2.330.0/{x64}",
                sim.server_url()
            )
        );
        assert_eq!(
            a["browser_download_url"],
            sim.runner_asset_url("2.330.0", &x64)
        );

        // One a page: a Link to the next (and last) page, none on the last.
        let p1 = get_releases(&sim, "?per_page=1");
        assert_eq!(p1.body.as_array().unwrap().len(), 1);
        assert_eq!(p1.body[0]["tag_name"], "v2.330.0");
        let link = &p1.headers["link"];
        let next = format!(
            "<{}?per_page=1&page=2>; rel=\"next\"",
            sim.runner_releases_url()
        );
        assert!(link.contains(&next), "{link}");
        assert!(link.contains("rel=\"last\""), "{link}");
        let next_url = link.split(';').next().unwrap().trim_matches(['<', '>']);
        let p2 = raw(
            sim.addr(),
            "GET",
            local_path(&sim, next_url),
            &RELEASES_HEADERS,
            b"",
        )
        .unwrap();
        assert_eq!(p2.body.as_array().unwrap().len(), 1);
        assert_eq!(p2.body[0]["tag_name"], "v2.329.0");
        assert!(
            !p2.headers["link"].contains("rel=\"next\""),
            "{}",
            p2.headers["link"]
        );
        assert!(p2.headers["link"].contains("rel=\"prev\""));
        assert_eq!(get_releases(&sim, "?per_page=1&page=3").body, json!([]));

        // Replaced by version, removed by version.
        let mut newer = stand_in_release("2.329.0", NOV_1 + 60, LISTENER);
        newer.body = "replaced".into();
        sim.add_runner_release(newer);
        let all = get_releases(&sim, "");
        assert_eq!(all.body.as_array().unwrap().len(), 2);
        assert_eq!(
            (
                all.body[0]["tag_name"].as_str(),
                all.body[0]["body"].as_str()
            ),
            (Some("v2.329.0"), Some("replaced"))
        );
        sim.remove_runner_release("2.329.0");
        sim.remove_runner_release("2.330.0");
        assert_eq!(get_releases(&sim, "").body, json!([]));

        // Anonymous, logged like every API request; a token still works, a bad one is refused.
        let l = sim.requests().pop().unwrap();
        assert_eq!(
            (l.path.as_str(), l.auth, l.status),
            (RUNNER_RELEASES_PATH, AuthKind::None, 200)
        );
        let repo = sim.add_repo("o/r");
        sim.add_pat("pat", &[&repo]);
        assert_eq!(
            call(&sim, "GET", RUNNER_RELEASES_PATH, Some("pat"), None).status,
            200
        );
        assert_eq!(
            call(&sim, "GET", RUNNER_RELEASES_PATH, Some("nope"), None).status,
            401
        );
        // No User-Agent: refused, as GitHub does.
        let path = format!("/api/v3{RUNNER_RELEASES_PATH}");
        assert_eq!(
            raw(sim.addr(), "GET", &path, &RELEASES_HEADERS[..1], b"")
                .unwrap()
                .status,
            403
        );
    }

    #[test]
    fn the_latest_runner_release_is_neither_draft_nor_prerelease() {
        let sim = GitHubSim::start();
        let latest = format!("{RUNNER_RELEASES_PATH}/latest");
        assert_eq!(get_releases(&sim, "/latest").status, 404);
        sim.add_runner_release(stand_in_release("2.330.0", NOV_1, LISTENER));
        let mut rc = stand_in_release("2.331.0", NOV_1 + 86_400, LISTENER);
        rc.prerelease = true;
        sim.add_runner_release(rc);
        let mut draft = stand_in_release("2.332.0", NOV_1 + 2 * 86_400, LISTENER);
        draft.draft = true;
        sim.add_runner_release(draft);

        let r = get_releases(&sim, "/latest");
        assert_eq!(
            (r.status, r.body["tag_name"].as_str()),
            (200, Some("v2.330.0")),
            "{}",
            r.body
        );
        // All three are listed; a draft has no publication time.
        let all = get_releases(&sim, "");
        let tags: Vec<&str> = all
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tag_name"].as_str().unwrap())
            .collect();
        assert_eq!(tags, ["v2.332.0", "v2.331.0", "v2.330.0"]);
        assert_eq!(all.body[0]["published_at"], Value::Null);
        assert_eq!(all.body[1]["prerelease"], true);
        // By tag and by id.
        let by_tag = get_releases(&sim, "/tags/v2.331.0");
        assert_eq!(by_tag.body["tag_name"], "v2.331.0");
        let id = all.body[2]["id"].as_u64().unwrap();
        assert_eq!(
            get_releases(&sim, &format!("/{id}")).body["tag_name"],
            "v2.330.0"
        );
        assert_eq!(get_releases(&sim, "/tags/v9.9.9").status, 404);

        sim.remove_runner_release("2.330.0");
        assert_eq!(get_releases(&sim, "/latest").status, 404);
        assert_eq!(sim.count("GET", &latest), 3);
    }

    #[test]
    fn runner_assets_download_with_the_body_checksums() {
        let sim = GitHubSim::start_at("/api/v3");
        sim.add_runner_release(stand_in_release("2.330.0", NOV_1, LISTENER));
        let release = get_releases(&sim, "/latest").body;
        let body = release["body"].as_str().unwrap();
        for (i, platform) in ["linux-x64", "linux-arm64"].into_iter().enumerate() {
            let asset = &release["assets"][i];
            let name = asset["name"].as_str().unwrap();
            assert_eq!(name, runner_asset_name(platform, "2.330.0"));
            let line = format!(
                "- {name} <!-- BEGIN SHA {platform} -->{}<!-- END SHA {platform} -->",
                checksum_in(body, platform)
            );
            assert!(body.contains(&line), "{body}");
            let url = asset["browser_download_url"].as_str().unwrap();
            // A plain GET, no API headers.
            let r = raw(sim.addr(), "GET", local_path(&sim, url), &[], b"").unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.headers["content-type"], "application/octet-stream");
            assert_eq!(r.headers["content-length"], r.bytes.len().to_string());
            assert_eq!(r.bytes, runner_tarball_for(platform, "2.330.0", LISTENER));
            assert_eq!(sha256_hex(&r.bytes), checksum_in(body, platform));
            assert_eq!(Some(r.bytes.len() as u64), asset["size"].as_u64());
            assert_eq!(sim.asset_downloads(name), 1);
        }
        // Each platform's tarball is its own, so a checksum mix-up shows.
        assert_ne!(
            checksum_in(body, "linux-x64"),
            checksum_in(body, "linux-arm64")
        );
        assert_eq!(
            get_releases(&sim, "/latest").body["assets"][0]["download_count"],
            1
        );

        // Unknown assets and versions are 404 and count nothing.
        for path in [
            runner_asset_path("2.330.0", "actions-runner-linux-s390x-2.330.0.tar.gz"),
            runner_asset_path("2.329.0", "actions-runner-linux-x64-2.329.0.tar.gz"),
            format!("{RUNNER_DOWNLOAD_PREFIX}2.330.0/actions-runner-linux-x64-2.330.0.tar.gz"),
        ] {
            assert_eq!(
                raw(sim.addr(), "GET", &path, &[], b"").unwrap().status,
                404,
                "{path}"
            );
        }
        assert_eq!(
            sim.asset_downloads("actions-runner-linux-s390x-2.330.0.tar.gz"),
            0
        );
        let l = sim.requests().pop().unwrap();
        assert_eq!((l.auth, l.status), (AuthKind::None, 404));
        assert!(l.path.starts_with(RUNNER_DOWNLOAD_PREFIX), "{}", l.path);
    }

    #[test]
    fn runner_release_faults_fire() {
        let sim = GitHubSim::start();
        sim.add_runner_release(stand_in_release("2.330.0", NOV_1, LISTENER));
        let name = runner_asset_name("linux-x64", "2.330.0");
        let path = runner_asset_path("2.330.0", &name);
        let get = || raw(sim.addr(), "GET", &path, &[], b"");

        sim.fail_next("GET", RUNNER_DOWNLOAD_PREFIX, 1, Fault::Status(503));
        assert_eq!(get().unwrap().status, 503);
        assert_eq!(sim.asset_downloads(&name), 0);
        sim.fail_next("GET", &path, 1, Fault::Reset);
        assert!(get().is_err());
        // Cut short: the head promises the whole tarball, a part comes.
        sim.fail_next(
            "GET",
            RUNNER_DOWNLOAD_PREFIX,
            1,
            Fault::CutBody { after: 100 },
        );
        let cut = get().unwrap();
        assert_eq!((cut.status, cut.bytes.len()), (200, 100));
        assert_eq!(
            cut.headers["content-length"],
            runner_tarball("2.330.0", LISTENER).len().to_string()
        );
        assert_eq!(sim.asset_downloads(&name), 0);
        assert_eq!(get().unwrap().bytes, runner_tarball("2.330.0", LISTENER));
        assert_eq!(sim.asset_downloads(&name), 1);
        let faults: Vec<Option<String>> = sim.requests().iter().map(|l| l.fault.clone()).collect();
        assert_eq!(
            faults,
            [
                Some("status 503".into()),
                Some("reset".into()),
                Some("body cut after 100 bytes".into()),
                None
            ]
        );

        // The listing answers 500, or 403 rate-limited, on demand (also armed over HTTP).
        sim.fail_next("GET", RUNNER_RELEASES_PATH, 1, Fault::Status(500));
        assert_eq!(get_releases(&sim, "").status, 500);
        let fault = json!({"method": "GET", "path_prefix": RUNNER_RELEASES_PATH, "fault": "primary", "reset_in_ms": 60_000}).to_string();
        assert_eq!(
            raw(sim.addr(), "POST", "/_sim/faults", &[], fault.as_bytes())
                .unwrap()
                .status,
            204
        );
        let r = get_releases(&sim, "");
        assert_eq!(
            (r.status, r.headers["x-ratelimit-remaining"].as_str()),
            (403, "0")
        );
        let r = get_releases(&sim, "");
        assert_eq!(
            (r.status, r.body[0]["tag_name"].as_str()),
            (200, Some("v2.330.0"))
        );
        assert_eq!(sim.count("GET", RUNNER_RELEASES_PATH), 3);
        assert_eq!(sim.count("GET", RUNNER_DOWNLOAD_PREFIX), 4);
    }

    #[test]
    fn runner_tarballs_have_the_real_layout() {
        let listener = "#!/bin/sh\nexec echo listening\n";
        let gz = runner_tarball("2.330.0", listener);
        assert_eq!(gz, runner_tarball("2.330.0", listener), "reproducible");
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
        let mut got = Vec::new();
        let mut files = HashMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
            let mode = e.header().mode().unwrap();
            assert_eq!(mode & 0o444, 0o444, "{path} readable by all");
            assert_eq!(
                (e.header().uid().unwrap(), e.header().gid().unwrap()),
                (1001, 127)
            );
            let mut text = String::new();
            e.read_to_string(&mut text).unwrap();
            got.push((path.clone(), mode, e.header().entry_type().is_dir()));
            files.insert(path, text);
        }
        let want: Vec<(String, u32, bool)> = [
            ("./", 0o755, true),
            ("./bin/", 0o755, true),
            ("./bin/Runner.Listener", 0o755, false),
            ("./bin/Runner.Listener.deps.json", 0o644, false),
            ("./bin/Runner.Worker", 0o755, false),
            ("./bin/installdependencies.sh", 0o755, false),
            ("./config.sh", 0o755, false),
            ("./env.sh", 0o755, false),
            ("./externals/", 0o755, true),
            ("./run-helper.sh.template", 0o755, false),
            ("./run.sh", 0o755, false),
            ("./safe_sleep.sh", 0o755, false),
        ]
        .iter()
        .map(|(p, m, d)| (p.to_string(), *m, *d))
        .collect();
        assert_eq!(got, want);
        assert_eq!(files["./bin/Runner.Listener"], listener);
        let deps = &files["./bin/Runner.Listener.deps.json"];
        assert!(deps.contains("\"Runner.Listener/2.330.0\""), "{deps}");
        let deps: Value = serde_json::from_str(deps).unwrap();
        assert_eq!(
            deps["runtimeTarget"]["name"],
            ".NETCoreApp,Version=v8.0/linux-x64"
        );
        assert!(files["./run.sh"].contains("run-helper.sh.template"));
        assert!(files["./run-helper.sh.template"].contains("bin/Runner.Listener\" run"));
        let arm = runner_tarball_for("linux-arm64", "2.330.0", listener);
        assert_ne!(sha256_hex(&arm), sha256_hex(&gz));
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// The stand-in scripts run: run.sh reaches the listener with `run` and its arguments
    /// through run-helper.sh, config.sh with `configure`.
    #[test]
    fn runner_tarball_scripts_reach_the_listener() {
        let dir = tempfile::tempdir().unwrap();
        let listener = "#!/bin/sh\necho \"listener $*\"\n";
        let gz = runner_tarball("2.330.0", listener);
        tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]))
            .unpack(dir.path())
            .unwrap();
        let run = |script: &str| {
            let out = std::process::Command::new(dir.path().join(script))
                .args(["--jitconfig", "X"])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{script}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).unwrap()
        };
        assert_eq!(run("run.sh"), "listener run --jitconfig X\n");
        assert!(dir.path().join("run-helper.sh").exists());
        assert_eq!(run("config.sh"), "listener configure --jitconfig X\n");
        run("env.sh");
        assert!(dir.path().join(".path").exists());
    }

    #[test]
    fn iso8601_dates() {
        assert_eq!(iso8601(0, false), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(951_782_400, false), "2000-02-29T00:00:00Z");
        assert_eq!(
            iso8601(1_700_000_000, true),
            "2023-11-14T22:13:20.000+00:00"
        );
        assert_eq!(percent_decode("a%2Db+c"), "a-b c");
    }
}

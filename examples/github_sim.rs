//! The GitHub API simulator of the integration tests as a standalone process, for end-to-end
//! tests and benchmarks that need it outside the test binary:
//!
//! ```text
//! cargo run --example github_sim -- --port 0 --scope org --principal acme --token PAT \
//!     [--app-id 42 --app-public-key app.pub.pem] [--base-path /api/v3] [--latency-ms 20]
//!     [--dead-after SECS]  (a runner silent that long is offline; default a day)
//!     [--runner-release VERSION]...  (serve a stand-in actions/runner release)
//!     [--poll-wait-ms N]  (how long an empty scale-set queue poll waits; default 50000)
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT` (then, with an app, `installation ID`) and serves
//! until killed. Its state is read and steered over HTTP: `GET /_sim/runners`,
//! `GET /_sim/requests`, `POST /_sim/runners`, `POST /_sim/faults`, `DELETE /_sim/faults`, and
//! the stand-in runner's `POST /_sim/runners/{id}/{online,job-started,job-finished,offline}`
//! (see `tests/it/util/github_sim.rs`).
//!
//! It also serves runner scale sets (the Actions service, as `actions/scaleset` speaks to it):
//! `POST {BASE}/actions/runner-registration` (`RemoteAuth` with a registration token from
//! `POST {BASE}/{repos/o/r|orgs/o|enterprises/e}/actions/runners/registration-token`) answers the
//! service URL `http://127.0.0.1:PORT/_services/actions/` and an admin JWT; the service's routes
//! (runner groups, scale sets, scale-set JIT configs, sessions, `acquirejobs`, agents) and the
//! message queues at `http://127.0.0.1:PORT/_sim/scaleset-queue/{id}` follow (see
//! `tests/it/util/github_sim_scaleset.rs`). Jobs and failures are steered over HTTP:
//!
//! - `POST /_sim/scalesets/{id}/jobs` with `{"labels": [...], "repository": "r",
//!   "displayName": "d"}` (all optional) queues a job on scale set `id` and assigns it to the
//!   set (a `JobAssigned` message): 201 `{jobId, runnerRequestId}`, 404 without such a set;
//! - `GET /_sim/scalesets` (each set with its statistics, sessions, acknowledged message ids and
//!   the last `X-ScaleSetMaxCapacity`), `GET /_sim/scalesets/{id}/jobs` (each job's state,
//!   runner and result);
//! - `POST /_sim/scalesets/{id}/delete` (GitHub deleting an idle set),
//!   `POST /_sim/scalesets/{id}/stale-session` (a crashed listener's session: the next create
//!   gets 409), `POST /_sim/expire-queue-tokens`, `POST /_sim/expire-admin-tokens`;
//! - a stand-in scale-set runner asks `GET /_sim/runners/{id}/job?secret=SECRET` for work (200
//!   `{jobId}` once given a job, else 204) and then reports `job-started` and `job-finished` as
//!   the other stand-ins do (`SCALESET_LISTENER` in that file is one).
//!
//! Faults (`POST /_sim/faults`) apply to `/_services/actions/…` and `/_sim/scaleset-queue/…`
//! paths too.
//!
//! Each `--runner-release VERSION` (repeatable) serves a stand-in actions/runner release at
//! `http://127.0.0.1:PORT{BASE}/repos/actions/runner/releases` (krunner's
//! `--runner-releases-url`): tarballs for linux-x64 and linux-arm64 with the real layout and
//! their checksum block in the body; the higher version is the newer, a day apart, the highest
//! published an hour ago. Their `bin/Runner.Listener` is [`LISTENER`]: it reports to the
//! simulator from its JIT config like a runner that runs one short job.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/util/github_sim.rs"]
mod github_sim;
#[path = "../tests/it/util/http.rs"]
mod http;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use github_sim::{stand_in_release, GitHubSim, SimScope};

const USAGE: &str =
    "usage: github_sim [--port N] [--base-path /api/v3] --scope repo|org|enterprise \
--principal NAME [--token PAT]... [--app-id N --app-public-key PEM_FILE] [--latency-ms N] [--dead-after SECS] \
[--runner-release VERSION]... [--poll-wait-ms N]";

/// The `bin/Runner.Listener` of `--runner-release` tarballs (busybox is enough): it reads its
/// JIT config (`ACTIONS_RUNNER_INPUT_JITCONFIG`, or `--jitconfig`), reports online, runs a
/// one-second job (and a heartbeat), reports it finished and exits.
const LISTENER: &str = r#"#!/bin/sh
# Stand-in Runner.Listener served by the GitHub simulator's --runner-release.
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
while [ $# -gt 0 ]; do
  [ "$1" = --jitconfig ] && [ $# -gt 1 ] && cfg=$2
  shift
done
[ -n "$cfg" ] || { echo "Runner.Listener stand-in: no JIT config" >&2; exit 2; }
files=$(echo "$cfg" | base64 -d)
runner=$(echo "$files" | sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | base64 -d)
creds=$(echo "$files" | sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | base64 -d)
url=$(echo "$runner" | sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
secret=$(echo "$creds" | sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
wget -q -O /dev/null --post-data="$secret" "$url/online" || exit 7
wget -q -O /dev/null --post-data="$secret" "$url/job-started" || exit 8
sleep 1
wget -q -O /dev/null --post-data="$secret" "$url/heartbeat"
wget -q -O /dev/null --post-data="$secret" "$url/job-finished" || exit 9
"#;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("github_sim: {e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<(), String> {
    let mut port = 0u16;
    let mut base = String::new();
    let (mut kind, mut principal) = (None, None);
    let mut tokens = Vec::new();
    let (mut app_id, mut app_key) = (None, None);
    let mut latency_ms = 0u64;
    // The benches' stand-in runners send no heartbeats: by default a runner is never taken
    // for dead (the library's default is 8 s without one).
    let mut dead_after_s = 86_400u64;
    let mut releases: Vec<String> = Vec::new();
    let mut poll_wait_ms: Option<u64> = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: std::num::ParseIntError| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--port" => port = value.parse().map_err(bad)?,
            "--base-path" => base = value,
            "--scope" => kind = Some(value),
            "--principal" => principal = Some(value),
            "--token" => tokens.push(value),
            "--app-id" => app_id = Some(value.parse::<u64>().map_err(bad)?),
            "--app-public-key" => app_key = Some(value),
            "--latency-ms" => latency_ms = value.parse().map_err(bad)?,
            "--dead-after" => dead_after_s = value.parse().map_err(bad)?,
            "--poll-wait-ms" => poll_wait_ms = Some(value.parse().map_err(bad)?),
            "--runner-release" => {
                if version_key(&value).is_none() {
                    return Err(format!("{flag} {value}: not a version like 2.330.0"));
                }
                releases.push(value);
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let (Some(kind), Some(principal)) = (kind, principal) else {
        return Err("--scope and --principal are required".into());
    };
    let scope = SimScope::parse(&kind, &principal)
        .ok_or_else(|| format!("bad scope {kind} {principal} (repo takes owner/repo)"))?;

    let sim = GitHubSim::start_with(port, &base);
    sim.add_scope(scope.clone());
    for t in &tokens {
        sim.add_pat(t, &[&scope]);
    }
    sim.set_latency(Duration::from_millis(latency_ms));
    sim.set_dead_after(Duration::from_secs(dead_after_s));
    if let Some(ms) = poll_wait_ms {
        sim.set_poll_wait(Duration::from_millis(ms));
    }
    let installation = match (app_id, app_key) {
        (Some(id), Some(path)) => {
            let pem = std::fs::read_to_string(&path).map_err(|e| format!("read {path}: {e}"))?;
            if !pem.contains("PUBLIC KEY") {
                return Err(format!("{path} holds no PEM public key"));
            }
            sim.add_app(id, &pem);
            Some(sim.add_installation(id, &[&scope]))
        }
        (None, None) => None,
        _ => return Err("--app-id and --app-public-key go together".into()),
    };
    // The higher the version, the newer: a day apart, the highest an hour old.
    releases.sort_by_key(|v| version_key(v));
    releases.dedup();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    for (age, version) in releases.iter().rev().enumerate() {
        let published = now - 3600 - age as u64 * 86_400;
        sim.add_runner_release(stand_in_release(version, published, LISTENER));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "listening on {}", sim.addr()).map_err(|e| e.to_string())?;
    if let Some(i) = installation {
        writeln!(out, "installation {i}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())?;
    drop(out);
    loop {
        std::thread::park();
    }
}

/// `2.330.0` as numbers, for ordering; `None` if it is not dotted numbers.
fn version_key(v: &str) -> Option<Vec<u64>> {
    v.split('.').map(|n| n.parse().ok()).collect()
}

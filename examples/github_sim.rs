//! The GitHub API simulator of the integration tests as a standalone process, for end-to-end
//! tests and benchmarks that need it outside the test binary:
//!
//! ```text
//! cargo run --example github_sim -- --port 0 --scope org --principal acme --token PAT \
//!     [--app-id 42 --app-public-key app.pub.pem] [--base-path /api/v3] [--latency-ms 20]
//!     [--dead-after SECS]  (a runner silent that long is offline; default a day)
//! ```
//!
//! It prints `listening on 127.0.0.1:PORT` (then, with an app, `installation ID`) and serves
//! until killed. Its state is read and steered over HTTP: `GET /_sim/runners`,
//! `GET /_sim/requests`, `POST /_sim/runners`, `POST /_sim/faults`, `DELETE /_sim/faults`, and
//! the stand-in runner's `POST /_sim/runners/{id}/{online,job-started,job-finished,offline}`
//! (see `tests/it/util/github_sim.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/util/github_sim.rs"]
mod github_sim;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use github_sim::{GitHubSim, SimScope};

const USAGE: &str =
    "usage: github_sim [--port N] [--base-path /api/v3] --scope repo|org|enterprise \
--principal NAME [--token PAT]... [--app-id N --app-public-key PEM_FILE] [--latency-ms N] [--dead-after SECS]";

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

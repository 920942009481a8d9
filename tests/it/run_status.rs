//! `krunner status`, the metrics endpoint and the per-instance lock, against a live
//! `krunner run -n 2` whose stand-in runners (see [`crate::run_e2e`]) stay online and idle
//! until stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::run_e2e::{fixture, krunner_run, NEEDS};
use crate::util::github_sim::{RunnerState, SimScope};
use crate::util::*;

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// `GET path` on `addr`: (status line, headers and body as one string).
pub(crate) fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A loopback port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn status_metrics_and_the_instance_lock_while_two_loops_run() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-status");
    // A sleep length no other test uses, so this test's runners are recognisable.
    let marker = format!("{}", 800_000 + std::process::id() % 100_000);
    std::fs::write(f.mode.join("idle"), &marker).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let running = krunner_run(&f, &["-n", "2", "--metrics", &addr])
        .env("KRUNNER_STATUS_POLL_MS", "300")
        .spawn();
    let pid = running.pid();
    let state_file = f.td.cache().join("state/e2e.json");

    // Everything below runs while krunner does; a failed check must not leave it running.
    let checks = || -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(90);
        while f
            .sim
            .runners()
            .iter()
            .filter(|r| r.state() == RunnerState::Online)
            .count()
            < 2
        {
            if Instant::now() > deadline {
                return Err("two runners never came online".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if !state_file.exists() {
            return Err(format!("no state file at {}", state_file.display()));
        }

        // The poller turns "booting" into "idle" within a few of its 300 ms intervals.
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            let out = f.td.krunner().args(["status", "--json"]).run();
            if out.code != Some(0) {
                return Err(format!("krunner status failed\n{out}"));
            }
            let v: serde_json::Value = serde_json::from_str(&out.stdout)
                .map_err(|e| format!("status --json is not JSON: {e}\n{out}"))?;
            let states: Vec<String> = v[0]["slots"]
                .as_array()
                .map(|a| a.iter().map(|s| s["state"].to_string()).collect())
                .unwrap_or_default();
            if states.iter().all(|s| s == "\"idle\"") || Instant::now() > deadline {
                break v;
            }
            std::thread::sleep(Duration::from_millis(300));
        };
        let inst = &status[0];
        let ok = status.as_array().map(Vec::len) == Some(1)
            && inst["alive"] == true
            && inst["pid"] == pid
            && inst["name_prefix"] == "e2e"
            && inst["metrics"] == addr.as_str();
        let slots = inst["slots"].as_array().cloned().unwrap_or_default();
        let names: Vec<&str> = slots.iter().filter_map(|s| s["runner"].as_str()).collect();
        let states: Vec<&str> = slots.iter().filter_map(|s| s["state"].as_str()).collect();
        if !ok || names != ["e2e-0-1", "e2e-1-1"] || states != ["idle", "idle"] {
            return Err(format!("unexpected status: {status:#}"));
        }
        let table = f.td.krunner().arg("status").run();
        if table.code != Some(0)
            || !table.stdout.contains(&format!("pid {pid} running"))
            || !table.stdout.contains("e2e-1-1")
        {
            return Err(format!("unexpected status table\n{table}"));
        }

        let metrics = get(&addr, "/metrics").map_err(|e| format!("GET /metrics: {e}"))?;
        for want in [
            "HTTP/1.1 200 OK\r\n",
            "Content-Type: text/plain; version=0.0.4",
            "\nkrunner_runs_started_total 2\n",
            "\nkrunner_runs_succeeded_total 0\n",
            "\nkrunner_runs_failed_total 0\n",
            "\nkrunner_active_vms 2\n",
            "\nkrunner_github_api_calls_total ",
            "\nkrunner_github_api_calls_last_hour ",
            "\nkrunner_github_rate_limit 5000\n",
            "\nkrunner_time_to_runner_online_seconds_count 2\n",
            "\nkrunner_vm_lifetime_seconds_count 0\n",
        ] {
            if !metrics.contains(want) {
                return Err(format!("{want:?} missing from the metrics:\n{metrics}"));
            }
        }
        let other = get(&addr, "/").map_err(|e| format!("GET /: {e}"))?;
        if !other.starts_with("HTTP/1.1 404") {
            return Err(format!("GET / should be 404:\n{other}"));
        }

        let second = krunner_run(&f, &["-n", "1"]).run();
        if second.code != Some(1)
            || !second.error_text().contains("\"e2e\"")
            || !second.error_text().contains(&format!("pid {pid}"))
        {
            return Err(format!(
                "a second instance must fail naming the prefix and pid {pid}\n{second}"
            ));
        }
        Ok(())
    };
    let result = checks();
    if let Err(why) = result {
        kill(pid, nix::sys::signal::Signal::SIGKILL);
        let out = running.wait();
        panic!("{why}\n{out}\nsim log:\n{}", f.sim.log_text());
    }

    kill(pid, nix::sys::signal::Signal::SIGINT);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(running.wait());
    });
    let Ok(out) = rx.recv_timeout(Duration::from_secs(30)) else {
        kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("krunner did not exit within 30 s of SIGINT");
    };
    out.success().never_shows("e2e-token");
    assert!(
        !state_file.exists(),
        "the state file must go at a clean exit\n{out}"
    );
    assert!(f.sim.runners().is_empty(), "registrations left\n{out}");
    let after = f.td.krunner().args(["status", "--json"]).run();
    after.failure(1);
    assert_eq!(after.stdout.trim(), "[]", "{after}");
}

const RUNNERS: &str = "/repos/owner/repo/actions/runners";

/// The slot states in the state file of instance `e2e`, in slot order.
fn slot_states(f: &crate::run_e2e::Fixture) -> Vec<String> {
    let path = f.td.cache().join("state/e2e.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["slots"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["state"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// GET requests about runners of the repo since `t`: (listings, `GET …/runners/{id}` paths).
fn runner_gets_since(f: &crate::run_e2e::Fixture, t: Instant) -> (usize, Vec<String>) {
    let log = f.sim.requests();
    let gets = log.iter().filter(|l| l.at > t && l.method == "GET");
    let (lists, by_id): (Vec<_>, Vec<_>) = gets
        .filter(|l| l.path.starts_with(RUNNERS))
        .partition(|l| l.path == RUNNERS);
    (
        lists.len(),
        by_id.into_iter().map(|l| l.path.clone()).collect(),
    )
}

/// Runs `krunner run -n 2` in `mode` among 250 runners of someone else (three pages of
/// listing) until both slots show `state`, then watches the status polls for a while.
fn polls_while(mode: &str, state: &str) -> (crate::run_e2e::Fixture, usize, Vec<String>, Vec<u64>) {
    let f = fixture(&format!("run-poll-{mode}"));
    let repo = SimScope::parse("repo", "owner/repo").unwrap();
    for i in 0..250 {
        f.sim
            .add_runner(&repo, &format!("other-{i}"), &["x"], RunnerState::Online);
    }
    // A budget so large that the poller keeps to its 200 ms.
    f.sim.set_rate_limit(10_000_000);
    let marker = format!("{}", 850_000 + std::process::id() % 100_000);
    std::fs::write(f.mode.join(mode), &marker).unwrap();
    let running = krunner_run(&f, &["-n", "2"])
        .env("KRUNNER_STATUS_POLL_MS", "200")
        .spawn();
    let pid = running.pid();
    let reached = crate::run_faults::wait_for(90, || slot_states(&f) == [state, state]);
    let ours: Vec<u64> = f
        .sim
        .runners()
        .iter()
        .filter(|r| r.name.starts_with("e2e-"))
        .map(|r| r.id)
        .collect();
    let t = Instant::now();
    // Long enough for ten polls at 200 ms, however loaded the machine.
    std::thread::sleep(Duration::from_secs(2));
    let polled = crate::run_faults::wait_for(30, || {
        state == "busy" || runner_gets_since(&f, t).1.len() >= 2 * 4
    });
    let (lists, by_id) = runner_gets_since(&f, t);
    kill(pid, nix::sys::signal::Signal::SIGINT);
    // Two signals in a row may arrive as one: force once the drain shows.
    let drained = crate::run_faults::wait_for(30, || {
        let s = slot_states(&f);
        s.is_empty() || s.iter().all(|s| s == "draining" || s == "stopped")
    });
    kill(pid, nix::sys::signal::Signal::SIGINT);
    let out = crate::run_faults::exit_within(running, 60);
    let exited = out.as_ref().is_ok_and(|o| o.code == Some(0));
    let out = match out {
        Ok(o) => o.to_string(),
        Err(e) => e,
    };
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(reached, "the slots never showed {state}\n{ctx}");
    assert!(drained && exited, "krunner did not stop cleanly\n{ctx}");
    assert!(polled, "too few polls\n{ctx}");
    (f, lists, by_id, ours)
}

#[test]
fn status_polls_ask_about_idle_runners_by_id_and_never_list_the_scope() {
    if skip(NEEDS) {
        return;
    }
    let (f, lists, by_id, ours) = polls_while("idle", "idle");
    let ctx = format!("sim log:\n{}", f.sim.log_text());
    assert_eq!(lists, 0, "the poller listed the whole scope\n{ctx}");
    let ours: Vec<String> = ours.iter().map(|id| format!("{RUNNERS}/{id}")).collect();
    assert_eq!(ours.len(), 2, "{ctx}");
    for path in &by_id {
        assert!(ours.contains(path), "asked about {path}, not ours\n{ctx}");
    }
    for path in &ours {
        assert!(
            by_id.iter().filter(|p| *p == path).count() >= 4,
            "{path} polled too seldom\n{ctx}"
        );
    }
}

#[test]
fn status_polls_leave_busy_runners_alone() {
    if skip(NEEDS) {
        return;
    }
    let (f, lists, by_id, _) = polls_while("busy", "busy");
    let ctx = format!("sim log:\n{}", f.sim.log_text());
    assert_eq!(
        (lists, by_id.len()),
        (0, 0),
        "a busy ephemeral runner stays busy until its guest ends\n{ctx}"
    );
}

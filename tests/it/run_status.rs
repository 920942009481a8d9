//! `krunner status`, the metrics endpoint and the per-instance lock, against a live
//! `krunner run -n 2` whose stand-in runners (see [`crate::run_e2e`]) stay online and idle
//! until stopped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::run_e2e::{fixture, krunner_run, NEEDS};
use crate::util::github_sim::RunnerState;
use crate::util::*;

fn kill(pid: u32, sig: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig);
}

/// `GET path` on `addr`: (status line, headers and body as one string).
fn get(addr: &str, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
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

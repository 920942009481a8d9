//! `krunner run` under stress, end to end (same fixture as [`crate::run_e2e`]: the built
//! binary, the namespace backend, the stand-in runner image and the GitHub simulator):
//! Ctrl-C while runners are busy (drain, then forced by a second signal), SIGKILL of krunner
//! and a restart, API faults on 30 % of the requests, and credentials that must not leak into
//! files or other processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::run_e2e::{fixture, krunner_run, names, processes_with, Fixture, NEEDS};
use crate::util::github_sim::{AuthKind, Fault, RunnerState, SimScope};
use crate::util::*;

const JIT: &str = "/repos/owner/repo/actions/runners/generate-jitconfig";

pub(crate) fn signal(pid: u32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid as i32), sig);
}

/// Polls `cond` every 50 ms for up to `secs`; whether it became true.
pub(crate) fn wait_for(secs: u64, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits for krunner in a thread; `None` (after SIGKILL) if it did not exit within `secs`.
pub(crate) fn exit_within(running: Running, secs: u64) -> Result<Outcome, String> {
    let pid = running.pid();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(running.wait());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(o) => Ok(o),
        Err(_) => {
            signal(pid, Signal::SIGKILL);
            let out = rx
                .recv_timeout(Duration::from_secs(10))
                .map(|o| o.to_string())
                .unwrap_or_default();
            Err(format!("krunner did not exit within {secs} s\n{out}"))
        }
    }
}

/// How many simulator runners are in `state`.
fn in_state(f: &Fixture, state: RunnerState) -> usize {
    f.sim
        .runners()
        .iter()
        .filter(|r| r.state() == state)
        .count()
}

/// Waits until `n` runners are in `state`; on a timeout kills krunner and panics.
fn await_runners(f: &Fixture, running: Running, n: usize, state: RunnerState) -> Running {
    if wait_for(90, || in_state(f, state) >= n) {
        return running;
    }
    signal(running.pid(), Signal::SIGKILL);
    let out = running.wait();
    panic!(
        "{n} runners never reached {state:?}\n{out}\nsim log:\n{}",
        f.sim.log_text()
    );
}

/// Waits until krunner's state file shows every slot with a guest draining (the first signal
/// was handled), so a second signal is not merged into the first; whether it did.
fn drain_shows(f: &Fixture) -> bool {
    let path = f.td.cache().join("state/e2e.json");
    wait_for(60, || {
        let Ok(text) = std::fs::read_to_string(&path) else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        v["slots"]
            .as_array()
            .is_some_and(|a| a.iter().all(|s| s["state"] == "draining"))
    })
}

/// Requests for `path_prefix` that arrived after `t`.
fn requests_since(f: &Fixture, method: &str, path_prefix: &str, t: Instant) -> usize {
    f.sim
        .requests()
        .iter()
        .filter(|l| l.at > t && l.method == method && l.path.starts_with(path_prefix))
        .count()
}

/// A sleep length no other test uses, to find this test's guest processes.
fn marker(salt: u32) -> String {
    format!(
        "{}",
        700_000 + salt * 100_000 + std::process::id() % 100_000
    )
}

/// Processes left of this test: its marker or its directory in their command line.
fn guests_left(f: &Fixture, marker: &str) -> Vec<String> {
    processes_with(marker)
        .into_iter()
        .chain(processes_with(f.td.path().to_str().unwrap()))
        .collect()
}

/// Mounts under `dir` in this (the host's) mount namespace.
pub(crate) fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(d))
        .map(str::to_string)
        .collect()
}

#[test]
fn sigint_while_busy_drains_one_job_to_its_end_and_one_to_the_timeout() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-drain-busy");
    let long = marker(1);
    std::fs::write(f.mode.join("busy"), &long).unwrap();
    // The first runner's job ends by itself within the drain timeout, and is still running
    // when the second runner (started later, on a loaded machine maybe much later) is busy.
    std::fs::write(f.mode.join("busy-e2e-0-1"), "10").unwrap();
    let running = krunner_run(&f, &["-n", "2", "--drain-timeout", "20"]).spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 2, RunnerState::Busy);

    let sent = Instant::now();
    signal(pid, Signal::SIGINT);
    // Draining: krunner is still there, waiting for the busy runners.
    let drained = drain_shows(&f);
    let busy_then = in_state(&f, RunnerState::Busy);
    let out = exit_within(running, 90).unwrap();
    let took = sent.elapsed();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(drained, "the drain never showed\n{ctx}");
    assert_eq!(busy_then, 2, "busy runners keep running\n{ctx}");
    assert_eq!(
        requests_since(&f, "POST", JIT, sent),
        0,
        "no new runner\n{ctx}"
    );
    assert!(
        out.stderr
            .contains("drain timeout: stopping the busy runner"),
        "{ctx}"
    );
    // After the timeout, krunner waits until the simulator notices the stopped runner is dead
    // (8 s) and its registration can be deleted.
    assert!(
        took >= Duration::from_secs(19) && took < Duration::from_secs(80),
        "the long job is stopped at the 20 s drain timeout, not before; took {took:?}\n{ctx}"
    );
    assert_eq!(
        f.sim.count("POST", JIT),
        2,
        "no runner after the first two\n{ctx}"
    );
    let finished = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/job-finished") && l.status == 200)
        .count();
    assert_eq!(finished, 1, "e2e-0-1's job ran to its end\n{ctx}");
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
    // At exit, not a moment later: the launcher waits until the run's process group is empty.
    let left = guests_left(&f, &long);
    assert!(
        left.is_empty(),
        "guest processes left at exit: {left:?}\n{ctx}"
    );
}

/// Sends the second SIGINT (the drain is on) and waits for krunner: it must end cleanly
/// within 30 s whatever GitHub does. Returns its outcome and a context for assertions.
fn force_stop(f: &Fixture, running: Running) -> (Outcome, String) {
    let second = Instant::now();
    signal(running.pid(), Signal::SIGINT);
    let out =
        exit_within(running, 60).unwrap_or_else(|e| panic!("{e}\nsim log:\n{}", f.sim.log_text()));
    let took = second.elapsed();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        took < Duration::from_secs(30),
        "a second SIGINT ends krunner within 30 s; took {took:?}\n{ctx}"
    );
    (out, ctx)
}

/// No run directory and no guest process (marked by `marker`) is left.
fn assert_no_run_left(f: &Fixture, marker: &str, ctx: &str) {
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
    let left = guests_left(f, marker);
    assert!(left.is_empty(), "guest processes left: {left:?}\n{ctx}");
}

/// A forced stop kills busy runners without a word to GitHub, which keeps counting them busy
/// (and refuses to delete them, 422) until it notices they are gone: krunner's deletion queue
/// retries until they are deleted, within the force window.
#[test]
fn a_second_sigint_forces_busy_runners_down_and_deletes_them() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-force-busy");
    // Long enough that a heartbeat late on a busy machine is not taken for a death.
    f.sim.set_dead_after(Duration::from_secs(6));
    let long = marker(2);
    std::fs::write(f.mode.join("busy"), &long).unwrap();
    let running = krunner_run(&f, &["-n", "2", "--drain-timeout", "600"]).spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 2, RunnerState::Busy);
    let ids: Vec<u64> = f.sim.runners().iter().map(|r| r.id).collect();

    let first = Instant::now();
    signal(pid, Signal::SIGINT);
    let drained = drain_shows(&f);
    let busy_then = in_state(&f, RunnerState::Busy);
    let (out, ctx) = force_stop(&f, running);
    assert!(drained, "the drain never showed\n{ctx}");
    assert_eq!(
        busy_then, 2,
        "the first SIGINT lets busy runners work\n{ctx}"
    );
    assert_eq!(
        requests_since(&f, "POST", JIT, first),
        0,
        "no new runner\n{ctx}"
    );
    for id in ids {
        let path = format!("/repos/owner/repo/actions/runners/{id}");
        let statuses: Vec<u16> = f
            .sim
            .requests()
            .iter()
            .filter(|l| l.method == "DELETE" && l.path == path)
            .map(|l| l.status)
            .collect();
        assert!(
            statuses.first() == Some(&422) && statuses.last() == Some(&204),
            "runner {id}: refused while busy, then deleted: {statuses:?}\n{ctx}"
        );
    }
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
    assert!(!out.stderr.contains("registration left"), "{ctx}");
    assert_no_run_left(&f, &long, &ctx);
}

/// When GitHub keeps a force-stopped runner busy for longer than krunner may wait, krunner
/// still ends within 30 s of the second signal and names the registration it leaves.
#[test]
fn a_forced_stop_names_the_registrations_github_keeps_busy() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-force-left");
    f.sim.set_dead_after(Duration::from_secs(600));
    let long = marker(5);
    std::fs::write(f.mode.join("busy"), &long).unwrap();
    let running = krunner_run(&f, &["-n", "1", "--drain-timeout", "600"]).spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 1, RunnerState::Busy);
    signal(pid, Signal::SIGINT);
    // Two signals close together may arrive as one: the second goes once the drain shows.
    let drained = drain_shows(&f);
    let (out, ctx) = force_stop(&f, running);
    assert!(drained, "the drain never showed\n{ctx}");
    assert!(
        out.stderr.contains("e2e-0-1")
            && out.stderr.contains("registration left on GitHub")
            && out.stderr.contains("reconcile"),
        "{ctx}"
    );
    assert_eq!(in_state(&f, RunnerState::Busy), 1, "{ctx}");
}

/// Arms faults on every later call about the runners of the repo: the busy lookup gets a
/// primary rate limit that resets in an hour, deletions of `limited` a `retry-after: 3600`,
/// deletions of `stalled` no answer for an hour, registrations a secondary limit.
fn rate_limit_and_stall(f: &Fixture, limited: u64, stalled: u64) {
    let runners = "/repos/owner/repo/actions/runners";
    let hour = Duration::from_secs(3600);
    f.sim.fail_next(
        "DELETE",
        &format!("{runners}/{limited}"),
        1000,
        Fault::TooManyRequests { retry_after: 3600 },
    );
    f.sim.fail_next(
        "DELETE",
        &format!("{runners}/{stalled}"),
        1000,
        Fault::Slow(hour),
    );
    f.sim
        .fail_next("GET", runners, 1000, Fault::PrimaryLimit { reset_in: hour });
    f.sim.fail_next(
        "POST",
        runners,
        1000,
        Fault::SecondaryLimit {
            retry_after: Some(3600),
        },
    );
}

#[test]
fn a_forced_stop_ends_krunner_while_github_rate_limits_and_stalls() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-force-limited");
    let long = marker(5);
    std::fs::write(f.mode.join("busy"), &long).unwrap();
    let running = krunner_run(&f, &["-n", "2", "--drain-timeout", "600"])
        .env("KRUNNER_STATUS_POLL_MS", "200")
        .spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 2, RunnerState::Busy);
    let ids: Vec<u64> = f.sim.runners().iter().map(|r| r.id).collect();
    rate_limit_and_stall(&f, ids[0], ids[1]);

    signal(pid, Signal::SIGINT);
    // The drain's busy lookup is now waiting out the rate limit.
    let limited = wait_for(30, || {
        f.sim
            .requests()
            .iter()
            .any(|l| l.method == "GET" && l.status == 403)
    });
    let (out, ctx) = force_stop(&f, running);
    assert!(limited, "the busy lookup never met the rate limit\n{ctx}");
    for id in &ids {
        let path = format!("/repos/owner/repo/actions/runners/{id}");
        let tries = f
            .sim
            .requests()
            .iter()
            .filter(|l| l.method == "DELETE" && l.path == path)
            .count();
        // Hurried calls: a few short tries within the force window, not an hour's wait.
        assert!(
            (1..=12).contains(&tries),
            "{tries} tries to delete runner {id}\n{ctx}"
        );
    }
    assert!(
        out.stderr.contains("registration left on GitHub"),
        "the runners left behind are reported\n{ctx}"
    );
    assert_no_run_left(&f, &long, &ctx);
}

#[test]
fn sigkill_then_restart_sweeps_run_dirs_and_reconciles_only_its_own_runners() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-sigkill");
    let idle = marker(3);
    std::fs::write(f.mode.join("idle"), &idle).unwrap();
    let running = krunner_run(&f, &["-n", "2"]).spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 2, RunnerState::Online);
    let dead: Vec<u64> = f.sim.runners().iter().map(|r| r.id).collect();
    let runs = f.td.cache().join("runs");
    let run_dirs = names(&runs);

    signal(pid, Signal::SIGKILL);
    let out = exit_within(running, 10).unwrap();
    assert_eq!(out.code, None, "killed by SIGKILL\n{out}");
    let gone = wait_for(10, || guests_left(&f, &idle).is_empty());
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        gone,
        "the guests die with krunner (PDEATHSIG): {:?}\n{ctx}",
        guests_left(&f, &idle)
    );
    assert_eq!(run_dirs.len(), 2, "{ctx}");
    assert_eq!(names(&runs), run_dirs, "the run dirs stay behind\n{ctx}");
    let mounts = mounts_under(&f.td.cache());
    assert!(mounts.is_empty(), "mounts left: {mounts:?}\n{ctx}");

    // GitHub notices the dead runners are gone; someone else's runners share the repo.
    for id in &dead {
        f.sim.set_runner_state(*id, RunnerState::Offline);
    }
    let repo = SimScope::parse("repo", "owner/repo").unwrap();
    let online = f
        .sim
        .add_runner(&repo, "e2e-7-1", &["krunner-e2e"], RunnerState::Online);
    let other = f
        .sim
        .add_runner(&repo, "other-0-1", &["krunner-other"], RunnerState::Offline);
    let restart = Instant::now();
    std::fs::remove_file(f.mode.join("idle")).unwrap();
    let out = krunner_run(&f, &["-n", "1", "-r", "1"]).run();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(names(&runs).is_empty(), "run dirs swept\n{ctx}");
    let left: Vec<(u64, String)> = f
        .sim
        .runners()
        .into_iter()
        .map(|r| (r.id, r.name))
        .collect();
    assert_eq!(
        left,
        vec![
            (online, "e2e-7-1".to_string()),
            (other, "other-0-1".to_string())
        ],
        "only the dead instance's runners are deleted\n{ctx}"
    );
    // They were deleted by the reconcile at start, before the first registration.
    let log = f.sim.requests();
    let first_jit = log
        .iter()
        .find(|l| l.at > restart && l.path == JIT)
        .map(|l| l.seq)
        .unwrap_or(u64::MAX);
    for id in dead {
        let path = format!("/repos/owner/repo/actions/runners/{id}");
        assert!(
            log.iter().any(|l| l.method == "DELETE"
                && l.path == path
                && l.status == 204
                && l.seq < first_jit),
            "runner {id} reconciled\n{ctx}"
        );
    }
}

/// After a crash, the dead instance's runners stay online and busy on GitHub for a while;
/// a restart at once must not ask for their names again (409 on every try) but use new ones.
#[test]
fn sigkill_with_busy_runners_then_an_immediate_restart_runs_jobs_in_every_slot() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-sigkill-busy");
    // GitHub does not notice the dead runners during this test.
    f.sim.set_dead_after(Duration::from_secs(600));
    let long = marker(6);
    std::fs::write(f.mode.join("busy"), &long).unwrap();
    let running = krunner_run(&f, &["-n", "2"]).spawn();
    let pid = running.pid();
    let running = await_runners(&f, running, 2, RunnerState::Busy);
    let dead: Vec<String> = f.sim.runners().into_iter().map(|r| r.name).collect();
    signal(pid, Signal::SIGKILL);
    let out = exit_within(running, 10).unwrap();
    assert_eq!(out.code, None, "killed by SIGKILL\n{out}");

    std::fs::write(f.mode.join("busy"), "1").unwrap();
    let restart = Instant::now();
    let running = krunner_run(&f, &["-n", "2", "-r", "1", "--max-failures", "2"]).spawn();
    let out = exit_within(running, 120).unwrap();
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    out.success().never_shows("e2e-token");
    let conflicts = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.at > restart && l.path == JIT && l.status == 409)
        .count();
    assert_eq!(conflicts, 0, "no name of a live runner is asked for\n{ctx}");
    let ran: Vec<String> = names(&f.record)
        .into_iter()
        .filter(|n| !dead.contains(n))
        .collect();
    for slot in 0..2 {
        assert!(
            ran.iter().any(|n| n.starts_with(&format!("e2e-{slot}-"))),
            "slot {slot} ran a job under a new name: {ran:?} (dead: {dead:?})\n{ctx}"
        );
    }
    let still: Vec<String> = f.sim.runners().into_iter().map(|r| r.name).collect();
    assert_eq!(
        still, dead,
        "the dead runners are untouched, nothing else is left\n{ctx}"
    );
}

/// A runner that never comes online must not hold its slot: after `--online-timeout` its
/// guest is stopped, its registration deleted, and the slot backs off (and here, after two
/// such failures, stops).
#[test]
fn a_runner_that_never_comes_online_is_stopped_and_its_slot_backs_off() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-never-online");
    let silent = marker(7);
    std::fs::write(f.mode.join("silent"), &silent).unwrap();
    let running = krunner_run(
        &f,
        &["-n", "1", "--online-timeout", "3", "--max-failures", "2"],
    )
    .env("KRUNNER_BACKOFF_BASE_MS", "200")
    .spawn();
    let out = exit_within(running, 120).unwrap();
    out.failure(1).never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        out.stderr.contains("did not come online within 3 s")
            && out
                .stderr
                .contains("stopping this slot after 2 failures in a row"),
        "{ctx}"
    );
    assert_eq!(f.sim.count("POST", JIT), 2, "two attempts\n{ctx}");
    assert_eq!(names(&f.record).len(), 2, "both guests started\n{ctx}");
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
    let left = wait_for(10, || guests_left(&f, &silent).is_empty());
    assert!(left, "guests left: {:?}\n{ctx}", guests_left(&f, &silent));
}

#[test]
fn api_faults_on_30_percent_of_requests_every_loop_survives_one_registration_per_slot() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-faults");
    // Five rules, each firing on ~6.9 % of what reaches it: ~30 % of requests in all.
    let p = 1.0 - 0.7f64.powf(0.2);
    let faults = [
        Fault::Status(502),
        Fault::Status(503),
        Fault::TooManyRequests { retry_after: 1 },
        Fault::Reset,
        Fault::ResetAfterProcessing,
    ];
    // And first, every answer to the first 18 JIT requests is lost after GitHub made the
    // runner: at least one registration call fails as a whole although its runner exists,
    // which the slot must not leave behind next to its next registration.
    f.sim
        .fail_next("POST", JIT, 18, Fault::ResetAfterProcessing);
    for (i, fault) in faults.into_iter().enumerate() {
        f.sim
            .fail_randomly("*", "/", p, 0x6b72_756e + i as u64, fault);
    }
    // Watch the registrations: no slot may ever hold two at once.
    let stop = AtomicBool::new(false);
    let seen: Mutex<BTreeSet<String>> = Mutex::default();
    let out = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let mut per_slot: BTreeMap<String, Vec<String>> = BTreeMap::new();
                for r in f.sim.runners() {
                    if let Some(slot) = r.name.rsplit_once('-').map(|(s, _)| s.to_string()) {
                        per_slot.entry(slot).or_default().push(r.name);
                    }
                }
                for (slot, held) in per_slot {
                    if held.len() > 1 {
                        seen.lock().unwrap().insert(format!("{slot}: {held:?}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let out = krunner_run(&f, &["-n", "3", "-r", "3"])
            .env("KRUNNER_GITHUB_RETRY_BASE_MS", "20")
            .env("KRUNNER_GITHUB_RETRY_MAX_MS", "200")
            .env("KRUNNER_BACKOFF_BASE_MS", "100")
            .run();
        stop.store(true, Ordering::Relaxed);
        out
    });
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    out.success().never_shows("e2e-token");
    let faulted = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.fault.is_some())
        .count();
    assert!(faulted >= 5, "faults were injected ({faulted})\n{ctx}");
    let finished = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/job-finished") && l.status == 200)
        .count();
    assert_eq!(finished, 9, "three loops, three runs each\n{ctx}");
    assert!(
        out.stderr.contains("registering runner"),
        "a registration failed as a whole\n{ctx}"
    );
    assert!(out.stderr.contains("runs=9"), "{ctx}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.is_empty(),
        "a slot held two registrations: {seen:?}\n{ctx}"
    );
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
}

/// Files under `dir` (recursively, symlinks not followed) whose bytes contain `needle`.
fn files_with(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        if t.is_dir() {
            found.extend(files_with(&e.path(), needle));
        } else if t.is_file() || t.is_symlink() {
            let bytes = if t.is_symlink() {
                std::fs::read_link(e.path())
                    .map(|p| p.into_os_string().into_encoded_bytes())
                    .unwrap_or_default()
            } else {
                std::fs::read(e.path()).unwrap_or_default()
            };
            if contains(&bytes, needle) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Processes other than `except` whose argv or environment contains `needle`.
fn processes_holding(needle: &[u8], except: u32) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<u32>() else {
            continue;
        };
        if pid == except {
            continue;
        }
        for what in ["cmdline", "environ"] {
            let bytes = std::fs::read(e.path().join(what)).unwrap_or_default();
            if contains(&bytes, needle) {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                found.push(format!(
                    "{pid} ({what}): {}",
                    String::from_utf8_lossy(&cmd).replace('\0', " ")
                ));
            }
        }
    }
    found
}

/// Runs two idle runners with `k`, checks `secrets` against every other process while they
/// run, stops krunner, and checks them against every file under the cache and log dirs.
/// `late` adds secrets known only once krunner ran (the installation token).
fn assert_no_leak(
    f: &Fixture,
    k: &mut Krunner,
    secrets: &[(&str, Vec<u8>)],
    late: impl Fn() -> Vec<(String, Vec<u8>)>,
) {
    let idle = marker(4);
    std::fs::write(f.mode.join("idle"), &idle).unwrap();
    let running = k.args(["-n", "2"]).spawn();
    let pid = running.pid();
    let running = await_runners(f, running, 2, RunnerState::Online);
    let mut all: Vec<(String, Vec<u8>)> = secrets
        .iter()
        .map(|(n, s)| (n.to_string(), s.clone()))
        .chain(late())
        .collect();
    assert!(all.iter().all(|(_, s)| s.len() >= 16), "usable needles");
    // The scan works: krunner's own environment holds the PAT it was given.
    if let Some((what, s)) = secrets.iter().find(|(w, _)| *w == "the PAT") {
        assert!(
            processes_holding(s, 0)
                .iter()
                .any(|p| p.starts_with(&format!("{pid} (environ)"))),
            "{what} not found in krunner's own environment"
        );
    }
    let mut leaks = Vec::new();
    for (what, s) in &all {
        for p in processes_holding(s, pid) {
            leaks.push(format!("{what} in process {p}"));
        }
        for d in [f.td.cache(), f.td.join("logs")] {
            for file in files_with(&d, s) {
                leaks.push(format!("{what} in {file} (while running)"));
            }
        }
    }
    signal(pid, Signal::SIGINT);
    let out = exit_within(running, 30).unwrap();
    out.success();
    all.extend(late());
    for (what, s) in &all {
        out.never_shows(&String::from_utf8_lossy(s));
        for d in [f.td.cache(), f.td.join("logs")] {
            for file in files_with(&d, s) {
                leaks.push(format!("{what} in {file}"));
            }
        }
    }
    assert!(
        !names(&f.td.join("logs")).is_empty(),
        "the runs wrote logs\n{out}"
    );
    assert!(leaks.is_empty(), "leaks: {leaks:#?}\n{out}");
}

#[test]
fn a_pat_from_krunner_token_leaks_into_no_file_and_no_other_process() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-leak-pat");
    let token = format!("ghp_leakcheck{}Zq9", std::process::id());
    let repo = SimScope::parse("repo", "owner/repo").unwrap();
    f.sim.add_pat(&token, &[&repo]);
    let mut k = krunner_run(&f, &[]);
    k.env("KRUNNER_TOKEN", &token);
    assert_no_leak(
        &f,
        &mut k,
        &[("the PAT", token.clone().into_bytes())],
        Vec::new,
    );
}

#[test]
fn a_github_app_key_and_its_installation_token_leak_nowhere() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-leak-app");
    let (pkcs1_pem, _, public_pem) = crate::github::app_key();
    f.sim.add_app(4343, public_pem);
    let repo = SimScope::parse("repo", "owner/repo").unwrap();
    f.sim.add_installation(4343, &[&repo]);
    let key_file = f.td.join("app.pem");
    std::fs::write(&key_file, pkcs1_pem).unwrap();
    // Needles: a line of the PEM and a slice of the DER from the private part.
    let pem_line = pkcs1_pem.lines().nth(5).unwrap().as_bytes().to_vec();
    let der = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        pkcs1_pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<String>(),
    )
    .unwrap();
    let der_slice = der[der.len() / 2..der.len() / 2 + 48].to_vec();
    let mut k = krunner_run(&f, &[]);
    k.env_remove("KRUNNER_TOKEN")
        .env("KRUNNER_APP_ID", "4343")
        .env("KRUNNER_APP_KEY", &key_file);
    let installation_tokens = || {
        let mut t: Vec<(String, Vec<u8>)> = f
            .sim
            .requests()
            .into_iter()
            .filter(|l| l.auth == AuthKind::Installation)
            .filter_map(|l| l.bearer)
            .map(|b| ("an installation token".to_string(), b.into_bytes()))
            .collect();
        t.dedup();
        t
    };
    assert_no_leak(
        &f,
        &mut k,
        &[
            ("a PEM line of the key", pem_line),
            ("the key's DER", der_slice),
        ],
        installation_tokens,
    );
    assert!(f.sim.installation_tokens_issued() >= 1);
}

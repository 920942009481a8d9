//! `krunner run --scale-set` under the namespace backend against the simulator's Actions
//! service: the scale set is created, its session opened, and guests follow the jobs the test
//! queues on the set. The stand-in scale-set runner (`SCALESET_LISTENER`) reports online,
//! asks the simulator for a job, runs it for `/mode/busy` seconds and exits.

use std::time::{Duration, Instant};

use crate::util::github_sim::{GitHubSim, SimJobState, SimSessionState, SCALESET_LISTENER};
use crate::util::registry::Registry;
use crate::util::*;

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

const SET: &str = "krun-small";

fn image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "scaleset-runner:v1",
        SCALESET_LISTENER,
        None,
    )
}

struct Fixture {
    td: TestDir,
    sim: GitHubSim,
    mode: std::path::PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let td = TestDir::new(name);
    let sim = GitHubSim::start();
    let repo = sim.add_repo("owner/repo");
    sim.add_pat("ss-token", &[&repo]);
    // Short long-polls: the test needs no 50 s waits.
    sim.set_poll_wait(Duration::from_secs(1));
    let mode = td.join("mode");
    std::fs::create_dir_all(&mode).unwrap();
    std::fs::set_permissions(&mode, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    Fixture { td, sim, mode }
}

fn krunner(f: &Fixture, extra: &[&str]) -> Krunner {
    let mut k = krunner_base(f);
    // One CPU per guest from a budget of four, whatever this machine has: up to four guests.
    k.args(["--scale-set", SET, "-c", "1", "--host-cpus", "4"]);
    k.args(extra);
    k
}

/// `krunner run` against the simulator, without a pool.
fn krunner_base(f: &Fixture) -> Krunner {
    let mut k = f.td.krunner();
    k.env("KRUNNER_TOKEN", "ss-token")
        .env("KRUNNER_SCALESET_MIN_IDLE_AGE_MS", "1000")
        .args([
            "run",
            "--backend",
            "namespace",
            "--api-url",
            &f.sim.api_url(),
            "-p",
            "owner/repo",
            "-i",
            &image(),
            "--name-prefix",
            "ss",
            "--log-dir",
            f.td.join("logs").to_str().unwrap(),
            "-M",
            &format!("{}:/mode:ro", f.mode.display()),
        ]);
    k
}

/// Waits up to `secs` for `cond`, panicking with `what` and the simulator's log.
fn wait_for(f: &Fixture, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\nsim log:\n{}",
            f.sim.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn set_id(f: &Fixture) -> u64 {
    wait_for(f, 60, "the scale set", || {
        f.sim.scale_sets().iter().any(|s| s.name == SET)
    });
    f.sim
        .scale_sets()
        .iter()
        .rev()
        .find(|s| s.name == SET)
        .map(|s| s.id)
        .unwrap()
}

fn alive_session(f: &Fixture, id: u64) -> bool {
    f.sim
        .sessions(id)
        .iter()
        .any(|s| s.state == SimSessionState::Alive && !s.stale)
}

fn done(f: &Fixture, id: u64) -> usize {
    f.sim
        .scale_set_jobs(id)
        .iter()
        .filter(|j| j.state == SimJobState::Completed)
        .count()
}

fn sigint(running: &Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.pid() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
}

#[test]
fn six_jobs_on_a_set_of_at_most_three_all_finish_and_it_shrinks_back() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-six");
    // Long enough that the guests overlap even on a loaded machine.
    std::fs::write(f.mode.join("busy"), "5").unwrap();
    let addr = format!("127.0.0.1:{}", crate::run_status::free_port());
    let running = krunner(&f, &["--max", "3", "--metrics", &addr]).spawn();
    let id = set_id(&f);
    wait_for(&f, 60, "the session", || alive_session(&f, id));
    assert!(
        f.sim.runners().is_empty(),
        "min-idle 0: no runner before a job"
    );
    for _ in 0..6 {
        f.sim.queue_job(id, &[SET]);
    }
    let mut peak = 0;
    wait_for(&f, 180, "six jobs done", || {
        peak = peak.max(f.sim.runners().len());
        done(&f, id) == 6
    });
    assert!(peak <= 3, "at most --max 3 runners at once, saw {peak}");
    assert!(peak >= 2, "the jobs ran side by side, saw {peak}");
    wait_for(&f, 60, "the set back to min-idle 0", || {
        f.sim.runners().is_empty()
    });
    assert!(f.sim.max_capacity_seen(id).is_some_and(|c| c <= 3));
    // What krunner reports of the pool: the state file (`krunner status`) and the metrics.
    // The guests end a moment after their runners deregistered.
    let mut doc = serde_json::Value::Null;
    wait_for(
        &f,
        60,
        "krunner status to show six runs and no guest",
        || {
            let status = f.td.krunner().args(["status", "--json"]).run();
            doc = serde_json::from_str(&status.stdout).unwrap_or_default();
            let pool = &doc[0]["pools"][0];
            pool["runs_done"] == 6 && pool["actual"] == 0
        },
    );
    assert_eq!(doc[0]["pools"][0]["name"], SET, "{doc}");
    let metrics = crate::run_status::get(&addr, "/metrics").unwrap();
    for want in [
        "krunner_pool_job_wait_seconds_count{pool=\"krun-small\"} 6",
        "krunner_pool_runs_total{pool=\"krun-small\"} 6",
        "krunner_pool_desired_runners{pool=\"krun-small\"} 0",
        "krunner_pool_job_wait_seconds_bucket{pool=\"krun-small\",le=\"+Inf\"} 6",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    sigint(&running);
    let out = running.wait();
    out.success().never_shows("ss-token");
    assert!(
        f.sim
            .sessions(id)
            .iter()
            .all(|s| s.state == SimSessionState::Deleted),
        "the session is closed at exit\n{out}"
    );
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{out}");
}

#[test]
fn min_idle_one_keeps_a_warm_runner_that_takes_the_first_job() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-warm");
    // --max 1: no second guest can start for the job, so the warm one must take it.
    let running = krunner(&f, &["--min-idle", "1", "--max", "1"]).spawn();
    let id = set_id(&f);
    wait_for(&f, 90, "a warm runner online", || {
        f.sim
            .runners()
            .iter()
            .any(|r| r.state() == crate::util::github_sim::RunnerState::Online)
    });
    let warm = f.sim.runners()[0].name.clone();
    f.sim.queue_job(id, &[SET]);
    wait_for(&f, 60, "the job done", || done(&f, id) == 1);
    let job = &f.sim.scale_set_jobs(id)[0];
    assert_eq!(
        job.runner_name.as_deref(),
        Some(warm.as_str()),
        "the warm runner took it"
    );
    wait_for(&f, 90, "a new warm runner", || {
        f.sim
            .runners()
            .iter()
            .any(|r| r.name != warm && r.state() == crate::util::github_sim::RunnerState::Online)
    });
    sigint(&running);
    running.wait().success();
    wait_for(&f, 30, "no runner left", || f.sim.runners().is_empty());
}

#[test]
fn a_crash_leaves_a_session_the_restart_closes_and_no_job_is_lost() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-crash");
    let first = krunner(&f, &["--max", "2"]).spawn();
    let id = set_id(&f);
    wait_for(&f, 60, "the session", || alive_session(&f, id));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = first.wait();
    // Jobs arrive while no listener is there; the dead one's session is still alive.
    f.sim.queue_job(id, &[SET]);
    f.sim.queue_job(id, &[SET]);
    let second = krunner(&f, &["--max", "2"]).spawn();
    wait_for(&f, 120, "both jobs done after the restart", || {
        done(&f, id) == 2
    });
    let sessions = f.sim.sessions(id);
    assert!(sessions.len() >= 2, "{sessions:?}");
    assert_eq!(
        sessions[0].state,
        SimSessionState::Deleted,
        "the restart closed the dead one's session: {sessions:?}"
    );
    sigint(&second);
    let out = second.wait();
    out.success();
    assert!(
        out.stderr
            .contains("closing the message session a previous krunner left open"),
        "{out}"
    );
}

#[test]
fn an_expired_queue_token_and_a_deleted_scale_set_are_survived() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-faults");
    let running = krunner(&f, &["--max", "2"]).spawn();
    let id = set_id(&f);
    wait_for(&f, 60, "the session", || alive_session(&f, id));
    f.sim.expire_queue_tokens();
    f.sim.queue_job(id, &[SET]);
    wait_for(&f, 90, "a job after the token expired", || {
        done(&f, id) == 1
    });
    assert!(
        f.sim.sessions(id).iter().any(|s| s.refreshes > 0),
        "the session was refreshed: {:?}",
        f.sim.sessions(id)
    );
    assert!(f.sim.delete_scale_set(id));
    wait_for(&f, 90, "the scale set re-created", || {
        f.sim
            .scale_sets()
            .iter()
            .any(|s| s.name == SET && s.id != id)
    });
    let new = set_id(&f);
    wait_for(&f, 60, "a session on the new set", || {
        alive_session(&f, new)
    });
    f.sim.queue_job(new, &[SET]);
    wait_for(&f, 90, "a job on the re-created set", || done(&f, new) == 1);
    sigint(&running);
    let out = running.wait();
    out.success();
    assert!(out.stderr.contains("re-creating"), "{out}");
}

#[test]
fn bad_scale_set_flags_are_usage_errors() {
    let td = TestDir::new("ss-flags");
    for args in [
        &["run", "-p", "o/r", "--scale-set", "s", "-n", "2"][..],
        &["run", "-p", "o/r", "--max", "2"][..],
        &["run", "-p", "o/r", "--scale-set", "s", "--max", "0"][..],
    ] {
        let out = td.krunner().args(args).run();
        assert_eq!(out.code, Some(2), "{args:?}\n{out}");
    }
    let out = td
        .krunner()
        .env("KRUNNER_TOKEN", "t")
        .args([
            "run",
            "-p",
            "o/r",
            "--scale-set",
            "s",
            "--min-idle",
            "3",
            "--max",
            "2",
        ])
        .run();
    assert_ne!(out.code, Some(0), "{out}");
    assert!(
        out.stderr.contains("--min-idle 3 is more than --max 2"),
        "{out}"
    );
}

fn names(dir: &std::path::Path) -> Vec<String> {
    list_names(dir)
}

#[test]
fn jobs_offered_as_available_are_acquired_then_run() {
    if skip(NEEDS) {
        return;
    }
    // GHES's older flow: JobAvailable first; only an acquired job is assigned.
    let f = fixture("ss-available");
    f.sim.set_job_available_flow(true);
    let running = krunner(&f, &["--max", "1"]).spawn();
    let id = set_id(&f);
    wait_for(&f, 60, "the session", || alive_session(&f, id));
    f.sim.queue_job(id, &[SET]);
    wait_for(&f, 90, "the job done", || done(&f, id) == 1);
    assert!(
        f.sim
            .count("POST", "/_services/actions/_apis/runtime/runnerscalesets")
            >= 1
    );
    assert!(
        f.sim
            .requests()
            .iter()
            .any(|l| l.path.contains("/acquirejobs") && l.status == 200),
        "krunner acquired the job\n{}",
        f.sim.log_text()
    );
    sigint(&running);
    running.wait().success();
}

#[test]
fn two_pools_on_one_budget_a_burst_borrows_the_others_room_and_gives_it_back() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-pools");
    std::fs::write(f.mode.join("busy"), "4").unwrap();
    let file = f.td.join("pools.toml");
    std::fs::write(
        &file,
        "[host]\ncpus = 2\nmemory_mib = 4096\n\n\
         [[pool]]\nname = \"pool-a\"\ncpus = 1\nmemory_mib = 256\nmax = 2\n\n\
         [[pool]]\nname = \"pool-b\"\ncpus = 1\nmemory_mib = 256\nmax = 2\n",
    )
    .unwrap();
    let running = krunner_base(&f)
        .args(["--config", file.to_str().unwrap()])
        .spawn();
    let id = |name: &str| {
        f.sim
            .scale_sets()
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.id)
    };
    wait_for(
        &f,
        60,
        "both sets with a session",
        || matches!((id("pool-a"), id("pool-b")), (Some(a), Some(b)) if alive_session(&f, a) && alive_session(&f, b)),
    );
    let (a, b) = (id("pool-a").unwrap(), id("pool-b").unwrap());
    let running_jobs = |set| {
        f.sim
            .scale_set_jobs(set)
            .iter()
            .filter(|j| j.state == SimJobState::Running)
            .count()
    };
    // A burst on pool A takes the whole host: B is idle, so A may use B's share too.
    f.sim.queue_job(a, &["pool-a"]);
    f.sim.queue_job(a, &["pool-a"]);
    wait_for(&f, 60, "both of A's jobs running at once", || {
        running_jobs(a) == 2
    });
    // B's job must wait for room: it starts only once one of A's guests is gone.
    f.sim.queue_job(b, &["pool-b"]);
    let mut peak = 0;
    wait_for(&f, 90, "B's job running", || {
        peak = peak.max(f.sim.runners().len());
        running_jobs(b) == 1 || done(&f, b) == 1
    });
    assert!(
        done(&f, a) >= 1,
        "B started only after A gave room back: A done {}",
        done(&f, a)
    );
    wait_for(&f, 90, "every job done", || {
        done(&f, a) == 2 && done(&f, b) == 1
    });
    assert!(
        peak <= 2,
        "the host budget of 2 CPUs holds two 1-CPU guests, saw {peak}"
    );
    sigint(&running);
    let out = running.wait();
    out.success();
    assert!(
        out.stderr.contains("host budget for all pools: 2 CPUs"),
        "{out}"
    );
}

#[test]
fn a_job_reassigned_because_no_runner_took_it_in_time_still_runs() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("ss-reassign");
    // The runner asks for work only after 3 s; GitHub takes the job back after 2 s and
    // assigns it again (JobCompleted canceled, then JobAssigned), up to three times.
    f.sim.set_reassign_after(Duration::from_secs(2));
    std::fs::write(f.mode.join("job-delay"), "3").unwrap();
    let running = krunner(&f, &["--max", "1"]).spawn();
    let id = set_id(&f);
    wait_for(&f, 60, "the session", || alive_session(&f, id));
    f.sim.queue_job(id, &[SET]);
    wait_for(&f, 90, "the job done", || done(&f, id) == 1);
    let job = &f.sim.scale_set_jobs(id)[0];
    assert!(job.reassignments >= 1, "it was reassigned: {job:?}");
    sigint(&running);
    running.wait().success();
}

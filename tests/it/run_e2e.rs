//! `krunner run` end to end: the built binary under the namespace backend, a test image from
//! the loopback registry, and the GitHub simulator. The image's stand-in
//! `bin/Runner.Listener` decodes its `--jitconfig` (busybox `base64 -d`) to find the
//! simulator's report URL and its runner secret, and records its name. With `/mode/silent` it
//! then sleeps that many seconds without ever reporting (a runner that never comes online);
//! otherwise it reports `online` and sends a heartbeat every second while it lives (the
//! simulator notices a dead runner only when they stop, after its delay), and then either
//! runs a "job" (`job-started`, `job-finished`, exit 0) or, when `/mode/idle` exists, sits
//! idle until SIGTERM, or, when `/mode/fail` exists, exits 3, or, when `/mode/busy` exists,
//! reports `job-started` and works for the seconds in `/mode/busy-{name}` (else
//! `/mode/busy`) before `job-finished`. Stopped (SIGTERM) it exits at once and reports
//! nothing, like a runner whose guest is killed: a busy one stays busy on the simulator until
//! its heartbeats are missed. The namespace backend shares the host's network, so the reports
//! reach the simulator on 127.0.0.1.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::util::github_sim::{GitHubSim, RunnerState};
use crate::util::registry::Registry;
use crate::util::*;

pub(crate) const NEEDS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

pub(crate) const LISTENER: &str = r#"#!/bin/sh
# Stand-in for the actions runner, driven by the simulator's JIT config.
# The runner takes its JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG (krunner keeps it off argv).
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
files=$(echo "$cfg" | busybox base64 -d)
runner=$(echo "$files" | busybox sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | busybox base64 -d)
creds=$(echo "$files" | busybox sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | busybox base64 -d)
url=$(echo "$runner" | busybox sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
name=$(echo "$runner" | busybox sed 's/.*"agentName":"\([^"]*\)".*/\1/')
secret=$(echo "$creds" | busybox sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
echo "$url" > "/record/$name"
[ -f /mode/silent ] && exec busybox sleep "$(busybox cat /mode/silent)"
busybox wget -q -O- --post-data="$secret" "$url/online" || exit 7
# The real runner's session: GitHub sees it alive as long as this goes on.
(while busybox sleep 1; do
  busybox wget -q -O /dev/null --post-data="$secret" "$url/heartbeat" 2>/dev/null
done) &
hb=$!
trap 'kill "$hb" 2>/dev/null' EXIT
# Stopped: gone at once, nothing reported (the guest of a real runner is killed).
trap 'exit 0' TERM
[ -f /mode/fail ] && exit 3
if [ -f /mode/idle ]; then
  busybox sleep "$(busybox cat /mode/idle)" &
  wait $!
  exit 0
fi
busybox wget -q -O- --post-data="$secret" "$url/job-started" || exit 8
if [ -f /mode/busy ]; then
  len=$(busybox cat "/mode/busy-$name" 2>/dev/null || busybox cat /mode/busy)
  busybox sleep "$len" &
  wait $!
fi
busybox wget -q -O- --post-data="$secret" "$url/job-finished" || exit 9
exit 0
"#;

/// busybox, a runner user (1001) and the stand-in runner.
pub(crate) fn runner_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "run-e2e-runner:v2",
        LISTENER,
        None,
    )
}

pub(crate) struct Fixture {
    pub(crate) td: TestDir,
    pub(crate) sim: GitHubSim,
    pub(crate) record: std::path::PathBuf,
    pub(crate) mode: std::path::PathBuf,
}

pub(crate) fn fixture(name: &str) -> Fixture {
    let td = TestDir::new(name);
    let sim = GitHubSim::start();
    let repo = sim.add_repo("owner/repo");
    sim.add_pat("e2e-token", &[&repo]);
    let record = td.join("record");
    let mode = td.join("mode");
    for d in [&record, &mode] {
        std::fs::create_dir_all(d).unwrap();
        // The runner (uid 1001) writes to record and reads mode.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    Fixture {
        td,
        sim,
        record,
        mode,
    }
}

pub(crate) fn krunner_run(f: &Fixture, extra: &[&str]) -> Krunner {
    krunner_run_with(f, f.td.krunner(), extra)
}

/// [`krunner_run`] with a krunner command of the caller's (another user's, say).
pub(crate) fn krunner_run_with(f: &Fixture, mut k: Krunner, extra: &[&str]) -> Krunner {
    k.env("KRUNNER_TOKEN", "e2e-token").args([
        "run",
        "--backend",
        "namespace",
        "--api-url",
        &f.sim.api_url(),
        "-p",
        "owner/repo",
        "-i",
        &runner_image(),
        "--name-prefix",
        "e2e",
        "--log-dir",
        f.td.join("logs").to_str().unwrap(),
        "-M",
        &format!("{}:/record", f.record.display()),
        "-M",
        &format!("{}:/mode:ro", f.mode.display()),
    ]);
    k.args(extra);
    k
}

pub(crate) fn names(dir: &Path) -> Vec<String> {
    let mut n = list_names(dir);
    n.sort();
    n
}

#[test]
fn three_loops_twice_each_give_six_jit_runners_and_leave_no_registration() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-six");
    let out = krunner_run(&f, &["-n", "3", "-r", "2"]).run();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert_eq!(
        f.sim.count(
            "POST",
            "/repos/owner/repo/actions/runners/generate-jitconfig"
        ),
        6,
        "{ctx}"
    );
    let ran = names(&f.record);
    assert_eq!(
        ran.len(),
        6,
        "six distinct runner names ran: {ran:?}\n{ctx}"
    );
    for slot in 0..3 {
        for seq in 1..=2 {
            let n = format!("e2e-{slot}-{seq}");
            assert!(ran.contains(&n), "{n} missing from {ran:?}\n{ctx}");
        }
    }
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
    assert_eq!(names(&f.td.join("logs")).len(), 6, "one log per run\n{ctx}");
    for l in names(&f.td.join("logs")) {
        let text = std::fs::read_to_string(f.td.join("logs").join(&l)).unwrap();
        assert!(
            text.trim_end().ends_with("ended: exited 0") && text.contains("krunner: run "),
            "krunner notes how the run ended at the end of {l}:\n{text}"
        );
    }
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
}

/// Processes whose command line contains `needle`.
///
/// Reading /proc/PID/cmdline takes the process's mm lock, which a process stuck in its exit
/// can hold for long: the scan runs in a thread of its own and gives up after 20 s, returning
/// a line that says so (so a caller that expects no match fails, naming the cause).
pub(crate) fn processes_with(needle: &str) -> Vec<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let needle = needle.to_string();
    std::thread::spawn(move || {
        let _ = tx.send(scan_processes(&needle));
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| vec!["(reading /proc/*/cmdline blocked for 20 s)".to_string()])
}

fn scan_processes(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    found
}

#[test]
fn sigint_while_idle_stops_at_once_and_leaves_nothing() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-sigint-idle");
    // A sleep length no other test uses marks this test's runner processes.
    let marker = format!("{}", 700_000 + std::process::id() % 100_000);
    std::fs::write(f.mode.join("idle"), &marker).unwrap();
    let running = krunner_run(&f, &["-n", "3"]).spawn();
    let pid = running.pid();

    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let online = f
            .sim
            .runners()
            .iter()
            .filter(|r| r.state() == RunnerState::Online)
            .count();
        if online == 3 {
            break;
        }
        if Instant::now() > deadline {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let out = running.wait();
            panic!(
                "three runners never came online ({online})\n{out}\n{}",
                f.sim.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }

    let sent = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(running.wait());
    });
    let out = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(o) => o,
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("krunner did not exit within 30 s of SIGINT");
        }
    };
    let took = sent.elapsed();
    out.success().never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        took < Duration::from_secs(20),
        "idle runners must stop at once, not after the 600 s drain; took {took:?}\n{ctx}"
    );
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
    let left: Vec<String> = processes_with(&marker)
        .into_iter()
        .chain(processes_with(f.td.path().to_str().unwrap()))
        .collect();
    assert!(left.is_empty(), "guest processes left: {left:?}\n{ctx}");
}

#[test]
fn loops_that_keep_failing_stop_and_krunner_exits_non_zero() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-failing");
    std::fs::write(f.mode.join("fail"), "").unwrap();
    let out = krunner_run(&f, &["-n", "2", "--max-failures", "2"]).run();
    out.failure(1).never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        out.stderr
            .contains("stopping this slot after 2 failures in a row")
            && out.stderr.contains("exit 3"),
        "{ctx}"
    );
    assert!(
        out.error_text()
            .contains("every runner loop stopped on errors"),
        "{ctx}"
    );
    assert_eq!(
        f.sim.count(
            "POST",
            "/repos/owner/repo/actions/runners/generate-jitconfig"
        ),
        4,
        "two attempts per loop\n{ctx}"
    );
    assert!(f.sim.runners().is_empty(), "registrations left\n{ctx}");
}

/// On a host whose KVM cannot run the guest kernel (our nested PVM machines), `krunner run
/// --backend krun` must say what that means, not only libkrun's raw line and an exit status;
/// and it leaves no registration behind.
#[test]
fn run_on_a_kvm_that_cannot_boot_guests_explains_the_failure() {
    if skip(NEEDS) {
        return;
    }
    if !crate::launcher::pvm_host() {
        skip_because("needs nested PVM KVM, whose guests die with KVM_EXIT_INTERNAL_ERROR (elsewhere the krun_guest tests boot for real)");
        return;
    }
    let Some(fw) = crate::launcher::libkrunfw_dir() else {
        skip_because("needs libkrunfw.so.5 (tests/setup.sh)");
        return;
    };
    let f = fixture("run-pvm");
    let out =
        f.td.krunner()
            .env("KRUNNER_TOKEN", "e2e-token")
            .args(["run", "--backend", "krun", "--libkrunfw-dir"])
            .arg(&fw)
            .args([
                "-c",
                "1",
                "-m",
                "256",
                "-n",
                "1",
                "--max-failures",
                "1",
                "--api-url",
                &f.sim.api_url(),
                "-p",
                "owner/repo",
                "-i",
                &runner_image(),
                "--name-prefix",
                "pvm",
                "--log-dir",
                f.td.join("logs").to_str().unwrap(),
            ])
            .run();
    out.failure(1).never_shows("e2e-token");
    let ctx = format!("{out}\nsim log:\n{}", f.sim.log_text());
    assert!(
        out.stderr.contains("cannot run the libkrunfw guest kernel")
            && out.stderr.contains("krunner doctor"),
        "the slot's error explains KVM_EXIT_INTERNAL_ERROR\n{ctx}"
    );
    let logs = list_names(&f.td.join("logs"));
    assert_eq!(logs.len(), 1, "{ctx}");
    let log = std::fs::read_to_string(f.td.join("logs").join(&logs[0])).unwrap();
    assert!(
        log.contains("KVM_EXIT_INTERNAL_ERROR"),
        "the run's log keeps libkrun's own line:\n{log}"
    );
    assert!(f.sim.runners().is_empty(), "registrations left\n{ctx}");
    assert!(names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
}

#[test]
fn shares_of_the_image_cache_are_refused_and_the_old_cache_flag_warns() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("run-job-cache");
    let cache = f.td.cache();
    let inside = cache.join("jobs");
    let out = krunner_run(&f, &["--job-cache", inside.to_str().unwrap()]).run();
    out.failure(1);
    let err = out.error_text();
    assert!(
        err.contains("--job-cache")
            && err.contains("lies inside the image cache")
            && err.contains(inside.to_str().unwrap())
            && err.contains(&format!("the image cache {}", cache.display())),
        "{out}"
    );
    assert!(!inside.exists(), "nothing is created in the cache\n{out}");
    let out = krunner_run(&f, &["-M", &format!("{}:/all", f.td.path().display())]).run();
    out.failure(1);
    assert!(
        out.error_text().contains("contains the image cache"),
        "{out}"
    );
    assert_eq!(f.sim.count("*", "/"), 0, "refused before any GitHub call");

    let jobs = f.td.join("jobs");
    let out = krunner_run(&f, &["-r", "1", "--cache", jobs.to_str().unwrap()]).run();
    out.success();
    assert!(
        out.stderr
            .contains("--cache (KRUNNER_CACHE) is now --job-cache (KRUNNER_JOB_CACHE)"),
        "{out}"
    );
    assert!(
        jobs.is_dir(),
        "the old name still shares the directory\n{out}"
    );
}

#[test]
fn a_name_prefix_github_would_refuse_is_an_error_before_any_call() {
    let td = TestDir::new("run-bad-prefix");
    let sim = GitHubSim::start();
    let repo = sim.add_repo("owner/repo");
    sim.add_pat("e2e-token", &[&repo]);
    let long = "p".repeat(52);
    for (prefix, why) in [
        ("bad name", "' ' is not allowed"),
        ("a/b", "'/' is not allowed"),
        (long.as_str(), "52 characters, at most 51 with -n 1"),
    ] {
        let out = td
            .krunner()
            .env("KRUNNER_TOKEN", "e2e-token")
            .args(["run", "--api-url", &sim.api_url(), "-p", "owner/repo"])
            .args(["--name-prefix", prefix])
            .run();
        out.failure(1);
        let err = out.error_text();
        assert!(
            err.contains(&format!("--name-prefix {prefix:?}")) && err.contains(why),
            "{out}"
        );
    }
    assert_eq!(sim.count("*", "/"), 0, "{}", sim.log_text());
}

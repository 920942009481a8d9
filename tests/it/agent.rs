//! The guest agent end to end under the namespace backend, driven through the launcher's
//! library API with a test image: busybox plus a stand-in `bin/Runner.Listener` (and
//! `config.sh`) that records its argv, environment, uid and what it can see of the secrets
//! share, then exits with a code chosen by its registration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use krunner::guest::{Registration, RunnerJob};
use krunner::guestfs::Share;
use krunner::image::cache::Cache;
use krunner::image::Cancel;
use krunner::jail::egress::EgressPolicy;
use krunner::launcher::run::{Launcher, Output, RunOutcome, RunRequest, VmExit, Workload};
use krunner::launcher::Backend;
use krunner::secret::Secret;

use crate::util::registry::Registry;
use crate::util::*;

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

const LISTENER: &str = r#"#!/bin/sh
# Stand-in for the actions runner: records how it was started, then behaves as its
# registration says (exit3: exit 3; sleep: wait for SIGTERM).
rec=/record
# First of all, so a stop that comes early (a loaded machine) still finds the trap.
case "${ACTIONS_RUNNER_INPUT_JITCONFIG:-}" in
  *sleep*) trap 'echo got-term > $rec/signal; exit 143' TERM ;;
esac
echo "uid=$(id -u) gid=$(id -g) groups=$(id -G)" > $rec/id
for a in "$@"; do echo "$a"; done > $rec/argv
env > $rec/env
cat /proc/self/cmdline > /dev/null
if ls /.krunner/secrets > $rec/secrets-ls 2>&1; then echo listed >> $rec/secrets-ls; fi
grep -c krunner/secrets /proc/mounts > $rec/secret-mounts || true
# The runner takes its JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG (krunner keeps it off argv).
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
case "$cfg" in
  # A hostile job (root in the guest) replaces the agent's result with something that would
  # hurt a trusting reader, and blocks the agent's own write (result.tmp is a directory).
  *hostile-*)
    r=/.krunner/results
    rm -rf $r/result $r/result.tmp && mkdir $r/result.tmp
    case "$cfg" in
      *symlink*) ln -s /dev/zero $r/result ;;
      *fifo*) mkfifo $r/result ;;
      *huge*) truncate -s 1G $r/result ;;
    esac
    ls -l $r > $rec/hostile-ls 2>&1 ;;
  *sleep*) trap 'echo got-term > $rec/signal; exit 143' TERM; sleep 60 & wait $! ;;
  *exit3*) exit 3 ;;
esac
exit 0
"#;

const CONFIG_SH: &str = r#"#!/bin/sh
for a in "$@"; do echo "$a"; done > /record/config-argv
env > /record/config-env
echo "uid=$(id -u)" > /record/config-id
"#;

/// The busybox image plus a runner user (1001, group docker) and the stand-in runner.
fn runner_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "agent-runner:v2",
        LISTENER,
        Some(CONFIG_SH),
    )
}

struct Fixture {
    td: TestDir,
    rootfs: PathBuf,
    record: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let td = TestDir::new(name);
    let rootfs = td.krunner().args(["pull", &runner_image()]).run().rootfs();
    let record = td.join("record");
    std::fs::create_dir_all(&record).unwrap();
    // The runner (uid 1001) writes here.
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    Fixture { td, rootfs, record }
}

fn run(f: &Fixture, registration: Registration, lifetime: Option<Duration>) -> RunOutcome {
    run_as(f, registration, lifetime, "runner")
}

fn run_as(
    f: &Fixture,
    registration: Registration,
    lifetime: Option<Duration>,
    user: &str,
) -> RunOutcome {
    let launcher = Launcher::new(Cache::open(&f.td.cache()).unwrap())
        .unwrap()
        .with_child_exe(PathBuf::from(env!("CARGO_BIN_EXE_krunner")));
    let req = RunRequest {
        backend: Backend::Namespace,
        rootfs: f.rootfs.clone(),
        manifest: None,
        cpus: 1,
        memory_mib: 512,
        shares: vec![Share {
            tag: "record".into(),
            host: f.record.clone(),
            guest: "/record".into(),
            read_only: false,
        }],
        workload: Workload::Runner(RunnerJob {
            registration,
            work: "_work".into(),
            user: user.into(),
            root: "/opt/actions-runner".into(),
        }),
        env: Vec::new(),
        workdir: "/".into(),
        hostname: "agent-test".into(),
        dns: "1.1.1.1".into(),
        max_lifetime: lifetime,
        stop_grace: Duration::from_secs(10),
        output: Output::Capture,
        krun_log_level: 1,
        libkrunfw_dir: None,
        user_namespace: false,
        nofile: 4096,
        egress: EgressPolicy::Public { allow: Vec::new() },
        runner: None,
    };
    // Bounded: a reader that trusts the guest's files can block for ever (a FIFO).
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(
                Duration::from_secs(300),
                launcher.run(&req, &Cancel::default()),
            )
            .await
        })
        .expect("the run ended within 300 s")
        .unwrap()
}

/// The peak resident memory of this process (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// The guest controls its results share: a result that is a symlink to /dev/zero, a FIFO or
/// a 1 GiB file is ignored, the run still ends and cleans up, and memory stays flat.
#[test]
fn a_hostile_result_file_is_ignored_and_costs_nothing() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("agent-hostile");
    for kind in ["symlink", "fifo", "huge"] {
        let before = peak_rss_kib();
        let o = run_as(
            &f,
            Registration::Jit(Secret::new(format!("JIT-hostile-{kind}"))),
            None,
            "root",
        );
        let grew = peak_rss_kib().saturating_sub(before);
        let ctx = format!(
            "{kind}: {}\nresults share as the job left it:\n{}",
            show(&o),
            read(&f.record.join("hostile-ls"))
        );
        // The agent cannot write its own result either (result.tmp is a directory): it says
        // so and fails; what matters is that the host was not fooled.
        assert!(
            show(&o).contains("result.tmp"),
            "the agent's complaint\n{ctx}"
        );
        assert!(
            read(&f.record.join("hostile-ls")).contains("result"),
            "the job did not plant its result\n{ctx}"
        );
        assert_eq!(o.guest_result, None, "a planted result was believed\n{ctx}");
        assert!(
            grew < 256 * 1024,
            "reading it grew this process by {grew} KiB\n{ctx}"
        );
        assert!(list_names(&f.td.cache().join("runs")).is_empty(), "{ctx}");
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))
}

fn show(o: &RunOutcome) -> String {
    let (out, err) = o.captured.clone().unwrap_or_default();
    format!(
        "exit {:?}, result {:?}\nstdout:\n{}\nstderr:\n{}",
        o.exit,
        o.guest_result,
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&err)
    )
}

#[test]
fn jit_runner_runs_as_1001_without_the_secret_around_it() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("agent-jit");
    let secret = "JITCONFIG-exit3-c2VjcmV0LXZhbHVl";
    let o = run(&f, Registration::Jit(Secret::new(secret)), None);
    let ctx = show(&o);
    assert_eq!(
        o.exit,
        VmExit::Exited(3),
        "the runner's status is the guest's\n{ctx}"
    );
    let r = o.guest_result.clone().expect("the agent wrote its result");
    assert_eq!(r.exit_code, 3, "{ctx}");
    assert!(r.runner_started.is_some() && r.ended >= r.started, "{ctx}");
    assert!(
        read(&f.record.join("id")).starts_with("uid=1001 "),
        "{}",
        read(&f.record.join("id"))
    );
    assert!(
        read(&f.record.join("id")).contains("121"),
        "in group docker: {}",
        read(&f.record.join("id"))
    );
    // The JIT config reaches the runner in its environment alone (the runner reads and
    // clears ACTIONS_RUNNER_INPUT_JITCONFIG), never in its argv.
    assert_eq!(read(&f.record.join("argv")), "run\n");
    let env = read(&f.record.join("env"));
    assert_eq!(
        env.lines()
            .filter(|l| l.contains(secret))
            .collect::<Vec<_>>(),
        vec![format!("ACTIONS_RUNNER_INPUT_JITCONFIG={secret}")],
        "the registration is in the runner's environment once, as its JIT config:\n{env}"
    );
    assert!(env.contains("HOME=/home/runner"), "{env}");
    assert!(
        !env.contains("KRUNNER_BACKEND"),
        "the runner's environment is minimal:\n{env}"
    );
    // The secrets share is gone before the runner starts: unmounted and closed.
    assert_eq!(
        read(&f.record.join("secret-mounts")).trim(),
        "0",
        "still mounted"
    );
    assert!(
        !read(&f.record.join("secrets-ls")).contains("listed"),
        "the runner could list the secrets dir: {}",
        read(&f.record.join("secrets-ls"))
    );
    assert!(!read(&f.record.join("secrets-ls")).contains("jitconfig"));
    // And nothing of the run is left on the host.
    assert!(list_names(&f.td.cache().join("runs")).is_empty());
}

#[test]
fn sigterm_reaches_the_runner() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("agent-term");
    let o = run(
        &f,
        Registration::Jit(Secret::new("JIT-sleep")),
        // Room for the guest to start on a busy machine; the stand-in then waits 60 s.
        Some(Duration::from_secs(10)),
    );
    let ctx = show(&o);
    assert_eq!(o.exit, VmExit::LifetimeExceeded, "{ctx}");
    assert_eq!(read(&f.record.join("signal")).trim(), "got-term", "{ctx}");
    assert_eq!(
        o.guest_result.as_ref().map(|r| r.exit_code),
        Some(143),
        "{ctx}"
    );
}

#[test]
fn token_mode_configures_then_runs() {
    if skip(NEEDS) {
        return;
    }
    let f = fixture("agent-token");
    let o = run(
        &f,
        Registration::Token {
            token: Secret::new("REGTOKEN-1234"),
            url: "https://github.com/octo/repo".into(),
            name: "host-0-7".into(),
            labels: vec!["krun".into(), "busybox".into()],
            group: Some("Default".into()),
        },
        None,
    );
    let ctx = show(&o);
    assert_eq!(o.exit, VmExit::Exited(0), "{ctx}");
    let args: Vec<String> = read(&f.record.join("config-argv"))
        .lines()
        .map(String::from)
        .collect();
    let want = [
        "--unattended",
        "--ephemeral",
        "--disableupdate",
        "--url",
        "https://github.com/octo/repo",
        "--name",
        "host-0-7",
        "--work",
        "_work",
        "--labels",
        "krun,busybox",
        "--runnergroup",
        "Default",
    ];
    assert_eq!(args, want, "{ctx}");
    assert_eq!(read(&f.record.join("config-id")).trim(), "uid=1001");
    // The token reaches config.sh in its environment, not its argv, and the runner not at all.
    assert!(
        read(&f.record.join("config-env"))
            .lines()
            .any(|l| l == "ACTIONS_RUNNER_INPUT_TOKEN=REGTOKEN-1234"),
        "{}",
        read(&f.record.join("config-env"))
    );
    assert_eq!(read(&f.record.join("argv")), "run\n");
    assert!(!read(&f.record.join("env")).contains("REGTOKEN"));
}

#[test]
fn a_missing_runner_user_is_an_init_error() {
    if skip(NEEDS) {
        return;
    }
    // The plain busybox image has no user `runner` and no /opt/actions-runner.
    let td = TestDir::new("agent-nouser");
    let reg = Registry::shared();
    static PUSHED: std::sync::Once = std::sync::Once::new();
    PUSHED.call_once(|| reg.push(crate::util::oci::busybox_image(), "agent-plain:v1"));
    let rootfs = td
        .krunner()
        .args(["pull", &reg.reference("agent-plain:v1")])
        .run()
        .rootfs();
    let f = Fixture {
        record: td.join("record"),
        td,
        rootfs,
    };
    std::fs::create_dir_all(&f.record).unwrap();
    let o = run(&f, Registration::Jit(Secret::new("JIT")), None);
    assert_eq!(o.exit, VmExit::Exited(125), "{}", show(&o));
    assert_eq!(
        o.guest_result.as_ref().map(|r| r.exit_code),
        Some(125),
        "{}",
        show(&o)
    );
    let (_, err) = o.captured.clone().unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&err).contains("no user runner"),
        "{}",
        show(&o)
    );
}

//! Real libkrun guests in the test suite. Our hosts' nested PVM KVM cannot run libkrunfw's
//! kernel, so each test here boots the emulated KVM host of `tests/l1.sh` (QEMU in software,
//! AMD SVM, Debian's kernel with kvm_amd) once and runs one group of the `it` binary's krun tests
//! inside it (`tests/it/krun_guest.rs`, ignored elsewhere): one L1 boot per group, not per test.
//!
//! The groups run one after another (one L1 at a time: each wants both cores). The `it` binary
//! must list as many tests for a group as it has, so a filter that matches nothing fails, and
//! every one of them must pass in L1.
//! Needs root, QEMU, busybox-static, cpio, kmod and libkrunfw (tests/setup.sh); without them the
//! tests say why and skip, and fail under `KRUNNER_IT_REQUIRE_ALL=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Instant;

static ONE_L1_AT_A_TIME: Mutex<()> = Mutex::new(());

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The `it` test binary cargo built next to this one (the newest, if several hashes exist).
fn it_binary() -> PathBuf {
    let me = std::env::current_exe().unwrap();
    let deps = me.parent().unwrap();
    std::fs::read_dir(deps)
        .unwrap()
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().to_string();
            n.starts_with("it-") && !n.contains('.')
        })
        .filter(|e| {
            use std::os::unix::fs::PermissionsExt;
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .unwrap_or_else(|| {
            panic!(
                "no `it` test binary in {} (cargo test --workspace builds it)",
                deps.display()
            )
        })
}

/// Why L1 cannot run here, if it cannot.
fn missing() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("root".into());
    }
    let check = Command::new("bash")
        .arg(repo().join("tests/l1.sh"))
        .arg("check")
        .output()
        .unwrap();
    if !check.status.success() {
        return Some(String::from_utf8_lossy(&check.stderr).trim().to_string());
    }
    let fw = libkrunfw_dir();
    if !fw.join("libkrunfw.so.5").exists() {
        return Some(format!(
            "libkrunfw.so.5 in {} (tests/setup.sh unpacks it)",
            fw.display()
        ));
    }
    None
}

/// Where tests/setup.sh put libkrunfw.
fn libkrunfw_dir() -> PathBuf {
    std::env::var_os("KRUNNER_TEST_LIBKRUNFW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/krunner-test/libkrunfw"))
}

/// How many times a group may boot L1 when L1 freezes (each later boot runs only the tests
/// that have not passed yet).
const BOOTS: usize = 3;

/// The ignored `it` tests whose names contain `filter`, listed by the `it` binary on this host.
fn list(it: &Path, filter: &str) -> Vec<String> {
    let out = Command::new(it)
        .args(["--list", "--ignored", "--format", "terse", filter])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} --list failed: {out:?}",
        it.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// The tests an attempt's output reports as passed (`test NAME ... ok`). A line that a child
/// process's output split is missed, and that test simply runs again on the next boot.
fn passed_in(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test ")?.strip_suffix(" ... ok"))
        .map(str::to_string)
        .collect()
}

/// The sum of the `test result: ok. N passed` lines.
fn passed_count(stdout: &str) -> usize {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("test result: ok. "))
        .filter_map(|l| l.split_whitespace().next()?.parse::<usize>().ok())
        .sum()
}

/// Boots L1 once and runs the ignored `it` tests named in `tests` there (exact names); returns
/// what came out and a printable account of it (also printed).
fn boot_and_run(
    it: &Path,
    target: &Path,
    preload: &[PathBuf],
    tests: &[String],
) -> (std::process::Output, String) {
    let t = Instant::now();
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("tests/l1.sh"))
        // A stalled group is stopped well inside CI's limit, with a dump of what L1's tasks
        // wait on (tests/l1.sh); a normal group takes 4 to 6 minutes.
        .args(["run", "--timeout", "900"])
        .args(["--env", "KRUNNER_IT_REQUIRE_ALL"])
        .args(["--env", "KRUNNER_TEST_LIBKRUNFW_DIR"])
        .args(["--env", "KRUNNER_IT_KEEP"])
        .args(["--env", "RUST_BACKTRACE"])
        .arg("--keep")
        .arg(target);
    for p in preload {
        cmd.arg("--preload").arg(p);
    }
    let out = cmd
        .arg("--")
        .arg(it)
        .args(["--ignored", "--test-threads=1", "--exact"])
        .args(tests)
        .current_dir(repo())
        .output()
        .unwrap();
    // Indented, so that the inner binary's "test result:" lines are not mistaken for this
    // binary's own (CI adds those up).
    let indent = |t: &[u8]| {
        String::from_utf8_lossy(t)
            .lines()
            .map(|l| format!("  | {l}\n"))
            .collect::<String>()
    };
    let ctx = format!(
        "tests/l1.sh run -- {} --ignored --exact ({} tests): {} after {:.0} s\n--- output ---\n{}--- stderr ---\n{}",
        it.display(),
        tests.len(),
        out.status,
        t.elapsed().as_secs_f64(),
        indent(&out.stdout),
        indent(&out.stderr)
    );
    eprintln!("{ctx}");
    (out, ctx)
}

/// Makes a frozen boot visible even when the next one passes: written to the real stderr
/// (the test harness captures only `eprintln!`) and kept in `$KRUNNER_L1_DIR/stalls/`.
fn report_stall(filter: &str, left: usize, ctx: &str) {
    use std::io::Write;
    let text = format!(
        "L1 STALLED in group {filter}; booting it again for the {left} tests that have not passed\n{ctx}\n"
    );
    let _ = std::io::stderr().write_all(text.as_bytes());
    let dir = PathBuf::from(
        std::env::var_os("KRUNNER_L1_DIR").unwrap_or_else(|| "/var/tmp/krunner-test/l1".into()),
    )
    .join("stalls");
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(format!("{secs}.log")), &text);
    }
}

/// Boots L1 and runs the ignored `it` tests matching `filter` there, `tests` of them.
fn group(filter: &str, tests: usize) {
    if let Some(why) = missing() {
        assert!(
            std::env::var_os("KRUNNER_IT_REQUIRE_ALL").is_none(),
            "SKIP {filter}: needs {why} (KRUNNER_IT_REQUIRE_ALL is set)"
        );
        eprintln!("SKIP {filter}: needs {why}");
        return;
    }
    let _one = ONE_L1_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let it = it_binary();
    let mut left = list(&it, filter);
    assert_eq!(
        left.len(),
        tests,
        "the group {filter} has {tests} tests, the it binary lists {left:?}"
    );
    // target/debug/deps/it-HASH: the target directory holds the krunner binary the tests run.
    let target = it
        .ancestors()
        .nth(3)
        .unwrap_or(Path::new("/"))
        .to_path_buf();
    let fw = libkrunfw_dir();
    let preload = [
        it.clone(),
        // target/debug/deps/it-HASH → target/debug/krunner
        it.ancestors()
            .nth(2)
            .unwrap_or(Path::new("/"))
            .join("krunner"),
        fw.join("libkrunfw.so.5"),
    ];
    let mut log = String::new();
    for boot in 1..=BOOTS {
        let (out, ctx) = boot_and_run(&it, &target, &preload, &left);
        log.push_str(&ctx);
        let stdout = String::from_utf8_lossy(&out.stdout);
        match out.status.code() {
            Some(0) => {
                // Exit 0 with exact names: every test asked for ran and passed.
                assert_eq!(
                    passed_count(&stdout),
                    left.len(),
                    "{} tests were asked for in L1\n{log}",
                    left.len()
                );
                return;
            }
            // Exit 4: L1 froze as a whole (tests/l1.sh saw its init loop stop), which an
            // emulated machine does now and then for reasons of its own. The tests that passed
            // stay passed; the others run on a fresh boot, said loudly. A test that fails, a
            // group that outlives its timeout (3) or a freeze on the last boot fails the group.
            Some(4) if boot < BOOTS && !stdout.contains(" ... FAILED") => {
                let passed = passed_in(&stdout);
                left.retain(|t| !passed.contains(t));
                report_stall(filter, left.len(), &ctx);
            }
            _ => break,
        }
    }
    panic!(
        "the group {filter} failed in L1 ({} tests had not passed)\n{log}",
        left.len()
    );
}

/// `doctor`, `exec` (output, status, signals, any argv, shares, size, lifetime, SIGKILL, the
/// run cgroup and an out-of-memory kill under namespaces, the network jail).
#[test]
fn krun_exec_in_real_guests() {
    group("krun_guest::exec_", 11);
}

/// The VMM's user namespace and minimal tree: the VMM's ids and view, the owners of what the
/// guest writes, a share on a file system without idmapped mounts.
#[test]
fn krun_userns_in_real_guests() {
    group("krun_guest::userns_", 3);
}

/// `run` in JIT and token modes, shutdown (idle, drain, forced), SIGKILL and restart.
#[test]
fn krun_run_in_real_guests() {
    group("krun_guest::run_", 8);
}

/// What a frozen boot printed: the tests before the freeze passed, the one it froze in did not.
#[test]
fn a_frozen_boot_keeps_the_tests_that_passed() {
    let out = "\nrunning 3 tests\ntest krun_guest::exec_a ... ok\n\
               test krun_guest::exec_b ... ok\ntest krun_guest::exec_c ... ";
    assert_eq!(passed_in(out), ["krun_guest::exec_a", "krun_guest::exec_b"]);
    assert_eq!(passed_count(out), 0);
    let done = "test krun_guest::exec_c ... ok\n\ntest result: ok. 1 passed; 0 failed; \
                0 ignored; 0 measured; 2 filtered out; finished in 9.50s\n";
    assert_eq!(passed_in(done), ["krun_guest::exec_c"]);
    assert_eq!(passed_count(done), 1);
}

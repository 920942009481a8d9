//! The launcher through `krunner exec`: the namespace backend end to end (exit status, output,
//! shares, read-only shares, clone isolation, environment, lifetime, crash recovery), the
//! libkrun backend as far as this hardware goes (every krun_* call, then krun_start_enter up to
//! the vCPU), and `krunner doctor` on this machine.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::util::oci::busybox_image;
use crate::util::registry::Registry;
use crate::util::*;

const NS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

/// Pushes the busybox image once and returns its reference.
fn image() -> String {
    let reg = Registry::shared();
    static PUSHED: std::sync::Once = std::sync::Once::new();
    PUSHED.call_once(|| reg.push(busybox_image(), "launch-busybox:v1"));
    reg.reference("launch-busybox:v1")
}

fn exec_ns(td: &TestDir, extra: &[&str], script: &str) -> Outcome {
    let mut k = td.krunner();
    k.args(["exec", "--backend", "namespace"])
        .args(extra)
        .args([image().as_str(), "--", "sh", "-c", script]);
    k.run()
}

/// Entries left under `$CACHE/runs`.
fn runs_left(td: &TestDir) -> Vec<String> {
    list_names(&td.cache().join("runs"))
}

/// Mount points at or under `dir` in the host's mount namespace.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let d = dir.to_string_lossy().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&d))
        .map(String::from)
        .collect()
}

#[test]
fn ns_exit_status_output_and_guest_view() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-basic");
    let mut k = td.krunner();
    // A secret in krunner's environment must not reach the guest.
    k.env("KRUNNER_TEST_SECRET", "s3cr3t-value");
    k.args([
        "exec",
        "--backend",
        "namespace",
        image().as_str(),
        "--",
        "sh",
        "-c",
    ]);
    k.arg("echo out-line; echo err-line >&2; hostname; echo pid1=$(cat /proc/1/cmdline | tr '\\0' ' '); ps -o pid,args | wc -l; env; cat /etc/resolv.conf; exit 7");
    let out = k.run();
    assert_eq!(
        out.code,
        Some(7),
        "the guest's exit status is krunner's\n{out}"
    );
    assert!(out.stdout.contains("out-line"), "{out}");
    assert!(out.stderr.contains("err-line"), "{out}");
    assert!(out.stdout.contains("krunner-exec\n"), "hostname\n{out}");
    assert!(
        out.stdout.contains("pid1=") && out.stdout.contains("__ns-init"),
        "PID 1 is krunner's init\n{out}"
    );
    assert!(
        !out.stdout.contains("s3cr3t-value") && !out.stderr.contains("s3cr3t-value"),
        "host env leaked\n{out}"
    );
    assert!(
        out.stdout.contains("options use-vc") && out.stdout.contains("nameserver 1.1.1.1"),
        "{out}"
    );
    assert!(
        out.stderr.contains("isolates far less than a microVM"),
        "the namespace warning\n{out}"
    );
    assert!(
        runs_left(&td).is_empty(),
        "run directory left: {:?}",
        runs_left(&td)
    );
    assert!(
        mounts_under(&td.cache()).is_empty(),
        "mounts left: {:?}",
        mounts_under(&td.cache())
    );

    // The guest sees only its own processes: sh, ps, wc and PID 1 (plus the header line).
    let ps = exec_ns(&td, &[], "ps -o pid | wc -l");
    let n: usize = ps.stdout.trim().parse().unwrap_or(99);
    assert!(
        n <= 6,
        "the guest sees {n} ps lines: not its own pid namespace\n{ps}"
    );
}

#[test]
fn ns_shares_are_visible_and_ro_is_read_only() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-shares");
    let rw = td.join("rw");
    let ro = td.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("given"), "from-host").unwrap();
    let m_rw = format!("{}:/work", rw.display());
    let m_ro = format!("{}:/data/in:ro", ro.display());
    let out = exec_ns(
        &td,
        &["-M", &m_rw, "-M", &m_ro],
        "cat /data/in/given; echo guest-wrote > /work/result; if echo x > /data/in/nope 2>/dev/null; then echo RO-WRITABLE; else echo ro-refused; fi",
    );
    out.success();
    assert!(out.stdout.contains("from-host"), "{out}");
    assert!(
        out.stdout.contains("ro-refused") && !out.stdout.contains("RO-WRITABLE"),
        "`:ro` share was writable\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("result")).unwrap(),
        "guest-wrote\n"
    );
    assert!(!ro.join("nope").exists());

    // A missing share directory is an error before anything starts.
    let missing = format!("{}:/x", td.join("absent").display());
    let out = exec_ns(&td, &["-M", &missing], "true");
    out.failure(1).error_has("absent");
    assert!(runs_left(&td).is_empty());
}

#[test]
fn ns_clone_writes_reach_neither_cache_nor_next_run() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-clone");
    // Pull first, then snapshot the cached tree.
    let pulled = td.krunner().args(["pull", &image()]).run();
    let root = pulled.rootfs();
    let before = snapshot(&root);
    exec_ns(
        &td,
        &[],
        "echo changed > /etc/passwd; echo new > /newfile; rm /bin/ls; mkdir /made",
    )
    .success();
    let after = snapshot(&root);
    let changed = diff_trees(&before, &after, true);
    assert!(changed.is_empty(), "the cached rootfs changed: {changed:?}");
    let out = exec_ns(&td, &[], "test ! -e /newfile && test ! -e /made && test -e /bin/ls && ! grep -q changed /etc/passwd && echo clean");
    out.success();
    assert!(
        out.stdout.contains("clean"),
        "the second run saw the first one's writes\n{out}"
    );
}

#[test]
fn ns_max_lifetime_stops_the_guest() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-lifetime");
    let t = Instant::now();
    let out = exec_ns(&td, &["--max-lifetime", "1"], "sleep 30");
    assert_eq!(out.code, Some(143), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    assert!(runs_left(&td).is_empty());
}

#[test]
fn ns_nothing_left_after_krunner_is_killed() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-kill");
    nothing_left_after_a_kill(&td, &|| td.krunner());
}

/// The body of [`ns_nothing_left_after_krunner_is_killed`]; `krunner` gives a krunner command
/// on `td`'s cache (root's, or an ordinary user's: `rootless::*`).
pub(crate) fn nothing_left_after_a_kill(td: &TestDir, krunner: &dyn Fn() -> Krunner) {
    // Pull first so the run starts at once.
    krunner().args(["pull", &image()]).run().success();
    // A sleep duration nobody else uses marks the guest's process.
    let marker = format!("{}", 100_000 + std::process::id() % 100_000);
    let mut k = krunner();
    k.args([
        "exec",
        "--backend",
        "namespace",
        image().as_str(),
        "--",
        "sh",
        "-c",
    ])
    .arg(format!("echo started; exec sleep {marker}"));
    let running = k.spawn();
    let pid = running.pid();
    let deadline = Instant::now() + Duration::from_secs(20);
    while guest_pids(&marker).is_empty() {
        assert!(Instant::now() < deadline, "the guest never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(runs_left(td).len(), 1, "one run directory while running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = running.wait();
    // PDEATHSIG takes the VM child, and with it PID 1 and the whole guest.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !guest_pids(&marker).is_empty() {
        assert!(
            Instant::now() < deadline,
            "guest processes survived krunner: {:?}",
            guest_pids(&marker)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        mounts_under(&td.cache()).is_empty(),
        "mounts leaked: {:?}",
        mounts_under(&td.cache())
    );
    assert_eq!(zombies_of(pid), 0);
    // The guest's pasta (its command line names the run's pasta.pid) dies with krunner.
    let cache = td.cache().to_string_lossy().into_owned();
    let pastas = || {
        crate::run_e2e::processes_with(&cache)
            .into_iter()
            .filter(|p| p.contains("pasta"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while pastas() > 0 {
        assert!(Instant::now() < deadline, "pasta outlived krunner");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The run directory is left; the next krunner removes it.
    let left = runs_left(td);
    assert_eq!(left.len(), 1, "{left:?}");
    let out = krunner()
        .args(["exec", "--backend", "namespace", image().as_str()])
        .args(["--", "true"])
        .run();
    out.success();
    assert!(out.stderr.contains("removed the leftovers"), "{out}");
    assert!(runs_left(td).is_empty(), "{:?}", runs_left(td));
}

/// Guest processes: `sleep <marker>` (krunner's own argv holds the marker too, inside a
/// longer `sh -c` script, so match the whole command line).
fn guest_pids(marker: &str) -> Vec<u32> {
    let want = format!("sleep\0{marker}\0");
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmd) == want {
                pids.push(pid);
            }
        }
    }
    pids
}

/// Zombie children of `pid` (a dead krunner has none: its children were reaped by init).
fn zombies_of(pid: u32) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) {
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            if fields.first() == Some(&"Z") && fields.get(1) == Some(&pid.to_string().as_str()) {
                n += 1;
            }
        }
    }
    n
}

/// Where the test setup unpacked libkrunfw (tests/setup.sh), if anywhere.
pub(crate) fn libkrunfw_dir() -> Option<PathBuf> {
    let d = std::env::var_os("KRUNNER_TEST_LIBKRUNFW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/krunner-test/libkrunfw"));
    d.join("libkrunfw.so.5").exists().then_some(d)
}

fn krun_ready() -> Option<PathBuf> {
    if skip(NS) {
        return None;
    }
    if !Path::new("/dev/kvm").exists() {
        skip_because("needs /dev/kvm");
        return None;
    }
    match libkrunfw_dir() {
        Some(d) => Some(d),
        None => {
            skip_because("needs libkrunfw.so.5 (tests/setup.sh unpacks it into /var/tmp/krunner-test/libkrunfw)");
            None
        }
    }
}

/// Whether this host's KVM is the nested "PVM" kind, which cannot run libkrunfw's kernel.
pub(crate) fn pvm_host() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
        && !Path::new("/sys/module/kvm_intel").exists()
        && !Path::new("/sys/module/kvm_amd").exists()
}

/// The whole libkrun configuration succeeds and krun_start_enter runs the vCPU. On a host with
/// real KVM the guest prints its line; on nested "PVM" KVM (our machines) the guest kernel dies
/// with KVM_EXIT_INTERNAL_ERROR, which the test recognises and reports.
#[test]
fn krun_configures_everything_and_reaches_the_vcpu() {
    let Some(fw) = krun_ready() else { return };
    let td = TestDir::new("krun");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let m_rw = format!("{}:/work", share.display());
    let m_ro = format!("{}:/ro:ro", share.display());
    let out = td
        .krunner()
        .args([
            "-v",
            "exec",
            "--backend",
            "krun",
            "-c",
            "1",
            "-m",
            "256",
            "--libkrunfw-dir",
        ])
        .arg(&fw)
        .args([
            "-M",
            &m_rw,
            "-M",
            &m_ro,
            "--max-lifetime",
            "120",
            image().as_str(),
            "--",
            "echo",
            "krun-guest-ok",
        ])
        .run();
    assert!(
        out.stderr.contains("root_ready → configured → entering"),
        "every krun_* call must succeed and the child must reach krun_start_enter\n{out}"
    );
    if pvm_host() {
        // Our hosts: the guest kernel dies in the vCPU, and krunner says what that means.
        assert!(
            !out.stdout.contains("krun-guest-ok") && out.code != Some(0),
            "nested PVM KVM cannot boot a libkrun guest\n{out}"
        );
        assert!(
            out.stderr.contains("KVM_EXIT_INTERNAL_ERROR"),
            "libkrun's own line is kept\n{out}"
        );
        assert!(
            out.stderr.contains("cannot run the libkrunfw guest kernel")
                && out.stderr.contains("krunner doctor"),
            "krunner explains the failure and points to doctor\n{out}"
        );
    } else {
        // Real KVM (bare metal, or the emulated KVM host of tests/l1.sh): the guest boots.
        assert!(out.stdout.contains("krun-guest-ok"), "{out}");
        assert_eq!(out.code, Some(0), "{out}");
    }
    assert!(runs_left(&td).is_empty(), "{:?}", runs_left(&td));
    assert!(mounts_under(&td.cache()).is_empty());
}

#[test]
fn krun_without_libkrunfw_fails_before_any_vm() {
    if skip(NS) {
        return;
    }
    if Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libkrunfw.so.5"))
    {
        skip_because("libkrunfw is installed system-wide here, so it cannot be missing");
        return;
    }
    let td = TestDir::new("krun-nofw");
    td.krunner().args(["pull", &image()]).run().success();
    let t = Instant::now();
    let out = td
        .krunner()
        .args(["exec", "--backend", "krun", "--libkrunfw-dir"])
        .arg(td.join("empty"))
        .args([image().as_str(), "--", "true"])
        .run();
    out.failure(1)
        .error_has("libkrunfw.so.5")
        .error_has("libkrunfw5");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "detected before boot, not after: {:?}",
        t.elapsed()
    );
    assert!(runs_left(&td).is_empty());
}

/// `krunner doctor` on this machine: on nested PVM KVM it must say so, exit non-zero and point
/// to the namespace backend; with real KVM it must report a successful test boot.
#[test]
fn doctor_tells_the_truth_about_this_host() {
    let Some(fw) = krun_ready() else { return };
    let td = TestDir::new("doctor");
    let out = td
        .krunner()
        .args(["doctor", "--libkrunfw-dir"])
        .arg(&fw)
        .run();
    assert!(out.stdout.contains("KVM_CREATE_VM"), "{out}");
    assert!(out.stdout.contains("libkrun 1.19.7"), "{out}");
    // Whether runs get resource limits, and where their cgroups go or why not.
    assert!(
        out.stdout
            .contains("[ok  ] cgroups: cgroup v2: each run gets")
            || out
                .stdout
                .contains("[warn] cgroups: runs get no memory, CPU or process limits"),
        "{out}"
    );
    if pvm_host() {
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stdout.contains("KVM_EXIT_INTERNAL_ERROR"), "{out}");
        assert!(out.stdout.contains("--backend namespace"), "{out}");
        assert!(out.stdout.contains("[FAIL] test boot"), "{out}");
    } else {
        assert!(out.stdout.contains("[ok  ] test boot"), "{out}");
        assert_eq!(out.code, Some(0), "{out}");
    }
    assert!(runs_left(&td).is_empty());

    // Without libkrunfw the boot is not attempted and the fix is named.
    if libkrunfw_system_wide() {
        skip_because("libkrunfw is installed system-wide here, so it cannot be missing");
        return;
    }
    let out = td
        .krunner()
        .args(["doctor", "--libkrunfw-dir"])
        .arg(td.join("none"))
        .run();
    assert_eq!(out.code, Some(1), "{out}");
    assert!(
        out.stdout.contains("[FAIL] libkrunfw") && out.stdout.contains("libkrunfw5"),
        "{out}"
    );
    assert!(out.stdout.contains("[skip] test boot"), "{out}");
}

fn libkrunfw_system_wide() -> bool {
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("libkrunfw.so.5"))
}

use std::process::Command;

/// A setuid-root binary a job writes into its clone stays out of reach of every other local
/// user: the cache root and the run directory are private (0700).
#[test]
fn ns_a_setuid_file_the_job_writes_is_out_of_other_users_reach() {
    if skip(NS) || skip(&[Need::Tool("setpriv")]) {
        return;
    }
    let td = TestDir::new("ns-setuid");
    setuid_file_out_of_reach(&td, &|| td.krunner());
}

/// The body of [`ns_a_setuid_file_the_job_writes_is_out_of_other_users_reach`], with
/// `krunner` as in [`nothing_left_after_a_kill`].
pub(crate) fn setuid_file_out_of_reach(td: &TestDir, krunner: &dyn Fn() -> Krunner) {
    // Where a cache usually lives (/var/cache) anyone may pass: only krunner's modes protect.
    std::fs::set_permissions(td.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut k = krunner();
    k.args(["exec", "--backend", "namespace", image().as_str(), "--"])
        .args(["sh", "-c"])
        .arg("cp /bin/busybox /sush-planted && chmod 4755 /sush-planted && sleep 120");
    let running = k.spawn();
    let runs = td.cache().join("runs");
    let planted = || {
        find_named(&runs, "sush-planted")
            .into_iter()
            .find(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o4000 != 0))
    };
    let found = crate::run_faults::wait_for(60, || planted().is_some());
    let path = planted();
    // As nobody, as any other local user would: neither see nor run it.
    let as_nobody = |args: &[&str]| {
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(args)
            .output()
            .unwrap()
    };
    let attempt = path.as_ref().map(|p| {
        let p = p.to_string_lossy().to_string();
        (
            as_nobody(&["test", "-e", &p]).status.success(),
            // Through a shell: setpriv execs its argument in a way that skips the path's
            // search permission check, which no real user's exec does.
            as_nobody(&["sh", "-c", &format!("'{p}' id -u")]),
        )
    });
    crate::run_faults::signal(running.pid(), nix::sys::signal::Signal::SIGINT);
    let out = running.wait();
    assert!(
        found,
        "the job's setuid file never appeared under {runs:?}\n{out}"
    );
    let (seen, ran) = attempt.unwrap();
    assert!(!seen, "another user can see {path:?}");
    assert!(
        !ran.status.success(),
        "another user ran the job's setuid file {path:?}: {}",
        String::from_utf8_lossy(&ran.stdout)
    );
    assert!(
        String::from_utf8_lossy(&ran.stderr).contains("ermission denied"),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&td.cache()), 0o700, "the cache root is private");
    assert_eq!(mode(&runs), 0o700, "the runs dir is private");
    assert!(runs_left(td).is_empty(), "{out}");
}

/// The namespace workload runs under krunner's seccomp deny-list: `swapon`, which a CI job
/// never needs, fails with EPERM in the guest, where the same call on the host (root, no
/// filter) gets as far as the kernel's EINVAL for a file that is no swap area. What jobs do
/// use stays allowed: mounting a tmpfs.
#[test]
fn ns_seccomp_denies_what_a_job_never_needs() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-seccomp");
    let file = td.join("not-swap");
    std::fs::write(&file, vec![0u8; 64 * 1024]).unwrap();
    let host = Command::new("busybox")
        .arg("swapon")
        .arg(&file)
        .output()
        .unwrap();
    let host_err = String::from_utf8_lossy(&host.stderr).to_string();
    assert!(
        host_err.contains("Invalid argument"),
        "unfiltered, swapon reaches the kernel's swap-area check: {host_err}"
    );
    let out = exec_ns(
        &td,
        &[],
        "dd if=/dev/zero of=/tmp/not-swap bs=1k count=64 2>/dev/null; swapon /tmp/not-swap; \
         echo swapon=$?; grep Seccomp: /proc/self/status; \
         mkdir /m && mount -t tmpfs t /m && echo tmpfs-mounted",
    );
    out.success();
    assert!(out.stderr.contains("Operation not permitted"), "{out}");
    assert!(!out.stderr.contains("Invalid argument"), "{out}");
    assert!(out.stdout.contains("swapon=1"), "{out}");
    assert!(out.stdout.contains("Seccomp:\t2"), "{out}");
    assert!(out.stdout.contains("tmpfs-mounted"), "{out}");
}

/// Under the namespace backend the workload is root of a user namespace of its own (the
/// run's host id range), not of the host: the image still looks root-owned and `chown`
/// works, what it writes into its clone belongs to the range, it holds no CAP_NET_ADMIN even
/// there, and it can still mount (in a mount namespace of its own). `--user-namespace off`
/// gives the old, host-root workload.
#[test]
fn ns_the_workload_is_root_of_its_own_user_namespace_only() {
    if skip(NS) {
        return;
    }
    let td = TestDir::new("ns-userns");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let m = format!("{}:/share", share.display());
    let script = "echo map=$(cat /proc/self/uid_map); echo id=$(id -u) passwd=$(stat -c %u /etc/passwd); \
        touch /made; mkdir -p /jt && touch /jt/f && chown 1001:1001 /jt/f && echo chown-ok; \
        echo made=$(stat -c %u /made) f=$(stat -c %u /jt/f); \
        grep CapBnd /proc/self/status; touch /share/by-root; \
        mkdir /m && mount -t tmpfs t /m && echo tmpfs-mounted; \
        if echo 1 >/proc/sys/kernel/domainname 2>/dev/null; then echo SYSCTL-WRITTEN; else echo sysctl-refused; fi";
    let out = exec_ns(&td, &["-M", &m], script);
    out.success();
    let map: Vec<u64> = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("map="))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(map.len(), 3, "{out}");
    assert_eq!(map[0], 0, "{out}");
    assert!(
        (0x7000_0000..0x7400_0000).contains(&map[1]),
        "guest root is host uid {} (krunner's ranges start at 0x70000000)\n{out}",
        map[1]
    );
    assert_eq!(map[2], 65536, "{out}");
    assert!(out.stdout.contains("id=0 passwd=0"), "{out}");
    assert!(out.stdout.contains("chown-ok"), "{out}");
    // Inside, the files are root's and 1001's (the namespace's view).
    assert!(out.stdout.contains("made=0 f=1001"), "{out}");
    let bnd = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(u64::MAX);
    assert_eq!(bnd & (1 << 12), 0, "no CAP_NET_ADMIN\n{out}");
    assert!(out.stdout.contains("tmpfs-mounted"), "{out}");
    assert!(out.stdout.contains("sysctl-refused"), "{out}");
    // A share keeps the host's ids.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(share.join("by-root"))
            .map(|m| m.uid())
            .ok(),
        Some(0)
    );
    assert!(runs_left(&td).is_empty());
    assert!(mounts_under(&td.cache()).is_empty());

    // Off: the old behaviour, root of the host's user namespace.
    let out = exec_ns(
        &td,
        &["--user-namespace", "off"],
        "echo map=$(cat /proc/self/uid_map)",
    );
    out.success();
    let map = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("map="))
        .unwrap_or_default();
    assert_eq!(
        map.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "4294967295"],
        "{out}"
    );
    assert!(out.stderr.contains("--user-namespace off"), "warned\n{out}");
}

//! The krun backend in real libkrun guests. These tests boot microVMs, which our hosts' nested
//! PVM KVM cannot run, so they run only inside the emulated KVM host (`tests/l1.sh`), where
//! `cargo test --test l1` starts this binary once per group (`krun_guest::exec_`,
//! `krun_guest::run_`) with `--ignored`. Outside L1 they are ignored, and when asked to run
//! anyway they fail and say where they belong.
//!
//! The stand-in runner talks HTTP with `busybox nc`: busybox `wget` has crashed inside emulated
//! guests (see `../shared/reference/emulated-kvm.md`). It reports to the GitHub simulator, which
//! the test starts on L1's loopback and the guest reaches through libkrun's TSI.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::run_e2e::processes_with;
use crate::run_faults::{exit_within, mounts_under, signal, wait_for};
use crate::util::github_sim::{GitHubSim, RunnerState};
use crate::util::oci::busybox_image;
use crate::util::registry::Registry;
use crate::util::*;

/// Where libkrunfw is, after checking that this runs inside L1 (and failing otherwise).
fn in_l1() -> PathBuf {
    assert!(
        std::env::var_os("KRUNNER_IT_IN_L1").is_some(),
        "this test boots real microVMs: it runs inside the emulated KVM host through `cargo test --test l1` (tests/l1.sh)"
    );
    let d = std::env::var_os("KRUNNER_TEST_LIBKRUNFW_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/krunner-test/libkrunfw"));
    assert!(
        d.join("libkrunfw.so.5").exists(),
        "no libkrunfw.so.5 in {} (tests/setup.sh unpacks it)",
        d.display()
    );
    assert!(Path::new("/dev/kvm").exists(), "L1 has no /dev/kvm");
    d
}

/// One cache for every krun test of this process: the image is pulled once (a registry under
/// emulation is slow), and the tests run one at a time (`--test-threads=1`), so each still sees
/// only its own runs. Kept until L1 powers off.
fn shared_cache() -> PathBuf {
    static CACHE: std::sync::OnceLock<TestDir> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| TestDir::new("krun-cache")).cache()
}

/// A `krunner` command of test `td` on the shared cache.
fn krunner(td: &TestDir) -> Krunner {
    let mut k = td.krunner();
    k.env("KRUNNER_CACHE_DIR", shared_cache());
    k
}

fn image() -> String {
    let reg = Registry::shared();
    static PUSHED: std::sync::Once = std::sync::Once::new();
    PUSHED.call_once(|| reg.push(busybox_image(), "krun-busybox:v1"));
    reg.reference("krun-busybox:v1")
}

/// `krunner exec --backend krun` with a small guest; `extra` goes before the image.
fn exec(td: &TestDir, fw: &Path, extra: &[&str], cmd: &[&str]) -> Krunner {
    let mut k = krunner(td);
    k.args(["-v", "exec", "--backend", "krun", "--libkrunfw-dir"])
        .arg(fw)
        .args(["-c", "1", "-m", "256"])
        .args(extra)
        .arg(image())
        .arg("--")
        .args(cmd);
    k
}

fn runs_left() -> Vec<String> {
    list_names(&shared_cache().join("runs"))
}

// ---------------------------------------------------------------------------------------------
// exec group

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_doctor_reports_a_successful_test_boot() {
    let fw = in_l1();
    let td = TestDir::new("krun-doctor");
    let out = td
        .krunner()
        .args(["doctor", "--libkrunfw-dir"])
        .arg(&fw)
        .run();
    assert_eq!(out.code, Some(0), "{out}");
    assert!(out.stdout.contains("[ok  ] test boot"), "{out}");
    assert!(!out.stdout.contains("[FAIL]"), "{out}");
    assert!(runs_left().is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_output_and_exit_status_are_the_guests() {
    let fw = in_l1();
    let td = TestDir::new("krun-exec-status");
    let out = exec(
        &td,
        &fw,
        &[],
        &[
            "sh",
            "-c",
            "echo krun-out; echo krun-err >&2; uname -r; echo host=$(cat /proc/sys/kernel/hostname); exit 7",
        ],
    )
    .run();
    assert_eq!(out.code, Some(7), "the guest's status is krunner's\n{out}");
    assert!(out.stdout.contains("krun-out"), "{out}");
    assert!(
        out.stdout.contains("host=krunner-exec"),
        "the guest's host name\n{out}"
    );
    assert!(
        out.stdout.contains("krun-err") || out.stderr.contains("krun-err"),
        "{out}"
    );
    let host_kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(
        !out.stdout.contains(host_kernel.trim()),
        "the guest runs its own kernel (libkrunfw), not L1's {}\n{out}",
        host_kernel.trim()
    );
    assert!(runs_left().is_empty(), "{:?}", runs_left());
    assert!(mounts_under(&shared_cache()).is_empty());

    // A command killed by a signal: 128 + N, as a shell reports it.
    let out = exec(&td, &fw, &[], &["sh", "-c", "kill -TERM $$"]).run();
    assert_eq!(out.code, Some(143), "SIGTERM gives 128+15\n{out}");
    let out = exec(&td, &fw, &[], &["/no/such/command"]).run();
    assert_eq!(out.code, Some(127), "{out}");
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_any_argv_reaches_the_program_exactly() {
    let fw = in_l1();
    let td = TestDir::new("krun-argv");
    let out_dir = td.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let long: String = (0..6000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let args: Vec<String> = vec![
        "plain".into(),
        String::new(),
        "--".into(),
        "say \"hi\" and 'bye'".into(),
        "two\nlines\n".into(),
        "tab\there $HOME `x` \\ back".into(),
        "non-ASCII: żółć ✓ 日本".into(),
        "-- --".into(),
        long,
        " ".into(),
    ];
    let mount = format!("{}:/out", out_dir.display());
    let mut k = krunner(&td);
    k.args(["exec", "--backend", "krun", "--libkrunfw-dir"])
        .arg(&fw)
        .args(["-c", "1", "-m", "256", "-M", &mount])
        .arg(image())
        .arg("--")
        .args([
            "sh",
            "-c",
            "for a in \"$@\"; do printf '%s\\0' \"$a\"; done >/out/args; echo \"$#\" >/out/count",
            "sh",
        ])
        .args(&args);
    let out = k.run();
    out.success();
    let got = std::fs::read(out_dir.join("args")).unwrap();
    let mut want = Vec::new();
    for a in &args {
        want.extend_from_slice(a.as_bytes());
        want.push(0);
    }
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(&want),
        "every argument, byte for byte\n{out}"
    );
    assert_eq!(
        std::fs::read_to_string(out_dir.join("count"))
            .unwrap()
            .trim(),
        args.len().to_string()
    );
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_shares_are_visible_and_ro_is_read_only() {
    let fw = in_l1();
    let td = TestDir::new("krun-shares");
    let rw = td.join("rw");
    let ro = td.join("ro");
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("from-host"), "host data\n").unwrap();
    let m_rw = format!("{}:/work", rw.display());
    let m_ro = format!("{}:/data:ro", ro.display());
    let out = exec(
        &td,
        &fw,
        &["-M", &m_rw, "-M", &m_ro],
        &[
            "sh",
            "-c",
            "cat /data/from-host; echo guest data >/work/from-guest; \
             if echo x >/data/nope 2>/dev/null; then echo RO-WRITABLE; else echo ro-refused; fi",
        ],
    )
    .run();
    out.success();
    assert!(out.stdout.contains("host data"), "{out}");
    assert!(out.stdout.contains("ro-refused"), "{out}");
    assert_eq!(
        std::fs::read_to_string(rw.join("from-guest")).unwrap(),
        "guest data\n"
    );
    assert!(!ro.join("nope").exists());
    assert!(runs_left().is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_cpus_and_memory_are_what_was_asked() {
    let fw = in_l1();
    let td = TestDir::new("krun-size");
    let mut k = krunner(&td);
    k.args(["exec", "--backend", "krun", "--libkrunfw-dir"])
        .arg(&fw)
        .args(["-c", "2", "-m", "700"])
        .arg(image())
        .args([
            "--",
            "sh",
            "-c",
            "echo cpus=$(nproc); grep MemTotal /proc/meminfo",
        ]);
    let out = k.run();
    out.success();
    assert!(out.stdout.contains("cpus=2"), "{out}");
    let kib: u64 = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MemTotal\n{out}"));
    // MemTotal is the guest RAM less what the kernel keeps for itself, give or take what
    // libkrun adds around it: within a few percent of -m.
    assert!(
        (600 * 1024..=760 * 1024).contains(&kib),
        "MemTotal {kib} kB for -m 700\n{out}"
    );
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_max_lifetime_stops_the_guest() {
    let fw = in_l1();
    let td = TestDir::new("krun-lifetime");
    let t = Instant::now();
    let out = exec(&td, &fw, &["--max-lifetime", "15"], &["sleep", "600"]).run();
    let took = t.elapsed();
    assert_eq!(out.code, Some(143), "{out}");
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(60),
        "stopped at its 15 s lifetime (plus the grace period); took {took:?}\n{out}"
    );
    assert!(
        processes_with("__krun-child").is_empty(),
        "{:?}",
        processes_with("__krun-child")
    );
    assert!(runs_left().is_empty());
    assert!(mounts_under(&shared_cache()).is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_sigkill_of_krunner_kills_the_vmm_and_the_next_start_sweeps() {
    let fw = in_l1();
    let td = TestDir::new("krun-sigkill");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let m = format!("{}:/share", share.display());
    let running = exec(
        &td,
        &fw,
        &["-M", &m],
        &["sh", "-c", "echo up >/share/up; sleep 600"],
    )
    .spawn();
    let pid = running.pid();
    assert!(
        wait_for(120, || share.join("up").exists()),
        "the guest never started"
    );
    let vmm = processes_with("__krun-child");
    assert!(!vmm.is_empty(), "a VMM process runs the guest");
    // The VMM that served the guest's write above keeps only file capabilities, and can gain
    // none through an exec.
    let vmm_pid = vmm[0].split(':').next().unwrap_or_default();
    let status = std::fs::read_to_string(format!("/proc/{vmm_pid}/status")).unwrap_or_default();
    let caps = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
    };
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_MODULE: u32 = 16;
    const CAP_SYS_PTRACE: u32 = 19;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_DAC_OVERRIDE: u32 = 1;
    let eff = caps("CapEff:").unwrap_or(u64::MAX);
    let bnd = caps("CapBnd:").unwrap_or(u64::MAX);
    let vmm_status_ok = status.contains("NoNewPrivs:\t1")
        && [CAP_NET_ADMIN, CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_ADMIN]
            .iter()
            .all(|c| eff & (1 << c) == 0 && bnd & (1 << c) == 0)
        && eff & (1 << CAP_DAC_OVERRIDE) != 0;
    // Mode 2: a seccomp filter (the VMM's deny-list) is installed.
    let vmm_seccomp = status.contains("Seccomp:\t2");
    // The VMM runs in its run's cgroup, with the limits of `-c 1 -m 256`.
    let vmm_cgroup = cgroup_of(vmm_pid);
    let vmm_limits = vmm_cgroup.as_deref().map(cgroup_limits);
    // Its pasta is in the same cgroup.
    let pastas: Vec<String> = processes_with("pasta.pid");
    let pasta_cgroups: Vec<Option<PathBuf>> = pastas
        .iter()
        .map(|p| cgroup_of(p.split(':').next().unwrap_or_default()))
        .collect();
    signal(pid, Signal::SIGKILL);
    if let Err(e) = exit_within(running, 30) {
        panic!("krunner's output did not end after SIGKILL: something holds its pipes\n{e}\nVMMs: {:?}", processes_with("__krun-child"));
    }
    assert!(
        wait_for(10, || processes_with("__krun-child").is_empty()),
        "every VMM dies with krunner: {:?}",
        processes_with("__krun-child")
    );
    // The guest's network namespace had a pasta; it dies with krunner too.
    assert!(
        wait_for(10, || processes_with("pasta.pid").is_empty()),
        "pasta outlived krunner: {:?}",
        processes_with("pasta.pid")
    );
    assert!(
        vmm_status_ok,
        "the VMM holds no more than file capabilities, with no_new_privs:\n{status}"
    );
    assert!(
        vmm_seccomp,
        "the VMM runs under its seccomp filter:\n{status}"
    );
    let cg = vmm_cgroup.unwrap_or_else(|| panic!("the VMM is in no run cgroup:\n{status}"));
    assert_eq!(
        vmm_limits,
        Some(CgroupLimits {
            // -m 256: the guest RAM, 256 MiB of VMM overhead, 1/16 of the RAM, and 64 MiB
            // for the network jail's pasta.
            memory_max: ((256 + 256 + 16 + 64) << 20).to_string(),
            cpu_max: "100000 100000".into(),
            pids_max: "1024".into(),
        }),
        "{}",
        cg.display()
    );
    assert_eq!(
        pasta_cgroups,
        vec![Some(cg.clone())],
        "the run's one pasta is in its cgroup: {pastas:?}"
    );
    // The run directory and cgroup are left; the next krunner removes them (and nothing is
    // mounted).
    let out = exec(&td, &fw, &[], &["true"]).run();
    out.success();
    assert!(runs_left().is_empty(), "{:?}\n{out}", runs_left());
    assert!(mounts_under(&shared_cache()).is_empty());
    assert!(
        !cg.exists(),
        "the dead krunner's run cgroup {} is swept\n{out}",
        cg.display()
    );
    assert!(out.stderr.contains("removed the leftover cgroup"), "{out}");
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn userns_the_vmm_is_an_unprivileged_uid_in_a_tree_of_its_own() {
    let fw = in_l1();
    let td = TestDir::new("krun-userns");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("from-host"), "x").unwrap();
    let m = format!("{}:/share", share.display());
    // As root in the guest: the image and the share look root-owned, chown works, mknod (a
    // host privilege) does not.
    let script = "echo ids uid=$(id -u) passwd=$(stat -c %u /etc/passwd) share=$(stat -c %u /share/from-host); \
        touch /made-by-root /share/made-by-root; mkdir -p /jt; touch /jt/f; \
        chown 1001:1001 /jt/f && echo chown-ok; \
        if mknod /nodecopy c 1 3 2>/dev/null; then echo MKNOD-WORKED; else echo mknod-refused; fi; \
        echo up >/share/up; sleep 600";
    let running = exec(&td, &fw, &["-M", &m], &["sh", "-c", script]).spawn();
    let pid = running.pid();
    assert!(
        wait_for(120, || share.join("up").exists()),
        "the guest never started"
    );
    // The VMM: the krun child whose user namespace is not ours.
    let own_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let vmm = processes_with("__krun-child")
        .iter()
        .filter_map(|p| p.split(':').next().map(str::to_string))
        .find(|p| {
            std::fs::read_link(format!("/proc/{p}/ns/user")).is_ok_and(|ns| ns != own_userns)
        });
    let uid_map = vmm
        .as_ref()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/uid_map")).ok())
        .unwrap_or_default();
    let status = vmm
        .as_ref()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .unwrap_or_default();
    let tree: Vec<String> = vmm
        .as_ref()
        .map(|p| list_names(Path::new(&format!("/proc/{p}/root"))))
        .unwrap_or_default();
    let dev: Vec<String> = vmm
        .as_ref()
        .map(|p| list_names(Path::new(&format!("/proc/{p}/root/dev"))))
        .unwrap_or_default();
    let guest_root_seen = vmm
        .as_ref()
        .is_some_and(|p| Path::new(&format!("/proc/{p}/root/root/etc/passwd")).exists());
    let run = runs_left();
    let upper = run
        .first()
        .map(|r| shared_cache().join("runs").join(r).join("upper"))
        .unwrap_or_default();
    use std::os::unix::fs::MetadataExt;
    let owner = |p: &Path| std::fs::symlink_metadata(p).map(|m| m.uid()).ok();
    let made_by_root = owner(&upper.join("made-by-root"));
    let made_by_1001 = owner(&upper.join("jt/f"));
    signal(pid, Signal::SIGTERM);
    let out = match exit_within(running, 60) {
        Ok(o) => o,
        Err(e) => panic!("krunner did not end after SIGTERM: {e}"),
    };

    assert!(
        vmm.is_some(),
        "no VMM in a user namespace of its own\n{out}"
    );
    let fields: Vec<u64> = uid_map
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    assert_eq!(fields.len(), 3, "uid_map {uid_map:?}\n{out}");
    let first = fields[1];
    assert_eq!(fields[0], 0, "uid_map {uid_map:?}");
    assert_eq!(fields[2], 65536, "uid_map {uid_map:?}");
    assert!(
        (0x7000_0000..0x7400_0000).contains(&first),
        "the guest's root is host uid {first}, outside krunner's ranges"
    );
    assert!(
        status.contains(&format!("Uid:\t{first}\t{first}\t{first}\t{first}")),
        "the VMM runs as host uid {first}:\n{status}"
    );
    let mut tree = tree;
    tree.sort();
    for name in &tree {
        assert!(
            ["console", "dev", "proc", "root", "shares"].contains(&name.as_str()),
            "the VMM's / holds {name}: {tree:?}"
        );
    }
    assert!(
        guest_root_seen,
        "the guest's root is /root in the VMM's tree"
    );
    let mut dev = dev;
    dev.sort();
    assert_eq!(dev, ["kvm", "null", "random", "urandom", "zero"]);
    assert!(
        out.stdout.contains("ids uid=0 passwd=0 share=0"),
        "the guest sees root-owned files\n{out}"
    );
    assert!(out.stdout.contains("chown-ok"), "{out}");
    assert!(out.stdout.contains("mknod-refused"), "{out}");
    // On the host, what the guest wrote in its clone belongs to the range, never to root.
    assert_eq!(made_by_root, Some(first as u32), "{upper:?}");
    assert_eq!(made_by_1001, Some(first as u32 + 1001), "{upper:?}");
    // A share keeps the host's ids (it is idmapped both ways).
    assert_eq!(owner(&share.join("made-by-root")), Some(0));
    assert!(runs_left().is_empty(), "{:?}", runs_left());
    assert!(mounts_under(&shared_cache()).is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn userns_a_share_without_idmapped_mounts_is_refused_by_name() {
    let fw = in_l1();
    let td = TestDir::new("krun-userns-9p");
    // L1 sees the host's files through 9p, which has no idmapped mounts on any kernel.
    let on_9p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let m = format!("{}:/t:ro", on_9p.display());
    let out = exec(&td, &fw, &["-M", &m], &["true"]).run();
    assert_ne!(out.code, Some(0), "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&on_9p.display().to_string()),
        "names the share\n{out}"
    );
    assert!(text.contains("idmapped mounts"), "says why\n{out}");
    assert!(
        text.contains("--user-namespace off"),
        "says what to do\n{out}"
    );
    assert!(runs_left().is_empty(), "{:?}", runs_left());
    assert!(mounts_under(&shared_cache()).is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn userns_rootless_an_ordinary_user_boots_a_jailed_microvm() {
    use crate::rootless::{as_user, hand_over, rootless_user};
    use std::os::unix::fs::MetadataExt;
    let fw = in_l1();
    let Some(u) = rootless_user() else { return };
    let td = TestDir::new("krun-rootless");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    std::fs::write(share.join("from-host"), "x").unwrap();
    let exe = hand_over(&td, &u);
    as_user(&td, &u, &exe, &[])
        .args(["pull", &image()])
        .run()
        .success();
    let script = "echo ids uid=$(id -u) passwd=$(stat -c %u /etc/passwd) share=$(stat -c %u /share/from-host); \
        touch /share/made-by-root; mkdir -p /jt; touch /jt/f; chown 1001:1001 /jt/f && echo chown-ok; \
        echo up >/share/up; sleep 600";
    let m = format!("{}:/share", share.display());
    let running = as_user(&td, &u, &exe, &[])
        .args(["-v", "exec", "--backend", "krun", "--libkrunfw-dir"])
        .arg(&fw)
        .args([
            "-c",
            "1",
            "-m",
            "256",
            "-M",
            &m,
            &image(),
            "--",
            "sh",
            "-c",
            script,
        ])
        .spawn();
    let pid = running.pid();
    let up = wait_for(180, || share.join("up").exists());
    // The VMM: the krun child of the user's krunner.
    let vmm = processes_with("__krun-child")
        .iter()
        .filter_map(|p| p.split(':').next().map(str::to_string))
        .find(|p| std::fs::metadata(format!("/proc/{p}")).is_ok_and(|m| m.uid() == u.uid));
    let status = vmm
        .as_ref()
        .and_then(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .unwrap_or_default();
    let own_userns = std::fs::read_link("/proc/self/ns/user").unwrap();
    let vmm_userns = vmm
        .as_ref()
        .and_then(|p| std::fs::read_link(format!("/proc/{p}/ns/user")).ok());
    let mut tree: Vec<String> = vmm
        .as_ref()
        .map(|p| list_names(Path::new(&format!("/proc/{p}/root"))))
        .unwrap_or_default();
    tree.sort();
    signal(pid, Signal::SIGTERM);
    let out = match exit_within(running, 60) {
        Ok(o) => o,
        Err(e) => panic!("krunner did not end after SIGTERM: {e}"),
    };
    assert!(up, "the guest never started\n{out}");
    assert!(vmm.is_some(), "no VMM running as {}\n{out}", u.uid);
    let id = u.uid;
    assert!(
        status.contains(&format!("Uid:\t{id}\t{id}\t{id}\t{id}")),
        "the VMM runs as the user:\n{status}"
    );
    assert!(
        vmm_userns.is_some_and(|ns| ns != own_userns),
        "the VMM is in the user's namespace, not the host's"
    );
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    for name in ["dev", "proc", "root", "shares"] {
        assert!(
            tree.iter().any(|t| t == name),
            "no {name} in the VMM's /: {tree:?}"
        );
    }
    for name in &tree {
        assert!(
            ["console", "dev", "proc", "root", "shares"].contains(&name.as_str()),
            "the VMM's / holds {name}: {tree:?}"
        );
    }
    assert!(
        out.stdout.contains("ids uid=0 passwd=0 share=0"),
        "the guest sees root-owned files\n{out}"
    );
    assert!(out.stdout.contains("chown-ok"), "{out}");
    // What guest root writes in a share is the user's on the host.
    let made = std::fs::symlink_metadata(share.join("made-by-root")).map(|m| m.uid());
    assert_eq!(made.ok(), Some(u.uid));
    assert!(list_names(&td.cache().join("runs")).is_empty());
}

/// The cgroup v2 directory of process `pid` (under /sys/fs/cgroup, where L1 mounts cgroup2),
/// if it is a krunner run cgroup.
fn cgroup_of(pid: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let dir = Path::new("/sys/fs/cgroup").join(rel.trim().trim_start_matches('/'));
    dir.file_name()?
        .to_string_lossy()
        .starts_with("run-")
        .then_some(dir)
}

/// What a run cgroup's limit files say.
#[derive(Debug, PartialEq, Eq)]
struct CgroupLimits {
    memory_max: String,
    cpu_max: String,
    pids_max: String,
}

fn cgroup_limits(dir: &Path) -> CgroupLimits {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|e| format!("{f}: {e}"))
    };
    CgroupLimits {
        memory_max: read("memory.max"),
        cpu_max: read("cpu.max"),
        pids_max: read("pids.max"),
    }
}

/// The namespace backend in L1, whose /sys/fs/cgroup is a whole cgroup v2 hierarchy (our
/// hosts keep the memory controller in cgroup v1, so the cgroup tests run here).
fn exec_ns(td: &TestDir, extra: &[&str], script: &str) -> Krunner {
    let mut k = krunner(td);
    k.args(["-v", "exec", "--backend", "namespace"])
        .args(extra)
        .arg(image())
        .args(["--", "sh", "-c", script]);
    k
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_cgroup_holds_the_run_with_its_limits_and_goes_with_it() {
    let _ = in_l1();
    let td = TestDir::new("cg-limits");
    let share = td.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let m = format!("{}:/share", share.display());
    // The workload says where it is and waits until the test has looked.
    let running = exec_ns(
        &td,
        &["-c", "2", "-m", "128", "-M", &m],
        "cat /proc/self/cgroup > /share/cgroup; while [ ! -e /share/go ]; do sleep 0.1; done",
    )
    .spawn();
    let seen = wait_for(120, || {
        std::fs::read_to_string(share.join("cgroup")).is_ok_and(|s| s.ends_with('\n'))
    });
    let text = std::fs::read_to_string(share.join("cgroup")).unwrap_or_default();
    let dir = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|rel| Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/')));
    let limits = dir.as_deref().map(cgroup_limits);
    let procs = dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
        .unwrap_or_default();
    let commands: Vec<String> = procs
        .split_whitespace()
        .map(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&argv).replace('\0', " ")
        })
        .collect();
    std::fs::write(share.join("go"), "").unwrap();
    let out = running.wait();
    assert!(seen, "the workload never started\n{out}");
    out.success();
    let dir = dir.unwrap_or_else(|| panic!("no cgroup v2 line in {text:?}"));
    assert!(
        dir.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("run-")),
        "the workload runs in a run cgroup, not {}",
        dir.display()
    );
    assert_eq!(
        limits,
        Some(CgroupLimits {
            // -m 128 under namespaces: the RAM, 32 MiB for krunner's two processes and 64 MiB
            // for the network jail's pasta.
            memory_max: ((128 + 32 + 64) << 20).to_string(),
            cpu_max: "200000 100000".into(),
            pids_max: "8192".into(),
        })
    );
    // The supervisor, PID 1, sh and its sleep.
    assert!(
        procs.split_whitespace().count() >= 3,
        "the run's processes are in it: {procs:?}"
    );
    // What the guest's traffic costs counts against it.
    assert!(
        commands.iter().any(|c| c.contains("pasta.pid")),
        "the run's pasta is in its cgroup: {commands:#?}"
    );
    assert!(!dir.exists(), "{} outlived its run\n{out}", dir.display());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_cgroup_out_of_memory_kills_only_its_own_run() {
    let _ = in_l1();
    let td = TestDir::new("cg-oom");
    // Pulled first, so that both runs start together.
    krunner(&td).args(["pull", &image()]).run().success();
    // 300 MB into a shell variable (anonymous memory of sh) against -m 128 (the least krunner
    // takes), i.e. a memory.max of 224 MiB with the network jail; the neighbour, with the same limit, needs little
    // and outlives the hog's end.
    let hog = exec_ns(
        &td,
        &["-m", "128"],
        "x=$(head -c 300000000 /dev/zero | tr '\\000' a); echo survived ${#x}",
    )
    .spawn();
    let neighbour = exec_ns(&td, &["-m", "128"], "sleep 4; echo neighbour-ok").spawn();
    let hog = hog.wait();
    let neighbour = neighbour.wait();
    assert!(
        !hog.stdout.contains("survived") && hog.code != Some(0),
        "the hog must die\n{hog}"
    );
    assert!(
        hog.stderr.contains("out of memory"),
        "the run reports the OOM kill\n{hog}"
    );
    neighbour.success();
    assert!(neighbour.stdout.contains("neighbour-ok"), "{neighbour}");
    assert!(runs_left().is_empty(), "{:?}", runs_left());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_jail_guest_reaches_public_and_allowed_addresses_only() {
    let fw = in_l1();
    let td = TestDir::new("krun-jail-probe");
    krunner(&td).args(["pull", &image()]).run().success();
    let fw = fw.to_string_lossy().into_owned();
    let args = [
        "--backend",
        "krun",
        "--libkrunfw-dir",
        &fw,
        "-c",
        "1",
        "-m",
        "256",
    ];
    let out = crate::jail::probe_guest(&td, &shared_cache(), &image(), &args, "public");
    crate::jail::assert_jailed(&out);
    // The control: without the jail, the same probes reach everything.
    let out = crate::jail::probe_guest(&td, &shared_cache(), &image(), &args, "open");
    crate::jail::assert_open(&out);
    assert!(runs_left().is_empty());
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn exec_jail_two_guests_listen_on_one_port_and_the_host_sees_neither() {
    let fw = in_l1();
    let td = TestDir::new("krun-jail-pair");
    krunner(&td).args(["pull", &image()]).run().success();
    let fw = fw.to_string_lossy().into_owned();
    let args = [
        "--backend",
        "krun",
        "--libkrunfw-dir",
        &fw,
        "-c",
        "1",
        "-m",
        "256",
    ];
    crate::jail::two_guests_one_port(&td, &shared_cache(), &image(), &args);
    assert!(runs_left().is_empty());
}

// ---------------------------------------------------------------------------------------------
// run group

/// A stand-in for the actions runner in real guests: the run_e2e one's behaviour with HTTP
/// through `busybox nc`. It records what it sees of its guest under `/record/NAME.*`: its uid,
/// whether the secrets share is still mounted or its mount point still there.
const LISTENER: &str = r#"#!/bin/sh
# Stand-in for the actions runner, driven by the simulator's JIT config.
post() { # URL BODY: POST, succeed on a 2xx answer
  hp=${1#http://}; path=/${hp#*/}; hp=${hp%%/*}
  answer=$(printf 'POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
    "$path" "$hp" "${#2}" "$2" | busybox nc "${hp%:*}" "${hp##*:}" | busybox head -n 1)
  case "$answer" in *" 2"[0-9][0-9]" "*) return 0 ;; esac
  echo "stand-in runner: POST $1 answered: $answer" >&2
  return 1
}
# The runner takes its JIT config from ACTIONS_RUNNER_INPUT_JITCONFIG (krunner keeps it off argv).
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
files=$(echo "$cfg" | busybox base64 -d)
runner=$(echo "$files" | busybox sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | busybox base64 -d)
creds=$(echo "$files" | busybox sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | busybox base64 -d)
url=$(echo "$runner" | busybox sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
name=$(echo "$runner" | busybox sed 's/.*"agentName":"\([^"]*\)".*/\1/')
secret=$(echo "$creds" | busybox sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
echo "$url" > "/record/$name"
for a in "$@"; do echo "$a"; done > "/record/$name.argv"
busybox id -u > "/record/$name.uid"
if busybox grep -q krunner-secrets /proc/mounts; then echo mounted; elif [ -e /.krunner/secrets ]; then echo present; else echo gone; fi > "/record/$name.secrets"
echo "stand-in runner $name starting"
# Set before reporting online: a stop may come as soon as the simulator shows it online.
[ -f /mode/idle ] && trap 'echo term > "/record/$name.term"; exit 0' TERM
post "$url/online" "$secret" || exit 7
[ -f /mode/fail ] && exit 3
if [ -f /mode/idle ]; then
  busybox sleep 600 &
  wait $!
  exit 0
fi
post "$url/job-started" "$secret" || exit 8
if [ -f /mode/busy ]; then
  trap 'echo term > "/record/$name.term"; post "$url/offline" "$secret"; exit 0' TERM
  len=$(busybox cat /mode/busy)
  busybox sleep "$len" &
  wait $!
fi
post "$url/job-finished" "$secret" || exit 9
echo "stand-in runner $name done"
exit 0
"#;

/// Token mode: `config.sh` registers the runner in the simulator (as GitHub's does), the
/// listener records its uid and exits without a job.
const CONFIG_SH: &str = r#"#!/bin/sh
url=""; name=""; labels=""; prev=""
for a in "$@"; do
  case "$prev" in --url) url=$a ;; --name) name=$a ;; --labels) labels=$a ;; esac
  prev=$a
done
[ -n "$name" ] || exit 4
server=$(echo "$url" | busybox cut -d/ -f1-3)
principal=${url#"$server"/}
# The labels config.sh was given, the instance label among them, as GitHub records them.
json_labels=$(echo "$labels" | busybox sed 's/,/","/g')
body="{\"scope\":\"repo:$principal\",\"name\":\"$name\",\"labels\":[\"$json_labels\"],\"state\":\"online\"}"
hp=${server#http://}
answer=$(printf 'POST /_sim/runners HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
  "$hp" "${#body}" "$body" | busybox nc "${hp%:*}" "${hp##*:}" | busybox head -n 1)
case "$answer" in *" 2"[0-9][0-9]" "*) ;; *) echo "config.sh: $answer" >&2; exit 5 ;; esac
echo "$name" > "/record/config-$name"
"#;

const TOKEN_LISTENER: &str = r#"#!/bin/sh
name=$(busybox hostname)
busybox id -u > "/record/$name.uid"
if busybox grep -q krunner-secrets /proc/mounts; then echo mounted; elif [ -e /.krunner/secrets ]; then echo present; else echo gone; fi > "/record/$name.secrets"
exit 0
"#;

fn runner_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "krun-runner:v2",
        LISTENER,
        Some(CONFIG_SH),
    )
}

fn token_runner_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "krun-token-runner:v2",
        TOKEN_LISTENER,
        Some(CONFIG_SH),
    )
}

struct Fixture {
    td: TestDir,
    sim: GitHubSim,
    record: PathBuf,
    mode: PathBuf,
    fw: PathBuf,
}

fn fixture(name: &str) -> Fixture {
    let fw = in_l1();
    let td = TestDir::new(name);
    let sim = GitHubSim::start();
    // This stand-in sends no heartbeats (each would be a busybox nc in an emulated guest):
    // never take its runners for dead.
    sim.set_dead_after(Duration::from_secs(86_400));
    let repo = sim.add_repo("owner/repo");
    sim.add_pat("krun-pat-secret", &[&repo]);
    let record = td.join("record");
    let mode = td.join("mode");
    for d in [&record, &mode] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    Fixture {
        td,
        sim,
        record,
        mode,
        fw,
    }
}

fn krunner_run(f: &Fixture, image: &str, extra: &[&str]) -> Krunner {
    let mut k = krunner(&f.td);
    k.env("KRUNNER_TOKEN", "krun-pat-secret")
        .args(["-v", "run", "--backend", "krun", "--libkrunfw-dir"])
        .arg(&f.fw)
        .args([
            "-c",
            "1",
            "-m",
            "512",
            "--api-url",
            &f.sim.api_url(),
            "-p",
            "owner/repo",
            "-i",
            image,
            "--name-prefix",
            "krun",
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

/// What a failed assertion shows: krunner's output, the simulator's log and every run log
/// (the agent's lines and the guest console: why a guest ended).
fn context(out: &impl std::fmt::Display, f: &Fixture) -> String {
    let dir = f.td.join("logs");
    let logs: String = list_names(&dir)
        .iter()
        .map(|name| format!("--- run log {name} ---\n{}\n", read(&dir.join(name))))
        .collect();
    format!("{out}\nsim log:\n{}\n{logs}", f.sim.log_text())
}

fn in_state(f: &Fixture, state: RunnerState) -> usize {
    f.sim
        .runners()
        .iter()
        .filter(|r| r.state() == state)
        .count()
}

fn await_state(f: &Fixture, running: Running, n: usize, state: RunnerState) -> Running {
    if wait_for(180, || in_state(f, state) >= n) {
        return running;
    }
    // exit_within SIGKILLs it and gives up after a bound: never an unbounded wait here.
    let out = exit_within(running, 1).map_or_else(|e| e, |o| o.to_string());
    panic!(
        "{n} runners never reached {state:?}\nVMMs: {:?}\n{}",
        processes_with("__krun-child"),
        context(&out, f)
    );
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))
}

/// What every finished run must have left: nothing in the cache's runs, no VMM, no mount.
fn assert_clean(f: &Fixture, ctx: &str) {
    assert!(
        list_names(&shared_cache().join("runs")).is_empty(),
        "run dirs left\n{ctx}"
    );
    assert!(
        processes_with("__krun-child").is_empty(),
        "VMMs left: {:?}\n{ctx}",
        processes_with("__krun-child")
    );
    assert!(mounts_under(&shared_cache()).is_empty(), "{ctx}");
    assert!(
        f.sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        f.sim.runners()
    );
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_jit_runners_come_online_as_1001_without_the_secrets_share() {
    let f = fixture("krun-run-jit");
    let out = krunner_run(&f, &runner_image(), &["-n", "1", "-r", "2"]).run();
    out.success().never_shows("krun-pat-secret");
    let ctx = context(&out, &f);
    for name in ["krun-0-1", "krun-0-2"] {
        assert!(f.record.join(name).exists(), "{name} ran\n{ctx}");
        assert_eq!(
            read(&f.record.join(format!("{name}.uid"))).trim(),
            "1001",
            "{ctx}"
        );
        assert_eq!(
            read(&f.record.join(format!("{name}.argv"))),
            "run\n",
            "the JIT config is in no argv\n{ctx}"
        );
        assert_eq!(
            read(&f.record.join(format!("{name}.secrets"))).trim(),
            "gone",
            "the secrets share is unmounted and its mount point removed before the runner starts\n{ctx}"
        );
    }
    let finished = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/job-finished") && l.status == 200)
        .count();
    assert_eq!(finished, 2, "both reached the simulator over TSI\n{ctx}");
    // The results share was read: krunner knows the runner started.
    assert_eq!(
        out.stderr.matches("runner_started=true").count(),
        2,
        "{ctx}"
    );
    // The per-run log holds the agent's lines and the guest's console.
    let logs = list_names(&f.td.join("logs"));
    assert_eq!(logs.len(), 2, "one log per run: {logs:?}\n{ctx}");
    for l in &logs {
        let text = read(&f.td.join("logs").join(l));
        assert!(
            text.contains("krunner agent:"),
            "agent lines in {l}:\n{text}"
        );
        assert!(
            text.contains("stand-in runner krun-0-"),
            "console in {l}:\n{text}"
        );
    }
    assert_clean(&f, &ctx);
}

/// busybox and the runner user (uid 1001), nothing else: an image made for a provided runner.
fn os_only_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    let reg = Registry::shared();
    PUSHED.call_once(|| {
        let layer: Vec<_> = crate::util::oci::runner_layer("", None)
            .into_iter()
            .take(3) // passwd, group, the runner's home: no /opt/actions-runner
            .collect();
        reg.push(
            &crate::util::oci::Image::of_layers(vec![
                crate::util::oci::busybox_entries().to_vec(),
                layer,
            ]),
            "krun-os-only:v1",
        );
    });
    reg.reference("krun-os-only:v1")
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_a_provided_runner_serves_an_image_with_only_its_os() {
    let f = fixture("krun-run-provided");
    let at = "echo \"$url\" > \"/record/$name\"\n";
    assert!(LISTENER.contains(at));
    let listener = LISTENER.replacen(
        at,
        &format!("{at}echo \"provided $(pwd) ${{DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:-}}\" > \"/record/$name.who\"\n"),
        1,
    );
    let now = krunner::image::cache::now_secs();
    f.sim
        .add_runner_release(crate::util::github_sim::stand_in_release(
            "2.330.0",
            now - 86_400,
            &listener,
        ));
    let url = f.sim.runner_releases_url();
    let out = krunner_run(
        &f,
        &os_only_image(),
        &["-n", "1", "-r", "1", "--runner-releases-url", &url],
    )
    .run();
    out.success().never_shows("krun-pat-secret");
    let ctx = context(&out, &f);
    assert_eq!(
        read(&f.record.join("krun-0-1.who")).trim(),
        "provided /opt/actions-runner 1",
        "the provided runner ran from its directory, with invariant globalization\n{ctx}"
    );
    assert_eq!(read(&f.record.join("krun-0-1.uid")).trim(), "1001", "{ctx}");
    let finished = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/job-finished") && l.status == 200)
        .count();
    assert_eq!(finished, 1, "{ctx}");
    assert_clean(&f, &ctx);
}

/// A scale-set runner in a real guest: the run group's stand-in, but it asks the simulator for
/// a job (`GET …/job`, through `busybox nc`) before it starts one.
const SCALESET_LISTENER: &str = r#"#!/bin/sh
post() { # URL BODY: POST, succeed on a 2xx answer
  hp=${1#http://}; path=/${hp#*/}; hp=${hp%%/*}
  answer=$(printf 'POST %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\nContent-Length: %s\r\n\r\n%s' \
    "$path" "$hp" "${#2}" "$2" | busybox nc "${hp%:*}" "${hp##*:}" | busybox head -n 1)
  case "$answer" in *" 2"[0-9][0-9]" "*) return 0 ;; esac
  echo "stand-in runner: POST $1 answered: $answer" >&2
  return 1
}
get() { # URL: the whole answer
  hp=${1#http://}; path=/${hp#*/}; hp=${hp%%/*}
  printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$path" "$hp" |
    busybox nc "${hp%:*}" "${hp##*:}"
}
cfg=${ACTIONS_RUNNER_INPUT_JITCONFIG:-}
files=$(echo "$cfg" | busybox base64 -d)
runner=$(echo "$files" | busybox sed 's/.*"\.runner":"\([^"]*\)".*/\1/' | busybox base64 -d)
creds=$(echo "$files" | busybox sed 's/.*"\.credentials":"\([^"]*\)".*/\1/' | busybox base64 -d)
url=$(echo "$runner" | busybox sed 's/.*"simRunnerUrl":"\([^"]*\)".*/\1/')
name=$(echo "$runner" | busybox sed 's/.*"agentName":"\([^"]*\)".*/\1/')
secret=$(echo "$creds" | busybox sed 's/.*"simSecret":"\([^"]*\)".*/\1/')
echo "$url" > "/record/$name"
busybox id -u > "/record/$name.uid"
echo "stand-in scale-set runner $name starting"
post "$url/online" "$secret" || exit 7
i=0
until get "$url/job?secret=$secret" | busybox grep -q '"jobId"'; do
  i=$((i + 1))
  [ "$i" -lt 600 ] || exit 6
  busybox sleep 1
done
post "$url/job-started" "$secret" || exit 8
busybox sleep 1
post "$url/job-finished" "$secret" || exit 9
echo done > "/record/$name.done"
"#;

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_a_scale_set_starts_a_guest_for_a_queued_job_and_closes_its_session() {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    let image = crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "krun-scaleset:v1",
        SCALESET_LISTENER,
        None,
    );
    let f = fixture("krun-run-scaleset");
    f.sim.set_poll_wait(Duration::from_secs(1));
    let running = krunner_run(
        &f,
        &image,
        &["--scale-set", "krun-set", "--max", "1", "--host-cpus", "2"],
    )
    .spawn();
    let pid = running.pid();
    let set = || {
        f.sim
            .scale_sets()
            .iter()
            .find(|s| s.name == "krun-set")
            .map(|s| s.id)
    };
    let ok = wait_for(120, || {
        set().is_some_and(|id| !f.sim.sessions(id).is_empty())
    });
    if !ok {
        signal(pid, Signal::SIGKILL);
    }
    assert!(ok, "the scale set and its session\n{}", f.sim.log_text());
    let id = set().unwrap();
    assert!(f.sim.runners().is_empty(), "no guest before a job");
    f.sim.queue_job(id, &["krun-set"]);
    let done = wait_for(600, || {
        f.sim
            .scale_set_jobs(id)
            .iter()
            .any(|j| j.state == crate::util::github_sim::SimJobState::Completed)
    });
    signal(pid, Signal::SIGINT);
    let out = exit_within(running, 120).unwrap_or_else(|e| panic!("{e}"));
    let ctx = context(&out, &f);
    assert!(done, "the job ran in a guest\n{ctx}");
    out.success().never_shows("krun-pat-secret");
    let name = f.sim.scale_set_jobs(id)[0]
        .runner_name
        .clone()
        .unwrap_or_default();
    assert_eq!(
        read(&f.record.join(format!("{name}.uid"))).trim(),
        "1001",
        "{ctx}"
    );
    assert!(
        f.sim
            .sessions(id)
            .iter()
            .all(|s| s.state == crate::util::github_sim::SimSessionState::Deleted),
        "{ctx}"
    );
    assert_clean(&f, &ctx);
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_token_mode_configures_and_cleans_up() {
    let f = fixture("krun-run-token");
    let out = krunner_run(
        &f,
        &token_runner_image(),
        &["-n", "1", "-r", "1", "--registration", "token"],
    )
    .run();
    out.success().never_shows("krun-pat-secret");
    let ctx = context(&out, &f);
    assert!(
        f.record.join("config-krun-0-1").exists(),
        "config.sh registered\n{ctx}"
    );
    assert_eq!(read(&f.record.join("krun-0-1.uid")).trim(), "1001", "{ctx}");
    assert_eq!(
        read(&f.record.join("krun-0-1.secrets")).trim(),
        "gone",
        "{ctx}"
    );
    for t in f.sim.registration_tokens() {
        out.never_shows(&t);
    }
    assert_clean(&f, &ctx);
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_an_idle_runner_stops_at_once_on_sigint() {
    let f = fixture("krun-run-idle");
    std::fs::write(f.mode.join("idle"), "").unwrap();
    let running = krunner_run(&f, &runner_image(), &["-n", "1"]).spawn();
    let pid = running.pid();
    let running = await_state(&f, running, 1, RunnerState::Online);
    let sent = Instant::now();
    signal(pid, Signal::SIGINT);
    let out = exit_within(running, 60).unwrap();
    let took = sent.elapsed();
    out.success();
    let ctx = context(&out, &f);
    assert!(out.stderr.contains("stopping the idle runner"), "{ctx}");
    // The stop reached the runner inside the guest (the agent's stop file → SIGTERM).
    assert_eq!(
        read(&f.record.join("krun-0-1.term")).trim(),
        "term",
        "{ctx}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}\n{ctx}");
    assert_clean(&f, &ctx);
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_a_busy_runner_drains_and_a_second_sigint_reaches_it_in_the_guest() {
    let f = fixture("krun-run-busy");
    std::fs::write(f.mode.join("busy"), "600").unwrap();
    let running = krunner_run(&f, &runner_image(), &["-n", "1", "--drain-timeout", "600"]).spawn();
    let pid = running.pid();
    let running = await_state(&f, running, 1, RunnerState::Busy);
    signal(pid, Signal::SIGINT);
    std::thread::sleep(Duration::from_secs(5));
    let busy_then = in_state(&f, RunnerState::Busy);
    let term_then = f.record.join("krun-0-1.term").exists();
    let second = Instant::now();
    signal(pid, Signal::SIGINT);
    let out = exit_within(running, 60).unwrap();
    let took = second.elapsed();
    out.success();
    let ctx = context(&out, &f);
    assert_eq!(
        busy_then, 1,
        "the first SIGINT lets the busy runner work\n{ctx}"
    );
    assert!(!term_then, "nothing stops a draining runner\n{ctx}");
    assert_eq!(
        read(&f.record.join("krun-0-1.term")).trim(),
        "term",
        "the forced stop reached the runner process in the guest\n{ctx}"
    );
    let offline = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/offline") && l.status == 200)
        .count();
    assert_eq!(
        offline, 1,
        "the runner told the simulator it is going away\n{ctx}"
    );
    assert!(took < Duration::from_secs(30), "took {took:?}\n{ctx}");
    assert_clean(&f, &ctx);
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_a_busy_runner_finishes_its_job_when_drained() {
    let f = fixture("krun-run-drain");
    std::fs::write(f.mode.join("busy"), "10").unwrap();
    let running = krunner_run(&f, &runner_image(), &["-n", "1", "--drain-timeout", "600"]).spawn();
    let pid = running.pid();
    let running = await_state(&f, running, 1, RunnerState::Busy);
    signal(pid, Signal::SIGINT);
    let out = exit_within(running, 90).unwrap();
    out.success();
    let ctx = context(&out, &f);
    let finished = f
        .sim
        .requests()
        .iter()
        .filter(|l| l.path.ends_with("/job-finished") && l.status == 200)
        .count();
    assert_eq!(finished, 1, "the job ran to its end\n{ctx}");
    assert!(!f.record.join("krun-0-1.term").exists(), "{ctx}");
    // Counted from the job's start, which came before the signal: a guest that failed before
    // it (the emulated host now and then ends one early) is the slot's business, not the drain's.
    let requests = f.sim.requests();
    let busy_at = requests
        .iter()
        .position(|l| l.path.ends_with("/job-started"))
        .unwrap_or_else(|| panic!("the job never started\n{ctx}"));
    let registered_after = requests[busy_at..]
        .iter()
        .filter(|l| l.method == "POST" && l.path.ends_with("/generate-jitconfig"))
        .count();
    assert_eq!(registered_after, 0, "no new runner while draining\n{ctx}");
    assert_clean(&f, &ctx);
}

#[test]
#[ignore = "boots real microVMs: run inside the emulated KVM host by `cargo test --test l1`"]
fn run_sigkill_of_krunner_kills_every_vmm_and_the_restart_sweeps() {
    let f = fixture("krun-run-sigkill");
    std::fs::write(f.mode.join("idle"), "").unwrap();
    let running = krunner_run(&f, &runner_image(), &["-n", "1"]).spawn();
    let pid = running.pid();
    let running = await_state(&f, running, 1, RunnerState::Online);
    assert!(!processes_with("__krun-child").is_empty());
    signal(pid, Signal::SIGKILL);
    if let Err(e) = exit_within(running, 30) {
        panic!("krunner's output did not end after SIGKILL: something holds its pipes\n{e}\nVMMs: {:?}", processes_with("__krun-child"));
    }
    assert!(
        wait_for(10, || processes_with("__krun-child").is_empty()),
        "every VMM dies with krunner: {:?}",
        processes_with("__krun-child")
    );
    assert!(
        !list_names(&shared_cache().join("runs")).is_empty(),
        "the dead krunner's run dir is still there for the restart to sweep"
    );
    // GitHub notices a dead runner after a while and shows it offline; the restart sweeps the
    // run dir, reconciles that registration away and runs one job.
    for r in f.sim.runners() {
        f.sim.set_runner_state(r.id, RunnerState::Offline);
    }
    std::fs::remove_file(f.mode.join("idle")).unwrap();
    let running = krunner_run(&f, &runner_image(), &["-n", "1", "-r", "1"]).spawn();
    let out =
        exit_within(running, 300).unwrap_or_else(|e| panic!("{e}\nsim log:\n{}", f.sim.log_text()));
    out.success();
    let ctx = context(&out, &f);
    assert!(out.stderr.contains("removed the leftovers"), "{ctx}");
    assert_clean(&f, &ctx);
}

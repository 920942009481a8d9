//! krunner as a Debian and an RPM package (`packaging/`), built from the binary under test.
//!
//! Building a release binary of the whole tree takes far too long for the test suite, so the
//! packages are made from the test profile's `target/debug/krunner` (stripped by the packaging)
//! with the same `packaging/build.sh` the release workflow runs on release binaries.
//!
//! The .deb goes into a fresh Debian 12 root file system (`tests/package.sh`: debootstrapped
//! once and cached in /var/tmp/krunner-test, copied per run) with `apt-get install
//! ./krunner_*.deb`, and is exercised there through chroot: `--version`, `doctor --no-boot`,
//! `exec --backend namespace` against a busybox image on the loopback registry. Then the
//! root's own systemd, booted in namespaces of its own, runs krunner.service: with a drop-in
//! that makes it start such a guest, then as shipped (`krunner run` against the GitHub
//! simulator, the token as a credential), and stops it during a job. Back in the chroot: the
//! unit through `systemd-analyze verify` and `security`, the bash completion, the man pages,
//! a reinstall and an unattended upgrade that keep a changed config, then remove and purge.
//! The .rpm's file list, config flags, scripts and requirements are read with Debian's `rpm`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;

use crate::util::oci::busybox_image;
use crate::util::registry::Registry;
use crate::util::*;

/// What building the packages needs (both tests).
const BUILD: &[Need] = &[
    Need::Root,
    Need::Tool("cargo"),
    Need::Tool("cargo-deb"),
    Need::Tool("cargo-generate-rpm"),
    Need::Tool("dpkg-shlibdeps"),
    Need::Tool("strip"),
    Need::Tool("gzip"),
];

/// What the Debian root and its image need.
const DEB: &[Need] = &[
    Need::Tool("debootstrap"),
    Need::Tool("unshare"),
    Need::Tool("chroot"),
    Need::Tool("nsenter"),
    Need::Tool("setsid"),
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

/// Seconds busy runners get after a stop unless configured otherwise (`--drain-timeout`);
/// the unit's TimeoutStopSec must be this plus 60.
const DRAIN_DEFAULT: u64 = 600;

/// The worst `systemd-analyze security` exposure the unit may have (it scores 6.5 today:
/// krunner must stay root with CAP_SYS_ADMIN, the host network and /dev/kvm). A higher score
/// means hardening was dropped.
const MAX_EXPOSURE: f64 = 6.5;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The two packages, built once per test run.
struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// Builds the .deb and .rpm from the binary under test (once, whichever test asks first).
fn packages() -> &'static Packages {
    static BUILT: OnceLock<Packages> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_krunner"));
        // target/debug is cargo's `dev` profile; any other directory is named after its profile.
        let profile = match bin
            .parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
        {
            Some("debug") => "dev".to_string(),
            Some(other) => other.to_string(),
            None => panic!("cannot tell the profile of {}", bin.display()),
        };
        let out = repo().join("target/packaging/it");
        let _ = std::fs::remove_dir_all(&out);
        let start = Instant::now();
        run_tool(
            Command::new("bash")
                .arg(repo().join("packaging/build.sh"))
                .args(["--profile", &profile, "--fast", "--out"])
                .arg(&out)
                .current_dir(repo()),
        );
        eprintln!(
            "package: .deb and .rpm built in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let find = |suffix: &str| {
            let found: Vec<PathBuf> = list_names(&out)
                .into_iter()
                .filter(|n| n.starts_with("krunner") && n.ends_with(suffix))
                .map(|n| out.join(n))
                .collect();
            assert_eq!(
                found.len(),
                1,
                "one {suffix} in {}: {found:?}",
                out.display()
            );
            found[0].clone()
        };
        Packages {
            deb: find(".deb"),
            rpm: find(".rpm"),
        }
    })
}

/// A command's exit code and output, for messages.
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    what: String,
}

impl std::fmt::Display for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\nexit code: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Ran {
    #[track_caller]
    fn ok(self) -> Ran {
        assert_eq!(self.code, Some(0), "failed: {self}");
        self
    }
}

fn ran(what: String, out: Output) -> Ran {
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    }
}

/// Runs a shell script as root chrooted in `root` (tests/package.sh run).
fn in_root(root: &Path, script: &str) -> Ran {
    let out = Command::new("bash")
        .arg(repo().join("tests/package.sh"))
        .arg("run")
        .arg(root)
        .args(["--", "/bin/sh", "-c", script])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run tests/package.sh");
    ran(format!("in the Debian root: {script}"), out)
}

/// The Debian root booted (tests/package.sh boot): its systemd runs as PID 1 of namespaces of
/// its own until this is dropped.
struct Booted {
    state: PathBuf,
}

impl Booted {
    fn new(root: &Path, state: PathBuf) -> Booted {
        // The guard first, so that a boot that fails half-way is halted too.
        let booted = Booted { state };
        run_tool(
            Command::new("bash")
                .arg(repo().join("tests/package.sh"))
                .arg("boot")
                .arg(root)
                .arg(&booted.state),
        );
        booted
    }

    /// Runs a shell script in the booted system.
    fn run(&self, script: &str) -> Ran {
        let out = Command::new("bash")
            .arg(repo().join("tests/package.sh"))
            .arg("in")
            .arg(&self.state)
            .args(["--", "/bin/sh", "-c", script])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run tests/package.sh");
        ran(format!("in the booted Debian root: {script}"), out)
    }
}

impl Drop for Booted {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/package.sh"))
            .arg("halt")
            .arg(&self.state)
            .status();
    }
}

/// Runs `rpm` on the host.
fn rpm(args: &[&str], pkg: &Path) -> String {
    run_tool(Command::new("rpm").args(args).arg(pkg))
}

/// The unit's `Key=value` settings (comments and sections dropped).
fn unit_settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The unit and the env file agree with each other and with the CLI: the drain timeout and
/// TimeoutStopSec, the credential path, and every variable the env file names is one krunner
/// reads (so a renamed option cannot leave a dead line behind). Needs nothing but the binary.
#[test]
fn unit_and_env_file_agree_with_the_cli() {
    let unit = std::fs::read_to_string(repo().join("packaging/krunner.service")).unwrap();
    let env = std::fs::read_to_string(repo().join("packaging/krunner.env")).unwrap();
    let settings = unit_settings(&unit);
    let get = |k: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        get("TimeoutStopSec"),
        [(DRAIN_DEFAULT + 60).to_string().as_str()]
    );
    assert_eq!(get("KillMode"), ["mixed"], "SIGTERM to krunner alone");
    assert_eq!(get("EnvironmentFile"), ["/etc/krunner/krunner.env"]);
    assert_eq!(get("LoadCredential"), ["token:/etc/krunner/token"]);
    assert_eq!(
        get("ExecStart"),
        ["/usr/bin/krunner run --token-file ${CREDENTIALS_DIRECTORY}/token"]
    );
    assert_eq!(get("Restart"), ["on-failure"]);
    assert!(!get("StartLimitBurst").is_empty() && !get("StartLimitIntervalSec").is_empty());
    assert!(
        env.contains(&format!("#KRUNNER_DRAIN_TIMEOUT={DRAIN_DEFAULT}\n")),
        "the env file shows the drain default"
    );

    let td = TestDir::new("pkg-env");
    let help = td.krunner().args(["run", "--help"]).run();
    help.success();
    let global = td.krunner().arg("--help").run();
    global.success();
    // clap prints each option's variable and default: "[env: KRUNNER_DRAIN_TIMEOUT=] [default: 600]".
    let flat = help.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        flat.contains(&format!(
            "[env: KRUNNER_DRAIN_TIMEOUT=] [default: {DRAIN_DEFAULT}]"
        )),
        "krunner run's drain default is {DRAIN_DEFAULT}\n{help}"
    );
    let mut named = Vec::new();
    for line in env.lines() {
        let var = line.trim_start_matches('#');
        let Some((name, _)) = var.split_once('=') else {
            continue;
        };
        if !name.starts_with("KRUNNER_") || name.contains(' ') {
            continue;
        }
        assert!(
            help.stdout.contains(&format!("[env: {name}="))
                || global.stdout.contains(&format!("[env: {name}=")),
            "krunner.env names {name}, which krunner run does not read"
        );
        named.push(name.to_string());
    }
    // And the other way round: every variable `krunner run` reads has its commented line, so
    // a new option reaches the administrators who configure krunner through this file. But
    // for the credentials (the unit passes them as files: the env file's first section says
    // how) and -q (for terminals; the journal keeps what the log level lets through).
    let not_in_env_file = [
        "KRUNNER_TOKEN",
        "KRUNNER_TOKEN_FILE",
        "KRUNNER_APP_KEY",
        "KRUNNER_QUIET",
    ];
    for part in help.stdout.split("[env: ").skip(1) {
        // `[env: NAME=value]`, or `[env: NAME]` for a hidden value.
        let end = part
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(part.len());
        let name = &part[..end];
        assert!(
            named.iter().any(|n| n == name) || not_in_env_file.contains(&name),
            "krunner run reads {name}, which packaging/krunner.env does not show"
        );
    }
}

/// The `Name=` of each backticked directive in the first column of packaging/README.md's
/// table whose header row starts with `| {header} |`.
fn readme_table_directives(readme: &str, header: &str) -> Vec<String> {
    let head = format!("| {header} |");
    let mut rows = readme
        .lines()
        .skip_while(|l| !l.starts_with(&head))
        .skip(2) // the header and the |---| line
        .take_while(|l| l.starts_with('|'));
    let mut names = Vec::new();
    for row in rows.by_ref() {
        let first = row.split('|').nth(1).unwrap_or_default();
        for code in first.split('`').skip(1).step_by(2) {
            if let Some((name, _)) = code.split_once('=') {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// The unit sets each directive packaging/README.md's "set" table names and none of its
/// "left out" table: each left-out one breaks KVM, the jail or the namespace backend (e.g.
/// ProtectHostname=yes denies sethostname(2) to every process of the unit before systemd 258,
/// and each namespace-backend run sets its guest's host name), so the table is the list of
/// what must not come back, and the documented reasons stay true to the unit.
#[test]
fn unit_hardening_is_what_packaging_readme_says() {
    let unit = std::fs::read_to_string(repo().join("packaging/krunner.service")).unwrap();
    let readme = std::fs::read_to_string(repo().join("packaging/README.md")).unwrap();
    let settings = unit_settings(&unit);
    let set: Vec<&str> = settings.iter().map(|(k, _)| k.as_str()).collect();
    let wanted = readme_table_directives(&readme, "set");
    let left_out = readme_table_directives(&readme, "left out");
    assert!(
        wanted.len() >= 10 && left_out.len() >= 10,
        "packaging/README.md's tables: {wanted:?} {left_out:?}"
    );
    for name in &wanted {
        assert!(
            set.contains(&name.as_str()),
            "packaging/README.md says the unit sets {name}=, it does not"
        );
    }
    for name in &left_out {
        assert!(
            !set.contains(&name.as_str()),
            "the unit sets {name}=, which packaging/README.md explains must be left out"
        );
    }
    assert!(left_out.iter().any(|n| n == "ProtectHostname"));
}

/// The .deb in a fresh Debian 12: install, run, verify the unit, completions, man pages, a
/// reinstall over a changed config, remove and purge.
#[test]
fn deb_installs_and_runs_in_a_fresh_debian_12() {
    if skip(BUILD) || skip(DEB) {
        return;
    }
    let start = Instant::now();
    let pkgs = packages();
    let td = TestDir::new("pkg-deb");
    let root = td.join("root");
    let t = Instant::now();
    run_tool(
        Command::new("bash")
            .arg(repo().join("tests/package.sh"))
            .arg("root")
            .arg(&root),
    );
    eprintln!(
        "package: Debian 12 root ready in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let deb_name = pkgs.deb.file_name().unwrap().to_string_lossy().into_owned();
    // In /var/tmp: the booted system below empties /tmp at boot (tmpfiles.d's `D /tmp`).
    std::fs::copy(&pkgs.deb, root.join("var/tmp").join(&deb_name)).unwrap();

    // apt resolves the dependencies (passt, nftables) from the root's own apt cache.
    let t = Instant::now();
    in_root(
        &root,
        &format!("cd /var/tmp && apt-get install -y -q ./{deb_name}"),
    )
    .ok();
    eprintln!(
        "package: apt-get install took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let state = in_root(
        &root,
        "dpkg-query -W -f='${Status}\\n' krunner passt nftables; \
         stat -c '%a %U %n' /var/lib/krunner /etc/krunner/krunner.env /usr/bin/krunner; \
         cat /var/lib/dpkg/info/krunner.conffiles",
    )
    .ok();
    assert_eq!(
        state.stdout.matches("install ok installed").count(),
        3,
        "krunner and its dependencies are installed\n{state}"
    );
    for want in [
        "700 root /var/lib/krunner",
        "600 root /etc/krunner/krunner.env",
        "755 root /usr/bin/krunner",
        "/etc/krunner/krunner.env\n",
    ] {
        assert!(state.stdout.contains(want), "{want:?}\n{state}");
    }

    // The installed binary says what it is, the same as the one the package was built from.
    let version = in_root(&root, "krunner --version").ok();
    let here = td.krunner().arg("--version").run();
    here.success();
    assert_eq!(version.stdout, here.stdout);
    assert!(
        version.stdout.starts_with(&format!(
            "krunner {}\nrevision: ",
            env!("CARGO_PKG_VERSION")
        )) && version.stdout.contains("\nlibkrun: ")
            && version.stdout.contains("\nfeatures: "),
        "{version}"
    );

    // doctor prints the same lines first; whether microVMs can run in a chroot on this host
    // (exit 0 or 1) is not this test's business, but the namespace backend must be usable.
    let doctor = in_root(&root, "krunner doctor --no-boot");
    assert!(matches!(doctor.code, Some(0 | 1)), "{doctor}");
    assert!(
        doctor.stdout.starts_with(&version.stdout),
        "doctor starts with the version\n{doctor}"
    );
    assert!(
        doctor
            .stdout
            .contains("[ok  ] namespace backend: available"),
        "{doctor}"
    );

    // A guest from the loopback registry (the chroot shares the host's network), in the
    // default cache the package made.
    let reg = Registry::shared();
    static PUSHED: std::sync::Once = std::sync::Once::new();
    PUSHED.call_once(|| reg.push(busybox_image(), "pkg-busybox:v1"));
    let image = reg.reference("pkg-busybox:v1");
    let exec = in_root(
        &root,
        &format!(
            "krunner -q exec --backend namespace {image} -- sh -c 'echo guest says hi; exit 7'"
        ),
    );
    assert_eq!(exec.code, Some(7), "{exec}");
    assert_eq!(exec.stdout, "guest says hi\n", "{exec}");
    let cache = in_root(&root, "stat -c '%a' /var/lib/krunner; ls /var/lib/krunner").ok();
    assert!(
        cache.stdout.starts_with("700\n") && cache.stdout.contains("rootfs"),
        "{cache}"
    );

    // The unit's sandbox as systemd applies it: the root booted (its systemd as PID 1 of
    // namespaces of its own, the host's network), and krunner.service started there twice.
    // First with a drop-in that runs a namespace-backend guest of the cached image instead of
    // `krunner run`. The guest needs what the hardening must leave: mounts, namespaces,
    // pivot_root, setting its host name (which ProtectHostname=yes forbids), its cgroup, and
    // the network jail (a network namespace joined by pasta, nftables rules).
    let t = Instant::now();
    let dropin = root.join("etc/systemd/system/krunner.service.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test.conf"),
        format!(
            "[Service]\nExecStart=\nExecStart=/usr/bin/krunner -q exec --backend namespace \
             {image} -- sh -c 'echo host name $(hostname); \
             echo network $(readlink /proc/self/ns/net); echo guest says hi'\n\
             Restart=no\nStandardOutput=append:/var/log/krunner-test.log\n\
             StandardError=append:/var/log/krunner-test.log\n"
        ),
    )
    .unwrap();
    // The unit loads this credential whatever it runs.
    std::fs::write(root.join("etc/krunner/token"), "e2e-token\n").unwrap();
    // Until the unit has stopped (Type=exec: `start` returns once krunner runs), at most 2 min.
    let started = "systemctl daemon-reload && systemctl start krunner; i=0; \
                   while systemctl -q is-active krunner && [ $i -lt 600 ]; do \
                   sleep 0.2; i=$((i + 1)); done; \
                   systemctl show -p Result -p ExecMainStatus krunner; ";
    let booted = Booted::new(&root, td.join("booted"));
    let unit = booted.run(&format!("{started} cat /var/log/krunner-test.log"));
    assert!(
        unit.stdout.contains("Result=success\n")
            && unit.stdout.contains("ExecMainStatus=0\n")
            && unit.stdout.contains("guest says hi\n"),
        "krunner.service ran no guest\n{unit}"
    );
    // In a network namespace of its own: the jail's (pasta and nftables) worked in the unit.
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(
        unit.stdout.contains("\nnetwork net:[")
            && !unit
                .stdout
                .contains(&format!("\nnetwork {}\n", host_net.display())),
        "the guest is not in a network namespace of its own\n{unit}"
    );
    std::fs::remove_dir_all(&dropin).unwrap();

    // Then as shipped, configured through krunner.env alone: `krunner run` with the token
    // from the credential registers one JIT runner with the GitHub simulator, its guest runs
    // the stand-in runner's job, the registration is deleted and krunner exits 0 (-r 1).
    let f = crate::run_e2e::fixture("pkg-run");
    // Not under /tmp or /var/tmp, which PrivateTmp=yes hides from the unit.
    let (record, mode) = (root.join("srv/record"), root.join("srv/mode"));
    for d in [&record, &mode] {
        std::fs::create_dir_all(d).unwrap();
        // The runner (uid 1001) writes its name to record and reads mode.
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    }
    let env_file = root.join("etc/krunner/krunner.env");
    let shipped_env = std::fs::read_to_string(&env_file).unwrap();
    let configure = |extra: &str| {
        std::fs::write(
            &env_file,
            format!(
                "{shipped_env}KRUNNER_PRINCIPAL=owner/repo\nKRUNNER_API_URL={}\n\
                 KRUNNER_BACKEND=namespace\nKRUNNER_IMAGE={}\nKRUNNER_NAME_PREFIX=pkg\n\
                 KRUNNER_MOUNT=/srv/record:/record,/srv/mode:/mode:ro\n{extra}",
                f.sim.api_url(),
                crate::run_e2e::runner_image()
            ),
        )
        .unwrap()
    };
    let journal = "journalctl -u krunner -o cat --no-pager | tail -n 40";
    configure("KRUNNER_REPEAT=1\n");
    let run = booted.run(&format!("{started} {journal}"));
    let ctx = format!("{run}\nsim log:\n{}", f.sim.log_text());
    assert!(
        run.stdout.contains("Result=success\n") && run.stdout.contains("ExecMainStatus=0\n"),
        "{ctx}"
    );
    assert_eq!(
        f.sim.count(
            "POST",
            "/repos/owner/repo/actions/runners/generate-jitconfig"
        ),
        1,
        "{ctx}"
    );
    assert_eq!(list_names(&record), ["pkg-0-1"], "{ctx}");
    assert!(f.sim.runners().is_empty(), "registrations left\n{ctx}");

    // Stopping: `systemctl stop` while a job runs. KillMode=mixed signals krunner alone, which
    // lets the busy runner finish its job (4 s here) before it ends the guest, deletes the
    // registration and exits 0; were the guest signalled too, the job would die unfinished.
    std::fs::write(mode.join("busy"), "4").unwrap();
    configure("");
    booted.run("systemctl start krunner").ok();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while !f.sim.runners().iter().any(|r| r.busy) {
        assert!(
            Instant::now() < deadline,
            "no runner took a job\n{}\nsim log:\n{}",
            booted.run(journal),
            f.sim.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stopping = Instant::now();
    let stop = booted.run(&format!(
        "systemctl stop krunner; systemctl show -p Result -p ExecMainStatus krunner; {journal}"
    ));
    let stop_took = stopping.elapsed();
    drop(booted);
    std::fs::write(&env_file, &shipped_env).unwrap();
    let ctx = format!("{stop}\nsim log:\n{}", f.sim.log_text());
    assert!(
        stop.stdout.contains("Result=success\n") && stop.stdout.contains("ExecMainStatus=0\n"),
        "{ctx}"
    );
    assert_eq!(
        f.sim.log_text().matches("/job-finished").count(),
        2,
        "the job of the stop's runner finished too\n{ctx}"
    );
    assert!(f.sim.runners().is_empty(), "registrations left\n{ctx}");
    assert!(
        stop_took >= std::time::Duration::from_secs(2),
        "stopped in {stop_took:?}, before the job could finish\n{ctx}"
    );
    eprintln!(
        "package: the unit ran a guest and runners under systemd in {:.1} s (the stop: {:.1} s)",
        t.elapsed().as_secs_f64(),
        stop_took.as_secs_f64()
    );

    // The unit: systemd-analyze verify (it also runs `man` for Documentation= and checks
    // ExecStart's binary) and the hardening score.
    let verify = in_root(
        &root,
        "systemd-analyze verify /usr/lib/systemd/system/krunner.service",
    );
    assert!(
        verify.code == Some(0) && verify.stderr.trim().is_empty(),
        "{verify}"
    );
    // The rootless user unit (%h is root's home here, which is all verify needs).
    let verify = in_root(
        &root,
        "systemd-analyze verify /usr/lib/systemd/user/krunner.service",
    );
    assert!(
        verify.code == Some(0) && verify.stderr.trim().is_empty(),
        "{verify}"
    );
    let security = in_root(
        &root,
        "systemd-analyze security --offline=yes /usr/lib/systemd/system/krunner.service",
    );
    let score: f64 = security
        .stdout
        .lines()
        .find_map(|l| l.split("krunner.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level\n{security}"));
    eprintln!("package: systemd-analyze security: {score}");
    assert!(score <= MAX_EXPOSURE, "exposure {score}\n{security}");

    // bash-completion finds the script where the package put it and completes subcommands.
    let completion = in_root(
        &root,
        "exec bash -c '. /usr/share/bash-completion/bash_completion; \
         _completion_loader krunner; complete -p krunner; \
         COMP_WORDS=(krunner ru); COMP_CWORD=1; COMP_LINE=\"krunner ru\"; COMP_POINT=10; \
         _krunner krunner ru krunner; printf \"%s\\n\" \"${COMPREPLY[@]}\"'",
    )
    .ok();
    assert!(
        completion.stdout.contains("-F _krunner") && completion.stdout.contains("\nrun\n"),
        "{completion}"
    );
    let others = in_root(
        &root,
        "ls /usr/share/zsh/vendor-completions/_krunner /usr/share/fish/vendor_completions.d/krunner.fish",
    );
    others.ok();

    // The man pages render.
    let man = in_root(
        &root,
        "MANWIDTH=100 man -P cat krunner 2>&1; MANWIDTH=100 man -P cat krunner-run 2>&1",
    )
    .ok();
    for want in [
        "SYNOPSIS",
        "krunner-run",
        "--drain-timeout",
        "KRUNNER_DRAIN_TIMEOUT",
    ] {
        assert!(man.stdout.contains(want), "{want}\n{man}");
    }
    assert!(!man.stdout.contains("warning"), "{man}");

    // A changed config survives a reinstall; remove keeps it, purge removes it; the cache and
    // the administrator's token are never the package's to remove.
    in_root(
        &root,
        &format!(
            "echo KRUNNER_PRINCIPAL=acme/app >>/etc/krunner/krunner.env && \
             printf 'ghp_test\\n' >/etc/krunner/token && chmod 600 /etc/krunner/token && \
             cd /var/tmp && apt-get install -y -q --reinstall ./{deb_name}"
        ),
    )
    .ok();
    let kept = in_root(&root, "tail -n 1 /etc/krunner/krunner.env").ok();
    assert_eq!(kept.stdout, "KRUNNER_PRINCIPAL=acme/app\n", "{kept}");

    // An upgrade whose packaged krunner.env changed too (the same package repacked as
    // version -2 with a line more), unattended as the README says: dpkg keeps the changed
    // file and puts the new one beside it as krunner.env.dpkg-dist, without asking.
    let upgrade = in_root(
        &root,
        &format!(
            "set -e; cd /var/tmp; rm -rf up; dpkg-deb -R {deb_name} up; \
             sed -i 's/^Version: .*/Version: 0.1.0-2/' up/DEBIAN/control; \
             echo '# new in -2' >>up/etc/krunner/krunner.env; \
             if [ -f up/DEBIAN/md5sums ]; then \
             sed -i '/ etc\\/krunner\\/krunner.env$/d' up/DEBIAN/md5sums; \
             (cd up && md5sum etc/krunner/krunner.env) >>up/DEBIAN/md5sums; fi; \
             dpkg-deb -Zgzip -z1 -b up krunner_0.1.0-2.deb >/dev/null; \
             apt-get install -y -q -o Dpkg::Options::=--force-confdef \
             -o Dpkg::Options::=--force-confold ./krunner_0.1.0-2.deb; \
             dpkg-query -W -f='${{Version}}\n' krunner; tail -n 1 /etc/krunner/krunner.env; \
             tail -n 1 /etc/krunner/krunner.env.dpkg-dist"
        ),
    )
    .ok();
    assert!(
        upgrade
            .stdout
            .ends_with("0.1.0-2\nKRUNNER_PRINCIPAL=acme/app\n# new in -2\n"),
        "{upgrade}"
    );

    let exists = |p: &str| format!("test -e {p} && echo '{p} yes' || echo '{p} no'; ");
    let paths = [
        "/usr/bin/krunner",
        "/usr/lib/systemd/system/krunner.service",
        "/etc/krunner/krunner.env",
        "/etc/krunner/krunner.env.dpkg-dist",
        "/etc/krunner/token",
        "/var/lib/krunner/rootfs",
    ];
    let check = paths.iter().map(|p| exists(p)).collect::<String>();
    let removed = in_root(
        &root,
        &format!("apt-get remove -y -q krunner >/dev/null; {check}"),
    )
    .ok();
    for (p, want) in paths.iter().zip(["no", "no", "yes", "yes", "yes", "yes"]) {
        assert!(
            removed.stdout.contains(&format!("{p} {want}\n")),
            "after remove: {p}\n{removed}"
        );
    }
    let purged = in_root(
        &root,
        &format!("apt-get purge -y -q krunner >/dev/null; {check}"),
    )
    .ok();
    for (p, want) in paths.iter().zip(["no", "no", "no", "no", "yes", "yes"]) {
        assert!(
            purged.stdout.contains(&format!("{p} {want}\n")),
            "after purge: {p}\n{purged}"
        );
    }
    eprintln!(
        "package: the .deb test took {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

/// The .rpm: its files and their modes, the config file marked noreplace, the scriptlets and
/// the requirements, read with Debian's `rpm`.
#[test]
fn rpm_has_the_files_scripts_and_requirements() {
    if skip(BUILD) || skip(&[Need::Tool("rpm")]) {
        return;
    }
    let pkgs = packages();
    let files = rpm(
        &[
            "-qp",
            "--qf",
            "[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]",
        ],
        &pkgs.rpm,
    );
    for want in [
        "-rwxr-xr-x  /usr/bin/krunner",
        "-rw-r--r--  /usr/lib/systemd/system/krunner.service",
        "-rw-r--r--  /usr/lib/systemd/user/krunner.service",
        "-rw------- cn /etc/krunner/krunner.env",
        "-rw-r--r--  /usr/share/bash-completion/completions/krunner",
        "-rw-r--r--  /usr/share/zsh/site-functions/_krunner",
        "-rw-r--r--  /usr/share/fish/vendor_completions.d/krunner.fish",
        "-rw-r--r-- d /usr/share/man/man1/krunner.1.gz",
        "-rw-r--r-- d /usr/share/man/man1/krunner-run.1.gz",
    ] {
        assert!(files.contains(&format!("{want}\n")), "{want:?} in\n{files}");
    }
    // The payload matches the digests in the header (what rpm checks before installing).
    let digests = rpm(&["-K", "--nosignature"], &pkgs.rpm);
    assert!(digests.contains("digests OK"), "{digests}");
    let list = rpm(&["-qlp"], &pkgs.rpm);
    assert!(
        list.lines()
            .all(|l| l.starts_with("/usr/") || l.starts_with("/etc/krunner/")),
        "{list}"
    );
    let scripts = rpm(&["-qp", "--scripts"], &pkgs.rpm);
    for want in [
        "postinstall scriptlet",
        "install -d -m 0700 -o root -g root /var/lib/krunner",
        "preuninstall scriptlet",
        "disable --now krunner.service",
        "postuninstall scriptlet",
        "daemon-reload",
    ] {
        assert!(scripts.contains(want), "{want:?} in\n{scripts}");
    }
    assert!(!scripts.contains("rm -rf"), "the cache stays\n{scripts}");
    let requires = rpm(&["-qp", "--requires"], &pkgs.rpm);
    for want in ["passt", "nftables", "libkrunfw"] {
        assert!(
            requires.lines().any(|l| l.trim() == want),
            "{want} in\n{requires}"
        );
    }
}

/// The release workflow, read with PyYAML (Debian 12 has no actionlint): triggered by a tag,
/// both architectures built natively in Debian 12 with packaging/build.sh and the same tool
/// versions as tests/setup.sh, the image owner computed as the images workflow computes it,
/// SHA256SUMS, and a publish job that alone may write.
#[test]
fn release_workflow_is_well_formed() {
    if skip(&[Need::Tool("python3")]) {
        return;
    }
    let path = repo().join(".github/workflows/release.yml");
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No module named 'yaml'") && skip_because("needs python3-yaml") {
        return;
    }
    assert!(out.status.success(), "release.yml is not YAML: {err}");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // YAML 1.1 reads the key `on` as the boolean true.
    let on = doc.get("on").or_else(|| doc.get("true")).expect("on:");
    assert_eq!(on["push"]["tags"], serde_json::json!(["v*"]), "{on}");
    assert_eq!(
        doc["permissions"]["contents"], "read",
        "read-only by default"
    );
    let build = &doc["jobs"]["build"];
    assert_eq!(build["container"], "debian:12", "bookworm's glibc");
    let arches: Vec<&str> = build["strategy"]["matrix"]["include"]
        .as_array()
        .expect("matrix.include")
        .iter()
        .filter_map(|m| m["arch"].as_str())
        .collect();
    assert_eq!(arches, ["x86_64", "aarch64"]);
    let publish = &doc["jobs"]["publish"];
    assert_eq!(publish["permissions"]["contents"], "write");
    assert_eq!(publish["needs"], "build");
    let mut scripts = String::new();
    for (name, job) in doc["jobs"].as_object().expect("jobs") {
        for (i, step) in job["steps"].as_array().expect("steps").iter().enumerate() {
            let run = step.get("run").and_then(|r| r.as_str());
            assert!(
                run.is_some() != step.get("uses").is_some(),
                "jobs.{name}.steps[{i}]: exactly one of run/uses"
            );
            if let Some(run) = run {
                // An expression inside a script is a script-injection hazard: env instead.
                assert!(!run.contains("${{"), "jobs.{name}.steps[{i}]: ${{{{ in run");
                scripts.push_str(run);
            }
        }
    }
    for want in [
        "bash packaging/build.sh --profile release",
        "cargo build --release --locked",
        "export KRUNNER_DEFAULT_IMAGE_REPO=\"ghcr.io/$owner\"",
        "sha256sum krunner* >SHA256SUMS",
        "gh release create",
    ] {
        assert!(scripts.contains(want), "release.yml runs {want:?}");
    }
    // The same owner as the images workflow, the same packaging tools as tests/setup.sh.
    let owner = "owner=$(printf '%s' \"$GITHUB_REPOSITORY_OWNER\" | tr '[:upper:]' '[:lower:]')";
    let images = std::fs::read_to_string(repo().join(".github/workflows/images.yml")).unwrap();
    assert!(scripts.contains(owner) && images.contains(owner));
    assert!(images.contains("--repo \"ghcr.io/$owner\""));
    let setup = std::fs::read_to_string(repo().join("tests/setup.sh")).unwrap();
    for tool in ["cargo-deb@3.8.0", "cargo-generate-rpm@0.21.1"] {
        assert!(scripts.contains(tool) && setup.contains(tool), "{tool}");
    }
}

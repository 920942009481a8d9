//! Host checks for `krunner doctor`: can microVMs run here, and if not, why and what to do.
//!
//! Each check returns a [`Check`] with the finding and, when something is wrong, the fix. The
//! order follows what a boot needs: /dev/kvm → creating a VM → libkrun → libkrunfw → a real
//! test boot; then the namespace backend, the fallback.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::image::Cancel;
use crate::jail::egress::EgressPolicy;
use crate::jail::netns::NetJail;
use crate::jail::Tools;
use crate::launcher::krun_child::{probe_kvm, KvmProbe};
use crate::launcher::libkrunfw::find_libkrunfw;
use crate::launcher::run::{Launcher, Output, RunRequest, VmExit, Workload};
use crate::launcher::Backend;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Works, but worth knowing.
    Warn,
    /// Blocks microVMs.
    Fail,
    /// Not run because an earlier check failed.
    Skipped,
}

/// One finding.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// The outcome.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

impl Check {
    fn new(
        name: &'static str,
        status: Status,
        detail: impl Into<String>,
        fix: Option<&str>,
    ) -> Check {
        Check {
            name,
            status,
            detail: detail.into(),
            fix: fix.map(String::from),
        }
    }
}

/// Whether the host's KVM is the nested "PVM" flavour, which cannot run libkrunfw's kernel:
/// `kvm_pvm` loaded, neither `kvm_intel` nor `kvm_amd`, no vmx/svm CPU flag.
pub fn is_pvm_host(sys_module: &Path, cpuinfo: &str) -> bool {
    let has_flag = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    sys_module.join("kvm_pvm").exists()
        && !sys_module.join("kvm_intel").exists()
        && !sys_module.join("kvm_amd").exists()
        && !has_flag
}

/// What to do on a host whose KVM cannot run the guest kernel (a macro, so that `concat!` can
/// share it between the messages below).
macro_rules! kvm_remedy {
    () => {
        "run krunner on bare metal or a VM with real nested virtualization, or use --backend namespace (weaker isolation)"
    };
}

const PVM_FIX: &str = concat!(
    "this host's KVM is nested \"PVM\" KVM (kvm_pvm, no vmx/svm): it creates VMs but cannot execute the libkrunfw guest kernel, which dies with KVM_EXIT_INTERNAL_ERROR; ",
    kvm_remedy!()
);

/// Why a guest died with `KVM_EXIT_INTERNAL_ERROR`, and what to do: for `krunner exec` and the
/// run log messages of `krunner run`.
pub const KVM_INTERNAL_ERROR_HELP: &str = concat!(
    "the guest kernel died with KVM_EXIT_INTERNAL_ERROR: this host's KVM cannot run the libkrunfw guest kernel (nested \"PVM\" KVM is such a KVM); `krunner doctor` checks the host; ",
    kvm_remedy!()
);

/// The checks that need no boot.
pub fn static_checks(libkrunfw_dir: Option<&Path>) -> (Vec<Check>, bool) {
    let mut checks = Vec::new();
    let mut can_boot = true;
    match probe_kvm() {
        KvmProbe::Missing => {
            can_boot = false;
            checks.push(Check::new("/dev/kvm", Status::Fail, "missing", Some("load kvm_intel or kvm_amd (modprobe), enable virtualization in the firmware, or on a VM enable nested virtualization")));
        }
        KvmProbe::NoAccess(e) => {
            can_boot = false;
            checks.push(Check::new(
                "/dev/kvm",
                Status::Fail,
                format!("cannot open read-write: {e}"),
                Some("add the user to the kvm group (usermod -aG kvm USER) or run as root"),
            ));
        }
        KvmProbe::CreateVmFailed(e) => {
            can_boot = false;
            checks.push(Check::new(
                "/dev/kvm",
                Status::Ok,
                "present and accessible",
                None,
            ));
            checks.push(Check::new(
                "KVM_CREATE_VM",
                Status::Fail,
                e,
                Some("the kernel refuses to create VMs: check dmesg and the kvm module"),
            ));
        }
        KvmProbe::Ok { api_version } => {
            checks.push(Check::new(
                "/dev/kvm",
                Status::Ok,
                "present and accessible",
                None,
            ));
            checks.push(Check::new(
                "KVM_CREATE_VM",
                Status::Ok,
                format!("a VM can be created (KVM API {api_version})"),
                None,
            ));
        }
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if is_pvm_host(Path::new("/sys/module"), &cpuinfo) {
        checks.push(Check::new(
            "KVM flavour",
            Status::Warn,
            "nested PVM KVM (kvm_pvm loaded, no vmx/svm)",
            Some(PVM_FIX),
        ));
    }
    let libkrun = if krunner_sys::SYSTEM_LIBKRUN {
        "system libkrun (pkg-config), linked dynamically".to_string()
    } else {
        format!(
            "libkrun {} from crates.io, linked in",
            krunner_sys::BUNDLED_LIBKRUN_VERSION.unwrap_or("?")
        )
    };
    checks.push(Check::new("libkrun", Status::Ok, libkrun, None));
    match find_libkrunfw(libkrunfw_dir) {
        Some(p) => checks.push(Check::new(
            "libkrunfw",
            Status::Ok,
            p.display().to_string(),
            None,
        )),
        None => {
            can_boot = false;
            checks.push(Check::new("libkrunfw", Status::Fail, "libkrunfw.so.5 not found", Some("install libkrunfw (Fedora), libkrunfw5 (Debian testing/unstable) or libkrunfw (Homebrew), or pass --libkrunfw-dir")));
        }
    }
    (checks, can_boot)
}

/// Whether runs get a cgroup v2 with memory, CPU and process limits, and where; sets up
/// krunner's place in the hierarchy as a run would.
pub fn cgroup_check() -> Check {
    match crate::launcher::cgroup::status() {
        Ok(base) => Check::new(
            "cgroups",
            Status::Ok,
            format!(
                "cgroup v2: each run gets {}/run-<id> with controllers {}",
                base.dir.display(),
                base.controllers.join(", ")
            ),
            None,
        ),
        Err(why) => Check::new(
            "cgroups",
            Status::Warn,
            format!("runs get no memory, CPU or process limits: {why}"),
            Some("use a host with the unified cgroup v2 hierarchy (systemd.unified_cgroup_hierarchy=1) and run krunner as root or in a delegated cgroup (systemd Delegate=yes)"),
        ),
    }
}

/// Whose privileges krunner has: root of the host, or (an ordinary user) root of a user
/// namespace of its own over the user's subordinate ids; or, failing that, why not.
pub fn privileges_check() -> Check {
    const NAME: &str = "privileges";
    if crate::rootless::host_root() {
        return Check::new(NAME, Status::Ok, "root of the host", None);
    }
    if crate::rootless::active() {
        let map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
        let map: Vec<String> = map
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        return Check::new(
            NAME,
            Status::Ok,
            format!(
                "rootless: root of a user namespace of its own (uid map: {}); guests run as this user and its subordinate ids",
                map.join(", ")
            ),
            None,
        );
    }
    let why = match crate::rootless::entered() {
        Some(Err(e)) => e,
        _ => "not root, and no user namespace was tried".to_string(),
    };
    Check::new(
        NAME,
        Status::Fail,
        format!("an ordinary user without rootless operation: {why}"),
        Some("give the user a subordinate id range (usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER), install uidmap, or run as root"),
    )
}

/// The namespace backend's requirements: root and overlayfs.
pub fn namespace_check() -> Check {
    let root = nix::unistd::geteuid().is_root();
    let overlay =
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.contains("\toverlay"));
    match (root, overlay) {
        (true, true) => Check::new(
            "namespace backend",
            Status::Ok,
            "available (root, overlayfs)",
            None,
        ),
        (false, _) => Check::new(
            "namespace backend",
            Status::Fail,
            "needs root or rootless krunner",
            Some("see the privileges line above"),
        ),
        (true, false) => Check::new(
            "namespace backend",
            Status::Warn,
            "overlayfs not listed: runs will copy the image",
            Some("modprobe overlay"),
        ),
    }
}

/// The network jail (`--egress-policy public`, the default): its tools, and one guest
/// namespace made and torn down for real, timed. `exe` is the krunner binary (pasta's keeper).
pub async fn jail_check(scratch: &Path, exe: &Path) -> Check {
    const NAME: &str = "network jail";
    let tools = match Tools::find() {
        Ok(t) => t,
        Err(e) => {
            return Check::new(
                NAME,
                Status::Warn,
                e.to_string(),
                Some("install passt and nftables, run as root or rootless (see the privileges line; rootless also needs /dev/net/tun mode 0666), or give --egress-policy open (guests then share the host's network)"),
            )
        }
    };
    let dir = scratch.join(format!("doctor-jail-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Check::new(
            NAME,
            Status::Fail,
            format!("cannot create {}: {e}", dir.display()),
            None,
        );
    }
    let t = std::time::Instant::now();
    let made = NetJail::create(&dir, exe, &[], None, &tools, None).await;
    let took = t.elapsed();
    let check = match made {
        Ok(jail) => {
            jail.shutdown().await;
            Check::new(
                NAME,
                Status::Ok,
                format!(
                    "{} and {}: a guest's namespace, rules and pasta ready in {} ms",
                    tools.pasta.display(),
                    tools.nft.display(),
                    took.as_millis()
                ),
                None,
            )
        }
        Err(e) => Check::new(
            NAME,
            Status::Fail,
            crate::error_chain(&e),
            Some("the kernel needs network namespaces, nf_tables with reject, and /dev/net/tun (modprobe tun nf_tables nft_reject_inet); or give --egress-policy open"),
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    check
}

/// Boots a probe guest whose root holds no `/bin/sh`: if libkrun's init runs at all it exits
/// 127 ("not found"), which proves the kernel booted and init ran.
pub async fn test_boot(
    launcher: &Launcher,
    scratch: &Path,
    libkrunfw_dir: Option<PathBuf>,
    timeout: Duration,
) -> Check {
    let root = scratch.join("doctor-rootfs");
    if let Err(e) = std::fs::create_dir_all(root.join("etc")) {
        return Check::new(
            "test boot",
            Status::Fail,
            format!("cannot create {}: {e}", root.display()),
            None,
        );
    }
    let req = RunRequest {
        backend: Backend::Krun,
        rootfs: root.clone(),
        manifest: None,
        cpus: 1,
        memory_mib: 256,
        shares: Vec::new(),
        workload: Workload::Command(vec!["true".into()]),
        env: Vec::new(),
        workdir: "/".into(),
        hostname: "krunner-doctor".into(),
        dns: "1.1.1.1".into(),
        max_lifetime: Some(timeout),
        stop_grace: Duration::from_secs(2),
        output: Output::Capture,
        krun_log_level: 1,
        libkrunfw_dir,
        nofile: 1024,
        // It runs `true` and no network: the jail has a check of its own.
        egress: EgressPolicy::Open,
        // The boot also proves the VMM's jail works on this host.
        user_namespace: true,
        runner: None,
    };
    let outcome = launcher.run(&req, &Cancel::default()).await;
    let _ = std::fs::remove_dir_all(&root);
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Check::new("test boot", Status::Fail, format!("{e:#}"), None),
    };
    let stderr = outcome
        .captured
        .as_ref()
        .map(|(_, e)| String::from_utf8_lossy(e).into_owned())
        .unwrap_or_default();
    let secs = outcome.timings.total.as_secs_f64();
    if outcome.kvm_internal_error {
        return Check::new(
            "test boot",
            Status::Fail,
            format!("libkrun configured the VM and started its vCPU (reached krun_start_enter), but the guest kernel died with KVM_EXIT_INTERNAL_ERROR after {secs:.1} s"),
            Some(PVM_FIX),
        );
    }
    match &outcome.exit {
        VmExit::Exited(127) if outcome.entered() => Check::new(
            "test boot",
            Status::Ok,
            format!("the guest kernel booted and its init ran ({secs:.1} s)"),
            None,
        ),
        VmExit::LifetimeExceeded => Check::new(
            "test boot",
            Status::Fail,
            format!("no result within {} s", timeout.as_secs()),
            Some("the guest hangs: check `dmesg`, try a longer --boot-timeout"),
        ),
        other => {
            let why = match outcome.failure() {
                Some(crate::launcher::spec::Event::Failed { step, message, .. }) => {
                    format!("{step}: {message}")
                }
                _ => other.describe(),
            };
            let last = stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            Check::new("test boot", Status::Fail, format!("{why}; {last}"), None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pvm_detection_reads_modules_and_flags() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("kvm_pvm")).unwrap();
        assert!(is_pvm_host(d.path(), "flags\t: fpu sse2 hypervisor\n"));
        assert!(!is_pvm_host(d.path(), "flags\t: fpu vmx\n"));
        std::fs::create_dir(d.path().join("kvm_intel")).unwrap();
        assert!(!is_pvm_host(d.path(), "flags\t: fpu\n"));
    }
}

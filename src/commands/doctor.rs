//! `krunner doctor`: print each host check with its fix; exit 0 only if microVMs can run.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{DoctorArgs, GlobalArgs};
use crate::doctor::{self, Check, Status};
use crate::launcher::run::Launcher;

/// Runs the command.
pub fn run(global: &GlobalArgs, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    // The same lines as `krunner --version`: a pasted doctor report says which build it is.
    println!("krunner {}", crate::version::LONG);
    let (mut checks, can_boot) = doctor::static_checks(args.libkrunfw_dir.as_deref());
    checks.insert(0, doctor::privileges_check());
    if args.no_boot {
        checks.push(skipped("--no-boot"));
    } else if can_boot {
        let cache = super::open_cache(global)?;
        let scratch = cache.root().join("tmp");
        let launcher = Launcher::new(cache)?;
        let timeout = Duration::from_secs(args.boot_timeout.max(1));
        println!(
            "test boot: starting a probe VM (up to {} s) …",
            timeout.as_secs()
        );
        checks.push(super::runtime()?.block_on(doctor::test_boot(
            &launcher,
            &scratch,
            args.libkrunfw_dir.clone(),
            timeout,
        )));
    } else {
        checks.push(skipped("an earlier check failed"));
    }
    checks.push(doctor::namespace_check());
    let cache = super::open_cache(global)?;
    checks.push(super::runtime()?.block_on(doctor::jail_check(
        &cache.root().join("tmp"),
        Path::new("/proc/self/exe"),
    )));
    checks.push(doctor::cgroup_check());
    let mut ok = true;
    for c in &checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
            Status::Skipped => "skip",
        };
        println!("[{tag}] {}: {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("       fix: {f}");
        }
        if c.status == Status::Fail || (c.name == "test boot" && c.status != Status::Ok) {
            ok = false;
        }
    }
    if ok {
        println!("microVMs can run on this host.");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("microVMs cannot run on this host as it is; see the fixes above.");
        Ok(ExitCode::FAILURE)
    }
}

fn skipped(why: &str) -> Check {
    Check {
        name: "test boot",
        status: Status::Skipped,
        detail: format!("not run: {why}"),
        fix: None,
    }
}

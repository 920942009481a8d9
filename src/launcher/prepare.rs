//! What a run writes before its child starts: the per-run shares of a runner job (the
//! registration secret, results, the stop channel), the guest's files in the clone (agent,
//! its configuration, network files, the workload's argv and env) and the launch spec.

use std::path::{Path, PathBuf};

use super::run::{LaunchError, Output, RunRequest, Workload};
use super::spec::{self, GuestExec, LaunchSpec, RootSpec, Share};
use super::Backend;
use crate::guest::{self, RunnerJob};
use crate::rootfs;

/// The shares of a run: the request's own and the per-run ones.
pub(super) struct RunShares {
    /// Every share, the request's first.
    pub(super) all: Vec<Share>,
    /// The control share's host directory (runner runs): where the stop file goes.
    pub(super) control: Option<PathBuf>,
}

/// Creates the per-run shares of a runner job in `run_dir`: the secrets (0700 dir, 0600
/// file), results and control shares. A command run adds none.
pub(super) fn run_shares(
    req: &RunRequest,
    run_dir: &Path,
    run_id: &str,
) -> Result<RunShares, LaunchError> {
    let mut shares = RunShares {
        all: req.shares.clone(),
        control: None,
    };
    let Workload::Runner(job) = &req.workload else {
        return Ok(shares);
    };
    let secrets = run_dir.join("secrets");
    write_secret(
        &secrets,
        job.registration.file_name(),
        job.registration.secret().expose(),
    )
    .map_err(LaunchError::io(
        run_id,
        format!("write the registration into {}", secrets.display()),
    ))?;
    let results_dir = run_dir.join("results");
    private_dir(&results_dir).map_err(LaunchError::io(
        run_id,
        format!("create {}", results_dir.display()),
    ))?;
    shares.all.push(Share {
        tag: "krunner-secrets".into(),
        host: secrets,
        guest: guest::SECRETS_GUEST.into(),
        read_only: false,
    });
    shares.all.push(Share {
        tag: "krunner-results".into(),
        host: results_dir,
        guest: guest::RESULTS_GUEST.into(),
        read_only: false,
    });
    // The stop channel: the host creates `stop` here, the agent's watcher sees it and
    // stops the runner (a signal to the VMM would never reach it).
    let control = run_dir.join("control");
    private_dir(&control).map_err(LaunchError::io(
        run_id,
        format!("create {}", control.display()),
    ))?;
    shares.all.push(Share {
        tag: "krunner-control".into(),
        host: control.clone(),
        guest: guest::CONTROL_GUEST.into(),
        read_only: true,
    });
    shares.control = Some(control);
    Ok(shares)
}

/// Creates `dir` readable by its owner only.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Writes a secret as a new 0600 file `name` in a new 0700 directory `dir`.
fn write_secret(dir: &Path, name: &str, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    private_dir(dir)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join(name))?;
    f.write_all(value.as_bytes())
}

/// Writes the guest's files into the clone and builds the spec.
pub(super) fn prepare(
    req: &RunRequest,
    shares: &[Share],
    run_id: &str,
    run_dir: &Path,
    root: RootSpec,
) -> Result<LaunchSpec, LaunchError> {
    // Under krun the guest mounts its virtio-fs shares itself; under namespaces the
    // child has bind-mounted them already.
    let to_mount: &[Share] = match req.backend {
        Backend::Krun => shares,
        Backend::Namespace => &[],
    };
    let job: Option<&RunnerJob> = match &req.workload {
        Workload::Runner(job) => Some(job),
        Workload::Command(_) => None,
    };
    let conf = guest::agent_conf_for(to_mount, job).map_err(|reason| LaunchError::Spec {
        run: run_id.to_string(),
        source: spec::SpecError::CommandLine(reason),
    })?;
    write_guest_files(req, &root, &conf, run_id)?;
    let spec = launch_spec(req, shares, run_id, run_dir, root);
    if req.backend == Backend::Krun {
        spec.check_command_line()
            .map_err(LaunchError::spec(run_id))?;
    }
    Ok(spec)
}

/// Writes the agent, its configuration `conf`, the network files and the workload's files
/// into the clone.
fn write_guest_files(
    req: &RunRequest,
    root: &RootSpec,
    conf: &str,
    run_id: &str,
) -> Result<(), LaunchError> {
    let resolv_conf = guest::resolv_conf(&req.dns);
    let hostname = format!("{}\n", req.hostname);
    let hosts = guest::hosts(&req.hostname);
    let files: [(&str, &[u8], u32); 5] = [
        (guest::AGENT_PATH, guest::AGENT_SCRIPT.as_bytes(), 0o755),
        (guest::AGENT_CONF, conf.as_bytes(), 0o644),
        ("/etc/resolv.conf", resolv_conf.as_bytes(), 0o644),
        ("/etc/hostname", hostname.as_bytes(), 0o644),
        ("/etc/hosts", hosts.as_bytes(), 0o644),
    ];
    for (path, content, mode) in files {
        rootfs::write_guest_file(root, path, content, mode)
            .map_err(LaunchError::clone_failed(run_id))?;
    }
    let mut env = vec![("HOSTNAME".to_string(), req.hostname.clone())];
    env.extend(req.env.iter().cloned());
    let argv = match &req.workload {
        Workload::Command(c) => Some(c.as_slice()),
        Workload::Runner(_) => None,
    };
    write_workload_files(root, argv, &env, run_id)
}

/// The spec for the VM child. All that travels on the kernel command line (krun) or to the
/// namespace's PID 1 is the agent and what it needs itself; the rest is in the files
/// [`write_guest_files`] wrote.
fn launch_spec(
    req: &RunRequest,
    shares: &[Share],
    run_id: &str,
    run_dir: &Path,
    root: RootSpec,
) -> LaunchSpec {
    let env = vec![
        ("PATH".to_string(), guest::GUEST_PATH.to_string()),
        ("HOME".to_string(), "/root".to_string()),
        (
            "KRUNNER_BACKEND".to_string(),
            match req.backend {
                Backend::Krun => "krun",
                Backend::Namespace => "namespace",
            }
            .to_string(),
        ),
    ];
    let args = vec![guest::AGENT_PATH.to_string()];
    LaunchSpec {
        run_id: run_id.to_string(),
        parent_pid: std::process::id() as i32,
        root,
        cpus: req.cpus,
        memory_mib: req.memory_mib,
        shares: shares.to_vec(),
        exec: GuestExec {
            path: "/bin/sh".into(),
            args,
            env,
            workdir: req.workdir.clone(),
        },
        hostname: req.hostname.clone(),
        netns: None,
        nofile: match req.backend {
            Backend::Krun => req.nofile,
            // In namespaces the limit cannot exceed our own hard limit without
            // CAP_SYS_RESOURCE.
            Backend::Namespace => {
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                    .map_or(req.nofile, |(_, hard)| req.nofile.min(hard))
            }
        },
        // libkrun opens the console file with File::create (O_TRUNC, its own offset): the
        // run's log itself would be truncated and overwritten. Our stderr is the output
        // pipe instead, which libkrun opens anew through /proc (O_TRUNC means nothing to a
        // pipe), so console and child messages reach the log in order, appended.
        console_log: match (&req.backend, &req.output) {
            (Backend::Krun, Output::File(_)) => Some(PathBuf::from("/proc/self/fd/2")),
            _ => None,
        },
        events: run_dir.join("events"),
        krun_log_level: req.krun_log_level,
        libkrunfw_dir: req.libkrunfw_dir.clone(),
        // Set by the launcher once the run's cgroup exists.
        cgroup: None,
        vmm_jail: None,
        workload_ids: None,
    }
}

/// Writes the command's arguments (`argv`, a command run) and the extra environment into the
/// clone as files for the agent ([`guest::ARGV_DIR`], [`guest::ENV_DIR`]): exact bytes, no
/// quoting, no size limit of the kernel command line. Later `env` entries win.
fn write_workload_files(
    root: &RootSpec,
    argv: Option<&[String]>,
    env: &[(String, String)],
    run_id: &str,
) -> Result<(), LaunchError> {
    let spec_err = |source| LaunchError::Spec {
        run: run_id.to_string(),
        source,
    };
    let clone_err = |source| LaunchError::Clone {
        run: run_id.to_string(),
        source,
    };
    if let Some(argv) = argv {
        let mut files = Vec::with_capacity(argv.len());
        for (i, a) in argv.iter().enumerate() {
            if a.contains('\0') {
                return Err(spec_err(spec::SpecError::Nul(format!(
                    "argument {i} ({a:?})"
                ))));
            }
            files.push((i.to_string(), a.clone().into_bytes()));
        }
        rootfs::write_guest_dir(root, guest::ARGV_DIR, &files, 0o644).map_err(clone_err)?;
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::with_capacity(env.len());
    for (k, v) in env {
        if !guest::is_env_name(k) {
            return Err(spec_err(spec::SpecError::EnvName(k.clone())));
        }
        if v.contains('\0') {
            return Err(spec_err(spec::SpecError::Nul(format!(
                "the value of environment variable {k}"
            ))));
        }
        files.retain(|(name, _)| name != k);
        files.push((k.clone(), v.clone().into_bytes()));
    }
    rootfs::write_guest_dir(root, guest::ENV_DIR, &files, 0o644).map_err(clone_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_travels_as_files_byte_for_byte() {
        let t = tempfile::tempdir().unwrap();
        let root = RootSpec::Dir(t.path().to_path_buf());
        let argv: Vec<String> = vec![
            "sh".into(),
            String::new(),
            "--".into(),
            "say \"hi\" 'there'\nline\n\n".into(),
            "héllo ✓".into(),
            "x".repeat(8192),
        ];
        let env = vec![
            ("HOSTNAME".to_string(), "h".to_string()),
            ("A_1".to_string(), "v\"al\nue\n".to_string()),
            ("HOSTNAME".to_string(), "later wins".to_string()),
        ];
        write_workload_files(&root, Some(&argv), &env, "r").unwrap();
        let dir = t.path().join(".krunner/argv");
        for (i, a) in argv.iter().enumerate() {
            assert_eq!(
                std::fs::read(dir.join(i.to_string())).unwrap(),
                a.as_bytes()
            );
        }
        assert!(!dir.join(argv.len().to_string()).exists());
        let env_dir = t.path().join(".krunner/env");
        assert_eq!(std::fs::read(env_dir.join("A_1")).unwrap(), b"v\"al\nue\n");
        assert_eq!(
            std::fs::read(env_dir.join("HOSTNAME")).unwrap(),
            b"later wins"
        );
        assert_eq!(std::fs::read_dir(&env_dir).unwrap().count(), 2);

        // A runner run writes no argv; a second write replaces the first completely.
        write_workload_files(&root, Some(&[]), &[], "r").unwrap();
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        assert_eq!(std::fs::read_dir(&env_dir).unwrap().count(), 0);
    }

    #[test]
    fn bad_environment_names_and_nul_bytes_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = RootSpec::Dir(t.path().to_path_buf());
        for name in ["1X", "A-B", "a.b", "", "X Y"] {
            let e =
                write_workload_files(&root, None, &[(name.into(), "v".into())], "r").unwrap_err();
            let msg = crate::error_chain(&e);
            assert!(
                matches!(
                    &e,
                    LaunchError::Spec {
                        source: spec::SpecError::EnvName(n),
                        ..
                    } if n == name
                ),
                "{name:?}: {msg}"
            );
            assert!(msg.contains(&format!("{name:?}")), "{msg}");
        }
        assert!(matches!(
            write_workload_files(&root, None, &[("A".into(), "a\0b".into())], "r"),
            Err(LaunchError::Spec {
                source: spec::SpecError::Nul(_),
                ..
            })
        ));
        assert!(matches!(
            write_workload_files(&root, Some(&["a\0".into()]), &[], "r"),
            Err(LaunchError::Spec {
                source: spec::SpecError::Nul(_),
                ..
            })
        ));
    }
}

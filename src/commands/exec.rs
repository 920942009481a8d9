//! `krunner exec IMAGE -- CMD`: one throwaway guest, its output streamed, its status returned.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use crate::cli::{ExecArgs, GlobalArgs, GuestArgs};
use crate::guestfs::{check_outside_cache, Share, ShareError};
use crate::image::{Cancel, ImageStore};
use crate::launcher::run::{Launcher, Output, RunRequest, Workload};
use crate::launcher::Backend;

/// Shares from `-M` options: tags `krunner-m0`, `krunner-m1`, …; none may touch the image
/// cache at `cache`.
pub fn user_shares(guest: &GuestArgs, cache: &Path) -> Result<Vec<Share>, ShareError> {
    guest
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            check_outside_cache(
                &format!("-M {}:{}", m.host.display(), m.guest.display()),
                &m.host,
                cache,
            )?;
            Ok(Share {
                tag: format!("krunner-m{i}"),
                host: m.host.clone(),
                guest: m.guest.clone(),
                read_only: m.read_only,
            })
        })
        .collect()
}

/// Warns once that the namespace backend is not a microVM.
pub fn warn_backend(backend: Backend) {
    if backend == Backend::Namespace {
        tracing::warn!(
            "backend 'namespace': guests share the host kernel, in user/mount/pid/uts/ipc/network namespaces; this isolates far less than a microVM"
        );
    }
}

/// Runs the command.
pub fn run(global: &GlobalArgs, args: ExecArgs) -> anyhow::Result<ExitCode> {
    let cache = super::open_cache(global)?;
    let shares = user_shares(&args.guest, cache.root())?;
    let store = ImageStore::new(cache.clone());
    let opts = super::pull::pull_options(global, &args.registry, args.offline);
    warn_backend(args.guest.backend);
    let egress = super::egress_policy(&args.guest, None)?;
    let launcher = Launcher::new(cache).context("cannot prepare the launcher")?;
    let outcome = super::runtime()?.block_on(async {
        let cancel = Cancel::default();
        let on_signal = cancel.clone();
        // SIGINT or SIGTERM: stop the guest and clean up (the default SIGTERM action would
        // leave the run directory to the next start's sweep).
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("cannot handle SIGTERM")?;
        tokio::spawn(async move {
            tokio::select! {
                r = tokio::signal::ctrl_c() => if r.is_ok() { on_signal.cancel() },
                _ = term.recv() => on_signal.cancel(),
            }
        });
        let image = store.pull(&args.image, &opts, &cancel).await?;
        let req = RunRequest {
            backend: args.guest.backend,
            rootfs: image.rootfs.clone(),
            manifest: Some(image.manifest.clone()),
            cpus: args.guest.cpus,
            memory_mib: args.guest.memory,
            shares,
            workload: Workload::Command(args.command.clone()),
            env: Vec::new(),
            workdir: "/".into(),
            hostname: "krunner-exec".into(),
            dns: args.guest.dns.clone(),
            max_lifetime: (args.guest.max_lifetime > 0)
                .then(|| Duration::from_secs(args.guest.max_lifetime)),
            stop_grace: Duration::from_secs(10),
            output: Output::Inherit,
            krun_log_level: args.guest.krun_log_level,
            libkrunfw_dir: args.guest.libkrunfw_dir.clone(),
            user_namespace: args.guest.user_namespace(),
            nofile: 1 << 20,
            egress: egress.clone(),
            runner: None,
        };
        anyhow::Ok(launcher.run(&req, &cancel).await?)
    })?;
    let t = &outcome.timings;
    let ms = |d: Option<Duration>| {
        d.map_or("-".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1e3))
    };
    tracing::debug!(
        run = %outcome.run_id,
        "timings: clone_ms={} prepare_ms={} jail_ms={} spawn_ms={} setup_ms={} host_before_guest_ms={} total_ms={}",
        ms(Some(t.clone)),
        ms(Some(t.prepare)),
        ms(Some(t.jail)),
        ms(t.spawn),
        ms(t.setup),
        ms(t.to_entering),
        ms(Some(t.total))
    );
    let steps: Vec<String> = outcome
        .events
        .iter()
        .map(|e| {
            serde_json::to_value(&e.event)
                .ok()
                .and_then(|v| v.get("event").and_then(|s| s.as_str().map(String::from)))
                .unwrap_or_default()
        })
        .collect();
    tracing::debug!(run = %outcome.run_id, "child steps: {}", steps.join(" → "));
    if outcome.out_of_memory.is_some() {
        tracing::warn!(run = %outcome.run_id, "guest {}", outcome.describe_exit());
    } else if outcome.exit.code() != 0 {
        tracing::info!(run = %outcome.run_id, "guest {}", outcome.exit.describe());
    }
    if outcome.kvm_internal_error {
        tracing::error!("{}", crate::doctor::KVM_INTERNAL_ERROR_HELP);
    }
    Ok(ExitCode::from(outcome.exit.code()))
}

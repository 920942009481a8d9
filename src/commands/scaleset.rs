//! `krunner run --scale-set NAME` and `krunner run --config FILE`: one or several runner scale
//! sets served on demand from one host budget (see [`crate::orchestrator::scaleset`]).
//!
//! Order: the pools (the command line's one, or the file's) → per pool its image (pulled once
//! per reference) and its runner → one Actions service client → every pool's listener and
//! reconciler at once, until the shutdown ends them all.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

use super::run::{env_ms, pull_image, runner_plan, template, web_url, Ctx};
use crate::cli::RunArgs;
use crate::github::actions::Actions;
use crate::image::{Cancel, PulledImage};
use crate::launcher::run::RunRequest;
use crate::orchestrator::budget::{Budget, Size};
use crate::orchestrator::pools::{self, PoolSection};
use crate::orchestrator::scaleset::{self, ScaleSetConfig};

/// The pools to serve, and the host budget they share.
fn pools_and_budget(args: &RunArgs) -> anyhow::Result<(Vec<PoolSection>, Size)> {
    let mut budget = Budget::host_default();
    let pools = match (&args.config, &args.scale_set) {
        (Some(path), _) => {
            let file = pools::load(path)?;
            if let Some(h) = file.host {
                budget.cpus = h.cpus.unwrap_or(budget.cpus);
                budget.memory_mib = h.memory_mib.unwrap_or(budget.memory_mib);
            }
            file.pools
        }
        (None, Some(name)) => vec![PoolSection {
            name: name.clone(),
            image: None,
            cpus: None,
            memory_mib: None,
            labels: args.labels.clone(),
            group: None,
            min_idle: args.min_idle,
            max: args.max,
        }],
        (None, None) => Vec::new(),
    };
    budget.cpus = args.host_cpus.unwrap_or(budget.cpus);
    budget.memory_mib = args.host_memory.unwrap_or(budget.memory_mib);
    Ok((pools, budget))
}

/// The run request of one of `pool`'s guests: the shared template with the pool's size, which
/// must fit the host budget on its own.
fn pool_template(
    ctx: &Ctx<'_>,
    pool: &PoolSection,
    image: &PulledImage,
    total: Size,
) -> anyhow::Result<RunRequest> {
    let args = ctx.args;
    let mut t = template(
        args,
        image,
        ctx.shares.clone(),
        ctx.egress.clone(),
        ctx.prefix,
    );
    t.cpus = pool.cpus.unwrap_or(args.guest.cpus);
    t.memory_mib = pool.memory_mib.unwrap_or(args.guest.memory);
    if u32::from(t.cpus) > total.cpus || u64::from(t.memory_mib) > total.memory_mib {
        anyhow::bail!(
            "pool {}: one guest ({} CPUs, {} MiB) is larger than the host budget ({} CPUs, {} MiB; --host-cpus, --host-memory)",
            pool.name,
            t.cpus,
            t.memory_mib,
            total.cpus,
            total.memory_mib
        );
    }
    tracing::info!(
        "pool {}: {} CPU(s), {} MiB per guest, min idle {}, max {}, from {}",
        pool.name,
        t.cpus,
        t.memory_mib,
        pool.min_idle,
        pool.max,
        image.reference
    );
    Ok(t)
}

/// Serves every pool until shutdown.
pub(super) async fn serve(ctx: Ctx<'_>) -> anyhow::Result<ExitCode> {
    let args = ctx.args;
    let (pools, total) = pools_and_budget(args)?;
    let budget = Budget::new(total);
    let actions = Actions::new(ctx.github.clone(), ctx.base, web_url(ctx.base, ctx.scope)?)?;
    let mut images: Vec<PulledImage> = Vec::new();
    let mut configs = Vec::new();
    for pool in pools {
        let reference = pool.image.clone().unwrap_or_else(|| args.image.clone());
        let cancel = Cancel::default();
        let image = match images.iter().find(|i| i.reference == reference) {
            Some(i) => i.clone(),
            None => {
                let i = tokio::select! {
                    i = pull_image(ctx.global, args, &reference, ctx.store, &cancel) => i?,
                    _ = ctx.shutdown.drain.cancelled() => {
                        cancel.cancel();
                        return Ok(ExitCode::SUCCESS);
                    }
                };
                images.push(i.clone());
                i
            }
        };
        let (runner, updater) = runner_plan(args, &image, ctx.store).await?;
        if let Some(u) = updater {
            let interval = Duration::from_secs(args.runner_check_interval);
            tokio::spawn(u.run(interval, ctx.shutdown.drain.clone()));
        }
        let template = pool_template(&ctx, &pool, &image, total)?;
        configs.push(ScaleSetConfig {
            state_file: ctx
                .state_dir
                .join(format!("{}-{}.json", ctx.prefix, pool.name)),
            name: pool.name,
            labels: pool.labels,
            runner_group: pool.group.unwrap_or_else(|| args.group.clone()),
            min_idle: pool.min_idle,
            max: pool.max,
            name_prefix: ctx.prefix.to_string(),
            owner: ctx.instance.to_string(),
            log_dir: ctx.log_dir.clone(),
            drain_timeout: Duration::from_secs(args.drain_timeout),
            // Tests shorten it.
            min_idle_age: env_ms("KRUNNER_SCALESET_MIN_IDLE_AGE_MS")
                .unwrap_or(scaleset::MIN_IDLE_AGE),
            template,
            runner,
            budget: budget.clone(),
            reporter: Some(ctx.reporter.clone()),
        });
    }
    tracing::info!(
        "host budget for all pools: {} CPUs, {} MiB",
        total.cpus,
        total.memory_mib
    );
    let runs = configs.into_iter().map(|cfg| {
        let (actions, launcher) = (actions.clone(), ctx.launcher.clone());
        async move {
            let name = cfg.name.clone();
            (
                name,
                scaleset::run(cfg, actions, launcher, ctx.shutdown).await,
            )
        }
    });
    let mut failed = false;
    for (name, result) in futures_util::future::join_all(runs).await {
        match result {
            Ok(r) => tracing::info!(
                pool = %name,
                runs = r.runs,
                failures = r.failures,
                peak = r.peak,
                "the pool's runners ended"
            ),
            Err(e) => {
                tracing::error!(pool = %name, "stopped: {}", crate::error_chain(&e));
                failed = true;
            }
        }
    }
    if failed {
        return Err(anyhow::anyhow!("a scale set stopped on an error")).context("krunner run");
    }
    Ok(ExitCode::SUCCESS)
}

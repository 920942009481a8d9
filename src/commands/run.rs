//! `krunner run`: keep N ephemeral runners available until stopped.
//!
//! Order: credentials (into [`Secret`] as they are read) → scope, API base and client →
//! labels and name prefix → the image, pulled once per `--pull` → the launcher (which sweeps
//! run directories of dead krunner processes) → in the runtime: signal handling, reconcile of
//! this instance's offline leftovers, the runner group, then the [`Pool`] until it ends.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use url::Url;

use crate::cli::{GlobalArgs, PullPolicy, RegistrationKind, RunArgs};
use crate::github::{
    api_base, default_name_prefix, instance_label, validate_name_prefix, Auth, ClientConfig,
    GitHub, RetryPolicy, Scope,
};
use crate::guestfs::{check_outside_cache, Share};
use crate::image::{Cancel, ImageStore};
use crate::jail::egress::EgressPolicy;
use crate::launcher::run::{Launcher, Output, RunRequest, Workload};
use crate::metrics::Metrics;
use crate::orchestrator::identity;
use crate::orchestrator::state::{self, CloseOnDrop, InstanceLock, Reporter};
use crate::orchestrator::{
    BackoffPolicy, Pool, PoolConfig, PoolReport, RegistrationMode, Shutdown, SlotStop,
};
use crate::runner::releases;
use crate::runner::store::RunnerStore;
use crate::runner::supply::{self, Source, Updater};
use crate::runner::{self, Choice, Plan};
use crate::secret::Secret;

/// Run logs kept in `--log-dir`.
const KEEP_LOGS: usize = 50;

/// How long a stopped runner may take to end by itself (the agent sends it SIGTERM) before its
/// guest is killed: a busy runner cancels its job (SIGINT, then SIGTERM after 7.5 s, to the
/// step's processes), then reports the result and removes its session. A drain waits
/// `--drain-timeout` first; 600 s + this stays within the README's systemd TimeoutStopSec=660.
const RUNNER_STOP_GRACE: Duration = Duration::from_secs(30);

/// Runs the command.
pub fn run(global: &GlobalArgs, args: RunArgs) -> anyhow::Result<ExitCode> {
    let scale_sets = check_scale_set_flags(&args)?;
    let auth = auth(&args)?;
    let scope = Scope::parse(args.scope.as_str(), &args.principal)?;
    let base = api_base(args.github_host.as_deref(), args.api_url.as_deref())?;
    let github = GitHub::new(ClientConfig {
        api_base: base.clone(),
        scope: scope.clone(),
        auth,
        retry: retry_policy(),
    })
    .context("cannot set up the GitHub client")?;
    let prefix = args.name_prefix.clone().unwrap_or_else(default_name_prefix);
    validate_name_prefix(&prefix, usize::from(args.runners))?;
    let cache_dir = super::cache_dir(global)?;
    let cache = super::open_cache(global)?;
    let instance = instance_label(&prefix, &identity::instance_id(cache.root())?);
    let labels = labels(&args.labels, &args.image, &instance);

    let store = ImageStore::new(cache.clone());
    super::exec::warn_backend(args.guest.backend);
    let egress = super::egress_policy(&args.guest, Some(&base))?;
    let log_dir = args
        .log_dir
        .clone()
        .unwrap_or_else(|| cache_dir.join("logs"));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&log_dir)
        .with_context(|| format!("cannot create the log directory {}", log_dir.display()))?;
    let shares = shares(&args, cache.root())?;
    // Before the launcher sweeps anything: a second instance with this prefix stops here.
    let _instance_lock = InstanceLock::acquire(cache.root(), &prefix)?;
    let (state_file, state_dir) = state_paths(cache.root(), &prefix)?;
    let reporter = Reporter::new(
        &prefix,
        // Scale sets have pools, not loops.
        if scale_sets {
            0
        } else {
            usize::from(args.runners)
        },
        Some(state_file),
        Arc::new(Metrics::default()),
    );
    // Declared after the lock, so dropped before it: the file goes while the lock is held.
    let _state_guard = CloseOnDrop(reporter.clone());
    let launcher = Launcher::new(cache).context("cannot prepare the launcher")?;

    super::runtime()?.block_on(async move {
        let shutdown = Shutdown::default();
        watch_signals(shutdown.clone())?;
        if let Some(addr) = args.metrics {
            let bound =
                crate::metrics::serve(addr, reporter.metrics().clone(), github.clone()).await?;
            reporter.set_metrics_addr(bound.to_string());
        }
        let ctx = Ctx {
            global,
            args: &args,
            store: &store,
            github: &github,
            base: &base,
            scope: &scope,
            prefix: &prefix,
            instance: &instance,
            labels,
            shares,
            egress,
            log_dir,
            state_dir,
            launcher,
            shutdown: &shutdown,
            reporter,
        };
        match scale_sets {
            true => super::scaleset::serve(ctx).await,
            false => serve_loops(ctx).await,
        }
    })
}

/// What `krunner run` has ready once started: the loops or the scale sets take it from here.
pub(super) struct Ctx<'a> {
    pub(super) global: &'a GlobalArgs,
    pub(super) args: &'a RunArgs,
    pub(super) store: &'a ImageStore,
    pub(super) github: &'a GitHub,
    pub(super) base: &'a Url,
    pub(super) scope: &'a Scope,
    pub(super) prefix: &'a str,
    pub(super) instance: &'a str,
    /// The loops' runner labels (scale sets take theirs from each pool).
    pub(super) labels: Vec<String>,
    pub(super) shares: Vec<Share>,
    pub(super) egress: EgressPolicy,
    pub(super) log_dir: PathBuf,
    /// Where scale sets keep what a restart needs.
    pub(super) state_dir: PathBuf,
    pub(super) launcher: Launcher,
    pub(super) shutdown: &'a Shutdown,
    pub(super) reporter: Reporter,
}

/// Whether this start serves scale sets, after checking the flags that go with them.
fn check_scale_set_flags(args: &RunArgs) -> anyhow::Result<bool> {
    let scale_sets = args.scale_set.is_some() || args.config.is_some();
    if scale_sets {
        if args.registration == RegistrationKind::Token {
            bail!("scale sets register their runners with JIT configs: --registration token cannot go with --scale-set or --config");
        }
        if args.min_idle > args.max {
            bail!(
                "--min-idle {} is more than --max {}",
                args.min_idle,
                args.max
            );
        }
    }
    Ok(scale_sets)
}

/// The user's shares, and the job cache as `/cache` when one is set.
fn shares(args: &RunArgs, cache_root: &Path) -> anyhow::Result<Vec<Share>> {
    let mut shares = super::exec::user_shares(&args.guest, cache_root)?;
    if let Some(dir) = job_cache(args) {
        check_outside_cache("--job-cache", dir, cache_root)?;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the job cache {}", dir.display()))?;
        shares.push(Share {
            tag: "krunner-cache".into(),
            host: dir.to_path_buf(),
            guest: "/cache".into(),
            read_only: false,
        });
    }
    Ok(shares)
}

/// This instance's state file and the scale sets' state directory, their directories made.
fn state_paths(cache_root: &Path, prefix: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let state_file = state::state_path(cache_root, prefix);
    // Each scale set's id, session and last message (never a token): what a restart needs.
    // In a directory of its own: `krunner status` reads every JSON file of the state dir.
    let scaleset_dir = state::state_dir(cache_root).join("scalesets");
    for dir in [Some(scaleset_dir.as_path()), state_file.parent()]
        .into_iter()
        .flatten()
    {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the state directory {}", dir.display()))?;
    }
    Ok((state_file, scaleset_dir))
}

/// Serves `-n` runner loops until they end: the image and the actions runner, the start's
/// GitHub calls, then the [`Pool`]. A stop signal during the start ends it at once.
async fn serve_loops(ctx: Ctx<'_>) -> anyhow::Result<ExitCode> {
    let (args, shutdown) = (ctx.args, ctx.shutdown);
    let pull_cancel = Cancel::default();
    let image = tokio::select! {
        i = pull_image(ctx.global, args, &args.image, ctx.store, &pull_cancel) => i?,
        _ = shutdown.drain.cancelled() => {
            pull_cancel.cancel();
            tracing::info!("stopped before the image was ready");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let (runner, updater) = tokio::select! {
        r = runner_plan(args, &image, ctx.store) => r?,
        _ = shutdown.drain.cancelled() => {
            tracing::info!("stopped before the actions runner was ready");
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Some(u) = updater {
        let interval = Duration::from_secs(args.runner_check_interval);
        tokio::spawn(u.run(interval, shutdown.drain.clone()));
    }
    let template = template(args, &image, ctx.shares, ctx.egress, ctx.prefix);
    // A stalled or rate-limiting API must not keep a stop signal from ending the start.
    let prepared = tokio::select! {
        p = prepare(ctx.github, args, ctx.base, ctx.scope, ctx.prefix, ctx.instance) => p?,
        _ = shutdown.drain.cancelled() => {
            tracing::info!("stopped before the first runner was registered");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let cfg = PoolConfig {
        slots: usize::from(args.runners),
        repeat: args.repeat,
        name_prefix: ctx.prefix.to_string(),
        seq_floor: prepared.last_seq,
        labels: ctx.labels,
        instance_label: ctx.instance.to_string(),
        delete_deadline: Duration::from_secs(args.delete_deadline),
        online_timeout: Duration::from_secs(args.online_timeout),
        runner_group: prepared.runner_group,
        registration: prepared.registration,
        backoff: BackoffPolicy {
            max_failures: args.max_failures,
            base: env_ms("KRUNNER_BACKOFF_BASE_MS").unwrap_or(BackoffPolicy::default().base),
            ..BackoffPolicy::default()
        },
        drain_timeout: Duration::from_secs(args.drain_timeout),
        stagger: Duration::from_millis(500),
        max_concurrent_boots: usize::from(args.max_concurrent_boots),
        boot_window: Duration::from_secs(15),
        log_dir: ctx.log_dir,
        keep_logs: KEEP_LOGS,
        template,
        runner,
    };
    tracing::info!(
        "starting {} runner loop(s) for {} from {}",
        cfg.slots,
        args.principal,
        image.reference
    );
    ctx.reporter.watch(
        ctx.github.hurry_on(&shutdown.force),
        shutdown.clone(),
        env_ms("KRUNNER_STATUS_POLL_MS").unwrap_or(state::POLL_INTERVAL),
    );
    let report = Pool::new(cfg, ctx.github.clone(), ctx.launcher)
        .with_reporter(ctx.reporter)
        .run(shutdown)
        .await;
    exit_code(&report)
}

/// Logs how the loops ended and maps it to krunner's exit: success after a requested stop,
/// an error when every loop failed, failure when some did.
fn exit_code(report: &PoolReport) -> anyhow::Result<ExitCode> {
    for s in &report.slots {
        if let SlotStop::Failed(e) = &s.stop {
            tracing::error!(
                slot = s.index,
                runs = s.runs,
                "stopped: {}",
                crate::error_chain(e)
            );
        }
    }
    tracing::info!(
        runs = report.runs(),
        registrations_left = report.left.len(),
        "all runner loops ended"
    );
    if report.shutdown_requested {
        return Ok(ExitCode::SUCCESS);
    }
    if report.all_failed() {
        bail!("every runner loop stopped on errors");
    }
    if report
        .slots
        .iter()
        .any(|s| matches!(s.stop, SlotStop::Failed(_)))
    {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The start's GitHub calls: reconcile this instance's offline leftovers, then how runners
/// register and in which group.
async fn prepare(
    github: &GitHub,
    args: &RunArgs,
    base: &Url,
    scope: &Scope,
    prefix: &str,
    instance: &str,
) -> anyhow::Result<Prepared> {
    let report = github
        .reconcile(prefix, instance)
        .await
        .context("cannot remove this instance's stale runners")?;
    if !report.deleted.is_empty() || !report.kept.is_empty() {
        tracing::info!(
            deleted = report.deleted.len(),
            kept = report.kept.len(),
            "reconciled runners left by an earlier krunner with prefix {prefix}"
        );
    }
    let (registration, runner_group) = match args.registration {
        RegistrationKind::Jit => (
            RegistrationMode::Jit,
            github
                .runner_group_id(&args.group)
                .await
                .with_context(|| format!("cannot resolve runner group {:?}", args.group))?,
        ),
        RegistrationKind::Token => (
            RegistrationMode::Token {
                web_url: web_url(base, scope)?,
                group: (!matches!(scope, Scope::Repo { .. })).then(|| args.group.clone()),
            },
            crate::github::RunnerGroupId(1),
        ),
    };
    Ok(Prepared {
        registration,
        runner_group,
        last_seq: report.last_seq,
    })
}

/// What the start learnt from GitHub before the first runner.
struct Prepared {
    /// How runners register.
    registration: RegistrationMode,
    /// The runner group JIT runners join.
    runner_group: crate::github::RunnerGroupId,
    /// Per slot, the highest sequence number in use (names continue after it).
    last_seq: std::collections::BTreeMap<usize, u64>,
}

/// Hidden test and tuning knobs, environment only (no flags, not in `--help`): a duration in
/// milliseconds from `name`, if set and a number. The e2e tests use them to keep fault runs
/// short; an operator may use them to tune retries for a GitHub Enterprise Server.
///
/// - `KRUNNER_GITHUB_RETRY_BASE_MS`, `KRUNNER_GITHUB_RETRY_MAX_MS`: the first step and the cap
///   of the GitHub client's backoff on 5xx and transport errors ([`RetryPolicy`]);
/// - `KRUNNER_BACKOFF_BASE_MS`: the first step of a loop's backoff after a failed turn
///   ([`BackoffPolicy`]);
/// - `KRUNNER_STATUS_POLL_MS`: the least time between the status polls behind
///   `krunner status`'s idle and busy states ([`state::POLL_INTERVAL`]).
pub(super) fn env_ms(name: &str) -> Option<Duration> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse::<u64>() {
        Ok(ms) => Some(Duration::from_millis(ms)),
        Err(_) => {
            tracing::warn!("ignoring {name}={v:?}: not a number of milliseconds");
            None
        }
    }
}

/// The GitHub client's retry policy: the default, with the `KRUNNER_GITHUB_RETRY_*_MS` knobs
/// ([`env_ms`]).
fn retry_policy() -> RetryPolicy {
    let d = RetryPolicy::default();
    RetryPolicy {
        base_delay: env_ms("KRUNNER_GITHUB_RETRY_BASE_MS").unwrap_or(d.base_delay),
        max_delay: env_ms("KRUNNER_GITHUB_RETRY_MAX_MS").unwrap_or(d.max_delay),
        ..d
    }
}

/// `--job-cache`, or its old name `--cache` (with a warning: next to `--cache-dir` it reads
/// as the image cache, which must never be shared with jobs).
fn job_cache(args: &RunArgs) -> Option<&Path> {
    if let Some(old) = &args.old_job_cache {
        tracing::warn!(
            "--cache (KRUNNER_CACHE) is now --job-cache (KRUNNER_JOB_CACHE); the old name will go"
        );
        return Some(old);
    }
    args.job_cache.as_deref()
}

/// The credentials, read into [`Secret`]s at once.
fn auth(args: &RunArgs) -> anyhow::Result<Auth> {
    if let (Some(app_id), Some(key)) = (args.app_id, &args.app_key) {
        return Auth::app_from_file(app_id, key, args.installation_id)
            .context("cannot use the GitHub App key");
    }
    if let Some(t) = &args.token {
        if std::env::var_os("KRUNNER_TOKEN").is_none() {
            tracing::warn!(
                "a token given with -T/--token is visible in the process table; prefer KRUNNER_TOKEN or --token-file"
            );
        }
        return Ok(Auth::Pat(t.clone()));
    }
    if let Some(path) = &args.token_file {
        return Ok(Auth::Pat(read_token_file(path)?));
    }
    bail!("no GitHub credentials: give --token-file, KRUNNER_TOKEN, -T, or --app-id with --app-key")
}

/// The first line of `path`, trimmed.
fn read_token_file(path: &Path) -> anyhow::Result<Secret> {
    let text = Secret::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
    );
    let token = Secret::new(text.expose().lines().next().unwrap_or("").trim());
    if token.expose().is_empty() {
        bail!("the token file {} is empty", path.display());
    }
    Ok(token)
}

/// `-L`, or `krun` plus the distro of the short image names; always the instance label.
fn labels(given: &[String], image: &str, instance: &str) -> Vec<String> {
    let mut labels: Vec<String> = if given.is_empty() {
        let mut l = vec!["krun".to_string()];
        if matches!(image, "ubuntu" | "fedora") {
            l.push(image.to_string());
        }
        l
    } else {
        given
            .iter()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    };
    if !labels.iter().any(|l| l.eq_ignore_ascii_case(instance)) {
        labels.push(instance.to_string());
    }
    labels
}

/// The image per `--pull`.
pub(super) async fn pull_image(
    global: &GlobalArgs,
    args: &RunArgs,
    reference: &str,
    store: &ImageStore,
    cancel: &Cancel,
) -> anyhow::Result<crate::image::PulledImage> {
    let opts = |offline| super::pull::pull_options(global, &args.registry, offline);
    let what = || format!("cannot get the image {reference}");
    let policy = if args.offline {
        PullPolicy::Never
    } else {
        args.pull
    };
    match policy {
        PullPolicy::Always => store
            .pull(reference, &opts(false), cancel)
            .await
            .with_context(what),
        PullPolicy::Never => store
            .pull(reference, &opts(true), cancel)
            .await
            .with_context(what),
        PullPolicy::Missing => match store.pull(reference, &opts(true), cancel).await {
            Ok(i) => Ok(i),
            Err(_) => store
                .pull(reference, &opts(false), cancel)
                .await
                .with_context(what),
        },
    }
}

/// Which runner guests get (`--runner`), and for a provided one the runner ready in the cache
/// and what keeps it current.
pub(super) async fn runner_plan(
    args: &RunArgs,
    image: &crate::image::PulledImage,
    store: &ImageStore,
) -> anyhow::Result<(Plan, Option<Updater>)> {
    let in_image = runner::find_in_image(&image.rootfs);
    let http = releases::client()?;
    match (args.runner, in_image) {
        (Choice::Image, None) => bail!(
            "the image {} has no actions runner at {} (--runner image); give --runner auto or provided and krunner provides one",
            image.reference,
            runner::IMAGE_ROOTS.join(" or ")
        ),
        (Choice::Image | Choice::Auto, Some(found)) => {
            let version = found
                .version
                .map_or_else(|| "version unknown".to_string(), |v| v.to_string());
            tracing::info!(
                "guests run the image's actions runner at {} ({version})",
                found.root
            );
            if let (Some(v), false) = (found.version, args.offline) {
                warn_if_too_old(&http, &args.runner_releases_url, v, &image.reference).await;
            }
            Ok((
                Plan::Image {
                    root: found.root.to_string(),
                },
                None,
            ))
        }
        (Choice::Provided | Choice::Auto, _) => {
            let goarch = &image.meta.platform.architecture;
            let arch = runner::Arch::of_goarch(goarch).ok_or_else(|| {
                anyhow::anyhow!(
                    "the actions runner exists for amd64 and arm64 only, and the image {} is {goarch}",
                    image.reference
                )
            })?;
            let src = Source {
                releases_url: args.runner_releases_url.clone(),
                wanted: args.runner_version,
                arch,
                offline: args.offline,
            };
            let runners = RunnerStore::new(store.cache().clone());
            let (supply, updater) = supply::provision(&runners, &http, &src)
                .await
                .context("cannot provide the actions runner")?;
            let current = supply.current();
            tracing::info!(
                "guests run the provided actions runner {} ({})",
                current.installed.version,
                current.installed.arch
            );
            // Versions no run or other krunner uses any more go now; later, at each update.
            let gone = tokio::task::spawn_blocking(move || runners.prune(&[&current.installed.sha256]))
                .await
                .context("runner prune task")??;
            for g in gone {
                tracing::info!("removed the unused runner {} from the cache", g.version);
            }
            Ok((Plan::Provided(supply), Some(updater)))
        }
    }
}

/// Says so at start when GitHub no longer accepts the image's runner; quiet when the
/// releases cannot be read (the image's runner may still be fine).
async fn warn_if_too_old(http: &reqwest::Client, url: &str, version: runner::Version, image: &str) {
    match releases::fetch(http, url).await {
        Ok(list) => {
            if let Some(newer) = releases::too_old(&list, version, crate::image::cache::now_secs())
            {
                tracing::warn!(
                    "the image {image} has the actions runner {version}, which GitHub no longer accepts: {} has been out for more than 30 days. Rebuild the image, or give --runner provided",
                    newer.version
                );
            }
        }
        Err(e) => tracing::debug!(
            "cannot tell whether the image's runner is current: {}",
            crate::error_chain(&e)
        ),
    }
}

/// The request every guest of `image` starts from; per run the orchestrator sets the
/// workload, output, host name and provided runner.
pub(super) fn template(
    args: &RunArgs,
    image: &crate::image::PulledImage,
    shares: Vec<Share>,
    egress: crate::jail::egress::EgressPolicy,
    prefix: &str,
) -> RunRequest {
    RunRequest {
        backend: args.guest.backend,
        rootfs: image.rootfs.clone(),
        manifest: Some(image.manifest.clone()),
        cpus: args.guest.cpus,
        memory_mib: args.guest.memory,
        shares,
        workload: Workload::Command(Vec::new()),
        env: Vec::new(),
        workdir: "/".into(),
        hostname: prefix.to_string(),
        dns: args.guest.dns.clone(),
        max_lifetime: (args.guest.max_lifetime > 0)
            .then(|| Duration::from_secs(args.guest.max_lifetime)),
        stop_grace: RUNNER_STOP_GRACE,
        output: Output::Capture,
        krun_log_level: args.guest.krun_log_level,
        libkrunfw_dir: args.guest.libkrunfw_dir.clone(),
        user_namespace: args.guest.user_namespace(),
        nofile: 1 << 20,
        egress,
        runner: None,
    }
}

/// SIGINT/SIGTERM: the first drains, the second forces.
fn watch_signals(shutdown: Shutdown) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            match shutdown.escalate() {
                "drain" => tracing::warn!(
                    "shutting down: no new runners; idle ones stop now, busy ones may finish (signal again to force)"
                ),
                _ => tracing::warn!("forced shutdown: stopping every runner"),
            }
        }
    });
    Ok(())
}

/// The scope's web address for `config.sh --url`: github.com for api.github.com, the GHES
/// host for `…/api/v3`, the API base itself otherwise.
pub(super) fn web_url(api: &Url, scope: &Scope) -> anyhow::Result<String> {
    let mut web = api.clone();
    // github.com and GHE.com (data residency, `api.SUBDOMAIN.ghe.com`) serve the API on an
    // `api.` host; GHES serves it under `/api/v3` on the web host itself.
    let host = web.host_str().unwrap_or_default().to_string();
    let web_host = match host.strip_prefix("api.") {
        Some(rest) if rest == "github.com" || rest.ends_with(".ghe.com") => Some(rest.to_string()),
        _ => None,
    };
    if let Some(h) = web_host {
        web.set_host(Some(&h))
            .context("cannot derive the GitHub web address")?;
    }
    let path = web
        .path()
        .trim_end_matches('/')
        .trim_end_matches("/api/v3")
        .to_string();
    let tail = match scope {
        Scope::Repo { owner, repo } => format!("{owner}/{repo}"),
        Scope::Org(o) => o.clone(),
        Scope::Enterprise(e) => format!("enterprises/{e}"),
    };
    web.set_path(&format!("{path}/{tail}"));
    Ok(web.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_labels_follow_the_image_and_carry_the_instance() {
        assert_eq!(
            labels(&[], "ubuntu", "krunner-h"),
            ["krun", "ubuntu", "krunner-h"]
        );
        assert_eq!(
            labels(&[], "ghcr.io/x/y:1", "krunner-h"),
            ["krun", "krunner-h"]
        );
        assert_eq!(
            labels(&["gpu".into(), " big ".into()], "fedora", "krunner-h"),
            ["gpu", "big", "krunner-h"]
        );
    }

    #[test]
    fn web_urls() {
        let repo = Scope::parse("repo", "o/r").unwrap();
        let ent = Scope::parse("enterprise", "e").unwrap();
        let gh = Url::parse("https://api.github.com").unwrap();
        assert_eq!(web_url(&gh, &repo).unwrap(), "https://github.com/o/r");
        let ghe_com = Url::parse("https://api.octo.ghe.com").unwrap();
        assert_eq!(
            web_url(&ghe_com, &repo).unwrap(),
            "https://octo.ghe.com/o/r"
        );
        let ghes = Url::parse("https://ghe.example/api/v3").unwrap();
        assert_eq!(
            web_url(&ghes, &ent).unwrap(),
            "https://ghe.example/enterprises/e"
        );
    }
}

//! The command line, declared with clap derive. Each doc comment is the help text. Parsing
//! only validates; nothing here does I/O. Every option can also come from an environment
//! variable `KRUNNER_<OPTION>`; the command line wins.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{Args, Parser, Subcommand};

use crate::image::reference::{Platform, DEFAULT_IMAGE_REPO};
use crate::jail::egress::{Allow, EgressPolicy};
use crate::launcher::Backend;
use crate::secret::Secret;

/// Ephemeral, isolated self-hosted GitHub Actions runners, one libkrun microVM per job.
///
/// `krunner run` keeps N runners available: for each job it registers a single-use runner
/// with GitHub, boots a fresh microVM from a copy-on-write clone of a cached runner image, and
/// throws everything away afterwards. Credentials stay on the host; images are pulled by
/// krunner itself. Start with `krunner doctor`.
#[derive(Debug, Parser)]
#[command(
    name = "krunner",
    version = crate::version::SHORT,
    long_version = crate::version::LONG,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Image cache directory [default: /var/lib/krunner as root, $XDG_CACHE_HOME/krunner
    /// (~/.cache/krunner) otherwise].
    #[arg(long, global = true, env = "KRUNNER_CACHE_DIR", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// More log output on stderr: -v for debug, -vv for trace (KRUNNER_VERBOSE=1 or 2).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, env = "KRUNNER_VERBOSE")]
    pub verbose: u8,

    /// Only errors on stderr (no progress, no info lines).
    #[arg(
        short,
        long,
        global = true,
        env = "KRUNNER_QUIET",
        value_parser = FalseyValueParser::new(),
        conflicts_with = "verbose"
    )]
    pub quiet: bool,
}

/// krunner's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pull an image into the cache and print the path of its ready root filesystem.
    ///
    /// stdout gets exactly one line: the absolute path of the rootfs. Progress goes to stderr
    /// (bars on a terminal, log lines otherwise). A re-pull of an unchanged tag costs one
    /// manifest request; layers already in the cache are never fetched again.
    Pull(PullArgs),
    /// List cached images: reference, platform, manifest digest, size, last use.
    Images(ImagesArgs),
    /// Boot one throwaway guest from IMAGE, run CMD in it, stream its output, exit with its
    /// status.
    ///
    /// The image is pulled if needed. The guest gets a copy-on-write clone of the image that
    /// is thrown away afterwards. For users this is the debug shell; for tests, the
    /// launcher's front door.
    Exec(ExecArgs),
    /// Check this host: KVM, libkrun, libkrunfw, a test boot, and the namespace backend.
    ///
    /// Each finding comes with the fix. Exits 0 when microVMs can run here, 1 otherwise.
    Doctor(DoctorArgs),
    /// Remove cached blobs and root filesystems that no kept image needs.
    ///
    /// Without options, removes blobs and trees no reference names, plus leftovers of
    /// interrupted pulls. An image whose rootfs a run is using is never removed.
    Prune(PruneArgs),
    /// Keep N ephemeral GitHub Actions runners available, each in a fresh guest, until
    /// stopped.
    ///
    /// The image is pulled once at start. Each of the N loops registers a just-in-time runner,
    /// boots a guest from a copy-on-write clone of the image, waits for the runner's one job,
    /// removes the registration if the runner left it, and starts over: `-r` times, or forever.
    /// Failures back off per loop; a loop that fails `--max-failures` times in a row stops,
    /// and krunner exits 1 when every loop has stopped on errors. The first SIGINT/SIGTERM
    /// stops idle runners at once and lets busy ones finish (up to `--drain-timeout`); a second
    /// one stops everything. krunner removes every registration it created and exits 0.
    ///
    /// Credentials (`-T`, `--token-file`, `KRUNNER_TOKEN`, or a GitHub App) never enter a
    /// guest: the host registers runners and passes only the single-use configuration.
    Run(Box<RunArgs>),
    /// Show what each running `krunner run` on this cache is doing.
    ///
    /// Reads the state files `krunner run` keeps under CACHE_DIR/state and prints, per
    /// instance, whether it is alive (its pid exists and holds its instance lock) and, per
    /// runner loop: the current runner's name, its state (registering, booting, idle, busy,
    /// draining, backing-off, stopped), for how long, runs done, failures (in a row and in
    /// total) and the last error. An instance shown as not alive crashed; the next
    /// `krunner run` with its name prefix cleans up after it.
    ///
    /// Exits 0 when at least one instance was found, 1 otherwise.
    Status(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, …) on stdout.
    ///
    /// The packages install them; from a source build, e.g.
    /// `krunner completions bash > /etc/bash_completion.d/krunner`.
    Completions(CompletionsArgs),
    /// Write krunner's man pages (krunner.1 and one page per command) into a directory.
    ///
    /// Packaging uses it; the pages are generated from the same definitions as `--help`.
    #[command(hide = true)]
    Man(ManArgs),
}

/// Where images come from: shared by every command that pulls.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Repository prefix for the short names `ubuntu` and `fedora`
    /// (`ubuntu` is `<IMAGE_REPO>/runner-ubuntu:latest`).
    #[arg(long, env = "KRUNNER_IMAGE_REPO", default_value = DEFAULT_IMAGE_REPO, value_name = "PREFIX")]
    pub image_repo: String,

    /// Reach this registry over plain HTTP (repeatable, or comma-separated in the variable).
    /// Registries on loopback addresses (127.0.0.0/8, ::1, localhost) always are.
    #[arg(
        long = "insecure-registry",
        env = "KRUNNER_INSECURE_REGISTRY",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// Platform to pull from a multi-arch image [default: linux and this host's CPU].
    #[arg(long, env = "KRUNNER_PLATFORM", value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,

    /// How many layers to download at once.
    #[arg(long, env = "KRUNNER_PARALLEL_DOWNLOADS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel_downloads: u16,
}

/// `krunner pull`.
#[derive(Debug, Args)]
pub struct PullArgs {
    /// The image: `ubuntu`, `fedora`, or any reference (`alpine`,
    /// `ghcr.io/org/img:tag`, `registry:5000/img@sha256:…`).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Use the cache only: fail if the image is not there, never contact a registry.
    #[arg(long, env = "KRUNNER_OFFLINE", value_parser = FalseyValueParser::new())]
    pub offline: bool,
}

/// A host directory shared with the guest: `HOST:GUEST[:ro]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountArg {
    /// Absolute host path.
    pub host: PathBuf,
    /// Absolute guest path.
    pub guest: PathBuf,
    /// Read-only for the guest.
    pub read_only: bool,
}

impl std::str::FromStr for MountArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (spec, read_only) = match s.strip_suffix(":ro") {
            Some(rest) => (rest, true),
            None => (s.strip_suffix(":rw").unwrap_or(s), false),
        };
        let (host, guest) = spec
            .split_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:GUEST[:ro]"))?;
        let (host, guest) = (PathBuf::from(host), PathBuf::from(guest));
        if !host.is_absolute() || !guest.is_absolute() {
            return Err(format!("{s:?}: both paths must be absolute"));
        }
        if guest
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
            || guest.to_string_lossy().chars().any(char::is_whitespace)
            || guest == std::path::Path::new("/")
        {
            return Err(format!(
                "{s:?}: the guest path must not be /, contain .. or whitespace"
            ));
        }
        Ok(MountArg {
            host,
            guest,
            read_only,
        })
    }
}

/// What a guest gets: shared by `exec` and (later) `run`.
#[derive(Debug, Clone, Args)]
pub struct GuestArgs {
    /// How to run the guest. `namespace` runs the same pipeline in Linux namespaces and
    /// isolates far less than a microVM: use it only where KVM is not usable, or for tests.
    #[arg(long, env = "KRUNNER_BACKEND", value_enum, default_value_t = Backend::Krun)]
    pub backend: Backend,

    /// vCPUs per guest.
    #[arg(short = 'c', long, env = "KRUNNER_CPUS", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=16))]
    pub cpus: u8,

    /// Guest memory in MiB.
    #[arg(short = 'm', long, env = "KRUNNER_MEMORY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(128..))]
    pub memory: u32,

    /// Share a host directory with the guest (repeatable; `:ro` makes it read-only).
    #[arg(
        short = 'M',
        long = "mount",
        env = "KRUNNER_MOUNT",
        value_name = "HOST:GUEST[:ro]",
        value_delimiter = ','
    )]
    pub mounts: Vec<MountArg>,

    /// DNS server written to the guest's /etc/resolv.conf (queried over TCP: libkrun's
    /// networking carries no UDP to the host). The egress policy always lets port 53 of it
    /// through.
    #[arg(short = 'd', long, env = "KRUNNER_DNS", default_value = "1.1.1.1")]
    pub dns: String,

    /// What a guest's network reaches. `public`: a network namespace of its own (its own
    /// loopback; its listeners published nowhere) that reaches public addresses only, not
    /// the host's addresses, loopback, private, CGNAT, link-local/metadata or multicast
    /// ranges, except what --egress-allow opens (needs root, pasta and nft). `open`: the
    /// host's network, loopback included, as before the jail (unsafe: a job reaches every
    /// service of the host and its networks).
    #[arg(long, env = "KRUNNER_EGRESS_POLICY", value_enum, default_value_t = EgressKind::Public)]
    pub egress_policy: EgressKind,

    /// Let guests reach a blocked network, address or one port of it (repeatable):
    /// `10.1.2.3:5000`, `10.0.0.0/8`, `[fd00::1]:443`. `127.0.0.1:PORT` opens one port of a
    /// service on the host's own loopback, which the guest reaches at that same address.
    #[arg(
        long = "egress-allow",
        env = "KRUNNER_EGRESS_ALLOW",
        value_name = "CIDR[:PORT]",
        value_delimiter = ','
    )]
    pub egress_allow: Vec<Allow>,

    /// Run each guest's VMM (krun, in a minimal mount tree as well) or its workload (namespace
    /// backend) in a user namespace of its own: guest root is an unprivileged host uid of a
    /// range per guest. Needs idmapped mounts on the cache's and the shares' file systems
    /// (Linux 5.19+; ext4, xfs, btrfs, tmpfs from 6.3). `off`: as host root, the VMM with the
    /// host's files in view (unsafe; only where idmapped mounts are missing).
    #[arg(long, env = "KRUNNER_USER_NAMESPACE", value_enum, default_value_t = OnOff::On)]
    pub user_namespace: OnOff,

    /// Hard limit on a guest's life, in seconds (0: none).
    #[arg(
        short = 'k',
        long,
        env = "KRUNNER_MAX_LIFETIME",
        value_name = "SECONDS",
        default_value_t = 0
    )]
    pub max_lifetime: u64,

    /// Directory holding libkrunfw.so.5, if it is not where the loader looks.
    #[arg(long, env = "KRUNNER_LIBKRUNFW_DIR", value_name = "DIR")]
    pub libkrunfw_dir: Option<PathBuf>,

    /// libkrun's own log level on stderr (0 off, 1 error … 5 trace).
    #[arg(long, env = "KRUNNER_KRUN_LOG_LEVEL", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=5))]
    pub krun_log_level: u32,
}

/// A setting that is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    /// On.
    On,
    /// Off.
    Off,
}

/// `--egress-policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EgressKind {
    /// A network namespace per guest; public addresses and --egress-allow only.
    Public,
    /// The host's network, loopback included (no jail).
    Open,
}

impl GuestArgs {
    /// Whether the VMM is to be jailed in a user namespace (warns once when not, under krun).
    pub fn user_namespace(&self) -> bool {
        let on = self.user_namespace == OnOff::On;
        if !on {
            static WARNED: std::sync::Once = std::sync::Once::new();
            WARNED.call_once(|| {
                tracing::warn!(
                    "--user-namespace off: each guest's VMM (krun) or workload (namespace) runs as host root; an escape is far closer to owning the host"
                )
            });
        }
        on
    }

    /// The egress policy these options ask for.
    pub fn egress(&self) -> EgressPolicy {
        match self.egress_policy {
            EgressKind::Public => EgressPolicy::Public {
                allow: self.egress_allow.clone(),
            },
            EgressKind::Open => EgressPolicy::Open,
        }
    }
}

/// `krunner exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Guest options.
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Registry options (the image is pulled if it is not cached).
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Never contact a registry: the image must be cached.
    #[arg(long, env = "KRUNNER_OFFLINE", value_parser = FalseyValueParser::new())]
    pub offline: bool,

    /// The image to boot.
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The command to run in the guest, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Where runners are registered (`-s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeKind {
    /// One repository; the principal is `OWNER/REPO`.
    Repo,
    /// An organization; the principal is its login.
    Org,
    /// An enterprise; the principal is its slug.
    Enterprise,
}

impl ScopeKind {
    /// The name [`crate::github::Scope::parse`] takes.
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeKind::Repo => "repo",
            ScopeKind::Org => "org",
            ScopeKind::Enterprise => "enterprise",
        }
    }
}

/// How runners register (`--registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RegistrationKind {
    /// A just-in-time configuration per runner.
    Jit,
    /// A registration token and `config.sh` (GitHub Enterprise Server without JIT).
    Token,
}

/// When to pull the image at start (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    /// Ask the registry for the current manifest (one request when nothing changed).
    Always,
    /// Use the cached image if there is one; pull otherwise.
    Missing,
    /// Use the cache only.
    Never,
}

/// Reads a secret option straight into a [`Secret`].
fn secret_value(s: &str) -> Result<Secret, std::convert::Infallible> {
    Ok(Secret::new(s))
}

/// `krunner run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of runner loops (each keeps one runner available).
    #[arg(short = 'n', long, env = "KRUNNER_RUNNERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub runners: u16,

    /// The runner image: `ubuntu`, `fedora`, or any reference.
    #[arg(short = 'i', long, env = "KRUNNER_IMAGE", default_value = "ubuntu")]
    pub image: String,

    /// GitHub token (PAT). Visible in the process table: prefer KRUNNER_TOKEN or --token-file.
    #[arg(short = 'T', long, env = "KRUNNER_TOKEN", hide_env_values = true, value_parser = secret_value, conflicts_with_all = ["token_file", "app_id"])]
    pub token: Option<Secret>,

    /// Read the GitHub token from this file (first line).
    #[arg(
        long,
        env = "KRUNNER_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "app_id"
    )]
    pub token_file: Option<PathBuf>,

    /// GitHub App id (with --app-key) instead of a token.
    #[arg(long, env = "KRUNNER_APP_ID", requires = "app_key")]
    pub app_id: Option<u64>,

    /// The GitHub App's private key (PEM file).
    #[arg(
        long,
        env = "KRUNNER_APP_KEY",
        value_name = "FILE",
        requires = "app_id"
    )]
    pub app_key: Option<PathBuf>,

    /// The App installation to use [default: the one covering the scope].
    #[arg(long, env = "KRUNNER_INSTALLATION_ID", requires = "app_id")]
    pub installation_id: Option<u64>,

    /// Where runners are registered.
    #[arg(short = 's', long, env = "KRUNNER_SCOPE", value_enum, default_value_t = ScopeKind::Repo)]
    pub scope: ScopeKind,

    /// The scope's principal: `OWNER/REPO`, an organization, or an enterprise slug.
    #[arg(short = 'p', long, env = "KRUNNER_PRINCIPAL")]
    pub principal: String,

    /// GitHub Enterprise Server host (API at `https://HOST/api/v3`).
    #[arg(
        short = 'g',
        long,
        env = "KRUNNER_GITHUB_HOST",
        value_name = "HOST[:PORT]"
    )]
    pub github_host: Option<String>,

    /// REST API base URL, replacing the default and -g (plain http only on loopback).
    #[arg(long, env = "KRUNNER_API_URL", value_name = "URL")]
    pub api_url: Option<String>,

    /// Runner group (org and enterprise scope; repositories only have "Default").
    #[arg(short = 'G', long, env = "KRUNNER_GROUP", default_value = "Default")]
    pub group: String,

    /// Runner labels, comma-separated [default: krun, plus ubuntu or fedora for those
    /// images]. GitHub adds self-hosted, the OS and the architecture itself.
    #[arg(short = 'L', long, env = "KRUNNER_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// Runs per loop; 0 runs forever.
    #[arg(short = 'r', long, env = "KRUNNER_REPEAT", default_value_t = 0)]
    pub repeat: u64,

    /// How runners register.
    #[arg(long, env = "KRUNNER_REGISTRATION", value_enum, default_value_t = RegistrationKind::Jit)]
    pub registration: RegistrationKind,

    /// Runner name prefix; names are PREFIX-LOOP-SEQ, within GitHub's 64 characters. Letters,
    /// digits, '-', '_' and '.'; at most 51 characters (50 from -n 11, 48 from -n 101)
    /// [default: this host's name].
    #[arg(long, env = "KRUNNER_NAME_PREFIX")]
    pub name_prefix: Option<String>,

    /// Failures in a row after which a loop stops.
    #[arg(long, env = "KRUNNER_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,

    /// Seconds busy runners may take to finish after the first stop signal.
    #[arg(
        long,
        env = "KRUNNER_DRAIN_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 600
    )]
    pub drain_timeout: u64,

    /// Seconds a registration krunner wants gone is retried (GitHub refuses to delete a
    /// runner it still counts as busy); after that the next start's reconcile removes it.
    #[arg(
        long,
        env = "KRUNNER_DELETE_DEADLINE",
        value_name = "SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub delete_deadline: u64,

    /// Seconds a started guest's runner may take to come online (boot plus runner start);
    /// then the guest is stopped and the loop backs off.
    #[arg(
        long,
        env = "KRUNNER_ONLINE_TIMEOUT",
        value_name = "SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub online_timeout: u64,

    /// Guests that may boot at once.
    #[arg(long, env = "KRUNNER_MAX_CONCURRENT_BOOTS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent_boots: u16,

    /// Directory for one log file per run (the last 50 of this instance are kept; other
    /// instances' logs are left alone) [default: CACHE_DIR/logs].
    #[arg(long, env = "KRUNNER_LOG_DIR", value_name = "DIR")]
    pub log_dir: Option<PathBuf>,

    /// When to pull the image at start.
    #[arg(long, env = "KRUNNER_PULL", value_enum, default_value_t = PullPolicy::Missing)]
    pub pull: PullPolicy,

    /// Serve the runner scale set NAME on demand instead of keeping -n runners: guests start
    /// when GitHub assigns jobs to the set (`runs-on: NAME`), up to --max, with --min-idle
    /// kept waiting. The set is created in --group if it does not exist.
    #[arg(long, env = "KRUNNER_SCALE_SET", value_name = "NAME", conflicts_with_all = ["runners", "repeat"])]
    pub scale_set: Option<String>,

    /// Serve the scale sets of a pools file (TOML: each `[[pool]]` with its name, image,
    /// guest size, labels, group, min_idle and max; see README) from one host budget.
    #[arg(long, env = "KRUNNER_CONFIG", value_name = "FILE", conflicts_with_all = ["runners", "repeat", "scale_set"])]
    pub config: Option<PathBuf>,

    /// vCPUs all guests of the scale sets may take together [default: the host's, less one
    /// of four or more].
    #[arg(long, env = "KRUNNER_HOST_CPUS", value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub host_cpus: Option<u32>,

    /// RAM in MiB all guests of the scale sets may take together [default: the host's, less
    /// an eighth or 1 GiB, whichever is more].
    #[arg(long, env = "KRUNNER_HOST_MEMORY", value_name = "MIB", value_parser = clap::value_parser!(u64).range(128..))]
    pub host_memory: Option<u64>,

    /// With --scale-set: runners kept waiting for jobs.
    #[arg(
        long,
        env = "KRUNNER_MIN_IDLE",
        value_name = "N",
        default_value_t = 0,
        requires = "scale_set"
    )]
    pub min_idle: u32,

    /// With --scale-set: guests at most.
    #[arg(long, env = "KRUNNER_MAX", value_name = "N", default_value_t = 4, requires = "scale_set", value_parser = clap::value_parser!(u32).range(1..))]
    pub max: u32,

    /// Which actions runner guests run: `auto` the image's own when it has one (at
    /// /opt/actions-runner or /home/runner), else one krunner provides; `provided` always
    /// the provided one (at /opt/actions-runner, over the image's); `image` only the image's.
    #[arg(long, env = "KRUNNER_RUNNER", value_enum, default_value_t = crate::runner::Choice::Auto)]
    pub runner: crate::runner::Choice,

    /// The provided runner's version: `latest` (checked at start and every
    /// --runner-check-interval; new guests move to a new release) or an exact one (pinned).
    #[arg(
        long,
        env = "KRUNNER_RUNNER_VERSION",
        value_name = "latest|X.Y.Z",
        default_value = "latest"
    )]
    pub runner_version: crate::runner::Wanted,

    /// Where the actions/runner releases are listed (GitHub's releases API, or a mirror that
    /// answers the same JSON); every tarball is fetched from the URL that listing gives.
    #[arg(long, env = "KRUNNER_RUNNER_RELEASES_URL", value_name = "URL", default_value = crate::runner::releases::DEFAULT_RELEASES_URL)]
    pub runner_releases_url: String,

    /// Seconds between two checks for a new runner release (`--runner-version latest`).
    #[arg(long, env = "KRUNNER_RUNNER_CHECK_INTERVAL", value_name = "SECS", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub runner_check_interval: u64,

    /// Use only the cache: the image as with --pull never, the newest provided runner it
    /// holds (of --runner-version, if pinned), no release checks.
    #[arg(long, env = "KRUNNER_OFFLINE")]
    pub offline: bool,

    /// A host directory shared read-write with every job's guest at /cache (tool caches,
    /// such as ~/.cargo or npm's). Never the image cache (--cache-dir): krunner refuses a
    /// directory that is, contains or lies inside it.
    #[arg(long = "job-cache", env = "KRUNNER_JOB_CACHE", value_name = "HOST_DIR")]
    pub job_cache: Option<PathBuf>,

    /// The old name of --job-cache: still accepted, with a warning.
    #[arg(
        long = "cache",
        env = "KRUNNER_CACHE",
        value_name = "HOST_DIR",
        hide = true,
        conflicts_with = "job_cache"
    )]
    pub old_job_cache: Option<PathBuf>,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464). Off by
    /// default; there is no authentication, so prefer a loopback address.
    #[arg(long, env = "KRUNNER_METRICS", value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Guest options.
    #[command(flatten)]
    pub guest: GuestArgs,

    /// Registry options.
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `krunner status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only the instance with this runner name prefix.
    #[arg(long, env = "KRUNNER_NAME_PREFIX")]
    pub name_prefix: Option<String>,

    /// Print JSON (one array of instances) instead of a table.
    #[arg(long, env = "KRUNNER_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
}

/// `krunner doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Directory holding libkrunfw.so.5, if it is not where the loader looks.
    #[arg(long, env = "KRUNNER_LIBKRUNFW_DIR", value_name = "DIR")]
    pub libkrunfw_dir: Option<PathBuf>,

    /// Skip the test boot (it takes up to --boot-timeout seconds).
    #[arg(long, env = "KRUNNER_NO_BOOT", value_parser = FalseyValueParser::new())]
    pub no_boot: bool,

    /// Seconds the test boot may take.
    #[arg(long, env = "KRUNNER_BOOT_TIMEOUT", default_value_t = 60)]
    pub boot_timeout: u64,
}

/// `krunner images`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Print JSON (one array) instead of a table.
    #[arg(long, env = "KRUNNER_JSON", value_parser = FalseyValueParser::new())]
    pub json: bool,
}

/// `krunner prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep only the N most recently used images (and everything they need).
    #[arg(long, env = "KRUNNER_KEEP", value_name = "N", conflicts_with = "all")]
    pub keep: Option<usize>,

    /// Remove every image not in use by a run.
    #[arg(long, env = "KRUNNER_ALL", value_parser = FalseyValueParser::new())]
    pub all: bool,
}

/// `krunner completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// `krunner man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(value_name = "DIR")]
    pub out_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pull_flags_parse() {
        let cli = Cli::try_parse_from([
            "krunner",
            "--cache-dir",
            "/c",
            "pull",
            "--platform",
            "linux/arm64/v8",
            "--insecure-registry",
            "a:5000",
            "--insecure-registry",
            "b",
            "alpine",
        ])
        .unwrap();
        let Command::Pull(p) = cli.command else {
            panic!("not pull")
        };
        assert_eq!(p.image, "alpine");
        assert_eq!(p.registry.insecure_registries, vec!["a:5000", "b"]);
        assert_eq!(p.registry.platform.unwrap().variant.as_deref(), Some("v8"));
        assert_eq!(cli.global.cache_dir, Some(PathBuf::from("/c")));
    }

    #[test]
    fn bad_platform_is_a_usage_error() {
        let e = Cli::try_parse_from(["krunner", "pull", "--platform", "darwin/arm64", "x"])
            .unwrap_err();
        assert!(e.to_string().contains("darwin/arm64"), "{e}");
    }

    #[test]
    fn exec_takes_mounts_and_a_command() {
        let cli = Cli::try_parse_from([
            "krunner",
            "exec",
            "--backend",
            "namespace",
            "-M",
            "/h:/g:ro",
            "-M",
            "/a:/b",
            "img",
            "--",
            "sh",
            "-c",
            "exit 3",
        ])
        .unwrap();
        let Command::Exec(e) = cli.command else {
            panic!("not exec")
        };
        assert_eq!(e.guest.backend, Backend::Namespace);
        assert_eq!(e.command, vec!["sh", "-c", "exit 3"]);
        assert_eq!(
            e.guest.mounts,
            vec![
                MountArg {
                    host: "/h".into(),
                    guest: "/g".into(),
                    read_only: true
                },
                MountArg {
                    host: "/a".into(),
                    guest: "/b".into(),
                    read_only: false
                },
            ]
        );
        for bad in ["rel:/g", "/h:g", "/h:/a/../b", "/h", "/h:/"] {
            assert!(bad.parse::<MountArg>().is_err(), "{bad}");
        }
        assert!(
            Cli::try_parse_from(["krunner", "exec", "img"]).is_err(),
            "a command is required"
        );
    }

    #[test]
    fn run_flags_parse_and_secrets_are_redacted() {
        let cli = Cli::try_parse_from([
            "krunner",
            "run",
            "-n",
            "3",
            "-r",
            "2",
            "-T",
            "tok-123",
            "-p",
            "o/r",
            "-s",
            "org",
            "-L",
            "a,b",
            "--registration",
            "token",
            "--pull",
            "never",
            "--job-cache",
            "/c",
            "--backend",
            "namespace",
            "-i",
            "fedora",
        ])
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert_eq!(
            (r.runners, r.repeat, r.max_failures, r.drain_timeout),
            (3, 2, 5, 600)
        );
        assert_eq!((r.delete_deadline, r.online_timeout), (600, 600));
        assert_eq!(r.token.as_ref().map(Secret::expose), Some("tok-123"));
        assert!(
            !format!("{r:?}").contains("tok-123"),
            "the token is redacted"
        );
        assert_eq!(r.scope, ScopeKind::Org);
        assert_eq!(r.labels, ["a", "b"]);
        assert_eq!(r.registration, RegistrationKind::Token);
        assert_eq!(r.pull, PullPolicy::Never);
        assert_eq!(r.job_cache, Some(PathBuf::from("/c")));
        assert_eq!(r.runner, crate::runner::Choice::Auto);
        assert_eq!(r.runner_version, crate::runner::Wanted::Latest);
        assert_eq!(r.runner_check_interval, 3600);
        let old = Cli::try_parse_from(["krunner", "run", "-p", "o/r", "--cache", "/j"]).unwrap();
        let Command::Run(old) = old.command else {
            panic!("not run")
        };
        assert_eq!(
            (old.job_cache, old.old_job_cache),
            (None, Some(PathBuf::from("/j")))
        );
        let help = Cli::try_parse_from(["krunner", "run", "--help"])
            .unwrap_err()
            .to_string();
        assert!(
            help.contains("--job-cache") && !help.contains("--cache <"),
            "{help}"
        );
        assert_eq!(r.group, "Default");
        assert!(
            Cli::try_parse_from([
                "krunner",
                "run",
                "-p",
                "o/r",
                "-T",
                "x",
                "--token-file",
                "/f"
            ])
            .is_err(),
            "one credential source"
        );
        assert!(Cli::try_parse_from(["krunner", "run", "-p", "o/r", "-n", "0"]).is_err());
    }

    #[test]
    fn keep_and_all_conflict() {
        assert!(Cli::try_parse_from(["krunner", "prune", "--keep", "2", "--all"]).is_err());
    }
}

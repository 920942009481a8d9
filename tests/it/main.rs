//! krunner's integration tests: one test binary that drives the built `krunner` executable
//! against real and fake registries on loopback. One module per topic.
//!
//! Run with `cargo test --test it`. Tests that need root or a Debian tool (docker-registry,
//! skopeo, umoci, busybox-static) print `SKIP <test>: <why>` and pass when it is missing; set
//! `KRUNNER_IT_REQUIRE_ALL=1` (as CI does) to turn those skips into failures. Set
//! `KRUNNER_IT_KEEP=1` to keep every test's temporary directory for a post-mortem.

// A test that cannot set up its fixture has nothing better to do than panic with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The harness: temporary directories, the `krunner` command runner, tree snapshots, skips,
/// and the fixtures (loopback `docker-registry`, in-process fake registry, OCI image builder).
mod util;

/// `krunner pull` against the real registry: busybox, cache hits, offline mode, multi-arch
/// indexes, short names, digests, htpasswd and bearer auth, concurrency, compressions,
/// whiteouts and hardlinks.
mod pull;

/// Hostile layers and broken registries: every pull must fail cleanly, name the layer, leave
/// a canary outside the cache untouched and leave no rootfs or bad blob behind.
mod unpack_hostile;

/// The unpacked tree compared with what `umoci unpack` makes of the same image.
mod umoci_compare;

/// The network jail as a hostile job tries it: the host's loopback and addresses, private,
/// metadata and public addresses, `--egress-allow`, two guests on one port, `--egress-policy
/// open`, bad values.
mod jail;

/// Rootless krunner: an ordinary user with a subordinate id range pulls and runs jailed guests.
mod rootless;

/// `krunner exec` and `krunner doctor`: the namespace backend end to end, libkrun up to the
/// vCPU, crash recovery.
mod launcher;

/// The GitHub client against the in-process GitHub API simulator: every scope, the GHES base,
/// PAT and GitHub App auth, JIT configs, registration tokens, reconcile, "already exists", and
/// every injected fault (5xx, 429, secondary and primary limits, timeouts, resets).
mod github;

/// The guest agent in runner mode under the namespace backend: the registration's path from
/// the secrets share to the runner, uid 1001, signals, results.
mod agent;

/// `krunner run` with the GitHub simulator and a stand-in runner image: `-n 3 -r 2` gives six
/// JIT runners with unique names and no registration left; SIGINT while idle stops at once;
/// a job cache or `-M` share touching the image cache and a bad `--name-prefix` are refused.
mod run_e2e;

/// `krunner status`, the `--metrics` endpoint and the per-instance lock while `krunner run
/// -n 2` keeps two idle stand-in runners: the state file's slots, names and states, the
/// counters, a second instance refused with the first's pid, no state file after SIGINT; the
/// status polls ask about idle runners by id, never list the scope, and leave busy ones alone.
mod run_status;

/// `krunner run` under stress: SIGINT while runners are busy (drain to the end of a job and
/// to the drain timeout; a second SIGINT forces, also while GitHub rate-limits and stalls),
/// SIGKILL and a restart that sweeps and reconciles, API faults on 30 % of requests, and no
/// credential in files or other processes.
mod run_faults;

/// The runner images, which cannot be built here: the docker CLI wrapper against a stand-in
/// `docker.orig` under `sh` and `busybox sh`, a lint of every Containerfile, the podman
/// configuration and the image-build workflow.
mod images;

/// `krunner run --registration token`: a registration token per run, `config.sh` with the
/// scope's web URL, the runner's name, labels and work folder, then `Runner.Listener run`; the
/// token nowhere else, and no registration left.
mod run_token;

/// The actions runner provided by the host: the latest or a pinned release from the
/// simulator's releases API, verified and cached once; a bad checksum or a cut download caches
/// nothing; `--runner auto|provided|image` with images that have no runner, their own at
/// /opt/actions-runner, or GitHub's layout at /home/runner; a new release reaches the next
/// guest and the old one is pruned; the arm64 tarball for an arm64 guest; invariant
/// globalization without libicu.
mod runner_provided;

/// `krunner run --scale-set` against the simulator's Actions service: six jobs on a set of at
/// most three, a warm runner with --min-idle 1, a crash whose session the restart closes, an
/// expired queue token and a deleted scale set, and bad flags.
mod scaleset;

/// The krun backend in real libkrun guests: `doctor`, `exec` and `run` end to end. Ignored
/// here; `cargo test --test l1` runs them inside the emulated KVM host (tests/l1.sh).
mod krun_guest;

/// krunner's .deb and .rpm (packaging/), built from the binary under test: the .deb installed
/// into a fresh Debian 12 root and run there (version, doctor, a namespace guest, the unit,
/// completions, man pages, reinstall, remove, purge); the .rpm's files, scripts and
/// requirements; the unit and env file against the CLI.
mod package;

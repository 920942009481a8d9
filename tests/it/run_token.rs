//! `krunner run --registration token` end to end: the built binary under the namespace
//! backend, a stand-in image from the loopback registry, and the GitHub simulator (repo
//! scope). The image's stand-in `config.sh` records its argv and environment under `/record`
//! and then, as the real one registers with GitHub, registers its runner in the simulator
//! (`POST /_sim/runners`, busybox `wget`), online; the stand-in `bin/Runner.Listener` records
//! its argv and environment under its host name (krunner sets it to the runner's name) and
//! exits 0 without a job, so the registration is still there when the guest ends and krunner
//! must find it by name and delete it. With `/record/foreign`, `config.sh` registers the name
//! without the given labels, as someone else's runner would hold it.

use std::path::{Path, PathBuf};

use crate::util::github_sim::GitHubSim;
use crate::util::registry::Registry;
use crate::util::*;

const NEEDS: &[Need] = &[
    Need::Root,
    Need::Tool("docker-registry"),
    Need::Tool("skopeo"),
    Need::Tool("busybox"),
];

const CONFIG_SH: &str = r#"#!/bin/sh
# Stand-in for config.sh: records how it was called, then registers the runner.
url=""; name=""; labels=""; prev=""
for a in "$@"; do
  case "$prev" in --url) url=$a ;; --name) name=$a ;; --labels) labels=$a ;; esac
  prev=$a
done
[ -n "$name" ] || exit 4
for a in "$@"; do echo "$a"; done > "/record/config-argv-$name"
env > "/record/config-env-$name"
server=$(echo "$url" | busybox cut -d/ -f1-3)
principal=${url#"$server"/}
json_labels=$(echo "$labels" | busybox sed 's/,/","/g')
# A runner of someone else's that happens to hold this name (no instance label).
[ -f /record/foreign ] && json_labels=someone-else
busybox wget -q -O "/record/config-registered-$name" \
  --post-data="{\"scope\":\"repo:$principal\",\"name\":\"$name\",\"labels\":[\"$json_labels\"],\"state\":\"online\"}" \
  "$server/_sim/runners" || exit 5
"#;

const LISTENER: &str = r#"#!/bin/sh
# Stand-in for the actions runner: records how it was started, exits without a job.
name=$(busybox hostname)
for a in "$@"; do echo "$a"; done > "/record/listener-argv-$name"
env > "/record/listener-env-$name"
exit 0
"#;

fn runner_image() -> String {
    static PUSHED: std::sync::Once = std::sync::Once::new();
    crate::util::oci::runner_image(
        Registry::shared(),
        &PUSHED,
        "run-token-runner:v2",
        LISTENER,
        Some(CONFIG_SH),
    )
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| format!("<{}: {e}>", p.display()))
}

/// Files under `dir` (recursively, symlinks not followed) whose bytes contain `needle`.
fn files_with(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(t) = e.file_type() else { continue };
        let bytes = if t.is_dir() {
            found.extend(files_with(&e.path(), needle));
            continue;
        } else if t.is_symlink() {
            std::fs::read_link(e.path())
                .map(|p| p.into_os_string().into_encoded_bytes())
                .unwrap_or_default()
        } else {
            std::fs::read(e.path()).unwrap_or_default()
        };
        if !needle.is_empty() && bytes.windows(needle.len()).any(|w| w == needle) {
            found.push(e.path().display().to_string());
        }
    }
    found
}

/// A token-mode run's world: its test dir, a simulator with one repo and PAT, and the record
/// share the stand-in writes to.
struct TokenRun {
    td: TestDir,
    sim: GitHubSim,
    record: PathBuf,
}

fn token_fixture(name: &str) -> TokenRun {
    let td = TestDir::new(name);
    let sim = GitHubSim::start();
    let repo = sim.add_repo("owner/repo");
    sim.add_pat("token-pat", &[&repo]);
    let record = td.join("record");
    std::fs::create_dir_all(&record).unwrap();
    // config.sh and the listener run as the runner user (1001).
    std::fs::set_permissions(&record, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    TokenRun { td, sim, record }
}

/// `krunner run --registration token` with one loop of `repeat` runs, to its end.
fn run_token(t: &TokenRun, repeat: u32) -> Outcome {
    t.td.krunner()
        .env("KRUNNER_TOKEN", "token-pat")
        .args(["run", "--backend", "namespace", "--registration", "token"])
        .args(["--api-url", &t.sim.api_url(), "-p", "owner/repo"])
        .args(["-i", &runner_image(), "--name-prefix", "tok"])
        .arg("--log-dir")
        .arg(t.td.join("logs"))
        .arg("-M")
        .arg(format!("{}:/record", t.record.display()))
        .args(["-n", "1", "-r", &repeat.to_string()])
        .run()
}

#[test]
fn token_registration_configures_each_run_with_its_own_token_and_leaves_nothing() {
    if skip(NEEDS) {
        return;
    }
    let t = token_fixture("run-token");
    let (td, sim, record) = (&t.td, &t.sim, &t.record);
    let logs = td.join("logs");
    let out = run_token(&t, 2);
    let ctx = format!(
        "{out}\nsim log:\n{}\nrecord: {:?}",
        sim.log_text(),
        list_names(record)
    );
    out.success().never_shows("token-pat");

    // One registration token per run, and no JIT config.
    let tokens = sim.registration_tokens();
    assert_eq!(
        sim.count(
            "POST",
            "/repos/owner/repo/actions/runners/registration-token"
        ),
        2,
        "{ctx}"
    );
    assert_eq!(tokens.len(), 2, "{ctx}");
    assert_ne!(tokens[0], tokens[1], "{ctx}");
    assert_eq!(
        sim.count(
            "POST",
            "/repos/owner/repo/actions/runners/generate-jitconfig"
        ),
        0,
        "{ctx}"
    );
    // Both stand-in config.sh runs registered their runner; krunner deleted both.
    assert_eq!(sim.count("POST", "/_sim/runners"), 2, "{ctx}");
    assert_eq!(
        sim.count("DELETE", "/repos/owner/repo/actions/runners/"),
        2,
        "{ctx}"
    );

    // The web URL rule of `run.rs`: the API base itself (not api.github.com, no /api/v3)
    // plus owner/repo.
    let url = format!("{}/owner/repo", sim.server_url());
    let mut used = Vec::new();
    for seq in 1..=2 {
        let name = format!("tok-0-{seq}");
        let argv: Vec<String> = read(&record.join(format!("config-argv-{name}")))
            .lines()
            .map(String::from)
            .collect();
        // The token is in config.sh's environment (the runner reads --token from
        // ACTIONS_RUNNER_INPUT_TOKEN), never on its command line.
        let token = read(&record.join(format!("config-env-{name}")))
            .lines()
            .find_map(|l| l.strip_prefix("ACTIONS_RUNNER_INPUT_TOKEN="))
            .unwrap_or_default()
            .to_string();
        assert!(
            tokens.contains(&token),
            "{name}: config.sh got token {token:?}, not one the simulator issued ({tokens:?})\n{ctx}"
        );
        let want = [
            "--unattended",
            "--ephemeral",
            "--disableupdate",
            "--url",
            &url,
            "--name",
            &name,
            "--work",
            "_work",
            "--labels",
        ];
        assert_eq!(
            argv[..argv.len().min(10)],
            want,
            "{name}: config.sh argv\n{ctx}"
        );
        // The instance label: prefix and this host and cache's id.
        let labels = argv.get(10).map_or("", String::as_str);
        let id = labels.strip_prefix("krun,krunner-tok-").unwrap_or("");
        assert!(
            argv.len() == 11 && id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}: config.sh labels {labels:?}\n{ctx}"
        );
        used.push(token);
        let registered = read(&record.join(format!("config-registered-{name}")));
        assert!(
            registered.contains(&format!("\"name\":\"{name}\"")),
            "{name}: the stand-in registration failed: {registered}\n{ctx}"
        );
        assert_eq!(
            read(&record.join(format!("listener-argv-{name}"))),
            "run\n",
            "{name}: Runner.Listener argv\n{ctx}"
        );
    }
    assert_ne!(used[0], used[1], "each run has its own token\n{ctx}");
    // Sequential runs of one slot take the tokens in the order they were issued.
    assert_eq!(used, tokens, "{ctx}");

    for token in &tokens {
        out.never_shows(token);
        for rec in list_names(record) {
            // config.sh's environment holds it (checked above); no argv and no runner does.
            if rec.starts_with("config-argv-") || rec.starts_with("listener-") {
                assert!(
                    !read(&record.join(&rec)).contains(token.as_str()),
                    "{rec} holds a registration token\n{ctx}"
                );
            }
        }
        for dir in [td.cache(), logs.clone()] {
            let found = files_with(&dir, token.as_bytes());
            assert!(
                found.is_empty(),
                "a registration token is in {found:?}\n{ctx}"
            );
        }
    }
    assert_eq!(
        list_names(record)
            .iter()
            .filter(|n| n.ends_with("-env-tok-0-1") || n.ends_with("-env-tok-0-2"))
            .count(),
        4,
        "an environment record per program and run\n{ctx}"
    );

    assert!(
        sim.runners().is_empty(),
        "registrations left: {:?}\n{ctx}",
        sim.runners()
    );
    assert_eq!(list_names(&logs).len(), 2, "one log per run\n{ctx}");
    assert!(list_names(&td.cache().join("runs")).is_empty(), "{ctx}");
}

/// In token mode krunner finds its runner by name to delete it; a runner of that name without
/// its instance label is someone else's and stays.
#[test]
fn token_mode_never_deletes_a_runner_of_that_name_without_the_instance_label() {
    if skip(NEEDS) {
        return;
    }
    let t = token_fixture("run-token-foreign");
    let sim = &t.sim;
    std::fs::write(t.record.join("foreign"), "").unwrap();
    let out = run_token(&t, 1);
    let ctx = format!("{out}\nsim log:\n{}", sim.log_text());
    out.success().never_shows("token-pat");
    let left: Vec<(String, Vec<String>)> = sim
        .runners()
        .into_iter()
        .map(|r| (r.name, r.labels))
        .collect();
    assert_eq!(left.len(), 1, "{ctx}");
    assert_eq!(left[0].0, "tok-0-1", "{ctx}");
    assert!(left[0].1.contains(&"someone-else".to_string()), "{ctx}");
    assert_eq!(
        sim.count("DELETE", "/repos/owner/repo/actions/runners/"),
        0,
        "{ctx}"
    );
}

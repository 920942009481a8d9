//! The runner images, which cannot be built here (no network): the docker CLI wrapper run
//! against a stand-in `docker.orig` under `sh` and `busybox sh`, a lint of every Containerfile
//! (syntax, build arguments, build-context paths, what the image contract asks of them), the
//! podman configuration, and the image-build workflow read with a small YAML reader.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::*;

/// The repository's `images/` directory.
fn images_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("images")
}

fn wrapper() -> PathBuf {
    images_dir().join("common/docker-wrapper.sh")
}

// ---------------------------------------------------------------------------------------------
// The docker wrapper
// ---------------------------------------------------------------------------------------------

/// The stand-in for the real CLI. `compose … config --services` prints `$FAKE_SERVICES` (one
/// per line) and `compose … config` prints the file `$FAKE_CONFIG`; both append their argv to
/// `$FAKE_LOG`, and fail when `$FAKE_CONFIG_FAIL` is set. Anything else prints `COMPOSE_FILE`
/// (or that it is unset), a separator, then its arguments one per line, and exits `$FAKE_EXIT`.
const STAND_IN: &str = r#"#!/bin/sh
is_config=0 services=0
for a do
  case $a in
    config) is_config=1 ;;
    --services) services=1 ;;
  esac
done
if [ "$is_config" = 1 ]; then
  printf '%s\n' "$*" >>"$FAKE_LOG"
  [ -n "${FAKE_CONFIG_FAIL:-}" ] && exit 1
  if [ "$services" = 1 ]; then
    for s in $FAKE_SERVICES; do printf '%s\n' "$s"; done
  else
    cat "$FAKE_CONFIG"
  fi
  exit 0
fi
if [ "${COMPOSE_FILE+set}" = set ]; then
  printf 'COMPOSE_FILE=%s\n' "$COMPOSE_FILE"
else
  printf 'COMPOSE_FILE unset\n'
fi
printf -- '--\n'
for a do printf '%s\n' "$a"; done
exit "${FAKE_EXIT:-0}"
"#;

/// The model `docker compose config` prints for the test project: `web` and `worker` on the
/// default network, `db` on a network of its own, `cache` with a network_mode, `proxy` on
/// both `default` and a network of its own.
const MODEL: &str = "name: proj
services:
  cache:
    image: redis
    network_mode: none
  db:
    image: postgres
    networks:
      back: null
  proxy:
    image: nginx
    networks:
      default: null
      front:
        aliases:
          - p
  web:
    image: nginx
    networks:
      default: null
    ports:
      - mode: ingress
        target: 80
  worker:
    image: busybox
    networks:
      default: null
networks:
  back:
    name: proj_back
  default:
    name: proj_default
  front:
    name: proj_front
";

const SERVICES: &str = "cache db proxy web worker";

/// What the stand-in saw.
#[derive(Debug, PartialEq, Eq)]
struct Call {
    /// `COMPOSE_FILE` in its environment.
    compose_file: Option<String>,
    /// Its arguments.
    argv: Vec<String>,
    /// The wrapper's exit code.
    code: Option<i32>,
    /// The wrapper's stderr.
    stderr: String,
}

/// A directory with the stand-in, a compose model, and a `TMPDIR` for the wrapper.
struct Bench {
    td: TestDir,
    /// Environment for every run.
    env: Vec<(String, String)>,
    /// Working directory.
    cwd: PathBuf,
}

impl Bench {
    fn new(name: &str) -> Bench {
        let td = TestDir::new(name);
        let bin = td.join("bin");
        fs::create_dir_all(&bin).unwrap();
        let orig = bin.join("docker.orig");
        fs::write(&orig, STAND_IN).unwrap();
        fs::set_permissions(&orig, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(td.join("model.yaml"), MODEL).unwrap();
        fs::create_dir_all(td.join("tmp")).unwrap();
        fs::create_dir_all(td.join("work")).unwrap();
        let env = vec![
            ("DOCKER_ORIG".into(), orig.display().to_string()),
            (
                "FAKE_CONFIG".into(),
                td.join("model.yaml").display().to_string(),
            ),
            ("FAKE_SERVICES".into(), SERVICES.into()),
            (
                "FAKE_LOG".into(),
                td.join("config.log").display().to_string(),
            ),
            ("TMPDIR".into(), td.join("tmp").display().to_string()),
        ];
        let cwd = td.join("work");
        Bench { td, env, cwd }
    }

    fn set(&mut self, k: &str, v: &str) -> &mut Bench {
        self.env.retain(|(key, _)| key != k);
        self.env.push((k.into(), v.into()));
        self
    }

    fn unset(&mut self, k: &str) -> &mut Bench {
        self.env.retain(|(key, _)| key != k);
        self
    }

    /// Runs `shell… wrapper args…` and parses what the stand-in printed.
    fn run_with(&self, shell: &[&str], script: &Path, args: &[&str]) -> Call {
        let mut cmd = Command::new(shell[0]);
        cmd.args(&shell[1..])
            .arg(script)
            .args(args)
            .current_dir(&self.cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run the wrapper");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let mut lines = stdout.lines();
        let first = lines.next().unwrap_or_default();
        let compose_file = first.strip_prefix("COMPOSE_FILE=").map(String::from);
        assert!(
            compose_file.is_some() || first == "COMPOSE_FILE unset",
            "the stand-in did not run: {shell:?} {args:?}\nstdout: {stdout}\nstderr: {stderr}"
        );
        assert_eq!(lines.next(), Some("--"), "stand-in output: {stdout}");
        Call {
            compose_file,
            argv: lines.map(String::from).collect(),
            code: out.status.code(),
            stderr,
        }
    }

    /// Runs the wrapper under every POSIX shell we have; they must agree.
    fn run(&self, args: &[&str]) -> Call {
        let mut calls = shells()
            .iter()
            .map(|sh| (sh.clone(), self.run_with(sh, &wrapper(), args)))
            .collect::<Vec<_>>();
        let (first_shell, first) = calls.remove(0);
        for (sh, call) in calls {
            // Override files have random names: compare with them masked.
            assert_eq!(
                masked(&call, &self.td),
                masked(&first, &self.td),
                "{sh:?} and {first_shell:?} disagree on {args:?}"
            );
        }
        first
    }

    /// The `docker.orig … config` invocations the wrapper made.
    fn config_queries(&self) -> Vec<String> {
        fs::read_to_string(self.td.join("config.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

/// `sh` (dash on Debian), and `busybox sh` when busybox is there.
fn shells() -> Vec<Vec<&'static str>> {
    let mut v = vec![vec!["sh"]];
    if have_tool("busybox") {
        v.push(vec!["busybox", "sh"]);
    } else {
        // Prints SKIP, or fails the test under KRUNNER_IT_REQUIRE_ALL.
        let _ = skip(&[Need::Tool("busybox")]);
    }
    v
}

fn masked(c: &Call, td: &TestDir) -> String {
    let tmp = td.join("tmp").display().to_string();
    let mask = |s: &str| {
        if let Some(i) = s.find(&tmp) {
            format!("{}<tmp>", &s[..i])
        } else {
            s.to_string()
        }
    };
    format!(
        "{:?} {:?} {:?}",
        c.compose_file.as_deref().map(mask),
        c.argv.iter().map(|a| mask(a)).collect::<Vec<_>>(),
        c.code
    )
}

fn v(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// Asserts that the wrapper passed `args` through unchanged.
#[track_caller]
fn assert_untouched(b: &Bench, args: &[&str]) {
    let c = b.run(args);
    assert_eq!(c.argv, v(args), "{args:?} must pass through untouched");
    assert_eq!(c.compose_file, None, "{args:?} must not set COMPOSE_FILE");
    assert_eq!(c.code, Some(0), "{args:?}: {}", c.stderr);
}

/// Asserts that `args` reach the real CLI as `expected`.
#[track_caller]
fn assert_becomes(b: &Bench, args: &[&str], expected: &[&str]) {
    let c = b.run(args);
    assert_eq!(c.argv, v(expected), "docker {}", args.join(" "));
}

#[test]
fn wrapper_run_create_and_container_forms_get_host_network() {
    let b = Bench::new("wrap-run");
    assert_becomes(
        &b,
        &["run", "alpine", "true"],
        &["run", "--network", "host", "alpine", "true"],
    );
    assert_becomes(
        &b,
        &["create", "alpine"],
        &["create", "--network", "host", "alpine"],
    );
    assert_becomes(
        &b,
        &["container", "run", "--rm", "alpine"],
        &["container", "run", "--network", "host", "--rm", "alpine"],
    );
    assert_becomes(
        &b,
        &["container", "create", "alpine"],
        &["container", "create", "--network", "host", "alpine"],
    );
    // Nothing after the subcommand: the flag still goes right after it.
    assert_becomes(&b, &["run"], &["run", "--network", "host"]);
}

#[test]
fn wrapper_keeps_options_and_the_container_command_as_they_are() {
    let b = Bench::new("wrap-opts");
    let args = [
        "run",
        "-it",
        "--rm",
        "-e",
        "A=1 2",
        "-v",
        "/x:/y",
        "-p8080:80",
        "--name",
        "net",
        "--env=B='q'",
        "alpine",
        "sh",
        "-c",
        "echo \"it's $HOME\" `x` \\ ;",
    ];
    let mut expected = vec!["run", "--network", "host"];
    expected.extend_from_slice(&args[1..]);
    assert_becomes(&b, &args, &expected);
}

#[test]
fn wrapper_keeps_an_explicit_network() {
    let b = Bench::new("wrap-explicit");
    for args in [
        &["run", "--network", "x", "alpine"][..],
        &["run", "--network=x", "alpine"],
        &["run", "--net", "x", "alpine"],
        &["run", "--net=x", "alpine"],
        &["run", "--rm", "-itp", "80:80", "--net=none", "alpine", "sh"],
        &["create", "--network", "container:other", "alpine"],
        &["container", "run", "--network=host", "alpine"],
        &["container", "create", "--net", "bridge", "alpine"],
        &["-H", "unix:///x", "run", "-d", "--network", "y", "alpine"],
    ] {
        assert_untouched(&b, args);
    }
}

#[test]
fn wrapper_ignores_network_flags_of_the_containers_command() {
    let b = Bench::new("wrap-cmd-net");
    // After the image, `--net=x` belongs to the container's command.
    assert_becomes(
        &b,
        &["run", "alpine", "ping", "--net=x"],
        &["run", "--network", "host", "alpine", "ping", "--net=x"],
    );
    // After `--`, too.
    assert_becomes(
        &b,
        &["run", "--rm", "--", "alpine", "--network", "x"],
        &[
            "run",
            "--network",
            "host",
            "--rm",
            "--",
            "alpine",
            "--network",
            "x",
        ],
    );
    // An option value that looks like a network flag is a value.
    assert_becomes(
        &b,
        &["run", "-e", "X", "--label", "--net=x", "alpine"],
        &[
            "run",
            "--network",
            "host",
            "-e",
            "X",
            "--label",
            "--net=x",
            "alpine",
        ],
    );
}

#[test]
fn wrapper_reads_past_global_options() {
    let b = Bench::new("wrap-global");
    let cases: &[&[&str]] = &[
        &["-H", "unix:///x"],
        &["--host", "tcp://h:2375"],
        &["--host=tcp://h:2375"],
        &["-Hunix:///y"],
        &["--context", "c"],
        &["-c", "c"],
        &["--context=c"],
        &["--config", "/d"],
        &["--config=/d"],
        &["-D"],
        &["--debug"],
        &["--log-level", "debug"],
        &["-l", "warn"],
        &["--log-level=info"],
        &[
            "--tls",
            "--tlsverify",
            "--tlscacert",
            "ca.pem",
            "--tlscert",
            "c.pem",
        ],
        &["--tlskey=k.pem", "--tlsverify=false"],
        &[
            "-D",
            "-H",
            "unix:///x",
            "--context",
            "c",
            "--log-level",
            "debug",
        ],
    ];
    for globals in cases {
        let mut args: Vec<&str> = globals.to_vec();
        args.extend(["run", "alpine"]);
        let mut expected: Vec<&str> = globals.to_vec();
        expected.extend(["run", "--network", "host", "alpine"]);
        assert_becomes(&b, &args, &expected);

        let mut args: Vec<&str> = globals.to_vec();
        args.extend(["container", "create", "alpine"]);
        let mut expected: Vec<&str> = globals.to_vec();
        expected.extend(["container", "create", "--network", "host", "alpine"]);
        assert_becomes(&b, &args, &expected);

        // And the rest still passes through after them.
        let mut args: Vec<&str> = globals.to_vec();
        args.push("ps");
        assert_untouched(&b, &args);
    }
}

#[test]
fn wrapper_passes_other_commands_through() {
    let b = Bench::new("wrap-through");
    for args in [
        &[][..],
        &["--version"],
        &["-v"],
        &["--help"],
        &["version"],
        &["ps", "-a"],
        &["build", "."],
        &["build", "--network", "host", "-t", "x", "."],
        &["buildx", "build", "--platform", "linux/arm64", "."],
        &["image", "ls"],
        &["container", "ls"],
        &["container", "start", "x"],
        &["network", "create", "n"],
        &["exec", "-it", "c", "run"],
        &["compose", "ps"],
        &["compose", "-f", "c.yml", "down", "-v"],
        &["compose", "version"],
        // An option the wrapper does not know: it cannot tell whether it takes a value, so
        // the whole command goes through unchanged.
        &["--frobnicate", "run", "alpine"],
        &["-X", "run", "alpine"],
    ] {
        assert_untouched(&b, args);
    }
    assert!(
        b.config_queries().is_empty(),
        "passing through must not query compose: {:?}",
        b.config_queries()
    );
}

#[test]
fn wrapper_passes_the_exit_status_and_finds_docker_orig_on_path() {
    let mut b = Bench::new("wrap-status");
    b.set("FAKE_EXIT", "42");
    let c = b.run(&["ps"]);
    assert_eq!(c.code, Some(42), "the real CLI's status is the wrapper's");
    let c = b.run(&["run", "alpine"]);
    assert_eq!(c.code, Some(42), "the real CLI's status is the wrapper's");

    // Without DOCKER_ORIG, docker.orig comes from PATH.
    b.unset("DOCKER_ORIG");
    b.unset("FAKE_EXIT");
    let path = format!(
        "{}:{}",
        b.td.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg(wrapper())
        .args(["run", "alpine"])
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null());
    let out = run_tool(&mut cmd);
    assert!(
        out.contains("run\n--network\nhost\nalpine\n"),
        "docker.orig from PATH: {out}"
    );

    // Neither: a clear error, exit 127.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(wrapper())
        .arg("ps")
        .env_clear()
        .env("PATH", "/nonexistent")
        .stdin(Stdio::null());
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(127));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("docker.orig"),
        "the error names docker.orig: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The override file the wrapper wrote: service → its settings.
fn read_override(path: &str) -> BTreeMap<String, Vec<String>> {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let doc = Yaml::parse(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}\n{text}"));
    let services = doc.get("services").expect("services:").as_map().unwrap();
    services
        .iter()
        .map(|(name, s)| {
            let settings = s
                .as_map()
                .unwrap()
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect();
            (name.clone(), settings)
        })
        .collect()
}

/// The services that must get host networking in [`MODEL`].
fn expected_override() -> BTreeMap<String, Vec<String>> {
    ["web", "worker"]
        .iter()
        .map(|s| (s.to_string(), vec!["network_mode=host".to_string()]))
        .collect()
}

#[test]
fn wrapper_compose_up_with_files_adds_the_override_last() {
    let b = Bench::new("wrap-compose-f");
    let c = b.run(&[
        "compose",
        "-f",
        "a.yml",
        "--file=b.yml",
        "-p",
        "proj",
        "up",
        "-d",
        "web",
    ]);
    assert_eq!(c.compose_file, None, "with -f, COMPOSE_FILE stays unset");
    assert_eq!(c.argv.len(), 11, "{:?}", c.argv);
    assert_eq!(
        c.argv[..6],
        v(&["compose", "-f", "a.yml", "--file=b.yml", "-p", "proj"])[..],
        "the user's options stay first and in order"
    );
    assert_eq!(c.argv[6], "-f", "{:?}", c.argv);
    assert_eq!(
        c.argv[8..],
        v(&["up", "-d", "web"])[..],
        "the subcommand and its arguments follow unchanged"
    );
    assert_eq!(
        read_override(&c.argv[7]),
        expected_override(),
        "host networking for every service that did not choose a network"
    );
}

#[test]
fn wrapper_compose_queries_see_the_users_options() {
    let b = Bench::new("wrap-compose-q");
    let c = b.run(&[
        "--context",
        "c",
        "compose",
        "-f",
        "a.yml",
        "--profile",
        "dbg",
        "--env-file",
        "e.env",
        "--project-directory",
        "/p",
        "run",
        "--rm",
        "web",
        "sh",
    ]);
    assert_eq!(
        c.argv[c.argv.len() - 4..],
        v(&["run", "--rm", "web", "sh"])[..]
    );
    let q = b.config_queries();
    let prefix =
        "--context c compose -f a.yml --profile dbg --env-file e.env --project-directory /p config";
    assert!(
        q.contains(&format!("{prefix} --services")) && q.contains(&prefix.to_string()),
        "config queries {q:?}"
    );
}

#[test]
fn wrapper_compose_run_and_create_get_the_override_too() {
    let b = Bench::new("wrap-compose-run");
    for sub in ["run", "create"] {
        let c = b.run(&["compose", "-f", "c.yml", sub, "web"]);
        assert_eq!(c.argv[..4], v(&["compose", "-f", "c.yml", "-f"])[..]);
        assert_eq!(c.argv[5..], v(&[sub, "web"])[..]);
        assert_eq!(
            read_override(&c.argv[4]),
            expected_override(),
            "compose {sub}"
        );
    }
}

#[test]
fn wrapper_compose_without_files_extends_what_compose_would_find() {
    let mut b = Bench::new("wrap-compose-find");
    let proj = b.td.join("proj");
    fs::create_dir_all(proj.join("sub/deeper")).unwrap();
    fs::write(proj.join("compose.yaml"), "services: {}\n").unwrap();
    fs::write(proj.join("docker-compose.yml"), "services: {}\n").unwrap();
    fs::write(proj.join("compose.override.yml"), "services: {}\n").unwrap();
    b.cwd = proj.join("sub/deeper");

    let c = b.run(&["compose", "up"]);
    assert_eq!(
        c.argv,
        v(&["compose", "up"]),
        "the command line stays the user's"
    );
    let files = c.compose_file.expect("COMPOSE_FILE set");
    let parts: Vec<&str> = files.split(':').collect();
    let p = proj.display().to_string();
    assert_eq!(
        parts[..2],
        [
            format!("{p}/compose.yaml"),
            format!("{p}/compose.override.yml")
        ][..],
        "compose.yaml wins over docker-compose.yml, with its override, found from a subdirectory"
    );
    assert_eq!(parts.len(), 3);
    assert_eq!(read_override(parts[2]), expected_override());

    // --project-directory: looked up there, not in the working directory.
    b.cwd = b.td.join("work");
    let c = b.run(&["compose", "--project-directory", &p, "up"]);
    let files = c.compose_file.expect("COMPOSE_FILE set");
    assert!(
        files.starts_with(&format!("{p}/compose.yaml:{p}/compose.override.yml:")),
        "{files}"
    );

    // COMPOSE_FILE from the environment is kept, ours appended.
    b.set("COMPOSE_FILE", "x.yml:y.yml");
    let c = b.run(&["compose", "up"]);
    let files = c.compose_file.expect("COMPOSE_FILE set");
    assert!(files.starts_with("x.yml:y.yml:"), "{files}");
    assert_eq!(files.split(':').count(), 3, "{files}");

    // COMPOSE_PATH_SEPARATOR is honoured.
    b.set("COMPOSE_FILE", "x.yml;y.yml");
    b.set("COMPOSE_PATH_SEPARATOR", ";");
    let c = b.run(&["compose", "up"]);
    let files = c.compose_file.expect("COMPOSE_FILE set");
    assert!(files.starts_with("x.yml;y.yml;"), "{files}");
    b.unset("COMPOSE_PATH_SEPARATOR");

    // COMPOSE_FILE from the project's .env file.
    b.unset("COMPOSE_FILE");
    fs::write(b.cwd.join(".env"), "A=1\nCOMPOSE_FILE=\"from-env.yml\"\n").unwrap();
    let c = b.run(&["compose", "up"]);
    let files = c.compose_file.expect("COMPOSE_FILE set");
    assert!(files.starts_with("from-env.yml:"), "{files}");

    // … or from --env-file.
    fs::write(b.td.join("other.env"), "COMPOSE_FILE=other.yml\n").unwrap();
    let env_file = b.td.join("other.env").display().to_string();
    let c = b.run(&["compose", "--env-file", &env_file, "up"]);
    let files = c.compose_file.expect("COMPOSE_FILE set");
    assert!(files.starts_with("other.yml:"), "{files}");
}

#[test]
fn wrapper_compose_leaves_networked_projects_and_failures_alone() {
    let mut b = Bench::new("wrap-compose-alone");
    // Every service chose: nothing to add.
    b.set("FAKE_SERVICES", "cache db");
    assert_untouched(&b, &["compose", "-f", "c.yml", "up"]);

    // The project does not load: the real command reports it.
    b.set("FAKE_SERVICES", SERVICES);
    b.set("FAKE_CONFIG_FAIL", "1");
    assert_untouched(&b, &["compose", "-f", "broken.yml", "up"]);
    b.unset("FAKE_CONFIG_FAIL");

    // No compose file anywhere: the real command reports it.
    assert_untouched(&b, &["compose", "up"]);

    // The file comes from stdin, which the wrapper must not consume.
    let c = b.run(&["compose", "-f", "-", "up"]);
    assert_eq!(c.argv, v(&["compose", "-f", "-", "up"]));
    assert!(c.stderr.contains("stdin"), "a warning: {}", c.stderr);
}

#[test]
fn docker_compose_shim_goes_through_the_wrapper() {
    let b = Bench::new("wrap-shim");
    let bin = b.td.join("bin");
    std::os::unix::fs::symlink(wrapper(), bin.join("docker")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("sh");
    cmd.arg(images_dir().join("common/docker-compose.sh"))
        .args(["-f", "c.yml", "up", "-d"])
        .current_dir(&b.cwd)
        .env_clear()
        .env("PATH", &path)
        .stdin(Stdio::null());
    for (k, val) in &b.env {
        if k != "DOCKER_ORIG" {
            cmd.env(k, val);
        }
    }
    let out = run_tool(&mut cmd);
    let argv: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(argv[..4], ["compose", "-f", "c.yml", "-f"], "{out}");
    assert_eq!(argv[5..], ["up", "-d"], "{out}");
}

#[test]
fn wrapper_failures_show_when_the_wrapper_is_broken() {
    // The tests above must be able to fail: a wrapper that forgets the flag is caught.
    let b = Bench::new("wrap-broken");
    let broken = b.td.join("broken.sh");
    let text = fs::read_to_string(wrapper()).unwrap();
    let text = text.replace(" --network host$tail", "$tail");
    fs::write(&broken, text).unwrap();
    let c = b.run_with(&["sh"], &broken, &["run", "alpine"]);
    assert_ne!(
        c.argv,
        v(&["run", "--network", "host", "alpine"]),
        "the check does not notice a missing --network host"
    );
}

// ---------------------------------------------------------------------------------------------
// Containerfiles
// ---------------------------------------------------------------------------------------------

/// One instruction of a Containerfile.
#[derive(Debug, Clone)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

const KNOWN: &[&str] = &[
    "FROM",
    "RUN",
    "CMD",
    "LABEL",
    "MAINTAINER",
    "EXPOSE",
    "ENV",
    "ADD",
    "COPY",
    "ENTRYPOINT",
    "VOLUME",
    "USER",
    "WORKDIR",
    "ARG",
    "ONBUILD",
    "STOPSIGNAL",
    "HEALTHCHECK",
    "SHELL",
];

/// Splits a Containerfile into instructions: comments and blank lines skipped (also inside a
/// continued instruction, as Docker does), continuation lines joined.
fn parse_containerfile(text: &str) -> Result<Vec<Instruction>, String> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (body, continued) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw.trim_end(), false),
        };
        match &mut cur {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body.trim());
            }
            None => cur = Some((n, body.trim().to_string())),
        }
        if !continued {
            let (line, full) = cur.take().unwrap();
            let (kw, args) = full.split_once(char::is_whitespace).unwrap_or((&full, ""));
            if !kw.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!("line {line}: not an instruction: {full}"));
            }
            out.push(Instruction {
                line,
                keyword: kw.to_ascii_uppercase(),
                args: args.trim().to_string(),
            });
        }
    }
    if let Some((line, _)) = cur {
        return Err(format!(
            "line {line}: the last instruction ends with a continuation"
        ));
    }
    Ok(out)
}

/// `$VAR` and `${VAR…}` names in a string.
fn variables(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            let (start, braced) = if b[i + 1] == b'{' {
                (i + 2, true)
            } else {
                (i + 1, false)
            };
            let mut j = start;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            if j > start && (braced || !b[start].is_ascii_digit()) {
                out.push(s[start..j].to_string());
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

/// Name and default of `ARG NAME[=default]`.
fn arg_decl(args: &str) -> (String, Option<String>) {
    match args.split_once('=') {
        Some((k, d)) => (k.trim().to_string(), Some(d.trim().to_string())),
        None => (args.trim().to_string(), None),
    }
}

/// Checks one Containerfile; returns its instructions. `context` is the build context.
fn lint_containerfile(path: &Path, context: &Path) -> Vec<Instruction> {
    let text = fs::read_to_string(path).unwrap();
    let name = path
        .strip_prefix(context)
        .unwrap_or(path)
        .display()
        .to_string();
    let ins = parse_containerfile(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(!ins.is_empty(), "{name}: no instructions");
    let mut global_args: Vec<String> = Vec::new();
    let mut stage_vars: Vec<String> = Vec::new();
    let mut seen_from = false;
    for i in &ins {
        let at = format!("{name}:{}: {} {}", i.line, i.keyword, i.args);
        assert!(
            KNOWN.contains(&i.keyword.as_str()),
            "{at}: unknown instruction"
        );
        // buildah writes OCI images by default, which have no SHELL, HEALTHCHECK or ONBUILD:
        // it drops them with a warning.
        assert!(
            !["SHELL", "HEALTHCHECK", "ONBUILD", "MAINTAINER"].contains(&i.keyword.as_str()),
            "{at}: not kept in OCI images (or deprecated)"
        );
        assert!(!i.args.is_empty(), "{at}: instruction without arguments");
        if !seen_from {
            assert!(
                i.keyword == "ARG" || i.keyword == "FROM",
                "{at}: the first instruction other than ARG must be FROM"
            );
        }
        match i.keyword.as_str() {
            "ARG" => {
                let (k, _) = arg_decl(&i.args);
                assert!(
                    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "{at}: bad ARG name"
                );
                if seen_from {
                    stage_vars.push(k);
                } else {
                    global_args.push(k);
                }
            }
            "FROM" => {
                for var in variables(&i.args) {
                    assert!(
                        global_args.contains(&var),
                        "{at}: ${var} is not declared by an ARG before FROM"
                    );
                }
                let image = i.args.split_whitespace().next().unwrap();
                assert!(
                    !image.ends_with(":latest") || image.contains('$'),
                    "{at}: pin the base image"
                );
                seen_from = true;
                stage_vars.clear();
            }
            "ENV" => {
                let (k, _) = i.args.split_once('=').unwrap_or((&i.args, ""));
                stage_vars.push(k.trim().to_string());
            }
            "ADD" => {
                let remote = i
                    .args
                    .split_whitespace()
                    .any(|w| w.starts_with("http://") || w.starts_with("https://"));
                assert!(
                    !remote || i.args.contains("--checksum=sha256:"),
                    "{at}: ADD of a URL without --checksum"
                );
            }
            "COPY" => {
                let words: Vec<&str> = i
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                assert!(!i.args.contains("--from"), "{at}: single-stage files only");
                assert!(
                    words.len() >= 2,
                    "{at}: COPY needs a source and a destination"
                );
                let (dest, sources) = words.split_last().unwrap();
                assert!(dest.starts_with('/'), "{at}: absolute destination");
                if sources.len() > 1 {
                    assert!(
                        dest.ends_with('/'),
                        "{at}: several sources need a directory"
                    );
                }
                for s in sources {
                    assert!(
                        !s.contains("..") && !s.starts_with('/'),
                        "{at}: {s} leaves the build context"
                    );
                    assert!(
                        context.join(s).exists(),
                        "{at}: {s} is not in the build context {}",
                        context.display()
                    );
                }
            }
            "USER" => {
                let u = i.args.split(':').next().unwrap();
                assert!(
                    ["root", "0", "runner", "1001"].contains(&u),
                    "{at}: unexpected user"
                );
            }
            "WORKDIR" => {
                assert!(i.args.starts_with('/'), "{at}: WORKDIR must be absolute");
            }
            _ => {}
        }
        // Upper-case ${VAR} after FROM must be build arguments or ENV of this stage (shell
        // variables in RUN are lower-case in our files).
        if seen_from && i.keyword != "FROM" && i.keyword != "ARG" {
            for var in variables(&i.args) {
                if var.chars().any(|c| c.is_ascii_lowercase()) {
                    continue;
                }
                assert!(
                    stage_vars.contains(&var),
                    "{at}: ${var} is not an ARG or ENV of this stage"
                );
            }
        }
    }
    assert!(seen_from, "{name}: no FROM");
    ins
}

fn containerfiles() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for distro in ["ubuntu", "fedora"] {
        for f in ["Containerfile.base", "Containerfile"] {
            v.push(images_dir().join(distro).join(f));
        }
    }
    // Any other Containerfile someone adds is linted too.
    for e in fs::read_dir(images_dir()).unwrap().flatten() {
        if e.path().is_dir() {
            for f in fs::read_dir(e.path()).unwrap().flatten() {
                let p = f.path();
                let n = f.file_name().to_string_lossy().into_owned();
                if (n.starts_with("Containerfile") || n.starts_with("Dockerfile"))
                    && !v.contains(&p)
                {
                    v.push(p);
                }
            }
        }
    }
    v
}

fn arg_default(ins: &[Instruction], name: &str) -> Option<String> {
    ins.iter()
        .filter(|i| i.keyword == "ARG")
        .map(|i| arg_decl(&i.args))
        .find(|(k, _)| k == name)
        .and_then(|(_, d)| d)
        .map(|d| d.trim_matches('"').to_string())
}

fn has_arg(ins: &[Instruction], name: &str) -> bool {
    ins.iter()
        .any(|i| i.keyword == "ARG" && arg_decl(&i.args).0 == name)
}

#[test]
fn containerfiles_parse_and_are_sane() {
    let files = containerfiles();
    for f in &files {
        assert!(f.is_file(), "{} is missing", f.display());
        lint_containerfile(f, &images_dir());
    }
}

#[test]
fn containerfile_lint_catches_mistakes() {
    let td = TestDir::new("lint");
    fs::create_dir_all(td.join("ctx/common")).unwrap();
    fs::write(td.join("ctx/common/a.sh"), "").unwrap();
    let good = "ARG V=1\nFROM x:${V}\nARG N\n# c\nRUN a \\\n  # inner comment\n  b ${N}\nCOPY common/a.sh /a\n";
    let bad = [
        ("RUN x\nFROM a:1\n", "must be FROM"),
        ("FROM a:${V}\n", "not declared"),
        ("ARG V\nFROM a:${V}\nFROB x\n", "unknown instruction"),
        ("FROM a:1\nRUN a \\\n", "continuation"),
        ("FROM a:1\nADD https://x/y /y\n", "--checksum"),
        (
            "FROM a:1\nCOPY common/missing.sh /x\n",
            "not in the build context",
        ),
        ("FROM a:1\nCOPY ../x /x\n", "leaves the build context"),
        ("FROM a:1\nRUN echo ${TARGETARCH}\n", "not an ARG"),
        ("FROM a:1\nWORKDIR rel\n", "absolute"),
        ("FROM a:1\nSHELL [\"/bin/bash\", \"-c\"]\n", "OCI"),
    ];
    let path = td.join("ctx/Containerfile");
    fs::write(&path, good).unwrap();
    lint_containerfile(&path, &td.join("ctx"));
    for (text, why) in bad {
        fs::write(&path, text).unwrap();
        let ctx = td.join("ctx");
        let p = path.clone();
        let err = std::panic::catch_unwind(move || {
            lint_containerfile(&p, &ctx);
        })
        .expect_err(&format!("the lint accepts {text:?}"));
        let msg = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(msg.contains(why), "{text:?}: expected {why:?} in {msg:?}");
    }
}

/// The words of a Containerfile's `RUN` instructions: package names among them.
fn run_words(ins: &[Instruction]) -> Vec<String> {
    ins.iter()
        .filter(|i| i.keyword == "RUN")
        .flat_map(|i| {
            i.args
                .split(|c: char| c.is_whitespace() || c == ';')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// The `RUN` instructions of a Containerfile, one per line.
fn run_text(ins: &[Instruction]) -> String {
    ins.iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.clone())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What fetching or installing the actions runner in an image looks like. Comments may talk
/// about the runner; the code of an image must not fetch it: krunner provides it.
const RUNNER_DOWNLOAD: &[&str] = &[
    "actions-runner-linux",
    "actions/runner/releases",
    "repos/actions/runner",
    "RUNNER_VERSION",
    "RUNNER_SHA256",
    "runner-version",
    "runner_version",
    "install-runner.sh",
    "installdependencies.sh",
    "config.sh",
    "Runner.Listener",
];

/// The lines of a script or workflow that are not comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with('#'))
}

/// The [`RUNNER_DOWNLOAD`] needles in the code of `text`.
fn runner_download_in(text: &str) -> Vec<&'static str> {
    RUNNER_DOWNLOAD
        .iter()
        .copied()
        .filter(|n| code_lines(text).any(|l| l.contains(n)))
        .collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn runner_containerfiles_take_the_base_as_an_argument_and_bake_no_runner() {
    for distro in ["ubuntu", "fedora"] {
        let path = images_dir().join(distro).join("Containerfile");
        let ins = lint_containerfile(&path, &images_dir());
        let from = ins.iter().find(|i| i.keyword == "FROM").unwrap();
        assert_eq!(
            from.args, "${BASE}",
            "{distro}: FROM the base given as BASE"
        );
        let base = arg_default(&ins, "BASE").expect("ARG BASE with a default");
        assert_eq!(
            base,
            format!("{}/runner-{distro}-base:latest", expected_image_repo()),
            "{distro}: the base under krunner's image repository"
        );
        for a in ["RUNNER_VERSION", "RUNNER_SHA256_X64", "RUNNER_SHA256_ARM64"] {
            assert!(!has_arg(&ins, a), "{distro}: ARG {a}: no runner to pin");
        }
        for i in &ins {
            let at = format!(
                "{distro}/Containerfile:{}: {} {}",
                i.line, i.keyword, i.args
            );
            assert!(
                i.keyword != "ADD",
                "{at}: the runner layer adds nothing from outside"
            );
            assert!(
                !i.args.contains("/opt/actions-runner"),
                "{at}: /opt/actions-runner is krunner's to provide"
            );
            if i.keyword == "RUN" {
                for fetch in ["curl", "wget", "http://", "https://"] {
                    assert!(!i.args.contains(fetch), "{at}: downloads ({fetch})");
                }
            }
        }
    }
}

#[test]
fn no_image_file_downloads_the_runner() {
    assert!(
        !images_dir().join("common/install-runner.sh").exists(),
        "install-runner.sh is gone: krunner provides the runner"
    );
    let mut checked = 0;
    for f in files_under(&images_dir()) {
        let name = f.display().to_string();
        if name.ends_with(".md") {
            continue;
        }
        let text = fs::read_to_string(&f).unwrap();
        let is_containerfile = f
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("Containerfile"));
        let code = if is_containerfile {
            let ins = parse_containerfile(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            ins.iter()
                .map(|i| format!("{} {}", i.keyword, i.args))
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            text
        };
        let found = runner_download_in(&code);
        assert!(found.is_empty(), "{name} fetches the runner: {found:?}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} files under images/");
    let workflow = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/images.yml"),
    )
    .unwrap();
    let found = runner_download_in(&workflow);
    assert!(found.is_empty(), "images.yml fetches the runner: {found:?}");

    // The check can fail: what the old runner layer did is caught.
    let old = "RUN TARGETARCH=amd64 RUNNER_VERSION=2.337.0 /usr/local/lib/krunner/install-runner.sh\n\
               curl -fsSL -o r.tgz https://github.com/actions/runner/releases/download/v2.337.0/actions-runner-linux-x64-2.337.0.tar.gz";
    assert!(
        runner_download_in(old).len() >= 4,
        "{:?}",
        runner_download_in(old)
    );
    assert!(
        runner_download_in("# no actions-runner-linux here, in a comment\nls\n").is_empty(),
        "comments may talk about the runner"
    );
}

/// The ICU package of each Ubuntu release krunner's image may be built on.
const UBUNTU_ICU: &[(&str, &str)] = &[("22.04", "libicu70"), ("24.04", "libicu74")];

#[test]
fn runner_layers_install_what_the_provided_runner_needs() {
    // Ubuntu names ICU by its version, which follows the release.
    let ubuntu_version = arg_default(
        &lint_containerfile(
            &images_dir().join("ubuntu/Containerfile.base"),
            &images_dir(),
        ),
        "UBUNTU_VERSION",
    )
    .expect("UBUNTU_VERSION");
    let icu = UBUNTU_ICU
        .iter()
        .find(|(v, _)| *v == ubuntu_version)
        .map(|(_, p)| *p)
        .unwrap_or_else(|| {
            panic!(
                "no ICU package known for Ubuntu {ubuntu_version}: \
                 add it to UBUNTU_ICU and ubuntu/Containerfile"
            )
        });
    let icu = [icu];
    // Per distribution: groups of packages of which one must be installed, and how
    // runner-env.sh is run (ImageOS).
    let needs: &[(&str, Vec<&[&str]>, &str)] = &[
        (
            "ubuntu",
            vec![
                &icu,
                &["libssl3t64", "libssl3"],
                &["libkrb5-3"],
                &["libgssapi-krb5-2"],
                &["zlib1g"],
                &["liblttng-ust1t64", "liblttng-ust1"],
                &["ca-certificates"],
                &["util-linux"],
            ],
            "RUNNER_IMAGE_OS=ubuntu24 ",
        ),
        (
            "fedora",
            vec![
                &["libicu"],
                &["openssl-libs"],
                &["krb5-libs"],
                &["zlib"],
                &["lttng-ust"],
                &["ca-certificates"],
                &["util-linux"],
            ],
            "RUNNER_IMAGE_OS= ",
        ),
    ];
    for (distro, packages, image_os) in needs {
        let base = lint_containerfile(
            &images_dir().join(distro).join("Containerfile.base"),
            &images_dir(),
        );
        let layer = lint_containerfile(
            &images_dir().join(distro).join("Containerfile"),
            &images_dir(),
        );
        let words = run_words(&layer);
        for one_of in packages {
            assert!(
                one_of.iter().any(|p| words.iter().any(|w| w == p)),
                "{distro}: the runner layer installs none of {one_of:?}"
            );
        }
        // su (util-linux) and sudo for the runner user, and the user itself, in the base.
        let base_words = run_words(&base);
        for p in ["util-linux", "sudo"] {
            assert!(
                base_words.iter().any(|w| w == p),
                "{distro}: the base lacks {p}"
            );
        }
        let base_runs = run_text(&base);
        assert!(
            base_runs.contains("/usr/local/lib/krunner/create-runner-user.sh"),
            "{distro}: the base creates the runner user (uid 1001)"
        );
        // The layer: runner.env, then the check of everything the runner needs.
        let copies: Vec<&str> = layer
            .iter()
            .filter(|i| i.keyword == "COPY")
            .map(|i| i.args.as_str())
            .collect();
        for script in ["common/runner-env.sh", "common/check-runner-needs.sh"] {
            assert!(
                copies
                    .iter()
                    .any(|c| c.contains(script) && c.ends_with(" /usr/local/lib/krunner/")),
                "{distro}: {script} is not copied to /usr/local/lib/krunner/"
            );
        }
        let runs = run_text(&layer);
        let env_at = runs
            .find(&format!("{image_os}/usr/local/lib/krunner/runner-env.sh"))
            .unwrap_or_else(|| panic!("{distro}: runs runner-env.sh with {image_os:?}"));
        let check_at = runs
            .find("/usr/local/lib/krunner/check-runner-needs.sh")
            .unwrap_or_else(|| panic!("{distro}: runs check-runner-needs.sh"));
        assert!(
            env_at < check_at,
            "{distro}: the check runs after runner.env is written"
        );
        let install_at = runs
            .find(if *distro == "ubuntu" {
                "apt-get install"
            } else {
                "dnf install"
            })
            .expect("a package install");
        assert!(
            install_at < check_at,
            "{distro}: the check runs after the packages are installed"
        );
    }

    let user = fs::read_to_string(images_dir().join("common/create-runner-user.sh")).unwrap();
    assert!(
        user.contains("install -d -o runner -g runner -m 0755 /opt/hostedtoolcache"),
        "the tool cache, owned by runner"
    );
}

/// Runs `images/common/runner-env.sh` with `ROOT` = `root`; its exit code and stderr.
fn run_runner_env(root: &Path, image_os: Option<&str>) -> (Option<i32>, String) {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg(images_dir().join("common/runner-env.sh"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("ROOT", root)
        .stdin(Stdio::null());
    if let Some(os) = image_os {
        cmd.env("RUNNER_IMAGE_OS", os);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn runner_env_holds_the_hosted_runner_environment() {
    let td = TestDir::new("runner-env");
    let root = td.join("root");
    fs::create_dir_all(root.join("opt/hostedtoolcache")).unwrap();
    let env_file = root.join("etc/krunner/runner.env");

    let (code, err) = run_runner_env(&root, Some("ubuntu24"));
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        fs::read_to_string(&env_file).unwrap(),
        "LANG=C.UTF-8\n\
         RUNNER_TOOL_CACHE=/opt/hostedtoolcache\n\
         AGENT_TOOLSDIRECTORY=/opt/hostedtoolcache\n\
         ImageOS=ubuntu24\n"
    );
    assert_eq!(
        fs::metadata(&env_file).unwrap().permissions().mode() & 0o7777,
        0o644,
        "readable by the agent and the runner"
    );
    // KEY=VALUE lines, as the agent reads them.
    for l in fs::read_to_string(&env_file).unwrap().lines() {
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("not KEY=VALUE: {l}"));
        assert!(
            !k.is_empty()
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !v.is_empty(),
            "{l}"
        );
    }

    // No ImageOS (Fedora): no such line; written anew, not appended.
    let (code, err) = run_runner_env(&root, Some(""));
    assert_eq!(code, Some(0), "{err}");
    let text = fs::read_to_string(&env_file).unwrap();
    assert!(!text.contains("ImageOS"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");

    // The tool cache comes with the runner user: without it, the build stops.
    fs::remove_dir(root.join("opt/hostedtoolcache")).unwrap();
    let (code, err) = run_runner_env(&root, None);
    assert_eq!(code, Some(1));
    assert!(err.contains("/opt/hostedtoolcache"), "{err}");
}

/// A bench for `images/common/check-runner-needs.sh`: stand-ins for `id` and `ldconfig`, and a
/// `ROOT` with the files an image of krunner's has.
struct NeedsBench {
    td: TestDir,
    bin: PathBuf,
    root: PathBuf,
}

const LDCACHE: &str = "5 libs found in cache `/etc/ld.so.cache'
\tlibz.so.1 (libc6,x86-64) => /lib/x86_64-linux-gnu/libz.so.1
\tlibssl.so.3 (libc6,x86-64) => /lib/x86_64-linux-gnu/libssl.so.3
\tlibicuuc.so.74 (libc6,x86-64) => /lib/x86_64-linux-gnu/libicuuc.so.74
\tlibgssapi_krb5.so.2 (libc6,x86-64) => /lib/x86_64-linux-gnu/libgssapi_krb5.so.2
\tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6
";

impl NeedsBench {
    fn new() -> NeedsBench {
        let td = TestDir::new("runner-needs");
        let bin = td.join("bin");
        let root = td.join("root");
        fs::create_dir_all(&bin).unwrap();
        fs::create_dir_all(root.join("etc/krunner")).unwrap();
        fs::create_dir_all(root.join("opt/hostedtoolcache")).unwrap();
        fs::write(root.join("etc/krunner/runner.env"), "LANG=C.UTF-8\n").unwrap();
        let script = |name: &str, body: &str| {
            let p = bin.join(name);
            fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        };
        script(
            "id",
            "case \"$*\" in\n\
             \"-u runner\") [ -n \"$FAKE_UID\" ] || exit 1; echo \"$FAKE_UID\" ;;\n\
             \"-nG runner\") [ -n \"$FAKE_UID\" ] || exit 1; echo \"$FAKE_GROUPS\" ;;\n\
             *) exit 2 ;;\n\
             esac\n",
        );
        script("ldconfig", "[ \"$1\" = -p ] && cat \"$FAKE_LDCACHE\"\n");
        for t in ["su", "mount", "umount"] {
            script(t, "exit 0\n");
        }
        for t in ["sh", "env", "grep", "cat"] {
            let real = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(t))
                .find(|p| p.is_file())
                .unwrap_or_else(|| panic!("{t} on PATH"));
            std::os::unix::fs::symlink(real, bin.join(t)).unwrap();
        }
        fs::write(td.join("ldcache"), LDCACHE).unwrap();
        NeedsBench { td, bin, root }
    }

    /// Runs the check; its exit code and the lines it printed on stderr.
    fn run(&self, uid: &str, groups: &str) -> (Option<i32>, Vec<String>) {
        let out = Command::new("/bin/sh")
            .arg(images_dir().join("common/check-runner-needs.sh"))
            .env_clear()
            .env("PATH", &self.bin)
            .env("ROOT", &self.root)
            .env("FAKE_UID", uid)
            .env("FAKE_GROUPS", groups)
            .env("FAKE_LDCACHE", self.td.join("ldcache"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(String::from)
            .collect();
        (out.status.code(), err)
    }

    /// Asserts that the check fails with exactly one complaint, mentioning `needle`.
    #[track_caller]
    fn fails_with(&self, uid: &str, groups: &str, needle: &str) {
        let (code, err) = self.run(uid, groups);
        assert_eq!(
            code,
            Some(1),
            "expected a failure about {needle:?}: {err:?}"
        );
        assert!(
            err.len() == 1 && err[0].contains(needle),
            "expected one complaint about {needle:?}: {err:?}"
        );
    }
}

#[test]
fn runner_needs_check_passes_a_good_image_and_names_what_is_missing() {
    let b = NeedsBench::new();
    let (code, err) = b.run("1001", "runner docker");
    assert_eq!(code, Some(0), "a good image passes: {err:?}");
    assert!(err.is_empty(), "{err:?}");

    b.fails_with("1000", "runner docker", "uid 1001 (1000)");
    b.fails_with("1001", "runner", "group docker");
    let (code, err) = b.run("", "");
    assert_eq!(code, Some(1));
    assert!(err.iter().any(|l| l.contains("no such user")), "{err:?}");

    for (lib, what) in [
        ("libicuuc.so.74", "ICU"),
        ("libssl.so.3", "OpenSSL"),
        ("libgssapi_krb5.so.2", "Kerberos"),
        ("libz.so.1", "zlib"),
    ] {
        let cache: String = if lib == "libssl.so.3" {
            // OpenSSL 1.1 is not the one the runner's .NET wants.
            LDCACHE.replace("libssl.so.3", "libssl.so.1.1")
        } else {
            LDCACHE
                .lines()
                .filter(|l| !l.contains(&format!("\t{lib} ")))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        fs::write(b.td.join("ldcache"), cache).unwrap();
        b.fails_with("1001", "runner docker", what);
    }
    fs::write(b.td.join("ldcache"), LDCACHE).unwrap();

    fs::remove_file(b.bin.join("su")).unwrap();
    b.fails_with("1001", "runner docker", "no su");
    fs::write(b.bin.join("su"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(b.bin.join("su"), fs::Permissions::from_mode(0o755)).unwrap();

    fs::create_dir_all(b.root.join("opt/actions-runner")).unwrap();
    b.fails_with("1001", "runner docker", "/opt/actions-runner");
    fs::remove_dir(b.root.join("opt/actions-runner")).unwrap();

    fs::remove_file(b.root.join("etc/krunner/runner.env")).unwrap();
    b.fails_with("1001", "runner docker", "runner.env");
}

#[test]
fn base_containerfiles_meet_the_image_contract() {
    let common = [
        "git",
        "git-lfs",
        "curl",
        "wget",
        "jq",
        "zstd",
        "unzip",
        "zip",
        "sudo",
        "python3",
        "python3-pip",
        "nodejs",
        "rsync",
        "podman",
        "buildah",
        "skopeo",
        "fuse-overlayfs",
        "util-linux",
        "ca-certificates",
        "docker-ce-cli",
        "docker-buildx-plugin",
        "docker-compose-plugin",
    ];
    let specific: &[(&str, &[&str])] = &[
        (
            "ubuntu",
            &["build-essential", "python3-venv", "openssh-client"],
        ),
        (
            "fedora",
            &["gcc", "make", "openssh-clients", "shadow-utils"],
        ),
    ];
    for (distro, extra) in specific {
        let path = images_dir().join(distro).join("Containerfile.base");
        let ins = lint_containerfile(&path, &images_dir());
        let packages: Vec<&str> = ins
            .iter()
            .filter(|i| i.keyword == "RUN")
            .flat_map(|i| i.args.split(|c: char| c.is_whitespace() || c == ';'))
            .collect();
        for p in common.iter().chain(extra.iter()) {
            assert!(packages.contains(p), "{distro}: {p} is not installed");
        }
        let copies: Vec<&str> = ins
            .iter()
            .filter(|i| i.keyword == "COPY")
            .map(|i| i.args.as_str())
            .collect();
        let copies = copies.join("\n");
        for (src, dest) in [
            ("common/docker-wrapper.sh", ""),
            ("common/docker-compose.sh", "/usr/local/bin/docker-compose"),
            ("common/containers/containers.conf", "/etc/containers/"),
            ("common/containers/storage.conf", "/etc/containers/"),
            ("common/create-runner-user.sh", ""),
        ] {
            assert!(
                copies.lines().any(|l| l.contains(src) && l.contains(dest)),
                "{distro}: {src} is not copied to {dest:?}"
            );
        }
        let runs: String = ins
            .iter()
            .filter(|i| i.keyword == "RUN")
            .map(|i| i.args.clone())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            runs.contains("/usr/bin/docker.orig") && runs.contains("/usr/bin/docker;"),
            "{distro}: the real CLI becomes docker.orig and the wrapper docker"
        );
        assert!(
            runs.contains("create-runner-user.sh"),
            "{distro}: the runner user"
        );
    }
    let ubuntu = lint_containerfile(
        &images_dir().join("ubuntu/Containerfile.base"),
        &images_dir(),
    );
    assert_eq!(
        arg_default(&ubuntu, "UBUNTU_VERSION").as_deref(),
        Some("24.04")
    );
    let fedora = lint_containerfile(
        &images_dir().join("fedora/Containerfile.base"),
        &images_dir(),
    );
    let fv = arg_default(&fedora, "FEDORA_VERSION").expect("FEDORA_VERSION pinned");
    assert!(
        fv.parse::<u32>().is_ok_and(|n| n >= 42),
        "Fedora pinned to a current release number, not {fv:?}"
    );

    let user = fs::read_to_string(images_dir().join("common/create-runner-user.sh")).unwrap();
    for needle in [
        "groupadd --gid 1001 runner",
        "--uid 1001 --gid runner --groups docker",
        "--home-dir /home/runner",
        "runner ALL=(ALL) NOPASSWD:ALL",
        "/etc/sudoers.d/runner",
        "chmod 0440",
    ] {
        assert!(
            user.contains(needle),
            "create-runner-user.sh lacks {needle:?}"
        );
    }
}

/// `[section]` → key → value, for the flat TOML of the containers config files.
fn toml_sections(text: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            continue;
        }
        let (k, val) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("not key = value: {l}"));
        let prev = out
            .entry(section.clone())
            .or_default()
            .insert(k.trim().to_string(), val.trim().to_string());
        assert!(prev.is_none(), "{k} twice in [{section}]");
    }
    out
}

#[test]
fn podman_is_configured_for_a_libkrun_guest() {
    let dir = images_dir().join("common/containers");
    let c = toml_sections(&fs::read_to_string(dir.join("containers.conf")).unwrap());
    assert_eq!(
        c["containers"]["netns"], "\"host\"",
        "host network namespace"
    );
    assert_eq!(c["containers"]["default_sysctls"], "[]");
    assert_eq!(c["engine"]["cgroup_manager"], "\"cgroupfs\"");
    assert_eq!(c["engine"]["events_logger"], "\"file\"");
    let s = toml_sections(&fs::read_to_string(dir.join("storage.conf")).unwrap());
    assert_eq!(s["storage"]["driver"], "\"overlay\"");
    assert_eq!(
        s["storage.options.overlay"]["mount_program"],
        "\"/usr/bin/fuse-overlayfs\""
    );
    let r = toml_sections(&fs::read_to_string(dir.join("registries.conf")).unwrap());
    assert_eq!(r[""]["unqualified-search-registries"], "[\"docker.io\"]");
}

// ---------------------------------------------------------------------------------------------
// The workflow
// ---------------------------------------------------------------------------------------------

/// A YAML value, for the subset GitHub workflows use: block mappings and sequences, flow
/// sequences of scalars, plain and quoted scalars, `|` block scalars, empty values (null).
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Null,
    Str(String),
    List(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn parse(text: &str) -> Result<Yaml, String> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            if raw.contains('\t') {
                return Err(format!("line {}: tab", i + 1));
            }
            let t = raw.trim_start();
            if t.is_empty() || t.starts_with('#') {
                lines.push((i + 1, usize::MAX, raw.to_string()));
                continue;
            }
            lines.push((i + 1, raw.len() - t.len(), t.trim_end().to_string()));
        }
        let mut p = YamlParser { lines, pos: 0 };
        p.skip_blank();
        let indent = p.lines.get(p.pos).map_or(0, |l| l.1);
        if indent != 0 {
            return Err("the document must start at column 0".into());
        }
        let v = p.block(0)?;
        p.skip_blank();
        if p.pos < p.lines.len() {
            let (n, _, t) = &p.lines[p.pos];
            return Err(format!("line {n}: unexpected {t:?}"));
        }
        Ok(v)
    }

    fn get(&self, key: &str) -> Option<&Yaml> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    fn as_map(&self) -> Option<&[(String, Yaml)]> {
        match self {
            Yaml::Map(m) => Some(m),
            _ => None,
        }
    }

    fn as_list(&self) -> Option<&[Yaml]> {
        match self {
            Yaml::List(l) => Some(l),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Yaml::Str(s) => Some(s),
            _ => None,
        }
    }
}

struct YamlParser {
    /// (line number, indent or usize::MAX for blank/comment, text without the indent)
    lines: Vec<(usize, usize, String)>,
    pos: usize,
}

impl YamlParser {
    fn skip_blank(&mut self) {
        while self.pos < self.lines.len() && self.lines[self.pos].1 == usize::MAX {
            self.pos += 1;
        }
    }

    /// The block at exactly `indent`.
    fn block(&mut self, indent: usize) -> Result<Yaml, String> {
        self.skip_blank();
        let (_, _, t) = &self.lines[self.pos];
        if t == "-" || t.starts_with("- ") {
            self.list(indent)
        } else {
            self.map(indent)
        }
    }

    fn list(&mut self, indent: usize) -> Result<Yaml, String> {
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            let Some((n, ind, t)) = self.lines.get(self.pos).cloned() else {
                break;
            };
            if ind < indent {
                break;
            }
            if ind > indent {
                return Err(format!("line {n}: bad indentation"));
            }
            let Some(rest) = t.strip_prefix('-') else {
                break;
            };
            let rest = rest.trim_start();
            if rest.is_empty() {
                self.pos += 1;
                items.push(self.nested(indent)?);
            } else if is_mapping_entry(rest) {
                // `- key: value` starts a mapping whose keys sit at indent + 2.
                let inner = indent + (t.len() - rest.len());
                self.lines[self.pos] = (n, inner, rest.to_string());
                items.push(self.map(inner)?);
            } else {
                self.pos += 1;
                items.push(scalar_or_flow(rest, n)?);
            }
        }
        Ok(Yaml::List(items))
    }

    fn map(&mut self, indent: usize) -> Result<Yaml, String> {
        let mut entries: Vec<(String, Yaml)> = Vec::new();
        loop {
            self.skip_blank();
            let Some((n, ind, t)) = self.lines.get(self.pos).cloned() else {
                break;
            };
            if ind < indent {
                break;
            }
            if ind > indent {
                return Err(format!("line {n}: bad indentation"));
            }
            if t.starts_with("- ") || t == "-" {
                break;
            }
            let (k, rest) =
                split_key(&t).ok_or_else(|| format!("line {n}: not `key: value`: {t:?}"))?;
            if entries.iter().any(|(e, _)| *e == k) {
                return Err(format!("line {n}: duplicate key {k}"));
            }
            self.pos += 1;
            let value = if rest.is_empty() {
                self.nested(indent)?
            } else if rest == "|" || rest == "|-" || rest == ">" {
                self.block_scalar(indent)
            } else {
                scalar_or_flow(&rest, n)?
            };
            entries.push((k, value));
        }
        Ok(Yaml::Map(entries))
    }

    /// The value of a `key:` (or `-`) with nothing after it: a deeper block, a sequence at
    /// the same indentation, or else null (`workflow_dispatch:`).
    fn nested(&mut self, indent: usize) -> Result<Yaml, String> {
        self.skip_blank();
        match self.lines.get(self.pos).cloned() {
            Some((_, ind, _)) if ind > indent => self.block(ind),
            Some((_, ind, t)) if ind == indent && (t.starts_with("- ") || t == "-") => {
                self.list(indent)
            }
            _ => Ok(Yaml::Null),
        }
    }

    fn block_scalar(&mut self, indent: usize) -> Yaml {
        let mut text = String::new();
        let mut inner: Option<usize> = None;
        while let Some((_, ind, t)) = self.lines.get(self.pos).cloned() {
            if ind == usize::MAX {
                text.push('\n');
                self.pos += 1;
                continue;
            }
            if ind <= indent {
                break;
            }
            let base = *inner.get_or_insert(ind);
            text.push_str(&" ".repeat(ind.saturating_sub(base)));
            text.push_str(&t);
            text.push('\n');
            self.pos += 1;
        }
        Yaml::Str(text)
    }
}

fn is_mapping_entry(s: &str) -> bool {
    !s.starts_with('"') && !s.starts_with('\'') && split_key(s).is_some()
}

/// `key: rest` (rest may be empty); keys are plain or double-quoted.
fn split_key(t: &str) -> Option<(String, String)> {
    let (k, rest) = if let Some(q) = t.strip_prefix('"') {
        let end = q.find('"')?;
        let after = q[end + 1..].strip_prefix(':')?;
        (q[..end].to_string(), after)
    } else {
        let i = t
            .find(": ")
            .or_else(|| t.strip_suffix(':').map(|s| s.len()))?;
        (t[..i].to_string(), &t[i + 1..])
    };
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    if k.is_empty() || k.contains('{') || k.contains('[') {
        return None;
    }
    Some((k, rest.trim().to_string()))
}

fn scalar_or_flow(s: &str, n: usize) -> Result<Yaml, String> {
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| format!("line {n}: unterminated flow sequence"))?;
        let items = inner
            .split(',')
            .map(|i| i.trim())
            .filter(|i| !i.is_empty())
            .map(|i| scalar(i, n))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Yaml::List(items));
    }
    scalar(s, n)
}

fn scalar(s: &str, n: usize) -> Result<Yaml, String> {
    for q in ['"', '\''] {
        if let Some(inner) = s.strip_prefix(q) {
            let inner = inner
                .strip_suffix(q)
                .ok_or_else(|| format!("line {n}: unterminated string {s:?}"))?;
            return Ok(Yaml::Str(inner.to_string()));
        }
    }
    if s.starts_with('{') || s.starts_with('&') || s.starts_with('*') || s.starts_with('!') {
        return Err(format!("line {n}: outside the YAML subset: {s:?}"));
    }
    let s = s.split(" #").next().unwrap().trim_end();
    Ok(Yaml::Str(s.to_string()))
}

#[test]
fn yaml_reader_reads_and_refuses() {
    let doc = Yaml::parse(
        "a: 1\nb:\n  - x\n  - k: v\n    l: \"q\"\nc: [p, 'r']\nd: |\n  one\n    two\ne:\n- f\n",
    )
    .unwrap();
    assert_eq!(doc.get("a").unwrap().as_str(), Some("1"));
    let b = doc.get("b").unwrap().as_list().unwrap();
    assert_eq!(b[0].as_str(), Some("x"));
    assert_eq!(b[1].get("l").unwrap().as_str(), Some("q"));
    assert_eq!(
        doc.get("c").unwrap(),
        &Yaml::List(vec![Yaml::Str("p".into()), Yaml::Str("r".into())])
    );
    assert_eq!(doc.get("d").unwrap().as_str(), Some("one\n  two\n"));
    assert_eq!(doc.get("e").unwrap().as_list().unwrap().len(), 1);
    for bad in [
        "a: 1\n b: 2\n",
        "a: 1\na: 2\n",
        "a:\n\tb: 1\n",
        "a: [1, 2\n",
        "a: \"x\n",
        "just text\n",
    ] {
        assert!(Yaml::parse(bad).is_err(), "accepted {bad:?}");
    }
    // An empty value is null, as in `workflow_dispatch:`; a deeper block is not empty.
    let doc = Yaml::parse("a:\nb:\n  c: 1\nd:\n").unwrap();
    assert_eq!(doc.get("a"), Some(&Yaml::Null));
    assert_eq!(doc.get("b").unwrap().get("c").unwrap().as_str(), Some("1"));
    assert_eq!(doc.get("d"), Some(&Yaml::Null));
}

#[test]
fn images_workflow_is_well_formed() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/images.yml");
    let text = fs::read_to_string(&path).unwrap();
    let doc = Yaml::parse(&text).unwrap_or_else(|e| panic!("images.yml: {e}"));
    assert!(doc.get("name").is_some(), "name:");
    let on = doc.get("on").expect("on:");
    for trigger in ["push", "schedule", "workflow_dispatch", "pull_request"] {
        assert!(on.get(trigger).is_some(), "on.{trigger}");
    }
    assert_eq!(
        doc.get("permissions")
            .and_then(|p| p.get("packages"))
            .and_then(Yaml::as_str),
        Some("write"),
        "pushing to ghcr.io needs packages: write"
    );
    let jobs = doc.get("jobs").and_then(Yaml::as_map).expect("jobs:");
    assert!(!jobs.is_empty());
    let mut builds = false;
    for (name, job) in jobs {
        assert!(job.get("runs-on").is_some(), "jobs.{name}.runs-on");
        let steps = job
            .get("steps")
            .and_then(Yaml::as_list)
            .unwrap_or_else(|| panic!("jobs.{name}.steps"));
        for (i, step) in steps.iter().enumerate() {
            let run = step.get("run").and_then(Yaml::as_str);
            assert!(
                run.is_some() != step.get("uses").is_some(),
                "jobs.{name}.steps[{i}]: exactly one of run/uses"
            );
            if let Some(run) = run {
                // Expressions in a script are a script-injection hazard: pass them via env.
                assert!(
                    !run.contains("${{"),
                    "jobs.{name}.steps[{i}]: ${{{{ }}}} inside run:"
                );
                builds |= run.contains("images/build.sh");
            }
        }
        if let Some(m) = job.get("strategy").and_then(|s| s.get("matrix")) {
            assert_eq!(
                m.get("distro"),
                Some(&Yaml::List(vec![
                    Yaml::Str("ubuntu".into()),
                    Yaml::Str("fedora".into())
                ])),
                "both images"
            );
        }
    }
    assert!(builds, "a step runs images/build.sh");
    assert!(
        text.contains("linux/amd64,linux/arm64"),
        "multi-arch: linux/amd64 and linux/arm64"
    );
    assert!(text.contains("qemu-user-static"), "arm64 through qemu");
    // The names krunner's short names resolve to (and where, see
    // one_owner_names_the_repository_the_default_image_repo_and_the_pushed_images).
    let build = fs::read_to_string(images_dir().join("build.sh")).unwrap();
    assert!(build.contains("$repo/runner-$distro:$tag"));
    assert!(text.contains("--repo \"ghcr.io/$owner\""));
    // No runner in the images, so no runner version to build or tag: latest, the commit and
    // the date of the packages.
    assert!(text.contains("--tag latest"));
    assert!(text.contains("--tag \"$GITHUB_SHA\""));
    assert!(text.contains("--tag \"$(date -u +%Y%m%d)\""));
    for gone in ["runner-version", "runner_version", "inputs."] {
        assert!(!text.contains(gone), "images.yml still has {gone}");
    }
    assert_eq!(
        on.get("workflow_dispatch"),
        Some(&Yaml::Null),
        "workflow_dispatch takes no runner version"
    );
    assert!(
        !text.contains("GITHUB_TOKEN: ${{ secrets.GITHUB_TOKEN }}"),
        "build.sh asks GitHub's API nothing now: no token for it"
    );
}

// ---------------------------------------------------------------------------------------------
// One owner: the repository, krunner's default image repository, the images pushed
// ---------------------------------------------------------------------------------------------

/// `OWNER` of `https://github.com/OWNER/NAME`.
fn github_owner(url: &str) -> Option<&str> {
    let path = url
        .strip_prefix("https://github.com/")?
        .trim_end_matches('/');
    let (owner, name) = path.split_once('/')?;
    (!owner.is_empty() && !name.is_empty() && !name.contains('/')).then_some(owner)
}

/// `ghcr.io/<owner>` for the owner of Cargo.toml's `repository`: where the short names must
/// resolve.
fn expected_image_repo() -> String {
    let repository = env!("CARGO_PKG_REPOSITORY");
    let owner = github_owner(repository).unwrap_or_else(|| {
        panic!("Cargo.toml: repository {repository:?} is not https://github.com/OWNER/NAME")
    });
    format!("ghcr.io/{}", owner.to_ascii_lowercase())
}

/// The default of `option` in a command's `--help`: the `[default: …]` of its block.
fn help_default(help: &str, option: &str) -> Option<String> {
    let mut lines = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("{option} ")));
    lines.next()?;
    for l in lines {
        let t = l.trim();
        if t.starts_with('-') {
            return None; // the next option
        }
        if let Some(d) = t
            .strip_prefix("[default: ")
            .and_then(|d| d.strip_suffix(']'))
        {
            return Some(d.to_string());
        }
    }
    None
}

/// The default `--image-repo` that the built krunner shows.
fn krunner_default_image_repo() -> String {
    let td = TestDir::new("default-image-repo");
    let out = Krunner::new(&td).args(["pull", "--help"]).run();
    out.success();
    help_default(&out.stdout, "--image-repo")
        .unwrap_or_else(|| panic!("no [default: …] for --image-repo in\n{out}"))
}

/// Stand-ins for `buildah` (records its arguments) and `sudo` (drops its options, runs the
/// rest), to see what images/build.sh and the images workflow would push.
struct PushBench {
    td: TestDir,
    bin: PathBuf,
}

impl PushBench {
    fn new() -> PushBench {
        let td = TestDir::new("image-push");
        let bin = td.join("bin");
        fs::create_dir_all(&bin).unwrap();
        for (name, body) in [
            ("buildah", "printf '%s\\n' \"$*\" >>\"$BUILDAH_LOG\"\n"),
            (
                "sudo",
                "while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done\nexec \"$@\"\n",
            ),
        ] {
            let p = bin.join(name);
            fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        PushBench { td, bin }
    }

    /// Runs `program args…` from the repository's root with `env`; returns the references
    /// (`REPO/NAME:TAG`) that `buildah manifest push` was given.
    fn pushes(&self, program: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
        let log = self.td.join("buildah.log");
        let _ = fs::remove_file(&log);
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_clear()
            .env("PATH", path)
            .env("BUILDAH_LOG", &log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_tool(&mut cmd);
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("manifest push "))
            .map(|l| {
                let target = l.rsplit(' ').next().unwrap();
                target
                    .strip_prefix("docker://")
                    .unwrap_or_else(|| panic!("not a docker:// target: {l}"))
                    .to_string()
            })
            .collect()
    }
}

/// The `run:` script of the one step of workflow `file` (its text) whose script contains
/// `needle`.
fn workflow_step(text: &str, file: &str, needle: &str) -> String {
    let doc = Yaml::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
    let jobs = doc.get("jobs").and_then(Yaml::as_map).expect("jobs:");
    let scripts: Vec<&str> = jobs
        .iter()
        .filter_map(|(_, job)| job.get("steps").and_then(Yaml::as_list))
        .flatten()
        .filter_map(|step| step.get("run").and_then(Yaml::as_str))
        .filter(|run| run.contains(needle))
        .collect();
    assert_eq!(scripts.len(), 1, "one step of {file} runs {needle}");
    scripts[0].to_string()
}

/// The `run:` script of the images workflow's step that runs images/build.sh.
fn workflow_build_script(text: &str) -> String {
    workflow_step(text, "images.yml", "images/build.sh")
}

/// What the images workflow's build step pushes for both distributions when it runs on
/// `event` in a repository of `owner`, as GitHub runs a `run:` script (bash -e -o pipefail).
fn workflow_pushes(b: &PushBench, script: &str, owner: &str, event: &str) -> Vec<String> {
    let mut all = Vec::new();
    for distro in ["ubuntu", "fedora"] {
        all.extend(b.pushes(
            "bash",
            &["--noprofile", "--norc", "-eo", "pipefail", "-c", script],
            &[
                ("GITHUB_REPOSITORY_OWNER", owner),
                ("GITHUB_REPOSITORY", &format!("{owner}/krunner")),
                ("GITHUB_SERVER_URL", "https://github.com"),
                ("GITHUB_SHA", "0123456789abcdef0123456789abcdef01234567"),
                ("EVENT", event),
                ("DISTRO", distro),
            ],
        ));
    }
    all
}

/// The `run:` script of the release workflow's step that builds the release binary.
fn release_build_script() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/release.yml");
    let text = fs::read_to_string(path).unwrap();
    workflow_step(&text, "release.yml", "cargo build --release")
}

/// The `--image-repo` default the release workflow's build step builds into krunner when it
/// runs in a repository of `owner`: the KRUNNER_DEFAULT_IMAGE_REPO it hands to cargo, run as
/// GitHub runs a `run:` script, with stand-ins for git and cargo ("unset" if it hands none).
fn release_image_repo(script: &str, owner: &str) -> String {
    let td = TestDir::new("release-build");
    let bin = td.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let cargo = r#"printf '%s' "${KRUNNER_DEFAULT_IMAGE_REPO-unset}" >"$CARGO_LOG"
mkdir -p target/release
printf '#!/bin/sh\necho krunner\n' >target/release/krunner
chmod +x target/release/krunner
"#;
    for (name, body) in [("git", "exit 0\n"), ("cargo", cargo)] {
        let p = bin.join(name);
        fs::write(&p, format!("#!/bin/sh\n{body}")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let log = td.join("cargo.log");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    run_tool(
        Command::new("bash")
            .args(["--noprofile", "--norc", "-eo", "pipefail", "-c", script])
            .current_dir(td.path())
            .env_clear()
            .env("PATH", path)
            .env("CARGO_LOG", &log)
            .env("GITHUB_REPOSITORY_OWNER", owner)
            .env("GITHUB_WORKSPACE", td.path()),
    );
    fs::read_to_string(&log).unwrap_or_else(|e| panic!("the stand-in cargo did not run: {e}"))
}

/// Where each piece names the owner of krunner's images.
#[derive(Debug, Clone)]
struct Owners {
    /// Cargo.toml's `repository`.
    repository: String,
    /// The `--image-repo` default that krunner shows.
    default_image_repo: String,
    /// What the images workflow pushes (`REPO/NAME:TAG`) when it runs in that repository.
    workflow_pushes: Vec<String>,
    /// What `images/build.sh --push` pushes without `--repo`.
    build_sh_pushes: Vec<String>,
    /// The runner Containerfiles' default `BASE`.
    containerfile_bases: Vec<String>,
    /// The `--image-repo` default the release workflow builds into krunner's binaries.
    release_image_repo: String,
}

/// Checks that every piece names the owner of the repository; returns `ghcr.io/<owner>`.
fn check_one_owner(o: &Owners) -> Result<String, String> {
    let owner = github_owner(&o.repository)
        .ok_or_else(|| format!("repository {:?} is not on github.com", o.repository))?;
    let repo = format!("ghcr.io/{}", owner.to_ascii_lowercase());
    if o.default_image_repo != repo {
        return Err(format!(
            "krunner's default --image-repo is {}, but the repository is {}: expected {repo}",
            o.default_image_repo, o.repository
        ));
    }
    for (what, pushes) in [
        ("the images workflow", &o.workflow_pushes),
        ("images/build.sh", &o.build_sh_pushes),
    ] {
        if let Some(p) = pushes.iter().find(|p| !p.starts_with(&format!("{repo}/"))) {
            return Err(format!("{what} pushes {p}, not under {repo}"));
        }
        for name in ["runner-ubuntu", "runner-fedora"] {
            if !pushes
                .iter()
                .any(|p| p.starts_with(&format!("{repo}/{name}:latest")))
            {
                return Err(format!(
                    "{what} does not push {repo}/{name}:latest: {pushes:?}"
                ));
            }
        }
    }
    if o.release_image_repo != repo {
        return Err(format!(
            "the release workflow builds krunner with the default --image-repo {}, not {repo}",
            o.release_image_repo
        ));
    }
    if let Some(b) = o
        .containerfile_bases
        .iter()
        .find(|b| !b.starts_with(&format!("{repo}/runner-")))
    {
        return Err(format!(
            "a runner Containerfile builds on {b}, not under {repo}"
        ));
    }
    Ok(repo)
}

/// The pieces as they are in the repository.
fn owners(b: &PushBench, workflow_script: &str) -> Owners {
    let repository = env!("CARGO_PKG_REPOSITORY").to_string();
    let owner = github_owner(&repository).unwrap_or_default().to_string();
    let mut default_image_repo = krunner_default_image_repo();
    if let Some(built_with) = option_env!("KRUNNER_DEFAULT_IMAGE_REPO") {
        // A build for a fork's release names the fork's images on purpose.
        assert_eq!(default_image_repo, built_with);
        eprintln!("KRUNNER_DEFAULT_IMAGE_REPO={built_with} at build time: not compared");
        default_image_repo = expected_image_repo();
    }
    Owners {
        repository,
        default_image_repo,
        workflow_pushes: workflow_pushes(b, workflow_script, &owner, "push"),
        build_sh_pushes: b.pushes(
            "sh",
            &[
                "images/build.sh",
                "--push",
                "-p",
                "linux/amd64",
                "ubuntu",
                "fedora",
            ],
            &[],
        ),
        containerfile_bases: ["ubuntu", "fedora"]
            .iter()
            .map(|d| {
                let ins =
                    lint_containerfile(&images_dir().join(d).join("Containerfile"), &images_dir());
                arg_default(&ins, "BASE").unwrap_or_default()
            })
            .collect(),
        release_image_repo: release_image_repo(&release_build_script(), &owner),
    }
}

#[test]
fn one_owner_names_the_repository_the_default_image_repo_and_the_pushed_images() {
    let b = PushBench::new();
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/images.yml"),
    )
    .unwrap();
    let script = workflow_build_script(&text);
    let o = owners(&b, &script);
    let repo = check_one_owner(&o).unwrap_or_else(|e| panic!("{e}\n{o:#?}"));
    assert_eq!(repo, "ghcr.io/krunner", "github.com/krunner/krunner");
    assert_eq!(o.repository, "https://github.com/krunner/krunner");

    // The workflow pushes both images and their bases, multi-arch, under three tags each.
    let sha = "0123456789abcdef0123456789abcdef01234567";
    for name in [
        "runner-ubuntu",
        "runner-ubuntu-base",
        "runner-fedora",
        "runner-fedora-base",
    ] {
        let tags: Vec<&str> = o
            .workflow_pushes
            .iter()
            .filter_map(|p| p.strip_prefix(&format!("{repo}/{name}:")))
            .collect();
        assert_eq!(tags.len(), 3, "{name}: {tags:?}");
        assert_eq!(tags[..2], ["latest", sha], "{name}");
        assert!(
            tags[2].len() == 8 && tags[2].bytes().all(|c| c.is_ascii_digit()),
            "{name}: the third tag is the date, YYYYMMDD: {}",
            tags[2]
        );
    }
    // ghcr.io wants lower case: an owner spelt with capitals still pushes there.
    let pushes = workflow_pushes(&b, &script, "KRunner", "push");
    assert!(
        !pushes.is_empty() && pushes.iter().all(|p| p.starts_with("ghcr.io/krunner/")),
        "{pushes:?}"
    );
    // Pull requests build without pushing.
    assert_eq!(
        workflow_pushes(&b, &script, "krunner", "pull_request"),
        Vec::<String>::new()
    );
    // The release's binaries default to where the images workflow pushes, in lower case too.
    assert_eq!(
        release_image_repo(&release_build_script(), "KRunner"),
        "ghcr.io/krunner"
    );

    // The documentation names the same default, and no other owner.
    let readme =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("| `KRUNNER_IMAGE_REPO` | `{repo}` |")),
        "README.md: the --image-repo row shows the default {repo}"
    );
    let images_readme = fs::read_to_string(images_dir().join("README.md")).unwrap();
    assert!(
        images_readme.contains(&format!("The default repository is `{repo}`")),
        "images/README.md names the default {repo}"
    );
    // Wherever krunner's images are named, they are under that owner; the old owner is gone.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = files_under(&images_dir());
    files.extend(files_under(&root.join(".github/workflows")));
    files.extend(files_under(&root.join("src")));
    files.extend(files_under(&root.join("tests/it")));
    files.extend(["README.md", "Cargo.toml"].map(|f| root.join(f)));
    let mut named = 0;
    for f in files {
        let Ok(text) = fs::read_to_string(&f) else {
            continue;
        };
        if f.ends_with("tests/it/images.rs") {
            continue; // names other owners on purpose, to see the checks fail
        }
        assert!(
            !text.contains("ghcr.io/krunner-dev"),
            "{} still names ghcr.io/krunner-dev",
            f.display()
        );
        named += krunner_images_named(&text)
            .into_iter()
            .inspect(|(owner, image)| {
                assert_eq!(
                    format!("ghcr.io/{owner}"),
                    repo,
                    "{} names {image} under another owner",
                    f.display()
                )
            })
            .count();
    }
    assert!(named >= 3, "krunner's images are named only {named} times");
}

/// `(owner, ghcr.io/OWNER/runner-…)` for each of krunner's images named in `text`, but for
/// placeholders (`ghcr.io/$owner/…`, `ghcr.io/<owner>/…`, `ghcr.io/YOU/…`).
fn krunner_images_named(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("ghcr.io/") {
        let rest = &text[i + "ghcr.io/".len()..];
        // GitHub owners: letters, digits, hyphens.
        let owner: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        let Some(image) = rest[owner.len()..].strip_prefix('/') else {
            continue;
        };
        let is_krunners = ["runner-ubuntu", "runner-fedora"]
            .iter()
            .any(|n| image.starts_with(n));
        if is_krunners && !owner.is_empty() && !["you", "YOU"].contains(&owner.as_str()) {
            let name: String = image
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "-_.:".contains(*c))
                .collect();
            out.push((owner.clone(), format!("ghcr.io/{owner}/{name}")));
        }
    }
    out
}

#[test]
fn one_owner_check_fails_when_they_disagree() {
    let b = PushBench::new();
    let text = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(".github/workflows/images.yml"),
    )
    .unwrap();
    let script = workflow_build_script(&text);
    let good = owners(&b, &script);
    check_one_owner(&good).unwrap();

    let mut o = good.clone();
    o.default_image_repo = "ghcr.io/krunner-dev".into();
    assert!(
        check_one_owner(&o).is_err(),
        "a default under another owner"
    );

    let mut o = good.clone();
    o.repository = "https://github.com/someone-else/krunner".into();
    assert!(
        check_one_owner(&o).is_err(),
        "a repository of another owner"
    );

    // A workflow that pushes elsewhere, run as the real one is.
    let elsewhere = script.replace("ghcr.io/$owner", "ghcr.io/krunner-dev");
    assert_ne!(elsewhere, script);
    let mut o = good.clone();
    o.workflow_pushes = workflow_pushes(&b, &elsewhere, "krunner", "push");
    let e = check_one_owner(&o).expect_err("a workflow pushing under another owner");
    assert!(e.contains("ghcr.io/krunner-dev/runner-"), "{e}");

    // A release built for another owner's images.
    let release = release_build_script();
    let elsewhere = release.replace("ghcr.io/$owner", "ghcr.io/krunner-dev");
    assert_ne!(elsewhere, release);
    let mut o = good.clone();
    o.release_image_repo = release_image_repo(&elsewhere, "krunner");
    let e = check_one_owner(&o).expect_err("a release defaulting to another owner");
    assert!(
        e.contains("release workflow") && e.contains("ghcr.io/krunner-dev"),
        "{e}"
    );
    // One that hands cargo no default would give a fork's release krunner's own images.
    let unset = release.replace("export KRUNNER_DEFAULT_IMAGE_REPO=", "UNUSED=");
    assert_ne!(unset, release);
    let mut o = good.clone();
    o.release_image_repo = release_image_repo(&unset, "krunner");
    assert!(
        check_one_owner(&o).is_err(),
        "a release that sets no default"
    );

    let mut o = good.clone();
    o.workflow_pushes.retain(|p| !p.contains("/runner-fedora:"));
    let e = check_one_owner(&o).expect_err("a workflow that does not push runner-fedora");
    assert!(e.contains("runner-fedora"), "{e}");

    let mut o = good.clone();
    o.build_sh_pushes = b.pushes(
        "sh",
        &[
            "images/build.sh",
            "--push",
            "-p",
            "linux/amd64",
            "ubuntu",
            "fedora",
        ],
        &[("KRUNNER_IMAGE_REPO", "ghcr.io/krunner-dev")],
    );
    assert!(check_one_owner(&o).is_err(), "build.sh pushing elsewhere");

    let mut o = good;
    o.containerfile_bases[1] = "ghcr.io/krunner-dev/runner-fedora-base:latest".into();
    assert!(check_one_owner(&o).is_err(), "a base under another owner");

    assert_eq!(
        krunner_images_named(
            "FROM ghcr.io/krunner-dev/runner-fedora-base:latest, ghcr.io/$owner/runner-ubuntu, \
             ghcr.io/actions/actions-runner, ghcr.io/YOU/runner-ubuntu, ghcr.io/org/img"
        ),
        [(
            "krunner-dev".to_string(),
            "ghcr.io/krunner-dev/runner-fedora-base:latest".to_string()
        )],
        "the scan sees krunner's images under another owner, and only them"
    );
    assert_eq!(
        help_default(
            "      --image-repo <PREFIX>\n          Prefix\n\n          [env: X=]\n          [default: ghcr.io/x]\n\n      --next <N>\n          [default: 4]\n",
            "--image-repo"
        )
        .as_deref(),
        Some("ghcr.io/x")
    );
    assert_eq!(
        help_default(
            "      --image-repo <PREFIX>\n      --next <N>\n          [default: 4]\n",
            "--image-repo"
        ),
        None,
        "another option's default is not this one's"
    );
}

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

#[test]
fn runner_containerfiles_pin_the_runner_and_take_the_base_as_an_argument() {
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
            format!("ghcr.io/krunner-dev/runner-{distro}-base:latest"),
            "{distro}"
        );
        assert!(has_arg(&ins, "TARGETARCH"), "{distro}: ARG TARGETARCH");
        let version = arg_default(&ins, "RUNNER_VERSION").expect("RUNNER_VERSION default");
        let parts: Vec<u32> = version
            .split('.')
            .map(|p| p.parse().unwrap_or_else(|_| panic!("version {version}")))
            .collect();
        assert_eq!(parts.len(), 3, "{distro}: RUNNER_VERSION {version}");
        assert!(
            parts[0] == 2 && parts[1] >= 330,
            "{distro}: runner {version} is too old for GitHub"
        );
        for a in ["RUNNER_SHA256_X64", "RUNNER_SHA256_ARM64"] {
            let sum = arg_default(&ins, a).unwrap_or_default();
            assert!(
                sum.len() == 64 && sum.chars().all(|c| c.is_ascii_hexdigit()),
                "{distro}: {a} must be a SHA-256, not {sum:?}"
            );
        }
        let run = ins.iter().find(|i| i.keyword == "RUN").expect("a RUN step");
        assert!(
            run.args.contains("install-runner.sh"),
            "{distro}: runs install-runner.sh"
        );
    }
    // Both runner images get the same runner.
    let u = lint_containerfile(&images_dir().join("ubuntu/Containerfile"), &images_dir());
    let f = lint_containerfile(&images_dir().join("fedora/Containerfile"), &images_dir());
    for a in ["RUNNER_VERSION", "RUNNER_SHA256_X64", "RUNNER_SHA256_ARM64"] {
        assert_eq!(arg_default(&u, a), arg_default(&f, a), "{a} differs");
    }
    // The install script: the runner's release asset for the architecture, checked, at
    // /opt/actions-runner, with its dependencies, owned by runner.
    let script = fs::read_to_string(images_dir().join("common/install-runner.sh")).unwrap();
    for needle in [
        "dir=/opt/actions-runner",
        "actions-runner-linux-$arch-$RUNNER_VERSION.tar.gz",
        "https://github.com/actions/runner/releases/download/v$RUNNER_VERSION/",
        "sha256sum -c",
        "amd64 | x86_64)",
        "arch=x64",
        "arm64 | aarch64)",
        "arch=arm64",
        "bin/installdependencies.sh",
        "chown -R runner:runner \"$dir\"",
    ] {
        assert!(
            script.contains(needle),
            "install-runner.sh lacks {needle:?}"
        );
    }
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
/// sequences of scalars, plain and quoted scalars, `|` block scalars.
#[derive(Debug, Clone, PartialEq)]
enum Yaml {
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
                items.push(self.nested(indent, n)?);
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
                self.nested(indent, n)?
            } else if rest == "|" || rest == "|-" || rest == ">" {
                self.block_scalar(indent)
            } else {
                scalar_or_flow(&rest, n)?
            };
            entries.push((k, value));
        }
        Ok(Yaml::Map(entries))
    }

    /// The value of a `key:` (or `-`) with nothing after it: a deeper block, or a sequence at
    /// the same indentation.
    fn nested(&mut self, indent: usize, n: usize) -> Result<Yaml, String> {
        self.skip_blank();
        match self.lines.get(self.pos).cloned() {
            Some((_, ind, _)) if ind > indent => self.block(ind),
            Some((_, ind, t)) if ind == indent && (t.starts_with("- ") || t == "-") => {
                self.list(indent)
            }
            _ => Err(format!("line {n}: empty value")),
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
        "a:\n",
    ] {
        assert!(Yaml::parse(bad).is_err(), "accepted {bad:?}");
    }
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
    // The names krunner's short names resolve to.
    let build = fs::read_to_string(images_dir().join("build.sh")).unwrap();
    assert!(build.contains("$repo/runner-$distro:$tag"));
    assert!(text.contains("--repo \"ghcr.io/$owner\""));
    assert!(text.contains("--tag latest"));
}

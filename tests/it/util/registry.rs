//! Debian's `docker-registry` (distribution 2.8) on `127.0.0.1`, with its own configuration,
//! storage in a temporary directory, optional htpasswd (bcrypt) auth and an access log that
//! tests read to count requests. Images are pushed with `skopeo copy` from an OCI layout.
//!
//! The registry runs under a small `sh` watchdog that kills it when its stdin closes, so it
//! dies with the test process even when it is the shared instance (statics are never dropped).

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::oci::Image;
use super::{http, run_tool};

/// A running `docker-registry`.
pub struct Registry {
    host: String,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    log: PathBuf,
    creds: Option<(String, String)>,
}

/// One line of the access log.
#[derive(Debug, Clone)]
pub struct Request {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// The client's User-Agent.
    pub agent: String,
}

static SHARED: OnceLock<Registry> = OnceLock::new();

impl Registry {
    /// The plain (no auth) registry shared by all tests; each test uses its own repositories.
    pub fn shared() -> &'static Registry {
        SHARED.get_or_init(|| Registry::start(None))
    }

    /// Starts a registry; with `creds`, it requires them (htpasswd, bcrypt).
    pub fn start(creds: Option<(&str, &str)>) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("krunner-it-registry-")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let mut auth = String::new();
        if let Some((user, pass)) = creds {
            let htpasswd = run_tool(Command::new("htpasswd").args(["-Bbn", user, pass]));
            let file = dir.path().join("htpasswd");
            fs::write(&file, htpasswd.trim()).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: krunner-test\n    path: {}\n",
                file.display()
            );
        }
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  formatter: text\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n  \
             maintenance:\n    uploadpurging:\n      enabled: false\n\
             http:\n  addr: 127.0.0.1:0\n  secret: krunner-test-only\n{auth}",
            data.display()
        );
        let cfg = dir.path().join("config.yml");
        fs::write(&cfg, config).unwrap();
        let log = dir.path().join("registry.log");
        let logf = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        // The watchdog: start the registry, wait for our end of the pipe to close (drop or
        // process exit), then kill it and remove its directory (the shared instance is a
        // static, never dropped). KRUNNER_IT_KEEP keeps the directory and its log.
        let keep = std::env::var_os("KRUNNER_IT_KEEP").is_some();
        let mut child = Command::new("sh")
            .args([
                "-c",
                "docker-registry serve \"$1\" </dev/null & pid=$!; read _; kill $pid; wait $pid; \
                 [ -z \"$2\" ] || rm -rf \"$2\"",
                "sh",
            ])
            .arg(&cfg)
            .arg(if keep { Path::new("") } else { dir.path() })
            .env_remove("REGISTRY_HTTP_ADDR")
            .stdin(Stdio::piped())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .spawn()
            .expect("start docker-registry");
        let stdin = child.stdin.take();
        if keep {
            eprintln!("keeping registry directory {}", dir.path().display());
        }
        let _ = dir.keep();
        let mut reg = Registry {
            host: String::new(),
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            log,
            creds: creds.map(|(u, p)| (u.to_string(), p.to_string())),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = fs::read_to_string(&reg.log).unwrap_or_default();
            if let Some(i) = text.find("listening on ") {
                let rest = &text[i + "listening on ".len()..];
                let end = rest
                    .find(|c: char| c == '"' || c.is_whitespace())
                    .unwrap_or(rest.len());
                reg.host = rest[..end].to_string();
                break;
            }
            if let Ok(Some(status)) = reg.child.lock().unwrap().try_wait() {
                panic!("docker-registry exited ({status}):\n{text}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            if let Ok(r) = http(&reg.host, "GET", "/v2/", &[]) {
                if r.status == 200 || r.status == 401 {
                    break;
                }
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry at {} does not answer /v2/",
                reg.host
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        reg
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Pushes `image` as `<repo>:<tag>` with skopeo (all platforms of an index).
    pub fn push(&self, image: &Image, repo_tag: &str) {
        let layout = tempfile::Builder::new()
            .prefix("krunner-it-layout-")
            .tempdir()
            .unwrap();
        image.write_layout(layout.path(), "push");
        self.push_layout(layout.path(), "push", repo_tag, image.is_index());
    }

    /// Pushes tag `tag` of the OCI layout at `layout` as `<repo>:<tag>`.
    pub fn push_layout(&self, layout: &Path, tag: &str, repo_tag: &str, all: bool) {
        let mut cmd = Command::new("skopeo");
        // --preserve-digests: the registry must hold exactly our bytes (skopeo would
        // otherwise gzip uncompressed layers and rewrite the manifest and config).
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-tls-verify=false",
        ]);
        if all {
            cmd.arg("--all");
        }
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        cmd.arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{}/{repo_tag}", self.host));
        run_tool(&mut cmd);
    }

    /// Copies `<repo>:<tag>` into an OCI layout (tag `tag`) with skopeo.
    pub fn pull_layout(&self, repo_tag: &str, layout: &Path, tag: &str) {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
            "--src-tls-verify=false",
        ]);
        if let Some((u, p)) = &self.creds {
            cmd.arg(format!("--src-creds={u}:{p}"));
        }
        cmd.arg(format!("docker://{}/{repo_tag}", self.host))
            .arg(format!("oci:{}:{tag}", layout.display()));
        run_tool(&mut cmd);
    }

    /// The digest the registry reports for `<repo>:<tag>` (manifest or index).
    pub fn digest_of(&self, repo: &str, tag: &str) -> String {
        let accept = "application/vnd.oci.image.index.v1+json, \
                      application/vnd.oci.image.manifest.v1+json, \
                      application/vnd.docker.distribution.manifest.v2+json, \
                      application/vnd.docker.distribution.manifest.list.v2+json";
        let mut headers = vec![("Accept", accept.to_string())];
        if let Some((u, p)) = &self.creds {
            headers.push((
                "Authorization",
                format!("Basic {}", super::basic_auth_value(u, p)),
            ));
        }
        let hdrs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = http(
            &self.host,
            "HEAD",
            &format!("/v2/{repo}/manifests/{tag}"),
            &hdrs,
        )
        .expect("HEAD manifest");
        assert_eq!(r.status, 200, "HEAD {repo}:{tag}");
        r.header("docker-content-digest")
            .expect("Docker-Content-Digest")
            .to_string()
    }

    /// Every request in the access log so far. Waits until the log has been quiet for a
    /// moment, because the registry writes a line after the response has gone out.
    pub fn requests(&self) -> Vec<Request> {
        let mut last = u64::MAX;
        for _ in 0..50 {
            let len = fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
            if len == last {
                break;
            }
            last = len;
            std::thread::sleep(Duration::from_millis(60));
        }
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().filter_map(parse_access_line).collect()
    }

    /// The requests not made by skopeo, i.e. by krunner. (skopeo's blob-info cache makes
    /// it probe other repositories for blobs it pushes, so its requests are not countable.)
    pub fn client_requests(&self) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| !r.agent.starts_with("skopeo"))
            .collect()
    }

    /// How many non-skopeo requests with `method` have a path starting with `prefix`.
    pub fn count(&self, method: &str, prefix: &str) -> usize {
        self.client_requests()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .count()
    }

    /// The non-skopeo requests (any method) for repository `repo`'s manifests and blobs.
    pub fn repo_requests(&self, repo: &str) -> Vec<Request> {
        let prefix = format!("/v2/{repo}/");
        self.client_requests()
            .into_iter()
            .filter(|r| r.path.starts_with(&prefix))
            .collect()
    }
}

/// Parses `… "GET /v2/x/manifests/y HTTP/1.1" 200 …` (combined log format).
fn parse_access_line(line: &str) -> Option<Request> {
    let start = line.find('"')?;
    let rest = &line[start + 1..];
    let end = rest.find('"')?;
    let mut parts = rest[..end].split(' ');
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status = rest[end + 1..].split_whitespace().next()?.parse().ok()?;
    // The last quoted field is the User-Agent.
    let agent = line
        .trim_end()
        .strip_suffix('"')
        .and_then(|l| l.rsplit_once('"'))
        .map(|(_, a)| a.to_string())
        .unwrap_or_default();
    Some(Request {
        method,
        path,
        status,
        agent,
    })
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Closing the watchdog's stdin makes it kill the registry.
        drop(self.stdin.lock().unwrap().take());
        let _ = self.child.lock().unwrap().wait();
    }
}

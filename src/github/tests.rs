//! Client tests against a tiny canned HTTP server on 127.0.0.1 (one connection per request).
//!
//! They pin what the simulator-based integration tests can't see from outside: the exact
//! request sequence of the conflict and App flows, the sleeps the retry loop asks for (through
//! a recording sleeper, so nothing waits), and that secrets stay out of Debug and errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::secret::Secret;

const PAT: &str = "ghp_SECRETPATVALUE0123456789";
const JIT: &str = "eyJKSVQtU0VDUkVULUNPTkZJRyI6IngifQ==";

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
    /// Don't answer at all (timeout tests).
    hang: bool,
}

fn reply(status: u16, body: serde_json::Value) -> Reply {
    Reply {
        status,
        headers: vec![],
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
        hang: false,
    }
}

impl Reply {
    fn header(mut self, k: &'static str, v: impl Into<String>) -> Reply {
        self.headers.push((k, v.into()));
        self
    }
}

type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

struct Server {
    base: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    fn lines(&self) -> Vec<String> {
        self.seen()
            .into_iter()
            .map(|s| format!("{} {}", s.method, s.path))
            .collect()
    }
}

/// Serves each request with `handler(request, index)`.
async fn serve(handler: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler: Arc<Handler> = Arc::new(handler);
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut lines = head.split("\r\n");
                let mut first = lines.next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let headers: HashMap<String, String> = lines
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                    .collect();
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                let seen = Seen {
                    method,
                    path,
                    headers,
                    body,
                };
                let index = {
                    let mut log = log.lock().unwrap();
                    log.push(seen.clone());
                    log.len() - 1
                };
                let r = handler(&seen, index);
                if r.hang {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let mut out = format!(
                    "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                    r.status,
                    r.body.len()
                );
                for (k, v) in &r.headers {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&r.body);
                let _ = sock.write_all(out.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Server { base, seen }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        request_timeout: Duration::from_secs(5),
        ..RetryPolicy::default()
    }
}

/// A client whose sleeps are recorded, not slept.
fn client_with(
    base: &str,
    scope: Scope,
    auth: Auth,
    retry: RetryPolicy,
) -> (GitHub, Arc<Mutex<Vec<Duration>>>) {
    let sleeps = Arc::new(Mutex::new(Vec::new()));
    let log = sleeps.clone();
    let sleeper: Sleeper = Arc::new(move |d| {
        log.lock().unwrap().push(d);
        Box::pin(async {})
    });
    let cfg = ClientConfig {
        api_base: Url::parse(base).unwrap(),
        scope,
        auth,
        retry,
    };
    (GitHub::build(cfg, sleeper).unwrap(), sleeps)
}

fn pat_client(base: &str, scope: Scope) -> (GitHub, Arc<Mutex<Vec<Duration>>>) {
    client_with(base, scope, Auth::Pat(Secret::new(PAT)), retry())
}

fn repo() -> Scope {
    Scope::parse("repo", "octo/hello").unwrap()
}

fn runner_json(
    id: u64,
    name: &str,
    status: &str,
    busy: bool,
    labels: &[&str],
) -> serde_json::Value {
    json!({
        "id": id, "name": name, "os": "linux", "status": status, "busy": busy,
        "labels": labels.iter().map(|l| json!({"id": 1, "name": l, "type": "custom"})).collect::<Vec<_>>(),
    })
}

#[tokio::test]
async fn headers_and_pagination() {
    let srv = serve(|s, _| {
        let page: usize = s
            .path
            .rsplit("&page=")
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let count = if page == 1 { 100 } else { 50 };
        let runners: Vec<_> = (0..count)
            .map(|i| {
                runner_json(
                    (page * 1000 + i) as u64,
                    &format!("r{page}-{i}"),
                    "online",
                    false,
                    &["x"],
                )
            })
            .collect();
        reply(200, json!({"total_count": 150, "runners": runners}))
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "4321")
            .header("x-ratelimit-reset", "1700000000")
    })
    .await;
    let (gh, _) = pat_client(&srv.base, Scope::parse("org", "octo-org").unwrap());
    let runners = gh.list_runners().await.unwrap();
    assert_eq!(runners.len(), 150);
    assert_eq!(
        srv.lines(),
        [
            "GET /orgs/octo-org/actions/runners?per_page=100&page=1",
            "GET /orgs/octo-org/actions/runners?per_page=100&page=2"
        ]
    );
    let h = &srv.seen()[0].headers;
    assert_eq!(h["accept"], "application/vnd.github+json");
    assert_eq!(h["x-github-api-version"], "2022-11-28");
    assert_eq!(
        h["user-agent"],
        concat!("krunner/", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(h["authorization"], format!("Bearer {PAT}"));
    assert_eq!(gh.api_calls(), 2);
    assert_eq!(
        gh.rate_limit(),
        RateLimit {
            limit: Some(5000),
            remaining: Some(4321),
            reset_epoch: Some(1_700_000_000)
        }
    );
}

#[tokio::test]
async fn retries_5xx_with_backoff_then_succeeds() {
    let srv = serve(|_, i| match i {
        0 => reply(502, json!({"message": "Server Error"})),
        1 => reply(503, json!(null)),
        _ => reply(
            201,
            json!({"token": "AREGTOKEN", "expires_at": "2030-01-01T00:00:00Z"}),
        ),
    })
    .await;
    let (gh, sleeps) = pat_client(&srv.base, repo());
    let t = gh.registration_token().await.unwrap();
    assert_eq!(t.token.expose(), "AREGTOKEN");
    assert_eq!(t.expires_at, "2030-01-01T00:00:00Z");
    assert_eq!(gh.api_calls(), 3);
    let sleeps = sleeps.lock().unwrap().clone();
    assert_eq!(sleeps.len(), 2);
    assert!(sleeps[0] <= Duration::from_secs(1) && sleeps[1] <= Duration::from_secs(2));
    assert!(srv
        .lines()
        .iter()
        .all(|l| l == "POST /repos/octo/hello/actions/runners/registration-token"));
}

#[tokio::test]
async fn secondary_rate_limit_waits_then_gives_up() {
    let srv = serve(|_, _| {
        reply(
            403,
            json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                   "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}),
        )
        .header("x-ratelimit-remaining", "4000")
    })
    .await;
    let policy = RetryPolicy {
        max_retries: 2,
        ..retry()
    };
    let (gh, sleeps) = client_with(&srv.base, repo(), Auth::Pat(Secret::new(PAT)), policy);
    let e = gh.remove_token().await.unwrap_err();
    assert!(
        matches!(e, GitHubError::RateLimited { attempts: 3, .. }),
        "{e:?}"
    );
    assert_eq!(
        sleeps.lock().unwrap().clone(),
        [Duration::from_secs(60), Duration::from_secs(120)]
    );
    assert_eq!(gh.api_calls(), 3);
}

#[tokio::test]
async fn retry_after_and_primary_reset_are_honoured() {
    let reset = auth::now_epoch() + 30;
    let srv = serve(move |_, i| match i {
        0 => reply(429, json!({"message": "slow down"})).header("retry-after", "7"),
        1 => reply(403, json!({"message": "API rate limit exceeded"}))
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", reset.to_string()),
        _ => reply(200, runner_json(5, "a", "offline", false, &[])),
    })
    .await;
    let (gh, sleeps) = pat_client(&srv.base, repo());
    assert!(gh.get_runner(RunnerId(5)).await.unwrap().is_some());
    let sleeps = sleeps.lock().unwrap().clone();
    assert_eq!(sleeps[0], Duration::from_secs(7));
    assert!(sleeps[1] >= Duration::from_secs(29) && sleeps[1] <= Duration::from_secs(32));
}

#[tokio::test]
async fn permission_errors_are_not_retried_and_carry_hints() {
    let srv = serve(|s, _| {
        if s.path.contains("/orgs/") {
            reply(
                403,
                json!({"message": "Must have admin rights to Repository.",
                "documentation_url": "https://docs.github.com/rest/actions/self-hosted-runners"}),
            )
        } else {
            reply(401, json!({"message": "Bad credentials"}))
        }
    })
    .await;
    let (gh, sleeps) = pat_client(&srv.base, Scope::parse("org", "o").unwrap());
    let e = gh.list_runners().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, GitHubError::Forbidden { .. }), "{e:?}");
    assert!(text.contains("GET /orgs/o/actions/runners"), "{text}");
    assert!(
        text.contains("admin:org") && text.contains("Must have admin rights"),
        "{text}"
    );
    assert!(text.contains("https://docs.github.com/rest/actions/self-hosted-runners"));
    assert!(sleeps.lock().unwrap().is_empty());
    let (gh, _) = pat_client(&srv.base, repo());
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("`repo` scope"), "{e}");
    assert_eq!(e.status(), Some(401));
}

#[tokio::test]
async fn not_found_is_none_and_delete_of_gone_is_ok() {
    let srv = serve(|_, _| reply(404, json!({"message": "Not Found"}))).await;
    let (gh, _) = pat_client(&srv.base, repo());
    assert_eq!(gh.get_runner(RunnerId(9)).await.unwrap(), None);
    gh.delete_runner(RunnerId(9)).await.unwrap();
    assert_eq!(
        srv.lines(),
        [
            "GET /repos/octo/hello/actions/runners/9",
            "DELETE /repos/octo/hello/actions/runners/9"
        ]
    );
}

#[tokio::test]
async fn transport_errors_are_retried_then_reported() {
    // A port that was just free: connection refused.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let policy = RetryPolicy {
        max_retries: 3,
        ..retry()
    };
    let (gh, sleeps) = client_with(
        &format!("http://{addr}"),
        repo(),
        Auth::Pat(Secret::new(PAT)),
        policy,
    );
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Transport { .. }), "{e:?}");
    assert_eq!(sleeps.lock().unwrap().len(), 3);
    assert_eq!(gh.api_calls(), 4);
    assert!(!format!("{e:?}").contains(PAT));
}

#[tokio::test]
async fn every_request_has_a_timeout() {
    let srv = serve(|_, _| Reply {
        hang: true,
        ..reply(200, json!({}))
    })
    .await;
    let policy = RetryPolicy {
        max_retries: 1,
        request_timeout: Duration::from_millis(200),
        ..RetryPolicy::default()
    };
    let (gh, _) = client_with(&srv.base, repo(), Auth::Pat(Secret::new(PAT)), policy);
    let started = std::time::Instant::now();
    let e = gh.get_runner(RunnerId(1)).await.unwrap_err();
    match &e {
        GitHubError::Transport { source, .. } => assert!(source.is_timeout(), "{source:?}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(srv.seen().len(), 2);
}

#[tokio::test]
async fn jit_conflict_deletes_the_offline_runner_and_retries_once() {
    let srv = serve(|s, _| match (s.method.as_str(), s.path.as_str()) {
        ("POST", _) if s.body.contains("\"p-0-1\"") => {
            static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            if N.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                reply(409, json!({"message": "Already exists - A runner with the name p-0-1 already exists."}))
            } else {
                reply(201, json!({"runner": runner_json(77, "p-0-1", "offline", false, &["krunner-p"]),
                                  "encoded_jit_config": JIT}))
            }
        }
        ("GET", p) if p.contains("name=p-0-1") => reply(200, json!({"total_count": 1,
            "runners": [runner_json(70, "p-0-1", "offline", false, &["krunner-p"])]})),
        ("DELETE", "/orgs/o/actions/runners/70") => reply(204, json!(null)),
        _ => reply(500, json!({"message": format!("unexpected {} {}", s.method, s.path)})),
    })
    .await;
    let (gh, _) = pat_client(&srv.base, Scope::parse("org", "o").unwrap());
    let req = JitRequest {
        name: runner_name("p", 0, 1),
        runner_group_id: RunnerGroupId(3),
        labels: vec!["krunner-p".into(), "linux".into()],
        instance_label: "krunner-p".into(),
        work_folder: "_work".into(),
    };
    let cfg = gh.generate_jit_config(&req).await.unwrap();
    assert_eq!(cfg.runner.id, RunnerId(77));
    assert_eq!(cfg.encoded_jit_config.expose(), JIT);
    assert_eq!(
        srv.lines(),
        [
            "POST /orgs/o/actions/runners/generate-jitconfig",
            "GET /orgs/o/actions/runners?name=p-0-1&per_page=100",
            "DELETE /orgs/o/actions/runners/70",
            "POST /orgs/o/actions/runners/generate-jitconfig",
        ]
    );
    let body: serde_json::Value = serde_json::from_str(&srv.seen()[0].body).unwrap();
    assert_eq!(
        body,
        json!({"name": "p-0-1", "runner_group_id": 3, "labels": ["krunner-p", "linux"], "work_folder": "_work"})
    );
    assert_eq!(srv.seen()[0].headers["content-type"], "application/json");
    // Secrets stay out of Debug.
    assert!(!format!("{cfg:?}").contains(JIT));
}

#[tokio::test]
async fn jit_conflict_with_an_online_runner_is_an_error() {
    let srv = serve(|s, _| match s.method.as_str() {
        "POST" => reply(
            422,
            json!({"message": "Validation failed: runner already exists"}),
        ),
        "GET" => reply(
            200,
            json!({"total_count": 1,
            "runners": [runner_json(70, "p-0-1", "online", true, &["krunner-p"])]}),
        ),
        _ => reply(500, json!({"message": "must not delete"})),
    })
    .await;
    let (gh, _) = pat_client(&srv.base, repo());
    let req = JitRequest {
        name: "p-0-1".into(),
        runner_group_id: RunnerGroupId(1),
        labels: vec!["x".into()],
        instance_label: "krunner-p".into(),
        work_folder: "_work".into(),
    };
    let e = gh.generate_jit_config(&req).await.unwrap_err();
    assert!(matches!(e, GitHubError::NameConflict { .. }), "{e:?}");
    assert!(srv.lines().iter().all(|l| !l.starts_with("DELETE")));
    assert_eq!(srv.lines().len(), 2);
}

#[tokio::test]
async fn reconcile_deletes_only_our_offline_runners() {
    let srv = serve(|s, _| match s.method.as_str() {
        "GET" => reply(
            200,
            json!({"total_count": 6, "runners": [
                runner_json(1, "host-0-1", "offline", false, &["self-hosted", "krunner-host-i1"]),
                runner_json(2, "host-1-4", "online", false, &["krunner-host-i1"]),
                runner_json(3, "host-2-2", "offline", true, &["krunner-host-i1"]),
                runner_json(4, "host-3-1", "offline", false, &["self-hosted"]),
                runner_json(5, "hostile-0-1", "offline", false, &["krunner-host-i1"]),
                runner_json(6, "other-0-1", "offline", false, &["krunner-other"]),
            ]}),
        ),
        "DELETE" => reply(204, json!(null)),
        _ => reply(500, json!({})),
    })
    .await;
    let (gh, _) = pat_client(&srv.base, repo());
    let report = gh
        .reconcile("host", &instance_label("host", "i1"))
        .await
        .unwrap();
    let ids = |v: &[Runner]| v.iter().map(|r| r.id.0).collect::<Vec<_>>();
    assert_eq!(ids(&report.deleted), [1]);
    assert_eq!(ids(&report.kept), [2, 3]);
    // Every name of the prefix counts, ours or not: a new name must collide with none.
    assert_eq!(
        report.last_seq,
        std::collections::BTreeMap::from([(0, 1), (1, 4), (2, 2), (3, 1)])
    );
    let deletes: Vec<_> = srv
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(deletes, ["DELETE /repos/octo/hello/actions/runners/1"]);
    assert!(gh.reconcile("", "x").await.is_err());
}

#[tokio::test]
async fn runner_groups() {
    let srv = serve(|s, _| {
        if s.path.ends_with("&page=1") {
            let groups: Vec<_> = (0..100)
                .map(|i| json!({"id": 100 + i, "name": format!("g{i}"), "default": false}))
                .collect();
            reply(200, json!({"total_count": 102, "runner_groups": groups}))
        } else {
            reply(
                200,
                json!({"total_count": 102, "runner_groups": [
                {"id": 1, "name": "Default", "default": true},
                {"id": 7, "name": "Builders", "default": false}]}),
            )
        }
    })
    .await;
    // Repo scope: no request at all.
    let (gh, _) = pat_client(&srv.base, repo());
    assert_eq!(
        gh.runner_group_id("Default").await.unwrap(),
        RunnerGroupId(1)
    );
    assert!(matches!(
        gh.runner_group_id("Builders").await,
        Err(GitHubError::Config(_))
    ));
    assert_eq!(gh.api_calls(), 0);
    let (gh, _) = pat_client(&srv.base, Scope::parse("enterprise", "ent").unwrap());
    assert_eq!(
        gh.runner_group_id("Builders").await.unwrap(),
        RunnerGroupId(7)
    );
    assert_eq!(
        gh.runner_group_id("builders").await.unwrap(),
        RunnerGroupId(7)
    );
    assert_eq!(
        srv.lines()[..2],
        [
            "GET /enterprises/ent/actions/runner-groups?per_page=100&page=1",
            "GET /enterprises/ent/actions/runner-groups?per_page=100&page=2"
        ]
    );
    let e = gh.runner_group_id("Nope").await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, GitHubError::RunnerGroupNotFound { .. }));
    assert!(
        text.contains("Default") && text.contains("Builders"),
        "{text}"
    );
}

#[tokio::test]
async fn app_flow_discovers_caches_and_renews() {
    let (pem, _, public) = auth::tests::test_key();
    let tokens = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let minted = tokens.clone();
    let srv = serve(move |s, _| match (s.method.as_str(), s.path.as_str()) {
        ("GET", "/orgs/o/installation") => reply(200, json!({"id": 55, "account": {"login": "o"}})),
        ("POST", "/app/installations/55/access_tokens") => {
            let n = minted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            reply(
                201,
                json!({"token": format!("ghs_inst{n}"), "expires_at": "2099-01-01T00:00:00Z"}),
            )
        }
        // The first installation token gets revoked after one use.
        ("GET", "/orgs/o/actions/runners/1")
            if s.headers["authorization"] == "Bearer ghs_inst0" =>
        {
            reply(200, runner_json(1, "a", "online", false, &[]))
        }
        ("GET", "/orgs/o/actions/runners/2")
            if s.headers["authorization"] == "Bearer ghs_inst0" =>
        {
            reply(401, json!({"message": "Bad credentials"}))
        }
        ("GET", _) if s.headers["authorization"] == "Bearer ghs_inst1" => {
            reply(200, runner_json(2, "b", "offline", false, &[]))
        }
        _ => reply(500, json!({"message": "unexpected"})),
    })
    .await;
    let auth = Auth::App {
        app_id: 321,
        key_pem: Secret::new(pem.clone()),
        installation_id: None,
    };
    let (gh, _) = client_with(&srv.base, Scope::parse("org", "o").unwrap(), auth, retry());
    // Concurrent first calls share one discovery and one token.
    let (a, b) = tokio::join!(gh.get_runner(RunnerId(1)), gh.get_runner(RunnerId(1)));
    assert_eq!(a.unwrap().unwrap().id, RunnerId(1));
    assert_eq!(b.unwrap().unwrap().id, RunnerId(1));
    assert_eq!(tokens.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A 401 renews the token once and resends.
    assert_eq!(
        gh.get_runner(RunnerId(2)).await.unwrap().unwrap().id,
        RunnerId(2)
    );
    assert_eq!(tokens.load(std::sync::atomic::Ordering::SeqCst), 2);
    let seen = srv.seen();
    let lines = srv.lines();
    assert_eq!(lines[0], "GET /orgs/o/installation");
    assert_eq!(lines[1], "POST /app/installations/55/access_tokens");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.ends_with("/installation"))
            .count(),
        1
    );
    // The App calls carry a JWT signed by the App key.
    let jwt = seen[0].headers["authorization"]
        .strip_prefix("Bearer ")
        .unwrap();
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.set_required_spec_claims(&["exp", "iat", "iss"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_rsa_der(&public),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["iss"], "321");
    assert!(!format!("{gh:?}").contains("BEGIN"));
}

#[tokio::test]
async fn app_enterprise_discovery_matches_the_slug() {
    let (_, pkcs1, _) = auth::tests::test_key();
    let srv = serve(|s, _| match (s.method.as_str(), s.path.as_str()) {
        ("GET", p) if p.starts_with("/app/installations?") => reply(
            200,
            json!([
                {"id": 1, "account": {"login": "someone"}},
                {"id": 2, "account": {"slug": "big-ent", "name": "Big"}},
            ]),
        ),
        ("POST", "/app/installations/2/access_tokens") => reply(
            201,
            json!({"token": "ghs_e", "expires_at": "2099-01-01T00:00:00Z"}),
        ),
        ("GET", "/enterprises/big-ent/actions/runners/4") => {
            reply(200, runner_json(4, "x", "online", false, &[]))
        }
        _ => reply(500, json!({})),
    })
    .await;
    let auth = Auth::App {
        app_id: 1,
        key_pem: Secret::new(pkcs1),
        installation_id: None,
    };
    let scope = Scope::parse("enterprise", "big-ent").unwrap();
    let (gh, _) = client_with(&srv.base, scope.clone(), auth.clone(), retry());
    assert!(gh.get_runner(RunnerId(4)).await.unwrap().is_some());
    // A scope the App is not installed on.
    let (gh, _) = client_with(
        &srv.base,
        Scope::parse("enterprise", "nope").unwrap(),
        auth,
        retry(),
    );
    let e = gh.get_runner(RunnerId(4)).await.unwrap_err();
    assert!(
        matches!(e, GitHubError::InstallationNotFound { .. }),
        "{e:?}"
    );
}

#[tokio::test]
async fn secrets_stay_out_of_debug_and_errors() {
    let srv = serve(|_, _| reply(422, json!({"message": "Validation failed"}))).await;
    let cfg = ClientConfig {
        api_base: Url::parse(&srv.base).unwrap(),
        scope: repo(),
        auth: Auth::Pat(Secret::new(PAT)),
        retry: retry(),
    };
    let gh = GitHub::new(cfg.clone()).unwrap();
    let jit = JitConfig {
        runner: Runner {
            id: RunnerId(1),
            name: "a".into(),
            status: "offline".into(),
            busy: false,
            labels: vec![],
        },
        encoded_jit_config: Secret::new(JIT),
    };
    let e = gh.delete_runner(RunnerId(1)).await.unwrap_err();
    assert!(matches!(e, GitHubError::Api { status: 422, .. }), "{e:?}");
    for text in [
        format!("{gh:?}"),
        format!("{cfg:?}"),
        format!("{jit:?}"),
        format!("{e:?}"),
        e.to_string(),
    ] {
        assert!(!text.contains(PAT), "{text}");
        assert!(!text.contains(JIT), "{text}");
    }
}

#[test]
fn config_is_checked_before_any_request() {
    let base = |u: &str| ClientConfig {
        api_base: Url::parse(u).unwrap(),
        scope: repo(),
        auth: Auth::Pat(Secret::new(PAT)),
        retry: RetryPolicy::default(),
    };
    assert!(GitHub::new(base("https://api.github.com")).is_ok());
    let e = GitHub::new(base("http://github.example.com")).unwrap_err();
    assert!(e.to_string().contains("http://github.example.com"), "{e}");
    let mut empty = base("https://api.github.com");
    empty.auth = Auth::Pat(Secret::new(" "));
    assert!(matches!(GitHub::new(empty), Err(GitHubError::Config(_))));
}

/// A client that really sleeps (tokio's timer), for the tests of waits that must end.
fn sleeping_client(base: &str) -> GitHub {
    let cfg = ClientConfig {
        api_base: Url::parse(base).unwrap(),
        scope: repo(),
        auth: Auth::Pat(Secret::new(PAT)),
        // Longer than HURRY_TIMEOUT, so a stalled request ends by the hurry, not by this.
        retry: RetryPolicy {
            request_timeout: Duration::from_secs(60),
            ..RetryPolicy::default()
        },
    };
    GitHub::build(cfg, http::tokio_sleeper()).unwrap()
}

#[tokio::test]
async fn the_mutation_lock_is_not_held_while_a_call_waits_to_retry() {
    let srv = serve(|s, _| {
        if s.path.ends_with("/registration-token") {
            reply(429, json!({"message": "slow down"})).header("retry-after", "3600")
        } else {
            reply(
                201,
                json!({"token": "AREMOVE", "expires_at": "2030-01-01T00:00:00Z"}),
            )
        }
    })
    .await;
    let gh = sleeping_client(&srv.base);
    let waiting = tokio::spawn({
        let gh = gh.clone();
        async move { gh.registration_token().await }
    });
    // Until the first call is in its (15 min, capped) wait.
    while srv.seen().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = tokio::time::timeout(Duration::from_secs(20), gh.remove_token()).await;
    assert!(
        matches!(other, Ok(Ok(_))),
        "a mutating call waited behind one sleeping out a retry-after: {other:?}"
    );
    waiting.abort();
}

#[tokio::test]
async fn hurry_ends_rate_limit_waits_and_stalled_requests() {
    let srv = serve(|s, _| {
        if s.path.ends_with("/runners/1") {
            reply(403, json!({"message": "API rate limit exceeded"}))
                .header("x-ratelimit-remaining", "0")
                .header("x-ratelimit-reset", (auth::now_epoch() + 3000).to_string())
        } else {
            Reply {
                hang: true,
                ..reply(200, json!({}))
            }
        }
    })
    .await;
    let stop = Cancel::default();
    let gh = sleeping_client(&srv.base).hurry_on(&stop);
    let limited = tokio::spawn({
        let gh = gh.clone();
        async move { gh.delete_runner(RunnerId(1)).await }
    });
    let stalled = tokio::spawn({
        let gh = gh.clone();
        async move { gh.delete_runner(RunnerId(2)).await }
    });
    while srv.seen().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let hurried = std::time::Instant::now();
    stop.cancel();
    let limited = tokio::time::timeout(Duration::from_secs(20), limited).await;
    assert!(
        matches!(
            limited,
            Ok(Ok(Err(GitHubError::RateLimited { attempts: 1, .. })))
        ),
        "{limited:?}"
    );
    let stalled = tokio::time::timeout(Duration::from_secs(20), stalled).await;
    assert!(
        matches!(stalled, Ok(Ok(Err(GitHubError::Abandoned { .. })))),
        "{stalled:?}"
    );
    // The stalled request had HURRY_TIMEOUT more, not its 60 s timeout times the retries.
    assert!(hurried.elapsed() < Duration::from_secs(15));
    // Once hurried, a call makes one attempt and never waits.
    let again = tokio::time::timeout(Duration::from_secs(20), gh.delete_runner(RunnerId(1))).await;
    assert!(
        matches!(again, Ok(Err(GitHubError::RateLimited { attempts: 1, .. }))),
        "{again:?}"
    );
}

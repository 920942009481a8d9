//! krunner's GitHub client (`krunner::github`) against the GitHub API simulator
//! ([`crate::util::github_sim`]): every scope end to end, the GHES base, PAT and GitHub App
//! auth, JIT configs, the registration-token fallback, reconcile, "already exists", and each
//! fault the simulator injects. Retry policies are shrunk so nothing waits long; the waits
//! that GitHub dictates (`retry-after`, rate-limit resets) are a second or two and measured.

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant, UNIX_EPOCH};

use base64::Engine as _;
use krunner::github::{
    api_base, instance_label, runner_name, Auth, ClientConfig, GitHub, GitHubError, JitRequest,
    RetryPolicy, RunnerGroupId, RunnerId, Scope,
};
use krunner::secret::Secret;
use serde_json::Value;

use crate::util::github_sim::{AuthKind, Fault, GitHubSim, Logged, RunnerState, SimScope};

const PAT: &str = "ghp_simTestToken0123456789abcdefABCDEF";
const APP_ID: u64 = 4242;

/// Small delays so retries cost milliseconds; a generous timeout unless a test shrinks it.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(200),
        secondary_min_wait: Duration::from_millis(200),
        max_wait: Duration::from_secs(15 * 60),
        request_timeout: Duration::from_secs(5),
    }
}

fn client_with(sim: &GitHubSim, scope: Scope, auth: Auth, retry: RetryPolicy) -> GitHub {
    let api_base = api_base(None, Some(&sim.api_url())).unwrap();
    GitHub::new(ClientConfig {
        api_base,
        scope,
        auth,
        retry,
    })
    .unwrap()
}

fn pat_client(sim: &GitHubSim, kind: &str, principal: &str) -> GitHub {
    let scope = Scope::parse(kind, principal).unwrap();
    client_with(sim, scope, Auth::Pat(Secret::new(PAT)), fast_retry())
}

/// A simulator with one scope and the PAT allowed on it.
fn sim_with(kind: &str, principal: &str) -> (GitHubSim, SimScope) {
    let sim = GitHubSim::start();
    let scope = sim.add_scope(SimScope::parse(kind, principal).unwrap());
    sim.add_pat(PAT, &[&scope]);
    (sim, scope)
}

fn jit_request(name: &str, group: RunnerGroupId, prefix: &str) -> JitRequest {
    JitRequest {
        name: name.to_string(),
        runner_group_id: group,
        labels: vec![instance_label(prefix, "i1"), "krunner".into()],
        instance_label: instance_label(prefix, "i1"),
        work_folder: "_work".into(),
    }
}

/// The files of an `encoded_jit_config`, each decoded: name → JSON content.
fn decode_jit(encoded: &str) -> HashMap<String, Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let files: HashMap<String, String> =
        serde_json::from_slice(&b64.decode(encoded).expect("base64 config")).expect("JSON map");
    files
        .into_iter()
        .map(|(name, content)| {
            let bytes = b64.decode(content).expect("base64 file");
            (name, serde_json::from_slice(&bytes).expect("JSON file"))
        })
        .collect()
}

/// The requests that reached `path_prefix`, in order.
fn hits(sim: &GitHubSim, method: &str, path_prefix: &str) -> Vec<Logged> {
    sim.requests()
        .into_iter()
        .filter(|l| l.method == method && l.path.starts_with(path_prefix))
        .collect()
}

/// Group resolution, JIT, list, get (offline, then online), delete, and delete again, in one
/// scope; `api` is the scope's API path (`/orgs/acme`).
async fn lifecycle(sim: &GitHubSim, gh: &GitHub, scope: &SimScope, group: &str, want: u64) {
    let api = scope.path();
    let group_id = gh.runner_group_id(group).await.unwrap();
    assert_eq!(group_id, RunnerGroupId(want), "{}", sim.log_text());

    let name = runner_name("host1", 3, 1);
    assert_eq!(name, "host1-3-1");
    let jit = gh
        .generate_jit_config(&jit_request(&name, group_id, "host1"))
        .await
        .unwrap();
    assert_eq!(jit.runner.name, name);
    let held = sim
        .runner_by_name(&name)
        .expect("the simulator has the runner");
    assert_eq!(jit.runner.id, RunnerId(held.id));
    assert_eq!(&held.scope, scope);
    assert_eq!(held.runner_group_id, want);
    assert!(held.has_label("krunner-host1-i1") && held.has_label("krunner"));

    let listed = gh.list_runners().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, jit.runner.id);
    assert!(listed[0].labels.iter().any(|l| l == "krunner-host1-i1"));

    let got = gh.get_runner(jit.runner.id).await.unwrap().unwrap();
    assert!(!got.is_online() && !got.busy);
    sim.set_runner_state(held.id, RunnerState::Busy);
    let got = gh.get_runner(jit.runner.id).await.unwrap().unwrap();
    assert!(got.is_online() && got.busy);
    sim.set_runner_state(held.id, RunnerState::Offline);

    gh.delete_runner(jit.runner.id).await.unwrap();
    assert!(sim.runner(held.id).is_none());
    assert_eq!(gh.get_runner(jit.runner.id).await.unwrap(), None);
    // Already gone counts as deleted.
    gh.delete_runner(jit.runner.id).await.unwrap();

    let jit_path = format!("{api}/actions/runners/generate-jitconfig");
    assert_eq!(sim.count("POST", &jit_path), 1, "{}", sim.log_text());
    assert_eq!(
        sim.count("DELETE", &format!("{api}/actions/runners/")),
        2,
        "{}",
        sim.log_text()
    );
    for l in sim.requests() {
        assert!(
            l.path.starts_with(&api) || l.path.starts_with("/app"),
            "a request outside the scope: {} {}",
            l.method,
            l.path
        );
        let ua = l.user_agent.as_deref().unwrap_or("");
        assert!(ua.starts_with("krunner/"), "User-Agent {ua:?}");
    }
}

#[tokio::test]
async fn repo_scope_end_to_end() {
    let (sim, scope) = sim_with("repo", "octo/app");
    let gh = pat_client(&sim, "repo", "octo/app");
    lifecycle(&sim, &gh, &scope, "Default", 1).await;
    // Repositories have no groups API: the client must not ask for it.
    assert_eq!(sim.count("GET", "/repos/octo/app/actions/runner-groups"), 0);
    let e = gh.runner_group_id("gpu").await.unwrap_err();
    assert!(e.to_string().contains("gpu"), "{e}");
    for l in sim.requests() {
        assert_eq!(l.auth, AuthKind::Pat);
    }
}

#[tokio::test]
async fn org_scope_end_to_end() {
    let (sim, scope) = sim_with("org", "acme");
    let gpu = sim.add_runner_group(&scope, "gpu");
    let gh = pat_client(&sim, "org", "acme");
    lifecycle(&sim, &gh, &scope, "gpu", gpu).await;
    assert_eq!(
        gh.runner_group_id("Default").await.unwrap(),
        RunnerGroupId(1)
    );
    let e = gh.runner_group_id("nope").await.unwrap_err();
    assert!(
        matches!(e, GitHubError::RunnerGroupNotFound { .. }),
        "{e:?}"
    );
    let shown = e.to_string();
    assert!(
        shown.contains("nope") && shown.contains("Default") && shown.contains("gpu"),
        "{shown}"
    );
}

#[tokio::test]
async fn enterprise_scope_end_to_end() {
    let (sim, scope) = sim_with("enterprise", "bigcorp");
    let gh = pat_client(&sim, "enterprise", "bigcorp");
    lifecycle(&sim, &gh, &scope, "Default", 1).await;
    assert!(sim.count("GET", "/enterprises/bigcorp/actions/runner-groups") >= 1);
}

#[tokio::test]
async fn ghes_base_path() {
    let sim = GitHubSim::start_at("/api/v3");
    let scope = sim.add_org("acme");
    sim.add_pat(PAT, &[&scope]);
    let base = api_base(None, Some(&sim.api_url())).unwrap();
    assert!(base.as_str().starts_with(&sim.api_url()), "{base}");
    let gh = pat_client(&sim, "org", "acme");
    lifecycle(&sim, &gh, &scope, "Default", 1).await;
    // (Anything sent outside /api/v3 is a 404, so the lifecycle would have failed.)

    // How the base is chosen.
    assert_eq!(
        api_base(Some("ghe.example.com"), None).unwrap().as_str(),
        "https://ghe.example.com/api/v3"
    );
    let default = api_base(None, None).unwrap();
    assert_eq!(
        (default.scheme(), default.host_str()),
        ("https", Some("api.github.com"))
    );
    assert!(api_base(None, Some("http://ghe.example.com/api/v3")).is_err());
    assert!(api_base(None, Some("http://localhost:8080/api/v3")).is_ok());
}

// ---- GitHub App ----

/// One RSA key per test process: (PKCS#1 PEM as GitHub hands it out, PKCS#8 PEM, public key
/// PEM).
pub(crate) fn app_key() -> &'static (String, String, String) {
    static KEY: OnceLock<(String, String, String)> = OnceLock::new();
    KEY.get_or_init(|| {
        use aws_lc_rs::encoding::AsDer as _;
        use aws_lc_rs::signature::KeyPair as _;
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = kp.as_der().unwrap().as_ref().to_vec();
        let pkcs1 = pkcs8_inner_key(&pkcs8).to_vec();
        (
            pem("RSA PRIVATE KEY", &pkcs1),
            pem("PRIVATE KEY", &pkcs8),
            pem("RSA PUBLIC KEY", kp.public_key().as_ref()),
        )
    })
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// The PKCS#1 key inside a PKCS#8 `PrivateKeyInfo`: SEQUENCE { INTEGER, SEQUENCE, OCTET
/// STRING key }.
fn pkcs8_inner_key(der: &[u8]) -> &[u8] {
    // (contents, rest) of the DER element at the start of `d`.
    fn element(d: &[u8]) -> (&[u8], &[u8]) {
        let (len, head) = match d[1] {
            l if l < 0x80 => (usize::from(l), 2),
            l => {
                let n = usize::from(l & 0x7f);
                let len = d[2..2 + n]
                    .iter()
                    .fold(0usize, |a, b| (a << 8) | usize::from(*b));
                (len, 2 + n)
            }
        };
        (&d[head..head + len], &d[head + len..])
    }
    let (info, _) = element(der);
    let (_version, rest) = element(info);
    let (_algorithm, rest) = element(rest);
    assert_eq!(rest[0], 0x04, "OCTET STRING");
    element(rest).0
}

fn app_auth(key_pem: &str, installation_id: Option<u64>) -> Auth {
    Auth::App {
        app_id: APP_ID,
        key_pem: Secret::new(key_pem),
        installation_id,
    }
}

/// A simulator with the App installed on `kind principal`; returns the installation id.
fn app_sim(kind: &str, principal: &str) -> (GitHubSim, SimScope, u64) {
    let sim = GitHubSim::start();
    let scope = sim.add_scope(SimScope::parse(kind, principal).unwrap());
    // Another installation first, so discovery has to pick.
    let other = sim.add_org("someone-else");
    sim.add_app(APP_ID, &app_key().2);
    sim.add_installation(APP_ID, &[&other]);
    let id = sim.add_installation(APP_ID, &[&scope]);
    (sim, scope, id)
}

/// The App flow for one scope: the installation is discovered through `discovery` (once),
/// one token serves every call, JWTs only go to App endpoints.
async fn app_flow(kind: &str, principal: &str, discovery: &str, key_pem: &str) {
    let (sim, scope, inst) = app_sim(kind, principal);
    let gh = client_with(
        &sim,
        Scope::parse(kind, principal).unwrap(),
        app_auth(key_pem, None),
        fast_retry(),
    );
    lifecycle(&sim, &gh, &scope, "Default", 1).await;
    for _ in 0..3 {
        gh.list_runners().await.unwrap();
    }
    let log = sim.log_text();
    assert_eq!(sim.count("GET", discovery), 1, "{log}");
    let token_path = format!("/app/installations/{inst}/access_tokens");
    assert_eq!(
        sim.count("POST", &token_path),
        1,
        "one token for every call\n{log}"
    );
    assert_eq!(sim.installation_tokens_issued(), 1, "{log}");
    for l in sim.requests() {
        let want = if l.path.starts_with("/app") || l.path.ends_with("/installation") {
            AuthKind::Jwt
        } else {
            AuthKind::Installation
        };
        assert_eq!(l.auth, want, "{} {}\n{log}", l.method, l.path);
        assert!(l.status < 400 || l.status == 404, "{log}");
    }
}

#[tokio::test]
async fn app_flow_repo_discovers_the_installation() {
    app_flow(
        "repo",
        "octo/app",
        "/repos/octo/app/installation",
        &app_key().0,
    )
    .await;
}

#[tokio::test]
async fn app_flow_org_discovers_the_installation() {
    app_flow("org", "acme", "/orgs/acme/installation", &app_key().0).await;
}

#[tokio::test]
async fn app_flow_enterprise_discovers_the_installation_pkcs8_key() {
    app_flow("enterprise", "bigcorp", "/app/installations", &app_key().1).await;
}

#[tokio::test]
async fn app_token_is_renewed_when_the_simulator_expires_it() {
    let (sim, _scope, inst) = app_sim("org", "acme");
    let gh = client_with(
        &sim,
        Scope::Org("acme".into()),
        app_auth(&app_key().0, Some(inst)),
        fast_retry(),
    );
    gh.list_runners().await.unwrap();
    gh.list_runners().await.unwrap();
    // A given installation id is used as is: no discovery.
    assert_eq!(sim.count("GET", "/orgs/acme/installation"), 0);
    assert_eq!(sim.installation_tokens_issued(), 1);

    // Revoked behind the client's back: the 401 makes it fetch a new one, once.
    sim.expire_installation_tokens();
    gh.list_runners().await.unwrap();
    assert_eq!(sim.installation_tokens_issued(), 2, "{}", sim.log_text());
    let statuses: Vec<u16> = hits(&sim, "GET", "/orgs/acme/actions/runners")
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [200, 200, 401, 200]);
    gh.list_runners().await.unwrap();
    assert_eq!(
        sim.installation_tokens_issued(),
        2,
        "the new token is cached"
    );

    // Tokens that expire within the refresh margin are renewed before use, not after a 401.
    sim.set_installation_token_ttl(Duration::from_secs(120));
    sim.expire_installation_tokens();
    gh.list_runners().await.unwrap(); // 401, renew (a 2-minute token)
    let before = sim.installation_tokens_issued();
    let unauthorized = sim.requests().iter().filter(|l| l.status == 401).count();
    gh.list_runners().await.unwrap();
    gh.list_runners().await.unwrap();
    assert_eq!(
        sim.installation_tokens_issued(),
        before + 2,
        "{}",
        sim.log_text()
    );
    assert_eq!(
        sim.requests().iter().filter(|l| l.status == 401).count(),
        unauthorized,
        "renewed ahead of expiry\n{}",
        sim.log_text()
    );
}

#[tokio::test]
async fn app_errors_name_the_cause_and_hide_the_jwt() {
    // The App is registered with another key: every JWT is refused.
    let sim = GitHubSim::start();
    let scope = sim.add_org("acme");
    let other = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    sim.add_app(
        APP_ID,
        &pem(
            "RSA PUBLIC KEY",
            aws_lc_rs::signature::KeyPair::public_key(&other).as_ref(),
        ),
    );
    sim.add_installation(APP_ID, &[&scope]);
    let gh = client_with(
        &sim,
        Scope::Org("acme".into()),
        app_auth(&app_key().0, None),
        fast_retry(),
    );
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("/orgs/acme/installation"), "{e}");
    let jwt = sim.requests()[0].bearer.clone().expect("a JWT was sent");
    assert!(jwt.starts_with("eyJ"));
    assert_no_secret(&e, &[jwt.as_str(), app_key().0.as_str()]);
    assert_eq!(sim.count("*", "/"), 1, "a refused JWT is not retried");

    // Installed elsewhere only.
    let (sim, _, _) = app_sim("org", "acme");
    let gh = client_with(
        &sim,
        Scope::Org("elsewhere".into()),
        app_auth(&app_key().0, None),
        fast_retry(),
    );
    let e = gh.list_runners().await.unwrap_err();
    assert!(
        matches!(e, GitHubError::InstallationNotFound { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("elsewhere"), "{e}");
    // Enterprise discovery walks /app/installations and finds nothing either.
    let gh = client_with(
        &sim,
        Scope::Enterprise("nope".into()),
        app_auth(&app_key().0, None),
        fast_retry(),
    );
    let e = gh.list_runners().await.unwrap_err();
    assert!(
        matches!(e, GitHubError::InstallationNotFound { .. }),
        "{e:?}"
    );

    // Not a key at all: refused when the client is built, without echoing the text.
    let bogus = "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n";
    let e = GitHub::new(ClientConfig {
        api_base: api_base(None, Some(&sim.api_url())).unwrap(),
        scope: Scope::Org("acme".into()),
        auth: app_auth(bogus, None),
        retry: fast_retry(),
    })
    .unwrap_err();
    assert_no_secret(&e, &["bm90IGEga2V5"]);
}

// ---- JIT and the token fallback ----

#[tokio::test]
async fn jit_config_holds_the_three_runner_files() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    let req = JitRequest {
        work_folder: "work-dir".into(),
        ..jit_request("host1-0-1", RunnerGroupId(1), "host1")
    };
    let jit = gh.generate_jit_config(&req).await.unwrap();
    let files = decode_jit(jit.encoded_jit_config.expose());
    let names: BTreeSet<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from([".credentials", ".credentials_rsaparams", ".runner"])
    );
    let runner = &files[".runner"];
    assert_eq!(runner["agentName"], "host1-0-1");
    assert_eq!(runner["agentId"], jit.runner.id.0);
    assert_eq!(runner["serverUrl"], sim.server_url());
    assert_eq!(runner["workFolder"], "work-dir");
    let held = sim.runner(jit.runner.id.0).unwrap();
    assert_eq!(files[".credentials"]["data"]["simSecret"], held.secret);
    assert_eq!(held.work_folder, "work-dir");
    // The config is a credential: no formatting shows it.
    let shown = format!("{jit:?} {:?}", jit.encoded_jit_config);
    assert!(!shown.contains(jit.encoded_jit_config.expose()), "{shown}");
    assert!(!shown.contains(&held.secret));
}

#[tokio::test]
async fn registration_and_remove_tokens() {
    let (sim, _scope) = sim_with("repo", "octo/app");
    let gh = pat_client(&sim, "repo", "octo/app");
    let reg = gh.registration_token().await.unwrap();
    assert_eq!(sim.registration_tokens(), [reg.token.expose().to_string()]);
    assert!(reg.expires_at.starts_with("20"), "{}", reg.expires_at);
    let remove = gh.remove_token().await.unwrap();
    assert_eq!(sim.remove_tokens(), [remove.token.expose().to_string()]);
    assert_ne!(reg.token, remove.token);
    assert!(!format!("{reg:?}{remove:?}").contains(reg.token.expose()));
    assert_eq!(
        sim.count("POST", "/repos/octo/app/actions/runners/registration-token"),
        1
    );
    assert_eq!(
        sim.count("POST", "/repos/octo/app/actions/runners/remove-token"),
        1
    );
}

// ---- reconcile and "already exists" ----

#[tokio::test]
async fn reconcile_deletes_only_this_instances_offline_runners() {
    let (sim, scope) = sim_with("org", "acme");
    let elsewhere = sim.add_org("other");
    let label = instance_label("kr-a", "i1");
    let add = |name: &str, labels: &[&str], state| sim.add_runner(&scope, name, labels, state);
    // Enough strangers to need three pages of 100.
    for i in 0..230 {
        add(&format!("someone-{i}"), &["x"], RunnerState::Offline);
    }
    let stale1 = add("kr-a-0-1", &[&label], RunnerState::Offline);
    let stale2 = add("kr-a-7-3", &["krunner", &label], RunnerState::Offline);
    let online = add("kr-a-1-1", &[&label], RunnerState::Online);
    let busy = add("kr-a-2-1", &[&label], RunnerState::Busy);
    let keep = [
        add(
            "kr-b-0-1",
            &[&instance_label("kr-b", "i1")],
            RunnerState::Offline,
        ),
        add("kr-b-0-2", &[&label], RunnerState::Offline), // another prefix, our label
        add("kr-ab-0-1", &[&label], RunnerState::Offline), // prefix "kr-a" + "b"
        add("kr-a-3-1", &["krunner"], RunnerState::Offline), // our prefix, no label
        add("manual", &[&label], RunnerState::Offline),
        online,
        busy,
    ];
    let far = sim.add_runner(&elsewhere, "kr-a-0-1", &[&label], RunnerState::Offline);

    let gh = pat_client(&sim, "org", "acme");
    let report = gh.reconcile("kr-a", &label).await.unwrap();
    let mut deleted: Vec<u64> = report.deleted.iter().map(|r| r.id.0).collect();
    deleted.sort();
    assert_eq!(deleted, [stale1, stale2], "{report:?}");
    let mut kept: Vec<u64> = report.kept.iter().map(|r| r.id.0).collect();
    kept.sort();
    assert_eq!(kept, [online, busy], "{report:?}");
    for id in keep.iter().chain([&far]) {
        assert!(sim.runner(*id).is_some(), "runner {id} was deleted");
    }
    assert!(sim.runner(stale1).is_none() && sim.runner(stale2).is_none());
    assert_eq!(sim.runners().len(), 230 + keep.len() + 1);
    assert_eq!(sim.count("DELETE", "/orgs/acme/actions/runners/"), 2);
    assert_eq!(gh.list_runners().await.unwrap().len(), 230 + keep.len());

    // Nothing left to do.
    let again = gh.reconcile("kr-a", &label).await.unwrap();
    assert!(again.deleted.is_empty());
    assert_eq!(again.kept.len(), 2);
}

#[tokio::test]
async fn already_exists_offline_is_replaced_online_is_an_error() {
    let (sim, scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    let jit_path = "/orgs/acme/actions/runners/generate-jitconfig";

    // A stale offline registration of the same name: removed, then JIT succeeds.
    let stale = sim.add_runner(&scope, "kr-0-1", &["krunner-kr-i1"], RunnerState::Offline);
    let jit = gh
        .generate_jit_config(&jit_request("kr-0-1", RunnerGroupId(1), "kr"))
        .await
        .unwrap();
    assert_ne!(jit.runner.id.0, stale);
    assert!(sim.runner(stale).is_none());
    assert_eq!(sim.runner_by_name("kr-0-1").unwrap().id, jit.runner.id.0);
    let statuses: Vec<u16> = hits(&sim, "POST", jit_path)
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [409, 201], "{}", sim.log_text());

    // Online or busy, or offline but someone else's (same name, no instance label, e.g. an
    // instance on another host with the same host name): never touched, an error that says why.
    for (name, labels, state, word) in [
        ("kr-1-1", "krunner-kr-i1", RunnerState::Online, "online"),
        ("kr-2-1", "krunner-kr-i1", RunnerState::Busy, "busy"),
        (
            "kr-3-1",
            "krunner-kr-other",
            RunnerState::Offline,
            "not ours",
        ),
        ("kr-4-1", "krunner", RunnerState::Offline, "not ours"),
    ] {
        let id = sim.add_runner(&scope, name, &[labels], state);
        let e = gh
            .generate_jit_config(&jit_request(name, RunnerGroupId(1), "kr"))
            .await
            .unwrap_err();
        assert!(matches!(e, GitHubError::NameConflict { .. }), "{e:?}");
        let shown = e.to_string();
        assert!(shown.contains(name) && shown.contains(word), "{shown}");
        assert_eq!(sim.runner(id).unwrap().state(), state);
    }
    assert_eq!(sim.count("DELETE", "/orgs/acme/actions/runners/"), 1);
}

#[tokio::test]
async fn lost_jit_answer_is_retried_into_exactly_one_runner() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    let jit_path = "/orgs/acme/actions/runners/generate-jitconfig";
    // GitHub creates the runner, the answer never arrives.
    sim.fail_next("POST", jit_path, 1, Fault::ResetAfterProcessing);
    let jit = gh
        .generate_jit_config(&jit_request("kr-0-1", RunnerGroupId(1), "kr"))
        .await
        .unwrap();
    let all = sim.runners();
    assert_eq!(all.len(), 1, "{all:?}\n{}", sim.log_text());
    assert_eq!(all[0].id, jit.runner.id.0);
    let statuses: Vec<u16> = hits(&sim, "POST", jit_path)
        .iter()
        .map(|l| l.status)
        .collect();
    assert_eq!(statuses, [0, 409, 201], "{}", sim.log_text());
}

// ---- faults ----

const LIST: &str = "/orgs/acme/actions/runners";

/// The gap between the first and second request to `path` (an injected fault and its retry).
fn retry_gap(sim: &GitHubSim, method: &str, path: &str) -> Duration {
    let h = hits(sim, method, path);
    assert!(h.len() >= 2, "no retry\n{}", sim.log_text());
    h[1].at - h[0].at
}

#[tokio::test]
async fn server_errors_are_retried() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    sim.fail_next("GET", LIST, 1, Fault::Status(500));
    sim.fail_next("GET", LIST, 1, Fault::Status(502));
    sim.fail_next("GET", LIST, 1, Fault::Status(503));
    gh.list_runners().await.unwrap();
    let statuses: Vec<u16> = hits(&sim, "GET", LIST).iter().map(|l| l.status).collect();
    assert_eq!(statuses, [500, 502, 503, 200]);

    // A mutating call too, and it registers one runner.
    let jit_path = "/orgs/acme/actions/runners/generate-jitconfig";
    sim.fail_next("POST", jit_path, 2, Fault::Status(503));
    gh.generate_jit_config(&jit_request("kr-0-1", RunnerGroupId(1), "kr"))
        .await
        .unwrap();
    assert_eq!(sim.count("POST", jit_path), 3);
    assert_eq!(sim.runners().len(), 1);
    assert_eq!(gh.api_calls(), sim.requests().len() as u64);
}

#[tokio::test]
async fn too_many_requests_waits_for_retry_after() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    sim.fail_next("GET", LIST, 1, Fault::TooManyRequests { retry_after: 1 });
    gh.list_runners().await.unwrap();
    let gap = retry_gap(&sim, "GET", LIST);
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_secs(10),
        "waited {gap:?}"
    );
}

#[tokio::test]
async fn secondary_limit_with_retry_after() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    sim.fail_next(
        "GET",
        LIST,
        1,
        Fault::SecondaryLimit {
            retry_after: Some(1),
        },
    );
    gh.list_runners().await.unwrap();
    let gap = retry_gap(&sim, "GET", LIST);
    assert!(
        gap >= Duration::from_millis(1000) && gap < Duration::from_secs(10),
        "waited {gap:?}"
    );
}

#[tokio::test]
async fn secondary_limit_without_retry_after_waits_the_minimum() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    sim.fail_next("GET", LIST, 1, Fault::SecondaryLimit { retry_after: None });
    gh.list_runners().await.unwrap();
    let gap = retry_gap(&sim, "GET", LIST);
    // secondary_min_wait is 200 ms here (GitHub's minute in production).
    assert!(
        gap >= Duration::from_millis(200) && gap < Duration::from_secs(10),
        "waited {gap:?}"
    );
}

#[tokio::test]
async fn primary_limit_waits_for_the_reset() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    // Before arming, so our reset is not later than the simulator's.
    let armed = std::time::SystemTime::now();
    sim.fail_next(
        "GET",
        LIST,
        1,
        Fault::PrimaryLimit {
            reset_in: Duration::from_millis(1200),
        },
    );
    gh.list_runners().await.unwrap();
    let h = hits(&sim, "GET", LIST);
    assert_eq!(h.len(), 2, "{}", sim.log_text());
    let reset = (armed.duration_since(UNIX_EPOCH).unwrap() + Duration::from_millis(1200))
        .as_secs_f64()
        .ceil();
    let retried = h[1].wall.duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(retried >= reset, "retried at {retried}, reset at {reset}");
    assert!(
        retried < reset + 10.0,
        "retried at {retried}, reset at {reset}"
    );
}

#[tokio::test]
async fn slow_answer_times_out_and_is_retried() {
    let (sim, scope) = sim_with("org", "acme");
    let retry = RetryPolicy {
        request_timeout: Duration::from_millis(300),
        ..fast_retry()
    };
    let gh = client_with(
        &sim,
        Scope::Org("acme".into()),
        Auth::Pat(Secret::new(PAT)),
        retry,
    );
    sim.add_runner(&scope, "r", &["x"], RunnerState::Online);
    // Far slower than the timeout, so a loaded machine cannot blur the two.
    sim.fail_next("GET", LIST, 1, Fault::Slow(Duration::from_secs(30)));
    let t = Instant::now();
    let runners = gh.list_runners().await.unwrap();
    assert_eq!(runners.len(), 1);
    assert_eq!(sim.count("GET", LIST), 2, "{}", sim.log_text());
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "did not give up on the slow answer: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn connection_resets_are_retried() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    sim.fail_next("GET", LIST, 2, Fault::Reset);
    gh.list_runners().await.unwrap();
    let statuses: Vec<u16> = hits(&sim, "GET", LIST).iter().map(|l| l.status).collect();
    assert_eq!(statuses, [0, 0, 200]);
}

#[tokio::test]
async fn exhausted_retries_name_the_endpoint() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");

    sim.fail_next("GET", LIST, 10, Fault::Status(503));
    let e = gh.list_runners().await.unwrap_err();
    assert_eq!(e.status(), Some(503), "{e:?}");
    let shown = e.to_string();
    assert!(shown.contains("GET") && shown.contains(LIST), "{shown}");
    assert_eq!(sim.count("GET", LIST), 4, "1 + max_retries (3)");
    sim.clear_faults();

    sim.clear_log();
    sim.fail_next("GET", LIST, 10, Fault::Reset);
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Transport { .. }), "{e:?}");
    assert!(e.to_string().contains(LIST), "{e}");
    assert_eq!(sim.count("GET", LIST), 4);
    sim.clear_faults();

    sim.clear_log();
    let jit_path = "/orgs/acme/actions/runners/generate-jitconfig";
    sim.fail_next(
        "POST",
        jit_path,
        10,
        Fault::SecondaryLimit { retry_after: None },
    );
    let e = gh
        .generate_jit_config(&jit_request("kr-0-1", RunnerGroupId(1), "kr"))
        .await
        .unwrap_err();
    assert!(matches!(e, GitHubError::RateLimited { .. }), "{e:?}");
    assert!(e.to_string().contains(jit_path), "{e}");
    assert_eq!(sim.count("POST", jit_path), 4);
    assert!(sim.runners().is_empty());
}

#[tokio::test]
async fn permission_errors_are_not_retried_and_hide_the_token() {
    let (sim, _scope) = sim_with("org", "acme");
    sim.add_org("locked");
    sim.add_repo("octo/secret");

    let gh = pat_client(&sim, "org", "locked");
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Forbidden { .. }), "{e:?}");
    assert!(
        e.to_string().contains("/orgs/locked/actions/runners"),
        "{e}"
    );
    assert_no_secret(&e, &[PAT]);

    let gh = pat_client(&sim, "repo", "octo/secret");
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::NotFound { .. }), "{e:?}");
    assert_no_secret(&e, &[PAT]);

    let wrong = "ghp_wrongTokenWrongTokenWrongToken0000";
    let gh = client_with(
        &sim,
        Scope::Org("acme".into()),
        Auth::Pat(Secret::new(wrong)),
        fast_retry(),
    );
    let e = gh.list_runners().await.unwrap_err();
    assert!(matches!(e, GitHubError::Unauthorized { .. }), "{e:?}");
    assert!(e.to_string().contains("Bad credentials"), "{e}");
    assert_no_secret(&e, &[wrong]);
    // Each was answered once.
    assert_eq!(sim.requests().len(), 3, "{}", sim.log_text());
    assert!(!format!("{gh:?}").contains(wrong));
}

#[tokio::test]
async fn rate_limit_budget_is_tracked() {
    let (sim, _scope) = sim_with("org", "acme");
    sim.set_rate_limit(100);
    let gh = pat_client(&sim, "org", "acme");
    for _ in 0..3 {
        gh.list_runners().await.unwrap();
    }
    let rl = gh.rate_limit();
    assert_eq!(rl.limit, Some(100));
    assert_eq!(rl.remaining, Some(97));
    assert!(rl.reset_epoch.unwrap() > UNIX_EPOCH.elapsed().unwrap().as_secs());
    assert_eq!(gh.api_calls(), 3);
}

#[tokio::test]
async fn a_misshapen_jit_answer_does_not_leak_the_config() {
    let (sim, _scope) = sim_with("org", "acme");
    let gh = pat_client(&sim, "org", "acme");
    let secret = "eyJzaW0tc2VjcmV0LWppdC1jb25maWciOnRydWV9";
    let body = serde_json::json!({
        "runner": {"id": 7, "name": "kr-0-1", "os": "Linux", "status": "offline", "busy": false,
                   "labels": "not-a-list"},
        "encoded_jit_config": secret,
    });
    let jit_path = "/orgs/acme/actions/runners/generate-jitconfig";
    let canned = Fault::Respond {
        status: 201,
        body: body.to_string(),
    };
    sim.fail_next("POST", jit_path, 1, canned);
    let e = gh
        .generate_jit_config(&jit_request("kr-0-1", RunnerGroupId(1), "kr"))
        .await
        .unwrap_err();
    assert!(matches!(e, GitHubError::Decode { .. }), "{e:?}");
    assert!(e.to_string().contains(jit_path), "{e}");
    assert_no_secret(&e, &[secret, PAT]);
}

/// Panics if any formatting of `e` shows one of `secrets`.
#[track_caller]
fn assert_no_secret(e: &GitHubError, secrets: &[&str]) {
    let mut shown = vec![format!("{e}"), format!("{e:?}"), format!("{e:#}")];
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        shown.push(format!("{s} {s:?}"));
        source = s.source();
    }
    for s in secrets {
        for text in &shown {
            assert!(!text.contains(s), "a secret shows in {text}");
        }
    }
}

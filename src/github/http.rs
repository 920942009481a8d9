//! The one `send()` every call goes through, and the retry policy it applies.
//!
//! Steps, in order, for each request: pick the bearer (PAT, cached installation token, or a
//! fresh App JWT); take the mutation lock (POST/PUT/PATCH/DELETE on the scope, so bursts of
//! registrations don't trip GitHub's secondary limits); send with GitHub's headers and the
//! request timeout; record the `x-ratelimit-*` headers; then on failure consult [`decide`] and
//! either sleep and resend, or map the response to a [`GitHubError`].
//!
//! The decision table (octocrab's `HandleRateLimits`, with GitHub's documented order):
//!
//! | answer                                                        | action                                   |
//! |---------------------------------------------------------------|------------------------------------------|
//! | connection error, timeout, 5xx                                 | backoff: full jitter, `base·2^n` ≤ `max_delay` (5xx: `retry-after` if given) |
//! | 403/429 with `retry-after`                                     | wait that many seconds                   |
//! | 403/429 with `x-ratelimit-remaining: 0` and a reset time       | wait until `x-ratelimit-reset` (+1 s)    |
//! | 429, or 403 saying "secondary rate limit" / "abuse", or 403 with remaining 0 and no reset | wait `secondary_min_wait·2^n` (≤ 15 min) |
//! | any other 4xx                                                  | give up at once                          |
//! | any of the above after `max_retries` retries                   | give up                                  |
//!
//! No wait is longer than `max_wait` (15 min). The mutation lock is held for one request,
//! never across a wait. A clone told to hurry ([`GitHub::hurry_on`], a stopping krunner)
//! waits for nothing: it makes one short attempt and gives up.
//!
//! A 401 on an installation token is answered once by renewing the token, outside this count.
//! Sleeps go through an injectable sleeper so tests run without waiting.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;
use serde::de::DeserializeOwned;

use super::auth::{now_epoch, Credentials};
use super::error::GitHubError;
use super::models::{RateLimit, WireError};
use super::GitHub;
use crate::secret::Secret;

/// How hard to retry, and how long one request may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff step for 5xx and transport errors.
    pub base_delay: Duration,
    /// Cap of one backoff step.
    pub max_delay: Duration,
    /// Least wait after a secondary rate limit without `retry-after` (GitHub: one minute).
    pub secondary_min_wait: Duration,
    /// Cap of any one wait, whatever `retry-after` or `x-ratelimit-reset` ask for: a wrong
    /// clock or header cannot park a call for hours.
    pub max_wait: Duration,
    /// Timeout of one request, connect to last body byte.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 retries, 1 s base, 60 s cap, 60 s secondary wait, 15 min longest wait, 30 s timeout.
    fn default() -> Self {
        RetryPolicy {
            max_retries: 5,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            secondary_min_wait: Duration::from_secs(60),
            max_wait: Duration::from_secs(15 * 60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Which credential a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cred {
    /// The PAT or the installation token: every scope endpoint.
    Token,
    /// A GitHub App JWT: `/app/…` and installation lookups.
    AppJwt,
}

/// A 2xx answer. The body is zeroed when dropped, since token and JIT responses carry secrets.
pub(crate) struct Response {
    body: Vec<u8>,
}

impl Response {
    /// Decodes the body, naming the JSON path that did not fit.
    pub(crate) fn decode<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
    ) -> Result<T, GitHubError> {
        let de = &mut serde_json::Deserializer::from_slice(&self.body);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let mut reason = format!("at `{}`: {}", e.path(), e.inner());
            // serde_json quotes offending values; keep a long one from flooding the message.
            truncate(&mut reason, 300);
            GitHubError::Decode {
                method: method.to_string(),
                path: path.to_string(),
                reason,
            }
        })
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        self.body.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.body);
    }
}

fn truncate(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
}

/// What [`decide`] says to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Sleep this long, then send again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp,
}

/// A failed attempt, as [`decide`] sees it.
#[derive(Debug)]
pub(crate) enum Failure<'a> {
    /// No answer: connection error or timeout.
    Transport,
    /// An error status.
    Status {
        /// HTTP status.
        status: u16,
        /// Response headers.
        headers: &'a HeaderMap,
        /// GitHub's `message`.
        message: &'a str,
    },
}

/// The retry decision table (see the module header), every wait capped at `max_wait`.
/// `attempt` counts retries already made (0 after the first failure), `now` is UTC epoch
/// seconds and `jitter` a number in [0, 1].
pub(crate) fn decide(
    policy: &RetryPolicy,
    failure: &Failure<'_>,
    attempt: u32,
    now: u64,
    jitter: f64,
) -> Decision {
    match decide_uncapped(policy, failure, attempt, now, jitter) {
        Decision::Retry(wait) => Decision::Retry(wait.min(policy.max_wait)),
        Decision::GiveUp => Decision::GiveUp,
    }
}

fn decide_uncapped(
    policy: &RetryPolicy,
    failure: &Failure<'_>,
    attempt: u32,
    now: u64,
    jitter: f64,
) -> Decision {
    if attempt >= policy.max_retries {
        return Decision::GiveUp;
    }
    let (status, headers, message) = match failure {
        Failure::Transport => return Decision::Retry(backoff(policy, attempt, jitter)),
        Failure::Status {
            status,
            headers,
            message,
        } => (*status, *headers, *message),
    };
    let retry_after = header_u64(headers, "retry-after").map(Duration::from_secs);
    match status {
        500..=599 => {
            Decision::Retry(retry_after.unwrap_or_else(|| backoff(policy, attempt, jitter)))
        }
        403 | 429 => {
            if let Some(wait) = retry_after {
                return Decision::Retry(wait);
            }
            let remaining = header_u64(headers, "x-ratelimit-remaining");
            let reset = header_u64(headers, "x-ratelimit-reset");
            if remaining == Some(0) {
                if let Some(reset) = reset {
                    // One second past the reset, so we don't arrive a hair early.
                    return Decision::Retry(Duration::from_secs(reset.saturating_sub(now) + 1));
                }
            }
            if status == 429 || remaining == Some(0) || is_secondary_message(message) {
                return Decision::Retry(secondary_wait(policy, attempt));
            }
            Decision::GiveUp
        }
        _ => Decision::GiveUp,
    }
}

/// Whether a 403/429 answer is a rate limit rather than a permission problem.
pub(crate) fn is_rate_limited(status: u16, headers: &HeaderMap, message: &str) -> bool {
    match status {
        429 => true,
        403 => {
            headers.contains_key("retry-after")
                || header_u64(headers, "x-ratelimit-remaining") == Some(0)
                || is_secondary_message(message)
        }
        _ => false,
    }
}

fn is_secondary_message(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("secondary rate limit") || m.contains("abuse detection")
}

/// Exponential backoff with full jitter: a uniform wait in [0, min(max, base·2^attempt)].
fn backoff(policy: &RetryPolicy, attempt: u32, jitter: f64) -> Duration {
    let step = policy
        .base_delay
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(policy.max_delay);
    step.mul_f64(jitter.clamp(0.0, 1.0))
}

/// GitHub: wait at least a minute after a secondary limit, then back off exponentially.
fn secondary_wait(policy: &RetryPolicy, attempt: u32) -> Duration {
    let cap = policy.secondary_min_wait.max(Duration::from_secs(15 * 60));
    policy
        .secondary_min_wait
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(cap)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Reads the `x-ratelimit-*` headers; `None` when the answer had none (GHES without limits).
pub(crate) fn rate_limit_from(headers: &HeaderMap) -> Option<RateLimit> {
    let rl = RateLimit {
        limit: header_u64(headers, "x-ratelimit-limit"),
        remaining: header_u64(headers, "x-ratelimit-remaining"),
        reset_epoch: header_u64(headers, "x-ratelimit-reset"),
    };
    (rl != RateLimit::default()).then_some(rl)
}

/// Sleeps between retries; tests swap in one that records and returns at once.
pub(crate) type Sleeper = Arc<dyn Fn(Duration) -> BoxFuture<'static, ()> + Send + Sync>;

/// The real sleeper.
pub(crate) fn tokio_sleeper() -> Sleeper {
    Arc::new(|d| Box::pin(tokio::time::sleep(d)))
}

/// The `Authorization` value for `token`, marked sensitive so reqwest's and hyper's Debug
/// output never shows it.
fn auth_header(token: &Secret) -> Result<HeaderValue, GitHubError> {
    // Built inside a Secret so the temporary string is zeroed too.
    let bearer = Secret::new(format!("Bearer {}", token.expose().trim()));
    let mut auth = HeaderValue::from_str(bearer.expose()).map_err(|_| {
        GitHubError::Config(
            "the GitHub token contains characters not allowed in an HTTP header".into(),
        )
    })?;
    auth.set_sensitive(true);
    Ok(auth)
}

/// GitHub's REST API version header value this client is written against.
const API_VERSION: &str = "2022-11-28";

/// Timeout of a request sent, or still in flight, once the client is told to hurry: a
/// stopping krunner makes one last short attempt instead of waiting for a stalled API.
pub(crate) const HURRY_TIMEOUT: Duration = Duration::from_secs(5);

/// What one attempt got.
enum Attempt {
    Transport(reqwest::Error),
    Answer {
        status: u16,
        headers: HeaderMap,
        body: Response,
    },
    /// Still no answer [`HURRY_TIMEOUT`] after the client was told to hurry.
    Abandoned,
}

/// One call: what [`GitHub::attempt`] needs besides the bearer.
struct Call<'a> {
    method: &'a Method,
    url: &'a url::Url,
    path: &'a str,
    body: Option<&'a [u8]>,
    cred: Cred,
}

impl GitHub {
    /// Sends one API call with retries; `path` is below the API base and may carry a query.
    ///
    /// Once the client's hurry signal ([`GitHub::hurry_on`]) fires, a retry wait ends at once
    /// and the call gives up with the last answer; a request makes one attempt of at most
    /// [`HURRY_TIMEOUT`].
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        cred: Cred,
    ) -> Result<Response, GitHubError> {
        let url = url::Url::parse(&format!("{}{path}", self.inner.base_str)).map_err(|e| {
            GitHubError::Config(format!("cannot build the URL for {method} {path}: {e}"))
        })?;
        let call = Call {
            method: &method,
            url: &url,
            path,
            body: body.as_deref(),
            cred,
        };
        let mut attempt = 0u32;
        let mut renewed = false;
        loop {
            let token = match cred {
                Cred::Token => self.bearer().await?,
                Cred::AppJwt => self.app_jwt()?,
            };
            let outcome = self.attempt(&call, &token).await?;
            let outcome = match outcome {
                Attempt::Answer { status, body, .. } if (200..300).contains(&status) => {
                    return Ok(body)
                }
                Attempt::Answer { status: 401, .. }
                    if cred == Cred::Token
                        && !renewed
                        && matches!(self.inner.creds, Credentials::App(_)) =>
                {
                    // The installation token was revoked or expired early: renew it once.
                    renewed = true;
                    self.invalidate_token(&token).await;
                    continue;
                }
                other => other,
            };
            match self.decision(&call, &outcome, attempt) {
                Decision::Retry(wait) if self.wait(wait).await => attempt += 1,
                _ => return Err(self.final_error(&call, outcome, attempt + 1)),
            }
        }
    }

    /// Sends once: the mutation lock (unless hurried) for just this request, the headers,
    /// the rate-limit record. `Err` only for a header that cannot be built.
    async fn attempt(&self, call: &Call<'_>, token: &Secret) -> Result<Attempt, GitHubError> {
        let inner = &*self.inner;
        let mutating = call.cred == Cred::Token
            && matches!(
                *call.method,
                Method::POST | Method::PUT | Method::PATCH | Method::DELETE
            );
        // Per request, not per call: a call sleeping out a retry-after must not stall every
        // other slot's registration or deletion behind it.
        let _serial = if mutating {
            tokio::select! {
                g = inner.mutate.lock() => Some(g),
                // A stopping krunner deletes its runners side by side.
                _ = self.hurried() => None,
            }
        } else {
            None
        };
        let mut rb = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .header(AUTHORIZATION, auth_header(token)?);
        if let Some(b) = call.body {
            rb = rb.header(CONTENT_TYPE, "application/json").body(b.to_vec());
        }
        if self.is_hurried() {
            rb = rb.timeout(inner.retry.request_timeout.min(HURRY_TIMEOUT));
        }
        inner.calls.record();
        let exchange = async {
            let resp = match rb.send().await {
                Err(e) => return Attempt::Transport(e),
                Ok(resp) => resp,
            };
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            self.record_rate_limit(&headers, call.method, call.path, status);
            match resp.bytes().await {
                Err(e) => Attempt::Transport(e),
                Ok(bytes) => Attempt::Answer {
                    status,
                    headers,
                    body: Response {
                        body: Vec::from(bytes),
                    },
                },
            }
        };
        Ok(tokio::select! {
            a = exchange => a,
            _ = async {
                self.hurried().await;
                tokio::time::sleep(HURRY_TIMEOUT).await;
            } => Attempt::Abandoned,
        })
    }

    /// What to do after a failed attempt (the module header's table), logged when retrying.
    fn decision(&self, call: &Call<'_>, outcome: &Attempt, attempt: u32) -> Decision {
        let policy = &self.inner.retry;
        let (method, path) = (call.method, call.path);
        match outcome {
            Attempt::Abandoned => Decision::GiveUp,
            Attempt::Transport(e) => {
                let d = decide(
                    policy,
                    &Failure::Transport,
                    attempt,
                    now_epoch(),
                    rand::random(),
                );
                if d != Decision::GiveUp {
                    tracing::warn!(%method, path, error = %e, attempt = attempt + 1, "GitHub request failed; retrying");
                }
                d
            }
            Attempt::Answer {
                status,
                headers,
                body,
            } => {
                let (message, _) = error_body(&body.body);
                let failure = Failure::Status {
                    status: *status,
                    headers,
                    message: &message,
                };
                let d = decide(policy, &failure, attempt, now_epoch(), rand::random());
                if let Decision::Retry(wait) = d {
                    tracing::warn!(%method, path, status, wait_ms = wait.as_millis() as u64, attempt = attempt + 1, %message, "GitHub answered with an error; retrying");
                }
                d
            }
        }
    }

    /// Sleeps `wait` before a retry; false (at once, or when it fires) if the client is
    /// told to hurry.
    async fn wait(&self, wait: Duration) -> bool {
        if self.is_hurried() {
            return false;
        }
        tokio::select! {
            _ = (self.inner.sleeper)(wait) => true,
            _ = self.hurried() => {
                tracing::info!("stopping: not waiting {:.0} s to retry the GitHub request", wait.as_secs_f64());
                false
            }
        }
    }

    /// The error a call ends with after `attempts` requests.
    fn final_error(&self, call: &Call<'_>, outcome: Attempt, attempts: u32) -> GitHubError {
        let (method, path) = (call.method.to_string(), call.path.to_string());
        match outcome {
            Attempt::Transport(source) => GitHubError::Transport {
                method,
                path,
                source,
            },
            Attempt::Abandoned => GitHubError::Abandoned { method, path },
            Attempt::Answer {
                status,
                headers,
                body,
            } => self.status_error(
                call.method,
                call.path,
                call.cred,
                status,
                &headers,
                &body.body,
                attempts,
            ),
        }
    }

    /// Maps a final error answer to the matching variant.
    #[allow(clippy::too_many_arguments)]
    fn status_error(
        &self,
        method: &Method,
        path: &str,
        cred: Cred,
        status: u16,
        headers: &HeaderMap,
        body: &[u8],
        attempts: u32,
    ) -> GitHubError {
        let (message, documentation_url) = error_body(body);
        let method = method.to_string();
        let path = path.to_string();
        if is_rate_limited(status, headers, &message) {
            return GitHubError::RateLimited {
                method,
                path,
                attempts,
                reset: header_u64(headers, "x-ratelimit-reset"),
            };
        }
        match status {
            401 => GitHubError::Unauthorized {
                method,
                path,
                message,
                hint: match cred {
                    Cred::AppJwt => "the App JWT was refused: check --app-id, that the key belongs to that App, and the host clock".into(),
                    Cred::Token => format!(
                        "the credentials are invalid or expired; {}",
                        self.permission_hint()
                    ),
                },
            },
            403 => GitHubError::Forbidden {
                method,
                path,
                message,
                documentation_url,
                hint: self.permission_hint(),
            },
            404 => GitHubError::NotFound {
                method,
                path,
                message,
                documentation_url,
                hint: format!(
                    "check the name in {}; GitHub also answers 404 when the credentials may not see it: {}",
                    self.inner.scope,
                    self.permission_hint()
                ),
            },
            _ => GitHubError::Api {
                method,
                path,
                status,
                message,
                documentation_url,
            },
        }
    }

    fn record_rate_limit(&self, headers: &HeaderMap, method: &Method, path: &str, status: u16) {
        let seen = rate_limit_from(headers);
        if let Some(rl) = seen {
            let mut slot = self
                .inner
                .rate
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *slot = rl;
        }
        tracing::debug!(
            %method,
            path,
            status,
            ratelimit_remaining = seen.and_then(|r| r.remaining),
            ratelimit_limit = seen.and_then(|r| r.limit),
            ratelimit_reset = seen.and_then(|r| r.reset_epoch),
            "GitHub API"
        );
    }
}

/// GitHub's `message` and `documentation_url`; for a body that isn't GitHub's JSON (a proxy's
/// HTML page), its first line, shortened.
pub(crate) fn error_body(body: &[u8]) -> (String, Option<String>) {
    match serde_json::from_slice::<WireError>(body) {
        Ok(WireError {
            message: Some(m),
            documentation_url,
        }) => (m, documentation_url),
        Ok(WireError {
            message: None,
            documentation_url,
        }) => ("(no message)".into(), documentation_url),
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            let mut line = text.lines().next().unwrap_or("").trim().to_string();
            truncate(&mut line, 200);
            if line.is_empty() {
                line = "(empty body)".into();
            }
            (line, None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn status(p: &RetryPolicy, code: u16, h: &HeaderMap, msg: &str, attempt: u32) -> Decision {
        decide(
            p,
            &Failure::Status {
                status: code,
                headers: h,
                message: msg,
            },
            attempt,
            1_000,
            1.0,
        )
    }

    const S: fn(u64) -> Decision = |s| Decision::Retry(Duration::from_secs(s));

    #[test]
    fn decision_table() {
        let p = RetryPolicy::default();
        let none = HeaderMap::new();
        // 5xx and transport: backoff, full jitter at its top = base·2^n.
        assert_eq!(status(&p, 500, &none, "", 0), S(1));
        assert_eq!(status(&p, 502, &none, "", 2), S(4));
        assert_eq!(
            status(&p, 503, &headers(&[("retry-after", "7")]), "", 0),
            S(7)
        );
        assert_eq!(decide(&p, &Failure::Transport, 3, 0, 1.0), S(8));
        assert_eq!(decide(&p, &Failure::Transport, 4, 0, 0.0), S(0));
        // Capped at max_delay.
        let tight = RetryPolicy {
            max_retries: 100,
            ..RetryPolicy::default()
        };
        assert_eq!(decide(&tight, &Failure::Transport, 10, 0, 1.0), S(60));
        assert_eq!(decide(&tight, &Failure::Transport, 40, 0, 1.0), S(60));
        // retry-after on 403 and 429.
        let ra = headers(&[("retry-after", "30")]);
        assert_eq!(status(&p, 429, &ra, "", 0), S(30));
        assert_eq!(status(&p, 403, &ra, "whatever", 0), S(30));
        // Primary limit: until reset (+1 s); now = 1000.
        let primary = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1100"),
        ]);
        assert_eq!(
            status(&p, 403, &primary, "API rate limit exceeded", 0),
            S(101)
        );
        assert_eq!(status(&p, 429, &primary, "", 1), S(101));
        let past = headers(&[("x-ratelimit-remaining", "0"), ("x-ratelimit-reset", "10")]);
        assert_eq!(status(&p, 403, &past, "", 0), S(1));
        // Secondary without retry-after: at least a minute, doubling.
        let msg = "You have exceeded a secondary rate limit. Please wait a few minutes.";
        let some_left = headers(&[("x-ratelimit-remaining", "4000")]);
        assert_eq!(status(&p, 403, &some_left, msg, 0), S(60));
        assert_eq!(status(&p, 403, &none, msg, 2), S(240));
        assert_eq!(status(&p, 429, &none, "", 0), S(60));
        assert_eq!(
            status(&p, 403, &headers(&[("x-ratelimit-remaining", "0")]), "", 0),
            S(60)
        );
        // Permission 403 and other 4xx: no retry.
        assert_eq!(
            status(
                &p,
                403,
                &some_left,
                "Resource not accessible by integration",
                0
            ),
            Decision::GiveUp
        );
        for code in [400, 401, 404, 409, 422] {
            assert_eq!(status(&p, code, &ra, "", 0), Decision::GiveUp, "{code}");
        }
        // No wait beyond max_wait (15 min), whatever the headers say.
        let hour = headers(&[("retry-after", "3600")]);
        assert_eq!(status(&p, 429, &hour, "", 0), S(900));
        assert_eq!(status(&p, 503, &hour, "", 0), S(900));
        let far = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "999999"),
        ]);
        assert_eq!(status(&p, 403, &far, "", 0), S(900));
        // Exhausted.
        assert_eq!(status(&p, 500, &none, "", 5), Decision::GiveUp);
        assert_eq!(status(&p, 429, &ra, "", 5), Decision::GiveUp);
        assert_eq!(decide(&p, &Failure::Transport, 5, 0, 0.5), Decision::GiveUp);
    }

    #[test]
    fn jitter_stays_in_range() {
        let p = RetryPolicy::default();
        for j in [0.0, 0.25, 0.5, 0.99, 1.0, -3.0, 7.0] {
            let Decision::Retry(d) = decide(&p, &Failure::Transport, 2, 0, j) else {
                panic!("gave up");
            };
            assert!(d <= Duration::from_secs(4), "{j}: {d:?}");
        }
    }

    #[test]
    fn rate_limit_classification() {
        let none = HeaderMap::new();
        assert!(is_rate_limited(429, &none, ""));
        assert!(is_rate_limited(403, &headers(&[("retry-after", "1")]), ""));
        assert!(is_rate_limited(
            403,
            &none,
            "You have exceeded a secondary rate limit"
        ));
        assert!(!is_rate_limited(
            403,
            &none,
            "Must have admin rights to Repository."
        ));
        assert!(!is_rate_limited(500, &none, ""));
        let rl = rate_limit_from(&headers(&[
            ("x-ratelimit-limit", "5000"),
            ("x-ratelimit-remaining", "4999"),
            ("x-ratelimit-reset", "1700000000"),
        ]))
        .unwrap();
        assert_eq!(rl.limit, Some(5000));
        assert_eq!(rl.remaining, Some(4999));
        assert_eq!(rl.reset_epoch, Some(1_700_000_000));
        assert_eq!(rate_limit_from(&none), None);
    }

    #[test]
    fn error_bodies() {
        let (m, d) = error_body(
            br#"{"message":"Bad credentials","documentation_url":"https://docs.github.com/rest"}"#,
        );
        assert_eq!(m, "Bad credentials");
        assert_eq!(d.as_deref(), Some("https://docs.github.com/rest"));
        assert_eq!(error_body(b"<html>\n<body>bad gateway").0, "<html>");
        assert_eq!(error_body(b"").0, "(empty body)");
        assert_eq!(error_body(b"{}").0, "(no message)");
    }
}

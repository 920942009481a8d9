//! The optional Prometheus endpoint of `krunner run` (`--metrics ADDR`).
//!
//! [`Metrics`] is a handful of atomics the slots update through their state reporter
//! ([`crate::orchestrator::state`]); [`Metrics::render`] turns them, plus the GitHub client's
//! own counters, into the Prometheus text format (0.0.4). [`serve`] is a deliberately tiny
//! HTTP/1.1 server on a tokio `TcpListener`: one request per connection, its head parsed by
//! httparse, `GET /metrics` only, `Connection: close`. A scrape endpoint needs nothing more,
//! and a web framework would cost more build time and RSS than everything else here.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::github::GitHub;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("cannot listen for metrics on {addr}")]
    Bind {
        /// The address given with `--metrics`.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A sum and a count of observations (a Prometheus summary without quantiles).
#[derive(Debug, Default)]
pub struct Summary {
    /// Sum of the observations, in microseconds (integer, so it can be atomic).
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Summary {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// (sum in seconds, count).
    pub fn get(&self) -> (f64, u64) {
        (
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.count.load(Ordering::Relaxed),
        )
    }
}

/// The pool's counters, gauges and summaries; shared by every slot.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Guests started.
    pub runs_started: AtomicU64,
    /// Runs whose guest exited 0.
    pub runs_succeeded: AtomicU64,
    /// Runs that started a guest and ended in an error.
    pub runs_failed: AtomicU64,
    /// Guests running now.
    pub active_vms: AtomicU64,
    /// From guest start to the runner first seen online (or started, per the guest result).
    pub time_to_online: Summary,
    /// From guest start to guest end.
    pub vm_lifetime: Summary,
    /// Per scale set: its latest status and how long its jobs waited.
    pub pools: std::sync::Mutex<std::collections::BTreeMap<String, PoolMetrics>>,
}

/// The upper bounds of [`Histogram`]'s buckets, in seconds.
pub const WAIT_BUCKETS: [f64; 11] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// A Prometheus histogram with [`WAIT_BUCKETS`].
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    counts: [u64; WAIT_BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if let Some(i) = WAIT_BUCKETS.iter().position(|b| s <= *b) {
            self.counts[i] += 1;
        }
        self.sum += s;
        self.count += 1;
    }
}

/// One scale set's metrics.
#[derive(Debug, Default, Clone)]
pub struct PoolMetrics {
    /// Its latest status.
    pub status: crate::orchestrator::state::PoolStatus,
    /// From a job's assignment to the set to its start on a runner.
    pub job_wait: Histogram,
}

impl Metrics {
    /// Updates scale set `name`'s status.
    pub fn pool_status(&self, status: &crate::orchestrator::state::PoolStatus) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools.entry(status.name.clone()).or_default().status = status.clone();
    }

    /// Records how long one of `name`'s jobs waited for a runner.
    pub fn pool_job_wait(&self, name: &str, d: Duration) {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        pools
            .entry(name.to_string())
            .or_default()
            .job_wait
            .observe(d);
    }

    fn render_pools(&self, out: &mut String) {
        let pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if pools.is_empty() {
            return;
        }
        type Get = fn(&crate::orchestrator::state::PoolStatus) -> u64;
        let gauges: [(&str, &str, Get); 8] = [
            (
                "krunner_pool_assigned_jobs",
                "Jobs assigned to the scale set, running or waiting.",
                |s| s.assigned_jobs,
            ),
            (
                "krunner_pool_running_jobs",
                "Jobs of the scale set running.",
                |s| s.running_jobs,
            ),
            (
                "krunner_pool_desired_runners",
                "Guests wanted: min(min idle + assigned jobs, max).",
                |s| s.desired,
            ),
            ("krunner_pool_runners", "Guests alive.", |s| s.actual),
            (
                "krunner_pool_idle_runners",
                "Registered runners without a job.",
                |s| s.idle,
            ),
            ("krunner_pool_busy_runners", "Runners with a job.", |s| {
                s.busy
            }),
            (
                "krunner_pool_booting_runners",
                "Guests whose runner has not registered yet.",
                |s| s.booting,
            ),
            (
                "krunner_pool_runs_total",
                "Guests of the scale set that ended well.",
                |s| s.runs_done,
            ),
        ];
        for (name, help, get) in gauges {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            let _ = writeln!(
                out,
                "# HELP {name} {help}
# TYPE {name} {kind}"
            );
            for (pool, m) in pools.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{pool=\"{}\"}} {}",
                    escape(pool),
                    get(&m.status)
                );
            }
        }
        let name = "krunner_pool_job_wait_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} From a job's assignment to the scale set to its start on a runner.\n# TYPE {name} histogram"
        );
        for (pool, m) in pools.iter() {
            let p = escape(pool);
            let mut cum = 0;
            for (b, c) in WAIT_BUCKETS.iter().zip(m.job_wait.counts) {
                cum += c;
                let _ = writeln!(out, "{name}_bucket{{pool=\"{p}\",le=\"{b}\"}} {cum}");
            }
            let h = &m.job_wait;
            let _ = writeln!(out, "{name}_bucket{{pool=\"{p}\",le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{pool=\"{p}\"}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{pool=\"{p}\"}} {}", h.count);
        }
    }
}

/// A label value in the text format: `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What the GitHub client knows about its own use, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiStats {
    /// HTTP requests sent so far.
    pub calls: u64,
    /// HTTP requests sent in the last hour (GitHub's rate-limit window).
    pub calls_last_hour: u64,
    /// `x-ratelimit-remaining` of the last response, if any said.
    pub rate_limit_remaining: Option<u64>,
    /// `x-ratelimit-limit` of the last response, if any said.
    pub rate_limit_limit: Option<u64>,
}

impl ApiStats {
    /// The client's figures now.
    pub fn of(github: &GitHub) -> ApiStats {
        ApiStats {
            calls: github.api_calls(),
            calls_last_hour: github.api_calls_last_hour(),
            rate_limit_remaining: github.rate_limit().remaining,
            rate_limit_limit: github.rate_limit().limit,
        }
    }
}

impl Metrics {
    /// Everything in the Prometheus text format.
    pub fn render(&self, api: ApiStats) -> String {
        let mut out = String::new();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut metric = |name: &str, kind: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            );
        };
        metric(
            "krunner_runs_started_total",
            "counter",
            "Guests started.",
            load(&self.runs_started).to_string(),
        );
        metric(
            "krunner_runs_succeeded_total",
            "counter",
            "Runs whose guest exited 0.",
            load(&self.runs_succeeded).to_string(),
        );
        metric(
            "krunner_runs_failed_total",
            "counter",
            "Runs that started a guest and ended in an error.",
            load(&self.runs_failed).to_string(),
        );
        metric(
            "krunner_github_api_calls_total",
            "counter",
            "GitHub API requests sent, retries included.",
            api.calls.to_string(),
        );
        metric(
            "krunner_github_api_calls_last_hour",
            "gauge",
            "GitHub API requests sent in the last hour, against the hourly rate limit.",
            api.calls_last_hour.to_string(),
        );
        metric(
            "krunner_active_vms",
            "gauge",
            "Guests running now.",
            load(&self.active_vms).to_string(),
        );
        if let Some(r) = api.rate_limit_remaining {
            // Absent until GitHub has answered once: a made-up value would trigger alerts.
            metric(
                "krunner_github_rate_limit_remaining",
                "gauge",
                "GitHub API requests left in the current rate-limit window.",
                r.to_string(),
            );
        }
        if let Some(l) = api.rate_limit_limit {
            metric(
                "krunner_github_rate_limit",
                "gauge",
                "GitHub API requests allowed per rate-limit window (an hour).",
                l.to_string(),
            );
        }
        for (name, help, s) in [
            (
                "krunner_time_to_runner_online_seconds",
                "From guest start to the runner first seen online.",
                &self.time_to_online,
            ),
            (
                "krunner_vm_lifetime_seconds",
                "From guest start to guest end.",
                &self.vm_lifetime,
            ),
        ] {
            let (sum, count) = s.get();
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} summary\n{name}_sum {sum}\n{name}_count {count}\n"
            );
        }
        self.render_pools(&mut out);
        out
    }
}

/// Binds `addr` and serves `GET /metrics` in a background task until the runtime ends.
/// Returns the bound address (the port may have been 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    github: GitHub,
) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    if !bound.ip().is_loopback() {
        // Not refused (the user asked for it), but said: the endpoint has no authentication.
        tracing::warn!("the metrics endpoint on {bound} is reachable from other hosts");
    }
    tracing::info!("metrics at http://{bound}/metrics");
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((conn, _)) => {
                    let metrics = metrics.clone();
                    let github = github.clone();
                    tokio::spawn(async move {
                        // A slow or silent client must not hold a task forever.
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            answer(conn, &metrics, &github),
                        )
                        .await;
                    });
                }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    tracing::debug!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(bound)
}

/// Largest request head read; a scrape's is a few hundred bytes.
const MAX_HEAD: usize = 8192;

/// Reads one request head and writes one response.
async fn answer(mut conn: TcpStream, metrics: &Metrics, github: &GitHub) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
        let n = conn.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let (status, body) = match request_target(&head) {
        Some((method, target)) => route(method, target, || metrics.render(ApiStats::of(github))),
        None => ("400 Bad Request", "not an HTTP request\n".into()),
    };
    let content_type = if status == "200 OK" {
        "text/plain; version=0.0.4; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(resp.as_bytes()).await?;
    conn.shutdown().await
}

/// The method and target of a request head (httparse; headers are not needed), or `None`
/// when it is not a complete, valid HTTP/1.x request head.
fn request_target(head: &[u8]) -> Option<(&str, &str)> {
    let mut slots = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => Some((req.method?, req.path?)),
        _ => None,
    }
}

/// The status line and body for a request's method and target.
fn route(method: &str, target: &str, render: impl FnOnce() -> String) -> (&'static str, String) {
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET", "/metrics") => ("200 OK", render()),
        (_, "/metrics") => ("405 Method Not Allowed", "only GET\n".into()),
        _ => ("404 Not Found", "see /metrics\n".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pools_render_gauges_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.pool_status(&crate::orchestrator::state::PoolStatus {
            name: "a\"b".into(),
            assigned_jobs: 2,
            ..Default::default()
        });
        for s in [0.3, 1.5, 1.5, 700.0] {
            m.pool_job_wait("a\"b", Duration::from_secs_f64(s));
        }
        let out = m.render(ApiStats::default());
        for want in [
            "krunner_pool_assigned_jobs{pool=\"a\\\"b\"} 2",
            "krunner_pool_job_wait_seconds_bucket{pool=\"a\\\"b\",le=\"0.5\"} 1",
            "krunner_pool_job_wait_seconds_bucket{pool=\"a\\\"b\",le=\"2\"} 3",
            "krunner_pool_job_wait_seconds_bucket{pool=\"a\\\"b\",le=\"600\"} 3",
            "krunner_pool_job_wait_seconds_bucket{pool=\"a\\\"b\",le=\"+Inf\"} 4",
            "krunner_pool_job_wait_seconds_count{pool=\"a\\\"b\"} 4",
            "# TYPE krunner_pool_job_wait_seconds histogram",
        ] {
            assert!(out.contains(want), "{want}\n{out}");
        }
        assert!(!Metrics::default()
            .render(ApiStats::default())
            .contains("krunner_pool_"));
    }

    #[test]
    fn renders_counters_gauges_and_summaries() {
        let m = Metrics::default();
        m.runs_started.fetch_add(3, Ordering::Relaxed);
        m.runs_succeeded.fetch_add(2, Ordering::Relaxed);
        m.runs_failed.fetch_add(1, Ordering::Relaxed);
        m.active_vms.fetch_add(1, Ordering::Relaxed);
        m.time_to_online.observe(Duration::from_millis(1500));
        m.time_to_online.observe(Duration::from_millis(500));
        m.vm_lifetime.observe(Duration::from_secs(60));
        let text = m.render(ApiStats {
            calls: 42,
            calls_last_hour: 40,
            rate_limit_remaining: Some(4900),
            rate_limit_limit: Some(5000),
        });
        for line in [
            "# TYPE krunner_runs_started_total counter\nkrunner_runs_started_total 3\n",
            "krunner_runs_succeeded_total 2\n",
            "krunner_runs_failed_total 1\n",
            "krunner_github_api_calls_total 42\n",
            "# TYPE krunner_active_vms gauge\nkrunner_active_vms 1\n",
            "krunner_github_rate_limit_remaining 4900\n",
            "# TYPE krunner_github_api_calls_last_hour gauge\nkrunner_github_api_calls_last_hour 40\n",
            "# TYPE krunner_github_rate_limit gauge\nkrunner_github_rate_limit 5000\n",
            "# TYPE krunner_time_to_runner_online_seconds summary\n",
            "krunner_time_to_runner_online_seconds_sum 2\n",
            "krunner_time_to_runner_online_seconds_count 2\n",
            "krunner_vm_lifetime_seconds_sum 60\nkrunner_vm_lifetime_seconds_count 1\n",
        ] {
            assert!(text.contains(line), "{line:?} missing from\n{text}");
        }
        // Every sample line is `name value` with a number.
        for l in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = l.split_once(' ').unwrap();
            v.parse::<f64>().unwrap();
        }
    }

    #[test]
    fn rate_limit_is_absent_until_known() {
        let text = Metrics::default().render(ApiStats::default());
        assert!(!text.contains("rate_limit"));
        assert!(text.contains("krunner_github_api_calls_total 0\n"));
    }

    #[test]
    fn routes() {
        let r = || "x".to_string();
        assert_eq!(route("GET", "/metrics", r), ("200 OK", "x".into()));
        assert_eq!(route("GET", "/metrics?a=b", r).0, "200 OK");
        assert_eq!(route("POST", "/metrics", r).0, "405 Method Not Allowed");
        assert_eq!(route("GET", "/", r).0, "404 Not Found");
    }

    #[test]
    fn request_heads() {
        let head = b"GET /metrics?a=b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(request_target(head), Some(("GET", "/metrics?a=b")));
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.0\n\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(
            request_target(b"GET /metrics HTTP/1.1\r\n"),
            None,
            "incomplete"
        );
        assert_eq!(request_target(b""), None);
        assert_eq!(request_target(b"\x16\x03\x01 TLS\r\n\r\n"), None);
    }
}

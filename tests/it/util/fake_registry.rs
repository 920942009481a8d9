//! An in-process registry on `127.0.0.1` for what a real one cannot be made to do: serve
//! manifests and blobs from memory, require Bearer tokens from its own `/token` endpoint
//! (which checks Basic credentials), and serve a blob corrupted, short, or cut off mid-body.
//! It logs every request (`METHOD path`) so tests can count them.
//!
//! One thread accepts; each connection gets a thread and one request (`Connection: close`).

use std::collections::HashMap;
use std::io::{BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::read_request;
use super::oci::Image;

/// How a blob is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobMode {
    /// As it is.
    Normal,
    /// Same length, one byte flipped: the digest does not match.
    Corrupt,
    /// A complete response with only the first half of the bytes (Content-Length says so).
    Short,
    /// Content-Length of the whole blob, then half of it, then the connection drops.
    Drop,
    /// Content-Length of the whole blob, half of it, then nothing for 60 s (an interrupted
    /// pull can be tested while it hangs).
    Stall,
}

#[derive(Default)]
struct State {
    /// (repository, tag or digest) → (media type, bytes).
    manifests: HashMap<(String, String), (String, Vec<u8>)>,
    /// (repository, digest) → bytes.
    blobs: HashMap<(String, String), Vec<u8>>,
    modes: HashMap<String, BlobMode>,
    log: Vec<String>,
    bearer: Option<(String, String)>,
    tokens: Vec<String>,
}

/// The fake registry; stops accepting when dropped.
pub struct FakeRegistry {
    host: String,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl FakeRegistry {
    /// An anonymous registry.
    pub fn start() -> FakeRegistry {
        FakeRegistry::start_with(None)
    }

    /// A registry that requires a Bearer token, which `/token` hands out for these Basic
    /// credentials.
    pub fn with_bearer(user: &str, pass: &str) -> FakeRegistry {
        FakeRegistry::start_with(Some((user.to_string(), pass.to_string())))
    }

    fn start_with(bearer: Option<(String, String)>) -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let state = Arc::new(Mutex::new(State {
            bearer,
            ..State::default()
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, h) = (state.clone(), stop.clone(), host.clone());
        let counter = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if sp.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (st, h, counter) = (st.clone(), h.clone(), counter.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &st, &h, &counter);
                });
            }
        });
        FakeRegistry { host, state, stop }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// `127.0.0.1:PORT/<repo_tag>`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host)
    }

    /// Serves `image` as `repo:tag` (and every manifest by digest).
    pub fn add(&self, repo: &str, tag: &str, image: &Image) {
        let mut st = self.state.lock().unwrap();
        for (digest, blob) in &image.blobs {
            if blob.media_type.contains("manifest") || blob.media_type.contains("index") {
                st.manifests.insert(
                    (repo.to_string(), digest.clone()),
                    (blob.media_type.clone(), blob.bytes.clone()),
                );
            } else {
                st.blobs
                    .insert((repo.to_string(), digest.clone()), blob.bytes.clone());
            }
        }
        let top = &image.blobs[&image.top.digest];
        st.manifests.insert(
            (repo.to_string(), tag.to_string()),
            (top.media_type.clone(), top.bytes.clone()),
        );
    }

    /// Serves blob `digest` in `mode` from now on.
    pub fn set_blob_mode(&self, digest: &str, mode: BlobMode) {
        self.state
            .lock()
            .unwrap()
            .modes
            .insert(digest.to_string(), mode);
    }

    /// Every request so far, as `METHOD path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().unwrap().log.clone()
    }

    /// How many requests start with `prefix` (e.g. `GET /v2/x/blobs/`).
    pub fn count(&self, prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }

    /// How many tokens `/token` handed out.
    pub fn tokens_issued(&self) -> usize {
        self.state.lock().unwrap().tokens.len()
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.host);
    }
}

fn respond(
    mut conn: &TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: &[u8],
    send_body: bool,
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| *k == "Content-Length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if send_body {
        conn.write_all(body)?;
    }
    conn.flush()
}

fn error_body(code: &str, msg: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({"errors": [{"code": code, "message": msg}]})).unwrap()
}

fn serve(
    conn: TcpStream,
    state: &Mutex<State>,
    host: &str,
    counter: &AtomicU64,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let Some(req) = read_request(&mut BufReader::new(&conn))? else {
        return Ok(());
    };
    let shown = if req.query.is_empty() {
        format!("{} {}", req.method, req.path)
    } else {
        format!("{} {}?{}", req.method, req.path, req.query)
    };
    let bearer = {
        let mut st = state.lock().unwrap();
        st.log.push(shown);
        st.bearer.clone()
    };
    let head_only = req.method == "HEAD";
    let json = ("Content-Type", "application/json".to_string());

    if req.path == "/token" {
        use base64::Engine as _;
        let Some((user, pass)) = bearer else {
            return respond(&conn, "404 Not Found", &[], b"", true);
        };
        let want = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        );
        if req.headers.get("authorization") != Some(&want) {
            return respond(
                &conn,
                "401 Unauthorized",
                &[json],
                &error_body("UNAUTHORIZED", "bad credentials for the token service"),
                true,
            );
        }
        let token = format!("fake-token-{}", counter.fetch_add(1, Ordering::SeqCst));
        state.lock().unwrap().tokens.push(token.clone());
        let body = serde_json::to_vec(&serde_json::json!({
            "token": token, "access_token": token, "expires_in": 300,
        }))
        .unwrap();
        return respond(&conn, "200 OK", &[json], &body, true);
    }

    if bearer.is_some() {
        let ok = req
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| state.lock().unwrap().tokens.iter().any(|x| x == t));
        if !ok {
            let challenge = format!("Bearer realm=\"http://{host}/token\",service=\"fake\"");
            return respond(
                &conn,
                "401 Unauthorized",
                &[("WWW-Authenticate", challenge), json],
                &error_body("UNAUTHORIZED", "authentication required"),
                !head_only,
            );
        }
    }

    if req.path == "/v2/" || req.path == "/v2" {
        return respond(&conn, "200 OK", &[json], b"{}", !head_only);
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return respond(&conn, "404 Not Found", &[], b"", true);
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let found = state
            .lock()
            .unwrap()
            .manifests
            .get(&(repo.to_string(), reference.to_string()))
            .cloned();
        let Some((media_type, bytes)) = found else {
            return respond(
                &conn,
                "404 Not Found",
                &[json],
                &error_body("MANIFEST_UNKNOWN", "manifest unknown"),
                !head_only,
            );
        };
        return respond(
            &conn,
            "200 OK",
            &[
                ("Content-Type", media_type),
                ("Docker-Content-Digest", super::sha256_digest(&bytes)),
            ],
            &bytes,
            !head_only,
        );
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        let (found, mode) = {
            let st = state.lock().unwrap();
            (
                st.blobs
                    .get(&(repo.to_string(), digest.to_string()))
                    .cloned(),
                st.modes.get(digest).copied().unwrap_or(BlobMode::Normal),
            )
        };
        let Some(mut bytes) = found else {
            return respond(
                &conn,
                "404 Not Found",
                &[json],
                &error_body("BLOB_UNKNOWN", "blob unknown"),
                !head_only,
            );
        };
        let ctype = ("Content-Type", "application/octet-stream".to_string());
        return match mode {
            BlobMode::Normal => respond(&conn, "200 OK", &[ctype], &bytes, !head_only),
            BlobMode::Corrupt => {
                let mid = bytes.len() / 2;
                bytes[mid] ^= 0xff;
                respond(&conn, "200 OK", &[ctype], &bytes, !head_only)
            }
            BlobMode::Short => {
                bytes.truncate(bytes.len() / 2);
                respond(&conn, "200 OK", &[ctype], &bytes, !head_only)
            }
            BlobMode::Drop => {
                let full = bytes.len();
                bytes.truncate(full / 2);
                respond(
                    &conn,
                    "200 OK",
                    &[ctype, ("Content-Length", full.to_string())],
                    &bytes,
                    !head_only,
                )?;
                conn.shutdown(std::net::Shutdown::Both)
            }
            BlobMode::Stall => {
                let full = bytes.len();
                bytes.truncate(full / 2);
                respond(
                    &conn,
                    "200 OK",
                    &[ctype, ("Content-Length", full.to_string())],
                    &bytes,
                    !head_only,
                )?;
                std::thread::sleep(std::time::Duration::from_secs(60));
                conn.shutdown(std::net::Shutdown::Both)
            }
        };
    }
    respond(&conn, "404 Not Found", &[], b"", true)
}

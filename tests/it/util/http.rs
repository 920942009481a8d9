//! One HTTP/1.1 request reader for the test servers (the GitHub API simulator and the fake
//! registry): the head parsed by httparse, the body read by `Content-Length` or chunked
//! transfer encoding.

use std::collections::HashMap;
use std::io::{self, BufRead};

/// One request as the test servers see it.
pub struct Request {
    /// `GET`, `POST`…
    pub method: String,
    /// The target's path, without the query.
    pub path: String,
    /// The target's query, without `?` (empty when none).
    pub query: String,
    /// Headers by lower-case name (the last one wins).
    pub headers: HashMap<String, String>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Request {
    /// A header's value by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Largest request head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most headers in one request.
const MAX_HEADERS: usize = 64;

/// Reads the next request; `None` when the peer closed the connection between requests.
/// Blank lines before a request are skipped (a client may send one after a body).
pub fn read_request(r: &mut impl BufRead) -> io::Result<Option<Request>> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line)? == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed within a request head",
            ));
        }
        let blank = line == b"\r\n" || line == b"\n";
        if blank && head.is_empty() {
            continue;
        }
        head.extend_from_slice(&line);
        if blank {
            break;
        }
        if head.len() > MAX_HEAD {
            return Err(io::Error::other("request head too large"));
        }
    }
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut slots);
    if parsed.parse(&head).map_err(io::Error::other)?.is_partial() {
        return Err(io::Error::other("incomplete request head"));
    }
    let method = parsed.method.unwrap_or_default().to_string();
    let target = parsed.path.unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: HashMap<String, String> = parsed
        .headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value).trim().to_string();
            (h.name.to_ascii_lowercase(), value)
        })
        .collect();
    let body = read_body(r, &headers)?;
    Ok(Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    }))
}

/// The body the headers announce: chunked, `Content-Length` bytes, or none.
fn read_body(r: &mut impl BufRead, headers: &HashMap<String, String>) -> io::Result<Vec<u8>> {
    let chunked = headers
        .get("transfer-encoding")
        .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"));
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let size = size.trim().split(';').next().unwrap_or("0");
            let n = usize::from_str_radix(size, 16).map_err(io::Error::other)?;
            // The chunk and its CRLF.
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = headers.get("content-length") {
        let n: usize = n.parse().map_err(io::Error::other)?;
        body = vec![0; n];
        r.read_exact(&mut body)?;
    }
    Ok(body)
}

//! Credentials: a personal access token, or a GitHub App that mints installation tokens.
//!
//! App flow, in order: the PEM key is parsed once when the client is built (PKCS#1
//! `RSA PRIVATE KEY`, what GitHub hands out, or PKCS#8 `PRIVATE KEY`, what `openssl genrsa`
//! writes); each App-level call is signed with a fresh RS256 JWT (`iat` = now − 60 s against
//! clock drift, `exp` = now + 9 min, under GitHub's 10-minute cap, `iss` = the App id, as a string); the
//! installation id is taken as given or discovered once; its access token is cached and renewed
//! 5 minutes before `expires_at`, or at once after a 401. The cache sits behind one async
//! mutex, so concurrent callers wait for a single renewal instead of each minting a token.

use std::path::Path;
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde::Serialize;

use super::error::GitHubError;
use super::http::Cred;
use super::models::{WireInstallation, WireToken};
use super::{GitHub, Scope};
use crate::secret::Secret;

/// How krunner authenticates to GitHub.
#[derive(Debug, Clone)]
pub enum Auth {
    /// A personal access token (classic or fine-grained).
    Pat(Secret),
    /// A GitHub App: its id, its private key (PEM) and, optionally, the installation to use.
    App {
        /// The numeric App id (the JWT issuer; accepted by every GitHub Enterprise Server).
        app_id: u64,
        /// The App's private key, PEM text.
        key_pem: Secret,
        /// The installation; discovered for the scope when `None`.
        installation_id: Option<u64>,
    },
}

impl Auth {
    /// Reads a GitHub App key from `path` and checks that it can sign, so a wrong file is
    /// reported with its name before any request.
    pub fn app_from_file(
        app_id: u64,
        path: &Path,
        installation_id: Option<u64>,
    ) -> Result<Auth, GitHubError> {
        let origin = path.display().to_string();
        let pem = std::fs::read_to_string(path)
            .map(Secret::new)
            .map_err(|e| GitHubError::AppKey {
                origin: origin.clone(),
                reason: format!("cannot read it: {e}"),
            })?;
        let key = parse_rsa_pem(&pem, &origin)?;
        app_jwt(&key, app_id, now_epoch(), &origin)?;
        Ok(Auth::App {
            app_id,
            key_pem: pem,
            installation_id,
        })
    }
}

/// Credentials as the client holds them.
pub(crate) enum Credentials {
    Pat(Secret),
    App(AppCreds),
}

/// A GitHub App's parsed key and token cache.
pub(crate) struct AppCreds {
    pub(crate) app_id: u64,
    /// Zeroed on drop by jsonwebtoken and has no `Debug`, so it can't leak through formatting.
    key: EncodingKey,
    state: tokio::sync::Mutex<TokenState>,
}

struct TokenState {
    installation_id: Option<u64>,
    cached: Option<CachedToken>,
}

struct CachedToken {
    token: Secret,
    /// When GitHub says it expires, UTC epoch seconds.
    expires_epoch: u64,
}

/// Renew installation tokens this long before they expire, so a call in flight never
/// carries one that lapses on the way.
const REFRESH_MARGIN_SECS: u64 = 5 * 60;
/// Installation tokens live one hour; assumed when `expires_at` can't be read.
const TOKEN_LIFETIME_SECS: u64 = 60 * 60;

impl Credentials {
    pub(crate) fn from_auth(auth: &Auth) -> Result<Credentials, GitHubError> {
        match auth {
            Auth::Pat(token) => {
                if token.expose().trim().is_empty() {
                    return Err(GitHubError::Config("the GitHub token is empty".into()));
                }
                Ok(Credentials::Pat(token.clone()))
            }
            Auth::App {
                app_id,
                key_pem,
                installation_id,
            } => {
                let origin = "(given inline)";
                let key = parse_rsa_pem(key_pem, origin)?;
                // Sign once now: a key that parses but can't sign fails here, not mid-run.
                app_jwt(&key, *app_id, now_epoch(), origin)?;
                Ok(Credentials::App(AppCreds {
                    app_id: *app_id,
                    key,
                    state: tokio::sync::Mutex::new(TokenState {
                        installation_id: *installation_id,
                        cached: None,
                    }),
                }))
            }
        }
    }

    /// `"PAT"` or `"GitHub App {id}"`, for Debug output and hints.
    pub(crate) fn kind(&self) -> String {
        match self {
            Credentials::Pat(_) => "PAT".into(),
            Credentials::App(a) => format!("GitHub App {}", a.app_id),
        }
    }
}

#[derive(Serialize)]
struct Claims {
    iat: u64,
    exp: u64,
    /// The App id as a string: GitHub takes a string or a number, and JWT libraries (ours,
    /// and the verifiers a test server uses) recognise `iss` only as a string.
    iss: String,
}

/// The App JWT's lifetime past `now`: 9 minutes, a minute under GitHub's limit so a slow clock
/// on our side doesn't get it refused.
const JWT_LIFETIME_SECS: u64 = 9 * 60;
/// Backdating of `iat`, as GitHub recommends against clock drift.
const JWT_BACKDATE_SECS: u64 = 60;

/// A signed App JWT for `now` (UTC epoch seconds).
pub(crate) fn app_jwt(
    key: &EncodingKey,
    app_id: u64,
    now: u64,
    origin: &str,
) -> Result<Secret, GitHubError> {
    install_crypto_provider();
    let claims = Claims {
        iat: now.saturating_sub(JWT_BACKDATE_SECS),
        exp: now + JWT_LIFETIME_SECS,
        iss: app_id.to_string(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, key)
        .map(Secret::new)
        .map_err(|e| GitHubError::AppKey {
            origin: origin.to_string(),
            reason: format!("cannot sign a JWT with it: {e}"),
        })
}

/// Picks aws-lc-rs explicitly: if another crate in the build also enables jsonwebtoken's
/// `rust_crypto`, the automatic choice would panic.
fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // An Err means a provider is already installed, which is just as good.
        let _ = jsonwebtoken::crypto::CryptoProvider::install_default(
            &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
        );
    });
}

/// Parses an RSA private key in PEM form into a signing key.
pub(crate) fn parse_rsa_pem(pem: &Secret, origin: &str) -> Result<EncodingKey, GitHubError> {
    let bad = |reason: String| GitHubError::AppKey {
        origin: origin.to_string(),
        reason,
    };
    let text = pem.expose();
    let Some(begin) = text.find("-----BEGIN ") else {
        return Err(bad("not a PEM file (no -----BEGIN line)".into()));
    };
    let after = &text[begin + "-----BEGIN ".len()..];
    let Some((label, rest)) = after.split_once("-----") else {
        return Err(bad("malformed PEM header".into()));
    };
    let end_marker = format!("-----END {label}-----");
    let Some(body_end) = rest.find(&end_marker) else {
        return Err(bad(format!("no {end_marker} line")));
    };
    let b64: String = rest[..body_end]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let b64 = Secret::new(b64);
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.expose())
        .map_err(|e| bad(format!("PEM body is not base64: {e}")))?;
    let der = ZeroOnDrop(der);
    let pkcs1 = match label {
        "RSA PRIVATE KEY" => der.0.as_slice(),
        "PRIVATE KEY" => pkcs8_rsa_inner(&der.0).ok_or_else(|| {
            bad("PKCS#8 key is not an RSA key (GitHub App keys are RSA)".into())
        })?,
        "ENCRYPTED PRIVATE KEY" => {
            return Err(bad(
                "the key is encrypted; decrypt it first (openssl pkey -in KEY -out PLAIN)".into(),
            ))
        }
        other => {
            return Err(bad(format!(
                "expected an RSA private key (BEGIN RSA PRIVATE KEY or BEGIN PRIVATE KEY), found BEGIN {other}"
            )))
        }
    };
    Ok(EncodingKey::from_rsa_der(pkcs1))
}

/// Zeroes key material when it goes out of scope.
struct ZeroOnDrop(Vec<u8>);

impl Drop for ZeroOnDrop {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// DER `rsaEncryption` OID, 1.2.840.113549.1.1.1.
const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The PKCS#1 `RSAPrivateKey` inside a PKCS#8 `PrivateKeyInfo` (RFC 5208):
/// `SEQUENCE { INTEGER version, SEQUENCE { OID, params }, OCTET STRING key, … }`.
pub(crate) fn pkcs8_rsa_inner(der: &[u8]) -> Option<&[u8]> {
    let (tag, info, _) = der_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, _version, rest) = der_tlv(info)?;
    if tag != 0x02 {
        return None;
    }
    let (tag, alg, rest) = der_tlv(rest)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, oid, _) = der_tlv(alg)?;
    if tag != 0x06 || oid != RSA_OID {
        return None;
    }
    let (tag, key, _) = der_tlv(rest)?;
    (tag == 0x04).then_some(key)
}

/// One DER tag-length-value: (tag, contents, what follows).
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// Seconds since the Unix epoch (0 if the clock is before 1970, which GitHub will then refuse).
pub(crate) fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parses GitHub's timestamps (`2016-07-11T22:14:10Z`, `2020-01-29T12:13:35.123-08:00`) to
/// UTC epoch seconds.
pub(crate) fn parse_timestamp(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |r| num_at(s, r);
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            sign * (num_at(rest, 1..3)? * 3600 + num_at(rest, 4..6)? * 60)
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset;
    u64::try_from(secs).ok()
}

fn num_at(s: &str, r: std::ops::Range<usize>) -> Option<i64> {
    let part = s.get(r)?;
    if !part.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    part.parse().ok()
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

impl GitHub {
    /// The bearer token for a scope call: the PAT, or a valid installation token.
    pub(crate) async fn bearer(&self) -> Result<Secret, GitHubError> {
        let app = match &self.inner.creds {
            Credentials::Pat(token) => return Ok(token.clone()),
            Credentials::App(app) => app,
        };
        let mut state = app.state.lock().await;
        let now = now_epoch();
        if let Some(c) = &state.cached {
            if c.expires_epoch > now + REFRESH_MARGIN_SECS {
                return Ok(c.token.clone());
            }
        }
        let id = match state.installation_id {
            Some(id) => id,
            None => {
                // Boxed: discovery sends requests, and `send` itself awaits `bearer`.
                let id = Box::pin(self.discover_installation(app.app_id)).await?;
                tracing::debug!(installation_id = id, scope = %self.inner.scope, "found the GitHub App installation");
                state.installation_id = Some(id);
                id
            }
        };
        let path = format!("/app/installations/{id}/access_tokens");
        let resp = Box::pin(self.send(Method::POST, &path, None, Cred::AppJwt)).await?;
        let tok: WireToken = resp.decode(&Method::POST, &path)?;
        let expires_epoch = parse_timestamp(&tok.expires_at).unwrap_or_else(|| {
            tracing::warn!(expires_at = %tok.expires_at, "cannot read the installation token's expiry; assuming one hour");
            now + TOKEN_LIFETIME_SECS
        });
        tracing::debug!(installation_id = id, expires_at = %tok.expires_at, "new installation token");
        let token = tok.token.clone();
        state.cached = Some(CachedToken {
            token: tok.token,
            expires_epoch,
        });
        Ok(token)
    }

    /// Forgets the cached installation token after GitHub refused it, unless another caller
    /// already replaced it.
    pub(crate) async fn invalidate_token(&self, used: &Secret) {
        if let Credentials::App(app) = &self.inner.creds {
            let mut state = app.state.lock().await;
            if state.cached.as_ref().is_some_and(|c| &c.token == used) {
                state.cached = None;
            }
        }
    }

    /// A fresh App JWT.
    pub(crate) fn app_jwt(&self) -> Result<Secret, GitHubError> {
        match &self.inner.creds {
            Credentials::App(app) => app_jwt(&app.key, app.app_id, now_epoch(), "(loaded)"),
            Credentials::Pat(_) => Err(GitHubError::Config(
                "an App JWT was needed but the client was built with a PAT".into(),
            )),
        }
    }

    /// Finds the App's installation for the client's scope.
    async fn discover_installation(&self, app_id: u64) -> Result<u64, GitHubError> {
        let scope = &self.inner.scope;
        let not_found = || GitHubError::InstallationNotFound {
            app_id,
            scope: scope.to_string(),
        };
        match scope {
            Scope::Repo { .. } | Scope::Org(_) => {
                let path = format!("{}/installation", scope.path_prefix());
                match self.send(Method::GET, &path, None, Cred::AppJwt).await {
                    Ok(resp) => Ok(resp.decode::<WireInstallation>(&Method::GET, &path)?.id),
                    Err(GitHubError::NotFound { .. }) => Err(not_found()),
                    Err(e) => Err(e),
                }
            }
            Scope::Enterprise(slug) => {
                for page in 1..=super::MAX_PAGES {
                    let path = format!("/app/installations?per_page=100&page={page}");
                    let resp = self.send(Method::GET, &path, None, Cred::AppJwt).await?;
                    let list: Vec<WireInstallation> = resp.decode(&Method::GET, &path)?;
                    let n = list.len();
                    let hit = list.into_iter().find(|i| {
                        i.account.as_ref().is_some_and(|a| {
                            [&a.slug, &a.login]
                                .into_iter()
                                .flatten()
                                .any(|name| name.eq_ignore_ascii_case(slug))
                        })
                    });
                    if let Some(i) = hit {
                        return Ok(i.id);
                    }
                    if n < 100 {
                        break;
                    }
                }
                Err(not_found())
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use jsonwebtoken::{DecodingKey, Validation};

    /// A fresh 2048-bit key: (PKCS#8 PEM, PKCS#1 PEM, PKCS#1 public key DER).
    pub(crate) fn test_key() -> (String, String, Vec<u8>) {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = kp.as_der().unwrap().as_ref().to_vec();
        let pkcs1 = pkcs8_rsa_inner(&pkcs8).unwrap().to_vec();
        let public = aws_lc_rs::signature::KeyPair::public_key(&kp)
            .as_ref()
            .to_vec();
        (
            pem("PRIVATE KEY", &pkcs8),
            pem("RSA PRIVATE KEY", &pkcs1),
            public,
        )
    }

    fn pem(label: &str, der: &[u8]) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[derive(serde::Deserialize)]
    struct Decoded {
        iat: u64,
        exp: u64,
        iss: String,
    }

    #[test]
    fn jwt_claims_verify_with_the_public_key() {
        let (pkcs8, pkcs1, public) = test_key();
        for pem in [pkcs8, pkcs1] {
            let key = parse_rsa_pem(&Secret::new(pem), "test").unwrap();
            let now = now_epoch();
            let jwt = app_jwt(&key, 4242, now, "test").unwrap();
            let mut v = Validation::new(Algorithm::RS256);
            v.set_required_spec_claims(&["exp", "iat", "iss"]);
            let claims = jsonwebtoken::decode::<Decoded>(
                jwt.expose(),
                &DecodingKey::from_rsa_der(&public),
                &v,
            )
            .unwrap()
            .claims;
            assert_eq!(claims.iss, "4242");
            assert_eq!(claims.iat, now - 60);
            assert_eq!(claims.exp, now + 540);
            assert!(claims.exp - claims.iat <= 600);
            let header = jsonwebtoken::decode_header(jwt.expose()).unwrap();
            assert_eq!(header.alg, Algorithm::RS256);
        }
    }

    #[test]
    fn bad_keys_name_their_origin() {
        for (pem, want) in [
            ("hello", "not a PEM"),
            (
                "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                "found BEGIN PUBLIC KEY",
            ),
            (
                "-----BEGIN RSA PRIVATE KEY-----\n!!!\n-----END RSA PRIVATE KEY-----\n",
                "not base64",
            ),
            (
                "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            ("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n", "no -----END"),
        ] {
            let e = match parse_rsa_pem(&Secret::new(pem), "/etc/krunner/app.pem") {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{pem} parsed"),
            };
            assert!(e.contains("/etc/krunner/app.pem") && e.contains(want), "{e}");
        }
        // Parses as PEM but isn't a usable key: refused when building credentials.
        let junk = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        let auth = Auth::App {
            app_id: 1,
            key_pem: Secret::new(junk),
            installation_id: None,
        };
        let e = Credentials::from_auth(&auth).err().unwrap();
        assert!(matches!(e, GitHubError::AppKey { .. }), "{e}");
    }

    #[test]
    fn app_key_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = Auth::app_from_file(1, &missing, None).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let (pkcs8, _, _) = test_key();
        let good = dir.path().join("app.pem");
        std::fs::write(&good, &pkcs8).unwrap();
        let auth = Auth::app_from_file(7, &good, Some(9)).unwrap();
        assert!(!format!("{auth:?}").contains("BEGIN"));
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("2016-07-11T22:14:10Z"), Some(1_468_275_250));
        assert_eq!(
            parse_timestamp("2020-01-29T12:13:35.123-08:00"),
            Some(1_580_328_815)
        );
        assert_eq!(
            parse_timestamp("2024-02-29T00:00:00+01:00"),
            Some(1_709_161_200)
        );
        for bad in [
            "",
            "2016-07-11",
            "2016-13-11T00:00:00Z",
            "2016-07-11T22:14:10",
            "x016-07-11T22:14:10Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}

//! Talking to a registry: one oci-client `Client` per pull, with the right scheme and
//! credentials, manifests as raw verified bytes and blobs streamed to a file.
//!
//! Registries on loopback addresses are reached over plain HTTP, as Docker does; others over
//! HTTPS unless named with `--insecure-registry`. The bearer-token flow (ghcr.io, Docker Hub)
//! is oci-client's; basic credentials come from [`super::auth`].

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciDescriptor;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use super::auth;
use super::cache::Digest;

/// Media types we ask for when fetching a manifest by tag or digest.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry refused our credentials, or wants some.
    #[error("registry {registry} denied access to {repository}: {reason} (credentials are read from $REGISTRY_AUTH_FILE, containers' auth.json or ~/.docker/config.json)")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// The registry's words.
        reason: String,
    },
    /// The manifest or blob is not there.
    #[error("{what} not found in {registry}/{repository}")]
    NotFound {
        /// What was asked for.
        what: String,
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
    },
    /// A blob's bytes do not hash to its digest.
    #[error("blob {digest} from {registry} does not match its digest (got {actual})")]
    DigestMismatch {
        /// The digest the manifest promised.
        digest: String,
        /// What we received.
        actual: String,
        /// Registry host.
        registry: String,
    },
    /// A blob's size differs from its descriptor.
    #[error("blob {digest} from {registry}: expected {expected} bytes, received {received}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// What came.
        received: u64,
        /// Registry host.
        registry: String,
    },
    /// Any other failure of a request.
    #[error("{op} from {registry}/{repository}")]
    Request {
        /// What we asked for.
        op: String,
        /// Registry host.
        registry: String,
        /// Repository.
        repository: String,
        /// The client's error.
        #[source]
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// Writing the download to disk failed.
    #[error("write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The auth file cannot be used.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
}

/// How to reach registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryOptions {
    /// `HOST[:PORT]` entries to reach over plain HTTP although not loopback.
    pub insecure: Vec<String>,
    /// Auth files to consult, in order.
    pub auth_files: Vec<PathBuf>,
}

/// Whether `registry` (`host[:port]`) is on a loopback address.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        registry.rsplit_once(':').map_or(registry, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connection to the registry of one reference.
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
    registry: String,
    repository: String,
}

impl Registry {
    /// Prepares a client for `reference`'s registry: scheme and credentials.
    pub fn connect(
        reference: &Reference,
        opts: &RegistryOptions,
    ) -> Result<Registry, RegistryError> {
        let registry = reference.resolve_registry().to_string();
        let plain = is_loopback(&registry)
            || opts
                .insecure
                .iter()
                .any(|h| h == &registry || h == reference.registry());
        let config = ClientConfig {
            protocol: if plain {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            connect_timeout: Some(Duration::from_secs(30)),
            read_timeout: Some(Duration::from_secs(120)),
            user_agent: concat!("krunner/", env!("CARGO_PKG_VERSION")),
            // We pick the platform ourselves (variant-aware, Linux also on macOS).
            platform_resolver: None,
            ..Default::default()
        };
        let creds = auth::lookup(
            &opts.auth_files,
            reference.registry(),
            reference.repository(),
        )?;
        let auth = match creds {
            Some(c) => {
                tracing::debug!(
                    registry = %registry,
                    user = %c.username,
                    file = %c.source.display(),
                    "using registry credentials"
                );
                RegistryAuth::Basic(c.username, c.password.expose().to_string())
            }
            None => RegistryAuth::Anonymous,
        };
        Ok(Registry {
            client: Client::new(config),
            auth,
            registry: reference.registry().to_string(),
            repository: reference.repository().to_string(),
        })
    }

    /// Fetches a manifest or index by tag or digest: its bytes and their verified digest.
    pub async fn manifest(
        &self,
        reference: &Reference,
    ) -> Result<(bytes::Bytes, Digest), RegistryError> {
        let (body, digest) = self
            .client
            .pull_manifest_raw(reference, &self.auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|e| self.map_err(format!("manifest {}", reference.whole()), e))?;
        let digest = Digest::try_from(digest.as_str()).map_err(|_| RegistryError::Request {
            op: format!("manifest {}", reference.whole()),
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            source: Box::new(oci_client::errors::OciDistributionError::GenericError(
                Some(format!(
                    "registry answered with unsupported digest {digest}"
                )),
            )),
        })?;
        Ok((body, digest))
    }

    /// Streams a blob into `path` (created or truncated), calling `progress` with each chunk's
    /// size. The digest is verified by oci-client and the size here, both before returning Ok.
    pub async fn blob_to_file(
        &self,
        reference: &Reference,
        desc: &OciDescriptor,
        path: &Path,
        progress: Arc<dyn Fn(u64) + Send + Sync>,
    ) -> Result<u64, RegistryError> {
        let write_err = |source| RegistryError::Write {
            path: path.to_path_buf(),
            source,
        };
        // Created in this poll, not on the blocking pool: a create still queued there when a
        // cancelled pull drops this future would run after the caller removed the partial
        // file, and leave it behind (seen under load).
        let file = tokio::fs::File::from_std(std::fs::File::create(path).map_err(write_err)?);
        let expected = u64::try_from(desc.size).unwrap_or(0);
        let mut writer = CountingWriter {
            inner: tokio::io::BufWriter::with_capacity(1 << 20, file),
            written: 0,
            limit: expected,
            progress,
        };
        let res = self.client.pull_blob(reference, desc, &mut writer).await;
        let received = writer.written;
        match res {
            Ok(()) => {}
            Err(oci_client::errors::OciDistributionError::DigestError(
                oci_client::errors::DigestError::VerificationError { expected, actual },
            )) => {
                return Err(RegistryError::DigestMismatch {
                    digest: expected,
                    actual,
                    registry: self.registry.clone(),
                })
            }
            Err(e) if received > expected => {
                tracing::debug!("download stopped: {e}");
                return Err(RegistryError::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected,
                    received,
                    registry: self.registry.clone(),
                });
            }
            Err(e) => return Err(self.map_err(format!("blob {}", desc.digest), e)),
        }
        if received != expected {
            return Err(RegistryError::SizeMismatch {
                digest: desc.digest.clone(),
                expected,
                received,
                registry: self.registry.clone(),
            });
        }
        writer
            .inner
            .into_inner()
            .sync_all()
            .await
            .map_err(write_err)?;
        Ok(received)
    }

    fn map_err(&self, what: String, e: oci_client::errors::OciDistributionError) -> RegistryError {
        use oci_client::errors::OciDistributionError as E;
        match e {
            E::AuthenticationFailure(reason) => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                reason,
            },
            E::UnauthorizedError { url } => RegistryError::Unauthorized {
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                reason: format!("401 Unauthorized for {url}"),
            },
            E::ImageManifestNotFoundError(_) => RegistryError::NotFound {
                what,
                registry: self.registry.clone(),
                repository: self.repository.clone(),
            },
            E::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        oci_client::errors::OciErrorCode::ManifestUnknown
                            | oci_client::errors::OciErrorCode::BlobUnknown
                            | oci_client::errors::OciErrorCode::NameUnknown
                            | oci_client::errors::OciErrorCode::NotFound
                    )
                }) =>
            {
                RegistryError::NotFound {
                    what,
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                }
            }
            E::RegistryError { ref envelope, .. }
                if envelope.errors.iter().any(|x| {
                    matches!(
                        x.code,
                        oci_client::errors::OciErrorCode::Unauthorized
                            | oci_client::errors::OciErrorCode::Denied
                    )
                }) =>
            {
                RegistryError::Unauthorized {
                    registry: self.registry.clone(),
                    repository: self.repository.clone(),
                    reason: e.to_string(),
                }
            }
            source => RegistryError::Request {
                op: what,
                registry: self.registry.clone(),
                repository: self.repository.clone(),
                source: Box::new(source),
            },
        }
    }
}

/// Counts what is written, refuses more than the descriptor promised, reports progress.
struct CountingWriter<W> {
    inner: W,
    written: u64,
    limit: u64,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.written + buf.len() as u64 > self.limit {
            // A registry sending more than the descriptor's size is wrong or hostile: stop now
            // rather than fill the disk.
            self.written += buf.len() as u64;
            return Poll::Ready(Err(std::io::Error::other(
                "blob larger than its descriptor",
            )));
        }
        let res = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &res {
            let n = *n as u64;
            self.written += n;
            (self.progress)(n);
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for r in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "localhost",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "ghcr.io",
            "10.0.0.1:5000",
            "localhost.example:5000",
            "docker.io",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }
}

//! HTTPS for [`crate::serve_with`]: a certificate chain and key from PEM files, an optional
//! CA file whose certificates clients must present (mutual TLS), HTTP/2 and HTTP/1.1 by ALPN,
//! and the files watched: a renewed certificate (certbot, cert-manager) is served to new
//! connections without a restart; connections already open keep the one they began with.
//!
//! rustls with the `ring` provider (the one reqwest already brings): no OpenSSL. The files
//! are polled (size and modification time) rather than watched with inotify, because the
//! usual renewers replace them through symlink swaps that inotify on the file misses.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;

/// A server-side TLS connection (for servers that accept their own, such as tonic's).
pub use tokio_rustls::server::TlsStream;

/// How often [`Tls::watch`] looks at the files.
pub const RELOAD_EVERY: Duration = Duration::from_secs(10);

/// Where a server's certificate, key and (for mutual TLS) client CA are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then its intermediates.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// PEM: CA certificates; when set, clients must present a certificate they signed.
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used, named.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {what}")]
    Pem { path: String, what: String },
    #[error("{path}: the certificate and the key do not go together or are unusable: {source}")]
    Config { path: String, source: rustls::Error },
    #[error("{path}: no usable CA certificate: {what}")]
    ClientCa { path: String, what: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.display().to_string(),
        source,
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.display().to_string(),
            what: format!("not PEM certificates: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.display().to_string(),
            what: "holds no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates(&files.cert)?;
    let key_pem = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: files.key.display().to_string(),
        what: format!("no private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Config {
            path: files.cert.display().to_string(),
            source,
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certificates(ca)? {
                roots.add(c).map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    what: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::ClientCa {
                    path: ca.display().to_string(),
                    what: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Config {
            path: format!("{} and {}", files.cert.display(), files.key.display()),
            source,
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Size and modification time of each file: what changes when a file is replaced.
type Stamp = Vec<Option<(u64, SystemTime)>>;

fn stamp(files: &TlsFiles) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        std::fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.len(), m.modified().ok()?)))
    })
    .collect()
}

/// A server's TLS configuration, reloaded when its files change.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<(Stamp, TlsAcceptor)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the files; an error names the file and what is wrong with it.
    pub fn load(files: TlsFiles) -> Result<Arc<Tls>, TlsError> {
        let stamp = stamp(&files);
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&files)?));
        Ok(Arc::new(Tls {
            files,
            current: RwLock::new((stamp, acceptor)),
        }))
    }

    /// The acceptor for a new connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .clone()
    }

    /// Loads the files again if they changed: `Ok(true)` when a new configuration is in
    /// force. A broken new file leaves the old configuration serving (the error says why).
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = stamp(&self.files);
        if self.current.read().unwrap_or_else(|p| p.into_inner()).0 == now {
            return Ok(false);
        }
        let config = server_config(&self.files);
        let mut g = self.current.write().unwrap_or_else(|p| p.into_inner());
        // Remember the stamp even when the files are broken: one error per change, not one
        // every poll (a renewer writes the key and the certificate one after the other, and
        // the next change brings the pair together).
        g.0 = now;
        g.1 = TlsAcceptor::from(Arc::new(config?));
        Ok(true)
    }

    /// Polls the files every `every` and reloads them when they change, logging the outcome.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            match self.reload_if_changed() {
                Ok(true) => {
                    tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(%error, "TLS files changed but cannot be used; still serving the previous certificate")
                }
            }
        }
    }
}

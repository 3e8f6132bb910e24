//! TLS for connections to PostgreSQL, with libpq's `sslmode` and `sslrootcert`, over rustls
//! (ring, the crypto backend the workspace already has). Used by the store (every connection
//! of its pool) and by the agent's PostgreSQL probe, so both read a database URL alike.
//!
//! tokio-postgres parses `sslmode` only as `disable`, `prefer` and `require` and knows no
//! `sslrootcert`, so [`ConnectTarget::parse`] takes both out of the URL itself (key=value and
//! `postgres://...?` forms), hands the rest to `tokio_postgres::Config`, and builds the rustls
//! certificate check that gives each mode libpq's meaning:
//!
//! | sslmode | TLS | certificate check |
//! | --- | --- | --- |
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | none; as `verify-ca` when `sslrootcert` is given |
//! | `require` | always | none; as `verify-ca` when `sslrootcert` is given |
//! | `verify-ca` | always | chain to `sslrootcert` (or the system's CAs), any host name |
//! | `verify-full` | always | chain and host name |
//!
//! `sslrootcert=system` (libpq 16) trusts the system's CAs and implies `verify-full`. Root
//! certificates are read when the URL is parsed (the store's start, each probe of the agent),
//! where libpq reads them for each connection; an unreadable or empty file is an error in every mode (libpq
//! ignores a missing one under `require`). A failed handshake under `prefer` is an error, not
//! a retry without TLS.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// A database URL that cannot be used: the message names the parameter (and the file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl(pub String);

impl std::fmt::Display for BadUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadUrl {}

/// libpq's `sslmode` values supported (`allow` is not one: tokio-postgres cannot
/// start without TLS and retry with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    /// The value as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(v: &str) -> Result<SslMode, BadUrl> {
        Ok(match v {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err(BadUrl(
                    "sslmode=allow is not supported: use prefer (TLS when the server offers it) or disable".into(),
                ))
            }
            other => {
                return Err(BadUrl(format!(
                    "sslmode={other}: not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        })
    }
}

/// A parsed database URL: the connection settings and the TLS connector that goes with them.
#[derive(Clone)]
pub struct ConnectTarget {
    /// Everything but `sslmode`/`sslrootcert`, with tokio-postgres' own `ssl_mode` set.
    pub config: tokio_postgres::Config,
    /// The rustls connector for `config.connect(tls)` (or a connection pool).
    pub tls: MakeRustlsConnect,
    /// The `sslmode` asked for.
    pub mode: SslMode,
}

impl std::fmt::Debug for ConnectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectTarget")
            .field("config", &self.config)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl ConnectTarget {
    /// Parses a libpq key=value string or `postgres://` URL, with `sslmode` and `sslrootcert`,
    /// and loads the root certificates the mode needs. Every error names the parameter (and
    /// the file).
    pub fn parse(url: &str) -> Result<ConnectTarget, BadUrl> {
        let split = split_tls_params(url)?;
        let mut config = tokio_postgres::Config::from_str(&split.rest).map_err(|e| {
            BadUrl(match std::error::Error::source(&e) {
                Some(cause) => format!("{e}: {cause}"),
                None => e.to_string(),
            })
        })?;
        let root = split.sslrootcert.as_deref().map(|v| match v {
            "system" => RootSource::System,
            path => RootSource::File(PathBuf::from(path)),
        });
        let mode = match (split.sslmode.as_deref(), &root) {
            (Some(m), _) => SslMode::parse(m)?,
            // libpq 16: sslrootcert=system defaults to verify-full.
            (None, Some(RootSource::System)) => SslMode::VerifyFull,
            (None, _) => SslMode::Prefer,
        };
        if matches!(root, Some(RootSource::System)) && mode != SslMode::VerifyFull {
            return Err(BadUrl(format!(
                "sslmode={} may not be used with sslrootcert=system (use verify-full)",
                mode.as_str()
            )));
        }
        config.ssl_mode(match mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        let tls = MakeRustlsConnect::new(client_config(mode, root.as_ref())?);
        Ok(ConnectTarget { config, tls, mode })
    }

    /// Opens one connection (its driver runs on a task of its own until the client is dropped
    /// or the server closes the session): for what must not come from a pool.
    /// [`tls_failure`] tells a failed TLS handshake from other errors.
    pub async fn connect(&self) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "database connection ended");
            }
        });
        Ok(client)
    }
}

enum RootSource {
    File(PathBuf),
    System,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(mode: SslMode, root: Option<&RootSource>) -> Result<rustls::ClientConfig, BadUrl> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match (mode, root) {
        // Never used under disable; any verifier will do.
        (SslMode::Disable, _) | (SslMode::Prefer | SslMode::Require, None) => {
            Arc::new(AnyCertificate(provider.clone()))
        }
        (SslMode::Prefer | SslMode::Require | SslMode::VerifyCa, root) => {
            Arc::new(ChainOnly(webpki_verifier(mode, root, provider.clone())?))
        }
        (SslMode::VerifyFull, root) => webpki_verifier(mode, root, provider.clone())?,
    };
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BadUrl(format!("TLS settings: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

fn webpki_verifier(
    mode: SslMode,
    root: Option<&RootSource>,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, BadUrl> {
    let roots = match root {
        Some(RootSource::File(path)) => roots_from_file(path)?,
        Some(RootSource::System) | None => system_roots(mode)?,
    };
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| BadUrl(format!("sslrootcert: {e}")))
}

fn roots_from_file(path: &std::path::Path) -> Result<RootCertStore, BadUrl> {
    let shown = path.display();
    let pem = std::fs::read(path)
        .map_err(|e| BadUrl(format!("sslrootcert={shown}: cannot read it: {e}")))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            BadUrl(format!(
                "sslrootcert={shown}: not a PEM file of certificates: {e}"
            ))
        })?;
    if certs.is_empty() {
        return Err(BadUrl(format!(
            "sslrootcert={shown}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        )));
    }
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            BadUrl(format!(
                "sslrootcert={shown}: certificate {} is not a usable CA certificate: {e}",
                i + 1
            ))
        })?;
    }
    Ok(roots)
}

fn system_roots(mode: SslMode) -> Result<RootCertStore, BadUrl> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let errors: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
        return Err(BadUrl(format!(
            "sslmode={} without sslrootcert checks the server against the system's CA \
             certificates, but none were found{}: give sslrootcert=/path/to/ca.pem",
            mode.as_str(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(" ({})", errors.join("; "))
            }
        )));
    }
    Ok(roots)
}

/// The server's certificate is not checked: libpq's `prefer` and `require` without a root
/// certificate encrypt against passive eavesdropping only, and servers commonly run with a
/// self-signed certificate under them. The handshake signatures are still verified (the server
/// holds the key of the certificate it sent), so only the certificate's issuer and names go
/// unchecked.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// libpq's `verify-ca`: the chain must lead to a trusted CA and be valid now, but the host
/// name is not compared with the certificate's. rustls' verifier checks the name last, after
/// the chain, so its name error means that everything else passed.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// What a failed TLS handshake reports, with what to change where the cause is a common one.
/// `None` when `e` is not a TLS error (tokio-postgres exposes its error kinds only through
/// `Display`).
pub fn tls_failure(e: &tokio_postgres::Error) -> Option<String> {
    if e.to_string() != "error performing TLS handshake" {
        return None;
    }
    let cause = std::error::Error::source(e);
    let rustls_error = cause
        .and_then(|c| c.downcast_ref::<std::io::Error>())
        .and_then(|io| io.get_ref())
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let text = cause.map_or_else(|| "handshake failed".to_owned(), |c| c.to_string());
    let hint = match rustls_error {
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => Some(
            "the server's certificate is not signed by a CA in sslrootcert, or in the system's \
             CA certificates when sslrootcert is absent",
        ),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => Some(
            "the host in the database URL is not a name in the server's certificate: connect by \
             a name it holds, or use sslmode=verify-ca to check the CA only",
        ),
        _ if text == "server does not support TLS" => Some(
            "the server runs with ssl = off, or the host is a Unix socket, where PostgreSQL \
                 has no TLS: turn ssl on, or use sslmode=prefer or disable",
        ),
        _ => None,
    };
    Some(match hint {
        Some(h) => format!("{text} ({h})"),
        None => text,
    })
}

/// The URL without `sslmode` and `sslrootcert`, and their values.
#[derive(Debug, PartialEq, Eq)]
struct Split {
    rest: String,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

fn split_tls_params(url: &str) -> Result<Split, BadUrl> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        split_uri(url)
    } else {
        split_key_value(url)
    }
}

/// `postgres://...?a=b&sslmode=...`: the query's pairs are percent-encoded.
fn split_uri(url: &str) -> Result<Split, BadUrl> {
    let mut split = Split {
        rest: url.to_owned(),
        sslmode: None,
        sslrootcert: None,
    };
    let Some((base, query)) = url.split_once('?') else {
        return Ok(split);
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match percent_decode(key)?.as_str() {
            "sslmode" => split.sslmode = Some(percent_decode(value)?),
            "sslrootcert" => split.sslrootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    split.rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok(split)
}

fn percent_decode(s: &str) -> Result<String, BadUrl> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| BadUrl(format!("{s}: percent-encoding is not UTF-8")))
}

/// libpq's `key = value` pairs, values optionally single-quoted, `\` escaping the next
/// character (tokio-postgres' grammar). Pairs other than ours are kept as written.
fn split_key_value(url: &str) -> Result<Split, BadUrl> {
    let mut split = Split {
        rest: String::new(),
        sslmode: None,
        sslrootcert: None,
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut it = url.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = it.peek() else { break };
        let mut key = String::new();
        while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if it.next_if(|(_, c)| *c == '=').is_none() {
            // Not a pair: leave it for tokio-postgres to reject in its own words.
            kept.push(&url[start..]);
            break;
        }
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if it.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match it.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(it.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => return Err(BadUrl(format!("{key}: unterminated quoted value"))),
                }
            }
        } else {
            while let Some((_, c)) = it.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(it.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let end = it.peek().map_or(url.len(), |&(i, _)| i);
        match key.as_str() {
            "sslmode" => split.sslmode = Some(value),
            "sslrootcert" => split.sslrootcert = Some(value),
            _ => kept.push(&url[start..end]),
        }
    }
    split.rest = kept.join(" ");
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Split {
        split_tls_params(url).unwrap()
    }

    #[test]
    fn key_value_pairs_lose_only_the_tls_ones() {
        let s = split(
            "host=db port = 5432 sslmode=verify-full user=sw sslrootcert='/etc/ca dir/r\\'s.pem' dbname=x",
        );
        assert_eq!(s.rest, "host=db port = 5432 user=sw dbname=x");
        assert_eq!(s.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca dir/r's.pem"));
        let s = split("host=/run/pg password='a b' sslmode = require");
        assert_eq!(s.rest, "host=/run/pg password='a b'");
        assert_eq!(s.sslmode.as_deref(), Some("require"));
        assert_eq!(s.sslrootcert, None);
    }

    #[test]
    fn uri_query_loses_only_the_tls_ones() {
        let s = split("postgres://sw@db:5432/x?sslmode=verify-ca&sslrootcert=%2Fetc%2Fca.pem&application_name=c");
        assert_eq!(s.rest, "postgres://sw@db:5432/x?application_name=c");
        assert_eq!(s.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(s.sslrootcert.as_deref(), Some("/etc/ca.pem"));
        let s = split("postgresql://db/x?sslmode=disable");
        assert_eq!(s.rest, "postgresql://db/x");
        let s = split("postgres://db/x");
        assert_eq!(s.rest, "postgres://db/x");
        assert_eq!(s.sslmode, None);
    }

    #[test]
    fn modes_map_onto_tokio_postgres() {
        use tokio_postgres::config::SslMode as Pg;
        for (url, mode, pg) in [
            ("host=db", SslMode::Prefer, Pg::Prefer),
            ("host=db sslmode=disable", SslMode::Disable, Pg::Disable),
            ("host=db sslmode=require", SslMode::Require, Pg::Require),
            (
                "postgres://db/x?sslmode=verify-ca",
                SslMode::VerifyCa,
                Pg::Require,
            ),
            (
                "host=db sslmode=verify-full",
                SslMode::VerifyFull,
                Pg::Require,
            ),
        ] {
            let t = match ConnectTarget::parse(url) {
                Ok(t) => t,
                // A machine without system CA certificates cannot build the verify-* modes.
                Err(e) if e.to_string().contains("none were found") => continue,
                Err(e) => panic!("{url}: {e}"),
            };
            assert_eq!(t.mode, mode, "{url}");
            assert_eq!(t.config.get_ssl_mode(), pg, "{url}");
        }
    }

    #[test]
    fn bad_values_name_the_parameter_and_the_file() {
        let e = ConnectTarget::parse("host=db sslmode=verify").unwrap_err();
        assert!(e.to_string().contains("sslmode=verify:"), "{e}");
        let e = ConnectTarget::parse("host=db sslmode=allow").unwrap_err();
        assert!(e.to_string().contains("sslmode=allow"), "{e}");
        let e = ConnectTarget::parse("host=db sslmode=verify-full sslrootcert=/nonexistent/ca.pem")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("sslrootcert=/nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = ConnectTarget::parse(&format!(
            "postgres://db/x?sslmode=require&sslrootcert={}",
            empty.display()
        ))
        .unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("sslrootcert={}: holds no PEM", empty.display())),
            "{e}"
        );
        let e = ConnectTarget::parse("host=db sslmode=require sslrootcert=system").unwrap_err();
        assert!(e.to_string().contains("use verify-full"), "{e}");
        let e = ConnectTarget::parse("host=db sslrootcert='/unterminated").unwrap_err();
        assert!(e.to_string().contains("sslrootcert: unterminated"), "{e}");
    }
}

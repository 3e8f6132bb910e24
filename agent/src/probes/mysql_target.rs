//! Where and how a MySQL / MariaDB probe connects: the `[[database]]` URL with its TLS
//! parameters (`ssl-mode`, `ssl-ca`) taken out before mysql_async reads the rest. Kept apart
//! from the probe so the config check can parse a URL without importing the probe.

use mysql_async::SslOpts;

/// MySQL's `--ssl-mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl SslMode {
    /// The value as the `mysql` client spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disabled => "DISABLED",
            SslMode::Preferred => "PREFERRED",
            SslMode::Required => "REQUIRED",
            SslMode::VerifyCa => "VERIFY_CA",
            SslMode::VerifyIdentity => "VERIFY_IDENTITY",
        }
    }

    fn parse(v: &str) -> Result<SslMode, String> {
        Ok(match v.to_ascii_uppercase().as_str() {
            "DISABLED" => SslMode::Disabled,
            "PREFERRED" => SslMode::Preferred,
            "REQUIRED" => SslMode::Required,
            "VERIFY_CA" => SslMode::VerifyCa,
            "VERIFY_IDENTITY" => SslMode::VerifyIdentity,
            _ => {
                return Err(format!(
                    "ssl-mode={v}: not one of DISABLED, PREFERRED, REQUIRED, VERIFY_CA, VERIFY_IDENTITY"
                ))
            }
        })
    }
}

/// A probe's MySQL URL: mysql_async's options (without TLS) and the TLS the URL asks for.
#[derive(Clone, Debug)]
pub struct Target {
    pub opts: mysql_async::Opts,
    pub mode: SslMode,
    /// The `ssl-ca` file as given, and its contents (read when the URL is parsed).
    ca: Option<(String, Vec<u8>)>,
}

impl Target {
    /// Parses a `mysql://` URL with `ssl-mode` (or `sslmode`) and `ssl-ca`, which mysql_async
    /// would reject as unknown parameters; reads and checks the CA file. Errors name the
    /// parameter (and the file).
    pub fn parse(url: &str) -> Result<Target, String> {
        let (rest, mode, ca) = split_tls_params(url)?;
        let opts = mysql_async::Opts::from_url(&rest)
            .map_err(|e| format!("not a MySQL URL like mysql://user@host:3306/db ({e})"))?;
        if opts.ssl_opts().is_some() {
            return Err(
                "require_ssl (and verify_ca, verify_identity): use ssl-mode=REQUIRED, \
                 VERIFY_CA or VERIFY_IDENTITY, with ssl-ca=/path/to/ca.pem"
                    .into(),
            );
        }
        let mode = match mode {
            Some(m) => SslMode::parse(&m)?,
            None => SslMode::Preferred,
        };
        let ca = match ca {
            None => None,
            Some(path) => {
                let pem = std::fs::read(&path)
                    .map_err(|e| format!("ssl-ca={path}: cannot read it: {e}"))?;
                let certs = rustls::pki_types::pem::PemObject::pem_slice_iter(&pem)
                    .collect::<Result<Vec<rustls::pki_types::CertificateDer<'_>>, _>>()
                    .map_err(|e| format!("ssl-ca={path}: not a PEM file of certificates: {e}"))?;
                if certs.is_empty() {
                    return Err(format!(
                        "ssl-ca={path}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
                    ));
                }
                Some((path, pem))
            }
        };
        Ok(Target { opts, mode, ca })
    }

    /// mysql_async's TLS options for this mode; `name` overrides the host name the
    /// certificate is checked against.
    pub(super) fn ssl_opts(&self, name: Option<String>) -> Option<SslOpts> {
        let mut o = SslOpts::default();
        if let Some((_, pem)) = &self.ca {
            o = o
                .with_root_certs(vec![pem.clone().into()])
                .with_disable_built_in_roots(true);
        }
        if let Some(n) = name {
            o = o.with_danger_tls_hostname_override(Some(n));
        }
        Some(match (self.mode, &self.ca) {
            (SslMode::Disabled, _) => return None,
            (SslMode::Preferred | SslMode::Required, None) => {
                o.with_danger_accept_invalid_certs(true)
            }
            (SslMode::Preferred | SslMode::Required, Some(_)) | (SslMode::VerifyCa, _) => {
                o.with_danger_skip_domain_validation(true)
            }
            (SslMode::VerifyIdentity, _) => o,
        })
    }
}

/// The URL without `ssl-mode`/`sslmode` and `ssl-ca`, and their (percent-decoded) values.
fn split_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut mode, mut ca) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key.to_ascii_lowercase().as_str() {
            "ssl-mode" | "sslmode" => mode = Some(percent_decode(value)?),
            "ssl-ca" => ca = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, mode, ca))
}

fn percent_decode(s: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s}: percent-encoding is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_params_leave_the_url_and_take_any_case() {
        let t =
            Target::parse("mysql://u:p@db:3306/x?ssl-mode=verify_ca&prefer_socket=false").unwrap();
        assert_eq!(t.mode, SslMode::VerifyCa);
        assert!(t.opts.ssl_opts().is_none());
        let t = Target::parse("mysql://u@db/x?SSLMODE=Disabled").unwrap();
        assert_eq!(t.mode, SslMode::Disabled);
        assert!(t.ssl_opts(None).is_none());
        let t = Target::parse("mysql://u@db/x").unwrap();
        assert_eq!(t.mode, SslMode::Preferred);
        assert!(t.ssl_opts(None).unwrap().accept_invalid_certs());
        let (rest, mode, ca) =
            split_tls_params("mysql://db/x?a=1&ssl-ca=%2Fetc%2Fca.pem&ssl-mode=REQUIRED").unwrap();
        assert_eq!(rest, "mysql://db/x?a=1");
        assert_eq!(mode.as_deref(), Some("REQUIRED"));
        assert_eq!(ca.as_deref(), Some("/etc/ca.pem"));
    }

    #[test]
    fn bad_tls_params_name_the_parameter_and_the_file() {
        let e = Target::parse("mysql://db/x?ssl-mode=VERIFY").unwrap_err();
        assert!(e.starts_with("ssl-mode=VERIFY: not one of"), "{e}");
        let e =
            Target::parse("mysql://db/x?ssl-mode=REQUIRED&ssl-ca=/nonexistent/ca.pem").unwrap_err();
        assert!(
            e.starts_with("ssl-ca=/nonexistent/ca.pem: cannot read it"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here\n").unwrap();
        let e = Target::parse(&format!("mysql://db/x?ssl-ca={}", empty.display())).unwrap_err();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = Target::parse("mysql://db/x?require_ssl=true").unwrap_err();
        assert!(e.contains("use ssl-mode=REQUIRED"), "{e}");
    }
}

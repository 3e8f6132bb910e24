//! The collector over HTTPS, and the agent's own client shipping to it: a private CA, HTTP/2,
//! an expired certificate refused, a renewed certificate served without a restart, client
//! certificates (mutual TLS).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{batch_of, start, Running, TOKEN};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use stormwatch_collector::config::Config;
use stormwatch_model::Encoding;

/// A CA that signs server and client certificates, written as PEM files into `dir`.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    /// A certificate for `names`, valid from `days_from` to `days_to` days from now; its PEM
    /// and its key's PEM.
    fn sign(&self, names: &[&str], cn: &str, days_from: i64, days_to: i64) -> (String, String) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(days_from);
        params.not_after = now + time::Duration::days(days_to);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn https_collector(dir: &Path, ca: &Ca, days_to: i64, client_ca: Option<&Ca>) -> Running {
    let (cert, key) = ca.sign(&["localhost", "127.0.0.1"], "collector-1", -1, days_to);
    let db = stormwatch_testkit::fresh_database().await;
    let mut config = Config::for_tests(&db, TOKEN);
    config.tls_cert = Some(write(dir, "cert.pem", &cert));
    config.tls_key = Some(write(dir, "key.pem", &key));
    config.tls_client_ca = client_ca.map(|c| write(dir, "client-ca.pem", &c.pem));
    start(config).await
}

/// The agent's client, as `agent.toml` would configure it.
fn agent_client(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let cfg = stormwatch_agent::config::Config {
        collector_ca: ca.map(Path::to_owned),
        collector_client_cert: identity.map(|i| i.0.to_owned()),
        collector_client_key: identity.map(|i| i.1.to_owned()),
        ..Default::default()
    };
    stormwatch_agent::ship::shipper::http_client(&cfg).unwrap()
}

fn https(c: &Running, path: &str) -> String {
    format!("https://localhost:{}{path}", c.addr.port())
}

async fn ship(client: &reqwest::Client, c: &Running) -> Result<reqwest::StatusCode, String> {
    client
        .post(https(c, "/api/v1/ingest"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-protobuf")
        .body(batch_of("agent-tls").encode(Encoding::Protobuf))
        .send()
        .await
        .map(|r| r.status())
        .map_err(|e| {
            let mut s = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                s.push_str(&format!(": {c}"));
                cause = c.source();
            }
            s
        })
}

#[tokio::test]
async fn the_agent_ships_over_https_to_a_collector_it_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Stormwatch test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let c = https_collector(dir.path(), &ca, 30, None).await;

    let client = agent_client(Some(&ca_file), None);
    assert_eq!(ship(&client, &c).await.unwrap(), 200);
    // HTTP/2 by ALPN.
    let r = client.get(https(&c, "/healthz")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    // Without the CA the collector is not trusted; plain HTTP to the HTTPS port gets nowhere.
    let err = ship(&agent_client(None, None), &c).await.unwrap_err();
    assert!(err.contains("certificate"), "{err}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{}/healthz", c.addr.port()))
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    // A renewed certificate is served to new connections without a restart.
    let (cert, key) = ca.sign(&["localhost"], "collector-2", -1, 60);
    write(dir.path(), "key.pem", &key);
    write(dir.path(), "cert.pem", &cert);
    let deadline = std::time::Instant::now() + stormwatch_http::tls::RELOAD_EVERY * 2;
    loop {
        // A fresh client: a new connection, a new handshake.
        let r = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
            .tls_info(true)
            .build()
            .unwrap()
            .get(https(&c, "/healthz"))
            .send()
            .await
            .unwrap();
        let der = r
            .extensions()
            .get::<reqwest::tls::TlsInfo>()
            .and_then(|i| i.peer_certificate())
            .unwrap()
            .to_vec();
        let served = pem_der(&cert);
        if der == served {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed certificate was not served within {:?}",
            stormwatch_http::tls::RELOAD_EVERY * 2
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    c.stop().await;
}

/// The DER of the first certificate in `pem`.
fn pem_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[test]
fn unusable_tls_files_are_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.pem");
    let cfg = stormwatch_agent::config::Config {
        collector_ca: Some(missing.clone()),
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        stormwatch_agent::ship::shipper::http_client(&cfg).unwrap_err()
    );
    assert!(
        err.contains("collector_ca") && err.contains("nope.pem"),
        "{err}"
    );
    let garbage = write(dir.path(), "garbage.pem", "not a certificate");
    let cfg = stormwatch_agent::config::Config {
        collector_ca: Some(garbage),
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        stormwatch_agent::ship::shipper::http_client(&cfg).unwrap_err()
    );
    assert!(err.contains("garbage.pem"), "{err}");
    // The collector refuses to start on a key that is not there, naming it.
    let files = stormwatch_http::tls::TlsFiles {
        cert: write(dir.path(), "cert.pem", &Ca::new("x").pem),
        key: missing,
        client_ca: None,
    };
    let err = stormwatch_http::tls::Tls::load(files)
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope.pem"), "{err}");
}

#[tokio::test]
async fn an_expired_certificate_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Stormwatch test CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let c = https_collector(dir.path(), &ca, -1, None).await;
    let err = ship(&agent_client(Some(&ca_file), None), &c)
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("expired"), "{err}");
    c.stop().await;
}

#[tokio::test]
async fn client_certificates_are_required_when_a_client_ca_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("Stormwatch test CA");
    let agents = Ca::new("Stormwatch agents CA");
    let ca_file = write(dir.path(), "ca.pem", &ca.pem);
    let c = https_collector(dir.path(), &ca, 30, Some(&agents)).await;
    // No client certificate: the handshake fails.
    assert!(ship(&agent_client(Some(&ca_file), None), &c).await.is_err());
    // One the agents' CA signed: shipped.
    let (cert, key) = agents.sign(&["agent-1"], "agent-1", -1, 30);
    let id = (
        write(dir.path(), "agent.pem", &cert),
        write(dir.path(), "agent-key.pem", &key),
    );
    let client = agent_client(Some(&ca_file), Some((&id.0, &id.1)));
    assert_eq!(ship(&client, &c).await.unwrap(), 200);
    // One signed by another CA: refused.
    let (cert, key) = ca.sign(&["agent-2"], "agent-2", -1, 30);
    let other = (
        write(dir.path(), "other.pem", &cert),
        write(dir.path(), "other-key.pem", &key),
    );
    let client = agent_client(Some(&ca_file), Some((&other.0, &other.1)));
    assert!(ship(&client, &c).await.is_err());
    c.stop().await;
}

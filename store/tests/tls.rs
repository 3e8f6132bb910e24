//! TLS to a real PostgreSQL: `sslmode` and `sslrootcert` as libpq means them.
//!
//! One cluster per test binary runs with `ssl = on` and a server certificate for the DNS name
//! `localhost` only, signed by a CA made here with rcgen; a second CA signs nothing. The
//! testkit's shared cluster (ssl off) stands for a server without TLS.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use stormwatch_store::embedded::{free_loopback_port, EmbeddedOptions, EmbeddedPostgres};
use stormwatch_store::{Store, StoreError, StoreOptions};

struct TlsCluster {
    port: u16,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that did not.
    other_ca: PathBuf,
}

static CLUSTER: OnceLock<TlsCluster> = OnceLock::new();

/// A role that must log in with SCRAM, and only over TLS.
const SCRAM_USER: &str = "sw_scram";
const SCRAM_PASSWORD: &str = "scram-secret-1";

fn cluster() -> &'static TlsCluster {
    CLUSTER.get_or_init(|| {
        // A thread of its own: the caller is inside a Tokio runtime.
        std::thread::spawn(start_tls_cluster)
            .join()
            .expect("starting the TLS test PostgreSQL panicked")
    })
}

fn new_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), Issuer::new(params, key))
}

/// Starts the embedded cluster code's cluster on a loopback port, then turns TLS on with a
/// certificate for `localhost` (no IP address in it), and a watchdog that stops it and removes
/// its directory when this test binary exits (as the testkit's).
fn start_tls_cluster() -> TlsCluster {
    let dir = tempfile::Builder::new()
        .prefix("stormwatch-test-tls-pg-")
        .tempdir()
        .unwrap()
        .keep();
    // PostgreSQL runs as the `postgres` user when tests run as root: let it in.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = free_loopback_port().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pg = rt
        .block_on(EmbeddedPostgres::start(&EmbeddedOptions {
            data_dir: dir.clone(),
            tcp_port: Some(port),
            unsafe_no_fsync: true,
            shared_buffers_mib: None,
        }))
        .unwrap_or_else(|e| panic!("TLS test PostgreSQL: {e}"));
    spawn_watchdog(&pg, &dir);

    let (ca_pem, ca) = new_ca("stormwatch test CA");
    let (other_pem, _) = new_ca("stormwatch other CA");
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_key = KeyPair::generate().unwrap();
    let server_cert = params.signed_by(&server_key, &ca).unwrap();
    write_server_file(pg.pgdata(), "server.crt", &server_cert.pem());
    write_server_file(pg.pgdata(), "server.key", &server_key.serialize_pem());
    let ca_path = dir.join("ca.pem");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    std::fs::write(&other_ca, other_pem).unwrap();

    // A password role for SCRAM over TLS (the rest of the cluster trusts loopback).
    let hba = pg.pgdata().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all {SCRAM_USER} 127.0.0.1/32 scram-sha-256\n\
             host all {SCRAM_USER} 127.0.0.1/32 reject\n{rules}"
        ),
    )
    .unwrap();
    rt.block_on(async {
        let client = stormwatch_store::tls::connect(&pg.connection_string("postgres"))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "CREATE ROLE {SCRAM_USER} LOGIN PASSWORD '{SCRAM_PASSWORD}'"
            ))
            .await
            .unwrap();
        // Two statements: ALTER SYSTEM refuses to run in the implicit transaction of a batch.
        client
            .batch_execute("ALTER SYSTEM SET ssl = on")
            .await
            .unwrap();
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .unwrap();
    });
    // The reload is asynchronous: wait until a new session is offered TLS.
    let url = format!("{} sslmode=require", pg.connection_string("postgres"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        match rt.block_on(stormwatch_store::tls::connect(&url)) {
            Ok(_) => break,
            Err(e) if std::time::Instant::now() > deadline => {
                let log =
                    std::fs::read_to_string(pg.pgdata().join("server.log")).unwrap_or_default();
                panic!("ssl = on did not take: {e}\n{log}");
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    TlsCluster {
        port,
        ca: ca_path,
        other_ca,
    }
}

/// A file the server reads: owned by the user it runs as, and the key private to it.
fn write_server_file(pgdata: &Path, name: &str, contents: &str) {
    let path = pgdata.join(name);
    std::fs::write(&path, contents).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let meta = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(pgdata).unwrap());
    let gid = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(pgdata).unwrap());
    std::os::unix::fs::chown(&path, Some(meta), Some(gid)).unwrap();
}

fn spawn_watchdog(pg: &EmbeddedPostgres, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         {prefix} '{pg_ctl}' -D '{pgdata}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        prefix = pg.command_prefix().join(" "),
        pg_ctl = pg.bin_dir().join("pg_ctl").display(),
        pgdata = pg.pgdata().display(),
        dir = dir.display(),
    );
    #[allow(clippy::zombie_processes)]
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning the TLS test PostgreSQL watchdog");
}

/// A key=value URL to the TLS cluster by `host` (connecting to 127.0.0.1 either way).
fn url(host: &str, tls: &str) -> String {
    format!(
        "host={host} hostaddr=127.0.0.1 port={} user=stormwatch dbname=postgres {tls}",
        cluster().port
    )
}

/// Whether the session `url` opens runs over TLS, by the server's own account.
async fn session_ssl(url: &str) -> Result<bool, StoreError> {
    let client = stormwatch_store::tls::connect(url).await?;
    Ok(client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?
        .get(0))
}

async fn store(url: &str) -> Result<Store, StoreError> {
    Store::connect(&StoreOptions {
        url: url.to_owned(),
        max_connections: 2,
        retention_days: 7,
    })
    .await
}

fn tls_error(r: Result<impl Sized, StoreError>) -> String {
    match r {
        Err(e @ StoreError::Tls(_)) => {
            eprintln!("{e}");
            e.to_string()
        }
        Err(e) => panic!("expected a TLS error, got: {e}"),
        Ok(_) => panic!("expected a TLS error, but the connection was made"),
    }
}

#[tokio::test]
async fn verify_full_with_the_right_ca_connects_over_tls() {
    let c = cluster();
    let u = url(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", c.ca.display()),
    );
    assert!(session_ssl(&u).await.unwrap());
    // The pool and the alert leader lock's own connection take the same TLS settings: under
    // verify-full tokio-postgres requires TLS, so a connection without it would fail.
    let store = store(&u).await.unwrap();
    assert!(store.try_leader_lock().await.unwrap().is_some());
    // The URL form, percent-encoded.
    let uri = format!(
        "postgres://stormwatch@localhost:{}/postgres?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        c.port,
        c.ca.display().to_string().replace('/', "%2F")
    );
    assert!(session_ssl(&uri).await.unwrap());
}

#[tokio::test]
async fn verify_full_with_another_ca_fails_on_the_certificate() {
    let c = cluster();
    let u = url(
        "localhost",
        &format!("sslmode=verify-full sslrootcert={}", c.other_ca.display()),
    );
    let e = tls_error(store(&u).await);
    assert!(e.contains("TLS"), "{e}");
    assert!(
        e.contains("certificate") && e.contains("UnknownIssuer"),
        "{e}"
    );
    // libpq's require with a root certificate checks the chain as verify-ca does.
    let u = url(
        "localhost",
        &format!("sslmode=require sslrootcert={}", c.other_ca.display()),
    );
    let e = tls_error(session_ssl(&u).await);
    assert!(e.contains("UnknownIssuer"), "{e}");
}

#[tokio::test]
async fn a_host_not_in_the_certificate_fails_verify_full_but_passes_verify_ca() {
    let c = cluster();
    // The certificate names only DNS localhost; 127.0.0.1 is not in it.
    let full = url(
        "127.0.0.1",
        &format!("sslmode=verify-full sslrootcert={}", c.ca.display()),
    );
    let e = tls_error(store(&full).await);
    assert!(e.contains("not valid for name"), "{e}");
    assert!(e.contains("sslmode=verify-ca"), "the hint is missing: {e}");
    let ca = url(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={}", c.ca.display()),
    );
    assert!(session_ssl(&ca).await.unwrap());
    store(&ca).await.unwrap();
    // verify-ca still checks the chain.
    let wrong = url(
        "127.0.0.1",
        &format!("sslmode=verify-ca sslrootcert={}", c.other_ca.display()),
    );
    tls_error(session_ssl(&wrong).await);
}

#[tokio::test]
async fn require_and_prefer_encrypt_without_a_root_certificate() {
    assert!(session_ssl(&url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap());
    // prefer is the default.
    assert!(session_ssl(&url("127.0.0.1", "")).await.unwrap());
    store(&url("localhost", "sslmode=require")).await.unwrap();
}

#[tokio::test]
async fn disable_does_not_encrypt_even_when_the_server_offers_it() {
    assert!(!session_ssl(&url("localhost", "sslmode=disable"))
        .await
        .unwrap());
}

#[tokio::test]
async fn require_against_a_server_without_ssl_fails_clearly() {
    let plain = stormwatch_testkit::postgres().admin_url();
    let e = tls_error(store(&format!("{plain} sslmode=require")).await);
    assert!(e.contains("server does not support TLS"), "{e}");
    assert!(e.contains("ssl = off"), "{e}");
    // prefer falls back to a plain session.
    assert!(!session_ssl(&format!("{plain} sslmode=prefer"))
        .await
        .unwrap());
}

#[tokio::test]
async fn scram_binds_the_session_to_the_tls_channel() {
    let c = cluster();
    // channel_binding=require: SCRAM-SHA-256-PLUS with the server certificate's hash, which
    // tokio-postgres-rustls must supply, or the login fails.
    let u = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user={SCRAM_USER} password={SCRAM_PASSWORD} \
         dbname=postgres channel_binding=require sslmode=verify-full sslrootcert={}",
        c.port,
        c.ca.display()
    );
    assert!(session_ssl(&u).await.unwrap());
    // SCRAM is what let it in: a wrong password over the same TLS is refused.
    let wrong = u.replace(SCRAM_PASSWORD, "not-the-password");
    assert!(session_ssl(&wrong).await.is_err());
    // The role is refused without TLS, so the case above did run over it.
    let plain = u.replace("sslmode=verify-full", "sslmode=disable");
    let e = session_ssl(&plain).await.unwrap_err().to_string();
    assert!(e.starts_with("database:"), "{e}");
}

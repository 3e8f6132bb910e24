//! Database probes over TLS, against real servers: a PostgreSQL with `ssl = on` and a MariaDB
//! with `require_secure_transport = ON`, each with a certificate signed by a CA made here
//! (rcgen); a second CA signs nothing. Servers without TLS stand for the other side.
//!
//! The PostgreSQL URL takes libpq's `sslmode`/`sslrootcert` (as the store reads it), the MySQL
//! URL MySQL's `ssl-mode`/`ssl-ca`. A failed handshake, a server without TLS where it is
//! required and a server that requires TLS where it is off are the failure class `tls`.

mod dbservers;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dbservers::{MariaDb, PgServer};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use stormwatch_agent::probes::config::{Database, Engine, Seconds};
use stormwatch_agent::probes::ProbeState;
use stormwatch_model::{DbRole, FailureClass, ProbeSample};

/// The CA files and a server certificate for `names`, in a directory servers may read.
struct Certs {
    dir: PathBuf,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that did not.
    other_ca: PathBuf,
    cert_pem: String,
    key_pem: String,
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

/// `names`: DNS names, or IP addresses (rcgen makes `127.0.0.1` an IP address name).
fn certs(prefix: &str, names: &[&str]) -> Certs {
    let dir = dbservers::shared_dir(prefix);
    let (ca_pem, ca) = new_ca("stormwatch probe test CA");
    let (other_pem, _) = new_ca("stormwatch other CA");
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, names[0]);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let ca_path = dir.join("ca.pem");
    let other_ca = dir.join("other-ca.pem");
    std::fs::write(&ca_path, ca_pem).unwrap();
    std::fs::write(&other_ca, other_pem).unwrap();
    Certs {
        dir,
        ca: ca_path,
        other_ca,
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

impl Certs {
    /// Writes the server's certificate and key for `user`; their paths.
    fn server_files(&self, user: &str) -> (PathBuf, PathBuf) {
        let (cert, key) = (self.dir.join("server.crt"), self.dir.join("server.key"));
        dbservers::write_for(user, &cert, &self.cert_pem);
        dbservers::write_for(user, &key, &self.key_pem);
        (cert, key)
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn db(engine: Engine, url: String) -> Database {
    Database {
        name: "tls".into(),
        engine,
        role: DbRole::Primary,
        url,
        password_env: None,
        peers: vec![],
        interval: Seconds(Duration::from_secs(1)),
        lag_threshold: Seconds(Duration::from_secs(1)),
        timeout: Seconds(Duration::from_secs(5)),
        heartbeat: None,
    }
}

async fn probe(engine: Engine, url: String, state: &mut ProbeState) -> ProbeSample {
    let d = db(engine, url);
    // The probe's config check reads the URL (and the CA file) as the probe does.
    stormwatch_agent::probes::config::validate(std::slice::from_ref(&d), &Default::default())
        .unwrap_or_else(|(k, m)| panic!("{k}: {m}"));
    stormwatch_agent::probes::probe_once(&d, state).await
}

fn class(s: &ProbeSample) -> FailureClass {
    FailureClass::try_from(s.failure).unwrap()
}

fn path(p: &Path) -> String {
    p.display().to_string().replace('/', "%2F")
}

fn assert_ok_over_tls(s: &ProbeSample, tls: bool) {
    assert_eq!(class(s), FailureClass::None, "{s:?}");
    assert_eq!(
        s.detail.get("tls").map(String::as_str),
        Some(if tls { "true" } else { "false" }),
        "{s:?}"
    );
}

fn assert_tls_failure(s: &ProbeSample, why: &str) {
    println!("{}", s.failure_message);
    assert_eq!(class(s), FailureClass::Tls, "{s:?}");
    assert!(s.failure_message.contains("TLS"), "{s:?}");
    assert!(s.failure_message.contains(why), "{why} missing: {s:?}");
}

#[tokio::test]
async fn postgres_sslmode_and_sslrootcert_as_libpq_has_them() {
    let c = certs("sw-probe-pg-tls-", &["localhost", "127.0.0.1"]);
    let (cert, key) = c.server_files("postgres");
    let pg = PgServer::primary(&format!(
        "ssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'",
        cert.display(),
        key.display()
    ));
    let base = pg.url("app");
    let mut state = ProbeState::default();

    let s = probe(
        Engine::Postgres,
        format!("{base}?sslmode=verify-full&sslrootcert={}", path(&c.ca)),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);
    // By host name, and the key=value form.
    let s = probe(
        Engine::Postgres,
        format!(
            "host=localhost port={} user=app dbname=postgres sslmode=verify-full sslrootcert={}",
            pg.port,
            c.ca.display()
        ),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);

    let s = probe(
        Engine::Postgres,
        format!(
            "{base}?sslmode=verify-full&sslrootcert={}",
            path(&c.other_ca)
        ),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "UnknownIssuer");
    assert!(s.connect_us.is_none(), "{s:?}");

    // prefer (the default) encrypts when the server offers it; disable does not.
    assert_ok_over_tls(
        &probe(Engine::Postgres, base.clone(), &mut state).await,
        true,
    );
    let s = probe(
        Engine::Postgres,
        format!("{base}?sslmode=disable"),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, false);

    // A server without TLS: require fails as TLS, prefer goes without.
    let plain = PgServer::primary("");
    let s = probe(
        Engine::Postgres,
        format!("{}?sslmode=require", plain.url("app")),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "server does not support TLS");
    assert_ok_over_tls(
        &probe(Engine::Postgres, plain.url("app"), &mut state).await,
        false,
    );
}

#[tokio::test]
async fn mariadb_ssl_mode_and_ssl_ca_as_the_mysql_client_has_them() {
    assert!(
        dbservers::mariadb_available(),
        "MariaDB is not installed: ./scripts/test installs it (apt-get install mariadb-server)"
    );
    // The certificate names db.test and 127.0.0.1, not localhost.
    let c = certs("sw-probe-maria-tls-", &["db.test", "127.0.0.1"]);
    let (cert, key) = c.server_files("mysql");
    let maria = MariaDb::start_with(
        1,
        &[
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
            format!("--ssl-ca={}", c.ca.display()),
            "--require-secure-transport=ON".into(),
        ],
    );
    let base = maria.url();
    let mut state = ProbeState::default();

    let s = probe(
        Engine::Mysql,
        format!("{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", path(&c.ca)),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);
    // `sslmode`, any case.
    let s = probe(
        Engine::Mysql,
        format!("{base}?sslmode=verify_identity&ssl-ca={}", c.ca.display()),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);

    let s = probe(
        Engine::Mysql,
        format!(
            "{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
            path(&c.other_ca)
        ),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "UnknownIssuer");

    // By a name the certificate does not hold: VERIFY_IDENTITY fails, VERIFY_CA passes (and
    // still checks the chain).
    let by_name = base.replacen("127.0.0.1", "localhost", 1);
    let s = probe(
        Engine::Mysql,
        format!("{by_name}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}", path(&c.ca)),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "ssl-mode=VERIFY_CA");
    let s = probe(
        Engine::Mysql,
        format!("{by_name}?ssl-mode=VERIFY_CA&ssl-ca={}", path(&c.ca)),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);
    let s = probe(
        Engine::Mysql,
        format!("{by_name}?ssl-mode=VERIFY_CA&ssl-ca={}", path(&c.other_ca)),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "UnknownIssuer");

    // PREFERRED (the default) and REQUIRED encrypt without checking the certificate.
    assert_ok_over_tls(&probe(Engine::Mysql, base.clone(), &mut state).await, true);
    let s = probe(
        Engine::Mysql,
        format!("{base}?ssl-mode=required"),
        &mut state,
    )
    .await;
    assert_ok_over_tls(&s, true);

    // The server refuses the session without TLS: MariaDB 10.11 says "access denied" (1045,
    // as for a wrong password), MySQL ER_SECURE_TRANSPORT_REQUIRED (3159).
    let s = probe(
        Engine::Mysql,
        format!("{base}?ssl-mode=DISABLED"),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "require_secure_transport");
    // A wrong password stays `authentication`, with TLS off or on.
    let wrong = base.replacen("sw:pw@", "sw:wrong@", 1);
    for mode in ["DISABLED", "REQUIRED"] {
        let s = probe(
            Engine::Mysql,
            format!("{wrong}?ssl-mode={mode}"),
            &mut state,
        )
        .await;
        assert_eq!(class(&s), FailureClass::Authentication, "{s:?}");
    }

    // A server without TLS: REQUIRED fails as TLS; PREFERRED goes without, and the next
    // probe does not ask for TLS again.
    let plain = MariaDb::start(2);
    let s = probe(
        Engine::Mysql,
        format!("{}?ssl-mode=REQUIRED", plain.url()),
        &mut state,
    )
    .await;
    assert_tls_failure(&s, "does not offer TLS");
    let mut state = ProbeState::default();
    let t = Instant::now();
    assert_ok_over_tls(&probe(Engine::Mysql, plain.url(), &mut state).await, false);
    assert!(state.mysql_tls_absent.is_some());
    println!(
        "PREFERRED, server without TLS: first probe {:?}",
        t.elapsed()
    );
    let aborted = |m: &MariaDb| -> u64 {
        m.sql("SHOW GLOBAL STATUS LIKE 'Aborted_connects'")
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = aborted(&plain);
    assert_ok_over_tls(&probe(Engine::Mysql, plain.url(), &mut state).await, false);
    assert_eq!(
        aborted(&plain),
        before,
        "the second probe asked for TLS again"
    );
}

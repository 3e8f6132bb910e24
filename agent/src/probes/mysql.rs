//! The MySQL / MariaDB probe: connect (TCP, TLS by the URL's `ssl-mode`), `SELECT 1`, then by
//! role
//!
//! - **replica**: `SHOW REPLICA STATUS` (MySQL 8.0.22+, MariaDB 10.5.1+), falling back to
//!   `SHOW SLAVE STATUS`: seconds behind the source, IO and SQL thread states, the last errors;
//!   bytes behind when the SQL thread executes the file the IO thread reads. MySQL reports no
//!   seconds behind while the SQL thread is stopped; the heartbeat gives the lag then.
//! - **heartbeat** (optional): on a primary `REPLACE` of `NOW(6)` into a one-row table; on a
//!   replica the row's age is the lag.
//!
//! TLS as the `mysql` client has it, from the URL's `ssl-mode` (or `sslmode`; any case) and
//! `ssl-ca` (a PEM file), taken out of the URL before mysql_async reads it ([`Target`]):
//!
//! | ssl-mode | TLS | certificate check |
//! | --- | --- | --- |
//! | `DISABLED` | never | — |
//! | `PREFERRED` (default) | when the server offers it | none; the chain as `VERIFY_CA` when `ssl-ca` is given |
//! | `REQUIRED` | always | none; the chain as `VERIFY_CA` when `ssl-ca` is given |
//! | `VERIFY_CA` | always | chain to `ssl-ca` (or the Mozilla roots), any host name |
//! | `VERIFY_IDENTITY` | always | chain and host name |
//!
//! A failed handshake, a server without TLS where it is required and a server that refuses
//! connections without TLS (`require_secure_transport`) are the failure class `tls`.

use std::collections::HashMap;
use std::time::Instant;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder, SslOpts, Value};
use rustls::CertificateError;
use stormwatch_model::{DbRole, FailureClass};

use super::config::Database;
pub use super::mysql_target::{SslMode, Target};
use super::outcome::{micros, within, Outcome, ProbeState};

/// ER_ACCESS_DENIED_ERROR, ER_ACCESS_DENIED_NO_PASSWORD_ERROR.
const AUTH_CODES: [u16; 2] = [1045, 1698];
/// ER_DBACCESS_DENIED_ERROR (the URL's database), ER_TABLEACCESS_DENIED_ERROR,
/// ER_SPECIFIC_ACCESS_DENIED_ERROR (a privilege such as SLAVE MONITOR): signed in, not allowed.
const PERMISSION_CODES: [u16; 3] = [1044, 1142, 1227];

/// The grants that let the probe read replication status, per server and version.
const GRANT_HINT: &str = "grant the probe user what SHOW REPLICA STATUS needs: MariaDB 10.5.9 and later `GRANT SLAVE MONITOR ON *.* TO <user>`; MySQL and older MariaDB `GRANT REPLICATION CLIENT ON *.* TO <user>`";
/// ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS.
const TOO_MANY_CODES: [u16; 2] = [1040, 1203];
/// ER_HOST_IS_BLOCKED, ER_HOST_NOT_PRIVILEGED, ER_SERVER_SHUTDOWN.
const REFUSED_CODES: [u16; 3] = [1129, 1130, 1053];

/// ER_SECURE_TRANSPORT_REQUIRED ("Connections using insecure transport are prohibited while
/// --require_secure_transport=ON"): MySQL 3159, MariaDB 4036.
const INSECURE_TRANSPORT_CODES: [u16; 2] = [3159, 4036];

/// The rustls error inside a driver error, if the TLS handshake failed on one.
fn rustls_error(e: &mysql_async::Error) -> Option<&rustls::Error> {
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => {
            std::error::Error::source(t).and_then(|s| s.downcast_ref::<rustls::Error>())
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => io
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>()),
        _ => None,
    }
}

/// Why TLS failed, with what to change, when `e` is a TLS failure; `None` otherwise.
pub fn tls_failure(e: &mysql_async::Error, mode: SslMode) -> Option<String> {
    let hint = match e {
        mysql_async::Error::Server(s) if INSECURE_TRANSPORT_CODES.contains(&s.code) => {
            return Some(format!(
                "the server requires TLS (require_secure_transport = ON) and ssl-mode={} did not \
                 use it: {} (use ssl-mode=PREFERRED or stronger)",
                mode.as_str(),
                s.message
            ))
        }
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) => {
            return Some(format!(
                "the server does not offer TLS, which ssl-mode={} requires (give the server \
                 ssl_cert and ssl_key, or use ssl-mode=PREFERRED or DISABLED)",
                mode.as_str()
            ))
        }
        mysql_async::Error::Io(mysql_async::IoError::Tls(_)) => None,
        _ => match rustls_error(e)? {
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => Some(
                "the server's certificate is not signed by a CA in ssl-ca, or in the Mozilla \
                 roots when ssl-ca is absent",
            ),
            rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => Some(
                "the host in the database URL is not a name in the server's certificate: \
                 connect by a name it holds, or use ssl-mode=VERIFY_CA to check the CA only",
            ),
            _ => None,
        },
    };
    let text = match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => t.to_string(),
        _ => rustls_error(e).map_or_else(|| e.to_string(), |r| r.to_string()),
    };
    Some(match hint {
        Some(h) => format!("{text} ({h})"),
        None => text,
    })
}

/// The DNS names the server's certificate holds, when `e` is rustls' name mismatch (the
/// chain checked out: rustls compares the name last).
fn names_in_certificate(e: &mysql_async::Error) -> Vec<String> {
    match rustls_error(e) {
        Some(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        })) => presented
            .iter()
            // webpki writes each as `DnsName("db.example")`.
            .filter_map(|p| p.strip_prefix("DnsName(\"")?.strip_suffix("\")"))
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether the login `builder` describes succeeds over TLS (any certificate).
async fn requires_tls(builder: &OptsBuilder, timeout: std::time::Duration) -> bool {
    let tls = SslOpts::default().with_danger_accept_invalid_certs(true);
    match within(timeout, Conn::new(builder.clone().ssl_opts(tls))).await {
        Ok(Ok(conn)) => {
            let _ = within(timeout, conn.disconnect()).await;
            true
        }
        _ => false,
    }
}

/// The failure class of a driver error.
pub fn classify(e: &mysql_async::Error) -> FailureClass {
    if tls_failure(e, SslMode::Preferred).is_some() {
        return FailureClass::Tls;
    }
    match e {
        mysql_async::Error::Server(s) if AUTH_CODES.contains(&s.code) => {
            FailureClass::Authentication
        }
        mysql_async::Error::Server(s) if TOO_MANY_CODES.contains(&s.code) => {
            FailureClass::TooManyConnections
        }
        mysql_async::Error::Server(s) if REFUSED_CODES.contains(&s.code) => FailureClass::Refused,
        mysql_async::Error::Server(s) if PERMISSION_CODES.contains(&s.code) => {
            FailureClass::Permission
        }
        mysql_async::Error::Io(mysql_async::IoError::Io(io)) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused => FailureClass::Refused,
            std::io::ErrorKind::TimedOut => FailureClass::Timeout,
            _ => FailureClass::Other,
        },
        _ => FailureClass::Other,
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::NULL => None,
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::Int(i) => Some(i.to_string()),
        Value::UInt(u) => Some(u.to_string()),
        Value::Float(f) => Some(f.to_string()),
        Value::Double(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// Probes a MySQL or MariaDB server.
pub async fn probe(
    db: &Database,
    url: &str,
    password: Option<&str>,
    state: &mut ProbeState,
) -> Outcome {
    let timeout = db.timeout.0;
    let target = match Target::parse(url) {
        Ok(t) => t,
        Err(e) => return Outcome::failed(FailureClass::Other, format!("bad URL: {e}")),
    };
    let mut builder = OptsBuilder::from_opts(target.opts.clone())
        // The default switches to the Unix socket when the server is local: we probe the
        // address apps use.
        .prefer_socket(false)
        .wait_timeout(Some(10));
    if let Some(p) = password {
        builder = builder.pass(Some(p));
    }
    // mysql_async builds its rustls config with the process's crypto provider: ring, the
    // workspace's only one (a no-op once installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let known_plain = target.mode == SslMode::Preferred
        && state
            .mysql_tls_absent
            .is_some_and(|t| t.elapsed() < ProbeState::TLS_RECHECK);
    let mut tls = if known_plain {
        None
    } else {
        target.ssl_opts(None)
    };
    let mut t0 = Instant::now();
    let mut retried = false;
    let mut conn = loop {
        let error = match within(timeout, Conn::new(builder.clone().ssl_opts(tls.clone()))).await {
            Err(()) => {
                return Outcome::failed(
                    FailureClass::Timeout,
                    format!("no connection within {timeout:?}"),
                )
            }
            Ok(Ok(c)) => break c,
            Ok(Err(e)) => e,
        };
        match (&error, target.mode) {
            // PREFERRED: without TLS when the server has none, as the mysql client does.
            (
                mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer),
                SslMode::Preferred,
            ) if tls.is_some() => {
                state.mysql_tls_absent = Some(Instant::now());
                tls = None;
                t0 = Instant::now();
                continue;
            }
            // VERIFY_CA (or a CA under PREFERRED/REQUIRED): mysql_async's "skip the host
            // name" misses rustls 0.23's name error, which comes after the chain checked out;
            // check again against a name the certificate holds.
            (_, SslMode::VerifyCa | SslMode::Preferred | SslMode::Required)
                if !retried && tls.is_some() =>
            {
                if let Some(name) = names_in_certificate(&error).into_iter().next() {
                    retried = true;
                    tls = target.ssl_opts(Some(name));
                    t0 = Instant::now();
                    continue;
                }
            }
            _ => {}
        }
        // A server once found without TLS that fails now may have changed: ask again next time.
        if known_plain {
            state.mysql_tls_absent = None;
        }
        if let Some(why) = tls_failure(&error, target.mode) {
            return Outcome::failed(FailureClass::Tls, format!("TLS handshake failed: {why}"));
        }
        // MariaDB refuses a login without TLS under require_secure_transport with "access
        // denied" (1045), where MySQL says ER_SECURE_TRANSPORT_REQUIRED: the same login over
        // TLS tells the two apart (only when a probe with TLS off is refused).
        if target.mode == SslMode::Disabled
            && matches!(&error, mysql_async::Error::Server(s) if s.code == 1045)
            && requires_tls(&builder, timeout).await
        {
            return Outcome::failed(
                FailureClass::Tls,
                format!(
                    "TLS: the server refused the login without TLS ({error}) but accepts it \
                     over TLS: it requires secure transport (require_secure_transport = ON); \
                     use ssl-mode=PREFERRED or stronger, not DISABLED"
                ),
            );
        }
        let class = classify(&error);
        let mut message = error.to_string();
        if class == FailureClass::Permission {
            message.push_str(
                "; grant the probe user access to the URL's database, or leave the database out of the URL",
            );
        }
        return Outcome::failed(class, message);
    };
    if tls.is_some() {
        state.mysql_tls_absent = None;
    }
    let mut out = Outcome {
        connect_us: Some(micros(t0)),
        ..Default::default()
    };
    out.detail.insert("tls".into(), tls.is_some().to_string());
    let t1 = Instant::now();
    match within(timeout, conn.query_drop("SELECT 1")).await {
        Err(()) => {
            out.failure = FailureClass::Timeout;
            out.failure_message = format!("no answer within {timeout:?}");
        }
        Ok(Err(e)) => {
            out.failure = classify(&e);
            out.failure_message = e.to_string();
        }
        Ok(Ok(())) => {
            out.query_us = Some(micros(t1));
            match db.role {
                DbRole::Replica => replica(&mut conn, db, state, &mut out).await,
                _ => primary(&mut conn, db, state, &mut out).await,
            }
        }
    }
    // A polite goodbye, so the server does not count an aborted connection; bounded.
    let _ = within(timeout, conn.disconnect()).await;
    out
}

/// Why replication status could not be read.
struct StatusError {
    /// The server refused the probe user ([`PERMISSION_CODES`]).
    permission: bool,
    message: String,
}

impl From<String> for StatusError {
    fn from(message: String) -> Self {
        StatusError {
            permission: false,
            message,
        }
    }
}

async fn status(
    conn: &mut Conn,
    timeout: std::time::Duration,
) -> Result<Option<HashMap<String, Option<String>>>, StatusError> {
    let mut last = String::new();
    for sql in ["SHOW REPLICA STATUS", "SHOW SLAVE STATUS"] {
        match within(timeout, conn.query::<mysql_async::Row, _>(sql)).await {
            Err(()) => return Err(format!("{sql}: no answer within {timeout:?}").into()),
            Ok(Ok(rows)) => {
                let Some(row) = rows.into_iter().next() else {
                    return Ok(None);
                };
                let cols = row.columns_ref();
                let mut map = HashMap::new();
                for (i, c) in cols.iter().enumerate() {
                    map.insert(c.name_str().into_owned(), row.as_ref(i).and_then(text));
                }
                return Ok(Some(map));
            }
            // 1064: syntax error — an older server without `SHOW REPLICA STATUS`.
            Ok(Err(mysql_async::Error::Server(s))) if s.code == 1064 => {
                last = s.message;
            }
            Ok(Err(mysql_async::Error::Server(s))) if PERMISSION_CODES.contains(&s.code) => {
                return Err(StatusError {
                    permission: true,
                    message: format!("{sql}: {}", s.message),
                })
            }
            Ok(Err(e)) => return Err(format!("{sql}: {e}").into()),
        }
    }
    Err(last.into())
}

async fn replica(conn: &mut Conn, db: &Database, state: &ProbeState, out: &mut Outcome) {
    let timeout = db.timeout.0;
    match status(conn, timeout).await {
        // Lag that cannot be read is a failed probe, not a quiet `lag: null`: with the
        // grant MySQL documents, MariaDB 10.5.9+ refuses SHOW REPLICA STATUS, and the lag went
        // unwatched without a word.
        Err(StatusError {
            permission: true,
            message,
        }) => {
            out.failure = FailureClass::Permission;
            out.failure_message =
                format!("cannot read replication status ({message}); {GRANT_HINT}");
        }
        Err(e) => {
            out.detail.insert("lag_error".into(), e.message);
        }
        Ok(None) => {
            out.detail.insert(
                "warning".into(),
                "configured as a replica but replication is not set up".into(),
            );
        }
        Ok(Some(s)) => {
            // MySQL 8.0.22+ says Source/Replica where older servers and MariaDB say Master/Slave.
            let get = |names: &[&str]| -> Option<String> {
                names.iter().find_map(|n| s.get(*n).cloned().flatten())
            };
            let io = get(&["Replica_IO_Running", "Slave_IO_Running"]).unwrap_or_default();
            let sql = get(&["Replica_SQL_Running", "Slave_SQL_Running"]).unwrap_or_default();
            let behind = get(&["Seconds_Behind_Source", "Seconds_Behind_Master"]);
            out.lag_seconds = behind.as_deref().and_then(|b| b.parse::<f64>().ok());
            let read_file = get(&["Source_Log_File", "Master_Log_File"]);
            let exec_file = get(&["Relay_Source_Log_File", "Relay_Master_Log_File"]);
            let read_pos = get(&["Read_Source_Log_Pos", "Read_Master_Log_Pos"])
                .and_then(|v| v.parse::<i64>().ok());
            let exec_pos = get(&["Exec_Source_Log_Pos", "Exec_Master_Log_Pos"])
                .and_then(|v| v.parse::<i64>().ok());
            if let (Some(rf), Some(ef), Some(rp), Some(ep)) =
                (&read_file, &exec_file, read_pos, exec_pos)
            {
                if rf == ef {
                    out.lag_bytes = Some((rp - ep).max(0));
                }
            }
            out.replay_paused = sql != "Yes";
            let fields = [
                ("io_running", Some(io)),
                ("sql_running", Some(sql)),
                ("seconds_behind", behind),
                (
                    "sql_state",
                    get(&["Replica_SQL_Running_State", "Slave_SQL_Running_State"]),
                ),
                ("io_state", get(&["Replica_IO_State", "Slave_IO_State"])),
                ("last_error", get(&["Last_Error"])),
                ("last_io_error", get(&["Last_IO_Error"])),
                ("last_sql_error", get(&["Last_SQL_Error"])),
                ("source_host", get(&["Source_Host", "Master_Host"])),
                ("source_log_file", read_file),
                ("relay_source_log_file", exec_file),
            ];
            for (k, v) in fields {
                if let Some(v) = v.filter(|v| !v.is_empty()) {
                    out.detail.insert(k.into(), v);
                }
            }
        }
    }
    if let Some(table) = &db.heartbeat {
        let sql =
            format!("SELECT TIMESTAMPDIFF(MICROSECOND, ts, NOW(6)) FROM {table} WHERE id = 1");
        match within(timeout, conn.query_first::<Option<i64>, _>(sql)).await {
            Ok(Ok(Some(Some(us)))) => {
                let age = us as f64 / 1e6;
                out.detail
                    .insert("heartbeat_age_s".into(), format!("{age:.3}"));
                if let Some(lag) = super::postgres::heartbeat_lag_if_written(
                    state,
                    table,
                    age,
                    db,
                    &mut out.detail,
                ) {
                    out.lag_seconds = Some(lag);
                }
            }
            Ok(Ok(_)) => {
                out.detail
                    .insert("heartbeat_error".into(), "no heartbeat row yet".into());
            }
            Ok(Err(e)) => {
                out.detail.insert("heartbeat_error".into(), e.to_string());
            }
            Err(()) => {
                out.detail
                    .insert("heartbeat_error".into(), "no answer in time".into());
            }
        }
    }
}

async fn primary(conn: &mut Conn, db: &Database, state: &mut ProbeState, out: &mut Outcome) {
    let Some(table) = &db.heartbeat else { return };
    let timeout = db.timeout.0;
    if !state.heartbeat_ready {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {table} (id INT PRIMARY KEY, ts TIMESTAMP(6) NOT NULL)"
        );
        match within(timeout, conn.query_drop(create)).await {
            Ok(Ok(())) => state.heartbeat_ready = true,
            Ok(Err(e)) => {
                out.detail.insert("heartbeat_error".into(), e.to_string());
                return;
            }
            Err(()) => return,
        }
    }
    let sql = format!("REPLACE INTO {table} (id, ts) VALUES (1, NOW(6))");
    match within(timeout, conn.query_drop(sql)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            state.heartbeat_ready = false;
            out.detail.insert("heartbeat_error".into(), e.to_string());
        }
        Err(()) => {
            out.detail
                .insert("heartbeat_error".into(), "no answer in time".into());
        }
    }
}

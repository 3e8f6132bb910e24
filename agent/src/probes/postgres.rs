//! The PostgreSQL probe: connect, `SELECT` the server version and whether it is in recovery,
//! then by role
//!
//! - **replica** (in recovery): received vs replayed WAL position, `now() -
//!   pg_last_xact_replay_timestamp()`, whether replay is paused. The lag is 0 when everything
//!   received has been replayed: the replay timestamp is that of the last *replayed
//!   transaction*, so on an idle primary it grows forever although the replica is current.
//!   For the same reason, the first write after a quiet minute, caught between receive and
//!   replay, would read as a minute of lag; so the lag is also capped by how long WAL beyond
//!   the replay position has been seen ([`super::ReceiveHistory`]).
//! - **primary**: `pg_stat_replication` — each replica's state, write/flush/replay lag and
//!   bytes behind — into `detail` (`replica.<name>.<field>`).
//! - **heartbeat** (optional): on a primary, `INSERT … ON CONFLICT UPDATE` of the time into a
//!   one-row table; on a replica the row's age is the lag (exact even when the primary idles).
//!
//! Every query is a simple query (one round trip, text results): no statements are prepared.
//!
//! TLS as libpq and the store have it ([`stormwatch_pgtls`]): the URL's `sslmode` (`disable`,
//! `prefer` by default, `require`, `verify-ca`, `verify-full`) and `sslrootcert`. A failed
//! handshake is the failure class `tls`, with why; `detail.tls` says whether the session is
//! encrypted, by the server's own account (`pg_stat_ssl`).

use std::time::Instant;

use stormwatch_model::{DbRole, FailureClass};
use tokio_postgres::error::SqlState;
use tokio_postgres::SimpleQueryMessage;

use super::config::Database;
use super::outcome::{micros, within, Outcome, ProbeState, Writer};

/// The failure class of a connection or query error.
pub fn classify(e: &tokio_postgres::Error) -> FailureClass {
    if stormwatch_pgtls::tls_failure(e).is_some() {
        return FailureClass::Tls;
    }
    if let Some(code) = e.code() {
        return if *code == SqlState::INVALID_PASSWORD
            || *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
        {
            FailureClass::Authentication
        } else if *code == SqlState::TOO_MANY_CONNECTIONS {
            FailureClass::TooManyConnections
        } else if *code == SqlState::CANNOT_CONNECT_NOW || *code == SqlState::ADMIN_SHUTDOWN {
            // Starting up, shutting down, in crash recovery: not taking connections.
            FailureClass::Refused
        } else {
            FailureClass::Other
        };
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => FailureClass::Refused,
                std::io::ErrorKind::TimedOut => FailureClass::Timeout,
                _ => FailureClass::Other,
            };
        }
        source = s.source();
    }
    if e.to_string().contains("timeout") {
        return FailureClass::Timeout;
    }
    FailureClass::Other
}

fn message(e: &tokio_postgres::Error) -> String {
    if let Some(why) = stormwatch_pgtls::tls_failure(e) {
        return format!("TLS handshake failed: {why}");
    }
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => {
            let mut m = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                m.push_str(": ");
                m.push_str(&s.to_string());
                source = s.source();
            }
            m
        }
    }
}

/// The text columns of the rows of a simple query.
async fn rows(
    client: &tokio_postgres::Client,
    sql: &str,
    timeout: std::time::Duration,
) -> Result<Vec<Vec<Option<String>>>, (FailureClass, String)> {
    let msgs = within(timeout, client.simple_query(sql))
        .await
        .map_err(|()| {
            (
                FailureClass::Timeout,
                format!("no answer within {timeout:?}"),
            )
        })?
        .map_err(|e| (classify(&e), message(&e)))?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect())
}

fn num(v: &Option<String>) -> Option<f64> {
    v.as_deref()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|f| f.is_finite())
}

/// Probes a PostgreSQL server.
pub async fn probe(
    db: &Database,
    url: &str,
    password: Option<&str>,
    state: &mut ProbeState,
) -> Outcome {
    let timeout = db.timeout.0;
    let target = match stormwatch_pgtls::ConnectTarget::parse(url) {
        Ok(t) => t,
        Err(e) => return Outcome::failed(FailureClass::Other, format!("bad URL: {e}")),
    };
    let mut cfg = target.config;
    if let Some(p) = password {
        cfg.password(p);
    }
    cfg.connect_timeout(timeout);
    cfg.application_name("stormwatch-agent");
    let t0 = Instant::now();
    let (client, connection) = match within(timeout, cfg.connect(target.tls)).await {
        Err(()) => {
            return Outcome::failed(
                FailureClass::Timeout,
                format!("no connection within {timeout:?}"),
            )
        }
        Ok(Err(e)) => return Outcome::failed(classify(&e), message(&e)),
        Ok(Ok(c)) => c,
    };
    let mut out = Outcome {
        connect_us: Some(micros(t0)),
        ..Default::default()
    };
    let conn = tokio::spawn(connection);
    let t1 = Instant::now();
    let first = rows(
        &client,
        "SELECT current_setting('server_version_num'), pg_is_in_recovery(), \
                (SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid())",
        timeout,
    )
    .await;
    match first {
        Err((class, m)) => {
            out.failure = class;
            out.failure_message = m;
        }
        Ok(r) => {
            out.query_us = Some(micros(t1));
            let version: i64 = r
                .first()
                .and_then(|r| r[0].as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let in_recovery = r.first().and_then(|r| r[1].as_deref()) == Some("t");
            out.detail
                .insert("server_version_num".into(), version.to_string());
            out.detail
                .insert("in_recovery".into(), in_recovery.to_string());
            let tls = r.first().and_then(|r| r[2].as_deref()) == Some("t");
            out.detail.insert("tls".into(), tls.to_string());
            if in_recovery {
                replica(&client, db, version, state, &mut out).await;
            } else {
                if db.role == DbRole::Replica {
                    out.detail.insert(
                        "warning".into(),
                        "configured as a replica but not in recovery (promoted?)".into(),
                    );
                }
                primary(&client, db, state, &mut out).await;
            }
        }
    }
    drop(client);
    conn.abort();
    out
}

async fn replica(
    client: &tokio_postgres::Client,
    db: &Database,
    version: i64,
    state: &mut ProbeState,
    out: &mut Outcome,
) {
    let pause = if version >= 140000 {
        "pg_get_wal_replay_pause_state()"
    } else {
        "CASE WHEN pg_is_wal_replay_paused() THEN 'paused' ELSE 'not paused' END"
    };
    let sql = format!(
        "SELECT r IS NOT NULL AND r = p, \
                EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()), \
                pg_wal_lsn_diff(r, p), r, p, {pause}, \
                pg_wal_lsn_diff(r, '0/0'), pg_wal_lsn_diff(p, '0/0') \
         FROM (SELECT pg_last_wal_receive_lsn() AS r, pg_last_wal_replay_lsn() AS p) lsn"
    );
    match rows(client, &sql, db.timeout.0).await {
        Err((_, m)) => {
            out.detail.insert("lag_error".into(), m);
        }
        Ok(r) => {
            let Some(r) = r.first() else { return };
            let caught_up = r[0].as_deref() == Some("t");
            let bytes = num(&r[2]).map(|b| b.max(0.0) as i64);
            let now = Instant::now();
            if let Some(received) = num(&r[6]) {
                state.received.record(now, received);
            }
            out.lag_bytes = Some(if caught_up { 0 } else { bytes.unwrap_or(0) });
            out.lag_seconds = if caught_up {
                Some(0.0)
            } else {
                let since_commit = num(&r[1]).map(|s| s.max(0.0));
                // No bound until a probe has seen the replica with nothing beyond its replay
                // position: the first probes after the agent starts can still over-report.
                let at_most = num(&r[7]).and_then(|p| state.received.behind_at_most(p, now));
                if let Some(b) = at_most {
                    out.detail
                        .insert("behind_at_most_s".into(), format!("{b:.3}"));
                }
                match (since_commit, at_most) {
                    (Some(c), Some(b)) => Some(c.min(b)),
                    (c, b) => c.or(b),
                }
            };
            let pause_state = r[5].clone().unwrap_or_default();
            out.replay_paused = pause_state != "not paused" && !pause_state.is_empty();
            for (k, v) in [("receive_lsn", &r[3]), ("replay_lsn", &r[4])] {
                if let Some(v) = v {
                    out.detail.insert(k.into(), v.clone());
                }
            }
            out.detail.insert("replay_pause_state".into(), pause_state);
            if let Some(s) = num(&r[1]) {
                out.detail
                    .insert("last_replay_age_s".into(), format!("{s:.3}"));
            }
        }
    }
    if let Some(table) = &db.heartbeat {
        let sql = format!("SELECT EXTRACT(EPOCH FROM now() - ts) FROM {table} WHERE id = 1");
        match rows(client, &sql, db.timeout.0).await {
            Ok(r) => {
                if let Some(age) = r.first().and_then(|r| num(&r[0])) {
                    out.detail
                        .insert("heartbeat_age_s".into(), format!("{age:.3}"));
                    if let Some(lag) =
                        heartbeat_lag_if_written(state, table, age, db, &mut out.detail)
                    {
                        out.lag_seconds = Some(lag);
                    }
                }
            }
            Err((_, m)) => {
                out.detail.insert("heartbeat_error".into(), m);
            }
        }
    }
}

/// Lag from a heartbeat's age: the row is rewritten every interval, so a current replica sees
/// an age between 0 and one interval (plus the probe's own delay); that part is not lag.
pub fn heartbeat_lag(age_s: f64, db: &Database) -> f64 {
    let slack = db.interval.0.as_secs_f64() + db.timeout.0.as_secs_f64().min(0.5);
    (age_s - slack).max(0.0)
}

async fn primary(
    client: &tokio_postgres::Client,
    db: &Database,
    state: &mut ProbeState,
    out: &mut Outcome,
) {
    let sql =
        "SELECT coalesce(nullif(application_name, ''), client_addr::text, pid::text), state, \
                      EXTRACT(EPOCH FROM write_lag), EXTRACT(EPOCH FROM flush_lag), \
                      EXTRACT(EPOCH FROM replay_lag), \
                      pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) \
               FROM pg_stat_replication ORDER BY 1 LIMIT 16";
    match rows(client, sql, db.timeout.0).await {
        Err((_, m)) => {
            out.detail.insert("replication_error".into(), m);
        }
        Ok(replicas) => {
            out.detail
                .insert("replicas".into(), replicas.len().to_string());
            for r in &replicas {
                let name = r[0].clone().unwrap_or_default();
                let fields = [
                    ("state", &r[1]),
                    ("write_lag_s", &r[2]),
                    ("flush_lag_s", &r[3]),
                    ("replay_lag_s", &r[4]),
                    ("replay_bytes_behind", &r[5]),
                ];
                for (k, v) in fields {
                    // NULL lag columns mean "idle, nothing to wait for": report 0.
                    let v = v.clone().unwrap_or_else(|| "0".into());
                    out.detail.insert(format!("replica.{name}.{k}"), v);
                }
            }
        }
    }
    if let Some(table) = &db.heartbeat {
        if db.role == DbRole::Primary {
            let mut sql = String::new();
            if !state.heartbeat_ready {
                sql.push_str(&format!(
                    "CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, ts timestamptz NOT NULL); "
                ));
            }
            sql.push_str(&format!(
                "INSERT INTO {table} (id, ts) VALUES (1, now()) \
                 ON CONFLICT (id) DO UPDATE SET ts = excluded.ts"
            ));
            match rows(client, &sql, db.timeout.0).await {
                Ok(_) => state.heartbeat_ready = true,
                Err((_, m)) => {
                    state.heartbeat_ready = false;
                    out.detail.insert("heartbeat_error".into(), m);
                }
            }
        }
    }
}
/// The lag a replica's heartbeat of `age_s` seconds gives, unless its writer fails (then
/// `None`, and `detail` says why). A row older than the writer's current streak is read as
/// the streak's age: all that is known is that the streak's first write has not arrived.
pub(crate) fn heartbeat_lag_if_written(
    state: &ProbeState,
    table: &str,
    age_s: f64,
    db: &Database,
    detail: &mut std::collections::BTreeMap<String, String>,
) -> Option<f64> {
    match state.heartbeats.writer(table) {
        Some(Writer::Failing) => {
            detail.insert(
                "heartbeat_writer".into(),
                "failing: the heartbeat's age is not lag; the replica's own status decides".into(),
            );
            None
        }
        Some(Writer::Since(s)) if s.elapsed().as_secs_f64() < age_s => {
            let streak = s.elapsed().as_secs_f64();
            detail.insert(
                "heartbeat_writer".into(),
                format!("writing again for {streak:.1} s: the heartbeat's age counts from then"),
            );
            Some(heartbeat_lag(streak, db))
        }
        _ => Some(heartbeat_lag(age_s, db)),
    }
}

//! Database watch against real servers: a PostgreSQL primary with a streaming replica, a
//! PostgreSQL that refuses connections, and a MariaDB primary with a replica. The agent runs
//! with `[[database]]` entries and ships to a fake collector; every check reads what the
//! collector received, so probes are tested through the same path as in production.
//!
//! Every wait polls with a deadline; the printed timings are the numbers in the report.

mod common;
mod dbservers;

use std::time::{Duration, Instant};

use common::{request, span, start_agent, test_config, FakeCollector};
use dbservers::{MariaDb, PgServer};
use prost::Message;
use stormwatch_agent::config::{Band, Config};
use stormwatch_agent::probes::config::{Database, Engine, Seconds};
use stormwatch_model::{DbRole, FailureClass, KeepReason, ProbeSample, SpanFlag};

const CLIENT: i32 = 3;

fn db(name: &str, engine: Engine, role: DbRole, url: String) -> Database {
    Database {
        name: name.into(),
        engine,
        role,
        url,
        password_env: None,
        peers: vec![],
        interval: Seconds(Duration::from_secs(1)),
        lag_threshold: Seconds(Duration::from_secs(1)),
        timeout: Seconds(Duration::from_secs(1)),
        heartbeat: None,
    }
}

/// A test config that samples nothing on its own: only flagged, slow or failed spans ship.
fn config(collector: &FakeCollector, spool: &std::path::Path, dbs: Vec<Database>) -> Config {
    let mut c = test_config(Some(collector.url()), spool);
    c.sampling.bands = vec![Band {
        below: 1.0,
        share: 0.0,
    }];
    c.databases = dbs;
    c
}

fn probes(c: &FakeCollector, name: &str) -> Vec<ProbeSample> {
    let mut v: Vec<ProbeSample> = c
        .seen
        .lock()
        .unwrap()
        .batches
        .iter()
        .flat_map(|b| b.probes.iter().filter(|p| p.database == name).cloned())
        .collect();
    v.sort_by_key(|p| p.time_ns);
    v
}

fn now_ns() -> i64 {
    stormwatch_agent::util::now_ns()
}

/// Polls until a sample of `name` taken at or after `since_ns` satisfies `f`; returns it.
async fn sample_where(
    c: &FakeCollector,
    name: &str,
    since_ns: i64,
    secs: f64,
    what: &str,
    f: impl Fn(&ProbeSample) -> bool,
) -> ProbeSample {
    let end = Instant::now() + Duration::from_secs_f64(secs);
    loop {
        if let Some(p) = probes(c, name)
            .into_iter()
            .find(|p| p.time_ns >= since_ns && f(p))
        {
            return p;
        }
        if Instant::now() > end {
            panic!(
                "{name}: no sample within {secs} s where {what}; last: {:?}",
                probes(c, name).last()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn secs_since(t_ns: i64, since_ns: i64) -> f64 {
    (t_ns - since_ns) as f64 / 1e9
}

async fn send_db_span(
    agent: &stormwatch_agent::Agent,
    trace: u32,
    peer_host: &str,
    statement: &str,
    error: Option<&str>,
) {
    let mut s = span(
        trace,
        1,
        CLIENT,
        1,
        error.is_some(),
        &[
            ("db.system", "postgresql"),
            ("server.address", peer_host),
            ("server.port", "5432"),
            ("db.statement", statement),
        ],
    );
    if let (Some(m), Some(st)) = (error, s.status.as_mut()) {
        st.message = m.into();
    }
    let body = request("board", vec![s]).encode_to_vec();
    let r = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", agent.otlp_http.unwrap()))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

fn has_flag(s: &stormwatch_model::Span, f: SpanFlag) -> bool {
    s.flags.contains(&(f as i32))
}

/// Writes a row on the primary every 100 ms until aborted; counts the rows written.
fn pg_writer(
    url: String,
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = written.clone();
    let task = tokio::spawn(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        loop {
            client
                .simple_query("INSERT INTO t (v) VALUES (repeat('x', 200))")
                .await
                .unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    (task, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replica_lag_paused_resumed_idle_and_joined_to_spans() {
    let primary = PgServer::primary("");
    let replica = primary.replica();
    primary.psql("postgres", "CREATE TABLE t (id serial PRIMARY KEY, v text)");
    let collector = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut replica_db = db(
        "pg-replica",
        Engine::Postgres,
        DbRole::Replica,
        replica.url("postgres"),
    );
    replica_db.peers = vec!["replica-db:5432".into()];
    let agent = start_agent(config(
        &collector,
        spool.path(),
        vec![
            db(
                "pg-primary",
                Engine::Postgres,
                DbRole::Primary,
                primary.url("postgres"),
            ),
            replica_db,
        ],
    ))
    .await;

    // Idle primary, caught-up replica: 0, even seconds after the last transaction.
    let t0 = now_ns();
    sample_where(&collector, "pg-replica", t0, 10.0, "lag is 0", |p| {
        p.lag_seconds == Some(0.0) && p.failure == 0
    })
    .await;
    let idle_from = now_ns();
    let idle = || -> Vec<ProbeSample> {
        probes(&collector, "pg-replica")
            .into_iter()
            .filter(|p| p.time_ns >= idle_from)
            .collect()
    };
    common::eventually(15, "three samples of the idle replica", || {
        idle().len() >= 3
    })
    .await;
    let idle = idle();
    assert!(
        idle.iter()
            .all(|p| p.lag_seconds == Some(0.0) && !p.replay_paused),
        "idle replica must report 0: {idle:?}"
    );
    let mut times: Vec<(i64, i64)> = probes(&collector, "pg-primary")
        .iter()
        .filter_map(|p| Some((p.connect_us?, p.query_us?)))
        .collect();
    times.sort_unstable();
    println!(
        "postgres probe on loopback: median connect {} µs, first query {} µs ({} samples)",
        times[times.len() / 2].0,
        times[times.len() / 2].1,
        times.len()
    );
    let primary_sample = probes(&collector, "pg-primary").pop().unwrap();
    assert_eq!(primary_sample.failure, 0, "{primary_sample:?}");
    assert!(primary_sample.connect_us.unwrap() > 0 && primary_sample.query_us.unwrap() > 0);
    assert_eq!(
        primary_sample.detail.get("replicas").map(String::as_str),
        Some("1"),
        "{primary_sample:?}"
    );
    assert!(
        primary_sample
            .detail
            .keys()
            .any(|k| k.ends_with(".replay_lag_s")),
        "{primary_sample:?}"
    );

    // The first write after a quiet spell, caught received but not yet replayed (held there
    // by a pause, as a probe may catch any write for a moment): its lag is at most the time
    // since the previous probe, not the seconds since the last replayed commit.
    sample_where(
        &collector,
        "pg-replica",
        now_ns(),
        20.0,
        "5 s since the last replayed commit",
        |p| {
            p.detail
                .get("last_replay_age_s")
                .and_then(|a| a.parse::<f64>().ok())
                .is_some_and(|a| a >= 5.0)
        },
    )
    .await;
    replica.psql("postgres", "SELECT pg_wal_replay_pause()");
    primary.psql(
        "postgres",
        "INSERT INTO t (v) VALUES ('after a quiet spell')",
    );
    let wrote_at = now_ns();
    let caught = sample_where(
        &collector,
        "pg-replica",
        wrote_at,
        5.0,
        "WAL waiting",
        |p| p.lag_bytes.is_some_and(|b| b > 0),
    )
    .await;
    let since_commit: f64 = caught.detail["last_replay_age_s"].parse().unwrap();
    assert!(since_commit >= 5.0, "{caught:?}");
    let lag = caught.lag_seconds.unwrap();
    assert!(
        lag <= 1.0 + 1.0 + secs_since(caught.time_ns, wrote_at),
        "one write after {since_commit:.1} s of quiet read as {lag:.1} s of lag: {caught:?}"
    );
    println!(
        "postgres: a write after {since_commit:.1} s of quiet, caught before replay, reads as {lag:.2} s of lag"
    );
    replica.psql("postgres", "SELECT pg_wal_replay_resume()");
    sample_where(&collector, "pg-replica", now_ns(), 5.0, "caught up", |p| {
        p.lag_seconds == Some(0.0)
    })
    .await;

    // Pause replay while writing: lag above 3 s must be reported within 5 s of being true.
    let (writer, written) = pg_writer(primary.url("postgres"));
    common::eventually(10, "the writer writing", || {
        written.load(std::sync::atomic::Ordering::SeqCst) >= 3
    })
    .await;
    replica.psql("postgres", "SELECT pg_wal_replay_pause()");
    let paused_at = now_ns();
    let lagging = sample_where(
        &collector,
        "pg-replica",
        paused_at,
        30.0,
        "lag > 3 s",
        |p| p.lag_seconds.is_some_and(|l| l > 3.0),
    )
    .await;
    let detect = secs_since(lagging.time_ns, paused_at) - 3.0;
    println!(
        "postgres: lag > 3 s reported {detect:.2} s after it became true (sample {:?})",
        lagging.lag_seconds
    );
    assert!(lagging.replay_paused, "{lagging:?}");
    assert!(lagging.lag_bytes.unwrap() > 0, "{lagging:?}");
    // Within 5 s of being true, counted in probes rather than wall time (a loaded machine
    // may probe late): no sample taken 8 s or more after the pause missed it.
    let missed: Vec<_> = probes(&collector, "pg-replica")
        .into_iter()
        .filter(|p| p.time_ns >= paused_at + 8_000_000_000 && p.time_ns < lagging.time_ns)
        .collect();
    assert!(missed.is_empty(), "lag > 3 s not reported: {missed:?}");

    // Spans through the lagging replica carry its lag and the flag, and are kept though
    // fast; a statement without WHERE is a full-scan suspect.
    send_db_span(
        &agent,
        1,
        "replica-db",
        "SELECT * FROM t WHERE id = 42",
        None,
    )
    .await;
    send_db_span(&agent, 2, "other-db", "SELECT * FROM t", None).await;
    common::eventually(5, "flagged spans shipped", || collector.spans().len() >= 2).await;
    let spans = collector.spans();
    // Named by its [[database]] entry, the address kept beside the name.
    let lagged = spans
        .iter()
        .find(|s| s.peer == "pg-replica (postgresql, replica-db:5432)")
        .unwrap_or_else(|| panic!("{spans:#?}"));
    assert!(lagged.replica_lag_ms.unwrap() > 1000, "{lagged:?}");
    assert!(has_flag(lagged, SpanFlag::ReplicaLag), "{lagged:?}");
    assert_eq!(lagged.kept, KeepReason::Forced as i32);
    assert_eq!(lagged.db_role, DbRole::Replica as i32);
    let scan = spans.iter().find(|s| s.peer == "other-db:5432").unwrap();
    assert!(has_flag(scan, SpanFlag::FullScanSuspect), "{scan:?}");
    assert!(!has_flag(scan, SpanFlag::ReplicaLag) && scan.replica_lag_ms.is_none());
    assert_eq!(scan.kept, KeepReason::Forced as i32);

    // Resume: back near 0 within 5 s.
    replica.psql("postgres", "SELECT pg_wal_replay_resume()");
    let resumed_at = now_ns();
    let back = sample_where(
        &collector,
        "pg-replica",
        resumed_at,
        5.0,
        "lag < 0.5 s",
        |p| p.lag_seconds.is_some_and(|l| l < 0.5) && !p.replay_paused,
    )
    .await;
    println!(
        "postgres: lag back under 0.5 s {:.2} s after resume",
        secs_since(back.time_ns, resumed_at)
    );
    writer.abort();
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refusals_are_classified_and_recovery_seen() {
    // 6 slots for ordinary users (8 minus 2 reserved for superusers).
    let pg = PgServer::primary("max_connections = 8\nsuperuser_reserved_connections = 2\n");
    let collector = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut main = db("main", Engine::Postgres, DbRole::Primary, pg.url("app"));
    main.peers = vec!["main-db".into()];
    let agent = start_agent(config(
        &collector,
        spool.path(),
        vec![
            main,
            db(
                "wrong-password",
                Engine::Postgres,
                DbRole::Primary,
                format!("postgres://pwuser:wrong@127.0.0.1:{}/postgres", pg.port),
            ),
        ],
    ))
    .await;
    let t0 = now_ns();
    sample_where(&collector, "main", t0, 5.0, "ok", |p| p.failure == 0).await;
    let auth = sample_where(&collector, "wrong-password", t0, 5.0, "failed", |p| {
        p.failure != 0
    })
    .await;
    assert_eq!(
        auth.failure,
        FailureClass::Authentication as i32,
        "{auth:?}"
    );
    assert!(auth.failure_message.contains("28P01"), "{auth:?}");

    // Connection limit exhausted by an app: too_many_connections within two intervals.
    let mut held = Vec::new();
    for _ in 0..8 {
        match tokio_postgres::connect(&pg.url("app"), tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                held.push(c);
            }
            Err(_) => break,
        }
    }
    let full_at = now_ns();
    let full = sample_where(&collector, "main", full_at, 3.0, "too many", |p| {
        p.failure == FailureClass::TooManyConnections as i32
    })
    .await;
    println!(
        "postgres: too_many_connections reported {:.2} s after the limit was reached ({} held): {}",
        secs_since(full.time_ns, full_at),
        held.len(),
        full.failure_message
    );
    assert!(full.connect_us.is_none());
    drop(held);
    let freed = now_ns();
    sample_where(&collector, "main", freed, 3.0, "ok again", |p| {
        p.failure == 0
    })
    .await;

    // Stopped: refused within two intervals; a failed app span to it is a connect failure.
    pg.stop();
    let stopped = now_ns();
    let refused = sample_where(&collector, "main", stopped, 3.0, "refused", |p| {
        p.failure == FailureClass::Refused as i32
    })
    .await;
    println!(
        "postgres: refused reported {:.2} s after stop: {}",
        secs_since(refused.time_ns, stopped),
        refused.failure_message
    );
    send_db_span(
        &agent,
        9,
        "main-db",
        "SELECT * FROM t WHERE id = ?",
        Some("pool: timed out"),
    )
    .await;
    common::eventually(5, "failed span shipped", || !collector.spans().is_empty()).await;
    let s = collector.spans().pop().unwrap();
    assert!(has_flag(&s, SpanFlag::ConnectFailure), "{s:?}");
    // ...and it counts under its own status class in the per-minute aggregates.
    let counted: u64 = collector
        .seen
        .lock()
        .unwrap()
        .batches
        .iter()
        .flat_map(|b| b.aggregates.iter())
        .filter(|a| a.status_class == "connect_failure")
        .map(|a| a.count)
        .sum();
    assert!(
        counted >= 1,
        "the failed connection is its own status class in the aggregates"
    );

    pg.start();
    let started = now_ns();
    let ok = sample_where(&collector, "main", started, 3.0, "recovered", |p| {
        p.failure == 0
    })
    .await;
    println!(
        "postgres: recovery reported {:.2} s after start",
        secs_since(ok.time_ns, started)
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_replica_stopped_sql_thread_reports_lag_and_thread_state() {
    assert!(
        dbservers::mariadb_available(),
        "MariaDB is not installed: ./scripts/test installs it (apt-get install mariadb-server)"
    );
    let primary = MariaDb::start(1);
    let replica = MariaDb::start(2);
    replica.replicate_from(&primary);
    primary
        .sql("CREATE DATABASE app; CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, v TEXT)");
    let collector = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut p = db(
        "maria-primary",
        Engine::Mysql,
        DbRole::Primary,
        primary.url(),
    );
    p.heartbeat = Some("app.sw_heartbeat".into());
    let mut r = db(
        "maria-replica",
        Engine::Mysql,
        DbRole::Replica,
        replica.url(),
    );
    r.heartbeat = Some("app.sw_heartbeat".into());
    let agent = start_agent(config(&collector, spool.path(), vec![p, r])).await;

    let t0 = now_ns();
    let ok = sample_where(
        &collector,
        "maria-replica",
        t0,
        15.0,
        "replicating, lag ~0",
        |p| {
            p.detail.get("sql_running").map(String::as_str) == Some("Yes")
                && p.detail.get("io_running").map(String::as_str) == Some("Yes")
                && p.detail.contains_key("heartbeat_age_s")
                && p.lag_seconds.is_some_and(|l| l < 0.5)
        },
    )
    .await;
    assert_eq!(ok.failure, 0, "{ok:?}");
    assert!(!ok.replay_paused);

    let writer = {
        let url = primary.url();
        tokio::spawn(async move {
            let mut conn = mysql_async::Conn::from_url(url).await.unwrap();
            loop {
                use mysql_async::prelude::Queryable;
                conn.query_drop("INSERT INTO app.t (v) VALUES (REPEAT('x', 200))")
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    replica.sql("STOP SLAVE SQL_THREAD");
    let stopped = now_ns();
    let lag = sample_where(
        &collector,
        "maria-replica",
        stopped,
        8.0,
        "lag > 2 s, SQL thread No",
        |p| {
            p.detail.get("sql_running").map(String::as_str) == Some("No")
                && p.lag_seconds.is_some_and(|l| l > 2.0)
                && p.lag_bytes.is_some_and(|b| b > 0)
        },
    )
    .await;
    println!(
        "mariadb: SQL thread stopped; lag {:?} s, {:?} bytes reported {:.2} s later",
        lag.lag_seconds,
        lag.lag_bytes,
        secs_since(lag.time_ns, stopped)
    );
    assert!(lag.replay_paused, "{lag:?}");

    replica.sql("START SLAVE SQL_THREAD");
    let started = now_ns();
    let back = sample_where(
        &collector,
        "maria-replica",
        started,
        6.0,
        "caught up",
        |p| {
            p.detail.get("sql_running").map(String::as_str) == Some("Yes")
                && p.lag_seconds.is_some_and(|l| l < 0.5)
        },
    )
    .await;
    println!(
        "mariadb: caught up {:.2} s after START SLAVE SQL_THREAD",
        secs_since(back.time_ns, started)
    );
    writer.abort();
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_entries_are_hot_reloaded() {
    let pg = PgServer::primary("");
    let collector = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("agent.toml");
    let base = format!(
        "collector = \"{}\"\nagent_id = \"a\"\n[listen]\notlp_http = \"127.0.0.1:0\"\notlp_grpc = \"\"\n\
         zipkin = \"\"\nadmin = \"\"\n[shipping]\nflush_interval_ms = 100\nspool_dir = \"{}\"\n[host]\ninterval_s = 0\n",
        collector.url(),
        spool.path().display()
    );
    std::fs::write(&file, &base).unwrap();
    let source = stormwatch_agent::reload::Source {
        path: Some(file.clone()),
        overrides: Default::default(),
    };
    let cfg = stormwatch_agent::config::load(Some(&file), &source.overrides).unwrap();
    let agent = stormwatch_agent::Agent::start(cfg, source).await.unwrap();

    std::env::set_var("SW_PROBE_TEST_USER", "app");
    let entry = format!(
        "\n[[database]]\nname = \"late\"\nengine = \"postgres\"\nrole = \"primary\"\n\
         url = \"postgres://${{SW_PROBE_TEST_USER}}@127.0.0.1:{}/postgres\"\ninterval = \"500ms\"\n",
        pg.port
    );
    std::fs::write(&file, format!("{base}{entry}")).unwrap();
    assert!(agent.reload().unwrap());
    let t0 = now_ns();
    sample_where(&collector, "late", t0, 5.0, "probed after reload", |p| {
        p.failure == 0
    })
    .await;

    // A broken edit is refused with file, line and key; the entry keeps being probed.
    std::fs::write(&file, format!("{base}{}", entry.replace("500ms", "5ms"))).unwrap();
    let e = agent.reload().unwrap_err().to_string();
    assert!(
        e.contains("database[0].interval") && e.contains("line"),
        "{e}"
    );

    // Removed: no more samples. The same edit adds "marker": its task is started in the
    // pass that stops "late"'s, so "late" is stopped before marker's first sample, and three
    // marker samples (at the same interval) are time in which "late" would have been probed.
    let marker = entry.replace("name = \"late\"", "name = \"marker\"");
    std::fs::write(&file, format!("{base}{marker}")).unwrap();
    assert!(agent.reload().unwrap());
    common::eventually(15, "three samples of the marker", || {
        probes(&collector, "marker").len() >= 3
    })
    .await;
    let removed_at = probes(&collector, "marker")[0].time_ns;
    assert!(
        probes(&collector, "late")
            .iter()
            .all(|p| p.time_ns < removed_at),
        "still probed after removal"
    );
    agent.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_server_that_never_answers_is_a_timeout_and_a_closed_port_is_refused() {
    // Accepted by the kernel's backlog, never answered: the startup handshake times out.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = dbservers::free_port();
    for (engine, url) in [
        (
            Engine::Postgres,
            format!("postgres://u@{}/x", silent.local_addr().unwrap()),
        ),
        (
            Engine::Mysql,
            format!("mysql://u@{}/x", silent.local_addr().unwrap()),
        ),
    ] {
        let mut d = db("silent", engine, DbRole::Primary, url);
        d.timeout = Seconds(Duration::from_millis(300));
        let t = Instant::now();
        // The bound only catches a probe that never gives up; its own timeout ends it.
        let s = tokio::time::timeout(
            Duration::from_secs(30),
            stormwatch_agent::probes::probe_once(&d, &mut Default::default()),
        )
        .await
        .expect("the probe's 300 ms timeout must end it");
        assert_eq!(s.failure, FailureClass::Timeout as i32, "{engine:?} {s:?}");
        println!("{engine:?}: timed out after {:?}", t.elapsed());
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }
    for (engine, url) in [
        (
            Engine::Postgres,
            format!("postgres://u@127.0.0.1:{closed}/x"),
        ),
        (Engine::Mysql, format!("mysql://u@127.0.0.1:{closed}/x")),
    ] {
        let d = db("closed", engine, DbRole::Primary, url);
        let s = stormwatch_agent::probes::probe_once(&d, &mut Default::default()).await;
        assert_eq!(s.failure, FailureClass::Refused as i32, "{engine:?} {s:?}");
    }
}

/// MariaDB 10.5.9+ wants SLAVE MONITOR for `SHOW REPLICA STATUS`; with the REPLICATION
/// CLIENT grant MySQL documents, the probe used to report `failure = none, lag = null` and the
/// lag went unwatched without a word. It is now a failed probe of its own class, naming the
/// grant; a database in the URL the user may not open is `permission` too, not
/// `authentication` (a healthy database paged as "wrong password").
#[tokio::test]
async fn a_probe_user_without_the_grant_is_a_permission_failure_naming_it() {
    assert!(
        dbservers::mariadb_available(),
        "MariaDB is not installed: ./scripts/test installs it (apt-get install mariadb-server)"
    );
    let primary = MariaDb::start(1);
    let replica = MariaDb::start(2);
    replica.replicate_from(&primary);
    replica.sql(
        "CREATE USER 'mon'@'%' IDENTIFIED BY 'pw'; GRANT REPLICATION CLIENT ON *.* TO 'mon'@'%'",
    );
    let base = replica.url();
    let root = base
        .trim_end_matches("/mysql")
        .replacen("sw:pw@", "mon:pw@", 1);
    let probe = |url: String| async move {
        let d = db("maria-replica", Engine::Mysql, DbRole::Replica, url);
        stormwatch_agent::probes::probe_once(&d, &mut Default::default()).await
    };

    let s = probe(format!("{root}/")).await;
    assert_eq!(s.failure, FailureClass::Permission as i32, "{s:?}");
    assert!(s.failure_message.contains("SLAVE MONITOR"), "{s:?}");
    assert!(s.connect_us.is_some(), "it did connect: {s:?}");

    let s = probe(format!("{root}/mysql")).await;
    assert_eq!(s.failure, FailureClass::Permission as i32, "{s:?}");

    replica.sql("GRANT SLAVE MONITOR ON *.* TO 'mon'@'%'");
    let deadline = Instant::now() + Duration::from_secs(15);
    let s = loop {
        let s = probe(format!("{root}/")).await;
        if s.lag_seconds.is_some() || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s.failure, FailureClass::None as i32, "{s:?}");
    assert!(
        s.lag_seconds.is_some(),
        "the lag is read once granted: {s:?}"
    );
}

/// The age of the heartbeat row a replica's probe read, seconds.
fn heartbeat_age(p: &ProbeSample) -> Option<f64> {
    p.detail.get("heartbeat_age_s")?.parse().ok()
}

/// When the heartbeat's writer fails (here: the primary turns read-only; in the seed's outage,
/// it refused connections), the row stops moving and its age grows although the replica is in
/// sync. That age used to be reported as lag — a critical replica-lag alert for the wrong
/// database during the primary's own incident. The replica's own status decides now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_heartbeat_writer_is_not_replica_lag() {
    let primary = PgServer::primary("");
    let replica = primary.replica();
    let collector = FakeCollector::start().await;
    let spool = tempfile::tempdir().unwrap();
    let mut p = db(
        "hb-primary",
        Engine::Postgres,
        DbRole::Primary,
        primary.url("postgres"),
    );
    p.heartbeat = Some("sw_heartbeat".into());
    let mut r = db(
        "hb-replica",
        Engine::Postgres,
        DbRole::Replica,
        replica.url("postgres"),
    );
    r.heartbeat = Some("sw_heartbeat".into());
    let agent = start_agent(config(&collector, spool.path(), vec![p, r])).await;
    let t0 = now_ns();
    sample_where(
        &collector,
        "hb-replica",
        t0,
        20.0,
        "heartbeat read, lag ~0",
        |p| p.detail.contains_key("heartbeat_age_s") && p.lag_seconds.is_some_and(|l| l < 0.5),
    )
    .await;

    primary.psql(
        "postgres",
        "ALTER SYSTEM SET default_transaction_read_only = on",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let broken = now_ns();
    sample_where(
        &collector,
        "hb-primary",
        broken,
        10.0,
        "the writer fails",
        |p| p.detail.contains_key("heartbeat_error"),
    )
    .await;
    let stale = sample_where(
        &collector,
        "hb-replica",
        broken,
        20.0,
        "a heartbeat 4 s old",
        |p| heartbeat_age(p).is_some_and(|a| a > 4.0),
    )
    .await;
    assert_eq!(
        stale.lag_seconds,
        Some(0.0),
        "an in-sync replica: {stale:?}"
    );
    assert!(stale.detail.contains_key("heartbeat_writer"), "{stale:?}");
    assert_eq!(stale.failure, 0, "{stale:?}");

    primary.psql(
        "postgres",
        "ALTER SYSTEM RESET default_transaction_read_only",
    );
    primary.psql("postgres", "SELECT pg_reload_conf()");
    let fixed = now_ns();
    sample_where(
        &collector,
        "hb-replica",
        fixed,
        20.0,
        "heartbeat trusted again",
        |p| !p.detail.contains_key("heartbeat_writer") && heartbeat_age(p).is_some_and(|a| a < 2.0),
    )
    .await;
    // While the first new heartbeat travels to the replica, the old row it still holds is not
    // the length of the writer's outage (it paged "replica 29.6 s behind" at the end of the
    // stranger's primary refusal).
    for s in probes(&collector, "hb-replica") {
        if s.time_ns >= fixed {
            assert!(
                s.lag_seconds.is_none_or(|l| l < 1.5),
                "lag read from the stale row as the writer came back: {s:?}"
            );
        }
    }
    agent.shutdown(Duration::from_secs(2)).await;
}

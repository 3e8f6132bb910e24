//! The shared test harness: one real PostgreSQL per test binary (initdb in a temporary
//! directory, a free loopback port, fsync off), and a fresh database for every test.
//!
//! The cluster is started by the same code as the collector's embedded default
//! ([`stormwatch_store::embedded`]), so every test run also exercises that path. A small
//! watchdog process stops the cluster and removes its directory when the test binary exits,
//! however it exits. Benchmarks whose figures must hold with fsync on use a second cluster,
//! [`postgres_durable`], started the same way with the product's settings. [`redis::start`]
//! starts a throwaway `redis-server` the same way.

pub mod chromium;
pub mod load;
pub mod redis;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use stormwatch_store::embedded::{free_loopback_port, EmbeddedOptions, EmbeddedPostgres};

/// A running test cluster.
pub struct TestPostgres {
    pg: EmbeddedPostgres,
    dir: PathBuf,
}

static SHARED: OnceLock<TestPostgres> = OnceLock::new();
static DURABLE: OnceLock<TestPostgres> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster of this test binary, started on first use.
pub fn postgres() -> &'static TestPostgres {
    SHARED.get_or_init(|| {
        // Started on a thread of its own: the caller may be inside a Tokio runtime.
        std::thread::spawn(|| start(true))
            .join()
            .expect("starting the test PostgreSQL panicked")
    })
}

/// A second cluster of this test binary with fsync on, as the collector runs its embedded
/// PostgreSQL (`initdb` syncs, `fsync`, `synchronous_commit` and `full_page_writes` at their
/// defaults), started on first use: for benchmarks whose figures must hold in production.
/// Its databases come from [`TestPostgres::fresh_database`] like the default cluster's.
pub fn postgres_durable() -> &'static TestPostgres {
    DURABLE.get_or_init(|| {
        std::thread::spawn(|| start(false))
            .join()
            .expect("starting the durable test PostgreSQL panicked")
    })
}

fn start(unsafe_no_fsync: bool) -> TestPostgres {
    let dir = tempfile::Builder::new()
        .prefix("stormwatch-test-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    // PostgreSQL may run as the `postgres` user (when tests run as root): let it in.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
    let opts = EmbeddedOptions {
        data_dir: dir.clone(),
        tcp_port: Some(free_loopback_port().expect("free port")),
        unsafe_no_fsync,
        shared_buffers_mib: None,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pg = rt
        .block_on(EmbeddedPostgres::start(&opts))
        .unwrap_or_else(|e| panic!("test PostgreSQL: {e}"));
    spawn_watchdog(&pg, &dir);
    TestPostgres { pg, dir }
}

fn spawn_watchdog(pg: &EmbeddedPostgres, dir: &std::path::Path) {
    let prefix = pg.command_prefix().join(" ");
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         {prefix} '{pg_ctl}' -D '{pgdata}' -m immediate stop >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        pg_ctl = pg.bin_dir().join("pg_ctl").display(),
        pgdata = pg.pgdata().display(),
        dir = dir.display(),
    );
    spawn_watchdog_script(&script, "the test PostgreSQL watchdog");
}

/// Runs `script` with `sh` in the background, never waited for: a watchdog that must outlive
/// this test process to clean up after it.
pub(crate) fn spawn_watchdog_script(script: &str, what: &str) {
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {what}: {e}"));
}

impl TestPostgres {
    /// Connection string of the maintenance database.
    pub fn admin_url(&self) -> String {
        self.pg.connection_string("postgres")
    }

    /// The cluster's directory.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Creates an empty database for one test and returns its connection string.
    pub async fn fresh_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::Relaxed)
        );
        let (client, conn) = tokio_postgres::connect(&self.admin_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to the test PostgreSQL");
        let conn = tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        drop(client);
        let _ = conn.await;
        self.pg.connection_string(&name)
    }
}

/// A fresh, migrated database: its connection string.
pub async fn fresh_database() -> String {
    postgres().fresh_database().await
}

/// A store over a fresh database with the migrations applied (4 connections, 7 days kept).
pub async fn fresh_store() -> stormwatch_store::Store {
    store_at(&fresh_database().await).await
}

/// [`fresh_store`] and a plain connection of its own to the same database, to look at what
/// the store wrote.
pub async fn fresh_store_and_client() -> (stormwatch_store::Store, tokio_postgres::Client) {
    let url = fresh_database().await;
    (store_at(&url).await, client_at(&url).await)
}

/// A store on the database at `url`, migrated (4 connections, 7 days kept).
pub async fn store_at(url: &str) -> stormwatch_store::Store {
    let store = stormwatch_store::Store::connect(&stormwatch_store::StoreOptions {
        url: url.to_owned(),
        max_connections: 4,
        retention_days: 7,
    })
    .await
    .expect("connect to the test database");
    store.migrate().await.expect("migrations apply");
    store
}

/// A plain connection to the database at `url`.
pub async fn client_at(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test database");
    tokio::spawn(conn);
    client
}

/// Deterministic sample data.
pub mod sample {
    use std::collections::BTreeMap;

    use stormwatch_model::{
        AgentStats, Aggregate, AggregateKey, Batch, DbRole, DependencyClass, EntryCall, HostSample,
        KeepReason, Span, SpanFlag, SpanKind, SpanStatus, WIRE_VERSION,
    };

    /// The per-minute aggregates an agent would ship for `spans`.
    pub fn aggregates_of(spans: &[Span]) -> Vec<Aggregate> {
        let mut aggs: BTreeMap<AggregateKey, Aggregate> = BTreeMap::new();
        for s in spans {
            let key = AggregateKey::of_span(s);
            aggs.entry(key.clone())
                .or_insert_with(|| Aggregate::new(&key))
                .add(s);
        }
        aggs.into_values().collect()
    }

    /// What an agent's `pipeline/entries.rs` ships for `spans`: each call counted under the
    /// server span of its service and trace (calls without one are left out, as there).
    pub fn entry_calls_of(spans: &[Span]) -> Vec<EntryCall> {
        let entries: BTreeMap<(&[u8], &str), &Span> = spans
            .iter()
            .filter(|s| s.dependency_class() == DependencyClass::HttpServer)
            .map(|s| ((s.trace_id.as_slice(), s.service.as_str()), s))
            .collect();
        // (minute, service, entry, class, peer) → (count, sum_ns).
        type Key = (i64, String, String, i32, String);
        let mut rows: BTreeMap<Key, (u64, u64)> = BTreeMap::new();
        for s in spans {
            if matches!(
                s.dependency_class(),
                DependencyClass::HttpServer | DependencyClass::Internal
            ) {
                continue;
            }
            let Some(e) = entries.get(&(s.trace_id.as_slice(), s.service.as_str())) else {
                continue;
            };
            let minute = (e.start_ns + e.duration_ns).div_euclid(60 * 1_000_000_000) * 60;
            let r = rows
                .entry((
                    minute,
                    s.service.clone(),
                    e.operation.clone(),
                    s.class,
                    s.peer.clone(),
                ))
                .or_default();
            r.0 += 1;
            r.1 += s.duration_ns.max(0) as u64;
        }
        rows.into_iter()
            .map(
                |((minute, service, entry, class, peer), (count, sum_ns))| EntryCall {
                    minute,
                    service,
                    entry,
                    class,
                    peer,
                    count,
                    sum_ns,
                },
            )
            .collect()
    }

    /// A span of trace `trace`, number `n` within it, starting at `start_ns`.
    pub fn span(trace: u64, n: u64, start_ns: i64, duration_ns: i64) -> Span {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&trace.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        trace_id[8..].copy_from_slice(&(trace + 1).to_be_bytes());
        let class = match n % 4 {
            0 => DependencyClass::HttpServer,
            1 => DependencyClass::Db,
            2 => DependencyClass::Redis,
            _ => DependencyClass::HttpClient,
        };
        let error = (trace + n).is_multiple_of(17);
        Span {
            trace_id: trace_id.to_vec(),
            span_id: (trace * 64 + n + 1).to_be_bytes().to_vec(),
            parent_span_id: if n == 0 {
                vec![]
            } else {
                (trace * 64 + 1).to_be_bytes().to_vec()
            },
            service: "board".into(),
            instance: "app-1".into(),
            operation: match class {
                DependencyClass::HttpServer => "GET /posts",
                DependencyClass::Db => "SELECT posts",
                DependencyClass::Redis => "GET",
                _ => "GET /partner",
            }
            .into(),
            kind: if n == 0 {
                SpanKind::Server
            } else {
                SpanKind::Client
            } as i32,
            class: class as i32,
            start_ns,
            duration_ns,
            status: if error {
                SpanStatus::Error
            } else {
                SpanStatus::Ok
            } as i32,
            status_message: if error { "boom".into() } else { String::new() },
            http_status: if class == DependencyClass::HttpServer {
                if error {
                    503
                } else {
                    200
                }
            } else {
                0
            },
            peer: match class {
                DependencyClass::Db => "db-replica:5432",
                DependencyClass::Redis => "redis:6379",
                DependencyClass::HttpClient => "partner:8080",
                _ => "",
            }
            .into(),
            db_system: match class {
                DependencyClass::Db => "postgresql",
                DependencyClass::Redis => "redis",
                _ => "",
            }
            .into(),
            db_role: if class == DependencyClass::Db {
                DbRole::Replica
            } else {
                DbRole::Unknown
            } as i32,
            statement: if class == DependencyClass::Db {
                "SELECT * FROM posts WHERE board_id = ?".into()
            } else {
                String::new()
            },
            rows: (class == DependencyClass::Db).then_some(20),
            attributes: BTreeMap::from([("http.route".to_owned(), "/posts".to_owned())]),
            kept: if error {
                KeepReason::Error
            } else {
                KeepReason::Sampled
            } as i32,
            flags: if error {
                vec![SpanFlag::Error as i32]
            } else {
                vec![]
            },
            replica_lag_ms: (class == DependencyClass::Db).then_some(5),
        }
    }

    /// A batch of `n_spans` spans (4 per trace) ending before `now_ns`, with their
    /// aggregates and one host sample.
    pub fn batch(agent: &str, sequence: u64, n_spans: usize, now_ns: i64) -> Batch {
        let spans: Vec<Span> = (0..n_spans as u64)
            .map(|i| {
                let trace = sequence * 1_000_000 + i / 4;
                let duration = 1_000_000 + (i as i64 * 7_919 % 50) * 1_000_000;
                span(
                    trace,
                    i % 4,
                    now_ns - 120_000_000_000 + i as i64 * 1_000,
                    duration,
                )
            })
            .collect();
        Batch {
            version: WIRE_VERSION,
            agent_id: agent.into(),
            instance: "i-1".into(),
            sequence,
            sent_at_ns: now_ns,
            aggregates: aggregates_of(&spans),
            entry_calls: entry_calls_of(&spans),
            spans,
            hosts: vec![HostSample {
                time_ns: now_ns - 1_000_000_000,
                host: agent.into(),
                cpu_percent: 12.5,
                mem_used_bytes: 1 << 30,
                mem_total_bytes: 4 << 30,
                load1: 0.5,
                ..Default::default()
            }],
            probes: vec![],
            metrics: vec![],
            logs: vec![],
            versions: vec![],
            stats: Some(AgentStats {
                spans_received: n_spans as u64,
                spans_kept: n_spans as u64,
                spans_dropped: 0,
                spool_bytes: 0,
                ..Default::default()
            }),
        }
    }
}

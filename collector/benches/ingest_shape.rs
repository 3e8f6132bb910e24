//! Ingest at a real shape (issue #19): 50 agents, each a concurrent client over real HTTP to a
//! release collector process, into a PostgreSQL cluster with **fsync on** (the product's
//! settings: `testkit::postgres_durable`), next to the raw binary-COPY rate of the very same
//! span rows into the same table on the same cluster; then the storage each stored span and
//! each row of the other tables takes, and how long a trace takes to read back by id. Prints
//! figures; asserts only that every kept span was stored.
//!
//! `cargo bench -p stormwatch-collector --bench ingest_shape`
//!
//! The shape (env: `BENCH_AGENTS`, `BENCH_MINUTES`, `BENCH_RPS`, `BENCH_SAMPLE_PERCENT`):
//! 20 services × 30 server operations (HTTP routes) × 40 peers each (14 databases, 6 Redis,
//! 18 HTTP services, 2 Kafka brokers, drawn from shared pools, so services share peers). Each
//! agent runs one instance of one service (agent `a` runs service `a mod 20`: 2–3 instances
//! per service) serving `BENCH_RPS` requests/s; a request is one server span and the 2–9 calls
//! (about 5.5) its route makes, one trace with a unique id. Each agent's batch is 60 s of its
//! traffic, one batch per minute of `BENCH_MINUTES`: the per-minute aggregates and calls per
//! server operation of *every* span of those 60 s (as the agent counts them before sampling),
//! the spans it keeps (whole traces: any error or slow span, plus `BENCH_SAMPLE_PERCENT` % of
//! the other traces by trace-id hash), six host samples and the agent's counters. Spans carry
//! the attributes stock OpenTelemetry SDKs send that the agent keeps (`http.route`,
//! `url.path`, `user_agent.original`, `db.collection.name`, `network.peer.address`...; the
//! agent drops `db.statement`, which becomes the normalized `statement`, and the attributes
//! mapped to span fields).
//!
//! While the collector ingests, the database side is profiled by sampling `pg_stat_activity`
//! every 10 ms (which statement each busy backend runs, and what it waits on), and the CPU the
//! collector and PostgreSQL used is read from `/proc`.
//!
//! `BENCH_ROUNDS=N` adds rounds of the raw COPY (4 connections) and the collector side by side,
//! each on a fresh database, and prints the median percentage of the N rounds.
//!
//! `BENCH_STORAGE_ONLY=1` skips the timed runs: it stores every batch with `Store::store_batch`
//! (the collector's write path without HTTP), prints the storage figures, and what other
//! layouts of the same span rows would take. Its figures depend neither on fsync nor on the
//! disk, so it may run with `TMPDIR=/dev/shm`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use stormwatch_model::{
    AgentStats, Aggregate, Batch, DbRole, DependencyClass, Encoding, EntryCall, Histogram,
    HostSample, KeepReason, ServiceVersion, Span, SpanFlag, SpanKind, SpanRef, SpanStatus,
    WIRE_VERSION,
};
use stormwatch_store::{Store, StoreOptions};
use stormwatch_testkit::load::mix;
use stormwatch_testkit::load::real::{RESOURCES, SERVICES};
use stormwatch_testkit::{postgres_durable, TestPostgres};

const TOKEN: &str = "bench-token-0123456789abcdef";
const NS: i64 = 1_000_000_000;

const OPS_PER_SERVICE: usize = 30;
const PEERS_PER_SERVICE: usize = 40;
/// Peer slots of a service by class: 0..14 databases, 14..20 Redis, 20..38 HTTP, 38..40 Kafka.
const DB_SLOTS: usize = 14;
const REDIS_SLOTS: usize = 6;
const HTTP_SLOTS: usize = 18;
const USER_AGENTS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0",
    "okhttp/4.12.0",
    "python-requests/2.31.0",
];

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic stream of pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    /// Log-normal around `median` (σ = 0.6), with a rare slow tail (× 50–300).
    fn latency(&mut self, median_ns: f64) -> i64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
        let mut d = median_ns * (0.6 * z).exp();
        if self.chance(0.003) {
            d *= 50.0 + 250.0 * self.unit();
        }
        d.max(1_000.0) as i64
    }
}

/// One dependency a service calls: its peer, class, and the client operations made on it.
struct Peer {
    name: String,
    class: DependencyClass,
    /// Operation name and normalized statement (empty for HTTP and Kafka).
    ops: Vec<(String, String)>,
    median_ns: f64,
    /// For databases: a replica (reads), else the primary.
    replica: bool,
    /// `network.peer.address`.
    address: String,
    /// `db.namespace` / Kafka topic / HTTP host.
    namespace: String,
}

/// A server operation: its route and the calls it makes, as (peer slot, op index).
struct Route {
    method: &'static str,
    route: String,
    calls: Vec<(usize, usize)>,
    own_median_ns: f64,
}

struct ServiceShape {
    name: &'static str,
    routes: Vec<Route>,
    peers: Vec<Peer>,
    /// A JVM service: its SDK adds `thread.name` and `thread.id`.
    jvm: bool,
}

fn sql_ops(table: &str, other: &str) -> Vec<(String, String)> {
    vec![
        (
            format!("SELECT {table}"),
            format!(
                "SELECT t.id, t.created_at, t.updated_at, t.status, t.customer_id, t.total_cents, t.currency, t.version FROM {table} t WHERE t.customer_id = ? AND t.status IN (?) ORDER BY t.created_at DESC LIMIT ?"
            ),
        ),
        (
            format!("SELECT {table}"),
            format!("SELECT * FROM {table} WHERE id = ?"),
        ),
        (
            format!("INSERT {table}"),
            format!(
                "INSERT INTO {table} (id, created_at, updated_at, status, customer_id, total_cents, currency, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            ),
        ),
        (
            format!("UPDATE {other}"),
            format!("UPDATE {other} SET status = ?, updated_at = ?, version = version + ? WHERE id = ? AND version = ?"),
        ),
    ]
}

fn shapes() -> Vec<ServiceShape> {
    // Shared pools: 30 database hosts, 10 Redis, the 20 services plus 16 partners, 4 brokers.
    let db_pool: Vec<(String, bool, String)> = (0..30)
        .map(|k| {
            let db = RESOURCES[k % RESOURCES.len()];
            let replica = k % 3 == 2;
            let host = if replica {
                format!("{db}-db-replica-{}.internal:5432", k / 12)
            } else {
                format!("{db}-db-{}.internal:5432", k / 12)
            };
            (host, replica, db.to_owned())
        })
        .collect();
    let http_pool: Vec<String> = SERVICES
        .iter()
        .map(|s| format!("{s}.prod.svc.cluster.local:8080"))
        .chain((0..16).map(|k| format!("api.partner{k}.example.com:443")))
        .collect();
    SERVICES
        .iter()
        .enumerate()
        .map(|(s, &name)| {
            let mut peers = Vec::with_capacity(PEERS_PER_SERVICE);
            for i in 0..DB_SLOTS {
                let (host, replica, db) = &db_pool[(s * 3 + i) % db_pool.len()];
                let table = RESOURCES[(s + i) % RESOURCES.len()];
                let other = RESOURCES[(s + i + 5) % RESOURCES.len()];
                peers.push(Peer {
                    name: host.clone(),
                    class: DependencyClass::Db,
                    ops: sql_ops(table, other),
                    median_ns: 1.5e6,
                    replica: *replica,
                    address: format!("10.20.{}.{}", (s * 3 + i) % 30, 10 + i),
                    namespace: db.clone(),
                });
            }
            for i in 0..REDIS_SLOTS {
                let k = (s + i) % 10;
                let key = RESOURCES[(s + i) % RESOURCES.len()];
                peers.push(Peer {
                    name: format!("redis-{k}.cache.internal:6379"),
                    class: DependencyClass::Redis,
                    ops: ["GET", "SET", "HGETALL", "EXPIRE"]
                        .iter()
                        .map(|c| (c.to_string(), format!("{c} {key}:?:{name}")))
                        .collect(),
                    median_ns: 0.3e6,
                    replica: false,
                    address: format!("10.30.0.{k}"),
                    namespace: "0".into(),
                });
            }
            for i in 0..HTTP_SLOTS {
                let target = &http_pool[(s + 1 + i) % http_pool.len()];
                let res = RESOURCES[(s + 2 * i) % RESOURCES.len()];
                peers.push(Peer {
                    name: target.clone(),
                    class: DependencyClass::HttpClient,
                    ops: vec![
                        (format!("GET /api/v2/{res}/{{id}}"), String::new()),
                        (format!("POST /api/v2/{res}"), String::new()),
                    ],
                    median_ns: if target.contains("partner") {
                        40e6
                    } else {
                        8e6
                    },
                    replica: false,
                    address: format!("10.40.{s}.{i}"),
                    namespace: target.split(':').next().unwrap_or("").to_owned(),
                });
            }
            for i in 0..PEERS_PER_SERVICE - DB_SLOTS - REDIS_SLOTS - HTTP_SLOTS {
                let k = (s + i) % 4;
                let topic = format!("{name}.{}.events", RESOURCES[(s + i) % RESOURCES.len()]);
                peers.push(Peer {
                    name: format!("kafka-{k}.msg.internal:9092"),
                    class: DependencyClass::Messaging,
                    ops: vec![(format!("publish {topic}"), String::new())],
                    median_ns: 2e6,
                    replica: false,
                    address: format!("10.50.0.{k}"),
                    namespace: topic,
                });
            }
            let routes = (0..OPS_PER_SERVICE)
                .map(|j| {
                    let res = RESOURCES[(j / 6 + s * 5) % RESOURCES.len()];
                    let (method, route) = match j % 6 {
                        0 => ("GET", format!("/api/v1/{res}")),
                        1 => ("GET", format!("/api/v1/{res}/{{id}}")),
                        2 => ("POST", format!("/api/v1/{res}")),
                        3 => ("PUT", format!("/api/v1/{res}/{{id}}")),
                        4 => ("DELETE", format!("/api/v1/{res}/{{id}}")),
                        _ => ("GET", format!("/api/v1/{res}/{{id}}/history")),
                    };
                    let n_calls = 2 + (mix((s * 100 + j) as u64) % 8) as usize;
                    let calls = (0..n_calls)
                        .map(|t| {
                            let slot = (j * 4 + t * 9) % PEERS_PER_SERVICE;
                            (slot, (j + t) % peers[slot].ops.len())
                        })
                        .collect();
                    Route {
                        method,
                        route,
                        calls,
                        own_median_ns: 1e6 + (j % 5) as f64 * 0.5e6,
                    }
                })
                .collect();
            ServiceShape {
                name,
                routes,
                peers,
                jvm: s % 2 == 0,
            }
        })
        .collect()
}

fn threshold_ns(class: DependencyClass) -> i64 {
    // The agent's default thresholds (agent.example.toml, [sampling.thresholds_ms]).
    match class {
        DependencyClass::Redis => 20,
        DependencyClass::Db => 200,
        DependencyClass::HttpClient | DependencyClass::Messaging => 500,
        _ => 1_000,
    }
}

/// A span as generated, before it is known whether its trace is kept.
struct Raw {
    /// Index of the call in the route (0 = the server span).
    call: usize,
    start_ns: i64,
    duration_ns: i64,
    error: bool,
    http_status: u32,
}

/// What the generator counts per batch besides the batch itself.
#[derive(Default, Clone, Copy)]
struct Counts {
    traces: u64,
    spans: u64,
    kept_traces: u64,
}

#[derive(Default)]
struct Acc {
    count: u64,
    errors: u64,
    sum_ns: u64,
    hist: Histogram,
}

/// Agent `agent`'s batch of the minute starting at `minute_s` (Unix seconds).
fn agent_batch(
    svc: &ServiceShape,
    agent: usize,
    seq: u64,
    minute_s: i64,
    rps: usize,
    sample_percent: u64,
) -> (Batch, Counts) {
    let mut rng = Rng(mix(((agent as u64) << 40) ^ seq));
    let pod = format!("{}-7d9f8c6b5-{:05x}", svc.name, mix(agent as u64) & 0xfffff);
    let requests = rps * 60;
    // Aggregates: (minute, route or call, status) → counts; the call key is 1000 + slot * 16 +
    // op so that routes and calls never collide.
    let mut aggs: HashMap<(i64, usize, u32), Acc> = HashMap::new();
    let mut entries: HashMap<(i64, usize, usize), (u64, u64)> = HashMap::new();
    let mut spans = Vec::new();
    let mut counts = Counts::default();
    let mut raw: Vec<Raw> = Vec::with_capacity(16);
    for r in 0..requests {
        let trace = mix(((agent as u64) << 44) ^ (seq << 24) ^ r as u64);
        // Popular routes first: a skewed pick.
        let u = rng.unit();
        let j = ((u * u) * OPS_PER_SERVICE as f64) as usize % OPS_PER_SERVICE;
        let route = &svc.routes[j];
        let start =
            minute_s * NS + (r as i64 * 60 * NS) / requests as i64 + rng.below(1_000) as i64;
        raw.clear();
        raw.push(Raw {
            call: 0,
            start_ns: start,
            duration_ns: 0,
            error: false,
            http_status: 0,
        });
        let mut t = start + 200_000 + rng.below(300_000) as i64;
        let mut call_error = false;
        for (n, &(slot, _)) in route.calls.iter().enumerate() {
            let peer = &svc.peers[slot];
            let d = rng.latency(peer.median_ns);
            let error = rng.chance(if peer.class == DependencyClass::HttpClient {
                0.004
            } else {
                0.0015
            });
            call_error |= error;
            let http_status = match (peer.class, error) {
                (DependencyClass::HttpClient, true) => [500, 502, 503][rng.below(3)],
                (DependencyClass::HttpClient, false) => 200,
                _ => 0,
            };
            raw.push(Raw {
                call: n + 1,
                start_ns: t,
                duration_ns: d,
                error,
                http_status,
            });
            t += d + 20_000;
        }
        let own = rng.latency(route.own_median_ns);
        let server_error = (call_error && rng.chance(0.5)) || rng.chance(0.002);
        raw[0].duration_ns = t - start + own;
        raw[0].error = server_error;
        raw[0].http_status = if server_error {
            if rng.chance(0.3) {
                503
            } else {
                500
            }
        } else if route.route.contains("{id}") && rng.chance(0.02) {
            404
        } else if route.method == "POST" {
            201
        } else {
            200
        };
        counts.traces += 1;
        counts.spans += raw.len() as u64;

        // Count every span, kept or not.
        let entry_end_minute = (raw[0].start_ns + raw[0].duration_ns).div_euclid(60 * NS) * 60;
        let mut keep_reason = None;
        for s in &raw {
            let minute = (s.start_ns + s.duration_ns).div_euclid(60 * NS) * 60;
            let (key, class) = if s.call == 0 {
                (j, DependencyClass::HttpServer)
            } else {
                let (slot, op) = route.calls[s.call - 1];
                (1000 + slot * 16 + op, svc.peers[slot].class)
            };
            let status = if s.http_status > 0 {
                s.http_status
            } else {
                u32::from(s.error)
            };
            let a = aggs.entry((minute, key, status)).or_default();
            a.count += 1;
            a.errors += u64::from(s.error);
            a.sum_ns += s.duration_ns as u64;
            a.hist.record(s.duration_ns as u64);
            if s.call > 0 {
                let (slot, _) = route.calls[s.call - 1];
                let e = entries.entry((entry_end_minute, j, slot)).or_default();
                e.0 += 1;
                e.1 += s.duration_ns as u64;
            }
            if s.error {
                keep_reason = Some(KeepReason::Error);
            } else if s.duration_ns >= threshold_ns(class) * 1_000_000 && keep_reason.is_none() {
                keep_reason = Some(KeepReason::Slow);
            }
        }
        let sampled = mix(trace) % 100 < sample_percent;
        if keep_reason.is_none() && !sampled {
            continue;
        }
        counts.kept_traces += 1;
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&trace.to_be_bytes());
        trace_id[8..].copy_from_slice(&mix(trace ^ 0x5eed).to_be_bytes());
        let root_id = mix(trace ^ 1).to_be_bytes().to_vec();
        let path_id = 10_000 + rng.below(900_000);
        for s in &raw {
            let slow;
            let mut flags = Vec::new();
            let mut span = if s.call == 0 {
                slow = s.duration_ns >= threshold_ns(DependencyClass::HttpServer) * 1_000_000;
                let mut attributes = std::collections::BTreeMap::from([
                    ("http.request.method".to_owned(), route.method.to_owned()),
                    ("http.route".to_owned(), route.route.clone()),
                    (
                        "url.path".to_owned(),
                        route.route.replace("{id}", &path_id.to_string()),
                    ),
                    ("url.scheme".to_owned(), "http".to_owned()),
                    (
                        "user_agent.original".to_owned(),
                        USER_AGENTS[rng.below(USER_AGENTS.len())].to_owned(),
                    ),
                    (
                        "client.address".to_owned(),
                        format!("10.{}.{}.{}", rng.below(4), rng.below(256), rng.below(256)),
                    ),
                    ("network.protocol.version".to_owned(), "1.1".to_owned()),
                    (
                        "server.address".to_owned(),
                        format!("{}.prod.svc.cluster.local", svc.name),
                    ),
                    ("server.port".to_owned(), "8080".to_owned()),
                ]);
                if svc.jvm {
                    let thread = rng.below(200);
                    attributes.insert("thread.name".into(), format!("http-nio-8080-exec-{thread}"));
                    attributes.insert("thread.id".into(), (40 + thread).to_string());
                }
                Span {
                    span_id: root_id.clone(),
                    operation: format!("{} {}", route.method, route.route),
                    kind: SpanKind::Server as i32,
                    class: DependencyClass::HttpServer as i32,
                    attributes,
                    ..Default::default()
                }
            } else {
                let (slot, op) = route.calls[s.call - 1];
                let peer = &svc.peers[slot];
                slow = s.duration_ns >= threshold_ns(peer.class) * 1_000_000;
                let (operation, statement) = &peer.ops[op];
                let mut attributes = std::collections::BTreeMap::new();
                let mut span = Span {
                    span_id: mix(trace ^ (s.call as u64 + 1)).to_be_bytes().to_vec(),
                    parent_span_id: root_id.clone(),
                    operation: operation.clone(),
                    kind: SpanKind::Client as i32,
                    class: peer.class as i32,
                    peer: peer.name.clone(),
                    statement: statement.clone(),
                    ..Default::default()
                };
                match peer.class {
                    DependencyClass::Db => {
                        span.db_system = "postgresql".into();
                        span.db_role = if peer.replica {
                            DbRole::Replica
                        } else {
                            DbRole::Primary
                        } as i32;
                        span.rows = Some(rng.below(50) as i64);
                        if peer.replica {
                            let lag = rng.below(40) as i64;
                            span.replica_lag_ms = Some(lag);
                        }
                        let verb = operation.split(' ').next().unwrap_or("");
                        let table = operation.split(' ').nth(1).unwrap_or("");
                        attributes.insert("db.namespace".into(), peer.namespace.clone());
                        attributes.insert("db.operation.name".into(), verb.to_owned());
                        attributes.insert("db.collection.name".into(), table.to_owned());
                        attributes.insert("db.user".into(), "app".into());
                        attributes.insert("network.peer.address".into(), peer.address.clone());
                        attributes.insert("network.peer.port".into(), "5432".into());
                    }
                    DependencyClass::Redis => {
                        span.db_system = "redis".into();
                        attributes.insert("db.namespace".into(), peer.namespace.clone());
                        attributes.insert("network.peer.address".into(), peer.address.clone());
                        attributes.insert("network.peer.port".into(), "6379".into());
                    }
                    DependencyClass::HttpClient => {
                        span.http_status = s.http_status;
                        let (method, path) = operation.split_once(' ').unwrap_or(("GET", ""));
                        attributes.insert("http.request.method".into(), method.to_owned());
                        attributes.insert(
                            "url.full".into(),
                            format!(
                                "http://{}{}",
                                peer.namespace,
                                path.replace("{id}", &rng.below(1_000_000).to_string())
                            ),
                        );
                        attributes.insert("network.protocol.version".into(), "1.1".into());
                        attributes.insert("network.peer.address".into(), peer.address.clone());
                    }
                    _ => {
                        attributes.insert("messaging.system".into(), "kafka".into());
                        attributes
                            .insert("messaging.destination.name".into(), peer.namespace.clone());
                        attributes.insert("messaging.operation.type".into(), "publish".into());
                        attributes.insert(
                            "messaging.kafka.message.key".into(),
                            rng.below(1_000_000).to_string(),
                        );
                    }
                }
                if svc.jvm {
                    attributes.insert("thread.name".into(), "http-nio-8080-exec-7".into());
                }
                span.attributes = attributes;
                span
            };
            span.trace_id = trace_id.to_vec();
            span.service = svc.name.to_owned();
            span.instance = pod.clone();
            span.start_ns = s.start_ns;
            span.duration_ns = s.duration_ns;
            if s.http_status > 0 {
                span.http_status = s.http_status;
            }
            if s.error {
                span.status = SpanStatus::Error as i32;
                span.status_message = if s.call == 0 {
                    "Internal Server Error".into()
                } else {
                    "connection reset by peer".into()
                };
                flags.push(SpanFlag::Error as i32);
            }
            if slow {
                flags.push(SpanFlag::Slow as i32);
            }
            span.flags = flags;
            span.kept = if s.error {
                KeepReason::Error
            } else if slow {
                KeepReason::Slow
            } else if keep_reason.is_some() {
                KeepReason::Forced
            } else {
                KeepReason::Sampled
            } as i32;
            spans.push(span);
        }
    }

    let mut aggregates: Vec<Aggregate> = aggs
        .into_iter()
        .map(|((minute, key, status), acc)| {
            let (class, peer, operation) = if key < 1000 {
                (
                    DependencyClass::HttpServer,
                    String::new(),
                    format!("{} {}", svc.routes[key].method, svc.routes[key].route),
                )
            } else {
                let p = &svc.peers[(key - 1000) / 16];
                (p.class, p.name.clone(), p.ops[(key - 1000) % 16].0.clone())
            };
            let status_class = match status {
                0 => "ok".to_owned(),
                1 => "error".to_owned(),
                n => n.to_string(),
            };
            Aggregate {
                minute,
                service: svc.name.to_owned(),
                class: class as i32,
                peer,
                operation,
                status_class,
                count: acc.count,
                errors: acc.errors,
                sum_ns: acc.sum_ns,
                histogram: Some(acc.hist),
            }
        })
        .collect();
    aggregates.sort_by(|a, b| {
        (a.minute, &a.operation, &a.peer, &a.status_class).cmp(&(
            b.minute,
            &b.operation,
            &b.peer,
            &b.status_class,
        ))
    });
    let mut entry_calls: Vec<EntryCall> = entries
        .into_iter()
        .map(|((minute, j, slot), (count, sum_ns))| {
            let p = &svc.peers[slot];
            EntryCall {
                minute,
                service: svc.name.to_owned(),
                entry: format!("{} {}", svc.routes[j].method, svc.routes[j].route),
                class: p.class as i32,
                peer: p.name.clone(),
                count,
                sum_ns,
            }
        })
        .collect();
    entry_calls.sort_by(|a, b| (a.minute, &a.entry, &a.peer).cmp(&(b.minute, &b.entry, &b.peer)));
    let host = format!("node-{agent:02}");
    let hosts = (0..6)
        .map(|k| HostSample {
            time_ns: (minute_s + 10 * k) * NS,
            host: host.clone(),
            cpu_percent: 35.0 + rng.below(30) as f64,
            mem_used_bytes: 6 << 30,
            mem_total_bytes: 16 << 30,
            load1: 2.5,
            load5: 2.1,
            load15: 1.9,
            net_rx_bytes_per_s: 2_000_000,
            net_tx_bytes_per_s: 3_000_000,
            process_count: 180,
            app_cpu_percent: Some(25.0),
            app_rss_bytes: Some(900 << 20),
            app_threads: Some(220),
            ..Default::default()
        })
        .collect();
    let versions = if seq == 1 {
        vec![ServiceVersion {
            service: svc.name.to_owned(),
            instance: pod.clone(),
            version: "2026.12.1".into(),
            environment: "production".into(),
            first_seen_ns: minute_s * NS,
        }]
    } else {
        vec![]
    };
    let kept = spans.len() as u64;
    let batch = Batch {
        version: WIRE_VERSION,
        agent_id: host.clone(),
        instance: format!("{host}-1764790000"),
        sequence: seq,
        sent_at_ns: (minute_s + 61) * NS,
        spans,
        aggregates,
        entry_calls,
        hosts,
        versions,
        stats: Some(AgentStats {
            spans_received: counts.spans * seq,
            spans_kept: kept * seq,
            ..Default::default()
        }),
        ..Default::default()
    };
    (batch, counts)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A `/proc/<pid>/status` line in kB (`VmRSS:`, `VmHWM:`...), in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesized command: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used by the PostgreSQL cluster's running processes (the postmaster's children).
fn cluster_cpu_seconds(postmaster: u32) -> f64 {
    let mut total = cpu_seconds(postmaster);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            total += cpu_seconds(pid);
        }
    }
    total
}

/// Samples what the backends of database `dbname` are doing every 10 ms until `stop` is set:
/// (statement, wait) → samples. A sampling profile of the database side of ingest.
async fn sample_activity(
    admin_url: String,
    dbname: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (u64, HashMap<(String, String), u64>) {
    let db = connect(&admin_url).await;
    let stmt = db
        .prepare(
            "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60),
                    coalesce(wait_event_type || ':' || wait_event, 'CPU')
               FROM pg_stat_activity
              WHERE datname = $1 AND state = 'active' AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    let mut seen: HashMap<(String, String), u64> = HashMap::new();
    let mut samples = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        for r in db.query(&stmt, &[&dbname]).await.unwrap() {
            *seen.entry((r.get(0), r.get(1))).or_default() += 1;
        }
        samples += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (samples, seen)
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

async fn migrated(url: &str, days: &[i64]) -> Store {
    let store = Store::connect(&StoreOptions {
        url: url.into(),
        max_connections: 4,
        retention_days: 7,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store.ensure_partitions(days).await.unwrap();
    store
}

/// What [`raw_copy`] measured.
struct RawCopy {
    spans_per_s: f64,
    /// CPU seconds of the cluster's processes, the copying backends included.
    postgres_cpu: f64,
    /// CPU seconds of this process: the spans' encoding and the COPY client.
    bench_cpu: f64,
}

/// Raw binary COPY of every span, `parallel` connections each copying its share of the
/// batches, one transaction per batch; each batch's spans encoded by `store` first (labels
/// as ids, attributes compressed), as `Store::store_batch` does. CPU is read while the
/// copying backends still run (a backend's CPU leaves `/proc` with it).
async fn raw_copy(
    url: &str,
    store: &Arc<Store>,
    batches: &Arc<Vec<Batch>>,
    parallel: usize,
    postmaster: u32,
) -> RawCopy {
    let spans: usize = batches.iter().map(|b| b.spans.len()).sum();
    let done = Arc::new(tokio::sync::Barrier::new(parallel + 1));
    let measured = Arc::new(tokio::sync::Barrier::new(parallel + 1));
    let mut tasks = Vec::new();
    let ready = Arc::new(tokio::sync::Barrier::new(parallel + 1));
    for part in 0..parallel {
        let (url, store, batches) = (url.to_owned(), store.clone(), batches.clone());
        let (ready, done, measured) = (ready.clone(), done.clone(), measured.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect(&url).await;
            ready.wait().await;
            for b in batches.iter().skip(part).step_by(parallel) {
                let refs: Vec<SpanRef<'_>> = b.spans.iter().map(SpanRef::from).collect();
                let spans = store.encode_spans(refs.iter()).await.unwrap();
                let tx = client.transaction().await.unwrap();
                stormwatch_store::batches::copy_spans(&tx, &spans)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
            done.wait().await;
            measured.wait().await;
            drop(client);
        }));
    }
    ready.wait().await;
    let me = std::process::id();
    let (pg0, bench0) = (cluster_cpu_seconds(postmaster), cpu_seconds(me));
    let started = Instant::now();
    done.wait().await;
    let elapsed = started.elapsed().as_secs_f64();
    let (pg1, bench1) = (cluster_cpu_seconds(postmaster), cpu_seconds(me));
    measured.wait().await;
    for t in tasks {
        t.await.unwrap();
    }
    RawCopy {
        spans_per_s: spans as f64 / elapsed,
        postgres_cpu: pg1 - pg0,
        bench_cpu: bench1 - bench0,
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// One table's size: every partition's heap (main fork), free-space and visibility maps,
/// TOAST (table and index), and each index, summed over partitions.
struct TableSize {
    rows: i64,
    heap: i64,
    maps: i64,
    toast: i64,
    indexes: Vec<(String, i64)>,
}

impl TableSize {
    fn total(&self) -> i64 {
        self.heap + self.maps + self.toast + self.indexes.iter().map(|i| i.1).sum::<i64>()
    }
}

async fn table_size(db: &tokio_postgres::Client, table: &str) -> TableSize {
    let rows: i64 = db
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0);
    let parts = "(SELECT inhrelid FROM pg_inherits WHERE inhparent = $1::text::regclass
                  UNION ALL SELECT $1::text::regclass::oid WHERE (SELECT relkind FROM pg_class
                                                             WHERE oid = $1::text::regclass) = 'r')";
    let r = db
        .query_one(
            &format!(
                "SELECT coalesce(sum(pg_relation_size(c.oid)), 0)::int8,
                        coalesce(sum(pg_relation_size(c.oid, 'fsm') + pg_relation_size(c.oid, 'vm')), 0)::int8,
                        coalesce(sum(CASE WHEN c.reltoastrelid = 0 THEN 0
                                          ELSE pg_total_relation_size(c.reltoastrelid) END), 0)::int8
                   FROM pg_class c WHERE c.oid IN {parts}"
            ),
            &[&table],
        )
        .await
        .unwrap();
    let indexes = db
        .query(
            &format!(
                "SELECT coalesce(pi.relname, ci.relname)::text,
                        sum(pg_relation_size(x.indexrelid))::int8
                   FROM pg_index x
                   JOIN pg_class ci ON ci.oid = x.indexrelid
                   LEFT JOIN pg_inherits ih ON ih.inhrelid = x.indexrelid
                   LEFT JOIN pg_class pi ON pi.oid = ih.inhparent
                  WHERE x.indrelid IN {parts}
                  GROUP BY 1 ORDER BY 1"
            ),
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    TableSize {
        rows,
        heap: r.get(0),
        maps: r.get(1),
        toast: r.get(2),
        indexes,
    }
}

async fn print_storage(db: &tokio_postgres::Client) {
    // Vacuum first so each table's visibility and free-space maps are as autovacuum leaves
    // them, and dead row versions of the upserts are counted as free space, not data.
    db.batch_execute("VACUUM (ANALYZE)").await.unwrap();
    let spans = table_size(db, "sw_spans").await;
    let per = |b: i64| b as f64 / spans.rows.max(1) as f64;
    println!(
        "storage of sw_spans: {} rows, {:.1} MiB, {:.1} bytes/span",
        spans.rows,
        spans.total() as f64 / (1 << 20) as f64,
        per(spans.total())
    );
    println!(
        "  heap {:.1}, fsm+vm {:.1}, TOAST {:.1}",
        per(spans.heap),
        per(spans.maps),
        per(spans.toast)
    );
    for (name, b) in &spans.indexes {
        println!("  index {name}: {:.1}", per(*b));
    }
    let columns = [
        (
            "pg_column_size(attrs)",
            "attrs (zstd, rows with attributes)",
        ),
        (
            "coalesce(pg_column_size(service_id), 0) + coalesce(pg_column_size(instance_id), 0)
             + coalesce(pg_column_size(operation_id), 0) + coalesce(pg_column_size(peer_id), 0)
             + coalesce(pg_column_size(db_system_id), 0) + coalesce(pg_column_size(statement_id), 0)",
            "six label ids",
        ),
        (
            "pg_column_size(kind_no) + pg_column_size(class_no) + pg_column_size(db_role_no) + pg_column_size(kept_no)",
            "kind+class+db_role+kept",
        ),
        ("pg_column_size(attributes)", "attributes (jsonb, old rows)"),
        ("pg_column_size(s.*)", "whole row (no line pointer)"),
    ];
    let mut line = String::from("  average column sizes:");
    for (e, name) in columns {
        let v: f64 = db
            .query_one(
                &format!("SELECT coalesce(avg({e}), 0)::float8 FROM sw_spans s"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        line.push_str(&format!(" {name} {v:.1};"));
    }
    println!("{line}");
    // What the compact rows refer to: the label dictionary and the attribute dictionaries.
    let labels = table_size(db, "sw_labels").await;
    let dicts = table_size(db, "sw_attr_dicts").await;
    println!(
        "  sw_labels ({} rows) and sw_attr_dicts ({} rows), indexes included: {:.1} KiB, {:.2} bytes/span; with sw_spans {:.1} bytes/span",
        labels.rows,
        dicts.rows,
        (labels.total() + dicts.total()) as f64 / 1024.0,
        per(labels.total() + dicts.total()),
        per(spans.total() + labels.total() + dicts.total())
    );
    println!("storage per row of the other tables written at ingest (after VACUUM):");
    let tables: Vec<String> = db
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
                AND c.relname NOT IN ('sw_spans', 'sw_labels', 'sw_attr_dicts') ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for t in tables {
        let s = table_size(db, &t).await;
        if s.rows == 0 {
            continue;
        }
        let per = |b: i64| b as f64 / s.rows as f64;
        let idx: Vec<String> = s
            .indexes
            .iter()
            .map(|(n, b)| format!("{n} {:.0}", per(*b)))
            .collect();
        // Its writes over the run (partitions summed): upserts that found their row update
        // it, and an update that is not HOT adds an entry to every index.
        let w = db
            .query_one(
                "SELECT coalesce(sum(n_tup_ins), 0)::int8, coalesce(sum(n_tup_upd), 0)::int8,
                        coalesce(sum(n_tup_hot_upd), 0)::int8, coalesce(sum(n_tup_del), 0)::int8
                   FROM pg_stat_user_tables
                  WHERE relid = $1::text::regclass
                     OR relid IN (SELECT inhrelid FROM pg_inherits
                                   WHERE inhparent = $1::text::regclass)",
                &[&t],
            )
            .await
            .unwrap();
        let (ins, upd, hot, del): (i64, i64, i64, i64) = (w.get(0), w.get(1), w.get(2), w.get(3));
        println!(
            "  {t}: {} rows, {:.1} MiB, {:.0} bytes/row (heap {:.0}, TOAST {:.0}, indexes: {}); \
             {ins} inserted, {upd} updated ({hot} HOT), {del} deleted",
            s.rows,
            s.total() as f64 / (1 << 20) as f64,
            per(s.total()),
            per(s.heap),
            per(s.toast),
            idx.join(", ")
        );
    }
}

/// What the same span rows would take in a table without the old layout's columns (each a
/// copy of `sw_spans` made with `CREATE TABLE ... AS`: bulk insert, pages filled like COPY
/// fills them), heap and TOAST per row; and the trace-id index kinds, each maintained row by
/// row as ingest maintains it. (The layouts measured before the compact one, from text labels
/// to ids, are in docs/benchmarks.md; their columns are NULL in new rows.)
async fn storage_variants(db: &tokio_postgres::Client) {
    let compact = "start_ns, duration_ns, trace_id, span_id, parent_span_id, service_id, \
                   instance_id, operation_id, kind_no, class_no, is_error, status_message, \
                   http_status, peer_id, db_system_id, db_role_no, statement_id, rows, \
                   attrs_dict, attrs, kept_no, flags, replica_lag_ms";
    let variants = [
        ("as stored (copy)", "*".to_owned()),
        (
            "the compact columns only, in COPY order (without the old layout's NULL columns)",
            compact.to_owned(),
        ),
    ];
    println!("sw_spans layouts, bytes per span (heap + TOAST, without indexes):");
    for (k, (name, cols)) in variants.iter().enumerate() {
        db.batch_execute(&format!(
            "CREATE TABLE sw_variant_{k} AS SELECT {cols} FROM sw_spans"
        ))
        .await
        .unwrap();
        let s = table_size(db, &format!("sw_variant_{k}")).await;
        let per = |b: i64| b as f64 / s.rows.max(1) as f64;
        println!(
            "  {:>6.1}  {name} (heap {:.1}, TOAST {:.1})",
            per(s.heap + s.toast),
            per(s.heap),
            per(s.toast)
        );
        db.batch_execute(&format!("DROP TABLE sw_variant_{k}"))
            .await
            .unwrap();
    }
    println!("trace-id index kinds, bytes per span (maintained row by row, in stored order):");
    for (name, using) in [
        ("hash (before migration 0022)", "hash (trace_id)"),
        (
            "hash, fillfactor 100",
            "hash (trace_id) WITH (fillfactor = 100)",
        ),
        ("btree (deduplicated; as now)", "btree (trace_id)"),
    ] {
        db.batch_execute(&format!(
            "CREATE TABLE sw_variant_index (trace_id bytea NOT NULL);
             CREATE INDEX sw_variant_index_trace ON sw_variant_index USING {using};
             INSERT INTO sw_variant_index SELECT trace_id FROM sw_spans;"
        ))
        .await
        .unwrap();
        let s = table_size(db, "sw_variant_index").await;
        let per = |b: i64| b as f64 / s.rows.max(1) as f64;
        println!(
            "  {:>6.1}  {name}",
            per(s.indexes.iter().map(|i| i.1).sum())
        );
        db.batch_execute("DROP TABLE sw_variant_index")
            .await
            .unwrap();
    }
}

/// What each span's attributes (the JSON the store writes) would take compressed one by
/// one with zstd (level 3) and a 32 KiB dictionary trained on 5,000 of them: an estimate for a
/// layout that stores them compressed.
fn attribute_compression(batches: &[Batch]) {
    let texts: Vec<Vec<u8>> = batches
        .iter()
        .flat_map(|b| b.spans.iter())
        .filter(|s| !s.attributes.is_empty())
        .map(|s| serde_json::to_vec(&s.attributes).unwrap())
        .collect();
    let step = (texts.len() / 5_000).max(1);
    let samples: Vec<&[u8]> = texts.iter().step_by(step).map(Vec::as_slice).collect();
    let dict = zstd::dict::from_samples(&samples, 32 * 1024).unwrap();
    let mut plain = zstd::bulk::Compressor::new(3).unwrap();
    let mut with_dict = zstd::bulk::Compressor::with_dictionary(3, &dict).unwrap();
    let (mut raw, mut alone, mut dicted) = (0usize, 0usize, 0usize);
    for t in &texts {
        raw += t.len();
        alone += plain.compress(t).unwrap().len();
        dicted += with_dict.compress(t).unwrap().len();
    }
    let n = texts.len().max(1) as f64;
    println!(
        "attributes as JSON text, {} spans with attributes: {:.1} bytes each; zstd one by one {:.1}, with a trained 32 KiB dictionary {:.1}",
        texts.len(),
        raw as f64 / n,
        alone as f64 / n,
        dicted as f64 / n
    );
}

/// Reads 200 kept traces spread over the run by id, through [`Store::trace`].
async fn trace_lookups(url: &str, batches: &[Batch]) {
    let store = Store::connect(&StoreOptions {
        url: url.to_owned(),
        max_connections: 1,
        retention_days: 7,
    })
    .await
    .unwrap();
    let step = (batches.len() / 200).max(1);
    let ids: Vec<Vec<u8>> = batches
        .iter()
        .step_by(step)
        .filter_map(|b| b.spans.first().map(|s| s.trace_id.clone()))
        .collect();
    let mut times = Vec::new();
    let mut found = 0;
    for id in &ids {
        let t = Instant::now();
        found += store.trace(id).await.unwrap().len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    println!(
        "trace by id (Store::trace, {} traces, {found} spans): p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms",
        ids.len(),
        quantile(&times, 0.5),
        quantile(&times, 0.95),
        times[times.len() - 1]
    );
}

#[tokio::main]
async fn main() {
    let agents = env_or("BENCH_AGENTS", 50);
    let minutes = env_or("BENCH_MINUTES", 6);
    let rps = env_or("BENCH_RPS", 100);
    let sample_percent = env_or("BENCH_SAMPLE_PERCENT", 5) as u64;
    let pg: &TestPostgres = postgres_durable();
    let now = stormwatch_store::now_ns();
    let first_minute = now.div_euclid(60 * NS) * 60 - 60 * minutes as i64;
    let days: Vec<i64> = (0..=minutes as i64 + 1)
        .map(|m| stormwatch_store::partitions::day_of_ns((first_minute + 60 * m) * NS))
        .collect();

    eprintln!("generating {agents} agents × {minutes} minutes at {rps} requests/s each...");
    let t = Instant::now();
    let shapes = Arc::new(shapes());
    // Batches in sending order: minute by minute, every agent's batch of each minute.
    let jobs: Vec<(usize, usize)> = (0..minutes)
        .flat_map(|m| (0..agents).map(move |a| (m, a)))
        .collect();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut generated: Vec<(usize, usize, Batch, Counts)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                let (jobs, shapes) = (&jobs, &shapes);
                scope.spawn(move || {
                    jobs.iter()
                        .skip(k)
                        .step_by(threads)
                        .map(|&(m, a)| {
                            let (b, c) = agent_batch(
                                &shapes[a % shapes.len()],
                                a,
                                m as u64 + 1,
                                first_minute + 60 * m as i64,
                                rps,
                                sample_percent,
                            );
                            (m, a, b, c)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    generated.sort_by_key(|g| (g.0, g.1));
    let mut total = Counts::default();
    for g in &generated {
        total.traces += g.3.traces;
        total.spans += g.3.spans;
        total.kept_traces += g.3.kept_traces;
    }
    let batches: Vec<Batch> = generated.into_iter().map(|g| g.2).collect();
    let kept: u64 = batches.iter().map(|b| b.spans.len() as u64).sum();
    let n_aggs: usize = batches.iter().map(|b| b.aggregates.len()).sum();
    let n_entries: usize = batches.iter().map(|b| b.entry_calls.len()).sum();
    // Bodies per agent, in minute order: each agent sends its own batches one after another,
    // compressed as the agent compresses them (whole: the frame says its size).
    let mut bodies: Vec<Vec<Vec<u8>>> = vec![Vec::new(); agents];
    for b in &batches {
        let a: usize = b.agent_id["node-".len()..].parse().unwrap();
        bodies[a].push(zstd::bulk::compress(&b.encode(Encoding::Protobuf), 1).unwrap());
    }
    let body_bytes: usize = bodies.iter().flatten().map(Vec::len).sum();
    let n_batches = batches.len();
    eprintln!("generated in {:.1} s", t.elapsed().as_secs_f64());
    let shape_line = format!(
        "shape: {agents} agents × {minutes} batches of 60 s ({n_batches} batches); {} services × {OPS_PER_SERVICE} routes × {PEERS_PER_SERVICE} peers; {rps} requests/s per agent = {} traces, {} spans counted in the aggregates; kept {} traces ({:.1} %), {kept} spans ({:.1} % of spans; errors, slow and {sample_percent} % sampled), {:.0} kept spans/batch; {:.0} aggregate rows and {:.0} entry-call rows per batch; {:.0} KiB protobuf+zstd per batch ({:.0} bytes/kept span)",
        SERVICES.len(),
        total.traces,
        total.spans,
        total.kept_traces,
        100.0 * total.kept_traces as f64 / total.traces as f64,
        100.0 * kept as f64 / total.spans as f64,
        kept as f64 / n_batches as f64,
        n_aggs as f64 / n_batches as f64,
        n_entries as f64 / n_batches as f64,
        body_bytes as f64 / n_batches as f64 / 1024.0,
        body_bytes as f64 / kept as f64,
    );
    println!("{shape_line}");

    let admin = connect(&pg.admin_url()).await;
    let settings: Vec<String> = admin
        .query(
            "SELECT name || '=' || setting FROM pg_settings
              WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes', 'wal_level',
                             'shared_buffers', 'max_wal_size') ORDER BY name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    println!("PostgreSQL: {}", settings.join(" "));
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average before: {}", l.trim());
    }

    if std::env::var_os("BENCH_STORAGE_ONLY").is_some() {
        // Storage alone: every batch through Store::store_batch (the collector's write path,
        // without HTTP), then the sizes, other layouts of the same rows and trace lookups.
        let url = pg.fresh_database().await;
        let store = migrated(&url, &days).await;
        let t = Instant::now();
        for b in &batches {
            store
                .store_batch(b, stormwatch_store::now_ns())
                .await
                .unwrap();
        }
        println!(
            "stored {n_batches} batches one at a time through Store::store_batch in {:.1} s",
            t.elapsed().as_secs_f64()
        );
        let db = connect(&url).await;
        print_storage(&db).await;
        trace_lookups(&url, &batches).await;
        storage_variants(&db).await;
        attribute_compression(&batches);
        return;
    }

    if let Some(soak_minutes) = std::env::var("BENCH_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse::<u64>().ok())
    {
        let rate = env_or("BENCH_SOAK_RATE", 27_000) as f64;
        soak(pg, &days, batches, minutes, soak_minutes, rate).await;
        return;
    }

    // The physical limit: raw COPY of the same span rows into the same table, same cluster.
    let batches = Arc::new(batches);
    let raw_db = pg.fresh_database().await;
    let raw_store = Arc::new(migrated(&raw_db, &days).await);
    let raw_client = connect(&raw_db).await;
    let postmaster: u32 = std::fs::read_to_string(pg.dir().join("postgres/postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        .unwrap_or(0);
    let kept_spans: usize = batches.iter().map(|b| b.spans.len()).sum();
    let mut raw_best: f64 = 0.0;
    for parallel in [1, 2, 4] {
        raw_client
            .batch_execute("TRUNCATE sw_spans; CHECKPOINT")
            .await
            .unwrap();
        let raw = raw_copy(&raw_db, &raw_store, &batches, parallel, postmaster).await;
        println!(
            "raw binary COPY, {parallel} connection(s): {:>10.0} spans/s; CPU a span: \
             PostgreSQL {:.2} µs, encoding and COPY client {:.2} µs",
            raw.spans_per_s,
            raw.postgres_cpu * 1e6 / kept_spans as f64,
            raw.bench_cpu * 1e6 / kept_spans as f64,
        );
        raw_best = raw_best.max(raw.spans_per_s);
    }
    drop(raw_client);
    drop(raw_store);
    let raw_name = raw_db.rsplit('=').next().unwrap().to_owned();
    admin
        .batch_execute(&format!("DROP DATABASE {raw_name} WITH (FORCE)"))
        .await
        .unwrap();
    admin.batch_execute("CHECKPOINT").await.unwrap();

    let p = collector_phase(pg, &days, &bodies, kept, postmaster).await;
    let (api_db, elapsed, lat) = (&p.db, p.elapsed, &p.lat);
    let (cpu_collector, cpu_pg) = (p.cpu_collector, p.cpu_pg);
    let db = connect(api_db).await;
    let rate = kept as f64 / elapsed;
    println!("collector over HTTP ({agents} agents, concurrent):");
    println!("  {rate:>10.0} kept spans/s  ({elapsed:.2} s for {kept} spans, all stored)");
    println!(
        "  {:>10.1} % of the raw COPY limit ({raw_best:.0} spans/s)",
        100.0 * rate / raw_best
    );
    println!(
        "  {:>10.2} batches/s; batch latency p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms; {} retries after 503",
        n_batches as f64 / elapsed,
        1e3 * quantile(lat, 0.5),
        1e3 * quantile(lat, 0.95),
        1e3 * lat[lat.len() - 1],
        p.retries
    );
    println!(
        "  peak RSS of the collector: {:.1} MiB (idle {:.1} MiB)",
        p.rss_peak, p.rss_idle
    );
    println!(
        "  CPU: collector {cpu_collector:.2} s, PostgreSQL {cpu_pg:.2} s, of {:.1} s on 2 cores",
        2.0 * elapsed
    );
    println!(
        "  CPU a kept span: collector {:.2} µs, PostgreSQL {:.2} µs",
        cpu_collector * 1e6 / kept as f64,
        cpu_pg * 1e6 / kept as f64
    );
    let mut activity: Vec<(&(String, String), &u64)> = p.activity.iter().collect();
    activity.sort_by_key(|a| std::cmp::Reverse(a.1));
    let busy: u64 = activity.iter().map(|a| *a.1).sum();
    println!(
        "  database backends, {} samples every 10 ms: {:.1} busy on average; top statements and waits:",
        p.samples,
        busy as f64 / p.samples.max(1) as f64
    );
    for ((query, wait), n) in activity.iter().take(14) {
        println!(
            "    {:>5.1} %  {wait:<28} {query}",
            100.0 * **n as f64 / busy.max(1) as f64
        );
    }
    if let Ok(l) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average after: {}", l.trim());
    }

    print_storage(&db).await;

    trace_lookups(api_db, &batches).await;

    more_rounds(
        pg,
        &days,
        &batches,
        &bodies,
        postmaster,
        100.0 * rate / raw_best,
    )
    .await;
}

/// `BENCH_ROUNDS` (default 1): after the first round, that many rounds in all of the raw
/// COPY with 4 connections and then the collector, each on a fresh database, one line each and
/// the median percentage. A collector phase lasts a few seconds, and this host's neighbours
/// move one run by ±10 %; rounds in one run, raw and collector side by side, take that drift
/// out of the comparison.
async fn more_rounds(
    pg: &TestPostgres,
    days: &[i64],
    batches: &Arc<Vec<Batch>>,
    bodies: &[Vec<Vec<u8>>],
    postmaster: u32,
    first_percent: f64,
) {
    let rounds = env_or("BENCH_ROUNDS", 1);
    if rounds < 2 {
        return;
    }
    let kept: u64 = batches.iter().map(|b| b.spans.len() as u64).sum();
    let admin = connect(&pg.admin_url()).await;
    // Two statements: DROP DATABASE refuses to run in the implicit transaction of a string
    // of several.
    let drop_db = |url: &str| {
        format!(
            "DROP DATABASE {} WITH (FORCE)",
            url.rsplit('=').next().unwrap()
        )
    };
    let mut percents = vec![first_percent];
    for round in 2..=rounds {
        let raw_db = pg.fresh_database().await;
        let raw_store = Arc::new(migrated(&raw_db, days).await);
        connect(&raw_db)
            .await
            .batch_execute("CHECKPOINT")
            .await
            .unwrap();
        let raw = raw_copy(&raw_db, &raw_store, batches, 4, postmaster).await;
        drop(raw_store);
        admin.batch_execute(&drop_db(&raw_db)).await.unwrap();
        admin.batch_execute("CHECKPOINT").await.unwrap();
        let p = collector_phase(pg, days, bodies, kept, postmaster).await;
        admin.batch_execute(&drop_db(&p.db)).await.unwrap();
        admin.batch_execute("CHECKPOINT").await.unwrap();
        let rate = kept as f64 / p.elapsed;
        let percent = 100.0 * rate / raw.spans_per_s;
        percents.push(percent);
        println!(
            "round {round}: raw COPY (4 connections) {:.0} spans/s, PostgreSQL {:.2} µs a span; \
             collector {rate:.0} kept spans/s = {percent:.1} %, collector {:.2} µs and \
             PostgreSQL {:.2} µs a span, p50 {:.0} ms, peak RSS {:.0} MiB",
            raw.spans_per_s,
            raw.postgres_cpu * 1e6 / kept as f64,
            p.cpu_collector * 1e6 / kept as f64,
            p.cpu_pg * 1e6 / kept as f64,
            1e3 * quantile(&p.lat, 0.5),
            p.rss_peak,
        );
    }
    let mut sorted = percents.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "% of raw COPY by round (the first against the best of 1, 2 and 4 connections): {}; median {:.1} %",
        percents
            .iter()
            .map(|p| format!("{p:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2]
    );
}

/// What [`collector_phase`] measured.
struct Phase {
    /// The database the collector stored into.
    db: String,
    elapsed: f64,
    /// Batch latencies in seconds, sorted.
    lat: Vec<f64>,
    retries: u64,
    rss_idle: f64,
    rss_peak: f64,
    cpu_collector: f64,
    cpu_pg: f64,
    /// `sample_activity`'s samples and what they saw.
    samples: u64,
    activity: HashMap<(String, String), u64>,
}

/// The product: a release collector process on a fresh database, each agent sending its
/// `bodies` one after another, all agents at once; checks that all `kept` spans were stored.
/// The collector is stopped before it returns.
async fn collector_phase(
    pg: &TestPostgres,
    days: &[i64],
    bodies: &[Vec<Vec<u8>>],
    kept: u64,
    postmaster: u32,
) -> Phase {
    let api_db = pg.fresh_database().await;
    drop(migrated(&api_db, days).await);
    connect(&api_db)
        .await
        .batch_execute("CHECKPOINT")
        .await
        .unwrap();
    let (_guard, pid, base) = start_collector(&api_db).await;
    let client = agent_client();
    let rss_idle = peak_rss_mib(pid);
    let api_name = api_db.rsplit('=').next().unwrap().to_owned();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_activity(pg.admin_url(), api_name, stop.clone()));
    let (cpu_collector0, cpu_pg0) = (cpu_seconds(pid), cluster_cpu_seconds(postmaster));
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        bodies.iter().map(Vec::len).sum(),
    )));
    let retries = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for mine in bodies.iter().cloned() {
        let (client, url, latencies, retries) = (
            client.clone(),
            format!("{base}/api/v1/ingest"),
            latencies.clone(),
            retries.clone(),
        );
        workers.push(tokio::spawn(async move {
            for body in mine {
                let t = Instant::now();
                loop {
                    let resp = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "zstd")
                        .body(body.clone())
                        .send()
                        .await
                        .unwrap();
                    if resp.status().is_success() {
                        break;
                    }
                    // What an agent does with a 503 (the collector or database busy): retry.
                    assert_eq!(
                        resp.status(),
                        503,
                        "ingest failed: {}",
                        resp.text().await.unwrap_or_default()
                    );
                    retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                latencies.lock().unwrap().push(t.elapsed().as_secs_f64());
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rss_peak = peak_rss_mib(pid);
    let cpu_collector = cpu_seconds(pid) - cpu_collector0;
    let cpu_pg = cluster_cpu_seconds(postmaster) - cpu_pg0;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (samples, activity) = sampler.await.unwrap();
    let db = connect(&api_db).await;
    let stored: i64 = db
        .query_one("SELECT count(*) FROM sw_spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as u64, kept, "every kept span must be stored");
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort_by(f64::total_cmp);
    drop(_guard);
    Phase {
        db: api_db,
        elapsed,
        lat,
        retries: retries.load(std::sync::atomic::Ordering::Relaxed),
        rss_idle,
        rss_peak,
        cpu_collector,
        cpu_pg,
        samples,
        activity,
    }
}

/// An HTTP client that, like the agent's, drops pooled connections before the collector closes
/// them idle (its header read timeout), so that no request races a closing connection.
fn agent_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(stormwatch_http::HEADER_READ_TIMEOUT / 2)
        .build()
        .unwrap()
}

/// The value of the collector's counter `stormwatch_collector_{name}` in its `/metrics`
/// (0 when it does not answer).
async fn collector_counter(client: &reqwest::Client, base: &str, name: &str) -> f64 {
    let Ok(text) = async {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .text()
            .await
    }
    .await
    else {
        return 0.0;
    };
    let prefix = format!("stormwatch_collector_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Starts a release collector process on `db` and waits until it answers: the guard that
/// kills it, its pid and its base URL.
async fn start_collector(db: &str) -> (Killed, u32, String) {
    let port = stormwatch_store::embedded::free_loopback_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stormwatch-collector"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            db,
        ])
        .env("STORMWATCH_INGEST_TOKENS", TOKEN)
        .env("STORMWATCH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("collector binary");
    let pid = child.id();
    let base = format!("http://127.0.0.1:{port}");
    let client = agent_client();
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (Killed(child), pid, base)
}

/// The batches of round `round` of a soak: the generated minutes moved `round × minutes`
/// minutes later, new sequence numbers, and trace ids made unique to the round.
fn soak_round(batches: &[Batch], minutes: usize, round: u64) -> Vec<Batch> {
    let shift_s = round as i64 * minutes as i64 * 60;
    let shift_ns = shift_s * NS;
    batches
        .iter()
        .map(|b| {
            let mut b = b.clone();
            b.sequence += round * minutes as u64;
            b.sent_at_ns += shift_ns;
            for s in &mut b.spans {
                s.start_ns += shift_ns;
                for (i, x) in (round as u32).to_be_bytes().iter().enumerate() {
                    s.trace_id[12 + i] ^= x;
                }
            }
            for a in &mut b.aggregates {
                a.minute += shift_s;
            }
            for e in &mut b.entry_calls {
                e.minute += shift_s;
            }
            for h in &mut b.hosts {
                h.time_ns += shift_ns;
            }
            for v in &mut b.versions {
                v.first_seen_ns += shift_ns;
            }
            b
        })
        .collect()
}

/// `BENCH_SOAK_MINUTES`: the 50 agents send at a steady `rate` kept spans/s (issue #19: half
/// the measured maximum) for that long, replaying the generated minutes in rounds (each round
/// later in time, with trace ids of its own). Every 30 s prints the collector's RSS, the
/// batches acknowledged, their latency, retries after 503, how far behind the schedule the
/// agents are and the rollup deltas waiting to be folded; at the end checks that every span
/// sent was stored.
async fn soak(
    pg: &TestPostgres,
    days: &[i64],
    batches: Vec<Batch>,
    minutes: usize,
    soak_minutes: u64,
    rate: f64,
) {
    let agents = batches
        .iter()
        .map(|b| b.agent_id.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let per_batch =
        batches.iter().map(|b| b.spans.len()).sum::<usize>() as f64 / batches.len() as f64;
    let batches_per_s = rate / per_batch;
    let duration = Duration::from_secs(soak_minutes * 60);
    println!(
        "soak: {soak_minutes} min at {rate:.0} kept spans/s = {batches_per_s:.2} batches/s of {per_batch:.0} spans from {agents} agents"
    );
    // Partitions for the rounds ahead (each round is `minutes` later).
    let rounds_needed =
        (duration.as_secs_f64() * batches_per_s / batches.len() as f64).ceil() as i64 + 1;
    let mut all_days = days.to_vec();
    let last = days.last().copied().unwrap_or(0);
    all_days.extend(last..=last + (rounds_needed * minutes as i64 * 60) / 86_400 + 1);
    let api_db = pg.fresh_database().await;
    drop(migrated(&api_db, &all_days).await);
    let (_guard, pid, base) = start_collector(&api_db).await;
    let client = agent_client();
    // Bodies are made by a producer thread, a round ahead, and handed to each agent in order.
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..agents)
        .map(|_| tokio::sync::mpsc::channel::<(Vec<u8>, usize)>(2 * minutes))
        .unzip();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for b in soak_round(&batches, minutes, round) {
                    let a: usize = b.agent_id["node-".len()..].parse().unwrap();
                    let body = zstd::bulk::compress(&b.encode(Encoding::Protobuf), 1).unwrap();
                    if senders[a].blocking_send((body, b.spans.len())).is_err() {
                        return;
                    }
                }
                round += 1;
            }
        })
    };
    #[derive(Default)]
    struct Window {
        batches: u64,
        spans: u64,
        retries: u64,
        latencies: Vec<f64>,
        behind_s: f64,
    }
    let window = Arc::new(Mutex::new(Window::default()));
    let sent_spans = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for (a, mut rx) in receivers.into_iter().enumerate() {
        let (client, url, window, sent_spans) = (
            client.clone(),
            format!("{base}/api/v1/ingest"),
            window.clone(),
            sent_spans.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Agent a's j-th batch is due at (j × agents + a) / batches_per_s.
            let mut j = 0u64;
            while let Some((body, spans)) = rx.recv().await {
                let due = started
                    + Duration::from_secs_f64(
                        (j * agents as u64 + a as u64) as f64 / batches_per_s,
                    );
                if due > started + duration {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    tokio::time::sleep(due - now).await;
                }
                let behind = Instant::now().saturating_duration_since(due).as_secs_f64();
                let t = Instant::now();
                let mut retries = 0;
                loop {
                    let sent = client
                        .post(&url)
                        .bearer_auth(TOKEN)
                        .header("content-type", "application/x-protobuf")
                        .header("content-encoding", "zstd")
                        .body(body.clone())
                        .send()
                        .await;
                    // What an agent does with a failed request: sends the batch again (a
                    // batch stored before the failure is answered as a duplicate).
                    match sent {
                        Ok(resp) if resp.status().is_success() => break,
                        Ok(resp) => assert_eq!(
                            resp.status(),
                            503,
                            "ingest failed: {}",
                            resp.text().await.unwrap_or_default()
                        ),
                        Err(e) => eprintln!("request failed, sending again: {e}"),
                    }
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                sent_spans.fetch_add(spans as u64, std::sync::atomic::Ordering::Relaxed);
                let mut w = window.lock().unwrap();
                w.batches += 1;
                w.spans += spans as u64;
                w.retries += retries;
                w.latencies.push(t.elapsed().as_secs_f64());
                w.behind_s = w.behind_s.max(behind);
                j += 1;
            }
        }));
    }
    let db = connect(&api_db).await;
    println!(
        "{:>6} {:>10} {:>9} {:>12} {:>9} {:>9} {:>8} {:>9} {:>8} {:>9} {:>12}",
        "min",
        "RSS MiB",
        "batches",
        "spans/s",
        "p50 ms",
        "p95 ms",
        "retries",
        "behind s",
        "deltas",
        "rows/key",
        "alert rows/s"
    );
    let mut alert_rows = collector_counter(&client, &base, "alert_recent_rows_total").await;
    let mut rss_curve = Vec::new();
    let mut last = Instant::now();
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let w = std::mem::take(&mut *window.lock().unwrap());
        let mut lat = w.latencies;
        lat.sort_by(f64::total_cmp);
        let deltas: i64 = db
            .query_one("SELECT count(*) FROM sw_rollup_deltas", &[])
            .await
            .unwrap()
            .get(0);
        // Aggregate rows per key in the compaction's window (the last 15 minutes to 2 minutes
        // ahead): 1 when the compaction keeps up. Bounded on both sides: the replayed data
        // runs ahead of the clock, and counting all of it took a backend for 26 s a sample.
        let rows_per_key: f64 = db
            .query_one(
                "SELECT count(*)::float8 / greatest(count(DISTINCT (minute, service, class, peer,
                                                           operation, status_class)), 1)
                   FROM sw_aggregates
                  WHERE minute >= now() - interval '15 minutes'
                    AND minute < now() + interval '2 minutes'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let rss = status_mib(pid, "VmRSS:");
        rss_curve.push(rss);
        let rows_read = collector_counter(&client, &base, "alert_recent_rows_total").await;
        let alert_rows_s = (rows_read - alert_rows) / last.elapsed().as_secs_f64();
        alert_rows = rows_read;
        println!(
            "{:>6.1} {rss:>10.1} {:>9} {:>12.0} {:>9.0} {:>9.0} {:>8} {:>9.1} {deltas:>8} {rows_per_key:>9.2} {alert_rows_s:>12.0}",
            started.elapsed().as_secs_f64() / 60.0,
            w.batches,
            w.spans as f64 / last.elapsed().as_secs_f64(),
            1e3 * if lat.is_empty() {
                0.0
            } else {
                quantile(&lat, 0.5)
            },
            1e3 * if lat.is_empty() {
                0.0
            } else {
                quantile(&lat, 0.95)
            },
            w.retries,
            w.behind_s,
        );
        last = Instant::now();
    }
    for w in workers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(producer);
    let sent = sent_spans.load(std::sync::atomic::Ordering::Relaxed);
    let stored: i64 = db
        .query_one("SELECT count(*) FROM sw_spans", &[])
        .await
        .unwrap()
        .get(0);
    let n = rss_curve.len();
    let (first, second) = rss_curve.split_at(n / 2);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "soak done: {sent} spans sent in {:.0} s ({:.0} spans/s), {stored} stored; RSS mean {:.1} MiB in the first half, {:.1} MiB in the second, peak {:.1} MiB",
        started.elapsed().as_secs_f64(),
        sent as f64 / started.elapsed().as_secs_f64(),
        mean(first),
        mean(second),
        peak_rss_mib(pid),
    );
    assert_eq!(stored as u64, sent, "every span sent must be stored");
}

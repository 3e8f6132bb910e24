//! Server time per dashboard page at the real shape of issue #19.
//!
//! Fills a fresh database (the testkit's PostgreSQL: fsync off, for filling) through
//! `Store::store_batch`, newest data first:
//!
//! - host samples: `BENCH_AGENTS` agents (50) every 10 s (the agent's default
//!   `host.interval_s`) over `BENCH_DAYS` days (7);
//! - probe samples: the same agents probing 2 databases each (a primary and its replica) every
//!   10 s, with failures (0.2 % timeouts, a 10-minute outage of every tenth primary each day)
//!   and replica lag (0.1–2 s, spikes to 30–120 s);
//! - traffic over the last `BENCH_TRAFFIC_HOURS` hours (2) at real cardinality: 20 services ×
//!   30 routes × 40 peers (14 databases, 6 Redis, 18 HTTP, 2 Kafka, from shared pools, as in
//!   `collector/benches/ingest_shape.rs`), 50 instances, `BENCH_TRACES_PER_MIN` traces a minute
//!   (3,000), every span stored, with the per-minute aggregates and entry calls of those spans;
//! - OTLP metric points for one service: 2 instances × 4 series every minute over 24 h.
//!
//! Samples go in batches of one agent and 6 hours (6,480 samples, under the model's 10,000),
//! two batches in flight. `BENCH_FILL_SECONDS` (1,500) bounds the sample fill: when it runs
//! out, older days are left empty and the shape line says how many days were filled.
//!
//! Then waits for the 1-minute load average to fall below 1.5 (at most `BENCH_WAIT_LOAD` s,
//! 300) and renders each page `BENCH_RUNS` (20) times after one warm-up through the router and
//! prints p50/p95/max server time; `BENCH_HOLD_S` (0) then keeps the filled database up that
//! long and prints its URL, to look at query plans. `BENCH_URL` (with `BENCH_END_S`, the data
//! end a run prints) times the pages again on such a database without filling it. `cargo bench -p stormwatch-web --bench pages_shape`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use stormwatch_model::{
    Batch, DbRole, DependencyClass, DiskUsage, FailureClass, HostSample, MetricKind, MetricPoint,
    ProbeSample, Span, SpanFlag, SpanKind, SpanStatus, WIRE_VERSION,
};
use stormwatch_store::{Store, StoreOptions};
use stormwatch_testkit::load::mix;
use stormwatch_testkit::load::real::{RESOURCES, SERVICES};
use stormwatch_testkit::sample;
use tower::ServiceExt;

const NS: i64 = 1_000_000_000;
const OPS: usize = 30;
const PEERS: usize = 40;
/// Samples every 10 s: the agent's default probe and host intervals.
const SAMPLE_EVERY_S: i64 = 10;
/// Hours of one agent's samples per batch: 6 h × 360 × 3 samples = 6,480.
const BATCH_HOURS: i64 = 6;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Peer `slot` of service `s`: (name, class, operations, median ns).
fn peer(s: usize, slot: usize) -> (String, DependencyClass, [String; 2], f64) {
    let res = RESOURCES[(s + slot) % RESOURCES.len()];
    match slot {
        0..14 => {
            let k = (s * 3 + slot) % 30;
            let db = RESOURCES[k % RESOURCES.len()];
            let host = if k % 3 == 2 {
                format!("{db}-db-replica-{}.internal:5432", k / 12)
            } else {
                format!("{db}-db-{}.internal:5432", k / 12)
            };
            (
                host,
                DependencyClass::Db,
                [format!("SELECT {res}"), format!("INSERT {res}")],
                1.5e6,
            )
        }
        14..20 => (
            format!("redis-{}.cache.internal:6379", (s + slot) % 10),
            DependencyClass::Redis,
            ["GET".into(), "SET".into()],
            0.3e6,
        ),
        20..38 => {
            let k = (s + 1 + slot) % 36;
            let target = if k < 20 {
                format!("{}.prod.svc.cluster.local:8080", SERVICES[k])
            } else {
                format!("api.partner{}.example.com:443", k - 20)
            };
            (
                target,
                DependencyClass::HttpClient,
                [
                    format!("GET /api/v2/{res}/{{id}}"),
                    format!("POST /api/v2/{res}"),
                ],
                8e6,
            )
        }
        _ => (
            format!("kafka-{}.msg.internal:9092", (s + slot) % 4),
            DependencyClass::Messaging,
            [
                format!("publish {}.{res}.events", SERVICES[s]),
                format!("publish {}.{res}.events", SERVICES[s]),
            ],
            2e6,
        ),
    }
}

fn route(s: usize, j: usize) -> String {
    let res = RESOURCES[(j / 6 + s * 5) % RESOURCES.len()];
    match j % 6 {
        0 => format!("GET /api/v1/{res}"),
        1 => format!("GET /api/v1/{res}/{{id}}"),
        2 => format!("POST /api/v1/{res}"),
        3 => format!("PUT /api/v1/{res}/{{id}}"),
        4 => format!("DELETE /api/v1/{res}/{{id}}"),
        _ => format!("GET /api/v1/{res}/{{id}}/history"),
    }
}

/// Log-normal around `median` (σ = 0.6) with a rare slow tail, from two hashes.
fn latency(h: u64, median_ns: f64) -> i64 {
    let u1 = ((h >> 11) as f64 / (1u64 << 53) as f64).max(1e-12);
    let h2 = mix(h);
    let u2 = (h2 >> 11) as f64 / (1u64 << 53) as f64;
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    let mut d = median_ns * (0.6 * z).exp();
    if h2 % 1000 < 3 {
        d *= 50.0 + (mix(h2) % 250) as f64;
    }
    d.max(1_000.0) as i64
}

/// One minute of traffic at real cardinality, every span kept: its batch.
fn traffic_batch(minute_s: i64, traces: u64, agents: u64, seq: u64) -> Batch {
    let mut spans = Vec::with_capacity(traces as usize * 7);
    for t in 0..traces {
        let id = (minute_s as u64) * 1_000_000 + t;
        let h = mix(id);
        let agent = (t % agents) as usize;
        let s = agent % SERVICES.len();
        let u = (h >> 11) as f64 / (1u64 << 53) as f64;
        let j = ((u * u) * OPS as f64) as usize % OPS;
        let instance = format!(
            "{}-7d9f8c6b5-{:05x}",
            SERVICES[s],
            mix(agent as u64) & 0xfffff
        );
        let start = minute_s * NS + (t as i64 * 60 * NS) / traces as i64;
        let n_calls = 2 + (mix((s * 100 + j) as u64) % 8) as usize;
        let mut at = start + 300_000;
        let mut call_error = false;
        let mut calls = Vec::with_capacity(n_calls);
        for c in 0..n_calls {
            let slot = (j * 4 + c * 9) % PEERS;
            let (name, class, ops, median) = peer(s, slot);
            let hc = mix(h ^ (c as u64 + 1));
            let d = latency(hc, median);
            let error = hc % 1000 < 2;
            call_error |= error;
            let mut sp = sample::span(id, c as u64 + 1, at, d);
            sp.service = SERVICES[s].into();
            sp.instance = instance.clone();
            sp.operation = ops[(j + c) % 2].clone();
            sp.kind = SpanKind::Client as i32;
            sp.class = class as i32;
            sp.peer = name;
            sp.db_system = match class {
                DependencyClass::Db => "postgresql",
                DependencyClass::Redis => "redis",
                _ => "",
            }
            .into();
            sp.db_role = if class == DependencyClass::Db {
                DbRole::Primary as i32
            } else {
                DbRole::Unknown as i32
            };
            sp.http_status = match (class, error) {
                (DependencyClass::HttpClient, true) => 503,
                (DependencyClass::HttpClient, false) => 200,
                _ => 0,
            };
            sp.rows = None;
            sp.replica_lag_ms = None;
            sp.statement = String::new();
            sp.attributes = BTreeMap::new();
            set_outcome(&mut sp, error, d > 200_000_000);
            at += d + 20_000;
            calls.push(sp);
        }
        let own = latency(mix(h ^ 0xabc), 1e6 + (j % 5) as f64 * 0.5e6);
        let duration = at - start + own;
        let error = (call_error && h.is_multiple_of(2)) || h % 1000 < 2;
        let mut root = sample::span(id, 0, start, duration);
        root.service = SERVICES[s].into();
        root.instance = instance;
        root.operation = route(s, j);
        root.http_status = if error { 500 } else { 200 };
        root.attributes = BTreeMap::from([("http.route".to_owned(), root.operation.clone())]);
        set_outcome(&mut root, error, duration > 1_000_000_000);
        spans.push(root);
        spans.extend(calls);
    }
    Batch {
        version: WIRE_VERSION,
        agent_id: "bench-traffic".into(),
        instance: "bench-traffic-1".into(),
        sequence: seq,
        sent_at_ns: (minute_s + 60) * NS,
        aggregates: sample::aggregates_of(&spans),
        entry_calls: sample::entry_calls_of(&spans),
        spans,
        ..Default::default()
    }
}

fn set_outcome(s: &mut Span, error: bool, slow: bool) {
    s.status = if error {
        SpanStatus::Error
    } else {
        SpanStatus::Ok
    } as i32;
    s.status_message = if error { "boom".into() } else { String::new() };
    s.flags = match (error, slow) {
        (true, _) => vec![SpanFlag::Error as i32],
        (false, true) => vec![SpanFlag::Slow as i32],
        _ => vec![],
    };
}

fn agent_name(a: u64) -> String {
    format!("node-{a:02}")
}

/// Agent `a`'s host and probe samples from `from_s` (inclusive) to `to_s` (exclusive).
fn sample_batch(a: u64, from_s: i64, to_s: i64, seq: u64) -> Batch {
    let host = agent_name(a);
    let primary = format!("{}-db-{a:02}", RESOURCES[a as usize % RESOURCES.len()]);
    let replica = format!(
        "{}-db-replica-{a:02}",
        RESOURCES[a as usize % RESOURCES.len()]
    );
    let mut hosts = Vec::new();
    let mut probes = Vec::new();
    let mut t = from_s;
    while t < to_s {
        let h = mix((a << 40) ^ t as u64);
        let day_s = t.rem_euclid(86_400);
        let busy = 0.5 + 0.5 * ((day_s as f64 / 86_400.0) * std::f64::consts::TAU).sin();
        let cpu = 10.0 + 60.0 * busy + (h % 100) as f64 / 10.0;
        hosts.push(HostSample {
            time_ns: t * NS,
            host: host.clone(),
            cpu_percent: cpu,
            mem_used_bytes: (6 << 30) + (h % (1 << 30)),
            mem_total_bytes: 16 << 30,
            load1: cpu / 50.0,
            load5: cpu / 55.0,
            load15: cpu / 60.0,
            net_rx_bytes_per_s: 1_000_000 + h % 5_000_000,
            net_tx_bytes_per_s: 800_000 + h % 4_000_000,
            process_count: 180 + (h % 40) as u32,
            disks: vec![DiskUsage {
                mount: "/".into(),
                used_bytes: (60 << 30) + (t as u64 % 86_400) * 1_000,
                total_bytes: 200 << 30,
            }],
            app_cpu_percent: Some(cpu * 0.7),
            app_rss_bytes: Some((1 << 30) + h % (256 << 20)),
            ..Default::default()
        });
        // Every tenth primary is down ten minutes a day, at an hour of its own.
        let outage =
            a.is_multiple_of(10) && (day_s - (a as i64 % 24) * 3_600).rem_euclid(86_400) < 600;
        for (database, role) in [(&primary, DbRole::Primary), (&replica, DbRole::Replica)] {
            let hp = mix(h ^ role as u64);
            let failed = (outage && role == DbRole::Primary) || hp % 1000 < 2;
            let lag = (role == DbRole::Replica && !failed).then(|| {
                if hp % 2000 == 7 {
                    30.0 + (hp % 90) as f64
                } else {
                    0.1 + (hp % 1900) as f64 / 1000.0
                }
            });
            probes.push(ProbeSample {
                time_ns: t * NS,
                database: database.clone(),
                engine: "postgresql".into(),
                role: role as i32,
                connect_us: (!failed).then(|| 800 + (hp % 1500) as i64),
                query_us: (!failed).then(|| 200 + (hp % 900) as i64),
                failure: if failed {
                    FailureClass::Timeout
                } else {
                    FailureClass::None
                } as i32,
                failure_message: if failed {
                    "connect timed out after 5s".into()
                } else {
                    String::new()
                },
                lag_seconds: lag,
                lag_bytes: lag.map(|l| (l * 2e6) as i64),
                ..Default::default()
            });
        }
        t += SAMPLE_EVERY_S;
    }
    Batch {
        version: WIRE_VERSION,
        agent_id: host.clone(),
        instance: format!("{host}-1"),
        sequence: seq,
        sent_at_ns: to_s * NS,
        hosts,
        probes,
        ..Default::default()
    }
}

/// A metric series: name, unit, kind, value, attributes.
type Series = (
    &'static str,
    &'static str,
    MetricKind,
    f64,
    &'static [(&'static str, &'static str)],
);

/// OTLP metric points of one service over `[from_s, to_s)`: 2 instances × 4 series a minute.
fn metric_batch(service: &str, from_s: i64, to_s: i64, seq: u64) -> Batch {
    let mut metrics = Vec::new();
    let mut m = from_s;
    while m < to_s {
        for inst in 0..2u64 {
            let h = mix(((m as u64) << 2) ^ inst);
            let v = (h % 1000) as f64 / 1000.0;
            let series: [Series; 4] = [
                (
                    "process.cpu.utilization",
                    "1",
                    MetricKind::Gauge,
                    0.2 + v * 0.5,
                    &[],
                ),
                (
                    "jvm.memory.used",
                    "By",
                    MetricKind::Gauge,
                    5e8 + v * 1e8,
                    &[("jvm.memory.pool.name", "G1 Old Gen")],
                ),
                (
                    "http.server.request.count",
                    "{request}",
                    MetricKind::Counter,
                    6_000.0 + v * 600.0,
                    &[],
                ),
                (
                    "db.client.connections.usage",
                    "{connection}",
                    MetricKind::Gauge,
                    4.0 + v * 6.0,
                    &[("state", "used")],
                ),
            ];
            for (name, unit, kind, value, attrs) in series {
                metrics.push(MetricPoint {
                    minute_ns: m * NS,
                    service: service.into(),
                    instance: format!("{service}-{inst}"),
                    name: name.into(),
                    unit: unit.into(),
                    kind: kind as i32,
                    attributes: attrs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    count: 6,
                    sum: value * 6.0,
                    min: value * 0.9,
                    max: value * 1.1,
                    last: value,
                    ..Default::default()
                });
            }
        }
        m += 60;
    }
    Batch {
        version: WIRE_VERSION,
        agent_id: "bench-metrics".into(),
        instance: "bench-metrics-1".into(),
        sequence: seq,
        sent_at_ns: to_s * NS,
        metrics,
        ..Default::default()
    }
}

async fn time_page(app: &axum::Router, path: &str, runs: u64) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let res = app
            .clone()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let body = axum::body::to_bytes(res.into_body(), 256 << 20)
            .await
            .unwrap();
        times.push(t.elapsed());
        bytes = body.len();
    }
    times.sort();
    (times, bytes)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let agents = env("BENCH_AGENTS", 50);
        let days = env("BENCH_DAYS", 7) as i64;
        let traffic_hours = env("BENCH_TRAFFIC_HOURS", 2) as i64;
        let traces_per_min = env("BENCH_TRACES_PER_MIN", 3_000);
        let fill_budget = Duration::from_secs(env("BENCH_FILL_SECONDS", 1_500));
        let runs = env("BENCH_RUNS", 20);
        // An already filled database of this bench (kept up with BENCH_HOLD_S), whose data
        // ends at BENCH_END_S: no fill, and the pages are timed over windows ending there.
        let reuse = std::env::var("BENCH_URL").ok();
        let url = match &reuse {
            Some(url) => url.clone(),
            None => stormwatch_testkit::fresh_database().await,
        };
        let store = Arc::new(
            Store::connect(&StoreOptions {
                url: url.clone(),
                max_connections: 8,
                retention_days: 8,
            })
            .await
            .unwrap(),
        );
        store.migrate().await.unwrap();
        let now_s = match reuse {
            Some(_) => env("BENCH_END_S", 0) as i64,
            None => stormwatch_store::now_ns() / NS,
        };
        println!("data end (BENCH_END_S): {now_s}");
        // Samples end at the last 10 s boundary; traffic and metrics at the last whole minute.
        let end_s = now_s - now_s % SAMPLE_EVERY_S;
        let end_min = now_s - now_s % 60;
        if reuse.is_none() {
            println!("load before the fill: {}", load());

            // Traffic first (the pages' last hours), one batch a minute.
            let t = Instant::now();
            let (mut n_spans, mut n_aggs, mut n_entries) = (0usize, 0usize, 0usize);
            let minutes = traffic_hours * 60;
            for k in 0..minutes {
                let m = end_min - (minutes - k) * 60;
                let b = traffic_batch(m, traces_per_min, agents, k as u64 + 1);
                n_spans += b.spans.len();
                n_aggs += b.aggregates.len();
                n_entries += b.entry_calls.len();
                store.store_batch(&b, now_s * NS).await.unwrap();
                // As the collector does every second.
                store.fold_rollups(now_s * NS).await.unwrap();
            }
            println!(
                "traffic: {minutes} minutes, {n_spans} spans, {n_aggs} aggregate rows, {n_entries} entry-call rows in {:.1} s",
                t.elapsed().as_secs_f64()
            );
            let t = Instant::now();
            let mut points = 0;
            for (k, h) in (0..24).enumerate() {
                let b = metric_batch(
                    SERVICES[0],
                    end_min - (24 - h) * 3_600,
                    end_min - (23 - h) * 3_600,
                    k as u64 + 1,
                );
                points += b.metrics.len();
                store.store_batch(&b, now_s * NS).await.unwrap();
            }
            println!(
                "metrics: {points} points of {} over 24 h in {:.1} s",
                SERVICES[0],
                t.elapsed().as_secs_f64()
            );

            // Samples, newest 6 hours of every agent first, two batches in flight.
            let t = Instant::now();
            let chunks = days * 24 / BATCH_HOURS;
            let mut filled_chunks = 0;
            let (mut n_hosts, mut n_probes) = (0usize, 0usize);
            'fill: for c in 0..chunks {
                let to = end_s - c * BATCH_HOURS * 3_600;
                let from = to - BATCH_HOURS * 3_600;
                for pair in (0..agents).collect::<Vec<_>>().chunks(2) {
                    let mut tasks = Vec::new();
                    for &a in pair {
                        let store = store.clone();
                        tasks.push(tokio::spawn(async move {
                            let b = sample_batch(a, from, to, (chunks - c) as u64);
                            let n = (b.hosts.len(), b.probes.len());
                            store.store_batch(&b, now_s * NS).await.unwrap();
                            n
                        }));
                    }
                    for task in tasks {
                        let (h, p) = task.await.unwrap();
                        n_hosts += h;
                        n_probes += p;
                    }
                }
                filled_chunks += 1;
                eprintln!(
                    "samples: {} h filled, {n_hosts} host + {n_probes} probe samples ({:.0}/s)",
                    filled_chunks * BATCH_HOURS,
                    (n_hosts + n_probes) as f64 / t.elapsed().as_secs_f64()
                );
                if t.elapsed() > fill_budget {
                    break 'fill;
                }
            }
            let fill = t.elapsed().as_secs_f64();
            let filled_hours = filled_chunks * BATCH_HOURS;
            println!(
                "samples: {n_hosts} host + {n_probes} probe samples over {filled_hours} h in {fill:.1} s ({:.0} samples/s)",
                (n_hosts + n_probes) as f64 / fill
            );
            let t = Instant::now();
            store.vacuum_analyze().await.unwrap();
            // What autovacuum would have done to the sample tables by now (statistics, BRIN).
            let (db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for table in [
                "sw_probe_samples",
                "sw_host_samples",
                "sw_probe_rollups",
                "sw_host_rollups",
            ] {
                db.batch_execute(&format!("VACUUM (ANALYZE) {table}"))
                    .await
                    .unwrap();
            }
            println!("VACUUM ANALYZE after the fill: {:.1} s", t.elapsed().as_secs_f64());
            println!(
                "shape: {agents} agents; host samples every {SAMPLE_EVERY_S} s and probes of 2 databases each (primary + replica) every {SAMPLE_EVERY_S} s over {:.2} days ({n_hosts} host, {n_probes} probe samples); traffic over the last {traffic_hours} h: 20 services × {OPS} routes × {PEERS} peers, {agents} instances, {traces_per_min} traces/min, {:.0} spans/min all stored, {:.0} aggregate and {:.0} entry-call rows/min; metrics: 1 service × 2 instances × 4 series/min over 24 h",
                filled_hours as f64 / 24.0,
                n_spans as f64 / minutes as f64,
                n_aggs as f64 / minutes as f64,
                n_entries as f64 / minutes as f64,
            );
            // The fill loads both cores: wait (up to BENCH_WAIT_LOAD s, 300) for the 1-minute load
            // average to fall below 1.5 before timing.
            let t = Instant::now();
            let wait = Duration::from_secs(env("BENCH_WAIT_LOAD", 300));
            while t.elapsed() < wait
                && load()
                    .split_whitespace()
                    .next()
                    .and_then(|l| l.parse::<f64>().ok())
                    .is_some_and(|l| l >= 1.5)
            {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            println!(
                "load before the page runs (after waiting {:.0} s): {}",
                t.elapsed().as_secs_f64(),
                load()
            );
        }

        let app = stormwatch_web::router(store.clone());
        println!(
            "{:<38} {:>9} {:>9} {:>9} {:>10}",
            "page", "p50 ms", "p95 ms", "max ms", "bytes"
        );
        let window = |range: &str, secs: i64| match reuse {
            Some(_) => format!("from={}&to={}", (now_s - secs) * 1000, now_s * 1000),
            None => format!("range={range}"),
        };
        let (h1, d7) = (window("1h", 3_600), window("7d", 7 * 86_400));
        for path in [
            format!("/databases?{h1}"),
            format!("/databases?{d7}"),
            format!("/hosts?{h1}"),
            format!("/hosts?{d7}"),
            format!("/?{h1}"),
            format!("/dependencies?{h1}"),
            format!("/scatter?{}", window("15m", 900)),
            format!("/spans?{h1}"),
            format!("/services/{}/metrics?{h1}", SERVICES[0]),
            format!("/incidents?{}", window("24h", 86_400)),
        ] {
            let path = path.as_str();
            time_page(&app, path, 1).await;
            let (times, bytes) = time_page(&app, path, runs).await;
            let q =
                |f: f64| times[((times.len() - 1) as f64 * f).round() as usize].as_secs_f64() * 1e3;
            println!(
                "{path:<38} {:>9.1} {:>9.1} {:>9.1} {bytes:>10}",
                q(0.5),
                q(0.95),
                q(1.0)
            );
        }
        println!("load after: {}", load());
        // The databases and dependencies pages' reads on their own, to tell them from rendering.
        let (from_1h, to) = (now_s - 3_600, now_s);
        let first_day = (to / 86_400 - 6) * 86_400;
        let mut reads: Vec<(&str, Vec<f64>)> = vec![
            ("probe_series 1h (60 s)", vec![]),
            ("probe_series 7d (7200 s)", vec![]),
            ("probe_heatmap 7 days", vec![]),
            ("probe_recurrence", vec![]),
            ("dependency_series 1h (60 s)", vec![]),
            ("peer_summaries 1h", vec![]),
        ];
        for _ in 0..5 {
            let t = Instant::now();
            store.probe_series(from_1h, to, 60).await.unwrap();
            reads[0].1.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.probe_series(to - 7 * 86_400, to, 7_200).await.unwrap();
            reads[1].1.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            let heat = store.probe_heatmap(first_day, to, 5).await.unwrap();
            reads[2].1.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.probe_recurrence(None, to as f64, None).await.unwrap();
            reads[3].1.push(t.elapsed().as_secs_f64() * 1e3);
            // The dependencies page's reads: its series, and the table's baseline hour.
            let t = Instant::now();
            store
                .dependency_series(None, from_1h, to, 60)
                .await
                .unwrap();
            reads[4].1.push(t.elapsed().as_secs_f64() * 1e3);
            let t = Instant::now();
            store.peer_summaries(from_1h - 300, to - 300).await.unwrap();
            reads[5].1.push(t.elapsed().as_secs_f64() * 1e3);
            if reads[2].1.len() == 1 {
                println!(
                    "heatmap: {} probed days, {} slices with failures or slow connects",
                    heat.probed.len(),
                    heat.cells.len()
                );
            }
        }
        for (name, mut ms) in reads {
            ms.sort_by(f64::total_cmp);
            println!("store read {name:<28} p50 {:>8.1} ms, max {:>8.1} ms", ms[2], ms[4]);
        }
        // Keeps the filled database up for `BENCH_HOLD_S` s (0) to look at its plans.
        let hold = env("BENCH_HOLD_S", 0);
        if hold > 0 {
            println!("holding {url} for {hold} s");
            tokio::time::sleep(Duration::from_secs(hold)).await;
        }
    });
}

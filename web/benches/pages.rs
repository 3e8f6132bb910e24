//! Server time per dashboard page over a large store.
//!
//! Fills a fresh database (the testkit's PostgreSQL) with `BENCH_SPANS` spans (default 10M)
//! spread over the last `BENCH_HOURS` hours (default 24) across 5 services, with the per-minute
//! aggregates an agent would ship for them, then renders every page `BENCH_RUNS` times
//! (default 20) through the router and prints p50/p95/max server time (handler + rendering).
//!
//! `cargo bench -p stormwatch-web --bench pages` (`BENCH_SPANS=2000000` for a quicker run).

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use stormwatch_store::incidents::{IncidentAlert, IncidentChange};
use stormwatch_store::signals::Labels;
use stormwatch_store::{Store, StoreOptions};
use tower::ServiceExt;

const NS: i64 = 1_000_000_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One line of store timings: rows returned, p50 and p95.
fn print_store_times(name: &str, rows: usize, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "store.{name}: {rows} rows, p50 {:.1} ms, p95 {:.1} ms",
        times[times.len() / 2].as_secs_f64() * 1e3,
        times[((times.len() - 1) as f64 * 0.95).round() as usize].as_secs_f64() * 1e3
    );
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

fn member(rule: &str, labels: &[(&str, &str)], started: f64) -> IncidentAlert {
    let labels: Labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    IncidentAlert {
        rule: rule.into(),
        labels_key: stormwatch_store::alerts::labels_key(&labels),
        labels,
        severity: "critical".into(),
        summary: format!("{rule} fired"),
        started,
        joined: started,
        resolved: Some(started + 600.0),
    }
}

/// A resolved ten-minute incident from `at`, as the collector's grouping writes it: its id.
async fn open_incident(store: &Store, at: f64) -> i64 {
    let term = store
        .take_leadership("bench", Duration::from_secs(600), true)
        .await
        .unwrap()
        .unwrap();
    let cause = serde_json::json!([{
        "rank": 1, "kind": "dependency", "subject": "Redis redis:6379",
        "service": "board", "operation": "GET /posts", "class": "redis", "peer": "redis:6379",
        "line": "Redis redis:6379 p95 300 ms, ×60 its usual, explains 90 % of the added latency of GET /posts",
        "score": 1.9, "evidence": [{"name": "p95 during the incident", "value": 300.0, "unit": "ms"}]
    }]);
    let ids = store
        .apply_incident_changes(
            &term,
            &[IncidentChange::Open {
                opened: at,
                title: "dependency-latency fired (+1 more alert)".into(),
                cause_text: "Redis redis:6379 p95 300 ms".into(),
                cause,
                recurrence: vec![],
                alerts: vec![
                    member(
                        "dependency-latency",
                        &[("class", "redis"), ("peer", "redis:6379")],
                        at,
                    ),
                    member(
                        "http-5xx-rate",
                        &[("service", "board"), ("operation", "GET /posts")],
                        at + 5.0,
                    ),
                ],
            }],
            at,
        )
        .await
        .unwrap();
    store
        .apply_incident_changes(
            &term,
            &[IncidentChange::Resolve {
                incident: ids[0],
                at: at + 600.0,
            }],
            at + 600.0,
        )
        .await
        .unwrap();
    ids[0]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let total = env("BENCH_SPANS", 10_000_000);
        let hours = env("BENCH_HOURS", 24) as i64;
        let runs = env("BENCH_RUNS", 20);
        let url = stormwatch_testkit::fresh_database().await;
        let store = Store::connect(&StoreOptions {
            url,
            max_connections: 8,
            retention_days: 7,
        })
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let now = stormwatch_store::now_ns();
        let fill = stormwatch_testkit::load::fill(&store, total, hours, now).await;
        // What autovacuum would have done by now in a running system: BRIN summaries and
        // statistics. Without it every span query reads whole partitions (see the report).
        let t = Instant::now();
        store.vacuum_analyze().await.unwrap();
        println!(
            "VACUUM ANALYZE after the load: {:.1} s",
            t.elapsed().as_secs_f64()
        );
        println!(
            "filled {total} spans over {hours} h in {:.1} s ({:.0} spans/s)",
            fill.as_secs_f64(),
            total as f64 / fill.as_secs_f64()
        );
        // The store alone, for the two span pages: how much of the page is the query.
        let end = stormwatch_store::now_ns();
        for (name, minutes) in [("scatter_points 15m", 15), ("slow_spans 1h", 60)] {
            let f = stormwatch_store::SpanFilter {
                from_ns: end - minutes * 60 * NS,
                to_ns: end,
                limit: if minutes == 15 { 50_000 } else { 500 },
                ..Default::default()
            };
            let mut times = Vec::new();
            let mut n = 0;
            for _ in 0..runs {
                let t = Instant::now();
                n = if minutes == 15 {
                    store.scatter_points(&f).await.unwrap().len()
                } else {
                    store
                        .slow_spans(&f, Default::default())
                        .await
                        .unwrap()
                        .len()
                };
                times.push(t.elapsed());
            }
            print_store_times(name, n, times);
        }
        // The store alone, for the dependencies page over 1 h: the series and the peers table's
        // two reads (now and the hour before), as the handler asks for them.
        let end_s = end / NS + 1;
        let now_from = end_s - 300;
        for (name, which) in [
            ("dependency_series 1h", 0),
            ("peer_summaries 5m", 1),
            ("peer_summaries baseline 1h", 2),
        ] {
            let mut times = Vec::new();
            let mut n = 0;
            for _ in 0..runs {
                let t = Instant::now();
                n = match which {
                    0 => store
                        .dependency_series(None, end_s - 3_600, end_s, 60)
                        .await
                        .unwrap()
                        .len(),
                    1 => store.peer_summaries(now_from, end_s).await.unwrap().len(),
                    _ => store
                        .peer_summaries(now_from - 3_600, now_from)
                        .await
                        .unwrap()
                        .len(),
                };
                times.push(t.elapsed());
            }
            print_store_times(name, n, times);
        }
        // The store alone, for the overview over 7 days (with BENCH_HOURS=168).
        {
            let mut times = Vec::new();
            let mut n = 0;
            for _ in 0..runs {
                let t = Instant::now();
                n = store
                    .service_overview(end_s - 7 * 86_400, end_s, 7 * 86_400 / 60)
                    .await
                    .unwrap()
                    .len();
                times.push(t.elapsed());
            }
            print_store_times("service_overview 7d", n, times);
        }
        // An incident of the last half hour: the cache slowed, the board's list answered 503.
        let incident = open_incident(&store, end_s as f64 - 1_800.0).await;
        let store = std::sync::Arc::new(store);
        let app = stormwatch_web::router(store);
        println!(
            "{:<34} {:>9} {:>9} {:>9} {:>10}",
            "page", "p50 ms", "p95 ms", "max ms", "bytes"
        );
        for path in [
            "/?range=1h",
            "/dependencies?range=1h",
            "/scatter?range=15m",
            "/spans?range=1h",
            "/?range=24h",
            "/dependencies?range=24h",
            "/?range=7d",
            "/dependencies?range=7d",
            "/databases?range=1h",
            "/hosts?range=1h",
            "/map?range=1h",
            "/map?range=24h",
            "/incidents?range=24h",
            &format!("/incidents/{incident}"),
        ] {
            // One warm-up request (prepared statements, caches), then the measured runs.
            time_page(&app, path, 1).await;
            let (times, bytes) = time_page(&app, path, runs).await;
            let q =
                |f: f64| times[((times.len() - 1) as f64 * f).round() as usize].as_secs_f64() * 1e3;
            println!(
                "{path:<34} {:>9.1} {:>9.1} {:>9.1} {bytes:>10}",
                q(0.5),
                q(0.95),
                q(1.0)
            );
        }
    });
}

//! Every dashboard page in a real browser: Debian's `chromium`, headless, against a real
//! collector over a seeded database. A page passes when it loads with no console message at
//! all (CSP violations, script errors and failed loads all land in the console) and its
//! screenshot is saved to `target/screenshots/` (kept as CI output).
//!
//! `./scripts/test` installs chromium; `CHROMIUM` overrides the binary.

mod common;

use std::path::Path;

use common::{start, TOKEN};
use stormwatch_collector::Config;
use stormwatch_model::{DbRole, FailureClass, LogRecord, MetricKind, MetricPoint, ProbeSample};
use stormwatch_store::{Store, StoreOptions};
use stormwatch_testkit::{chromium, sample};

const NS: i64 = 1_000_000_000;

/// Loads `url` headless; returns the console lines chromium logged, after saving a screenshot.
fn load(url: &str, shot: &Path) -> Vec<String> {
    let out = chromium::screenshot(url, shot, 4000, &["--enable-logging=stderr", "--v=0"]);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Refused to"))
        .map(str::to_owned)
        .collect()
}

async fn seed(db: &str) -> String {
    let store = Store::connect(&StoreOptions {
        url: db.into(),
        max_connections: 2,
        retention_days: 7,
    })
    .await
    .unwrap();
    let now = stormwatch_store::now_ns();
    let mut b = sample::batch("app-1", 1, 2_000, now);
    let trace = stormwatch_model::hexid::encode(&b.spans[0].trace_id);
    for i in 0..120 {
        let refused = (20..32).contains(&(i / 2));
        b.probes.push(ProbeSample {
            time_ns: now - i * 30 * NS,
            database: "main".into(),
            engine: "postgres".into(),
            role: DbRole::Primary as i32,
            connect_us: (!refused).then_some(2_000 + i * 10),
            failure: if refused {
                FailureClass::Refused
            } else {
                FailureClass::None
            } as i32,
            ..Default::default()
        });
        b.probes.push(ProbeSample {
            time_ns: now - i * 30 * NS,
            database: "main-replica".into(),
            engine: "postgres".into(),
            role: DbRole::Replica as i32,
            connect_us: Some(1_500),
            lag_seconds: Some(if i < 10 { 9.0 } else { 0.5 }),
            ..Default::default()
        });
    }
    // The board's limiter and pool over the last 10 minutes, for its metrics page, and log
    // records of the trace: one on its server span, one on a span that is not stored.
    for ago in 0..10 {
        let minute_ns = (now.div_euclid(60 * NS) - ago) * 60 * NS;
        for (name, kind, attrs, v) in [
            (
                "http.server.active_requests",
                MetricKind::UpDown,
                &[("board.limiter", "--max-concurrent")][..],
                40.0 - ago as f64 * 3.0,
            ),
            (
                "board.limiter.max",
                MetricKind::Gauge,
                &[("board.limiter", "--max-concurrent")][..],
                40.0,
            ),
            (
                "db.client.connections.usage",
                MetricKind::UpDown,
                &[("pool.name", "board-replica"), ("state", "used")][..],
                10.0,
            ),
            (
                "db.client.connections.max",
                MetricKind::UpDown,
                &[("pool.name", "board-replica")][..],
                10.0,
            ),
            ("process.cpu.utilization", MetricKind::Gauge, &[][..], 0.3),
        ] {
            b.metrics.push(MetricPoint {
                minute_ns,
                service: "board".into(),
                instance: "app-1".into(),
                name: name.into(),
                kind: kind as i32,
                attributes: attrs
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                count: 1,
                sum: v,
                min: v,
                max: v,
                last: v,
                last_ns: minute_ns + 30 * NS,
                ..Default::default()
            });
        }
    }
    for (span, severity, body) in [
        (b.spans[0].span_id.clone(), 17, "replica timeout"),
        (
            vec![0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1],
            13,
            "from a span not stored",
        ),
    ] {
        b.logs.push(LogRecord {
            time_ns: b.spans[0].start_ns + 100_000,
            service: "board".into(),
            instance: "app-1".into(),
            severity_number: severity,
            body: body.into(),
            trace_id: b.spans[0].trace_id.clone(),
            span_id: span,
            ..Default::default()
        });
    }
    stormwatch_model::validate::check_batch(&mut b, now).unwrap();
    store.store_batch(&b, now).await.unwrap();
    store.close();
    trace
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_loads_in_chromium_without_console_errors() {
    let dir = chromium::screenshots_dir();
    // The check itself must be able to fail: a page that logs to the console is caught.
    let control = dir.join("control.png");
    let lines = tokio::task::spawn_blocking(move || {
        load(
            "data:text/html,<p>control</p><script>console.error('stormwatch-control')</script>",
            &control,
        )
    })
    .await
    .unwrap();
    assert!(
        lines.iter().any(|l| l.contains("stormwatch-control")),
        "console scanning does not work: {lines:?}"
    );
    let _ = std::fs::remove_file(dir.join("control.png"));

    let db = stormwatch_testkit::fresh_database().await;
    // The collector migrates the database and creates partitions; then the seed goes in.
    let c = start(Config::for_tests(&db, TOKEN)).await;
    let trace = seed(&db).await;
    let pages = [
        ("overview", "/?range=1h".to_owned()),
        ("scatter", "/scatter?range=15m".to_owned()),
        ("dependencies", "/dependencies?range=1h".to_owned()),
        ("map", "/map?range=1h".to_owned()),
        ("slow-spans", "/spans?range=1h".to_owned()),
        ("trace", format!("/traces/{trace}")),
        ("databases", "/databases?range=1h".to_owned()),
        ("hosts", "/hosts?range=1h".to_owned()),
        (
            "service-metrics",
            "/services/board/metrics?range=1h".to_owned(),
        ),
        ("alerts", "/alerts".to_owned()),
        ("login", "/login".to_owned()),
    ];
    let mut failures = Vec::new();
    for (name, path) in pages {
        let url = c.endpoint(&path);
        let shot = dir.join(format!("{name}.png"));
        let _ = std::fs::remove_file(&shot);
        let lines = tokio::task::spawn_blocking(move || load(&url, &shot))
            .await
            .unwrap();
        if !lines.is_empty() {
            failures.push(format!("{path}:\n  {}", lines.join("\n  ")));
        }
    }
    c.stop().await;
    assert!(
        failures.is_empty(),
        "console messages:\n{}",
        failures.join("\n")
    );
}

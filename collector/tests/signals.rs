//! OTLP metrics and logs over real HTTP into a real PostgreSQL: parts of a minute merged
//! exactly once, histograms' p95 from their buckets, logs by trace and by service, bad
//! parameters answered 400 with the reason.

mod common;

use std::collections::BTreeMap;

use common::{batch_of, start, start_fresh, TOKEN};
use serde_json::{json, Value};
use stormwatch_collector::ingest::IngestResponse;
use stormwatch_collector::Config;
use stormwatch_model::{Batch, Encoding, LogRecord, MetricKind, MetricPoint};

const NS: i64 = 1_000_000_000;
const MINUTE: i64 = 60 * NS;

async fn post(c: &common::Running, batch: &Batch) -> IngestResponse {
    let r = reqwest::Client::new()
        .post(c.endpoint("/api/v1/ingest"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-protobuf")
        .body(batch.encode(Encoding::Protobuf))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    r.json().await.unwrap()
}

async fn get(c: &common::Running, path: &str) -> (u16, Value) {
    let r = reqwest::get(c.endpoint(path)).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A part of a minute: `(count, sum, min, max, last, last_ns)` of `name` (kind, unit) of
/// `service`/`i-1`.
#[allow(clippy::too_many_arguments)]
fn part(
    minute_ns: i64,
    service: &str,
    name: &str,
    kind: MetricKind,
    unit: &str,
    attributes: &[(&str, &str)],
    (count, sum, min, max, last, last_ns): (u64, f64, f64, f64, f64, i64),
) -> MetricPoint {
    MetricPoint {
        minute_ns,
        service: service.into(),
        instance: "i-1".into(),
        name: name.into(),
        unit: unit.into(),
        kind: kind as i32,
        attributes: attrs(attributes),
        count,
        sum,
        min,
        max,
        last,
        last_ns,
        ..Default::default()
    }
}

const CPU: &str = "process.cpu.utilization";
const REQUESTS: &str = "http.server.requests";
const CONNECTIONS: &str = "db.client.connections.usage";
const DURATION: &str = "http.server.duration";

fn histogram(m0: i64, buckets: [u64; 4], count: u64, sum: f64, min: f64, max: f64) -> MetricPoint {
    MetricPoint {
        bounds: vec![10.0, 20.0, 40.0],
        buckets: buckets.to_vec(),
        ..part(
            m0,
            "board",
            DURATION,
            MetricKind::Histogram,
            "ms",
            &[("http.route", "/timetable")],
            (count, sum, min, max, 0.0, m0 + 59 * NS),
        )
    }
}

#[tokio::test]
async fn metric_parts_merge_once_and_read_back_per_kind() {
    let (c, _db) = start_fresh().await;
    let now = stormwatch_store::now_ns();
    let m0 = now.div_euclid(MINUTE) * MINUTE - 5 * MINUTE;
    let m1 = m0 + MINUTE;
    let user = [("state", "user")];
    let gauge = |m, p| part(m, "board", CPU, MetricKind::Gauge, "1", &user, p);
    let counter = |p| {
        part(
            m0,
            "board",
            REQUESTS,
            MetricKind::Counter,
            "{request}",
            &[],
            p,
        )
    };
    let updown = |p| {
        part(
            m0,
            "board",
            CONNECTIONS,
            MetricKind::UpDown,
            "{connection}",
            &[],
            p,
        )
    };

    // The first batch: two parts of the same gauge minute (merged in Rust before the
    // upsert), the first parts of the other series, and two more gauge series.
    let mut first = batch_of("agent-m");
    first.metrics = vec![
        gauge(m0, (2, 1.0, 0.25, 0.75, 0.75, m0 + 30 * NS)),
        counter((3, 10.0, 100.0, 110.0, 110.0, m0 + 50 * NS)),
        gauge(m0, (1, 0.5, 0.5, 0.5, 0.5, m0 + 40 * NS)),
        updown((2, 7.0, 3.0, 4.0, 4.0, m0 + 20 * NS)),
        histogram(m0, [30, 30, 5, 0], 65, 1000.0, 1.0, 35.0),
        part(
            m0,
            "board",
            CPU,
            MetricKind::Gauge,
            "1",
            &[("state", "system")],
            (1, 0.125, 0.125, 0.125, 0.125, m0 + NS),
        ),
        part(
            m0,
            "auth",
            CPU,
            MetricKind::Gauge,
            "1",
            &user,
            (1, 0.5, 0.5, 0.5, 0.5, m0 + NS),
        ),
        // Saw nothing: merges as nothing.
        part(
            m0,
            "board",
            "empty.gauge",
            MetricKind::Gauge,
            "1",
            &[],
            (0, 0.0, 0.0, 0.0, 0.0, 0),
        ),
    ];
    // The second: later parts of the same minute, and the next minute of the gauge.
    let mut second = batch_of("agent-m");
    second.metrics = vec![
        gauge(m0, (1, 0.5, 0.125, 0.5, 0.125, m0 + 45 * NS)),
        gauge(m1, (4, 4.0, 0.5, 1.5, 1.0, m1 + 10 * NS)),
        counter((2, 5.0, 110.0, 115.0, 115.0, m0 + 59 * NS)),
        // An earlier `last` does not replace the later one.
        updown((1, 2.0, 2.0, 2.0, 2.0, m0 + 10 * NS)),
        histogram(m0, [20, 10, 5, 0], 35, 500.0, 3.0, 40.0),
    ];
    // The counter did not move in the last flush: a part that counted nothing brings its last
    // value only, its min and max (zeros) narrow nothing.
    let mut late = batch_of("agent-m");
    late.metrics = vec![counter((0, 0.0, 0.0, 0.0, 118.0, m0 + 59_500_000_000))];
    // Another agent reporting the same counter series: its own row, merged when read.
    let mut other = batch_of("agent-n");
    other.metrics = vec![counter((1, 1.0, 115.0, 116.0, 116.0, m0 + 5 * NS))];

    let out = post(&c, &first).await;
    assert_eq!((out.status.as_str(), out.metric_points), ("stored", 6));
    let out = post(&c, &second).await;
    assert_eq!((out.status.as_str(), out.metric_points), ("stored", 5));
    // The same batches again (a retry, a spool replay): stored once.
    for b in [&second, &first] {
        let again = post(&c, b).await;
        assert_eq!(
            (again.status.as_str(), again.metric_points),
            ("duplicate", 0)
        );
    }
    assert_eq!(post(&c, &late).await.metric_points, 1);
    assert_eq!(post(&c, &other).await.metric_points, 1);

    let (from, to) = (m0 / 1_000_000, (m1 + MINUTE) / 1_000_000);
    let series = |name: &str, extra: &str| {
        format!("/api/v1/metrics?name={name}&from={from}&to={to}&step=60{extra}")
    };

    // Gauge: the mean per step, with min, max and count; series by service, instance and
    // attributes.
    let (status, v) = get(&c, &series(CPU, "&service=board")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["step_seconds"], 60);
    assert_eq!(v["truncated"], false);
    assert_eq!(
        v["series"],
        json!([
            {
                "service": "board", "instance": "i-1", "attributes": {"state": "system"},
                "unit": "1", "kind": "gauge",
                "points": [{"t": from, "value": 0.125, "min": 0.125, "max": 0.125, "count": 1}]
            },
            {
                "service": "board", "instance": "i-1", "attributes": {"state": "user"},
                "unit": "1", "kind": "gauge",
                "points": [
                    // (1.0 + 0.5 + 0.5) / 4
                    {"t": from, "value": 0.5, "min": 0.125, "max": 0.75, "count": 4},
                    {"t": from + 60_000, "value": 1.0, "min": 0.5, "max": 1.5, "count": 4}
                ]
            }
        ])
    );
    // Every service; a 90 s step is rounded up to 120 s: both minutes in one point.
    let (_, v) = get(
        &c,
        &format!("/api/v1/metrics?name={CPU}&from={from}&to={to}&step=90s"),
    )
    .await;
    assert_eq!(v["step_seconds"], 120);
    let services: Vec<&str> = v["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert_eq!(services, ["auth", "board", "board"]);
    assert_eq!(
        v["series"][2]["points"],
        json!([{"t": from, "value": 0.75, "min": 0.125, "max": 1.5, "count": 8}])
    );

    // Counter: the increase, both agents' rows merged.
    let (_, v) = get(&c, &series(REQUESTS, "")).await;
    assert_eq!(
        v["series"][0]["points"],
        json!([{"t": from, "value": 16.0, "min": 100.0, "max": 116.0, "count": 6}])
    );
    assert_eq!(v["series"][0]["unit"], "{request}");
    assert_eq!(v["series"][0]["kind"], "counter");

    // Up-down: the last value (the part with the later last_ns), min and max over the minute.
    let (_, v) = get(&c, &series(CONNECTIONS, "")).await;
    assert_eq!(
        v["series"][0]["points"],
        json!([{"t": from, "value": 4.0, "min": 2.0, "max": 4.0, "count": 3}])
    );

    // Histogram: buckets added, [50, 40, 10, 0] over bounds 10, 20, 40: the 95th observation
    // is halfway through (20, 40] = 30; the mean is 1500 / 100.
    let (_, v) = get(&c, &series(DURATION, "")).await;
    assert_eq!(
        v["series"][0],
        json!({
            "service": "board", "instance": "i-1", "attributes": {"http.route": "/timetable"},
            "unit": "ms", "kind": "histogram",
            "points": [{"t": from, "value": 15.0, "min": 1.0, "max": 40.0, "count": 100,
                        "p95": 30.0}]
        })
    );

    // Nothing of a name never sent (nor of the empty part).
    let (_, v) = get(&c, &series("empty.gauge", "")).await;
    assert_eq!(v["series"], json!([]));

    // The list of metrics.
    let (status, v) = get(&c, &format!("/api/v1/metrics/names?from={from}&to={to}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["metrics"],
        json!([
            {"name": CONNECTIONS, "kind": "updown", "unit": "{connection}", "series": 1},
            {"name": DURATION, "kind": "histogram", "unit": "ms", "series": 1},
            {"name": REQUESTS, "kind": "counter", "unit": "{request}", "series": 1},
            {"name": CPU, "kind": "gauge", "unit": "1", "series": 3},
        ])
    );
    let (_, v) = get(&c, "/api/v1/metrics/names?service=auth").await;
    assert_eq!(
        v["metrics"],
        json!([{"name": CPU, "kind": "gauge", "unit": "1", "series": 1}])
    );

    // Bad parameters: 400 naming the parameter, with the reason.
    for (path, field) in [
        ("/api/v1/metrics".to_owned(), "name"),
        (format!("/api/v1/metrics?name={CPU}&step=soon"), "step"),
        (format!("/api/v1/metrics?name={CPU}&from=yesterday"), "from"),
        (
            format!("/api/v1/metrics?name={CPU}&from={to}&to={from}"),
            "from",
        ),
        (format!("/api/v1/metrics?name={CPU}&from=0&step=60"), "step"),
        ("/api/v1/metrics/names?to=last-week".to_owned(), "to"),
    ] {
        let (status, v) = get(&c, &path).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
        assert_eq!(v["reason"], "bad_query");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    c.stop().await;
}

fn record(
    time_ns: i64,
    service: &str,
    severity: (i32, &str),
    body: &str,
    trace: Option<(u8, u8)>,
) -> LogRecord {
    LogRecord {
        time_ns,
        service: service.into(),
        instance: "i-1".into(),
        severity_number: severity.0,
        severity_text: severity.1.into(),
        body: body.into(),
        trace_id: trace.map(|(t, _)| vec![t; 16]).unwrap_or_default(),
        span_id: trace.map(|(_, s)| vec![s; 8]).unwrap_or_default(),
        attributes: attrs(&[("code.function", "pay")]),
    }
}

#[tokio::test]
async fn logs_read_back_by_trace_and_by_service() {
    let (c, _db) = start_fresh().await;
    let now = stormwatch_store::now_ns();
    // On a microsecond (what is stored), five minutes ago.
    let t0 = (now - 300 * NS).div_euclid(1_000) * 1_000;
    let mut b = batch_of("agent-l");
    b.logs = vec![
        record(
            t0,
            "board",
            (17, "ERROR"),
            "payment failed",
            Some((0xab, 1)),
        ),
        record(t0 + NS, "board", (13, "WARNING"), "slow partner", None),
        record(
            t0 + 2 * NS,
            "board",
            (9, "info"),
            "retrying",
            Some((0xab, 2)),
        ),
        record(t0 + 3 * NS, "auth", (21, "FATAL"), "down", None),
    ];
    assert_eq!(post(&c, &b).await.logs, 4);
    let again = post(&c, &b).await;
    assert_eq!((again.status.as_str(), again.logs), ("duplicate", 0));

    // A trace's records, oldest first, over every day kept.
    let trace = "ab".repeat(16);
    let (status, v) = get(&c, &format!("/api/v1/logs?trace_id={trace}")).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["logs"],
        json!([
            {
                "time_ns": t0, "service": "board", "instance": "i-1", "severity_number": 17,
                "severity_text": "ERROR", "severity": "ERROR", "body": "payment failed",
                "trace_id": trace, "span_id": "0101010101010101",
                "attributes": {"code.function": "pay"}
            },
            {
                "time_ns": t0 + 2 * NS, "service": "board", "instance": "i-1",
                "severity_number": 9, "severity_text": "info", "severity": "INFO",
                "body": "retrying", "trace_id": trace, "span_id": "0202020202020202",
                "attributes": {"code.function": "pay"}
            }
        ])
    );

    // A service's records, newest first (default: the last hour), at a least severity given
    // by name or number.
    let bodies = |v: &Value| -> Vec<String> {
        v["logs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["body"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = get(&c, "/api/v1/logs?service=board").await;
    assert_eq!(bodies(&v), ["retrying", "slow partner", "payment failed"]);
    let (_, v) = get(&c, "/api/v1/logs?service=board&severity=warn").await;
    assert_eq!(bodies(&v), ["slow partner", "payment failed"]);
    assert_eq!(v["logs"][0]["severity"], "WARN");
    assert!(v["logs"][0].get("trace_id").is_none());
    let (_, v) = get(&c, "/api/v1/logs?service=board&severity=17&limit=1").await;
    assert_eq!(bodies(&v), ["payment failed"]);
    let (_, v) = get(&c, "/api/v1/logs?service=auth&severity=FATAL").await;
    assert_eq!(bodies(&v), ["down"]);
    // A window that ends before them: none.
    let before = (t0 - NS) / 1_000_000;
    let (_, v) = get(&c, &format!("/api/v1/logs?service=board&to={before}")).await;
    assert_eq!(v["logs"], json!([]));
    // RFC 3339 works as in every other endpoint.
    let (status, _) = get(
        &c,
        "/api/v1/logs?service=board&from=2026-01-01T00:00:00Z&to=2026-01-01T01:00:00Z",
    )
    .await;
    assert_eq!(status, 200);

    for (path, field) in [
        ("/api/v1/logs", "service"),
        ("/api/v1/logs?severity=warn", "service"),
        ("/api/v1/logs?trace_id=zz", "trace_id"),
        ("/api/v1/logs?service=board&severity=loud", "severity"),
        ("/api/v1/logs?service=board&severity=25", "severity"),
        ("/api/v1/logs?service=board&limit=0", "limit"),
        ("/api/v1/logs?service=board&limit=many", "limit"),
        ("/api/v1/logs?service=board&from=soon", "from"),
    ] {
        let (status, v) = get(&c, path).await;
        assert_eq!(
            (status, v["field"].as_str()),
            (400, Some(field)),
            "{path}: {v}"
        );
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    let (status, v) = get(&c, &format!("/api/v1/logs?trace_id={trace}&service=board")).await;
    assert_eq!(status, 400, "{v}");
    c.stop().await;
}

#[tokio::test]
async fn metrics_and_logs_need_a_read_token_like_the_other_reads() {
    const READ: &str = "read-token-for-scripts-0123";
    let db = stormwatch_testkit::fresh_database().await;
    let mut config = Config::for_tests(&db, TOKEN);
    config.read_tokens = vec![READ.into()];
    let c = start(config).await;
    let http = reqwest::Client::new();
    for path in [
        "/api/v1/metrics?name=x",
        "/api/v1/metrics/names",
        "/api/v1/logs?service=board",
    ] {
        let r = http.get(c.endpoint(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = http
            .get(c.endpoint(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            403,
            "{path}: an ingest token is not a read token"
        );
        let r = http
            .get(c.endpoint(path))
            .bearer_auth(READ)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    c.stop().await;
}

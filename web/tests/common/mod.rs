//! Shared by the web tests: a migrated database seeded with realistic data, and the router.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use stormwatch_model::{Batch, DbRole, FailureClass, HostSample, ProbeSample};
use stormwatch_store::{Store, StoreOptions};
use stormwatch_testkit::sample;
use tower::ServiceExt;

pub const NS: i64 = 1_000_000_000;

/// A migrated, empty store over a fresh database.
pub async fn empty_store() -> Arc<Store> {
    let url = stormwatch_testkit::fresh_database().await;
    let store = Store::connect(&StoreOptions {
        url,
        max_connections: 4,
        retention_days: 7,
    })
    .await
    .expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

/// Probe samples for `db` every 30 s over the last `minutes`, refused during the window
/// `[refused_from, refused_to)` minutes ago, and a replica lagging 12 s in the last 5 minutes.
pub fn probes(now_ns: i64, minutes: i64) -> Vec<ProbeSample> {
    let mut out = Vec::new();
    for i in 0..minutes * 2 {
        let t = now_ns - i * 30 * NS;
        let ago_min = i / 2;
        let refused = (20..32).contains(&ago_min);
        out.push(ProbeSample {
            time_ns: t,
            database: "main".into(),
            engine: "postgres".into(),
            role: DbRole::Primary as i32,
            connect_us: (!refused).then_some(2_000 + (i % 7) * 300),
            query_us: (!refused).then_some(400),
            failure: if refused {
                FailureClass::Refused
            } else {
                FailureClass::None
            } as i32,
            failure_message: if refused {
                "connection refused".into()
            } else {
                String::new()
            },
            ..Default::default()
        });
        out.push(ProbeSample {
            time_ns: t,
            database: "main-replica".into(),
            engine: "postgres".into(),
            role: DbRole::Replica as i32,
            connect_us: Some(1_800),
            query_us: Some(300),
            failure: FailureClass::None as i32,
            lag_seconds: Some(if ago_min < 5 { 12.0 } else { 0.4 }),
            lag_bytes: Some(1024),
            ..Default::default()
        });
    }
    out
}

/// Host samples for two agents, every minute over the last `minutes`.
pub fn hosts(agent: &str, now_ns: i64, minutes: i64) -> Vec<HostSample> {
    (0..minutes)
        .map(|i| HostSample {
            time_ns: now_ns - i * 60 * NS,
            host: agent.into(),
            cpu_percent: 20.0 + (i % 10) as f64 * 5.0,
            mem_used_bytes: (2 << 30) + (i as u64 % 5) * (100 << 20),
            mem_total_bytes: 8 << 30,
            load1: 1.5,
            net_rx_bytes_per_s: 100_000 + i as u64 * 1000,
            net_tx_bytes_per_s: 50_000,
            process_count: 120,
            ..Default::default()
        })
        .collect()
}

/// Seeds two agents' worth of spans (with aggregates), probes and host samples, all within
/// the last hour. Returns a trace id (hex) that was stored.
pub async fn seed(store: &Store) -> String {
    let now = stormwatch_store::now_ns();
    let mut first_trace = String::new();
    for (agent, seq) in [("agent-a", 1u64), ("agent-b", 2u64)] {
        let mut b: Batch = sample::batch(agent, seq, 400, now);
        if first_trace.is_empty() {
            first_trace = stormwatch_model::hexid::encode(&b.spans[0].trace_id);
        }
        b.hosts = hosts(agent, now, 60);
        if seq == 1 {
            b.probes = probes(now, 60);
        }
        store.store_batch(&b, now).await.expect("store batch");
    }
    first_trace
}

/// GET `path` through the open router; status and body.
pub async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let res = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = axum::body::to_bytes(res.into_body(), 64 << 20)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// Every `<svg>…</svg>` in a page, each parsed as XML (panics when one is malformed).
pub fn svgs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<svg") {
        let end = rest[start..].find("</svg>").expect("closed svg") + start + "</svg>".len();
        let svg = &rest[start..end];
        roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("malformed SVG ({e}): {svg}"));
        out.push(svg.to_owned());
        rest = &rest[end..];
    }
    out
}

/// Counts elements named `tag` inside the element whose `class` attribute is `class`.
pub fn marks(svg: &str, class: &str, tag: &str) -> usize {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.attribute("class") == Some(class))
        .map(|g| g.descendants().filter(|n| n.has_tag_name(tag)).count())
        .sum()
}

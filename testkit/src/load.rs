//! A day of traffic for the benchmarks: `total` spans spread over the last `hours` hours
//! across five services, each batch with the per-minute aggregates an agent would ship for
//! it, stored through [`Store::store_batch`] (the collector's own write path).

use std::time::{Duration, Instant};

use stormwatch_model::{Batch, DependencyClass, SpanFlag, SpanStatus, WIRE_VERSION};
use stormwatch_store::Store;

const NS: i64 = 1_000_000_000;
/// The services the spans belong to.
pub const SERVICES: &[&str] = &["board", "auth", "search", "media", "notify"];

/// A cheap deterministic hash for spreading values.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Spans `first..first + n` of `total`, with their aggregates.
pub fn batch(seq: u64, first: u64, n: u64, total: u64, now: i64, hours: i64) -> Batch {
    let window = hours * 3_600 * NS;
    let spans: Vec<_> = (first..first + n)
        .map(|i| {
            let h = mix(i);
            // Spread evenly in time, newest at `now - 1 s`.
            let start = now - NS - window + (window / total as i64) * i as i64;
            // Log-uniform 0.3–300 ms, with a slow tail.
            let dur_ms = 0.3 * 10f64.powf((h % 1000) as f64 / 333.0);
            let mut s = crate::sample::span(i / 4, i % 4, start, (dur_ms * 1e6) as i64);
            // One service per trace, so its calls join its server span (entry calls).
            s.service = SERVICES[(mix(i / 4) >> 20) as usize % SERVICES.len()].into();
            let error = h.is_multiple_of(50);
            s.status = if error {
                SpanStatus::Error
            } else {
                SpanStatus::Ok
            } as i32;
            s.flags = match (error, dur_ms > 100.0) {
                (true, _) => vec![SpanFlag::Error as i32],
                (false, true) => vec![SpanFlag::Slow as i32],
                _ => vec![],
            };
            if s.dependency_class() == DependencyClass::HttpServer {
                s.http_status = if error { 503 } else { 200 };
            }
            s
        })
        .collect();
    Batch {
        version: WIRE_VERSION,
        agent_id: "bench".into(),
        instance: "bench-1".into(),
        sequence: seq,
        sent_at_ns: now,
        aggregates: crate::sample::aggregates_of(&spans),
        entry_calls: crate::sample::entry_calls_of(&spans),
        spans,
        ..Default::default()
    }
}

/// Stores `total` spans over the last `hours` hours in batches of 100k, printing progress to
/// stderr; returns how long it took.
pub async fn fill(store: &Store, total: u64, hours: i64, now: i64) -> Duration {
    let t = Instant::now();
    let per_batch = 100_000u64;
    let mut first = 0;
    let mut seq = 0;
    while first < total {
        let n = per_batch.min(total - first);
        let b = batch(seq, first, n, total, now, hours);
        store
            .store_batch(&b, now)
            .await
            .expect("store a bench batch");
        // As the collector does every second.
        store
            .fold_rollups(now)
            .await
            .expect("fold the rollup deltas");
        first += n;
        seq += 1;
        if seq % 10 == 0 {
            eprintln!(
                "filled {first} spans ({:.0} spans/s)",
                first as f64 / t.elapsed().as_secs_f64()
            );
        }
    }
    t.elapsed()
}

/// The names of issue #19's real shape (20 services, 12 resources their routes and tables are
/// named after), shared by the real-shape ingest and page benchmarks.
pub mod real {
    /// The 20 services.
    pub const SERVICES: [&str; 20] = [
        "checkout",
        "cart",
        "catalog",
        "search",
        "pricing",
        "inventory",
        "orders",
        "payments",
        "shipping",
        "users",
        "auth",
        "reviews",
        "recommendations",
        "notifications",
        "media",
        "ads",
        "loyalty",
        "fraud",
        "tax",
        "gateway",
    ];
    /// What routes, tables and statements are about.
    pub const RESOURCES: [&str; 12] = [
        "orders",
        "items",
        "customers",
        "products",
        "carts",
        "sessions",
        "invoices",
        "addresses",
        "coupons",
        "reviews",
        "shipments",
        "accounts",
    ];
}

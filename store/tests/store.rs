//! The store against a real PostgreSQL (see stormwatch-testkit).

use stormwatch_model::{DependencyClass, Span};
use stormwatch_store::{AggregateFilter, SpanFilter, Store, StoreOptions};
use stormwatch_testkit::{fresh_database, sample};

const NS: i64 = 1_000_000_000;

async fn store_with(url: &str, retention_days: u32) -> Store {
    let store = Store::connect(&StoreOptions {
        url: url.into(),
        max_connections: 4,
        retention_days,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    store
}

fn all_spans(now: i64) -> SpanFilter {
    SpanFilter {
        from_ns: 0,
        to_ns: now + 86_400 * NS,
        limit: 1_000_000,
        ..Default::default()
    }
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let url = fresh_database().await;
    let opts = StoreOptions {
        url,
        max_connections: 2,
        retention_days: 7,
    };
    let (a, b) = tokio::join!(Store::connect(&opts), Store::connect(&opts));
    let (a, b) = (a.unwrap(), b.unwrap());
    let (x, y) = tokio::join!(a.migrate(), b.migrate());
    let applied = x.unwrap() + y.unwrap();
    assert_eq!(applied, stormwatch_store::migrate::MIGRATIONS.len());
    assert_eq!(a.migrate().await.unwrap(), 0);
}

#[tokio::test]
async fn batch_round_trip_and_exactly_once() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    let batch = sample::batch("agent-a", 1, 400, now);
    let out = store.store_batch(&batch, now).await.unwrap();
    assert!(!out.duplicate);
    assert_eq!(out.spans, 400);
    assert_eq!(out.samples, 1);

    let again = store.store_batch(&batch, now).await.unwrap();
    assert!(again.duplicate, "a resent batch must not be stored twice");

    let mut stored = store.spans(&all_spans(now)).await.unwrap();
    assert_eq!(stored.len(), 400);
    stored.sort_by_key(|s| (s.start_ns, s.span_id.clone()));
    let mut sent: Vec<Span> = batch.spans.clone();
    sent.sort_by_key(|s| (s.start_ns, s.span_id.clone()));
    assert_eq!(stored, sent, "spans read back must equal the spans sent");

    let trace = store.trace(&batch.spans[5].trace_id).await.unwrap();
    assert_eq!(trace.len(), 4);
    assert!(trace.iter().all(|s| s.trace_id == batch.spans[5].trace_id));

    // Aggregates: every span counted once, percentiles from the merged histograms.
    let series = store
        .aggregate_series(&AggregateFilter {
            service: Some("board".into()),
            from_s: now / NS - 3_600,
            to_s: now / NS + 60,
            step_s: 3_660,
            ..Default::default()
        })
        .await
        .unwrap();
    let total: u64 = series.iter().map(|p| p.count).sum();
    assert_eq!(total, 400);
    let errors: u64 = series.iter().map(|p| p.errors).sum();
    assert_eq!(
        errors,
        batch.spans.iter().filter(|s| s.is_error()).count() as u64
    );
    let p = series.iter().find(|p| p.count > 0).unwrap();
    let mut durations: Vec<i64> = batch.spans.iter().map(|s| s.duration_ns).collect();
    durations.sort_unstable();
    let exact_p95 = durations[(0.95 * 399.0) as usize] as f64 / 1e6;
    let err = (p.p95_ms.unwrap() - exact_p95).abs() / exact_p95;
    assert!(
        err <= 0.02,
        "p95 {} vs exact {exact_p95}",
        p.p95_ms.unwrap()
    );
    assert!(p.http_503 > 0 && p.http_503 == p.http_5xx);

    let services = store
        .services(now / NS - 3_600, now / NS + 60)
        .await
        .unwrap();
    assert_eq!(services.len(), 1);
    assert_eq!(services[0].count, 400);
}

#[tokio::test]
async fn aggregates_merge_across_batches() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    // Two agents report the same minute and key: rows merge, nothing is lost.
    for (agent, seq) in [("a", 1), ("b", 1), ("a", 2)] {
        store
            .store_batch(&sample::batch(agent, seq, 100, now), now)
            .await
            .unwrap();
    }
    let series = store
        .aggregate_series(&AggregateFilter {
            class: Some(DependencyClass::Redis),
            from_s: now / NS - 3_600,
            to_s: now / NS + 60,
            step_s: 60,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(series.iter().map(|p| p.count).sum::<u64>(), 75);
    // The merged histograms hold every span of the three batches.
    let whole = store
        .aggregate_series(&AggregateFilter {
            class: Some(DependencyClass::Redis),
            from_s: now / NS - 3_600,
            to_s: now / NS + 60,
            step_s: 3_660,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut durations: Vec<i64> = [("a", 1), ("b", 1), ("a", 2)]
        .iter()
        .flat_map(|(agent, seq)| sample::batch(agent, *seq, 100, now).spans)
        .filter(|s| s.dependency_class() == DependencyClass::Redis)
        .map(|s| s.duration_ns)
        .collect();
    durations.sort_unstable();
    let p = whole.iter().find(|p| p.count > 0).unwrap();
    assert_eq!(p.count, 75);
    for (q, got) in [(0.5, p.p50_ms), (0.99, p.p99_ms)] {
        let exact = durations[(q * 74.0) as usize] as f64 / 1e6;
        let err = (got.unwrap() - exact).abs() / exact;
        assert!(err <= 0.02, "q{q}: {got:?} vs exact {exact}");
    }
}

#[tokio::test]
async fn retention_drops_old_partitions() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    let three_days_ago = now - 3 * 86_400 * NS;
    let batch = sample::batch("agent-a", 1, 40, three_days_ago);
    assert_eq!(store.store_batch(&batch, now).await.unwrap().spans, 40);
    store.create_partitions_ahead(now).await.unwrap();

    // Nothing is old enough yet.
    assert!(store.apply_retention(now).await.unwrap().is_empty());
    assert_eq!(store.spans(&all_spans(now)).await.unwrap().len(), 40);

    // Five days later the partition of three days ago is eight days old: dropped.
    let later = now + 5 * 86_400 * NS;
    let dropped = store.apply_retention(later).await.unwrap();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(dropped.iter().any(|n| n.starts_with("sw_spans_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_aggregates_p")));
    assert_eq!(store.spans(&all_spans(now)).await.unwrap().len(), 0);

    // A span older than the retention window is not stored, and is reported as expired.
    let ancient = sample::batch("agent-a", 2, 8, now - 30 * 86_400 * NS);
    let out = store.store_batch(&ancient, now).await.unwrap();
    assert_eq!((out.spans, out.expired_spans), (0, 8));
}

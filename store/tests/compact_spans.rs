//! The compact span layout of migration 0022 (labels as ids into `sw_labels`, enums as wire
//! numbers, attributes zstd-compressed with a trained dictionary) against a real PostgreSQL,
//! next to rows of the old layout (text and jsonb columns).

use std::collections::BTreeMap;

use stormwatch_model::{Batch, DependencyClass, KeepReason, Span, SpanFlag, SpanKind, SpanStatus};
use stormwatch_store::{SlowOrder, SpanFilter};
use stormwatch_testkit::{client_at, fresh_database, sample, store_at};

const NS: i64 = 1_000_000_000;

fn window(now: i64) -> SpanFilter {
    SpanFilter {
        from_ns: 0,
        to_ns: now + 86_400 * NS,
        limit: 1_000_000,
        ..Default::default()
    }
}

fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by_key(|s| (s.start_ns, s.span_id.clone()));
    spans
}

/// Attributes that differ from span to span, as real ones do (ids in paths, user agents).
fn attributes_of(i: u64) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "http.route".to_owned(),
            format!("/boards/{{id}}/posts/{}", i % 7),
        ),
        (
            "url.path".to_owned(),
            format!("/boards/{}/posts/{}", i * 31 % 977, i % 7),
        ),
        (
            "user_agent.original".to_owned(),
            format!("Mozilla/5.0 (X11; Linux x86_64) Firefox/{}.0", 100 + i % 23),
        ),
        (
            "client.address".to_owned(),
            format!("10.0.{}.{}", i % 13, i % 251),
        ),
        ("thread.id".to_owned(), (i % 64).to_string()),
    ])
}

/// A batch whose spans set every field, with varied labels and attributes.
fn full_batch(agent: &str, sequence: u64, n: usize, now: i64) -> Batch {
    let mut batch = sample::batch(agent, sequence, n, now);
    for (i, s) in batch.spans.iter_mut().enumerate() {
        let i = i as u64 + sequence * 100_000;
        s.service = format!("svc-{}", i % 3);
        s.instance = format!("{agent}-pod-{}", i % 2);
        s.operation = format!("{} #{}", s.operation, i % 5);
        s.kind = [SpanKind::Server, SpanKind::Client, SpanKind::Producer][i as usize % 3] as i32;
        s.status = SpanStatus::Error as i32;
        s.status_message = format!("failed {}", i % 4);
        s.http_status = 500 + (i % 4) as u32;
        s.peer = format!("peer-{}:5432", i % 4);
        s.db_system = "postgresql".into();
        s.db_role = 2;
        s.statement = format!("SELECT * FROM t{} WHERE id = ?", i % 6);
        s.rows = Some(i as i64);
        s.attributes = attributes_of(i);
        s.kept = KeepReason::Slow as i32;
        s.flags = vec![SpanFlag::Slow as i32, SpanFlag::Error as i32];
        s.replica_lag_ms = Some(7);
    }
    batch
}

#[tokio::test]
async fn every_field_round_trips_through_the_compact_layout() {
    let url = fresh_database().await;
    let store = store_at(&url).await;
    let now = stormwatch_store::now_ns();
    let mut batch = full_batch("agent-a", 1, 60, now);
    // Empty labels and attributes, and no parent, are stored as NULL and read back empty.
    batch.spans[1].peer.clear();
    batch.spans[1].db_system.clear();
    batch.spans[1].statement.clear();
    batch.spans[1].attributes.clear();
    batch.spans[1].rows = None;
    batch.spans[1].replica_lag_ms = None;
    batch.spans[1].status_message.clear();
    batch.spans[1].http_status = 0;
    batch.spans[1].flags.clear();
    batch.spans[4].parent_span_id.clear();
    store.store_batch(&batch, now).await.unwrap();

    let stored = store.spans(&window(now)).await.unwrap();
    assert_eq!(sorted(stored), sorted(batch.spans.clone()));
    let trace = store.trace(&batch.spans[5].trace_id).await.unwrap();
    let expected: Vec<Span> = batch
        .spans
        .iter()
        .filter(|s| s.trace_id == batch.spans[5].trace_id)
        .cloned()
        .collect();
    assert_eq!(sorted(trace), sorted(expected));

    // Every row is in the compact layout: no text labels, no jsonb.
    let client = client_at(&url).await;
    let old: i64 = client
        .query_one(
            "SELECT count(*) FROM sw_spans
              WHERE service IS NOT NULL OR instance IS NOT NULL OR operation IS NOT NULL
                 OR kind IS NOT NULL OR class IS NOT NULL OR peer IS NOT NULL
                 OR statement IS NOT NULL OR attributes IS NOT NULL OR kept IS NOT NULL
                 OR service_id IS NULL OR kind_no IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old, 0);

    // Filters match by id; a label never stored matches nothing.
    let f = SpanFilter {
        service: Some("svc-1".into()),
        peer: Some("peer-2:5432".into()),
        ..window(now)
    };
    let want: Vec<Span> = batch
        .spans
        .iter()
        .filter(|s| s.service == "svc-1" && s.peer == "peer-2:5432")
        .cloned()
        .collect();
    assert!(!want.is_empty());
    assert_eq!(sorted(store.spans(&f).await.unwrap()), sorted(want.clone()));
    let points = store.scatter_points(&f).await.unwrap();
    assert_eq!(points.len(), want.len());
    let slow = store.slow_spans(&f, SlowOrder::Duration).await.unwrap();
    assert_eq!(slow.len(), want.len());
    assert!(slow
        .iter()
        .all(|s| s.service == "svc-1" && s.peer == "peer-2:5432" && !s.operation.is_empty()));
    let nobody = SpanFilter {
        service: Some("never-seen".into()),
        ..window(now)
    };
    assert!(store.spans(&nobody).await.unwrap().is_empty());
    assert!(store.scatter_points(&nobody).await.unwrap().is_empty());
    let by_class = SpanFilter {
        class: Some(DependencyClass::Db),
        ..window(now)
    };
    assert_eq!(
        store.spans(&by_class).await.unwrap().len(),
        batch
            .spans
            .iter()
            .filter(|s| s.dependency_class() == DependencyClass::Db)
            .count()
    );
    // Ordered by the label's value, not its id.
    let by_service = store
        .slow_spans(&window(now), SlowOrder::Service)
        .await
        .unwrap();
    let services: Vec<&str> = by_service.iter().map(|s| s.service.as_str()).collect();
    let mut in_order = services.clone();
    in_order.sort_unstable();
    assert_eq!(services, in_order);
    assert_eq!(by_service.len(), batch.spans.len());
}

#[tokio::test]
async fn rows_of_the_old_layout_are_still_read() {
    let url = fresh_database().await;
    let store = store_at(&url).await;
    let now = stormwatch_store::now_ns();
    let batch = full_batch("agent-a", 1, 8, now);
    store.store_batch(&batch, now).await.unwrap();
    // A span as stored before migration 0022: text labels and enums, jsonb attributes.
    let start = now - 30 * NS;
    let client = client_at(&url).await;
    client
        .execute(
            "INSERT INTO sw_spans (start_ns, duration_ns, trace_id, span_id, parent_span_id,
                 service, instance, operation, kind, class, is_error, status_message,
                 http_status, peer, db_system, db_role, statement, rows, attributes, kept,
                 flags, replica_lag_ms)
             VALUES ($1, 5000000, '\\x0102030405060708090a0b0c0d0e0f10', '\\x0000000000000009',
                 NULL, 'legacy', 'old-1', 'SELECT users', 'client', 'db', true, 'timeout',
                 NULL, 'peer-2:5432', 'mysql', 'primary', 'SELECT * FROM users WHERE id = ?',
                 3, '{\"db.name\": \"app\"}', 'error', 2, 12)",
            &[&start],
        )
        .await
        .unwrap();
    let old = Span {
        trace_id: (1..=16).collect(),
        span_id: vec![0, 0, 0, 0, 0, 0, 0, 9],
        parent_span_id: vec![],
        service: "legacy".into(),
        instance: "old-1".into(),
        operation: "SELECT users".into(),
        kind: SpanKind::Client as i32,
        class: DependencyClass::Db as i32,
        start_ns: start,
        duration_ns: 5_000_000,
        status: SpanStatus::Error as i32,
        status_message: "timeout".into(),
        http_status: 0,
        peer: "peer-2:5432".into(),
        db_system: "mysql".into(),
        db_role: 1,
        statement: "SELECT * FROM users WHERE id = ?".into(),
        rows: Some(3),
        attributes: BTreeMap::from([("db.name".to_owned(), "app".to_owned())]),
        kept: KeepReason::Error as i32,
        flags: vec![1],
        replica_lag_ms: Some(12),
    };
    assert_eq!(store.trace(&old.trace_id).await.unwrap(), vec![old.clone()]);
    let mut all = batch.spans.clone();
    all.push(old.clone());
    assert_eq!(
        sorted(store.spans(&window(now)).await.unwrap()),
        sorted(all.clone())
    );

    // Filters by text for old rows, by id for new ones: both in one read.
    let by_peer = SpanFilter {
        peer: Some("peer-2:5432".into()),
        ..window(now)
    };
    let want: Vec<Span> = all
        .iter()
        .filter(|s| s.peer == "peer-2:5432")
        .cloned()
        .collect();
    assert!(want.len() >= 2);
    assert_eq!(
        sorted(store.spans(&by_peer).await.unwrap()),
        sorted(want.clone())
    );
    assert_eq!(
        store.scatter_points(&by_peer).await.unwrap().len(),
        want.len()
    );
    let legacy = SpanFilter {
        service: Some("legacy".into()),
        class: Some(DependencyClass::Db),
        ..window(now)
    };
    assert_eq!(store.spans(&legacy).await.unwrap(), vec![old.clone()]);
    let slow = store.slow_spans(&legacy, SlowOrder::Peer).await.unwrap();
    assert_eq!(slow.len(), 1);
    assert_eq!(
        (
            slow[0].service.as_str(),
            slow[0].class.as_str(),
            slow[0].peer.as_str()
        ),
        ("legacy", "db", "peer-2:5432")
    );
    let services: Vec<String> = store
        .slow_spans(&window(now), SlowOrder::Service)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.service)
        .collect();
    let mut in_order = services.clone();
    in_order.sort_unstable();
    assert_eq!(
        services, in_order,
        "old and new rows ordered by service together"
    );
    assert_eq!(services.len(), all.len());
}

#[tokio::test]
async fn two_collectors_on_one_database_agree_on_label_ids() {
    let url = fresh_database().await;
    let (a, b) = (store_at(&url).await, store_at(&url).await);
    let now = stormwatch_store::now_ns();
    // The same labels, met in opposite orders, at the same time.
    let first = full_batch("agent-a", 1, 400, now);
    let mut second = full_batch("agent-b", 2, 400, now);
    second.spans.reverse();
    for s in &mut second.spans {
        s.instance = s.instance.replace("agent-b", "agent-a");
    }
    let (x, y) = tokio::join!(a.store_batch(&first, now), b.store_batch(&second, now));
    assert_eq!(x.unwrap().spans, 400);
    assert_eq!(y.unwrap().spans, 400);

    let client = client_at(&url).await;
    let (labels, distinct): (i64, i64) = {
        let r = client
            .query_one(
                "SELECT count(*), count(DISTINCT (kind, value)) FROM sw_labels",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(labels, distinct, "each label stored once");
    let services: i64 = client
        .query_one("SELECT count(DISTINCT service_id) FROM sw_spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        services, 3,
        "both collectors wrote the same three service ids"
    );

    // Each reads what the other wrote, labels and all.
    let mut all = first.spans.clone();
    all.extend(second.spans.iter().cloned());
    let all = sorted(all);
    assert_eq!(sorted(a.spans(&window(now)).await.unwrap()), all);
    assert_eq!(sorted(b.spans(&window(now)).await.unwrap()), all);
    // A third store, with nothing cached, resolves the same ids.
    let c = store_at(&url).await;
    let f = SpanFilter {
        service: Some("svc-2".into()),
        ..window(now)
    };
    let want: Vec<Span> = all
        .iter()
        .filter(|s| s.service == "svc-2")
        .cloned()
        .collect();
    assert_eq!(sorted(c.spans(&f).await.unwrap()), want);
}

#[tokio::test]
async fn attributes_decode_before_and_after_the_dictionary_is_trained() {
    let url = fresh_database().await;
    let store = store_at(&url).await;
    let now = stormwatch_store::now_ns();
    use stormwatch_store::attr_dicts::{SAMPLES_PER_BATCH, TRAINING_SAMPLES};
    // Batches of 1,000 spans give SAMPLES_PER_BATCH samples each: the dictionary comes with
    // the tenth, two more batches use it.
    let sampling_batches = (TRAINING_SAMPLES / SAMPLES_PER_BATCH) as i64;
    let n = sampling_batches as usize + 2;
    let batches: Vec<Batch> = (1..=n as u64)
        .map(|seq| full_batch("agent-a", seq, 1_000, now))
        .collect();
    for b in &batches {
        store.store_batch(b, now).await.unwrap();
    }
    let client = client_at(&url).await;
    let dicts: Vec<(i16, i64)> = client
        .query(
            "SELECT attrs_dict, count(*) FROM sw_spans GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        dicts.len(),
        2,
        "rows before and after the dictionary: {dicts:?}"
    );
    // The batch that brings the samples to TRAINING_SAMPLES is the first compressed with it.
    let plain_rows = (sampling_batches - 1) * 1_000;
    assert_eq!(dicts[0], (0, plain_rows));
    assert!(dicts[1].0 > 0);
    assert_eq!(dicts[1].1, n as i64 * 1_000 - plain_rows);
    let (stored_dicts, plain, with_dict): (i64, f64, f64) = {
        let r = client
            .query_one(
                "SELECT (SELECT count(*) FROM sw_attr_dicts),
                        avg(length(attrs)) FILTER (WHERE attrs_dict = 0)::float8,
                        avg(length(attrs)) FILTER (WHERE attrs_dict > 0)::float8
                   FROM sw_spans",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(stored_dicts, 1);
    assert!(
        with_dict < plain / 2.0,
        "the dictionary compresses better: {with_dict:.1} against {plain:.1} bytes"
    );

    let all: Vec<Span> = batches.iter().flat_map(|b| b.spans.clone()).collect();
    assert_eq!(
        sorted(store.spans(&window(now)).await.unwrap()),
        sorted(all.clone())
    );
    // A collector started later reads both, and compresses with the stored dictionary.
    let later = store_at(&url).await;
    assert_eq!(
        sorted(later.spans(&window(now)).await.unwrap()),
        sorted(all)
    );
    let next = full_batch("agent-a", n as u64 + 1, 10, now);
    later.store_batch(&next, now).await.unwrap();
    let newest: Vec<i16> = client
        .query(
            "SELECT DISTINCT attrs_dict FROM sw_spans WHERE span_id = ANY($1)",
            &[&next
                .spans
                .iter()
                .map(|s| s.span_id.clone())
                .collect::<Vec<_>>()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(newest, vec![dicts[1].0]);
    assert_eq!(
        sorted(later.trace(&next.spans[0].trace_id).await.unwrap()),
        sorted(
            next.spans
                .iter()
                .filter(|s| s.trace_id == next.spans[0].trace_id)
                .cloned()
                .collect()
        )
    );
}

#[tokio::test]
async fn batches_arriving_during_the_first_training_wait_for_the_dictionary() {
    let url = fresh_database().await;
    let store = store_at(&url).await;
    let now = stormwatch_store::now_ns();
    use stormwatch_store::attr_dicts::{SAMPLES_PER_BATCH, TRAINING_SAMPLES};
    let sampling_batches = TRAINING_SAMPLES / SAMPLES_PER_BATCH;
    // Twice the batches the training samples come from, arriving together as agents do
    // after a start.
    let n = 2 * sampling_batches;
    let batches: Vec<Batch> = (1..=n as u64)
        .map(|seq| full_batch(&format!("agent-{seq}"), 1, 1_000, now))
        .collect();
    let stored =
        futures_util::future::join_all(batches.iter().map(|b| store.store_batch(b, now))).await;
    for s in stored {
        assert_eq!(s.unwrap().spans, 1_000);
    }
    let client = client_at(&url).await;
    let plain: i64 = client
        .query_one("SELECT count(*) FROM sw_spans WHERE attrs_dict = 0", &[])
        .await
        .unwrap()
        .get(0);
    // Only the batches before the one that reached the training samples go without it.
    assert!(
        plain < (sampling_batches * 1_000) as i64,
        "{plain} of {} spans stored without a dictionary",
        n * 1_000
    );
    // Every span reads back whole (the agents' spans differ only by instance).
    let by_instance = |mut v: Vec<Span>| {
        v.sort_by_key(|s| (s.start_ns, s.span_id.clone(), s.instance.clone()));
        v
    };
    let all: Vec<Span> = batches.iter().flat_map(|b| b.spans.clone()).collect();
    assert_eq!(
        by_instance(store.spans(&window(now)).await.unwrap()),
        by_instance(all)
    );
}

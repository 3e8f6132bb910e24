//! The store against a real PostgreSQL (see stormwatch-testkit).

use std::collections::BTreeMap;

use stormwatch_model::histogram::RELATIVE_ERROR;
use stormwatch_model::{Aggregate, AggregateKey, Batch, DependencyClass, EntryCall, Span};
use stormwatch_store::{AggregateFilter, SpanFilter, Store, StoreOptions, Totals};
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
        err <= RELATIVE_ERROR,
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
        assert!(err <= RELATIVE_ERROR, "q{q}: {got:?} vs exact {exact}");
    }
}

/// Calls per server operation add up across agents and batches, a resent batch counts once,
/// and a window reads the sums per (operation, class, peer).
#[tokio::test]
async fn calls_per_server_operation_add_up_once_per_batch() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    let minute = now / NS / 60 * 60;
    let call = |entry: &str, peer: &str, count: u64, ms: u64| EntryCall {
        minute,
        service: "board".into(),
        entry: entry.into(),
        class: DependencyClass::Redis as i32,
        peer: peer.into(),
        count,
        sum_ns: count * ms * 1_000_000,
    };
    let with = |agent: &str, seq: u64, calls: Vec<EntryCall>| {
        let mut b = sample::batch(agent, seq, 4, now);
        b.entry_calls = calls;
        b
    };
    let batches = [
        with("a", 1, vec![call("GET /timetable", "cache", 2, 5)]),
        with(
            "b",
            1,
            vec![
                call("GET /timetable", "cache", 3, 10),
                call("POST /classes", "cache", 1, 1),
            ],
        ),
        // Resent: stored once.
        with("a", 1, vec![call("GET /timetable", "cache", 2, 5)]),
    ];
    for b in &batches {
        store.store_batch(b, now).await.unwrap();
    }
    let got = store
        .entry_calls("board", now / NS - 3_600, now / NS + 60)
        .await
        .unwrap();
    let key = |e: &str| (e.to_owned(), "redis".to_owned(), "cache".to_owned());
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(
        (
            got[&key("GET /timetable")].count,
            got[&key("GET /timetable")].sum_ns
        ),
        (5, 40_000_000)
    );
    assert_eq!(got[&key("POST /classes")].count, 1);
    // Another service, or a window before the minute, reads nothing.
    assert!(store
        .entry_calls("partner", now / NS - 3_600, now / NS + 60)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .entry_calls("board", minute - 3_600, minute)
        .await
        .unwrap()
        .is_empty());
}

/// Server requests per agent are the sums of each agent's http_server aggregates, once per
/// batch however often it is sent.
#[tokio::test]
async fn server_requests_per_instance_are_the_agents_server_aggregates() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    let batches = [
        sample::batch("app-1", 1, 200, now),
        sample::batch("app-2", 1, 100, now),
        sample::batch("app-1", 2, 50, now),
        sample::batch("app-1", 2, 50, now),
    ];
    for b in &batches {
        store.store_batch(b, now).await.unwrap();
    }
    let mut want: BTreeMap<(String, String), (u64, u64, u64)> = BTreeMap::new();
    for b in &batches[..3] {
        for a in &b.aggregates {
            if a.class != DependencyClass::HttpServer as i32 {
                continue;
            }
            let w = want
                .entry((a.service.clone(), b.agent_id.clone()))
                .or_default();
            w.0 += a.count;
            w.1 += if a.status_class.starts_with('5') {
                a.count
            } else {
                0
            };
            w.2 += a.sum_ns;
        }
    }
    assert!(!want.is_empty());
    let services: Vec<String> = want.keys().map(|k| k.0.clone()).collect();
    let got = store
        .instance_requests(&services, now / NS - 3_600, now / NS + 60)
        .await
        .unwrap();
    for ((service, agent), (count, http_5xx, sum_ns)) in &want {
        let r = got[service][agent];
        assert_eq!(
            (r.count, r.http_5xx, r.sum_ns),
            (*count, *http_5xx, *sum_ns),
            "{service} {agent}"
        );
    }
    assert_eq!(got.values().map(|m| m.len()).sum::<usize>(), want.len());
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
    assert_eq!(dropped.len(), 10, "{dropped:?}");
    assert!(dropped.iter().any(|n| n.starts_with("sw_metric_minutes_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_logs_p")));
    assert!(dropped
        .iter()
        .any(|n| n.starts_with("sw_instance_minutes_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_entry_calls_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_spans_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_aggregates_p")));
    assert!(dropped
        .iter()
        .any(|n| n.starts_with("sw_dependency_minutes_p")));
    assert!(dropped
        .iter()
        .any(|n| n.starts_with("sw_service_minutes_p")));
    assert!(dropped.iter().any(|n| n.starts_with("sw_service_hours_p")));
    assert!(dropped
        .iter()
        .any(|n| n.starts_with("sw_dependency_hours_p")));
    assert_eq!(store.spans(&all_spans(now)).await.unwrap().len(), 0);

    // A span older than the retention window is not stored, and is reported as expired; so
    // are the spans its aggregates counted (every span, kept or not), which were dropped
    // without a word before.
    let ancient = sample::batch("agent-a", 2, 8, now - 30 * 86_400 * NS);
    let counted: u64 = ancient.aggregates.iter().map(|a| a.count).sum();
    assert!(counted >= 8);
    let out = store.store_batch(&ancient, now).await.unwrap();
    assert_eq!((out.spans, out.expired_spans, out.aggregates), (0, 8, 0));
    assert_eq!(out.expired_aggregated_spans, counted);
}

#[tokio::test]
async fn each_partition_has_its_own_time_index_and_may_drop_it() {
    let url = fresh_database().await;
    let store = store_with(&url, 7).await;
    let now = stormwatch_store::now_ns();
    store.create_partitions_ahead(now).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let brin = |table: String| {
        let client = &client;
        async move {
            client
                .query(
                    "SELECT i.relname::text FROM pg_index x
                       JOIN pg_class i ON i.oid = x.indexrelid
                       JOIN pg_class t ON t.oid = x.indrelid
                       JOIN pg_am a ON a.oid = i.relam
                      WHERE a.amname = 'brin' AND t.relname = $1",
                    &[&table],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
        }
    };
    // None on the parents (an index there would be part of every partition)...
    let day = stormwatch_store::partitions::day_name(now / (86_400 * NS));
    for parent in ["sw_spans", "sw_metric_minutes"] {
        assert_eq!(brin(parent.into()).await, Vec::<String>::new());
        // ...and one on each day's partition, which an old day can drop (before it is made
        // columnar on Citus, say).
        assert_eq!(brin(format!("{parent}_p{day}")).await.len(), 1, "{parent}");
    }
    let spans = format!("sw_spans_p{day}");
    client
        .batch_execute(&format!("DROP INDEX {spans}_start"))
        .await
        .unwrap();
    // A partition that exists is left as it is (an old day made columnar has no BRIN, and
    // columnar takes none): another collector starting does not bring the index back.
    let other = store_with(&url, 7).await;
    other.create_partitions_ahead(now).await.unwrap();
    assert_eq!(brin(spans).await, Vec::<String>::new());
}

/// Batches from three services and two agents over the same minutes, with dependency calls
/// of every status (ok, error, HTTP 500 and 503) and several operations per peer, so that the
/// dependency rollup merges services, operations, statuses and batches.
fn mixed_batches(now: i64) -> Vec<Batch> {
    let plan = [
        ("a", "board"),
        ("b", "auth"),
        ("a", "board"),
        ("c", "search"),
    ];
    plan.iter()
        .enumerate()
        .map(|(i, (agent, service))| {
            let mut b = sample::batch(agent, i as u64 + 1, 400, now);
            if *service == "search" {
                // A service without server spans (a worker): the overview counts all of them.
                b.spans
                    .retain(|s| s.dependency_class() != DependencyClass::HttpServer);
            }
            for (j, s) in b.spans.iter_mut().enumerate() {
                s.service = (*service).into();
                s.operation = format!("{} #{}", s.operation, j % 3);
                if s.dependency_class() == DependencyClass::HttpClient {
                    s.http_status = [200, 500, 503, 0][j / 4 % 4];
                }
                // Spread over three minutes; one call of zero duration per class and batch.
                s.start_ns -= (j % 3) as i64 * 60 * NS;
                if (5..8).contains(&j) {
                    s.duration_ns = 0;
                }
            }
            let mut aggs: BTreeMap<AggregateKey, Aggregate> = BTreeMap::new();
            for s in &b.spans {
                let key = AggregateKey::of_span(s);
                aggs.entry(key.clone())
                    .or_insert_with(|| Aggregate::new(&key))
                    .add(s);
            }
            b.aggregates = aggs.into_values().collect();
            b
        })
        .collect()
}

fn same_totals(a: &Totals, b: &Totals) -> bool {
    (
        a.count,
        a.errors,
        a.sum_ns,
        a.http_5xx,
        a.http_503,
        a.histogram(),
    ) == (
        b.count,
        b.errors,
        b.sum_ns,
        b.http_5xx,
        b.http_503,
        b.histogram(),
    )
}

#[tokio::test]
async fn dependency_rollup_equals_the_aggregates_merged() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    let batches = mixed_batches(now);
    for b in &batches {
        store.store_batch(b, now).await.unwrap();
    }
    let (from, to) = (now / NS - 600, now / NS + 60);
    // All services: the rollup. One service: its rows of sw_aggregates. Their sum must be
    // exactly the rollup, step by step: counts, HTTP counts and histograms.
    let all = store.dependency_series(None, from, to, 60).await.unwrap();
    let mut merged: BTreeMap<(String, String), Vec<Totals>> = BTreeMap::new();
    for service in ["board", "auth", "search"] {
        for d in store
            .dependency_series(Some(service), from, to, 60)
            .await
            .unwrap()
        {
            let steps = merged
                .entry((d.class.clone(), d.peer.clone()))
                .or_insert_with(|| vec![Totals::default(); d.steps.len()]);
            for (a, b) in steps.iter_mut().zip(&d.steps) {
                a.merge(b);
            }
        }
    }
    assert_eq!(all.len(), 3, "db, redis and http_client peers");
    assert_eq!(all.len(), merged.len());
    for d in &all {
        let steps = &merged[&(d.class.clone(), d.peer.clone())];
        assert_eq!(steps.len(), d.steps.len());
        assert!(d.steps.iter().filter(|t| t.count > 0).count() >= 3);
        for (i, (a, b)) in d.steps.iter().zip(steps).enumerate() {
            assert!(
                same_totals(a, b),
                "{} {} step {i}: {a:?} vs {b:?}",
                d.class,
                d.peer
            );
        }
    }
    // Exact against what was sent.
    let sent: Vec<&Span> = batches
        .iter()
        .flat_map(|b| &b.spans)
        .filter(|s| s.dependency_class() != DependencyClass::HttpServer)
        .collect();
    assert_eq!(
        all.iter().map(|d| d.totals.count).sum::<u64>(),
        sent.len() as u64
    );
    let client = all.iter().find(|d| d.class == "http_client").unwrap();
    let status = |code: u32| sent.iter().filter(|s| s.http_status == code).count() as u64;
    assert_eq!(client.totals.http_503, status(503));
    assert_eq!(client.totals.http_5xx, status(500) + status(503));
    assert!(client.totals.http_503 > 0);
    assert!(all.iter().all(|d| d.totals.histogram().zero_count > 0));

    // The peers table reads the rollup too: the same totals over the window.
    let peers = store.peer_summaries(from, to).await.unwrap();
    assert_eq!(peers.len(), 3);
    for p in &peers {
        let d = all
            .iter()
            .find(|d| d.class == p.class && d.peer == p.peer)
            .unwrap();
        assert_eq!((p.count, p.errors), (d.totals.count, d.totals.errors));
        assert_eq!(p.p95_ms, d.totals.quantile_ms(0.95));
        assert_eq!(p.p99_ms, d.totals.quantile_ms(0.99));
    }
}

#[tokio::test]
async fn rollups_read_the_same_before_and_after_their_deltas_are_folded() {
    let url = fresh_database().await;
    let store = store_with(&url, 7).await;
    let now = stormwatch_store::now_ns();
    let batches = mixed_batches(now);
    let (from, to) = (now / NS - 3 * 3_600, now / NS + 2 * 3_600);
    // Everything the rollups answer, by minutes and by hours.
    let read = || async {
        let mut out = Vec::new();
        for step in [60, 3_600] {
            for o in store.service_overview(from, to, step).await.unwrap() {
                let counts: Vec<u64> = o.steps.iter().map(|s| s.count).collect();
                out.push(format!(
                    "{} {step} {:?} {counts:?} {:?}",
                    o.service,
                    o.totals,
                    o.totals.histogram()
                ));
            }
            for d in store.dependency_series(None, from, to, step).await.unwrap() {
                let counts: Vec<u64> = d.steps.iter().map(|s| s.count).collect();
                out.push(format!(
                    "{} {} {step} {:?} {counts:?} {:?}",
                    d.class,
                    d.peer,
                    d.totals,
                    d.totals.histogram()
                ));
            }
        }
        for p in store.peer_summaries(from, to).await.unwrap() {
            out.push(format!("{p:?}"));
        }
        out
    };
    // Two batches folded, two left as deltas: a read adds both.
    for b in &batches[..2] {
        store.store_batch(b, now).await.unwrap();
    }
    let first = store.fold_rollups(now).await.unwrap();
    assert!(first.ran && first.deltas > 0 && first.rows > 0, "{first:?}");
    for b in &batches[2..] {
        store.store_batch(b, now).await.unwrap();
    }
    let unfolded = read().await;
    assert!(unfolded.len() >= 3 * 2 + 3 * 2 + 3, "{unfolded:#?}");
    // Two collectors folding at once: one folds, the other skips or finds nothing left.
    let (a, b) = tokio::join!(store.fold_rollups(now), store.fold_rollups(now));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(
        a.deltas + b.deltas > 0 && (a.deltas == 0 || b.deltas == 0),
        "{a:?} {b:?}"
    );
    assert_eq!(read().await, unfolded);
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let left: i64 = client
        .query_one("SELECT count(*) FROM sw_rollup_deltas", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    // Deltas of a day past retention are dropped, not folded into a partition that is gone.
    client
        .batch_execute(
            "INSERT INTO sw_rollup_deltas
             SELECT 0, now() - interval '30 days', 'db', 'old:5432', 1, 0, 1000, 0, 0, 0, ''::bytea",
        )
        .await
        .unwrap();
    let old = store.fold_rollups(now).await.unwrap();
    assert_eq!((old.deltas, old.expired, old.rows), (1, 1, 0), "{old:?}");
    assert_eq!(read().await, unfolded);
}

/// A fresh store holding the first three of [`mixed_batches`] (the fourth is left to send
/// later), and a plain client on its database.
async fn three_of_the_mixed_batches_stored() -> (Store, tokio_postgres::Client, i64, Vec<Batch>) {
    let url = fresh_database().await;
    let store = store_with(&url, 7).await;
    let now = stormwatch_store::now_ns();
    let batches = mixed_batches(now);
    for b in &batches[..3] {
        store.store_batch(b, now).await.unwrap();
    }
    // What these tests compare is the rollup tables, so fold the batches' deltas into them.
    store.fold_rollups(now).await.unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    (store, client, now, batches)
}

#[tokio::test]
async fn migration_backfills_the_dependency_rollup_as_ingest_keeps_it() {
    let (store, client, now, batches) = three_of_the_mixed_batches_stored().await;
    let read = || rollup_rows(&client, "sw_dependency_minutes", "class, peer");
    let kept = read().await;
    assert!(
        kept.len() >= 9,
        "three peers over three minutes: {}",
        kept.len()
    );

    // A store from before migration 0004: no rollup. Migrating builds it (partitions and
    // rows) from sw_aggregates, and it must equal what ingest kept.
    client
        .batch_execute(
            "DROP TABLE sw_dependency_minutes;
             DROP FUNCTION sw_hist_pack(integer[], bigint[]);
             DROP FUNCTION sw_hist_merge_packed(integer[], bigint[], integer[], bigint[]);
             DELETE FROM sw_migrations WHERE name LIKE '0004_%' OR name LIKE '0005_%'",
        )
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), 2);
    assert_eq!(read().await, kept);

    // Ingest goes on merging into the backfilled rows.
    store.store_batch(&batches[3], now).await.unwrap();
    let after = store
        .peer_summaries(now / NS - 600, now / NS + 60)
        .await
        .unwrap();
    let dependency_spans = batches
        .iter()
        .flat_map(|b| &b.spans)
        .filter(|s| s.dependency_class() != DependencyClass::HttpServer)
        .count() as u64;
    assert_eq!(after.iter().map(|p| p.count).sum::<u64>(), dependency_spans);
}

/// A rollup table's rows, in key order: (minute, key 1, key 2, [count, errors, sum_ns,
/// http_5xx, http_503, hist_zero], hist_keys, hist_counts, hist_packed).
type RollupRow = (
    std::time::SystemTime,
    String,
    String,
    [i64; 6],
    Vec<i32>,
    Vec<i64>,
    Vec<u8>,
);

async fn rollup_rows(client: &tokio_postgres::Client, table: &str, keys: &str) -> Vec<RollupRow> {
    let time = if table.ends_with("_hours") {
        "hour"
    } else {
        "minute"
    };
    client
        .query(
            &format!(
                "SELECT {time}, {keys}, count, errors, sum_ns, http_5xx, http_503,
                        hist_zero, hist_keys, hist_counts, hist_packed
                   FROM {table} ORDER BY {time}, {keys}"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let n = |i| r.get::<_, i64>(i);
            (
                r.get(0),
                r.get(1),
                r.get(2),
                [n(3), n(4), n(5), n(6), n(7), n(8)],
                r.get(9),
                r.get(10),
                r.get(11),
            )
        })
        .collect()
}

#[tokio::test]
async fn service_rollup_is_backfilled_as_ingest_keeps_it_and_the_overview_reads_it() {
    let (store, client, now, batches) = three_of_the_mixed_batches_stored().await;
    let kept = rollup_rows(&client, "sw_service_minutes", "service, entry").await;
    let entries: std::collections::BTreeSet<(&str, &str)> =
        kept.iter().map(|r| (r.1.as_str(), r.2.as_str())).collect();
    assert!(entries.contains(&("board", "http_server")) && entries.contains(&("board", "other")));

    // A store from before migration 0006: migrating builds the rollup from sw_aggregates, and
    // it must equal what ingest kept, row for row.
    client
        .batch_execute(
            "DROP TABLE sw_service_minutes;
             DELETE FROM sw_migrations WHERE name LIKE '0006_%'",
        )
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), 1);
    assert_eq!(
        rollup_rows(&client, "sw_service_minutes", "service, entry").await,
        kept
    );

    // Ingest goes on merging into the backfilled rows, and the overview counts every server
    // span once, per service, with its HTTP statuses.
    store.store_batch(&batches[3], now).await.unwrap();
    let overview = store
        .service_overview(now / NS - 600, now / NS + 60, 60)
        .await
        .unwrap();
    for o in &overview {
        let sent: Vec<&Span> = batches
            .iter()
            .flat_map(|b| &b.spans)
            .filter(|s| s.service == o.service)
            .collect();
        let server: Vec<&&Span> = sent
            .iter()
            .filter(|s| s.dependency_class() == DependencyClass::HttpServer)
            .collect();
        let counted: Vec<&&Span> = if server.is_empty() {
            sent.iter().collect()
        } else {
            server
        };
        let status =
            |f: &dyn Fn(u32) -> bool| counted.iter().filter(|s| f(s.http_status)).count() as u64;
        assert_eq!(o.totals.count, counted.len() as u64, "{}", o.service);
        // Every counted span's duration is in the merged histogram once.
        assert_eq!(o.totals.histogram().count(), o.totals.count);
        assert_eq!(o.totals.http_5xx, status(&|c| (500..600).contains(&c)));
        assert_eq!(o.totals.http_503, status(&|c| c == 503));
        assert_eq!(o.steps.iter().map(|t| t.count).sum::<u64>(), o.totals.count);
    }
    assert_eq!(overview.len(), 3);
    // Both rules are exercised: services measured by their server spans, and one without any.
    for entry in ["http_server", "all"] {
        assert!(overview.iter().any(|o| o.entry_class == entry), "{entry}");
    }
}

/// An hourly rollup (`hours`) of a minute rollup (`minutes`), keyed by `keys`: each hour row
/// is the sum of its minutes' rows. Returns the rows ingest kept.
async fn check_hourly_rollup(
    client: &tokio_postgres::Client,
    minutes: &str,
    hours: &str,
    keys: &str,
) -> Vec<RollupRow> {
    let kept = rollup_rows(client, hours, keys).await;
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    };
    let mut summed: BTreeMap<(i64, String, String), [i64; 6]> = BTreeMap::new();
    for (minute, k1, k2, n, ..) in rollup_rows(client, minutes, keys).await {
        let s = summed
            .entry((secs(minute) / 3_600 * 3_600, k1, k2))
            .or_default();
        for (a, b) in s.iter_mut().zip(n) {
            *a += b;
        }
    }
    let by_hour: BTreeMap<(i64, String, String), [i64; 6]> = kept
        .iter()
        .map(|(hour, k1, k2, n, ..)| ((secs(*hour), k1.clone(), k2.clone()), *n))
        .collect();
    assert!(!by_hour.is_empty(), "{hours}");
    assert_eq!(by_hour, summed, "{hours}");
    kept
}

#[tokio::test]
async fn hourly_rollups_are_backfilled_as_ingest_keeps_them_and_long_windows_read_them() {
    let (store, client, now, batches) = three_of_the_mixed_batches_stored().await;
    store.store_batch(&batches[3], now).await.unwrap();
    store.fold_rollups(now).await.unwrap();
    let tables = [
        ("sw_service_minutes", "sw_service_hours", "service, entry"),
        (
            "sw_dependency_minutes",
            "sw_dependency_hours",
            "class, peer",
        ),
    ];
    let mut kept = Vec::new();
    for (minutes, hours, keys) in tables {
        kept.push(check_hourly_rollup(&client, minutes, hours, keys).await);
    }
    // A store from before migration 0008: migrating builds the hours from the minutes, equal
    // to what ingest kept, row for row.
    client
        .batch_execute(
            "DROP TABLE sw_service_hours, sw_dependency_hours;
             DELETE FROM sw_migrations WHERE name = '0008_hourly_rollups'",
        )
        .await
        .unwrap();
    assert_eq!(store.migrate().await.unwrap(), 1);
    for ((_, hours, keys), kept) in tables.into_iter().zip(kept) {
        assert_eq!(rollup_rows(&client, hours, keys).await, kept, "{hours}");
    }

    // By steps of an hour, the overview and the dependency series count exactly what they
    // count by minutes...
    let (from, to) = (now / NS - 3 * 3_600, now / NS + 2 * 3_600);
    let overview = |o: Vec<stormwatch_store::ServiceOverview>| -> Vec<_> {
        o.iter()
            .map(|o| {
                let t = &o.totals;
                let steps: u64 = o.steps.iter().map(|s| s.count).sum();
                let counts = [t.count, t.errors, t.sum_ns, t.http_5xx, t.http_503, steps];
                (o.service.clone(), o.entry_class, counts, t.histogram())
            })
            .collect()
    };
    let series = |o: Vec<stormwatch_store::DependencySeries>| -> Vec<_> {
        o.iter()
            .map(|o| {
                let t = &o.totals;
                let steps: u64 = o.steps.iter().map(|s| s.count).sum();
                let counts = [t.count, t.errors, t.sum_ns, t.http_5xx, t.http_503, steps];
                (o.class.clone(), o.peer.clone(), counts, t.histogram())
            })
            .collect()
    };
    let by_minutes = (
        overview(store.service_overview(from, to, 60).await.unwrap()),
        series(store.dependency_series(None, from, to, 60).await.unwrap()),
    );
    let by_hours = || async {
        (
            overview(store.service_overview(from, to, 3_600).await.unwrap()),
            series(
                store
                    .dependency_series(None, from, to, 3_600)
                    .await
                    .unwrap(),
            ),
        )
    };
    assert_eq!(by_hours().await, by_minutes);
    assert_eq!((by_minutes.0.len(), by_minutes.1.len() >= 3), (3, true));
    // ...and read the whole hours from the hourly rollups: without their minute rows, the
    // answers by hours are unchanged.
    client
        .batch_execute(&format!(
            "DELETE FROM sw_service_minutes WHERE minute >= to_timestamp({h});
             DELETE FROM sw_dependency_minutes WHERE minute >= to_timestamp({h})",
            h = from / 3_600 * 3_600 + 3_600
        ))
        .await
        .unwrap();
    assert_eq!(by_hours().await, by_minutes);
    assert!(store
        .service_overview(from, to, 60)
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .dependency_series(None, from, to, 60)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_alert_leader_lock_session_has_tcp_keepalives_on_the_server() {
    let store = store_with(&fresh_database().await, 7).await;
    let lock = store
        .try_leader_lock()
        .await
        .unwrap()
        .expect("the lock is free");
    // PostgreSQL drops the lock ~11 s after the collector's host goes silent, not after the
    // OS default of two hours.
    let settings = lock.server_keepalives().await.unwrap();
    let settings: Vec<(&str, &str)> = settings
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        settings,
        [
            ("tcp_keepalives_count", "3"),
            ("tcp_keepalives_idle", "5"),
            ("tcp_keepalives_interval", "2"),
            ("tcp_user_timeout", "10000"),
        ]
    );
    assert!(
        store.try_leader_lock().await.unwrap().is_none(),
        "one session holds the lock at a time"
    );
    drop(lock);
}

/// Xorshift64: deterministic durations without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// The exact quantile under `Histogram::quantile`'s definition: 0-based rank ⌊q·(n − 1)⌋ of
/// the sorted values, no interpolation (see model/tests/histogram.rs).
fn exact_quantile_ms(sorted_ns: &[i64], q: f64) -> f64 {
    sorted_ns[(q * (sorted_ns.len() - 1) as f64).floor() as usize] as f64 / 1e6
}

/// Asserts each `(q, estimate in ms)` is within 1 % of the exact quantile (an exact 0 read as
/// 0); returns the largest relative error.
fn assert_percentiles(path: &str, sorted_ns: &[i64], got: &[(f64, Option<f64>)]) -> f64 {
    let mut worst = 0.0f64;
    for (q, estimate) in got {
        let estimate = estimate.unwrap_or_else(|| panic!("{path}: no q{q}"));
        let exact = exact_quantile_ms(sorted_ns, *q);
        let err = if exact == 0.0 {
            assert_eq!(estimate, 0.0, "{path}: q{q} of zeros");
            0.0
        } else {
            (estimate - exact).abs() / exact
        };
        assert!(
            err <= RELATIVE_ERROR,
            "{path}: q{q} {estimate} ms vs exact {exact} ms (relative error {err:e})"
        );
        worst = worst.max(err);
    }
    eprintln!("{path:<40} max relative error {worst:.6e}");
    worst
}

/// Every read path that reports percentiles — `sw_aggregates` merged in SQL and read as
/// arrays, the minute and hour rollups read packed (the dense path of `Totals`), one
/// service's aggregates, the peers table and the overview — holds the README's 1 % on a
/// distribution made to break it: 30 % zeros, a mode at 1 ms, one at 1.5 s and a Pareto tail
/// to 5 min, dealt at random over six batches from three agents, 50 minutes and two statuses
/// (so rows merge in SQL, in the rollups and across minutes when read).
#[tokio::test]
async fn percentiles_hold_one_percent_through_every_read_path() {
    let store = store_with(&fresh_database().await, 7).await;
    let now = stormwatch_store::now_ns();
    // The last whole hour: read by steps of an hour, it comes from the hourly rollups.
    let hour = (now / NS).div_euclid(3_600) * 3_600 - 3_600;
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let n = 6_000u64;
    let spans: Vec<Span> = (0..n)
        .map(|i| {
            let u = rng.unit();
            let duration = if u < 0.30 {
                0.0
            } else if u < 0.85 {
                1e6 * (0.3 * (rng.unit() - 0.5)).exp()
            } else if u < 0.98 {
                1.5e9 * (0.95 + 0.1 * rng.unit())
            } else {
                (2e9 / rng.unit()).min(300e9)
            };
            // Class redis (span number 2); ends inside the hour.
            let start = (hour + (i % 50) as i64 * 60) * NS + i as i64;
            sample::span(i, 2, start, duration.round() as i64)
        })
        .collect();
    let mut parts: Vec<Vec<Span>> = vec![Vec::new(); 6];
    for s in &spans {
        parts[(rng.next_u64() % 6) as usize].push(s.clone());
    }
    for (i, part) in parts.into_iter().enumerate() {
        let mut b = sample::batch(["a", "b", "c"][i % 3], i as u64 + 1, 0, now);
        let mut aggs: BTreeMap<AggregateKey, Aggregate> = BTreeMap::new();
        for s in &part {
            let key = AggregateKey::of_span(s);
            aggs.entry(key.clone())
                .or_insert_with(|| Aggregate::new(&key))
                .add(s);
        }
        b.aggregates = aggs.into_values().collect();
        b.spans = part;
        store.store_batch(&b, now).await.unwrap();
    }
    let mut sorted: Vec<i64> = spans.iter().map(|s| s.duration_ns).collect();
    sorted.sort_unstable();
    let (from, to) = (hour, hour + 3_600);
    let qs = [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0];
    let of_totals = |t: &Totals| -> Vec<(f64, Option<f64>)> {
        assert_eq!(t.count, n);
        qs.iter().map(|q| (*q, t.quantile_ms(*q))).collect()
    };

    let series = store
        .aggregate_series(&AggregateFilter {
            class: Some(DependencyClass::Redis),
            from_s: from,
            to_s: to,
            step_s: 3_600,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(series.len(), 1);
    let p = &series[0];
    assert_eq!(p.count, n);
    assert_percentiles(
        "aggregate_series (sw_aggregates)",
        &sorted,
        &[(0.5, p.p50_ms), (0.95, p.p95_ms), (0.99, p.p99_ms)],
    );
    for (path, service, step) in [
        ("dependency_series by minute (rollup)", None, 60),
        ("dependency_series by hour (rollup)", None, 3_600),
        ("dependency_series of board", Some("board"), 60),
    ] {
        let d = store
            .dependency_series(service, from, to, step)
            .await
            .unwrap();
        assert_eq!(d.len(), 1, "{path}");
        assert_percentiles(path, &sorted, &of_totals(&d[0].totals));
    }
    let peers = store.peer_summaries(from, to).await.unwrap();
    assert_eq!((peers.len(), peers[0].count), (1, n));
    assert_percentiles(
        "peer_summaries",
        &sorted,
        &[(0.95, peers[0].p95_ms), (0.99, peers[0].p99_ms)],
    );
    for (path, step) in [
        ("service_overview by minute", 60),
        ("service_overview by hour", 3_600),
    ] {
        let o = store.service_overview(from, to, step).await.unwrap();
        assert_eq!(o.len(), 1, "{path}");
        assert_percentiles(path, &sorted, &of_totals(&o[0].totals));
    }
}

#[tokio::test]
async fn compressible_columns_use_lz4_in_partitions_made_after_the_migration() {
    let url = fresh_database().await;
    let store = store_with(&url, 7).await;
    store
        .create_partitions_ahead(stormwatch_store::now_ns())
        .await
        .unwrap();
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let not_lz4: Vec<String> = client
        .query(
            "SELECT c.relname || '.' || a.attname FROM pg_class c
               JOIN pg_attribute a ON a.attrelid = c.oid
              WHERE c.relname LIKE 'sw\\_%' AND c.relkind IN ('r', 'p')
                AND a.attnum > 0 AND NOT a.attisdropped AND a.attstorage IN ('x', 'm')
                AND a.attcompression <> 'l'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(not_lz4.is_empty(), "columns left with pglz: {not_lz4:?}");
    // A histogram row over the 2 KB PostgreSQL compresses at is compressed with lz4.
    client
        .execute(
            "INSERT INTO sw_aggregates (minute, service, class, peer, operation, status_class,
                                        count, errors, sum_ns, hist_zero, hist_keys, hist_counts)
             SELECT now(), 'svc', 'db', 'pg', 'op', '2xx', 1, 0, 1, 0,
                    array_agg(g), array_agg((g % 7)::bigint)
               FROM generate_series(1, 2000) g",
            &[],
        )
        .await
        .unwrap();
    let method: Option<String> = client
        .query_one(
            "SELECT pg_column_compression(hist_counts) FROM sw_aggregates",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(method.as_deref(), Some("lz4"));
}

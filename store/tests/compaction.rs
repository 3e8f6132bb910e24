//! Compacting `sw_aggregates` (store/src/compaction.rs) against a real PostgreSQL: batches
//! append rows, compaction merges a key's rows into one, and readers see the same before and
//! after, with nothing lost to batches stored meanwhile.

use stormwatch_store::AggregateFilter;
use stormwatch_testkit::{fresh_store_and_client, sample};

const NS: i64 = 1_000_000_000;

fn hour_around(now: i64) -> AggregateFilter {
    AggregateFilter {
        from_s: now / NS - 3_600,
        to_s: now / NS + 60,
        step_s: 60,
        ..Default::default()
    }
}

async fn sql(client: &tokio_postgres::Client, query: &str) -> i64 {
    client.query_one(query, &[]).await.unwrap().get(0)
}

const ROWS: &str = "SELECT count(*) FROM sw_aggregates";
const KEYS: &str = "SELECT count(*) FROM (SELECT DISTINCT minute, service, class, peer, operation,
                                          status_class FROM sw_aggregates) k";

#[tokio::test]
async fn a_keys_rows_merge_into_one_and_reads_do_not_change() {
    let (store, db) = fresh_store_and_client().await;
    let now = stormwatch_store::now_ns();
    for (agent, seq) in [("a", 1), ("b", 1), ("c", 1), ("a", 2)] {
        store
            .store_batch(&sample::batch(agent, seq, 100, now), now)
            .await
            .unwrap();
    }
    let before = store.aggregate_series(&hour_around(now)).await.unwrap();
    let (rows, keys) = (sql(&db, ROWS).await, sql(&db, KEYS).await);
    assert_eq!(rows, 4 * keys, "each batch appended a row per key");

    let now_s = now / NS;
    let c = store
        .compact_aggregates(now_s - 900, now_s + 120)
        .await
        .unwrap();
    assert!(c.ran && c.minutes >= 1, "{c:?}");
    assert_eq!((c.rows_before, c.rows_after), (rows as u64, keys as u64));
    assert_eq!(sql(&db, ROWS).await, keys);
    assert_eq!(
        store.aggregate_series(&hour_around(now)).await.unwrap(),
        before
    );
    // Nothing left to merge.
    let again = store
        .compact_aggregates(now_s - 900, now_s + 120)
        .await
        .unwrap();
    assert_eq!((again.minutes, again.rows_before), (0, 0));
}

#[tokio::test]
async fn batches_stored_while_compacting_are_counted_once() {
    let (store, db) = fresh_store_and_client().await;
    let now = stormwatch_store::now_ns();
    let now_s = now / NS;
    let mut expected = 0u64;
    for seq in 1..=6u64 {
        let batches: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|agent| sample::batch(agent, seq, 100, now))
            .collect();
        expected += batches
            .iter()
            .flat_map(|b| &b.aggregates)
            .map(|a| a.count)
            .sum::<u64>();
        let stores =
            futures_util::future::join_all(batches.iter().map(|b| store.store_batch(b, now)));
        let (stored, compacted) =
            tokio::join!(stores, store.compact_aggregates(now_s - 900, now_s + 120));
        for s in stored {
            s.unwrap();
        }
        compacted.unwrap();
    }
    let total = |series: Vec<stormwatch_store::AggregatePoint>| -> u64 {
        series.iter().map(|p| p.count).sum()
    };
    assert_eq!(
        total(store.aggregate_series(&hour_around(now)).await.unwrap()),
        expected
    );
    store
        .compact_aggregates(now_s - 900, now_s + 120)
        .await
        .unwrap();
    assert_eq!(sql(&db, ROWS).await, sql(&db, KEYS).await);
    assert_eq!(
        total(store.aggregate_series(&hour_around(now)).await.unwrap()),
        expected
    );
}

//! `sw_recent_aggregates`: what arrived in the last seconds, for alert rules.

use stormwatch_model::{DependencyClass, SpanFlag};
use stormwatch_store::recent_cache::RecentCache;
use stormwatch_store::signals::GroupFilter;
use stormwatch_store::Store;
use stormwatch_testkit::sample;

const NS: i64 = 1_000_000_000;

async fn store() -> Store {
    stormwatch_testkit::fresh_store().await
}

fn by(labels: &[&str]) -> Vec<String> {
    labels.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn recent_aggregates_count_what_arrived_once_and_leave_history_out() {
    let store = store().await;
    let now = stormwatch_store::now_ns();
    let redis = GroupFilter {
        class: Some(DependencyClass::Redis),
        ..Default::default()
    };
    let batch = sample::batch("a", 1, 100, now);
    let redis_spans = batch
        .aggregates
        .iter()
        .filter(|a| a.class == DependencyClass::Redis as i32)
        .map(|a| a.count)
        .sum::<u64>();
    assert!(redis_spans > 0);
    store.store_batch(&batch, now).await.unwrap();
    // A resent batch (same sequence) writes nothing here either.
    store.store_batch(&batch, now).await.unwrap();
    let since = (now / NS - 20) as f64;
    let groups = store
        .recent_groups(&redis, &by(&["class", "peer"]), since)
        .await
        .unwrap();
    assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), redis_spans);
    assert_eq!(
        groups.iter().map(|g| g.histogram.count()).sum::<u64>(),
        redis_spans,
        "the histograms hold every span"
    );

    // Another batch arriving 30 s later lands in a later bucket: a window that starts after
    // the first arrival sees only the second. (The sample's spans start 2 minutes before the
    // `now` they are made for, which is "recent" for a batch arriving at that `now`.)
    let later = now + 30 * NS;
    store
        .store_batch(&sample::batch("a", 2, 100, later), later)
        .await
        .unwrap();
    let recent = store
        .recent_groups(&redis, &by(&["class"]), (later / NS - 10) as f64)
        .await
        .unwrap();
    assert_eq!(recent.iter().map(|g| g.count).sum::<u64>(), redis_spans);

    // A spool replayed after an outage (aggregates of ten minutes ago) is history, not now.
    let old = now - 600 * NS;
    store
        .store_batch(&sample::batch("b", 1, 100, old), now)
        .await
        .unwrap();
    let all = store
        .recent_groups(&redis, &by(&["class"]), since)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|g| g.count).sum::<u64>(), 2 * redis_spans);

    // Pruning 17 minutes on removes everything: both arrivals' ring slots are past the 15
    // minutes rules read, and so are the flag counts.
    let pruned = store.prune_recent((now / NS + 1_020) as f64).await.unwrap();
    assert!(pruned.slots >= 1, "{pruned:?}");
    assert!(store
        .recent_groups(&redis, &by(&["class"]), 0.0)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn recent_flag_counts_see_what_arrived_not_what_ended_long_ago() {
    let store = store().await;
    let now = stormwatch_store::now_ns();
    let flagged = |agent: &str, at: i64| {
        let mut b = sample::batch(agent, 1, 8, at);
        for s in b.spans.iter_mut().take(3) {
            s.flags.push(SpanFlag::FullScanSuspect as i32);
        }
        b
    };
    store.store_batch(&flagged("a", now), now).await.unwrap();
    // Flagged spans that ended ten minutes before they arrived (a replayed spool).
    store
        .store_batch(&flagged("b", now - 600 * NS), now)
        .await
        .unwrap();
    let counts = store
        .recent_flag_counts("full_scan_suspect", (now / NS - 20) as f64)
        .await
        .unwrap();
    assert_eq!(counts.iter().map(|c| c.count).sum::<i64>(), 3, "{counts:?}");
    // The per-minute counts have both.
    let minutes = store
        .flag_counts("full_scan_suspect", now / NS - 3_600)
        .await
        .unwrap();
    assert_eq!(minutes.iter().map(|c| c.count).sum::<i64>(), 6);
    let pruned = store.prune_recent((now / NS + 960) as f64).await.unwrap();
    assert!(pruned.flag_rows > 0, "{pruned:?}");
    assert!(store
        .recent_flag_counts("full_scan_suspect", 0.0)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn two_agents_in_the_same_bucket_add_up() {
    let store = store().await;
    let now = stormwatch_store::now_ns();
    let all = GroupFilter::default();
    let one = sample::batch("a", 1, 100, now);
    let (spans, errors): (u64, u64) = one
        .aggregates
        .iter()
        .fold((0, 0), |(n, e), a| (n + a.count, e + a.errors));
    // The same service's aggregates from two agents, arriving at the same moment: their rows
    // share every key and bucket.
    store.store_batch(&one, now).await.unwrap();
    store
        .store_batch(&sample::batch("b", 1, 100, now), now)
        .await
        .unwrap();
    let groups = store
        .recent_groups(
            &all,
            &by(&["service", "class", "peer", "operation"]),
            (now / NS - 20) as f64,
        )
        .await
        .unwrap();
    let keys: std::collections::BTreeSet<_> = one
        .aggregates
        .iter()
        .map(|a| {
            (
                a.service.clone(),
                a.peer.clone(),
                a.operation.clone(),
                a.class,
            )
        })
        .collect();
    assert_eq!(
        groups.len(),
        keys.len(),
        "one group per key, whatever the rows"
    );
    assert_eq!(groups.iter().map(|g| g.count).sum::<u64>(), 2 * spans);
    assert_eq!(groups.iter().map(|g| g.errors).sum::<u64>(), 2 * errors);
    assert_eq!(
        groups.iter().map(|g| g.histogram.count()).sum::<u64>(),
        2 * spans
    );
}

/// The ring of migration 0029: what arrived in each of the last 15 minutes stays readable
/// through every prune, and what is older is gone, slot by slot, with the ring turning twice.
#[tokio::test]
async fn the_ring_keeps_fifteen_minutes_through_every_prune() {
    use stormwatch_store::recent::{KEEP_S, SLOTS, SLOT_S};
    let store = store().await;
    let all = GroupFilter::default();
    let start = stormwatch_store::now_ns() / NS / 60 * 60 - 3_600;
    let mut stored: Vec<(i64, u64)> = Vec::new();
    let minutes = 2 * SLOTS + 5;
    let mut emptied = 0;
    for m in 0..minutes {
        let at = start + m * SLOT_S + 7;
        let batch = sample::batch("ring", m as u64 + 1, 20, at * NS);
        store.store_batch(&batch, at * NS).await.unwrap();
        let n: u64 = batch.aggregates.iter().map(|a| a.count).sum();
        stored.push((at, n));
        // The collector prunes once a minute, at some second of it.
        let now = at + 13;
        emptied += store.prune_recent(now as f64).await.unwrap().slots;
        let since = now - KEEP_S;
        let want: u64 = stored
            .iter()
            .filter(|(t, _)| *t >= since - since.rem_euclid(5))
            .map(|(_, n)| n)
            .sum();
        let seen: u64 = store
            .recent_groups(&all, &by(&["service"]), since as f64)
            .await
            .unwrap()
            .iter()
            .map(|g| g.count)
            .sum();
        assert_eq!(seen, want, "minute {m}: the last 15 minutes' arrivals");
        let kept: u64 = store
            .recent_groups(&all, &by(&["service"]), 0.0)
            .await
            .unwrap()
            .iter()
            .map(|g| g.count)
            .sum();
        // Pruned every minute, the ring holds the current minute and the 15 before it.
        let oldest_kept = (now.div_euclid(SLOT_S) - KEEP_S / SLOT_S) * SLOT_S;
        let in_ring: u64 = stored
            .iter()
            .filter(|(t, _)| *t >= oldest_kept)
            .map(|(_, n)| n)
            .sum();
        assert_eq!(kept, in_ring, "minute {m}: what the ring still holds");
    }
    assert!(
        emptied >= (minutes - SLOTS) as u64,
        "{emptied} slots emptied in {minutes} minutes"
    );
}

/// What a round's groups are, comparable: labels, counts by status and the histogram.
fn comparable(groups: Vec<stormwatch_store::signals::Group>) -> Vec<String> {
    let mut out: Vec<String> = groups
        .into_iter()
        .map(|g| {
            format!(
                "{:?} n={} err={} {:?} {:?}",
                g.labels, g.count, g.errors, g.by_status, g.histogram
            )
        })
        .collect();
    out.sort();
    out
}

/// Asserts that the cache refreshed for the round at `now_s` answers every window and grouping
/// the default rules use exactly as a full read of the window does.
async fn assert_as_full_read(store: &Store, cache: &RecentCache, now_s: i64, what: &str) {
    let redis = GroupFilter {
        class: Some(DependencyClass::Redis),
        ..Default::default()
    };
    for filter in [GroupFilter::default(), redis] {
        for group_by in [by(&["class", "peer"]), by(&["service", "operation"])] {
            for window in [10, 20] {
                let since = (now_s - window) as f64;
                let cached = cache
                    .groups(&filter, &group_by, since, now_s as f64)
                    .expect("the cache answers the windows of its horizon");
                let full = store
                    .recent_groups(&filter, &group_by, since)
                    .await
                    .unwrap();
                assert_eq!(
                    comparable(cached),
                    comparable(full),
                    "{what}: {filter:?} by {group_by:?} over {window} s"
                );
            }
        }
    }
}

/// The seconds the cache keeps in the cache test: the default rules' longest window (20 s).
const HORIZON_S: i64 = 20;

/// One alert round at `now_s`: refreshes the cache, checks it answers as a full read, and
/// says what the refresh read.
async fn round(
    store: &Store,
    cache: &mut RecentCache,
    now_s: i64,
    what: &str,
) -> stormwatch_store::recent_cache::Refreshed {
    let r = store
        .refresh_recent(cache, HORIZON_S, now_s as f64)
        .await
        .unwrap();
    assert_as_full_read(store, cache, now_s, what).await;
    r
}

/// The alert leader's cache of recent aggregates (migration 0030) answers as a full read of
/// the window does — with batches committed in another order than numbered, a batch rolled
/// back, the window moving on and the cache built anew — while reading only the rows of the
/// batches committed since the last round.
#[tokio::test]
async fn the_cache_answers_as_a_full_read_while_reading_only_new_rows() {
    use stormwatch_store::recent_cache::REBUILD_S;
    let (store, client) = stormwatch_testkit::fresh_store_and_client().await;
    let store = std::sync::Arc::new(store);
    let t0 = stormwatch_store::now_ns() / NS / 60 * 60;
    let mut cache = RecentCache::default();
    let rows_of = |b: &stormwatch_model::Batch| {
        b.aggregates
            .iter()
            .map(|a| (&a.service, a.class, &a.peer, &a.operation, &a.status_class))
            .collect::<std::collections::BTreeSet<_>>()
            .len() as u64
    };

    // Two batches, 15 s and 3 s before the first round: built from a full read.
    for (seq, at) in [(1, t0 - 15), (2, t0 - 3)] {
        let b = sample::batch("a", seq, 200, at * NS);
        store.store_batch(&b, at * NS).await.unwrap();
    }
    let r = round(&store, &mut cache, t0, "built").await;
    assert!(r.rebuilt && r.gaps == 0, "{r:?}");

    // A batch numbered, then held on a lock of its transaction's last writes (as by another
    // agent of its service), while a later batch commits: the later one is read, the held
    // one waited for.
    let blocker = client;
    blocker
        .batch_execute("BEGIN; LOCK TABLE sw_entry_calls IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let held = sample::batch("a", 3, 200, (t0 + 1) * NS);
    let held_rows = rows_of(&held);
    let writer = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move { store.store_batch(&held, (t0 + 1) * NS).await })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while blocker
        .query_one("SELECT count(*) FROM pg_locks WHERE NOT granted", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the batch never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut later = sample::batch("b", 1, 200, (t0 + 2) * NS);
    later.entry_calls.clear();
    later.instance = "i-2".into();
    tokio::time::timeout(
        std::time::Duration::from_secs(20),
        store.store_batch(&later, (t0 + 2) * NS),
    )
    .await
    .expect("a batch without entry calls does not wait")
    .unwrap();
    let r = round(&store, &mut cache, t0 + 3, "one batch in flight").await;
    assert_eq!((r.rebuilt, r.rows, r.gaps), (false, rows_of(&later), 1));

    blocker.batch_execute("COMMIT").await.unwrap();
    writer.await.unwrap().unwrap();
    let r = round(&store, &mut cache, t0 + 4, "the held batch committed").await;
    assert_eq!(
        (r.rebuilt, r.rows, r.gaps),
        (false, held_rows, 0),
        "the gap filled"
    );

    // A number given and rolled back is waited for until no window could need its rows.
    blocker
        .batch_execute("BEGIN; SELECT nextval('sw_recent_seq'); ROLLBACK")
        .await
        .unwrap();
    let b = sample::batch("a", 4, 200, (t0 + 5) * NS);
    store.store_batch(&b, (t0 + 5) * NS).await.unwrap();
    let r = round(&store, &mut cache, t0 + 6, "a gap").await;
    assert_eq!((r.rows, r.gaps), (rows_of(&b), 1));
    let r = round(
        &store,
        &mut cache,
        t0 + 40,
        "the window moved past everything",
    )
    .await;
    assert_eq!(
        (r.rebuilt, r.rows, r.gaps),
        (false, 0, 0),
        "the gap given up"
    );

    // Built anew once a REBUILD_S, from a full read.
    let b = sample::batch("a", 5, 200, (t0 + 41) * NS);
    store.store_batch(&b, (t0 + 41) * NS).await.unwrap();
    let later_s = t0 + 6 + REBUILD_S as i64;
    let r = round(&store, &mut cache, later_s, "rebuilt").await;
    assert!(r.rebuilt, "{r:?}");
    // A window longer than the horizon is not answered from the cache.
    assert!(cache
        .groups(
            &GroupFilter::default(),
            &by(&["class"]),
            (later_s - 60) as f64,
            later_s as f64
        )
        .is_none());
}

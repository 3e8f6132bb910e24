//! `sw_recent_aggregates`: what arrived in the last seconds, for alert rules.

use stormwatch_model::{DependencyClass, SpanFlag};
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

//! What the alert leader keeps of `sw_recent_aggregates` between rounds ([`RecentCache`]): the
//! rows of the last seconds merged per arrival bucket and key, brought up to date each round by
//! reading only the batches committed since.
//!
//! Every batch's rows carry its number from `sw_recent_seq` (migration 0030), taken inside the
//! batch's transaction. Numbers are given in one order and committed in another, so a round
//! reads the numbers above the highest it has seen and the numbers below it it has not seen
//! yet (a batch numbered, not yet committed: a *gap*). A gap is waited for as long as its rows
//! could still fall in the cached windows: its batch arrived before it was numbered, hence
//! before the gap was noticed, so once that moment has left the horizon, its rows would be
//! left out anyway (and a batch rolled back leaves a gap that is never filled).
//!
//! The cache is built anew from a full read of its horizon once a [`REBUILD_S`] and whenever
//! the horizon changes, so that what a round could miss (rows of a collector from before
//! migration 0030, a number jump past [`IN_FLIGHT_MAX`]) is in it again within that time.

use std::collections::{BTreeMap, BTreeSet};

use stormwatch_model::Histogram;

use crate::histogram_codec::histogram_of;
use crate::recent::{bucket_floor, BUCKET_S};
use crate::signals::{Group, GroupFilter, Labels};
use crate::{Store, StoreError};

/// Batches that may be numbered but not committed at one time, in all collectors together:
/// numbers this far below the highest are waited for. Each batch in flight holds one database
/// connection (16 a collector by default).
const IN_FLIGHT_MAX: i64 = 256;
/// How often the cache is built anew from a full read of its horizon.
pub const REBUILD_S: f64 = 60.0;

/// The columns both reads select; the histogram starts at column 9.
const COLUMNS: &str = "seq, extract(epoch FROM arrived)::int8, service, class, peer, operation,
                       status_class, count, errors, hist_zero, hist_keys, hist_counts";

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    service: String,
    class: String,
    peer: String,
    operation: String,
    status_class: String,
}

impl Key {
    fn matches(&self, f: &GroupFilter) -> bool {
        f.service.as_ref().is_none_or(|s| *s == self.service)
            && f.class.is_none_or(|c| c.as_str() == self.class)
            && f.peer.as_ref().is_none_or(|p| *p == self.peer)
            && f.operation.as_ref().is_none_or(|o| *o == self.operation)
    }

    fn labels(&self, group_by: &[String]) -> Labels {
        let mut labels = Labels::new();
        for (name, value) in [
            ("service", &self.service),
            ("class", &self.class),
            ("peer", &self.peer),
            ("operation", &self.operation),
        ] {
            if group_by.iter().any(|g| g == name) {
                labels.insert(name.to_owned(), value.clone());
            }
        }
        labels
    }
}

#[derive(Debug, Default)]
struct Cell {
    count: u64,
    errors: u64,
    histogram: Histogram,
}

/// What one [`Store::refresh_recent`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refreshed {
    /// Rows read from the database.
    pub rows: u64,
    /// True when the cache was built anew from a full read of its horizon.
    pub rebuilt: bool,
    /// Numbers given to batches not committed (or given up) yet, waited for.
    pub gaps: usize,
}

/// The recent aggregates of the last `horizon` seconds, merged per arrival bucket and key.
#[derive(Debug, Default)]
pub struct RecentCache {
    horizon_s: i64,
    /// Arrival bucket (Unix seconds) → key → what arrived in it.
    buckets: BTreeMap<i64, BTreeMap<Key, Cell>>,
    /// The highest number accounted for; `None` until built.
    high: Option<i64>,
    /// Numbers at or below `high` not seen yet → when first missed (Unix seconds).
    gaps: BTreeMap<i64, f64>,
    built_s: f64,
    /// The round the cache is up to date for, when its last refresh succeeded.
    fresh_s: Option<f64>,
}

impl RecentCache {
    /// The groups of what arrived since `since_s` (whole buckets from the one holding it, as
    /// [`Store::recent_groups`] reads them), when the cache holds them for the round at
    /// `now_s`; `None` when it does not (not refreshed for this round, or `since_s` is before
    /// its horizon).
    pub fn groups(
        &self,
        filter: &GroupFilter,
        group_by: &[String],
        since_s: f64,
        now_s: f64,
    ) -> Option<Vec<Group>> {
        if self.fresh_s != Some(now_s)
            || bucket_floor(since_s) < bucket_floor(now_s - self.horizon_s as f64)
        {
            return None;
        }
        let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
        for cells in self.buckets.range(bucket_floor(since_s)..).map(|(_, c)| c) {
            for (key, cell) in cells.iter().filter(|(k, _)| k.matches(filter)) {
                let labels = key.labels(group_by);
                groups
                    .entry(labels.clone())
                    .or_insert_with(|| Group::new(labels))
                    .add_counts(&key.status_class, cell.count, cell.errors, &cell.histogram);
            }
        }
        Some(groups.into_values().collect())
    }

    /// Adds the rows read; returns the numbers they carry.
    fn apply(
        &mut self,
        rows: &[tokio_postgres::Row],
        from: i64,
    ) -> Result<BTreeSet<i64>, StoreError> {
        let mut seen = BTreeSet::new();
        for r in rows {
            if let Some(seq) = r.get::<_, Option<i64>>(0) {
                seen.insert(seq);
            }
            let arrived: i64 = r.get(1);
            if arrived < from {
                continue;
            }
            let key = Key {
                service: r.get(2),
                class: r.get(3),
                peer: r.get(4),
                operation: r.get(5),
                status_class: r.get(6),
            };
            let cell = self
                .buckets
                .entry(arrived)
                .or_default()
                .entry(key)
                .or_default();
            cell.count += r.get::<_, i64>(7).max(0) as u64;
            cell.errors += r.get::<_, i64>(8).max(0) as u64;
            cell.histogram.merge(&histogram_of(r, 9)?);
        }
        Ok(seen)
    }

    /// Accounts for the numbers `seen` up to `top` (at least the highest seen): numbers not
    /// seen become gaps, seen gaps are filled, and gaps no window can need any more expire.
    fn account(&mut self, seen: &BTreeSet<i64>, top: i64, now_s: f64) {
        let top = seen.last().map_or(top, |&s| s.max(top));
        let below = self
            .high
            .unwrap_or(i64::MIN)
            .max(top - IN_FLIGHT_MAX)
            .max(0);
        for n in below + 1..=top {
            if !seen.contains(&n) {
                self.gaps.entry(n).or_insert(now_s);
            }
        }
        for n in seen {
            self.gaps.remove(n);
        }
        let expired = now_s - (self.horizon_s + BUCKET_S) as f64;
        self.gaps.retain(|_, missed| *missed >= expired);
        self.high = Some(self.high.map_or(top, |h| h.max(top)));
    }
}

impl Store {
    /// Brings `cache` up to date for the round at `now_s`, keeping `horizon_s` seconds (whole
    /// buckets from the one holding `now_s - horizon_s`). On an error the cache answers no
    /// round until a refresh succeeds.
    pub async fn refresh_recent(
        &self,
        cache: &mut RecentCache,
        horizon_s: i64,
        now_s: f64,
    ) -> Result<Refreshed, StoreError> {
        cache.fresh_s = None;
        let client = self.client().await?;
        let from = bucket_floor(now_s - horizon_s as f64);
        let rebuild = cache.high.is_none()
            || cache.horizon_s != horizon_s
            || !(cache.built_s..cache.built_s + REBUILD_S).contains(&now_s);
        let mut refreshed = Refreshed {
            rebuilt: rebuild,
            ..Refreshed::default()
        };
        if rebuild {
            *cache = RecentCache {
                horizon_s,
                built_s: now_s,
                ..RecentCache::default()
            };
            // The last number given before the read: batches numbered up to it and committed
            // are in the read; those not committed yet are the gaps.
            let last: i64 = client
                .query_one(
                    "SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END
                       FROM sw_recent_seq",
                    &[],
                )
                .await?
                .get(0);
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sw_recent_aggregates
                      WHERE arrived >= to_timestamp($1) OR seq > $2"
                ))
                .await?;
            let rows = client
                .query(&stmt, &[&(from as f64), &(last - IN_FLIGHT_MAX)])
                .await?;
            let seen = cache.apply(&rows, from)?;
            cache.account(&seen, last, now_s);
            refreshed.rows = rows.len() as u64;
        } else {
            let high = cache.high.unwrap_or(0);
            let gaps: Vec<i64> = cache.gaps.keys().copied().collect();
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM sw_recent_aggregates
                      WHERE seq > $1 OR seq = ANY($2)"
                ))
                .await?;
            let rows = client.query(&stmt, &[&high, &gaps]).await?;
            let seen = cache.apply(&rows, from)?;
            cache.account(&seen, high, now_s);
            refreshed.rows = rows.len() as u64;
        }
        cache.buckets = cache.buckets.split_off(&from);
        refreshed.gaps = cache.gaps.len();
        cache.fresh_s = Some(now_s);
        Ok(refreshed)
    }
}

//! `sw_recent_aggregates`: aggregates by when they arrived, in [`BUCKET_S`]-second buckets,
//! kept for [`KEEP_S`] seconds — what alert rules read to judge the last seconds of traffic
//! (migration 0012 says why per-minute rows cannot).

use std::collections::BTreeMap;

use postgres_types::Type;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{Aggregate, DependencyClass, Histogram, SpanFlag, SpanRef};

use crate::copy::{timestamp, CopyIn};
use crate::histogram_codec::counts_i64;
use crate::signals::{row_labels, FlagCount, Group, GroupFilter, Labels};
use crate::{saturating_i64, Store, StoreError};

/// Flags counted per minute for alert rules (see migrations/0002_alerts.sql). Slow and error
/// are left out: the aggregates already count them exactly.
pub(crate) const COUNTED_FLAGS: [SpanFlag; 3] = [
    SpanFlag::FullScanSuspect,
    SpanFlag::ReplicaLag,
    SpanFlag::ConnectFailure,
];

/// What [`Store::prune_recent`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrunedRecent {
    /// Ring slots of `sw_recent_aggregates` emptied.
    pub slots: u64,
    /// Rows of `sw_recent_flag_counts` deleted.
    pub flag_rows: u64,
}

/// Width of an arrival bucket.
pub const BUCKET_S: i64 = 5;
/// How long rows are kept (rules look back at most a few minutes).
pub const KEEP_S: i64 = 900;
/// `sw_recent_aggregates` is a ring of [`SLOTS`] partitions (migration 0029), one a [`SLOT_S`]
/// seconds of arrival: rows go to the slot of their arrival bucket, and [`Store::prune_recent`]
/// empties the slots whose time has left the [`KEEP_S`] rules read.
pub const SLOT_S: i64 = 60;
/// Partitions of the ring; migration 0029 creates this many.
pub const SLOTS: i64 = 20;
/// Slots that may hold rows readers still want: the [`KEEP_S`] before the current slot, the
/// current slot, and the next (a collector whose clock runs ahead writes there).
const LIVE_SLOTS: i64 = KEEP_S / SLOT_S + 2;

/// The ring slot of what arrived at `arrived_s`.
fn slot_of(arrived_s: i64) -> i16 {
    arrived_s.div_euclid(SLOT_S).rem_euclid(SLOTS) as i16
}

/// Aggregates of a minute older than this, against the arrival time, are history (a spool
/// replayed after an outage), not "now": they are not written here.
pub const MAX_AGE_S: i64 = 120;

/// True when something that ended at `end_ns` and arrived at `now_ns` is "now" rather than
/// history (see [`MAX_AGE_S`]).
pub(crate) fn is_recent(end_ns: i64, now_ns: i64) -> bool {
    end_ns.div_euclid(1_000_000_000) + MAX_AGE_S >= now_ns.div_euclid(1_000_000_000)
}

fn bucket_of(now_ns: i64) -> i64 {
    let now_s = now_ns.div_euclid(1_000_000_000);
    now_s - now_s.rem_euclid(BUCKET_S)
}

/// The start of the bucket holding `t_s` (Unix seconds): where reads "since `t_s`" begin.
pub(crate) fn bucket_floor(t_s: f64) -> i64 {
    let t = t_s.floor() as i64;
    t - t.rem_euclid(BUCKET_S)
}

/// Adds the counted flags of `spans` (already filtered by [`is_recent`]) to
/// `sw_recent_flag_counts`, in the arrival bucket of `now_ns`, in key order.
pub(crate) async fn record_flags(
    tx: &tokio_postgres::Transaction<'_>,
    spans: &[&SpanRef<'_>],
    now_ns: i64,
) -> Result<(), StoreError> {
    let mut counts: BTreeMap<(&str, &str, &str, &str), i64> = BTreeMap::new();
    for s in spans {
        for flag in COUNTED_FLAGS {
            if s.flags.contains(&(flag as i32)) {
                *counts
                    .entry((&*s.service, &*s.operation, &*s.peer, flag.as_str()))
                    .or_default() += 1;
            }
        }
    }
    if counts.is_empty() {
        return Ok(());
    }
    let (mut services, mut ops, mut peers, mut flags, mut ns) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((service, op, peer, flag), n) in &counts {
        services.push(*service);
        ops.push(*op);
        peers.push(*peer);
        flags.push(*flag);
        ns.push(*n);
    }
    tx.execute(
        "INSERT INTO sw_recent_flag_counts AS f (arrived, service, operation, peer, flag, count)
         SELECT to_timestamp($1), s, o, p, fl, n
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::int8[])
                AS t(s, o, p, fl, n)
         ON CONFLICT (arrived, service, operation, peer, flag)
         DO UPDATE SET count = f.count + excluded.count",
        &[
            &(bucket_of(now_ns) as f64),
            &services,
            &ops,
            &peers,
            &flags,
            &ns,
        ],
    )
    .await?;
    Ok(())
}

type Key<'a> = (&'a str, &'static str, &'a str, &'a str, &'a str);

/// Writes the aggregates of one batch, arrived at `now_ns`, inside the batch's transaction:
/// merged per key, one row per key appended (migration 0027: rows of other batches in the
/// same bucket are merged by the readers, not here), all with the batch's number from
/// `sw_recent_seq` (migration 0030).
pub(crate) async fn record(
    tx: &tokio_postgres::Transaction<'_>,
    aggregates: &[Aggregate],
    now_ns: i64,
) -> Result<u64, StoreError> {
    let bucket = bucket_of(now_ns);
    let mut merged: BTreeMap<Key, (u64, u64, Histogram)> = BTreeMap::new();
    // A minute's aggregates count spans that ended up to its last second.
    for a in aggregates
        .iter()
        .filter(|a| is_recent((a.minute + 60) * 1_000_000_000, now_ns))
    {
        let key = (
            a.service.as_str(),
            DependencyClass::from_number(a.class)
                .unwrap_or(DependencyClass::Internal)
                .as_str(),
            a.peer.as_str(),
            a.operation.as_str(),
            a.status_class.as_str(),
        );
        let m = merged.entry(key).or_default();
        m.0 = m.0.saturating_add(a.count);
        m.1 = m.1.saturating_add(a.errors);
        if let Some(h) = &a.histogram {
            m.2.merge(h);
        }
    }
    if merged.is_empty() {
        return Ok(0);
    }
    let arrived = timestamp(bucket);
    let slot = slot_of(bucket);
    // The batch's number: readers of the ring read only numbers they have not seen
    // (crate::recent_cache).
    let seq: i64 = tx
        .query_one("SELECT nextval('sw_recent_seq')", &[])
        .await?
        .get(0);
    let mut copy = CopyIn::start(tx, "sw_recent_aggregates", RECENT_COLUMNS).await?;
    let mut counts: Vec<i64> = Vec::new();
    for ((service, class, peer, op, status), (count, errs, h)) in &merged {
        counts_i64(h, &mut counts);
        copy.write(&[
            &arrived,
            service,
            class,
            peer,
            op,
            status,
            &saturating_i64(*count),
            &saturating_i64(*errs),
            &saturating_i64(h.zero_count),
            &h.keys,
            &counts,
            &slot,
            &seq,
        ])
        .await?;
    }
    copy.finish().await
}

/// Columns of `sw_recent_aggregates` a batch appends, in COPY order, with their types.
const RECENT_COLUMNS: &[(&str, Type)] = &[
    ("arrived", Type::TIMESTAMPTZ),
    ("service", Type::TEXT),
    ("class", Type::TEXT),
    ("peer", Type::TEXT),
    ("operation", Type::TEXT),
    ("status_class", Type::TEXT),
    ("count", Type::INT8),
    ("errors", Type::INT8),
    ("hist_zero", Type::INT8),
    ("hist_keys", Type::INT4_ARRAY),
    ("hist_counts", Type::INT8_ARRAY),
    ("slot", Type::INT2),
    ("seq", Type::INT8),
];

impl Store {
    /// What arrived since `since_s` (Unix seconds; whole buckets from the one holding it),
    /// grouped by the label names in `group_by` (`service`, `class`, `peer`, `operation`).
    pub async fn recent_groups(
        &self,
        filter: &GroupFilter,
        group_by: &[String],
        since_s: f64,
    ) -> Result<Vec<Group>, StoreError> {
        let client = self.client().await?;
        let class = filter.class.map(|c| c.as_str());
        let from = bucket_floor(since_s);
        let stmt = client
            .prepare_cached(
                "SELECT service, class, peer, operation, status_class, count, errors,
                        hist_zero, hist_keys, hist_counts
                   FROM sw_recent_aggregates
                  WHERE arrived >= to_timestamp($1)
                    AND ($2::text IS NULL OR service = $2)
                    AND ($3::text IS NULL OR class = $3)
                    AND ($4::text IS NULL OR peer = $4)
                    AND ($5::text IS NULL OR operation = $5)",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &(from as f64),
                    &filter.service,
                    &class,
                    &filter.peer,
                    &filter.operation,
                ],
            )
            .await?;
        let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
        for r in &rows {
            let labels = row_labels(r, group_by, 0);
            groups
                .entry(labels.clone())
                .or_insert_with(|| Group::new(labels))
                .add_row(r, 4, 7)?;
        }
        Ok(groups.into_values().collect())
    }

    /// Flagged spans that arrived since `since_s`, per (service, operation, peer).
    pub async fn recent_flag_counts(
        &self,
        flag: &str,
        since_s: f64,
    ) -> Result<Vec<FlagCount>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT service, operation, peer, sum(count)::int8 FROM sw_recent_flag_counts
                  WHERE flag = $1 AND arrived >= to_timestamp($2)
                  GROUP BY service, operation, peer ORDER BY service, operation, peer",
                &[&flag, &(bucket_floor(since_s) as f64)],
            )
            .await?;
        Ok(rows.iter().map(FlagCount::from_row).collect())
    }

    /// Drops what no rule reads any more, as of `now_s`: empties the ring slots of
    /// `sw_recent_aggregates` outside the [`LIVE_SLOTS`] (each then holds rows at least
    /// [`KEEP_S`] old) and deletes the flag counts older than [`KEEP_S`]. The collector runs it
    /// once a minute; a slot missed once is emptied at the next run.
    pub async fn prune_recent(&self, now_s: f64) -> Result<PrunedRecent, StoreError> {
        let mut client = self.client().await?;
        let now_slot = (now_s.floor() as i64).div_euclid(SLOT_S);
        let mut pruned = PrunedRecent::default();
        for ahead in 2..=SLOTS - LIVE_SLOTS + 1 {
            let table = format!(
                "sw_recent_aggregates_s{}",
                (now_slot + ahead).rem_euclid(SLOTS)
            );
            let tx = client.transaction().await?;
            let full: bool = tx
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {table})"), &[])
                .await?
                .get(0);
            if full {
                // Readers of the ring wait on the TRUNCATE's lock: give up rather than queue
                // behind a long reader, and try again at the next run.
                tx.batch_execute(&format!("SET LOCAL lock_timeout = '2s'; TRUNCATE {table}"))
                    .await?;
                pruned.slots += 1;
            }
            tx.commit().await?;
        }
        pruned.flag_rows = client
            .execute(
                "DELETE FROM sw_recent_flag_counts WHERE arrived < to_timestamp($1)",
                &[&(now_s - KEEP_S as f64)],
            )
            .await?;
        Ok(pruned)
    }
}

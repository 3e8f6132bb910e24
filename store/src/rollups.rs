//! The four rollups of `sw_aggregates` that the dashboard reads instead of it, kept at ingest:
//!
//! - `DEPENDENCIES`, `sw_dependency_minutes` (migration 0004): one row per (minute, class,
//!   peer) of the [`DEPENDENCY_CLASSES`], every service, operation and status class merged;
//! - `SERVICES`, `sw_service_minutes` (migration 0006): one row per (minute, service, entry),
//!   where entry is `http_server` for a service's server spans and `other` for the rest of its
//!   spans (`service_entry`), every operation, peer and status class merged;
//! - `DEPENDENCY_HOURS` and `SERVICE_HOURS` (migration 0008): the same per hour.
//!
//! [`Store::store_batch`](crate::Store::store_batch) appends a batch's rows for them to
//! `sw_rollup_deltas` (migration 0023) in the batch's transaction, from the same merged
//! aggregates it writes to `sw_aggregates`, and [`Store::fold_rollups`] (the collector runs it
//! every second, one collector at a time) merges the deltas into the four rollups and deletes
//! them in one transaction. Readers add the deltas not yet folded, so a rollup read is always
//! exactly the stored aggregates summed (counts) and merged (histograms). Batches used to
//! upsert the rollups themselves; a peer's rows are shared by every service calling it, so at
//! 50 agents batches queued on each other's row locks (docs/benchmarks.md, "Real shape").
//!
//! The dependencies page reads them: over an hour of the benchmark's traffic that is a tenth
//! of the rows and a third of the histogram buckets PostgreSQL sends, and sending array
//! elements is most of what reading costs. So the pages read the histogram packed in one
//! `bytea` (`histogram_codec::pack`), which new rows get from here and merged rows from
//! `sw_hist_merge_packed` (migration 0005), next to the arrays the merge works on.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use stormwatch_model::Histogram;

use crate::aggregates::{http_counts, AggregateRow};
use crate::histogram_codec::{histogram_literals, pack, unpack};
use crate::{saturating_i64, Store, StoreError};

/// Classes that are dependencies (waited on), as opposed to the request itself: the classes
/// of `DEPENDENCIES` rows.
pub const DEPENDENCY_CLASSES: &[&str] = &["db", "redis", "http_client", "messaging"];

impl DependencyMinute {
    /// Adds the counts of `o` and the histogram `hist`, saturating like the batch's own merge
    /// (PostgreSQL's bigint is the real bound).
    fn add(&mut self, o: &DependencyMinute, hist: &Histogram) {
        self.count = self.count.saturating_add(o.count);
        self.errors = self.errors.saturating_add(o.errors);
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.http_5xx = self.http_5xx.saturating_add(o.http_5xx);
        self.http_503 = self.http_503.saturating_add(o.http_503);
        self.hist.merge(hist);
    }
}

/// One rollup row being built from a batch's aggregates.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct DependencyMinute {
    pub count: i64,
    pub errors: i64,
    pub sum_ns: i64,
    pub http_5xx: i64,
    pub http_503: i64,
    pub hist: Histogram,
}

/// The key of a rollup row: Unix seconds of its minute (or hour), then its two key columns.
pub(crate) type RollupKey<'a> = (i64, &'a str, &'a str);

/// The `sw_dependency_minutes` rows of one batch's aggregate rows (those of the
/// [`DEPENDENCY_CLASSES`]), in key order (minute, class, peer), so concurrent batches lock
/// rollup rows in the same order and cannot deadlock.
pub(crate) fn rollup<'a>(
    rows: &'a [AggregateRow<'a>],
) -> BTreeMap<RollupKey<'a>, DependencyMinute> {
    rollup_by(
        rows.iter()
            .filter(|r| DEPENDENCY_CLASSES.contains(&r.class)),
        |r| (r.class, r.peer),
    )
}

/// The `sw_service_minutes` rows of one batch's aggregate rows, in key order (minute,
/// service, entry); see [`rollup`].
pub(crate) fn rollup_services<'a>(
    rows: &'a [AggregateRow<'a>],
) -> BTreeMap<RollupKey<'a>, DependencyMinute> {
    rollup_by(rows.iter(), |r| (r.service, service_entry(r.class)))
}

/// The entry of a service's row in `sw_service_minutes`: its server spans, or all the others.
pub(crate) fn service_entry(class: &str) -> &'static str {
    if class == "http_server" {
        "http_server"
    } else {
        "other"
    }
}

/// Rows summed and merged per (minute, `keys` of the row), in key order.
fn rollup_by<'a>(
    rows: impl Iterator<Item = &'a AggregateRow<'a>>,
    keys: impl Fn(&'a AggregateRow<'a>) -> (&'a str, &'a str),
) -> BTreeMap<RollupKey<'a>, DependencyMinute> {
    let mut out: BTreeMap<RollupKey<'a>, DependencyMinute> = BTreeMap::new();
    for r in rows {
        let (k1, k2) = keys(r);
        let (x5, x503) = http_counts(r.status_class, r.count.max(0) as u64);
        out.entry((r.minute, k1, k2)).or_default().add(
            &DependencyMinute {
                count: r.count,
                errors: r.errors,
                sum_ns: r.sum_ns,
                http_5xx: x5 as i64,
                http_503: x503 as i64,
                hist: Histogram::default(),
            },
            &r.hist,
        );
    }
    out
}

/// Appends the rollup rows of a batch's aggregate rows (as stored in `sw_aggregates` by the
/// same transaction) to `sw_rollup_deltas`, for [`Store::fold_rollups`] to fold into the four
/// rollups: a plain insert, so concurrent batches never wait on each other's rollup rows.
pub(crate) async fn store_rollups(
    tx: &Transaction<'_>,
    rows: &[AggregateRow<'_>],
) -> Result<(), StoreError> {
    let services = rollup_services(rows);
    let dependencies = rollup(rows);
    let n = services.len() + dependencies.len();
    if n == 0 {
        return Ok(());
    }
    let mut rollups: Vec<i16> = Vec::with_capacity(n);
    let mut minutes = Vec::with_capacity(n);
    let (mut k1s, mut k2s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut errors, mut sums) = (vec![], vec![], vec![]);
    let (mut x5, mut x503, mut zeros, mut packed) = (vec![], vec![], vec![], vec![]);
    for (id, rows) in [
        (DEPENDENCY_DELTAS, &dependencies),
        (SERVICE_DELTAS, &services),
    ] {
        for ((minute, k1, k2), m) in rows {
            rollups.push(id);
            minutes.push(*minute as f64);
            k1s.push(*k1);
            k2s.push(*k2);
            counts.push(m.count);
            errors.push(m.errors);
            sums.push(m.sum_ns);
            x5.push(m.http_5xx);
            x503.push(m.http_503);
            zeros.push(saturating_i64(m.hist.zero_count));
            packed.push(pack(&m.hist));
        }
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_rollup_deltas
                 (rollup, minute, k1, k2, count, errors, sum_ns, http_5xx, http_503, hist_zero,
                  hist_packed)
             SELECT r, to_timestamp(m), a, b, n, e, su, x5, x503, z, hp
               FROM unnest($1::int2[], $2::float8[], $3::text[], $4::text[], $5::int8[],
                           $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[],
                           $11::bytea[])
                    AS t(r, m, a, b, n, e, su, x5, x503, z, hp)",
        )
        .await?;
    tx.execute(
        &stmt,
        &[
            &rollups, &minutes, &k1s, &k2s, &counts, &errors, &sums, &x5, &x503, &zeros, &packed,
        ],
    )
    .await?;
    Ok(())
}

/// The rows of `sw_rollup_deltas` not yet folded into the rollup `rollup`, between `$1` and
/// `$2` (Unix seconds), as rollup rows are read: (key 1, key 2, Unix seconds, count, errors,
/// sum_ns, http_5xx, http_503, hist_zero, hist_packed). With `hours`, a delta of a minute in
/// `[$3, $4)` (the whole hours a window reads from an hourly rollup, see [`whole_hours`])
/// takes the start of its hour, as the hour row it will be folded into.
pub(crate) fn unfolded(rollup: i16, hours: bool) -> String {
    let t = if hours {
        "CASE WHEN minute >= to_timestamp($3) AND minute < to_timestamp($4)
              THEN (floor(extract(epoch FROM minute) / 3600) * 3600)::int8
              ELSE extract(epoch FROM minute)::int8 END"
    } else {
        "extract(epoch FROM minute)::int8"
    };
    format!(
        "SELECT k1, k2, {t}, count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_packed
           FROM sw_rollup_deltas
          WHERE rollup = {rollup} AND minute >= to_timestamp($1) AND minute < to_timestamp($2)"
    )
}

/// Seconds since the Unix epoch of a `timestamptz`.
pub(crate) fn unix_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    }
}

/// `sw_rollup_deltas.rollup` of dependency rows (class, peer) and of service rows (service,
/// entry).
pub(crate) const DEPENDENCY_DELTAS: i16 = 0;
pub(crate) const SERVICE_DELTAS: i16 = 1;

/// Advisory lock key of the fold ("stormwatch fold"): one folder at a time across collectors.
const FOLD_LOCK: i64 = 0x5357_464f_4c44_0001;

/// What one [`Store::fold_rollups`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Folded {
    /// Delta rows read and deleted.
    pub deltas: u64,
    /// Of those, rows of days past retention, deleted without folding.
    pub expired: u64,
    /// Rollup rows written (minutes and hours of both rollups).
    pub rows: u64,
    /// False when another collector held the fold.
    pub ran: bool,
}

impl Store {
    /// Folds the rollup deltas stored so far into the service and dependency rollups, per
    /// minute and per hour, and deletes them, in one transaction: a reader sees each batch's
    /// rows either as deltas or folded, never both. Skipped (`ran: false`) while another
    /// collector folds. Deltas of days past retention are deleted unfolded (their partitions
    /// may be gone).
    pub async fn fold_rollups(&self, now_ns: i64) -> Result<Folded, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&FOLD_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(Folded::default());
        }
        let rows = tx
            .query(
                // The minute as it is: Citus allows no function that is not immutable in a
                // RETURNING clause, and extract() from a timestamptz is only stable.
                "DELETE FROM sw_rollup_deltas
                 RETURNING rollup, minute, k1, k2, count, errors, sum_ns, http_5xx, http_503,
                           hist_zero, hist_packed",
                &[],
            )
            .await?;
        let oldest_s = self.oldest_kept_day(now_ns) * 86_400;
        let mut out = Folded {
            deltas: rows.len() as u64,
            ran: true,
            ..Default::default()
        };
        let mut services: BTreeMap<RollupKey<'_>, DependencyMinute> = BTreeMap::new();
        let mut dependencies: BTreeMap<RollupKey<'_>, DependencyMinute> = BTreeMap::new();
        let mut days = Vec::new();
        for r in &rows {
            let minute = unix_seconds(r.get(1));
            if minute < oldest_s {
                out.expired += 1;
                continue;
            }
            days.push(minute.div_euclid(86_400));
            let into = if r.get::<_, i16>(0) == SERVICE_DELTAS {
                &mut services
            } else {
                &mut dependencies
            };
            let delta = DependencyMinute {
                count: r.get(4),
                errors: r.get(5),
                sum_ns: r.get(6),
                http_5xx: r.get(7),
                http_503: r.get(8),
                hist: Histogram::default(),
            };
            let hist = unpack(r.get(9), r.get(10))?;
            into.entry((minute, r.get(2), r.get(3)))
                .or_default()
                .add(&delta, &hist);
        }
        days.sort_unstable();
        days.dedup();
        self.ensure_partitions(&days).await?;
        out.rows += store(&tx, &SERVICES, &services).await?;
        out.rows += store(&tx, &SERVICE_HOURS, &by_hour(&services)).await?;
        out.rows += store(&tx, &DEPENDENCIES, &dependencies).await?;
        out.rows += store(&tx, &DEPENDENCY_HOURS, &by_hour(&dependencies)).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// A rollup table: its time column (`minute`, or `hour`) and its two key columns.
pub(crate) struct Rollup {
    pub table: &'static str,
    pub time: &'static str,
    pub keys: (&'static str, &'static str),
}

/// `sw_dependency_minutes`: (minute, class, peer), for the dependencies page.
pub(crate) const DEPENDENCIES: Rollup = Rollup {
    table: "sw_dependency_minutes",
    time: "minute",
    keys: ("class", "peer"),
};

/// `sw_service_minutes` (migration 0006): (minute, service, entry), for the overview.
pub(crate) const SERVICES: Rollup = Rollup {
    table: "sw_service_minutes",
    time: "minute",
    keys: ("service", "entry"),
};

/// `sw_service_hours` (migration 0008): (hour, service, entry), for the overview over long
/// windows.
pub(crate) const SERVICE_HOURS: Rollup = Rollup {
    table: "sw_service_hours",
    time: "hour",
    keys: ("service", "entry"),
};

/// `sw_dependency_hours` (migration 0008): (hour, class, peer), for the dependencies page over
/// long windows.
pub(crate) const DEPENDENCY_HOURS: Rollup = Rollup {
    table: "sw_dependency_hours",
    time: "hour",
    keys: ("class", "peer"),
};

/// Rollup rows (Unix seconds of their minute) summed and merged per hour, in key order.
fn by_hour<'a>(
    rows: &BTreeMap<RollupKey<'a>, DependencyMinute>,
) -> BTreeMap<RollupKey<'a>, DependencyMinute> {
    let mut out: BTreeMap<RollupKey<'_>, DependencyMinute> = BTreeMap::new();
    for ((minute, k1, k2), m) in rows {
        out.entry((minute.div_euclid(3_600) * 3_600, *k1, *k2))
            .or_default()
            .add(m, &m.hist);
    }
    out
}

/// The whole hours `[h0, h1)` of a window read by steps of `step` seconds, to be read from an
/// hourly rollup, the minutes of `[from, h0)` and `[h1, to)` coming from the minute rollup:
/// totals stay exact to the minute, and a step holds the hours that start in it. Steps under
/// an hour, or a window without a whole hour, read minutes only (`h0 = h1 = to`).
pub(crate) fn whole_hours(from: i64, to: i64, step: i64) -> (i64, i64) {
    let (h0, h1) = (
        (from + 3_599).div_euclid(3_600) * 3_600,
        to.div_euclid(3_600) * 3_600,
    );
    if step >= 3_600 && h1 > h0 {
        (h0, h1)
    } else {
        (to, to)
    }
}

/// Adds `rows` into the rollup `into` (inserting or merging), in their order; returns how
/// many rows it touched.
async fn store(
    tx: &Transaction<'_>,
    into: &Rollup,
    rows: &BTreeMap<RollupKey<'_>, DependencyMinute>,
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let n = rows.len();
    let mut minutes = Vec::with_capacity(n);
    let (mut classes, mut peers) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut counts, mut errors, mut sums) = (vec![], vec![], vec![]);
    let (mut x5, mut x503, mut zeros) = (vec![], vec![], vec![]);
    let (mut keys, mut hcounts, mut packed) = (vec![], vec![], vec![]);
    for ((minute, class, peer), m) in rows {
        minutes.push(*minute as f64);
        classes.push(*class);
        peers.push(*peer);
        counts.push(m.count);
        errors.push(m.errors);
        sums.push(m.sum_ns);
        x5.push(m.http_5xx);
        x503.push(m.http_503);
        zeros.push(saturating_i64(m.hist.zero_count));
        let (k, c) = histogram_literals(&m.hist);
        keys.push(k);
        hcounts.push(c);
        packed.push(pack(&m.hist));
    }
    let Rollup {
        table,
        time,
        keys: (k1, k2),
    } = into;
    let stmt = tx
        .prepare_cached(&format!(
            "INSERT INTO {table} AS d
                 ({time}, {k1}, {k2}, count, errors, sum_ns, http_5xx, http_503,
                  hist_zero, hist_keys, hist_counts, hist_packed)
             SELECT to_timestamp(m), c, p, n, e, su, x5, x503, z, hk::integer[], hc::bigint[], hp
               FROM unnest($1::float8[], $2::text[], $3::text[], $4::int8[], $5::int8[],
                           $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::text[], $11::text[],
                           $12::bytea[])
                    AS t(m, c, p, n, e, su, x5, x503, z, hk, hc, hp)
             ON CONFLICT ({time}, {k1}, {k2}) DO UPDATE SET
                 count = d.count + excluded.count,
                 errors = d.errors + excluded.errors,
                 sum_ns = d.sum_ns + excluded.sum_ns,
                 http_5xx = d.http_5xx + excluded.http_5xx,
                 http_503 = d.http_503 + excluded.http_503,
                 hist_zero = d.hist_zero + excluded.hist_zero,
                 (hist_keys, hist_counts, hist_packed) = (
                     SELECT h.keys, h.counts, h.packed
                       FROM sw_hist_merge_packed(d.hist_keys, d.hist_counts,
                                                 excluded.hist_keys, excluded.hist_counts) h)"
        ))
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &minutes, &classes, &peers, &counts, &errors, &sums, &x5, &x503, &zeros, &keys,
                &hcounts, &packed,
            ],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(keys: &[i32], counts: &[u64], zero: u64) -> Histogram {
        Histogram {
            keys: keys.to_vec(),
            counts: counts.to_vec(),
            zero_count: zero,
        }
    }

    #[test]
    fn rollup_merges_services_operations_and_statuses_of_dependencies_only() {
        let (a, b, c) = (
            hist(&[1, 5], &[2, 1], 1),
            hist(&[3, 5], &[1, 1], 0),
            hist(&[9], &[4], 0),
        );
        let row = |minute, class, peer, status_class, count, errors, sum_ns, h: &Histogram| {
            AggregateRow {
                minute,
                service: "shop",
                class,
                peer,
                operation: "GET",
                status_class,
                count,
                errors,
                sum_ns,
                hist: h.clone(),
            }
        };
        let rows = vec![
            row(60, "redis", "r:6379", "ok", 3, 0, 30, &a),
            row(60, "redis", "r:6379", "error", 2, 2, 20, &b),
            row(60, "http_client", "p:80", "503", 4, 4, 40, &c),
            row(60, "http_server", "", "200", 4, 0, 40, &c),
            row(120, "redis", "r:6379", "ok", 4, 0, 40, &c),
        ];
        let out = rollup(&rows);
        let keys: Vec<_> = out.keys().copied().collect();
        assert_eq!(
            keys,
            vec![
                (60, "http_client", "p:80"),
                (60, "redis", "r:6379"),
                (120, "redis", "r:6379")
            ]
        );
        let redis = &out[&(60, "redis", "r:6379")];
        assert_eq!(
            (redis.count, redis.errors, redis.sum_ns, redis.http_5xx),
            (5, 2, 50, 0)
        );
        assert_eq!(redis.hist, hist(&[1, 3, 5], &[2, 1, 2], 1));
        let client = &out[&(60, "http_client", "p:80")];
        assert_eq!((client.http_5xx, client.http_503), (4, 4));
    }
}

//! Compacting `sw_aggregates`. Batches append their aggregate rows (migration 0028), so a key
//! (minute, service, class, peer, operation, status class) has a row for every batch that
//! counted it: each agent of the service, each flush. Readers add a key's rows up, so they
//! answer the same either way; [`Store::compact_aggregates`] merges them into one row so that
//! what readers scan stays about one row per key.
//!
//! A run deletes the rows of the minutes (of a window) that hold a key more than once and
//! inserts them merged, in one transaction: a reader sees the rows before or after, never both
//! or neither. Rows appended while a run goes on are not in its snapshot: they stay, and the
//! next run merges them. One collector compacts at a time (an advisory lock; the others skip).
//! The collector compacts the last [`RECENT_S`] seconds every few seconds and the last day
//! every hour (a spool replayed late).

use std::collections::BTreeMap;
use std::time::SystemTime;

use stormwatch_model::Histogram;

use crate::aggregates::AggregateRow;
use crate::histogram_codec::histogram_of;
use crate::rollups::unix_seconds;
use crate::{Store, StoreError};

/// Advisory lock key of compaction ("stormwatch compact").
const COMPACT_LOCK: i64 = 0x5357_434d_5054_0001;
/// Most minutes one run compacts, oldest first: bounds a run's transaction.
pub const MAX_MINUTES: i64 = 30;
/// The window the collector compacts every few seconds, back from now.
pub const RECENT_S: i64 = 900;

/// What a run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// False when another collector was compacting.
    pub ran: bool,
    pub minutes: u64,
    pub rows_before: u64,
    pub rows_after: u64,
}

type Key = (SystemTime, String, String, String, String, String);

impl Store {
    /// Merges the rows of each key of `sw_aggregates` with `minute` in `[from_s, to_s)` (Unix
    /// seconds) into one, for at most [`MAX_MINUTES`] minutes that need it, oldest first.
    pub async fn compact_aggregates(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Compacted, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let locked: bool = tx
            .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&COMPACT_LOCK])
            .await?
            .get(0);
        if !locked {
            return Ok(Compacted::default());
        }
        let minutes: Vec<SystemTime> = tx
            .query(
                "SELECT DISTINCT minute FROM (
                     SELECT minute FROM sw_aggregates
                      WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                      GROUP BY minute, service, class, peer, operation, status_class
                     HAVING count(*) > 1) d
                  ORDER BY minute LIMIT $3",
                &[&(from_s as f64), &(to_s as f64), &MAX_MINUTES],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let mut out = Compacted {
            ran: true,
            minutes: minutes.len() as u64,
            ..Default::default()
        };
        if minutes.is_empty() {
            tx.commit().await?;
            return Ok(out);
        }
        // The minute as it is: Citus allows no function that is not immutable in RETURNING.
        let rows = tx
            .query(
                "DELETE FROM sw_aggregates WHERE minute = ANY($1)
                 RETURNING minute, service, class, peer, operation, status_class, count, errors,
                           sum_ns, hist_zero, hist_keys, hist_counts",
                &[&minutes],
            )
            .await?;
        out.rows_before = rows.len() as u64;
        let mut merged: BTreeMap<Key, (i64, i64, i64, Histogram)> = BTreeMap::new();
        for r in &rows {
            let key = (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
            let m = merged.entry(key).or_default();
            m.0 = m.0.saturating_add(r.get(6));
            m.1 = m.1.saturating_add(r.get(7));
            m.2 = m.2.saturating_add(r.get(8));
            m.3.merge(&histogram_of(r, 9)?);
        }
        let rows: Vec<AggregateRow<'_>> = merged
            .iter()
            .map(
                |((minute, service, class, peer, op, status), (n, e, sum, h))| AggregateRow {
                    minute: unix_seconds(*minute),
                    service,
                    class,
                    peer,
                    operation: op,
                    status_class: status,
                    count: *n,
                    errors: *e,
                    sum_ns: *sum,
                    hist: h.clone(),
                },
            )
            .collect();
        out.rows_after = crate::batches::insert_aggregates(&tx, &rows).await?;
        tx.commit().await?;
        Ok(out)
    }
}

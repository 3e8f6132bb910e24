//! Dependency calls per server operation (`sw_entry_calls`, migration 0018): written with each
//! batch, read by incident causes to split an endpoint's added latency by the peers it calls.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{Batch, DependencyClass};

use crate::{saturating_i64, Store, StoreError};

/// Calls of one entry operation to one (class, peer) over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Calls {
    pub count: u64,
    pub sum_ns: u64,
}

/// A service's calls over a window by (entry operation, class, peer).
pub type ByEntry = BTreeMap<(String, String, String), Calls>;

/// Upserts the batch's rows whose minute passes `live`, merged per key and in key order (the
/// same order in every batch, so two batches cannot deadlock); returns how many rows.
pub(crate) async fn store_entry_calls(
    tx: &Transaction<'_>,
    batch: &Batch,
    live: impl Fn(i64) -> bool,
) -> Result<u64, StoreError> {
    let mut merged: BTreeMap<(&str, i64, &str, &str, &str), Calls> = BTreeMap::new();
    for e in &batch.entry_calls {
        if !live(e.minute * 1_000_000_000) {
            continue;
        }
        let class = DependencyClass::from_number(e.class)
            .unwrap_or(DependencyClass::Internal)
            .as_str();
        let c = merged
            .entry((&e.service, e.minute, &e.entry, class, &e.peer))
            .or_default();
        c.count = c.count.saturating_add(e.count);
        c.sum_ns = c.sum_ns.saturating_add(e.sum_ns);
    }
    if merged.is_empty() {
        return Ok(0);
    }
    let n = merged.len();
    let (mut services, mut minutes, mut entries, mut classes, mut peers) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut counts, mut sums) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for ((service, minute, entry, class, peer), c) in &merged {
        services.push(*service);
        minutes.push(*minute as f64);
        entries.push(*entry);
        classes.push(*class);
        peers.push(*peer);
        counts.push(saturating_i64(c.count));
        sums.push(saturating_i64(c.sum_ns));
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_entry_calls AS e (service, minute, entry, class, peer, count, sum_ns)
             SELECT s, to_timestamp(m), en, c, p, n, su
               FROM unnest($1::text[], $2::float8[], $3::text[], $4::text[], $5::text[],
                           $6::int8[], $7::int8[]) AS t(s, m, en, c, p, n, su)
             ON CONFLICT (service, minute, entry, class, peer) DO UPDATE SET
                 count = e.count + excluded.count,
                 sum_ns = e.sum_ns + excluded.sum_ns",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &services, &minutes, &entries, &classes, &peers, &counts, &sums,
            ],
        )
        .await?)
}

impl Store {
    /// The calls of `service` by (entry operation, class, peer) over `[from_s, to_s)` (whole
    /// minutes from `from_s`'s).
    pub async fn entry_calls(
        &self,
        service: &str,
        from_s: i64,
        to_s: i64,
    ) -> Result<ByEntry, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT entry, class, peer, sum(count)::int8, sum(sum_ns)::int8
                   FROM sw_entry_calls
                  WHERE service = $1 AND minute >= to_timestamp($2) AND minute < to_timestamp($3)
                  GROUP BY entry, class, peer",
                &[
                    &service,
                    &((from_s.div_euclid(60) * 60) as f64),
                    &(to_s as f64),
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1), r.get(2)),
                    Calls {
                        count: r.get::<_, i64>(3).max(0) as u64,
                        sum_ns: r.get::<_, i64>(4).max(0) as u64,
                    },
                )
            })
            .collect())
    }
}

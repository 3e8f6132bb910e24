//! Server requests per service, agent (the app server that ran them) and minute
//! (`sw_instance_minutes`, migration 0019): written from each batch's `http_server` aggregates,
//! read by incident causes to tell when one instance answers most of a service's errors or
//! slow requests.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use stormwatch_model::{Batch, DependencyClass};

use crate::{saturating_i64, Store, StoreError};

/// One instance's server requests over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub count: u64,
    pub errors: u64,
    pub http_5xx: u64,
    pub sum_ns: u64,
}

impl Requests {
    fn add(&mut self, o: Requests) {
        self.count = self.count.saturating_add(o.count);
        self.errors = self.errors.saturating_add(o.errors);
        self.http_5xx = self.http_5xx.saturating_add(o.http_5xx);
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
    }

    /// Mean latency, ms (`None` without requests).
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e6)
    }
}

/// Requests by service, then by agent.
pub type ByInstance = BTreeMap<String, BTreeMap<String, Requests>>;

/// Upserts the batch's server requests per (service, minute) whose minute passes `live`.
pub(crate) async fn store_instance_minutes(
    tx: &Transaction<'_>,
    batch: &Batch,
    live: impl Fn(i64) -> bool,
) -> Result<u64, StoreError> {
    let mut merged: BTreeMap<(&str, i64), Requests> = BTreeMap::new();
    for a in &batch.aggregates {
        if a.class != DependencyClass::HttpServer as i32 || !live(a.minute * 1_000_000_000) {
            continue;
        }
        let is_5xx = a.status_class.len() == 3 && a.status_class.starts_with('5');
        merged
            .entry((&a.service, a.minute))
            .or_default()
            .add(Requests {
                count: a.count,
                errors: a.errors,
                http_5xx: if is_5xx { a.count } else { 0 },
                sum_ns: a.sum_ns,
            });
    }
    if merged.is_empty() {
        return Ok(0);
    }
    let services: Vec<&str> = merged.keys().map(|k| k.0).collect();
    let minutes: Vec<f64> = merged.keys().map(|k| k.1 as f64).collect();
    let column = |f: fn(&Requests) -> u64| -> Vec<i64> {
        merged.values().map(|r| saturating_i64(f(r))).collect()
    };
    let (counts, errors) = (column(|r| r.count), column(|r| r.errors));
    let (fives, sums) = (column(|r| r.http_5xx), column(|r| r.sum_ns));
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_instance_minutes AS i
                 (service, minute, agent_id, requests, errors, http_5xx, sum_ns)
             SELECT s, to_timestamp(m), $7, n, e, x, su
               FROM unnest($1::text[], $2::float8[], $3::int8[], $4::int8[], $5::int8[],
                           $6::int8[]) AS t(s, m, n, e, x, su)
             ON CONFLICT (service, minute, agent_id) DO UPDATE SET
                 requests = i.requests + excluded.requests,
                 errors = i.errors + excluded.errors,
                 http_5xx = i.http_5xx + excluded.http_5xx,
                 sum_ns = i.sum_ns + excluded.sum_ns",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &services,
                &minutes,
                &counts,
                &errors,
                &fives,
                &sums,
                &batch.agent_id,
            ],
        )
        .await?)
}

impl Store {
    /// Server requests of `services` per agent over `[from_s, to_s)` (whole minutes from
    /// `from_s`'s).
    pub async fn instance_requests(
        &self,
        services: &[String],
        from_s: i64,
        to_s: i64,
    ) -> Result<ByInstance, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT service, agent_id, sum(requests)::int8, sum(errors)::int8,
                        sum(http_5xx)::int8, sum(sum_ns)::int8
                   FROM sw_instance_minutes
                  WHERE service = ANY($1) AND minute >= to_timestamp($2)
                    AND minute < to_timestamp($3)
                  GROUP BY service, agent_id",
                &[
                    &services,
                    &((from_s.div_euclid(60) * 60) as f64),
                    &(to_s as f64),
                ],
            )
            .await?;
        let mut out = ByInstance::new();
        for r in &rows {
            let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            out.entry(r.get(0)).or_default().insert(
                r.get(1),
                Requests {
                    count: n(2),
                    errors: n(3),
                    http_5xx: n(4),
                    sum_ns: n(5),
                },
            );
        }
        Ok(out)
    }
}

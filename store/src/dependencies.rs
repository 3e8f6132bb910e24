//! The dependencies page's reads: every dependency (class and peer) over a window, from the
//! dependency rollups (`sw_dependency_minutes`, and `sw_dependency_hours` for whole hours of
//! long windows, plus the rollup deltas not yet folded into them), or from one service's
//! aggregates. Never raw spans, so their cost grows with
//! the window and the number of distinct keys, not with traffic.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::aggregates::{http_counts, MAX_POINTS};
use crate::histogram_codec;
use crate::rollups::{unfolded, whole_hours, DEPENDENCY_CLASSES, DEPENDENCY_DELTAS};
use crate::totals::{sum, Totals};
use crate::{Store, StoreError};

/// One dependency (class and peer) over a window.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSummary {
    pub class: String,
    pub peer: String,
    pub count: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mean_ms: Option<f64>,
}

/// One dependency's series over a window: totals and per-step totals.
#[derive(Debug, Clone)]
pub struct DependencySeries {
    pub class: String,
    pub peer: String,
    pub totals: Totals,
    pub steps: Vec<Totals>,
}

impl Store {
    /// Every dependency (class in [`DEPENDENCY_CLASSES`]; peer may be empty) with spans between
    /// `from_s` and `to_s`, with `step_s`-wide steps, busiest first; optionally one service's.
    /// One scan of the window's rows serves every chart of the dependencies page: the rollup
    /// (`sw_dependency_minutes`) for all services, that service's aggregates for one.
    pub async fn dependency_series(
        &self,
        service: Option<&str>,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<DependencySeries>, StoreError> {
        let step = step_s.max(60);
        let from = from_s.div_euclid(60) * 60;
        let n_steps = ((to_s - from + step - 1) / step).clamp(0, MAX_POINTS);
        let client = self.client().await?;
        let window: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&(from as f64), &(to_s as f64)];
        let (rows, from_rollup) = match service {
            None => {
                // Whole hours from the hourly rollup, as the overview does.
                let (h0, h1) = whole_hours(from, to_s, step);
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT class, peer, extract(epoch FROM hour)::int8, count, errors, sum_ns,
                                http_5xx, http_503, hist_zero, hist_packed
                           FROM sw_dependency_hours
                          WHERE hour >= to_timestamp($3) AND hour < to_timestamp($4)
                         UNION ALL
                         SELECT {ROLLUP_COLUMNS} FROM sw_dependency_minutes
                          WHERE (minute >= to_timestamp($1) AND minute < to_timestamp($3))
                             OR (minute >= to_timestamp($4) AND minute < to_timestamp($2))
                         UNION ALL
                         {}",
                        unfolded(DEPENDENCY_DELTAS, true)
                    ))
                    .await?;
                let hours: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
                    [&(h0 as f64), &(h1 as f64)];
                let params = [window[0], window[1], hours[0], hours[1]];
                (client.query(&stmt, &params).await?, true)
            }
            Some(service) => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {AGGREGATE_COLUMNS} FROM sw_aggregates
                          WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                            AND class = ANY($3) AND service = $4"
                    ))
                    .await?;
                let classes: Vec<&str> = DEPENDENCY_CLASSES.to_vec();
                let rows = client
                    .query(&stmt, &[window[0], window[1], &classes, &service])
                    .await?;
                (rows, false)
            }
        };
        let mut acc: BTreeMap<(&str, &str), Vec<Totals>> = BTreeMap::new();
        for r in &rows {
            let (class, peer, minute): (&str, &str, i64) = (r.get(0), r.get(1), r.get(2));
            let steps = acc
                .entry((class, peer))
                .or_insert_with(|| (0..n_steps).map(|_| Totals::default()).collect());
            // Steps only; the totals are their sum.
            if let Some(s) = steps.get_mut(((minute - from) / step) as usize) {
                add_dependency_row(s, r, from_rollup)?;
            }
        }
        acc.values_mut().flatten().for_each(Totals::settle);
        let mut out: Vec<DependencySeries> = acc
            .into_iter()
            .map(|((class, peer), steps)| DependencySeries {
                class: class.to_owned(),
                peer: peer.to_owned(),
                totals: sum(&steps),
                steps,
            })
            .collect();
        out.sort_by(|a, b| {
            b.totals
                .count
                .cmp(&a.totals.count)
                .then(a.peer.cmp(&b.peer))
        });
        Ok(out)
    }

    /// Every dependency (class in [`DEPENDENCY_CLASSES`], with a peer) with spans in the window,
    /// busiest first. Reads the rollup.
    pub async fn peer_summaries(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<PeerSummary>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {ROLLUP_COLUMNS} FROM sw_dependency_minutes
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2) AND peer <> ''
                 UNION ALL
                 SELECT * FROM ({}) d WHERE k2 <> ''",
                unfolded(DEPENDENCY_DELTAS, false)
            ))
            .await?;
        let rows = client
            .query(&stmt, &[&(from_s as f64), &(to_s as f64)])
            .await?;
        let mut acc: BTreeMap<(&str, &str), Totals> = BTreeMap::new();
        for r in &rows {
            add_dependency_row(acc.entry((r.get(0), r.get(1))).or_default(), r, true)?;
        }
        let mut out: Vec<PeerSummary> = acc
            .into_iter()
            .map(|((class, peer), t)| PeerSummary {
                class: class.to_owned(),
                peer: peer.to_owned(),
                count: t.count,
                errors: t.errors,
                p95_ms: t.quantile_ms(0.95),
                p99_ms: t.quantile_ms(0.99),
                mean_ms: t.mean_ms(),
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then(a.peer.cmp(&b.peer)));
        Ok(out)
    }
}

/// Columns of a dependency row read from the rollup, and from `sw_aggregates` (where the HTTP
/// counts come from the status class); see [`add_dependency_row`].
const ROLLUP_COLUMNS: &str = "class, peer, extract(epoch FROM minute)::int8, count, errors, sum_ns,
    http_5xx, http_503, hist_zero, hist_packed";
const AGGREGATE_COLUMNS: &str = "class, peer, extract(epoch FROM minute)::int8, count, errors,
    sum_ns, status_class, NULL::int8, hist_zero, hist_keys, hist_counts";

/// Adds a row of [`ROLLUP_COLUMNS`] or [`AGGREGATE_COLUMNS`] (class, peer, minute in Unix
/// seconds, then counts and histogram) to `t`.
fn add_dependency_row(
    t: &mut Totals,
    r: &tokio_postgres::Row,
    from_rollup: bool,
) -> Result<(), StoreError> {
    let count = r.get::<_, i64>(3).max(0) as u64;
    let (x5, x503) = if from_rollup {
        (
            r.get::<_, i64>(6).max(0) as u64,
            r.get::<_, i64>(7).max(0) as u64,
        )
    } else {
        http_counts(r.get(6), count)
    };
    t.add_counts(
        count,
        r.get::<_, i64>(4).max(0) as u64,
        r.get::<_, i64>(5).max(0) as u64,
        x5,
        x503,
    );
    if from_rollup {
        t.add_packed(r.get(8), r.get(9))
    } else {
        t.add_histogram(histogram_codec::histogram_of(r, 8)?);
        Ok(())
    }
}

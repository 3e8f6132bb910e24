//! Reads for the dashboard's overview and dependency pages. They read the per-minute
//! aggregates only (never raw spans), so their cost grows with the window in minutes and the
//! number of distinct keys, not with traffic.

use std::collections::BTreeMap;

use serde::Serialize;
use stormwatch_model::Histogram;

use crate::dependency_minutes::http_counts;
use crate::{Store, StoreError};

/// Counts and latency of some spans over some window. Rows' histograms (sorted arrays) are
/// merged as sorted arrays: one linear pass and one allocation per row, measured cheaper than
/// a bucket map touched once per bucket.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub http_5xx: u64,
    pub http_503: u64,
    hist: Histogram,
}

impl Totals {
    /// Test shorthand: a row of `status_class` with the histogram `h` (key, count pairs).
    #[cfg(test)]
    fn add(
        &mut self,
        status_class: &str,
        count: u64,
        errors: u64,
        sum_ns: u64,
        h: &[(i32, u64)],
        zero: u64,
    ) {
        let (x5, x503) = http_counts(status_class, count);
        self.add_counts(count, errors, sum_ns, x5, x503);
        self.add_histogram(Histogram {
            keys: h.iter().map(|p| p.0).collect(),
            counts: h.iter().map(|p| p.1).collect(),
            zero_count: zero,
        });
    }

    fn add_counts(&mut self, count: u64, errors: u64, sum_ns: u64, http_5xx: u64, http_503: u64) {
        self.count += count;
        self.errors += errors;
        self.sum_ns += sum_ns;
        self.http_5xx += http_5xx;
        self.http_503 += http_503;
    }

    /// Merges a stored histogram (sorted-array merge: far cheaper than a bucket map on this
    /// hot path); one whose keys do not ascend is sorted first. Into an empty one it is moved.
    fn add_histogram(&mut self, mut other: Histogram) {
        if other.keys.windows(2).any(|w| w[0] >= w[1]) {
            let mut sorted: Vec<(i32, u64)> =
                other.keys.iter().copied().zip(other.counts).collect();
            sorted.sort_unstable();
            let mut merged = Histogram {
                zero_count: other.zero_count,
                ..Default::default()
            };
            for (k, c) in sorted {
                match merged.keys.last() {
                    Some(last) if *last == k => {
                        *merged.counts.last_mut().expect("same length") += c
                    }
                    _ => {
                        merged.keys.push(k);
                        merged.counts.push(c);
                    }
                }
            }
            other = merged;
        }
        if self.hist.keys.is_empty() && self.hist.zero_count == 0 {
            self.hist = other;
        } else {
            self.hist.merge(&other);
        }
    }

    /// Adds another's counts and histogram, taking it.
    pub fn absorb(&mut self, o: Totals) {
        self.add_counts(o.count, o.errors, o.sum_ns, o.http_5xx, o.http_503);
        self.add_histogram(o.hist);
    }

    /// Adds another's counts and histogram.
    pub fn merge(&mut self, o: &Totals) {
        self.count += o.count;
        self.errors += o.errors;
        self.sum_ns += o.sum_ns;
        self.http_5xx += o.http_5xx;
        self.http_503 += o.http_503;
        self.hist.merge(&o.hist);
    }

    /// The latency histogram of these spans.
    pub fn histogram(&self) -> Histogram {
        self.hist.clone()
    }

    /// Errors / count, 0 without spans.
    pub fn error_rate(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.errors as f64 / self.count as f64
        }
    }

    /// Quantile `q` in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        self.histogram().quantile(q).map(|ns| ns / 1e6)
    }

    /// Mean latency in milliseconds.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_ns as f64 / self.count as f64 / 1e6)
    }
}

/// One service on the overview: its requests (server spans; all spans when it has none)
/// over the window, and per step.
#[derive(Debug, Clone)]
pub struct ServiceOverview {
    pub service: String,
    /// What the totals count: `http_server` spans, or every class when the service has none.
    pub entry_class: &'static str,
    pub totals: Totals,
    /// One per step from the window's start.
    pub steps: Vec<Totals>,
}

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

/// Classes that are dependencies (waited on), as opposed to the request itself.
pub const DEPENDENCY_CLASSES: &[&str] = &["db", "redis", "http_client", "messaging"];

fn sum(steps: &[Totals]) -> Totals {
    let mut t = Totals::default();
    for s in steps {
        t.merge(s);
    }
    t
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
        let n_steps = ((to_s - from + step - 1) / step).clamp(0, crate::aggregates::MAX_POINTS);
        let client = self.client().await?;
        let window: [&(dyn tokio_postgres::types::ToSql + Sync); 2] =
            [&(from as f64), &(to_s as f64)];
        let (rows, from_rollup) = match service {
            None => {
                let stmt = client
                    .prepare_cached(&format!(
                        "SELECT {ROLLUP_COLUMNS} FROM sw_dependency_minutes
                          WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)"
                    ))
                    .await?;
                (client.query(&stmt, &window).await?, true)
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
            let (class, peer, minute, t) = dependency_row(r, from_rollup)?;
            let steps = acc
                .entry((class, peer))
                .or_insert_with(|| (0..n_steps).map(|_| Totals::default()).collect());
            // Steps only; the totals are their sum.
            if let Some(s) = steps.get_mut(((minute - from) / step) as usize) {
                s.absorb(t);
            }
        }
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

    /// What autovacuum does after a bulk load, done now: summarizes new BRIN ranges (until
    /// then a BRIN scan reads the whole unsummarized partition) and refreshes statistics.
    pub async fn vacuum_analyze(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        // Separate statements: VACUUM cannot run inside the implicit transaction of a batch.
        client.batch_execute("VACUUM (ANALYZE) sw_spans").await?;
        client
            .batch_execute("VACUUM (ANALYZE) sw_aggregates")
            .await?;
        Ok(())
    }

    /// Every service with spans between `from_s` and `to_s` (seconds, `to` exclusive), with
    /// totals and `step_s`-wide steps.
    pub async fn service_overview(
        &self,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<ServiceOverview>, StoreError> {
        let step = step_s.max(60);
        let from = from_s.div_euclid(60) * 60;
        let n_steps = ((to_s - from + step - 1) / step).clamp(0, crate::aggregates::MAX_POINTS);
        let client = self.client().await?;
        // The rollup has a row per service, minute and entry (server spans, or the rest). A
        // service with server spans is measured by them alone: its other rows (and their
        // histograms, most of the bytes) are never sent.
        let stmt = client
            .prepare_cached(
                "SELECT service, entry = 'http_server', extract(epoch FROM minute)::int8,
                        count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_packed
                   FROM sw_service_minutes a
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND (entry = 'http_server' OR NOT EXISTS (
                        SELECT 1 FROM sw_service_minutes s
                         WHERE s.minute >= to_timestamp($1) AND s.minute < to_timestamp($2)
                           AND s.service = a.service AND s.entry = 'http_server'))",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&(from as f64), &(to_s as f64)])
            .await?;
        // A service's requests are its server spans; a service without any counts all its
        // spans. Decided first, so that rows that do not count are never read.
        let with_server: std::collections::HashSet<&str> = rows
            .iter()
            .filter(|r| r.get::<_, bool>(1))
            .map(|r| r.get::<_, &str>(0))
            .collect();
        let mut acc: BTreeMap<&str, Vec<Totals>> = BTreeMap::new();
        for r in &rows {
            let service: &str = r.get(0);
            let is_server: bool = r.get(1);
            let steps = acc
                .entry(service)
                .or_insert_with(|| (0..n_steps).map(|_| Totals::default()).collect());
            if !is_server && with_server.contains(service) {
                continue;
            }
            let minute: i64 = r.get(2);
            let Some(s) = steps.get_mut(((minute - from) / step) as usize) else {
                continue;
            };
            let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
            s.add_counts(n(3), n(4), n(5), n(6), n(7));
            s.add_histogram(crate::dependency_minutes::unpack(r.get(8), r.get(9))?);
        }
        Ok(acc
            .into_iter()
            .map(|(service, steps)| ServiceOverview {
                entry_class: if with_server.contains(service) {
                    "http_server"
                } else {
                    "all"
                },
                service: service.to_owned(),
                totals: sum(&steps),
                steps,
            })
            .collect())
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
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2) AND peer <> ''"
            ))
            .await?;
        let rows = client
            .query(&stmt, &[&(from_s as f64), &(to_s as f64)])
            .await?;
        let mut acc: BTreeMap<(&str, &str), Totals> = BTreeMap::new();
        for r in &rows {
            let (class, peer, _, t) = dependency_row(r, true)?;
            acc.entry((class, peer)).or_default().absorb(t);
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
/// counts come from the status class); see [`dependency_row`].
const ROLLUP_COLUMNS: &str = "class, peer, extract(epoch FROM minute)::int8, count, errors, sum_ns,
    http_5xx, http_503, hist_zero, hist_packed";
const AGGREGATE_COLUMNS: &str = "class, peer, extract(epoch FROM minute)::int8, count, errors,
    sum_ns, status_class, NULL::int8, hist_zero, hist_keys, hist_counts";

/// (class, peer, minute in Unix seconds, totals) of a row of [`ROLLUP_COLUMNS`] or
/// [`AGGREGATE_COLUMNS`].
fn dependency_row(
    r: &tokio_postgres::Row,
    from_rollup: bool,
) -> Result<(&str, &str, i64, Totals), StoreError> {
    let count = r.get::<_, i64>(3).max(0) as u64;
    let (x5, x503) = if from_rollup {
        (
            r.get::<_, i64>(6).max(0) as u64,
            r.get::<_, i64>(7).max(0) as u64,
        )
    } else {
        http_counts(r.get(6), count)
    };
    let mut t = Totals::default();
    t.add_counts(
        count,
        r.get::<_, i64>(4).max(0) as u64,
        r.get::<_, i64>(5).max(0) as u64,
        x5,
        x503,
    );
    t.add_histogram(if from_rollup {
        crate::dependency_minutes::unpack(r.get(8), r.get(9))?
    } else {
        crate::batches::histogram_of(r, 8)?
    });
    Ok((r.get(0), r.get(1), r.get(2), t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_merge_histograms_and_status_counts() {
        let mut t = Totals::default();
        t.add("503", 4, 4, 40, &[(5, 1), (3, 2)], 1);
        t.add("200", 1, 0, 10, &[(5, 1)], 0);
        let h = t.histogram();
        assert_eq!(
            (h.keys, h.counts, h.zero_count),
            (vec![3, 5], vec![2, 2], 1)
        );
        assert_eq!((t.http_5xx, t.http_503, t.count), (4, 4, 5));
    }
}

//! Reads for the dashboard's overview and dependency pages. They read the per-minute
//! aggregates only (never raw spans), so their cost grows with the window in minutes and the
//! number of distinct keys, not with traffic.

use std::collections::BTreeMap;

use serde::Serialize;
use stormwatch_model::Histogram;

use crate::aggregates::{http_counts, MAX_POINTS};
use crate::histogram_codec;
use crate::rollups::DEPENDENCY_CLASSES;
use crate::{Store, StoreError};

/// Counts and latency of some spans over some window. Stored rows' packed histograms are
/// added into one array indexed by bucket key ([`Totals::add_packed`]): each row costs a pass
/// over its own buckets, not over everything gathered so far, so long windows (thousands of
/// rows a step) stay cheap. Other histograms are merged as sorted arrays.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub http_5xx: u64,
    pub http_503: u64,
    hist: Histogram,
    /// Counts by bucket key from `dense_base`, not yet folded into `hist`.
    dense: Vec<u64>,
    dense_base: i32,
}

/// Widest key range the dense array covers (a latency histogram at 1 % spans about 3,000
/// keys from a nanosecond to a day); wider input is merged as sorted arrays instead.
const DENSE_SPAN: i64 = 1 << 14;

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

    /// Adds a stored histogram: its zero count and `hist_packed` bytes (see
    /// [`histogram_codec::packed_pairs`]).
    fn add_packed(&mut self, zero: i64, packed: &[u8]) -> Result<(), StoreError> {
        let pairs = histogram_codec::packed_pairs(packed)?;
        self.hist.zero_count += zero.max(0) as u64;
        let (lo, hi) = pairs
            .clone()
            .fold((i32::MAX, i32::MIN), |(lo, hi), (k, _)| {
                (lo.min(k), hi.max(k))
            });
        if packed.is_empty() || !self.dense_cover(lo, hi) {
            if !packed.is_empty() {
                self.add_histogram(histogram_codec::unpack(0, packed)?);
            }
            return Ok(());
        }
        for (key, count) in pairs {
            self.dense[(key - self.dense_base) as usize] += count;
        }
        Ok(())
    }

    /// Grows the dense array to cover keys `lo..=hi`; false when that would be too wide.
    fn dense_cover(&mut self, lo: i32, hi: i32) -> bool {
        if self.dense.is_empty() {
            if i64::from(hi) - i64::from(lo) >= DENSE_SPAN {
                return false;
            }
            self.dense_base = lo;
            self.dense = vec![0; (hi - lo) as usize + 1];
            return true;
        }
        let end = i64::from(self.dense_base) + self.dense.len() as i64 - 1;
        let (new_lo, new_hi) = (
            i64::from(lo).min(i64::from(self.dense_base)),
            i64::from(hi).max(end),
        );
        if new_hi - new_lo >= DENSE_SPAN {
            self.settle();
            return self.dense_cover(lo, hi);
        }
        if new_lo < i64::from(self.dense_base) {
            let grow = (i64::from(self.dense_base) - new_lo) as usize;
            self.dense.splice(0..0, std::iter::repeat_n(0, grow));
            self.dense_base = new_lo as i32;
        }
        if new_hi > end {
            self.dense
                .resize(self.dense.len() + (new_hi - end) as usize, 0);
        }
        true
    }

    /// The dense array's non-zero buckets as a histogram (no zero count).
    fn dense_histogram(&self) -> Histogram {
        let mut h = Histogram::default();
        for (i, c) in self.dense.iter().enumerate().filter(|(_, c)| **c > 0) {
            h.keys.push(self.dense_base + i as i32);
            h.counts.push(*c);
        }
        h
    }

    /// Folds the dense array into the histogram.
    fn settle(&mut self) {
        if !self.dense.is_empty() {
            let h = self.dense_histogram();
            self.dense = Vec::new();
            self.add_histogram(h);
        }
    }

    /// Adds another's counts and histogram, taking it.
    pub fn absorb(&mut self, o: Totals) {
        self.add_counts(o.count, o.errors, o.sum_ns, o.http_5xx, o.http_503);
        self.add_histogram(o.into_histogram());
    }

    /// Adds another's counts and histogram.
    pub fn merge(&mut self, o: &Totals) {
        self.count += o.count;
        self.errors += o.errors;
        self.sum_ns += o.sum_ns;
        self.http_5xx += o.http_5xx;
        self.http_503 += o.http_503;
        self.hist.merge(&o.histogram());
    }

    /// The latency histogram of these spans.
    pub fn histogram(&self) -> Histogram {
        let mut h = self.hist.clone();
        if !self.dense.is_empty() {
            h.merge(&self.dense_histogram());
        }
        h
    }

    fn into_histogram(mut self) -> Histogram {
        self.settle();
        self.hist
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
                             OR (minute >= to_timestamp($4) AND minute < to_timestamp($2))"
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
        let n_steps = ((to_s - from + step - 1) / step).clamp(0, MAX_POINTS);
        let (h0, h1) = whole_hours(from, to_s, step);
        let client = self.client().await?;
        // Each rollup has a row per service, minute (or hour) and entry (server spans, or the
        // rest). A service with server spans is measured by them alone: its other rows (and
        // their histograms, most of the bytes) are never sent. The services with server spans
        // are found once over the rows read (a correlated NOT EXISTS rebuilt its hash of every
        // server row for each daily partition: 7 days took 0.6 s).
        let stmt = client
            .prepare_cached(
                "WITH r AS MATERIALIZED (
                     SELECT service, entry, extract(epoch FROM hour)::int8 AS t, count, errors,
                            sum_ns, http_5xx, http_503, hist_zero, hist_packed
                       FROM sw_service_hours
                      WHERE hour >= to_timestamp($3) AND hour < to_timestamp($4)
                     UNION ALL
                     SELECT service, entry, extract(epoch FROM minute)::int8, count, errors,
                            sum_ns, http_5xx, http_503, hist_zero, hist_packed
                       FROM sw_service_minutes
                      WHERE (minute >= to_timestamp($1) AND minute < to_timestamp($3))
                         OR (minute >= to_timestamp($4) AND minute < to_timestamp($2))),
                 servers AS (SELECT DISTINCT service FROM r WHERE entry = 'http_server')
                 SELECT service, entry = 'http_server', t,
                        count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_packed
                   FROM r
                  WHERE entry = 'http_server' OR service NOT IN (SELECT service FROM servers)",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[&(from as f64), &(to_s as f64), &(h0 as f64), &(h1 as f64)],
            )
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
            s.add_packed(r.get(8), r.get(9))?;
        }
        acc.values_mut().flatten().for_each(Totals::settle);
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

/// The whole hours `[h0, h1)` of a window read by steps of `step` seconds, to be read from an
/// hourly rollup, the minutes of `[from, h0)` and `[h1, to)` coming from the minute rollup:
/// totals stay exact to the minute, and a step holds the hours that start in it. Steps under
/// an hour, or a window without a whole hour, read minutes only (`h0 = h1 = to`).
fn whole_hours(from: i64, to: i64, step: i64) -> (i64, i64) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(keys: &[i32], counts: &[i64]) -> Vec<u8> {
        keys.iter()
            .zip(counts)
            .flat_map(|(k, c)| k.to_be_bytes().into_iter().chain(c.to_be_bytes()))
            .collect()
    }

    #[test]
    fn packed_rows_add_up_as_merged_histograms() {
        // Rows as stored: ascending keys, in narrow and wide ranges, negative keys, keys far
        // apart (beyond the dense array), empty rows; the dense path must give exactly what
        // merging every row's histogram gives.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for round in 0..50 {
            let mut t = Totals::default();
            let mut want = Histogram::default();
            for _ in 0..40 {
                let base = match next(6) {
                    0 => -(next(500) as i32),
                    1 if round % 5 == 0 => i32::MAX - 10,
                    2 if round % 7 == 0 => i32::MIN + 3,
                    _ => next(3_000) as i32,
                };
                let mut keys: Vec<i32> = (0..next(30))
                    .map(|_| {
                        base.saturating_add(next(40) as i32 * if next(9) == 0 { 500 } else { 1 })
                    })
                    .collect();
                keys.sort_unstable();
                keys.dedup();
                let counts: Vec<i64> = keys.iter().map(|_| 1 + next(1_000) as i64).collect();
                let zero = next(3) as i64;
                t.add_packed(zero, &pack(&keys, &counts)).unwrap();
                want.merge(&histogram_codec::unpack(zero, &pack(&keys, &counts)).unwrap());
            }
            assert_eq!(t.histogram(), want, "round {round}");
            let mut merged = Totals::default();
            merged.merge(&t);
            assert_eq!(merged.histogram(), want);
            t.settle();
            assert_eq!(t.histogram(), want);
        }
        assert!(Totals::default().add_packed(0, &[0; 13]).is_err());
    }

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

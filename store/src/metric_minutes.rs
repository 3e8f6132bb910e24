//! OTLP metric series per minute (`sw_metric_minutes`, migration 0020): written with each batch
//! (parts of the same minute merged like [`MetricPoint::merge`]), read as series per step for
//! the dashboard and alert rules, and as the list of metric names of a window.

use std::collections::BTreeMap;

use deadpool_postgres::Transaction;
use postgres_types::Json;
use serde::Serialize;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{Batch, MetricKind, MetricPoint};

use crate::{saturating_i64, Store, StoreError};

/// Most series one [`Store::metric_series`] call returns (the first in (service, instance,
/// attributes) order); [`MetricSeries::truncated`] says when there were more.
pub const MAX_SERIES: usize = 200;
/// Most names one [`Store::metric_names`] call returns (in name order).
pub const MAX_NAMES: i64 = 1_000;

/// The key of a merged point: the columns of the table's key (the attributes themselves, where
/// the table holds their MD5), ordered field by field as declared. Points are upserted in this
/// order, the same in every batch, so two batches cannot deadlock.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct PointKey<'a> {
    name: &'a str,
    service: &'a str,
    minute_ns: i64,
    instance: &'a str,
    kind: i32,
    unit: &'a str,
    attributes: &'a BTreeMap<String, String>,
}

/// A part that neither counted anything nor has a last value: it carries nothing (merged, it
/// could only replace a `last` of time 0), so it is not written.
fn is_empty(p: &MetricPoint) -> bool {
    p.count == 0 && p.last_ns == 0
}

/// Column arrays of the `unnest` upsert. Histogram bounds and buckets of every row are
/// concatenated into one array each, and each row slices its own (offset, length) out: an
/// array of arrays cannot be sent, and a text literal per row would not be exact.
#[derive(Default)]
struct Columns<'a> {
    minutes: Vec<f64>,
    names: Vec<&'a str>,
    services: Vec<&'a str>,
    instances: Vec<&'a str>,
    kinds: Vec<i16>,
    units: Vec<&'a str>,
    attributes: Vec<Json<&'a BTreeMap<String, String>>>,
    counts: Vec<i64>,
    sums: Vec<f64>,
    mins: Vec<f64>,
    maxs: Vec<f64>,
    lasts: Vec<f64>,
    last_ns: Vec<i64>,
    bounds: Vec<f64>,
    bound_at: Vec<i32>,
    bound_len: Vec<i32>,
    buckets: Vec<i64>,
    bucket_at: Vec<i32>,
    bucket_len: Vec<i32>,
}

/// Upserts the batch's metric points whose minute passes `live`: merged per key first (with
/// [`MetricPoint::merge`]), then merged into the stored row in SQL the same way. Returns how
/// many rows it wrote.
pub(crate) async fn store_metric_minutes(
    tx: &Transaction<'_>,
    batch: &Batch,
    live: impl Fn(i64) -> bool,
) -> Result<u64, StoreError> {
    let mut merged: BTreeMap<PointKey<'_>, MetricPoint> = BTreeMap::new();
    for p in &batch.metrics {
        if !live(p.minute_ns) || is_empty(p) {
            continue;
        }
        let key = PointKey {
            name: &p.name,
            service: &p.service,
            minute_ns: p.minute_ns,
            instance: &p.instance,
            kind: p.kind,
            unit: &p.unit,
            attributes: &p.attributes,
        };
        match merged.get_mut(&key) {
            Some(m) => m.merge(p),
            None => {
                merged.insert(key, p.clone());
            }
        }
    }
    if merged.is_empty() {
        return Ok(0);
    }
    let mut c = Columns::default();
    for (k, p) in &merged {
        c.minutes.push((k.minute_ns / 1_000_000_000) as f64);
        c.names.push(k.name);
        c.services.push(k.service);
        c.instances.push(k.instance);
        c.kinds.push(k.kind as i16);
        c.units.push(k.unit);
        c.attributes.push(Json(k.attributes));
        c.counts.push(saturating_i64(p.count));
        c.sums.push(p.sum);
        c.mins.push(p.min);
        c.maxs.push(p.max);
        c.lasts.push(p.last);
        c.last_ns.push(p.last_ns);
        c.bound_at.push(c.bounds.len() as i32);
        c.bound_len.push(p.bounds.len() as i32);
        c.bounds.extend_from_slice(&p.bounds);
        c.bucket_at.push(c.buckets.len() as i32);
        c.bucket_len.push(p.buckets.len() as i32);
        c.buckets
            .extend(p.buckets.iter().map(|b| saturating_i64(*b)));
    }
    // The merge of `MetricPoint::merge`: a part that counted something adds its count, sum
    // and buckets (equal bounds; a row without buckets takes the part's) and widens min and
    // max (replaces them on a row that counted nothing); any part brings its `last` when its
    // `last_ns` is not earlier (a tie: the newer part).
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_metric_minutes AS m
                 (minute, name, service, instance, kind, unit, attributes_md5, agent_id,
                  attributes, count, sum, min, max, last, last_ns, bounds, buckets)
             SELECT to_timestamp(mi), na, se, ins, ki, un, decode(md5(at::text), 'hex'), $20,
                    at, n, su, mn, mx, la, ln,
                    ($14::float8[])[bo + 1 : bo + bl], ($17::int8[])[ko + 1 : ko + kl]
               FROM unnest($1::float8[], $2::text[], $3::text[], $4::text[], $5::int2[],
                           $6::text[], $7::jsonb[], $8::int8[], $9::float8[], $10::float8[],
                           $11::float8[], $12::float8[], $13::int8[], $15::int4[],
                           $16::int4[], $18::int4[], $19::int4[])
                    AS t(mi, na, se, ins, ki, un, at, n, su, mn, mx, la, ln, bo, bl, ko, kl)
             ON CONFLICT (name, service, minute, instance, kind, unit, attributes_md5, agent_id)
             DO UPDATE SET
                 count = m.count + excluded.count,
                 sum = CASE WHEN excluded.count = 0 THEN m.sum ELSE m.sum + excluded.sum END,
                 min = CASE WHEN excluded.count = 0 THEN m.min
                            WHEN m.count = 0 THEN excluded.min
                            ELSE least(m.min, excluded.min) END,
                 max = CASE WHEN excluded.count = 0 THEN m.max
                            WHEN m.count = 0 THEN excluded.max
                            ELSE greatest(m.max, excluded.max) END,
                 last = CASE WHEN excluded.last_ns >= m.last_ns THEN excluded.last
                             ELSE m.last END,
                 last_ns = greatest(m.last_ns, excluded.last_ns),
                 bounds = CASE WHEN excluded.count > 0 AND cardinality(m.buckets) = 0
                               THEN excluded.bounds ELSE m.bounds END,
                 buckets = CASE WHEN excluded.count = 0 THEN m.buckets
                                WHEN cardinality(m.buckets) = 0 THEN excluded.buckets
                                WHEN m.bounds = excluded.bounds
                                     AND cardinality(m.buckets) = cardinality(excluded.buckets)
                                THEN sw_add_buckets(m.buckets, excluded.buckets)
                                ELSE m.buckets END",
        )
        .await?;
    Ok(tx
        .execute(
            &stmt,
            &[
                &c.minutes,
                &c.names,
                &c.services,
                &c.instances,
                &c.kinds,
                &c.units,
                &c.attributes,
                &c.counts,
                &c.sums,
                &c.mins,
                &c.maxs,
                &c.lasts,
                &c.last_ns,
                &c.bounds,
                &c.bound_at,
                &c.bound_len,
                &c.buckets,
                &c.bucket_at,
                &c.bucket_len,
                &batch.agent_id,
            ],
        )
        .await?)
}

/// One series of a metric: what names it besides the metric's name, and its points.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Series {
    pub service: String,
    pub instance: String,
    pub attributes: BTreeMap<String, String>,
    pub unit: String,
    pub kind: MetricKind,
    /// One per step that has data, oldest first (steps without data are left out).
    pub points: Vec<SeriesPoint>,
}

/// One step of a series: its minutes (of every agent that sent them) merged.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct SeriesPoint {
    /// Start of the step, Unix milliseconds.
    pub t: i64,
    /// Gauges: the mean of the samples (the last one when none was counted); counters: the
    /// increase over the step; up-down sums: the last value; histograms: the mean observation.
    pub value: Option<f64>,
    /// Least and greatest value (histograms: observation) seen; absent without any, or for a
    /// histogram whose exporter sent none.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Samples received (histograms: observations).
    pub count: u64,
    /// Histograms with buckets: the 95th percentile, interpolated linearly within its bucket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
}

/// The series [`Store::metric_series`] found.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricSeries {
    /// At most [`MAX_SERIES`], by service, instance and attributes.
    pub series: Vec<Series>,
    /// More series matched than [`MAX_SERIES`].
    pub truncated: bool,
}

/// A metric of a window, for the list of metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricName {
    pub name: String,
    pub kind: MetricKind,
    pub unit: String,
    /// Distinct (service, instance, attributes) with data in the window.
    pub series: u64,
}

/// Whether a point's min and max were observed: a histogram's exporter may send none, which
/// arrives as two zeros beside a non-zero sum.
fn has_min_max(p: &MetricPoint) -> bool {
    p.count > 0
        && !(p.kind == MetricKind::Histogram as i32 && p.min == 0.0 && p.max == 0.0 && p.sum != 0.0)
}

/// The `q` quantile of a histogram's buckets (`bounds.len() + 1` of them: bucket `i` holds
/// observations in `(bounds[i-1], bounds[i]]`), interpolated linearly within the bucket it
/// falls in. The bucket's edges are narrowed to the observed min and max when known, which
/// also closes the open first and last buckets; without them the first bucket starts at 0
/// (below a positive first bound) and the last one is its lower bound. `None` without
/// buckets or observations.
pub fn bucket_quantile(
    bounds: &[f64],
    buckets: &[u64],
    q: f64,
    min_max: Option<(f64, f64)>,
) -> Option<f64> {
    let total: u64 = buckets.iter().sum();
    if buckets.is_empty() || buckets.len() != bounds.len() + 1 || total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    let mut i = 0;
    while i + 1 < buckets.len() && ((below + buckets[i]) as f64) < rank {
        below += buckets[i];
        i += 1;
    }
    // Skip empty buckets the rank lands at the start of.
    while buckets[i] == 0 && i + 1 < buckets.len() {
        i += 1;
    }
    // The bucket's edges, tightened by the observed min and max when known.
    let mut lower = (i > 0).then(|| bounds[i - 1]);
    let mut upper = bounds.get(i).copied();
    if let Some((min, max)) = min_max {
        lower = Some(lower.map_or(min, |l| l.max(min)));
        upper = Some(upper.map_or(max, |u| u.min(max)));
    }
    let lower = match (lower, bounds.first()) {
        (Some(l), _) => l,
        (None, Some(b)) if *b > 0.0 => 0.0,
        (None, Some(b)) => *b,
        (None, None) => return None,
    };
    // The open last bucket without a known max: its lower edge.
    let upper = upper.unwrap_or(lower).max(lower);
    let fraction = ((rank - below as f64) / buckets[i] as f64).clamp(0.0, 1.0);
    Some(lower + (upper - lower) * fraction)
}

/// The point of a step from its merged minutes.
fn point_of(t: i64, p: &MetricPoint) -> SeriesPoint {
    let kind = MetricKind::from_number(p.kind).unwrap_or(MetricKind::Gauge);
    let mean = (p.count > 0).then(|| p.sum / p.count as f64);
    let min_max = has_min_max(p).then_some((p.min, p.max));
    let value = match kind {
        MetricKind::Counter => Some(p.sum),
        MetricKind::UpDown => Some(p.last),
        MetricKind::Histogram => mean,
        MetricKind::Gauge | MetricKind::Unspecified => mean.or((p.last_ns > 0).then_some(p.last)),
    };
    SeriesPoint {
        t,
        value,
        min: min_max.map(|m| m.0),
        max: min_max.map(|m| m.1),
        count: p.count,
        p95: if kind == MetricKind::Histogram {
            bucket_quantile(&p.bounds, &p.buckets, 0.95, min_max)
        } else {
            None
        },
    }
}

impl Store {
    /// The series of metric `name` (of `service`, or every service) with minutes in
    /// `[from_ns, to_ns)` (whole minutes from `from_ns`'s), one point per step of `step_s`
    /// seconds (rounded up to a whole number of minutes, at least one) from `from_ns`'s
    /// minute. At most [`MAX_SERIES`] series.
    pub async fn metric_series(
        &self,
        name: &str,
        service: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        step_s: i64,
    ) -> Result<MetricSeries, StoreError> {
        let step = step_s.max(1).saturating_add(59) / 60 * 60;
        let from = from_ns.div_euclid(60_000_000_000) * 60;
        let to = to_ns as f64 / 1e9;
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "WITH s AS (
                     SELECT service, instance, kind, unit, attributes_md5, attributes
                       FROM sw_metric_minutes
                      WHERE name = $1 AND ($2::text IS NULL OR service = $2)
                        AND minute >= to_timestamp($3) AND minute < to_timestamp($4)
                      GROUP BY service, instance, kind, unit, attributes_md5, attributes
                      ORDER BY service, instance, attributes, kind, unit
                      LIMIT $5)
                 SELECT s.service, s.instance, s.kind, s.unit, s.attributes,
                        extract(epoch FROM m.minute)::int8, m.count, m.sum, m.min, m.max,
                        m.last, m.last_ns, m.bounds, m.buckets, s.attributes_md5
                   FROM s JOIN sw_metric_minutes m
                     ON m.name = $1 AND m.service = s.service AND m.instance = s.instance
                    AND m.kind = s.kind AND m.unit = s.unit
                    AND m.attributes_md5 = s.attributes_md5
                  WHERE m.minute >= to_timestamp($3) AND m.minute < to_timestamp($4)
                  ORDER BY s.service, s.instance, s.attributes, s.kind, s.unit, m.minute,
                           m.last_ns",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &name,
                    &service,
                    &(from as f64),
                    &to,
                    &(MAX_SERIES as i64 + 1),
                ],
            )
            .await?;
        let mut series: Vec<Series> = Vec::new();
        // The series being read (its key) and its steps' merged minutes.
        let mut current: Option<Vec<u8>> = None;
        let mut steps: BTreeMap<i64, MetricPoint> = BTreeMap::new();
        let flush = |series: &mut Vec<Series>, steps: &mut BTreeMap<i64, MetricPoint>| {
            if let Some(s) = series.last_mut() {
                s.points = std::mem::take(steps)
                    .iter()
                    .map(|(t, p)| point_of(*t * 1000, p))
                    .collect();
            }
        };
        let mut truncated = false;
        for r in &rows {
            let kind: i16 = r.get(2);
            let key: Vec<u8> = [
                r.get::<_, &str>(0).as_bytes(),
                b"\0",
                r.get::<_, &str>(1).as_bytes(),
                b"\0",
                r.get::<_, &str>(3).as_bytes(),
                b"\0",
                &kind.to_be_bytes(),
                r.get::<_, &[u8]>(14),
            ]
            .concat();
            if current.as_ref() != Some(&key) {
                flush(&mut series, &mut steps);
                if series.len() == MAX_SERIES {
                    truncated = true;
                    break;
                }
                let Json(attributes): Json<BTreeMap<String, String>> = r.get(4);
                series.push(Series {
                    service: r.get(0),
                    instance: r.get(1),
                    attributes,
                    unit: r.get(3),
                    kind: MetricKind::from_number(i32::from(kind)).unwrap_or(MetricKind::Gauge),
                    points: Vec::new(),
                });
                current = Some(key);
            }
            let minute: i64 = r.get(5);
            let t = from + (minute - from).div_euclid(step) * step;
            let part = MetricPoint {
                minute_ns: minute * 1_000_000_000,
                kind: i32::from(kind),
                count: r.get::<_, i64>(6).max(0) as u64,
                sum: r.get(7),
                min: r.get(8),
                max: r.get(9),
                last: r.get(10),
                last_ns: r.get(11),
                bounds: r.get(12),
                buckets: r
                    .get::<_, Vec<i64>>(13)
                    .into_iter()
                    .map(|b| b.max(0) as u64)
                    .collect(),
                ..Default::default()
            };
            match steps.get_mut(&t) {
                Some(p) => p.merge(&part),
                None => {
                    steps.insert(t, part);
                }
            }
        }
        if !truncated {
            flush(&mut series, &mut steps);
        }
        Ok(MetricSeries { series, truncated })
    }

    /// The metrics with minutes in `[from_ns, to_ns)` (of `service`, or of every service), by
    /// name, kind and unit, with how many series each has; at most [`MAX_NAMES`].
    pub async fn metric_names(
        &self,
        service: Option<&str>,
        from_ns: i64,
        to_ns: i64,
    ) -> Result<Vec<MetricName>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, kind, unit,
                        count(DISTINCT (service, instance, attributes_md5))::int8
                   FROM sw_metric_minutes
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND ($3::text IS NULL OR service = $3)
                  GROUP BY name, kind, unit
                  ORDER BY name, kind, unit
                  LIMIT $4",
                &[
                    &((from_ns.div_euclid(60_000_000_000) * 60) as f64),
                    &(to_ns as f64 / 1e9),
                    &service,
                    &MAX_NAMES,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| MetricName {
                name: r.get(0),
                kind: MetricKind::from_number(i32::from(r.get::<_, i16>(1)))
                    .unwrap_or(MetricKind::Gauge),
                unit: r.get(2),
                series: r.get::<_, i64>(3).max(0) as u64,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_their_bucket() {
        let bounds = [10.0, 20.0, 40.0];
        // 100 observations: 50 in (0, 10], 40 in (10, 20], 10 in (20, 40].
        let buckets = [50, 40, 10, 0];
        // Rank 95 is the 5th of the 10 in (20, 40]: halfway.
        assert_eq!(bucket_quantile(&bounds, &buckets, 0.95, None), Some(30.0));
        // Rank 50 is the last of the first bucket, closed below by 0 or by the min.
        assert_eq!(bucket_quantile(&bounds, &buckets, 0.5, None), Some(10.0));
        assert_eq!(bucket_quantile(&bounds, &buckets, 0.25, None), Some(5.0));
        assert_eq!(
            bucket_quantile(&bounds, &buckets, 0.25, Some((2.0, 30.0))),
            Some(6.0)
        );
        // Edges narrowed to the observed min and max: (20, 25] here.
        assert_eq!(
            bucket_quantile(&bounds, &buckets, 0.95, Some((2.0, 25.0))),
            Some(22.5)
        );
        // The open last bucket is closed by the max.
        assert_eq!(
            bucket_quantile(&bounds, &[0, 0, 0, 4], 0.5, Some((50.0, 90.0))),
            Some(70.0)
        );
        assert_eq!(
            bucket_quantile(&bounds, &[0, 0, 0, 4], 0.5, None),
            Some(40.0)
        );
        assert_eq!(bucket_quantile(&[], &[], 0.95, None), None);
        assert_eq!(bucket_quantile(&bounds, &[0, 0, 0, 0], 0.95, None), None);
        assert_eq!(bucket_quantile(&bounds, &[1, 2], 0.95, None), None);
    }

    #[test]
    fn points_read_by_kind() {
        let p = MetricPoint {
            kind: MetricKind::Gauge as i32,
            count: 4,
            sum: 10.0,
            min: 1.0,
            max: 4.0,
            last: 3.0,
            last_ns: 1,
            ..Default::default()
        };
        let g = point_of(60_000, &p);
        assert_eq!(
            (g.value, g.min, g.max, g.count),
            (Some(2.5), Some(1.0), Some(4.0), 4)
        );
        let c = point_of(
            0,
            &MetricPoint {
                kind: MetricKind::Counter as i32,
                ..p.clone()
            },
        );
        assert_eq!(c.value, Some(10.0));
        let u = point_of(
            0,
            &MetricPoint {
                kind: MetricKind::UpDown as i32,
                ..p.clone()
            },
        );
        assert_eq!(u.value, Some(3.0));
        // A histogram without min and max from its exporter.
        let h = point_of(
            0,
            &MetricPoint {
                kind: MetricKind::Histogram as i32,
                min: 0.0,
                max: 0.0,
                bounds: vec![1.0, 5.0],
                buckets: vec![0, 4, 0],
                ..p
            },
        );
        assert_eq!((h.value, h.min, h.max), (Some(2.5), None, None));
        assert_eq!(h.p95, Some(4.8));
    }
}

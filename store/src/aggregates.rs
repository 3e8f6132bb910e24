//! The per-minute aggregates `sw_aggregates`: the row a batch writes (`AggregateRow`), how
//! a status class counts as an HTTP error, and reading the rows as time series (count, error
//! rate and percentiles per step).

use serde::Serialize;
use stormwatch_model::{DependencyClass, Histogram};

use crate::histogram_codec::histogram_of;
use crate::{Store, StoreError};

/// Which aggregates to read; times in seconds since the Unix epoch (`to` exclusive).
#[derive(Debug, Clone, Default)]
pub struct AggregateFilter {
    pub service: Option<String>,
    pub class: Option<DependencyClass>,
    pub peer: Option<String>,
    pub operation: Option<String>,
    pub from_s: i64,
    pub to_s: i64,
    /// Width of one point, seconds (a multiple of 60).
    pub step_s: i64,
}

/// One step of a series. Latencies in milliseconds; absent when the step has no spans.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AggregatePoint {
    /// Start of the step, Unix milliseconds.
    pub time: i64,
    pub count: u64,
    pub errors: u64,
    pub error_rate: f64,
    /// Spans with an HTTP status of 500–599, and of exactly 503.
    pub http_5xx: u64,
    pub http_503: u64,
    pub mean_ms: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// Spans with an HTTP status of 500–599, and of exactly 503, among `count` spans of
/// `status_class` (a status class is an HTTP status, or a word such as `ok`).
pub(crate) fn http_counts(status_class: &str, count: u64) -> (u64, u64) {
    match status_class.parse::<u16>() {
        Ok(code) => (
            if (500..600).contains(&code) { count } else { 0 },
            if code == 503 { count } else { 0 },
        ),
        Err(_) => (0, 0),
    }
}

/// One `sw_aggregates` row as a batch writes it: aggregates of one key merged, counts capped
/// at `i64::MAX`, a missing histogram stored as an empty one. The rollups are built from
/// these very rows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggregateRow<'a> {
    /// Unix seconds.
    pub minute: i64,
    pub service: &'a str,
    pub class: &'a str,
    pub peer: &'a str,
    pub operation: &'a str,
    pub status_class: &'a str,
    pub count: i64,
    pub errors: i64,
    pub sum_ns: i64,
    pub hist: Histogram,
}

/// Largest number of points one query returns.
pub const MAX_POINTS: i64 = 10_000;

impl Store {
    /// Aggregate rows with `minute` in `[from_s, to_s)` matching the filters (the one place
    /// that reads `sw_aggregates`). Columns: minute (Unix s), service, class, peer, operation,
    /// status_class, count, errors, sum_ns, then the histogram (see `histogram_of(row, 9)`).
    pub(crate) async fn aggregate_rows(
        &self,
        service: &Option<String>,
        class: Option<DependencyClass>,
        peer: &Option<String>,
        operation: &Option<String>,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<tokio_postgres::Row>, StoreError> {
        let client = self.client().await?;
        let class = class.map(|c| c.as_str());
        let stmt = client
            .prepare_cached(
                "SELECT extract(epoch FROM minute)::int8, service, class, peer, operation,
                        status_class, count, errors, sum_ns, hist_zero, hist_keys, hist_counts
                   FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND ($3::text IS NULL OR service = $3)
                    AND ($4::text IS NULL OR class = $4)
                    AND ($5::text IS NULL OR peer = $5)
                    AND ($6::text IS NULL OR operation = $6)",
            )
            .await?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] = [
            &(from_s as f64),
            &(to_s as f64),
            service,
            &class,
            peer,
            operation,
        ];
        Ok(client.query(&stmt, &params).await?)
    }

    /// The series for `f`: one point per step from `from_s`, empty steps included.
    pub async fn aggregate_series(
        &self,
        f: &AggregateFilter,
    ) -> Result<Vec<AggregatePoint>, StoreError> {
        let step = f.step_s.max(60);
        let from = f.from_s.div_euclid(60) * 60;
        let n_points = ((f.to_s - from + step - 1) / step).clamp(0, MAX_POINTS) as usize;
        let rows = self
            .aggregate_rows(&f.service, f.class, &f.peer, &f.operation, from, f.to_s)
            .await?;
        struct Acc {
            count: u64,
            errors: u64,
            sum_ns: u64,
            http_5xx: u64,
            http_503: u64,
            hist: Histogram,
        }
        let mut accs: Vec<Acc> = (0..n_points)
            .map(|_| Acc {
                count: 0,
                errors: 0,
                sum_ns: 0,
                http_5xx: 0,
                http_503: 0,
                hist: Histogram::default(),
            })
            .collect();
        for r in &rows {
            let minute: i64 = r.get(0);
            let i = ((minute - from) / step) as usize;
            let Some(acc) = accs.get_mut(i) else { continue };
            let status: &str = r.get(5);
            let count = r.get::<_, i64>(6) as u64;
            acc.count += count;
            acc.errors += r.get::<_, i64>(7) as u64;
            acc.sum_ns += r.get::<_, i64>(8) as u64;
            let (x5, x503) = http_counts(status, count);
            acc.http_5xx += x5;
            acc.http_503 += x503;
            acc.hist.merge(&histogram_of(r, 9)?);
        }
        let ms = |v: Option<f64>| v.map(|ns| ns / 1e6);
        Ok(accs
            .into_iter()
            .enumerate()
            .map(|(i, a)| AggregatePoint {
                time: (from + i as i64 * step) * 1000,
                count: a.count,
                errors: a.errors,
                error_rate: if a.count == 0 {
                    0.0
                } else {
                    a.errors as f64 / a.count as f64
                },
                http_5xx: a.http_5xx,
                http_503: a.http_503,
                mean_ms: (a.count > 0).then(|| a.sum_ns as f64 / a.count as f64 / 1e6),
                p50_ms: ms(a.hist.quantile(0.50)),
                p95_ms: ms(a.hist.quantile(0.95)),
                p99_ms: ms(a.hist.quantile(0.99)),
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_counts_by_status_class() {
        assert_eq!(http_counts("503", 3), (3, 3));
        assert_eq!(http_counts("500", 3), (3, 0));
        assert_eq!(http_counts("404", 3), (0, 0));
        assert_eq!(http_counts("ok", 3), (0, 0));
        assert_eq!(http_counts("connect_failure", 3), (0, 0));
    }
}

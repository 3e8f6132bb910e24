//! Reads for the dashboard's overview and dependency pages. They read the per-minute
//! aggregates only (never raw spans), so their cost grows with the window in minutes and the
//! number of distinct keys, not with traffic.

use std::collections::BTreeMap;

use serde::Serialize;
use stormwatch_model::Histogram;

use crate::batches::histogram_from_json;
use crate::{Store, StoreError};

/// Counts and latency of some spans over some window.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    pub http_5xx: u64,
    pub http_503: u64,
    pub hist: Histogram,
}

impl Totals {
    fn add(&mut self, status_class: &str, count: u64, errors: u64, sum_ns: u64, h: &Histogram) {
        self.count += count;
        self.errors += errors;
        self.sum_ns += sum_ns;
        if let Ok(code) = status_class.parse::<u16>() {
            if (500..600).contains(&code) {
                self.http_5xx += count;
            }
            if code == 503 {
                self.http_503 += count;
            }
        }
        self.hist.merge(h);
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
        self.hist.quantile(q).map(|ns| ns / 1e6)
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
    /// One scan of the window's aggregates serves every chart of the dependencies page.
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
        let stmt = client
            .prepare_cached(
                "SELECT class, peer, extract(epoch FROM minute)::int8, status_class, count, errors,
                        sum_ns, histogram
                   FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND class = ANY($3) AND ($4::text IS NULL OR service = $4)",
            )
            .await?;
        let classes: Vec<&str> = DEPENDENCY_CLASSES.to_vec();
        let rows = client
            .query(&stmt, &[&(from as f64), &(to_s as f64), &classes, &service])
            .await?;
        let mut acc: BTreeMap<(String, String), (Totals, Vec<Totals>)> = BTreeMap::new();
        for r in &rows {
            let minute: i64 = r.get(2);
            let status: &str = r.get(3);
            let (count, errors, sum_ns) = (
                r.get::<_, i64>(4) as u64,
                r.get::<_, i64>(5) as u64,
                r.get::<_, i64>(6) as u64,
            );
            let h = histogram_from_json(&r.get(7))?;
            let (totals, steps) = acc.entry((r.get(0), r.get(1))).or_insert_with(|| {
                (
                    Totals::default(),
                    (0..n_steps).map(|_| Totals::default()).collect(),
                )
            });
            totals.add(status, count, errors, sum_ns, &h);
            if let Some(s) = steps.get_mut(((minute - from) / step) as usize) {
                s.add(status, count, errors, sum_ns, &h);
            }
        }
        let mut out: Vec<DependencySeries> = acc
            .into_iter()
            .map(|((class, peer), (totals, steps))| DependencySeries {
                class,
                peer,
                totals,
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
        let stmt = client
            .prepare_cached(
                "SELECT service, class = 'http_server', extract(epoch FROM minute)::int8,
                        status_class, count, errors, sum_ns, histogram
                   FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)",
            )
            .await?;
        let rows = client
            .query(&stmt, &[&(from as f64), &(to_s as f64)])
            .await?;
        // Per service: [server spans, all spans], each with totals and steps.
        let mut acc: BTreeMap<String, [(Totals, Vec<Totals>); 2]> = BTreeMap::new();
        for r in &rows {
            let service: String = r.get(0);
            let is_server: bool = r.get(1);
            let minute: i64 = r.get(2);
            let status: &str = r.get(3);
            let count = r.get::<_, i64>(4) as u64;
            let errors = r.get::<_, i64>(5) as u64;
            let sum_ns = r.get::<_, i64>(6) as u64;
            let h = histogram_from_json(&r.get(7))?;
            let entry = acc.entry(service).or_insert_with(|| {
                let steps = || (0..n_steps).map(|_| Totals::default()).collect();
                [(Totals::default(), steps()), (Totals::default(), steps())]
            });
            let i = ((minute - from) / step) as usize;
            for (which, (totals, steps)) in entry.iter_mut().enumerate() {
                if which == 0 && !is_server {
                    continue;
                }
                totals.add(status, count, errors, sum_ns, &h);
                if let Some(s) = steps.get_mut(i) {
                    s.add(status, count, errors, sum_ns, &h);
                }
            }
        }
        Ok(acc
            .into_iter()
            .map(|(service, [server, all])| {
                let (entry_class, (totals, steps)) = if server.0.count > 0 {
                    ("http_server", server)
                } else {
                    ("all", all)
                };
                ServiceOverview {
                    service,
                    entry_class,
                    totals,
                    steps,
                }
            })
            .collect())
    }

    /// Every dependency (class in [`DEPENDENCY_CLASSES`], with a peer) with spans in the window,
    /// busiest first.
    pub async fn peer_summaries(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<PeerSummary>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT class, peer, status_class, count, errors, sum_ns, histogram
                   FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND class = ANY($3) AND peer <> ''",
            )
            .await?;
        let classes: Vec<&str> = DEPENDENCY_CLASSES.to_vec();
        let rows = client
            .query(&stmt, &[&(from_s as f64), &(to_s as f64), &classes])
            .await?;
        let mut acc: BTreeMap<(String, String), Totals> = BTreeMap::new();
        for r in &rows {
            let h = histogram_from_json(&r.get(6))?;
            acc.entry((r.get(0), r.get(1))).or_default().add(
                r.get(2),
                r.get::<_, i64>(3) as u64,
                r.get::<_, i64>(4) as u64,
                r.get::<_, i64>(5) as u64,
                &h,
            );
        }
        let mut out: Vec<PeerSummary> = acc
            .into_iter()
            .map(|((class, peer), t)| PeerSummary {
                class,
                peer,
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

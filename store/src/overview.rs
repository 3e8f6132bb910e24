//! The overview page's read: every service's requests over a window, from the service rollups
//! (`sw_service_minutes`, and `sw_service_hours` for whole hours of long windows, plus the
//! rollup deltas not yet folded into them), never raw
//! spans, so its cost grows with the window and the number of services, not with traffic.

use std::collections::BTreeMap;

use crate::aggregates::MAX_POINTS;
use crate::rollups::{unfolded, whole_hours, SERVICE_DELTAS};
use crate::totals::{sum, Totals};
use crate::{Store, StoreError};

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

impl Store {
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
            .prepare_cached(&format!(
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
                         OR (minute >= to_timestamp($4) AND minute < to_timestamp($2))
                     UNION ALL
                     {}),
                 servers AS (SELECT DISTINCT service FROM r WHERE entry = 'http_server')
                 SELECT service, entry = 'http_server', t,
                        count, errors, sum_ns, http_5xx, http_503, hist_zero, hist_packed
                   FROM r
                  WHERE entry = 'http_server' OR service NOT IN (SELECT service FROM servers)",
                unfolded(SERVICE_DELTAS, true)
            ))
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
}

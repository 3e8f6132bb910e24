//! Every read of the database probe samples (`sw_probe_samples`): for the dashboard, connect
//! time, failures and replication lag over time, and failures by minute of day × day; for the
//! read API, the latest sample per database and one database's samples; for alert rules, the
//! latest state per database and the probes of a window.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::sample_rollups::{grain_of, SLICE_S};
use crate::{Store, StoreError};

/// One step of one database's probes (from one agent, for one role).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbePoint {
    pub database: String,
    pub role: String,
    pub agent_id: String,
    /// Start of the step, Unix milliseconds.
    pub time_ms: i64,
    pub samples: i64,
    /// Probes that failed (refused, timed out...).
    pub failures: i64,
    /// Probes refused by the server (a subset of `failures`).
    pub refused: i64,
    /// Mean and largest connect time of the successful probes, milliseconds.
    pub connect_ms_avg: Option<f64>,
    pub connect_ms_max: Option<f64>,
    /// Largest replication lag in the step, seconds (replicas only).
    pub lag_seconds_max: Option<f64>,
}

/// One slice of the minute-of-day × day heatmap with failures or slow connects (at least
/// [`SLOW_CONNECT_MS`](crate::sample_rollups::SLOW_CONNECT_MS)).
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeHeatCell {
    pub database: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Start of the bucket, minutes since midnight UTC.
    pub minute_of_day: i32,
    pub samples: i64,
    pub failures: i64,
    /// Successful probes whose connect time was at least the slowness threshold.
    pub slow: i64,
}

/// Which minutes of one UTC day a database was probed.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbedDay {
    pub database: String,
    /// Days since the Unix epoch (UTC).
    pub day: i64,
    /// Runs of probed minutes, as (first minute of day, minute after the last).
    pub runs: Vec<(i32, i32)>,
}

/// The heatmap of [`Store::probe_heatmap`]: when each database was probed, and the slices
/// with failures or slow connects.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeHeatmap {
    pub probed: Vec<ProbedDay>,
    pub cells: Vec<ProbeHeatCell>,
}

/// The runs of `true` in `minutes`, as (start, end) with `end` exclusive.
fn runs(minutes: &[bool]) -> Vec<(i32, i32)> {
    let mut out: Vec<(i32, i32)> = Vec::new();
    for (i, on) in minutes.iter().enumerate() {
        let i = i as i32;
        match out.last_mut() {
            Some((_, end)) if *on && *end == i => *end = i + 1,
            _ if *on => out.push((i, i + 1)),
            _ => {}
        }
    }
    out
}

/// One probe sample as the read API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DatabaseSample {
    pub database: String,
    pub engine: String,
    pub role: String,
    pub agent_id: String,
    /// Unix milliseconds.
    pub time: i64,
    pub connect_ms: Option<f64>,
    pub query_ms: Option<f64>,
    /// `none`, `refused`, `timeout`, `authentication`, `too_many_connections`, `other`,
    /// `permission`, `tls`.
    pub failure: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    pub replay_paused: bool,
    pub detail: serde_json::Value,
}

const SAMPLE_COLUMNS: &str =
    "database, engine, role, agent_id, (extract(epoch FROM time) * 1000)::int8,
    connect_us::float8 / 1000, query_us::float8 / 1000, failure, failure_message, lag_seconds,
    lag_bytes, replay_paused, detail";

fn sample_of(r: &tokio_postgres::Row) -> DatabaseSample {
    DatabaseSample {
        database: r.get(0),
        engine: r.get(1),
        role: r.get(2),
        agent_id: r.get(3),
        time: r.get(4),
        connect_ms: r.get(5),
        query_ms: r.get(6),
        failure: r.get(7),
        failure_message: r.get(8),
        lag_seconds: r.get(9),
        lag_bytes: r.get(10),
        replay_paused: r.get(11),
        detail: r.get(12),
    }
}

/// Latest state of a probed database.
#[derive(Debug, Clone)]
pub struct ProbeState {
    pub database: String,
    pub engine: String,
    pub role: String,
    /// Seconds since the Unix epoch.
    pub time_s: f64,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    pub replay_paused: bool,
}

/// Probe results of one database over a window.
#[derive(Debug, Clone, Default)]
pub struct ProbeWindow {
    pub database: String,
    pub role: String,
    pub probes: u64,
    /// Failures by class (`refused`, `timeout`...).
    pub failures: BTreeMap<String, u64>,
    pub max_connect_ms: Option<f64>,
}

impl Store {
    /// Probe samples between `from_s` and `to_s` (seconds, `to` exclusive), one point per
    /// (database, role, agent, step). A step of whole minutes is read from `sw_probe_rollups`
    /// (its first step then starts at the minute or hour holding `from_s`); any other step
    /// from the raw samples.
    pub async fn probe_series(
        &self,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<ProbePoint>, StoreError> {
        let step = step_s.max(1);
        let client = self.client().await?;
        let rows = match grain_of(step) {
            Some(grain) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT database, role, agent_id,
                                (floor(extract(epoch FROM time)::float8 / $3::float8) * $3::float8 * 1000)::int8 AS t,
                                sum(samples)::int8, sum(failures)::int8, sum(refused)::int8,
                                sum(connect_us_sum)::float8 / nullif(sum(connected), 0) / 1000,
                                max(connect_us_max)::float8 / 1000, max(lag_seconds_max)
                           FROM sw_probe_rollups
                          WHERE grain = $4 AND time >= to_timestamp($1) AND time < to_timestamp($2)
                          GROUP BY database, role, agent_id, t ORDER BY database, role, agent_id, t",
                    )
                    .await?;
                let from = (from_s - from_s.rem_euclid(grain)) as f64;
                client
                    .query(
                        &stmt,
                        &[&from, &(to_s as f64), &(step as f64), &(grain as i32)],
                    )
                    .await?
            }
            None => {
                let stmt = client
                    .prepare_cached(
                        "SELECT database, role, agent_id,
                                (floor(extract(epoch FROM time)::float8 / $3::float8) * $3::float8 * 1000)::int8 AS t,
                                count(*), count(*) FILTER (WHERE failure <> 'none'),
                                count(*) FILTER (WHERE failure = 'refused'),
                                avg(connect_us)::float8 / 1000, max(connect_us)::float8 / 1000,
                                max(lag_seconds)
                           FROM sw_probe_samples
                          WHERE time >= to_timestamp($1) AND time < to_timestamp($2)
                          GROUP BY database, role, agent_id, t ORDER BY database, role, agent_id, t",
                    )
                    .await?;
                client
                    .query(&stmt, &[&(from_s as f64), &(to_s as f64), &(step as f64)])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| ProbePoint {
                database: r.get(0),
                role: r.get(1),
                agent_id: r.get(2),
                time_ms: r.get(3),
                samples: r.get(4),
                failures: r.get(5),
                refused: r.get(6),
                connect_ms_avg: r.get(7),
                connect_ms_max: r.get(8),
                lag_seconds_max: r.get(9),
            })
            .collect())
    }

    /// The minute-of-day × day heatmap of every database between `from_s` and `to_s`, in
    /// `bucket_minutes`-wide slices of the day (UTC): which minutes were probed (from the hour
    /// rollups) and the slices with failures or slow connects (at least [`SLOW_CONNECT_MS`](crate::sample_rollups::SLOW_CONNECT_MS)).
    /// Healthy slices are not returned one by one: over 7 days of 100 databases they are
    /// 200,000. The bad ones are found through the partial index of the rollup rows with
    /// failures or slow connects: the 5-minute rows when a slice is whole 5 minutes, else the
    /// minute rows (rows starting in `[from_s, to_s)`). A slice that is one such row of the
    /// only series (role, agent) its database had that hour is complete as read; any other
    /// slice adds up its rows' samples through the (grain, database, time) index.
    pub async fn probe_heatmap(
        &self,
        from_s: i64,
        to_s: i64,
        bucket_minutes: i32,
    ) -> Result<ProbeHeatmap, StoreError> {
        let bucket = bucket_minutes.clamp(1, 1440);
        let width = i64::from(bucket) * 60;
        let grain = if width % SLICE_S == 0 { SLICE_S } else { 60 };
        let client = self.client().await?;
        let from_hour = (from_s - from_s.rem_euclid(3_600)) as f64;
        let probed = client
            .query(
                "SELECT database, extract(epoch FROM time)::int8, minutes::text
                   FROM sw_probe_rollups
                  WHERE grain = 3600 AND time >= to_timestamp($1) AND time < to_timestamp($2)",
                &[&from_hour, &(to_s as f64)],
            )
            .await?;
        let mut coverage: BTreeMap<(String, i64), Vec<bool>> = BTreeMap::new();
        // Series (role, agent) per database and hour.
        let mut series: HashMap<(&str, i64), u32> = HashMap::new();
        for r in &probed {
            let hour: i64 = r.get(1);
            let bits: &str = r.get(2);
            *series.entry((r.get(0), hour)).or_default() += 1;
            let minutes = coverage
                .entry((r.get(0), hour.div_euclid(86_400)))
                .or_insert_with(|| vec![false; 1440]);
            let first = (hour.rem_euclid(86_400) / 60) as usize;
            for (i, b) in bits.bytes().enumerate() {
                if b == b'1' {
                    minutes[first + i] = true;
                }
            }
        }
        let probed_days = coverage
            .into_iter()
            .map(|((database, day), minutes)| ProbedDay {
                database,
                day,
                runs: runs(&minutes),
            })
            .collect();
        // The grain is a literal: the partial indexes are of `grain = 60` and `grain = 300`.
        let stmt = client
            .prepare_cached(&format!(
                "SELECT database, extract(epoch FROM time)::int8, sum(samples)::int8,
                        sum(failures)::int8, sum(slow)::int8
                   FROM sw_probe_rollups
                  WHERE grain = {grain} AND (failures > 0 OR slow > 0)
                    AND time >= to_timestamp($1) AND time < to_timestamp($2)
                  GROUP BY 1, 2"
            ))
            .await?;
        let rows = client
            .query(&stmt, &[&(from_s as f64), &(to_s as f64)])
            .await?;
        // (database, start of the slice) → (samples, failures, slow, complete).
        let mut bad: BTreeMap<(&str, i64), (i64, i64, i64, bool)> = BTreeMap::new();
        for r in &rows {
            let (database, t): (&str, i64) = (r.get(0), r.get(1));
            let cell = bad.entry((database, t - t.rem_euclid(width))).or_default();
            cell.0 += r.get::<_, i64>(2);
            cell.1 += r.get::<_, i64>(3);
            cell.2 += r.get::<_, i64>(4);
            cell.3 = width == grain
                && series.get(&(database, t - t.rem_euclid(3_600))).copied() == Some(1);
        }
        let (dbs, starts): (Vec<&str>, Vec<i64>) =
            bad.iter().filter(|(_, c)| !c.3).map(|(k, _)| *k).unzip();
        if !dbs.is_empty() {
            // Each slice's rows through the (grain, database, time) index: a join let the
            // planner hash every row of a database against every slice.
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT k.i, x.samples
                       FROM unnest($1::text[], $2::int8[]) WITH ORDINALITY AS k(database, cell, i)
                      CROSS JOIN LATERAL (
                            SELECT coalesce(sum(r.samples), 0)::int8 AS samples
                              FROM sw_probe_rollups r
                             WHERE r.grain = {grain} AND r.database = k.database
                               AND r.time >= to_timestamp(k.cell)
                               AND r.time < to_timestamp(k.cell + $3::int8)) x"
                ))
                .await?;
            for r in client.query(&stmt, &[&dbs, &starts, &width]).await? {
                let i = r.get::<_, i64>(0) as usize - 1;
                if let Some(c) = bad.get_mut(&(dbs[i], starts[i])) {
                    c.0 = r.get(1);
                }
            }
        }
        let cells = bad
            .into_iter()
            .map(
                |((database, cell), (samples, failures, slow, _))| ProbeHeatCell {
                    database: database.to_owned(),
                    day: cell.div_euclid(86_400),
                    minute_of_day: (cell.rem_euclid(86_400) / 60) as i32,
                    samples,
                    failures,
                    slow,
                },
            )
            .collect();
        Ok(ProbeHeatmap {
            probed: probed_days,
            cells,
        })
    }

    /// The newest sample of every probed database (any age), by name: the databases from the
    /// hour rollup, then each one's newest sample through its (database, time) index, rather
    /// than every sample sorted (6M over a week of 100 databases).
    pub async fn databases(&self) -> Result<Vec<DatabaseSample>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT s.* FROM (SELECT DISTINCT database FROM sw_probe_rollups WHERE grain = 3600) d
                      CROSS JOIN LATERAL (
                          SELECT {SAMPLE_COLUMNS} FROM sw_probe_samples p
                           WHERE p.database = d.database ORDER BY time DESC LIMIT 1) s
                      ORDER BY 1"
                ),
                &[],
            )
            .await?;
        Ok(rows.iter().map(sample_of).collect())
    }

    /// Samples of one database between two instants (Unix ms), oldest first, at most `limit`.
    pub async fn database_samples(
        &self,
        database: &str,
        from_ms: i64,
        to_ms: i64,
        limit: i64,
    ) -> Result<Vec<DatabaseSample>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {SAMPLE_COLUMNS} FROM sw_probe_samples
                      WHERE database = $1 AND time >= to_timestamp($2::float8 / 1000) AND time < to_timestamp($3::float8 / 1000)
                      ORDER BY time LIMIT $4"
                ),
                &[&database, &(from_ms as f64), &(to_ms as f64), &limit],
            )
            .await?;
        Ok(rows.iter().map(sample_of).collect())
    }

    /// The newest probe sample of every database seen since `since_s`.
    pub async fn latest_probes(&self, since_s: f64) -> Result<Vec<ProbeState>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (database) database, engine, role, extract(epoch FROM time)::float8,
                        lag_seconds, lag_bytes, replay_paused
                   FROM sw_probe_samples WHERE time >= to_timestamp($1)
                  ORDER BY database, time DESC",
                &[&since_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ProbeState {
                database: r.get(0),
                engine: r.get(1),
                role: r.get(2),
                time_s: r.get(3),
                lag_seconds: r.get(4),
                lag_bytes: r.get(5),
                replay_paused: r.get(6),
            })
            .collect())
    }

    /// Probe counts, failures by class and the slowest connect, per database, since `since_s`.
    pub async fn probe_windows(&self, since_s: f64) -> Result<Vec<ProbeWindow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT database, max(role), failure, count(*)::int8, max(connect_us)::float8
                   FROM sw_probe_samples WHERE time >= to_timestamp($1)
                  GROUP BY database, failure ORDER BY database",
                &[&since_s],
            )
            .await?;
        let mut out: BTreeMap<String, ProbeWindow> = BTreeMap::new();
        for r in &rows {
            let database: String = r.get(0);
            let w = out.entry(database.clone()).or_insert_with(|| ProbeWindow {
                database,
                role: r.get(1),
                ..Default::default()
            });
            let failure: String = r.get(2);
            let n = r.get::<_, i64>(3) as u64;
            w.probes += n;
            if failure != "none" {
                *w.failures.entry(failure).or_default() += n;
            }
            if let Some(us) = r.get::<_, Option<f64>>(4) {
                w.max_connect_ms = Some(w.max_connect_ms.unwrap_or(0.0).max(us / 1000.0));
            }
        }
        Ok(out.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_of_probed_minutes() {
        let mut m = vec![false; 1440];
        for i in (0..10).chain(600..612).chain([1439]) {
            m[i] = true;
        }
        assert_eq!(runs(&m), vec![(0, 10), (600, 612), (1439, 1440)]);
        assert_eq!(runs(&[false; 5]), vec![]);
    }
}

//! Database probe samples for the dashboard: connect time, failures and replication lag over
//! time, and failures by minute of day × day.

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

/// One cell of the minute-of-day × day heatmap.
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

impl Store {
    /// Probe samples between `from_s` and `to_s` (seconds, `to` exclusive), one point per
    /// (database, role, agent, step).
    pub async fn probe_series(
        &self,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<ProbePoint>, StoreError> {
        let step = step_s.max(1) as f64;
        let client = self.client().await?;
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
        let rows = client
            .query(&stmt, &[&(from_s as f64), &(to_s as f64), &step])
            .await?;
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

    /// Failures and slow connects per database, day and `bucket_minutes`-wide slice of the day
    /// (UTC), between `from_s` and `to_s`. Only cells with samples are returned.
    pub async fn probe_heatmap(
        &self,
        from_s: i64,
        to_s: i64,
        bucket_minutes: i32,
        slow_connect_ms: f64,
    ) -> Result<Vec<ProbeHeatCell>, StoreError> {
        let bucket = bucket_minutes.clamp(1, 1440);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT database,
                        floor(extract(epoch FROM time)::float8 / 86400)::int8 AS day,
                        (((extract(epoch FROM time)::int8 % 86400) / 60)::int4 / $3::int4) * $3::int4 AS mod,
                        count(*), count(*) FILTER (WHERE failure <> 'none'),
                        count(*) FILTER (WHERE failure = 'none' AND connect_us >= $4::float8 * 1000)
                   FROM sw_probe_samples
                  WHERE time >= to_timestamp($1) AND time < to_timestamp($2)
                  GROUP BY database, day, mod ORDER BY database, day, mod",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[&(from_s as f64), &(to_s as f64), &bucket, &slow_connect_ms],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ProbeHeatCell {
                database: r.get(0),
                day: r.get(1),
                minute_of_day: r.get(2),
                samples: r.get(3),
                failures: r.get(4),
                slow: r.get(5),
            })
            .collect())
    }
}

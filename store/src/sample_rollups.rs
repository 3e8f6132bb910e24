//! Probe and host samples summed per minute and per hour (migration 0021), kept at ingest in
//! the batch's transaction, so the databases and hosts pages read one row per series and step
//! instead of every raw sample. [`grain_of`] picks the rollup a step can be read from.

use deadpool_postgres::Transaction;
use stormwatch_model::{Batch, DbRole, FailureClass};

use crate::{name, StoreError};

/// A successful connect at least this slow counts as slow (the heatmap's orange cells),
/// milliseconds. Fixed because `sw_probe_rollups.slow` is counted at ingest.
pub const SLOW_CONNECT_MS: f64 = 100.0;

/// The grains kept, seconds.
pub const GRAINS: [i64; 2] = [60, 3_600];

/// The heatmap's slice: probes are also summed per 5 minutes (migration 0026), and the slices
/// with failures or slow connects found through a partial index of those rows. Series and
/// line charts read [`GRAINS`] only.
pub const SLICE_S: i64 = 300;

/// The coarsest rollup a step of `step_s` seconds is made of, or `None` when the step is not
/// a whole number of minutes (read the raw samples then).
pub fn grain_of(step_s: i64) -> Option<i64> {
    GRAINS.iter().rev().copied().find(|g| step_s % g == 0)
}

/// Adds the batch's probe samples to `sw_probe_rollups`, both grains and the 5-minute slices,
/// in key order.
pub(crate) async fn store_probe_rollups(
    tx: &Transaction<'_>,
    batch: &Batch,
) -> Result<(), StoreError> {
    if batch.probes.is_empty() {
        return Ok(());
    }
    let p = &batch.probes;
    let times: Vec<f64> = p.iter().map(|s| s.time_ns as f64 / 1e9).collect();
    let databases: Vec<&str> = p.iter().map(|s| s.database.as_str()).collect();
    let roles: Vec<&str> = p.iter().map(|s| name(s.role, DbRole::Unknown)).collect();
    let connects: Vec<Option<i64>> = p.iter().map(|s| s.connect_us).collect();
    let failures: Vec<&str> = p
        .iter()
        .map(|s| name(s.failure, FailureClass::Other))
        .collect();
    let lags: Vec<Option<f64>> = p.iter().map(|s| s.lag_seconds).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_probe_rollups AS r
             SELECT g.grain, to_timestamp(floor(s.t / g.grain) * g.grain), s.database, s.role, $1,
                    count(*), count(*) FILTER (WHERE s.failure <> 'none'),
                    count(*) FILTER (WHERE s.failure = 'refused'),
                    count(*) FILTER (WHERE s.failure = 'none' AND s.connect_us >= $8::float8 * 1000),
                    count(s.connect_us), coalesce(sum(s.connect_us), 0)::int8, max(s.connect_us),
                    max(s.lag), bit_or(B'1'::bit(60) >> (floor(s.t / 60)::int8 % 60)::int4)
               FROM unnest($2::float8[], $3::text[], $4::text[], $5::int8[], $6::text[], $7::float8[])
                    AS s(t, database, role, connect_us, failure, lag)
              CROSS JOIN unnest($9::int4[]) AS g(grain)
              GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (grain, time, database, role, agent_id) DO UPDATE SET
                 samples = r.samples + excluded.samples,
                 failures = r.failures + excluded.failures,
                 refused = r.refused + excluded.refused,
                 slow = r.slow + excluded.slow,
                 connected = r.connected + excluded.connected,
                 connect_us_sum = r.connect_us_sum + excluded.connect_us_sum,
                 connect_us_max = greatest(r.connect_us_max, excluded.connect_us_max),
                 lag_seconds_max = greatest(r.lag_seconds_max, excluded.lag_seconds_max),
                 minutes = r.minutes | excluded.minutes",
        )
        .await?;
    let grains: Vec<i32> = [GRAINS[0], SLICE_S, GRAINS[1]]
        .iter()
        .map(|g| *g as i32)
        .collect();
    tx.execute(
        &stmt,
        &[
            &batch.agent_id,
            &times,
            &databases,
            &roles,
            &connects,
            &failures,
            &lags,
            &SLOW_CONNECT_MS,
            &grains,
        ],
    )
    .await?;
    Ok(())
}

/// Adds the batch's host samples to `sw_host_rollups`, both grains, in key order.
pub(crate) async fn store_host_rollups(
    tx: &Transaction<'_>,
    batch: &Batch,
) -> Result<(), StoreError> {
    if batch.hosts.is_empty() {
        return Ok(());
    }
    let h = &batch.hosts;
    let times: Vec<f64> = h.iter().map(|s| s.time_ns as f64 / 1e9).collect();
    let hosts: Vec<&str> = h.iter().map(|s| s.host.as_str()).collect();
    let cpu: Vec<f64> = h.iter().map(|s| s.cpu_percent).collect();
    let mem_used: Vec<f64> = h.iter().map(|s| s.mem_used_bytes as f64).collect();
    let mem_total: Vec<i64> = h
        .iter()
        .map(|s| crate::saturating_i64(s.mem_total_bytes))
        .collect();
    let rx: Vec<f64> = h.iter().map(|s| s.net_rx_bytes_per_s as f64).collect();
    let tx_bytes: Vec<f64> = h.iter().map(|s| s.net_tx_bytes_per_s as f64).collect();
    let load1: Vec<f64> = h.iter().map(|s| s.load1).collect();
    let stmt = tx
        .prepare_cached(
            "INSERT INTO sw_host_rollups AS r
             SELECT g.grain, to_timestamp(floor(s.t / g.grain) * g.grain), $1, s.host, count(*),
                    sum(s.cpu), sum(s.mem_used), max(s.mem_total), sum(s.rx), sum(s.tx), sum(s.load1)
               FROM unnest($2::float8[], $3::text[], $4::float8[], $5::float8[], $6::int8[],
                           $7::float8[], $8::float8[], $9::float8[])
                    AS s(t, host, cpu, mem_used, mem_total, rx, tx, load1)
              CROSS JOIN unnest($10::int4[]) AS g(grain)
              GROUP BY 1, 2, 3, 4 ORDER BY 1, 2, 3, 4
             ON CONFLICT (grain, time, agent_id, host) DO UPDATE SET
                 samples = r.samples + excluded.samples,
                 cpu_percent_sum = r.cpu_percent_sum + excluded.cpu_percent_sum,
                 mem_used_sum = r.mem_used_sum + excluded.mem_used_sum,
                 mem_total_max = greatest(r.mem_total_max, excluded.mem_total_max),
                 net_rx_sum = r.net_rx_sum + excluded.net_rx_sum,
                 net_tx_sum = r.net_tx_sum + excluded.net_tx_sum,
                 load1_sum = r.load1_sum + excluded.load1_sum",
        )
        .await?;
    let grains: Vec<i32> = GRAINS.iter().map(|g| *g as i32).collect();
    tx.execute(
        &stmt,
        &[
            &batch.agent_id,
            &times,
            &hosts,
            &cpu,
            &mem_used,
            &mem_total,
            &rx,
            &tx_bytes,
            &load1,
            &grains,
        ],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_reads_the_coarsest_grain_it_is_made_of() {
        assert_eq!(grain_of(60), Some(60));
        assert_eq!(grain_of(300), Some(60));
        assert_eq!(grain_of(3_600), Some(3_600));
        assert_eq!(grain_of(7_200), Some(3_600));
        assert_eq!(grain_of(5_400), Some(60));
        assert_eq!(grain_of(30), None);
        assert_eq!(grain_of(90), None);
    }
}

//! Host metrics for the dashboard: CPU, memory and network per agent, averaged per step.

use crate::sample_rollups::grain_of;
use crate::{Store, StoreError};

/// One step of one host's samples (averages over the step; `mem_total` is the largest seen).
#[derive(Debug, Clone, PartialEq)]
pub struct HostPoint {
    pub agent_id: String,
    pub host: String,
    /// Start of the step, Unix milliseconds.
    pub time_ms: i64,
    pub cpu_percent: f64,
    pub mem_used_bytes: f64,
    pub mem_total_bytes: i64,
    pub net_rx_bytes_per_s: f64,
    pub net_tx_bytes_per_s: f64,
    pub load1: f64,
}

impl Store {
    /// Host samples between `from_s` and `to_s` (seconds, `to` exclusive), one point per
    /// (agent, host, step), ordered by agent, host and time. A step of whole minutes is read
    /// from `sw_host_rollups` (its first step then starts at the minute or hour holding
    /// `from_s`); any other step from the raw samples.
    pub async fn host_series(
        &self,
        from_s: i64,
        to_s: i64,
        step_s: i64,
    ) -> Result<Vec<HostPoint>, StoreError> {
        let step = step_s.max(1);
        let client = self.client().await?;
        let rows = match grain_of(step) {
            Some(grain) => {
                let stmt = client
                    .prepare_cached(
                        "SELECT agent_id, host,
                                (floor(extract(epoch FROM time)::float8 / $3::float8) * $3::float8 * 1000)::int8 AS t,
                                sum(cpu_percent_sum) / sum(samples), sum(mem_used_sum) / sum(samples),
                                max(mem_total_max), sum(net_rx_sum) / sum(samples),
                                sum(net_tx_sum) / sum(samples), sum(load1_sum) / sum(samples)
                           FROM sw_host_rollups
                          WHERE grain = $4 AND time >= to_timestamp($1) AND time < to_timestamp($2)
                          GROUP BY agent_id, host, t ORDER BY agent_id, host, t",
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
                        "SELECT agent_id, host,
                                (floor(extract(epoch FROM time)::float8 / $3::float8) * $3::float8 * 1000)::int8 AS t,
                                avg(cpu_percent), avg(mem_used_bytes)::float8, max(mem_total_bytes),
                                avg(net_rx_bytes_per_s)::float8, avg(net_tx_bytes_per_s)::float8,
                                avg(load1)
                           FROM sw_host_samples
                          WHERE time >= to_timestamp($1) AND time < to_timestamp($2)
                          GROUP BY agent_id, host, t ORDER BY agent_id, host, t",
                    )
                    .await?;
                client
                    .query(&stmt, &[&(from_s as f64), &(to_s as f64), &(step as f64)])
                    .await?
            }
        };
        Ok(rows
            .iter()
            .map(|r| HostPoint {
                agent_id: r.get(0),
                host: r.get(1),
                time_ms: r.get(2),
                cpu_percent: r.get(3),
                mem_used_bytes: r.get(4),
                mem_total_bytes: r.get(5),
                net_rx_bytes_per_s: r.get(6),
                net_tx_bytes_per_s: r.get(7),
                load1: r.get(8),
            })
            .collect())
    }
}

//! The read side of database probes for the API: latest state per database, and samples.

use serde::Serialize;

use crate::{Store, StoreError};

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
    /// `none`, `refused`, `timeout`, `authentication`, `too_many_connections`, `other`.
    pub failure: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_message: Option<String>,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    pub replay_paused: bool,
    pub detail: serde_json::Value,
}

const COLUMNS: &str = "database, engine, role, agent_id, (extract(epoch FROM time) * 1000)::int8,
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

impl Store {
    /// The newest sample of every probed database (any age), by name.
    pub async fn databases(&self) -> Result<Vec<DatabaseSample>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT DISTINCT ON (database) {COLUMNS} FROM sw_probe_samples ORDER BY database, time DESC"),
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
                    "SELECT {COLUMNS} FROM sw_probe_samples
                      WHERE database = $1 AND time >= to_timestamp($2::float8 / 1000) AND time < to_timestamp($3::float8 / 1000)
                      ORDER BY time LIMIT $4"
                ),
                &[&database, &(from_ms as f64), &(to_ms as f64), &limit],
            )
            .await?;
        Ok(rows.iter().map(sample_of).collect())
    }
}

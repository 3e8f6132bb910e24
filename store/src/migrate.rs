//! Forward-only schema migrations from `migrations/NNNN_name.sql`, applied at start-up.
//!
//! A session-level advisory lock serializes collectors that start at the same time: the second
//! waits, then finds every migration recorded and applies nothing.

use tokio_postgres::Client;

use crate::StoreError;

/// Every migration, in order. A test checks this list against the `migrations/` folder.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../migrations/0001_init.sql")),
    (
        "0002_alerts",
        include_str!("../../migrations/0002_alerts.sql"),
    ),
    (
        "0003_histogram_arrays",
        include_str!("../../migrations/0003_histogram_arrays.sql"),
    ),
    (
        "0004_dependency_minutes",
        include_str!("../../migrations/0004_dependency_minutes.sql"),
    ),
    (
        "0005_dependency_minutes_packed_at_ingest",
        include_str!("../../migrations/0005_dependency_minutes_packed_at_ingest.sql"),
    ),
    (
        "0006_service_minutes",
        include_str!("../../migrations/0006_service_minutes.sql"),
    ),
    (
        "0007_sessions",
        include_str!("../../migrations/0007_sessions.sql"),
    ),
    (
        "0008_hourly_rollups",
        include_str!("../../migrations/0008_hourly_rollups.sql"),
    ),
    (
        "0009_alert_leader_epoch",
        include_str!("../../migrations/0009_alert_leader_epoch.sql"),
    ),
    (
        "0010_agent_losses",
        include_str!("../../migrations/0010_agent_losses.sql"),
    ),
    (
        "0011_alert_peak",
        include_str!("../../migrations/0011_alert_peak.sql"),
    ),
    (
        "0012_recent_aggregates",
        include_str!("../../migrations/0012_recent_aggregates.sql"),
    ),
    (
        "0013_recent_flag_counts",
        include_str!("../../migrations/0013_recent_flag_counts.sql"),
    ),
    (
        "0014_incidents",
        include_str!("../../migrations/0014_incidents.sql"),
    ),
    (
        "0015_recurrence",
        include_str!("../../migrations/0015_recurrence.sql"),
    ),
    (
        "0016_service_versions",
        include_str!("../../migrations/0016_service_versions.sql"),
    ),
    (
        "0017_incident_threads",
        include_str!("../../migrations/0017_incident_threads.sql"),
    ),
    (
        "0018_entry_calls",
        include_str!("../../migrations/0018_entry_calls.sql"),
    ),
    (
        "0019_instance_minutes",
        include_str!("../../migrations/0019_instance_minutes.sql"),
    ),
    (
        "0020_metrics_logs",
        include_str!("../../migrations/0020_metrics_logs.sql"),
    ),
    (
        "0021_sample_rollups",
        include_str!("../../migrations/0021_sample_rollups.sql"),
    ),
    (
        "0022_compact_spans",
        include_str!("../../migrations/0022_compact_spans.sql"),
    ),
    (
        "0023_rollup_deltas",
        include_str!("../../migrations/0023_rollup_deltas.sql"),
    ),
    (
        "0024_brin_per_partition",
        include_str!("../../migrations/0024_brin_per_partition.sql"),
    ),
    (
        "0025_lz4_compression",
        include_str!("../../migrations/0025_lz4_compression.sql"),
    ),
    (
        "0026_probe_slices",
        include_str!("../../migrations/0026_probe_slices.sql"),
    ),
    (
        "0027_recent_aggregates_appended",
        include_str!("../../migrations/0027_recent_aggregates_appended.sql"),
    ),
    (
        "0028_aggregates_appended",
        include_str!("../../migrations/0028_aggregates_appended.sql"),
    ),
    (
        "0029_recent_aggregates_ring",
        include_str!("../../migrations/0029_recent_aggregates_ring.sql"),
    ),
    (
        "0030_recent_aggregates_numbered",
        include_str!("../../migrations/0030_recent_aggregates_numbered.sql"),
    ),
];

/// Advisory lock key for migrations ("stormwatch migrate").
const MIGRATE_LOCK: i64 = 0x5357_4d49_4752_0001;

/// Applies the migrations not yet recorded in `sw_migrations`, then, on a Citus coordinator,
/// distributes the tables not distributed yet ([`crate::citus`]); returns how many migrations
/// it applied.
pub async fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATE_LOCK])
        .await?;
    let result = match apply(client).await {
        Ok(applied) => crate::citus::distribute_if_citus(client)
            .await
            .map(|_| applied),
        Err(e) => Err(e),
    };
    // Unlock even when a migration failed, so the next attempt does not wait forever.
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATE_LOCK])
        .await;
    let reset = client.batch_execute("RESET client_min_messages").await;
    let applied = result?;
    unlock?;
    reset?;
    Ok(applied)
}

async fn apply(client: &mut Client) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE TABLE IF NOT EXISTS sw_migrations (
                 name text PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
    let done: Vec<String> = client
        .query("SELECT name FROM sw_migrations", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut applied = 0;
    for (name, sql) in MIGRATIONS {
        if done.iter().any(|d| d == name) {
            continue;
        }
        tracing::info!(migration = name, "applying migration");
        let tx = client.transaction().await?;
        tx.batch_execute(sql)
            .await
            .map_err(|e| StoreError::Migration {
                name: (*name).to_owned(),
                source: e,
            })?;
        tx.execute("INSERT INTO sw_migrations (name) VALUES ($1)", &[name])
            .await?;
        tx.commit().await?;
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_listed_in_order() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .map(|n| n.trim_end_matches(".sql").to_owned())
            .collect();
        files.sort();
        let listed: Vec<&str> = super::MIGRATIONS.iter().map(|(n, _)| *n).collect();
        assert_eq!(files, listed);
    }
}

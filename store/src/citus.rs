//! Scale-out on Citus: when the database has the `citus` extension, the tables are
//! distributed after the migrations (ARCHITECTURE.md, "Growing past one machine"), so one
//! collector (or several) runs unchanged on a Citus coordinator with workers.
//!
//! - Spans by `trace_id` (a trace's spans on one node: a trace lookup hits one shard).
//! - Tables keyed by service (aggregates, their recent buckets, service rollups, calls per
//!   operation, requests per instance, flag counts, versions, metric series, log records) by
//!   `service`, colocated, so the rows a service page joins sit together.
//! - Dependency rollups by `peer`; the rollup deltas by their first key.
//! - What an agent sends about itself (batch claims, counters, host samples and rollups) by
//!   `agent_id`; database probes and their rollups by `database`.
//! - Small tables (alerts, incidents, silences, sessions, the leader row, label and attribute
//!   dictionaries) as reference tables, copied to every node.
//! - The `sw_` SQL functions the upserts call are propagated to the workers.
//!
//! Every step is skipped when already done, so it runs after every migration: a table a new
//! migration creates is distributed at the next start. Tables the list does not name stay
//! local to the coordinator (`sw_migrations`).

use tokio_postgres::Client;

use crate::StoreError;

/// Reference tables, parents before the tables whose foreign keys point at them.
const REFERENCE: &[&str] = &[
    "sw_alert_state",
    "sw_alert_events",
    "sw_notifications",
    "sw_silences",
    "sw_sessions",
    "sw_alert_leader",
    "sw_incidents",
    "sw_incident_alerts",
    "sw_incident_threads",
    "sw_labels",
    "sw_attr_dicts",
];

/// Distributed tables and their distribution column.
const DISTRIBUTED: &[(&str, &str)] = &[
    ("sw_spans", "trace_id"),
    ("sw_aggregates", "service"),
    ("sw_recent_aggregates", "service"),
    ("sw_service_minutes", "service"),
    ("sw_service_hours", "service"),
    ("sw_entry_calls", "service"),
    ("sw_instance_minutes", "service"),
    ("sw_flag_counts", "service"),
    ("sw_recent_flag_counts", "service"),
    ("sw_service_versions", "service"),
    ("sw_metric_minutes", "service"),
    ("sw_logs", "service"),
    ("sw_dependency_minutes", "peer"),
    ("sw_dependency_hours", "peer"),
    ("sw_rollup_deltas", "k1"),
    ("sw_batches", "agent_id"),
    ("sw_agents", "agent_id"),
    ("sw_agent_stats", "agent_id"),
    ("sw_host_samples", "agent_id"),
    ("sw_host_rollups", "agent_id"),
    ("sw_probe_samples", "database"),
    ("sw_probe_rollups", "database"),
];

/// What [`distribute`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Distribution {
    /// Tables made reference or distributed tables now.
    pub tables: Vec<String>,
    /// Functions propagated to the workers now.
    pub functions: Vec<String>,
}

/// True when the database has the `citus` extension.
pub async fn is_citus(client: &Client) -> Result<bool, StoreError> {
    Ok(client
        .query_opt("SELECT 1 FROM pg_extension WHERE extname = 'citus'", &[])
        .await?
        .is_some())
}

/// On a database with the `citus` extension, [`distribute`]s (and logs what it did); nothing
/// otherwise. Called by the migrations, under their lock.
pub(crate) async fn distribute_if_citus(client: &Client) -> Result<(), StoreError> {
    if !is_citus(client).await? {
        return Ok(());
    }
    let done = distribute(client).await?;
    if !done.tables.is_empty() || !done.functions.is_empty() {
        tracing::info!(tables = ?done.tables, functions = ?done.functions, "Citus: distributed");
    }
    Ok(())
}

/// Distributes what is not distributed yet (see the module). Call after the migrations, on a
/// database with the `citus` extension.
pub async fn distribute(client: &Client) -> Result<Distribution, StoreError> {
    let mut done = Distribution::default();
    let exists = |table: &str| {
        let table = table.to_owned();
        async move {
            client
                .query_opt("SELECT to_regclass($1)::text", &[&table])
                .await
                .map(|r| r.and_then(|r| r.get::<_, Option<String>>(0)).is_some())
        }
    };
    let distributed = |table: &str| {
        let table = table.to_owned();
        async move {
            client
                .query_opt(
                    "SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::text::regclass",
                    &[&table],
                )
                .await
                .map(|r| r.is_some())
        }
    };
    // Functions first: a table's rows may be rewritten by an upsert calling them as soon as
    // it is distributed.
    let functions = client
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p
               JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE n.nspname = current_schema() AND p.proname LIKE 'sw\\_%'
                AND NOT EXISTS (SELECT 1 FROM pg_dist_object o
                                 WHERE o.classid = 'pg_proc'::regclass AND o.objid = p.oid)
              ORDER BY 1",
            &[],
        )
        .await?;
    for f in &functions {
        let f: String = f.get(0);
        client
            .execute(
                "SELECT create_distributed_function($1::text::regprocedure)",
                &[&f],
            )
            .await?;
        done.functions.push(f);
    }
    for table in REFERENCE {
        if exists(table).await? && !distributed(table).await? {
            client
                .execute(
                    "SELECT create_reference_table($1::text::regclass)",
                    &[table],
                )
                .await?;
            done.tables.push((*table).to_owned());
        }
    }
    for (table, column) in DISTRIBUTED {
        if exists(table).await? && !distributed(table).await? {
            client
                .execute(
                    "SELECT create_distributed_table($1::text::regclass, $2)",
                    &[table, column],
                )
                .await?;
            done.tables.push((*table).to_owned());
        }
    }
    Ok(done)
}

/// Days of spans kept in heap (row) storage on Citus before [`Store::columnar_old_spans`]
/// converts them: today and yesterday take late batches and spool replays; older days are
/// only read, and columnar stores them in about a sixth of the space (41 bytes a span against
/// 254 in heap for the demo's spans, docs/citus.md).
pub const COLUMNAR_AFTER_DAYS: i64 = 2;

impl crate::Store {
    /// On a Citus coordinator with the `citus_columnar` extension, converts the `sw_spans`
    /// partitions of days at least [`COLUMNAR_AFTER_DAYS`] old to columnar storage
    /// (`alter_table_set_access_method`, which drops the partition's BRIN index: columnar has
    /// none); returns the partitions converted. Nothing without that extension. Spans are only
    /// ever inserted, which columnar tables take; the other partitioned tables are upserted
    /// and stay in heap storage.
    pub async fn columnar_old_spans(&self, now_ns: i64) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let ready = client
            .query_one(
                "SELECT count(*) = 2 FROM pg_extension WHERE extname IN ('citus', 'citus_columnar')",
                &[],
            )
            .await?
            .get::<_, bool>(0);
        if !ready {
            return Ok(Vec::new());
        }
        let newest_converted = crate::partitions::day_of_ns(now_ns) - COLUMNAR_AFTER_DAYS;
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                   JOIN pg_class p ON p.oid = i.inhparent
                   JOIN pg_am a ON a.oid = c.relam
                  WHERE p.relname = 'sw_spans' AND a.amname = 'heap'
                  ORDER BY 1",
                &[],
            )
            .await?;
        let mut converted = Vec::new();
        for r in &rows {
            let name: String = r.get(0);
            if crate::partitions::day_of_name(&name).is_some_and(|d| d <= newest_converted) {
                client
                    .execute(
                        "SELECT alter_table_set_access_method($1::text::regclass, 'columnar')",
                        &[&name],
                    )
                    .await?;
                converted.push(name);
            }
        }
        Ok(converted)
    }
}

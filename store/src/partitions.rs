//! Daily partitions of `sw_spans` (by `start_ns`), `sw_aggregates` and its rollups
//! `sw_dependency_minutes`, `sw_service_minutes` (by `minute`), `sw_service_hours` and
//! `sw_dependency_hours` (by `hour`), `sw_entry_calls`, `sw_instance_minutes` and
//! `sw_metric_minutes` (by `minute`), `sw_logs` (by `time`); retention by dropping whole
//! partitions, and vacuuming after a bulk load ([`Store::vacuum_analyze`]).

use crate::{Store, StoreError};

const NS_PER_DAY: i64 = 86_400 * 1_000_000_000;
/// Advisory lock key that serializes partition DDL between collectors.
const PARTITION_LOCK: i64 = 0x5357_5041_5254_0001;
/// Days created ahead of today, so the first batch of a day never waits on DDL.
pub const DAYS_AHEAD: i64 = 2;

/// The day (days since the Unix epoch) of a nanosecond timestamp.
pub fn day_of_ns(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_DAY)
}

/// `YYYYMMDD` of a day number.
pub fn day_name(day: i64) -> String {
    match time::Date::from_julian_day((day + 2_440_588) as i32) {
        Ok(d) => format!("{:04}{:02}{:02}", d.year(), u8::from(d.month()), d.day()),
        Err(_) => format!("d{day}"),
    }
}

pub(crate) fn day_of_name(name: &str) -> Option<i64> {
    let digits = name.rsplit("_p").next()?;
    if digits.len() != 8 {
        return None;
    }
    let (y, m, d) = (
        digits[..4].parse().ok()?,
        digits[4..6].parse::<u8>().ok()?,
        digits[6..].parse().ok()?,
    );
    let date = time::Date::from_calendar_date(y, time::Month::try_from(m).ok()?, d).ok()?;
    Some(i64::from(date.to_julian_day()) - 2_440_588)
}

impl Store {
    /// The oldest day still inside the retention window.
    pub fn oldest_kept_day(&self, now_ns: i64) -> i64 {
        day_of_ns(now_ns) - i64::from(self.retention_days)
    }

    /// Makes sure the partitions for `days` exist.
    pub async fn ensure_partitions(&self, days: &[i64]) -> Result<(), StoreError> {
        let missing: Vec<i64> = {
            let known = self.known_days.lock().unwrap_or_else(|p| p.into_inner());
            let mut m: Vec<i64> = days
                .iter()
                .copied()
                .filter(|d| !known.contains(d))
                .collect();
            m.sort_unstable();
            m.dedup();
            m
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await?;
        // "already exists, skipping" notices are expected here; keep them out of the log.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await?;
        for day in &missing {
            let ddl = partition_ddl(*day);
            let names: Vec<&str> = ddl.iter().map(|(name, _)| name.as_str()).collect();
            let existing: Vec<String> = tx
                .query(
                    "SELECT relname::text FROM pg_class WHERE relname = ANY($1)",
                    &[&names],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            // Only partitions that do not exist, with their index: an old day's span partition
            // may have been made columnar (`citus::columnar_old_spans`), which takes no BRIN.
            // One statement at a time: Citus forwards a DDL statement's whole query string to
            // the workers, which refuse several commands in one.
            for (name, statements) in &ddl {
                if existing.contains(name) {
                    continue;
                }
                for statement in statements {
                    tx.batch_execute(statement).await?;
                }
            }
        }
        tx.commit().await?;
        let mut known = self.known_days.lock().unwrap_or_else(|p| p.into_inner());
        known.extend(missing);
        Ok(())
    }

    /// Creates today's partitions and [`DAYS_AHEAD`] more.
    pub async fn create_partitions_ahead(&self, now_ns: i64) -> Result<(), StoreError> {
        let today = day_of_ns(now_ns);
        let days: Vec<i64> = (today..=today + DAYS_AHEAD).collect();
        self.ensure_partitions(&days).await
    }

    /// Drops span, aggregate, rollup, metric and log partitions older than the retention
    /// window and deletes old samples and batch records. Returns the names of the dropped
    /// partitions.
    pub async fn apply_retention(&self, now_ns: i64) -> Result<Vec<String>, StoreError> {
        let oldest = self.oldest_kept_day(now_ns);
        let mut client = self.client().await?;
        let rows = client
            .query(
                "SELECT c.relname::text FROM pg_inherits i
                   JOIN pg_class c ON c.oid = i.inhrelid
                   JOIN pg_class p ON p.oid = i.inhparent
                  WHERE p.relname = 'sw_spans' OR p.relname = ANY($1)",
                &[&BY_MINUTE.to_vec()],
            )
            .await?;
        let expired: Vec<String> = rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .filter(|n| day_of_name(n).is_some_and(|d| d < oldest))
            .collect();
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&PARTITION_LOCK])
            .await?;
        let cutoff_s = (oldest * 86_400) as f64;
        // The alert history first: on Citus it is a reference table with a foreign key, which
        // a transaction may no longer modify once it has touched shards in parallel.
        tx.execute(
            "DELETE FROM sw_alert_events WHERE time < to_timestamp($1)",
            &[&cutoff_s],
        )
        .await?;
        for name in &expired {
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
                .await?;
        }
        for table in [
            "sw_host_samples",
            "sw_probe_samples",
            "sw_host_rollups",
            "sw_probe_rollups",
            "sw_agent_stats",
        ] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE time < to_timestamp($1)"),
                &[&cutoff_s],
            )
            .await?;
        }
        tx.execute(
            "DELETE FROM sw_batches WHERE received_at < to_timestamp($1)",
            &[&cutoff_s],
        )
        .await?;
        tx.execute(
            "DELETE FROM sw_service_versions WHERE last_seen < to_timestamp($1)",
            &[&cutoff_s],
        )
        .await?;
        tx.commit().await?;
        let mut known = self.known_days.lock().unwrap_or_else(|p| p.into_inner());
        known.retain(|d| *d >= oldest);
        if !expired.is_empty() {
            tracing::info!(partitions = ?expired, "retention dropped partitions");
        }
        Ok(expired)
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
}

/// Day `day`'s partitions, each with the statements that create it and its own index.
fn partition_ddl(day: i64) -> Vec<(String, Vec<String>)> {
    let name = day_name(day);
    let (from_ns, to_ns) = (day * NS_PER_DAY, (day + 1) * NS_PER_DAY);
    let (from_s, to_s) = (day * 86_400, (day + 1) * 86_400);
    let spans = format!("sw_spans_p{name}");
    let mut out = vec![(
        spans.clone(),
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {spans} PARTITION OF sw_spans
                     FOR VALUES FROM ({from_ns}) TO ({to_ns})"
            ),
            format!(
                "CREATE INDEX IF NOT EXISTS {spans}_start ON {spans}
                     USING brin (start_ns) WITH (pages_per_range = 32, autosummarize = on)"
            ),
        ],
    )];
    for parent in BY_MINUTE {
        let table = format!("{parent}_p{name}");
        let mut statements = vec![format!(
            "CREATE TABLE IF NOT EXISTS {table} PARTITION OF {parent}
                 FOR VALUES FROM (to_timestamp({from_s})) TO (to_timestamp({to_s}))"
        )];
        if parent == "sw_metric_minutes" {
            statements.push(format!(
                "CREATE INDEX IF NOT EXISTS {table}_minute ON {table} USING brin (minute)"
            ));
        }
        out.push((table, statements));
    }
    out
}

/// The tables partitioned by day on a timestamp (`sw_spans` is on nanoseconds).
const BY_MINUTE: [&str; 9] = [
    "sw_aggregates",
    "sw_dependency_minutes",
    "sw_service_minutes",
    "sw_service_hours",
    "sw_dependency_hours",
    "sw_entry_calls",
    "sw_instance_minutes",
    "sw_metric_minutes",
    "sw_logs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_names_round_trip() {
        let day = day_of_ns(1_764_028_800 * 1_000_000_000); // 2025-11-25T00:00:00Z
        assert_eq!(day_name(day), "20251125");
        assert_eq!(day_of_name("sw_spans_p20251125"), Some(day));
        assert_eq!(day_of_name("sw_spans"), None);
        assert_eq!(day_of_ns(-1), -1);
    }
}

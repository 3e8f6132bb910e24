//! What alert rules read: grouped aggregates, the latest host samples, agent liveness and
//! drops, flagged-span counts (probe samples are read in `probes.rs`). Never raw spans.

use std::collections::BTreeMap;

use stormwatch_model::{DependencyClass, Histogram};

use crate::histogram_codec::histogram_of;
use crate::{Store, StoreError};

/// Labels of one group: `service`, `class`, `peer`, `operation` (those grouped by).
pub type Labels = BTreeMap<String, String>;

/// Aggregates of one group over a window.
#[derive(Debug, Clone, Default)]
pub struct Group {
    pub labels: Labels,
    pub count: u64,
    pub errors: u64,
    /// Span counts by status class (`"503"`, `"200"`, `"ok"`, `"error"`).
    pub by_status: BTreeMap<String, u64>,
    pub histogram: Histogram,
}

/// Which aggregates a rule looks at.
#[derive(Debug, Clone, Default)]
pub struct GroupFilter {
    pub service: Option<String>,
    pub class: Option<DependencyClass>,
    pub peer: Option<String>,
    pub operation: Option<String>,
}

/// One agent's liveness.
#[derive(Debug, Clone)]
pub struct AgentState {
    pub agent_id: String,
    pub last_seen_s: f64,
    /// Spans dropped during the window (from the per-batch counters).
    pub dropped_in_window: i64,
}

/// Latest host sample.
#[derive(Debug, Clone)]
pub struct HostState {
    pub host: String,
    pub cpu_percent: f64,
    pub mem_percent: f64,
    /// The fullest disk, percent used.
    pub disk_percent: f64,
}

/// Flagged spans of one (service, operation, peer) over a window.
#[derive(Debug, Clone)]
pub struct FlagCount {
    pub service: String,
    pub operation: String,
    pub peer: String,
    pub count: i64,
}

impl Store {
    /// Aggregates with `minute` in `[from_s, to_s)`, grouped by the label names in `group_by`.
    pub async fn aggregate_groups(
        &self,
        filter: &GroupFilter,
        group_by: &[String],
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<Group>, StoreError> {
        let mut groups: BTreeMap<Labels, Group> = BTreeMap::new();
        for (_, m) in self.minute_groups(filter, group_by, from_s, to_s).await? {
            match groups.get_mut(&m.labels) {
                Some(g) => g.add(&m),
                None => {
                    groups.insert(m.labels.clone(), m);
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Like [`Store::aggregate_groups`], one group per minute as well: `(minute, group)`.
    pub async fn minute_groups(
        &self,
        filter: &GroupFilter,
        group_by: &[String],
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<(i64, Group)>, StoreError> {
        let rows = self
            .aggregate_rows(
                &filter.service,
                filter.class,
                &filter.peer,
                &filter.operation,
                from_s,
                to_s,
            )
            .await?;
        let mut groups: BTreeMap<(i64, Labels), Group> = BTreeMap::new();
        for r in &rows {
            let labels = row_labels(r, group_by, 1);
            groups
                .entry((r.get::<_, i64>(0), labels.clone()))
                .or_insert_with(|| Group::new(labels))
                .add_row(r, 5, 9)?;
        }
        Ok(groups.into_iter().map(|((m, _), g)| (m, g)).collect())
    }

    /// Every agent with its last batch time and the spans it dropped since `since_s`.
    pub async fn agent_states(&self, since_s: f64) -> Result<Vec<AgentState>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT a.agent_id, extract(epoch FROM a.last_seen)::float8,
                        coalesce((SELECT sum(d)::int8 FROM (
                            SELECT max(spans_dropped) - min(spans_dropped) AS d FROM sw_agent_stats s
                             WHERE s.agent_id = a.agent_id AND s.time >= to_timestamp($1)
                             GROUP BY s.instance) per_instance), 0)
                   FROM sw_agents a ORDER BY a.agent_id",
                &[&since_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AgentState {
                agent_id: r.get(0),
                last_seen_s: r.get(1),
                dropped_in_window: r.get(2),
            })
            .collect())
    }

    /// The newest host sample of every host seen since `since_s`.
    pub async fn latest_hosts(&self, since_s: f64) -> Result<Vec<HostState>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT ON (host) host, cpu_percent,
                        CASE WHEN mem_total_bytes > 0 THEN 100.0 * mem_used_bytes / mem_total_bytes ELSE 0 END,
                        coalesce((SELECT max(100.0 * (d->>'used_bytes')::float8 / nullif((d->>'total_bytes')::float8, 0))
                                    FROM jsonb_array_elements(disks) d), 0)
                   FROM sw_host_samples WHERE time >= to_timestamp($1)
                  ORDER BY host, time DESC",
                &[&since_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| HostState {
                host: r.get(0),
                cpu_percent: r.get(1),
                mem_percent: r.get::<_, f64>(2),
                disk_percent: r.get::<_, f64>(3),
            })
            .collect())
    }

    /// Flagged spans of `services` per (flag, peer) in `[from_s, to_s)`: what an incident's
    /// causes compare with the hour before.
    pub async fn flag_totals(
        &self,
        services: &[String],
        from_s: i64,
        to_s: i64,
    ) -> Result<BTreeMap<(String, String), i64>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT flag, peer, sum(count)::int8 FROM sw_flag_counts
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND service = ANY($3)
                  GROUP BY 1, 2",
                &[&(from_s as f64), &(to_s as f64), &services],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ((r.get(0), r.get(1)), r.get(2)))
            .collect())
    }

    /// Flagged spans per (flag, minute) in `[from_s, to_s)`, every service summed: the
    /// incident timeline's flag rows. Minutes as Unix seconds.
    pub async fn flag_minutes(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT flag, extract(epoch FROM minute)::int8, sum(count)::int8 FROM sw_flag_counts
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                  GROUP BY 1, 2 ORDER BY 1, 2",
                &[&(from_s as f64), &(to_s as f64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Flagged spans with `flag` per (service, operation, peer) with `minute` ≥ `from_s`.
    pub async fn flag_counts(&self, flag: &str, from_s: i64) -> Result<Vec<FlagCount>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT service, operation, peer, sum(count)::int8 FROM sw_flag_counts
                  WHERE flag = $1 AND minute >= to_timestamp($2)
                  GROUP BY service, operation, peer ORDER BY service, operation, peer",
                &[&flag, &(from_s as f64)],
            )
            .await?;
        Ok(rows.iter().map(FlagCount::from_row).collect())
    }
}

/// The labels named in `group_by` of a row whose service, class, peer and operation are the
/// columns from `at`.
pub(crate) fn row_labels(r: &tokio_postgres::Row, group_by: &[String], at: usize) -> Labels {
    let mut labels = Labels::new();
    for (i, name) in ["service", "class", "peer", "operation"].iter().enumerate() {
        if group_by.iter().any(|g| g == name) {
            labels.insert((*name).to_owned(), r.get::<_, String>(at + i));
        }
    }
    labels
}

impl Group {
    pub(crate) fn new(labels: Labels) -> Group {
        Group {
            labels,
            ..Default::default()
        }
    }

    /// Adds another group's counts and histogram.
    fn add(&mut self, other: &Group) {
        self.count += other.count;
        self.errors += other.errors;
        for (status, n) in &other.by_status {
            *self.by_status.entry(status.clone()).or_default() += n;
        }
        self.histogram.merge(&other.histogram);
    }

    /// Adds a row holding status class, count and errors in the columns from `at`, and the
    /// histogram in the columns from `hist` (see `histogram_of`).
    pub(crate) fn add_row(
        &mut self,
        r: &tokio_postgres::Row,
        at: usize,
        hist: usize,
    ) -> Result<(), StoreError> {
        self.add_counts(
            r.get::<_, &str>(at),
            r.get::<_, i64>(at + 1).max(0) as u64,
            r.get::<_, i64>(at + 2).max(0) as u64,
            &histogram_of(r, hist)?,
        );
        Ok(())
    }

    /// Adds `count` spans of status class `status`, `errors` of them failed, and their
    /// histogram.
    pub(crate) fn add_counts(&mut self, status: &str, count: u64, errors: u64, h: &Histogram) {
        self.count += count;
        self.errors += errors;
        match self.by_status.get_mut(status) {
            Some(n) => *n += count,
            None => {
                self.by_status.insert(status.to_owned(), count);
            }
        }
        self.histogram.merge(h);
    }
}

impl FlagCount {
    /// A row of (service, operation, peer, count).
    pub(crate) fn from_row(r: &tokio_postgres::Row) -> FlagCount {
        FlagCount {
            service: r.get(0),
            operation: r.get(1),
            peer: r.get(2),
            count: r.get(3),
        }
    }
}

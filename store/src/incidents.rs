//! Incidents: related alerts grouped by the alert leader (`collector/src/incidents/`), their
//! probable causes, and the traffic those causes are worked out from.
//!
//! Every write checks the leader's epoch in its own transaction, as alert state does
//! ([`crate::alerts::Term`]), so a deposed leader cannot open or change an incident; and an
//! alert can be in one open incident at a time (a unique index), whoever writes.

use std::collections::BTreeMap;

use serde::Serialize;
use stormwatch_model::{DependencyClass, Histogram};

use crate::alerts::{check_term, Term};
use crate::histogram_codec::histogram_of;
use crate::signals::Labels;
use crate::{Store, StoreError};

/// Most incidents one list returns.
pub const MAX_INCIDENTS: i64 = 500;

/// One alert of an incident.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentAlert {
    pub rule: String,
    pub labels_key: String,
    pub labels: Labels,
    pub severity: String,
    pub summary: String,
    /// Unix seconds: when the alert began firing.
    pub started: f64,
    /// Unix seconds: when it joined the incident.
    pub joined: f64,
    /// Unix seconds: when it resolved (`None` while active).
    pub resolved: Option<f64>,
}

/// An incident as stored.
#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: i64,
    /// Unix seconds.
    pub opened: f64,
    pub resolved: Option<f64>,
    pub title: String,
    /// The first-ranked probable cause in one line (empty until one is found).
    pub cause_text: String,
    /// The ranked causes with their evidence (see `collector/src/incidents/cause.rs`).
    pub cause: serde_json::Value,
    /// Unix seconds: when the causes were last worked out.
    pub cause_updated: Option<f64>,
    /// Its alerts' earlier days in words ("shop-primary refused connections 10:00–10:12 UTC
    /// on 6 of the last 7 days"), see [`crate::recurrence`].
    pub recurrence: Vec<String>,
    pub alerts: Vec<IncidentAlert>,
}

/// What the grouping decided in one round; applied together by
/// [`Store::apply_incident_changes`].
#[derive(Debug, Clone)]
pub enum IncidentChange {
    /// A new incident with its first alerts and causes.
    Open {
        opened: f64,
        title: String,
        cause_text: String,
        cause: serde_json::Value,
        recurrence: Vec<String>,
        alerts: Vec<IncidentAlert>,
    },
    /// An alert joins an open incident.
    Join { incident: i64, alert: IncidentAlert },
    /// An alert of the incident resolved (`at`), or fires again (`None`).
    AlertResolved {
        incident: i64,
        rule: String,
        labels_key: String,
        at: Option<f64>,
    },
    /// New title, causes and recurrence.
    Cause {
        incident: i64,
        title: String,
        cause_text: String,
        cause: serde_json::Value,
        recurrence: Vec<String>,
    },
    /// Every alert has resolved.
    Resolve { incident: i64, at: f64 },
}

/// What one incident means to a notification: for the webhook payload and Slack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IncidentRef {
    pub id: i64,
    pub title: String,
    pub cause: String,
    /// See [`Incident::recurrence`].
    pub recurrence: Vec<String>,
}

/// Traffic of one span group over a window, from the per-minute aggregates.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub count: u64,
    pub errors: u64,
    pub sum_ns: u64,
    /// Span counts by status class (`"503"`, `"200"`, `"ok"`, `"connect_failure"`…).
    pub by_status: BTreeMap<String, u64>,
    pub histogram: Histogram,
}

impl Stats {
    fn add(&mut self, count: u64, errors: u64, sum_ns: u64, status: String, h: &Histogram) {
        self.count += count;
        self.errors += errors;
        self.sum_ns += sum_ns;
        *self.by_status.entry(status).or_default() += count;
        self.histogram.merge(h);
    }

    /// Spans answered with an HTTP 5xx status.
    pub fn http_5xx(&self) -> u64 {
        self.by_status
            .iter()
            .filter(|(s, _)| s.len() == 3 && s.starts_with('5'))
            .map(|(_, n)| n)
            .sum()
    }
}

/// One service's traffic over a window: its server operations, and what it called.
#[derive(Debug, Clone, Default)]
pub struct ServiceTraffic {
    /// Server spans (`http_server`) by operation.
    pub operations: BTreeMap<String, Stats>,
    /// Dependency calls (`db`, `redis`, `http_client`, `messaging`) by (class, peer).
    pub dependencies: BTreeMap<(String, String), Stats>,
    /// The same calls by the server operation that made them: (operation, class, peer).
    /// Empty when the service's agents do not report it (older agents).
    pub by_entry: crate::entry_calls::ByEntry,
}

const INCIDENT_COLUMNS: &str =
    "id, extract(epoch FROM opened)::float8, extract(epoch FROM resolved)::float8,
     title, cause_text, cause, extract(epoch FROM cause_updated)::float8, recurrence";
const ALERT_COLUMNS: &str = "incident_id, rule, labels_key, labels, severity, summary,
     extract(epoch FROM started)::float8, extract(epoch FROM joined)::float8,
     extract(epoch FROM resolved)::float8";

fn labels_json(l: &Labels) -> Result<serde_json::Value, StoreError> {
    serde_json::to_value(l).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn insert_alert(
    tx: &tokio_postgres::Transaction<'_>,
    incident: i64,
    a: &IncidentAlert,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO sw_incident_alerts (incident_id, rule, labels_key, labels, severity, summary,
             started, joined, resolved)
         VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7), to_timestamp($8), to_timestamp($9))
         ON CONFLICT (incident_id, rule, labels_key) DO UPDATE SET resolved = NULL,
             summary = excluded.summary",
        &[
            &incident,
            &a.rule,
            &a.labels_key,
            &labels_json(&a.labels)?,
            &a.severity,
            &a.summary,
            &a.started,
            &a.joined,
            &a.resolved,
        ],
    )
    .await?;
    Ok(())
}

impl Store {
    /// Applies one round's incident changes in one transaction, under `term` (else
    /// [`StoreError::Fenced`] and nothing is written). Returns the ids of the incidents opened,
    /// in the order of their `Open` changes.
    pub async fn apply_incident_changes(
        &self,
        term: &Term,
        changes: &[IncidentChange],
        now_s: f64,
    ) -> Result<Vec<i64>, StoreError> {
        if changes.is_empty() {
            return Ok(vec![]);
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_term(&tx, term).await?;
        let mut opened_ids = Vec::new();
        for c in changes {
            match c {
                IncidentChange::Open {
                    opened,
                    title,
                    cause_text,
                    cause,
                    recurrence,
                    alerts,
                } => {
                    let recurrence = serde_json::json!(recurrence);
                    let id: i64 = tx
                        .query_one(
                            "INSERT INTO sw_incidents (opened, title, cause_text, cause, cause_updated, epoch, recurrence)
                             VALUES (to_timestamp($1), $2, $3, $4, to_timestamp($5), $6, $7) RETURNING id",
                            &[opened, title, cause_text, cause, &now_s, &term.epoch, &recurrence],
                        )
                        .await?
                        .get(0);
                    for a in alerts {
                        insert_alert(&tx, id, a).await?;
                    }
                    opened_ids.push(id);
                }
                IncidentChange::Join { incident, alert } => {
                    insert_alert(&tx, *incident, alert).await?;
                }
                IncidentChange::AlertResolved {
                    incident,
                    rule,
                    labels_key,
                    at,
                } => {
                    tx.execute(
                        "UPDATE sw_incident_alerts SET resolved = to_timestamp($4)
                          WHERE incident_id = $1 AND rule = $2 AND labels_key = $3",
                        &[incident, rule, labels_key, at],
                    )
                    .await?;
                }
                IncidentChange::Cause {
                    incident,
                    title,
                    cause_text,
                    cause,
                    recurrence,
                } => {
                    tx.execute(
                        "UPDATE sw_incidents SET title = $2, cause_text = $3, cause = $4,
                                cause_updated = to_timestamp($5), recurrence = $6
                          WHERE id = $1",
                        &[
                            incident,
                            title,
                            cause_text,
                            cause,
                            &now_s,
                            &serde_json::json!(recurrence),
                        ],
                    )
                    .await?;
                }
                IncidentChange::Resolve { incident, at } => {
                    tx.execute(
                        "UPDATE sw_incidents SET resolved = to_timestamp($2) WHERE id = $1 AND resolved IS NULL",
                        &[incident, at],
                    )
                    .await?;
                    // Alerts still marked active end with the incident.
                    tx.execute(
                        "UPDATE sw_incident_alerts SET resolved = to_timestamp($2)
                          WHERE incident_id = $1 AND resolved IS NULL",
                        &[incident, at],
                    )
                    .await?;
                }
            }
        }
        tx.commit().await?;
        Ok(opened_ids)
    }

    async fn incidents_where(
        &self,
        condition: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Incident>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {INCIDENT_COLUMNS} FROM sw_incidents WHERE {condition}
                      ORDER BY resolved IS NULL DESC, opened DESC, id DESC LIMIT {MAX_INCIDENTS}"
                ),
                params,
            )
            .await?;
        let mut incidents: Vec<Incident> = rows
            .iter()
            .map(|r| Incident {
                id: r.get(0),
                opened: r.get(1),
                resolved: r.get(2),
                title: r.get(3),
                cause_text: r.get(4),
                cause: r.get(5),
                cause_updated: r.get(6),
                recurrence: serde_json::from_value(r.get(7)).unwrap_or_default(),
                alerts: vec![],
            })
            .collect();
        if incidents.is_empty() {
            return Ok(incidents);
        }
        let ids: Vec<i64> = incidents.iter().map(|i| i.id).collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {ALERT_COLUMNS} FROM sw_incident_alerts WHERE incident_id = ANY($1)
                      ORDER BY started, rule, labels_key"
                ),
                &[&ids],
            )
            .await?;
        let mut by_id: BTreeMap<i64, Vec<IncidentAlert>> = BTreeMap::new();
        for r in &rows {
            by_id.entry(r.get(0)).or_default().push(IncidentAlert {
                rule: r.get(1),
                labels_key: r.get(2),
                labels: serde_json::from_value(r.get(3)).unwrap_or_default(),
                severity: r.get(4),
                summary: r.get(5),
                started: r.get(6),
                joined: r.get(7),
                resolved: r.get(8),
            });
        }
        for i in &mut incidents {
            i.alerts = by_id.remove(&i.id).unwrap_or_default();
        }
        Ok(incidents)
    }

    /// Incidents not resolved yet, newest first, with their alerts.
    pub async fn open_incidents(&self) -> Result<Vec<Incident>, StoreError> {
        self.incidents_where("resolved IS NULL", &[]).await
    }

    /// Incidents open at some time in `[from_s, to_s)`: open ones first, then newest first
    /// (at most [`MAX_INCIDENTS`]).
    pub async fn incidents(&self, from_s: f64, to_s: f64) -> Result<Vec<Incident>, StoreError> {
        self.incidents_where(
            "opened < to_timestamp($2) AND (resolved IS NULL OR resolved >= to_timestamp($1))",
            &[&from_s, &to_s],
        )
        .await
    }

    /// One incident with its alerts.
    pub async fn incident(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        Ok(self
            .incidents_where("id = $1", &[&id])
            .await?
            .into_iter()
            .next())
    }

    /// The Slack thread of `incident` in `channel` (its conversation id and head ts), if its
    /// head message was posted.
    pub async fn incident_thread(
        &self,
        incident: i64,
        channel: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT slack_channel, ts FROM sw_incident_threads
                  WHERE incident_id = $1 AND channel = $2",
                &[&incident, &channel],
            )
            .await?
            .map(|r| (r.get(0), r.get(1))))
    }

    /// Records the head message of `incident` in `channel`; the one recorded first wins (two
    /// leaders in a hand-over cannot both start a thread). Returns the thread in force.
    pub async fn save_incident_thread(
        &self,
        incident: i64,
        channel: &str,
        slack_channel: &str,
        ts: &str,
    ) -> Result<(String, String), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO sw_incident_threads (incident_id, channel, slack_channel, ts)
                 VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&incident, &channel, &slack_channel, &ts],
            )
            .await?;
        Ok(self
            .incident_thread(incident, channel)
            .await?
            .unwrap_or((slack_channel.to_owned(), ts.to_owned())))
    }

    /// The incident each alert `(rule, labels_key)` belonged to at `at_s` (the newest it had
    /// joined by then), by alert.
    pub async fn incidents_of_alerts(
        &self,
        alerts: &[(String, String, f64)],
    ) -> Result<BTreeMap<(String, String), IncidentRef>, StoreError> {
        let mut out = BTreeMap::new();
        if alerts.is_empty() {
            return Ok(out);
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT i.id, i.title, i.cause_text, i.recurrence FROM sw_incident_alerts a
                   JOIN sw_incidents i ON i.id = a.incident_id
                  WHERE a.rule = $1 AND a.labels_key = $2 AND a.joined <= to_timestamp($3) + interval '1 second'
                  ORDER BY a.joined DESC LIMIT 1",
            )
            .await?;
        for (rule, key, at) in alerts {
            if let Some(r) = client.query_opt(&stmt, &[rule, key, at]).await? {
                out.insert(
                    (rule.clone(), key.clone()),
                    IncidentRef {
                        id: r.get(0),
                        title: r.get(1),
                        cause: r.get(2),
                        recurrence: serde_json::from_value(r.get(3)).unwrap_or_default(),
                    },
                );
            }
        }
        Ok(out)
    }

    /// Which services called which peers in `[from_s, to_s)`: `(service, class, peer)` of the
    /// dependency rows of the aggregates.
    pub async fn dependency_edges(
        &self,
        from_s: i64,
        to_s: i64,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT service, class, peer FROM sw_aggregates
                  WHERE minute >= to_timestamp($1) AND minute < to_timestamp($2)
                    AND class IN ('db', 'redis', 'http_client', 'messaging') AND peer <> ''",
                &[&(from_s as f64), &(to_s as f64)],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Each service's server operations and dependency calls over `[from_s, to_s)`, from the
    /// per-minute aggregates (whole minutes from the one holding `from_s`).
    pub async fn service_traffic(
        &self,
        services: &[String],
        from_s: i64,
        to_s: i64,
    ) -> Result<BTreeMap<String, ServiceTraffic>, StoreError> {
        let mut out: BTreeMap<String, ServiceTraffic> = BTreeMap::new();
        let from = from_s.div_euclid(60) * 60;
        for service in services {
            let rows = self
                .aggregate_rows(&Some(service.clone()), None, &None, &None, from, to_s)
                .await?;
            let t = out.entry(service.clone()).or_default();
            t.by_entry = self.entry_calls(service, from, to_s).await?;
            for r in &rows {
                let class: String = r.get(2);
                let peer: String = r.get(3);
                let operation: String = r.get(4);
                let status: String = r.get(5);
                let count = r.get::<_, i64>(6).max(0) as u64;
                let errors = r.get::<_, i64>(7).max(0) as u64;
                let sum_ns = r.get::<_, i64>(8).max(0) as u64;
                let h = histogram_of(r, 9)?;
                let stats = match class.parse::<DependencyClass>() {
                    Ok(DependencyClass::HttpServer) => t.operations.entry(operation).or_default(),
                    Ok(
                        DependencyClass::Db
                        | DependencyClass::Redis
                        | DependencyClass::HttpClient
                        | DependencyClass::Messaging,
                    ) => t.dependencies.entry((class, peer)).or_default(),
                    _ => continue,
                };
                stats.add(count, errors, sum_ns, status, &h);
            }
        }
        Ok(out)
    }
}

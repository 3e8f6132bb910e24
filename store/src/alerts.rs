//! Alert state, history, the notification outbox and silences.
//!
//! A state change and the notifications it causes are written in one transaction (the
//! outbox), so a collector that dies between evaluating and delivering neither forgets a
//! notification nor, after a restart, sends it twice.

use serde::Serialize;

use crate::signals::Labels;
use crate::{Store, StoreError};

/// One alert instance as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertState {
    pub rule: String,
    pub labels_key: String,
    pub labels: Labels,
    /// `pending`, `firing` or `resolving`.
    pub state: String,
    pub severity: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub summary: String,
    /// Unix seconds.
    pub pending_since: f64,
    pub firing_since: Option<f64>,
    pub resolving_since: Option<f64>,
    pub last_notified: Option<f64>,
}

/// What happened to an instance, to be recorded and notified.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertEvent {
    /// `firing`, `resolved` or `renotify`.
    pub event: String,
    /// Channels to notify.
    pub channels: Vec<String>,
    /// Silenced: recorded and shown, not sent.
    pub silenced: bool,
}

/// One change decided by an evaluation.
#[derive(Debug, Clone)]
pub enum Transition {
    /// Insert or update the instance, and maybe record an event.
    Upsert(AlertState, Option<AlertEvent>),
    /// The instance is over (resolved, or a pending one whose condition went away).
    Remove(AlertState, Option<AlertEvent>),
}

/// A recorded event, as the notifier and the dashboard read it.
#[derive(Debug, Clone, Serialize)]
pub struct EventRow {
    pub id: i64,
    /// Unix seconds.
    pub time: f64,
    pub rule: String,
    pub labels_key: String,
    pub labels: Labels,
    pub event: String,
    pub severity: String,
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    pub summary: String,
    /// Unix seconds: when the instance started firing.
    pub since: f64,
    pub silenced: bool,
}

/// A notification due for delivery.
#[derive(Debug, Clone)]
pub struct Notification {
    pub id: i64,
    pub channel: String,
    pub group_key: String,
    pub attempts: i32,
    pub event: EventRow,
    /// For a resolve sent with Slack's chat.postMessage: the firing message's `ts`.
    pub thread_ts: Option<String>,
}

/// Delivery counts by status, for metrics and the dashboard.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryCounts {
    pub pending: i64,
    pub sent: i64,
    pub failed: i64,
    pub silenced: i64,
}

/// A silence created from the dashboard.
#[derive(Debug, Clone, Serialize)]
pub struct SilenceRow {
    pub id: i64,
    pub rule: Option<String>,
    pub labels: Labels,
    pub starts_at: f64,
    pub ends_at: f64,
    pub comment: String,
    pub created_by: String,
}

const EVENT_COLUMNS: &str =
    "e.id, extract(epoch FROM e.time)::float8, e.rule, e.labels_key, e.labels, e.event,
    e.severity, e.value, e.threshold, e.summary, extract(epoch FROM e.since)::float8, e.silenced";

fn event_of(r: &tokio_postgres::Row, at: usize) -> EventRow {
    let labels: serde_json::Value = r.get(at + 4);
    EventRow {
        id: r.get(at),
        time: r.get(at + 1),
        rule: r.get(at + 2),
        labels_key: r.get(at + 3),
        labels: serde_json::from_value(labels).unwrap_or_default(),
        event: r.get(at + 5),
        severity: r.get(at + 6),
        value: r.get(at + 7),
        threshold: r.get(at + 8),
        summary: r.get(at + 9),
        since: r.get(at + 10),
        silenced: r.get(at + 11),
    }
}

/// `k=v,k=v` in key order: the identity of an instance within its rule.
pub fn labels_key(labels: &Labels) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

impl Store {
    /// Every stored alert instance.
    pub async fn alert_states(&self) -> Result<Vec<AlertState>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT rule, labels_key, labels, state, severity, value, threshold, summary,
                        extract(epoch FROM pending_since)::float8, extract(epoch FROM firing_since)::float8,
                        extract(epoch FROM resolving_since)::float8, extract(epoch FROM last_notified)::float8
                   FROM sw_alert_state ORDER BY rule, labels_key",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| AlertState {
                rule: r.get(0),
                labels_key: r.get(1),
                labels: serde_json::from_value(r.get(2)).unwrap_or_default(),
                state: r.get(3),
                severity: r.get(4),
                value: r.get(5),
                threshold: r.get(6),
                summary: r.get(7),
                pending_since: r.get(8),
                firing_since: r.get(9),
                resolving_since: r.get(10),
                last_notified: r.get(11),
            })
            .collect())
    }

    /// Applies one evaluation's transitions and queues their notifications, atomically.
    /// Notifications of one call share `group_key`, so the notifier can group them.
    pub async fn apply_transitions(
        &self,
        transitions: &[Transition],
        group_key: &str,
        now_s: f64,
    ) -> Result<(), StoreError> {
        if transitions.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for t in transitions {
            let (state, event) = match t {
                Transition::Upsert(s, e) | Transition::Remove(s, e) => (s, e),
            };
            let labels = serde_json::to_value(&state.labels)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
            match t {
                Transition::Upsert(..) => {
                    tx.execute(
                        "INSERT INTO sw_alert_state (rule, labels_key, labels, state, severity, value, threshold, summary,
                             pending_since, firing_since, resolving_since, last_notified, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9), to_timestamp($10),
                                 to_timestamp($11), to_timestamp($12), to_timestamp($13))
                         ON CONFLICT (rule, labels_key) DO UPDATE SET
                             labels = excluded.labels, state = excluded.state, severity = excluded.severity,
                             value = excluded.value, threshold = excluded.threshold, summary = excluded.summary,
                             pending_since = excluded.pending_since, firing_since = excluded.firing_since,
                             resolving_since = excluded.resolving_since, last_notified = excluded.last_notified,
                             updated_at = excluded.updated_at",
                        &[
                            &state.rule,
                            &state.labels_key,
                            &labels,
                            &state.state,
                            &state.severity,
                            &state.value,
                            &state.threshold,
                            &state.summary,
                            &state.pending_since,
                            &state.firing_since,
                            &state.resolving_since,
                            &state.last_notified,
                            &now_s,
                        ],
                    )
                    .await?;
                }
                Transition::Remove(..) => {
                    tx.execute(
                        "DELETE FROM sw_alert_state WHERE rule = $1 AND labels_key = $2",
                        &[&state.rule, &state.labels_key],
                    )
                    .await?;
                }
            }
            let Some(event) = event else { continue };
            let since = state.firing_since.unwrap_or(state.pending_since);
            let id: i64 = tx
                .query_one(
                    "INSERT INTO sw_alert_events (time, rule, labels_key, labels, event, severity, value, threshold,
                         summary, since, silenced)
                     VALUES (to_timestamp($1), $2, $3, $4, $5, $6, $7, $8, $9, to_timestamp($10), $11) RETURNING id",
                    &[
                        &now_s,
                        &state.rule,
                        &state.labels_key,
                        &labels,
                        &event.event,
                        &state.severity,
                        &state.value,
                        &state.threshold,
                        &state.summary,
                        &since,
                        &event.silenced,
                    ],
                )
                .await?
                .get(0);
            let status = if event.silenced {
                "silenced"
            } else {
                "pending"
            };
            for channel in &event.channels {
                tx.execute(
                    "INSERT INTO sw_notifications (created_at, channel, group_key, event_id, status, next_attempt_at)
                     VALUES (to_timestamp($1), $2, $3, $4, $5, to_timestamp($1))",
                    &[&now_s, channel, &group_key, &id, &status],
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pending notifications whose next attempt is due, oldest first.
    pub async fn due_notifications(
        &self,
        now_s: f64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT n.id, n.channel, n.group_key, n.attempts, {EVENT_COLUMNS},
                            (SELECT f.thread_ts FROM sw_notifications f JOIN sw_alert_events fe ON fe.id = f.event_id
                              WHERE f.channel = n.channel AND fe.rule = e.rule AND fe.labels_key = e.labels_key
                                AND fe.event = 'firing' AND f.thread_ts IS NOT NULL
                              ORDER BY f.id DESC LIMIT 1)
                       FROM sw_notifications n JOIN sw_alert_events e ON e.id = n.event_id
                      WHERE n.status = 'pending' AND n.next_attempt_at <= to_timestamp($1)
                      ORDER BY n.id LIMIT $2"
                ),
                &[&now_s, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| Notification {
                id: r.get(0),
                channel: r.get(1),
                group_key: r.get(2),
                attempts: r.get(3),
                event: event_of(r, 4),
                thread_ts: r.get(16),
            })
            .collect())
    }

    /// Marks notifications delivered (with the Slack message `ts`, when there is one).
    pub async fn mark_sent(
        &self,
        ids: &[i64],
        thread_ts: Option<&str>,
        now_s: f64,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sw_notifications SET status = 'sent', sent_at = to_timestamp($2), thread_ts = $3,
                        attempts = attempts + 1, last_error = NULL
                  WHERE id = ANY($1)",
                &[&ids, &now_s, &thread_ts],
            )
            .await?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at_s`, or failed for good when `None`.
    pub async fn mark_attempt_failed(
        &self,
        ids: &[i64],
        error: &str,
        retry_at_s: Option<f64>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sw_notifications SET attempts = attempts + 1, last_error = $2,
                        status = CASE WHEN $3::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                        next_attempt_at = coalesce(to_timestamp($3::float8), next_attempt_at)
                  WHERE id = ANY($1)",
                &[&ids, &error, &retry_at_s],
            )
            .await?;
        Ok(())
    }

    /// Notifications by delivery status.
    pub async fn delivery_counts(&self) -> Result<DeliveryCounts, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT status, count(*)::int8 FROM sw_notifications GROUP BY status",
                &[],
            )
            .await?;
        let mut c = DeliveryCounts::default();
        for r in &rows {
            let n: i64 = r.get(1);
            match r.get::<_, &str>(0) {
                "pending" => c.pending = n,
                "sent" => c.sent = n,
                "failed" => c.failed = n,
                "silenced" => c.silenced = n,
                _ => {}
            }
        }
        Ok(c)
    }

    /// Alert events between two instants (Unix seconds), newest first.
    pub async fn alert_events(
        &self,
        from_s: f64,
        to_s: f64,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM sw_alert_events e
                      WHERE e.time >= to_timestamp($1) AND e.time < to_timestamp($2)
                      ORDER BY e.id DESC LIMIT $3"
                ),
                &[&from_s, &to_s, &limit],
            )
            .await?;
        Ok(rows.iter().map(|r| event_of(r, 0)).collect())
    }

    /// Silences active at `now_s`.
    pub async fn active_silences(&self, now_s: f64) -> Result<Vec<SilenceRow>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, rule, labels, extract(epoch FROM starts_at)::float8, extract(epoch FROM ends_at)::float8,
                        comment, created_by
                   FROM sw_silences WHERE starts_at <= to_timestamp($1) AND ends_at > to_timestamp($1)
                  ORDER BY id",
                &[&now_s],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SilenceRow {
                id: r.get(0),
                rule: r.get(1),
                labels: serde_json::from_value(r.get(2)).unwrap_or_default(),
                starts_at: r.get(3),
                ends_at: r.get(4),
                comment: r.get(5),
                created_by: r.get(6),
            })
            .collect())
    }

    /// Creates a silence; returns its id.
    pub async fn create_silence(
        &self,
        rule: Option<&str>,
        labels: &Labels,
        starts_at_s: f64,
        ends_at_s: f64,
        comment: &str,
        created_by: &str,
    ) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let labels =
            serde_json::to_value(labels).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let row = client
            .query_one(
                "INSERT INTO sw_silences (rule, labels, starts_at, ends_at, comment, created_by)
                 VALUES ($1, $2, to_timestamp($3), to_timestamp($4), $5, $6) RETURNING id",
                &[
                    &rule,
                    &labels,
                    &starts_at_s,
                    &ends_at_s,
                    &comment,
                    &created_by,
                ],
            )
            .await?;
        Ok(row.get(0))
    }

    /// Ends a silence now.
    pub async fn expire_silence(&self, id: i64, now_s: f64) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute("UPDATE sw_silences SET ends_at = to_timestamp($2) WHERE id = $1 AND ends_at > to_timestamp($2)", &[&id, &now_s])
            .await?;
        Ok(n > 0)
    }
}

/// Advisory lock key of the alert leader ("stormwatch alerts").
const LEADER_LOCK: i64 = 0x5357_414c_4552_0001;

/// Leadership among collectors sharing a database: a session-level advisory lock held on a
/// connection of its own. It is released when that connection ends — including when the
/// collector process dies — so another collector takes over at its next attempt.
pub struct LeaderLock {
    client: deadpool_postgres::ClientWrapper,
}

impl LeaderLock {
    /// True while the lock's connection answers (and so the lock is still ours).
    pub async fn still_held(&self) -> bool {
        matches!(
            tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.client.simple_query("SELECT 1")
            )
            .await,
            Ok(Ok(_))
        )
    }
}

impl Store {
    /// Becomes the alert leader if no other collector is.
    pub async fn try_leader_lock(&self) -> Result<Option<LeaderLock>, StoreError> {
        let obj = self.client().await?;
        let got: bool = obj
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await?
            .get(0);
        if !got {
            return Ok(None);
        }
        // Taken out of the pool: the connection (and the lock) lives as long as the LeaderLock.
        Ok(Some(LeaderLock {
            client: deadpool_postgres::Object::take(obj),
        }))
    }
}

//! Alert state, history, the notification outbox and silences.
//!
//! A state change and the notifications it causes are written in one transaction (the
//! outbox), so a collector that dies between evaluating and delivering neither forgets a
//! notification nor, after a restart, sends it twice.
//!
//! Leadership among collectors is a row, `sw_alert_leader`, whose `epoch` every evaluation
//! write and every notification claim checks in its own transaction (see [`Term`]); the
//! advisory lock ([`LeaderLock`]) is the fast way to learn that a leader's session is gone.

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
    /// The worst value while the condition held, and the summary at that moment: what a
    /// resolve message says it peaked at.
    pub peak: Option<f64>,
    pub peak_summary: String,
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

/// One leadership term: the epoch this collector set when it became the alert leader, and
/// its name. Writes made under a term that is no longer current are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub epoch: i64,
    pub holder: String,
}

/// Notifications claimed for one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: i64,
    /// The notifications this claim got (a subset of those asked for).
    pub ids: Vec<i64>,
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
                        extract(epoch FROM resolving_since)::float8, extract(epoch FROM last_notified)::float8,
                        peak, peak_summary
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
                peak: r.get(12),
                peak_summary: r.get(13),
            })
            .collect())
    }

    /// Applies one evaluation's transitions and queues their notifications, atomically.
    /// Notifications of one call share `group_key`, so the notifier can group them.
    ///
    /// Fenced: nothing is written unless `term` is still the leader's (else
    /// [`StoreError::Fenced`]).
    pub async fn apply_transitions(
        &self,
        term: &Term,
        transitions: &[Transition],
        group_key: &str,
        now_s: f64,
    ) -> Result<(), StoreError> {
        if transitions.is_empty() {
            return Ok(());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_term(&tx, term).await?;
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
                             pending_since, firing_since, resolving_since, last_notified, updated_at, peak, peak_summary)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, to_timestamp($9), to_timestamp($10),
                                 to_timestamp($11), to_timestamp($12), to_timestamp($13), $14, $15)
                         ON CONFLICT (rule, labels_key) DO UPDATE SET
                             labels = excluded.labels, state = excluded.state, severity = excluded.severity,
                             value = excluded.value, threshold = excluded.threshold, summary = excluded.summary,
                             pending_since = excluded.pending_since, firing_since = excluded.firing_since,
                             resolving_since = excluded.resolving_since, last_notified = excluded.last_notified,
                             updated_at = excluded.updated_at, peak = excluded.peak,
                             peak_summary = excluded.peak_summary",
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
                            &state.peak,
                            &state.peak_summary,
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

    /// Pending notifications whose next attempt is due and that nobody holds a live claim
    /// on, oldest first. Listing is not claiming: see [`Store::claim_notifications`].
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
                        AND (n.claimed_until IS NULL OR n.claimed_until < now())
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

    /// Claims the notifications among `ids` that are still pending and unclaimed (or whose
    /// claim has expired) for `claim_for`, under `term`: one short transaction that checks the
    /// epoch and locks the rows `FOR UPDATE SKIP LOCKED`. Only the claimed ones may be sent;
    /// their result is recorded with the returned [`Claim`].
    pub async fn claim_notifications(
        &self,
        term: &Term,
        ids: &[i64],
        claim_for: std::time::Duration,
    ) -> Result<Claim, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        check_term(&tx, term).await?;
        let claim: i64 = tx
            .query_one("SELECT nextval('sw_notification_claims')", &[])
            .await?
            .get(0);
        let rows = tx
            .query(
                "UPDATE sw_notifications
                    SET claim_id = $2, claimed_by = $3, claim_epoch = $4,
                        claimed_until = now() + make_interval(secs => $5)
                  WHERE id IN (SELECT id FROM sw_notifications
                                WHERE id = ANY($1) AND status = 'pending'
                                  AND (claimed_until IS NULL OR claimed_until < now())
                                  FOR UPDATE SKIP LOCKED)
              RETURNING id",
                &[
                    &ids,
                    &claim,
                    &term.holder,
                    &term.epoch,
                    &claim_for.as_secs_f64(),
                ],
            )
            .await?;
        tx.commit().await?;
        Ok(Claim {
            id: claim,
            ids: rows.iter().map(|r| r.get(0)).collect(),
        })
    }

    /// Marks claimed notifications delivered (with the Slack message `ts`, when there is one);
    /// returns how many were. Only rows still under `claim` change: a claim that expired and
    /// was taken again belongs to its new holder.
    pub async fn mark_sent(
        &self,
        claim: &Claim,
        thread_ts: Option<&str>,
        now_s: f64,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE sw_notifications SET status = 'sent', sent_at = to_timestamp($3), thread_ts = $4,
                        attempts = attempts + 1, last_error = NULL, claimed_until = NULL
                  WHERE id = ANY($1) AND claim_id = $2 AND status = 'pending'",
                &[&claim.ids, &claim.id, &now_s, &thread_ts],
            )
            .await?)
    }

    /// Records a failed attempt of claimed notifications: retried at `retry_at_s`, or failed
    /// for good when `None`; the claim ends. Returns how many rows were still under `claim`.
    pub async fn mark_attempt_failed(
        &self,
        claim: &Claim,
        error: &str,
        retry_at_s: Option<f64>,
    ) -> Result<u64, StoreError> {
        let client = self.client().await?;
        Ok(client
            .execute(
                "UPDATE sw_notifications SET attempts = attempts + 1, last_error = $3,
                        status = CASE WHEN $4::float8 IS NULL THEN 'failed' ELSE 'pending' END,
                        next_attempt_at = coalesce(to_timestamp($4::float8), next_attempt_at),
                        claimed_until = NULL
                  WHERE id = ANY($1) AND claim_id = $2 AND status = 'pending'",
                &[&claim.ids, &claim.id, &error, &retry_at_s],
            )
            .await?)
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

/// TCP keepalive and user timeout of the leader lock's connection, on both ends. The
/// server side matters most: PostgreSQL frees the lock only when it sees the session end, and
/// without keepalives a backend whose client host vanished waits for the OS default (two
/// hours). With these, both ends give up after about idle + interval × count = 11 s of
/// silence, or when sent data stays unacknowledged for `USER_TIMEOUT`.
const KEEPALIVE_IDLE_S: u64 = 5;
const KEEPALIVE_INTERVAL_S: u64 = 2;
const KEEPALIVE_COUNT: u32 = 3;
const USER_TIMEOUT_S: u64 = 10;

/// The session-level advisory lock of the alert leader, held on a connection of its own (not
/// the pool's, so that it carries the keepalive settings above). PostgreSQL releases it when
/// that connection ends — including when the collector dies or its backend is terminated.
pub struct LeaderLock {
    client: tokio_postgres::Client,
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

    /// The server's TCP settings for this session, as `pg_settings` shows them (seconds;
    /// `tcp_user_timeout` in milliseconds), by name: to check what PostgreSQL will do when
    /// this collector's host vanishes.
    pub async fn server_keepalives(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT name, setting FROM pg_settings
                  WHERE name IN ('tcp_keepalives_idle', 'tcp_keepalives_interval',
                                 'tcp_keepalives_count', 'tcp_user_timeout')
                  ORDER BY name",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

/// `SELECT epoch ... FOR SHARE`: fails with [`StoreError::Fenced`] unless `term` is current.
/// The share lock holds off a competing epoch bump until this transaction ends, so nothing
/// written under a stale epoch can commit after the bump has.
pub(crate) async fn check_term(
    tx: &tokio_postgres::Transaction<'_>,
    term: &Term,
) -> Result<(), StoreError> {
    let current: i64 = tx
        .query_one(
            "SELECT epoch FROM sw_alert_leader WHERE id = 1 FOR SHARE",
            &[],
        )
        .await?
        .get(0);
    if current != term.epoch {
        return Err(StoreError::Fenced {
            epoch: term.epoch,
            current,
        });
    }
    Ok(())
}

impl Store {
    /// Takes the alert leader advisory lock if no other session holds it.
    pub async fn try_leader_lock(&self) -> Result<Option<LeaderLock>, StoreError> {
        let mut cfg = self.target.config.clone();
        cfg.keepalives(true)
            .keepalives_idle(std::time::Duration::from_secs(KEEPALIVE_IDLE_S))
            .keepalives_interval(std::time::Duration::from_secs(KEEPALIVE_INTERVAL_S))
            .keepalives_retries(KEEPALIVE_COUNT)
            .tcp_user_timeout(std::time::Duration::from_secs(USER_TIMEOUT_S))
            .connect_timeout(std::time::Duration::from_secs(5));
        let (client, conn) = cfg.connect(self.target.tls.clone()).await?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server closes the session.
            let _ = conn.await;
        });
        // The server's end of the same (ignored on a Unix socket). tcp_user_timeout needs
        // PostgreSQL 12; on an older server the keepalives still apply.
        client
            .batch_execute(&format!(
                "SET tcp_keepalives_idle = {KEEPALIVE_IDLE_S};
                 SET tcp_keepalives_interval = {KEEPALIVE_INTERVAL_S};
                 SET tcp_keepalives_count = {KEEPALIVE_COUNT}"
            ))
            .await?;
        if let Err(error) = client
            .batch_execute(&format!("SET tcp_user_timeout = {}", USER_TIMEOUT_S * 1000))
            .await
        {
            tracing::debug!(%error, "tcp_user_timeout not set on the leader lock session");
        }
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
            .await?
            .get(0);
        Ok(got.then_some(LeaderLock { client }))
    }

    /// Becomes the alert leader by bumping the epoch, if allowed: always when the current
    /// leader's lease has passed; also before that when `have_lock` (this collector holds the
    /// advisory lock) and the current leader holds it too — then its session is gone. Returns
    /// the new term, or `None` when another collector leads.
    pub async fn take_leadership(
        &self,
        holder: &str,
        lease: std::time::Duration,
        have_lock: bool,
    ) -> Result<Option<Term>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "UPDATE sw_alert_leader
                    SET epoch = epoch + 1, holder = $1,
                        lease_until = now() + make_interval(secs => $2), holds_lock = $3
                  WHERE id = 1 AND (lease_until < now() OR ($3 AND holds_lock))
              RETURNING epoch",
                &[&holder, &lease.as_secs_f64(), &have_lock],
            )
            .await?;
        Ok(row.map(|r| Term {
            epoch: r.get(0),
            holder: holder.to_owned(),
        }))
    }

    /// Extends the leader's lease (and records whether it holds the advisory lock);
    /// [`StoreError::Fenced`] when `term` is no longer current.
    pub async fn renew_leadership(
        &self,
        term: &Term,
        lease: std::time::Duration,
        have_lock: bool,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "UPDATE sw_alert_leader
                    SET lease_until = now() + make_interval(secs => $2), holds_lock = $3
                  WHERE id = 1 AND epoch = $1",
                &[&term.epoch, &lease.as_secs_f64(), &have_lock],
            )
            .await?;
        if n == 0 {
            return Err(self.fenced(term).await);
        }
        Ok(())
    }

    /// Ends `term`'s lease now (a graceful stop), so a follower need not wait for it.
    pub async fn resign_leadership(&self, term: &Term) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE sw_alert_leader SET lease_until = '-infinity' WHERE id = 1 AND epoch = $1",
                &[&term.epoch],
            )
            .await?;
        Ok(())
    }

    /// The current leader row: epoch, holder, whether its lease is still running.
    pub async fn alert_leader(&self) -> Result<(i64, String, bool), StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT epoch, holder, lease_until > now() FROM sw_alert_leader WHERE id = 1",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1), r.get(2)))
    }

    async fn fenced(&self, term: &Term) -> StoreError {
        match self.alert_leader().await {
            Ok((current, _, _)) => StoreError::Fenced {
                epoch: term.epoch,
                current,
            },
            Err(e) => e,
        }
    }
}

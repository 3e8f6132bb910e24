//! Database watch: every `interval`, for every `[[database]]`, a probe on a **fresh**
//! connection (connect time, a trivial query's time, the failure class when it fails) and, by
//! role, replication state: a replica's lag, a primary's view of its replicas. Each result is a
//! [`ProbeSample`] sent to the pipeline, which ships it with the next batch (as host samples
//! travel) and joins it to spans ([`join`]).
//!
//! Why a fresh connection each time: application pools keep their connections open, so a
//! server that refuses *new* connections (connection limit reached, `pg_hba` change, a
//! restart) looks healthy to them until the pool churns. Only a new connection sees it.
//!
//! One task per database, restarted when its entry changes on reload; a probe never overlaps
//! the next (a slow probe delays the next one). Every network step has the entry's `timeout`.

pub mod config;
pub mod join;
pub mod mysql;
pub mod postgres;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::{DbRole, FailureClass, ProbeSample};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::util::now_ns;
use config::{Database, Engine};

/// What one probe found (everything of a [`ProbeSample`] but its identity and time).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub connect_us: Option<i64>,
    pub query_us: Option<i64>,
    pub failure: FailureClass,
    pub failure_message: String,
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<i64>,
    pub replay_paused: bool,
    pub detail: BTreeMap<String, String>,
}

impl Outcome {
    /// A failed probe.
    pub fn failed(failure: FailureClass, message: impl Into<String>) -> Self {
        Outcome {
            failure,
            failure_message: message.into(),
            ..Default::default()
        }
    }
}

/// Microseconds since `t`.
pub(crate) fn micros(t: Instant) -> i64 {
    i64::try_from(t.elapsed().as_micros()).unwrap_or(i64::MAX)
}

/// Per-task memory between probes: whether the heartbeat table exists yet, and on a
/// PostgreSQL replica when each received WAL position was first seen.
#[derive(Debug, Default)]
pub struct ProbeState {
    pub heartbeat_ready: bool,
    pub received: ReceiveHistory,
    /// The agent's heartbeat writers, shared by its probe tasks.
    pub heartbeats: Heartbeats,
}

/// Whether each heartbeat this agent writes (on a primary it probes) was written by the last
/// probe, by table. A replica's heartbeat age is its lag only while the writer writes: when
/// the primary refuses connections the row stops moving, its age grows, and read as lag it
/// paged "replica N s behind" for a replica that was in sync, pointing on-call at the wrong
/// database during the primary's outage. While the writer fails, the heartbeat says nothing
/// and the replica's own status decides.
#[derive(Debug, Default, Clone)]
pub struct Heartbeats(Arc<std::sync::Mutex<HashMap<String, bool>>>);

impl Heartbeats {
    /// Records whether the primary's probe wrote `table`'s heartbeat.
    pub fn record(&self, table: &str, wrote: bool) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.insert(table.to_owned(), wrote);
    }

    /// `Some(false)` while the writer of `table` fails; `None` when this agent does not write
    /// it (its primary is probed elsewhere, or not at all).
    pub fn writing(&self, table: &str) -> Option<bool> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(table).copied()
    }
}

/// The lag a replica's heartbeat of `age_s` seconds gives, unless its writer fails (then
/// `None`, and `detail` says why).
pub(crate) fn heartbeat_lag_if_written(
    state: &ProbeState,
    table: &str,
    age_s: f64,
    db: &Database,
    detail: &mut BTreeMap<String, String>,
) -> Option<f64> {
    if state.heartbeats.writing(table) == Some(false) {
        detail.insert(
            "heartbeat_writer".into(),
            "failing: the heartbeat's age is not lag; the replica's own status decides".into(),
        );
        return None;
    }
    Some(postgres::heartbeat_lag(age_s, db))
}

/// A replica's receive position as probes saw it: each value with the first and last probe
/// that saw it, oldest first (at most [`ReceiveHistory::MAX`] values). It bounds the lag from
/// above: WAL past the replay position, absent at an earlier probe, has waited at most since
/// that probe.
#[derive(Debug, Default)]
pub struct ReceiveHistory {
    seen: std::collections::VecDeque<Seen>,
}

#[derive(Debug, Clone, Copy)]
struct Seen {
    last: Instant,
    received: f64,
}

impl ReceiveHistory {
    pub const MAX: usize = 4096;

    /// Records the receive position `at` a probe.
    pub fn record(&mut self, at: Instant, received: f64) {
        match self.seen.back_mut() {
            Some(s) if s.received == received => s.last = at,
            _ => {
                if self.seen.len() >= Self::MAX {
                    self.seen.pop_front();
                }
                self.seen.push_back(Seen { last: at, received });
            }
        }
    }

    /// Seconds since the last probe that saw nothing received beyond `replayed`; `None` when
    /// the remembered probes all did (the history does not reach back far enough).
    pub fn behind_at_most(&self, replayed: f64, now: Instant) -> Option<f64> {
        let first_beyond = self.seen.iter().position(|s| s.received > replayed)?;
        let before = self.seen.get(first_beyond.checked_sub(1)?)?;
        Some(now.saturating_duration_since(before.last).as_secs_f64())
    }
}

/// Probes `db` once.
pub async fn probe_once(db: &Database, state: &mut ProbeState) -> ProbeSample {
    let time_ns = now_ns();
    let outcome = match db.resolved_url().and_then(|u| Ok((u, db.password()?))) {
        Err(m) => Outcome::failed(FailureClass::Other, m),
        Ok((url, password)) => match db.engine {
            Engine::Postgres => postgres::probe(db, &url, password.as_deref(), state).await,
            Engine::Mysql => mysql::probe(db, &url, password.as_deref(), state).await,
        },
    };
    if let (DbRole::Primary, Some(table)) = (db.role, &db.heartbeat) {
        let wrote = outcome.failure == FailureClass::None
            && !outcome.detail.contains_key("heartbeat_error");
        state.heartbeats.record(table, wrote);
    }
    ProbeSample {
        time_ns,
        database: db.name.clone(),
        engine: db.engine.as_str().to_owned(),
        role: db.role as i32,
        connect_us: outcome.connect_us,
        query_us: outcome.query_us,
        failure: outcome.failure as i32,
        failure_message: outcome.failure_message,
        lag_seconds: outcome.lag_seconds,
        lag_bytes: outcome.lag_bytes,
        replay_paused: outcome.replay_paused,
        detail: outcome.detail,
    }
}

/// Probes one database until aborted.
async fn watch_one(db: Database, tx: mpsc::Sender<ProbeSample>, heartbeats: Heartbeats) {
    let mut state = ProbeState {
        heartbeats,
        ..Default::default()
    };
    let mut failing = false;
    loop {
        let started = tokio::time::Instant::now();
        let sample = probe_once(&db, &mut state).await;
        let failed = sample.failure != FailureClass::None as i32;
        if failed && !failing {
            tracing::warn!(
                database = %db.name,
                failure = %FailureClass::try_from(sample.failure).unwrap_or(FailureClass::Other),
                message = %sample.failure_message,
                "database probe failed"
            );
        } else if !failed && failing {
            tracing::info!(database = %db.name, "database probe succeeds again");
        }
        failing = failed;
        // A full channel means the pipeline is stuck; a missed sample is not worth waiting.
        if tx.try_send(sample).is_err() && tx.is_closed() {
            return;
        }
        tokio::time::sleep_until(started + db.interval.0).await;
    }
}

/// Runs one probe task per configured database until `stop`; reconciles on config change.
pub async fn run(
    mut config: watch::Receiver<Arc<Config>>,
    tx: mpsc::Sender<ProbeSample>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: HashMap<String, (Database, JoinHandle<()>)> = HashMap::new();
    let heartbeats = Heartbeats::default();
    loop {
        let dbs = config.borrow_and_update().databases.clone();
        tasks.retain(|name, (old, handle)| {
            let keep = dbs.iter().any(|d| &d.name == name && d == old);
            if !keep {
                handle.abort();
            }
            keep
        });
        for d in dbs {
            if !tasks.contains_key(&d.name) {
                tracing::info!(database = %d.name, engine = d.engine.as_str(), "watching database");
                let handle = tokio::spawn(watch_one(d.clone(), tx.clone(), heartbeats.clone()));
                tasks.insert(d.name.clone(), (d, handle));
            }
        }
        tokio::select! {
            changed = config.changed() => if changed.is_err() { break },
            _ = stop.changed() => break,
        }
    }
    for (_, (_, h)) in tasks {
        h.abort();
    }
}

/// Waits at most `timeout` for `f`; `Err(())` when it took longer.
pub(crate) async fn within<F: std::future::Future>(
    timeout: Duration,
    f: F,
) -> Result<F::Output, ()> {
    tokio::time::timeout(timeout, f).await.map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn receive_history_bounds_the_lag_by_the_last_probe_without_new_wal() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut h = ReceiveHistory::default();
        // Idle for a minute at position 100, then a write arrives (received 150, replayed 100).
        for s in 0..60 {
            h.record(at(s), 100.0);
        }
        h.record(at(60), 150.0);
        assert_eq!(h.behind_at_most(100.0, at(60)), Some(1.0));
        // Replay stays at 100 while more arrives: the bound grows with the time.
        h.record(at(61), 180.0);
        h.record(at(62), 200.0);
        assert_eq!(h.behind_at_most(100.0, at(62)), Some(3.0));
        // Replay reached 180: only what came after the probe at 61 s is waiting.
        assert_eq!(h.behind_at_most(180.0, at(62)), Some(1.0));
        // Nothing known from before the replay position: no bound.
        let mut fresh = ReceiveHistory::default();
        fresh.record(at(0), 500.0);
        assert_eq!(fresh.behind_at_most(400.0, at(5)), None);
        // Caught up: nothing is beyond.
        assert_eq!(h.behind_at_most(200.0, at(62)), None);
    }

    #[test]
    fn receive_history_is_bounded() {
        let t0 = Instant::now();
        let mut h = ReceiveHistory::default();
        for i in 0..(ReceiveHistory::MAX + 100) {
            h.record(t0, i as f64);
        }
        assert_eq!(h.seen.len(), ReceiveHistory::MAX);
    }
}

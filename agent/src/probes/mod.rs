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
pub mod mysql_target;
mod outcome;
pub mod postgres;

pub use outcome::{Heartbeats, Outcome, ProbeState, ReceiveHistory, Writer};

use std::collections::HashMap;
use std::sync::Arc;

use stormwatch_model::{DbRole, FailureClass, ProbeSample};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::util::now_ns;
use config::{Database, Engine};

/// Probes `db` once.
pub async fn probe_once(db: &Database, state: &mut ProbeState) -> ProbeSample {
    let time_ns = now_ns();
    let began = std::time::Instant::now();
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
        state.heartbeats.record(table, wrote, began);
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
        heartbeats.configure(
            dbs.iter()
                .filter(|d| d.role == DbRole::Primary)
                .filter_map(|d| d.heartbeat.as_deref()),
        );
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn replica_with_heartbeat() -> Database {
        let mut d: Database = toml::from_str(
            "name = \"r\"\nengine = \"mysql\"\nrole = \"replica\"\nurl = \"mysql://u@h/\"\n\
             interval = \"1s\"\ntimeout = \"1s\"\n",
        )
        .unwrap();
        d.heartbeat = Some("hb".into());
        d
    }

    #[test]
    fn a_heartbeat_counts_as_lag_only_while_and_since_its_writer_writes() {
        let db = replica_with_heartbeat();
        let state = ProbeState::default();
        let lag = |age: f64| {
            let mut detail = std::collections::BTreeMap::new();
            let l = postgres::heartbeat_lag_if_written(&state, "hb", age, &db, &mut detail);
            (l, detail.contains_key("heartbeat_writer"))
        };
        // Written by another agent: the age, less one interval and the probe's delay.
        assert_eq!(lag(31.5), (Some(30.0), false));
        // Configured here but not written yet: the age says nothing.
        state.heartbeats.configure(["hb"]);
        assert_eq!(lag(31.5), (None, true));
        // Writing again for 3 s after a 30 s outage: the 31.5 s-old row read just before the
        // new one arrives means "the streak's first write has not arrived", 3 s at most.
        let began = Instant::now() - Duration::from_secs(3);
        state.heartbeats.record("hb", true, began);
        state.heartbeats.record("hb", true, Instant::now());
        let (l, noted) = lag(31.5);
        assert!(l.is_some_and(|l| (1.4..1.6).contains(&l)), "{l:?}");
        assert!(noted);
        // A fresh row within the streak is read as it is.
        assert_eq!(lag(1.2), (Some(0.0), false));
        // A failed write ends the streak.
        state.heartbeats.record("hb", false, Instant::now());
        assert_eq!(lag(1.2), (None, true));
        // A primary taken out of the config no longer vouches for (or against) the table.
        state.heartbeats.configure([]);
        assert_eq!(lag(31.5), (Some(30.0), false));
    }

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

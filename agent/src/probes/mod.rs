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

use stormwatch_model::{FailureClass, ProbeSample};
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

/// Per-task memory between probes (whether the heartbeat table exists yet).
#[derive(Debug, Default)]
pub struct ProbeState {
    pub heartbeat_ready: bool,
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
async fn watch_one(db: Database, tx: mpsc::Sender<ProbeSample>) {
    let mut state = ProbeState::default();
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
                let handle = tokio::spawn(watch_one(d.clone(), tx.clone()));
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

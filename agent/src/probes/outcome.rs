//! What a probe finds ([`Outcome`]) and what a probe task remembers between probes
//! ([`ProbeState`]: heartbeat writers, a replica's receive history), with the timing helpers
//! both engines use.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::FailureClass;

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

/// A replica's receive position as probes saw it: each value with the first and last probe
/// that saw it, oldest first (at most [`ReceiveHistory::MAX`] values). It bounds the lag from
/// above: WAL past the replay position, absent at an earlier probe, has waited at most since
/// that probe.
#[derive(Debug, Default)]
pub struct ReceiveHistory {
    pub(super) seen: std::collections::VecDeque<Seen>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Seen {
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

/// Waits at most `timeout` for `f`; `Err(())` when it took longer.
pub(crate) async fn within<F: std::future::Future>(
    timeout: Duration,
    f: F,
) -> Result<F::Output, ()> {
    tokio::time::timeout(timeout, f).await.map_err(|_| ())
}

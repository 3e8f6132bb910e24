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
    /// MySQL under `ssl-mode=PREFERRED`: when a probe last found that the server offers no
    /// TLS. Until [`ProbeState::TLS_RECHECK`] has passed, probes connect without asking for it,
    /// so a server without TLS costs one connection a probe, not two (a failed one counted in
    /// its `Aborted_connects`).
    pub mysql_tls_absent: Option<Instant>,
}

impl ProbeState {
    /// How long a MySQL server found without TLS is probed without asking for it again.
    pub const TLS_RECHECK: Duration = Duration::from_secs(60);
}

/// Each heartbeat this agent writes (on a primary it probes), by table: whether the last
/// probe wrote it and since when it has written without a miss. A replica's heartbeat age is
/// its lag only while the writer writes: when the primary refuses connections the row stops
/// moving, its age grows, and read as lag it paged "replica N s behind" for a replica that was
/// in sync, pointing on-call at the wrong database during the primary's outage. While the
/// writer fails (or has not written yet since the agent started), the heartbeat says nothing
/// and the replica's own status decides. Once it writes again, a row older than the streak
/// only proves the replica has not applied the streak's first write: the lag it gives is
/// capped at the streak's age, so the old row read just before the new one arrives is not
/// the length of the primary's outage.
#[derive(Debug, Default, Clone)]
pub struct Heartbeats(Arc<std::sync::Mutex<HashMap<String, Writer>>>);

/// The state of one heartbeat's writer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Writer {
    /// Configured here, not written yet (or its last write failed).
    Failing,
    /// Written by every probe since this instant (taken before the streak's first write).
    Since(Instant),
}

impl Heartbeats {
    /// Declares the heartbeats this agent writes (its primaries with a heartbeat), so
    /// replicas do not trust a table's age before its first write, and forgets the others
    /// (a primary taken out of the config).
    pub fn configure<'a>(&self, tables: impl IntoIterator<Item = &'a str>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let keep: std::collections::HashSet<&str> = tables.into_iter().collect();
        m.retain(|t, _| keep.contains(t.as_str()));
        for t in keep {
            m.entry(t.to_owned()).or_insert(Writer::Failing);
        }
    }

    /// Records whether the primary's probe that began `at` wrote `table`'s heartbeat.
    pub fn record(&self, table: &str, wrote: bool, at: Instant) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let w = m.entry(table.to_owned()).or_insert(Writer::Failing);
        *w = match (*w, wrote) {
            (_, false) => Writer::Failing,
            (Writer::Since(s), true) => Writer::Since(s),
            (Writer::Failing, true) => Writer::Since(at),
        };
    }

    /// The writer of `table`; `None` when this agent does not write it (its primary is
    /// probed elsewhere, or not at all).
    pub fn writer(&self, table: &str) -> Option<Writer> {
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

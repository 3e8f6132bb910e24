//! Joins probe results to spans, in the pipeline task before the sampler decides:
//!
//! - a database span whose peer is a probed **replica** carries that replica's latest lag
//!   (`replica_lag_ms`) and the `replica_lag` flag above the entry's `lag_threshold`;
//! - a failed database span whose message says it could not connect, or whose database's
//!   latest probe failed, gets `connect_failure`;
//! - a SELECT / UPDATE / DELETE without WHERE, or one that returned more than
//!   `span_flags.full_scan_rows` rows, gets `full_scan_suspect`; so does a statement shape that
//!   an operation sends to a replica only while that replica lags (the data-access module that
//!   drops its WHERE conditions when the replica is behind): shapes seen while the replica is
//!   caught up are learned per (service, operation), and an unknown one during lag is flagged.
//!
//! The sampler keeps every span with one of these flags. The pipeline owns the [`Join`] and
//! feeds it every probe sample as it passes to the batch, so no lock is needed.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use stormwatch_model::{DbRole, DependencyClass, FailureClass, ProbeSample, SpanFlag};

use super::config::SpanFlags;
use crate::config::Config;
use crate::normalize::is_full_scan_suspect;
use crate::received::Received;

/// Flags that make the sampler keep a span.
pub const FORCING_FLAGS: u8 = (1 << SpanFlag::FullScanSuspect as u8)
    | (1 << SpanFlag::ReplicaLag as u8)
    | (1 << SpanFlag::ConnectFailure as u8);

#[derive(Debug)]
struct Watched {
    name: String,
    role: DbRole,
    lag_threshold_ms: i64,
    /// A probe result older than this is not used (the probe task is stuck or slow).
    fresh_for: Duration,
    lag_ms: Option<i64>,
    failing: bool,
    seen: Option<Instant>,
}

/// Operations whose statement shapes are remembered; past it, no new operation is learned.
pub const MAX_SHAPE_OPERATIONS: usize = 10_000;
/// Shapes remembered per operation; past it, the operation learns no more.
pub const MAX_SHAPES_PER_OPERATION: usize = 64;

/// Probed databases by peer, with their latest state.
#[derive(Debug, Default)]
pub struct Join {
    dbs: Vec<Watched>,
    /// `host:port` or `host` → index in `dbs`.
    peers: HashMap<String, usize>,
    flags: SpanFlags,
    /// Hash of (service, operation) → hashes of the statement shapes it sent to a replica while
    /// that replica was caught up. Bounded by the two constants above.
    shapes: HashMap<u64, Vec<u64>>,
}

fn hash_of(parts: &[&str]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    parts.hash(&mut h);
    h.finish()
}

impl Join {
    pub fn new(cfg: &Config) -> Self {
        let mut j = Join::default();
        j.reconfigure(cfg);
        j
    }

    /// Applies a reloaded config, keeping the latest state of databases still configured.
    pub fn reconfigure(&mut self, cfg: &Config) {
        let mut old: HashMap<String, Watched> =
            self.dbs.drain(..).map(|w| (w.name.clone(), w)).collect();
        self.peers.clear();
        self.flags = cfg.span_flags.clone();
        for d in &cfg.databases {
            let prev = old.remove(&d.name);
            let i = self.dbs.len();
            self.dbs.push(Watched {
                name: d.name.clone(),
                role: d.role,
                lag_threshold_ms: d.lag_threshold.0.as_millis() as i64,
                fresh_for: (d.interval.0 + d.timeout.0) * 3,
                lag_ms: prev.as_ref().and_then(|p| p.lag_ms),
                failing: prev.as_ref().is_some_and(|p| p.failing),
                seen: prev.and_then(|p| p.seen),
            });
            for p in d.effective_peers() {
                self.peers.entry(p.to_ascii_lowercase()).or_insert(i);
            }
        }
    }

    /// Records a probe result.
    pub fn observe(&mut self, p: &ProbeSample) {
        self.observe_at(p, Instant::now());
    }

    fn observe_at(&mut self, p: &ProbeSample, now: Instant) {
        let Some(w) = self.dbs.iter_mut().find(|w| w.name == p.database) else {
            return;
        };
        // A probe refused a privilege did connect, and a probe whose TLS failed says more about
        // the probe's own TLS settings than about the app's connections: neither marks the
        // app's failed spans as connect failures (their own error text still can).
        w.failing = ![
            FailureClass::None,
            FailureClass::Permission,
            FailureClass::Tls,
        ]
        .iter()
        .any(|c| p.failure == *c as i32);
        w.lag_ms = p.lag_seconds.map(|s| (s * 1000.0).round() as i64);
        w.seen = Some(now);
    }

    fn lookup(&self, peer: &str) -> Option<&Watched> {
        if self.peers.is_empty() || peer.is_empty() {
            return None;
        }
        let peer = peer.to_ascii_lowercase();
        let i = self.peers.get(&peer).or_else(|| {
            let host = peer.rsplit_once(':').map_or(peer.as_str(), |(h, _)| h);
            self.peers.get(host)
        })?;
        self.dbs.get(*i)
    }

    /// Sets `replica_lag_ms` and the flags of a database span (and learns its statement shape).
    /// `now` is the pipeline's clock for the batch of spans being processed.
    pub fn mark(&mut self, span: &mut Received, now: Instant) {
        self.mark_at(span, now);
    }

    fn mark_at(&mut self, span: &mut Received, now: Instant) {
        if span.dependency_class() != DependencyClass::Db {
            return;
        }
        let missing_where = match span.statement_missing_where {
            Some(known) => known && self.flags.missing_where,
            None => is_full_scan_suspect(span.statement(), self.flags.missing_where),
        };
        if missing_where
            || (self.flags.full_scan_rows > 0
                && span.rows.is_some_and(|r| r > self.flags.full_scan_rows))
        {
            span.flags |= 1 << SpanFlag::FullScanSuspect as u8;
        }
        let watched = self.lookup(span.peer());
        if let Some(w) = watched {
            if span.db_role == DbRole::Unknown as i32 {
                span.db_role = w.role as i32;
            }
        }
        let fresh =
            watched.filter(|w| w.seen.is_some_and(|t| now.duration_since(t) <= w.fresh_for));
        if span.is_error()
            && (says_connect_failure(span.status_message()) || fresh.is_some_and(|w| w.failing))
        {
            span.flags |= 1 << SpanFlag::ConnectFailure as u8;
        }
        let replica = fresh
            .filter(|w| w.role == DbRole::Replica)
            .and_then(|w| w.lag_ms.map(|lag| (lag, w.lag_threshold_ms)));
        if let Some((lag, threshold)) = replica {
            span.replica_lag_ms = Some(lag);
            let lagging = lag > threshold;
            if lagging {
                span.flags |= 1 << SpanFlag::ReplicaLag as u8;
            }
            if !span.statement().is_empty() && self.flags.missing_where {
                let op = hash_of(&[span.service(), span.operation()]);
                let shape = hash_of(&[span.statement()]);
                if lagging {
                    if self
                        .shapes
                        .get(&op)
                        .is_some_and(|known| !known.contains(&shape))
                    {
                        span.flags |= 1 << SpanFlag::FullScanSuspect as u8;
                    }
                } else if self.shapes.len() < MAX_SHAPE_OPERATIONS || self.shapes.contains_key(&op)
                {
                    let known = self.shapes.entry(op).or_default();
                    if !known.contains(&shape) && known.len() < MAX_SHAPES_PER_OPERATION {
                        known.push(shape);
                    }
                }
            }
        }
    }
}

/// Whether a failure message is about getting a connection rather than the statement.
pub fn says_connect_failure(message: &str) -> bool {
    const PATTERNS: [&str; 16] = [
        "connection refused",
        "econnrefused",
        "could not connect",
        "can't connect",
        "cannot connect",
        "failed to connect",
        "unable to connect",
        "connect timeout",
        "connection timed out",
        "too many connections",
        "too many clients",
        "remaining connection slots",
        "communications link failure",
        "connection is not available",
        "the database system is starting up",
        "the database system is shutting down",
    ];
    let m = message.to_ascii_lowercase();
    PATTERNS.iter().any(|p| m.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::config::{Database, Engine};
    use stormwatch_model::{Span, SpanStatus};

    fn cfg() -> Config {
        let db = |name: &str, role, peer: &str| Database {
            name: name.into(),
            engine: Engine::Postgres,
            role,
            url: format!("postgres://u@{peer}/x"),
            password_env: None,
            peers: vec![],
            interval: stormwatch_model::Dur(Duration::from_secs(1)),
            lag_threshold: stormwatch_model::Dur(Duration::from_secs(1)),
            timeout: stormwatch_model::Dur(Duration::from_secs(1)),
            heartbeat: None,
        };
        Config {
            databases: vec![
                db("main", DbRole::Primary, "db-main:5432"),
                db("ro", DbRole::Replica, "db-ro"),
            ],
            ..Config::default()
        }
    }

    fn span(peer: &str, statement: &str) -> Received {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![1; 8],
            class: DependencyClass::Db as i32,
            peer: peer.into(),
            statement: statement.into(),
            ..Default::default()
        }
        .into()
    }

    fn sample(db: &str, lag: Option<f64>, failure: FailureClass) -> ProbeSample {
        ProbeSample {
            database: db.into(),
            lag_seconds: lag,
            failure: failure as i32,
            ..Default::default()
        }
    }

    const LAG: u8 = 1 << SpanFlag::ReplicaLag as u8;
    const SCAN: u8 = 1 << SpanFlag::FullScanSuspect as u8;
    const CONNECT: u8 = 1 << SpanFlag::ConnectFailure as u8;

    #[test]
    fn replica_lag_is_joined_by_peer_and_flagged_above_threshold() {
        let mut j = Join::new(&cfg());
        let now = Instant::now();
        let q = "SELECT * FROM t WHERE id = ?";
        let mut s = span("db-ro:5432", q);
        j.mark_at(&mut s, now);
        assert_eq!((s.replica_lag_ms, s.flags), (None, 0), "no probe yet");
        j.observe_at(&sample("ro", Some(0.4), FailureClass::None), now);
        let mut s = span("DB-RO:5432", q);
        j.mark_at(&mut s, now);
        assert_eq!((s.replica_lag_ms, s.flags), (Some(400), 0));
        assert_eq!(s.db_role, DbRole::Replica as i32);
        j.observe_at(&sample("ro", Some(4.2), FailureClass::None), now);
        let mut s = span("db-ro:5432", q);
        j.mark_at(&mut s, now);
        assert_eq!((s.replica_lag_ms, s.flags), (Some(4200), LAG));
        // A stale probe result is not used.
        let mut s = span("db-ro:5432", q);
        j.mark_at(&mut s, now + Duration::from_secs(60));
        assert_eq!((s.replica_lag_ms, s.flags), (None, 0));
        // The primary's spans never carry lag.
        let mut s = span("db-main:5432", q);
        j.mark_at(&mut s, now);
        assert_eq!((s.replica_lag_ms, s.flags), (None, 0));
        assert_eq!(s.db_role, DbRole::Primary as i32);
    }

    #[test]
    fn connect_failures_by_message_or_failing_probe() {
        let mut j = Join::new(&cfg());
        let now = Instant::now();
        let mut s = span("other:5432", "SELECT ?");
        let mut m: Span = s.clone().into_span();
        m.status = SpanStatus::Error as i32;
        m.status_message = "FATAL: sorry, too many clients already".into();
        s = m.into();
        j.mark_at(&mut s, now);
        assert_eq!(s.flags & CONNECT, CONNECT);

        let mut m: Span = span("db-main:5432", "SELECT ?").into_span();
        m.status = SpanStatus::Error as i32;
        m.status_message = "pool error".into();
        let mut s: Received = m.clone().into();
        j.mark_at(&mut s, now);
        assert_eq!(s.flags & CONNECT, 0);
        j.observe_at(&sample("main", None, FailureClass::Tls), now);
        let mut s: Received = m.clone().into();
        j.mark_at(&mut s, now);
        assert_eq!(
            s.flags & CONNECT,
            0,
            "a probe's own TLS failure is not the app's"
        );
        j.observe_at(&sample("main", None, FailureClass::Refused), now);
        let mut s: Received = m.into();
        j.mark_at(&mut s, now);
        assert_eq!(s.flags & CONNECT, CONNECT);
    }

    #[test]
    fn a_statement_shape_seen_only_while_the_replica_lags_is_a_suspect() {
        let mut j = Join::new(&cfg());
        let now = Instant::now();
        let usual = "SELECT id, title FROM posts WHERE board_id = ? AND deleted = ?";
        // The module drops one condition when the replica is behind: still a WHERE, so only
        // the shape history can tell.
        let degraded = "SELECT id, title FROM posts WHERE deleted = ?";
        let op = |statement: &str| {
            let mut m = span("db-ro:5432", statement).into_span();
            m.service = "board".into();
            m.operation = "SELECT posts".into();
            Received::from(m)
        };
        j.observe_at(&sample("ro", Some(0.1), FailureClass::None), now);
        let mut s = op(usual);
        j.mark_at(&mut s, now);
        assert_eq!(s.flags, 0, "learned while caught up");
        j.observe_at(&sample("ro", Some(6.0), FailureClass::None), now);
        let mut s = op(usual);
        j.mark_at(&mut s, now);
        assert_eq!(s.flags, LAG, "a known shape during lag is only lagging");
        let mut s = op(degraded);
        j.mark_at(&mut s, now);
        assert_eq!(
            s.flags,
            LAG | SCAN,
            "a shape seen only during lag is a suspect"
        );
        // Once the replica has caught up, the new shape is learned and no longer suspect.
        j.observe_at(&sample("ro", Some(0.0), FailureClass::None), now);
        let mut s = op(degraded);
        j.mark_at(&mut s, now);
        assert_eq!(s.flags, 0);
        // An operation never seen while caught up has no history: nothing to compare.
        j.observe_at(&sample("ro", Some(6.0), FailureClass::None), now);
        let mut m = span("db-ro:5432", degraded).into_span();
        m.operation = "SELECT other".into();
        let mut s = Received::from(m);
        j.mark_at(&mut s, now);
        assert_eq!(s.flags, LAG);
    }

    #[test]
    fn full_scan_suspects() {
        for (q, yes) in [
            ("SELECT * FROM users", true),
            (
                "select count(*) from orders o join items i on i.o = o.id",
                true,
            ),
            ("UPDATE users SET active = ?", true),
            ("DELETE FROM sessions", true),
            ("SELECT * FROM users WHERE id = ?", false),
            ("SELECT * FROM users LIMIT ?", false),
            ("SELECT ?", false),
            ("SELECT now()", false),
            ("INSERT INTO t (a) VALUES (?)", false),
            ("", false),
        ] {
            assert_eq!(is_full_scan_suspect(q, true), yes, "{q}");
        }
        let mut j = Join::new(&cfg());
        let now = Instant::now();
        let mut s = span("x:1", "SELECT * FROM t WHERE a = ?");
        s.rows = Some(50_000);
        j.mark(&mut s, now);
        assert_eq!(s.flags, SCAN);
        let mut s = span("x:1", "SELECT * FROM t");
        j.mark(&mut s, now);
        assert_eq!(s.flags, SCAN);
        // The check remembered with the statement's normalization gives the same flags.
        for q in [
            "SELECT * FROM t",
            "SELECT * FROM t WHERE a = ?",
            "DELETE FROM t",
        ] {
            let mut computed = span("x:1", q);
            j.mark(&mut computed, now);
            let mut remembered = span("x:1", q);
            remembered.statement_missing_where = Some(is_full_scan_suspect(q, true));
            j.mark(&mut remembered, now);
            assert_eq!(computed.flags, remembered.flags, "{q}");
        }
        // And it follows the config like the computed one does.
        let mut off = cfg();
        off.span_flags.missing_where = false;
        let mut j = Join::new(&off);
        let mut s = span("x:1", "SELECT * FROM t");
        s.statement_missing_where = Some(true);
        j.mark(&mut s, now);
        assert_eq!(s.flags, 0);
    }
}

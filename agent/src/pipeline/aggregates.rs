//! Per-minute aggregates of every span, counted before sampling.
//!
//! The agent ships *deltas*: each batch carries what was counted since the previous batch and
//! the collector adds them up per key. Deltas keep the agent's memory bounded by one flush
//! interval's keys, and a resent batch is harmless because the collector stores each
//! `(instance, sequence)` once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::BuildHasherDefault;

use stormwatch_model::{Aggregate, AggregateKey};

use crate::received::Received;

use crate::util::PassThrough;

/// Most distinct keys held between two flushes; past it the pipeline cuts a batch early.
pub const MAX_KEYS: usize = 20_000;

/// Most distinct aggregate keys one agent makes per minute. Past it, a span is counted in its
/// service's overflow row (peer and operation [`OVERFLOW_LABEL`]): counts, errors and
/// latency stay exact per service and class, and a label that explodes (a client port, an id
/// in a URL) cannot grow the store by a row per value.
pub const MAX_KEYS_PER_MINUTE: usize = 5_000;

/// Peer and operation of the overflow rows.
pub const OVERFLOW_LABEL: &str = "(overflow)";

/// Minutes whose keys are remembered for [`MAX_KEYS_PER_MINUTE`], back from the newest.
const REMEMBERED_MINUTES: i64 = 60;

/// `status_class` without building its string: a failed database connection, the HTTP
/// status, or ok / error (the model's `status_class`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    ConnectFailure,
    Http(u32),
    Ok,
    Error,
}

impl Status {
    fn of(span: &Received) -> Self {
        if span.flags & (1 << stormwatch_model::SpanFlag::ConnectFailure as u8) != 0 {
            Status::ConnectFailure
        } else if span.http_status > 0 {
            Status::Http(span.http_status)
        } else if span.is_error() {
            Status::Error
        } else {
            Status::Ok
        }
    }
}

/// One aggregate row with the parts of its key that compare cheaply.
#[derive(Debug)]
struct Row {
    minute: i64,
    class: i32,
    status: Status,
    key: AggregateKey,
    agg: Aggregate,
}

/// A span's key fields, or its overflow row's.
#[derive(Clone, Copy)]
struct Labels<'a> {
    service: &'a str,
    peer: &'a str,
    operation: &'a str,
}

impl<'a> Labels<'a> {
    fn of(span: &'a Received) -> Self {
        Labels {
            service: span.service(),
            peer: span.peer(),
            operation: span.operation(),
        }
    }

    fn overflow(self) -> Self {
        Labels {
            peer: OVERFLOW_LABEL,
            operation: OVERFLOW_LABEL,
            ..self
        }
    }
}

impl Row {
    fn matches(&self, minute: i64, status: Status, class: i32, l: Labels<'_>) -> bool {
        self.minute == minute
            && self.class == class
            && self.status == status
            && self.key.operation == l.operation
            && self.key.peer == l.peer
            && self.key.service == l.service
    }
}

/// A hash of the key's fields: the key of a span is found without allocating, which the
/// model's `AggregateKey::of_span` (five owned strings per span) could not do on the hot path.
fn key_hash(minute: i64, status: Status, class: i32, l: Labels<'_>) -> u64 {
    let mut h = crate::util::Mix::default();
    let status = match status {
        Status::Http(c) => c,
        Status::Ok => 1000,
        Status::Error => 1001,
        Status::ConnectFailure => 1002,
    };
    h.word(minute as u64);
    h.word(u64::from(class as u32) << 32 | u64::from(status));
    h.bytes(l.service.as_bytes());
    h.bytes(l.peer.as_bytes());
    h.bytes(l.operation.as_bytes());
    h.a
}

/// Aggregates since the last [`Aggregator::take`].
#[derive(Default)]
pub struct Aggregator {
    rows: HashMap<u64, Vec<Row>, BuildHasherDefault<PassThrough>>,
    len: usize,
    /// Key hashes made per minute (across flushes), for [`MAX_KEYS_PER_MINUTE`].
    minute_keys: BTreeMap<i64, HashSet<u64, BuildHasherDefault<PassThrough>>>,
    /// Spans counted in an overflow row since the last [`Aggregator::take_overflowed`].
    overflowed: u64,
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("keys", &self.len)
            .finish()
    }
}

impl Aggregator {
    /// Counts `span`.
    pub fn add(&mut self, span: &Received) {
        let minute = span.end_ns().div_euclid(60_000_000_000) * 60;
        let status = Status::of(span);
        let mut labels = Labels::of(span);
        let mut hash = key_hash(minute, status, span.class, labels);
        if let Some(row) = self.rows.get_mut(&hash).and_then(|b| {
            b.iter_mut()
                .find(|r| r.matches(minute, status, span.class, labels))
        }) {
            count(&mut row.agg, span);
            return;
        }
        if !self.admit(minute, hash) {
            self.overflowed += 1;
            labels = labels.overflow();
            hash = key_hash(minute, status, span.class, labels);
        }
        let bucket = self.rows.entry(hash).or_default();
        if let Some(row) = bucket
            .iter_mut()
            .find(|r| r.matches(minute, status, span.class, labels))
        {
            count(&mut row.agg, span);
            return;
        }
        // The same key as the model's `AggregateKey::of_span` (a test holds the two together).
        let key = AggregateKey {
            minute,
            service: labels.service.to_owned(),
            class: span.dependency_class(),
            peer: labels.peer.to_owned(),
            operation: labels.operation.to_owned(),
            status_class: match status {
                Status::Http(c) => c.to_string(),
                Status::Ok => "ok".to_owned(),
                Status::Error => "error".to_owned(),
                Status::ConnectFailure => "connect_failure".to_owned(),
            },
        };
        let mut agg = Aggregate::new(&key);
        count(&mut agg, span);
        bucket.push(Row {
            minute,
            class: span.class,
            status,
            key,
            agg,
        });
        self.len += 1;
    }

    /// Whether a key not held since the last flush may have a row of its own: it was made
    /// earlier this minute, or the minute has room for one more.
    fn admit(&mut self, minute: i64, hash: u64) -> bool {
        let newest = self
            .minute_keys
            .last_key_value()
            .map_or(minute, |(m, _)| *m);
        if minute < newest - REMEMBERED_MINUTES * 60 {
            // Its minute is forgotten: a new key there cannot be told from a flood of them.
            return false;
        }
        let keys = self.minute_keys.entry(minute).or_default();
        if keys.contains(&hash) {
            return true;
        }
        if keys.len() >= MAX_KEYS_PER_MINUTE {
            return false;
        }
        keys.insert(hash);
        if minute > newest {
            self.minute_keys = self
                .minute_keys
                .split_off(&(minute - REMEMBERED_MINUTES * 60));
        }
        true
    }

    /// Spans counted in overflow rows since the last call.
    pub fn take_overflowed(&mut self) -> u64 {
        std::mem::take(&mut self.overflowed)
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was counted since the last take.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Everything counted so far, in key order (stable batches are easier to debug).
    pub fn take(&mut self) -> Vec<Aggregate> {
        let mut rows: Vec<Row> = self.rows.drain().flat_map(|(_, b)| b).collect();
        self.len = 0;
        rows.sort_by(|a, b| a.key.cmp(&b.key));
        rows.into_iter().map(|r| r.agg).collect()
    }
}

/// What the model's `Aggregate::add` does, on a compact span.
fn count(agg: &mut Aggregate, span: &Received) {
    let d = span.duration_ns.max(0) as u64;
    agg.count += 1;
    agg.errors += u64::from(span.is_error());
    agg.sum_ns = agg.sum_ns.saturating_add(d);
    agg.histogram.get_or_insert_with(Default::default).record(d);
}

#[cfg(test)]
mod agrees_with_model;
#[cfg(test)]
mod tests;

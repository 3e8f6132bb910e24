//! Per-minute aggregates of every span, counted before sampling.
//!
//! The agent ships *deltas*: each batch carries what was counted since the previous batch and
//! the collector adds them up per key. Deltas keep the agent's memory bounded by one flush
//! interval's keys, and a resent batch is harmless because the collector stores each
//! `(instance, sequence)` once.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use stormwatch_model::{Aggregate, AggregateKey, Span};

use crate::util::PassThrough;

/// Most distinct keys held between two flushes; past it the pipeline cuts a batch early.
pub const MAX_KEYS: usize = 20_000;

/// `status_class` without building its string: the HTTP status, or ok / error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Http(u32),
    Ok,
    Error,
}

impl Status {
    fn of(span: &Span) -> Self {
        if span.http_status > 0 {
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

impl Row {
    fn matches(&self, minute: i64, status: Status, span: &Span) -> bool {
        self.minute == minute
            && self.class == span.class
            && self.status == status
            && self.key.operation == span.operation
            && self.key.peer == span.peer
            && self.key.service == span.service
    }
}

/// FNV-1a over the key's fields: the key of a span is found without allocating, which the
/// model's `AggregateKey::of_span` (five owned strings per span) could not do on the hot path.
fn key_hash(minute: i64, status: Status, span: &Span) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    };
    eat(&minute.to_le_bytes());
    eat(&span.class.to_le_bytes());
    eat(&match status {
        Status::Http(c) => c,
        Status::Ok => 1000,
        Status::Error => 1001,
    }
    .to_le_bytes());
    eat(span.service.as_bytes());
    eat(span.peer.as_bytes());
    eat(span.operation.as_bytes());
    h
}

/// Aggregates since the last [`Aggregator::take`].
#[derive(Default)]
pub struct Aggregator {
    rows: HashMap<u64, Vec<Row>, BuildHasherDefault<PassThrough>>,
    len: usize,
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
    pub fn add(&mut self, span: &Span) {
        let minute = span.end_ns().div_euclid(60_000_000_000) * 60;
        let status = Status::of(span);
        let bucket = self.rows.entry(key_hash(minute, status, span)).or_default();
        if let Some(row) = bucket.iter_mut().find(|r| r.matches(minute, status, span)) {
            row.agg.add(span);
            return;
        }
        let key = AggregateKey::of_span(span);
        let mut agg = Aggregate::new(&key);
        agg.add(span);
        bucket.push(Row {
            minute,
            class: span.class,
            status,
            key,
            agg,
        });
        self.len += 1;
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

#[cfg(test)]
mod tests {
    use super::*;
    use stormwatch_model::{DependencyClass, SpanStatus};

    fn span(op: &str, end_s: i64, dur_ms: i64, error: bool) -> Span {
        Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            service: "svc".into(),
            operation: op.into(),
            class: DependencyClass::Db as i32,
            start_ns: end_s * 1_000_000_000 - dur_ms * 1_000_000,
            duration_ns: dur_ms * 1_000_000,
            status: if error {
                SpanStatus::Error
            } else {
                SpanStatus::Ok
            } as i32,
            ..Default::default()
        }
    }

    #[test]
    fn counts_per_minute_and_key() {
        let mut a = Aggregator::default();
        a.add(&span("SELECT t", 1_700_000_010, 5, false));
        a.add(&span("SELECT t", 1_700_000_020, 15, false));
        a.add(&span("SELECT t", 1_700_000_030, 25, true));
        a.add(&span("SELECT t", 1_700_000_100, 5, false)); // next minute
        a.add(&span("UPDATE t", 1_700_000_010, 5, false));
        let rows = a.take();
        assert_eq!(rows.len(), 4, "{rows:?}");
        let ok = rows
            .iter()
            .find(|r| {
                r.operation == "SELECT t" && r.status_class == "ok" && r.minute == 1_699_999_980
            })
            .unwrap();
        assert_eq!((ok.count, ok.sum_ns), (2, 20_000_000));
        let err = rows.iter().find(|r| r.status_class == "error").unwrap();
        assert_eq!((err.count, err.errors), (1, 1));
        assert!(a.is_empty());
    }
}

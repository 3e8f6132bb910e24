//! Per-minute aggregates of every span, counted before sampling.
//!
//! The agent ships *deltas*: each batch carries what was counted since the previous batch and
//! the collector adds them up per key. Deltas keep the agent's memory bounded by one flush
//! interval's keys, and a resent batch is harmless because the collector stores each
//! `(instance, sequence)` once.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use stormwatch_model::{Aggregate, AggregateKey};

use crate::classify::Received;

use crate::util::PassThrough;

/// Most distinct keys held between two flushes; past it the pipeline cuts a batch early.
pub const MAX_KEYS: usize = 20_000;

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

impl Row {
    fn matches(&self, minute: i64, status: Status, span: &Received) -> bool {
        self.minute == minute
            && self.class == span.class
            && self.status == status
            && self.key.operation == span.operation()
            && self.key.peer == span.peer()
            && self.key.service == span.service()
    }
}

/// A hash of the key's fields: the key of a span is found without allocating, which the
/// model's `AggregateKey::of_span` (five owned strings per span) could not do on the hot path.
fn key_hash(minute: i64, status: Status, span: &Received) -> u64 {
    let mut h = crate::util::Mix::default();
    let status = match status {
        Status::Http(c) => c,
        Status::Ok => 1000,
        Status::Error => 1001,
        Status::ConnectFailure => 1002,
    };
    h.word(minute as u64);
    h.word(u64::from(span.class as u32) << 32 | u64::from(status));
    h.bytes(span.service().as_bytes());
    h.bytes(span.peer().as_bytes());
    h.bytes(span.operation().as_bytes());
    h.a
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
    pub fn add(&mut self, span: &Received) {
        let minute = span.end_ns().div_euclid(60_000_000_000) * 60;
        let status = Status::of(span);
        let bucket = self.rows.entry(key_hash(minute, status, span)).or_default();
        if let Some(row) = bucket.iter_mut().find(|r| r.matches(minute, status, span)) {
            count(&mut row.agg, span);
            return;
        }
        // The same key as the model's `AggregateKey::of_span` (a test holds the two together).
        let key = AggregateKey {
            minute,
            service: span.service().to_owned(),
            class: span.dependency_class(),
            peer: span.peer().to_owned(),
            operation: span.operation().to_owned(),
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
mod tests {
    use super::*;
    use stormwatch_model::{DependencyClass, Span, SpanStatus};

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
        a.add(&span("SELECT t", 1_700_000_010, 5, false).into());
        a.add(&span("SELECT t", 1_700_000_020, 15, false).into());
        a.add(&span("SELECT t", 1_700_000_030, 25, true).into());
        a.add(&span("SELECT t", 1_700_000_100, 5, false).into()); // next minute
        a.add(&span("UPDATE t", 1_700_000_010, 5, false).into());
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

#[cfg(test)]
mod agrees_with_model {
    use super::*;
    use stormwatch_model::{DependencyClass, Span, SpanStatus};

    #[test]
    fn same_keys_and_counts_as_the_model() {
        let mut spans = Vec::new();
        for (i, (status, http)) in [
            (SpanStatus::Ok, 0),
            (SpanStatus::Error, 0),
            (SpanStatus::Ok, 503),
            (SpanStatus::Error, 200),
            (SpanStatus::Error, 0),
        ]
        .into_iter()
        .enumerate()
        {
            spans.push(Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                service: "svc".into(),
                operation: format!("op{}", i % 2),
                peer: "db:5432".into(),
                class: DependencyClass::Db as i32,
                start_ns: 1_700_000_000_000_000_000 + i as i64 * 50_000_000_000,
                duration_ns: 1_000_000 * (i as i64 + 1),
                status: status as i32,
                http_status: http,
                // The last one could not connect: its own status class.
                flags: if i == 4 {
                    vec![stormwatch_model::SpanFlag::ConnectFailure as i32]
                } else {
                    vec![]
                },
                ..Default::default()
            });
        }
        let mut ours = Aggregator::default();
        let mut model: std::collections::BTreeMap<AggregateKey, Aggregate> = Default::default();
        for s in &spans {
            ours.add(&s.clone().into());
            let key = AggregateKey::of_span(s);
            model
                .entry(key.clone())
                .or_insert_with(|| Aggregate::new(&key))
                .add(s);
        }
        let rows = ours.take();
        assert!(rows.iter().any(|r| r.status_class == "connect_failure"));
        assert_eq!(rows, model.into_values().collect::<Vec<_>>());
    }
}

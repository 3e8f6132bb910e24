//! Per-minute aggregates of every span, counted before sampling.
//!
//! The agent ships *deltas*: each batch carries what was counted since the previous batch and
//! the collector adds them up per key. Deltas keep the agent's memory bounded by one flush
//! interval's keys, and a resent batch is harmless because the collector stores each
//! `(instance, sequence)` once.

use std::collections::HashMap;

use stormwatch_model::{Aggregate, AggregateKey, Span};

/// Most distinct keys held between two flushes; past it the pipeline cuts a batch early.
pub const MAX_KEYS: usize = 20_000;

/// Aggregates since the last [`Aggregator::take`].
#[derive(Debug, Default)]
pub struct Aggregator {
    rows: HashMap<AggregateKey, Aggregate>,
}

impl Aggregator {
    /// Counts `span`.
    pub fn add(&mut self, span: &Span) {
        let key = AggregateKey::of_span(span);
        if let Some(a) = self.rows.get_mut(&key) {
            a.add(span);
            return;
        }
        let mut a = Aggregate::new(&key);
        a.add(span);
        self.rows.insert(key, a);
    }

    /// Number of distinct keys held.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when nothing was counted since the last take.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Everything counted so far, in key order (stable batches are easier to debug).
    pub fn take(&mut self) -> Vec<Aggregate> {
        let mut rows: Vec<(AggregateKey, Aggregate)> = self.rows.drain().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        rows.into_iter().map(|(_, a)| a).collect()
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

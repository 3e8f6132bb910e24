//! OTLP metrics and logs: what the receivers convert and the pipeline ships with the next
//! batch. Held here behind a lock per signal (taken once per request and once per flush, not
//! per point), shared by the receivers ([`crate::ingest::Ingest`]) and the pipeline.
//!
//! Metrics become one point per series and minute ([`metrics`]); logs are filtered to WARN and
//! above plus every record with a trace id ([`logs`]). Both ride in the span batches, so they
//! share the spool, the retries and the collector's exactly-once claim.

pub mod logs;
pub mod metrics;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use stormwatch_model::{LogRecord, MetricPoint};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// Log records held between two flushes at most; beyond, receivers answer 429.
pub const MAX_HELD_LOGS: usize = 50_000;
/// Their size at most (bodies, attributes): a batch carrying them stays well under the
/// collector's 64 MiB decompressed limit beside a full load of spans.
pub const MAX_HELD_LOG_BYTES: usize = 8 << 20;

/// Held metric series and log records.
#[derive(Debug)]
pub struct Signals {
    series: Mutex<metrics::SeriesTable>,
    logs: Mutex<HeldLogs>,
    /// Woken when something new is held, so the pipeline plans a flush.
    pub held: Notify,
    pub metrics: Arc<Metrics>,
}

/// The log buffer was full; the client should retry after a while.
#[derive(Debug, thiserror::Error)]
#[error("the agent holds {MAX_HELD_LOGS} log records or {MAX_HELD_LOG_BYTES} bytes of them already; retry later")]
pub struct LogsFull;

#[derive(Debug, Default)]
struct HeldLogs {
    records: Vec<LogRecord>,
    bytes: usize,
}

/// About what a record takes in a batch.
fn size_of(r: &LogRecord) -> usize {
    64 + r.body.len()
        + r.severity_text.len()
        + r.attributes
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Signals {
    pub fn new(max_series: usize, metrics: Arc<Metrics>) -> Self {
        Signals {
            series: Mutex::new(metrics::SeriesTable::new(max_series)),
            logs: Mutex::new(HeldLogs::default()),
            held: Notify::new(),
            metrics,
        }
    }

    /// Adds the data points of one converted request; points of series beyond the cap are
    /// counted as dropped.
    pub fn add_points(&self, points: Vec<metrics::Observed>, max_series: usize) {
        if points.is_empty() {
            return;
        }
        let dropped = {
            let mut table = lock(&self.series);
            table.set_cap(max_series);
            points.into_iter().filter(|p| !table.observe(p)).count()
        };
        if dropped > 0 {
            self.metrics
                .metric_points_dropped
                .fetch_add(dropped as u64, Relaxed);
        }
        self.held.notify_one();
    }

    /// Holds kept log records, all or none.
    pub fn add_logs(&self, records: Vec<LogRecord>) -> Result<(), LogsFull> {
        if records.is_empty() {
            return Ok(());
        }
        {
            let mut held = lock(&self.logs);
            let bytes: usize = records.iter().map(size_of).sum();
            if held.records.len() + records.len() > MAX_HELD_LOGS
                || held.bytes + bytes > MAX_HELD_LOG_BYTES
            {
                drop(held);
                self.metrics
                    .log_records_dropped
                    .fetch_add(records.len() as u64, Relaxed);
                return Err(LogsFull);
            }
            held.records.extend(records);
            held.bytes += bytes;
        }
        self.held.notify_one();
        Ok(())
    }

    /// True when a flush would ship something.
    pub fn holds_anything(&self) -> bool {
        !lock(&self.logs).records.is_empty() || lock(&self.series).holds_parts()
    }

    /// What is held, for the next batch.
    pub fn take(&self) -> (Vec<MetricPoint>, Vec<LogRecord>) {
        let points = lock(&self.series).take();
        let logs = std::mem::take(&mut *lock(&self.logs)).records;
        (points, logs)
    }
}

/// `service.name` and the instance (`service.instance.id`, else `host.name`) of an OTLP
/// resource, as every signal names them.
pub fn resource_identity(attrs: &[KeyValue]) -> (&str, &str) {
    let get = |key: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("")
    };
    let instance = match get("service.instance.id") {
        "" => get("host.name"),
        s => s,
    };
    (get("service.name"), instance)
}

/// An attribute value or log body as text: strings as they are, numbers and booleans
/// printed, arrays and maps as JSON, bytes as hex.
pub fn any_text(v: &AnyValue) -> String {
    fn json(v: &AnyValue) -> serde_json::Value {
        use serde_json::Value as J;
        match v.value.as_ref() {
            Some(any_value::Value::StringValue(s)) => J::from(s.as_str()),
            Some(any_value::Value::BoolValue(b)) => J::from(*b),
            Some(any_value::Value::IntValue(i)) => J::from(*i),
            Some(any_value::Value::DoubleValue(d)) => J::from(*d),
            Some(any_value::Value::BytesValue(b)) => J::from(stormwatch_model::hexid::encode(b)),
            Some(any_value::Value::ArrayValue(a)) => J::Array(a.values.iter().map(json).collect()),
            Some(any_value::Value::KvlistValue(kv)) => J::Object(
                kv.values
                    .iter()
                    .map(|e| (e.key.clone(), e.value.as_ref().map_or(J::Null, json)))
                    .collect(),
            ),
            // An index into a profile's string table: no meaning outside profiles.
            Some(any_value::Value::StringValueStrindex(_)) | None => J::Null,
        }
    }
    match v.value.as_ref() {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        None => String::new(),
        _ => match json(v) {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        },
    }
}

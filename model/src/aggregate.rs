//! Per-minute aggregates: every span counted, before any sampling.

use serde::{Deserialize, Serialize};

use crate::enums::{as_name, DependencyClass, WireEnum};
use crate::histogram::Histogram;
use crate::span::Span;

/// Counts and latency of one (service, class, peer, operation, status class) in one minute.
///
/// `status_class` is `"connect_failure"` when the span could not connect to its database,
/// else the HTTP status code as text (`"200"`, `"503"`) when the span has one, else `"ok"` or
/// `"error"`: few distinct values; 503s from a saturated limiter stay separable from other
/// 5xx, and refused connections from other failures.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Aggregate {
    /// Start of the minute, seconds since the Unix epoch (a multiple of 60).
    #[prost(int64, tag = "1")]
    pub minute: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(enumeration = "DependencyClass", tag = "3")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<DependencyClass, _>",
        deserialize_with = "as_name::deserialize::<DependencyClass, _>"
    )]
    pub class: i32,
    #[prost(string, tag = "4")]
    #[serde(default)]
    pub peer: String,
    #[prost(string, tag = "5")]
    pub operation: String,
    #[prost(string, tag = "6")]
    pub status_class: String,
    #[prost(uint64, tag = "7")]
    pub count: u64,
    #[prost(uint64, tag = "8")]
    #[serde(default)]
    pub errors: u64,
    /// Sum of durations, nanoseconds.
    #[prost(uint64, tag = "9")]
    pub sum_ns: u64,
    #[prost(message, optional, tag = "10")]
    #[serde(default)]
    pub histogram: Option<Histogram>,
}

/// The identity of an aggregate row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    pub minute: i64,
    pub service: String,
    pub class: DependencyClass,
    pub peer: String,
    pub operation: String,
    pub status_class: String,
}

impl AggregateKey {
    /// The key a span counts under.
    pub fn of_span(span: &Span) -> Self {
        let minute = span.end_ns().div_euclid(60_000_000_000) * 60;
        AggregateKey {
            minute,
            service: span.service.clone(),
            class: span.dependency_class(),
            peer: span.peer.clone(),
            operation: span.operation.clone(),
            status_class: status_class(span),
        }
    }
}

/// `"connect_failure"` for a span that could not connect to its database, else `"503"` for a
/// span with an HTTP status, else `"ok"` / `"error"`.
pub fn status_class(span: &Span) -> String {
    if span
        .flags
        .contains(&(crate::SpanFlag::ConnectFailure as i32))
    {
        "connect_failure".to_owned()
    } else if span.http_status > 0 {
        span.http_status.to_string()
    } else if span.is_error() {
        "error".to_owned()
    } else {
        "ok".to_owned()
    }
}

impl Aggregate {
    /// An empty aggregate for `key`.
    pub fn new(key: &AggregateKey) -> Self {
        Aggregate {
            minute: key.minute,
            service: key.service.clone(),
            class: key.class.number(),
            peer: key.peer.clone(),
            operation: key.operation.clone(),
            status_class: key.status_class.clone(),
            count: 0,
            errors: 0,
            sum_ns: 0,
            histogram: Some(Histogram::default()),
        }
    }

    /// Counts one span.
    pub fn add(&mut self, span: &Span) {
        let d = span.duration_ns.max(0) as u64;
        self.count += 1;
        self.errors += u64::from(span.is_error());
        self.sum_ns = self.sum_ns.saturating_add(d);
        self.histogram
            .get_or_insert_with(Histogram::default)
            .record(d);
    }
}

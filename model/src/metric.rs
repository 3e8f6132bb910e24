//! Metrics apps export over OTLP (`/v1/metrics`), as the agent keeps them: one point per series
//! per minute. A series is (service, instance, name, attributes); the agent ships what it
//! accumulated for a minute since its last batch, and the collector merges the parts of the
//! same minute (counts and sums add up, min and max widen, the latest `last` wins), the way
//! aggregates of spans are merged. A batch is stored at most once, so the merge is exact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enums::{as_name, MetricKind};

/// One series over (part of) one minute.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPoint {
    /// Start of the minute, ns since the Unix epoch (a multiple of 60 s).
    #[prost(int64, tag = "1")]
    pub minute_ns: i64,
    /// `service.name` of the app that exported it.
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    #[serde(default)]
    pub instance: String,
    /// The metric's name (`db.client.connections.usage`).
    #[prost(string, tag = "4")]
    pub name: String,
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub unit: String,
    #[prost(enumeration = "MetricKind", tag = "6")]
    #[serde(
        serialize_with = "as_name::serialize::<MetricKind, _>",
        deserialize_with = "as_name::deserialize::<MetricKind, _>"
    )]
    pub kind: i32,
    /// The data point's attributes (bounded: [`crate::limits::MAX_METRIC_ATTRIBUTES`]).
    #[prost(btree_map = "string, string", tag = "7")]
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Gauges and sums: points received; histograms: observations added in this part.
    #[prost(uint64, tag = "8")]
    #[serde(default)]
    pub count: u64,
    /// Gauges: sum of the points' values; counters: increase; up-down sums: sum of the points'
    /// values; histograms: sum of the observations added.
    #[prost(double, tag = "9")]
    #[serde(default)]
    pub sum: f64,
    /// Least and greatest value seen (histograms: observation, when the exporter sends them).
    #[prost(double, tag = "10")]
    #[serde(default)]
    pub min: f64,
    #[prost(double, tag = "11")]
    #[serde(default)]
    pub max: f64,
    /// The latest point's value (counters: the cumulative total) and its time.
    #[prost(double, tag = "12")]
    #[serde(default)]
    pub last: f64,
    #[prost(int64, tag = "13")]
    #[serde(default)]
    pub last_ns: i64,
    /// Histograms: upper bounds of the buckets but the last (which is unbounded).
    #[prost(double, repeated, tag = "14")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bounds: Vec<f64>,
    /// Histograms: observations added per bucket (`bounds.len() + 1` of them, or none).
    #[prost(uint64, repeated, tag = "15")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buckets: Vec<u64>,
}

impl MetricPoint {
    /// Merges another part of the same series and minute into this one. A part that counted
    /// nothing (a counter or histogram that did not move) only brings its `last`; min and max
    /// come from parts that counted something.
    pub fn merge(&mut self, other: &MetricPoint) {
        if other.count > 0 {
            if self.count == 0 {
                self.min = other.min;
                self.max = other.max;
            } else {
                self.min = self.min.min(other.min);
                self.max = self.max.max(other.max);
            }
            self.count += other.count;
            self.sum += other.sum;
            if self.buckets.is_empty() {
                self.bounds.clone_from(&other.bounds);
                self.buckets.clone_from(&other.buckets);
            } else if self.bounds == other.bounds && self.buckets.len() == other.buckets.len() {
                for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
                    *a += b;
                }
            }
        }
        if other.last_ns >= self.last_ns {
            self.last = other.last;
            self.last_ns = other.last_ns;
        }
    }
}

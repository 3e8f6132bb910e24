//! OTLP metrics to per-minute series points.
//!
//! A series is (service, instance, name, attributes). Each data point becomes a part of its
//! series' point for the minute it was taken in: gauges and up-down sums as sampled values,
//! counters as their increase, histograms as the observations added. Cumulative temporality
//! (what SDKs send by default) is turned into increases here, against the previous point of
//! the same series: a point whose start time changed, or that went down, is a reset and
//! counts whole. The first point of a series counts whole when it started after this agent
//! did (everything it counted happened while we watched), else it only sets the baseline.
//!
//! At most `max_series` series are tracked (`[limits] max_metric_series`); points of new
//! series beyond are dropped and counted. Series silent for [`IDLE_SERIES`] are forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, ExponentialHistogramDataPoint,
    HistogramDataPoint, NumberDataPoint,
};
use stormwatch_model::limits::{
    MAX_FUTURE_NS, MAX_HISTOGRAM_BUCKETS, MAX_LABEL_BYTES, MAX_METRIC_ATTRIBUTES, MIN_TIME_NS,
};
use stormwatch_model::validate::truncate;
use stormwatch_model::{MetricKind, MetricPoint};

use super::{any_text, resource_identity};

/// A series with no point for this long is forgotten (its room under the cap freed).
pub const IDLE_SERIES: Duration = Duration::from_secs(600);

const MINUTE_NS: i64 = 60_000_000_000;

/// What names a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    pub service: String,
    pub instance: String,
    pub name: String,
    /// Sorted by key, at most [`MAX_METRIC_ATTRIBUTES`].
    pub attributes: Vec<(String, String)>,
}

/// A data point's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Hist),
}

/// A histogram data point (exponential ones converted to explicit bounds).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hist {
    pub count: u64,
    pub sum: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub bounds: Vec<f64>,
    pub buckets: Vec<u64>,
}

/// One data point as received.
#[derive(Debug, Clone)]
pub struct Observed {
    pub key: SeriesKey,
    pub unit: String,
    pub kind: MetricKind,
    pub delta: bool,
    pub start_ns: u64,
    pub time_ns: i64,
    pub value: Value,
}

/// The points of one request, and what was refused.
#[derive(Debug, Default)]
pub struct Converted {
    pub points: Vec<Observed>,
    pub rejected: usize,
    pub first_error: Option<String>,
}

impl Converted {
    fn refuse(&mut self, at: impl FnOnce() -> String, why: &str) {
        self.rejected += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("{}: {why}", at()));
        }
    }
}

fn attributes_of(attrs: &[KeyValue]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = attrs
        .iter()
        .map(|kv| {
            let mut v = kv.value.as_ref().map(any_text).unwrap_or_default();
            truncate(&mut v, MAX_LABEL_BYTES);
            (kv.key.clone(), v)
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out.truncate(MAX_METRIC_ATTRIBUTES);
    out
}

fn number(p: &NumberDataPoint) -> Option<f64> {
    match p.value? {
        number_data_point::Value::AsDouble(d) => Some(d),
        number_data_point::Value::AsInt(i) => Some(i as f64),
    }
}

/// Bit 0 of a data point's flags: no value was recorded (a stale marker).
const NO_RECORDED_VALUE: u32 = 1;

fn explicit(p: &HistogramDataPoint) -> Hist {
    let keep = p.bucket_counts.len() == p.explicit_bounds.len() + 1
        && p.explicit_bounds.len() < MAX_HISTOGRAM_BUCKETS
        && p.explicit_bounds.iter().all(|b| b.is_finite())
        && p.explicit_bounds.windows(2).all(|w| w[0] < w[1]);
    Hist {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        bounds: if keep {
            p.explicit_bounds.clone()
        } else {
            Vec::new()
        },
        buckets: if keep {
            p.bucket_counts.clone()
        } else {
            Vec::new()
        },
    }
}

/// An exponential histogram as explicit buckets: the zero and negative counts go to the first
/// bucket (up to the lowest positive bucket's lower bound), each positive bucket keeps its
/// upper bound `base^(offset+i+1)`, and an empty overflow bucket closes the list.
fn exponential(p: &ExponentialHistogramDataPoint) -> Hist {
    let mut h = Hist {
        count: p.count,
        sum: p.sum.unwrap_or(0.0),
        min: p.min,
        max: p.max,
        ..Hist::default()
    };
    let Some(pos) = p.positive.as_ref() else {
        return h;
    };
    if pos.bucket_counts.is_empty() || pos.bucket_counts.len() + 2 > MAX_HISTOGRAM_BUCKETS {
        return h;
    }
    let base = 2f64.powf(2f64.powi(-p.scale));
    let bound = |i: i64| base.powf((i64::from(pos.offset) + i) as f64);
    let below: u64 = p.zero_count
        + p.negative
            .as_ref()
            .map_or(0, |n| n.bucket_counts.iter().sum());
    let mut bounds = vec![bound(0)];
    let mut buckets = vec![below];
    for (i, c) in pos.bucket_counts.iter().enumerate() {
        bounds.push(bound(i as i64 + 1));
        buckets.push(*c);
    }
    buckets.push(0);
    if bounds.iter().all(|b| b.is_finite()) && bounds.windows(2).all(|w| w[0] < w[1]) {
        h.bounds = bounds;
        h.buckets = buckets;
    }
    h
}

/// What a data point of any shape carries besides its value.
trait DataPoint {
    fn attributes(&self) -> &[KeyValue];
    /// Start, time (ns) and flags.
    fn times(&self) -> (u64, u64, u32);
}

macro_rules! data_point {
    ($($t:ty),+) => {$(
        impl DataPoint for $t {
            fn attributes(&self) -> &[KeyValue] {
                &self.attributes
            }
            fn times(&self) -> (u64, u64, u32) {
                (self.start_time_unix_nano, self.time_unix_nano, self.flags)
            }
        }
    )+};
}
data_point!(
    NumberDataPoint,
    HistogramDataPoint,
    ExponentialHistogramDataPoint
);

/// One metric of a request, as its points are converted.
struct MetricAt<'a> {
    service: &'a str,
    instance: &'a str,
    name: String,
    unit: &'a str,
    /// `resourceMetrics[r].scopeMetrics[s].metrics[m]`, for refusals.
    at: String,
    now_ns: i64,
}

impl MetricAt<'_> {
    fn points<P: DataPoint>(
        &self,
        out: &mut Converted,
        points: &[P],
        kind: MetricKind,
        delta: bool,
        value: impl Fn(&P) -> Option<Value>,
    ) {
        for (pi, p) in points.iter().enumerate() {
            let (start_ns, time_ns, flags) = p.times();
            if flags & NO_RECORDED_VALUE != 0 {
                continue;
            }
            let at = || format!("{}.dataPoints[{pi}]", self.at);
            let time_ns = i64::try_from(time_ns).unwrap_or(i64::MAX);
            if time_ns < MIN_TIME_NS || time_ns > self.now_ns.saturating_add(MAX_FUTURE_NS) {
                out.refuse(at, "timeUnixNano is not a plausible time");
                continue;
            }
            let value = value(p).filter(|v| match v {
                Value::Number(v) => v.is_finite(),
                Value::Histogram(h) => {
                    h.sum.is_finite()
                        && h.min.is_none_or(f64::is_finite)
                        && h.max.is_none_or(f64::is_finite)
                }
            });
            let Some(value) = value else {
                out.refuse(at, "the value is missing or not a finite number");
                continue;
            };
            out.points.push(Observed {
                key: SeriesKey {
                    service: self.service.to_owned(),
                    instance: self.instance.to_owned(),
                    name: self.name.clone(),
                    attributes: attributes_of(p.attributes()),
                },
                unit: self.unit.to_owned(),
                kind,
                delta,
                start_ns,
                time_ns,
                value,
            });
        }
    }
}

/// Converts every data point of `req`; `now_ns` bounds the accepted times.
pub fn convert(req: &ExportMetricsServiceRequest, now_ns: i64) -> Converted {
    let mut out = Converted::default();
    let is_delta = |t: i32| t == AggregationTemporality::Delta as i32;
    for (ri, rm) in req.resource_metrics.iter().enumerate() {
        let rattrs: &[KeyValue] = rm.resource.as_ref().map_or(&[], |r| &r.attributes);
        let (service, instance) = resource_identity(rattrs);
        for (si, sm) in rm.scope_metrics.iter().enumerate() {
            for (mi, m) in sm.metrics.iter().enumerate() {
                let at = format!("resourceMetrics[{ri}].scopeMetrics[{si}].metrics[{mi}]");
                if service.is_empty() {
                    out.refuse(|| at, "the resource has no service.name");
                    continue;
                }
                if m.name.is_empty() {
                    out.refuse(|| at, "the metric has no name");
                    continue;
                }
                let mut name = m.name.clone();
                truncate(&mut name, MAX_LABEL_BYTES);
                let metric = MetricAt {
                    service,
                    instance,
                    name,
                    unit: &m.unit,
                    at,
                    now_ns,
                };
                let number = |p: &NumberDataPoint| number(p).map(Value::Number);
                match &m.data {
                    Some(metric::Data::Gauge(g)) => {
                        metric.points(&mut out, &g.data_points, MetricKind::Gauge, false, number)
                    }
                    Some(metric::Data::Sum(s)) => {
                        let kind = if s.is_monotonic {
                            MetricKind::Counter
                        } else {
                            MetricKind::UpDown
                        };
                        let delta = is_delta(s.aggregation_temporality);
                        metric.points(&mut out, &s.data_points, kind, delta, number)
                    }
                    Some(metric::Data::Histogram(h)) => metric.points(
                        &mut out,
                        &h.data_points,
                        MetricKind::Histogram,
                        is_delta(h.aggregation_temporality),
                        |p| Some(Value::Histogram(explicit(p))),
                    ),
                    Some(metric::Data::ExponentialHistogram(h)) => metric.points(
                        &mut out,
                        &h.data_points,
                        MetricKind::Histogram,
                        is_delta(h.aggregation_temporality),
                        |p| Some(Value::Histogram(exponential(p))),
                    ),
                    // Summaries are a legacy Prometheus shape OTel SDKs do not produce.
                    Some(metric::Data::Summary(_)) => {
                        out.refuse(|| metric.at, "summary metrics are not supported");
                    }
                    None => {}
                }
            }
        }
    }
    out
}

/// The previous point of a series, to turn cumulative values into increases.
#[derive(Debug, Clone, Default)]
struct Previous {
    start_ns: u64,
    /// Counters: the cumulative total; up-down sums: the value.
    value: f64,
    hist: Hist,
}

#[derive(Debug)]
struct Series {
    kind: MetricKind,
    unit: String,
    previous: Option<Previous>,
    /// Parts not shipped yet, by minute (usually one).
    parts: Vec<MetricPoint>,
    seen: Instant,
}

/// Every tracked series, with their unshipped parts.
#[derive(Debug)]
pub struct SeriesTable {
    series: HashMap<SeriesKey, Series>,
    cap: usize,
    /// When this agent started, ns: cumulative series that started later count whole.
    started_ns: i64,
}

/// The estimated least and greatest observation of a histogram part, from its buckets.
fn bucket_range(h: &Hist) -> (f64, f64) {
    let first = h.buckets.iter().position(|c| *c > 0);
    let last = h.buckets.iter().rposition(|c| *c > 0);
    match (first, last, h.bounds.is_empty()) {
        (Some(f), Some(l), false) => {
            let lo = if f == 0 {
                h.bounds[0].min(0.0)
            } else {
                h.bounds[f - 1]
            };
            let hi = h.bounds[l.min(h.bounds.len() - 1)];
            (lo, hi)
        }
        _ => {
            let mean = if h.count > 0 {
                h.sum / h.count as f64
            } else {
                0.0
            };
            (mean, mean)
        }
    }
}

impl SeriesTable {
    pub fn new(cap: usize) -> Self {
        SeriesTable {
            series: HashMap::new(),
            cap,
            started_ns: stormwatch_model::now_ns(),
        }
    }

    pub fn set_cap(&mut self, cap: usize) {
        self.cap = cap;
    }

    pub fn holds_parts(&self) -> bool {
        self.series.values().any(|s| !s.parts.is_empty())
    }

    /// Adds one data point; false when it belongs to a new series over the cap.
    pub fn observe(&mut self, p: &Observed) -> bool {
        let now = Instant::now();
        if !self.series.contains_key(&p.key) {
            if self.series.len() >= self.cap {
                return false;
            }
            self.series.insert(
                p.key.clone(),
                Series {
                    kind: p.kind,
                    unit: p.unit.clone(),
                    previous: None,
                    parts: Vec::new(),
                    seen: now,
                },
            );
        }
        let started_ns = self.started_ns;
        let s = self.series.get_mut(&p.key).expect("inserted above");
        if s.kind != p.kind {
            // The app redefined the instrument: start over.
            s.kind = p.kind;
            s.previous = None;
        }
        s.unit.clone_from(&p.unit);
        s.seen = now;
        let fresh = i64::try_from(p.start_ns).is_ok_and(|st| st >= started_ns);
        let mut part = MetricPoint {
            minute_ns: p.time_ns - p.time_ns.rem_euclid(MINUTE_NS),
            service: p.key.service.clone(),
            instance: p.key.instance.clone(),
            name: p.key.name.clone(),
            unit: p.unit.clone(),
            kind: p.kind as i32,
            attributes: p.key.attributes.iter().cloned().collect(),
            last_ns: p.time_ns,
            ..MetricPoint::default()
        };
        let prev = s.previous.take();
        let same_run = |pr: &Previous| pr.start_ns == p.start_ns;
        match (&p.value, p.kind) {
            (Value::Number(v), MetricKind::Counter) => {
                let (increase, total) = if p.delta {
                    (*v, prev.as_ref().map_or(0.0, |pr| pr.value) + v)
                } else {
                    let inc = match &prev {
                        Some(pr) if same_run(pr) && *v >= pr.value => v - pr.value,
                        Some(_) => *v,
                        None if fresh => *v,
                        None => 0.0,
                    };
                    (inc, *v)
                };
                part.count = 1;
                part.sum = increase;
                (part.min, part.max, part.last) = (total, total, total);
                s.previous = Some(Previous {
                    start_ns: p.start_ns,
                    value: total,
                    ..Previous::default()
                });
            }
            (Value::Number(v), _) => {
                let value = if p.delta && p.kind == MetricKind::UpDown {
                    prev.as_ref().map_or(0.0, |pr| pr.value) + v
                } else {
                    *v
                };
                part.count = 1;
                part.sum = value;
                (part.min, part.max, part.last) = (value, value, value);
                s.previous = Some(Previous {
                    start_ns: p.start_ns,
                    value,
                    ..Previous::default()
                });
            }
            (Value::Histogram(h), _) => {
                let added = if p.delta {
                    h.clone()
                } else {
                    match &prev {
                        Some(pr) if same_run(pr) && h.count >= pr.hist.count => {
                            let same_layout = pr.hist.bounds == h.bounds
                                && pr.hist.buckets.len() == h.buckets.len();
                            Hist {
                                count: h.count - pr.hist.count,
                                sum: h.sum - pr.hist.sum,
                                min: None,
                                max: None,
                                bounds: if same_layout {
                                    h.bounds.clone()
                                } else {
                                    Vec::new()
                                },
                                buckets: if same_layout {
                                    h.buckets
                                        .iter()
                                        .zip(&pr.hist.buckets)
                                        .map(|(a, b)| a.saturating_sub(*b))
                                        .collect()
                                } else {
                                    Vec::new()
                                },
                            }
                        }
                        Some(_) => Hist {
                            min: None,
                            max: None,
                            ..h.clone()
                        },
                        None if fresh => Hist {
                            min: None,
                            max: None,
                            ..h.clone()
                        },
                        None => Hist::default(),
                    }
                };
                let (lo, hi) = bucket_range(&added);
                part.count = added.count;
                part.sum = added.sum;
                part.min = added.min.unwrap_or(lo);
                part.max = added.max.unwrap_or(hi);
                part.last = if added.count > 0 {
                    added.sum / added.count as f64
                } else {
                    0.0
                };
                if added.count > 0 {
                    part.bounds = added.bounds;
                    part.buckets = added.buckets;
                }
                s.previous = Some(Previous {
                    start_ns: p.start_ns,
                    hist: h.clone(),
                    ..Previous::default()
                });
            }
        }
        match s.parts.iter_mut().find(|q| q.minute_ns == part.minute_ns) {
            Some(q) => q.merge(&part),
            None => s.parts.push(part),
        }
        true
    }

    /// Every unshipped part; series idle for [`IDLE_SERIES`] are forgotten.
    pub fn take(&mut self) -> Vec<MetricPoint> {
        let now = Instant::now();
        let mut out = Vec::new();
        self.series.retain(|_, s| {
            out.append(&mut s.parts);
            now.duration_since(s.seen) < IDLE_SERIES
        });
        out
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests;

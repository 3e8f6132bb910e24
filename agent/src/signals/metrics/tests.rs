use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    exponential_histogram_data_point::Buckets, metric, number_data_point, ExponentialHistogram,
    ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::*;

const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;
const DELTA: i32 = AggregationTemporality::Delta as i32;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "board"), kv("host.name", "web-1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn number(start: u64, t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
    NumberDataPoint {
        start_time_unix_nano: start,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        attributes: attrs,
        ..Default::default()
    }
}

fn sum(name: &str, monotonic: bool, temporality: i32, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        unit: "1".into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        })),
        ..Default::default()
    }
}

/// A minute boundary well after any test table's start (so series count as fresh) and its
/// nanoseconds `s` seconds later.
fn at(table: &SeriesTable, s: u64) -> u64 {
    let m = (table.started_ns as u64 / 60_000_000_000 + 2) * 60_000_000_000;
    m + s * 1_000_000_000
}

fn feed(table: &mut SeriesTable, req: &ExportMetricsServiceRequest) -> usize {
    let conv = convert(req, stormwatch_model::now_ns() + 3_600_000_000_000);
    assert_eq!(conv.rejected, 0, "{:?}", conv.first_error);
    conv.points.iter().filter(|p| !table.observe(p)).count()
}

#[test]
fn a_cumulative_counter_ships_its_increase_per_minute_across_a_reset() {
    let mut t = SeriesTable::new(100);
    let old_start = 1_000_000_000_000_000_000; // started before the agent: a baseline only
    for (s, v) in [(5, 100.0), (20, 130.0), (50, 145.0)] {
        let at_ns = at(&t, s);
        feed(
            &mut t,
            &request(vec![sum(
                "requests",
                true,
                CUMULATIVE,
                vec![number(old_start, at_ns, v, vec![])],
            )]),
        );
    }
    // The app restarted in the next minute: the counter starts again from 0.
    let restart = at(&t, 61);
    let at_ns = at(&t, 70);
    feed(
        &mut t,
        &request(vec![sum(
            "requests",
            true,
            CUMULATIVE,
            vec![number(restart, at_ns, 12.0, vec![])],
        )]),
    );
    let mut points = t.take();
    points.sort_by_key(|p| p.minute_ns);
    assert_eq!(points.len(), 2);
    assert_eq!(
        (points[0].sum, points[0].count, points[0].last),
        (45.0, 3, 145.0)
    );
    assert_eq!(points[0].kind, MetricKind::Counter as i32);
    assert_eq!((points[1].sum, points[1].last), (12.0, 12.0));
    assert_eq!(points[1].minute_ns - points[0].minute_ns, 60_000_000_000);
    assert!(t.take().is_empty(), "parts are shipped once");
}

#[test]
fn a_counter_that_started_after_the_agent_counts_whole_and_delta_adds_up() {
    let mut t = SeriesTable::new(100);
    let start = at(&t, 0);
    let at_ns = at(&t, 10);
    feed(
        &mut t,
        &request(vec![sum(
            "jobs",
            true,
            CUMULATIVE,
            vec![number(start, at_ns, 7.0, vec![])],
        )]),
    );
    for (s, v) in [(20, 2.0), (30, 3.0)] {
        let at_ns = at(&t, s);
        feed(
            &mut t,
            &request(vec![sum(
                "sent",
                true,
                DELTA,
                vec![number(start, at_ns, v, vec![])],
            )]),
        );
    }
    let points = t.take();
    let jobs = points.iter().find(|p| p.name == "jobs").unwrap();
    assert_eq!(jobs.sum, 7.0);
    let sent = points.iter().find(|p| p.name == "sent").unwrap();
    assert_eq!((sent.sum, sent.last), (5.0, 5.0));
}

#[test]
fn an_updown_sum_keeps_its_value_range_and_attributes_name_series() {
    let mut t = SeriesTable::new(100);
    let start = at(&t, 0);
    let used = |v: f64, s: u64, t: &SeriesTable| {
        number(
            start,
            at(t, s),
            v,
            vec![kv("state", "used"), kv("pool.name", "board")],
        )
    };
    let points = vec![used(3.0, 1, &t), used(9.0, 2, &t), used(4.0, 3, &t)];
    let idle = number(
        start,
        at(&t, 3),
        6.0,
        vec![kv("pool.name", "board"), kv("state", "idle")],
    );
    for p in points.into_iter().chain([idle]) {
        feed(
            &mut t,
            &request(vec![sum(
                "db.client.connections.usage",
                false,
                CUMULATIVE,
                vec![p],
            )]),
        );
    }
    let points = t.take();
    assert_eq!(points.len(), 2, "one series per attribute set");
    let used = points
        .iter()
        .find(|p| p.attributes["state"] == "used")
        .unwrap();
    assert_eq!(used.kind, MetricKind::UpDown as i32);
    assert_eq!(
        (used.min, used.max, used.last, used.count),
        (3.0, 9.0, 4.0, 3)
    );
}

#[test]
fn a_cumulative_histogram_ships_the_observations_added() {
    let mut t = SeriesTable::new(100);
    let start = at(&t, 0);
    let hist = |count: u64, sum: f64, buckets: Vec<u64>, s: u64, t: &SeriesTable| Metric {
        name: "http.server.duration".into(),
        unit: "ms".into(),
        data: Some(metric::Data::Histogram(Histogram {
            data_points: vec![HistogramDataPoint {
                start_time_unix_nano: start,
                time_unix_nano: at(t, s),
                count,
                sum: Some(sum),
                bucket_counts: buckets,
                explicit_bounds: vec![10.0, 100.0, 1000.0],
                min: Some(1.0),
                max: Some(900.0),
                ..Default::default()
            }],
            aggregation_temporality: CUMULATIVE,
        })),
        ..Default::default()
    };
    let first = hist(4, 40.0, vec![2, 2, 0, 0], 10, &t);
    feed(&mut t, &request(vec![first]));
    assert_eq!(
        t.take()[0].buckets,
        vec![2, 2, 0, 0],
        "started after the agent: whole"
    );
    let second = hist(10, 1240.0, vec![2, 5, 3, 0], 20, &t);
    feed(&mut t, &request(vec![second]));
    let p = &t.take()[0];
    assert_eq!((p.count, p.sum), (6, 1200.0));
    assert_eq!(p.buckets, vec![0, 3, 3, 0]);
    // Cumulative min/max cover the whole run: the part's range comes from its buckets.
    assert_eq!((p.min, p.max), (10.0, 1000.0));
}

#[test]
fn an_exponential_histogram_becomes_explicit_buckets() {
    let mut t = SeriesTable::new(100);
    let m = Metric {
        name: "rpc.duration".into(),
        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: vec![ExponentialHistogramDataPoint {
                start_time_unix_nano: at(&t, 0),
                time_unix_nano: at(&t, 5),
                count: 6,
                sum: Some(20.0),
                scale: 0,
                zero_count: 1,
                positive: Some(Buckets {
                    offset: 1,
                    bucket_counts: vec![2, 3],
                }),
                ..Default::default()
            }],
            aggregation_temporality: DELTA,
        })),
        ..Default::default()
    };
    feed(&mut t, &request(vec![m]));
    let p = &t.take()[0];
    // Scale 0: base 2; offset 1: buckets (2, 4] and (4, 8].
    assert_eq!(p.bounds, vec![2.0, 4.0, 8.0]);
    assert_eq!(p.buckets, vec![1, 2, 3, 0]);
    assert_eq!(p.count, 6);
}

#[test]
fn new_series_beyond_the_cap_are_dropped_and_bad_points_refused() {
    let mut t = SeriesTable::new(2);
    let start = at(&t, 0);
    let gauge = |name: &str, v: f64, t: &SeriesTable| Metric {
        name: name.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: vec![number(start, at(t, 1), v, vec![])],
        })),
        ..Default::default()
    };
    let req = request(vec![
        gauge("a", 1.0, &t),
        gauge("b", 2.0, &t),
        gauge("c", 3.0, &t),
    ]);
    assert_eq!(feed(&mut t, &req), 1);
    assert_eq!(t.len(), 2);
    // A known series still takes points at the cap.
    let req = request(vec![gauge("a", 5.0, &t)]);
    assert_eq!(feed(&mut t, &req), 0);
    let a = t.take().into_iter().find(|p| p.name == "a").unwrap();
    assert_eq!((a.count, a.sum, a.max), (2, 6.0, 5.0));

    let bad = request(vec![gauge("nan", f64::NAN, &t), gauge("", 1.0, &t)]);
    let conv = convert(&bad, stormwatch_model::now_ns());
    assert_eq!((conv.points.len(), conv.rejected), (0, 2));
    assert!(conv
        .first_error
        .unwrap()
        .contains("metrics[0].dataPoints[0]: the value"));
}

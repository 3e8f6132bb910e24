//! Metric points and log records: what the validation keeps, cuts and refuses, and how the
//! parts of a minute merge.

use stormwatch_model::limits::{MAX_LOG_BODY_BYTES, MAX_METRIC_ATTRIBUTES};
use stormwatch_model::validate::check_batch;
use stormwatch_model::{Batch, LogRecord, MetricKind, MetricPoint, WIRE_VERSION};

const NOW: i64 = 1_790_000_000_000_000_000;
const MINUTE: i64 = NOW - NOW % 60_000_000_000;

fn batch() -> Batch {
    Batch {
        version: WIRE_VERSION,
        agent_id: "a".into(),
        instance: "i".into(),
        sequence: 1,
        ..Default::default()
    }
}

fn histogram(count: u64, sum: f64, buckets: Vec<u64>, last_ns: i64) -> MetricPoint {
    MetricPoint {
        minute_ns: MINUTE,
        service: "board".into(),
        name: "http.server.request.duration".into(),
        kind: MetricKind::Histogram as i32,
        count,
        sum,
        min: 0.001,
        max: 0.9,
        last_ns,
        bounds: vec![0.01, 0.1, 1.0],
        buckets,
        ..Default::default()
    }
}

#[test]
fn parts_of_a_minute_merge_into_one_point() {
    let mut a = histogram(3, 0.3, vec![1, 1, 1, 0], MINUTE + 1);
    let mut b = histogram(2, 1.5, vec![0, 0, 1, 1], MINUTE + 2);
    b.min = 0.0005;
    b.max = 2.0;
    a.merge(&b);
    assert_eq!((a.count, a.sum), (5, 1.8));
    assert_eq!((a.min, a.max), (0.0005, 2.0));
    assert_eq!(a.buckets, vec![1, 1, 2, 1]);
    assert_eq!(a.last_ns, MINUTE + 2);
    // An earlier part does not take `last`.
    let mut c = MetricPoint {
        kind: MetricKind::UpDown as i32,
        count: 1,
        sum: 7.0,
        min: 7.0,
        max: 7.0,
        last: 7.0,
        last_ns: MINUTE + 10,
        ..Default::default()
    };
    let older = MetricPoint {
        last: 3.0,
        last_ns: MINUTE + 5,
        count: 1,
        sum: 3.0,
        min: 3.0,
        max: 3.0,
        ..c.clone()
    };
    c.merge(&older);
    assert_eq!((c.last, c.min, c.max, c.count), (7.0, 3.0, 7.0, 2));
}

#[test]
fn a_histogram_with_the_wrong_bucket_count_is_refused_by_name() {
    let mut b = batch();
    b.metrics.push(histogram(3, 0.3, vec![1, 2], MINUTE + 1));
    let err = check_batch(&mut b, NOW).unwrap_err();
    assert_eq!(err.field, "metrics[0].buckets");
    assert!(err.message.contains("2 buckets for 3 bounds"), "{err}");
}

#[test]
fn a_metric_point_off_the_minute_or_without_kind_is_refused() {
    let mut b = batch();
    b.metrics.push(MetricPoint {
        minute_ns: MINUTE + 1,
        ..histogram(1, 1.0, vec![], MINUTE + 1)
    });
    assert_eq!(
        check_batch(&mut b, NOW).unwrap_err().field,
        "metrics[0].minute_ns"
    );
    let mut b = batch();
    b.metrics.push(MetricPoint {
        kind: 0,
        ..histogram(1, 1.0, vec![], MINUTE + 1)
    });
    assert_eq!(
        check_batch(&mut b, NOW).unwrap_err().field,
        "metrics[0].kind"
    );
}

#[test]
fn series_attributes_beyond_the_cap_are_dropped_and_counted() {
    let mut b = batch();
    let mut p = histogram(1, 1.0, vec![], MINUTE + 1);
    for i in 0..MAX_METRIC_ATTRIBUTES + 4 {
        p.attributes.insert(format!("k{i:02}"), "v".into());
    }
    b.metrics.push(p);
    let cut = check_batch(&mut b, NOW).unwrap();
    assert_eq!(b.metrics[0].attributes.len(), MAX_METRIC_ATTRIBUTES);
    assert_eq!(cut.attributes, 4);
}

#[test]
fn a_log_body_is_cut_and_a_bad_severity_refused() {
    let record = LogRecord {
        time_ns: NOW - 1,
        service: "board".into(),
        severity_number: 17,
        body: "x".repeat(MAX_LOG_BODY_BYTES + 100),
        trace_id: vec![7; 16],
        ..Default::default()
    };
    let mut b = batch();
    b.logs.push(record.clone());
    let cut = check_batch(&mut b, NOW).unwrap();
    assert!(
        b.logs[0].body.len() <= MAX_LOG_BODY_BYTES,
        "{}",
        b.logs[0].body.len()
    );
    assert_eq!(cut.values, 1);
    let mut b = batch();
    b.logs.push(LogRecord {
        severity_number: 25,
        ..record.clone()
    });
    assert_eq!(
        check_batch(&mut b, NOW).unwrap_err().field,
        "logs[0].severity_number"
    );
    let mut b = batch();
    b.logs.push(LogRecord {
        trace_id: vec![1; 5],
        ..record
    });
    assert_eq!(
        check_batch(&mut b, NOW).unwrap_err().field,
        "logs[0].trace_id"
    );
}

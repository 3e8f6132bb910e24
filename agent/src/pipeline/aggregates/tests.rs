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
        .find(|r| r.operation == "SELECT t" && r.status_class == "ok" && r.minute == 1_699_999_980)
        .unwrap();
    assert_eq!((ok.count, ok.sum_ns), (2, 20_000_000));
    let err = rows.iter().find(|r| r.status_class == "error").unwrap();
    assert_eq!((err.count, err.errors), (1, 1));
    assert!(a.is_empty());
}

#[test]
fn keys_past_the_cap_of_a_minute_count_in_their_services_overflow_row() {
    let mut a = Aggregator::default();
    let end = 1_700_000_010;
    let extra = 300u64;
    for i in 0..MAX_KEYS_PER_MINUTE as u64 + extra {
        a.add(&span(&format!("GET /item/{i}"), end, 2, i % 100 == 0).into());
        if i % 1_000 == 0 && i < MAX_KEYS_PER_MINUTE as u64 {
            // Flushes in between: the cap is per minute, not per batch.
            let rows = a.take();
            assert!(rows.iter().all(|r| r.operation != OVERFLOW_LABEL));
        }
    }
    // A key the minute already has keeps its own row after the cap.
    a.add(&span("GET /item/1", end, 2, false).into());
    // The next minute starts with room again.
    a.add(&span("GET /item/new", end + 60, 2, false).into());
    let rows = a.take();
    let overflow = rows
        .iter()
        .find(|r| {
            r.operation == OVERFLOW_LABEL && r.peer == OVERFLOW_LABEL && r.status_class == "ok"
        })
        .expect("an overflow row");
    assert_eq!(overflow.service, "svc");
    assert_eq!(
        overflow.count,
        extra - 3,
        "three of the extra keys were errors"
    );
    let in_overflow = rows
        .iter()
        .filter(|r| r.operation == OVERFLOW_LABEL)
        .map(|r| r.count)
        .sum::<u64>();
    assert_eq!(
        in_overflow, extra,
        "every span past the cap is counted once"
    );
    assert_eq!(a.take_overflowed(), extra);
    assert!(rows
        .iter()
        .any(|r| r.operation == "GET /item/1" && r.count == 1));
    assert!(rows
        .iter()
        .any(|r| r.operation == "GET /item/new" && r.minute == 1_700_000_040));
    // Forgotten minutes take no new keys.
    a.add(&span("GET /late", end - 3_600 * 2, 2, false).into());
    assert_eq!(a.take()[0].operation, OVERFLOW_LABEL);
}

use super::*;
use stormwatch_model::{DependencyClass, Span};

const END_S: i64 = 1_700_000_010;

fn span(
    trace: u8,
    service: &str,
    class: DependencyClass,
    op: &str,
    peer: &str,
    ms: i64,
) -> Received {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![2; 8],
        service: service.into(),
        operation: op.into(),
        peer: peer.into(),
        class: class as i32,
        start_ns: END_S * 1_000_000_000 - ms * 1_000_000,
        duration_ns: ms * 1_000_000,
        ..Default::default()
    }
    .into()
}

fn call(trace: u8, peer: &str, ms: i64) -> Received {
    span(trace, "board", DependencyClass::Redis, "GET", peer, ms)
}

fn entry(trace: u8, op: &str) -> Received {
    span(trace, "board", DependencyClass::HttpServer, op, "", 100)
}

fn row<'a>(rows: &'a [EntryCall], entry: &str, peer: &str) -> &'a EntryCall {
    rows.iter()
        .find(|r| r.entry == entry && r.peer == peer)
        .unwrap_or_else(|| panic!("no row {entry} → {peer} in {rows:?}"))
}

#[test]
fn calls_count_under_the_entry_of_their_trace_in_either_order() {
    let mut e = Entries::default();
    let now = Instant::now();
    // Trace 1: calls before the entry (the usual order); trace 2: a call after it.
    e.add(&call(1, "cache", 5), now);
    e.add(&call(1, "cache", 7), now);
    assert!(e.is_empty(), "calls wait for their entry");
    e.add(&entry(1, "GET /timetable"), now);
    e.add(&entry(2, "POST /classes"), now);
    e.add(&call(2, "cache", 3), now);
    // Another service's entry in trace 1 does not take board's calls.
    e.add(
        &span(3, "partner", DependencyClass::HttpServer, "GET /x", "", 1),
        now,
    );
    let rows = e.take();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let t = row(&rows, "GET /timetable", "cache");
    assert_eq!(
        (t.count, t.sum_ns, t.minute),
        (2, 12_000_000, 1_699_999_980)
    );
    assert_eq!(t.class, DependencyClass::Redis as i32);
    let c = row(&rows, "POST /classes", "cache");
    assert_eq!((c.count, c.sum_ns), (1, 3_000_000));
    assert!(e.is_empty());
    assert_eq!(e.take_unattributed(), 0);
}

#[test]
fn a_call_whose_entry_never_comes_is_let_go_after_the_wait() {
    let mut e = Entries::default();
    let t0 = Instant::now();
    e.add(&call(1, "cache", 5), t0);
    e.add(&call(1, "cache", 5), t0);
    // The entry of trace 1 arrives too late: its calls were let go, unattributed.
    let later = t0 + WAIT + Duration::from_secs(1);
    e.add(&entry(1, "GET /timetable"), later);
    assert!(e.is_empty(), "{:?}", e.take());
    assert_eq!(e.take_unattributed(), 2);
    assert_eq!(e.waiting_calls, 0);
    // The entry itself is remembered for late calls, then forgotten.
    e.add(&call(1, "cache", 4), later);
    assert_eq!(e.take().len(), 1);
    e.add(&call(1, "cache", 4), later + WAIT + Duration::from_secs(1));
    assert!(e.is_empty());
    assert!(e.entries.is_empty());
}

#[test]
fn waiting_calls_are_bounded() {
    let mut e = Entries::default();
    let now = Instant::now();
    for i in 0..(MAX_WAITING_CALLS + 10) {
        // Each call in its own trace (unique ids, as real traffic has).
        let mut s = call(0, "cache", 1);
        s.trace_id = (i as u128).to_be_bytes();
        e.add(&s, now);
    }
    assert_eq!(e.waiting_calls, MAX_WAITING_CALLS);
    assert_eq!(e.take_unattributed(), 10);
    // Server spans and calls are the only spans it looks at.
    e.add(
        &span(9, "board", DependencyClass::Internal, "work", "", 1),
        now,
    );
    assert_eq!(e.waiting_calls, MAX_WAITING_CALLS);
}

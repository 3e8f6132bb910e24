use stormwatch_model::SpanKind;

use super::*;
use crate::classify::tests::{run, NOW};

#[test]
fn packed_spans_lend_their_buffers_to_the_next_spans_within_bounds() {
    let spare = || SPARE.with(|s| s.borrow().len());
    let span = run(
        SpanKind::Client,
        "GET",
        &[("db.system", "redis"), ("db.statement", "GET user:1")],
    );
    SPARE.with(|s| s.borrow_mut().clear());
    let r = Received::from(span.clone());
    let capacity = r.text.capacity();
    let mut out = Vec::new();
    r.pack(&mut out);
    assert_eq!(spare(), 1, "pack hands its buffers back");
    let (text, attrs) = spare_buffers(8);
    assert!(text.is_empty() && attrs.is_empty(), "handed out empty");
    assert_eq!(text.capacity(), capacity, "the same allocation");
    assert_eq!(spare(), 0);
    // What comes back out of the pack is the same span, built in lent buffers.
    assert_eq!(Received::unpack(&out).into_span(), span);
    assert_eq!(spare(), 1, "into_span hands its buffers back too");
    // Bounded: no more than SPARE_BUFFERS, and no large buffers.
    for _ in 0..SPARE_BUFFERS + 10 {
        recycle(String::with_capacity(64), Vec::new());
    }
    assert_eq!(spare(), SPARE_BUFFERS);
    SPARE.with(|s| s.borrow_mut().clear());
    recycle(String::with_capacity(SPARE_MAX_TEXT + 1), Vec::new());
    assert_eq!(spare(), 0, "a large text buffer is freed, not kept");
}

#[test]
fn a_packed_span_unpacks_equal_field_for_field() {
    let mut attributes = BTreeMap::new();
    attributes.insert("db.name".to_owned(), "shop-ü".to_owned());
    attributes.insert("thread.id".to_owned(), "17".to_owned());
    let mut r = Received::from(Span {
        trace_id: (1..=16).collect(),
        span_id: (21..=28).collect(),
        parent_span_id: (31..=38).collect(),
        service: "shop".into(),
        instance: "web-1".into(),
        operation: "SELECT orders".into(),
        kind: 3,
        class: 2,
        start_ns: NOW as i64,
        duration_ns: -5,
        status: 2,
        status_message: "timeout".into(),
        http_status: 503,
        peer: "db1:5432".into(),
        db_system: "postgresql".into(),
        db_role: 2,
        statement: "SELECT * FROM orders WHERE id = ?".into(),
        rows: Some(-1),
        attributes,
        kept: 4,
        flags: Span::flags_from_bits(0b101),
        replica_lag_ms: Some(i64::MAX),
    });
    r.statement_missing_where = Some(true);
    for (missing_where, parent) in [(Some(true), true), (Some(false), false), (None, false)] {
        r.statement_missing_where = missing_where;
        if !parent {
            r.parent_span_id = None;
            r.rows = None;
        }
        let mut buf = vec![7u8; 3]; // packed after other bytes, as in the arena
        r.clone().pack(&mut buf);
        assert_eq!(buf.len() - 3, r.packed_len());
        assert_eq!(Received::unpack(&buf[3..]), r);
    }
}

use super::*;
use stormwatch_model::{DependencyClass, Span, SpanStatus};

#[test]
fn same_keys_and_counts_as_the_model() {
    let mut spans = Vec::new();
    for (i, (status, http)) in [
        (SpanStatus::Ok, 0),
        (SpanStatus::Error, 0),
        (SpanStatus::Ok, 503),
        (SpanStatus::Error, 200),
        (SpanStatus::Error, 0),
    ]
    .into_iter()
    .enumerate()
    {
        spans.push(Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            service: "svc".into(),
            operation: format!("op{}", i % 2),
            peer: "db:5432".into(),
            class: DependencyClass::Db as i32,
            start_ns: 1_700_000_000_000_000_000 + i as i64 * 50_000_000_000,
            duration_ns: 1_000_000 * (i as i64 + 1),
            status: status as i32,
            http_status: http,
            // The last one could not connect: its own status class.
            flags: if i == 4 {
                vec![stormwatch_model::SpanFlag::ConnectFailure as i32]
            } else {
                vec![]
            },
            ..Default::default()
        });
    }
    let mut ours = Aggregator::default();
    let mut model: std::collections::BTreeMap<AggregateKey, Aggregate> = Default::default();
    for s in &spans {
        ours.add(&s.clone().into());
        let key = AggregateKey::of_span(s);
        model
            .entry(key.clone())
            .or_insert_with(|| Aggregate::new(&key))
            .add(s);
    }
    let rows = ours.take();
    assert!(rows.iter().any(|r| r.status_class == "connect_failure"));
    assert_eq!(rows, model.into_values().collect::<Vec<_>>());
}

//! Reading spans: filtered lists (slow spans, scatter) and whole traces.

use stormwatch_model::enums::WireEnum;
use stormwatch_model::{DbRole, DependencyClass, KeepReason, Span, SpanKind, SpanStatus};
use tokio_postgres::Row;

use crate::{Store, StoreError};

/// Which spans to list. Times are ns since the Unix epoch; `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, Default)]
pub struct SpanFilter {
    pub service: Option<String>,
    pub class: Option<DependencyClass>,
    pub peer: Option<String>,
    pub min_duration_ns: i64,
    pub from_ns: i64,
    pub to_ns: i64,
    pub limit: i64,
}

const SELECT: &str =
    "SELECT start_ns, duration_ns, trace_id, span_id, parent_span_id, service, instance,
    operation, kind, class, is_error, status_message, http_status, peer, db_system, db_role,
    statement, rows, attributes, kept, flags, replica_lag_ms FROM sw_spans";

fn from_name<E: WireEnum>(s: &str, fallback: E) -> i32 {
    E::from_name(s).unwrap_or(fallback).number()
}

fn span_of(r: &Row) -> Span {
    let attributes: Option<serde_json::Value> = r.get(18);
    Span {
        start_ns: r.get(0),
        duration_ns: r.get(1),
        trace_id: r.get(2),
        span_id: r.get(3),
        parent_span_id: r.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
        service: r.get(5),
        instance: r.get(6),
        operation: r.get(7),
        kind: from_name(r.get(8), SpanKind::Unspecified),
        class: from_name(r.get(9), DependencyClass::Internal),
        status: if r.get::<_, bool>(10) {
            SpanStatus::Error
        } else {
            SpanStatus::Ok
        } as i32,
        status_message: r.get::<_, Option<String>>(11).unwrap_or_default(),
        http_status: r.get::<_, Option<i16>>(12).map(|v| v as u32).unwrap_or(0),
        peer: r.get::<_, Option<String>>(13).unwrap_or_default(),
        db_system: r.get::<_, Option<String>>(14).unwrap_or_default(),
        db_role: from_name(r.get(15), DbRole::Unknown),
        statement: r.get::<_, Option<String>>(16).unwrap_or_default(),
        rows: r.get(17),
        attributes: attributes
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
        kept: from_name(r.get(19), KeepReason::Sampled),
        flags: Span::flags_from_bits(r.get(20)),
        replica_lag_ms: r.get(21),
    }
}

impl Store {
    /// Spans matching `f`, newest first.
    pub async fn spans(&self, f: &SpanFilter) -> Result<Vec<Span>, StoreError> {
        let client = self.client().await?;
        let class = f.class.map(|c| c.as_str());
        let stmt = client
            .prepare_cached(&format!(
                "{SELECT} WHERE start_ns >= $1 AND start_ns < $2
                   AND ($3::text IS NULL OR service = $3)
                   AND ($4::text IS NULL OR class = $4)
                   AND ($5::text IS NULL OR peer = $5)
                   AND duration_ns >= $6
                 ORDER BY start_ns DESC LIMIT $7"
            ))
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &f.from_ns,
                    &f.to_ns,
                    &f.service,
                    &class,
                    &f.peer,
                    &f.min_duration_ns,
                    &f.limit,
                ],
            )
            .await?;
        Ok(rows.iter().map(span_of).collect())
    }

    /// Every stored span of a trace, in start order.
    pub async fn trace(&self, trace_id: &[u8]) -> Result<Vec<Span>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{SELECT} WHERE trace_id = $1 ORDER BY start_ns"))
            .await?;
        let rows = client.query(&stmt, &[&trace_id]).await?;
        Ok(rows.iter().map(span_of).collect())
    }
}

//! Reading spans: filtered lists, the slow-spans table and whole traces (the scatter's points
//! are read by [`Store::scatter_points`]).

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

/// How the slow-spans table is ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlowOrder {
    /// Longest first.
    #[default]
    Duration,
    /// Newest first.
    Start,
    /// By service, then longest first.
    Service,
    /// By peer, then longest first.
    Peer,
}

/// One row of the slow-spans table.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowSpan {
    pub start_ns: i64,
    pub duration_ns: i64,
    pub trace_id: Vec<u8>,
    pub service: String,
    pub operation: String,
    pub class: String,
    pub peer: String,
    pub is_error: bool,
    pub http_status: Option<i16>,
    /// [`stormwatch_model::SpanFlag`] numbers.
    pub flags: Vec<i32>,
    pub replica_lag_ms: Option<i64>,
    pub status_message: String,
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

/// The name a class is stored under.
pub(crate) fn class_name(c: Option<DependencyClass>) -> Option<&'static str> {
    c.map(|c| c.as_str())
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

    /// Kept spans matching `f` that are slow, failed or flagged, in `order`, at most `f.limit`.
    pub async fn slow_spans(
        &self,
        f: &SpanFilter,
        order: SlowOrder,
    ) -> Result<Vec<SlowSpan>, StoreError> {
        let order_by = match order {
            SlowOrder::Duration => "duration_ns DESC, start_ns DESC",
            SlowOrder::Start => "start_ns DESC",
            SlowOrder::Service => "service, duration_ns DESC",
            SlowOrder::Peer => "peer NULLS LAST, duration_ns DESC",
        };
        let client = self.client().await?;
        // Planned with the actual window (see [`Store::scatter_points`]).
        let stmt = client
            .prepare(&format!(
                "SELECT start_ns, duration_ns, trace_id, service, operation, class, peer,
                        is_error, http_status, flags, replica_lag_ms, status_message
                   FROM sw_spans
                  WHERE start_ns >= $1 AND start_ns < $2
                    AND ($3::text IS NULL OR service = $3)
                    AND ($4::text IS NULL OR class = $4)
                    AND ($5::text IS NULL OR peer = $5)
                    AND duration_ns >= $6
                    AND (flags <> 0 OR is_error OR kept IN ('slow', 'error'))
                  ORDER BY {order_by} LIMIT $7"
            ))
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &f.from_ns,
                    &f.to_ns,
                    &f.service,
                    &class_name(f.class),
                    &f.peer,
                    &f.min_duration_ns,
                    &f.limit,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| SlowSpan {
                start_ns: r.get(0),
                duration_ns: r.get(1),
                trace_id: r.get(2),
                service: r.get(3),
                operation: r.get(4),
                class: r.get(5),
                peer: r.get::<_, Option<String>>(6).unwrap_or_default(),
                is_error: r.get(7),
                http_status: r.get(8),
                flags: Span::flags_from_bits(r.get(9)),
                replica_lag_ms: r.get(10),
                status_message: r.get::<_, Option<String>>(11).unwrap_or_default(),
            })
            .collect())
    }
}

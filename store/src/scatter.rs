//! The scatter view's points (and the slow-spans table's rows): only the columns the dashboard
//! draws, so that 50k points stay cheap to read.

use stormwatch_model::{DependencyClass, Span};

use crate::{SpanFilter, Store, StoreError};

/// The scatter looks for spans that started at most this long before the window (ns): spans
/// are stored by start time, and scanning a day back for the rare hour-long span would make
/// every scatter slow. Longer spans that started before the window are not drawn.
pub const SCATTER_LOOKBACK_NS: i64 = 600 * 1_000_000_000;

/// One kept span as a dot: x = end time, y = duration.
#[derive(Debug, Clone, PartialEq)]
pub struct ScatterPoint {
    pub end_ns: i64,
    pub duration_ns: i64,
    pub trace_id: Vec<u8>,
    pub is_error: bool,
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

fn class_name(c: Option<DependencyClass>) -> Option<&'static str> {
    c.map(|c| c.as_str())
}

impl Store {
    /// Points for the scatter: spans matching `f` that *end* in the window (newest first,
    /// at most `f.limit`), among those that started at most [`SCATTER_LOOKBACK_NS`] before it.
    pub async fn scatter_points(&self, f: &SpanFilter) -> Result<Vec<ScatterPoint>, StoreError> {
        let client = self.client().await?;
        // Not a cached statement: an unnamed one is planned with the actual window, so the
        // planner sees how narrow it is and uses the BRIN index instead of a generic plan's
        // sequential scan of whole partitions.
        let stmt = client
            .prepare(
                "SELECT start_ns + duration_ns AS end_ns, duration_ns, trace_id, is_error
                   FROM sw_spans
                  WHERE start_ns >= $1::int8 - $8::int8 AND start_ns < $2
                    AND start_ns + duration_ns >= $1 AND start_ns + duration_ns < $2
                    AND ($3::text IS NULL OR service = $3)
                    AND ($4::text IS NULL OR class = $4)
                    AND ($5::text IS NULL OR peer = $5)
                    AND duration_ns >= $6
                  ORDER BY end_ns DESC LIMIT $7",
            )
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
                    &SCATTER_LOOKBACK_NS,
                ],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| ScatterPoint {
                end_ns: r.get(0),
                duration_ns: r.get(1),
                trace_id: r.get(2),
                is_error: r.get(3),
            })
            .collect())
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
        // Planned with the actual window (see `scatter_points`).
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

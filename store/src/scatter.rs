//! The scatter view's points: only the columns the dashboard draws, so that 50k points stay
//! cheap to read.

use crate::spans::{class_name, class_no};
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

impl Store {
    /// Points for the scatter: spans matching `f` that *end* in the window (newest first,
    /// at most `f.limit`), among those that started at most [`SCATTER_LOOKBACK_NS`] before it.
    pub async fn scatter_points(&self, f: &SpanFilter) -> Result<Vec<ScatterPoint>, StoreError> {
        // Old rows match by their text columns, compact ones by their ids (migration 0022).
        let ids = self.filter_ids(f).await?;
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
                    AND ($3::text IS NULL OR service = $3 OR service_id = $9)
                    AND ($4::text IS NULL OR class = $4 OR class_no = $10)
                    AND ($5::text IS NULL OR peer = $5 OR peer_id = $11)
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
                    &ids.service,
                    &class_no(f.class),
                    &ids.peer,
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
}

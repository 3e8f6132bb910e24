//! Reading spans: filtered lists, the slow-spans table and whole traces (the scatter's points
//! are read by [`Store::scatter_points`]).

use std::collections::HashMap;

use stormwatch_model::enums::WireEnum;
use stormwatch_model::{DbRole, DependencyClass, KeepReason, Span, SpanKind, SpanStatus};
use tokio_postgres::Row;

use crate::attr_dicts::AttrDecoder;
use crate::labels::LabelKind;
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

/// Every column of both layouts: the text and jsonb columns of rows stored before migration
/// 0022, then the ids, wire numbers and compressed attributes of the compact rows.
const SELECT: &str =
    "SELECT start_ns, duration_ns, trace_id, span_id, parent_span_id, service, instance,
    operation, kind, class, is_error, status_message, http_status, peer, db_system, db_role,
    statement, rows, attributes, kept, flags, replica_lag_ms,
    service_id, instance_id, operation_id, peer_id, db_system_id, statement_id,
    kind_no, class_no, db_role_no, kept_no, attrs_dict, attrs FROM sw_spans";

/// Index of `service_id` in [`SELECT`]; the other label ids follow in
/// [`LabelKind`] order.
const FIRST_LABEL_ID: usize = 22;

fn from_name<E: WireEnum>(s: &str, fallback: E) -> i32 {
    E::from_name(s).unwrap_or(fallback).number()
}

/// An enum of either layout: the wire number (column `no`) of a compact row, else the name
/// (column `text`) of an old one.
fn enum_of<E: WireEnum>(r: &Row, no: usize, text: usize, fallback: E) -> i32 {
    match r.get::<_, Option<i16>>(no) {
        Some(n) => E::from_number(i32::from(n)).unwrap_or(fallback).number(),
        None => r
            .get::<_, Option<&str>>(text)
            .map_or(fallback.number(), |s| from_name(s, fallback)),
    }
}

/// A label of either layout: the value of id column `id` of a compact row, else text column
/// `text` of an old one (empty when neither is set).
pub(crate) fn label_of(
    r: &Row,
    id: usize,
    text: usize,
    labels: &HashMap<i32, String>,
) -> Result<String, StoreError> {
    match r.get::<_, Option<i32>>(id) {
        Some(id) => labels
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt(format!("label {id} is not in sw_labels"))),
        None => Ok(r.get::<_, Option<String>>(text).unwrap_or_default()),
    }
}

/// The label ids `rows` use in columns `columns`, for [`Store::label_values`].
pub(crate) fn label_ids<'a>(
    rows: &'a [Row],
    columns: &'a [usize],
) -> impl Iterator<Item = i32> + 'a {
    rows.iter().flat_map(move |r| {
        columns
            .iter()
            .filter_map(move |c| r.get::<_, Option<i32>>(*c))
    })
}

fn span_of(
    r: &Row,
    labels: &HashMap<i32, String>,
    attrs: &mut AttrDecoder,
) -> Result<Span, StoreError> {
    let label = |kind: LabelKind, text: usize| {
        label_of(r, FIRST_LABEL_ID + kind as usize - 1, text, labels)
    };
    let attributes = match r.get::<_, Option<&[u8]>>(33) {
        Some(packed) => attrs.decode(r.get::<_, Option<i16>>(32).unwrap_or(0), packed)?,
        None => r
            .get::<_, Option<serde_json::Value>>(18)
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default(),
    };
    Ok(Span {
        start_ns: r.get(0),
        duration_ns: r.get(1),
        trace_id: r.get(2),
        span_id: r.get(3),
        parent_span_id: r.get::<_, Option<Vec<u8>>>(4).unwrap_or_default(),
        service: label(LabelKind::Service, 5)?,
        instance: label(LabelKind::Instance, 6)?,
        operation: label(LabelKind::Operation, 7)?,
        kind: enum_of(r, 28, 8, SpanKind::Unspecified),
        class: enum_of(r, 29, 9, DependencyClass::Internal),
        status: if r.get::<_, bool>(10) {
            SpanStatus::Error
        } else {
            SpanStatus::Ok
        } as i32,
        status_message: r.get::<_, Option<String>>(11).unwrap_or_default(),
        http_status: r.get::<_, Option<i16>>(12).map(|v| v as u32).unwrap_or(0),
        peer: label(LabelKind::Peer, 13)?,
        db_system: label(LabelKind::DbSystem, 14)?,
        db_role: enum_of(r, 30, 15, DbRole::Unknown),
        statement: label(LabelKind::Statement, 16)?,
        rows: r.get(17),
        attributes,
        kept: enum_of(r, 31, 19, KeepReason::Sampled),
        flags: Span::flags_from_bits(r.get(20)),
        replica_lag_ms: r.get(21),
    })
}

/// The name a class is stored under in rows of the old layout.
pub(crate) fn class_name(c: Option<DependencyClass>) -> Option<&'static str> {
    c.map(|c| c.as_str())
}

/// The wire number a class is stored under in compact rows.
pub(crate) fn class_no(c: Option<DependencyClass>) -> Option<i16> {
    c.map(|c| c.number() as i16)
}

/// The label ids of a filter's service and peer, for the compact rows (`None` when the filter
/// has none, or when no span was stored with it: then no compact row matches).
pub(crate) struct FilterIds {
    pub(crate) service: Option<i32>,
    pub(crate) peer: Option<i32>,
}

impl Store {
    pub(crate) async fn filter_ids(&self, f: &SpanFilter) -> Result<FilterIds, StoreError> {
        Ok(FilterIds {
            service: self
                .filter_label_id(LabelKind::Service, f.service.as_deref())
                .await?,
            peer: self
                .filter_label_id(LabelKind::Peer, f.peer.as_deref())
                .await?,
        })
    }

    /// Spans of `rows` (selected with [`SELECT`]), their labels and attributes decoded.
    async fn spans_of(&self, rows: &[Row]) -> Result<Vec<Span>, StoreError> {
        let columns: Vec<usize> = (FIRST_LABEL_ID..FIRST_LABEL_ID + 6).collect();
        let labels = self.label_values(label_ids(rows, &columns)).await?;
        let mut attrs = self
            .attr_decoder(rows.iter().filter_map(|r| r.get::<_, Option<i16>>(32)))
            .await?;
        rows.iter()
            .map(|r| span_of(r, &labels, &mut attrs))
            .collect()
    }
}

impl Store {
    /// Spans matching `f`, newest first.
    pub async fn spans(&self, f: &SpanFilter) -> Result<Vec<Span>, StoreError> {
        let ids = self.filter_ids(f).await?;
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "{SELECT} WHERE start_ns >= $1 AND start_ns < $2
                   AND ($3::text IS NULL OR service = $3 OR service_id = $8)
                   AND ($4::text IS NULL OR class = $4 OR class_no = $9)
                   AND ($5::text IS NULL OR peer = $5 OR peer_id = $10)
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
                    &class_name(f.class),
                    &f.peer,
                    &f.min_duration_ns,
                    &f.limit,
                    &ids.service,
                    &class_no(f.class),
                    &ids.peer,
                ],
            )
            .await?;
        drop(client);
        self.spans_of(&rows).await
    }

    /// Every stored span of a trace, in start order.
    pub async fn trace(&self, trace_id: &[u8]) -> Result<Vec<Span>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("{SELECT} WHERE trace_id = $1 ORDER BY start_ns"))
            .await?;
        let rows = client.query(&stmt, &[&trace_id]).await?;
        drop(client);
        self.spans_of(&rows).await
    }

    /// Kept spans matching `f` that are slow, failed or flagged, in `order`, at most `f.limit`.
    pub async fn slow_spans(
        &self,
        f: &SpanFilter,
        order: SlowOrder,
    ) -> Result<Vec<SlowSpan>, StoreError> {
        // Compact rows order by their label's value, read by id.
        let order_by = match order {
            SlowOrder::Duration => "duration_ns DESC, start_ns DESC",
            SlowOrder::Start => "start_ns DESC",
            SlowOrder::Service => {
                "coalesce(service, (SELECT value FROM sw_labels WHERE id = service_id)),
                 duration_ns DESC"
            }
            SlowOrder::Peer => {
                "coalesce(peer, (SELECT value FROM sw_labels WHERE id = peer_id)) NULLS LAST,
                 duration_ns DESC"
            }
        };
        let ids = self.filter_ids(f).await?;
        let client = self.client().await?;
        // Planned with the actual window (see [`Store::scatter_points`]).
        let stmt = client
            .prepare(&format!(
                "SELECT start_ns, duration_ns, trace_id, service, operation, class, peer,
                        is_error, http_status, flags, replica_lag_ms, status_message,
                        service_id, operation_id, class_no, peer_id
                   FROM sw_spans
                  WHERE start_ns >= $1 AND start_ns < $2
                    AND ($3::text IS NULL OR service = $3 OR service_id = $8)
                    AND ($4::text IS NULL OR class = $4 OR class_no = $9)
                    AND ($5::text IS NULL OR peer = $5 OR peer_id = $10)
                    AND duration_ns >= $6
                    AND (flags <> 0 OR is_error OR kept IN ('slow', 'error')
                         OR kept_no IN ({slow}, {error}))
                  ORDER BY {order_by} LIMIT $7",
                slow = KeepReason::Slow.number(),
                error = KeepReason::Error.number(),
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
                    &ids.service,
                    &class_no(f.class),
                    &ids.peer,
                ],
            )
            .await?;
        drop(client);
        let labels = self.label_values(label_ids(&rows, &[12, 13, 15])).await?;
        rows.iter()
            .map(|r| {
                Ok(SlowSpan {
                    start_ns: r.get(0),
                    duration_ns: r.get(1),
                    trace_id: r.get(2),
                    service: label_of(r, 12, 3, &labels)?,
                    operation: label_of(r, 13, 4, &labels)?,
                    class: match r.get::<_, Option<i16>>(14) {
                        Some(n) => DependencyClass::from_number(i32::from(n))
                            .unwrap_or(DependencyClass::Internal)
                            .as_str()
                            .to_owned(),
                        None => r.get::<_, Option<String>>(5).unwrap_or_default(),
                    },
                    peer: label_of(r, 15, 6, &labels)?,
                    is_error: r.get(7),
                    http_status: r.get(8),
                    flags: Span::flags_from_bits(r.get(9)),
                    replica_lag_ms: r.get(10),
                    status_message: r.get::<_, Option<String>>(11).unwrap_or_default(),
                })
            })
            .collect()
    }
}

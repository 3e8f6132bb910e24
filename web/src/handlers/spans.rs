//! Slow spans: kept spans that are slow, failed or flagged, in a sortable table with every
//! flag spelled out, each linking to its trace.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{hexid, SpanFlag};
use stormwatch_store::{SlowOrder, SpanFilter};

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::error::WebError;
use crate::range::{duration, utc_human, utc_rfc3339};
use crate::WebState;

/// Rows shown.
pub const MAX_ROWS: i64 = 500;

pub struct FlagView {
    pub class: &'static str,
    pub text: String,
}

pub struct SlowRow {
    pub start_iso: String,
    pub start_utc: String,
    pub duration: String,
    pub service: String,
    pub operation: String,
    pub class: String,
    pub peer: String,
    pub status: String,
    pub is_error: bool,
    pub flags: Vec<FlagView>,
    pub trace: String,
}

pub struct SortLink {
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "spans/slow.html")]
pub struct SlowSpansPage {
    pub chrome: Chrome,
    pub rows: Vec<SlowRow>,
    pub sorts: Vec<SortLink>,
    pub max_rows: i64,
}

/// A replica lag for people: `850 ms`, `12.0 s`.
pub fn lag(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// A flag as people read it: "replica 12.0 s behind", "full scan suspect".
pub fn flag_views(flags: &[i32], replica_lag_ms: Option<i64>) -> Vec<FlagView> {
    flags
        .iter()
        .filter_map(|n| SpanFlag::from_number(*n))
        .map(|f| FlagView {
            class: f.as_str(),
            text: match f {
                SpanFlag::Slow => "slow".into(),
                SpanFlag::Error => "error".into(),
                SpanFlag::FullScanSuspect => "full-scan suspect".into(),
                SpanFlag::ReplicaLag => match replica_lag_ms {
                    Some(ms) => format!("replica {} behind", lag(ms)),
                    None => "replica behind".into(),
                },
                SpanFlag::ConnectFailure => "connection failure".into(),
            },
        })
        .collect()
}

pub async fn slow_spans(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<SlowSpansPage, WebError> {
    let w = q.window("1h")?;
    let order = match q.sort.as_deref() {
        None | Some("") | Some("duration") => SlowOrder::Duration,
        Some("start") => SlowOrder::Start,
        Some("service") => SlowOrder::Service,
        Some("peer") => SlowOrder::Peer,
        Some(other) => {
            return Err(WebError::bad(
                "sort",
                format!("`{other}`: use duration, start, service or peer"),
            ))
        }
    };
    let filter = SpanFilter {
        service: PageQuery::text(&q.service),
        class: q.class()?,
        peer: PageQuery::text(&q.peer),
        min_duration_ns: (PageQuery::millis("min_ms", &q.min_ms)?.unwrap_or(0.0) * 1e6) as i64,
        from_ns: w.from_ms * 1_000_000,
        to_ns: w.to_ms * 1_000_000,
        limit: MAX_ROWS,
    };
    let spans = app.store.slow_spans(&filter, order).await?;
    let rows = spans
        .into_iter()
        .map(|s| SlowRow {
            start_iso: utc_rfc3339(s.start_ns / 1_000_000),
            start_utc: utc_human(s.start_ns / 1_000_000),
            duration: duration(s.duration_ns as f64 / 1e6),
            status: match (s.http_status, s.is_error) {
                (Some(code), _) => code.to_string(),
                (None, true) if !s.status_message.is_empty() => {
                    format!("error: {}", s.status_message)
                }
                (None, true) => "error".into(),
                (None, false) => "ok".into(),
            },
            is_error: s.is_error,
            flags: flag_views(&s.flags, s.replica_lag_ms),
            trace: hexid::encode(&s.trace_id),
            service: s.service,
            operation: s.operation,
            class: s.class,
            peer: s.peer,
        })
        .collect();
    let without_sort = PageQuery {
        sort: None,
        service: q.service.clone(),
        class: q.class.clone(),
        peer: q.peer.clone(),
        min_ms: q.min_ms.clone(),
        ..Default::default()
    }
    .filters();
    let sorts = [
        ("duration", "Duration", SlowOrder::Duration),
        ("start", "Start", SlowOrder::Start),
        ("service", "Service", SlowOrder::Service),
        ("peer", "Peer", SlowOrder::Peer),
    ]
    .into_iter()
    .map(|(key, label, o)| SortLink {
        label,
        href: format!("/spans?{}&sort={key}{without_sort}", w.query()),
        active: o == order,
    })
    .collect();
    Ok(SlowSpansPage {
        chrome: Chrome::new("Slow spans", "/spans", &w, &q, &viewer),
        rows,
        sorts,
        max_rows: MAX_ROWS,
    })
}

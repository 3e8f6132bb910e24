//! A trace as a waterfall: every stored span with its offset and duration, attributes,
//! normalized SQL and the replica lag at that moment. Bars are SVG (no inline styles).

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::Extension;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::{hexid, DbRole, Span};

use super::spans::{flag_views, FlagView};
use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::error::WebError;
use crate::range::{duration, utc_human};
use crate::WebState;

pub struct WaterfallRow {
    pub indent: usize,
    pub service: String,
    pub operation: String,
    pub class: &'static str,
    pub peer: String,
    pub offset: String,
    pub duration: String,
    /// Bar geometry in a 1000-wide viewBox.
    pub bar_x: f64,
    pub bar_w: f64,
    pub is_error: bool,
    pub status: String,
    pub flags: Vec<FlagView>,
    pub statement: String,
    pub db: String,
    pub replica_lag: String,
    pub attributes: Vec<(String, String)>,
    pub span_id: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "traces/trace.html")]
pub struct TracePage {
    pub chrome: Chrome,
    pub trace_id: String,
    pub started: String,
    pub total: String,
    pub rows: Vec<WaterfallRow>,
    pub scatter_href: String,
}

/// Spans in tree order (parents before children, siblings by start), with their depth.
fn tree_order(spans: &[Span]) -> Vec<(usize, &Span)> {
    let ids: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_slice(), i))
        .collect();
    let mut children: HashMap<Option<usize>, Vec<usize>> = HashMap::new();
    for (i, s) in spans.iter().enumerate() {
        let parent = ids
            .get(s.parent_span_id.as_slice())
            .copied()
            .filter(|p| *p != i);
        children.entry(parent).or_default().push(i);
    }
    let mut out = Vec::with_capacity(spans.len());
    let mut stack: Vec<(usize, usize)> = children
        .get(&None)
        .map(|v| v.iter().rev().map(|i| (*i, 0)).collect())
        .unwrap_or_default();
    let mut seen = vec![false; spans.len()];
    while let Some((i, depth)) = stack.pop() {
        if std::mem::replace(&mut seen[i], true) {
            continue;
        }
        out.push((depth, &spans[i]));
        if let Some(kids) = children.get(&Some(i)) {
            stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
        }
    }
    // Spans caught in a parent cycle: shown flat at the end rather than lost.
    for (i, s) in spans.iter().enumerate() {
        if !seen[i] {
            out.push((0, s));
        }
    }
    out
}

pub async fn trace(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(trace_id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<TracePage, WebError> {
    let id = hexid::decode(&trace_id)
        .filter(|b| b.len() == 16)
        .ok_or_else(|| WebError::bad("trace_id", format!("`{trace_id}` is not 32 hex digits")))?;
    let spans = app.store.trace(&id).await?;
    if spans.is_empty() {
        return Err(WebError::NotFound(format!(
            "no stored span of trace {trace_id} (spans that were sampled away or are older than the retention are not kept)"
        )));
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns()).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let rows = tree_order(&spans)
        .into_iter()
        .map(|(depth, s)| {
            let x = (s.start_ns - start) as f64 / total * 1000.0;
            WaterfallRow {
                indent: depth.min(20),
                service: s.service.clone(),
                operation: s.operation.clone(),
                class: s.dependency_class().as_str(),
                peer: s.peer.clone(),
                offset: format!("+{}", duration((s.start_ns - start) as f64 / 1e6)),
                duration: duration(s.duration_ns as f64 / 1e6),
                bar_x: (x * 10.0).round() / 10.0,
                bar_w: ((s.duration_ns as f64 / total * 1000.0).max(2.0) * 10.0).round() / 10.0,
                is_error: s.is_error(),
                status: match (s.http_status, s.is_error()) {
                    (0, true) => format!("error {}", s.status_message),
                    (0, false) => "ok".into(),
                    (code, _) => format!("HTTP {code} {}", s.status_message),
                },
                flags: flag_views(&s.flags, s.replica_lag_ms),
                statement: s.statement.clone(),
                db: if s.db_system.is_empty() {
                    String::new()
                } else {
                    format!(
                        "{} ({})",
                        s.db_system,
                        DbRole::from_number(s.db_role)
                            .map(|r| r.as_str())
                            .unwrap_or("unknown")
                    )
                },
                replica_lag: s.replica_lag_ms.map(super::spans::lag).unwrap_or_default(),
                attributes: s
                    .attributes
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                span_id: hexid::encode(&s.span_id),
            }
        })
        .collect();
    let w = q.window("1h")?;
    let around = format!(
        "/scatter?from={}&to={}",
        start / 1_000_000 - 300_000,
        end / 1_000_000 + 300_000
    );
    let mut chrome = Chrome::new("Trace", "/traces", &w, &q, &viewer);
    chrome.title = format!("Trace {trace_id}");
    Ok(TracePage {
        chrome,
        trace_id,
        started: utc_human(start / 1_000_000),
        total: duration(total / 1e6),
        rows,
        scatter_href: around,
    })
}

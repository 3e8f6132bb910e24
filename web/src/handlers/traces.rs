//! A trace as a waterfall: every stored span with its offset and duration, attributes,
//! normalized SQL and the replica lag at that moment. Bars are SVG (no inline styles).
//!
//! The trace's OTLP log records are shown with the span they were written in: listed under
//! its row and ticked on its bar at their moment (coloured by severity, each with a hover
//! title). Records whose span is not stored, or that name none, are listed below the
//! waterfall.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::Extension;
use stormwatch_model::enums::WireEnum;
use stormwatch_model::log::{severity_name, SEVERITY_WARN};
use stormwatch_model::{hexid, DbRole, LogRecord, Span};
use stormwatch_store::LogFilter;

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
    /// The span's log records, oldest first, and their marks on its bar.
    pub logs: Vec<LogView>,
    pub ticks: Vec<Tick>,
}

/// Most log records a trace's page reads.
pub const MAX_TRACE_LOGS: i64 = 1_000;
/// OTLP's severity number of ERROR.
const SEVERITY_ERROR: i32 = 17;

/// A log record as the page lists it.
pub struct LogView {
    /// From the trace's start: `+12.3 ms` (`-1.0 ms` for a record written before it).
    pub offset: String,
    /// `ERROR`, `WARN`... (the app's own text when it gave no number).
    pub severity: String,
    /// `log-error`, `log-warn` or `log-info`: its colour (a class of its own: `.error` is
    /// taken).
    pub level: &'static str,
    pub service: String,
    pub instance: String,
    /// Hex, empty when the record names no span.
    pub span_id: String,
    pub body: String,
    pub attributes: Vec<(String, String)>,
}

/// A log record's mark on its span's bar.
pub struct Tick {
    /// In the bar's 1000-wide viewBox.
    pub x: f64,
    pub color: &'static str,
    pub title: String,
}

/// `(level, colour)` of a severity number: vermillion from ERROR up, amber for WARN, gray
/// below (and unspecified).
fn level(severity: i32) -> (&'static str, &'static str) {
    if severity >= SEVERITY_ERROR {
        ("log-error", "#D55E00")
    } else if severity >= SEVERITY_WARN {
        ("log-warn", "#E69F00")
    } else {
        ("log-info", "#777777")
    }
}

/// `+12.3 ms` from the trace's start (records may come before it: `-1.0 ms`).
fn signed_offset(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "+" };
    format!("{sign}{}", duration(ns.unsigned_abs() as f64 / 1e6))
}

fn log_view(l: &LogRecord, start_ns: i64) -> LogView {
    let named = severity_name(l.severity_number);
    LogView {
        offset: signed_offset(l.time_ns - start_ns),
        severity: if l.severity_number == 0 && !l.severity_text.is_empty() {
            l.severity_text.clone()
        } else {
            named.to_owned()
        },
        level: level(l.severity_number).0,
        service: l.service.clone(),
        instance: l.instance.clone(),
        span_id: hexid::encode(&l.span_id),
        body: l.body.clone(),
        attributes: l
            .attributes
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
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
    /// Log records of the trace read, and whether there may be more.
    pub log_count: usize,
    pub logs_cut: bool,
    /// Records whose span is not stored, or that name none.
    pub unmatched: Vec<LogView>,
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
    // A trace's records are searched over every day kept, as its spans are.
    let of_trace = LogFilter::Trace(id.clone());
    let (spans, logs) = tokio::try_join!(
        app.store.trace(&id),
        app.store.logs(&of_trace, 0, i64::MAX, MAX_TRACE_LOGS)
    )?;
    if spans.is_empty() {
        return Err(WebError::NotFound(format!(
            "no stored span of trace {trace_id} (spans that were sampled away or are older than the retention are not kept)"
        )));
    }
    let start = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    let end = spans.iter().map(|s| s.end_ns()).max().unwrap_or(start);
    let total = (end - start).max(1) as f64;
    let mut by_span: HashMap<&[u8], Vec<&LogRecord>> = HashMap::new();
    let mut unmatched = Vec::new();
    let stored: std::collections::HashSet<&[u8]> =
        spans.iter().map(|s| s.span_id.as_slice()).collect();
    for l in &logs {
        if stored.contains(l.span_id.as_slice()) {
            by_span.entry(l.span_id.as_slice()).or_default().push(l);
        } else {
            unmatched.push(log_view(l, start));
        }
    }
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
                logs: by_span
                    .get(s.span_id.as_slice())
                    .map(|ls| ls.iter().map(|l| log_view(l, start)).collect())
                    .unwrap_or_default(),
                ticks: by_span
                    .get(s.span_id.as_slice())
                    .map(|ls| {
                        ls.iter()
                            .map(|l| {
                                let x = (l.time_ns - start) as f64 / total * 1000.0;
                                Tick {
                                    x: (x.clamp(0.0, 1000.0) * 10.0).round() / 10.0,
                                    color: level(l.severity_number).1,
                                    title: format!(
                                        "{} at {}: {}",
                                        severity_name(l.severity_number),
                                        signed_offset(l.time_ns - start),
                                        crate::charts::clip(&l.body, 300)
                                    ),
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }
        })
        .collect();
    let w = q.window("1h")?;
    let around = format!(
        "/scatter?from={}&to={}",
        start / 1_000_000 - 300_000,
        end / 1_000_000 + 300_000
    );
    let mut chrome = Chrome::new("Trace", format!("/traces/{trace_id}"), &w, &q, &viewer);
    chrome.title = format!("Trace {trace_id}");
    Ok(TracePage {
        chrome,
        trace_id,
        started: utc_human(start / 1_000_000),
        total: duration(total / 1e6),
        rows,
        scatter_href: around,
        log_count: logs.len(),
        logs_cut: logs.len() as i64 >= MAX_TRACE_LOGS,
        unmatched,
    })
}

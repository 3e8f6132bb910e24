//! Incidents: related alerts grouped by the collector's alerting, with their probable causes
//! ranked. The list (open first) and one incident (its alerts, its causes with the numbers
//! behind them). Grouping and causes belong to the collector (`collector/src/incidents/`);
//! this page only reads `store::incidents`.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::Extension;
use serde::Deserialize;
use stormwatch_store::incidents::Incident;

use super::alerts::explain_link;
use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::error::WebError;
use crate::range::{now_ms, utc_human, utc_rfc3339};
use crate::WebState;

/// An incident as listed (also on the overview).
pub struct IncidentRow {
    pub id: i64,
    pub href: String,
    pub title: String,
    pub cause: String,
    pub open: bool,
    pub start_iso: String,
    pub start_utc: String,
    pub duration: String,
    pub alerts: usize,
    pub active_alerts: usize,
}

/// One alert of an incident.
pub struct MemberRow {
    pub rule: String,
    pub labels: String,
    pub severity: String,
    pub summary: String,
    pub started_iso: String,
    pub started_utc: String,
    pub state: String,
    pub explain: String,
}

/// One ranked cause, as the collector stored it.
#[derive(Deserialize)]
struct StoredCause {
    rank: usize,
    kind: String,
    subject: String,
    line: String,
    #[serde(default)]
    evidence: Vec<StoredEvidence>,
}

#[derive(Deserialize)]
struct StoredEvidence {
    name: String,
    value: f64,
    unit: String,
}

pub struct CauseRow {
    pub rank: usize,
    pub kind: String,
    pub subject: String,
    pub line: String,
    pub evidence: Vec<(String, String)>,
}

#[derive(Template, WebTemplate)]
#[template(path = "incidents/incidents.html")]
pub struct IncidentsPage {
    pub chrome: Chrome,
    pub incidents: Vec<IncidentRow>,
}

#[derive(Template, WebTemplate)]
#[template(path = "incidents/incident.html")]
pub struct IncidentPage {
    pub chrome: Chrome,
    pub incident: IncidentRow,
    pub alerts: Vec<MemberRow>,
    pub causes: Vec<CauseRow>,
    /// When its alerts happened at about the same time on earlier days, in words.
    pub recurrence: Vec<String>,
    /// The timeline strip (inline SVG).
    pub timeline: String,
    /// The service map over the incident, its path in vermillion (inline SVG).
    pub map: String,
}

fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s} s"),
        60..=3_599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3_600, (s % 3_600) / 60),
    }
}

fn number(v: f64, unit: &str) -> String {
    let n = if v.abs() >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    match unit {
        "" => n,
        "×" => format!("×{n}"),
        "%" => format!("{n} %"),
        u => format!("{n} {u}"),
    }
}

/// The list row of an incident, `window_query` kept in its link.
pub fn row(i: &Incident, window_query: &str) -> IncidentRow {
    let start = (i.opened * 1000.0) as i64;
    let end = i.resolved.unwrap_or(now_ms() as f64 / 1000.0);
    IncidentRow {
        id: i.id,
        href: format!("/incidents/{}?{window_query}", i.id),
        title: i.title.clone(),
        cause: i.cause_text.clone(),
        open: i.resolved.is_none(),
        start_iso: utc_rfc3339(start),
        start_utc: utc_human(start),
        duration: duration_text(end - i.opened),
        alerts: i.alerts.len(),
        active_alerts: i.alerts.iter().filter(|a| a.resolved.is_none()).count(),
    }
}

/// Incidents open now, for the overview.
pub fn open_rows(incidents: &[Incident], window_query: &str) -> Vec<IncidentRow> {
    incidents
        .iter()
        .filter(|i| i.resolved.is_none())
        .map(|i| row(i, window_query))
        .collect()
}

pub async fn incidents(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<IncidentsPage, WebError> {
    let w = q.window("24h")?;
    let (from, to) = (w.from_ms as f64 / 1000.0, w.to_ms as f64 / 1000.0);
    let listed = app.store.incidents(from, to).await?;
    let chrome = Chrome::new("Incidents", "/incidents", &w, &q, &viewer).refreshing(30, &q);
    let incidents = listed
        .iter()
        .map(|i| row(i, &chrome.window_query))
        .collect();
    Ok(IncidentsPage { chrome, incidents })
}

pub async fn incident(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<IncidentPage, WebError> {
    let w = q.window("24h")?;
    let id: i64 = id
        .parse()
        .map_err(|_| WebError::bad("id", format!("`{id}` is not an incident id")))?;
    let Some(i) = app.store.incident(id).await? else {
        return Err(WebError::NotFound(format!("no incident {id}")));
    };
    let chrome = Chrome::new(
        format!("Incident #{}: {}", i.id, i.title),
        "/incidents",
        &w,
        &q,
        &viewer,
    );
    let now = now_ms();
    let alerts = i
        .alerts
        .iter()
        .map(|a| {
            let started = (a.started * 1000.0) as i64;
            let until = a.resolved.map_or(now, |r| (r * 1000.0) as i64);
            MemberRow {
                rule: a.rule.clone(),
                labels: a
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                severity: a.severity.clone(),
                summary: a.summary.clone(),
                started_iso: utc_rfc3339(started),
                started_utc: utc_human(started),
                state: match a.resolved {
                    Some(r) => format!("resolved after {}", duration_text(r - a.started)),
                    None => "active".into(),
                },
                explain: explain_link(&a.labels, started, until),
            }
        })
        .collect();
    let stored: Vec<StoredCause> = serde_json::from_value(i.cause.clone()).unwrap_or_default();
    let causes = stored
        .into_iter()
        .map(|c| CauseRow {
            rank: c.rank,
            kind: c.kind.replace('_', " "),
            subject: c.subject,
            line: c.line,
            evidence: c
                .evidence
                .into_iter()
                .map(|e| (e.name, number(e.value, &e.unit)))
                .collect(),
        })
        .collect();
    let incident = row(&i, &chrome.window_query);
    let timeline = super::incident_timeline::build(&app.store, &i, now).await?;
    let (from_s, to_s) = (
        timeline.from_ms.div_euclid(1000),
        timeline.to_ms.div_euclid(1000) + 1,
    );
    let m = app.store.service_map(from_s, to_s).await?;
    let map = super::map::chart(
        &format!("Incident #{}: its path on the service map", i.id),
        &m,
        &super::map::Path::of(&i),
        ((to_s - from_s) as f64 / 60.0).max(1.0),
        &format!("from={}&to={}", timeline.from_ms, timeline.to_ms),
    )
    .render();
    let timeline = timeline.render();
    Ok(IncidentPage {
        chrome,
        incident,
        alerts,
        causes,
        recurrence: i.recurrence,
        timeline,
        map,
    })
}

//! Alerts: instances firing now (and pending or resolving), and the history of events in the
//! window; each links to the page and window that explains it. The alert tables and their
//! evaluation belong to the collector's alerting (`store::alerts`); this page only reads.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_store::alerts::AlertState;
use stormwatch_store::signals::Labels;

use super::{urlencode, Chrome, PageQuery};
use crate::auth::Viewer;
use crate::error::WebError;
use crate::range::{now_ms, utc_human, utc_rfc3339};
use crate::WebState;

/// Events listed at most.
pub const MAX_EVENTS: i64 = 500;

pub struct AlertRow {
    pub rule: String,
    pub state: String,
    pub severity: String,
    pub labels: String,
    pub summary: String,
    pub value: String,
    pub since_iso: String,
    pub since_utc: String,
    pub explain: String,
    pub silenced: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "alerts/alerts.html")]
pub struct AlertsPage {
    pub chrome: Chrome,
    pub active: Vec<AlertRow>,
    pub events: Vec<AlertRow>,
}

/// The page that explains an alert with these labels, over a window from 15 minutes before
/// `since_ms` until `to_ms` (at least 30 minutes).
pub fn explain_link(labels: &Labels, since_ms: i64, to_ms: i64) -> String {
    let from = since_ms - 15 * 60_000;
    let to = to_ms.max(since_ms + 15 * 60_000);
    let window = format!("from={}&to={}", utc_rfc3339(from), utc_rfc3339(to));
    let get = |k: &str| labels.get(k).map(|v| urlencode(v));
    if labels.contains_key("database") {
        return format!("/databases?{window}");
    }
    if labels.contains_key("host") {
        return format!("/hosts?{window}");
    }
    if labels.contains_key("agent_id") || labels.contains_key("agent") {
        return format!("/?{window}");
    }
    if let Some(peer) = get("peer") {
        let class = get("class")
            .map(|c| format!("&class={c}"))
            .unwrap_or_default();
        return format!("/scatter?{window}&peer={peer}{class}");
    }
    if let Some(service) = get("service") {
        return format!("/scatter?{window}&service={service}");
    }
    format!("/dependencies?{window}")
}

fn labels_text(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_value(v: Option<f64>, t: Option<f64>) -> String {
    match (v, t) {
        (Some(v), Some(t)) => format!("{v:.3} (threshold {t:.3})"),
        (Some(v), None) => format!("{v:.3}"),
        _ => String::new(),
    }
}

/// Instances firing now: for the overview's banner.
pub fn firing(states: &[AlertState]) -> Vec<AlertRow> {
    let now = now_ms();
    states
        .iter()
        .filter(|s| s.state == "firing")
        .map(|s| row_of_state(s, now))
        .collect()
}

fn row_of_state(s: &AlertState, now: i64) -> AlertRow {
    let since = (s.firing_since.unwrap_or(s.pending_since) * 1000.0) as i64;
    AlertRow {
        rule: s.rule.clone(),
        state: s.state.clone(),
        severity: s.severity.clone(),
        labels: labels_text(&s.labels),
        summary: s.summary.clone(),
        value: fmt_value(s.value, s.threshold),
        since_iso: utc_rfc3339(since),
        since_utc: utc_human(since),
        explain: explain_link(&s.labels, since, now),
        silenced: false,
    }
}

pub async fn alerts(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<AlertsPage, WebError> {
    let w = q.window("24h")?;
    let now = now_ms();
    let (states, events) = tokio::try_join!(
        app.store.alert_states(),
        app.store.alert_events(
            w.from_ms as f64 / 1000.0,
            w.to_ms as f64 / 1000.0,
            MAX_EVENTS
        )
    )?;
    let active = states.iter().map(|s| row_of_state(s, now)).collect();
    let events = events
        .into_iter()
        .map(|e| {
            let t = (e.time * 1000.0) as i64;
            let since = (e.since * 1000.0) as i64;
            AlertRow {
                explain: explain_link(&e.labels, since, t),
                rule: e.rule,
                state: e.event,
                severity: e.severity,
                labels: labels_text(&e.labels),
                summary: e.summary,
                value: fmt_value(e.value, e.threshold),
                since_iso: utc_rfc3339(t),
                since_utc: utc_human(t),
                silenced: e.silenced,
            }
        })
        .collect();
    Ok(AlertsPage {
        chrome: Chrome::new("Alerts", "/alerts", &w, &q, &viewer).refreshing(30, &q),
        active,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_764_058_500_000; // 2025-11-25T08:15:00Z

    #[test]
    fn alerts_link_to_the_page_and_window_that_explain_them() {
        let l = |pairs: &[(&str, &str)]| -> Labels {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let w = "from=2025-11-25T08:00:00Z&to=2025-11-25T08:30:00Z";
        assert_eq!(
            explain_link(&l(&[("database", "main")]), T, T),
            format!("/databases?{w}")
        );
        assert_eq!(
            explain_link(&l(&[("class", "redis"), ("peer", "redis:6379")]), T, T),
            format!("/scatter?{w}&peer=redis:6379&class=redis")
        );
        assert_eq!(
            explain_link(&l(&[("service", "board & co")]), T, T),
            format!("/scatter?{w}&service=board%20%26%20co")
        );
        assert_eq!(
            explain_link(&l(&[("host", "app-1")]), T, T),
            format!("/hosts?{w}")
        );
        assert_eq!(explain_link(&l(&[]), T, T), format!("/dependencies?{w}"));
        // A long-firing alert: the window runs to now.
        let later = T + 3_600_000;
        assert!(explain_link(&l(&[]), T, later).ends_with("to=2025-11-25T09:15:00Z"));
    }
}

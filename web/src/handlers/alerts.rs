//! Alerts: instances firing now (and pending or resolving), and the history of events in the
//! window; each links to the page and window that explains it. The alert tables and their
//! evaluation belong to the collector's alerting (`store::alerts`); this page only reads.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_store::alerts::{AlertState, DeliveryCounts};
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
    pub silences: Vec<SilenceRowView>,
    pub delivery: DeliveryCounts,
    /// The viewer may create and end silences (not the read-only role).
    pub can_write: bool,
}

/// A silence created from the dashboard, as listed.
pub struct SilenceRowView {
    pub id: i64,
    pub rule: String,
    pub labels: String,
    pub until_iso: String,
    pub until_utc: String,
    pub comment: String,
    pub created_by: String,
}

/// Longest silence the form accepts: 7 days.
pub const MAX_SILENCE_SECS: f64 = 7.0 * 86_400.0;

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
    let (states, events, silences, delivery) = tokio::try_join!(
        app.store.alert_states(),
        app.store.alert_events(
            w.from_ms as f64 / 1000.0,
            w.to_ms as f64 / 1000.0,
            MAX_EVENTS
        ),
        app.store.active_silences(now as f64 / 1000.0),
        app.store.delivery_counts(),
    )?;
    let silences = silences
        .into_iter()
        .map(|s| {
            let until = (s.ends_at * 1000.0) as i64;
            SilenceRowView {
                id: s.id,
                rule: s.rule.unwrap_or_else(|| "every rule".into()),
                labels: labels_text(&s.labels),
                until_iso: utc_rfc3339(until),
                until_utc: utc_human(until),
                comment: s.comment,
                created_by: s.created_by,
            }
        })
        .collect();
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
        silences,
        delivery,
        can_write: viewer.role == crate::auth::Role::Admin,
    })
}

/// The silence form.
#[derive(Debug, serde::Deserialize)]
pub struct SilenceForm {
    /// Empty: every rule.
    #[serde(default)]
    pub rule: String,
    /// `k=v, k=v` (the alert row's labels); empty: any labels.
    #[serde(default)]
    pub labels: String,
    /// `30m`, `1h`, `2h`, `1d`...
    pub duration: String,
    #[serde(default)]
    pub comment: String,
}

/// `"k=v, k=v"` → labels.
pub fn parse_labels(text: &str) -> Result<Labels, WebError> {
    let mut out = Labels::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| WebError::bad("labels", format!("`{pair}` must look like key=value")))?;
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// A silence's length, in the duration grammar of every config (`30m`, `2h`, `1d`, `1h30m`,
/// `90s`…), from 1 minute to 7 days.
fn parse_duration_secs(text: &str) -> Result<f64, WebError> {
    let secs = stormwatch_model::parse_duration(text)
        .map_err(|e| WebError::bad("duration", e.to_string()))?
        .as_secs_f64();
    if !(60.0..=MAX_SILENCE_SECS).contains(&secs) {
        return Err(WebError::bad(
            "duration",
            "a silence lasts from 1 minute to 7 days".into(),
        ));
    }
    Ok(secs)
}

/// State-changing requests must come from the dashboard's own pages: with an open dashboard
/// (no users, loopback) there is no cookie to protect them, so the origin is checked.
fn same_origin(app: &WebState, headers: &axum::http::HeaderMap) -> Result<(), WebError> {
    if app.auth.same_origin(headers) {
        Ok(())
    } else {
        Err(WebError::forbidden("cross-site request refused"))
    }
}

/// `POST /alerts/silences`: silence a rule (and labels) for a while.
pub async fn create_silence(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    headers: axum::http::HeaderMap,
    axum::Form(f): axum::Form<SilenceForm>,
) -> Result<axum::response::Redirect, WebError> {
    same_origin(&app, &headers)?;
    let labels = parse_labels(&f.labels)?;
    let secs = parse_duration_secs(&f.duration)?;
    let now = now_ms() as f64 / 1000.0;
    let rule = Some(f.rule.trim()).filter(|r| !r.is_empty());
    let by = viewer.user.clone().unwrap_or_else(|| "dashboard".into());
    let comment: String = f.comment.chars().take(500).collect();
    app.store
        .create_silence(rule, &labels, now, now + secs, &comment, &by)
        .await?;
    Ok(axum::response::Redirect::to("/alerts"))
}

/// `POST /alerts/silences/{id}/end`: end a silence now.
pub async fn end_silence(
    State(app): State<WebState>,
    headers: axum::http::HeaderMap,
    axum::extract::Path(id): axum::extract::Path<i64>,
) -> Result<axum::response::Redirect, WebError> {
    same_origin(&app, &headers)?;
    app.store
        .expire_silence(id, now_ms() as f64 / 1000.0)
        .await?;
    Ok(axum::response::Redirect::to("/alerts"))
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

    #[test]
    fn silence_durations_take_the_config_grammar_within_a_minute_to_a_week() {
        assert_eq!(parse_duration_secs("30m").unwrap(), 1_800.0);
        assert_eq!(parse_duration_secs("2h").unwrap(), 7_200.0);
        assert_eq!(parse_duration_secs("1d").unwrap(), 86_400.0);
        assert_eq!(parse_duration_secs("1h30m").unwrap(), 5_400.0);
        assert_eq!(parse_duration_secs("90s").unwrap(), 90.0);
        assert_eq!(parse_duration_secs("7d").unwrap(), MAX_SILENCE_SECS);
        for short_or_long in ["0m", "30s", "8d"] {
            let e = format!("{:?}", parse_duration_secs(short_or_long).unwrap_err());
            assert!(e.contains("1 minute to 7 days"), "{short_or_long}: {e}");
        }
        let e = format!("{:?}", parse_duration_secs("soon").unwrap_err());
        assert!(e.contains("`soon`"), "{e}");
    }
}

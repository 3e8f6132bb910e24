//! The overview: one row per service (throughput, latency percentiles, errors, 5xx and 503,
//! sparklines) and agent health. Reads the per-minute aggregates only.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;

use super::{path_segment, urlencode, Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::{line::sparkline, palette, short_bytes, short_count};
use crate::error::WebError;
use crate::range::{self, opt_duration};
use crate::WebState;

/// An agent that has not shipped for this long is flagged as silent.
pub const STALE_AFTER_S: i64 = 120;
/// An error rate above this is flagged.
pub const ERROR_RATE_ALARM: f64 = 0.05;

pub struct ServiceRow {
    pub service: String,
    pub service_q: String,
    /// The service as a path segment: `/services/{service_path}/metrics`.
    pub service_path: String,
    pub entry_class: &'static str,
    pub throughput: String,
    pub p50: String,
    pub p95: String,
    pub p99: String,
    pub error_rate: String,
    pub error_alarm: bool,
    pub http_5xx: u64,
    pub http_503: u64,
    pub alarming: bool,
    pub spark_count: String,
    pub spark_p95: String,
}

pub struct AgentRow {
    pub agent_id: String,
    pub instance: String,
    pub last_seen_iso: String,
    pub last_seen_utc: String,
    pub ago: String,
    pub stale: bool,
    pub batches: i64,
    pub received: String,
    pub kept: String,
    pub dropped: i64,
    /// Spans missing from the counts (their batch was dropped after they were counted).
    pub lost: i64,
    pub dead_letters: i64,
    pub spool: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "overview/overview.html")]
pub struct OverviewPage {
    pub chrome: Chrome,
    pub services: Vec<ServiceRow>,
    pub agents: Vec<AgentRow>,
    pub firing: Vec<super::alerts::AlertRow>,
    /// Incidents open now, with their probable cause: what the page leads with.
    pub incidents: Vec<super::incidents::IncidentRow>,
    pub step_label: String,
    pub stale_after_s: i64,
}

fn ago(ms: i64) -> String {
    let s = (ms / 1000).max(0);
    match s {
        0..=119 => format!("{s} s ago"),
        120..=7199 => format!("{} min ago", s / 60),
        _ => format!("{} h ago", s / 3600),
    }
}

/// Requests per minute over the part of the window since the service's first step with
/// data: a service (or Stormwatch) started ten minutes ago is not averaged over an hour.
fn per_minute(
    count: u64,
    steps: &[stormwatch_store::Totals],
    from_s: i64,
    to_s: i64,
    step: i64,
) -> f64 {
    let first = steps.iter().position(|x| x.count > 0).unwrap_or(0) as i64;
    let active_s = (to_s - (from_s + first * step)).max(60);
    count as f64 / (active_s as f64 / 60.0)
}

pub async fn overview(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<OverviewPage, WebError> {
    let w = q.window("1h")?;
    let step = w.step_s(30);
    let (from_s, to_s) = w.secs();
    let overview = app.store.service_overview(from_s, to_s, step).await?;
    let (agents, states, open) = tokio::try_join!(
        app.store.agents(),
        app.store.alert_states(),
        app.store.open_incidents()
    )?;
    let incidents = super::incidents::open_rows(&open, &w.query());
    let firing = super::alerts::firing(&states);
    let services = overview
        .into_iter()
        .map(|s| {
            let t = &s.totals;
            let rate = t.error_rate();
            let counts: Vec<Option<f64>> = s.steps.iter().map(|x| Some(x.count as f64)).collect();
            let p95s: Vec<Option<f64>> = s.steps.iter().map(|x| x.quantile_ms(0.95)).collect();
            ServiceRow {
                service_q: urlencode(&s.service),
                service_path: path_segment(&s.service),
                spark_count: sparkline(
                    &format!("{}: requests per {} min", s.service, step / 60),
                    &counts,
                    palette::BLUE,
                ),
                spark_p95: sparkline(
                    &format!("{}: p95 latency (ms) per {} min", s.service, step / 60),
                    &p95s,
                    palette::ORANGE,
                ),
                service: s.service,
                entry_class: s.entry_class,
                throughput: format!(
                    "{}/min",
                    short_count(per_minute(t.count, &s.steps, from_s, to_s, step))
                ),
                p50: opt_duration(t.quantile_ms(0.50)),
                p95: opt_duration(t.quantile_ms(0.95)),
                p99: opt_duration(t.quantile_ms(0.99)),
                error_rate: format!("{:.2} %", rate * 100.0),
                error_alarm: rate > ERROR_RATE_ALARM,
                http_5xx: t.http_5xx,
                http_503: t.http_503,
                alarming: rate > ERROR_RATE_ALARM || t.http_503 > 0,
            }
        })
        .collect();
    let now = range::now_ms();
    let agents = agents
        .into_iter()
        .map(|a| AgentRow {
            last_seen_iso: range::utc_rfc3339(a.last_seen_ms),
            last_seen_utc: range::utc_human(a.last_seen_ms),
            ago: ago(now - a.last_seen_ms),
            stale: now - a.last_seen_ms > STALE_AFTER_S * 1000,
            batches: a.batches,
            received: short_count(a.spans_received as f64),
            kept: short_count(a.spans_kept as f64),
            dropped: a.spans_dropped,
            lost: a.spans_lost,
            dead_letters: a.dead_letter_batches,
            spool: short_bytes(a.spool_bytes as f64),
            agent_id: a.agent_id,
            instance: a.instance,
        })
        .collect();
    Ok(OverviewPage {
        chrome: Chrome::new("Overview", "/", &w, &q, &viewer).refreshing(30, &q),
        services,
        agents,
        firing,
        incidents,
        step_label: format!("{} min", step / 60),
        stale_after_s: STALE_AFTER_S,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use stormwatch_store::Totals;

    fn steps(counts: &[u64]) -> Vec<Totals> {
        counts
            .iter()
            .map(|c| {
                let mut t = Totals::default();
                t.count = *c;
                t
            })
            .collect()
    }

    #[test]
    fn throughput_counts_from_the_first_minute_with_data() {
        // One hour in 2-minute steps; data only in the last 10 minutes (5 steps).
        let mut counts = vec![0; 25];
        counts.extend([100, 100, 100, 100, 100]);
        let (from, to) = (0, 3_600);
        assert_eq!(per_minute(500, &steps(&counts), from, to, 120), 50.0);
        // Data from the start: the whole hour.
        assert_eq!(per_minute(600, &steps(&[20; 30]), from, to, 120), 10.0);
        // Data only in the last, partial step: at least a minute.
        let mut late = vec![0; 29];
        late.push(30);
        assert_eq!(per_minute(30, &steps(&late), from, 3_500, 120), 30.0);
        // No data at all.
        assert_eq!(per_minute(0, &steps(&[0; 30]), from, to, 120), 0.0);
    }
}

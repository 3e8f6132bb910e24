//! Databases, from the agents' probes: connect time and failures over time (refusal windows
//! as red bands), replication lag per replica with its threshold line, and a minute-of-day ×
//! day heatmap of failures and slow connects.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_store::{ProbeHeatCell, ProbePoint, ProbedDay, SLOW_CONNECT_MS};

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::line::{LineChart, Series};
use crate::charts::{heatmap, palette};
use crate::error::WebError;
use crate::range::duration;
use crate::WebState;

/// Replication lag drawn as the threshold line, seconds.
pub const LAG_THRESHOLD_S: f64 = 5.0;
/// Days in the heatmap.
pub const HEATMAP_DAYS: i64 = 7;
/// Width of a heatmap cell, minutes.
pub const HEATMAP_BUCKET_MIN: i32 = 5;

pub struct DatabaseView {
    pub name: String,
    pub roles: String,
    pub failures: i64,
    pub samples: i64,
    pub charts: Vec<String>,
    pub heatmap: String,
    /// Failure windows that recurred over the heatmap's days, in words.
    pub recurrence: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "databases/databases.html")]
pub struct DatabasesPage {
    pub chrome: Chrome,
    pub databases: Vec<DatabaseView>,
}

/// Contiguous steps with failures, as (from, to) in ms.
fn failure_bands(points: &[&ProbePoint], step_ms: i64) -> Vec<(i64, i64)> {
    let mut fails: Vec<i64> = points
        .iter()
        .filter(|p| p.failures > 0)
        .map(|p| p.time_ms)
        .collect();
    fails.sort_unstable();
    fails.dedup();
    let mut bands: Vec<(i64, i64)> = Vec::new();
    for t in fails {
        match bands.last_mut() {
            Some((_, end)) if *end >= t => *end = t + step_ms,
            _ => bands.push((t, t + step_ms)),
        }
    }
    bands
}

pub async fn databases(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<DatabasesPage, WebError> {
    let w = q.window("6h")?;
    let step = w.step_s(120);
    let (from_s, to_s) = w.secs();
    let first_day = (to_s / 86_400) - (HEATMAP_DAYS - 1);
    let (points, recurring, heat) = tokio::try_join!(
        app.store.probe_series(from_s, to_s, step),
        app.store.probe_recurrence(None, to_s as f64, None),
        app.store
            .probe_heatmap(first_day * 86_400, to_s, HEATMAP_BUCKET_MIN)
    )?;
    let mut by_db: BTreeMap<&str, Vec<&ProbePoint>> = BTreeMap::new();
    for p in &points {
        by_db.entry(p.database.as_str()).or_default().push(p);
    }
    let mut cells_by_db: BTreeMap<&str, Vec<&ProbeHeatCell>> = BTreeMap::new();
    for c in &heat.cells {
        cells_by_db.entry(c.database.as_str()).or_default().push(c);
    }
    let mut probed_by_db: BTreeMap<&str, Vec<&ProbedDay>> = BTreeMap::new();
    for p in &heat.probed {
        probed_by_db.entry(p.database.as_str()).or_default().push(p);
    }
    let mut recurrence_by_db: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (db, _, words) in &recurring {
        recurrence_by_db
            .entry(db.as_str())
            .or_default()
            .push(words.clone());
    }
    let names: std::collections::BTreeSet<&str> =
        by_db.keys().chain(probed_by_db.keys()).copied().collect();
    let mut databases = Vec::new();
    for name in names {
        let pts = by_db.get(name).cloned().unwrap_or_default();
        // One line per (role, agent): an agent's view of the database.
        let mut lines: BTreeMap<(String, String), Vec<&ProbePoint>> = BTreeMap::new();
        for p in &pts {
            lines
                .entry((p.role.clone(), p.agent_id.clone()))
                .or_default()
                .push(p);
        }
        let multi_agent = lines
            .keys()
            .map(|(_, a)| a)
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            > 1;
        let label = |role: &str, agent: &str| {
            if multi_agent {
                format!("{role} via {agent}")
            } else {
                role.to_owned()
            }
        };
        let bands = failure_bands(&pts, step * 1000);
        let mut charts = Vec::new();
        let title = format!("{name}: connect time (red: probes failed)");
        let mut c = LineChart::new(&title, "connect time (ms)", w.from_ms, w.to_ms);
        c.y_format = duration;
        c.bands = bands.clone();
        for (i, ((role, agent), ps)) in lines.iter().enumerate() {
            c.series.push(Series {
                name: format!("{} max", label(role, agent)),
                color: palette::SERIES[(2 * i) % palette::SERIES.len()],
                points: ps.iter().map(|p| (p.time_ms, p.connect_ms_max)).collect(),
            });
            c.series.push(Series {
                name: format!("{} mean", label(role, agent)),
                color: palette::SERIES[(2 * i + 1) % palette::SERIES.len()],
                points: ps.iter().map(|p| (p.time_ms, p.connect_ms_avg)).collect(),
            });
        }
        charts.push(c.render());
        let title = format!("{name}: failed probes per {} min", step / 60);
        let mut c = LineChart::new(&title, "failed probes", w.from_ms, w.to_ms);
        c.bands = bands;
        for (i, ((role, agent), ps)) in lines.iter().enumerate() {
            c.series.push(Series {
                name: label(role, agent),
                color: if i == 0 {
                    palette::VERMILLION
                } else {
                    palette::SERIES[i % palette::SERIES.len()]
                },
                points: ps
                    .iter()
                    .map(|p| (p.time_ms, Some(p.failures as f64)))
                    .collect(),
            });
        }
        charts.push(c.render());
        let replicas: Vec<_> = lines
            .iter()
            .filter(|((role, _), _)| role == "replica")
            .collect();
        if !replicas.is_empty() {
            let title = format!("{name}: replication lag");
            let mut c = LineChart::new(&title, "lag (s)", w.from_ms, w.to_ms);
            c.threshold = Some((LAG_THRESHOLD_S, format!("threshold {LAG_THRESHOLD_S} s")));
            c.y_format = |v| format!("{v:.1} s");
            for (i, ((role, agent), ps)) in replicas.into_iter().enumerate() {
                c.series.push(Series {
                    name: label(role, agent),
                    color: palette::SERIES[i % palette::SERIES.len()],
                    points: ps.iter().map(|p| (p.time_ms, p.lag_seconds_max)).collect(),
                });
            }
            charts.push(c.render());
        }
        let db_cells = cells_by_db.get(name).cloned().unwrap_or_default();
        let db_probed = probed_by_db.get(name).cloned().unwrap_or_default();
        let heat = heatmap::render(
            &format!("{name}: failures (vermillion) and slow connects (orange, ≥ {SLOW_CONNECT_MS} ms) by time of day, last {HEATMAP_DAYS} days"),
            first_day,
            HEATMAP_DAYS,
            HEATMAP_BUCKET_MIN,
            &db_probed,
            &db_cells,
        );
        let roles: std::collections::BTreeSet<&str> = pts.iter().map(|p| p.role.as_str()).collect();
        databases.push(DatabaseView {
            name: name.to_owned(),
            roles: roles.into_iter().collect::<Vec<_>>().join(", "),
            failures: pts.iter().map(|p| p.failures).sum(),
            samples: pts.iter().map(|p| p.samples).sum(),
            charts,
            heatmap: heat,
            recurrence: recurrence_by_db.remove(name).unwrap_or_default(),
        });
    }
    Ok(DatabasesPage {
        chrome: Chrome::new("Databases", "/databases", &w, &q, &viewer).refreshing(30, &q),
        databases,
    })
}

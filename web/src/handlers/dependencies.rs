//! Dependencies: latency (p95/p99) and throughput per class and per peer over time, and a
//! table of peers now vs. a baseline with a flag above the threshold. Reads the per-minute
//! aggregates only.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_model::DependencyClass;
use stormwatch_store::{PeerSummary, Totals};

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::line::{LineChart, Series};
use crate::charts::palette;
use crate::error::WebError;
use crate::range::{duration, opt_duration};
use crate::WebState;

/// "Now" in the peers table: the last this-many seconds of the window.
pub const NOW_SLICE_S: i64 = 300;
/// A peer is flagged when its p95 now is at least this many times its baseline p95...
pub const FLAG_RATIO: f64 = 2.0;
/// ...and it served at least this many spans now (a handful of spans proves nothing).
pub const FLAG_MIN_COUNT: u64 = 5;
/// Peers drawn in the per-peer chart (the busiest).
pub const MAX_PEER_SERIES: usize = 6;

const CLASSES: &[DependencyClass] = &[
    DependencyClass::Db,
    DependencyClass::Redis,
    DependencyClass::HttpClient,
    DependencyClass::Messaging,
];

pub struct PeerRow {
    pub class: String,
    pub peer: String,
    pub count_now: u64,
    pub p95_now: String,
    pub p99_now: String,
    pub p95_base: String,
    pub ratio: String,
    pub flagged: bool,
    pub errors_now: u64,
    pub scatter: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "dependencies/dependencies.html")]
pub struct DependenciesPage {
    pub chrome: Chrome,
    pub charts: Vec<String>,
    pub peers: Vec<PeerRow>,
    pub baseline_label: &'static str,
    pub other_baseline: String,
    pub other_baseline_label: &'static str,
    pub flag_ratio: f64,
    pub now_slice_min: i64,
}

pub async fn dependencies(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<DependenciesPage, WebError> {
    let w = q.window("1h")?;
    let day = match q.baseline.as_deref() {
        None | Some("") | Some("hour") => false,
        Some("day") => true,
        Some(other) => {
            return Err(WebError::bad(
                "baseline",
                format!("`{other}`: use hour or day"),
            ))
        }
    };
    let step = w.step_s(60);
    let (from_s, to_s) = w.secs();
    let service = PageQuery::text(&q.service);
    let per_min = step as f64 / 60.0;

    // One scan of the window's aggregates for every chart; two small ones for the table.
    let now_from = (to_s - NOW_SLICE_S).max(from_s);
    let (base_from, base_to) = if day {
        (now_from - 86_400, to_s - 86_400)
    } else {
        (now_from - 3_600, now_from)
    };
    let (deps, now_peers, base_peers) = tokio::try_join!(
        app.store
            .dependency_series(service.as_deref(), from_s, to_s, step),
        app.store.peer_summaries(now_from, to_s),
        app.store.peer_summaries(base_from, base_to),
    )?;
    let time = |i: usize| (from_s.div_euclid(60) * 60 + i as i64 * step) * 1000;
    // A class keeps its colour on every chart; its busiest peer shares it, other peers take
    // the colours no class uses.
    type Line = (String, (u8, u8, u8), Vec<Totals>);
    let class_color = |class: &str| {
        let i = CLASSES
            .iter()
            .position(|c| c.as_str() == class)
            .unwrap_or(0);
        palette::SERIES[i % palette::SERIES.len()]
    };
    let mut by_class: Vec<Line> = Vec::new();
    for class in CLASSES {
        let mut steps: Vec<Totals> = Vec::new();
        for d in deps.iter().filter(|d| d.class == class.as_str()) {
            if steps.is_empty() {
                steps = d.steps.clone();
            } else {
                for (a, b) in steps.iter_mut().zip(&d.steps) {
                    a.merge(b);
                }
            }
        }
        if steps.iter().any(|t| t.count > 0) {
            by_class.push((
                class.as_str().to_owned(),
                class_color(class.as_str()),
                steps,
            ));
        }
    }
    let mut classes_seen: Vec<&str> = Vec::new();
    let mut spare = palette::SERIES[CLASSES.len()..].iter().cycle();
    let by_peer: Vec<Line> = deps
        .iter()
        .filter(|d| !d.peer.is_empty())
        .take(MAX_PEER_SERIES)
        .map(|d| {
            let color = if classes_seen.contains(&d.class.as_str()) {
                *spare.next().expect("cycle")
            } else {
                classes_seen.push(&d.class);
                class_color(&d.class)
            };
            (format!("{} {}", d.class, d.peer), color, d.steps.clone())
        })
        .collect();
    let mut charts = Vec::new();
    let mut chart = |title: &str,
                     y: &str,
                     list: &[Line],
                     f: &dyn Fn(&Totals) -> Option<f64>,
                     fmt: fn(f64) -> String| {
        let mut c = LineChart::new(title, y, w.from_ms, w.to_ms);
        c.y_format = fmt;
        c.series = list
            .iter()
            .map(|(name, color, steps)| Series {
                name: name.clone(),
                color: *color,
                points: steps
                    .iter()
                    .enumerate()
                    .map(|(j, t)| (time(j), f(t)))
                    .collect(),
            })
            .collect();
        charts.push(c.render());
    };
    let ms: fn(f64) -> String = duration;
    let count: fn(f64) -> String = crate::charts::short_count;
    chart(
        "p95 latency by dependency class",
        "p95 (ms)",
        &by_class,
        &|t| t.quantile_ms(0.95),
        ms,
    );
    chart(
        "p99 latency by dependency class",
        "p99 (ms)",
        &by_class,
        &|t| t.quantile_ms(0.99),
        ms,
    );
    chart(
        "Throughput by dependency class",
        "spans per minute",
        &by_class,
        &|t| Some(t.count as f64 / per_min),
        count,
    );
    chart(
        "p95 latency by peer (busiest)",
        "p95 (ms)",
        &by_peer,
        &|t| t.quantile_ms(0.95),
        ms,
    );
    chart(
        "p99 latency by peer (busiest)",
        "p99 (ms)",
        &by_peer,
        &|t| t.quantile_ms(0.99),
        ms,
    );

    let base = |p: &PeerSummary| {
        base_peers
            .iter()
            .find(|b| b.class == p.class && b.peer == p.peer)
    };
    let mut peers: Vec<PeerRow> = now_peers
        .iter()
        .map(|p| {
            let b = base(p);
            let ratio = match (p.p95_ms, b.and_then(|b| b.p95_ms)) {
                (Some(n), Some(b)) if b > 0.0 => Some(n / b),
                _ => None,
            };
            PeerRow {
                class: p.class.clone(),
                peer: p.peer.clone(),
                count_now: p.count,
                p95_now: opt_duration(p.p95_ms),
                p99_now: opt_duration(p.p99_ms),
                p95_base: opt_duration(b.and_then(|b| b.p95_ms)),
                ratio: ratio
                    .map(|r| format!("×{r:.1}"))
                    .unwrap_or_else(|| "new".into()),
                flagged: ratio.is_some_and(|r| r >= FLAG_RATIO) && p.count >= FLAG_MIN_COUNT,
                errors_now: p.errors,
                scatter: format!(
                    "/scatter?range=15m&class={}&peer={}",
                    super::urlencode(&p.class),
                    super::urlencode(&p.peer)
                ),
            }
        })
        .collect();
    peers.sort_by(|a, b| {
        b.flagged
            .cmp(&a.flagged)
            .then(b.count_now.cmp(&a.count_now))
    });
    let other = if day { "hour" } else { "day" };
    let other_baseline = format!(
        "/dependencies?{}{}&baseline={other}",
        w.query(),
        PageQuery {
            service: q.service.clone(),
            ..Default::default()
        }
        .filters()
    );
    Ok(DependenciesPage {
        chrome: Chrome::new("Dependencies", "/dependencies", &w, &q, &viewer).refreshing(30, &q),
        charts,
        peers,
        baseline_label: if day {
            "same time yesterday"
        } else {
            "the hour before"
        },
        other_baseline,
        other_baseline_label: if day {
            "the hour before"
        } else {
            "same time yesterday"
        },
        flag_ratio: FLAG_RATIO,
        now_slice_min: NOW_SLICE_S / 60,
    })
}

//! The scatter (Scouter's XLog): every kept span as a dot, x = end time, y = duration; errors
//! in vermillion; filters, zoom (URL parameters) and auto-refresh.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_model::enums::WireEnum;
use stormwatch_store::SpanFilter;

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::scatter::Scatter;
use crate::error::WebError;
use crate::WebState;

/// Most dots drawn; beyond it the newest are shown and the page says so.
pub const MAX_DOTS: i64 = 50_000;

#[derive(Template, WebTemplate)]
#[template(path = "scatter/scatter.html")]
pub struct ScatterPage {
    pub chrome: Chrome,
    pub chart: String,
    pub dots: usize,
    pub errors: usize,
    pub truncated: bool,
    pub max_dots: i64,
    pub service: String,
    pub class: String,
    pub peer: String,
    pub min_ms: String,
    pub max_ms: String,
    pub log: bool,
    pub classes: Vec<&'static str>,
    pub services: Vec<String>,
    pub unzoom: String,
}

pub async fn scatter(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<ScatterPage, WebError> {
    let w = q.window("15m")?;
    let class = q.class()?;
    let min_ms = PageQuery::millis("min_ms", &q.min_ms)?;
    let max_ms = PageQuery::millis("max_ms", &q.max_ms)?;
    let log = match q.scale.as_deref() {
        None | Some("") | Some("log") => true,
        Some("linear") => false,
        Some(other) => {
            return Err(WebError::bad(
                "scale",
                format!("`{other}`: use log or linear"),
            ))
        }
    };
    let filter = SpanFilter {
        service: PageQuery::text(&q.service),
        class,
        peer: PageQuery::text(&q.peer),
        min_duration_ns: (min_ms.unwrap_or(0.0) * 1e6) as i64,
        from_ns: w.from_ms * 1_000_000,
        to_ns: w.to_ms * 1_000_000,
        limit: MAX_DOTS,
    };
    let (from_s, to_s) = w.secs();
    let (points, services) = tokio::try_join!(
        app.store.scatter_points(&filter),
        app.store.services(from_s, to_s)
    )?;
    let truncated = points.len() as i64 >= MAX_DOTS;
    let mut points = points;
    if let Some(max) = max_ms {
        let max_ns = (max * 1e6) as i64;
        points.retain(|p| p.duration_ns <= max_ns);
    }
    let title = match &filter.service {
        Some(s) => format!("Kept spans of {s}: duration by end time"),
        None => "Kept spans: duration by end time".to_owned(),
    };
    let chart = Scatter {
        title: &title,
        from_ms: w.from_ms,
        to_ms: w.to_ms,
        y_min_ms: min_ms.filter(|_| max_ms.is_some()),
        y_max_ms: max_ms,
        log,
        points: &points,
    }
    .render();
    let errors = points.iter().filter(|p| p.is_error).count();
    let mut chrome = Chrome::new("Scatter", "/scatter", &w, &q, &viewer).refreshing(10, &q);
    let unzoom = format!(
        "/scatter?range=15m{}",
        PageQuery {
            min_ms: None,
            max_ms: None,
            ..clone_filters(&q)
        }
        .filters()
    );
    chrome.title = "Scatter: every kept span".into();
    Ok(ScatterPage {
        chrome,
        chart,
        dots: points.len(),
        errors,
        truncated,
        max_dots: MAX_DOTS,
        service: q.service.clone().unwrap_or_default(),
        class: q.class.clone().unwrap_or_default(),
        peer: q.peer.clone().unwrap_or_default(),
        min_ms: q.min_ms.clone().unwrap_or_default(),
        max_ms: q.max_ms.clone().unwrap_or_default(),
        log,
        classes: stormwatch_model::DependencyClass::ALL
            .iter()
            .map(|c| c.as_str())
            .collect(),
        services: services.into_iter().map(|s| s.service).collect(),
        unzoom,
    })
}

fn clone_filters(q: &PageQuery) -> PageQuery {
    PageQuery {
        service: q.service.clone(),
        class: q.class.clone(),
        peer: q.peer.clone(),
        min_ms: q.min_ms.clone(),
        max_ms: q.max_ms.clone(),
        scale: q.scale.clone(),
        refresh: q.refresh.clone(),
        ..Default::default()
    }
}

//! A service's metrics: the OTLP metrics it exports, as the agent keeps them (one point per
//! series and minute, `sw_metric_minutes`). First the signals behind an outage, on the same
//! time axis as the service's own latency and request rate (from the service rollups, read as
//! the overview reads them): requests in flight against their limit, connections taken from a
//! pool against its size; then every other metric, one chart each; then the list of them.

use std::collections::{HashMap, HashSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Path, Query, State};
use axum::Extension;
use stormwatch_model::MetricKind;
use stormwatch_store::{MetricName, MetricSeries, Series as StoredSeries, ServiceOverview, Store};

use super::{path_segment, urlencode, Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::line::{LineChart, Series};
use crate::charts::{clip, palette, short_bytes, short_count};
use crate::error::WebError;
use crate::range::{duration, Window};
use crate::WebState;

/// Most charts of metrics other than the outage signals; the table lists every metric.
pub const MAX_CHARTS: usize = 24;
/// Most series one chart draws (the first, by instance and attributes).
pub const MAX_LINES: usize = 12;
/// A chart with at most this many points gets a hover title on each.
const HOVER_POINTS: usize = 600;

/// Requests in flight (OpenTelemetry's semantic conventions; the board and Flask export it).
const ACTIVE: &str = "http.server.active_requests";
/// The board's limiter: how many requests it lets in at once (more answer 503).
const LIMITER_MAX: &str = "board.limiter.max";
/// A pool's connections by state (`used`, `idle`), its size and the requests waiting for one,
/// under the conventions' older and newer names.
const POOL_USAGE: &[&str] = &["db.client.connections.usage", "db.client.connection.count"];
const POOL_MAX: &[&str] = &["db.client.connections.max", "db.client.connection.max"];
const POOL_PENDING: &[&str] = &[
    "db.client.connections.pending_requests",
    "db.client.connection.pending_requests",
];

/// One chart and the anchor it is linked by.
pub struct ChartView {
    pub id: String,
    pub svg: String,
}

/// A row of the list of metrics.
pub struct NameRow {
    pub name: String,
    pub kind: &'static str,
    pub unit: String,
    pub series: u64,
    /// `#chart-id` when the metric is drawn on this page.
    pub href: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "metrics/metrics.html")]
pub struct MetricsPage {
    pub chrome: Chrome,
    pub service: String,
    pub service_q: String,
    pub step_label: String,
    /// Latency, requests, and the outage signals the service exports.
    pub signals: Vec<ChartView>,
    /// What the latency counts: server spans, or every span of a service without any.
    pub entry_note: &'static str,
    pub charts: Vec<ChartView>,
    /// Says how many metrics have no chart, when some have none.
    pub cut: String,
    pub names: Vec<NameRow>,
}

/// The window's steps: the start of each, Unix ms, as the store aligns them (from the
/// window's first minute, `step_s` apart).
fn grid(w: &Window, step_s: i64) -> Vec<i64> {
    let from = w.from_ms.div_euclid(60_000) * 60_000;
    let step = step_s * 1000;
    (0..)
        .map(|i| from + i * step)
        .take_while(|t| *t < w.to_ms)
        .collect()
}

/// Seconds of the step starting at `t` that lie in the window, in whole minutes (the last
/// step may be cut short by the window's end): what a count per step is divided by.
fn step_secs(t: i64, step_s: i64, w: &Window) -> f64 {
    let left_min = (w.to_ms - t + 59_999).div_euclid(60_000).max(1);
    (left_min * 60).min(step_s) as f64
}

/// `points` (steps with data) on the grid: `None` where a step has none, so lines break.
fn on_grid(
    grid: &[i64],
    points: impl IntoIterator<Item = (i64, Option<f64>)>,
) -> Vec<(i64, Option<f64>)> {
    let by_t: HashMap<i64, Option<f64>> = points.into_iter().collect();
    grid.iter()
        .map(|t| (*t, by_t.get(t).copied().flatten()))
        .collect()
}

/// Values for axes and titles: like [`short_count`], with two significant digits below 1.
pub fn value_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || a >= 1.0 {
        return short_count(v);
    }
    let decimals = ((-a.log10()).floor() as usize + 2).min(9);
    format!("{v:.decimals$}")
}

/// A metric's unit for people: UCUM annotations lose their braces (`{request}` → requests).
fn unit_label(unit: &str) -> String {
    match unit {
        "" | "1" => String::new(),
        "By" => "bytes".into(),
        "s" => "seconds".into(),
        u if u.starts_with('{') && u.ends_with('}') => format!("{}s", &u[1..u.len() - 1]),
        u => u.to_owned(),
    }
}

fn y_format(unit: &str) -> fn(f64) -> String {
    if unit == "By" || unit.starts_with("By/") {
        short_bytes
    } else {
        value_label
    }
}

/// What names a series besides its metric: instance and attributes.
fn label(s: &StoredSeries, skip: &[&str]) -> String {
    let mut out = if s.instance.is_empty() {
        "(no instance)".to_owned()
    } else {
        s.instance.clone()
    };
    let attrs: Vec<String> = s
        .attributes
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !attrs.is_empty() {
        out.push_str(" · ");
        out.push_str(&attrs.join(", "));
    }
    clip(&out, 64)
}

/// Same instance and attributes: a limit exported beside what it bounds.
fn same(a: &StoredSeries, b: &StoredSeries) -> bool {
    a.instance == b.instance && a.attributes == b.attributes
}

/// Same instance, and the attributes both have agree: a pool's size (`pool.name`) and its
/// connections in use (`pool.name`, `state`). How the `ratio_to` of alert rules matches.
fn compatible(a: &StoredSeries, b: &StoredSeries) -> bool {
    a.instance == b.instance
        && a.attributes
            .iter()
            .all(|(k, v)| b.attributes.get(k).is_none_or(|w| w == v))
}

fn color(i: usize) -> (u8, u8, u8) {
    // Vermillion marks trouble (and the shaded failure windows): not a series colour here.
    let usable = &palette::SERIES[..palette::SERIES.len() - 1];
    usable[i % usable.len()]
}

/// Metric series read once per name for the page.
struct Reader<'a> {
    store: &'a Store,
    service: &'a str,
    from_ns: i64,
    to_ns: i64,
    step_s: i64,
    read: HashMap<String, MetricSeries>,
}

impl Reader<'_> {
    async fn series(&mut self, name: &str) -> Result<&MetricSeries, WebError> {
        if !self.read.contains_key(name) {
            let s = self
                .store
                .metric_series(
                    name,
                    Some(self.service),
                    self.from_ns,
                    self.to_ns,
                    self.step_s,
                )
                .await?;
            self.read.insert(name.to_owned(), s);
        }
        Ok(&self.read[name])
    }
}

/// What the page draws in one window.
struct Frame<'a> {
    w: &'a Window,
    step_s: i64,
    grid: Vec<i64>,
    /// Steps in which the service answered 5xx, merged: shaded on the outage charts.
    bands: Vec<(i64, i64)>,
}

impl Frame<'_> {
    /// A chart of the window; `signal` ones (the outage signals) shade the failure windows.
    fn chart(
        &self,
        id: &str,
        title: &str,
        y_desc: &str,
        fmt: fn(f64) -> String,
        (series, dashed): (Vec<Series>, Vec<Series>),
    ) -> ChartView {
        let mut c = LineChart::new(title, y_desc, self.w.from_ms, self.w.to_ms);
        c.y_format = fmt;
        let points: usize = series
            .iter()
            .chain(&dashed)
            .map(|s| s.points.iter().filter(|p| p.1.is_some()).count())
            .sum();
        c.hover = points <= HOVER_POINTS;
        c.series = series;
        c.dashed = dashed;
        if id.starts_with("signal-") {
            c.bands = self.bands.clone();
        }
        ChartView {
            id: id.to_owned(),
            svg: c.render(),
        }
    }

    /// A stored series' values on the grid, as `read` takes them from each point.
    fn line(
        &self,
        s: &StoredSeries,
        read: impl Fn(&stormwatch_store::SeriesPoint) -> Option<f64>,
    ) -> Vec<(i64, Option<f64>)> {
        on_grid(&self.grid, s.points.iter().map(|p| (p.t, read(p))))
    }

    /// A counter's increase per step as a rate per second.
    fn rate(&self, s: &StoredSeries) -> Vec<(i64, Option<f64>)> {
        self.line(s, |p| {
            p.value.map(|v| v / step_secs(p.t, self.step_s, self.w))
        })
    }
}

/// Steps with 5xx answers as time ranges, adjacent ones merged.
fn failure_bands(grid: &[i64], own: &ServiceOverview, step_s: i64) -> Vec<(i64, i64)> {
    let mut bands: Vec<(i64, i64)> = Vec::new();
    for (t, s) in grid.iter().zip(&own.steps) {
        if s.http_5xx == 0 {
            continue;
        }
        let end = t + step_s * 1000;
        match bands.last_mut() {
            Some(last) if last.1 == *t => last.1 = end,
            _ => bands.push((*t, end)),
        }
    }
    bands
}

/// Latency p95 and requests (with 5xx answers) per second, from the service rollups.
fn request_charts(f: &Frame<'_>, service: &str, own: &ServiceOverview) -> Vec<ChartView> {
    let of = if own.entry_class == "http_server" {
        ""
    } else {
        " (all spans: no server spans)"
    };
    let steps = || f.grid.iter().copied().zip(&own.steps);
    let p95 = Series {
        name: "p95".into(),
        color: palette::ORANGE,
        points: steps().map(|(t, s)| (t, s.quantile_ms(0.95))).collect(),
    };
    let per_s = |t: i64, n: u64| Some(n as f64 / step_secs(t, f.step_s, f.w));
    let requests = Series {
        name: "requests".into(),
        color: palette::BLUE,
        points: steps().map(|(t, s)| (t, per_s(t, s.count))).collect(),
    };
    let failed = Series {
        name: "5xx answers".into(),
        color: palette::VERMILLION,
        points: steps().map(|(t, s)| (t, per_s(t, s.http_5xx))).collect(),
    };
    vec![
        f.chart(
            "signal-latency",
            &format!("{service}: server latency p95{of}"),
            "p95 latency (ms)",
            duration,
            (vec![p95], vec![]),
        ),
        f.chart(
            "signal-requests",
            &format!("{service}: requests per second{of}"),
            "requests/s",
            value_label,
            (vec![requests, failed], vec![]),
        ),
    ]
}

/// " (first 12 of 30 series)" when a chart leaves series out.
fn cut_note(drawn: usize, of: usize) -> String {
    if drawn < of {
        format!(" (first {drawn} of {of} series)")
    } else {
        String::new()
    }
}

/// Requests in flight, each with its limit (dashed) when one is exported beside it:
/// `board.limiter.max`, or any `*.limit` / `*.max` series with the same instance and
/// attributes. Adds the names it drew in full to `drawn`.
async fn in_flight(
    f: &Frame<'_>,
    r: &mut Reader<'_>,
    service: &str,
    names: &[MetricName],
    drawn: &mut HashSet<String>,
) -> Result<Option<ChartView>, WebError> {
    if !names.iter().any(|n| n.name == ACTIVE) {
        return Ok(None);
    }
    let active = r.series(ACTIVE).await?.clone();
    let lines: Vec<&StoredSeries> = active.series.iter().take(MAX_LINES).collect();
    drawn.insert(ACTIVE.to_owned());
    let mut candidates: Vec<&str> = vec![LIMITER_MAX];
    candidates.extend(
        names
            .iter()
            .map(|n| n.name.as_str())
            .filter(|n| *n != LIMITER_MAX && (n.ends_with(".limit") || n.ends_with(".max")))
            .filter(|n| !POOL_MAX.contains(n)),
    );
    let mut dashed = Vec::new();
    for name in candidates {
        if !names.iter().any(|n| n.name == name) {
            continue;
        }
        let limits = r.series(name).await?;
        let mut matched = 0;
        for l in &limits.series {
            if let Some(i) = lines.iter().position(|a| same(a, l)) {
                matched += 1;
                dashed.push(Series {
                    name: format!("{} limit", label(l, &[])),
                    color: color(i),
                    points: f.line(l, |p| p.value),
                });
            }
        }
        if matched > 0 && matched == limits.series.len() {
            drawn.insert(name.to_owned());
        }
    }
    let series = lines
        .iter()
        .enumerate()
        .map(|(i, s)| Series {
            name: label(s, &[]),
            color: color(i),
            points: f.line(s, |p| p.value),
        })
        .collect();
    let unit = lines
        .first()
        .map(|s| unit_label(&s.unit))
        .unwrap_or_default();
    Ok(Some(f.chart(
        "signal-in-flight",
        &format!(
            "{service}: requests in flight{}{}",
            if dashed.is_empty() {
                ""
            } else {
                " and their limit (dashed)"
            },
            cut_note(lines.len(), active.series.len())
        ),
        &format!(
            "in flight ({})",
            if unit.is_empty() {
                "requests".into()
            } else {
                unit
            }
        ),
        value_label,
        (series, dashed),
    )))
}

/// The first of `names` the service exports.
fn first_of<'a>(names: &[MetricName], candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .copied()
        .find(|c| names.iter().any(|n| n.name == *c))
}

/// Connections in use per pool (state `used`), with the pool's size (dashed) and the
/// requests waiting for a connection when exported. Adds the names it drew in full to
/// `drawn`.
async fn pool(
    f: &Frame<'_>,
    r: &mut Reader<'_>,
    service: &str,
    names: &[MetricName],
    drawn: &mut HashSet<String>,
) -> Result<Option<ChartView>, WebError> {
    let Some(usage_name) = first_of(names, POOL_USAGE) else {
        return Ok(None);
    };
    let usage = r.series(usage_name).await?.clone();
    let used_all: Vec<&StoredSeries> = usage
        .series
        .iter()
        .filter(|s| s.attributes.get("state").is_none_or(|v| v == "used"))
        .collect();
    if used_all.is_empty() {
        return Ok(None);
    }
    let used: Vec<&StoredSeries> = used_all.iter().copied().take(MAX_LINES).collect();
    if used.len() == usage.series.len() {
        drawn.insert(usage_name.to_owned());
    }
    let mut series: Vec<Series> = used
        .iter()
        .enumerate()
        .map(|(i, s)| Series {
            name: format!("{} used", label(s, &["state"])),
            color: color(i),
            points: f.line(s, |p| p.value),
        })
        .collect();
    let mut dashed = Vec::new();
    if let Some(max_name) = first_of(names, POOL_MAX) {
        let max = r.series(max_name).await?;
        let mut matched = 0;
        for m in &max.series {
            if let Some(i) = used.iter().position(|u| compatible(m, u)) {
                matched += 1;
                dashed.push(Series {
                    name: format!("{} max", label(m, &[])),
                    color: color(i),
                    points: f.line(m, |p| p.value),
                });
            }
        }
        if matched == max.series.len() {
            drawn.insert(max_name.to_owned());
        }
    }
    if let Some(pending_name) = first_of(names, POOL_PENDING) {
        let pending = r.series(pending_name).await?;
        let waiting: Vec<&StoredSeries> = pending
            .series
            .iter()
            .filter(|p| used.iter().any(|u| compatible(p, u)))
            .take(MAX_LINES)
            .collect();
        if waiting.len() == pending.series.len() {
            drawn.insert(pending_name.to_owned());
        }
        for (j, p) in waiting.into_iter().enumerate() {
            series.push(Series {
                name: format!("{} pending", label(p, &[])),
                color: color(used.len() + j),
                points: f.line(p, |p| p.value),
            });
        }
    }
    Ok(Some(f.chart(
        "signal-pool",
        &format!(
            "{service}: pool connections in use{}{}",
            if dashed.is_empty() {
                ""
            } else {
                " and the pool size (dashed)"
            },
            cut_note(used.len(), used_all.len())
        ),
        "connections",
        value_label,
        (series, dashed),
    )))
}

/// An anchor for a metric's chart.
fn chart_id(n: &MetricName) -> String {
    let name: String = n
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("metric-{name}-{}", n.kind.as_str())
}

/// One metric's chart: gauges and up-down sums as their value, counters as their increase
/// per second, histograms as their mean observation and p95 (dashed).
fn metric_chart(f: &Frame<'_>, n: &MetricName, read: &MetricSeries) -> ChartView {
    let of_kind: Vec<&StoredSeries> = read
        .series
        .iter()
        .filter(|s| s.kind == n.kind && s.unit == n.unit)
        .collect();
    let lines = &of_kind[..of_kind.len().min(MAX_LINES)];
    let unit = unit_label(&n.unit);
    let (mut series, mut dashed) = (Vec::new(), Vec::new());
    for (i, s) in lines.iter().enumerate() {
        let name = label(s, &[]);
        match n.kind {
            MetricKind::Counter => series.push(Series {
                name,
                color: color(i),
                points: f.rate(s),
            }),
            MetricKind::Histogram => {
                series.push(Series {
                    name: format!("{name} mean"),
                    color: color(i),
                    points: f.line(s, |p| p.value),
                });
                dashed.push(Series {
                    name: format!("{name} p95"),
                    color: color(i),
                    points: f.line(s, |p| p.p95),
                });
            }
            MetricKind::Gauge | MetricKind::UpDown | MetricKind::Unspecified => {
                series.push(Series {
                    name,
                    color: color(i),
                    points: f.line(s, |p| p.value),
                })
            }
        }
    }
    let y_desc = match (n.kind, unit.is_empty()) {
        (MetricKind::Counter, true) => "per second".to_owned(),
        (MetricKind::Counter, false) => format!("{unit} per second"),
        (MetricKind::Histogram, true) => "mean and p95 (dashed)".to_owned(),
        (MetricKind::Histogram, false) => format!("{unit}, mean and p95 (dashed)"),
        (_, true) => "value".to_owned(),
        (_, false) => unit,
    };
    let title = format!(
        "{} ({}){}",
        n.name,
        n.kind.as_str(),
        cut_note(lines.len(), of_kind.len())
    );
    f.chart(
        &chart_id(n),
        &title,
        &y_desc,
        y_format(&n.unit),
        (series, dashed),
    )
}

pub async fn metrics(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Path(service): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<MetricsPage, WebError> {
    let w = q.window("1h")?;
    let step_s = w.step_s(120);
    let (from_s, to_s) = w.secs();
    let (from_ns, to_ns) = (
        w.from_ms.saturating_mul(1_000_000),
        w.to_ms.saturating_mul(1_000_000),
    );
    let (overview, names) = tokio::try_join!(
        app.store.service_overview(from_s, to_s, step_s),
        app.store.metric_names(Some(&service), from_ns, to_ns)
    )?;
    let own = overview.into_iter().find(|s| s.service == service);
    let grid = grid(&w, step_s);
    let f = Frame {
        w: &w,
        step_s,
        bands: own
            .as_ref()
            .map(|o| failure_bands(&grid, o, step_s))
            .unwrap_or_default(),
        grid,
    };
    let mut r = Reader {
        store: &app.store,
        service: &service,
        from_ns,
        to_ns,
        step_s,
        read: HashMap::new(),
    };
    let mut signals = own
        .as_ref()
        .map(|o| request_charts(&f, &service, o))
        .unwrap_or_default();
    let mut drawn: HashSet<String> = HashSet::new();
    signals.extend(in_flight(&f, &mut r, &service, &names, &mut drawn).await?);
    signals.extend(pool(&f, &mut r, &service, &names, &mut drawn).await?);
    let mut anchors: HashMap<String, String> = HashMap::new();
    for c in &signals {
        if let Some(name) = match c.id.as_str() {
            "signal-in-flight" => Some(ACTIVE),
            "signal-pool" => first_of(&names, POOL_USAGE),
            _ => None,
        } {
            anchors.insert(name.to_owned(), c.id.clone());
        }
    }
    for name in &drawn {
        if !anchors.contains_key(name) {
            let id = if POOL_MAX.contains(&name.as_str()) || POOL_PENDING.contains(&name.as_str()) {
                "signal-pool"
            } else {
                "signal-in-flight"
            };
            anchors.insert(name.clone(), id.to_owned());
        }
    }
    let rest: Vec<&MetricName> = names.iter().filter(|n| !drawn.contains(&n.name)).collect();
    let mut charts = Vec::new();
    for n in rest.iter().take(MAX_CHARTS) {
        let read = r.series(&n.name).await?;
        let c = metric_chart(&f, n, read);
        anchors.insert(
            format!("{}\0{}\0{}", n.name, n.kind.as_str(), n.unit),
            c.id.clone(),
        );
        charts.push(c);
    }
    let cut = if rest.len() > MAX_CHARTS {
        format!(
            "Charts of the first {MAX_CHARTS} of {} metrics (by name); the table below lists them all.",
            rest.len()
        )
    } else {
        String::new()
    };
    let names = names
        .iter()
        .map(|n| {
            let key = format!("{}\0{}\0{}", n.name, n.kind.as_str(), n.unit);
            let id = anchors.get(&key).or_else(|| anchors.get(&n.name));
            NameRow {
                name: n.name.clone(),
                kind: n.kind.as_str(),
                unit: n.unit.clone(),
                series: n.series,
                href: id.map(|id| format!("#{id}")).unwrap_or_default(),
            }
        })
        .collect();
    let path = format!("/services/{}/metrics", path_segment(&service));
    let mut chrome = Chrome::new("Metrics", path, &w, &q, &viewer).refreshing(30, &q);
    chrome.title = format!("{service}: metrics");
    Ok(MetricsPage {
        chrome,
        service_q: urlencode(&service),
        entry_note: match own.as_ref().map(|o| o.entry_class) {
            Some("http_server") | None => "its server spans",
            Some(_) => "all its spans (it has no server spans)",
        },
        service,
        step_label: format!("{} min", step_s / 60),
        signals,
        charts,
        cut,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_units_and_steps() {
        assert_eq!(value_label(0.0), "0");
        assert_eq!(value_label(0.034), "0.034");
        assert_eq!(value_label(0.5), "0.50");
        assert_eq!(value_label(12.0), "12");
        assert_eq!(value_label(2_500.0), "2.5k");
        assert_eq!(unit_label("{request}"), "requests");
        assert_eq!(unit_label("By"), "bytes");
        assert_eq!(unit_label("1"), "");
        assert_eq!(unit_label("ms"), "ms");
        let w = Window {
            from_ms: 90_000,
            to_ms: 90_000 + 3_600_000,
            preset: None,
        };
        let g = grid(&w, 300);
        assert_eq!(g.first(), Some(&60_000), "from the window's first minute");
        assert_eq!(
            g.len(),
            13,
            "the last step is cut short by the window's end"
        );
        assert_eq!(step_secs(g[0], 300, &w), 300.0);
        // The last step starts at 3,660 s; 30 s of it are in the window: a whole minute.
        assert_eq!(step_secs(g[12], 300, &w), 60.0);
        assert_eq!(
            on_grid(&g[..3], [(120_000, Some(2.0)), (360_000, Some(9.0))]),
            vec![(60_000, None), (360_000, Some(9.0)), (660_000, None)]
        );
    }
}

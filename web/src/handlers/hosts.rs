//! Hosts: CPU, memory and network per agent, from the agents' host samples.

use std::collections::BTreeMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_store::HostPoint;

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::line::{LineChart, Series};
use crate::charts::{palette, short_bytes};
use crate::error::WebError;
use crate::WebState;

pub struct HostRow {
    pub agent: String,
    pub host: String,
    pub cpu: String,
    pub mem: String,
    pub load1: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "hosts/hosts.html")]
pub struct HostsPage {
    pub chrome: Chrome,
    pub charts: Vec<String>,
    pub hosts: Vec<HostRow>,
}

pub async fn hosts(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<HostsPage, WebError> {
    let w = q.window("1h")?;
    let step = w.step_s(120);
    let (from_s, to_s) = w.secs();
    let points = app.store.host_series(from_s, to_s, step).await?;
    let mut by_host: BTreeMap<(String, String), Vec<&HostPoint>> = BTreeMap::new();
    for p in &points {
        by_host
            .entry((p.agent_id.clone(), p.host.clone()))
            .or_default()
            .push(p);
    }
    let name = |agent: &str, host: &str| {
        if agent == host {
            host.to_owned()
        } else {
            format!("{host} ({agent})")
        }
    };
    let color = |i: usize| palette::SERIES[i % palette::SERIES.len()];
    let mut charts = Vec::new();
    let mut chart =
        |title: &str, y: &str, fmt: fn(f64) -> String, f: &dyn Fn(&HostPoint) -> f64| {
            let mut c = LineChart::new(title, y, w.from_ms, w.to_ms);
            c.y_format = fmt;
            c.series = by_host
                .iter()
                .enumerate()
                .map(|(i, ((a, h), ps))| Series {
                    name: name(a, h),
                    color: color(i),
                    points: ps.iter().map(|p| (p.time_ms, Some(f(p)))).collect(),
                })
                .collect();
            charts.push(c.render());
        };
    chart("CPU", "CPU busy (%)", |v| format!("{v:.0} %"), &|p| {
        p.cpu_percent
    });
    chart(
        "Memory used",
        "memory used (%)",
        |v| format!("{v:.0} %"),
        &|p| {
            if p.mem_total_bytes > 0 {
                p.mem_used_bytes / p.mem_total_bytes as f64 * 100.0
            } else {
                0.0
            }
        },
    );
    chart("Network received", "bytes/s", short_bytes, &|p| {
        p.net_rx_bytes_per_s
    });
    chart("Network sent", "bytes/s", short_bytes, &|p| {
        p.net_tx_bytes_per_s
    });
    let hosts = by_host
        .iter()
        .filter_map(|((a, h), ps)| ps.last().map(|p| (a, h, p)))
        .map(|(a, h, p)| HostRow {
            agent: a.clone(),
            host: h.clone(),
            cpu: format!("{:.0} %", p.cpu_percent),
            mem: format!(
                "{} of {}",
                short_bytes(p.mem_used_bytes),
                short_bytes(p.mem_total_bytes as f64)
            ),
            load1: format!("{:.2}", p.load1),
        })
        .collect();
    Ok(HostsPage {
        chrome: Chrome::new("Hosts", "/hosts", &w, &q, &viewer).refreshing(30, &q),
        charts,
        hosts,
    })
}

//! The service map: a page of its own for the selected window, and on an incident's page over
//! the incident's window with its path in vermillion (the services and peers its alerts and
//! first-ranked cause name, and the calls between them).

use std::collections::{BTreeMap, BTreeSet};

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Query, State};
use axum::Extension;
use stormwatch_store::incidents::Incident;
use stormwatch_store::map::ServiceMap;

use super::{Chrome, PageQuery};
use crate::auth::Viewer;
use crate::charts::map::{Edge, Node, NodeKind, ServiceMapChart};
use crate::charts::short_count;
use crate::error::WebError;
use crate::input::urlencode;
use crate::range::duration;
use crate::WebState;

#[derive(Template, WebTemplate)]
#[template(path = "map/map.html")]
pub struct MapPage {
    pub chrome: Chrome,
    pub empty: bool,
    pub map: String,
}

/// What an incident names: its path on the map.
#[derive(Debug, Default)]
pub struct Path {
    pub services: BTreeSet<String>,
    /// Peer names (`board-cache` of `board-cache (redis, 10.0.0.3:6379)`), databases included.
    pub peers: BTreeSet<String>,
}

impl Path {
    pub fn of(i: &Incident) -> Path {
        let mut p = Path::default();
        let top = i.cause.get(0);
        let field = |k: &str| top.and_then(|c| c.get(k)).and_then(|v| v.as_str());
        for a in &i.alerts {
            if let Some(s) = a.labels.get("service") {
                p.services.insert(s.clone());
            }
            for k in ["peer", "database"] {
                if let Some(v) = a.labels.get(k) {
                    p.peers.insert(peer_name(v).to_owned());
                }
            }
        }
        if let Some(s) = field("service") {
            p.services.insert(s.to_owned());
        }
        if let Some(v) = field("peer") {
            p.peers.insert(peer_name(v).to_owned());
        }
        p
    }
}

/// `board-cache` of `board-cache (redis, 10.0.0.3:6379)`.
pub use stormwatch_model::peer::name as peer_name;

fn kind_of(class: &str) -> NodeKind {
    match class {
        "db" => NodeKind::Db,
        "redis" => NodeKind::Redis,
        "messaging" => NodeKind::Messaging,
        _ => NodeKind::Http,
    }
}

fn pct(part: u64, whole: u64) -> String {
    if whole == 0 {
        "0 %".into()
    } else {
        let p = part as f64 * 100.0 / whole as f64;
        if p >= 10.0 || p == 0.0 {
            format!("{p:.0} %")
        } else {
            format!("{p:.1} %")
        }
    }
}

/// The chart of `m`, `path` in vermillion, over a window of `minutes`.
pub fn chart(
    title: &str,
    m: &ServiceMap,
    path: &Path,
    minutes: f64,
    query: &str,
) -> ServiceMapChart {
    let services: BTreeSet<&str> = m.services.iter().map(|s| s.service.as_str()).collect();
    let mut nodes: Vec<Node> = Vec::new();
    for s in &m.services {
        let t = &s.totals;
        let p95 = t
            .quantile_ms(0.95)
            .map(duration)
            .unwrap_or_else(|| "–".into());
        nodes.push(Node {
            id: s.service.clone(),
            label: s.service.clone(),
            kind: NodeKind::Service,
            stats: format!(
                "{}/min · p95 {p95} · {} 5xx",
                short_count(t.count as f64 / minutes),
                pct(t.http_5xx, t.count)
            ),
            title: format!(
                "{}: {} requests ({}), p95 {p95}, {} errors, {} answered 5xx",
                s.service,
                t.count,
                if s.entry_class == "http_server" {
                    "server spans"
                } else {
                    "all spans: no server spans"
                },
                t.errors,
                t.http_5xx
            ),
            href: Some(format!(
                "/scatter?service={}&{query}",
                urlencode(&s.service)
            )),
            hot: path.services.contains(&s.service),
        });
    }
    // A traced HTTP callee is its service's node; every other peer is a node of its own.
    let target = |class: &str, peer: &str| -> String {
        let name = peer_name(peer);
        if class == "http_client" && services.contains(name) {
            name.to_owned()
        } else {
            peer.to_owned()
        }
    };
    let peers: BTreeMap<(&str, &str), _> = m
        .peers
        .iter()
        .map(|p| ((p.class.as_str(), p.peer.as_str()), p))
        .collect();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut edges: Vec<Edge> = Vec::new();
    for e in &m.edges {
        let to = target(&e.class, &e.peer);
        let p95 = peers
            .get(&(e.class.as_str(), e.peer.as_str()))
            .and_then(|p| p.p95_ms)
            .map(duration)
            .unwrap_or_else(|| "–".into());
        if to == e.peer && seen.insert(to.clone()) {
            let p = peers.get(&(e.class.as_str(), e.peer.as_str()));
            let (count, errors) = p.map_or((0, 0), |p| (p.count, p.errors));
            nodes.push(Node {
                id: to.clone(),
                label: peer_name(&e.peer).to_owned(),
                kind: kind_of(&e.class),
                stats: format!(
                    "{}/min · p95 {p95} · {} err",
                    short_count(count as f64 / minutes),
                    pct(errors, count)
                ),
                title: format!(
                    "{} ({}): {count} calls from every service, p95 {p95}, {errors} errors",
                    e.peer, e.class
                ),
                href: Some(format!(
                    "/dependencies?class={}&{query}",
                    urlencode(&e.class)
                )),
                hot: path.peers.contains(peer_name(&e.peer)),
            });
        }
        let hot_peer = path.peers.contains(peer_name(&e.peer));
        let hot = hot_peer && (path.services.is_empty() || path.services.contains(&e.service));
        edges.push(Edge {
            from: e.service.clone(),
            to,
            calls: e.calls,
            title: format!(
                "{} → {} ({}): {} calls ({}/min), {} errors; the peer's p95 {p95}",
                e.service,
                e.peer,
                e.class,
                e.calls,
                short_count(e.calls as f64 / minutes),
                pct(e.errors, e.calls)
            ),
            hot,
        });
    }
    // Callers on a hot edge are on the path too.
    let hot_callers: BTreeSet<String> = edges
        .iter()
        .filter(|e| e.hot)
        .map(|e| e.from.clone())
        .collect();
    for n in &mut nodes {
        n.hot |= hot_callers.contains(&n.id);
    }
    ServiceMapChart {
        title: title.to_owned(),
        nodes,
        edges,
    }
}

pub async fn map(
    State(app): State<WebState>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<PageQuery>,
) -> Result<MapPage, WebError> {
    let w = q.window("1h")?;
    let (from_s, to_s) = w.secs();
    let m = app.store.service_map(from_s, to_s).await?;
    let chrome = Chrome::new("Service map", "/map", &w, &q, &viewer).refreshing(30, &q);
    let minutes = ((to_s - from_s) as f64 / 60.0).max(1.0);
    let chart = chart(
        "Service map: services, the peers they call, and the calls between them",
        &m,
        &Path::default(),
        minutes,
        &chrome.window_query,
    );
    Ok(MapPage {
        empty: m.services.is_empty(),
        map: chart.render(),
        chrome,
    })
}

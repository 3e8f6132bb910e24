//! The service map as inline SVG, written by hand (every node and edge is a link or carries a
//! hover title, which plotters cannot emit). Layered left to right: services nobody calls,
//! then the services they call over HTTP, then the peers that are not services (databases,
//! Redis, outside HTTP, brokers). Within a column, nodes sit near the mean height of their
//! callers, which keeps most edges from crossing. Edges are as thick as the log of their
//! calls; an incident's path is drawn in vermillion.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::{clip, palette, xml_escape};

/// What a node stands for: decides its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NodeKind {
    Service,
    Db,
    Redis,
    Http,
    Messaging,
}

impl NodeKind {
    fn color(self) -> (u8, u8, u8) {
        match self {
            NodeKind::Service => palette::BLUE,
            NodeKind::Db => palette::GREEN,
            NodeKind::Redis => palette::PURPLE,
            NodeKind::Http => palette::SKY,
            NodeKind::Messaging => palette::ORANGE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    /// Unique: a service's name, or a peer as the aggregates spell it.
    pub id: String,
    pub label: String,
    pub kind: NodeKind,
    /// One short line under the label: "1.2k req · p95 34 ms · 0.5 % 5xx".
    pub stats: String,
    /// Hover title (the full figures).
    pub title: String,
    pub href: Option<String>,
    /// On the incident's path.
    pub hot: bool,
}

#[derive(Debug, Clone)]
pub struct Edge {
    pub from: String,
    pub to: String,
    pub calls: u64,
    pub title: String,
    pub hot: bool,
}

#[derive(Debug, Clone)]
pub struct ServiceMapChart {
    pub title: String,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

const NODE_W: f64 = 200.0;
const NODE_H: f64 = 40.0;
const COL_W: f64 = 290.0;
const ROW_H: f64 = 56.0;
const MARGIN: f64 = 12.0;

impl ServiceMapChart {
    /// Column of every node: services nobody calls first, callee services by depth, other
    /// peers last.
    fn columns(&self) -> BTreeMap<&str, usize> {
        let services: BTreeSet<&str> = self
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::Service)
            .map(|n| n.id.as_str())
            .collect();
        let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
        let called: BTreeSet<&str> = self.edges.iter().map(|e| e.to.as_str()).collect();
        let mut frontier: Vec<&str> = services
            .iter()
            .copied()
            .filter(|s| !called.contains(s))
            .collect();
        // A cycle with no entry: start anywhere.
        if frontier.is_empty() {
            frontier.extend(services.iter().next().copied());
        }
        for s in &frontier {
            depth.insert(s, 0);
        }
        while let Some(s) = frontier.pop() {
            let d = depth[s];
            for e in self.edges.iter().filter(|e| e.from == s) {
                let t = e.to.as_str();
                if services.contains(t) && !depth.contains_key(t) && d < services.len() {
                    depth.insert(t, d + 1);
                    frontier.push(t);
                }
            }
        }
        let last = services
            .iter()
            .map(|s| depth.get(s).copied().unwrap_or(0))
            .max()
            .map_or(0, |d| d + 1);
        self.nodes
            .iter()
            .map(|n| {
                let c = if n.kind == NodeKind::Service {
                    depth.get(n.id.as_str()).copied().unwrap_or(0)
                } else {
                    last
                };
                (n.id.as_str(), c)
            })
            .collect()
    }

    /// Top-left corner of every node.
    fn layout(&self) -> (BTreeMap<&str, (f64, f64)>, f64, f64) {
        let columns = self.columns();
        let n_cols = columns.values().max().map_or(1, |m| m + 1);
        let mut pos: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
        let mut rows = 0usize;
        for c in 0..n_cols {
            let mut here: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|n| columns[n.id.as_str()] == c)
                .collect();
            // Near the mean row of the callers already placed; by name among equals.
            let key = |n: &Node| -> f64 {
                let ys: Vec<f64> = self
                    .edges
                    .iter()
                    .filter(|e| e.to == n.id)
                    .filter_map(|e| pos.get(e.from.as_str()).map(|p| p.1))
                    .collect();
                if ys.is_empty() {
                    f64::MAX
                } else {
                    ys.iter().sum::<f64>() / ys.len() as f64
                }
            };
            here.sort_by(|a, b| key(a).total_cmp(&key(b)).then(a.id.cmp(&b.id)));
            rows = rows.max(here.len());
            for (i, n) in here.iter().enumerate() {
                pos.insert(
                    n.id.as_str(),
                    (MARGIN + c as f64 * COL_W, MARGIN + i as f64 * ROW_H),
                );
            }
        }
        let width = MARGIN * 2.0 + (n_cols - 1) as f64 * COL_W + NODE_W;
        let height = MARGIN * 2.0 + (rows.max(1) - 1) as f64 * ROW_H + NODE_H;
        (pos, width, height)
    }

    fn describe(&self) -> String {
        let hot: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.hot)
            .map(|n| n.label.as_str())
            .collect();
        let mut d = format!(
            "{}: {} services and peers, {} connections",
            self.title,
            self.nodes.len(),
            self.edges.len()
        );
        if !hot.is_empty() {
            d.push_str(&format!("; the incident's path: {}", hot.join(", ")));
        }
        d
    }

    pub fn render(&self) -> String {
        let (pos, width, height) = self.layout();
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" class="chart service-map" aria-label="{t}"><title>{t}</title><desc>{d}</desc>"#,
            t = xml_escape(&self.title),
            d = xml_escape(&self.describe())
        );
        s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
        // Edges first, under the nodes; the hot ones last so they are on top.
        let mut edges: Vec<&Edge> = self.edges.iter().collect();
        edges.sort_by_key(|e| e.hot);
        for e in edges {
            let (Some(a), Some(b)) = (pos.get(e.from.as_str()), pos.get(e.to.as_str())) else {
                continue;
            };
            let (x1, y1) = (a.0 + NODE_W, a.1 + NODE_H / 2.0);
            let (x2, y2) = (b.0, b.1 + NODE_H / 2.0);
            // A callee to the left (a cycle) goes round below.
            let bend = ((x2 - x1).abs() / 2.0).max(40.0);
            let w = 1.0 + (e.calls.max(1) as f64).log10().min(5.0);
            let (color, class) = if e.hot {
                (palette::hex(palette::VERMILLION), "edge hot")
            } else {
                ("#9A9A9A".to_owned(), "edge")
            };
            let _ = write!(
                s,
                r#"<path class="{class}" d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="{color}" stroke-width="{w:.1}" stroke-opacity="0.8"><title>{}</title></path>"#,
                x1 + bend,
                x2 - bend,
                xml_escape(&e.title)
            );
        }
        for n in &self.nodes {
            let Some((x, y)) = pos.get(n.id.as_str()) else {
                continue;
            };
            let (stroke, sw) = if n.hot {
                (palette::hex(palette::VERMILLION), 3)
            } else {
                (palette::hex(n.kind.color()), 1)
            };
            let open = n.href.as_ref().map_or(String::new(), |h| {
                format!(r#"<a href="{}">"#, xml_escape(h))
            });
            let close = if n.href.is_some() { "</a>" } else { "" };
            let _ = write!(
                s,
                r##"{open}<g class="node{}" data-id="{}"><title>{}</title><rect x="{x:.1}" y="{y:.1}" width="{NODE_W}" height="{NODE_H}" rx="6" fill="white" stroke="{stroke}" stroke-width="{sw}"/><rect x="{x:.1}" y="{y:.1}" width="6" height="{NODE_H}" rx="2" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12" font-family="sans-serif" fill="#111">{}</text><text x="{:.1}" y="{:.1}" font-size="10" font-family="sans-serif" fill="#555">{}</text></g>{close}"##,
                if n.hot { " hot" } else { "" },
                xml_escape(&n.id),
                xml_escape(&n.title),
                palette::hex(n.kind.color()),
                x + 12.0,
                y + 16.0,
                xml_escape(&clip(&n.label, 28)),
                x + 12.0,
                y + 31.0,
                xml_escape(&clip(&n.stats, 36)),
            );
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, kind: NodeKind, hot: bool) -> Node {
        Node {
            id: id.into(),
            label: id.into(),
            kind,
            stats: "10 req".into(),
            title: format!("{id} <figures>"),
            href: Some(format!("/scatter?service={id}&x=1")),
            hot,
        }
    }

    fn edge(from: &str, to: &str, hot: bool) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            calls: 1200,
            title: format!("{from} → {to}"),
            hot,
        }
    }

    #[test]
    fn callers_left_callees_in_the_middle_peers_right_and_the_path_in_vermillion() {
        let m = ServiceMapChart {
            title: "Service map".into(),
            nodes: vec![
                node("board", NodeKind::Service, true),
                node("partner", NodeKind::Service, false),
                node("board-cache (redis, 10.0.0.3:6379)", NodeKind::Redis, true),
                node(
                    "board-primary (postgres, 10.0.0.4:5432)",
                    NodeKind::Db,
                    false,
                ),
            ],
            edges: vec![
                edge("board", "partner", false),
                edge("board", "board-cache (redis, 10.0.0.3:6379)", true),
                edge("partner", "board-primary (postgres, 10.0.0.4:5432)", false),
            ],
        };
        let cols = m.columns();
        assert_eq!(cols["board"], 0);
        assert_eq!(cols["partner"], 1);
        assert_eq!(cols["board-cache (redis, 10.0.0.3:6379)"], 2);
        assert_eq!(cols["board-primary (postgres, 10.0.0.4:5432)"], 2);
        let svg = m.render();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let hot: Vec<_> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("edge hot"))
            .collect();
        assert_eq!(hot.len(), 1);
        assert_eq!(hot[0].attribute("stroke"), Some("#D55E00"));
        assert_eq!(
            doc.descendants()
                .filter(|n| n.attribute("class") == Some("node hot"))
                .count(),
            2
        );
        assert!(svg.contains("board &lt;figures&gt;"), "titles escaped");
        assert!(svg.contains("href=\"/scatter?service=board&amp;x=1\""));
        assert!(
            svg.contains("the incident&#39;s path: board, board-cache"),
            "{svg}"
        );
    }

    #[test]
    fn a_cycle_without_an_entry_still_lays_out() {
        let m = ServiceMapChart {
            title: "m".into(),
            nodes: vec![
                node("a", NodeKind::Service, false),
                node("b", NodeKind::Service, false),
            ],
            edges: vec![edge("a", "b", false), edge("b", "a", false)],
        };
        let cols = m.columns();
        assert_eq!((cols["a"], cols["b"]), (0, 1));
        roxmltree::Document::parse(&m.render()).expect("well-formed");
    }
}

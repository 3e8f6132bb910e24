//! An incident's timeline: one SVG strip on one time axis, written by hand (every mark
//! carries its own hover title, which plotters cannot emit). From top to bottom:
//! - lanes of bars: each alert from firing to resolved, each database's failed probes;
//! - rows of small line charts (the p95 of the affected operations and of the top cause, lag,
//!   flag counts), each with its own scale and a dot per point whose title holds the value;
//! - vertical marks (change events) across everything, and the incident's own span shaded.
//!
//! Works without JavaScript: the titles are SVG `<title>` elements.

use std::fmt::Write;

use super::{clip, palette, xml_escape};
use crate::range::axis_label;

/// One bar of a lane.
#[derive(Debug, Clone)]
pub struct Bar {
    pub from_ms: i64,
    pub to_ms: i64,
    pub title: String,
    pub color: (u8, u8, u8),
}

/// A labelled row of bars.
#[derive(Debug, Clone)]
pub struct Lane {
    pub label: String,
    pub bars: Vec<Bar>,
}

/// A labelled row holding one small line chart.
#[derive(Debug, Clone)]
pub struct Strip {
    pub label: String,
    pub color: (u8, u8, u8),
    /// (Unix ms, value); `None` breaks the line.
    pub points: Vec<(i64, Option<f64>)>,
    /// Formats a value for the titles and the scale.
    pub format: fn(f64) -> String,
}

/// A moment across the whole timeline: a change event.
#[derive(Debug, Clone)]
pub struct Mark {
    pub at_ms: i64,
    pub title: String,
}

#[derive(Debug, Clone)]
pub struct Timeline {
    pub title: String,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The incident: shaded.
    pub span: (i64, i64),
    pub lanes: Vec<Lane>,
    pub strips: Vec<Strip>,
    pub marks: Vec<Mark>,
}

const WIDTH: f64 = 960.0;
const LABEL_W: f64 = 230.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 8.0;
const LANE_H: f64 = 20.0;
const STRIP_H: f64 = 46.0;
const AXIS_H: f64 = 28.0;
const TICKS: i64 = 6;

fn rgb(c: (u8, u8, u8)) -> String {
    palette::hex(c)
}

/// Shortens a label to `max` characters.
impl Timeline {
    fn x(&self, ms: i64) -> f64 {
        let span = (self.to_ms - self.from_ms).max(1) as f64;
        let ms = ms.clamp(self.from_ms, self.to_ms);
        LABEL_W + (ms - self.from_ms) as f64 / span * (WIDTH - LABEL_W - RIGHT)
    }

    /// The text alternative.
    fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        for l in &self.lanes {
            parts.push(format!("{}: {} period(s)", l.label, l.bars.len()));
        }
        for s in &self.strips {
            let max = s
                .points
                .iter()
                .filter_map(|p| p.1)
                .fold(f64::NEG_INFINITY, f64::max);
            if max.is_finite() {
                parts.push(format!("{}: up to {}", s.label, (s.format)(max)));
            }
        }
        if !self.marks.is_empty() {
            parts.push(format!("{} change event(s)", self.marks.len()));
        }
        format!("{}. {}", self.title, parts.join("; "))
    }

    /// The timeline as an inline `<svg>`.
    pub fn render(&self) -> String {
        let rows_h = self.lanes.len() as f64 * LANE_H + self.strips.len() as f64 * STRIP_H;
        let height = TOP + rows_h + AXIS_H;
        let bottom = TOP + rows_h;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img" class="chart timeline" aria-label="{t}"><title>{t}</title><desc>{d}</desc>"#,
            t = xml_escape(&self.title),
            d = xml_escape(&self.describe()),
        );
        s.push_str(r#"<rect width="100%" height="100%" fill="white"/>"#);
        // The incident's span, shaded behind everything.
        let (a, z) = (self.x(self.span.0), self.x(self.span.1));
        let _ = write!(
            s,
            r#"<rect class="incident-span" x="{a:.1}" y="{TOP}" width="{:.1}" height="{rows_h}" fill="{}" fill-opacity="0.08"><title>the incident: {} – {}</title></rect>"#,
            (z - a).max(1.0),
            rgb(palette::VERMILLION),
            axis_label(self.span.0, self.to_ms - self.from_ms),
            axis_label(self.span.1, self.to_ms - self.from_ms),
        );
        let mut y = TOP;
        for lane in &self.lanes {
            self.row_label(&mut s, y, LANE_H, &lane.label);
            for b in &lane.bars {
                let (a, z) = (self.x(b.from_ms), self.x(b.to_ms));
                let _ = write!(
                    s,
                    r#"<rect class="bar" x="{a:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="2" fill="{}"><title>{}</title></rect>"#,
                    y + 3.0,
                    (z - a).max(2.0),
                    LANE_H - 6.0,
                    rgb(b.color),
                    xml_escape(&b.title)
                );
            }
            y += LANE_H;
        }
        for strip in &self.strips {
            self.row_label(&mut s, y, STRIP_H, &strip.label);
            self.strip(&mut s, y, strip);
            y += STRIP_H;
        }
        // Grid and time axis.
        let window = self.to_ms - self.from_ms;
        for i in 0..=TICKS {
            let t = self.from_ms + window * i / TICKS;
            let x = self.x(t);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="#E6E6E6"/><text x="{x:.1}" y="{:.1}" font-size="11" font-family="sans-serif" text-anchor="middle" fill="#333">{}</text>"##,
                bottom + 14.0,
                xml_escape(&axis_label(t, window))
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="11" font-family="sans-serif" text-anchor="end" fill="#555">time (UTC)</text>"##,
            WIDTH - RIGHT,
            bottom + 26.0
        );
        for m in &self.marks {
            let x = self.x(m.at_ms);
            let _ = write!(
                s,
                r#"<g class="change"><line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{bottom}" stroke="{c}" stroke-width="2" stroke-dasharray="4 3"/><rect x="{:.1}" y="{TOP}" width="8" height="{bottom_h}" fill="{c}" fill-opacity="0.01"/><title>{}</title></g>"#,
                x - 4.0,
                xml_escape(&m.title),
                c = rgb(palette::PURPLE),
                bottom_h = rows_h,
            );
        }
        s.push_str("</svg>");
        s
    }

    fn row_label(&self, s: &mut String, y: f64, h: f64, label: &str) {
        let _ = write!(
            s,
            r##"<line x1="0" y1="{y:.1}" x2="{WIDTH}" y2="{y:.1}" stroke="#F0F0F0"/><text x="4" y="{:.1}" font-size="11" font-family="sans-serif" fill="#222">{}<title>{}</title></text>"##,
            y + h / 2.0 + 4.0,
            xml_escape(&clip(label, 36)),
            xml_escape(label)
        );
    }

    fn strip(&self, s: &mut String, y: f64, strip: &Strip) {
        let max = strip
            .points
            .iter()
            .filter_map(|p| p.1)
            .fold(0.0f64, f64::max);
        let max = if max <= 0.0 { 1.0 } else { max };
        let (top, h) = (y + 6.0, STRIP_H - 12.0);
        let py = |v: f64| top + h - v / max * h;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" font-family="sans-serif" text-anchor="end" fill="#777">{}</text>"##,
            LABEL_W - 4.0,
            top + 8.0,
            xml_escape(&(strip.format)(max))
        );
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (t, v) in &strip.points {
            match v {
                Some(v) => runs
                    .last_mut()
                    .expect("never empty")
                    .push((self.x(*t), py(*v))),
                None if !runs.last().expect("never empty").is_empty() => runs.push(Vec::new()),
                None => {}
            }
        }
        let color = rgb(strip.color);
        for run in runs.iter().filter(|r| r.len() > 1) {
            let pts: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.5"/>"#,
                pts.join(" ")
            );
        }
        let window = self.to_ms - self.from_ms;
        for (t, v) in &strip.points {
            if let Some(v) = v {
                let _ = write!(
                    s,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"><title>{}: {} {}</title></circle>"#,
                    self.x(*t),
                    py(*v),
                    xml_escape(&strip.label),
                    xml_escape(&axis_label(*t, window)),
                    xml_escape(&(strip.format)(*v))
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mark_has_a_title_and_the_document_is_well_formed() {
        let t = Timeline {
            title: "incident #3 <redis>".into(),
            from_ms: 0,
            to_ms: 600_000,
            span: (120_000, 300_000),
            lanes: vec![Lane {
                label: "dependency-latency redis · board-cache (redis, 10.0.0.3:6379) & more"
                    .into(),
                bars: vec![Bar {
                    from_ms: 120_000,
                    to_ms: 300_000,
                    title: "p95 of redis → board-cache is 948 ms".into(),
                    color: palette::VERMILLION,
                }],
            }],
            strips: vec![Strip {
                label: "p95 redis board-cache".into(),
                color: palette::BLUE,
                points: vec![
                    (0, Some(2.0)),
                    (60_000, Some(2.1)),
                    (120_000, None),
                    (180_000, Some(948.0)),
                    (240_000, Some(900.0)),
                    (300_000, None),
                    (360_000, Some(5.0)),
                ],
                format: crate::range::duration,
            }],
            marks: vec![Mark {
                at_ms: 100_000,
                title: "board 1.4.2 appeared".into(),
            }],
        };
        let svg = t.render();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let titled = |tag: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name(tag) && n.parent().is_some_and(|p| p.is_element()))
                .filter(|n| n.children().any(|c| c.has_tag_name("title")))
                .count()
        };
        assert_eq!(titled("circle"), 5, "one dot per value");
        assert_eq!(
            doc.descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count(),
            2,
            "gaps break the line, a single point has no line"
        );
        assert!(svg.contains("<title>p95 of redis → board-cache is 948 ms</title>"));
        assert!(svg.contains("<title>board 1.4.2 appeared</title>"));
        assert!(
            svg.contains("948 ms"),
            "the value in the dot's title: {svg}"
        );
        assert!(svg.contains("incident #3 &lt;redis&gt;"));
        let bar = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("bar"))
            .unwrap();
        let x: f64 = bar.attribute("x").unwrap().parse().unwrap();
        let w: f64 = bar.attribute("width").unwrap().parse().unwrap();
        // 120 s to 300 s of a 600 s axis.
        let plot = WIDTH - LABEL_W - RIGHT;
        assert!((x - (LABEL_W + 0.2 * plot)).abs() < 0.2, "{x}");
        assert!((w - 0.3 * plot).abs() < 0.2, "{w}");
    }
}

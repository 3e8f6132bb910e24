//! The scatter (Scouter's XLog): one dot per kept span, x = end time, y = duration, errors in
//! vermillion, each dot a link to its trace. Written by hand: plotters cannot wrap marks in
//! links, and 50k dots must be cheap (one `write!` per dot).

use std::fmt::Write;

use stormwatch_model::hexid;
use stormwatch_store::ScatterPoint;

use super::{palette, xml_escape};
use crate::range::{axis_label, duration};

pub const WIDTH: f64 = 960.0;
pub const HEIGHT: f64 = 420.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 36.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 40.0;

/// What to draw.
pub struct Scatter<'a> {
    pub title: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    /// The y range in milliseconds; `None` fits the data.
    pub y_min_ms: Option<f64>,
    pub y_max_ms: Option<f64>,
    pub log: bool,
    pub points: &'a [ScatterPoint],
}

/// The y range: fitted to the data (log: whole decades) unless given.
fn y_range(s: &Scatter) -> (f64, f64) {
    let durs = s.points.iter().map(|p| p.duration_ns as f64 / 1e6);
    let (lo, hi) = durs.fold((f64::INFINITY, 0.0f64), |(lo, hi), d| {
        (lo.min(d), hi.max(d))
    });
    let (lo, hi) = if s.points.is_empty() {
        (1.0, 1000.0)
    } else {
        (lo, hi)
    };
    if s.log {
        let lo = s
            .y_min_ms
            .filter(|v| *v > 0.0)
            .unwrap_or_else(|| 10f64.powf(lo.max(0.001).log10().floor()));
        let hi = s
            .y_max_ms
            .unwrap_or_else(|| 10f64.powf(hi.max(lo * 10.0).log10().ceil()));
        (lo, hi.max(lo * 1.001))
    } else {
        let lo = s.y_min_ms.unwrap_or(0.0);
        let hi = s.y_max_ms.unwrap_or(hi * 1.05).max(lo + 0.001);
        (lo, hi)
    }
}

impl Scatter<'_> {
    /// The chart as an inline `<svg>`.
    pub fn render(&self) -> String {
        let pw = WIDTH - LEFT - RIGHT;
        let ph = HEIGHT - TOP - BOTTOM;
        let (y0, y1) = y_range(self);
        let to = self.to_ms.max(self.from_ms + 1);
        let span_ms = (to - self.from_ms) as f64;
        let ty = |ms: f64| -> f64 {
            let f = if self.log {
                (ms.max(y0).log10() - y0.log10()) / (y1.log10() - y0.log10())
            } else {
                (ms - y0) / (y1 - y0)
            };
            TOP + ph - f.clamp(0.0, 1.0) * ph
        };
        let tx = |ms: i64| LEFT + ((ms - self.from_ms) as f64 / span_ms).clamp(0.0, 1.0) * pw;
        let errors = self.points.iter().filter(|p| p.is_error).count();
        let desc = self.describe(errors);
        let mut out = String::with_capacity(200 + self.points.len() * 80);
        let _ = write!(
            out,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             role=\"img\" class=\"chart scatter\" aria-label=\"{t}\" id=\"scatter\" \
             data-x0=\"{x0}\" data-x1=\"{x1}\" data-y0=\"{y0}\" data-y1=\"{y1}\" data-log=\"{log}\" \
             data-left=\"{LEFT}\" data-top=\"{TOP}\" data-pw=\"{pw}\" data-ph=\"{ph}\">\
             <title>{t}</title><desc>{d}</desc>\
             <rect class=\"frame\" x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"#fff\" stroke=\"#bbb\"/>\
             <text x=\"{cx}\" y=\"16\" text-anchor=\"middle\" class=\"chart-title\">{t}</text>",
            t = xml_escape(self.title),
            d = xml_escape(&desc),
            x0 = self.from_ms,
            x1 = to,
            log = self.log,
            cx = WIDTH / 2.0,
        );
        // Y ticks: decades (log) or five even steps (linear).
        let mut ticks = Vec::new();
        if self.log {
            let mut v = 10f64.powf(y0.log10().ceil());
            while v <= y1 * 1.0001 {
                ticks.push(v);
                v *= 10.0;
            }
        } else {
            for i in 0..=5 {
                ticks.push(y0 + (y1 - y0) * i as f64 / 5.0);
            }
        }
        out.push_str("<g class=\"axis\" font-size=\"11\" fill=\"#333\">");
        for v in ticks {
            let y = ty(v);
            let _ = write!(
                out,
                "<line x1=\"{LEFT}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{lx}\" y=\"{ly:.1}\" text-anchor=\"end\">{label}</text>",
                x2 = LEFT + pw,
                lx = LEFT - 4.0,
                ly = y + 4.0,
                label = xml_escape(&duration(v)),
            );
        }
        for i in 0..=6 {
            let ms = self.from_ms + ((to - self.from_ms) as f64 * i as f64 / 6.0) as i64;
            let x = tx(ms);
            let _ = write!(
                out,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{yb}\" stroke=\"#eee\"/>\
                 <text x=\"{x:.1}\" y=\"{ly}\" text-anchor=\"middle\">{label}</text>",
                yb = TOP + ph,
                ly = TOP + ph + 14.0,
                label = axis_label(ms, to - self.from_ms),
            );
        }
        let _ = write!(
            out,
            "<text x=\"{cx}\" y=\"{by}\" text-anchor=\"middle\">end time (UTC)</text>\
             <text transform=\"translate(12 {my}) rotate(-90)\" text-anchor=\"middle\">duration ({scale})</text></g>",
            cx = LEFT + pw / 2.0,
            by = HEIGHT - 6.0,
            my = TOP + ph / 2.0,
            scale = if self.log { "log scale" } else { "linear" },
        );
        for (class, color, want_error) in [
            ("dots ok", palette::BLUE, false),
            ("dots error", palette::VERMILLION, true),
        ] {
            let _ = write!(
                out,
                "<g class=\"{class}\" fill=\"{}\">",
                palette::hex(color)
            );
            for p in self.points.iter().filter(|p| p.is_error == want_error) {
                let _ = write!(
                    out,
                    "<a href=\"/traces/{}\"><circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\"/></a>",
                    hexid::encode(&p.trace_id),
                    tx(p.end_ns / 1_000_000),
                    ty(p.duration_ns as f64 / 1e6),
                );
            }
            out.push_str("</g>");
        }
        out.push_str("<rect class=\"zoom\" x=\"0\" y=\"0\" width=\"0\" height=\"0\"/></svg>");
        out
    }

    fn describe(&self, errors: usize) -> String {
        if self.points.is_empty() {
            return "No kept spans in this window and filter.".into();
        }
        let mut d: Vec<i64> = self.points.iter().map(|p| p.duration_ns).collect();
        d.sort_unstable();
        let q = |f: f64| d[((d.len() - 1) as f64 * f).round() as usize] as f64 / 1e6;
        format!(
            "{} kept spans, {} errors; duration median {}, 99th percentile {}, longest {}.",
            self.points.len(),
            errors,
            duration(q(0.5)),
            duration(q(0.99)),
            duration(q(1.0))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_linked_circle_per_point_errors_apart() {
        let points: Vec<ScatterPoint> = (0..100)
            .map(|i| ScatterPoint {
                end_ns: i * 1_000_000_000,
                duration_ns: (i + 1) * 1_000_000,
                trace_id: vec![i as u8; 16],
                is_error: i % 10 == 0,
            })
            .collect();
        for log in [true, false] {
            let svg = Scatter {
                title: "Spans <board>",
                from_ms: 0,
                to_ms: 100_000,
                y_min_ms: None,
                y_max_ms: None,
                log,
                points: &points,
            }
            .render();
            let doc = roxmltree::Document::parse(&svg).expect("well-formed");
            let group = |class: &str| {
                doc.descendants()
                    .find(|n| n.attribute("class") == Some(class))
                    .unwrap()
                    .descendants()
                    .filter(|n| n.has_tag_name("circle"))
                    .count()
            };
            assert_eq!(group("dots ok"), 90);
            assert_eq!(group("dots error"), 10);
            let links = doc.descendants().filter(|n| n.has_tag_name("a")).count();
            assert_eq!(links, 100);
            assert!(svg.contains("href=\"/traces/0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a\""));
            assert!(svg.contains("<title>Spans &lt;board&gt;</title>"));
        }
    }
}

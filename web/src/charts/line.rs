//! Time-series line charts and sparklines, drawn with plotters' SVG backend.

use plotters::prelude::*;

use super::{accessible, palette, xml_escape};
use crate::range::axis_label;

/// One line: a name for the legend and points (Unix ms, value); `None` breaks the line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub color: (u8, u8, u8),
    pub points: Vec<(i64, Option<f64>)>,
}

/// The unbroken runs of `points` (a `None` breaks the line), each non-empty.
fn runs(points: &[(i64, Option<f64>)]) -> Vec<Vec<(i64, f64)>> {
    let mut runs: Vec<Vec<(i64, f64)>> = vec![Vec::new()];
    for (t, v) in points {
        match v {
            Some(v) => runs.last_mut().expect("never empty").push((*t, *v)),
            None if !runs.last().expect("never empty").is_empty() => runs.push(Vec::new()),
            None => {}
        }
    }
    runs.retain(|r| !r.is_empty());
    runs
}

/// A line chart over a time window.
#[derive(Debug, Clone)]
pub struct LineChart<'a> {
    pub title: &'a str,
    /// The y axis' description, with its unit ("p95 latency (ms)").
    pub y_desc: &'a str,
    pub from_ms: i64,
    pub to_ms: i64,
    pub series: Vec<Series>,
    /// Lines drawn dashed, after the solid ones: limits and capacities (a limiter's maximum, a
    /// pool's size) beside what they bound, or a second reading of a series (a p95 beside its
    /// mean), usually in the colour of the series they go with.
    pub dashed: Vec<Series>,
    /// Time ranges shaded red (vermillion): refusal windows, outages.
    pub bands: Vec<(i64, i64)>,
    /// A horizontal threshold line and its label.
    pub threshold: Option<(f64, String)>,
    /// Formats y values on the axis and in the text alternative.
    pub y_format: fn(f64) -> String,
    /// A hover title on every point ("series: 08:15 12 ms"), as an invisible dot over it.
    /// Off by default: each point adds about 150 bytes to the page.
    pub hover: bool,
    pub width: u32,
    pub height: u32,
}

impl LineChart<'_> {
    /// Sensible defaults: 720×240, values printed with [`super::short_count`].
    pub fn new<'a>(title: &'a str, y_desc: &'a str, from_ms: i64, to_ms: i64) -> LineChart<'a> {
        LineChart {
            title,
            y_desc,
            from_ms,
            to_ms,
            series: Vec::new(),
            dashed: Vec::new(),
            bands: Vec::new(),
            threshold: None,
            y_format: super::short_count,
            hover: false,
            width: 720,
            height: 240,
        }
    }

    /// The text alternative: per series its last, smallest and largest value.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let dashed = self.dashed.iter().map(|s| (s, " (dashed)"));
        for (s, style) in self.series.iter().map(|s| (s, "")).chain(dashed) {
            let vals: Vec<f64> = s.points.iter().filter_map(|(_, v)| *v).collect();
            if vals.is_empty() {
                parts.push(format!("{}{style}: no data", s.name));
                continue;
            }
            let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let last = vals[vals.len() - 1];
            parts.push(format!(
                "{}{style}: last {}, min {}, max {}",
                s.name,
                (self.y_format)(last),
                (self.y_format)(min),
                (self.y_format)(max)
            ));
        }
        if !self.bands.is_empty() {
            parts.push(format!("{} shaded failure window(s)", self.bands.len()));
        }
        if let Some((t, label)) = &self.threshold {
            parts.push(format!("threshold {label} at {}", (self.y_format)(*t)));
        }
        format!("{} ({}). {}", self.title, self.y_desc, parts.join("; "))
    }

    /// The chart as an inline `<svg>`.
    pub fn render(&self) -> String {
        let mut buf = String::new();
        let ymax = self
            .series
            .iter()
            .chain(&self.dashed)
            .flat_map(|s| s.points.iter().filter_map(|(_, v)| *v))
            .chain(self.threshold.as_ref().map(|(t, _)| *t))
            .fold(0.0f64, f64::max);
        let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
        let to = self.to_ms.max(self.from_ms + 1);
        let window = to - self.from_ms;
        let mut dots: Vec<String> = Vec::new();
        let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
            let root =
                SVGBackend::with_string(&mut buf, (self.width, self.height)).into_drawing_area();
            root.fill(&WHITE)?;
            let mut chart = ChartBuilder::on(&root)
                .caption(self.title, ("sans-serif", 15))
                .margin(6)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(self.from_ms..to, 0f64..ymax)?;
            let yf = self.y_format;
            chart
                .configure_mesh()
                .x_labels(6)
                .y_labels(5)
                .x_label_formatter(&|x| axis_label(*x, window))
                .y_label_formatter(&|y| yf(*y))
                .y_desc(self.y_desc)
                .x_desc("time (UTC)")
                .label_style(("sans-serif", 11))
                .axis_desc_style(("sans-serif", 11))
                .light_line_style(RGBColor(235, 235, 235))
                .bold_line_style(RGBColor(215, 215, 215))
                .draw()?;
            let (r, g, b) = palette::VERMILLION;
            for (a, z) in &self.bands {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(*a.max(&self.from_ms), ymax), (*z.min(&to), 0.0)],
                    RGBColor(r, g, b).mix(0.25).filled(),
                )))?;
            }
            let dashed = self.dashed.iter().map(|s| (s, true));
            for (s, is_dashed) in self.series.iter().map(|s| (s, false)).chain(dashed) {
                let (r, g, b) = s.color;
                let style = RGBColor(r, g, b).stroke_width(2);
                let mut labelled = false;
                for run in runs(&s.points) {
                    if self.hover {
                        for (t, v) in &run {
                            let (x, y) = chart.backend_coord(&(*t, *v));
                            dots.push(format!(
                                r##"<circle cx="{x}" cy="{y}" r="4" fill="#000" fill-opacity="0"><title>{}: {} {}</title></circle>"##,
                                xml_escape(&s.name),
                                xml_escape(&axis_label(*t, window)),
                                xml_escape(&yf(*v))
                            ));
                        }
                    }
                    let series = match (run.len(), is_dashed) {
                        (1, _) => chart.draw_series(
                            run.into_iter().map(|p| Circle::new(p, 2, style.filled())),
                        )?,
                        (_, false) => chart.draw_series(LineSeries::new(run, style))?,
                        (_, true) => chart.draw_series(DashedLineSeries::new(run, 6, 4, style))?,
                    };
                    if !labelled {
                        let swatch = RGBColor(r, g, b).stroke_width(2);
                        let series = series.label(s.name.clone());
                        if is_dashed {
                            series.legend(move |(x, y)| {
                                EmptyElement::at((x, y))
                                    + PathElement::new(vec![(0, 0), (5, 0)], swatch)
                                    + PathElement::new(vec![(9, 0), (14, 0)], swatch)
                            });
                        } else {
                            series.legend(move |(x, y)| {
                                PathElement::new(vec![(x, y), (x + 14, y)], swatch)
                            });
                        }
                        labelled = true;
                    }
                }
            }
            if let Some((t, label)) = &self.threshold {
                let (r, g, b) = palette::VERMILLION;
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(self.from_ms, *t), (to, *t)],
                        6,
                        4,
                        RGBColor(r, g, b).stroke_width(1),
                    ))?
                    .label(label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], RGBColor(r, g, b))
                    });
            }
            if !self.series.is_empty() {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperLeft)
                    .label_font(("sans-serif", 11))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(200, 200, 200))
                    .draw()?;
            }
            root.present()?;
            Ok(())
        })();
        if let Err(error) = drawn {
            tracing::warn!(%error, title = self.title, "drawing a chart failed");
        }
        if !dots.is_empty() {
            if let Some(end) = buf.rfind("</svg>") {
                buf.insert_str(end, &format!("<g class=\"points\">{}</g>", dots.concat()));
            }
        }
        accessible(buf, "line", self.title, &self.describe())
    }
}

/// A small chart without axes: one value per step (`None`: no data), 120×28.
pub fn sparkline(title: &str, values: &[Option<f64>], color: (u8, u8, u8)) -> String {
    let (w, h) = (120u32, 28u32);
    let mut buf = String::new();
    let max = values.iter().flatten().copied().fold(0.0f64, f64::max);
    let max = if max <= 0.0 { 1.0 } else { max };
    let n = values.len().max(2) as f64 - 1.0;
    let drawn = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut buf, (w, h)).into_drawing_area();
        let mut chart = ChartBuilder::on(&root)
            .margin(2)
            .build_cartesian_2d(0f64..n, 0f64..max)?;
        let (r, g, b) = color;
        let points = values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as f64, v.unwrap_or(0.0)));
        chart.draw_series(LineSeries::new(points, RGBColor(r, g, b).stroke_width(1)))?;
        root.present()?;
        Ok(())
    })();
    if let Err(error) = drawn {
        tracing::warn!(%error, title, "drawing a sparkline failed");
    }
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let desc = match (present.first(), present.last()) {
        (Some(_), Some(last)) => format!(
            "{title}: {} points, last {}, max {}",
            values.len(),
            super::short_count(*last),
            super::short_count(max)
        ),
        _ => format!("{title}: no data"),
    };
    accessible(buf, "sparkline", title, &desc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc_count(svg: &str, tag: &str) -> usize {
        let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
        doc.descendants().filter(|n| n.has_tag_name(tag)).count()
    }

    #[test]
    fn line_chart_is_well_formed_with_one_polyline_per_run_and_a_band() {
        let mut c = LineChart::new("Redis p95", "p95 latency (ms)", 0, 600_000);
        c.series.push(Series {
            name: "redis <&> \"x\"".into(),
            color: palette::BLUE,
            points: vec![
                (0, Some(1.0)),
                (60_000, Some(2.0)),
                (120_000, None),
                (180_000, Some(50.0)),
                (240_000, Some(3.0)),
            ],
        });
        c.bands.push((300_000, 360_000));
        c.threshold = Some((40.0, "limit".into()));
        let svg = c.render();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let root = doc.root_element();
        assert_eq!(root.attribute("role"), Some("img"));
        assert_eq!(
            root.children()
                .find(|n| n.has_tag_name("title"))
                .and_then(|n| n.text()),
            Some("Redis p95")
        );
        let desc = root
            .children()
            .find(|n| n.has_tag_name("desc"))
            .unwrap()
            .text()
            .unwrap();
        assert!(desc.contains("max 50"), "{desc}");
        // The series' marks: two runs (the gap breaks the line) plus its legend swatch.
        let stroked = |color: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some(color))
                .count()
        };
        assert_eq!(stroked("#0072B2"), 2 + 1, "{svg}");
        // One shaded band.
        let bands = doc
            .descendants()
            .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#D55E00"))
            .count();
        assert_eq!(bands, 1);
        assert!(stroked("#D55E00") > 1, "the threshold is dashed");
        assert!(svg.contains("time (UTC)"));
        assert!(
            svg.contains("redis &lt;&amp;&gt;"),
            "legend text is escaped"
        );
    }

    #[test]
    fn dashed_series_and_hover_titles() {
        let mut c = LineChart::new("In flight <board>", "requests", 0, 600_000);
        c.series.push(Series {
            name: "app-1".into(),
            color: palette::BLUE,
            points: vec![(0, Some(3.0)), (60_000, Some(40.0)), (120_000, None)],
        });
        c.dashed.push(Series {
            name: "app-1 limit".into(),
            color: palette::BLUE,
            points: vec![(0, Some(40.0)), (60_000, Some(40.0)), (120_000, Some(40.0))],
        });
        let plain = c.render();
        assert!(
            !plain.contains("class=\"points\""),
            "no hover dots by default"
        );
        c.hover = true;
        let svg = c.render();
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let desc = doc
            .descendants()
            .find(|n| n.has_tag_name("desc"))
            .and_then(|n| n.text())
            .unwrap();
        assert!(
            desc.contains("app-1: last 40") && desc.contains("app-1 limit (dashed): last 40"),
            "{desc}"
        );
        // A dashed line is many short strokes: more polylines than a solid run and its swatch.
        let blue = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke") == Some("#0072B2"))
            .count();
        assert!(blue > 1 + 1 + 4, "{blue}");
        let dots: Vec<String> = doc
            .descendants()
            .filter(|n| n.attribute("class") == Some("points"))
            .flat_map(|g| g.descendants().filter(|n| n.has_tag_name("title")))
            .filter_map(|t| t.text().map(str::to_owned))
            .collect();
        assert_eq!(dots.len(), 2 + 3, "one per point: {dots:?}");
        assert!(dots.contains(&"app-1: 00:01:00 40".to_owned()), "{dots:?}");
        assert!(
            svg.trim_end().ends_with("</g></svg>"),
            "the dots are inside the document"
        );
    }

    #[test]
    fn sparkline_has_one_line() {
        let svg = sparkline("requests/min", &[Some(1.0), None, Some(3.0)], palette::BLUE);
        assert_eq!(doc_count(&svg, "polyline"), 1);
        let svg = sparkline("requests/min", &[], palette::BLUE);
        assert!(svg.contains("no data"));
    }
}

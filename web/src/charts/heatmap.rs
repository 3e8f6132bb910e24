//! The minute-of-day × day heatmap of database probe failures and slow connects, written by
//! hand so that every cell carries its own tooltip (`<title>`): "every day at 10:00" shows as
//! a vertical stripe.

use std::fmt::Write;

use stormwatch_store::ProbeHeatCell;

use super::{palette, xml_escape};

const LEFT: f64 = 70.0;
const TOP: f64 = 24.0;
const ROW: f64 = 16.0;
const BOTTOM: f64 = 34.0;

/// Renders the cells of one database: `days` rows (oldest first), `1440 / bucket` columns.
pub fn render(
    title: &str,
    first_day: i64,
    days: i64,
    bucket_minutes: i32,
    cells: &[&ProbeHeatCell],
) -> String {
    let cols = (1440 / bucket_minutes.max(1)) as f64;
    let cw = (864.0 / cols).max(1.0);
    // The right margin holds half of the last hour label, "24:00".
    let width = LEFT + cw * cols + 24.0;
    let height = TOP + ROW * days as f64 + BOTTOM;
    let failing = cells.iter().filter(|c| c.failures > 0).count();
    let slow = cells
        .iter()
        .filter(|c| c.slow > 0 && c.failures == 0)
        .count();
    let desc = format!(
        "{} of {} probed {}-minute slices had failures, {} more had slow connects.{}",
        failing,
        cells.len(),
        bucket_minutes,
        slow,
        worst_minute(cells)
            .map(|m| format!(" Most failures start at {:02}:{:02} UTC.", m / 60, m % 60))
            .unwrap_or_default()
    );
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" class=\"chart heatmap\" aria-label=\"{t}\"><title>{t}</title><desc>{d}</desc>\
         <text x=\"{cx}\" y=\"15\" text-anchor=\"middle\" class=\"chart-title\">{t}</text><g font-size=\"11\" fill=\"#333\">",
        t = xml_escape(title),
        d = xml_escape(&desc),
        cx = width / 2.0,
    );
    for d in 0..days {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{label}</text>",
            x = LEFT - 4.0,
            y = TOP + ROW * d as f64 + 12.0,
            label = day_label(first_day + d),
        );
    }
    for h in (0..=24).step_by(2) {
        let x = LEFT + cw * cols * h as f64 / 24.0;
        let _ = write!(
            out,
            "<text x=\"{x:.1}\" y=\"{y}\" text-anchor=\"middle\">{h:02}:00</text>",
            y = TOP + ROW * days as f64 + 13.0,
        );
    }
    let _ = write!(
        out,
        "<text x=\"{x}\" y=\"{y}\" text-anchor=\"middle\">minute of day (UTC); rows: days</text></g>\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{w}\" height=\"{h}\" fill=\"#f4f4f4\"/><g class=\"cells\">",
        x = LEFT + cw * cols / 2.0,
        y = height - 4.0,
        w = cw * cols,
        h = ROW * days as f64,
    );
    for c in cells {
        let row = c.day - first_day;
        if !(0..days).contains(&row) || c.samples == 0 {
            continue;
        }
        let x = LEFT + cw * (c.minute_of_day / bucket_minutes.max(1)) as f64;
        let y = TOP + ROW * row as f64;
        let (color, share) = if c.failures > 0 {
            (palette::VERMILLION, c.failures as f64 / c.samples as f64)
        } else if c.slow > 0 {
            (palette::ORANGE, c.slow as f64 / c.samples as f64)
        } else {
            (palette::SKY, 0.25)
        };
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{rh}\" fill=\"{fill}\" fill-opacity=\"{op:.2}\">\
             <title>{day} {h:02}:{m:02} UTC: {f} of {n} probes failed, {s} slow</title></rect>",
            rh = ROW - 1.0,
            fill = palette::hex(color),
            op = 0.3 + 0.7 * share.clamp(0.0, 1.0),
            day = day_label(c.day),
            h = c.minute_of_day / 60,
            m = c.minute_of_day % 60,
            f = c.failures,
            n = c.samples,
            s = c.slow,
        );
    }
    out.push_str("</g></svg>");
    out
}

/// The minute of day with the most failures, summed over days.
fn worst_minute(cells: &[&ProbeHeatCell]) -> Option<i32> {
    let mut by: std::collections::BTreeMap<i32, i64> = Default::default();
    for c in cells {
        *by.entry(c.minute_of_day).or_default() += c.failures;
    }
    by.into_iter()
        .filter(|(_, f)| *f > 0)
        .max_by_key(|(_, f)| *f)
        .map(|(m, _)| m)
}

fn day_label(day: i64) -> String {
    let d = time::OffsetDateTime::from_unix_timestamp(day * 86_400)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}", d.year(), d.month() as u8, d.day())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rect_per_cell_and_the_worst_minute_is_named() {
        let cells: Vec<ProbeHeatCell> = (0..7)
            .map(|d| ProbeHeatCell {
                database: "main".into(),
                day: 20_000 + d,
                minute_of_day: 600,
                samples: 60,
                failures: 50,
                slow: 0,
            })
            .chain(std::iter::once(ProbeHeatCell {
                database: "main".into(),
                day: 20_003,
                minute_of_day: 300,
                samples: 60,
                failures: 0,
                slow: 3,
            }))
            .collect();
        let refs: Vec<&ProbeHeatCell> = cells.iter().collect();
        let svg = render("main: failures", 20_000, 7, 5, &refs);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let cells_g = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("cells"))
            .unwrap();
        assert_eq!(
            cells_g
                .children()
                .filter(|n| n.has_tag_name("rect"))
                .count(),
            8
        );
        assert!(svg.contains("Most failures start at 10:00 UTC"), "{svg}");
    }
}

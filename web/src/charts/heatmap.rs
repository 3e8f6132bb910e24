//! The minute-of-day × day heatmap of database probe failures and slow connects, written by
//! hand so that every cell carries its own tooltip (`<title>`): "every day at 10:00" shows as
//! a vertical stripe. The probed minutes of each day are drawn as runs (one rectangle per
//! stretch without a gap), and only the slices with failures or slow connects one by one, so
//! a week of a healthy database is a few rectangles, not 2,016.

use std::fmt::Write;

use stormwatch_store::{ProbeHeatCell, ProbedDay};

use super::{palette, xml_escape};

const LEFT: f64 = 70.0;
const TOP: f64 = 24.0;
const ROW: f64 = 16.0;
const BOTTOM: f64 = 34.0;

/// Renders one database: `days` rows (oldest first), `1440 / bucket` columns; `probed` says
/// which minutes of each day had probes, `cells` are the slices with failures or slow connects.
pub fn render(
    title: &str,
    first_day: i64,
    days: i64,
    bucket_minutes: i32,
    probed: &[&ProbedDay],
    cells: &[&ProbeHeatCell],
) -> String {
    let bucket = bucket_minutes.max(1);
    let cols = (1440 / bucket) as f64;
    let cw = (864.0 / cols).max(1.0);
    // Width of a minute.
    let mw = cw / bucket as f64;
    let probed_slices: usize = probed
        .iter()
        .filter(|p| (0..days).contains(&(p.day - first_day)))
        .map(|p| probed_slices(&p.runs, bucket))
        .sum();
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
        probed_slices.max(cells.len()),
        bucket_minutes,
        slow,
        worst_minute(cells)
            .map(|m| format!(" Most failures start at {:02}:{:02} UTC.", m / 60, m % 60))
            .unwrap_or_default()
    );
    // About 200 bytes a cell.
    let mut out = String::with_capacity(2_048 + 200 * (cells.len() + probed.len()));
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" \
         role=\"img\" class=\"chart heatmap\" aria-label=\"{t}\"><title>{t}</title><desc>{d}</desc>\
         <text x=\"{cx}\" y=\"15\" text-anchor=\"middle\" class=\"chart-title\">{t}</text><g font-size=\"11\" fill=\"#333\">",
        t = xml_escape(title),
        d = xml_escape(&desc),
        cx = width / 2.0,
    );
    // Labels and colours once, not per cell: a week of 100 databases has 10,000 bad cells.
    let labels: Vec<String> = (first_day..first_day + days).map(day_label).collect();
    for (d, label) in labels.iter().enumerate() {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"{y}\" text-anchor=\"end\">{label}</text>",
            x = LEFT - 4.0,
            y = TOP + ROW * d as f64 + 12.0,
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
    let (sky, vermillion, orange) = (
        palette::hex(palette::SKY),
        palette::hex(palette::VERMILLION),
        palette::hex(palette::ORANGE),
    );
    for p in probed {
        let row = p.day - first_day;
        if !(0..days).contains(&row) {
            continue;
        }
        for (start, end) in &p.runs {
            let _ = write!(
                out,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{rh}\" fill=\"{fill}\" fill-opacity=\"0.3\">\
                 <title>{day} {sh:02}:{sm:02}–{eh:02}:{em:02} UTC: probed</title></rect>",
                x = LEFT + mw * *start as f64,
                y = TOP + ROW * row as f64,
                w = mw * (end - start) as f64,
                rh = ROW - 1.0,
                fill = sky,
                day = labels[row as usize],
                sh = start / 60,
                sm = start % 60,
                eh = end / 60,
                em = end % 60,
            );
        }
    }
    for c in cells {
        let row = c.day - first_day;
        if !(0..days).contains(&row) || c.samples == 0 || (c.failures == 0 && c.slow == 0) {
            continue;
        }
        let x = LEFT + cw * (c.minute_of_day / bucket_minutes.max(1)) as f64;
        let y = TOP + ROW * row as f64;
        let (fill, share) = if c.failures > 0 {
            (&vermillion, c.failures as f64 / c.samples as f64)
        } else {
            (&orange, c.slow as f64 / c.samples as f64)
        };
        let _ = write!(
            out,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{cw:.1}\" height=\"{rh}\" fill=\"{fill}\" fill-opacity=\"{op:.2}\">\
             <title>{day} {h:02}:{m:02} UTC: {f} of {n} probes failed, {s} slow</title></rect>",
            rh = ROW - 1.0,
            op = 0.3 + 0.7 * share.clamp(0.0, 1.0),
            day = labels[row as usize],
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

/// How many `bucket`-minute slices of a day the runs of probed minutes touch.
fn probed_slices(runs: &[(i32, i32)], bucket: i32) -> usize {
    let mut slices: Vec<i32> = runs
        .iter()
        .flat_map(|(start, end)| (start / bucket)..=((end - 1) / bucket))
        .collect();
    slices.dedup();
    slices.len()
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
    fn a_rect_per_probed_run_and_per_bad_slice_and_the_worst_minute_is_named() {
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
        // Probed all week, but for a gap on the third day from 12:00 to 13:00.
        let probed: Vec<ProbedDay> = (0..7)
            .map(|d| ProbedDay {
                database: "main".into(),
                day: 20_000 + d,
                runs: if d == 2 {
                    vec![(0, 720), (780, 1440)]
                } else {
                    vec![(0, 1440)]
                },
            })
            .collect();
        let refs: Vec<&ProbeHeatCell> = cells.iter().collect();
        let days: Vec<&ProbedDay> = probed.iter().collect();
        let svg = render("main: failures", 20_000, 7, 5, &days, &refs);
        let doc = roxmltree::Document::parse(&svg).expect("well-formed");
        let cells_g = doc
            .descendants()
            .find(|n| n.attribute("class") == Some("cells"))
            .unwrap();
        let titles: Vec<String> = cells_g
            .children()
            .filter(|n| n.has_tag_name("rect"))
            .map(|r| {
                r.descendants()
                    .find(|n| n.has_tag_name("title"))
                    .unwrap()
                    .text()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(titles.len(), 8 + 8, "{titles:?}");
        assert!(
            titles.contains(
                &"1970-01-03 13:00–24:00 UTC: probed".replace("1970-01-03", &day_label(20_002))
            ),
            "{titles:?}"
        );
        assert!(svg.contains("Most failures start at 10:00 UTC"), "{svg}");
        assert!(
            svg.contains(
                "7 of 2004 probed 5-minute slices had failures, 1 more had slow connects."
            ),
            "{svg}"
        );
    }
}

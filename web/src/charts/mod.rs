//! Charts as inline SVG, drawn on the server. Line charts and sparklines use `plotters`' SVG
//! backend (no fonts needed: it writes `<text>` and the browser lays it out). The scatter and
//! the heatmap are written by hand (`scatter.rs`, `heatmap.rs`): every dot must be a link to its
//! trace and every cell must carry a tooltip, which plotters cannot emit.
//!
//! Every chart has a `<title>` and a `<desc>` (its text alternative) and `role="img"`.

pub mod heatmap;
pub mod line;
pub mod map;
pub mod scatter;
pub mod timeline;

/// The Okabe–Ito palette: distinguishable with every common colour-vision deficiency.
pub mod palette {
    pub const BLUE: (u8, u8, u8) = (0x00, 0x72, 0xB2);
    pub const ORANGE: (u8, u8, u8) = (0xE6, 0x9F, 0x00);
    pub const SKY: (u8, u8, u8) = (0x56, 0xB4, 0xE9);
    pub const GREEN: (u8, u8, u8) = (0x00, 0x9E, 0x73);
    pub const YELLOW: (u8, u8, u8) = (0xF0, 0xE4, 0x42);
    pub const VERMILLION: (u8, u8, u8) = (0xD5, 0x5E, 0x00);
    pub const PURPLE: (u8, u8, u8) = (0xCC, 0x79, 0xA7);
    pub const BLACK: (u8, u8, u8) = (0x00, 0x00, 0x00);
    /// Series colours in order (errors use [`VERMILLION`], so it comes last).
    pub const SERIES: &[(u8, u8, u8)] =
        &[BLUE, ORANGE, GREEN, PURPLE, SKY, BLACK, YELLOW, VERMILLION];

    pub fn hex(c: (u8, u8, u8)) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }
}

/// `s` cut to `max` characters, the last one an ellipsis when cut (chart labels).
pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// Escapes text for SVG/XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Adds `role="img"`, a class, an `aria-label`, a `<title>` and a `<desc>` to an SVG document
/// that plotters wrote, and drops its XML declaration so it can be inlined in HTML.
pub(crate) fn accessible(svg: String, class: &str, title: &str, desc: &str) -> String {
    let Some(start) = svg.find("<svg") else {
        return svg;
    };
    let Some(end) = svg[start..].find('>').map(|i| start + i) else {
        return svg;
    };
    let mut out = String::with_capacity(svg.len() + title.len() + desc.len() + 200);
    out.push_str(&svg[start..end]);
    out.push_str(&format!(
        " role=\"img\" class=\"chart {class}\" aria-label=\"{}\"><title>{}</title><desc>{}</desc>",
        xml_escape(title),
        xml_escape(title),
        xml_escape(desc)
    ));
    out.push_str(&svg[end + 1..]);
    out
}

/// "1.2k", "3.4M": short counts for axes.
pub fn short_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// Bytes for axes: "512 B", "1.5 MiB".
pub fn short_bytes(v: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut i = 0;
    while v.abs() >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{v:.0} {}", units[i])
    } else {
        format!("{v:.1} {}", units[i])
    }
}

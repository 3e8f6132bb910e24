//! The time window every page shows: a preset (`?range=1h`) or a custom `from`/`to`, kept in
//! the URL so that a link (from Slack, say) opens the same view.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime};

use crate::error::WebError;

/// The presets of the picker: label and length in seconds.
pub const PRESETS: &[(&str, i64)] = &[
    ("15m", 900),
    ("1h", 3_600),
    ("6h", 21_600),
    ("24h", 86_400),
    ("7d", 604_800),
];

/// Longest window a page accepts: retention is counted in days, a month is plenty.
pub const MAX_WINDOW_MS: i64 = 31 * 86_400_000;

/// A resolved window, Unix milliseconds, `to` exclusive.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub from_ms: i64,
    pub to_ms: i64,
    /// The preset's label, or `None` for a custom window.
    pub preset: Option<&'static str>,
}

/// Current time, Unix milliseconds.
pub fn now_ms() -> i64 {
    stormwatch_model::now_ns() / 1_000_000
}

/// Parses an instant: Unix milliseconds, RFC 3339, or `YYYY-MM-DDTHH:MM[:SS]` taken as UTC
/// (what `<input type="datetime-local">` sends).
pub fn parse_instant(field: &'static str, value: &str) -> Result<i64, WebError> {
    let v = value.trim();
    if let Ok(ms) = v.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = OffsetDateTime::parse(v, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let short = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let long = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    PrimitiveDateTime::parse(v, &long)
        .or_else(|_| PrimitiveDateTime::parse(v, &short))
        .map(|t| (t.assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            WebError::bad(
                field,
                format!("`{v}` is not a time: use RFC 3339 (2026-11-25T08:15:00Z), YYYY-MM-DDTHH:MM (UTC) or Unix milliseconds"),
            )
        })
}

impl Window {
    /// Resolves `range` / `from` / `to` against `now_ms`. A custom `from`/`to` wins over a
    /// preset; without either, `default` (a preset label) ending now.
    pub fn resolve(
        range: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        default: &'static str,
        now_ms: i64,
    ) -> Result<Window, WebError> {
        let from = from.filter(|s| !s.trim().is_empty());
        let to = to.filter(|s| !s.trim().is_empty());
        if from.is_some() || to.is_some() {
            let to_ms = to
                .map(|t| parse_instant("to", t))
                .transpose()?
                .unwrap_or(now_ms);
            let from_ms = match from {
                Some(f) => parse_instant("from", f)?,
                None => to_ms - 3_600_000,
            };
            if from_ms >= to_ms {
                return Err(WebError::bad("from", "`from` must be before `to`".into()));
            }
            if to_ms - from_ms > MAX_WINDOW_MS {
                return Err(WebError::bad(
                    "from",
                    "the window is longer than 31 days; pick a shorter one".into(),
                ));
            }
            return Ok(Window {
                from_ms,
                to_ms,
                preset: None,
            });
        }
        let label = range.filter(|s| !s.is_empty()).unwrap_or(default);
        let (preset, secs) = PRESETS
            .iter()
            .copied()
            .find(|(l, _)| *l == label)
            .ok_or_else(|| {
                WebError::bad(
                    "range",
                    format!("unknown range `{label}`: use 15m, 1h, 6h, 24h, 7d, or from= and to="),
                )
            })?;
        Ok(Window {
            from_ms: now_ms - secs * 1000,
            to_ms: now_ms,
            preset: Some(preset),
        })
    }

    pub fn len_ms(&self) -> i64 {
        self.to_ms - self.from_ms
    }

    /// The query-string part that reproduces this window.
    pub fn query(&self) -> String {
        match self.preset {
            Some(p) => format!("range={p}"),
            None => format!(
                "from={}&to={}",
                iso_minute_or_ms(self.from_ms),
                iso_minute_or_ms(self.to_ms)
            ),
        }
    }

    /// A step (seconds, a multiple of 60) that gives about `points` points.
    pub fn step_s(&self, points: i64) -> i64 {
        let raw = self.len_ms() / 1000 / points.max(1);
        let nice = [
            60, 120, 300, 600, 900, 1_800, 3_600, 7_200, 10_800, 21_600, 43_200, 86_400,
        ];
        nice.iter().copied().find(|s| *s >= raw).unwrap_or(86_400)
    }

    /// Start in seconds, and end in seconds rounded up (exclusive), for the minute tables.
    pub fn secs(&self) -> (i64, i64) {
        (
            self.from_ms.div_euclid(1000),
            (self.to_ms + 999).div_euclid(1000),
        )
    }
}

/// RFC 3339 when the instant is a whole second (readable URLs), else Unix milliseconds.
fn iso_minute_or_ms(ms: i64) -> String {
    if ms % 1000 == 0 {
        utc_rfc3339(ms)
    } else {
        ms.to_string()
    }
}

fn datetime(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-25T08:15:00Z`.
pub fn utc_rfc3339(ms: i64) -> String {
    let f = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `2026-11-25 08:15:00 UTC`, for people.
pub fn utc_human(ms: i64) -> String {
    let f = format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `2026-11-25T08:15`, the value of a `datetime-local` input (UTC).
pub fn utc_input(ms: i64) -> String {
    let f = format_description!("[year]-[month]-[day]T[hour]:[minute]");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `08:15:07.123`, for span start times.
pub fn utc_time_ms(ms: i64) -> String {
    let f = format_description!("[hour]:[minute]:[second].[subsecond digits:3]");
    datetime(ms).format(&f).unwrap_or_default()
}

/// `HH:MM` or `MM-DD HH:MM` axis labels, depending on the window's length.
pub fn axis_label(ms: i64, window_ms: i64) -> String {
    let f = if window_ms > 2 * 86_400_000 {
        format_description!("[month]-[day] [hour]:[minute]")
    } else if window_ms <= 900_000 {
        format_description!("[hour]:[minute]:[second]")
    } else {
        format_description!("[hour]:[minute]")
    };
    datetime(ms).format(&f).unwrap_or_default()
}

/// A duration in milliseconds for people: `850 µs`, `12.3 ms`, `4.20 s`.
pub fn duration(ms: f64) -> String {
    if ms == 0.0 {
        "0".into()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// Like [`duration`], `–` when absent.
pub fn opt_duration(ms: Option<f64>) -> String {
    ms.map(duration).unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_058_500_000; // 2025-11-25T08:15:00Z

    #[test]
    fn presets_and_default() {
        let w = Window::resolve(Some("15m"), None, None, "1h", NOW).unwrap();
        assert_eq!((w.from_ms, w.to_ms), (NOW - 900_000, NOW));
        assert_eq!(w.query(), "range=15m");
        let w = Window::resolve(None, None, None, "1h", NOW).unwrap();
        assert_eq!(w.preset, Some("1h"));
        let e = Window::resolve(Some("2y"), None, None, "1h", NOW).unwrap_err();
        assert!(e.to_string().contains("unknown range `2y`"), "{e}");
    }

    #[test]
    fn custom_windows_parse_every_form_and_round_trip() {
        let w = Window::resolve(
            Some("1h"),
            Some("2025-11-25T08:00"),
            Some("2025-11-25T08:15:00Z"),
            "1h",
            NOW,
        )
        .unwrap();
        assert_eq!((w.from_ms, w.to_ms), (NOW - 900_000, NOW));
        assert_eq!(w.preset, None);
        assert_eq!(
            w.query(),
            "from=2025-11-25T08:00:00Z&to=2025-11-25T08:15:00Z"
        );
        let w2 = Window::resolve(None, Some(&(NOW - 5).to_string()), None, "1h", NOW).unwrap();
        assert_eq!(w2.from_ms, NOW - 5);
        assert!(Window::resolve(
            None,
            Some("2025-11-25T09:00"),
            Some("2025-11-25T08:00"),
            "1h",
            NOW
        )
        .is_err());
        let e = Window::resolve(None, Some("yesterday"), None, "1h", NOW).unwrap_err();
        assert!(e.to_string().contains("`yesterday` is not a time"), "{e}");
    }

    #[test]
    fn formats() {
        assert_eq!(utc_rfc3339(NOW), "2025-11-25T08:15:00Z");
        assert_eq!(utc_human(NOW), "2025-11-25 08:15:00 UTC");
        assert_eq!(duration(0.5), "500 µs");
        assert_eq!(duration(12.34), "12.3 ms");
        assert_eq!(duration(4200.0), "4.20 s");
        let w = Window::resolve(Some("1h"), None, None, "1h", NOW).unwrap();
        assert_eq!(w.step_s(60), 60);
        let w = Window::resolve(Some("7d"), None, None, "1h", NOW).unwrap();
        assert_eq!(w.step_s(120), 7_200);
    }
}

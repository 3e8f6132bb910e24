//! The one duration grammar of every Stormwatch config file and form, and the clock.
//!
//! A duration is written as
//! - a number with a unit: `500ms`, `10s`, `1.5s`, `5m` (or `5min`), `1h`, `1d`; a space
//!   between number and unit is allowed (`2 s`);
//! - several of those in a row, largest first or not: `1h30m`, `1m 30s`, `1d12h`;
//! - a bare number of seconds: `30` or `0.5` (as a TOML number, or as text).
//!
//! Negative, empty and overflowing values are refused with a message that shows what was
//! written and what is accepted. [`Dur`] carries the grammar through serde: it reads every
//! form above and writes seconds as a number (what the read API has always shown).

use std::fmt;
use std::time::Duration;

/// Units and their length in nanoseconds; longest spelling first is not needed (exact match).
const UNITS: [(&str, u128); 6] = [
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// What the error messages suggest.
const EXAMPLES: &str = "500ms, 30s, 5m (or 5min), 1h, 1d, 1h30m, or a number of seconds";

/// A duration that cannot be read; the message quotes the text and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DurationError(String);

/// Parses a duration in the grammar of this module (see the module documentation).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let bad = |why: &str| DurationError(format!("`{t}` is not a duration{why}: write {EXAMPLES}"));
    if t.is_empty() {
        return Err(DurationError(format!("empty duration: write {EXAMPLES}")));
    }
    let mut rest = t;
    let mut total: u128 = 0;
    let mut terms = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let after = after.trim_start();
        let letters = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(letters);
        if number.is_empty() {
            return Err(bad(""));
        }
        let scale = if unit.is_empty() {
            // A bare number is seconds, and only on its own: `1h30` is a slip, not 1h + 30 s.
            if terms > 0 || !after.trim().is_empty() {
                return Err(bad(&format!(" (`{number}` needs a unit)")));
            }
            1_000_000_000
        } else {
            let known = UNITS.iter().find(|(u, _)| *u == unit);
            let unknown = || {
                DurationError(format!(
                    "`{t}`: unknown unit `{unit}`; use ms, s, m (or min), h or d, e.g. {EXAMPLES}"
                ))
            };
            known.map(|(_, scale)| *scale).ok_or_else(unknown)?
        };
        total = scaled(number, scale)
            .and_then(|n| total.checked_add(n))
            .ok_or_else(|| bad(""))?;
        terms += 1;
        rest = after.trim_start();
    }
    from_nanos(total).ok_or_else(|| DurationError(format!("`{t}` is too long a duration")))
}

/// `number` (digits, at most one `.`) × `scale` nanoseconds, exactly; `None` when malformed
/// or too large.
fn scaled(number: &str, scale: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && frac.is_empty()) || frac.contains('.') {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut nanos = whole.checked_mul(scale)?;
    // Fractions finer than a nanosecond are dropped.
    let mut unit = scale;
    for digit in frac.bytes() {
        unit /= 10;
        nanos = nanos.checked_add(u128::from(digit - b'0') * unit)?;
    }
    Some(nanos)
}

fn from_nanos(nanos: u128) -> Option<Duration> {
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Writes `d` in the grammar of [`parse_duration`], largest units first: `1h30m`, `500ms`,
/// `0s`. Parts below a millisecond are written as a fraction of a second.
pub fn format_duration(d: Duration) -> String {
    if !d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}s", d.as_secs_f64());
    }
    let mut ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, len) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= len {
            out.push_str(&format!("{}{unit}", ms / len));
            ms %= len;
        }
    }
    out
}

/// A duration in a config file or form, in the grammar of [`parse_duration`]. Serialized as
/// seconds (a number), which reads back as the same duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// `s` seconds.
    pub const fn secs(s: u64) -> Self {
        Dur(Duration::from_secs(s))
    }

    /// `ms` milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Dur(Duration::from_millis(ms))
    }

    /// In seconds.
    pub fn as_secs_f64(self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Duration> for Dur {
    fn from(d: Duration) -> Self {
        Dur(d)
    }
}

impl From<Dur> for Duration {
    fn from(d: Dur) -> Self {
        d.0
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_duration(self.0))
    }
}

impl std::str::FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Dur)
    }
}

impl serde::Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize(&self.0, s)
    }
}

impl<'de> serde::Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        deserialize(d).map(Dur)
    }
}

/// For `#[serde(with = "stormwatch_model::duration")]` on a `std::time::Duration` field:
/// writes seconds as a number.
pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// For `#[serde(with = "stormwatch_model::duration")]` on a `std::time::Duration` field:
/// reads a number of seconds (integer or not) or text in the grammar of [`parse_duration`].
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    d.deserialize_any(Visitor)
}

struct Visitor;

impl serde::de::Visitor<'_> for Visitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a duration: {EXAMPLES}")
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("`{v}` is negative: write {EXAMPLES}")))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Duration, E> {
        if v < 0.0 || !v.is_finite() {
            return Err(E::custom(format!(
                "`{v}` is not a duration: write {EXAMPLES}"
            )));
        }
        Duration::try_from_secs_f64(v)
            .map_err(|_| E::custom(format!("`{v}` is too long a duration")))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Duration, E> {
        parse_duration(v).map_err(E::custom)
    }
}

/// Nanoseconds since the Unix epoch, now: 0 before the epoch, `i64::MAX` after 2262.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(t: &str) -> Duration {
        parse_duration(t).unwrap_or_else(|e| panic!("{t}: {e}"))
    }

    #[test]
    fn every_unit_of_both_old_grammars() {
        // The collector's (`ms s m h d`, a bare number) and the agent's probes' (`min`, a
        // space before the unit) together.
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("15s"), Duration::from_secs(15));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1min"), Duration::from_secs(60));
        assert_eq!(ok("1h"), Duration::from_secs(3_600));
        assert_eq!(ok("1d"), Duration::from_secs(86_400));
        assert_eq!(ok("30"), Duration::from_secs(30));
        assert_eq!(ok("0.5"), Duration::from_millis(500));
        assert_eq!(ok("2 s"), Duration::from_secs(2));
        assert_eq!(ok(" 250ms "), Duration::from_millis(250));
        assert_eq!(ok("1.5h"), Duration::from_secs(5_400));
        assert_eq!(ok("0.1s"), Duration::from_millis(100));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
    }

    #[test]
    fn composites_add_up() {
        assert_eq!(ok("1h30m"), Duration::from_secs(5_400));
        assert_eq!(ok("1m 30s"), Duration::from_secs(90));
        assert_eq!(ok("1d12h"), Duration::from_secs(129_600));
        assert_eq!(ok("1s500ms"), Duration::from_millis(1_500));
    }

    #[test]
    fn bad_text_is_refused_with_what_was_written() {
        for t in [
            "",
            "  ",
            "5 parsecs",
            "-5s",
            "s",
            "1h30",
            "1..5s",
            "ten",
            "5 m s",
            "1e3s",
        ] {
            let e = parse_duration(t).unwrap_err().to_string();
            assert!(e.contains(t.trim()), "{t}: {e}");
            assert!(e.contains("500ms") || e.contains("ms, s"), "{t}: {e}");
        }
        let e = parse_duration("5 parsecs").unwrap_err().to_string();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("300000000000000000d").is_err());
    }

    #[test]
    fn formatting_reads_back() {
        for d in [0, 1, 999, 1_000, 90_000, 5_400_000, 86_400_000 + 1] {
            let d = Duration::from_millis(d);
            assert_eq!(ok(&format_duration(d)), d, "{}", format_duration(d));
        }
        assert_eq!(format_duration(Duration::from_secs(5_400)), "1h30m");
        assert_eq!(Dur::millis(500).to_string(), "500ms");
        let d = Duration::from_nanos(1_500);
        assert_eq!(ok(&format_duration(d)), d);
    }

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Doc {
        d: Dur,
        #[serde(with = "super")]
        plain: Duration,
    }

    #[test]
    fn serde_reads_numbers_and_text_and_writes_seconds() {
        let read = |json: &str| serde_json::from_str::<Doc>(json);
        let doc = read(r#"{"d": "1h", "plain": 2}"#).unwrap();
        assert_eq!(doc.d, Dur::secs(3_600));
        assert_eq!(doc.plain, Duration::from_secs(2));
        assert_eq!(
            read(r#"{"d": 0.25, "plain": "1min"}"#).unwrap().d,
            Dur::millis(250)
        );
        let e = read(r#"{"d": -1, "plain": 1}"#).unwrap_err().to_string();
        assert!(e.contains("negative"), "{e}");
        let e = read(r#"{"d": "5 parsecs", "plain": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown unit"), "{e}");
        let e = read(r#"{"d": true, "plain": 1}"#).unwrap_err().to_string();
        assert!(e.contains("a duration"), "{e}");
        let written = serde_json::to_string(&doc).unwrap();
        assert_eq!(written, r#"{"d":3600.0,"plain":2.0}"#);
        assert_eq!(read(&written).unwrap(), doc);
    }

    #[test]
    fn now_is_after_2020() {
        assert!(now_ns() > 1_577_836_800_000_000_000);
    }
}

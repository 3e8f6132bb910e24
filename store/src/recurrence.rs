//! Recurrence: whether something that fails now failed at about the same time of day on
//! earlier days, said in words ("shop-primary refused connections 10:00–10:12 UTC on 6 of
//! the last 7 days"). Read from the probes' failures (a partial index holds only failed
//! probes) and from the alert history; the grouping of minutes into daily windows is the pure
//! [`recurring`].

use std::collections::{BTreeMap, BTreeSet};

use crate::{Store, StoreError};

/// How many days recurrence looks at, the day of the moment asked about included.
pub const DAYS: i64 = 7;
/// Failed minutes at most this far apart on one day are one window.
pub const MERGE_GAP_MIN: i32 = 2;
/// Windows of different days starting at most this far apart (time of day) recur together.
pub const SAME_TIME_MIN: i32 = 30;

const DAY_S: i64 = 86_400;

/// A window that recurred: on `days` of the last `of_days` days, from about `start_min` to
/// about `end_min` (minutes since midnight UTC, the medians over those days).
#[derive(Debug, Clone, PartialEq)]
pub struct Recurring {
    pub start_min: i32,
    pub end_min: i32,
    pub days: usize,
    pub of_days: i64,
}

impl Recurring {
    /// "10:00–10:12 UTC on 6 of the last 7 days".
    pub fn when(&self) -> String {
        let hm = |m: i32| format!("{:02}:{:02}", m.div_euclid(60) % 24, m.rem_euclid(60));
        let range = if self.end_min - self.start_min <= 1 {
            format!("at about {} UTC", hm(self.start_min))
        } else {
            format!("{}–{} UTC", hm(self.start_min), hm(self.end_min))
        };
        format!("{range} on {} of the last {} days", self.days, self.of_days)
    }
}

/// The windows that recur on at least two days of `minutes` (day since the Unix epoch →
/// minutes of that day something failed, in any order). With `around` (a minute of day), only
/// the one that starts within [`SAME_TIME_MIN`] of it, if any.
pub fn recurring(
    minutes: &BTreeMap<i64, BTreeSet<i32>>,
    of_days: i64,
    around: Option<i32>,
) -> Vec<Recurring> {
    // Each day's failed minutes merged into windows [start, end).
    let mut windows: Vec<(i32, i32, i64)> = Vec::new();
    for (&day, mins) in minutes {
        let mut cur: Option<(i32, i32)> = None;
        for &m in mins {
            cur = match cur {
                Some((s, e)) if m - (e - 1) <= MERGE_GAP_MIN => Some((s, m + 1)),
                Some(w) => {
                    windows.push((w.0, w.1, day));
                    Some((m, m + 1))
                }
                None => Some((m, m + 1)),
            };
        }
        if let Some(w) = cur {
            windows.push((w.0, w.1, day));
        }
    }
    windows.sort();
    // Windows of any day starting close to a cluster's first start join it.
    let mut clusters: Vec<Vec<(i32, i32, i64)>> = Vec::new();
    for w in windows {
        match clusters.last_mut() {
            Some(c) if w.0 - c[0].0 <= SAME_TIME_MIN => c.push(w),
            _ => clusters.push(vec![w]),
        }
    }
    // The lower median of the starts and the upper median of the ends.
    let median = |mut v: Vec<i32>, upper: bool| {
        v.sort_unstable();
        v[if upper {
            v.len() / 2
        } else {
            (v.len() - 1) / 2
        }]
    };
    clusters
        .into_iter()
        .filter_map(|c| {
            // Per day: its earliest start and latest end in the cluster.
            let mut by_day: BTreeMap<i64, (i32, i32)> = BTreeMap::new();
            for (s, e, d) in &c {
                let w = by_day.entry(*d).or_insert((*s, *e));
                w.0 = w.0.min(*s);
                w.1 = w.1.max(*e);
            }
            if by_day.len() < 2 {
                return None;
            }
            let r = Recurring {
                start_min: median(by_day.values().map(|w| w.0).collect(), false),
                end_min: median(by_day.values().map(|w| w.1).collect(), true),
                days: by_day.len(),
                of_days,
            };
            match around {
                Some(a) if (r.start_min - a).abs() > SAME_TIME_MIN => None,
                _ => Some(r),
            }
        })
        .collect()
}

/// What a database's failed probes say, for a sentence: "refused connections".
pub fn failing_verb(class: &str) -> &'static str {
    match class {
        "refused" | "too_many_connections" => "refused connections",
        "timeout" => "timed out",
        "authentication" => "refused the probe's login",
        "permission" => "refused the probe's queries",
        "tls" => "failed the TLS handshake",
        _ => "failed its probes",
    }
}

fn day_and_minute(unix_s: f64) -> (i64, i32) {
    let s = unix_s.floor() as i64;
    (s.div_euclid(DAY_S), (s.rem_euclid(DAY_S) / 60) as i32)
}

/// The [`DAYS`] days ending with the one holding `at_s`: `[from, to)` in Unix seconds.
fn days_before(at_s: f64) -> (f64, f64) {
    let (day, _) = day_and_minute(at_s);
    (
        ((day - DAYS + 1) * DAY_S) as f64,
        ((day + 1) * DAY_S) as f64,
    )
}

impl Store {
    /// Each database whose probes failed on at least two of the [`DAYS`] days ending with the
    /// one holding `at_s`, at about the same time of day: "shop-primary refused connections
    /// 10:00–10:12 UTC on 6 of the last 7 days". With `around_s`, only failures at about that
    /// time of day; with `database`, only that database.
    pub async fn probe_recurrence(
        &self,
        database: Option<&str>,
        at_s: f64,
        around_s: Option<f64>,
    ) -> Result<Vec<(String, Recurring, String)>, StoreError> {
        let (from, to) = days_before(at_s);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT database, failure,
                        floor(extract(epoch FROM time) / 86400)::bigint,
                        floor(mod(extract(epoch FROM time)::numeric, 86400) / 60)::int,
                        count(*)
                   FROM sw_probe_samples
                  WHERE failure <> 'none'
                    AND time >= to_timestamp($1) AND time < to_timestamp($2)
                    AND ($3::text IS NULL OR database = $3)
                  GROUP BY 1, 2, 3, 4",
                &[&from, &to, &database],
            )
            .await?;
        let mut minutes: BTreeMap<String, BTreeMap<i64, BTreeSet<i32>>> = BTreeMap::new();
        let mut classes: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
        for r in rows {
            let db: String = r.get(0);
            *classes
                .entry(db.clone())
                .or_default()
                .entry(r.get(1))
                .or_default() += r.get::<_, i64>(4);
            minutes
                .entry(db)
                .or_default()
                .entry(r.get(2))
                .or_default()
                .insert(r.get(3));
        }
        let around = around_s.map(|s| day_and_minute(s).1);
        let mut out = Vec::new();
        for (db, m) in minutes {
            let class = classes[&db]
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(c, _)| c.clone())
                .unwrap_or_default();
            for r in recurring(&m, DAYS, around) {
                let words = format!("{db} {} {}", failing_verb(&class), r.when());
                out.push((db.clone(), r, words));
            }
        }
        Ok(out)
    }

    /// Whether the alert `(rule, labels_key)` fired at about the time of day of `at_s` on at
    /// least two of the [`DAYS`] days ending with it (counting the firing at `at_s`): the
    /// window it fired over on those days (firing to resolved).
    pub async fn alert_recurrence(
        &self,
        rule: &str,
        labels_key: &str,
        at_s: f64,
    ) -> Result<Option<Recurring>, StoreError> {
        let (from, to) = days_before(at_s);
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT extract(epoch FROM time)::float8, event FROM sw_alert_events
                  WHERE rule = $1 AND labels_key = $2 AND event IN ('firing', 'resolved')
                    AND time >= to_timestamp($3) AND time < to_timestamp($4)
                  ORDER BY time",
                &[&rule, &labels_key, &from, &to],
            )
            .await?;
        let mut minutes: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
        let mut mark = |a: f64, b: f64| {
            let (d0, m0) = day_and_minute(a);
            let (d1, m1) = day_and_minute(b);
            // The minutes it fired in: from its firing minute to the one it resolved in.
            let end = if d1 == d0 { m1 } else { 24 * 60 };
            minutes.entry(d0).or_default().extend(m0..end.max(m0 + 1));
        };
        let mut firing: Option<f64> = None;
        for r in rows {
            let (t, event): (f64, String) = (r.get(0), r.get(1));
            match (event.as_str(), firing) {
                ("firing", None) => firing = Some(t),
                ("resolved", Some(f)) => {
                    mark(f, t);
                    firing = None;
                }
                _ => {}
            }
        }
        if let Some(f) = firing {
            mark(f, f.max(at_s));
        }
        let around = day_and_minute(at_s).1;
        Ok(recurring(&minutes, DAYS, Some(around)).into_iter().next())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days(d: &[(i64, std::ops::Range<i32>)]) -> BTreeMap<i64, BTreeSet<i32>> {
        let mut m: BTreeMap<i64, BTreeSet<i32>> = BTreeMap::new();
        for (day, r) in d {
            m.entry(*day).or_default().extend(r.clone());
        }
        m
    }

    #[test]
    fn the_daily_ten_oclock_refusal_is_said_in_words() {
        // 10:00–10:12 on six days (one ended at 10:14), with gaps of a minute inside; nothing
        // on day 3; a stray failure at 15:00 once.
        let ten = 600;
        let m = days(&[
            (0, ten..ten + 5),
            (0, ten + 6..ten + 12),
            (1, ten + 1..ten + 12),
            (2, ten..ten + 14),
            (4, ten..ten + 12),
            (5, ten..ten + 11),
            (6, ten..ten + 12),
            (6, 900..901),
        ]);
        let r = recurring(&m, 7, None);
        assert_eq!(r.len(), 1, "{r:?}");
        assert_eq!(
            r[0].when(),
            "10:00–10:12 UTC on 6 of the last 7 days",
            "{r:?}"
        );
        // Asked about 10:03: the same; asked about 15:00, the stray failure does not recur.
        assert_eq!(recurring(&m, 7, Some(ten + 3)), r);
        assert!(recurring(&m, 7, Some(900)).is_empty());
    }

    #[test]
    fn a_single_day_is_not_a_pattern_and_distant_times_are_separate() {
        assert!(recurring(&days(&[(3, 600..612)]), 7, None).is_empty());
        let m = days(&[(1, 120..125), (2, 121..124), (1, 600..601), (3, 601..602)]);
        let r = recurring(&m, 7, None);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[0].when(), "02:00–02:05 UTC on 2 of the last 7 days");
        assert_eq!(r[1].when(), "10:00–10:02 UTC on 2 of the last 7 days");
        let once_a_minute = days(&[(1, 600..601), (3, 600..601)]);
        assert_eq!(
            recurring(&once_a_minute, 7, None)[0].when(),
            "at about 10:00 UTC on 2 of the last 7 days"
        );
    }
}

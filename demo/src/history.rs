//! Seeded history: the previous days' database probes, so the `/databases` heatmap
//! (minute of day × day, real time) shows the daily "10:00" refusal from the first run on.
//!
//! The scenario runs on a compressed clock, but the heatmap is drawn in real time: a live
//! "10:00" lands at whatever real minute of the day the run reaches it. So on the first run
//! the demo sends, through the collector's real ingest API (as the agent would, under the
//! same agent id, its own instance), the probe samples from midnight (UTC) [`DAYS`] days ago
//! until now: one a minute for the primary and the replica, and on each of those days a
//! refusal of [`REFUSAL_MINUTES`] minutes starting at the same real minute of the day as this
//! run's live "10:00" (a probe every 10 s, each failing with `too_many_connections`). The live refusal then completes the
//! column. This is documented as seeded in the README and ARCHITECTURE.md, and logged; the
//! data dir's `seeded-history` file records it, and later runs do not seed again.

use std::time::Duration;

use anyhow::{bail, Context};
use prost::Message;
use stormwatch_model::{Batch, DbRole, FailureClass, ProbeSample, WIRE_VERSION};

/// Days of history seeded before today.
pub const DAYS: i64 = 6;
/// Length of each seeded daily refusal, minutes (the story's "10:00–10:12").
pub const REFUSAL_MINUTES: i64 = 12;

const NS: i64 = 1_000_000_000;

/// Probe samples from `from_ns` to `to_ns`: one a minute for the primary and the replica,
/// and a probe every 10 s failing with `too_many_connections` for [`REFUSAL_MINUTES`] from
/// each of `refusals_ns`.
pub fn samples(from_ns: i64, to_ns: i64, refusals_ns: &[i64]) -> Vec<ProbeSample> {
    let mut out = Vec::new();
    let refusing_at = |t: i64| {
        refusals_ns
            .iter()
            .any(|r| t >= *r && t < r + REFUSAL_MINUTES * 60 * NS)
    };
    let mut t = from_ns;
    let mut n: i64 = 0;
    while t < to_ns {
        let refusing = refusing_at(t);
        n += 1;
        out.push(ProbeSample {
            time_ns: t,
            database: "board-primary".into(),
            engine: "postgres".into(),
            role: DbRole::Primary as i32,
            connect_us: (!refusing).then_some(2_000 + (n * 7919) % 1_500),
            query_us: (!refusing).then_some(300),
            failure: if refusing {
                FailureClass::TooManyConnections
            } else {
                FailureClass::None
            } as i32,
            failure_message: if refusing {
                "FATAL: sorry, too many clients already".into()
            } else {
                String::new()
            },
            ..Default::default()
        });
        if n % 6 == 1 || !refusing {
            out.push(ProbeSample {
                time_ns: t,
                database: "board-replica".into(),
                engine: "postgres".into(),
                role: DbRole::Replica as i32,
                connect_us: Some(1_500 + (n * 104_729) % 1_000),
                query_us: Some(400),
                lag_seconds: Some(0.0),
                lag_bytes: Some(0),
                ..Default::default()
            });
        }
        // Every minute; every 10 s while refusing (and until the next whole minute after).
        let next_minute = t + 60 * NS;
        t = if refusing || refusing_at(next_minute) {
            (t + 10 * NS).min(next_minute)
        } else {
            next_minute
        };
    }
    out
}

/// Seeds the history unless the data dir says it was done. `live_refusal_ms`: the real time
/// of this run's "10:00". Returns a line for the log, or `None` when already seeded.
pub async fn seed_once(
    data_dir: &std::path::Path,
    collector: &str,
    token: &str,
    agent_id: &str,
    live_refusal_ms: i64,
) -> anyhow::Result<Option<String>> {
    let marker = data_dir.join("seeded-history");
    if marker.exists() {
        return Ok(None);
    }
    let client = reqwest::Client::new();
    let now_ns = stormwatch_store::now_ns();
    let instance = format!("seeded-history-{}", now_ns / NS);
    let mut total = 0;
    // From midnight (UTC) DAYS days ago until a minute ago, a day per batch.
    let refusals: Vec<i64> = (1..=DAYS)
        .map(|d| live_refusal_ms * 1_000_000 - d * 86_400 * NS)
        .collect();
    let day_ns = 86_400 * NS;
    let first = (now_ns / day_ns - DAYS) * day_ns;
    let last = now_ns - 60 * NS;
    for (i, from) in (first..last).step_by(day_ns as usize).enumerate() {
        let probes = samples(from, (from + day_ns).min(last), &refusals);
        total += probes.len();
        let batch = Batch {
            version: WIRE_VERSION,
            agent_id: agent_id.to_owned(),
            instance: instance.clone(),
            sequence: i as u64 + 1,
            sent_at_ns: now_ns,
            probes,
            ..Default::default()
        };
        let r = client
            .post(format!("{collector}/api/v1/ingest"))
            .bearer_auth(token)
            .header("content-type", "application/x-protobuf")
            .body(batch.encode_to_vec())
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .context("seeding history through the ingest API")?;
        if !r.status().is_success() {
            bail!(
                "seeding history: the collector answered {}: {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    let secs = (live_refusal_ms / 1000).rem_euclid(86_400);
    let line = format!(
        "seeded {DAYS} previous days of database probes ({total} samples, through the ingest API) with a {REFUSAL_MINUTES}-minute refusal of board-primary each day at {:02}:{:02} UTC, the real minute where this run's scenario \"10:00\" lands",
        secs / 3600,
        secs % 3600 / 60
    );
    std::fs::write(&marker, format!("{line}\n"))
        .with_context(|| format!("writing {}", marker.display()))?;
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_fall_at_the_given_minutes() {
        let day = 86_400 * NS;
        let live = 20_000 * day + 10 * 3600 * NS;
        let refusals = [live - day, live - 2 * day];
        let s = samples(live - 3 * day, live - 60 * NS, &refusals);
        let failed: Vec<&ProbeSample> = s.iter().filter(|p| p.failure != 0).collect();
        assert_eq!(failed.len() as i64, 2 * REFUSAL_MINUTES * 6);
        assert_eq!(failed[0].time_ns, refusals[1]);
        assert!(failed.iter().all(|p| p.database == "board-primary"
            && refusals
                .iter()
                .any(|r| p.time_ns >= *r && p.time_ns < r + REFUSAL_MINUTES * 60 * NS)));
        // A minute apart otherwise, never at or past the end.
        let one_day = samples(live - day, live - 60 * NS, &[]);
        assert_eq!(one_day.len(), 2 * 1439);
        assert!(s.iter().all(|p| p.time_ns < live - 60 * NS));
    }
}

//! Seeded history: the previous days' database probes, so the `/databases` heatmap
//! (minute of day × day, real time) shows the daily "10:00" refusal from the first run on.
//!
//! The scenario runs on a compressed clock, but the heatmap is drawn in real time: a live
//! "10:00" lands at whatever real minute of the day the run reaches it. So on the first run
//! the demo sends, through the collector's real ingest API (as the agent would, under the
//! same agent id, its own instance), the probe samples of the previous [`DAYS`] days: one a
//! minute for the primary and the replica, and a refusal of [`REFUSAL_MINUTES`] minutes
//! starting at the same real minute of the day as this run's live "10:00" (a probe every
//! 10 s, each failing with `too_many_connections`). The live refusal then completes the
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

/// The probe samples of one past day, centred on that day's refusal at `refusal_ns`.
pub fn day_samples(refusal_ns: i64, now_ns: i64) -> Vec<ProbeSample> {
    let mut out = Vec::new();
    let from = refusal_ns - 12 * 3600 * NS;
    let to = (refusal_ns + 12 * 3600 * NS).min(now_ns - 60 * NS);
    let refusal_end = refusal_ns + REFUSAL_MINUTES * 60 * NS;
    let mut t = from;
    let mut n: i64 = 0;
    while t < to {
        let refusing = t >= refusal_ns && t < refusal_end;
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
        if !refusing || (t - refusal_ns) % (60 * NS) == 0 {
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
        t += if refusing { 10 * NS } else { 60 * NS };
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
    let mut samples = 0;
    for day in 1..=DAYS {
        let refusal_ns = live_refusal_ms * 1_000_000 - day * 86_400 * NS;
        let probes = day_samples(refusal_ns, now_ns);
        samples += probes.len();
        let batch = Batch {
            version: WIRE_VERSION,
            agent_id: agent_id.to_owned(),
            instance: instance.clone(),
            sequence: day as u64,
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
        "seeded {DAYS} previous days of database probes ({samples} samples, through the ingest API) with a {REFUSAL_MINUTES}-minute refusal of board-primary each day at {:02}:{:02} UTC, the real minute where this run's scenario \"10:00\" lands",
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
    fn a_day_has_its_refusal_at_the_given_minute() {
        let refusal = 20_000 * 86_400 * NS + 10 * 3600 * NS;
        let s = day_samples(refusal, refusal + 86_400 * NS);
        let failed: Vec<&ProbeSample> = s.iter().filter(|p| p.failure != 0).collect();
        assert_eq!(failed.len() as i64, REFUSAL_MINUTES * 6);
        assert_eq!(failed[0].time_ns, refusal);
        assert!(failed
            .iter()
            .all(|p| p.database == "board-primary"
                && p.time_ns < refusal + REFUSAL_MINUTES * 60 * NS));
        assert!(s.len() > 2 * 1400 && s.len() < 10_000);
        // Never in the future.
        let cut = day_samples(refusal, refusal + 3600 * NS);
        assert!(cut.iter().all(|p| p.time_ns < refusal + 3600 * NS));
    }
}

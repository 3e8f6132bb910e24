//! `stormwatch-demo`: the incident stack behind `./scripts/demo`, and the library the
//! end-to-end test (`tests/incident.rs`) drives.
//!
//! - [`stack`]: the servers (the app's PostgreSQL primary + replica, Redis, the collector with
//!   its dashboard, one agent, the board and partner services), started and tidied up.
//! - [`scenario`]: the outage's timeline on a scenario clock, injected into those servers.
//! - [`traffic`]: the board's users, with a morning peak.
//! - [`history`]: the previous days' probe history, seeded once (see its docs for why).
//! - [`slack`]: the local page that shows the alert messages as Slack would.
//! - [`config`]: the collector's and agent's config files the demo writes, the demo login.

pub mod config;
pub mod history;
pub mod scenario;
pub mod slack;
pub mod stack;
pub mod traffic;

use std::sync::Arc;

use scenario::{ClockMode, Shared};
use stack::{Stack, StackOptions};
use traffic::Counters;

/// What to run.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub stack: StackOptions,
    pub clock: ClockMode,
    /// Run the incident scenario (else: the morning-peak traffic alone).
    pub incidents: bool,
    /// Requests per second at the morning peak.
    pub peak_rps: f64,
    /// Days of the scenario to run (`None`: until stopped).
    pub days: Option<u32>,
    /// Seed the previous days' probe history on the first run.
    pub seed_history: bool,
}

/// The running demo: the stack, its traffic, the scenario.
pub struct Demo {
    pub stack: Stack,
    pub shared: Shared,
    pub counters: Arc<Counters>,
    /// The history line when this run seeded it.
    pub seeded: Option<String>,
    traffic: tokio::task::JoinHandle<()>,
    pub scenario: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// How much later than an immediate start a compressed day's "10:00" is planned, so that
/// seeding the history may take this long without shifting it (real milliseconds).
const SEEDING_MARGIN_MS: i64 = 8_000;

/// Sets a compressed clock so that scenario time `at` happens at `at_unix_ms`, but never
/// later in the day than its start ([`scenario::DAY_START`]): if seeding took longer than
/// its margin, the day starts now and the live refusal lands that much later than seeded.
fn start_day_for(shared: &Shared, at: f64, at_unix_ms: i64) {
    let mut clock = shared.clock.lock().expect("clock");
    let today = (clock.now() / scenario::DAY).floor() * scenario::DAY;
    let planned = at - (at_unix_ms - scenario::unix_ms()) as f64 / 1000.0 * clock.speed();
    let start = today + scenario::DAY_START;
    if planned > start {
        tracing::warn!(
            target: "scenario",
            "seeding the history took {:.1} s longer than planned; this run's \"10:00\" lands that much after the seeded minute",
            (planned - start) / clock.speed()
        );
    }
    clock.jump(planned.min(start));
}

impl Demo {
    pub async fn start(opts: DemoOptions) -> anyhow::Result<Demo> {
        let stack = Stack::start(opts.stack.clone()).await?;
        let shared = Shared::new(opts.clock);
        let mut seeded = None;
        if opts.seed_history && opts.incidents {
            let clock = shared.clock();
            let today = (clock.now() / scenario::DAY).floor() * scenario::DAY;
            let refusal = scenario::incidents()
                .into_iter()
                .find(|i| i.kind == scenario::Kind::PrimaryRefuses)
                .map(|i| i.from)
                .unwrap_or(scenario::hm(10, 0));
            let mut at = today + refusal;
            if at < clock.now() {
                at += scenario::DAY;
            }
            // A compressed day starts when seeding is done, so seeding (seconds on a loaded
            // machine) cannot eat into the first incident; the live "10:00" is planned a
            // little later than an immediate start would put it, and the clock is set after
            // seeding so that it lands there.
            let fast = matches!(opts.clock, ClockMode::Speed(_));
            let margin_ms = if fast { SEEDING_MARGIN_MS } else { 0 };
            let live_refusal_ms = clock.unix_ms_at(at) + margin_ms;
            let seeding = history::seed_once(
                &stack.opts.data_dir,
                &stack.dashboard_url,
                &stack.ingest_token,
                stack::AGENT_ID,
                live_refusal_ms,
            )
            .await;
            if fast {
                start_day_for(&shared, at, live_refusal_ms);
            }
            match seeding {
                Ok(line) => {
                    if let Some(l) = &line {
                        tracing::info!(target: "scenario", "{l}");
                    }
                    seeded = line;
                }
                Err(e) => {
                    stack.shutdown().await;
                    return Err(e);
                }
            }
        }
        let counters = Arc::new(Counters::default());
        let board = stack.board_url.clone().expect("the stack runs the board");
        let traffic = tokio::spawn(traffic::run(
            board,
            opts.peak_rps,
            traffic::SEEDED_CLASSES.min(opts.stack.seed_posts / 100),
            shared.clone(),
            counters.clone(),
        ));
        let scenario = opts.incidents.then(|| {
            tokio::spawn(scenario::run(
                scenario::Targets::of(&stack),
                shared.clone(),
                opts.days,
            ))
        });
        Ok(Demo {
            stack,
            shared,
            counters,
            seeded,
            traffic,
            scenario,
        })
    }

    /// Stops the scenario (ending nothing gracefully: the servers stop next), the traffic,
    /// then the stack.
    pub async fn shutdown(self) {
        if let Some(s) = self.scenario {
            s.abort();
        }
        self.shared.uploads_flood.send_replace(false);
        self.traffic.abort();
        self.stack.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tod(shared: &Shared) -> f64 {
        shared.clock().now().rem_euclid(scenario::DAY)
    }

    #[test]
    fn a_quick_seeding_starts_the_day_so_that_ten_oclock_lands_as_seeded() {
        let shared = Shared::new(ClockMode::Speed(60.0));
        let ten = scenario::DAY + scenario::hm(10, 0);
        // Seeding left 120 s before the planned "10:00": the day starts at 08:00 (before
        // its 08:05 start), and "10:00" is 120 real seconds away.
        start_day_for(&shared, ten, scenario::unix_ms() + 120_000);
        assert!(
            (tod(&shared) - scenario::hm(8, 0)).abs() < 2.0,
            "{}",
            tod(&shared)
        );
        let at = shared.clock().unix_ms_at(ten);
        assert!((at - scenario::unix_ms() - 120_000).abs() < 100, "{at}");
    }

    #[test]
    fn a_slow_seeding_never_starts_the_day_after_its_first_incident() {
        let shared = Shared::new(ClockMode::Speed(60.0));
        let ten = scenario::DAY + scenario::hm(10, 0);
        // Only 10 real seconds left before the planned "10:00": keeping it would start the
        // day at 09:50, after the 08:15 Redis incident; the day starts at 08:05 instead.
        start_day_for(&shared, ten, scenario::unix_ms() + 10_000);
        assert!(
            (tod(&shared) - scenario::DAY_START).abs() < 2.0,
            "{}",
            tod(&shared)
        );
    }
}

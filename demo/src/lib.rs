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
            match history::seed_once(
                &stack.opts.data_dir,
                &stack.dashboard_url,
                &stack.ingest_token,
                stack::AGENT_ID,
                clock.unix_ms_at(at),
            )
            .await
            {
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
        let scenario = opts
            .incidents
            .then(|| tokio::spawn(scenario::run(stack.targets(), shared.clone(), opts.days)));
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

//! `stormwatch-demo`: runs the incident stack (see the library's docs) until Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use stormwatch_demo::scenario::ClockMode;
use stormwatch_demo::stack::StackOptions;
use stormwatch_demo::{Demo, DemoOptions};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Scenario {
    /// The outage: Redis slow, replica lag, slow partner, the primary refusing at 10:00,
    /// an upload flood.
    Incident,
    /// The morning-peak traffic without incidents.
    Calm,
}

#[derive(Parser)]
#[command(
    name = "stormwatch-demo",
    about = "Run Stormwatch watching a small app through a replayed outage"
)]
struct Args {
    /// What happens to the app.
    #[arg(long, value_enum, default_value = "incident")]
    scenario: Scenario,
    /// The scenario clock: `fast` (30x: a scenario minute every 2 s, the first incident 20 s
    /// after start), `real` (the wall clock, UTC), or a speed such as `60x`.
    #[arg(long, default_value = "fast")]
    clock: ClockMode,
    /// Requests per second at the morning peak.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Data directory (every database, the logs and the demo login live here; a second run
    /// reuses it).
    #[arg(long, default_value = "./stormwatch-data", env = "STORMWATCH_DATA_DIR")]
    data_dir: PathBuf,
    /// Address of the collector (dashboard, APIs).
    #[arg(long, default_value = "127.0.0.1:6100", env = "STORMWATCH_LISTEN")]
    listen: SocketAddr,
    /// The local Slack page (the alerts as Slack shows them).
    #[arg(long, default_value = "127.0.0.1:6120")]
    slack_listen: SocketAddr,
    /// The agent's OTLP/HTTP receiver (point your own app's exporter here too).
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http: String,
    /// The agent's OTLP/gRPC receiver ("" disables it).
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc: String,
    /// The agent's Zipkin receiver ("" disables it).
    #[arg(long, default_value = "127.0.0.1:9411")]
    zipkin: String,
    /// The agent's admin port (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:4319")]
    agent_admin: String,
    /// The board app.
    #[arg(long, default_value = "127.0.0.1:6110")]
    board_listen: SocketAddr,
    /// The partner service the board calls.
    #[arg(long, default_value = "127.0.0.1:6111")]
    partner_listen: SocketAddr,
    /// The app's PostgreSQL primary (loopback port).
    #[arg(long, default_value_t = 6132)]
    primary_port: u16,
    /// The app's PostgreSQL replica (loopback port).
    #[arg(long, default_value_t = 6133)]
    replica_port: u16,
    /// The app's Redis (loopback port).
    #[arg(long, default_value_t = 6179)]
    redis_port: u16,
    /// Do not seed the previous days' database probes (see README: seeded history).
    #[arg(long)]
    no_history: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STORMWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn")),
        )
        .init();
    let args = Args::parse();
    let mut demo = Demo::start(DemoOptions {
        stack: StackOptions {
            data_dir: args.data_dir.clone(),
            listen: args.listen,
            otlp_http: args.otlp_http,
            otlp_grpc: args.otlp_grpc,
            zipkin: args.zipkin,
            agent_admin: args.agent_admin,
            slack_listen: args.slack_listen,
            primary_port: args.primary_port,
            replica_port: args.replica_port,
            redis_port: args.redis_port,
            board_listen: args.board_listen,
            partner_listen: args.partner_listen,
            bin_dir: None,
            max_concurrent: 8,
            uploads_max_concurrent: 4,
            seed_posts: 50_000,
        },
        clock: args.clock,
        incidents: matches!(args.scenario, Scenario::Incident),
        peak_rps: args.rate,
        days: None,
        seed_history: !args.no_history,
    })
    .await?;
    let s = &demo.stack;
    let clock =
        match args.clock {
            ClockMode::Real => {
                "real time (UTC): incidents at 08:15, 08:55, 09:30, 10:00, 10:50".to_owned()
            }
            ClockMode::Speed(x) => format!(
            "{x}x: a scenario minute every {:.1} s; the first incident (Redis, 08:15) in {:.0} s",
            60.0 / x,
            ((stormwatch_demo::scenario::hm(8, 15)
                - demo.shared.clock().now().rem_euclid(stormwatch_demo::scenario::DAY))
                / x)
                .max(0.0)
        ),
        };
    println!();
    println!("  Stormwatch is running, watching the 'board' app through a replayed outage.");
    println!("  Dashboard:  {}/", s.dashboard_url);
    println!(
        "  Login:      {} / {}   (kept in {})",
        s.login_user,
        s.login_password,
        args.data_dir.join("dashboard-login").display()
    );
    println!(
        "  Alerts:     http://{}/   (the alert messages as Slack shows them)",
        s.slack.addr
    );
    println!("  Scenario:   {:?}, clock {clock}", args.scenario);
    println!(
        "  Your app:   OTEL_EXPORTER_OTLP_ENDPOINT={} OTEL_SERVICE_NAME=myapp <your app>",
        s.otlp_traces_url.trim_end_matches("/v1/traces")
    );
    println!(
        "  Data:       {} (logs in logs/)   ·   Ctrl-C stops everything.",
        args.data_dir.display()
    );
    if let Some(line) = &demo.seeded {
        println!("  History:    {line}");
    }
    println!();
    let mut scenario = demo.scenario.take();
    let scenario_done = async {
        match scenario.as_mut() {
            Some(task) => task.await,
            None => std::future::pending().await,
        }
    };
    let failed = tokio::select! {
        _ = stormwatch_collector::shutdown_signal() => None,
        r = scenario_done => match r {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(e) => Some(anyhow::anyhow!("the scenario stopped: {e}")),
        },
    };
    // The scenario first, so that it injects nothing into servers being stopped.
    if let Some(task) = scenario {
        task.abort();
    }
    demo.shutdown().await;
    match failed {
        Some(e) => Err(e),
        None => {
            println!(
                "\n  Stopped everything the demo started. Its data stays in {}: the next run \
                 continues with it (delete the directory to start afresh).",
                args.data_dir.display()
            );
            Ok(())
        }
    }
}

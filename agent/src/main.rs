//! `stormwatch-agent`: flags and environment → config → [`stormwatch_agent::Agent`].
//! Exits 64 (EX_USAGE) on a bad configuration, naming what is wrong.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stormwatch_agent::config::{self, Overrides};
use stormwatch_agent::reload::Source;
use stormwatch_agent::Agent;

/// The Stormwatch agent: receives OTLP and Zipkin spans from apps on this host, aggregates and
/// samples them, and ships them to the Stormwatch collector.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// TOML config file (see agent.example.toml). Optional: the agent runs with flags alone.
    #[arg(long, env = "STORMWATCH_AGENT_CONFIG")]
    config: Option<PathBuf>,
    /// Collector base URL, e.g. http://collector:8080.
    #[arg(long, env = "STORMWATCH_COLLECTOR")]
    collector: Option<String>,
    /// Agent token issued by the collector.
    #[arg(long, env = "STORMWATCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Agent id (default: host name).
    #[arg(long, env = "STORMWATCH_AGENT_ID")]
    agent_id: Option<String>,
    /// OTLP/HTTP listen address ("" disables). Default 127.0.0.1:4318.
    #[arg(long, env = "STORMWATCH_AGENT_OTLP_HTTP")]
    otlp_http: Option<String>,
    /// OTLP/gRPC listen address ("" disables). Default 127.0.0.1:4317.
    #[arg(long, env = "STORMWATCH_AGENT_OTLP_GRPC")]
    otlp_grpc: Option<String>,
    /// Zipkin v2 listen address ("" disables). Default 127.0.0.1:9411.
    #[arg(long, env = "STORMWATCH_AGENT_ZIPKIN")]
    zipkin: Option<String>,
    /// Admin (/metrics, /healthz) listen address ("" disables). Default 127.0.0.1:4319.
    #[arg(long, env = "STORMWATCH_AGENT_ADMIN")]
    admin: Option<String>,
    /// Disk spool directory.
    #[arg(long, env = "STORMWATCH_AGENT_SPOOL_DIR")]
    spool_dir: Option<PathBuf>,
    /// Worker threads. One core handles ~350k spans/s, so a sidecar needs one thread and should
    /// not take every core of its host; fewer threads also mean fewer malloc arenas (RSS).
    #[arg(long, env = "STORMWATCH_AGENT_THREADS", default_value_t = 1)]
    threads: usize,
    /// Seconds the whole shutdown may take (SIGTERM/SIGINT): in-flight requests finish (at most
    /// half of it), queued spans are written to the spool, and the shipper sends what it can
    /// in the rest; then the agent exits, leaving unsent batches spooled. A second signal
    /// exits at once.
    #[arg(long, env = "STORMWATCH_AGENT_SHUTDOWN_GRACE", default_value_t = 5)]
    shutdown_grace: u64,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .max_blocking_threads(8)
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("stormwatch-agent: cannot start the runtime: {error}");
            std::process::exit(1);
        }
    };
    let code = runtime.block_on(run(args));
    // Dropping a runtime waits for every blocking thread, and a blocking call cannot be
    // cancelled: host sampling (sysinfo statvfs()s every mount and reads /proc), file I/O or a
    // DNS lookup stuck on a hung mount or resolver would keep the process alive after
    // "stopped" indefinitely. Everything worth keeping is in the spool by now.
    runtime.shutdown_timeout(Duration::from_millis(200));
    std::process::exit(code);
}

async fn run(args: Args) -> i32 {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STORMWATCH_AGENT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let source = Source {
        path: args.config.clone(),
        overrides: Overrides {
            collector: args.collector,
            token: args.token,
            agent_id: args.agent_id,
            otlp_http: args.otlp_http,
            otlp_grpc: args.otlp_grpc,
            zipkin: args.zipkin,
            admin: args.admin,
            spool_dir: args.spool_dir,
        },
    };
    match stormwatch_http::raise_open_file_limit() {
        Ok(n) => tracing::debug!(open_files = n, "open-file limit"),
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
    let config = match config::load(source.path.as_deref(), &source.overrides) {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "invalid configuration");
            eprintln!("stormwatch-agent: {error}");
            std::process::exit(64);
        }
    };
    if config.collector.is_none() {
        tracing::warn!("no collector configured (--collector / STORMWATCH_COLLECTOR): spans are spooled until one is set");
    }
    // Installed before anything starts: a signal from here on stops the agent gracefully.
    let signals = stormwatch_http::shutdown_signals();
    let agent = match Agent::start(config, source).await {
        Ok(a) => a,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "cannot start");
            eprintln!("stormwatch-agent: {error:#}");
            std::process::exit(1);
        }
    };
    signals.await;
    // A second SIGTERM/SIGINT during the graceful stop means "now": what is already spooled
    // stays on disk for the next start.
    tokio::spawn(async {
        stormwatch_http::shutdown_signal().await;
        tracing::warn!("second signal: exiting without waiting for the shutdown to finish");
        std::process::exit(130);
    });
    agent
        .shutdown(Duration::from_secs(args.shutdown_grace))
        .await;
    0
}

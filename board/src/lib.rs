//! The app under observation in Stormwatch's demo and end-to-end test: the **board** service
//! (lists of posts per class; PostgreSQL primary for writes, a streaming replica for reads,
//! post contents cached in Redis, one endpoint calling the partner) and the slow **partner**
//! service. Both are instrumented with the OpenTelemetry Rust SDK and export OTLP/HTTP to the
//! agent. It depends on no Stormwatch crate: it is an ordinary app.
//!
//! Module map: [`app`] (board routes and handlers), [`db`] (data access, and the deliberate
//! missing-WHERE bug in [`db::PostsQuery`]), [`cache`] (Redis), [`partner`] (the partner service
//! and the board's client for it), [`http`] (server spans, limiter, errors), [`telemetry`]
//! (SDK set-up). The binaries in `src/bin/` only parse flags and wait for a signal.

pub mod app;
pub mod cache;
pub mod db;
pub mod http;
pub mod partner;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::telemetry::Telemetry;

/// How long a stopping service waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Flags of `stormwatch-board`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "stormwatch-board",
    version,
    about = "The demo's board service: posts per class (PostgreSQL primary + replica, Redis cache, \
             a partner call), traced with the OpenTelemetry SDK."
)]
pub struct BoardArgs {
    /// Address to listen on (port 0: any free port; the ready line names it).
    #[arg(long, env = "BOARD_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    /// The PRIMARY (writes; schema and seed at start), e.g. postgres://postgres@127.0.0.1:5432/board.
    #[arg(long, env = "BOARD_PRIMARY_URL")]
    pub primary_url: String,
    /// The REPLICA (every read of the list page).
    #[arg(long, env = "BOARD_REPLICA_URL")]
    pub replica_url: String,
    /// Redis holding post contents.
    #[arg(
        long,
        env = "BOARD_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Base URL of the partner service (GET /timetable is called on it).
    #[arg(
        long,
        env = "BOARD_PARTNER_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub partner_url: String,
    /// OTLP/HTTP endpoint of the agent (spans go to <endpoint>/v1/traces as protobuf).
    #[arg(
        long,
        env = "BOARD_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4318"
    )]
    pub otlp_endpoint: String,
    /// service.name of the spans.
    #[arg(long, env = "BOARD_SERVICE_NAME", default_value = "board")]
    pub service_name: String,
    /// Requests handled at once; past it, 503 at once with Retry-After: 1.
    #[arg(long, env = "BOARD_MAX_CONCURRENT", default_value_t = 64)]
    pub max_concurrent: usize,
    /// Uploads processed at once (within --max-concurrent); past it, 503.
    #[arg(long, env = "BOARD_UPLOADS_MAX_CONCURRENT", default_value_t = 4)]
    pub uploads_max_concurrent: usize,
    /// Posts seeded when the primary has no classes yet (100 per class): enough that the
    /// list query without its WHERE is a slow full scan.
    #[arg(long, env = "BOARD_SEED_POSTS", default_value_t = 200_000)]
    pub seed_posts: u32,
    /// Connections to the replica at most.
    #[arg(long, env = "BOARD_REPLICA_POOL", default_value_t = 16)]
    pub replica_pool: usize,
    /// PostgreSQL connect time limit, ms.
    #[arg(long, env = "BOARD_CONNECT_TIMEOUT_MS", default_value_t = 2000)]
    pub connect_timeout_ms: u64,
    /// Time limit of each Redis command, ms (a miss then reads from the replica).
    #[arg(long, env = "BOARD_REDIS_TIMEOUT_MS", default_value_t = 2000)]
    pub redis_timeout_ms: u64,
    /// Time limit of the partner call, ms (then 504).
    #[arg(long, env = "BOARD_PARTNER_TIMEOUT_MS", default_value_t = 5000)]
    pub partner_timeout_ms: u64,
    /// How long start-up keeps retrying the primary (schema and seed) before giving up, s.
    #[arg(long, env = "BOARD_STARTUP_TIMEOUT_S", default_value_t = 30)]
    pub startup_timeout_s: u64,
}

/// Flags of `stormwatch-partner`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "stormwatch-partner",
    version,
    about = "The demo's partner service: GET /timetable answers after a delay that \
             PUT /admin/delay?ms=N changes; traced with the OpenTelemetry SDK."
)]
pub struct PartnerArgs {
    /// Address to listen on (port 0: any free port; the ready line names it).
    #[arg(long, env = "PARTNER_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    /// OTLP/HTTP endpoint of the agent.
    #[arg(
        long,
        env = "PARTNER_OTLP_ENDPOINT",
        default_value = "http://127.0.0.1:4318"
    )]
    pub otlp_endpoint: String,
    /// service.name of the spans.
    #[arg(long, env = "PARTNER_SERVICE_NAME", default_value = "partner")]
    pub service_name: String,
    /// Delay of GET /timetable at start, ms (plus a few percent of jitter).
    #[arg(long, env = "PARTNER_DELAY_MS", default_value_t = 20)]
    pub delay_ms: u64,
}

/// A service running in this process.
pub struct Running {
    addr: SocketAddr,
    telemetry: Telemetry,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// Stops accepting, lets requests in flight finish (up to [`SHUTDOWN_GRACE`]), then
    /// exports the last spans.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "server ended with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "server task failed"),
            Err(_) => {
                tracing::warn!("requests still in flight after the grace period; stopping");
                self.task.abort();
            }
        }
        self.telemetry.shutdown().await;
    }
}

fn serve(listener: TcpListener, router: axum::Router, telemetry: Telemetry) -> Running {
    let addr = listener
        .local_addr()
        .expect("bound listener has an address");
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await
    });
    Running {
        addr,
        telemetry,
        stop: Some(tx),
        task,
    }
}

/// Prepares the primary (schema, seed), binds and serves the board.
pub async fn start_board(args: &BoardArgs) -> anyhow::Result<Running> {
    let connect_timeout = Duration::from_millis(args.connect_timeout_ms);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.startup_timeout_s);
    loop {
        match db::prepare(&args.primary_url, args.seed_posts, connect_timeout).await {
            Ok(()) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "primary not ready; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e).context("preparing the schema on the primary (--primary-url)"),
        }
    }
    let telemetry = Telemetry::init(&args.otlp_endpoint, &args.service_name)?;
    let board = app::Board {
        db: db::Db::new(
            &args.primary_url,
            &args.replica_url,
            connect_timeout,
            args.replica_pool,
            telemetry.clone(),
        )?,
        cache: cache::Cache::new(
            &args.redis_url,
            Duration::from_millis(args.redis_timeout_ms),
            telemetry.clone(),
        )?,
        partner: partner::PartnerClient::new(
            &args.partner_url,
            Duration::from_millis(args.partner_timeout_ms),
            telemetry.clone(),
        )?,
        telemetry: telemetry.clone(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let router = app::router(
        Arc::new(board),
        local,
        args.max_concurrent,
        args.uploads_max_concurrent,
    );
    Ok(serve(listener, router, telemetry))
}

/// Binds and serves the partner.
pub async fn start_partner(args: &PartnerArgs) -> anyhow::Result<Running> {
    let telemetry = Telemetry::init(&args.otlp_endpoint, &args.service_name)?;
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let local = listener.local_addr()?;
    let router = partner::router(telemetry.clone(), local, args.delay_ms);
    Ok(serve(listener, router, telemetry))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs to stderr (`RUST_LOG`; default info, without the server's NOTICEs).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

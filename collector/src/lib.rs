//! The Stormwatch collector: authenticated ingest into PostgreSQL, the read API, the dashboard.
//!
//! `main.rs` only parses flags; [`run`] does the rest so tests and benchmarks drive the same
//! code: database (embedded or given), migrations, partition upkeep, HTTP, graceful shutdown.

pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod ingest;
pub mod metrics;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stormwatch_store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use stormwatch_store::{Store, StoreOptions};
use tokio::net::TcpListener;

pub use app::{router, AppState};
pub use config::Config;

/// How often partitions are created ahead and retention is applied.
const UPKEEP_EVERY: Duration = Duration::from_secs(3_600);

/// A collector bound to its port, ready to serve.
pub struct Collector {
    pub state: Arc<AppState>,
    listener: TcpListener,
    embedded: Option<EmbeddedPostgres>,
    /// Held while the embedded cluster is ours: one collector per data directory.
    _data_dir_lock: Option<std::fs::File>,
}

impl Collector {
    /// Starts the database (the embedded cluster when no URL is configured), applies
    /// migrations, creates partitions and binds the listen address.
    pub async fn start(mut config: Config) -> anyhow::Result<Collector> {
        let mut embedded = None;
        let mut lock = None;
        let url = match &config.database_url {
            Some(url) => url.clone(),
            None => {
                lock = Some(lock_data_dir(&config.data_dir)?);
                let pg = EmbeddedPostgres::start(&EmbeddedOptions {
                    data_dir: config.data_dir.clone(),
                    tcp_port: None,
                    unsafe_no_fsync: false,
                })
                .await?;
                let url = pg.connection_string("postgres");
                tracing::info!(pgdata = %pg.pgdata().display(), "embedded PostgreSQL is running");
                embedded = Some(pg);
                url
            }
        };
        let result = Self::open(&mut config, &url).await;
        let (store, listener) = match result {
            Ok(v) => v,
            Err(e) => {
                if let Some(pg) = &embedded {
                    let _ = pg.stop().await;
                }
                return Err(e);
            }
        };
        let state = Arc::new(AppState {
            store: Arc::new(store),
            config,
            metrics: metrics::Metrics::new(),
        });
        Ok(Collector {
            state,
            listener,
            embedded,
            _data_dir_lock: lock,
        })
    }

    async fn open(config: &mut Config, url: &str) -> anyhow::Result<(Store, TcpListener)> {
        let store = Store::connect(&StoreOptions {
            url: url.to_owned(),
            max_connections: config.max_db_connections,
            retention_days: config.retention_days,
        })
        .await
        .context("connecting to PostgreSQL")?;
        let applied = store.migrate().await?;
        if applied > 0 {
            tracing::info!(applied, "migrations applied");
        }
        store
            .create_partitions_ahead(stormwatch_store::now_ns())
            .await?;
        if config.ingest_tokens.is_empty() {
            config
                .ingest_tokens
                .push(generated_token(&config.data_dir)?);
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        Ok((store, listener))
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` completes; in-flight requests finish, then the embedded
    /// PostgreSQL (if any) stops.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let upkeep = tokio::spawn(upkeep(self.state.store.clone()));
        let app = router(self.state.clone());
        tracing::info!(addr = %self.local_addr(), "collector listening");
        let served = axum::serve(self.listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        upkeep.abort();
        self.state.store.close();
        tracing::info!("HTTP server stopped");
        if let Some(pg) = &self.embedded {
            pg.stop()
                .await
                .context("stopping the embedded PostgreSQL")?;
            tracing::info!("embedded PostgreSQL stopped");
        }
        served.context("serving HTTP")
    }
}

/// Takes `<data_dir>/collector.lock`, so a second collector on the same data directory
/// fails clearly instead of adopting (and later stopping) the first one's PostgreSQL.
fn lock_data_dir(data_dir: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let path = data_dir.join("collector.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "another collector is running on the data directory {} (it holds {}); stop it or use another --data-dir",
            data_dir.display(),
            path.display()
        ),
        Err(std::fs::TryLockError::Error(e)) => Err(e).with_context(|| format!("locking {}", path.display())),
    }
}

/// Without configured tokens, the collector makes one and keeps it in the data directory
/// (mode 0600) so that a single-machine setup works out of the box without an open door.
fn generated_token(data_dir: &Path) -> anyhow::Result<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("ingest-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_owned();
        if t.len() >= 16 {
            tracing::info!(path = %path.display(), "no ingest tokens configured: using the generated token in this file");
            return Ok(t);
        }
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .context("reading /dev/urandom")?;
    let token = stormwatch_model::hexid::encode(&bytes);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{token}")?;
    tracing::warn!(path = %path.display(), "no ingest tokens configured: generated one; give it to your agents (--token)");
    Ok(token)
}

async fn upkeep(store: Arc<Store>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        let now = stormwatch_store::now_ns();
        if let Err(error) = store.create_partitions_ahead(now).await {
            tracing::warn!(%error, "creating partitions ahead failed");
        }
        if let Err(error) = store.apply_retention(now).await {
            tracing::warn!(%error, "applying retention failed");
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

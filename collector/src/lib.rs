//! The Stormwatch collector: authenticated ingest into PostgreSQL, the read API, the dashboard.
//!
//! `main.rs` only parses flags; [`run`] does the rest so tests and benchmarks drive the same
//! code: database (embedded or given), migrations, partition upkeep, HTTP, graceful shutdown.

pub mod alerts;
pub mod api;
pub mod app;
pub mod config;
pub mod error;
pub mod incidents;
pub mod ingest;
pub mod metrics;
pub mod reload;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stormwatch_store::embedded::{EmbeddedOptions, EmbeddedPostgres};
use stormwatch_store::{Store, StoreOptions};
use tokio::net::TcpListener;

pub use app::router;
pub use config::Config;
pub use state::AppState;

/// How often the rollup deltas are folded into the rollups.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// How often the aggregates of the last minutes are compacted (`Store::compact_aggregates`).
const COMPACT_EVERY: Duration = Duration::from_secs(5);

/// Every this many compactions the last day is compacted too (a spool replayed late): hourly.
const COMPACT_DAY_EVERY: u64 = 720;

/// How often partitions are created ahead, retention is applied and (on Citus) old span
/// partitions are made columnar.
const UPKEEP_EVERY: Duration = Duration::from_secs(3_600);

/// How long shutdown waits, once HTTP has stopped, for an alert delivery in flight to finish
/// and be recorded; beyond it the delivery is abandoned (its claim expires and the next
/// leader retries it). With the HTTP grace ([`stormwatch_http::SHUTDOWN_GRACE`], in-flight
/// requests) this bounds a graceful stop before the embedded PostgreSQL, if any, is stopped.
pub const ALERTS_STOP_GRACE: Duration = Duration::from_secs(15);

/// A collector bound to its port, ready to serve.
pub struct Collector {
    pub state: Arc<AppState>,
    listener: TcpListener,
    embedded: Option<EmbeddedPostgres>,
    /// Held while the embedded cluster is ours: one collector per data directory.
    _data_dir_lock: Option<std::fs::File>,
    /// Config file changes and SIGHUP, watched from start-up on.
    reload: Option<reload::Triggers>,
    /// HTTPS, when `tls_cert` and `tls_key` are set.
    tls: Option<Arc<stormwatch_http::tls::Tls>>,
}

impl Collector {
    /// Starts the database (the embedded cluster when no URL is configured), applies
    /// migrations, creates partitions and binds the listen address.
    pub async fn start(mut config: Config) -> anyhow::Result<Collector> {
        // First, so a certificate that cannot be used fails the start before anything runs.
        let tls = match config.tls_files() {
            Some(files) => Some(
                stormwatch_http::tls::Tls::load(files).context("loading the TLS certificate")?,
            ),
            None => None,
        };
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
                    shared_buffers_mib: config.embedded_shared_buffers_mib,
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
        let alerts = match config
            .resolve_alerts()
            .map_err(|e| match &config.config_path {
                Some(p) => anyhow::anyhow!("config {}: [alerts]: {e}", p.display()),
                None => anyhow::anyhow!("[alerts]: {e}"),
            }) {
            Ok(a) => a,
            Err(e) => {
                if let Some(pg) = &embedded {
                    let _ = pg.stop().await;
                }
                return Err(e);
            }
        };
        let enabled = config.alerts.enabled;
        let reload = reload::Triggers::new(config.config_path.as_deref());
        let state = Arc::new(AppState::new(
            Arc::new(store),
            config,
            alerts::AlertsRuntime::new(alerts, enabled),
        ));
        Ok(Collector {
            state,
            listener,
            embedded,
            _data_dir_lock: lock,
            reload: Some(reload),
            tls,
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
            .create_partitions_ahead(stormwatch_model::now_ns())
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

    /// Serves until `shutdown` completes; in-flight requests finish (within
    /// [`stormwatch_http::SHUTDOWN_GRACE`]), then alerting (within [`ALERTS_STOP_GRACE`]),
    /// then the embedded PostgreSQL (if any) stops.
    pub async fn serve(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let upkeep = tokio::spawn(upkeep(self.state.store.clone()));
        let folding = tokio::spawn(fold_rollups(self.state.store.clone()));
        let compacting = tokio::spawn(compact_aggregates(self.state.store.clone()));
        let (stop_alerts, alerts_stopped) = tokio::sync::watch::channel(false);
        let alerting = tokio::spawn(alerts::run(self.state.clone(), alerts_stopped.clone()));
        let reload = self.reload.take().map(|triggers| {
            tokio::spawn(reload::run(triggers, self.state.clone(), alerts_stopped))
        });
        let app = router(self.state.clone());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(addr = %self.local_addr(), scheme, "collector listening");
        let renewals = self
            .tls
            .clone()
            .map(|t| tokio::spawn(t.watch(stormwatch_http::tls::RELOAD_EVERY)));
        // Read timeouts, a connection cap and the peer addresses the sign-in rate limit
        // (web::login_limit) needs.
        stormwatch_http::serve_with(
            self.listener,
            app,
            stormwatch_http::Limits::default(),
            self.tls.clone(),
            shutdown,
        )
        .await;
        if let Some(r) = renewals {
            r.abort();
        }
        upkeep.abort();
        folding.abort();
        compacting.abort();
        if let Some(r) = reload {
            r.abort();
        }
        // Let a delivery in flight finish and be recorded; give up after a grace period.
        let _ = stop_alerts.send(true);
        if tokio::time::timeout(ALERTS_STOP_GRACE, alerting)
            .await
            .is_err()
        {
            tracing::warn!(
                grace_s = ALERTS_STOP_GRACE.as_secs(),
                "alerting did not stop within the grace period"
            );
        }
        self.state.store.close();
        tracing::info!("HTTP server stopped");
        if let Some(pg) = &self.embedded {
            pg.stop()
                .await
                .context("stopping the embedded PostgreSQL")?;
            tracing::info!("embedded PostgreSQL stopped");
        }
        Ok(())
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
pub(crate) fn generated_token(data_dir: &Path) -> anyhow::Result<String> {
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
        let now = stormwatch_model::now_ns();
        if let Err(error) = store.create_partitions_ahead(now).await {
            tracing::warn!(%error, "creating partitions ahead failed");
        }
        if let Err(error) = store.apply_retention(now).await {
            tracing::warn!(%error, "applying retention failed");
        }
        match store.columnar_old_spans(now).await {
            Ok(converted) if !converted.is_empty() => {
                tracing::info!(partitions = ?converted, "Citus: old span partitions now columnar")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "converting old span partitions to columnar failed")
            }
        }
    }
}

/// Merges the aggregate rows batches append, one row per key, every [`COMPACT_EVERY`] over the
/// last minutes and every hour over the last day (`Store::compact_aggregates`; one collector at
/// a time). Readers add rows up per key, so this bounds how many they read, not what they see.
async fn compact_aggregates(store: Arc<Store>) {
    use stormwatch_store::compaction::{MAX_MINUTES, RECENT_S};
    let mut tick = tokio::time::interval(COMPACT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    for n in 0u64.. {
        tick.tick().await;
        let now_s = stormwatch_model::now_ns().div_euclid(1_000_000_000);
        // Up to two minutes ahead: agents' clocks may run a little ahead of ours.
        let mut windows = vec![(now_s - RECENT_S, now_s + 120)];
        if n % COMPACT_DAY_EVERY == 0 {
            windows.push((now_s - 86_400, now_s - RECENT_S));
        }
        for (from, to) in windows {
            // A window with more minutes to merge than one run takes, in several runs.
            loop {
                match store.compact_aggregates(from, to).await {
                    Ok(c) => {
                        if failing {
                            tracing::info!("compacting aggregates works again");
                        }
                        failing = false;
                        if !c.ran || c.minutes < MAX_MINUTES as u64 {
                            break;
                        }
                    }
                    // Once per outage: the rows stay as they are, readers add them up.
                    Err(error) => {
                        if !failing {
                            tracing::warn!(%error, "compacting aggregates failed; retrying");
                        }
                        failing = true;
                        break;
                    }
                }
            }
        }
    }
}

/// Folds the rollup deltas batches append into the service and dependency rollups every
/// [`FOLD_EVERY`] (`Store::fold_rollups`; one collector at a time, the others skip). Readers
/// add the deltas not yet folded, so this bounds how many they read, not what they see.
async fn fold_rollups(store: Arc<Store>) {
    let mut tick = tokio::time::interval(FOLD_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match store.fold_rollups(stormwatch_model::now_ns()).await {
            Ok(f) => {
                if failing {
                    tracing::info!(deltas = f.deltas, "folding rollup deltas works again");
                }
                failing = false;
                if f.expired > 0 {
                    tracing::info!(
                        expired = f.expired,
                        "dropped rollup deltas of days past retention"
                    );
                }
            }
            // Once per outage: the deltas wait in their table and the next fold takes them.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "folding rollup deltas failed; retrying every second");
            }
            Err(_) => {}
        }
    }
}

/// Completes on SIGINT or SIGTERM: the one shutdown trigger of every binary, from the `http`
/// crate (binaries call [`stormwatch_http::shutdown_signals`] first thing, to install the
/// handlers before anything starts).
pub use stormwatch_http::shutdown_signal;

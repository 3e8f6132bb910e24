//! Stormwatch's PostgreSQL store. **Only this crate knows SQL.**
//!
//! - [`embedded`]: the cluster the collector runs itself when given no database URL.
//! - [`migrate`]: forward-only migrations from `migrations/`; [`citus`]: the tables
//!   distributed after them on a Citus coordinator.
//! - [`partitions`]: daily partitions of the span and aggregate tables, and retention.
//! - [`batches`]: storing one agent batch in one transaction, exactly once; span labels as ids
//!   into `sw_labels` ([`labels`]) and span attributes zstd-compressed with a trained
//!   dictionary (`attr_dicts`).
//! - [`rollups`]: the per-minute and per-hour service and dependency rollups kept at ingest;
//!   [`sample_rollups`]: the same for probe and host samples.
//! - The read side, one module per thing read (as the web crate has one handler per page):
//!   [`spans`] (span lists, slow spans, traces), [`scatter`], [`aggregates`], [`services`],
//!   [`overview`] and [`dependencies`] (summed into [`totals`]), [`probes`], [`hosts`],
//!   [`agents`], [`signals`] (what alert rules read) and [`alerts`], [`incidents`] (related
//!   alerts grouped, their causes and the traffic they are read from), [`sessions`],
//!   [`metric_minutes`] (OTLP metric series) and [`logs`] (OTLP log records).
//! - `histogram_codec`: how histograms are stored (arrays, and packed in the rollups).
//! - [`tls`]: libpq's `sslmode` and `sslrootcert` over rustls, for every connection.

pub mod agents;
pub mod aggregates;
pub mod alerts;
pub mod attr_dicts;
pub mod batches;
pub mod citus;
pub mod compaction;
mod copy;
pub mod dependencies;
pub mod embedded;
pub mod entry_calls;
mod histogram_codec;
pub mod hosts;
pub mod incidents;
pub mod instances;
pub mod labels;
pub mod logs;
pub mod map;
pub mod metric_minutes;
pub mod migrate;
pub mod overview;
pub mod partitions;
pub mod probes;
pub mod recent;
pub mod recent_cache;
pub mod recurrence;
pub mod rollups;
pub mod sample_rollups;
pub mod scatter;
pub mod services;
pub mod sessions;
pub mod signals;
pub mod spans;
pub mod tls;
pub mod totals;
pub mod versions;

use std::sync::Mutex;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use agents::AgentHealth;
pub use aggregates::{AggregateFilter, AggregatePoint};
pub use batches::IngestOutcome;
pub use dependencies::{DependencySeries, PeerSummary};
pub use hosts::HostPoint;
pub use logs::LogFilter;
pub use metric_minutes::{MetricName, MetricSeries, Series, SeriesPoint};
pub use overview::ServiceOverview;
pub use probes::{ProbeHeatCell, ProbeHeatmap, ProbePoint, ProbedDay};
pub use rollups::Folded;
pub use sample_rollups::SLOW_CONNECT_MS;
pub use scatter::ScatterPoint;
pub use services::ServiceSummary;
pub use spans::{SlowOrder, SlowSpan, SpanFilter};
pub use totals::Totals;

/// Errors of the store. Database errors keep PostgreSQL's own message.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid database URL: {0}")]
    BadUrl(String),
    #[error("database: {0}")]
    Db(#[source] tokio_postgres::Error),
    /// The TLS handshake with PostgreSQL failed (a wrong CA, a host name not in the server's
    /// certificate, a server without TLS under `sslmode=require`...): why, and what to change.
    #[error("TLS with the database failed: {0}")]
    Tls(String),
    #[error("database connection pool: {0}")]
    Pool(String),
    #[error("migration {name} failed: {source}")]
    Migration {
        name: String,
        source: tokio_postgres::Error,
    },
    #[error("stored data is malformed: {0}")]
    Corrupt(String),
    /// A row the store built could not be put in PostgreSQL's binary form (a bug, not bad
    /// input: batches are validated before they get here).
    #[error("could not encode a row for {table}: {why}")]
    Encode { table: String, why: String },
    /// An alert-leader write under an epoch that is no longer current: another collector took
    /// leadership, so this one must stop evaluating and delivering.
    #[error("alert leadership lost: epoch {epoch} was superseded by epoch {current}")]
    Fenced { epoch: i64, current: i64 },
}

impl StoreError {
    /// PostgreSQL refused a value the request carried: SQLSTATE class 22 (data exception, such
    /// as a NUL in text or a number out of range) or 23 (integrity constraint). The request is
    /// at fault and sending it again fails the same way, so callers answer 4xx, not 503.
    pub fn is_data_error(&self) -> bool {
        match self {
            StoreError::Db(e) => e
                .code()
                .is_some_and(|c| matches!(&c.code()[..2], "22" | "23")),
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match tls::tls_failure(&e) {
            Some(why) => StoreError::Tls(why),
            None => StoreError::Db(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => StoreError::from(e),
            other => StoreError::Pool(other.to_string()),
        }
    }
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// libpq key=value string or `postgres://` URL, with libpq's `sslmode` and `sslrootcert`
    /// (see [`tls`]).
    pub url: String,
    /// Largest number of pooled connections.
    pub max_connections: usize,
    /// Days of spans and aggregates kept; older partitions are dropped.
    pub retention_days: u32,
}

/// A handle on the database: a connection pool plus what the store remembers between calls.
pub struct Store {
    pool: Pool,
    /// The pool's connection settings and TLS, for connections of their own (the alert leader
    /// lock).
    target: tls::ConnectTarget,
    retention_days: u32,
    /// Days whose partitions are known to exist (an in-memory cache; the DDL is idempotent).
    known_days: Mutex<std::collections::HashSet<i64>>,
    /// Span labels and their ids in `sw_labels` (`labels.rs`), both ways, bounded.
    labels: Mutex<labels::LabelCache>,
    /// The span attribute dictionaries (`attr_dicts.rs`) and, until there is one, the samples
    /// to train it on.
    attr_dicts: Mutex<attr_dicts::AttrDicts>,
}

impl Store {
    /// Opens a pool and checks that the database answers.
    pub async fn connect(opts: &StoreOptions) -> Result<Store, StoreError> {
        let target = tls::ConnectTarget::parse(&opts.url)?;
        let mgr = Manager::from_config(
            target.config.clone(),
            target.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(opts.max_connections.max(1))
            .build()
            .map_err(|e| StoreError::Pool(e.to_string()))?;
        let store = Store {
            pool,
            target,
            retention_days: opts.retention_days,
            known_days: Default::default(),
            labels: Default::default(),
            attr_dicts: Default::default(),
        };
        store.ping().await?;
        Ok(store)
    }

    /// Applies pending migrations.
    /// Applies the migrations not applied yet; returns how many. On a database with the
    /// `citus` extension, then distributes the tables not distributed yet ([`citus`]).
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut client = self.pool.get().await?;
        migrate::migrate(&mut client).await
    }

    /// `SELECT 1`: does the database answer?
    pub async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.execute("SELECT 1", &[]).await?;
        Ok(())
    }

    /// Closes the pool: idle connections end now, busy ones when returned.
    pub fn close(&self) {
        self.pool.close();
    }

    /// Days of data kept.
    pub fn retention_days(&self) -> u32 {
        self.retention_days
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }
}

/// A count as PostgreSQL's `bigint`: capped at `i64::MAX`, where `as` would wrap.
/// The wire name of enum number `n`, or `fallback`'s for a number this version does not know.
pub(crate) fn name<E: stormwatch_model::enums::WireEnum>(n: i32, fallback: E) -> &'static str {
    E::from_number(n).unwrap_or(fallback).as_str()
}

pub(crate) fn saturating_i64(v: u64) -> i64 {
    v.min(i64::MAX as u64) as i64
}

/// Nanoseconds since the Unix epoch, now (the model's clock, re-exported for the store's users).
pub use stormwatch_model::now_ns;

//! The agent's configuration: TOML file + environment + flags, validated in one place.
//!
//! Every field is documented here and in `agent.example.toml` (keep the two in step). Start-up
//! and reload both go through [`load`], so a file that would not start the agent is also never
//! accepted by a reload: the old config stays in force and the error names file, line and key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use stormwatch_model::{DbRole, DependencyClass};

/// A configuration that cannot be used. The message says where and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("config {path} line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    /// A value is well-formed but not allowed (e.g. a share above 1).
    #[error("config {path}{}: key `{key}`: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Invalid {
        path: String,
        line: Option<usize>,
        key: String,
        message: String,
    },
}

/// What a full-spool does with a new batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Delete the oldest spooled batches (their spans are counted as dropped, `spool_full`).
    #[default]
    DropOldest,
    /// Stop taking spans until the spool has room: receivers answer 429 / RESOURCE_EXHAUSTED.
    Block,
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Stable name of this agent; defaults to the host name.
    pub agent_id: Option<String>,
    /// Base URL of the collector, e.g. `http://collector:8080`. Without it spans are still
    /// received, aggregated and spooled, and shipped once a collector is configured.
    pub collector: Option<String>,
    /// Bearer token the collector issued for this agent.
    pub token: Option<String>,
    /// PEM CA certificates trusted for an `https://` collector, besides the system's roots
    /// (a private CA, a self-signed collector).
    pub collector_ca: Option<PathBuf>,
    /// PEM client certificate presented to the collector (mutual TLS), with its key.
    pub collector_client_cert: Option<PathBuf>,
    /// PEM private key of `collector_client_cert`.
    pub collector_client_key: Option<PathBuf>,
    /// Listen addresses.
    pub listen: Listen,
    /// Span classification and statement handling.
    pub classify: Classify,
    /// The sampler.
    pub sampling: Sampling,
    /// Batching, retries and the disk spool.
    pub shipping: Shipping,
    /// Host and app-process metrics.
    pub host: Host,
    /// Limits on what receivers accept.
    pub limits: Limits,
    /// Databases to probe (`[[database]]`): connectivity, replication lag.
    #[serde(rename = "database")]
    pub databases: Vec<crate::probes::config::Database>,
    /// When database spans are flagged (full-scan suspects).
    pub span_flags: crate::probes::config::SpanFlags,
    /// Names for peers (`[peer_names]`): `"host:port"` (or `"host"`, any port) = a name shown
    /// as `name (system, address)` everywhere the peer appears. Databases are named by their
    /// `[[database]]` entry and HTTP callees by the service seen answering there already.
    pub peer_names: BTreeMap<String, String>,
}

/// Where each receiver listens. An empty string disables that receiver.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Listen {
    /// OTLP/HTTP (`POST /v1/traces`), the OpenTelemetry default port.
    pub otlp_http: String,
    /// OTLP/gRPC, the OpenTelemetry default port.
    pub otlp_grpc: String,
    /// Zipkin v2 JSON (`POST /api/v2/spans`).
    pub zipkin: String,
    /// Admin: `GET /metrics` (Prometheus text) and `GET /healthz`.
    pub admin: String,
    /// PEM certificate chain: the OTLP/HTTP, OTLP/gRPC and Zipkin receivers serve TLS with it
    /// (apps on other hosts); with `tls_key`. Renewed files are picked up within 10 s.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            otlp_http: "127.0.0.1:4318".into(),
            otlp_grpc: "127.0.0.1:4317".into(),
            zipkin: "127.0.0.1:9411".into(),
            admin: "127.0.0.1:4319".into(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl Listen {
    /// The receivers' TLS files, when they serve TLS.
    pub fn tls_files(&self) -> Option<stormwatch_http::tls::TlsFiles> {
        Some(stormwatch_http::tls::TlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: None,
        })
    }

    /// The parsed address, or `None` when disabled.
    pub fn addr(value: &str) -> Option<SocketAddr> {
        if value.is_empty() {
            None
        } else {
            value.parse().ok()
        }
    }
}

/// How spans are classified and what of their statements leaves the agent.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Classify {
    /// Ship the raw SQL / Redis statement instead of the normalized one. Raw statements carry
    /// customer data (emails, ids, tokens); leave this off unless you own that risk.
    pub keep_raw_statements: bool,
    /// Database roles by peer (`host:port` as the span reports it): `"db-replica-1:5432" = "replica"`.
    pub db_roles: BTreeMap<String, DbRole>,
    /// Span attribute that carries the role (`primary` / `replica`) when the app sets it.
    pub db_role_attribute: String,
}

impl Default for Classify {
    fn default() -> Self {
        Classify {
            keep_raw_statements: false,
            db_roles: BTreeMap::new(),
            db_role_attribute: "db.role".into(),
        }
    }
}

/// Slow-span thresholds, in milliseconds, per dependency class.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    pub redis: u64,
    pub db: u64,
    pub http_client: u64,
    pub http_server: u64,
    pub messaging: u64,
    pub internal: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            redis: 20,
            db: 200,
            http_client: 500,
            http_server: 1000,
            messaging: 500,
            internal: 1000,
        }
    }
}

impl Thresholds {
    /// The threshold of `class`.
    pub fn of(&self, class: DependencyClass) -> Duration {
        let ms = match class {
            DependencyClass::Redis => self.redis,
            DependencyClass::Db => self.db,
            DependencyClass::HttpClient => self.http_client,
            DependencyClass::HttpServer => self.http_server,
            DependencyClass::Messaging => self.messaging,
            DependencyClass::Internal => self.internal,
        };
        Duration::from_millis(ms)
    }
}

/// A threshold for the spans matching every given field (an absent field matches anything).
/// The most specific match wins (peer beats service beats class); ties go to the first listed.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ThresholdOverride {
    pub service: Option<String>,
    pub peer: Option<String>,
    pub class: Option<DependencyClass>,
    pub threshold_ms: u64,
}

/// One latency band: spans faster than `below` × their threshold are kept with probability
/// `share`. Bands are checked in order; a span at or above the last band's bound but under its
/// threshold uses the last band's share.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Band {
    pub below: f64,
    pub share: f64,
}

/// The sampler: errors and slow spans always, the rest by latency band, whole traces together.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Sampling {
    pub thresholds_ms: Thresholds,
    #[serde(rename = "override")]
    pub overrides: Vec<ThresholdOverride>,
    #[serde(rename = "band")]
    pub bands: Vec<Band>,
    /// How long after a trace's first span the agent waits for the trace to be kept, and keeps
    /// its later spans, in milliseconds.
    pub trace_window_ms: u64,
    /// Spans held while waiting for their trace's decision; beyond it the oldest are released
    /// as not sampled. Bounds the sampler's memory (a packed span: its strings plus ~150 bytes).
    pub max_pending_spans: usize,
    /// Bytes held for traces waiting for a decision (`Sampler::held_bytes`); beyond it the
    /// oldest are released as not sampled, like `max_pending_spans`. At least
    /// [`MIN_MAX_HELD_BYTES`].
    pub max_held_bytes: usize,
}

/// Default of `sampling.max_held_bytes`, 256 MiB. Ordinary spans (300–450 bytes held each,
/// measured) reach `max_pending_spans` first, at 15–22 MiB; this bound takes over when
/// waiting spans average over 5 KiB (large attributes or statements), and caps what was
/// 4 GB and more with every span at the largest sizes (110 KiB held each).
pub const DEFAULT_MAX_HELD_BYTES: usize = 256 * 1024 * 1024;
/// Smallest `sampling.max_held_bytes`, 1 MiB: sixteen arena chunks.
pub const MIN_MAX_HELD_BYTES: usize = 1024 * 1024;

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            thresholds_ms: Thresholds::default(),
            overrides: Vec::new(),
            bands: vec![
                Band {
                    below: 0.25,
                    share: 0.02,
                },
                Band {
                    below: 0.5,
                    share: 0.05,
                },
                Band {
                    below: 1.0,
                    share: 0.2,
                },
            ],
            trace_window_ms: 2000,
            max_pending_spans: 50_000,
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
        }
    }
}

/// Batching, retries and the spool.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Shipping {
    /// A batch is cut at least this often, in milliseconds.
    pub flush_interval_ms: u64,
    /// ...or as soon as it holds this many spans (≤ 100,000, the collector's limit).
    pub max_batch_spans: usize,
    /// Directory of the disk spool. Default: `$TMPDIR/stormwatch-agent-spool`.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold on disk.
    pub spool_max_bytes: u64,
    /// What a full spool does: `drop_oldest` or `block`.
    pub when_full: WhenFull,
    /// fsync every batch file and the spool directory before the batch counts as spooled, so
    /// a power cut loses nothing acknowledged. Off: faster on slow disks, and a crash of the
    /// machine (not of the agent) can lose the last batches.
    pub spool_fsync: bool,
    /// Most bytes kept in `<spool_dir>/dead-letter/`: batches the collector refused for good
    /// (400, or a 413 that cannot be split). The oldest are deleted beyond it; 0 keeps none.
    pub dead_letter_max_bytes: u64,
    /// First retry delay, milliseconds; doubles per failure (with jitter) up to `max_backoff_ms`.
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Timeout of one POST to the collector, milliseconds.
    pub request_timeout_ms: u64,
    /// Body compression: `zstd`, `gzip` or `none`.
    pub compression: Compression,
}

/// Compression of the ingest body.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Zstd,
    Gzip,
    None,
}

impl Default for Shipping {
    fn default() -> Self {
        Shipping {
            flush_interval_ms: 1000,
            max_batch_spans: 5000,
            spool_dir: None,
            spool_max_bytes: 256 * 1024 * 1024,
            when_full: WhenFull::DropOldest,
            spool_fsync: true,
            dead_letter_max_bytes: 64 * 1024 * 1024,
            initial_backoff_ms: 250,
            max_backoff_ms: 30_000,
            request_timeout_ms: 30_000,
            compression: Compression::Zstd,
        }
    }
}

impl Shipping {
    /// The spool directory, defaulted.
    pub fn spool_dir(&self) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("stormwatch-agent-spool"))
    }
}

/// Host metrics.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Host {
    /// Sample every this many seconds; 0 disables host metrics.
    pub interval_s: u64,
    /// The app process to watch, by pid file...
    pub app_pid_file: Option<PathBuf>,
    /// ...or by process name (the first match).
    pub app_process_name: Option<String>,
}

impl Default for Host {
    fn default() -> Self {
        Host {
            interval_s: 10,
            app_pid_file: None,
            app_process_name: None,
        }
    }
}

/// What receivers accept.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body as sent (compressed), bytes.
    pub max_request_bytes: usize,
    /// Largest request body after decompression, bytes.
    pub max_decompressed_bytes: usize,
    /// Spans waiting between receivers and the pipeline; when full, receivers answer 429.
    pub queue_spans: usize,
    /// A span with an attribute value longer than this is rejected (shorter ones are cut to the
    /// wire limit of 1 KiB).
    pub max_attribute_value_bytes: usize,
    /// OTLP metric series (service, instance, name, attributes) tracked at most; points of
    /// new series beyond are dropped and counted (`stormwatch_agent_metric_points_dropped_total`).
    pub max_metric_series: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 * 1024 * 1024,
            max_decompressed_bytes: 64 * 1024 * 1024,
            queue_spans: 100_000,
            max_attribute_value_bytes: 64 * 1024,
            max_metric_series: 10_000,
        }
    }
}

/// Values from flags and environment; each overrides the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub collector: Option<String>,
    pub token: Option<String>,
    pub agent_id: Option<String>,
    pub otlp_http: Option<String>,
    pub otlp_grpc: Option<String>,
    pub zipkin: Option<String>,
    pub admin: Option<String>,
    pub spool_dir: Option<PathBuf>,
}

/// Reads `path` (if any), applies `overrides`, validates.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
    let (mut config, text, shown) = match path {
        Some(p) => {
            let shown = p.display().to_string();
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: shown.clone(),
                source,
            })?;
            (parse(&text, &shown)?, text, shown)
        }
        None => (Config::default(), String::new(), "(flags)".to_owned()),
    };
    let o = overrides.clone();
    let set = |slot: &mut String, v: Option<String>| {
        if let Some(v) = v {
            *slot = v;
        }
    };
    if o.collector.is_some() {
        config.collector = o.collector;
    }
    if o.token.is_some() {
        config.token = o.token;
    }
    if o.agent_id.is_some() {
        config.agent_id = o.agent_id;
    }
    set(&mut config.listen.otlp_http, o.otlp_http);
    set(&mut config.listen.otlp_grpc, o.otlp_grpc);
    set(&mut config.listen.zipkin, o.zipkin);
    set(&mut config.listen.admin, o.admin);
    if o.spool_dir.is_some() {
        config.shipping.spool_dir = o.spool_dir;
    }
    validate(&config).map_err(|(key, message)| ConfigError::Invalid {
        path: shown,
        line: line_of_key(&text, &key),
        key,
        message,
    })?;
    Ok(config)
}

/// Parses TOML text; errors carry the 1-based line.
pub fn parse(text: &str, shown: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
            .unwrap_or(0);
        ConfigError::Parse {
            path: shown.to_owned(),
            line,
            message: e.message().trim().to_owned(),
        }
    })
}

/// The line where the last segment of a dotted key is assigned, for error messages.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    let leaf = key.rsplit('.').next()?;
    let leaf = leaf.split('[').next()?;
    // `database[2].url`: search from the third `[[database]]` header on.
    let skip = key
        .split_once('[')
        .and_then(|(table, rest)| {
            let n: usize = rest.split(']').next()?.parse().ok()?;
            let header = format!("[[{table}]]");
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.trim() == header)
                .nth(n)
                .map(|(i, _)| i)
        })
        .unwrap_or(0);
    text.lines()
        .enumerate()
        .skip(skip)
        .find(|(_, l)| {
            let l = l.trim_start();
            l.strip_prefix(leaf)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|(i, _)| i + 1)
}

fn validate(c: &Config) -> Result<(), (String, String)> {
    let err = |k: &str, m: String| Err((k.to_owned(), m));
    for (key, v) in [
        ("listen.otlp_http", &c.listen.otlp_http),
        ("listen.otlp_grpc", &c.listen.otlp_grpc),
        ("listen.zipkin", &c.listen.zipkin),
        ("listen.admin", &c.listen.admin),
    ] {
        if !v.is_empty() && v.parse::<SocketAddr>().is_err() {
            return err(
                key,
                format!("`{v}` is not an address like 127.0.0.1:4318 (or \"\" to disable)"),
            );
        }
    }
    if let Some(url) = &c.collector {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return err(
                "collector",
                format!("`{url}` must start with http:// or https://"),
            );
        }
    }
    if c.listen.tls_cert.is_some() != c.listen.tls_key.is_some() {
        return err(
            if c.listen.tls_cert.is_some() {
                "listen.tls_key"
            } else {
                "listen.tls_cert"
            },
            "listen.tls_cert and listen.tls_key go together: TLS needs both".into(),
        );
    }
    match (&c.collector_client_cert, &c.collector_client_key) {
        (Some(_), None) => {
            return err(
                "collector_client_key",
                "collector_client_cert is set but collector_client_key is not: a client certificate needs its key".into(),
            )
        }
        (None, Some(_)) => {
            return err(
                "collector_client_cert",
                "collector_client_key is set but collector_client_cert is not".into(),
            )
        }
        _ => {}
    }
    if let Some(id) = &c.agent_id {
        if id.is_empty() || id.len() > stormwatch_model::limits::MAX_AGENT_ID_BYTES {
            return err("agent_id", "must be 1 to 128 bytes".into());
        }
    }
    let s = &c.sampling;
    let mut last = 0.0;
    for (i, b) in s.bands.iter().enumerate() {
        if !(0.0..=1.0).contains(&b.share) {
            return err(
                &format!("sampling.band[{i}].share"),
                format!("{} is not between 0 and 1", b.share),
            );
        }
        if b.below.is_nan() || b.below <= last {
            return err(
                &format!("sampling.band[{i}].below"),
                "bands must have increasing, positive `below`".into(),
            );
        }
        last = b.below;
    }
    if s.trace_window_ms > 60_000 {
        return err("sampling.trace_window_ms", "must be at most 60000".into());
    }
    if s.max_held_bytes < MIN_MAX_HELD_BYTES {
        return err(
            "sampling.max_held_bytes",
            format!("must be at least {MIN_MAX_HELD_BYTES} (1 MiB)"),
        );
    }
    let sh = &c.shipping;
    if sh.max_batch_spans == 0 || sh.max_batch_spans > stormwatch_model::limits::MAX_SPANS_PER_BATCH
    {
        return err(
            "shipping.max_batch_spans",
            "must be between 1 and 100000".into(),
        );
    }
    if sh.flush_interval_ms == 0 {
        return err("shipping.flush_interval_ms", "must be positive".into());
    }
    if sh.initial_backoff_ms == 0 || sh.max_backoff_ms < sh.initial_backoff_ms {
        return err(
            "shipping.max_backoff_ms",
            "need 0 < initial_backoff_ms <= max_backoff_ms".into(),
        );
    }
    if sh.spool_max_bytes < 1024 * 1024 {
        return err("shipping.spool_max_bytes", "must be at least 1 MiB".into());
    }
    if c.limits.max_metric_series == 0 {
        return err("limits.max_metric_series", "must be positive".into());
    }
    if c.limits.queue_spans == 0 {
        return err("limits.queue_spans", "must be positive".into());
    }
    for (address, name) in &c.peer_names {
        let key = format!("peer_names.\"{address}\"");
        if address.trim().is_empty() {
            return err("peer_names", "an address may not be empty".into());
        }
        if name.trim().is_empty() || name.len() > stormwatch_model::limits::MAX_LABEL_BYTES / 2 {
            return err(&key, "a name must be 1 to 128 bytes".into());
        }
    }
    crate::probes::config::validate(&c.databases, &c.span_flags)?;
    Ok(())
}

impl Config {
    /// The agent id: configured, else the host name, else `agent`.
    pub fn agent_id(&self) -> String {
        if let Some(id) = &self.agent_id {
            return id.clone();
        }
        sysinfo::System::host_name()
            .filter(|h| !h.is_empty())
            .map(|mut h| {
                h.truncate(stormwatch_model::limits::MAX_AGENT_ID_BYTES);
                h
            })
            .unwrap_or_else(|| "agent".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_run_with_no_file() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.otlp_http, "127.0.0.1:4318");
        assert_eq!(c.sampling.thresholds_ms.redis, 20);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = "collector = \"http://x\"\n\n[sampling]\nsampel_rate = 3\n";
        let e = parse(text, "agent.toml").unwrap_err().to_string();
        assert!(e.contains("agent.toml line 4"), "{e}");
        assert!(e.contains("sampel_rate"), "{e}");
    }

    #[test]
    fn invalid_value_names_key_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "[[sampling.band]]\nbelow = 0.5\nshare = 1.5\n").unwrap();
        let e = load(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("sampling.band[0].share"), "{e}");
    }

    #[test]
    fn a_held_bytes_bound_under_one_mib_is_refused() {
        let text = "[sampling]\nmax_held_bytes = 65536\n";
        let c = parse(text, "agent.toml").unwrap();
        let (key, message) = validate(&c).unwrap_err();
        assert_eq!(key, "sampling.max_held_bytes");
        assert!(message.contains("1048576"), "{message}");
    }

    #[test]
    fn flags_override_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.toml");
        std::fs::write(&p, "collector = \"http://a:1\"\n[shipping]\nwhen_full = \"block\"\nspool_fsync = false\n[classify.db_roles]\n\"db2:5432\" = \"replica\"\n").unwrap();
        let o = Overrides {
            collector: Some("http://b:2".into()),
            ..Default::default()
        };
        let c = load(Some(&p), &o).unwrap();
        assert_eq!(c.collector.as_deref(), Some("http://b:2"));
        assert_eq!(c.shipping.when_full, WhenFull::Block);
        assert!(!c.shipping.spool_fsync);
        assert_eq!(c.classify.db_roles["db2:5432"], DbRole::Replica);
    }

    #[test]
    fn example_file_is_valid_and_complete() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent.example.toml");
        let c = load(Some(&path), &Overrides::default()).unwrap();
        // The example documents the defaults: parsing it must give the built-in config,
        // apart from the illustrative entries it adds.
        assert_eq!(c.listen, Listen::default());
        assert_eq!(c.shipping, Shipping::default());
        assert_eq!(c.sampling.bands, Sampling::default().bands);
        assert_eq!(
            c.sampling.max_pending_spans,
            Sampling::default().max_pending_spans
        );
        assert_eq!(c.sampling.max_held_bytes, DEFAULT_MAX_HELD_BYTES);
    }
}

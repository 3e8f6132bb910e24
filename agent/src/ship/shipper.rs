//! Sends spooled batches to the collector, oldest first, and decides what each answer means.
//!
//! | answer            | action                                                        |
//! |-------------------|---------------------------------------------------------------|
//! | 2xx               | delete from the spool                                         |
//! | 400               | log ERROR with the collector's reason, count spans `rejected`, move to the dead-letter folder |
//! | 413               | split the batch in two (new sequence numbers), retry at once; a batch of one span: count `too_large`, dead letter |
//! | 401 / 403         | log ERROR about the token, keep retrying with backoff         |
//! | 429, 5xx, network | retry with exponential backoff and full jitter                |
//!
//! A batch keeps its `(instance, sequence)` across retries, so the collector stores it once
//! however often it is resent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::{Batch, Encoding};
use tokio::sync::watch;

use super::body::{decode_body, encode_body};
use super::spool::{Corrupt, Counts, Entry, PushError, ReadError, Refusal, Spool};
use crate::config::{Compression, Config};
use crate::metrics::{DropReason, Metrics};
use crate::util::random_u64;

/// The batch identity of this agent process: `instance` plus the next sequence number.
#[derive(Debug)]
pub struct Sequencer {
    pub agent_id: String,
    pub instance: String,
    next: AtomicU64,
}

impl Sequencer {
    /// A fresh instance id: start time (ms, hex) and a random suffix.
    pub fn new(agent_id: String) -> Self {
        let ms = crate::util::now_ns() / 1_000_000;
        Sequencer {
            agent_id,
            instance: format!("{ms:x}-{:08x}", random_u64() as u32),
            next: AtomicU64::new(1),
        }
    }

    /// Takes the next sequence number.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Relaxed)
    }
}

fn content_encoding(c: Compression) -> Option<&'static str> {
    match c {
        Compression::None => None,
        Compression::Zstd => Some("zstd"),
        Compression::Gzip => Some("gzip"),
    }
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Stored,
    Rejected,
    Split,
    Retry,
}

/// The shipping loop.
pub struct Shipper {
    pub spool: Arc<Spool>,
    pub config: watch::Receiver<Arc<Config>>,
    pub metrics: Arc<Metrics>,
    pub seq: Arc<Sequencer>,
    client: reqwest::Client,
    /// The TLS files `client` was built with.
    tls: TlsFiles,
}

/// An error and its causes, `: `-separated (reqwest's own text leaves out why a request
/// failed, e.g. the certificate it did not trust).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

type TlsFiles = (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>);

fn tls_files(cfg: &Config) -> TlsFiles {
    (
        cfg.collector_ca.clone(),
        cfg.collector_client_cert.clone(),
        cfg.collector_client_key.clone(),
    )
}

/// The client for the collector: the system's roots (and Mozilla's), the configured CA file,
/// and the client certificate when set. Errors name the file.
pub fn http_client(cfg: &Config) -> anyhow::Result<reqwest::Client> {
    use anyhow::Context as _;
    let read = |p: &PathBuf, what: &str| {
        std::fs::read(p).with_context(|| format!("reading {what} {}", p.display()))
    };
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("stormwatch-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(5))
        // The collector closes a connection that waits for a request's headers longer than
        // its header read timeout, idle keep-alive connections included. A pooled connection
        // reused just as it closes fails the request ("connection reset"): drop it sooner.
        .pool_idle_timeout(stormwatch_http::HEADER_READ_TIMEOUT / 2)
        .use_rustls_tls();
    if let Some(ca) = &cfg.collector_ca {
        let certs = reqwest::Certificate::from_pem_bundle(&read(ca, "collector_ca")?)
            .with_context(|| format!("collector_ca {}: not PEM certificates", ca.display()))?;
        anyhow::ensure!(
            !certs.is_empty(),
            "collector_ca {}: holds no certificate",
            ca.display()
        );
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if let (Some(cert), Some(key)) = (&cfg.collector_client_cert, &cfg.collector_client_key) {
        let mut pem = read(cert, "collector_client_cert")?;
        pem.push(b'\n');
        pem.extend(read(key, "collector_client_key")?);
        let id = reqwest::Identity::from_pem(&pem).with_context(|| {
            format!(
                "collector_client_cert {} with collector_client_key {}: not a certificate and key",
                cert.display(),
                key.display()
            )
        })?;
        b = b.identity(id);
    }
    Ok(b.build()?)
}

impl Shipper {
    pub fn new(
        spool: Arc<Spool>,
        config: watch::Receiver<Arc<Config>>,
        metrics: Arc<Metrics>,
        seq: Arc<Sequencer>,
    ) -> anyhow::Result<Self> {
        let cfg = config.borrow().clone();
        let client = http_client(&cfg)?;
        Ok(Shipper {
            spool,
            tls: tls_files(&cfg),
            config,
            metrics,
            seq,
            client,
        })
    }

    /// Builds the client again when a reload changed its TLS files; a client that cannot be
    /// built (a CA file gone) leaves the previous one in use, said once per change.
    fn refresh_client(&mut self, cfg: &Config) {
        let files = tls_files(cfg);
        if files == self.tls {
            return;
        }
        self.tls = files;
        match http_client(cfg) {
            Ok(c) => self.client = c,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "cannot use the new collector TLS files; shipping with the previous ones");
            }
        }
    }

    /// Ships until `stop` turns true; then keeps shipping only while the spool has batches and
    /// the collector accepts them (the caller bounds that with a grace period).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff: Option<Duration> = None;
        loop {
            let draining = *stop.borrow();
            let entry = if draining {
                match self.spool.peek() {
                    Some(e) => e,
                    None => return,
                }
            } else {
                tokio::select! {
                    e = self.spool.next() => e,
                    _ = stop.changed() => continue,
                }
            };
            // Marks the value seen, so `changed()` below waits for the next reload.
            let cfg = self.config.borrow_and_update().clone();
            let Some(url) = cfg.collector.clone() else {
                if draining {
                    return;
                }
                // Nothing to send to until a reload names a collector.
                tokio::select! {
                    _ = self.config.changed() => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            self.refresh_client(&cfg);
            let outcome = self.attempt(&entry, &url, &cfg).await;
            if outcome == Outcome::Retry {
                if draining {
                    return;
                }
                let sh = &cfg.shipping;
                let base = backoff.map_or(Duration::from_millis(sh.initial_backoff_ms), |b| {
                    (b * 2).min(Duration::from_millis(sh.max_backoff_ms))
                });
                backoff = Some(base);
                // Full jitter: a fleet of agents does not retry in lockstep after an outage.
                let wait = Duration::from_millis(
                    sh.initial_backoff_ms / 2 + random_u64() % (base.as_millis() as u64).max(1),
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            } else {
                backoff = None;
            }
        }
    }

    async fn attempt(&self, entry: &Entry, url: &str, cfg: &Config) -> Outcome {
        let body = match self.spool.read(entry).await {
            Ok(b) => b,
            // Quarantined and counted by the spool: on with the next.
            Err(ReadError::Corrupt(_)) => return Outcome::Rejected,
            Err(ReadError::Io(error)) => {
                tracing::warn!(%error, spans = entry.spans, "cannot read a spooled batch; will retry");
                return Outcome::Retry;
            }
        };
        let endpoint = format!("{}/api/v1/ingest", url.trim_end_matches('/'));
        let mut req = self
            .client
            .post(&endpoint)
            .timeout(Duration::from_millis(cfg.shipping.request_timeout_ms))
            .header(
                reqwest::header::CONTENT_TYPE,
                Encoding::Protobuf.content_type(),
            );
        if let Some(enc) = content_encoding(entry.compression) {
            req = req.header(reqwest::header::CONTENT_ENCODING, enc);
        }
        if let Some(token) = &cfg.token {
            req = req.bearer_auth(token);
        }
        let started = Instant::now();
        let resp = match req.body(body.clone()).send().await {
            Ok(r) => r,
            Err(error) => {
                self.metrics.ship_failures.fetch_add(1, Relaxed);
                // The causes say why: refused, timed out, or which certificate check failed.
                let error = error_chain(&error);
                tracing::warn!(%error, endpoint, spans = entry.spans, "collector unreachable; batch stays spooled");
                return Outcome::Retry;
            }
        };
        let status = resp.status().as_u16();
        let text = read_limited(resp).await;
        match status {
            200..=299 => {
                self.metrics.ship_latency(started.elapsed());
                self.metrics.batches_shipped.fetch_add(1, Relaxed);
                self.spool.remove(entry);
                Outcome::Stored
            }
            400 => {
                self.metrics.ship_failures.fetch_add(1, Relaxed);
                let (error, field) = reason_of(&text);
                self.dead_letter(
                    entry,
                    DropReason::Rejected,
                    Refusal {
                        status,
                        error,
                        field,
                    },
                );
                Outcome::Rejected
            }
            413 => {
                self.metrics.ship_failures.fetch_add(1, Relaxed);
                tracing::warn!(
                    spans = entry.spans,
                    bytes = body.len(),
                    "collector says the batch is too large (413); splitting it"
                );
                self.split(entry, &body, cfg).await
            }
            401 | 403 => {
                self.metrics.ship_failures.fetch_add(1, Relaxed);
                tracing::error!(status, endpoint, "collector refused the agent token: set a valid `token` (STORMWATCH_TOKEN / --token); batches stay spooled and are retried");
                Outcome::Retry
            }
            _ => {
                self.metrics.ship_failures.fetch_add(1, Relaxed);
                tracing::warn!(status, body = %text.chars().take(200).collect::<String>(), "collector did not store the batch; will retry");
                Outcome::Retry
            }
        }
    }

    /// Replaces a too-large batch by two halves with fresh sequence numbers (the original was
    /// never stored, so no duplicate can arise).
    async fn split(&self, entry: &Entry, body: &[u8], cfg: &Config) -> Outcome {
        let batch = match decode_body(body, entry.compression, 512 * 1024 * 1024) {
            Ok(b) => b,
            Err(error) => {
                self.spool
                    .quarantine(entry, &Corrupt::Undecodable(error.to_string()));
                return Outcome::Rejected;
            }
        };
        if batch.spans.len() < 2 && batch.logs.len() < 2 {
            self.dead_letter(entry, DropReason::TooLarge, too_large(&batch));
            return Outcome::Rejected;
        }
        let refusal = too_large(&batch);
        let mut first = batch.clone();
        // Spans and log records are what grows a batch; the rest stays with the first half.
        let second_spans = first.spans.split_off(first.spans.len() / 2);
        let second_logs = first.logs.split_off(first.logs.len() / 2);
        let mut second = Batch {
            spans: second_spans,
            logs: second_logs,
            aggregates: Vec::new(),
            hosts: Vec::new(),
            probes: Vec::new(),
            versions: Vec::new(),
            entry_calls: Vec::new(),
            metrics: Vec::new(),
            ..batch
        };
        first.instance = self.seq.instance.clone();
        second.instance = self.seq.instance.clone();
        first.sequence = self.seq.next();
        second.sequence = self.seq.next();
        let mut halves = Vec::new();
        for b in [&first, &second] {
            match encode_body(b, cfg.shipping.compression) {
                Ok(body) => halves.push((body, counts_of(b))),
                Err(error) => {
                    tracing::error!(%error, "cannot encode a split batch");
                    return Outcome::Retry;
                }
            }
        }
        let (Some(b), Some(a)) = (halves.pop(), halves.pop()) else {
            return Outcome::Retry;
        };
        match self.spool.split(entry, [a, b]).await {
            Ok(()) => Outcome::Split,
            Err(PushError::TooBig(_)) => {
                // Split as often as the file names allow: give up on it.
                self.dead_letter(entry, DropReason::TooLarge, refusal);
                Outcome::Rejected
            }
            Err(error) => {
                // The parent is still whole in the spool: try again later.
                tracing::warn!(%error, "cannot spool the halves of a batch; will retry");
                Outcome::Retry
            }
        }
    }

    /// A batch the collector will never take: out of the queue into the dead-letter folder,
    /// counted under `reason`. Shipping goes on with the next batch either way.
    fn dead_letter(&self, entry: &Entry, reason: DropReason, why: Refusal) {
        self.metrics
            .batch_dropped(reason, u64::from(entry.spans), entry.aggregated);
        match self.spool.dead_letter(entry, &why) {
            Ok(path) => tracing::error!(
                status = why.status,
                error = why.error,
                field = why.field,
                spans = entry.spans,
                aggregated_spans = entry.aggregated,
                file = %path.display(),
                "collector refused the batch for good; moved to the dead-letter folder, not retried"
            ),
            Err(error) => tracing::error!(
                status = why.status,
                error = why.error,
                field = why.field,
                spans = entry.spans,
                aggregated_spans = entry.aggregated,
                move_error = %error,
                "collector refused the batch for good; it could not be kept as a dead letter and is deleted"
            ),
        }
    }
}

/// What a batch holds: kept spans, and spans its aggregates count.
pub fn counts_of(batch: &Batch) -> Counts {
    Counts {
        spans: batch.spans.len() as u32,
        aggregated: batch.aggregates.iter().map(|a| a.count).sum(),
    }
}

/// The refusal of a 413 batch that cannot be split further.
fn too_large(batch: &Batch) -> Refusal {
    Refusal {
        status: 413,
        error: format!(
            "too large for the collector and cannot be split further ({} spans, {} aggregates)",
            batch.spans.len(),
            batch.aggregates.len()
        ),
        field: String::new(),
    }
}

async fn read_limited(resp: reqwest::Response) -> String {
    let bytes = resp.bytes().await.unwrap_or_default();
    String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned()
}

/// `{"error": "...", "field": "..."}` from a 400 body.
fn reason_of(text: &str) -> (String, String) {
    let v: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    let get = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
    let error = get("error");
    (
        if error.is_empty() {
            text.chars().take(300).collect()
        } else {
            error
        },
        get("field"),
    )
}

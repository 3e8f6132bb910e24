//! The pipeline task: every received span is counted in the aggregates, then offered to the
//! sampler; kept spans, aggregates and host samples are cut into batches every flush interval
//! (or when full) and written to the spool.
//!
//! One task owns the aggregator and the sampler, so neither needs a lock. When the spool is
//! full in `block` mode, this task waits, the queue in front of it fills, and receivers answer
//! 429 — backpressure reaches the app's exporter instead of memory growing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use stormwatch_model::{Batch, HostSample, ProbeSample, Span, WIRE_VERSION};
use tokio::sync::{mpsc, watch};

use crate::aggregates::{self, Aggregator};
use crate::classify::Received;
use crate::config::Config;
use crate::ingest::Work;
use crate::metrics::{DropReason, Metrics};
use crate::probes::join::Join;
use crate::sampler::Sampler;
use crate::shipper::{encode_body, Sequencer};
use crate::spool::{PushError, Spool};
use crate::util::now_ns;

/// Largest uncompressed batch the agent builds: under the collector's 64 MiB decompressed
/// limit with room for aggregates and framing.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// How often waiting traces are expired and the flush timer is checked.
const TICK: Duration = Duration::from_millis(100);

pub struct Pipeline {
    pub rx: mpsc::Receiver<Work>,
    pub hosts_rx: mpsc::Receiver<HostSample>,
    /// Database probe results: joined to spans, then shipped.
    pub probes_rx: mpsc::Receiver<ProbeSample>,
    pub config: watch::Receiver<Arc<Config>>,
    pub spool: Arc<Spool>,
    pub seq: Arc<Sequencer>,
    pub metrics: Arc<Metrics>,
}

struct State {
    cfg: Arc<Config>,
    agg: Aggregator,
    sampler: Sampler,
    kept: Vec<Received>,
    hosts: Vec<HostSample>,
    probes: Vec<ProbeSample>,
    join: Join,
    last_flush: Instant,
}

impl Pipeline {
    /// Runs until `stop` turns true, then drains the queue, flushes and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let cfg = self.config.borrow().clone();
        let mut st = State {
            sampler: Sampler::new(cfg.sampling.clone(), self.metrics.clone()),
            join: Join::new(&cfg),
            probes: Vec::new(),
            cfg,
            agg: Aggregator::default(),
            kept: Vec::new(),
            hosts: Vec::new(),
            last_flush: Instant::now(),
        };
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                w = self.rx.recv() => match w {
                    Some(w) => self.process(&mut st, w).await,
                    None => break,
                },
                Some(h) = self.hosts_rx.recv() => st.hosts.push(h),
                Some(p) = self.probes_rx.recv() => {
                    st.join.observe(&p);
                    st.probes.push(p);
                }
                _ = tick.tick() => {
                    if self.config.has_changed().unwrap_or(false) {
                        let cfg = self.config.borrow_and_update().clone();
                        st.sampler.reconfigure(cfg.sampling.clone());
                        st.join.reconfigure(&cfg);
                        self.spool.reconfigure(cfg.shipping.spool_max_bytes, cfg.shipping.when_full);
                        st.cfg = cfg;
                    }
                    st.sampler.expire(Instant::now());
                    if st.last_flush.elapsed() >= Duration::from_millis(st.cfg.shipping.flush_interval_ms) {
                        self.flush(&mut st).await;
                    }
                }
                _ = stop.changed() => {}
            }
        }
        // Shutdown: what is queued is still counted and sampled; spans waiting for a trace
        // decision are let go (they are in the aggregates).
        while let Ok(w) = self.rx.try_recv() {
            self.process(&mut st, w).await;
        }
        while let Ok(h) = self.hosts_rx.try_recv() {
            st.hosts.push(h);
        }
        while let Ok(p) = self.probes_rx.try_recv() {
            st.probes.push(p);
        }
        st.sampler.clear();
        self.flush(&mut st).await;
    }

    async fn process(&self, st: &mut State, work: Work) {
        let now = Instant::now();
        for mut span in work.spans {
            // Marked first: a failed database connection counts under its own status class.
            st.join.mark(&mut span, now);
            st.agg.add(&span);
            st.sampler.offer(span, now, &mut st.kept);
            if st.kept.len() >= st.cfg.shipping.max_batch_spans
                || st.agg.len() >= aggregates::MAX_KEYS
            {
                self.flush(st).await;
            }
        }
    }

    /// Cuts what is held into batches and spools them.
    async fn flush(&self, st: &mut State) {
        st.last_flush = Instant::now();
        let mut spans = std::mem::take(&mut st.kept);
        let mut aggregates = st.agg.take();
        let mut hosts = std::mem::take(&mut st.hosts);
        let mut probes = std::mem::take(&mut st.probes);
        if spans.is_empty() && aggregates.is_empty() && hosts.is_empty() && probes.is_empty() {
            return;
        }
        // Cut into chunks by count and encoded size; the first chunk carries the rest.
        let max = st.cfg.shipping.max_batch_spans;
        let mut chunks: Vec<Vec<Span>> = Vec::new();
        let mut size = 0usize;
        let mut current = Vec::new();
        for s in spans.drain(..).map(Received::into_span) {
            let len = s.encoded_len() + 8;
            if !current.is_empty() && (current.len() >= max || size + len > MAX_BATCH_BYTES) {
                chunks.push(std::mem::take(&mut current));
                size = 0;
            }
            size += len;
            current.push(s);
        }
        if !current.is_empty() || chunks.is_empty() {
            chunks.push(current);
        }
        for chunk in chunks {
            let mut batch = Batch {
                version: WIRE_VERSION,
                agent_id: self.seq.agent_id.clone(),
                instance: self.seq.instance.clone(),
                sequence: self.seq.next(),
                sent_at_ns: now_ns(),
                spans: chunk,
                aggregates: std::mem::take(&mut aggregates),
                hosts: std::mem::take(&mut hosts),
                probes: std::mem::take(&mut probes),
                stats: Some(self.metrics.stats()),
            };
            let n = batch.spans.len() as u64;
            // The collector runs the same check; a batch it would refuse is a bug here, and
            // catching it before spooling keeps the spool free of poison.
            if let Err(e) = stormwatch_model::validate::check_batch(&mut batch, now_ns()) {
                tracing::error!(
                    field = e.field,
                    error = e.message,
                    spans = n,
                    "built an invalid batch; dropped"
                );
                self.metrics.dropped(DropReason::Invalid, n);
                continue;
            }
            let body = match encode_body(&batch, st.cfg.shipping.compression) {
                Ok(b) => b,
                Err(error) => {
                    tracing::error!(%error, spans = n, "cannot compress a batch; dropped");
                    self.metrics.dropped(DropReason::SpoolCorrupt, n);
                    continue;
                }
            };
            self.metrics
                .batches_built
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self
                .spool
                .push(&body, n as u32, st.cfg.shipping.compression)
                .await
            {
                Ok(()) => {}
                Err(PushError::TooBig(bytes)) => {
                    tracing::error!(bytes, spans = n, "batch larger than the spool; dropped");
                    self.metrics.dropped(DropReason::SpoolFull, n);
                }
                Err(error) => {
                    tracing::error!(%error, spans = n, "cannot write the spool; batch dropped");
                    self.metrics.dropped(DropReason::SpoolCorrupt, n);
                }
            }
        }
    }
}

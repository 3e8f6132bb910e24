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

use crate::config::Config;
use crate::ingest::Work;
use crate::metrics::{DropReason, Metrics};
use crate::peer_names::PeerNames;
use crate::probes::join::Join;
use crate::received::Received;
use crate::ship::body::encode_body;
use crate::ship::shipper::Sequencer;
use crate::ship::spool::{PushError, Spool};
use crate::util::now_ns;
use aggregates::Aggregator;
use entries::Entries;
use sampler::Sampler;

pub mod aggregates;
pub mod entries;
pub mod sampler;

/// Largest uncompressed batch the agent builds: under the collector's 64 MiB decompressed
/// limit with room for aggregates and framing.
pub const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// The shortest gap between two expiry passes over the waiting traces. A trace may wait up to
/// this much past its window; in return a trickle of traces costs at most ten wake-ups a second.
const EXPIRY_STEP: Duration = Duration::from_millis(100);

pub struct Pipeline {
    pub rx: mpsc::Receiver<Work>,
    pub hosts_rx: mpsc::Receiver<HostSample>,
    /// Database probe results: joined to spans, then shipped.
    pub probes_rx: mpsc::Receiver<ProbeSample>,
    pub config: watch::Receiver<Arc<Config>>,
    pub spool: Arc<Spool>,
    pub seq: Arc<Sequencer>,
    pub metrics: Arc<Metrics>,
    /// The versions the receivers saw (shared with [`crate::ingest::Ingest`]).
    pub versions: Arc<crate::versions::Versions>,
    /// OTLP metrics and logs the receivers hold (shared with [`crate::ingest::Ingest`]).
    pub signals: Arc<crate::signals::Signals>,
}

struct State {
    cfg: Arc<Config>,
    agg: Aggregator,
    /// Dependency calls by the server operation that made them.
    entries: Entries,
    sampler: Sampler,
    kept: Vec<Received>,
    hosts: Vec<HostSample>,
    probes: Vec<ProbeSample>,
    join: Join,
    /// Names for peers (`peer_names`).
    names: PeerNames,
    last_flush: Instant,
    /// The receivers hold metrics or logs for the next flush.
    signals_held: bool,
    /// When the waiting traces next need an expiry pass (None: nothing waits).
    next_expiry: Option<Instant>,
    last_expiry: Instant,
}

impl State {
    fn holds_anything(&self) -> bool {
        !(self.kept.is_empty()
            && self.agg.is_empty()
            && self.entries.is_empty()
            && self.hosts.is_empty()
            && self.probes.is_empty()
            && !self.signals_held)
    }

    fn flush_due(&self) -> Instant {
        self.last_flush + Duration::from_millis(self.cfg.shipping.flush_interval_ms)
    }

    /// When the next expiry pass is due: the earliest waiting trace's, but at most one pass
    /// per [`EXPIRY_STEP`].
    fn plan_expiry(&mut self) {
        self.next_expiry = self
            .sampler
            .next_expiry()
            .map(|at| at.max(self.last_expiry + EXPIRY_STEP));
    }

    /// The next time something is due: a flush of what is held, or an expiry pass.
    fn next_due(&self) -> Option<Instant> {
        let flush = self.holds_anything().then(|| self.flush_due());
        match (flush, self.next_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Pipeline {
    /// Runs until `stop` turns true, then drains the queue, flushes and returns.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let cfg = self.config.borrow().clone();
        let mut st = State {
            sampler: Sampler::new(cfg.sampling.clone(), self.metrics.clone()),
            join: Join::new(&cfg),
            names: PeerNames::new(&cfg),
            probes: Vec::new(),
            cfg,
            agg: Aggregator::default(),
            entries: Entries::default(),
            kept: Vec::new(),
            hosts: Vec::new(),
            last_flush: Instant::now(),
            signals_held: false,
            next_expiry: None,
            last_expiry: Instant::now(),
        };
        // No fixed tick: the task sleeps until the next flush or trace expiry is due, and does
        // what is due whenever it wakes for work anyway. An idle agent holds nothing and does
        // not wake at all (a 100 ms tick cost an idle agent 0.2 % of a core on a VM), and under
        // load the timer rarely fires before a request does its work.
        let mut config_open = true;
        let sleep = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(sleep);
        loop {
            if *stop.borrow() {
                break;
            }
            let due = st.next_due();
            if let Some(at) = due {
                if sleep.deadline() != at.into() {
                    sleep.as_mut().reset(at.into());
                }
            }
            tokio::select! {
                w = self.rx.recv() => match w {
                    Some(w) => {
                        // Due work first: a trace whose window passed is forgotten before
                        // new spans are offered, as if the timer had fired on time.
                        self.due_work(&mut st).await;
                        self.process(&mut st, w).await;
                        st.plan_expiry();
                    }
                    None => break,
                },
                Some(h) = self.hosts_rx.recv() => st.hosts.push(h),
                () = self.signals.held.notified() => st.signals_held = true,
                Some(p) = self.probes_rx.recv() => {
                    st.join.observe(&p);
                    st.probes.push(p);
                }
                _ = &mut sleep, if due.is_some() => self.due_work(&mut st).await,
                changed = self.config.changed(), if config_open => match changed {
                    Ok(()) => {
                        let cfg = self.config.borrow_and_update().clone();
                        st.sampler.reconfigure(cfg.sampling.clone());
                        st.join.reconfigure(&cfg);
                        st.names.reconfigure(&cfg);
                        self.spool.reconfigure(crate::ship::spool::Options::of(&cfg.shipping));
                        st.cfg = cfg;
                    }
                    // The reloader is gone: the config in force stays.
                    Err(_) => config_open = false,
                },
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

    /// Expires waiting traces and flushes, each when due.
    async fn due_work(&self, st: &mut State) {
        let now = Instant::now();
        if st.next_expiry.is_some_and(|at| at <= now) {
            st.sampler.expire(now);
            st.last_expiry = now;
        }
        if st.holds_anything() && st.flush_due() <= now {
            self.flush(st).await;
        }
        st.plan_expiry();
    }

    async fn process(&self, st: &mut State, work: Work) {
        let now = Instant::now();
        for mut span in work.spans {
            // Marked first: a failed database connection counts under its own status class.
            // The join matches by address, so peers are named after it.
            st.names.observe(&span);
            st.join.mark(&mut span, now);
            st.names.rename(&mut span);
            st.agg.add(&span);
            st.entries.add(&span, now);
            st.sampler.offer(span, now, &mut st.kept);
            if st.kept.len() >= st.cfg.shipping.max_batch_spans
                || st.agg.len() >= aggregates::MAX_KEYS
                || st.entries.len() >= aggregates::MAX_KEYS
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
        let overflowed = st.agg.take_overflowed();
        if overflowed > 0 {
            self.metrics
                .aggregate_overflow
                .fetch_add(overflowed, std::sync::atomic::Ordering::Relaxed);
        }
        let mut entry_calls = st.entries.take();
        let unattributed = st.entries.take_unattributed();
        if unattributed > 0 {
            self.metrics
                .unattributed_calls
                .fetch_add(unattributed, std::sync::atomic::Ordering::Relaxed);
        }
        let mut hosts = std::mem::take(&mut st.hosts);
        let mut probes = std::mem::take(&mut st.probes);
        let mut versions = self.versions.take_new();
        st.signals_held = false;
        let (mut metrics, mut logs) = self.signals.take();
        if spans.is_empty()
            && metrics.is_empty()
            && logs.is_empty()
            && aggregates.is_empty()
            && entry_calls.is_empty()
            && hosts.is_empty()
            && probes.is_empty()
            && versions.is_empty()
        {
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
                versions: std::mem::take(&mut versions),
                entry_calls: std::mem::take(&mut entry_calls),
                metrics: std::mem::take(&mut metrics),
                logs: std::mem::take(&mut logs),
            };
            let batch_logs = batch.logs.len() as u64;
            let nuls = stormwatch_model::validate::replace_nuls(&mut batch);
            if nuls > 0 {
                self.metrics
                    .replaced_nuls
                    .fetch_add(nuls, std::sync::atomic::Ordering::Relaxed);
            }
            let counts = crate::ship::shipper::counts_of(&batch);
            let (n, agg) = (u64::from(counts.spans), counts.aggregated);
            // Log records lost with a batch count as dropped, like its spans.
            let lost_logs = || {
                self.metrics
                    .log_records_dropped
                    .fetch_add(batch_logs, std::sync::atomic::Ordering::Relaxed)
            };
            // The collector runs the same check; a batch it would refuse is a bug here, and
            // catching it before spooling keeps the spool free of poison.
            if let Err(e) = stormwatch_model::validate::check_batch(&mut batch, now_ns()) {
                tracing::error!(
                    field = e.field,
                    error = e.message,
                    spans = n,
                    aggregated_spans = agg,
                    "built an invalid batch; dropped"
                );
                self.metrics.batch_dropped(DropReason::Invalid, n, agg);
                lost_logs();
                continue;
            }
            let body = match encode_body(&batch, st.cfg.shipping.compression) {
                Ok(b) => b,
                Err(error) => {
                    tracing::error!(%error, spans = n, aggregated_spans = agg, "cannot compress a batch; dropped");
                    self.metrics.batch_dropped(DropReason::SpoolWrite, n, agg);
                    lost_logs();
                    continue;
                }
            };
            self.metrics
                .batches_built
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match self
                .spool
                .push(&body, counts, st.cfg.shipping.compression)
                .await
            {
                Ok(()) => {}
                Err(PushError::TooBig(bytes)) => {
                    tracing::error!(
                        bytes,
                        spans = n,
                        aggregated_spans = agg,
                        "batch larger than the spool; dropped"
                    );
                    self.metrics.batch_dropped(DropReason::SpoolFull, n, agg);
                    lost_logs();
                }
                Err(error) => {
                    tracing::error!(%error, spans = n, aggregated_spans = agg, "cannot write the spool; batch dropped");
                    self.metrics.batch_dropped(DropReason::SpoolWrite, n, agg);
                    lost_logs();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;

//! The hand-off from receivers to the pipeline: a bounded queue that never blocks a receiver.
//!
//! Capacity is counted in spans (a semaphore) as well as in requests (the channel), because a
//! single OTLP request may carry thousands of spans. A receiver that cannot get room answers
//! 429 / RESOURCE_EXHAUSTED at once, and the refused spans are counted as `queue_full`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use crate::received::Received;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::metrics::{DropReason, Metrics, Receiver};

/// Requests the queue holds at most, whatever their size.
pub const QUEUE_REQUESTS: usize = 4096;

/// Spans on their way to the pipeline; the permit returns their room when they are processed.
#[derive(Debug)]
pub struct Work {
    pub spans: Vec<Received>,
    _permit: OwnedSemaphorePermit,
}

/// The queue was full; the client should retry after a while.
#[derive(Debug, thiserror::Error)]
#[error("the agent's queue is full ({capacity} spans); retry later")]
pub struct QueueFull {
    pub capacity: usize,
}

/// The receivers' side of the queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Ingest {
    tx: mpsc::Sender<Work>,
    permits: Arc<Semaphore>,
    capacity: usize,
    pub metrics: Arc<Metrics>,
    /// What versions the apps' resources run; the pipeline ships the new ones.
    pub versions: Arc<crate::versions::Versions>,
    /// OTLP metrics and logs held for the next batch.
    pub signals: Arc<crate::signals::Signals>,
}

impl Ingest {
    /// A queue of `capacity` spans and its receiving end.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Ingest, mpsc::Receiver<Work>) {
        let (tx, rx) = mpsc::channel(QUEUE_REQUESTS);
        let capacity = capacity.clamp(1, Semaphore::MAX_PERMITS);
        let permits = Arc::new(Semaphore::new(capacity));
        (
            Ingest {
                tx,
                permits,
                capacity,
                signals: Arc::new(crate::signals::Signals::new(
                    crate::config::Limits::default().max_metric_series,
                    metrics.clone(),
                )),
                metrics,
                versions: Arc::default(),
            },
            rx,
        )
    }

    /// Counts spans a receiver refused as invalid (received, then dropped).
    pub fn reject(&self, from: Receiver, n: usize) {
        if n > 0 {
            self.metrics.received(from, n as u64);
            self.metrics.refused(DropReason::Invalid, n as u64);
        }
    }

    /// Queues `spans` without waiting. `received` counts them as received first, so received =
    /// kept + not sampled + dropped always adds up.
    pub fn submit(&self, from: Receiver, spans: Vec<Received>) -> Result<(), QueueFull> {
        let n = spans.len();
        if n == 0 {
            return Ok(());
        }
        self.metrics.received(from, n as u64);
        let nuls: u64 = spans.iter().map(|s| u64::from(s.replaced_nuls)).sum();
        if nuls > 0 {
            self.metrics.replaced_nuls.fetch_add(nuls, Relaxed);
        }
        // A request bigger than the whole queue takes all of it rather than never fitting.
        let want = n.min(self.capacity) as u32;
        let refused = || {
            self.metrics.refused(DropReason::QueueFull, n as u64);
            self.metrics.throttled_requests.fetch_add(1, Relaxed);
            QueueFull {
                capacity: self.capacity,
            }
        };
        let permit = self
            .permits
            .clone()
            .try_acquire_many_owned(want)
            .map_err(|_| refused())?;
        self.tx
            .try_send(Work {
                spans,
                _permit: permit,
            })
            .map_err(|_| refused())
    }
}

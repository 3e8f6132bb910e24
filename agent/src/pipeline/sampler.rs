//! Which spans are shipped: every error, every span slower than its class threshold, a share
//! of the rest by latency band — and whole traces together.
//!
//! Trace consistency without a central decision: a span that is not kept on its own waits up
//! to `trace_window` in a bounded buffer. If another span of its trace is kept meanwhile (the
//! slow root usually ends *after* its children), the waiting spans are released with reason
//! `forced`, and later spans of that trace within the window are kept the same way. The
//! band share is decided on a hash of the trace id, so two agents that see parts of one trace
//! make the same call for spans in the same band.
//!
//! Memory is bounded in spans (`max_pending_spans`) and in bytes (`max_held_bytes`, see
//! [`Sampler::held_bytes`] for what is counted): past either the oldest waiting traces are
//! released as not sampled, counted as pressure (their spans are already counted in the
//! aggregates, so no number is wrong). The span bound alone allowed 5 GB of spans at the
//! largest attribute and statement sizes (110 KiB held each).
//!
//! **A kept trace is never forgotten for room.** Once a span of a trace is kept, the trace
//! holds no waiting spans, only a marker (its table entry) that keeps its later spans within
//! the window. The bounds let waiting, undecided traces go; markers have their own queue and
//! their own, larger bound ([`MAX_KEPT_TRACES`]), so a burst of undecided traces cannot cut a
//! kept trace in two.
//!
//! A waiting span is packed into an [`Arena`] of 64 KiB buffers, written in arrival order and
//! reused once every span in them is gone; its trace keeps a 16-byte [`Slot`]. Held as
//! structs with their own allocations, freed a second or two later when cold, waiting spans
//! cost a large share of the agent's CPU under load (the bench in the README).

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::{KeepReason, SpanFlag};

use crate::received::Received;
use crate::util::PassThrough;

use crate::config::Sampling;
use crate::metrics::{Metrics, Pressure};

type TraceId = [u8; 16];

#[derive(Debug)]
struct Trace {
    /// When the entry may be forgotten.
    expires: Instant,
    /// Set once a span of the trace was kept.
    kept: bool,
    /// Spans waiting for a decision.
    pending: Vec<Held>,
}

/// A waiting span: packed in the arena, or (too large to share a chunk) as it came.
#[derive(Debug)]
enum Held {
    Packed(Slot),
    Whole(Box<Received>),
}

/// Where a waiting span's strings are: chunk number and byte range.
#[derive(Debug, Clone, Copy)]
struct Slot {
    chunk: u64,
    start: u32,
    end: u32,
}

/// Bytes per arena chunk: under glibc's mmap threshold, so a chunk is ordinary heap.
const CHUNK_BYTES: usize = 64 * 1024;
/// Emptied chunks kept for reuse (16 MiB at most): freeing and faulting them in again under
/// load cost more than the memory. Not counted in [`Sampler::held_bytes`]: they hold no span.
const MAX_SPARE_CHUNKS: usize = 256;

/// What a span handle in a trace's pending list takes.
const HELD_BYTES: usize = std::mem::size_of::<Held>();
/// What a waiting trace takes besides its spans: its table entry (and the table's control
/// byte) and its queue entry.
const TRACE_BYTES: usize =
    std::mem::size_of::<(TraceId, Trace)>() + 1 + std::mem::size_of::<(Instant, TraceId)>();

/// The waiting spans' strings, in arrival order, in chunks numbered from `first`. A chunk is
/// dropped (or kept for reuse) when no span in it waits any more and it is the oldest; spans
/// leave roughly in arrival order (one window after their trace began), so chunks empty in
/// order too.
#[derive(Debug, Default)]
struct Arena {
    chunks: VecDeque<Chunk>,
    first: u64,
    spare: Vec<Vec<u8>>,
    /// [`Received::boxed_bytes`] of the spans held whole.
    whole_bytes: usize,
}

#[derive(Debug)]
struct Chunk {
    buf: Vec<u8>,
    /// Spans whose strings are in this chunk.
    live: u32,
}

impl Arena {
    /// Packs `span` into the arena; a span too large to share a chunk stays whole.
    fn hold(&mut self, span: Received) -> Held {
        let need = span.packed_len();
        if need > CHUNK_BYTES / 4 {
            return self.whole(span);
        }
        if self
            .chunks
            .back()
            .is_none_or(|c| c.buf.len() + need > CHUNK_BYTES)
        {
            let buf = self
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
            self.chunks.push_back(Chunk { buf, live: 0 });
        }
        let chunk = self.first + self.chunks.len() as u64 - 1;
        let Some(c) = self.chunks.back_mut() else {
            return self.whole(span);
        };
        let start = c.buf.len() as u32;
        span.pack(&mut c.buf);
        c.live += 1;
        Held::Packed(Slot {
            chunk,
            start,
            end: c.buf.len() as u32,
        })
    }

    fn whole(&mut self, span: Received) -> Held {
        self.whole_bytes += span.boxed_bytes();
        Held::Whole(Box::new(span))
    }

    /// The waiting span back.
    fn unpack(&mut self, held: Held) -> Received {
        match held {
            Held::Whole(span) => {
                self.whole_bytes -= span.boxed_bytes();
                *span
            }
            Held::Packed(slot) => {
                let span = self
                    .chunk(slot)
                    .map(|c| Received::unpack(&c.buf[slot.start as usize..slot.end as usize]))
                    .unwrap_or_default();
                self.release(slot);
                span
            }
        }
    }

    fn chunk(&mut self, slot: Slot) -> Option<&mut Chunk> {
        let i = slot.chunk.checked_sub(self.first)?;
        self.chunks.get_mut(usize::try_from(i).ok()?)
    }

    /// Forgets a span's strings.
    fn release(&mut self, slot: Slot) {
        if let Some(c) = self.chunk(slot) {
            c.live = c.live.saturating_sub(1);
        }
        while self.chunks.front().is_some_and(|c| c.live == 0) {
            if self.chunks.len() == 1 {
                // The chunk being written: start it over.
                if let Some(c) = self.chunks.front_mut() {
                    c.buf.clear();
                }
                // Slots into it are all gone; renumber so none could match by mistake.
                self.first += 1;
                break;
            }
            if let Some(mut c) = self.chunks.pop_front() {
                self.first += 1;
                if self.spare.len() < MAX_SPARE_CHUNKS {
                    c.buf.clear();
                    self.spare.push(c.buf);
                }
            }
        }
    }

    /// Forgets a waiting span.
    fn drop_held(&mut self, held: &Held) {
        match held {
            Held::Packed(slot) => self.release(*slot),
            Held::Whole(span) => self.whole_bytes -= span.boxed_bytes(),
        }
    }

    /// Bytes taken by waiting spans: every chunk in use, whole (a chunk is freed once every
    /// span in it, and in the chunks before it, is gone), and the spans held whole.
    fn bytes(&self) -> usize {
        self.chunks.len() * CHUNK_BYTES + self.whole_bytes
    }

    /// Chunks in use, for tests.
    #[cfg(test)]
    fn chunks(&self) -> usize {
        self.chunks.len()
    }
}

/// The sampler. Owned by the pipeline task: no locks.
#[derive(Debug)]
pub struct Sampler {
    cfg: Sampling,
    window: Duration,
    traces: HashMap<TraceId, Trace, BuildHasherDefault<PassThrough>>,
    /// (expiry, trace) of undecided traces, by first span; an entry whose trace was kept since,
    /// or forgotten and seen again, is skipped when popped.
    order: VecDeque<(Instant, TraceId)>,
    /// (expiry, trace) of kept traces, one entry each, from when the trace was kept. A kept
    /// span extends the trace's window without queueing anything: when the entry comes due
    /// and the window has moved on, it is queued again at the new expiry. So the queue holds
    /// one entry a kept trace, not one a kept span; an extended trace is forgotten late, by
    /// at most one window (its marker no longer keeps anything once its window has passed).
    kept_order: VecDeque<(Instant, TraceId)>,
    /// Traces in `traces` that are kept (the rest wait, with at least one span each).
    kept_traces: usize,
    pending: usize,
    /// Capacity of the waiting traces' pending lists, in bytes.
    list_bytes: usize,
    arena: Arena,
    /// Emptied `Trace::pending` lists for new traces (a trace's list otherwise grows from
    /// nothing, allocating a few times, and is freed when the trace is forgotten).
    spare_lists: Vec<Vec<Held>>,
    metrics: Arc<Metrics>,
}

/// Tables this small are never shrunk.
const SHRINK_FLOOR: usize = 1024;

/// Most kept traces remembered (a marker: one table entry and one queue entry, about 100
/// bytes, at most 22 MiB with the tables' slack). Past it the oldest kept trace is forgotten
/// before its window ends, and its later spans are sampled on their own; counted in
/// `stormwatch_agent_sampler_kept_traces_forgotten_total`. Reached only when more than
/// 50,000 traces a second are kept with the default 2 s window, well beyond what one agent
/// thread receives (about 500,000 spans a second).
pub const MAX_KEPT_TRACES: usize = 100_000;

/// At most this many spare pending lists are kept, none longer than [`SPARE_LIST_LEN`].
const SPARE_LISTS: usize = 4096;
const SPARE_LIST_LEN: usize = 64;

impl Sampler {
    pub fn new(cfg: Sampling, metrics: Arc<Metrics>) -> Self {
        Sampler {
            window: Duration::from_millis(cfg.trace_window_ms),
            cfg,
            traces: HashMap::default(),
            order: VecDeque::new(),
            kept_order: VecDeque::new(),
            kept_traces: 0,
            pending: 0,
            list_bytes: 0,
            arena: Arena::default(),
            spare_lists: Vec::new(),
            metrics,
        }
    }

    /// Applies a reloaded config; waiting spans keep waiting.
    pub fn reconfigure(&mut self, cfg: Sampling) {
        self.window = Duration::from_millis(cfg.trace_window_ms);
        self.cfg = cfg;
    }

    /// Spans waiting for their trace's decision.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Bytes held for waiting traces, bounded by `max_held_bytes`: the arena chunks in use
    /// (whole: a chunk's released spans and free tail count until the chunk is freed), spans
    /// too large to pack (struct and buffers), the pending lists' capacity, and each waiting
    /// trace's table and queue entries. Not counted: kept traces (no spans; bounded by
    /// [`MAX_KEPT_TRACES`]), emptied chunks and lists kept for reuse (at most 16 MiB and
    /// 6 MiB), and the tables' free slots.
    pub fn held_bytes(&self) -> usize {
        self.arena.bytes() + self.list_bytes + (self.traces.len() - self.kept_traces) * TRACE_BYTES
    }

    /// The slow threshold of a span: the most specific override, else its class default.
    pub fn threshold(&self, span: &Received) -> Duration {
        let class = span.dependency_class();
        if self.cfg.overrides.is_empty() {
            return self.cfg.thresholds_ms.of(class);
        }
        let mut best: Option<(u8, u64)> = None;
        for o in &self.cfg.overrides {
            let matches = o.service.as_ref().is_none_or(|s| s == span.service())
                && o.peer.as_ref().is_none_or(|p| p == span.peer())
                && o.class.is_none_or(|c| c == class);
            if !matches {
                continue;
            }
            let score = 4 * u8::from(o.peer.is_some())
                + 2 * u8::from(o.service.is_some())
                + u8::from(o.class.is_some());
            if best.is_none_or(|(s, _)| score > s) {
                best = Some((score, o.threshold_ms));
            }
        }
        match best {
            Some((_, ms)) => Duration::from_millis(ms),
            None => self.cfg.thresholds_ms.of(class),
        }
    }

    /// The keep probability of a fast span whose duration is `fraction` of its threshold.
    fn share(&self, fraction: f64) -> f64 {
        for b in &self.cfg.bands {
            if fraction < b.below {
                return b.share;
            }
        }
        self.cfg.bands.last().map_or(0.0, |b| b.share)
    }

    /// Decides on `span`; kept spans (and spans released with it) are appended to `out`.
    pub fn offer(&mut self, mut received: Received, now: Instant, out: &mut Vec<Received>) {
        let span = &mut received;
        let threshold = self.threshold(span);
        // In i64 nanoseconds: a u128 → f64 conversion is a software routine.
        let threshold_ns = i64::try_from(threshold.as_nanos()).unwrap_or(i64::MAX);
        let slow = span.duration_ns >= threshold_ns;
        if slow {
            span.flags |= 1 << SpanFlag::Slow as u8;
        }
        if span.is_error() {
            span.flags |= 1 << SpanFlag::Error as u8;
        }
        let tid = span.trace_id;
        let reason = if span.is_error() {
            Some(KeepReason::Error)
        } else if slow {
            Some(KeepReason::Slow)
        } else if span.flags & crate::probes::join::FORCING_FLAGS != 0 {
            // Replica lag, full-scan suspect, connect failure: always shipped.
            Some(KeepReason::Forced)
        } else if self
            .traces
            .get(&tid)
            .is_some_and(|t| t.kept && t.expires > now)
        {
            Some(KeepReason::Forced)
        } else {
            let fraction = span.duration_ns as f64 / threshold_ns.max(1) as f64;
            let share = self.share(fraction);
            (unit_hash(&tid) < share).then_some(KeepReason::Sampled)
        };
        match reason {
            Some(reason) => {
                span.kept = reason as i32;
                self.metrics.kept(reason, 1);
                out.push(received);
                self.mark_kept(tid, now, out);
            }
            None => self.hold(tid, received, now),
        }
        self.enforce_bound();
    }

    fn mark_kept(&mut self, tid: TraceId, now: Instant, out: &mut Vec<Received>) {
        let expires = now + self.window;
        let t = self.traces.entry(tid).or_insert_with(|| Trace {
            expires,
            kept: false,
            pending: Vec::new(),
        });
        t.expires = expires;
        if !t.kept {
            t.kept = true;
            self.kept_traces += 1;
            self.kept_order.push_back((expires, tid));
            let mut released = std::mem::take(&mut t.pending);
            self.pending -= released.len();
            self.list_bytes -= released.capacity() * HELD_BYTES;
            self.metrics.kept(KeepReason::Forced, released.len() as u64);
            let arena = &mut self.arena;
            out.extend(released.drain(..).map(|h| {
                let mut r = arena.unpack(h);
                r.kept = KeepReason::Forced as i32;
                r
            }));
            self.spare_list(released);
        }
    }

    fn hold(&mut self, tid: TraceId, span: Received, now: Instant) {
        let held = self.arena.hold(span);
        let window = self.window;
        let mut new = false;
        let t = self.traces.entry(tid).or_insert_with(|| {
            new = true;
            let expires = now + window;
            self.order.push_back((expires, tid));
            Trace {
                expires,
                kept: false,
                pending: self.spare_lists.pop().unwrap_or_default(),
            }
        });
        if t.kept {
            // Kept, but its window has passed and the expiry pass has not come yet (`offer`
            // forces the spans of a kept trace within its window): it starts over, undecided.
            t.kept = false;
            t.expires = now + window;
            self.kept_traces -= 1;
            self.order.push_back((t.expires, tid));
        }
        let capacity = if new { 0 } else { t.pending.capacity() };
        t.pending.push(held);
        self.pending += 1;
        self.list_bytes += (t.pending.capacity() - capacity) * HELD_BYTES;
    }

    /// Lets the oldest undecided traces go while the sampler holds too much; kept traces
    /// (markers without waiting spans) stay, under their own bound.
    fn enforce_bound(&mut self) {
        let mut evicted = false;
        loop {
            let bound = if self.pending > self.cfg.max_pending_spans {
                Pressure::PendingSpans
            } else if self.held_bytes() > self.cfg.max_held_bytes {
                Pressure::HeldBytes
            } else {
                break;
            };
            let Some((_, tid)) = self.order.pop_front() else {
                break;
            };
            if self.traces.get(&tid).is_some_and(|t| !t.kept) {
                self.forget(&tid, Some(bound));
                evicted = true;
            }
        }
        if evicted {
            self.publish();
        }
        while self.kept_traces > MAX_KEPT_TRACES {
            let Some((_, tid)) = self.kept_order.pop_front() else {
                break;
            };
            if self.traces.get(&tid).is_some_and(|t| t.kept) {
                self.forget(&tid, None);
                self.metrics.kept_traces_forgotten.fetch_add(1, Relaxed);
            }
        }
    }

    /// Forgets a trace and lets its waiting spans go: under `pressure`, or because its window
    /// passed (or the agent stops).
    fn forget(&mut self, tid: &TraceId, pressure: Option<Pressure>) {
        if let Some(t) = self.traces.remove(tid) {
            self.kept_traces -= usize::from(t.kept);
            self.pending -= t.pending.len();
            self.list_bytes -= t.pending.capacity() * HELD_BYTES;
            for h in &t.pending {
                self.arena.drop_held(h);
            }
            let n = t.pending.len() as u64;
            match pressure {
                Some(bound) => self.metrics.pressure_evicted(bound, n),
                None => {
                    self.metrics.not_sampled.fetch_add(n, Relaxed);
                }
            }
            self.spare_list(t.pending);
        }
    }

    fn spare_list(&mut self, mut list: Vec<Held>) {
        if list.capacity() > 0
            && list.capacity() <= SPARE_LIST_LEN
            && self.spare_lists.len() < SPARE_LISTS
        {
            list.clear();
            self.spare_lists.push(list);
        }
    }

    /// The earliest time a waiting trace may be due for expiry (an entry can be stale: its
    /// trace was kept later and expires later); `None` when nothing waits.
    pub fn next_expiry(&self) -> Option<Instant> {
        match (self.order.front(), self.kept_order.front()) {
            (Some((a, _)), Some((b, _))) => Some(*a.min(b)),
            (a, b) => a.or(b).map(|(at, _)| *at),
        }
    }

    /// Forgets traces whose window has passed; their waiting spans are not shipped.
    pub fn expire(&mut self, now: Instant) {
        while let Some((at, tid)) = self.order.front().copied() {
            if at > now {
                break;
            }
            self.order.pop_front();
            // A trace kept since is in `kept_order`; one seen again after it was forgotten
            // has a newer entry further back.
            if self
                .traces
                .get(&tid)
                .is_some_and(|t| !t.kept && t.expires <= now)
            {
                self.forget(&tid, None);
            }
        }
        while let Some((at, tid)) = self.kept_order.front().copied() {
            if at > now {
                break;
            }
            self.kept_order.pop_front();
            match self.traces.get(&tid) {
                Some(t) if t.kept && t.expires <= now => self.forget(&tid, None),
                // A later span extended the window: due again then.
                Some(t) if t.kept => self.kept_order.push_back((t.expires, tid)),
                _ => {}
            }
        }
        self.shrink_after_burst();
        self.publish();
    }

    /// Updates the gauges in `/metrics` (after an expiry pass or an eviction: not per span).
    fn publish(&self) {
        self.metrics
            .sampler_held_bytes
            .store(self.held_bytes() as u64, Relaxed);
        self.metrics
            .sampler_kept_traces
            .store(self.kept_traces as u64, Relaxed);
    }

    /// A burst grows the trace table (up to `max_pending_spans` waiting and
    /// [`MAX_KEPT_TRACES`] kept traces, megabytes) and it keeps that size; the few traces of a
    /// quiet period spread over it then make nearly every lookup a cache miss. Shrunk once it
    /// is mostly empty.
    fn shrink_after_burst(&mut self) {
        let live = self.traces.len();
        if self.traces.capacity() > 8 * live.max(SHRINK_FLOOR) {
            self.traces.shrink_to(2 * live);
        }
        for q in [&mut self.order, &mut self.kept_order] {
            let queued = q.len();
            if q.capacity() > 8 * queued.max(SHRINK_FLOOR) {
                q.shrink_to(2 * queued);
            }
        }
    }

    /// Drops everything waiting (shutdown).
    pub fn clear(&mut self) {
        let tids: Vec<TraceId> = self.traces.keys().copied().collect();
        for t in tids {
            self.forget(&t, None);
        }
        self.order.clear();
        self.kept_order.clear();
        self.publish();
    }
}

/// A uniform number in [0, 1) from a trace id. The low 8 bytes are the random part of W3C and
/// 64-bit Zipkin ids; mixing guards against producers with poor randomness.
fn unit_hash(id: &TraceId) -> f64 {
    let mut x = u64::from_be_bytes(id[8..16].try_into().unwrap_or([0; 8]))
        ^ u64::from_be_bytes(id[..8].try_into().unwrap_or([0; 8])).rotate_left(17);
    // splitmix64 finalizer.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests;

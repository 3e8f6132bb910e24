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
mod tests {
    use super::*;
    use crate::config::{Band, ThresholdOverride};
    use stormwatch_model::{DependencyClass, Span, SpanStatus};

    fn span(trace: u8, id: u8, class: DependencyClass, ms: i64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            service: "shop".into(),
            operation: "op".into(),
            peer: "db1:5432".into(),
            class: class as i32,
            start_ns: 1_750_000_000_000_000_000,
            duration_ns: ms * 1_000_000,
            ..Default::default()
        }
    }

    impl Sampler {
        fn offer_span(&mut self, s: Span, now: Instant, out: &mut Vec<Received>) {
            self.offer(s.into(), now, out);
        }
    }

    fn none_sampled() -> Sampling {
        Sampling {
            bands: vec![Band {
                below: 1.0,
                share: 0.0,
            }],
            ..Sampling::default()
        }
    }

    #[test]
    fn errors_and_slow_spans_are_always_kept_with_flags() {
        let mut s = Sampler::new(none_sampled(), Arc::default());
        let now = Instant::now();
        let mut out = Vec::new();
        let mut e = span(1, 1, DependencyClass::Db, 1);
        e.status = SpanStatus::Error as i32;
        s.offer_span(e, now, &mut out);
        s.offer_span(span(2, 1, DependencyClass::Redis, 20), now, &mut out); // at the 20 ms threshold
        s.offer_span(span(3, 1, DependencyClass::Redis, 19), now, &mut out); // just under
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].kept, KeepReason::Error as i32);
        assert_eq!(out[0].flags, 1 << SpanFlag::Error as u8);
        assert_eq!(out[1].kept, KeepReason::Slow as i32);
        assert_eq!(out[1].flags, 1 << SpanFlag::Slow as u8);
    }

    #[test]
    fn children_seen_before_a_slow_root_are_kept_with_it() {
        let mut s = Sampler::new(none_sampled(), Arc::default());
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.offer_span(span(7, 1, DependencyClass::Db, 3), t0, &mut out);
        s.offer_span(span(7, 2, DependencyClass::Redis, 1), t0, &mut out);
        s.offer_span(span(8, 1, DependencyClass::Db, 3), t0, &mut out); // other trace
        assert!(out.is_empty());
        assert_eq!(s.pending(), 3);
        s.offer_span(
            span(7, 3, DependencyClass::HttpServer, 1500),
            t0 + Duration::from_millis(500),
            &mut out,
        );
        assert_eq!(out.len(), 3);
        assert_eq!(
            out.iter()
                .filter(|x| x.kept == KeepReason::Forced as i32)
                .count(),
            2
        );
        // A late child within the window is kept too.
        s.offer_span(
            span(7, 4, DependencyClass::Db, 1),
            t0 + Duration::from_millis(1500),
            &mut out,
        );
        assert_eq!(out.len(), 4);
        // The other trace expires unsampled; after expiry trace 7 is forgotten.
        s.expire(t0 + Duration::from_secs(10));
        assert_eq!(s.pending(), 0);
        s.offer_span(
            span(7, 5, DependencyClass::Db, 1),
            t0 + Duration::from_secs(11),
            &mut out,
        );
        assert_eq!(out.len(), 4);
    }

    #[test]
    fn waiting_spans_come_back_whole_and_their_chunks_are_reused() {
        let mut s = Sampler::new(none_sampled(), Arc::default());
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Enough waiting spans, with attributes, to fill several chunks.
        let mut sent = Vec::new();
        for i in 0..2_000u32 {
            let mut sp = span((i % 200) as u8, (i / 200) as u8, DependencyClass::Db, 1);
            sp.trace_id[0] = (i / 200) as u8 + 1;
            sp.statement = format!("SELECT * FROM t{i} WHERE id = ?");
            sp.attributes.insert("db.name".into(), format!("shard-{i}"));
            sp.attributes.insert("thread.id".into(), i.to_string());
            sent.push(sp.clone());
            s.offer_span(sp, t0, &mut out);
        }
        assert!(out.is_empty());
        assert!(s.arena.chunks() > 2, "{} chunks", s.arena.chunks());
        // A slow span of one trace releases that trace's waiting spans, byte for byte.
        let mut root = span(7, 99, DependencyClass::HttpServer, 5_000);
        root.trace_id[0] = 3;
        let tid: Vec<u8> = root.trace_id.clone();
        s.offer_span(root, t0, &mut out);
        let mut want: Vec<Span> = sent.into_iter().filter(|x| x.trace_id == tid).collect();
        assert_eq!(want.len(), 1);
        let got: Vec<Span> = out.into_iter().skip(1).map(Received::into_span).collect();
        for w in &mut want {
            w.kept = KeepReason::Forced as i32;
        }
        assert_eq!(got, want);
        // When every waiting span has expired, at most the chunk being written is left.
        s.expire(t0 + Duration::from_secs(10));
        assert_eq!(s.pending(), 0);
        assert!(s.arena.chunks() <= 1, "{} chunks", s.arena.chunks());
        assert!(!s.arena.spare.is_empty());
        // New waiting spans reuse the emptied chunks.
        let spare = s.arena.spare.len();
        let mut out = Vec::new();
        for i in 0..1_000u32 {
            let mut sp = span(1, 1, DependencyClass::Db, 1);
            sp.trace_id[..4].copy_from_slice(&i.to_be_bytes());
            sp.statement = "SELECT * FROM posts WHERE class_id = ? ORDER BY id DESC LIMIT ?".into();
            s.offer_span(sp, t0 + Duration::from_secs(11), &mut out);
        }
        assert!(s.arena.spare.len() < spare);
    }

    #[test]
    fn pending_memory_is_bounded() {
        let cfg = Sampling {
            max_pending_spans: 100,
            ..none_sampled()
        };
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(cfg, m.clone());
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..1000u32 {
            let mut sp = span(0, 1, DependencyClass::Db, 1);
            sp.trace_id[..4].copy_from_slice(&i.to_be_bytes());
            s.offer_span(sp, now, &mut out);
        }
        assert!(s.pending() <= 100);
        assert_eq!(m.not_sampled.load(Relaxed), 900);
        // Let go under pressure, not for a passed window.
        assert_eq!(m.pressure_evicted_count(Pressure::PendingSpans), 900);
        assert_eq!(m.pressure_evicted_count(Pressure::HeldBytes), 0);
        // Forgotten traces' lists are reused by new traces, not piled up.
        assert!(s.spare_lists.len() <= 1, "{}", s.spare_lists.len());
        let before = s.spare_lists.len();
        s.spare_list(Vec::with_capacity(SPARE_LIST_LEN + 1));
        assert_eq!(
            s.spare_lists.len(),
            before,
            "a long list is freed, not kept"
        );
        s.spare_list(Vec::with_capacity(4));
        assert_eq!(s.spare_lists.len(), before + 1);
        // The rest expire with their window: not sampled, not under pressure.
        s.expire(now + Duration::from_secs(10));
        assert_eq!(m.not_sampled.load(Relaxed), 1000);
        assert_eq!(m.pressure_evicted_count(Pressure::PendingSpans), 900);
    }

    /// Trace id number `i`, spread over the id like random ones (the trace table hashes the
    /// id's bytes as they are).
    fn tid(i: u64) -> Vec<u8> {
        let mut id = vec![0; 8];
        id.extend_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
        id
    }

    /// One fast span each of traces `base..base + n`.
    fn flood(s: &mut Sampler, base: u64, n: u64, now: Instant, out: &mut Vec<Received>) {
        for i in base..base + n {
            let mut sp = span(0, 1, DependencyClass::Db, 1);
            sp.trace_id = tid(i);
            s.offer_span(sp, now, out);
        }
    }

    #[test]
    fn a_kept_trace_outlives_evictions_for_the_span_bound() {
        let cfg = Sampling {
            max_pending_spans: 100,
            ..none_sampled()
        };
        let mut s = Sampler::new(cfg, Arc::default());
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.offer_span(span(1, 1, DependencyClass::HttpServer, 5_000), t0, &mut out);
        assert_eq!(out.len(), 1);
        // Ten times the bound of undecided traces, all after trace 1 began.
        flood(
            &mut s,
            1_000,
            1_000,
            t0 + Duration::from_millis(1),
            &mut out,
        );
        assert!(s.pending() <= 100);
        assert_eq!(out.len(), 1);
        // A fast child of trace 1 within its window is still kept with it.
        s.offer_span(
            span(1, 2, DependencyClass::Db, 1),
            t0 + Duration::from_millis(1_500),
            &mut out,
        );
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].kept, KeepReason::Forced as i32);
    }

    #[test]
    fn a_kept_trace_lives_until_its_last_kept_span_plus_the_window() {
        let mut s = Sampler::new(none_sampled(), Arc::default());
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut out = Vec::new();
        s.offer_span(span(1, 1, DependencyClass::Db, 500), t0, &mut out);
        // Kept again at 1.5 s: the window now ends at 3.5 s.
        s.offer_span(span(1, 2, DependencyClass::Db, 500), ms(1_500), &mut out);
        assert_eq!(s.kept_order.len(), 1, "one queue entry a kept trace");
        s.expire(ms(2_500));
        s.offer_span(span(1, 3, DependencyClass::Db, 1), ms(3_000), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].kept, KeepReason::Forced as i32);
        // That span was kept too: the window now ends at 5 s. Past it the trace is forgotten,
        // and nothing is left to expire.
        s.expire(ms(4_000));
        assert_eq!(s.traces.len(), 1);
        s.expire(ms(5_000));
        assert!(s.traces.is_empty());
        assert_eq!(s.next_expiry(), None);
        s.offer_span(span(1, 4, DependencyClass::Db, 1), ms(5_100), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn a_stale_kept_trace_starts_over_undecided() {
        let mut s = Sampler::new(none_sampled(), Arc::default());
        let t0 = Instant::now();
        let mut out = Vec::new();
        s.offer_span(span(1, 1, DependencyClass::Db, 500), t0, &mut out);
        // Its window has passed, but no expiry pass ran yet: the span waits, and a slow span
        // of the trace later releases it.
        let late = t0 + Duration::from_secs(3);
        s.offer_span(span(1, 2, DependencyClass::Db, 1), late, &mut out);
        assert_eq!((out.len(), s.pending(), s.kept_traces), (1, 1, 0));
        s.expire(late);
        assert_eq!(s.pending(), 1);
        s.offer_span(span(1, 3, DependencyClass::Db, 500), late, &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!((s.pending(), s.kept_traces), (0, 1));
    }

    #[test]
    fn kept_traces_are_bounded_on_their_own() {
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(none_sampled(), m.clone());
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..MAX_KEPT_TRACES as u64 + 10 {
            let mut sp = span(0, 1, DependencyClass::Db, 500);
            sp.trace_id = tid(i);
            s.offer_span(sp, now, &mut out);
        }
        assert_eq!(s.traces.len(), MAX_KEPT_TRACES);
        assert_eq!(m.kept_traces_forgotten.load(Relaxed), 10);
        // The oldest went first.
        let key = |i| <[u8; 16]>::try_from(tid(i)).unwrap();
        assert!(!s.traces.contains_key(&key(9)));
        assert!(s.traces.contains_key(&key(10)));
    }

    /// A span of trace `tid(i)` with `attrs` attributes of 1 KiB values and a 4 KiB statement
    /// (the largest sizes the receivers let through: about 70 KiB with 64 attributes).
    fn big(i: u64, id: u8, attrs: usize, ms: i64) -> Span {
        let mut sp = span(0, id, DependencyClass::Db, ms);
        sp.trace_id = tid(i);
        sp.statement = format!("SELECT {i} FROM t WHERE x = ?").repeat(128);
        sp.statement.truncate(4096);
        for a in 0..attrs {
            sp.attributes.insert(
                format!("app.key{a:02}"),
                format!("{a:02}-{i:08}-").repeat(100)[..1024].into(),
            );
        }
        sp
    }

    /// [`Sampler::held_bytes`] counted again from what the sampler holds.
    fn recount(s: &Sampler) -> usize {
        let mut n: usize = s.arena.chunks.iter().map(|c| c.buf.capacity()).sum();
        for t in s.traces.values() {
            if t.kept {
                assert!(t.pending.is_empty());
                continue;
            }
            n += TRACE_BYTES + t.pending.capacity() * HELD_BYTES;
            for h in &t.pending {
                if let Held::Whole(r) = h {
                    n += r.boxed_bytes();
                }
            }
        }
        n
    }

    fn bytes_bound(max_held_bytes: usize) -> Sampling {
        Sampling {
            max_held_bytes,
            ..none_sampled()
        }
    }

    #[test]
    fn held_bytes_stay_within_the_bound_with_the_largest_spans() {
        const MAX: usize = 4 << 20;
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(bytes_bound(MAX), m.clone());
        let now = Instant::now();
        let mut out = Vec::new();
        let mut most = 0;
        // 64 attributes: held whole; 8: packed, several to a chunk. Some traces have two spans.
        for i in 0..600u64 {
            let attrs = if i % 3 == 0 { 64 } else { 8 };
            s.offer_span(big(i % 400, (i / 400) as u8, attrs, 1), now, &mut out);
            let held = s.held_bytes();
            assert!(held <= MAX, "span {i}: {held} bytes held");
            assert_eq!(held, recount(&s), "span {i}");
            most = most.max(held);
        }
        assert!(out.is_empty());
        // Far below the span bound, as before: it alone would have let 600 spans (26 MiB) wait.
        assert!(s.pending() < 200, "{} waiting", s.pending());
        assert!(most > MAX * 3 / 4, "the bound was used: {most}");
        assert!(m.pressure_evicted_count(Pressure::HeldBytes) > 0);
        // Let go, everything is given back.
        s.expire(now + Duration::from_secs(10));
        assert_eq!(s.pending(), 0);
        assert_eq!(s.held_bytes(), recount(&s));
        assert!(s.held_bytes() <= CHUNK_BYTES, "{}", s.held_bytes());
    }

    #[test]
    fn evictions_for_bytes_count_as_pressure_not_as_expiry() {
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(bytes_bound(2 << 20), m.clone());
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..100 {
            s.offer_span(big(i, 1, 64, 1), now, &mut out);
        }
        let pressure = m.pressure_evicted_count(Pressure::HeldBytes);
        assert_eq!(pressure + s.pending() as u64, 100);
        assert!(pressure >= 70, "{pressure}");
        assert_eq!(m.not_sampled.load(Relaxed), pressure);
        assert_eq!(m.pressure_evicted_count(Pressure::PendingSpans), 0);
        let text = m.render();
        let line = format!(
            "stormwatch_agent_sampler_pressure_evicted_spans_total{{bound=\"held_bytes\"}} {pressure}"
        );
        assert!(text.contains(&line), "{text}");
        // The rest expire with their window: not sampled, but not pressure.
        s.expire(now + Duration::from_secs(10));
        assert_eq!(m.not_sampled.load(Relaxed), 100);
        assert_eq!(m.pressure_evicted_count(Pressure::HeldBytes), pressure);
    }

    #[test]
    fn a_kept_trace_keeps_its_later_spans_after_byte_pressure() {
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(bytes_bound(2 << 20), m.clone());
        let t0 = Instant::now();
        let mut out = Vec::new();
        // Trace 1: a waiting child, then the slow root keeps both.
        s.offer_span(big(1, 1, 8, 1), t0, &mut out);
        s.offer_span(big(1, 2, 8, 5_000), t0, &mut out);
        assert_eq!(out.len(), 2);
        // Large spans of other traces, many times the bound, after trace 1 began.
        for i in 100..300 {
            s.offer_span(big(i, 1, 64, 1), t0 + Duration::from_millis(1), &mut out);
        }
        assert!(m.pressure_evicted_count(Pressure::HeldBytes) > 100);
        assert_eq!(out.len(), 2);
        // Trace 1's later spans within its window are still kept, and whole.
        let late = big(1, 3, 64, 1);
        s.offer_span(late.clone(), t0 + Duration::from_millis(1_500), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].kept, KeepReason::Forced as i32);
        let mut want = late;
        want.kept = KeepReason::Forced as i32;
        assert_eq!(out.pop().map(Received::into_span), Some(want));
        assert!(s.held_bytes() <= 2 << 20);
    }

    #[test]
    fn every_offered_span_is_kept_not_sampled_or_waiting() {
        // Both bounds reached in turn, kept and forced traces, expiry passes, shutdown.
        let cfg = Sampling {
            max_pending_spans: 300,
            max_held_bytes: 3 << 20,
            bands: vec![Band {
                below: 1.0,
                share: 0.05,
            }],
            ..Sampling::default()
        };
        let m: Arc<Metrics> = Arc::default();
        let mut s = Sampler::new(cfg, m.clone());
        let t0 = Instant::now();
        let mut out = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1d_u64;
        let kept = |m: &Metrics| {
            [
                KeepReason::Sampled,
                KeepReason::Slow,
                KeepReason::Error,
                KeepReason::Forced,
            ]
            .map(|r| m.kept_count(r))
            .iter()
            .sum::<u64>()
        };
        for n in 1..=6_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let now = t0 + Duration::from_millis(n);
            // Large spans in the middle third: the byte bound; small ones: the span bound.
            let attrs = if (2_000..4_000).contains(&n) { 24 } else { 1 };
            let mut sp = big(n / 4 + x % 8, (x >> 8) as u8, attrs, 1);
            if x.is_multiple_of(50) {
                sp.duration_ns = 2_000_000_000; // slow: keeps its trace
            }
            if x.is_multiple_of(97) {
                sp.status = SpanStatus::Error as i32;
            }
            s.offer_span(sp, now, &mut out);
            if n.is_multiple_of(500) {
                s.expire(now);
            }
            assert_eq!(out.len() as u64, kept(&m));
            assert_eq!(
                n,
                kept(&m) + m.not_sampled.load(Relaxed) + s.pending() as u64,
                "span {n}"
            );
        }
        let pressure: Vec<u64> = Pressure::ALL
            .iter()
            .map(|b| m.pressure_evicted_count(*b))
            .collect();
        assert!(pressure.iter().all(|n| *n > 0), "{pressure:?}");
        assert!(m.kept_count(KeepReason::Forced) > 0);
        s.clear();
        assert_eq!(s.pending(), 0);
        assert_eq!(6_000, kept(&m) + m.not_sampled.load(Relaxed));
        assert_eq!(
            (s.held_bytes(), recount(&s)),
            (s.held_bytes(), s.held_bytes())
        );
    }

    #[test]
    fn the_trace_table_shrinks_back_after_a_burst() {
        let cfg = Sampling {
            max_pending_spans: 100_000,
            trace_window_ms: 1000,
            ..none_sampled()
        };
        let mut s = Sampler::new(cfg, Arc::default());
        let now = Instant::now();
        let mut out = Vec::new();
        // Trace ids are random; these spread over the whole id like random ones.
        let tid = |i: u64| i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        for i in 0..50_000u64 {
            let mut sp = span(0, 1, DependencyClass::Db, 1);
            sp.trace_id[8..].copy_from_slice(&tid(i));
            s.offer_span(sp, now, &mut out);
        }
        let burst = s.traces.capacity();
        assert!(burst >= 50_000);
        // The window passes: everything is forgotten, and the table shrinks.
        s.expire(now + Duration::from_secs(2));
        assert_eq!(s.pending(), 0);
        assert!(
            s.traces.capacity() < burst / 8,
            "{burst} → {}",
            s.traces.capacity()
        );
        assert!(s.order.capacity() < 50_000, "{}", s.order.capacity());
        // A quiet period's few traces do not shrink it further below the floor.
        for i in 0..100u64 {
            let mut sp = span(0, 1, DependencyClass::Db, 1);
            sp.trace_id[8..].copy_from_slice(&tid(i));
            s.offer_span(sp, now + Duration::from_secs(2), &mut out);
        }
        s.expire(now + Duration::from_secs(2));
        assert_eq!(s.pending(), 100);
    }

    #[test]
    fn overrides_pick_the_most_specific() {
        let cfg = Sampling {
            overrides: vec![
                ThresholdOverride {
                    service: Some("shop".into()),
                    peer: None,
                    class: Some(DependencyClass::Db),
                    threshold_ms: 50,
                },
                ThresholdOverride {
                    service: None,
                    peer: Some("db1:5432".into()),
                    class: None,
                    threshold_ms: 10,
                },
                ThresholdOverride {
                    service: Some("other".into()),
                    peer: None,
                    class: None,
                    threshold_ms: 1,
                },
            ],
            ..Sampling::default()
        };
        let s = Sampler::new(cfg, Arc::default());
        assert_eq!(
            s.threshold(&span(1, 1, DependencyClass::Db, 1).into()),
            Duration::from_millis(10)
        );
        let mut other_peer = span(1, 1, DependencyClass::Db, 1);
        other_peer.peer = "db2:5432".into();
        assert_eq!(
            s.threshold(&other_peer.clone().into()),
            Duration::from_millis(50)
        );
        other_peer.class = DependencyClass::Redis as i32;
        assert_eq!(
            s.threshold(&other_peer.clone().into()),
            Duration::from_millis(20)
        );
    }

    #[test]
    fn band_share_is_roughly_honoured_and_trace_consistent() {
        let cfg = Sampling {
            bands: vec![Band {
                below: 1.0,
                share: 0.1,
            }],
            ..Sampling::default()
        };
        let mut s = Sampler::new(cfg, Arc::default());
        let now = Instant::now();
        let mut out = Vec::new();
        for i in 0..20_000u32 {
            let mut sp = span(0, 1, DependencyClass::Db, 1);
            sp.trace_id[12..].copy_from_slice(&i.to_be_bytes());
            s.offer_span(sp, now, &mut out);
        }
        let kept = out.len() as f64 / 20_000.0;
        assert!((0.08..0.12).contains(&kept), "kept share {kept}");
    }
}

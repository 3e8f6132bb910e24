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

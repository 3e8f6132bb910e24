//! The load: OTLP and Zipkin request bodies of a realistic span mix, raw HTTP/1.1 requests
//! around them, and the patching that gives every request sent fresh ids and current times.

use super::*;

pub(crate) fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A cheap deterministic generator for ids and durations.
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

pub(crate) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A realistic mix: one server span, db, redis and http-client children, 10 traces of 10.
/// SQL statements carry literals that differ per span, or `$n` placeholders (`parameterized`).
/// Spans end at `now` (ns since the epoch).
pub(crate) fn otlp_request(
    rng: &mut Rng,
    spans_per_request: usize,
    parameterized: bool,
    now: u64,
) -> ExportTraceServiceRequest {
    let mut spans = Vec::with_capacity(spans_per_request);
    let mut trace_id = vec![0u8; 16];
    for i in 0..spans_per_request {
        if i % 10 == 0 {
            trace_id = [rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat();
        }
        // Realistic latencies per class (µs): most spans are fast, as in production, so the
        // sampler keeps a few percent and the rest are only aggregated.
        let us = match i % 10 {
            0 => 5_000 + rng.next() % 60_000,
            1..=5 => 500 + rng.next() % 20_000,
            6..=8 => 100 + rng.next() % 3_000,
            _ => 10_000 + rng.next() % 100_000,
        };
        let (kind, name, attrs) = match i % 10 {
            0 => (
                2,
                "GET /api/orders/{id}",
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/api/orders/{id}"),
                    kv("http.response.status_code", "200"),
                ],
            ),
            1..=5 => (
                3,
                "SELECT",
                vec![
                    kv("db.system", "postgresql"),
                    kv(
                        "db.statement",
                        &if parameterized {
                            "SELECT id, total FROM orders WHERE customer_id = $1 AND status IN ($2, $3, $4)".to_owned()
                        } else {
                            format!("SELECT id, total FROM orders WHERE customer_id = {} AND status IN ('a', 'b', 'c')", rng.next() % 10_000)
                        },
                    ),
                    kv("server.address", "pg-main"),
                    kv("server.port", "5432"),
                ],
            ),
            6..=8 => (
                3,
                "GET",
                vec![
                    kv("db.system", "redis"),
                    kv("db.statement", &format!("GET session:{}", rng.next())),
                    kv("server.address", "cache"),
                ],
            ),
            _ => (
                3,
                "POST",
                vec![
                    kv("http.request.method", "POST"),
                    kv("url.full", "https://payments.internal/v1/charge"),
                    kv("http.response.status_code", "201"),
                ],
            ),
        };
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: rng.next().to_be_bytes().to_vec(),
            name: name.into(),
            kind,
            start_time_unix_nano: now - us * 1_000,
            end_time_unix_nano: now,
            attributes: attrs,
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench-shop"), kv("host.name", "bench-1")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Spans end at `now` (ns since the epoch).
pub(crate) fn zipkin_request(rng: &mut Rng, n: usize, now: u64) -> Vec<u8> {
    let now_us = now / 1000;
    let mut spans = Vec::with_capacity(n);
    let mut trace = 0u64;
    for i in 0..n {
        if i % 10 == 0 {
            trace = rng.next();
        }
        let dur = 1000 + rng.next() % 40_000;
        let span = match i % 10 {
            0 => {
                serde_json::json!({"traceId": format!("{trace:016x}"), "id": format!("{:016x}", rng.next()), "name": "get /api", "kind": "SERVER",
                "timestamp": now_us - dur, "duration": dur, "localEndpoint": {"serviceName": "bench-zipkin"},
                "tags": {"http.method": "GET", "http.route": "/api", "http.status_code": "200"}})
            }
            _ => {
                serde_json::json!({"traceId": format!("{trace:016x}"), "id": format!("{:016x}", rng.next()), "name": "query", "kind": "CLIENT",
                "timestamp": now_us - dur, "duration": dur, "localEndpoint": {"serviceName": "bench-zipkin"},
                "remoteEndpoint": {"serviceName": "mysql", "ipv4": "10.0.0.5", "port": 3306},
                "tags": {"sql.query": format!("select * from orders where id = {}", rng.next() % 1000)}})
            }
        };
        spans.push(span);
    }
    serde_json::to_vec(&spans).unwrap_or_default()
}

/// Requests sent by this process so far. Each request sent takes the next number and derives
/// its ids from it, so no trace or span id repeats in a run.
static SENT: AtomicU64 = AtomicU64::new(0);

/// Bits of an id's input left for the trace or span slot within one request.
const SLOT_BITS: u32 = 20;
const TRACE_HI: u64 = 0x5f1d_2c4b_a3e7_0001;
const TRACE_LO: u64 = 0x2b7e_1516_28ae_d002;
const SPAN: u64 = 0x6a09_e667_f3bc_c903;

/// A bijection on `u64` (odd multiplies and right xor-shifts are each invertible): distinct
/// inputs give distinct, random-looking outputs.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 32;
    x = x.wrapping_mul(0xd6e8_feb8_6659_fd93);
    x ^ (x >> 29)
}

/// A pre-encoded request (an OTLP protobuf or Zipkin JSON body, with or without its HTTP/1.1
/// head) and where its ids and timestamps are. `patch_into` copies it with the ids of trace
/// and span slot `s` of request `n` derived from `n << SLOT_BITS | s` and the times moved by
/// the time since it was encoded: every field patched is fixed-width, so nothing else moves.
#[derive(Clone)]
pub(crate) struct Template {
    pub(crate) bytes: Vec<u8>,
    pub(crate) spans: u64,
    /// Zipkin: ids in hex, times in decimal µs. Else protobuf: ids raw, times fixed64 ns.
    hex: bool,
    /// (offset, slot): the same slot for every span of a trace.
    trace_ids: Vec<(usize, u32)>,
    /// Bytes (protobuf) or hex digits (Zipkin, 16 or 32) of a trace id.
    trace_width: usize,
    /// (offset, slot) of span ids and parent span ids: a parent in the same request has the
    /// slot of its span.
    span_ids: Vec<(usize, u32)>,
    /// (offset, width, value as encoded).
    times: Vec<(usize, usize, u64)>,
    pub(crate) encoded_ns: u64,
}

/// Slots in order of first appearance.
#[derive(Default)]
struct Slots(std::collections::HashMap<Vec<u8>, u32>);
impl Slots {
    fn of(&mut self, id: &[u8]) -> anyhow::Result<u32> {
        let n = self.0.len() as u32;
        let s = *self.0.entry(id.to_vec()).or_insert(n);
        if s >> SLOT_BITS != 0 {
            bail!("more than 2^{SLOT_BITS} ids in one request");
        }
        Ok(s)
    }
}

fn varint(b: &[u8], i: &mut usize, end: usize) -> anyhow::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        if *i >= end {
            bail!("truncated varint");
        }
        let byte = b[*i];
        *i += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
    }
    bail!("varint too long")
}

/// The fields of the protobuf message at `b[r]`: (number, wire type, value bytes).
fn fields(
    b: &[u8],
    r: std::ops::Range<usize>,
) -> anyhow::Result<Vec<(u64, u64, std::ops::Range<usize>)>> {
    let mut out = Vec::new();
    let mut i = r.start;
    while i < r.end {
        let key = varint(b, &mut i, r.end)?;
        let mut start = i;
        let len = match key & 7 {
            0 => {
                varint(b, &mut i, r.end)?;
                i - start
            }
            1 => 8,
            2 => {
                let len = varint(b, &mut i, r.end)? as usize;
                start = i;
                len
            }
            5 => 4,
            w => bail!("wire type {w}"),
        };
        if start + len > r.end {
            bail!("field runs past its message");
        }
        out.push((key >> 3, key & 7, start..start + len));
        i = start + len;
    }
    Ok(out)
}

/// Writes `v` as `out.len()` lowercase hex digits (its low bits).
fn hex_into(out: &mut [u8], mut v: u64) {
    for d in out.iter_mut().rev() {
        *d = b"0123456789abcdef"[(v & 15) as usize];
        v >>= 4;
    }
}

impl Template {
    /// An `ExportTraceServiceRequest` encoded at `encoded_ns`. Its spans may not have events
    /// or links: their ids and times would not be patched.
    pub(crate) fn otlp(bytes: Vec<u8>, encoded_ns: u64) -> anyhow::Result<Template> {
        let b = &bytes[..];
        let (mut traces, mut span_slots) = (Slots::default(), Slots::default());
        let (mut trace_ids, mut span_ids, mut times, mut spans) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        // ExportTraceServiceRequest.resource_spans (1), ResourceSpans.scope_spans (2),
        // ScopeSpans.spans (2).
        let children = |r, n| -> anyhow::Result<Vec<std::ops::Range<usize>>> {
            Ok(fields(b, r)?
                .into_iter()
                .filter(|f| f.0 == n && f.1 == 2)
                .map(|f| f.2)
                .collect())
        };
        for rs in children(0..b.len(), 1)? {
            for ss in children(rs, 2)? {
                for span in children(ss, 2)? {
                    spans += 1;
                    for (k, wire, v) in fields(b, span)? {
                        match (k, wire, v.len()) {
                            (1, 2, 16) => trace_ids.push((v.start, traces.of(&b[v])?)),
                            (2, 2, 8) | (4, 2, 8) => {
                                span_ids.push((v.start, span_slots.of(&b[v])?))
                            }
                            (4, 2, 0) => {}
                            (7 | 8, 1, _) => {
                                times.push((v.start, 8, u64::from_le_bytes(b[v].try_into()?)))
                            }
                            (1 | 2 | 4, ..) => bail!("span field {k}: not a 16- or 8-byte id"),
                            (11 | 13, ..) => bail!("span events and links are not patched"),
                            _ => {}
                        }
                    }
                }
            }
        }
        Ok(Template {
            bytes,
            spans,
            hex: false,
            trace_ids,
            trace_width: 16,
            span_ids,
            times,
            encoded_ns,
        })
    }

    /// A Zipkin v2 JSON array as `serde_json` writes it (no spaces), encoded at `encoded_ns`.
    pub(crate) fn zipkin(bytes: Vec<u8>, encoded_ns: u64) -> anyhow::Result<Template> {
        let b = &bytes[..];
        let (mut traces, mut span_slots) = (Slots::default(), Slots::default());
        let (mut trace_ids, mut span_ids, mut times, mut spans) =
            (Vec::new(), Vec::new(), Vec::new(), 0);
        let mut trace_width = 0;
        let run = |at: usize, f: fn(&u8) -> bool| b[at..].iter().take_while(|c| f(c)).count();
        for i in 0..b.len() {
            let rest = &b[i..];
            if rest.starts_with(b"\"traceId\":\"") {
                let at = i + 11;
                let w = run(at, u8::is_ascii_hexdigit);
                if !(w == 16 || w == 32) || (trace_width != 0 && w != trace_width) {
                    bail!("traceId at {at}: {w} hex digits");
                }
                trace_width = w;
                trace_ids.push((at, traces.of(&b[at..at + w])?));
            } else if rest.starts_with(b"\"id\":\"") || rest.starts_with(b"\"parentId\":\"") {
                let at = i + if rest[1] == b'i' { 6 } else { 12 };
                if run(at, u8::is_ascii_hexdigit) != 16 {
                    bail!("span id at {at}: not 16 hex digits");
                }
                spans += u64::from(rest[1] == b'i');
                span_ids.push((at, span_slots.of(&b[at..at + 16])?));
            } else if rest.starts_with(b"\"timestamp\":") {
                let at = i + 12;
                let w = run(at, u8::is_ascii_digit);
                times.push((at, w, std::str::from_utf8(&b[at..at + w])?.parse()?));
            }
        }
        Ok(Template {
            bytes,
            spans,
            hex: true,
            trace_ids,
            trace_width,
            span_ids,
            times,
            encoded_ns,
        })
    }

    /// The same as a raw HTTP/1.1 `POST path` request.
    pub(crate) fn http(&self, path: &str, content_type: &str) -> Template {
        let mut bytes = format!(
            "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
            self.bytes.len()
        )
        .into_bytes();
        let head = bytes.len();
        bytes.extend_from_slice(&self.bytes);
        let shift = |v: &Vec<(usize, u32)>| v.iter().map(|&(at, s)| (at + head, s)).collect();
        Template {
            bytes,
            trace_ids: shift(&self.trace_ids),
            span_ids: shift(&self.span_ids),
            times: self
                .times
                .iter()
                .map(|&(at, w, v)| (at + head, w, v))
                .collect(),
            ..self.clone()
        }
    }

    /// The next request to send: fresh ids, times as if encoded now.
    pub(crate) fn next_into(&self, out: &mut Vec<u8>) {
        self.patch_into(SENT.fetch_add(1, Relaxed), now_ns(), out);
    }

    /// Request `n`, sent at `now` (ns since the epoch), into `out`.
    pub(crate) fn patch_into(&self, n: u64, now: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.bytes);
        let base = n << SLOT_BITS;
        let w = self.trace_width;
        if self.hex {
            for &(at, slot) in &self.trace_ids {
                let x = base | u64::from(slot);
                hex_into(&mut out[at + w - 16..at + w], mix(x ^ TRACE_LO));
                if w == 32 {
                    hex_into(&mut out[at..at + 16], mix(x ^ TRACE_HI));
                }
            }
            for &(at, slot) in &self.span_ids {
                hex_into(&mut out[at..at + 16], mix((base | u64::from(slot)) ^ SPAN));
            }
            let shift = (now / 1000).wrapping_sub(self.encoded_ns / 1000);
            for &(at, w, v) in &self.times {
                let mut t = v.wrapping_add(shift);
                for d in out[at..at + w].iter_mut().rev() {
                    *d = b'0' + (t % 10) as u8;
                    t /= 10;
                }
                assert!(t == 0, "a timestamp outgrew its {w} digits");
            }
        } else {
            for &(at, slot) in &self.trace_ids {
                let x = base | u64::from(slot);
                out[at..at + 8].copy_from_slice(&mix(x ^ TRACE_HI).to_be_bytes());
                out[at + 8..at + 16].copy_from_slice(&mix(x ^ TRACE_LO).to_be_bytes());
            }
            for &(at, slot) in &self.span_ids {
                let id = mix((base | u64::from(slot)) ^ SPAN);
                out[at..at + 8].copy_from_slice(&id.to_be_bytes());
            }
            let shift = now.wrapping_sub(self.encoded_ns);
            for &(at, _, v) in &self.times {
                out[at..at + 8].copy_from_slice(&v.wrapping_add(shift).to_le_bytes());
            }
        }
    }
}

fn spans_of(body: &[u8]) -> anyhow::Result<Vec<Span>> {
    let r = ExportTraceServiceRequest::decode(body)?;
    Ok(r.resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect())
}

/// Fails unless patching gives each request fresh ids, the same to every span of a trace and
/// to a parent as to its span, shifts the times and changes nothing else: decodes patched
/// copies of `otlp` (protobuf body), of a request with parents, and of `zipkin` (JSON body).
pub(crate) fn check_patching(otlp: &Template, zipkin: &Template) -> anyhow::Result<()> {
    use anyhow::ensure;
    use std::collections::{HashMap, HashSet};
    // Sent an hour after encoding, so that a missing shift shows.
    const HOUR_NS: u64 = 3_600_000_000_000;
    let mut buf = Vec::new();
    // A request with a parent in it and one outside it.
    let mut family = otlp_request(&mut Rng(7), 3, false, otlp.encoded_ns);
    let sp = &mut family.resource_spans[0].scope_spans[0].spans;
    sp[1].parent_span_id = sp[0].span_id.clone();
    sp[2].parent_span_id = vec![0x5a; 8];
    let family = Template::otlp(family.encode_to_vec(), otlp.encoded_ns)?;
    for (t, has_parents) in [(otlp, false), (&family, true)] {
        // Request numbers are not reused across templates: ids repeat from one to another.
        let (mut traces, mut span_ids) = (HashSet::new(), HashSet::new());
        let original = spans_of(&t.bytes)?;
        ensure!(original.len() as u64 == t.spans, "span count");
        for n in [0, 1, 2, 3, 1_000_000_007] {
            t.patch_into(n, t.encoded_ns + HOUR_NS, &mut buf);
            let patched = spans_of(&buf)?;
            ensure!(
                patched.len() == original.len(),
                "patched request lost spans"
            );
            let mut trace_of = HashMap::new();
            for (o, p) in original.iter().zip(&patched) {
                let fresh = trace_of
                    .entry(&o.trace_id)
                    .or_insert_with(|| (traces.insert(p.trace_id.clone()), p.trace_id.clone()));
                ensure!(fresh.0, "trace id repeated across requests (request {n})");
                ensure!(
                    fresh.1 == p.trace_id,
                    "spans of one trace got different trace ids"
                );
                ensure!(p.trace_id != o.trace_id, "trace id not patched");
                ensure!(span_ids.insert(p.span_id.clone()), "span id repeated");
                ensure!(
                    p.start_time_unix_nano == o.start_time_unix_nano + HOUR_NS
                        && p.end_time_unix_nano == o.end_time_unix_nano + HOUR_NS,
                    "timestamps not moved by the time since encoding"
                );
                let unpatched = Span {
                    trace_id: o.trace_id.clone(),
                    span_id: o.span_id.clone(),
                    parent_span_id: o.parent_span_id.clone(),
                    start_time_unix_nano: o.start_time_unix_nano,
                    end_time_unix_nano: o.end_time_unix_nano,
                    ..p.clone()
                };
                ensure!(&unpatched == o, "patching changed more than ids and times");
            }
            if has_parents {
                ensure!(
                    patched[1].parent_span_id == patched[0].span_id,
                    "a parent no longer names its span"
                );
                let p = &patched[2].parent_span_id;
                ensure!(
                    p.len() == 8 && *p != original[2].parent_span_id && span_ids.insert(p.clone()),
                    "a parent outside the request not given a fresh id"
                );
            }
        }
    }
    // Sent now: spans end now.
    let now = now_ns();
    otlp.patch_into(4, now, &mut buf);
    let end = spans_of(&buf)?.iter().map(|s| s.end_time_unix_nano).max();
    ensure!(end == Some(now), "spans sent now do not end now");

    let json =
        |b: &[u8]| -> anyhow::Result<Vec<serde_json::Value>> { Ok(serde_json::from_slice(b)?) };
    let original = json(&zipkin.bytes)?;
    ensure!(original.len() as u64 == zipkin.spans, "Zipkin span count");
    let (mut traces, mut span_ids) = (HashSet::new(), HashSet::new());
    for n in [0, 1, 1_000_000_007] {
        zipkin.patch_into(n, zipkin.encoded_ns + HOUR_NS, &mut buf);
        let patched = json(&buf)?;
        let mut trace_of = HashMap::new();
        for (o, p) in original.iter().zip(&patched) {
            let (tid, id) = (&p["traceId"], &p["id"]);
            let fresh = trace_of
                .entry(o["traceId"].to_string())
                .or_insert_with(|| (traces.insert(tid.to_string()), tid.clone()));
            ensure!(
                fresh.0 && fresh.1 == *tid,
                "Zipkin trace ids not fresh per request"
            );
            ensure!(
                *tid != o["traceId"] && span_ids.insert(id.to_string()),
                "Zipkin span id"
            );
            let (ot, pt) = (o["timestamp"].as_u64(), p["timestamp"].as_u64());
            ensure!(
                pt.is_some() && pt == ot.map(|t| t + HOUR_NS / 1000),
                "Zipkin timestamp not moved"
            );
            let mut q = p.clone();
            q["traceId"] = o["traceId"].clone();
            q["id"] = o["id"].clone();
            q["timestamp"] = o["timestamp"].clone();
            ensure!(q == *o, "patching changed more than Zipkin ids and times");
        }
        ensure!(
            patched.len() == original.len(),
            "patched Zipkin request lost spans"
        );
    }
    Ok(())
}

/// µs to patch one request of `t`, averaged over a few thousand.
pub(crate) fn patch_cost_us(t: &Template) -> f64 {
    let mut buf = Vec::with_capacity(t.bytes.len());
    let t0 = Instant::now();
    for _ in 0..5_000 {
        t.patch_into(SENT.load(Relaxed), now_ns(), &mut buf);
        std::hint::black_box(&buf);
    }
    t0.elapsed().as_secs_f64() * 1e6 / 5_000.0
}

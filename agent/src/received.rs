//! The agent's compact span, [`Received`]: what the classifier makes of a received span and
//! what the aggregates, the probe join, the sampler and the batcher read. Its text lives in
//! one buffer taken from, and handed back to, a per-thread free list; [`Received::pack`] and
//! [`Received::unpack`] are the byte form the sampler's arena keeps waiting spans in.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use stormwatch_model::enums::WireEnum;
use stormwatch_model::limits::{
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_LABEL_BYTES,
    MAX_MESSAGE_BYTES, MAX_STATEMENT_BYTES,
};
use stormwatch_model::{DependencyClass, Span, SpanStatus};

use crate::attributes::Value;
use crate::util::push_int;

/// The text fields of a [`Received`], in the order they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Text {
    Service = 0,
    Instance,
    Operation,
    Peer,
    DbSystem,
    Statement,
    StatusMessage,
}

const TEXT_FIELDS: usize = 7;

/// The byte limit of each [`Text`] field, in order.
const TEXT_LIMITS: [usize; TEXT_FIELDS] = [
    MAX_LABEL_BYTES,
    MAX_LABEL_BYTES,
    MAX_LABEL_BYTES,
    MAX_LABEL_BYTES,
    MAX_LABEL_BYTES,
    MAX_STATEMENT_BYTES,
    MAX_MESSAGE_BYTES,
];

/// A classified span in the agent's compact form: ids inline, every string (labels, statement,
/// message, attribute keys and values) in one buffer.
///
/// Most spans are only counted, never shipped. As model [`Span`]s each cost a dozen heap
/// allocations, freed on another thread than they were made on, and profiling showed malloc
/// and free dominating the agent's CPU. Here a span costs one or two allocations; the model
/// span is built by [`Received::into_span`] only for spans the sampler keeps.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Received {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    pub kind: i32,
    pub class: i32,
    pub start_ns: i64,
    pub duration_ns: i64,
    pub status: i32,
    pub http_status: u32,
    pub db_role: i32,
    pub rows: Option<i64>,
    /// The sampler's [`stormwatch_model::KeepReason`].
    pub kept: i32,
    /// [`stormwatch_model::SpanFlag`]s as bits (bit n = flag number n).
    pub flags: u8,
    /// The lag of the replica the span read from, when probed ([`crate::probes::join`]).
    pub replica_lag_ms: Option<i64>,
    /// [`crate::normalize::is_full_scan_suspect`] of `statement`, when it was already
    /// known (remembered with the statement's normalization); `None`: not computed yet.
    pub statement_missing_where: Option<bool>,
    /// NUL characters replaced by U+FFFD in this span's text ([`Received::replace_nuls`]);
    /// counted by the receiver, not packed.
    pub replaced_nuls: u32,
    text: String,
    /// End offset in `text` of each [`Text`] field.
    ends: [u32; TEXT_FIELDS],
    /// (end of key, end of value) in `text`, per attribute, after the text fields.
    attr_ends: Vec<(u32, u32)>,
}

/// Bytes of a packed [`Received`] before its attribute offsets and text.
const PACKED_FIXED: usize = 16 + 8 + 9 + 6 * 4 + 2 * 8 + 2 * 9 + 2 + 4 * TEXT_FIELDS + 4;

/// Writes [`Received::pack`]'s fixed part.
struct Put<'a> {
    b: &'a mut [u8],
    at: usize,
}

impl Put<'_> {
    #[inline(always)]
    fn bytes(&mut self, v: &[u8]) {
        if let Some(dst) = self.b.get_mut(self.at..self.at + v.len()) {
            dst.copy_from_slice(v);
        }
        self.at += v.len();
    }
}

/// Reads what [`Received::pack`] wrote; past the end, zeros.
struct Unpack<'a> {
    b: &'a [u8],
    at: usize,
}

impl Unpack<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut a = [0u8; N];
        if let Some(s) = self.b.get(self.at..self.at + N) {
            a.copy_from_slice(s);
        }
        self.at += N;
        a
    }
    fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }
    fn i32(&mut self) -> i32 {
        i32::from_le_bytes(self.array())
    }
    fn i64(&mut self) -> i64 {
        i64::from_le_bytes(self.array())
    }
    fn opt_i64(&mut self) -> Option<i64> {
        let some = self.u8() == 1;
        let v = self.i64();
        some.then_some(v)
    }
}

fn push_cut(text: &mut String, s: &str, max: usize) {
    if s.len() <= max {
        text.push_str(s);
        return;
    }
    let marker = stormwatch_model::limits::TRUNCATION_MARKER;
    let mut end = max.saturating_sub(marker.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    text.push_str(&s[..end]);
    text.push_str(marker);
}

impl Received {
    fn text(&self, f: Text) -> &str {
        let i = f as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.text[start..self.ends[i] as usize]
    }

    /// Appends the next text field; fields must come in [`Text`] order.
    #[inline(always)]
    pub(crate) fn push_text(&mut self, f: Text, s: &str, max: usize) {
        push_cut(&mut self.text, s, max);
        self.ends[f as usize] = self.text.len() as u32;
    }

    pub fn service(&self) -> &str {
        self.text(Text::Service)
    }
    pub fn instance(&self) -> &str {
        self.text(Text::Instance)
    }
    pub fn operation(&self) -> &str {
        self.text(Text::Operation)
    }
    pub fn peer(&self) -> &str {
        self.text(Text::Peer)
    }
    pub fn db_system(&self) -> &str {
        self.text(Text::DbSystem)
    }
    pub fn statement(&self) -> &str {
        self.text(Text::Statement)
    }
    pub fn status_message(&self) -> &str {
        self.text(Text::StatusMessage)
    }

    /// Replaces the peer (cut to its limit), moving the fields and attributes after it.
    pub(crate) fn set_peer(&mut self, peer: &str) {
        let i = Text::Peer as usize;
        let start = self.ends[i - 1] as usize;
        let end = self.ends[i] as usize;
        let mut cut = String::new();
        push_cut(&mut cut, peer, TEXT_LIMITS[i]);
        self.text.replace_range(start..end, &cut);
        let delta = cut.len() as i64 - (end - start) as i64;
        let shift = |e: &mut u32| *e = (*e as i64 + delta) as u32;
        self.ends[i..].iter_mut().for_each(shift);
        for (k, v) in self.attr_ends.iter_mut() {
            shift(k);
            shift(v);
        }
    }

    /// The value of the first attribute named `key`, as text.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        let mut start = self.ends[TEXT_FIELDS - 1] as usize;
        for &(k, v) in &self.attr_ends {
            let (k, v) = (k as usize, v as usize);
            if &self.text[start..k] == key {
                return Some(&self.text[k..v]);
            }
            start = v;
        }
        None
    }

    /// True when the span failed.
    pub fn is_error(&self) -> bool {
        self.status == SpanStatus::Error as i32
    }

    /// The dependency class; `Internal` for an unknown number.
    pub fn dependency_class(&self) -> DependencyClass {
        DependencyClass::from_number(self.class).unwrap_or(DependencyClass::Internal)
    }

    /// End time, ns since the epoch.
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }

    /// Number of attributes held.
    pub fn attribute_count(&self) -> usize {
        self.attr_ends.len()
    }

    /// Replaces every NUL in the span's text by U+FFFD, keeping each field within its limit;
    /// returns how many were replaced.
    ///
    /// PostgreSQL's `text` cannot hold NUL: one such character in a service name or an
    /// attribute made COPY fail for the whole batch, and the agent retried that batch forever
    /// with every later batch queued behind it. Fixed here, where spans enter the agent, so
    /// the aggregates (built from these same labels) are clean too. One `memchr` over the text
    /// in the usual case; the rebuild runs only for spans that hold a NUL.
    pub(crate) fn replace_nuls(&mut self) -> u32 {
        let n = self.text.bytes().filter(|b| *b == 0).count() as u32;
        if n == 0 {
            return 0;
        }
        let old = std::mem::take(&mut self.text);
        let clean = |s: &str| s.replace('\0', stormwatch_model::validate::NUL_REPLACEMENT);
        let mut start = 0;
        for (i, end) in self.ends.iter_mut().enumerate() {
            let e = *end as usize;
            push_cut(&mut self.text, &clean(&old[start..e]), TEXT_LIMITS[i]);
            *end = self.text.len() as u32;
            start = e;
        }
        for (k, v) in self.attr_ends.iter_mut() {
            let (ke, ve) = (*k as usize, *v as usize);
            push_cut(
                &mut self.text,
                &clean(&old[start..ke]),
                MAX_ATTRIBUTE_KEY_BYTES,
            );
            *k = self.text.len() as u32;
            push_cut(
                &mut self.text,
                &clean(&old[ke..ve]),
                MAX_ATTRIBUTE_VALUE_BYTES,
            );
            *v = self.text.len() as u32;
            start = ve;
        }
        n
    }

    pub(crate) fn push_attr(&mut self, key: &str, value: Value<'_>, strip: bool) {
        push_cut(&mut self.text, key, MAX_ATTRIBUTE_KEY_BYTES);
        let key_end = self.text.len() as u32;
        match value {
            Value::Str(v) if strip => {
                push_cut(&mut self.text, strip_query(v), MAX_ATTRIBUTE_VALUE_BYTES)
            }
            Value::Str(v) => push_cut(&mut self.text, v, MAX_ATTRIBUTE_VALUE_BYTES),
            Value::Int(i) => push_int(&mut self.text, i),
            Value::Double(d) => {
                let _ = write!(self.text, "{d}");
            }
            Value::Bool(b) => self.text.push_str(if b { "true" } else { "false" }),
            Value::Other => self.text.push_str("[complex]"),
        }
        self.attr_ends.push((key_end, self.text.len() as u32));
    }

    /// Gives the span empty text and attribute buffers from this thread's free list, the text
    /// with room for at least `text` bytes.
    pub(crate) fn lend_buffers(&mut self, text: usize) {
        (self.text, self.attr_ends) = spare_buffers(text);
    }

    /// Bytes [`Received::pack`] appends.
    pub fn packed_len(&self) -> usize {
        PACKED_FIXED + 8 * self.attr_ends.len() + self.text.len()
    }

    /// Bytes the span takes when kept as it is, boxed: the struct and the capacity of its two
    /// buffers (the sampler's byte bound counts spans too large to pack this way).
    pub fn boxed_bytes(&self) -> usize {
        std::mem::size_of::<Received>()
            + self.text.capacity()
            + self.attr_ends.capacity() * std::mem::size_of::<(u32, u32)>()
    }

    /// Appends the whole span to `out` as bytes, which [`Received::unpack`] reads back. The
    /// sampler keeps waiting spans this way, one after the other in a few large buffers,
    /// instead of as a 184-byte struct plus two allocations each.
    pub fn pack(self, out: &mut Vec<u8>) {
        out.reserve(self.packed_len());
        // The fixed part is written into an array at constant offsets and appended at once.
        let mut head = [0u8; PACKED_FIXED];
        let mut put = Put {
            b: &mut head,
            at: 0,
        };
        put.bytes(&self.trace_id);
        put.bytes(&self.span_id);
        put.bytes(&[u8::from(self.parent_span_id.is_some())]);
        put.bytes(&self.parent_span_id.unwrap_or_default());
        for v in [self.kind, self.class, self.status, self.db_role, self.kept] {
            put.bytes(&v.to_le_bytes());
        }
        put.bytes(&self.http_status.to_le_bytes());
        put.bytes(&self.start_ns.to_le_bytes());
        put.bytes(&self.duration_ns.to_le_bytes());
        for v in [self.rows, self.replica_lag_ms] {
            put.bytes(&[u8::from(v.is_some())]);
            put.bytes(&v.unwrap_or_default().to_le_bytes());
        }
        put.bytes(&[
            self.flags,
            match self.statement_missing_where {
                None => 0,
                Some(false) => 1,
                Some(true) => 2,
            },
        ]);
        for e in self.ends {
            put.bytes(&e.to_le_bytes());
        }
        put.bytes(&(self.attr_ends.len() as u32).to_le_bytes());
        debug_assert_eq!(put.at, PACKED_FIXED);
        out.extend_from_slice(&head);
        for (k, v) in &self.attr_ends {
            // `k` then `v`, little-endian.
            out.extend_from_slice(&(u64::from(*v) << 32 | u64::from(*k)).to_le_bytes());
        }
        out.extend_from_slice(self.text.as_bytes());
        recycle(self.text, self.attr_ends);
    }

    /// Reads a span [`Received::pack`] wrote.
    pub fn unpack(b: &[u8]) -> Received {
        let mut r = Unpack { b, at: 0 };
        let mut span = Received {
            trace_id: r.array(),
            span_id: r.array(),
            ..Default::default()
        };
        let has_parent = r.u8() == 1;
        let parent: [u8; 8] = r.array();
        span.parent_span_id = has_parent.then_some(parent);
        span.kind = r.i32();
        span.class = r.i32();
        span.status = r.i32();
        span.db_role = r.i32();
        span.kept = r.i32();
        span.http_status = r.i32() as u32;
        span.start_ns = r.i64();
        span.duration_ns = r.i64();
        span.rows = r.opt_i64();
        span.replica_lag_ms = r.opt_i64();
        span.flags = r.u8();
        span.statement_missing_where = match r.u8() {
            1 => Some(false),
            2 => Some(true),
            _ => None,
        };
        for e in &mut span.ends {
            *e = r.i32() as u32;
        }
        let n = r.i32() as u32 as usize;
        let text = b.get(r.at + 8 * n..).unwrap_or_default();
        (span.text, span.attr_ends) = spare_buffers(text.len());
        span.attr_ends
            .extend((0..n.min(b.len() / 8)).map(|_| (r.i32() as u32, r.i32() as u32)));
        span.text
            .push_str(&String::from_utf8_lossy(b.get(r.at..).unwrap_or_default()));
        span
    }

    /// The shippable model span.
    pub fn into_span(self) -> Span {
        let mut attributes = BTreeMap::new();
        let mut start = self.ends[TEXT_FIELDS - 1] as usize;
        for (k, v) in &self.attr_ends {
            let (k, v) = (*k as usize, *v as usize);
            attributes.insert(self.text[start..k].to_owned(), self.text[k..v].to_owned());
            start = v;
        }
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            parent_span_id: self.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
            service: self.service().to_owned(),
            instance: self.instance().to_owned(),
            operation: self.operation().to_owned(),
            kind: self.kind,
            class: self.class,
            start_ns: self.start_ns,
            duration_ns: self.duration_ns,
            status: self.status,
            status_message: self.status_message().to_owned(),
            http_status: self.http_status,
            peer: self.peer().to_owned(),
            db_system: self.db_system().to_owned(),
            db_role: self.db_role,
            statement: self.statement().to_owned(),
            rows: self.rows,
            attributes,
            kept: self.kept,
            flags: Span::flags_from_bits(i32::from(self.flags)),
            replica_lag_ms: self.replica_lag_ms,
        };
        recycle(self.text, self.attr_ends);
        span
    }
}

/// Text buffers of spans already packed or converted, kept per thread for the next spans
/// (at most [`SPARE_BUFFERS`], none over [`SPARE_MAX_TEXT`] bytes): otherwise every span
/// allocates its text and attribute offsets only for them to be freed moments later, when
/// the sampler packs it.
type Buffers = (String, Vec<(u32, u32)>);

const SPARE_BUFFERS: usize = 1024;
const SPARE_MAX_TEXT: usize = 4096;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Buffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Empty buffers, the text with room for at least `text` bytes.
fn spare_buffers(text: usize) -> Buffers {
    let (mut t, a) = SPARE
        .with(|s| s.borrow_mut().pop())
        .unwrap_or_else(|| (String::new(), Vec::new()));
    t.reserve(text);
    (t, a)
}

fn recycle(mut text: String, mut attr_ends: Vec<(u32, u32)>) {
    if text.capacity() > SPARE_MAX_TEXT || attr_ends.capacity() > MAX_ATTRIBUTES {
        return;
    }
    text.clear();
    attr_ends.clear();
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < SPARE_BUFFERS {
            s.push((text, attr_ends));
        }
    });
}

/// A model span in compact form (tests, and any producer that already has model spans).
impl From<Span> for Received {
    fn from(s: Span) -> Self {
        let id = |v: &[u8]| {
            let mut a = [0u8; 8];
            let n = v.len().min(8);
            a[..n].copy_from_slice(&v[..n]);
            a
        };
        let mut trace_id = [0u8; 16];
        let n = s.trace_id.len().min(16);
        trace_id[..n].copy_from_slice(&s.trace_id[..n]);
        let mut r = Received {
            trace_id,
            span_id: id(&s.span_id),
            parent_span_id: (!s.parent_span_id.is_empty()).then(|| id(&s.parent_span_id)),
            kind: s.kind,
            class: s.class,
            start_ns: s.start_ns,
            duration_ns: s.duration_ns,
            status: s.status,
            http_status: s.http_status,
            db_role: s.db_role,
            rows: s.rows,
            kept: s.kept,
            flags: s.flag_bits() as u8,
            replica_lag_ms: s.replica_lag_ms,
            ..Default::default()
        };
        for (f, v) in [
            (Text::Service, &s.service),
            (Text::Instance, &s.instance),
            (Text::Operation, &s.operation),
            (Text::Peer, &s.peer),
            (Text::DbSystem, &s.db_system),
            (Text::Statement, &s.statement),
            (Text::StatusMessage, &s.status_message),
        ] {
            r.push_text(f, v, usize::MAX);
        }
        for (k, v) in &s.attributes {
            r.push_attr(k, Value::Str(v), false);
        }
        r
    }
}

/// `https://h/p?token=x` → `https://h/p`: query strings carry secrets.
fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or("")
}

#[cfg(test)]
mod tests;

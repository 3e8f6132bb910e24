//! From a received span (OTLP or Zipkin) to a [`stormwatch_model::Span`]: validation,
//! dependency class, peer, database role, operation name and normalized statement.
//!
//! Receivers adapt their format to [`Incoming`] + [`Attributes`]; everything that reads
//! OpenTelemetry semantic conventions lives here, so old and new attribute names are handled
//! once for every protocol.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use stormwatch_model::enums::WireEnum;
use stormwatch_model::limits::{
    MAX_ATTRIBUTES, MAX_ATTRIBUTE_KEY_BYTES, MAX_ATTRIBUTE_VALUE_BYTES, MAX_DURATION_NS,
    MAX_FUTURE_NS, MAX_LABEL_BYTES, MAX_MESSAGE_BYTES, MAX_STATEMENT_BYTES, MIN_TIME_NS,
};
use stormwatch_model::{DbRole, DependencyClass, Span, SpanKind, SpanStatus};

use crate::attributes::{Attributes, Value};
use crate::config::Classify;
use crate::normalize;

/// The attribute keys the classifier reads, old and new conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    DbSystemName,
    DbSystem,
    HttpRequestMethod,
    HttpMethod,
    HttpResponseStatusCode,
    HttpStatusCode,
    MessagingSystem,
    RpcSystem,
    HttpRoute,
    UrlFull,
    HttpUrl,
    DbQueryText,
    DbStatement,
    SqlQuery,
    DbRedisStatement,
    DbOperationName,
    DbOperation,
    DbQuerySummary,
    DbCollectionName,
    DbSqlTable,
    UrlTemplate,
    DbResponseReturnedRows,
    DbRowsAffected,
    DbResponseRows,
    ServerAddress,
    NetPeerName,
    NetworkPeerAddress,
    NetPeerIp,
    NetSockPeerAddr,
    ServerPort,
    NetPeerPort,
    NetworkPeerPort,
    NetSockPeerPort,
}

const KNOWN_KEYS: usize = K::NetSockPeerPort as usize + 1;

/// The [`K`] of an attribute key, if the classifier reads it.
fn known(key: &str) -> Option<K> {
    Some(match key {
        "db.system.name" => K::DbSystemName,
        "db.system" => K::DbSystem,
        "http.request.method" => K::HttpRequestMethod,
        "http.method" => K::HttpMethod,
        "http.response.status_code" => K::HttpResponseStatusCode,
        "http.status_code" => K::HttpStatusCode,
        "messaging.system" => K::MessagingSystem,
        "rpc.system" => K::RpcSystem,
        "http.route" => K::HttpRoute,
        "url.full" => K::UrlFull,
        "http.url" => K::HttpUrl,
        "db.query.text" => K::DbQueryText,
        "db.statement" => K::DbStatement,
        "sql.query" => K::SqlQuery,
        "db.redis.statement" => K::DbRedisStatement,
        "db.operation.name" => K::DbOperationName,
        "db.operation" => K::DbOperation,
        "db.query.summary" => K::DbQuerySummary,
        "db.collection.name" => K::DbCollectionName,
        "db.sql.table" => K::DbSqlTable,
        "url.template" => K::UrlTemplate,
        "db.response.returned_rows" => K::DbResponseReturnedRows,
        "db.rows_affected" => K::DbRowsAffected,
        "db.response.rows" => K::DbResponseRows,
        "server.address" => K::ServerAddress,
        "net.peer.name" => K::NetPeerName,
        "network.peer.address" => K::NetworkPeerAddress,
        "net.peer.ip" => K::NetPeerIp,
        "net.sock.peer.addr" => K::NetSockPeerAddr,
        "server.port" => K::ServerPort,
        "net.peer.port" => K::NetPeerPort,
        "network.peer.port" => K::NetworkPeerPort,
        "net.sock.peer.port" => K::NetSockPeerPort,
        _ => return None,
    })
}

/// Attributes with the position of every key the classifier reads, found in one pass: each of
/// its some thirty lookups is then an array read instead of a search of the attributes.
struct Indexed<'a, A: ?Sized> {
    attrs: &'a A,
    /// 1 + the position of the first attribute with each [`K`]; 0 when absent.
    at: [u16; KNOWN_KEYS],
}

impl<'a, A: Attributes + ?Sized> Indexed<'a, A> {
    fn value(&self, k: K) -> Option<Value<'a>> {
        match self.at[k as usize] {
            0 => None,
            p => self.attrs.nth(usize::from(p) - 1),
        }
    }

    fn has(&self, k: K) -> bool {
        self.at[k as usize] != 0
    }

    /// The first present attribute among `keys` (new convention first, then the old).
    fn first(&self, keys: &[K]) -> Option<Value<'a>> {
        keys.iter().find_map(|k| self.value(*k))
    }

    /// The first among `keys` holding a non-empty string.
    fn first_str(&self, keys: &[K]) -> Option<&'a str> {
        keys.iter().find_map(|k| match self.value(*k) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        })
    }
}

/// A received span in protocol-neutral form.
pub struct Incoming<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The protocol's own error marker (OTLP status ERROR, Zipkin `error` tag).
    pub error: bool,
    pub status_message: &'a str,
    pub service: &'a str,
    pub instance: &'a str,
}

/// Attribute keys whose values never leave the agent: raw statements (shipped normalized in
/// `statement` instead), bind parameters, headers (cookies, tokens).
fn is_private_key(key: &str) -> bool {
    matches!(
        key,
        "db.statement" | "db.query.text" | "sql.query" | "db.redis.statement"
    ) || key.starts_with("db.query.parameter")
        || key.starts_with("http.request.header.")
        || key.starts_with("http.response.header.")
        || key.starts_with("rpc.request.metadata.")
}

/// Attributes already represented by a field of [`Span`]: not repeated in `attributes`.
fn is_mapped_key(key: &str) -> bool {
    matches!(
        key,
        "db.system"
            | "db.system.name"
            | "http.status_code"
            | "http.response.status_code"
            | "server.address"
            | "server.port"
            | "net.peer.name"
            | "net.peer.port"
    )
}

/// The text fields of a [`Received`], in the order they are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Text {
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
    fn push_text(&mut self, f: Text, s: &str, max: usize) {
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
    fn replace_nuls(&mut self) -> u32 {
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

    fn push_attr(&mut self, key: &str, value: Value<'_>, strip: bool) {
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

/// Why a span was refused.
pub type Reject = String;

/// The clock as read at most 1,024 spans ago on this thread: never later than [`now_ns`], so
/// a start time it lets pass, the real clock would too; the real clock decides the rest.
fn recent_now_ns() -> i64 {
    thread_local! {
        static RECENT: std::cell::Cell<(i64, u16)> = const { std::cell::Cell::new((0, 0)) };
    }
    RECENT.with(|r| {
        let (mut now, left) = r.get();
        let left = match left.checked_sub(1) {
            Some(left) => left,
            None => {
                now = now_ns();
                1023
            }
        };
        r.set((now, left));
        now
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn check_id(name: &str, id: &[u8], len: usize) -> Result<(), Reject> {
    if id.len() != len {
        return Err(format!(
            "{name} must be {len} bytes ({} hex digits), got {} bytes",
            len * 2,
            id.len()
        ));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(format!("{name} must not be all zeros"));
    }
    Ok(())
}

/// Validates and classifies one span. `max_value` is the receiver's attribute size limit.
pub fn classify<A: Attributes + ?Sized>(
    inc: &Incoming<'_>,
    attrs: &A,
    cfg: &Classify,
    max_value: usize,
) -> Result<Received, Reject> {
    check_id("traceId", inc.trace_id, 16)?;
    check_id("spanId", inc.span_id, 8)?;
    // An all-zero parent is what some SDKs send for a root: treat it as none.
    let parent = if inc.parent_span_id.iter().all(|b| *b == 0) {
        &[][..]
    } else {
        inc.parent_span_id
    };
    if !parent.is_empty() && parent.len() != 8 {
        return Err(format!(
            "parentSpanId must be 8 bytes or empty, got {} bytes",
            parent.len()
        ));
    }
    let start = i64::try_from(inc.start_ns).unwrap_or(i64::MAX);
    let end = i64::try_from(inc.end_ns).unwrap_or(i64::MAX);
    if start < MIN_TIME_NS {
        return Err(format!(
            "startTimeUnixNano {} is before 2000-01-01",
            inc.start_ns
        ));
    }
    if start > recent_now_ns().saturating_add(MAX_FUTURE_NS)
        && start > now_ns().saturating_add(MAX_FUTURE_NS)
    {
        return Err(format!(
            "startTimeUnixNano {} is more than a day in the future",
            inc.start_ns
        ));
    }
    if end < start {
        return Err(format!(
            "endTimeUnixNano {} is before startTimeUnixNano {}",
            inc.end_ns, inc.start_ns
        ));
    }
    let duration = end - start;
    if duration > MAX_DURATION_NS {
        return Err(format!("span lasts {duration} ns, more than one day"));
    }
    let mut oversized = None;
    let mut at = [0u16; KNOWN_KEYS];
    let mut position = 0usize;
    attrs.each(&mut |k, v| {
        position += 1;
        if let Some(known) = known(k) {
            let slot = &mut at[known as usize];
            if *slot == 0 {
                *slot = u16::try_from(position).unwrap_or(0);
            }
        }
        if oversized.is_none() && (v.len() > max_value || k.len() > max_value) {
            oversized = Some(k.chars().take(64).collect::<String>());
        }
    });
    if let Some(k) = oversized {
        return Err(format!("attribute `{k}` is longer than {max_value} bytes"));
    }
    let idx = Indexed { attrs, at };

    let db_system: Option<Cow<'_, str>> = idx.first_str(&[K::DbSystemName, K::DbSystem]).map(|s| {
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    });
    let http_method = idx.first_str(&[K::HttpRequestMethod, K::HttpMethod]);
    let http_status = idx
        .first(&[K::HttpResponseStatusCode, K::HttpStatusCode])
        .and_then(|v| v.as_int())
        .filter(|s| (100..=999).contains(s))
        .unwrap_or(0) as u32;
    let messaging = idx.first_str(&[K::MessagingSystem]);
    let rpc = idx.first_str(&[K::RpcSystem]);

    let class = match (&db_system, inc.kind) {
        (Some(s), _) if s == "redis" => DependencyClass::Redis,
        (Some(_), _) => DependencyClass::Db,
        (None, SpanKind::Server) => DependencyClass::HttpServer,
        (None, SpanKind::Producer | SpanKind::Consumer) => DependencyClass::Messaging,
        (None, _) if messaging.is_some() => DependencyClass::Messaging,
        (None, SpanKind::Client) if http_method.is_some() || rpc.is_some() => {
            DependencyClass::HttpClient
        }
        (None, SpanKind::Unspecified) if http_method.is_some() && idx.has(K::HttpRoute) => {
            DependencyClass::HttpServer
        }
        (None, SpanKind::Client) if idx.has(K::UrlFull) || idx.has(K::HttpUrl) => {
            DependencyClass::HttpClient
        }
        _ => DependencyClass::Internal,
    };

    // Peer, operation and statement are built in per-thread buffers: the span's text copies
    // them, so a span need not allocate for them.
    let mut scratch = SCRATCH.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let Scratch { peer, op, stmt } = &mut scratch;
    peer_of(&idx, class, db_system.as_deref(), peer);

    // Errors: the protocol's own marker, plus HTTP statuses the OTel conventions call failures
    // (5xx for servers, 4xx and 5xx for clients), in case an instrumentation did not set it.
    let error = inc.error
        || (class == DependencyClass::HttpServer && http_status >= 500)
        || (class == DependencyClass::HttpClient && http_status >= 400);

    let raw_statement = idx.first_str(&[
        K::DbQueryText,
        K::DbStatement,
        K::SqlQuery,
        K::DbRedisStatement,
    ]);
    // Normalized once per statement shape (per thread), not once per span.
    let sql = match (class, raw_statement) {
        (DependencyClass::Db, Some(raw)) => Some(normalize::sql_cached(raw)),
        _ => None,
    };
    let (operation, statement): (Cow<'_, str>, Cow<'_, str>) = match class {
        DependencyClass::Redis => {
            let cmd_src = raw_statement
                .or_else(|| idx.first_str(&[K::DbOperationName, K::DbOperation]))
                .unwrap_or(inc.name);
            let cmd = normalize::redis_into(cmd_src, stmt);
            let statement = if cfg.keep_raw_statements {
                raw_statement.unwrap_or("")
            } else {
                stmt.as_str()
            };
            (Cow::Borrowed(&stmt[..cmd]), Cow::Borrowed(statement))
        }
        DependencyClass::Db => {
            let op = idx
                .first_str(&[K::DbQuerySummary])
                .map(Cow::Borrowed)
                .or_else(|| {
                    sql.as_ref()
                        .and_then(|n| n.operation.as_deref())
                        .map(Cow::Borrowed)
                })
                .or_else(|| {
                    let verb = idx.first_str(&[K::DbOperationName, K::DbOperation])?;
                    let table = idx.first_str(&[K::DbCollectionName, K::DbSqlTable]);
                    Some(Cow::Owned(match table {
                        Some(t) => format!("{} {t}", verb.to_ascii_uppercase()),
                        None => verb.to_ascii_uppercase(),
                    }))
                })
                .unwrap_or(Cow::Borrowed(inc.name));
            let statement = if cfg.keep_raw_statements {
                Cow::Borrowed(raw_statement.unwrap_or(""))
            } else {
                sql.as_ref()
                    .map_or(Cow::Borrowed(""), |n| Cow::Borrowed(n.statement.as_str()))
            };
            (op, statement)
        }
        DependencyClass::HttpServer => {
            let op = match (http_method, idx.first_str(&[K::HttpRoute])) {
                (Some(m), Some(r)) => Cow::Borrowed(join_words(m, r, op)),
                _ => Cow::Borrowed(inc.name),
            };
            (op, Cow::Borrowed(""))
        }
        DependencyClass::HttpClient => {
            let op = match (http_method, idx.first_str(&[K::UrlTemplate, K::HttpRoute])) {
                (Some(m), Some(t)) => Cow::Borrowed(join_words(m, t, op)),
                _ => Cow::Borrowed(inc.name),
            };
            (op, Cow::Borrowed(""))
        }
        _ => (Cow::Borrowed(inc.name), Cow::Borrowed("")),
    };

    let db_role = match class {
        DependencyClass::Db | DependencyClass::Redis => role_of(attrs, cfg, peer),
        _ => DbRole::Unknown,
    };

    let rows = idx
        .first(&[
            K::DbResponseReturnedRows,
            K::DbRowsAffected,
            K::DbResponseRows,
        ])
        .and_then(|v| v.as_int())
        .filter(|r| *r >= 0);
    let mut r = Received {
        trace_id: inc.trace_id.try_into().unwrap_or([0; 16]),
        span_id: inc.span_id.try_into().unwrap_or([0; 8]),
        parent_span_id: parent.try_into().ok(),
        kind: inc.kind as i32,
        class: class as i32,
        start_ns: start,
        duration_ns: duration,
        status: if error {
            SpanStatus::Error
        } else {
            SpanStatus::Ok
        } as i32,
        http_status,
        db_role: db_role as i32,
        rows,
        statement_missing_where: match (&sql, cfg.keep_raw_statements) {
            (Some(n), false) if n.statement.len() <= MAX_STATEMENT_BYTES => Some(n.missing_where),
            _ => None,
        },
        ..Default::default()
    };
    let (text, attr_ends) = spare_buffers(
        (inc.service.len()
            + inc.instance.len()
            + operation.len()
            + peer.len()
            + db_system.as_deref().map_or(0, str::len)
            + statement.len()
            + if error { inc.status_message.len() } else { 0 }
            + 64)
            .min(8192),
    );
    (r.text, r.attr_ends) = (text, attr_ends);
    let service = if inc.service.is_empty() {
        "unknown_service"
    } else {
        inc.service
    };
    r.push_text(Text::Service, service, MAX_LABEL_BYTES);
    r.push_text(Text::Instance, inc.instance, MAX_LABEL_BYTES);
    let operation: &str = if operation.is_empty() {
        "unnamed"
    } else {
        &operation
    };
    r.push_text(Text::Operation, operation, MAX_LABEL_BYTES);
    r.push_text(Text::Peer, peer, MAX_LABEL_BYTES);
    r.push_text(
        Text::DbSystem,
        db_system.as_deref().unwrap_or(""),
        MAX_LABEL_BYTES,
    );
    r.push_text(Text::Statement, &statement, MAX_STATEMENT_BYTES);
    r.push_text(
        Text::StatusMessage,
        if error { inc.status_message } else { "" },
        MAX_MESSAGE_BYTES,
    );

    let mut dropped = 0usize;
    attrs.each(&mut |k, v| {
        if is_private_key(k) || is_mapped_key(k) {
            return;
        }
        if r.attr_ends.len() >= MAX_ATTRIBUTES - 1 {
            dropped += 1;
            return;
        }
        let strip = matches!(k, "url.full" | "http.url" | "url.query" | "http.target");
        r.push_attr(k, v, strip);
    });
    if dropped > 0 {
        r.push_attr(
            stormwatch_model::limits::DROPPED_ATTRIBUTES_KEY,
            Value::Int(dropped as i64),
            false,
        );
    }
    SCRATCH.with(|p| *p.borrow_mut() = scratch);
    r.replaced_nuls = r.replace_nuls();
    Ok(r)
}

/// [`classify`]'s per-thread buffers.
#[derive(Default)]
struct Scratch {
    peer: String,
    op: String,
    stmt: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// `a b` into `out`, without the formatting machinery.
fn join_words<'o>(a: &str, b: &str, out: &'o mut String) -> &'o str {
    out.clear();
    out.push_str(a);
    out.push(' ');
    out.push_str(b);
    out
}

/// `https://h/p?token=x` → `https://h/p`: query strings carry secrets.
fn strip_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or("")
}

/// `host:port` of the remote side, into `out` (cleared first; left empty when unknown).
fn peer_of<A: Attributes + ?Sized>(
    idx: &Indexed<'_, A>,
    class: DependencyClass,
    db_system: Option<&str>,
    out: &mut String,
) {
    out.clear();
    // A server span's peer attributes name its *client*, whose ephemeral port changes with
    // every connection: kept as the peer, a stock Python web app made 5,674 distinct peers
    // (aggregate rows) in 29 minutes. A peer is what a span calls, so servers have none.
    if class == DependencyClass::HttpServer {
        return;
    }
    let host = idx.first_str(&[
        K::ServerAddress,
        K::NetPeerName,
        K::NetworkPeerAddress,
        K::NetPeerIp,
        K::NetSockPeerAddr,
    ]);
    let port = idx
        .first(&[
            K::ServerPort,
            K::NetPeerPort,
            K::NetworkPeerPort,
            K::NetSockPeerPort,
        ])
        .and_then(|v| v.as_int())
        .filter(|p| (1..=65535).contains(p));
    let (host, port) = match host {
        Some(h) => (Some(h), port),
        None if class == DependencyClass::HttpClient => {
            match idx
                .first_str(&[K::UrlFull, K::HttpUrl])
                .and_then(host_port_of_url)
            {
                Some((h, p)) => (Some(h), port.or(p)),
                None => (None, port),
            }
        }
        None => (None, port),
    };
    let Some(host) = host else {
        return;
    };
    let port = port.or(match db_system {
        Some("redis") => Some(6379),
        Some("postgresql") => Some(5432),
        Some("mysql" | "mariadb") => Some(3306),
        _ => None,
    });
    // `[v6]:port`, `host:port` or `host`, built without the formatting machinery.
    let bracket = host.contains(':') && !host.starts_with('[');
    if bracket {
        out.push('[');
    }
    out.push_str(host);
    if bracket {
        out.push(']');
    }
    if let Some(p) = port {
        out.push(':');
        push_int(out, p);
    }
}

/// Appends the decimal digits of `v`.
fn push_int(out: &mut String, v: i64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push('-');
    }
    for &d in &buf[i..] {
        out.push(char::from(d));
    }
}

/// Host and port (default by scheme) of a URL.
fn host_port_of_url(url: &str) -> Option<(&str, Option<i64>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default = match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .or(default);
        return Some((h, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok().or(default))),
        None if !authority.is_empty() => Some((authority, default)),
        None => None,
    }
}

fn role_of<A: Attributes + ?Sized>(attrs: &A, cfg: &Classify, peer: &str) -> DbRole {
    if let Some(Value::Str(role)) = attrs.get(&cfg.db_role_attribute) {
        let is = |names: &[&str]| names.iter().any(|n| role.eq_ignore_ascii_case(n));
        if is(&["primary", "master", "writer"]) {
            return DbRole::Primary;
        }
        if is(&["replica", "secondary", "slave", "reader"]) {
            return DbRole::Replica;
        }
    }
    if cfg.db_roles.is_empty() {
        return DbRole::Unknown;
    }
    if let Some(role) = cfg.db_roles.get(peer) {
        return *role;
    }
    // A peer configured without the port matches any port of that host.
    let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    cfg.db_roles.get(host).copied().unwrap_or(DbRole::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000_000_000_000;

    #[test]
    fn the_key_index_answers_as_a_search_of_the_attributes_would() {
        // Known keys map to their slot, unknown keys to none.
        assert_eq!(known("db.system.name"), Some(K::DbSystemName));
        assert_eq!(known("net.sock.peer.port"), Some(K::NetSockPeerPort));
        assert_eq!(known("db.systemx"), None);
        assert_eq!(known(""), None);
        // Duplicates, empty values, numbers and unknown keys, in many orders: the first
        // attribute of a key is its value, and `first_str` passes over empty and non-string
        // values to the next key, as searching the list did.
        let pool: [(&str, Value<'_>); 8] = [
            ("db.system.name", Value::Str("")),
            ("db.system", Value::Str("postgresql")),
            ("db.system.name", Value::Str("mysql")),
            ("db.system", Value::Int(3)),
            ("server.port", Value::Str("5432")),
            ("server.port", Value::Int(6379)),
            ("other", Value::Str("x")),
            ("db.system.name", Value::Str("redis")),
        ];
        let search_str = |a: &[(&str, Value<'_>)], keys: &[&str]| {
            keys.iter()
                .find_map(|k| match a.iter().find(|(n, _)| n == k) {
                    Some((_, Value::Str(s))) if !s.is_empty() => Some(s.to_string()),
                    _ => None,
                })
        };
        let mut seed = 7u64;
        for _ in 0..2000 {
            let attrs: Vec<(&str, Value<'_>)> = (0..seed % 6)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    pool[((seed >> 33) as usize + i as usize) % pool.len()]
                })
                .collect();
            let mut at = [0u16; KNOWN_KEYS];
            for (i, (k, _)) in attrs.iter().enumerate() {
                if let Some(k) = known(k) {
                    if at[k as usize] == 0 {
                        at[k as usize] = i as u16 + 1;
                    }
                }
            }
            let idx = Indexed {
                attrs: attrs.as_slice(),
                at,
            };
            assert_eq!(
                idx.first_str(&[K::DbSystemName, K::DbSystem])
                    .map(str::to_string),
                search_str(&attrs, &["db.system.name", "db.system"]),
                "{attrs:?}"
            );
            let port = attrs
                .iter()
                .find(|(k, _)| *k == "server.port")
                .map(|(_, v)| *v);
            assert_eq!(idx.first(&[K::ServerPort]), port, "{attrs:?}");
            assert_eq!(idx.has(K::ServerPort), port.is_some());
        }
    }

    #[test]
    fn packed_spans_lend_their_buffers_to_the_next_spans_within_bounds() {
        let spare = || SPARE.with(|s| s.borrow().len());
        let span = run(
            SpanKind::Client,
            "GET",
            &[("db.system", "redis"), ("db.statement", "GET user:1")],
        );
        SPARE.with(|s| s.borrow_mut().clear());
        let r = Received::from(span.clone());
        let capacity = r.text.capacity();
        let mut out = Vec::new();
        r.pack(&mut out);
        assert_eq!(spare(), 1, "pack hands its buffers back");
        let (text, attrs) = spare_buffers(8);
        assert!(text.is_empty() && attrs.is_empty(), "handed out empty");
        assert_eq!(text.capacity(), capacity, "the same allocation");
        assert_eq!(spare(), 0);
        // What comes back out of the pack is the same span, built in lent buffers.
        assert_eq!(Received::unpack(&out).into_span(), span);
        assert_eq!(spare(), 1, "into_span hands its buffers back too");
        // Bounded: no more than SPARE_BUFFERS, and no large buffers.
        for _ in 0..SPARE_BUFFERS + 10 {
            recycle(String::with_capacity(64), Vec::new());
        }
        assert_eq!(spare(), SPARE_BUFFERS);
        SPARE.with(|s| s.borrow_mut().clear());
        recycle(String::with_capacity(SPARE_MAX_TEXT + 1), Vec::new());
        assert_eq!(spare(), 0, "a large text buffer is freed, not kept");
    }

    #[test]
    fn a_packed_span_unpacks_equal_field_for_field() {
        let mut attributes = BTreeMap::new();
        attributes.insert("db.name".to_owned(), "shop-ü".to_owned());
        attributes.insert("thread.id".to_owned(), "17".to_owned());
        let mut r = Received::from(Span {
            trace_id: (1..=16).collect(),
            span_id: (21..=28).collect(),
            parent_span_id: (31..=38).collect(),
            service: "shop".into(),
            instance: "web-1".into(),
            operation: "SELECT orders".into(),
            kind: 3,
            class: 2,
            start_ns: NOW as i64,
            duration_ns: -5,
            status: 2,
            status_message: "timeout".into(),
            http_status: 503,
            peer: "db1:5432".into(),
            db_system: "postgresql".into(),
            db_role: 2,
            statement: "SELECT * FROM orders WHERE id = ?".into(),
            rows: Some(-1),
            attributes,
            kept: 4,
            flags: Span::flags_from_bits(0b101),
            replica_lag_ms: Some(i64::MAX),
        });
        r.statement_missing_where = Some(true);
        for (missing_where, parent) in [(Some(true), true), (Some(false), false), (None, false)] {
            r.statement_missing_where = missing_where;
            if !parent {
                r.parent_span_id = None;
                r.rows = None;
            }
            let mut buf = vec![7u8; 3]; // packed after other bytes, as in the arena
            r.clone().pack(&mut buf);
            assert_eq!(buf.len() - 3, r.packed_len());
            assert_eq!(Received::unpack(&buf[3..]), r);
        }
    }

    fn inc<'a>(kind: SpanKind, name: &'a str) -> Incoming<'a> {
        Incoming {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent_span_id: &[],
            name,
            kind,
            start_ns: NOW,
            end_ns: NOW + 5_000_000,
            error: false,
            status_message: "",
            service: "shop",
            instance: "web-1",
        }
    }

    fn attrs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(kind: SpanKind, name: &str, kv: &[(&str, &str)]) -> Span {
        classify(
            &inc(kind, name),
            attrs(kv).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap()
        .into_span()
    }

    #[test]
    fn nul_characters_become_replacement_characters_within_each_limit() {
        let long_service = format!("{}\0", "s".repeat(MAX_LABEL_BYTES - 1));
        let mut i = inc(SpanKind::Server, "GET /a\0b");
        i.service = &long_service;
        i.error = true;
        i.status_message = "boom\0";
        let r = classify(
            &i,
            attrs(&[("http.route", "/a"), ("k\0ey", "v\0\0al"), ("ok", "fine")]).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap();
        // Service, operation (the span's name), message, attribute key, value (two).
        assert_eq!(r.replaced_nuls, 6);
        let s = r.into_span();
        let all = [&s.service, &s.operation, &s.status_message]
            .into_iter()
            .chain(s.attributes.keys())
            .chain(s.attributes.values());
        for text in all {
            assert!(!text.contains('\0'), "{text:?} still holds a NUL");
        }
        // The service was exactly at its limit; the replacement must not push it over.
        assert!(s.service.len() <= MAX_LABEL_BYTES, "{}", s.service.len());
        assert!(s.service.starts_with("sss"), "{}", s.service);
        assert_eq!(s.status_message, "boom\u{FFFD}");
        assert_eq!(
            s.attributes.get("k\u{FFFD}ey").map(String::as_str),
            Some("v\u{FFFD}\u{FFFD}al")
        );
        assert_eq!(s.attributes.get("ok").map(String::as_str), Some("fine"));
        // A span without NUL is untouched and not counted.
        let clean = classify(
            &inc(SpanKind::Server, "GET /"),
            attrs(&[]).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap();
        assert_eq!(clean.replaced_nuls, 0);
    }

    #[test]
    fn old_and_new_db_conventions_agree() {
        let old = run(
            SpanKind::Client,
            "query",
            &[
                ("db.system", "postgresql"),
                ("db.statement", "SELECT * FROM users WHERE id = 7"),
                ("net.peer.name", "db1"),
                ("net.peer.port", "5433"),
            ],
        );
        let new = run(
            SpanKind::Client,
            "query",
            &[
                ("db.system.name", "postgresql"),
                ("db.query.text", "SELECT * FROM users WHERE id = 7"),
                ("server.address", "db1"),
                ("server.port", "5433"),
            ],
        );
        for s in [&old, &new] {
            assert_eq!(s.class, DependencyClass::Db as i32);
            assert_eq!(s.peer, "db1:5433");
            assert_eq!(s.operation, "SELECT users");
            assert_eq!(s.statement, "SELECT * FROM users WHERE id = ?");
            assert_eq!(s.db_system, "postgresql");
            // The raw statement is not smuggled out through the attributes.
            assert!(
                s.attributes.values().all(|v| !v.contains("id = 7")),
                "{:?}",
                s.attributes
            );
        }
    }

    #[test]
    fn redis_is_its_own_class_and_keeps_no_values() {
        let s = run(
            SpanKind::Client,
            "SET",
            &[
                ("db.system", "redis"),
                ("db.statement", "SET token:991 s3cr3t"),
                ("server.address", "cache"),
            ],
        );
        assert_eq!(s.class, DependencyClass::Redis as i32);
        assert_eq!(s.operation, "SET");
        assert_eq!(s.statement, "SET token:?");
        assert_eq!(s.peer, "cache:6379");
        let encoded = format!("{s:?}");
        assert!(!encoded.contains("s3cr3t"), "{encoded}");
    }

    #[test]
    fn raw_statements_only_when_configured() {
        let cfg = Classify {
            keep_raw_statements: true,
            ..Classify::default()
        };
        let kv = attrs(&[
            ("db.system", "mysql"),
            ("db.statement", "SELECT 1 FROM t WHERE a = 'x'"),
        ]);
        let s = classify(&inc(SpanKind::Client, "q"), kv.as_slice(), &cfg, 65536).unwrap();
        assert_eq!(s.statement(), "SELECT 1 FROM t WHERE a = 'x'");
    }

    #[test]
    fn http_server_and_client() {
        let s = run(
            SpanKind::Server,
            "GET",
            &[
                ("http.request.method", "GET"),
                ("http.route", "/posts/{id}"),
                ("http.response.status_code", "503"),
            ],
        );
        assert_eq!(s.class, DependencyClass::HttpServer as i32);
        assert_eq!(s.operation, "GET /posts/{id}");
        assert_eq!(s.http_status, 503);
        assert!(s.is_error());
        // A server's peer attributes name its client and that client's ephemeral port (what
        // the stock Python WSGI instrumentation sends): no peer, so no aggregate row per port.
        for port in ["51234", "51235"] {
            let s = run(
                SpanKind::Server,
                "GET",
                &[
                    ("http.method", "GET"),
                    ("http.route", "/posts"),
                    ("net.peer.ip", "10.0.0.7"),
                    ("net.peer.port", port),
                    ("server.address", "board.local"),
                ],
            );
            assert_eq!(s.peer, "", "{port}");
        }
        let c = run(
            SpanKind::Client,
            "GET",
            &[
                ("http.method", "GET"),
                ("http.url", "https://api.example.com/v1/x?key=SECRET"),
                ("http.status_code", "404"),
            ],
        );
        assert_eq!(c.class, DependencyClass::HttpClient as i32);
        assert_eq!(c.peer, "api.example.com:443");
        assert!(c.is_error());
        assert_eq!(c.attributes["http.url"], "https://api.example.com/v1/x");
    }

    #[test]
    fn messaging_and_internal() {
        assert_eq!(
            run(
                SpanKind::Producer,
                "orders publish",
                &[("messaging.system", "kafka")]
            )
            .class,
            DependencyClass::Messaging as i32
        );
        assert_eq!(
            run(SpanKind::Internal, "render", &[]).class,
            DependencyClass::Internal as i32
        );
    }

    #[test]
    fn db_role_from_config_or_attribute() {
        let mut cfg = Classify::default();
        cfg.db_roles.insert("db2:5432".into(), DbRole::Replica);
        cfg.db_roles.insert("db3".into(), DbRole::Primary);
        let go = |kv: &[(&str, &str)]| {
            classify(
                &inc(SpanKind::Client, "q"),
                attrs(kv).as_slice(),
                &cfg,
                65536,
            )
            .unwrap()
            .db_role
        };
        assert_eq!(
            go(&[("db.system", "postgresql"), ("server.address", "db2")]),
            DbRole::Replica as i32
        );
        assert_eq!(
            go(&[
                ("db.system", "postgresql"),
                ("server.address", "db3"),
                ("server.port", "6000")
            ]),
            DbRole::Primary as i32
        );
        assert_eq!(
            go(&[
                ("db.system", "postgresql"),
                ("server.address", "db9"),
                ("db.role", "replica")
            ]),
            DbRole::Replica as i32
        );
        assert_eq!(
            go(&[("db.system", "postgresql"), ("server.address", "db9")]),
            DbRole::Unknown as i32
        );
    }

    #[test]
    fn bad_ids_and_times_are_rejected_with_reasons() {
        let kv = attrs(&[]);
        let cfg = Classify::default();
        let mut i = inc(SpanKind::Server, "x");
        i.trace_id = &[0; 16];
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("all zeros"));
        let mut i = inc(SpanKind::Server, "x");
        i.span_id = &[1; 4];
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("spanId must be 8 bytes"));
        let mut i = inc(SpanKind::Server, "x");
        i.start_ns = 5;
        i.end_ns = 6;
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("before 2000"));
        let mut i = inc(SpanKind::Server, "x");
        i.end_ns = i.start_ns - 1;
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("before startTime"));
        let big = attrs(&[("blob", &"x".repeat(200))]);
        assert!(
            classify(&inc(SpanKind::Server, "x"), big.as_slice(), &cfg, 100)
                .unwrap_err()
                .contains("blob")
        );
    }
}

//! Validation of a decoded batch: reject what cannot be stored, truncate what is only too long.
//!
//! Rejections name the field (`spans[3].trace_id`) so an agent author can fix the producer.
//! Truncations are counted and returned so the collector can expose them.

use std::borrow::Cow;

use crate::batch::{Batch, BorrowedBatch, WIRE_VERSION};
use crate::enums::{
    DbRole, DependencyClass, FailureClass, KeepReason, MetricKind, SpanFlag, SpanKind, SpanStatus,
    WireEnum,
};
use crate::limits::*;
use crate::log::LogRecord;
use crate::metric::MetricPoint;
use crate::span_ref::{sort_attributes, Attribute, SpanRef};

/// A batch that must be rejected whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn reject(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        message: message.into(),
    }
}

/// What validation cut short, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Truncations {
    /// Strings cut to their limit.
    pub values: u64,
    /// Attributes dropped over [`MAX_ATTRIBUTES`].
    pub attributes: u64,
}

impl Truncations {
    /// True when nothing was cut.
    pub fn is_empty(&self) -> bool {
        self.values == 0 && self.attributes == 0
    }
}

/// Cuts `s` to at most `max` bytes (marker included) at a char boundary. Returns true if cut.
pub fn truncate(s: &mut String, max: usize) -> bool {
    let Some(end) = cut_point(s, max) else {
        return false;
    };
    s.truncate(end);
    s.push_str(TRUNCATION_MARKER);
    true
}

/// [`truncate`] of borrowed text (owned once cut).
fn truncate_text(s: &mut Cow<'_, str>, max: usize) -> bool {
    let Some(end) = cut_point(s, max) else {
        return false;
    };
    *s = Cow::Owned(format!("{}{TRUNCATION_MARKER}", &s[..end]));
    true
}

/// Where [`truncate`] cuts `s`, `None` when it fits.
fn cut_point(s: &str, max: usize) -> Option<usize> {
    if s.len() <= max {
        return None;
    }
    let mut end = max.saturating_sub(TRUNCATION_MARKER.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Some(end)
}

fn check_time(field: impl FnOnce() -> String, ns: i64, now_ns: i64) -> Result<(), FieldError> {
    if ns < MIN_TIME_NS {
        return Err(reject(
            field(),
            format!("timestamp {ns} ns is before 2000-01-01"),
        ));
    }
    if ns > now_ns.saturating_add(MAX_FUTURE_NS) {
        return Err(reject(
            field(),
            format!("timestamp {ns} ns is more than a day ahead of the collector's clock"),
        ));
    }
    Ok(())
}

fn check_enum<E: WireEnum>(field: impl FnOnce() -> String, n: i32) -> Result<(), FieldError> {
    match E::from_number(n) {
        Some(_) => Ok(()),
        None => Err(reject(
            field(),
            format!("unknown value {n}, expected one of: {}", E::names()),
        )),
    }
}

fn check_id(
    field: impl FnOnce() -> String,
    id: &[u8],
    len: usize,
    optional: bool,
) -> Result<(), FieldError> {
    if optional && id.is_empty() {
        return Ok(());
    }
    if id.len() != len {
        return Err(reject(
            field(),
            format!(
                "must be {len} bytes ({} hex digits), got {} bytes",
                len * 2,
                id.len()
            ),
        ));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(reject(field(), "must not be all zeros"));
    }
    Ok(())
}

fn check_count(field: &str, n: usize, max: usize) -> Result<(), FieldError> {
    if n > max {
        return Err(reject(
            field,
            format!("{n} items exceed the limit of {max} per batch"),
        ));
    }
    Ok(())
}

/// PostgreSQL's `text` (and `jsonb`) cannot hold NUL: COPY fails for the whole batch. Agents
/// replace it; a batch that still carries one is refused here, naming the field, so it is
/// answered 400 (never stored, never retried) instead of failing in the database.
fn check_text(field: impl FnOnce() -> String, s: &str) -> Result<(), FieldError> {
    // `find` of a char searches with `memchr`, a word at a time: every text of every span
    // passes here.
    match s.find('\0') {
        None => Ok(()),
        Some(at) => Err(reject(
            field(),
            format!(
                "holds a NUL character at byte {at}, which PostgreSQL cannot store; replace it (agents use U+FFFD)"
            ),
        )),
    }
}

/// What a NUL character becomes in [`replace_nuls`].
pub const NUL_REPLACEMENT: &str = "\u{FFFD}";

fn clean(s: &mut String) -> u64 {
    let n = s.bytes().filter(|b| *b == 0).count() as u64;
    if n > 0 {
        *s = s.replace('\0', NUL_REPLACEMENT);
    }
    n
}

fn clean_map(m: &mut std::collections::BTreeMap<String, String>) -> u64 {
    let mut n: u64 = m.values_mut().map(clean).sum();
    if m.keys().any(|k| k.contains('\0')) {
        for (mut k, v) in std::mem::take(m) {
            n += clean(&mut k);
            m.insert(k, v);
        }
    }
    n
}

/// Replaces every NUL character in the batch's text by U+FFFD and returns how many there
/// were: what an agent does before [`check_batch`], which refuses NUL. Spans are cleaned as
/// they are received; this covers what the agent makes itself (a database's error message in
/// a probe sample, a mount point's name).
pub fn replace_nuls(batch: &mut Batch) -> u64 {
    let mut n = clean(&mut batch.agent_id) + clean(&mut batch.instance);
    for s in &mut batch.spans {
        for v in [
            &mut s.service,
            &mut s.instance,
            &mut s.operation,
            &mut s.peer,
            &mut s.db_system,
            &mut s.statement,
            &mut s.status_message,
        ] {
            n += clean(v);
        }
        n += clean_map(&mut s.attributes);
    }
    for a in &mut batch.aggregates {
        for v in [
            &mut a.service,
            &mut a.peer,
            &mut a.operation,
            &mut a.status_class,
        ] {
            n += clean(v);
        }
    }
    for e in &mut batch.entry_calls {
        for v in [&mut e.service, &mut e.entry, &mut e.peer] {
            n += clean(v);
        }
    }
    for h in &mut batch.hosts {
        n += clean(&mut h.host);
        for d in &mut h.disks {
            n += clean(&mut d.mount);
        }
    }
    for p in &mut batch.probes {
        for v in [&mut p.database, &mut p.engine, &mut p.failure_message] {
            n += clean(v);
        }
        n += clean_map(&mut p.detail);
    }
    for m in &mut batch.metrics {
        for v in [&mut m.service, &mut m.instance, &mut m.name, &mut m.unit] {
            n += clean(v);
        }
        n += clean_map(&mut m.attributes);
    }
    for l in &mut batch.logs {
        for v in [
            &mut l.service,
            &mut l.instance,
            &mut l.severity_text,
            &mut l.body,
        ] {
            n += clean(v);
        }
        n += clean_map(&mut l.attributes);
    }
    for v in &mut batch.versions {
        for t in [
            &mut v.service,
            &mut v.instance,
            &mut v.version,
            &mut v.environment,
        ] {
            n += clean(t);
        }
    }
    n
}

/// Keeps at most `max` attributes (the rest dropped and counted in
/// [`DROPPED_ATTRIBUTES_KEY`]), keys and values truncated.
fn bound_attributes(
    attributes: &mut std::collections::BTreeMap<String, String>,
    max: usize,
    cut: &mut Truncations,
) {
    if !over_bounds(attributes.len(), attributes.iter(), max) {
        return;
    }
    let mut list: Vec<Attribute<'_>> = std::mem::take(attributes)
        .into_iter()
        .map(|(k, v)| (Cow::Owned(k), Cow::Owned(v)))
        .collect();
    bound_attribute_list(&mut list, max, cut);
    *attributes = list
        .into_iter()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
}

/// Whether `n` attributes are more than `max` or one of them is too long.
fn over_bounds<K: AsRef<str>, V: AsRef<str>>(
    n: usize,
    mut attributes: impl Iterator<Item = (K, V)>,
    max: usize,
) -> bool {
    n > max
        || attributes.any(|(k, v)| {
            k.as_ref().len() > MAX_ATTRIBUTE_KEY_BYTES
                || v.as_ref().len() > MAX_ATTRIBUTE_VALUE_BYTES
        })
}

/// [`bound_attributes`] of a span's sorted list: the first `max - 1` kept, as the map did.
fn bound_attribute_list(attributes: &mut Vec<Attribute<'_>>, max: usize, cut: &mut Truncations) {
    let total = attributes.len();
    if !over_bounds(total, attributes.iter().map(|(k, v)| (k, v)), max) {
        return;
    }
    attributes.truncate(max - 1);
    for (k, v) in attributes.iter_mut() {
        cut.values += u64::from(truncate_text(k, MAX_ATTRIBUTE_KEY_BYTES));
        cut.values += u64::from(truncate_text(v, MAX_ATTRIBUTE_VALUE_BYTES));
    }
    // Keys cut to the same text are one key, its last value kept, as in a map.
    sort_attributes(attributes);
    let dropped = total - attributes.len();
    if dropped > 0 {
        cut.attributes += dropped as u64;
        attributes.push((
            Cow::Borrowed(DROPPED_ATTRIBUTES_KEY),
            dropped.to_string().into(),
        ));
        sort_attributes(attributes);
    }
}

fn check_metric(
    i: usize,
    m: &mut MetricPoint,
    now_ns: i64,
    cut: &mut Truncations,
) -> Result<(), FieldError> {
    let f = |name: &str| format!("metrics[{i}].{name}");
    if m.minute_ns % 60_000_000_000 != 0 {
        return Err(reject(f("minute_ns"), "must be a multiple of 60 seconds"));
    }
    check_time(|| f("minute_ns"), m.minute_ns, now_ns)?;
    for (name, v) in [("service", &m.service), ("name", &m.name)] {
        if v.is_empty() {
            return Err(reject(f(name), "must not be empty"));
        }
    }
    check_enum::<MetricKind>(|| f("kind"), m.kind)?;
    if m.kind == MetricKind::Unspecified as i32 {
        return Err(reject(f("kind"), "must be specified"));
    }
    for (name, v) in [
        ("sum", m.sum),
        ("min", m.min),
        ("max", m.max),
        ("last", m.last),
    ] {
        if !v.is_finite() {
            return Err(reject(f(name), format!("must be a finite number, got {v}")));
        }
    }
    if m.bounds.len() > MAX_HISTOGRAM_BUCKETS {
        return Err(reject(
            f("bounds"),
            format!(
                "{} bounds exceed the limit of {MAX_HISTOGRAM_BUCKETS}",
                m.bounds.len()
            ),
        ));
    }
    if !m.buckets.is_empty() && m.buckets.len() != m.bounds.len() + 1 {
        return Err(reject(
            f("buckets"),
            format!(
                "{} buckets for {} bounds (want one more)",
                m.buckets.len(),
                m.bounds.len()
            ),
        ));
    }
    if m.bounds.iter().any(|b| !b.is_finite()) || m.bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err(reject(f("bounds"), "must be finite and increasing"));
    }
    for (name, v) in [
        ("service", &m.service),
        ("instance", &m.instance),
        ("name", &m.name),
        ("unit", &m.unit),
    ] {
        check_text(|| f(name), v)?;
    }
    for (k, v) in &m.attributes {
        check_text(|| f("attributes"), k)?;
        check_text(|| format!("metrics[{i}].attributes[{k:?}]"), v)?;
    }
    for v in [&mut m.service, &mut m.instance, &mut m.name, &mut m.unit] {
        cut.values += cut_label(v, MAX_LABEL_BYTES);
    }
    // Attributes name the series: values are cut to label length, not attribute length.
    if m.attributes.len() > MAX_METRIC_ATTRIBUTES
        || m.attributes
            .iter()
            .any(|(k, v)| k.len() > MAX_ATTRIBUTE_KEY_BYTES || v.len() > MAX_LABEL_BYTES)
    {
        let total = m.attributes.len();
        m.attributes = std::mem::take(&mut m.attributes)
            .into_iter()
            .take(MAX_METRIC_ATTRIBUTES)
            .map(|(mut k, mut v)| {
                cut.values += u64::from(truncate(&mut k, MAX_ATTRIBUTE_KEY_BYTES));
                cut.values += u64::from(truncate(&mut v, MAX_LABEL_BYTES));
                (k, v)
            })
            .collect();
        cut.attributes += (total - m.attributes.len()) as u64;
    }
    Ok(())
}

fn check_log(
    i: usize,
    l: &mut LogRecord,
    now_ns: i64,
    cut: &mut Truncations,
) -> Result<(), FieldError> {
    let f = |name: &str| format!("logs[{i}].{name}");
    check_time(|| f("time_ns"), l.time_ns, now_ns)?;
    if l.service.is_empty() {
        return Err(reject(f("service"), "must not be empty"));
    }
    if !(0..=24).contains(&l.severity_number) {
        return Err(reject(
            f("severity_number"),
            format!("{} is not an OTLP severity (0-24)", l.severity_number),
        ));
    }
    check_id(|| f("trace_id"), &l.trace_id, 16, true)?;
    check_id(|| f("span_id"), &l.span_id, 8, true)?;
    for (name, v) in [
        ("service", &l.service),
        ("instance", &l.instance),
        ("severity_text", &l.severity_text),
        ("body", &l.body),
    ] {
        check_text(|| f(name), v)?;
    }
    for (k, v) in &l.attributes {
        check_text(|| f("attributes"), k)?;
        check_text(|| format!("logs[{i}].attributes[{k:?}]"), v)?;
    }
    for v in [&mut l.service, &mut l.instance, &mut l.severity_text] {
        cut.values += cut_label(v, MAX_LABEL_BYTES);
    }
    cut.values += u64::from(truncate(&mut l.body, MAX_LOG_BODY_BYTES));
    bound_attributes(&mut l.attributes, MAX_LOG_ATTRIBUTES, cut);
    Ok(())
}

fn check_finite(field: impl FnOnce() -> String, v: f64) -> Result<(), FieldError> {
    if !v.is_finite() || v < 0.0 {
        return Err(reject(
            field(),
            format!("must be a finite, non-negative number, got {v}"),
        ));
    }
    Ok(())
}

/// Validates span `i` in place, cutting over-long text (then owned) and attributes.
fn check_span(
    i: usize,
    s: &mut SpanRef<'_>,
    now_ns: i64,
    cut: &mut Truncations,
) -> Result<(), FieldError> {
    let f = |name: &str| format!("spans[{i}].{name}");
    check_id(|| f("trace_id"), s.trace_id, 16, false)?;
    check_id(|| f("span_id"), s.span_id, 8, false)?;
    check_id(|| f("parent_span_id"), s.parent_span_id, 8, true)?;
    if s.service.is_empty() {
        return Err(reject(f("service"), "must not be empty"));
    }
    if s.operation.is_empty() {
        return Err(reject(f("operation"), "must not be empty"));
    }
    check_enum::<SpanKind>(|| f("kind"), s.kind)?;
    check_enum::<DependencyClass>(|| f("class"), s.class)?;
    check_enum::<SpanStatus>(|| f("status"), s.status)?;
    check_enum::<DbRole>(|| f("db_role"), s.db_role)?;
    check_enum::<KeepReason>(|| f("kept"), s.kept)?;
    for flag in &s.flags {
        check_enum::<SpanFlag>(|| f("flags"), *flag)?;
    }
    check_time(|| f("start_ns"), s.start_ns, now_ns)?;
    if s.duration_ns < 0 {
        return Err(reject(
            f("duration_ns"),
            format!("must not be negative, got {}", s.duration_ns),
        ));
    }
    if s.duration_ns > MAX_DURATION_NS {
        return Err(reject(
            f("duration_ns"),
            format!("{} ns exceeds the limit of one day", s.duration_ns),
        ));
    }
    if s.http_status > 999 {
        return Err(reject(
            f("http_status"),
            format!("{} is not an HTTP status", s.http_status),
        ));
    }
    if matches!(s.rows, Some(r) if r < 0) {
        return Err(reject(f("rows"), "must not be negative"));
    }
    for (name, v) in [
        ("service", &*s.service),
        ("instance", &*s.instance),
        ("operation", &*s.operation),
        ("peer", &*s.peer),
        ("db_system", &*s.db_system),
        ("statement", &*s.statement),
        ("status_message", &*s.status_message),
    ] {
        check_text(|| f(name), v)?;
    }
    for (k, v) in &s.attributes {
        check_text(|| f("attributes"), k)?;
        check_text(|| format!("spans[{i}].attributes[{k:?}]"), v)?;
    }
    for v in [
        &mut s.service,
        &mut s.instance,
        &mut s.operation,
        &mut s.peer,
        &mut s.db_system,
    ] {
        cut.values += u64::from(truncate_text(v, MAX_LABEL_BYTES));
    }
    cut.values += u64::from(truncate_text(&mut s.statement, MAX_STATEMENT_BYTES));
    cut.values += u64::from(truncate_text(&mut s.status_message, MAX_MESSAGE_BYTES));
    bound_attribute_list(&mut s.attributes, MAX_ATTRIBUTES, cut);
    Ok(())
}

/// Validates `batch` in place, truncating over-long values. `now_ns` is the receiver's clock.
pub fn check_batch(batch: &mut Batch, now_ns: i64) -> Result<Truncations, FieldError> {
    let mut cut = check_all_but_spans(batch, batch.spans.len(), now_ns)?;
    for (i, s) in batch.spans.iter_mut().enumerate() {
        let before = cut;
        let mut r = SpanRef::from(&*s);
        check_span(i, &mut r, now_ns, &mut cut)?;
        if cut != before {
            let owned = r.into_owned();
            *s = owned;
        }
    }
    Ok(cut)
}

/// [`check_batch`] of a batch whose spans are borrowed.
pub fn check_borrowed(b: &mut BorrowedBatch<'_>, now_ns: i64) -> Result<Truncations, FieldError> {
    let mut cut = check_all_but_spans(&mut b.batch, b.spans.len(), now_ns)?;
    for (i, s) in b.spans.iter_mut().enumerate() {
        check_span(i, s, now_ns, &mut cut)?;
    }
    Ok(cut)
}

/// [`check_batch`] but the spans, of which there are `spans`.
fn check_all_but_spans(
    batch: &mut Batch,
    spans: usize,
    now_ns: i64,
) -> Result<Truncations, FieldError> {
    let mut cut = Truncations::default();
    let label = |s: &mut String| cut_label(s, MAX_LABEL_BYTES);
    if batch.version != WIRE_VERSION {
        return Err(reject(
            "version",
            format!(
                "unsupported wire version {}, this collector reads {WIRE_VERSION}",
                batch.version
            ),
        ));
    }
    for (name, v) in [("agent_id", &batch.agent_id), ("instance", &batch.instance)] {
        if v.is_empty() {
            return Err(reject(name, "must not be empty"));
        }
        if v.len() > MAX_AGENT_ID_BYTES {
            return Err(reject(
                name,
                format!("longer than {MAX_AGENT_ID_BYTES} bytes"),
            ));
        }
        check_text(|| name.to_owned(), v)?;
    }
    check_count("spans", spans, MAX_SPANS_PER_BATCH)?;
    check_count(
        "aggregates",
        batch.aggregates.len(),
        MAX_AGGREGATES_PER_BATCH,
    )?;
    check_count(
        "entry_calls",
        batch.entry_calls.len(),
        MAX_AGGREGATES_PER_BATCH,
    )?;
    check_count("hosts", batch.hosts.len(), MAX_SAMPLES_PER_BATCH)?;
    check_count("probes", batch.probes.len(), MAX_SAMPLES_PER_BATCH)?;
    check_count("versions", batch.versions.len(), MAX_SAMPLES_PER_BATCH)?;
    check_count("metrics", batch.metrics.len(), MAX_METRIC_POINTS_PER_BATCH)?;
    check_count("logs", batch.logs.len(), MAX_LOGS_PER_BATCH)?;
    for (i, m) in batch.metrics.iter_mut().enumerate() {
        check_metric(i, m, now_ns, &mut cut)?;
    }
    for (i, l) in batch.logs.iter_mut().enumerate() {
        check_log(i, l, now_ns, &mut cut)?;
    }

    for (i, a) in batch.aggregates.iter_mut().enumerate() {
        let f = |name: &str| format!("aggregates[{i}].{name}");
        if a.minute % 60 != 0 {
            return Err(reject(f("minute"), "must be a multiple of 60 seconds"));
        }
        check_time(
            || f("minute"),
            a.minute.saturating_mul(1_000_000_000),
            now_ns,
        )?;
        if a.service.is_empty() {
            return Err(reject(f("service"), "must not be empty"));
        }
        check_enum::<DependencyClass>(|| f("class"), a.class)?;
        if a.errors > a.count {
            return Err(reject(f("errors"), "must not exceed count"));
        }
        for (name, v) in [
            ("service", &a.service),
            ("peer", &a.peer),
            ("operation", &a.operation),
            ("status_class", &a.status_class),
        ] {
            check_text(|| f(name), v)?;
        }
        let hist = a.histogram.get_or_insert_with(Default::default);
        hist.check().map_err(|m| reject(f("histogram"), m))?;
        if hist.count() != a.count {
            return Err(reject(
                f("histogram"),
                format!("holds {} values but count is {}", hist.count(), a.count),
            ));
        }
        for v in [
            &mut a.service,
            &mut a.peer,
            &mut a.operation,
            &mut a.status_class,
        ] {
            cut.values += label(v);
        }
    }

    for (i, e) in batch.entry_calls.iter_mut().enumerate() {
        let f = |name: &str| format!("entry_calls[{i}].{name}");
        if e.minute % 60 != 0 {
            return Err(reject(f("minute"), "must be a multiple of 60 seconds"));
        }
        check_time(
            || f("minute"),
            e.minute.saturating_mul(1_000_000_000),
            now_ns,
        )?;
        for (name, v) in [("service", &e.service), ("entry", &e.entry)] {
            if v.is_empty() {
                return Err(reject(f(name), "must not be empty"));
            }
        }
        check_enum::<DependencyClass>(|| f("class"), e.class)?;
        for (name, v) in [
            ("service", &e.service),
            ("entry", &e.entry),
            ("peer", &e.peer),
        ] {
            check_text(|| f(name), v)?;
        }
        for v in [&mut e.service, &mut e.entry, &mut e.peer] {
            cut.values += label(v);
        }
    }

    for (i, h) in batch.hosts.iter_mut().enumerate() {
        let f = |name: &str| format!("hosts[{i}].{name}");
        check_time(|| f("time_ns"), h.time_ns, now_ns)?;
        if h.host.is_empty() {
            return Err(reject(f("host"), "must not be empty"));
        }
        check_text(|| f("host"), &h.host)?;
        for (d, disk) in h.disks.iter().enumerate() {
            check_text(|| format!("hosts[{i}].disks[{d}].mount"), &disk.mount)?;
        }
        for (name, v) in [
            ("cpu_percent", h.cpu_percent),
            ("load1", h.load1),
            ("load5", h.load5),
            ("load15", h.load15),
        ] {
            check_finite(|| f(name), v)?;
        }
        if let Some(v) = h.app_cpu_percent {
            check_finite(|| f("app_cpu_percent"), v)?;
        }
        cut.values += label(&mut h.host);
        if h.disks.len() > 256 {
            cut.attributes += (h.disks.len() - 256) as u64;
            h.disks.truncate(256);
        }
        for d in &mut h.disks {
            cut.values += label(&mut d.mount);
        }
    }

    for (i, v) in batch.versions.iter_mut().enumerate() {
        let f = |name: &str| format!("versions[{i}].{name}");
        check_time(|| f("first_seen_ns"), v.first_seen_ns, now_ns)?;
        for (name, t) in [("service", &v.service), ("version", &v.version)] {
            if t.is_empty() {
                return Err(reject(f(name), "must not be empty"));
            }
        }
        for (name, t) in [
            ("service", &v.service),
            ("instance", &v.instance),
            ("version", &v.version),
            ("environment", &v.environment),
        ] {
            check_text(|| f(name), t)?;
        }
        for t in [
            &mut v.service,
            &mut v.instance,
            &mut v.version,
            &mut v.environment,
        ] {
            cut.values += label(t);
        }
    }

    for (i, p) in batch.probes.iter_mut().enumerate() {
        let f = |name: &str| format!("probes[{i}].{name}");
        check_time(|| f("time_ns"), p.time_ns, now_ns)?;
        if p.database.is_empty() {
            return Err(reject(f("database"), "must not be empty"));
        }
        check_enum::<DbRole>(|| f("role"), p.role)?;
        check_enum::<FailureClass>(|| f("failure"), p.failure)?;
        for (name, v) in [
            ("database", &p.database),
            ("engine", &p.engine),
            ("failure_message", &p.failure_message),
        ] {
            check_text(|| f(name), v)?;
        }
        for (k, v) in &p.detail {
            check_text(|| f("detail"), k)?;
            check_text(|| format!("probes[{i}].detail[{k:?}]"), v)?;
        }
        if let Some(v) = p.lag_seconds {
            check_finite(|| f("lag_seconds"), v)?;
        }
        for v in [&mut p.database, &mut p.engine] {
            cut.values += label(v);
        }
        cut.values += u64::from(truncate(&mut p.failure_message, MAX_MESSAGE_BYTES));
        if p.detail.len() > MAX_ATTRIBUTES {
            cut.attributes += (p.detail.len() - MAX_ATTRIBUTES) as u64;
            p.detail = std::mem::take(&mut p.detail)
                .into_iter()
                .take(MAX_ATTRIBUTES)
                .collect();
        }
        for v in p.detail.values_mut() {
            cut.values += u64::from(truncate(v, MAX_ATTRIBUTE_VALUE_BYTES));
        }
    }
    Ok(cut)
}

fn cut_label(s: &mut String, max: usize) -> u64 {
    u64::from(truncate(s, max))
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::span::Span;

    /// Statement, labels, attribute keys and values over their limits, too many attributes,
    /// keys that are one once cut: the owned check and the borrowed one cut alike.
    #[test]
    fn owned_and_borrowed_spans_are_cut_alike() {
        let long_key = |i: usize| format!("{}{i}", "k".repeat(MAX_ATTRIBUTE_KEY_BYTES));
        let mut over = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            service: "s".repeat(MAX_LABEL_BYTES + 5),
            operation: "op".into(),
            start_ns: 1_700_000_000_000_000_000,
            statement: "x".repeat(MAX_STATEMENT_BYTES + 1),
            status_message: "é".repeat(MAX_MESSAGE_BYTES),
            ..Default::default()
        };
        over.attributes.insert(long_key(1), "a".into());
        over.attributes.insert(long_key(2), "b".into());
        over.attributes
            .insert("v".into(), "w".repeat(MAX_ATTRIBUTE_VALUE_BYTES + 3));
        let mut many = over.clone();
        for i in 0..MAX_ATTRIBUTES + 10 {
            many.attributes.insert(format!("m{i:03}"), i.to_string());
        }
        let fits = Span {
            service: "fits".into(),
            statement: String::new(),
            status_message: String::new(),
            attributes: [("a".to_owned(), "b".to_owned())].into(),
            ..over.clone()
        };
        let mut batch = Batch {
            version: WIRE_VERSION,
            agent_id: "a".into(),
            instance: "i".into(),
            spans: vec![over, many, fits.clone()],
            ..Default::default()
        };
        let body = batch.encode_to_vec();
        let now = 1_700_000_000_000_000_000;
        let owned_cut = check_batch(&mut batch, now).unwrap();
        let mut borrowed = Batch::decode_borrowed(&body).unwrap();
        let borrowed_cut = check_borrowed(&mut borrowed, now).unwrap();
        assert_eq!(owned_cut, borrowed_cut);
        assert!(
            owned_cut.values >= 5 && owned_cut.attributes > 0,
            "{owned_cut:?}"
        );
        assert!(matches!(borrowed.spans[2].service, Cow::Borrowed(_)));
        let spans: Vec<Span> = borrowed
            .spans
            .into_iter()
            .map(SpanRef::into_owned)
            .collect();
        assert_eq!(spans, batch.spans);
        assert_eq!(spans[2], fits);
        // The two cut keys are one: one attribute counted dropped, as a map would.
        assert_eq!(spans[0].attributes.len(), 3);
        assert_eq!(spans[0].attributes[DROPPED_ATTRIBUTES_KEY], "1");
        // The first 63 kept, of which the two cut keys make one; then the dropped count.
        assert_eq!(spans[1].attributes.len(), MAX_ATTRIBUTES - 1);
        assert!(spans[1].attributes.contains_key(DROPPED_ATTRIBUTES_KEY));
    }
}

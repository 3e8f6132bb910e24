//! A zero-copy reader of OTLP/protobuf trace requests.
//!
//! Decoding an `ExportTraceServiceRequest` with prost allocates every attribute key and value
//! and every id, only for the agent to read a handful of them and drop the rest; profiling
//! showed allocation dominating the agent's CPU. This reader walks the protobuf wire format in
//! place and hands the classifier borrowed slices of the request body, so a span costs only the
//! allocations of what the agent keeps. It reads exactly the fields the classifier needs and
//! skips the rest by wire type, as protobuf requires of readers.
//!
//! The gRPC receiver still uses prost (tonic decodes before we see the message); both paths
//! end in [`crate::classify::classify`], so they cannot disagree on what a span means.

use stormwatch_model::wire::{self, utf8, Field, Reader};
use stormwatch_model::SpanKind;

use super::otlp::{kind_of, Converted};
use crate::attributes::Value;
use crate::classify::{classify, Incoming};
use crate::config::Config;

/// A body that is not a well-formed protobuf message.
#[derive(Debug, thiserror::Error)]
#[error("malformed OTLP protobuf: {0}")]
pub struct WireError(pub String);

impl From<wire::WireError> for WireError {
    fn from(e: wire::WireError) -> Self {
        WireError(e.0)
    }
}

fn err<T>(m: impl Into<String>) -> Result<T, WireError> {
    Err(WireError(m.into()))
}

/// A message whose bytes, framing included, are valid UTF-8 (true of nearly every attribute:
/// tags and one-byte lengths are ASCII). Every string field inside then starts after an ASCII
/// length byte and ends before an ASCII tag or at the end, so it is a valid `&str` sliced out
/// of the message: one validation per attribute instead of one per string.
#[derive(Clone, Copy)]
struct Valid<'a>(Option<&'a str>);

impl<'a> Valid<'a> {
    fn of(buf: &'a [u8]) -> Self {
        #[cfg(test)]
        tests::VALIDATED.with(|n| n.set(n.get() + buf.len()));
        Valid(std::str::from_utf8(buf).ok())
    }

    /// `b`, a slice of this message, as text; validated on its own when the message was not.
    fn str(self, b: &'a [u8], what: &str) -> Result<&'a str, WireError> {
        if let Some(whole) = self.0 {
            let start = (b.as_ptr() as usize).wrapping_sub(whole.as_ptr() as usize);
            if let Some(s) = start
                .checked_add(b.len())
                .and_then(|end| whole.get(start..end))
            {
                return Ok(s);
            }
        }
        Ok(utf8(b, what)?)
    }
}

fn expect_len<'a>(f: Field<'a>, what: &str) -> Result<&'a [u8], WireError> {
    match f {
        Field::Len(b) => Ok(b),
        _ => err(format!("{what} has the wrong wire type")),
    }
}

/// `AnyValue`: the classifier reads scalars only.
#[inline(always)]
fn any_value<'a>(buf: &'a [u8], valid: Valid<'a>) -> Result<Value<'a>, WireError> {
    let mut r = Reader::new(buf);
    let mut v = Value::Other;
    while let Some((n, f)) = r.next()? {
        v = match (n, f) {
            (1, Field::Len(b)) => Value::Str(valid.str(b, "string attribute")?),
            (2, Field::Varint(x)) => Value::Bool(x != 0),
            (3, Field::Varint(x)) => Value::Int(x as i64),
            (4, Field::Fixed64(x)) => Value::Double(f64::from_bits(x)),
            (5..=7, Field::Len(_)) => Value::Other,
            (1..=7, _) => return err("attribute value has the wrong wire type"),
            _ => v,
        };
    }
    Ok(v)
}

/// The span's attributes from `first` on that follow one another with one-byte lengths,
/// validated together: one UTF-8 check of a few hundred bytes instead of one per attribute
/// (each call of `str::from_utf8` on a short, unaligned message cost some hundred
/// instructions). `first` is a slice of `span`; the framing between attributes (tag 0x4A, a
/// length below 128) is ASCII, so every attribute inside is valid text when the run is.
///
/// Returns the run's bytes with the check's result. A run that is not valid text is still
/// returned, so that its attributes are checked one by one instead of each starting a new run
/// to the end of the span (quadratic in the number of attributes).
fn attribute_run<'a>(span: &'a [u8], first: &'a [u8]) -> (&'a [u8], Valid<'a>) {
    if !inside(span, first) {
        return (first, Valid::of(first));
    }
    let start = (first.as_ptr() as usize).wrapping_sub(span.as_ptr() as usize);
    let mut end = start + first.len();
    while let Some(&[0x4A, len]) = span.get(end..end + 2) {
        let next = end + 2 + usize::from(len);
        if len >= 0x80 || next > span.len() {
            break;
        }
        end = next;
    }
    let run = &span[start..end];
    (run, Valid::of(run))
}

/// Whether `inner` is a slice of `outer`.
fn inside(outer: &[u8], inner: &[u8]) -> bool {
    let start = (inner.as_ptr() as usize).wrapping_sub(outer.as_ptr() as usize);
    start <= outer.len() && inner.len() <= outer.len() - start
}

/// `KeyValue` → pushed onto `out`; `run`, when valid, is an [`attribute_run`] holding it.
#[inline(always)]
fn key_value<'a>(
    buf: &'a [u8],
    run: Valid<'a>,
    out: &mut Vec<(&'a str, Value<'a>)>,
) -> Result<(), WireError> {
    let valid = if run.0.is_some() { run } else { Valid::of(buf) };
    let mut r = Reader::new(buf);
    let mut key = "";
    let mut value = Value::Other;
    while let Some((n, f)) = r.next()? {
        match n {
            1 => key = valid.str(expect_len(f, "attribute key")?, "attribute key")?,
            2 => value = any_value(expect_len(f, "attribute value")?, valid)?,
            _ => {}
        }
    }
    out.push((key, value));
    Ok(())
}

/// Reads one OTLP/protobuf `ExportTraceServiceRequest` and classifies every span.
pub fn convert(body: &[u8], cfg: &Config) -> Result<Converted, WireError> {
    // A typical request carries tens to hundreds of spans; growing from zero costs copies.
    let mut out = Converted {
        spans: Vec::with_capacity(128),
        ..Converted::default()
    };
    let mut resource_attrs: Vec<(&str, Value<'_>)> = Vec::new();
    let mut span_attrs: Vec<(&str, Value<'_>)> = Vec::with_capacity(32);
    let mut scopes: Vec<&[u8]> = Vec::new();
    let mut top = Reader::new(body);
    let mut ri = 0usize;
    while let Some((n, f)) = top.next()? {
        if n != 1 {
            continue;
        }
        let rs = expect_len(f, "resourceSpans")?;
        resource_attrs.clear();
        scopes.clear();
        let mut r = Reader::new(rs);
        while let Some((n, f)) = r.next()? {
            match n {
                1 => {
                    let mut res = Reader::new(expect_len(f, "resource")?);
                    while let Some((n, f)) = res.next()? {
                        if n == 1 {
                            key_value(
                                expect_len(f, "resource attribute")?,
                                Valid(None),
                                &mut resource_attrs,
                            )?;
                        }
                    }
                }
                2 => scopes.push(expect_len(f, "scopeSpans")?),
                _ => {}
            }
        }
        let rstr = |k: &str| {
            resource_attrs
                .iter()
                .find(|(key, _)| *key == k)
                .and_then(|(_, v)| match v {
                    Value::Str(s) => Some(*s),
                    _ => None,
                })
        };
        let service = rstr("service.name").unwrap_or("");
        let instance = rstr("service.instance.id")
            .or_else(|| rstr("host.name"))
            .unwrap_or("");
        out.versions
            .extend(crate::versions::Seen::of(service, instance, |k| {
                rstr(k).map(str::to_owned)
            }));
        for (si, scope) in scopes.iter().enumerate() {
            let mut sr = Reader::new(scope);
            let mut pi = 0usize;
            while let Some((n, f)) = sr.next()? {
                if n != 2 {
                    continue;
                }
                let span = expect_len(f, "span")?;
                span_attrs.clear();
                let mut inc = Incoming {
                    trace_id: &[],
                    span_id: &[],
                    parent_span_id: &[],
                    name: "",
                    kind: SpanKind::Unspecified,
                    start_ns: 0,
                    end_ns: 0,
                    error: false,
                    status_message: "",
                    service,
                    instance,
                };
                let mut run: (&[u8], Valid<'_>) = (&[], Valid(None));
                let mut p = Reader::new(span);
                while let Some((n, f)) = p.next()? {
                    match (n, f) {
                        (1, Field::Len(b)) => inc.trace_id = b,
                        (2, Field::Len(b)) => inc.span_id = b,
                        (4, Field::Len(b)) => inc.parent_span_id = b,
                        (5, Field::Len(b)) => inc.name = utf8(b, "span name")?,
                        (6, Field::Varint(k)) => inc.kind = kind_of(k as i32),
                        (7, Field::Fixed64(t)) => inc.start_ns = t,
                        (8, Field::Fixed64(t)) => inc.end_ns = t,
                        (9, Field::Len(b)) => {
                            if !inside(run.0, b) {
                                run = attribute_run(span, b);
                            }
                            key_value(b, run.1, &mut span_attrs)?
                        }
                        (15, Field::Len(b)) => {
                            let mut st = Reader::new(b);
                            while let Some((n, f)) = st.next()? {
                                match (n, f) {
                                    (2, Field::Len(m)) => {
                                        inc.status_message = utf8(m, "status message")?
                                    }
                                    (3, Field::Varint(c)) => inc.error = c == 2,
                                    _ => {}
                                }
                            }
                        }
                        (1 | 2 | 4 | 5 | 6 | 7 | 8 | 9 | 15, _) => {
                            return err(format!("span field {n} has the wrong wire type"))
                        }
                        _ => {}
                    }
                }
                match classify(
                    &inc,
                    span_attrs.as_slice(),
                    &cfg.classify,
                    cfg.limits.max_attribute_value_bytes,
                ) {
                    Ok(s) => out.spans.push(s),
                    Err(reason) => {
                        out.rejected += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!(
                                "resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]: {reason}"
                            ));
                        }
                    }
                }
                pi += 1;
            }
        }
        ri += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
    use prost::Message;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..Default::default()
        }
    }

    fn request() -> ExportTraceServiceRequest {
        let now = 1_750_000_000_000_000_000u64;
        let span = |i: u8| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            parent_span_id: vec![9; 8],
            name: "q".into(),
            kind: 3,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 7_000_000,
            attributes: vec![
                kv(
                    "db.system",
                    any_value::Value::StringValue("postgresql".into()),
                ),
                kv(
                    "db.statement",
                    any_value::Value::StringValue("SELECT 1 FROM t WHERE a = 5".into()),
                ),
                kv("server.port", any_value::Value::IntValue(6432)),
                kv("server.address", any_value::Value::StringValue("pg".into())),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
                kv("flag", any_value::Value::BoolValue(true)),
            ],
            status: Some(Status {
                code: status::StatusCode::Error as i32,
                message: "bad".into(),
            }),
            trace_state: "x=y".into(),
            flags: 1,
            ..Default::default()
        };
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("svc".into())),
                        kv("host.name", any_value::Value::StringValue("h1".into())),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span(1), span(2), span(0)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn agrees_with_the_prost_path() {
        let req = request();
        let cfg = Config::default();
        let a = convert(&req.encode_to_vec(), &cfg).unwrap();
        let b = super::super::otlp::convert(&req, &cfg);
        assert_eq!(a.spans.len(), 2);
        assert_eq!(a.rejected, 1);
        assert_eq!(a.first_error, b.first_error);
        assert_eq!(a.spans, b.spans);
        let s = &a.spans[0].clone().into_span();
        assert_eq!(
            (s.service.as_str(), s.instance.as_str(), s.peer.as_str()),
            ("svc", "h1", "pg:6432")
        );
        assert_eq!(s.statement, "SELECT ? FROM t WHERE a = ?");
        assert!(s.is_error());
        assert_eq!(s.status_message, "bad");
    }

    #[test]
    fn attribute_text_is_validated_with_or_without_the_whole_message_check() {
        let cfg = Config::default();
        // A request whose first span carries `key = value`, as raw bytes: encoded with
        // placeholders of the same lengths (prost cannot build invalid UTF-8), then patched.
        let with = |key: &[u8], value: &[u8]| {
            let (pk, pv) = ("K".repeat(key.len()), "V".repeat(value.len()));
            let mut req = request();
            // Between two short attributes: validated in one run with them when short.
            req.resource_spans[0].scope_spans[0].spans[0].attributes = vec![
                kv("before", any_value::Value::StringValue("b".into())),
                kv(&pk, any_value::Value::StringValue(pv.clone())),
                kv("after", any_value::Value::StringValue("ä".into())),
            ];
            let mut body = req.encode_to_vec();
            for (placeholder, bytes) in [(pk.as_bytes(), key), (pv.as_bytes(), value)] {
                let at = body
                    .windows(placeholder.len())
                    .position(|w| w == placeholder)
                    .unwrap();
                body[at..at + bytes.len()].copy_from_slice(bytes);
            }
            convert(&body, &cfg)
        };
        // Multi-byte text, short and long (a two-byte length makes the attribute's message
        // itself invalid UTF-8, so the value is validated on its own).
        for value in ["grüße".to_string(), "é".repeat(100)] {
            let out = with(b"note", value.as_bytes()).unwrap();
            let span = out.spans[0].clone().into_span();
            assert_eq!(span.attributes.get("note"), Some(&value));
            assert_eq!(span.attributes.get("before").map(|s| s.as_str()), Some("b"));
            assert_eq!(span.attributes.get("after").map(|s| s.as_str()), Some("ä"));
        }
        let mut long_bad = [b'x'; 200];
        long_bad[150] = 0xc3;
        for (key, value) in [
            (&b"note"[..], &b"bad \xff byte"[..]),
            (b"note", &long_bad[..]),
            (b"k\xc3", b"v"),
        ] {
            let e = with(key, value).unwrap_err().to_string();
            assert!(e.contains("not valid UTF-8"), "{e}");
        }
    }

    thread_local! {
        /// Bytes given to `Valid::of` on this thread.
        pub(super) static VALIDATED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn an_invalid_attribute_does_not_make_validation_quadratic() {
        // 20,000 short attributes, the last not valid UTF-8: every attribute before it must
        // not start a new run to the end of the span.
        let mut req = request();
        let attrs = &mut req.resource_spans[0].scope_spans[0].spans[0].attributes;
        *attrs = (0..20_000)
            .map(|i| kv(&format!("k{i}"), any_value::Value::StringValue("v".into())))
            .collect();
        attrs.push(kv(
            "last",
            any_value::Value::StringValue("PLACEHOLDER".into()),
        ));
        let mut body = req.encode_to_vec();
        let at = body.windows(11).position(|w| w == b"PLACEHOLDER").unwrap();
        body[at] = 0xff;
        VALIDATED.with(|n| n.set(0));
        let e = convert(&body, &Config::default()).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8"), "{e}");
        let validated = VALIDATED.with(|n| n.get());
        assert!(
            validated <= 3 * body.len(),
            "{validated} bytes validated for a {}-byte request",
            body.len()
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let body = request().encode_to_vec();
        let cfg = Config::default();
        for cut in 0..body.len() {
            // Any prefix either parses (a cut on a field boundary) or fails cleanly.
            let _ = convert(&body[..cut], &cfg);
        }
        for garbage in [
            &[0xff_u8; 12][..],
            &[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
            &[0x03],
            &[0x0a, 0x02, 0x0a, 0x05],
        ] {
            assert!(convert(garbage, &cfg).is_err());
        }
    }
}

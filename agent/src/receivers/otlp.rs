//! OTLP trace requests (from protobuf, JSON or gRPC) to classified spans.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use stormwatch_model::SpanKind;

use crate::attributes::{Attributes, Value};
use crate::classify::{classify, Incoming};
use crate::config::Config;
use crate::received::Received;
use crate::signals::resource_identity;

impl Attributes for [KeyValue] {
    fn get(&self, key: &str) -> Option<Value<'_>> {
        self.iter().find(|kv| kv.key == key).map(value_of)
    }
    fn each(&self, f: &mut dyn FnMut(&str, Value<'_>)) {
        for kv in self {
            f(&kv.key, value_of(kv));
        }
    }
    fn nth(&self, i: usize) -> Option<Value<'_>> {
        self.get(i).map(value_of)
    }
}

fn value_of(kv: &KeyValue) -> Value<'_> {
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => Value::Str(s),
        Some(any_value::Value::IntValue(i)) => Value::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Value::Double(*d),
        Some(any_value::Value::BoolValue(b)) => Value::Bool(*b),
        _ => Value::Other,
    }
}

/// Spans converted from one request, and what was refused.
#[derive(Debug, Default)]
pub struct Converted {
    pub spans: Vec<Received>,
    pub rejected: usize,
    /// The first refusal's reason, with the span's position.
    pub first_error: Option<String>,
    /// The versions its resources run (`service.version`).
    pub versions: Vec<crate::versions::Seen>,
}

impl Converted {
    /// OTLP's `partial_success`, when something was refused.
    pub fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        (self.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: self.rejected as i64,
            error_message: self.first_error.clone().unwrap_or_default(),
        })
    }
}

pub(crate) fn kind_of(n: i32) -> SpanKind {
    match n {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

/// Converts every span of `req`.
pub fn convert(req: &ExportTraceServiceRequest, cfg: &Config) -> Converted {
    let mut out = Converted::default();
    let max_value = cfg.limits.max_attribute_value_bytes;
    for (ri, rs) in req.resource_spans.iter().enumerate() {
        let rattrs: &[KeyValue] = rs.resource.as_ref().map_or(&[], |r| &r.attributes);
        let (service, instance) = resource_identity(rattrs);
        out.versions.extend(crate::versions::Seen::of(
            service,
            instance,
            |k| match Attributes::get(rattrs, k) {
                Some(Value::Str(s)) if !s.is_empty() => Some(s.to_owned()),
                _ => None,
            },
        ));
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            out.spans.reserve(ss.spans.len());
            for (pi, s) in ss.spans.iter().enumerate() {
                let status = s.status.as_ref();
                let inc = Incoming {
                    trace_id: &s.trace_id,
                    span_id: &s.span_id,
                    parent_span_id: &s.parent_span_id,
                    name: &s.name,
                    kind: kind_of(s.kind),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    error: status.is_some_and(|st| st.code == StatusCode::Error as i32),
                    status_message: status.map_or("", |st| &st.message),
                    service,
                    instance,
                };
                match classify(&inc, s.attributes.as_slice(), &cfg.classify, max_value) {
                    Ok(span) => out.spans.push(span),
                    Err(reason) => {
                        out.rejected += 1;
                        if out.first_error.is_none() {
                            out.first_error = Some(format!(
                                "resourceSpans[{ri}].scopeSpans[{si}].spans[{pi}]: {reason}"
                            ));
                        }
                    }
                }
            }
        }
    }
    out
}

//! OTLP/JSON as the OTLP specification defines it, decoded into the protobuf types.
//!
//! Differences from the generic protobuf JSON mapping, per the spec: trace and span ids are
//! hex strings (not base64), enums are integers. We also accept what real exporters send in
//! practice: 64-bit integers as strings *or* numbers, enum names, lowerCamelCase or
//! snake_case field names, and unknown fields (ignored, as the spec requires).
//! Our own decoder rather than `opentelemetry-proto`'s `with-serde`: the rules above are the
//! whole point, and owning them keeps every malformed input a clear 400 instead of a surprise.

use std::fmt;

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JRequest {
    #[serde(alias = "resource_spans")]
    resource_spans: Vec<JResourceSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JResourceSpans {
    resource: Option<JResource>,
    #[serde(alias = "scope_spans", alias = "instrumentationLibrarySpans")]
    scope_spans: Vec<JScopeSpans>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JResource {
    attributes: Vec<JKeyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JScopeSpans {
    spans: Vec<JSpan>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JSpan {
    #[serde(alias = "trace_id", deserialize_with = "hex_id")]
    trace_id: Vec<u8>,
    #[serde(alias = "span_id", deserialize_with = "hex_id")]
    span_id: Vec<u8>,
    #[serde(alias = "parent_span_id", deserialize_with = "hex_id")]
    parent_span_id: Vec<u8>,
    name: String,
    #[serde(deserialize_with = "enum_int")]
    kind: i32,
    #[serde(alias = "start_time_unix_nano", deserialize_with = "int64")]
    start_time_unix_nano: i128,
    #[serde(alias = "end_time_unix_nano", deserialize_with = "int64")]
    end_time_unix_nano: i128,
    attributes: Vec<JKeyValue>,
    status: Option<JStatus>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JStatus {
    #[serde(deserialize_with = "enum_int")]
    code: i32,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JKeyValue {
    key: String,
    value: Option<JAnyValue>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct JAnyValue {
    #[serde(alias = "string_value")]
    string_value: Option<String>,
    #[serde(alias = "bool_value")]
    bool_value: Option<bool>,
    #[serde(alias = "int_value", deserialize_with = "opt_int64")]
    int_value: Option<i128>,
    #[serde(alias = "double_value", deserialize_with = "opt_double")]
    double_value: Option<f64>,
    #[serde(alias = "array_value")]
    array_value: Option<JArray>,
    #[serde(alias = "kvlist_value")]
    kvlist_value: Option<de::IgnoredAny>,
    #[serde(alias = "bytes_value")]
    bytes_value: Option<de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct JArray {
    values: Vec<JAnyValue>,
}

/// Hex ids; `""` and `null` are empty.
fn hex_id<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?.unwrap_or_default();
    stormwatch_model::hexid::decode(&s).ok_or_else(|| {
        de::Error::custom(format!(
            "id `{}` is not hex",
            s.chars().take(40).collect::<String>()
        ))
    })
}

/// A 64-bit integer as a JSON string or number (i128 so u64 and i64 both fit; range is
/// checked by the caller).
fn int64<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i128;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an integer or a string holding one")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i128, E> {
            Ok(v.into())
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<i128, E> {
            if v.fract() == 0.0 && v.abs() < 1.8e19 {
                Ok(v as i128)
            } else {
                Err(E::custom(format!("{v} is not an integer")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i128, E> {
            v.trim().parse().map_err(|_| {
                E::custom(format!(
                    "`{}` is not an integer",
                    v.chars().take(40).collect::<String>()
                ))
            })
        }
        fn visit_unit<E: de::Error>(self) -> Result<i128, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

fn opt_int64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i128>, D::Error> {
    int64(d).map(Some)
}

fn opt_double<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            match v {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                _ => v.parse().map_err(|_| E::custom("not a number")),
            }
        }
    }
    d.deserialize_any(V).map(Some)
}

/// An enum as its integer (the spec) or its name (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`).
fn enum_int<'de, D: Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    struct V;
    impl Visitor<'_> for V {
        type Value = i32;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an enum integer or name")
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom("enum value out of range"))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<i32, E> {
            i32::try_from(v).map_err(|_| E::custom("enum value out of range"))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<i32, E> {
            Ok(match v {
                "SPAN_KIND_INTERNAL" | "STATUS_CODE_OK" => 1,
                "SPAN_KIND_SERVER" | "STATUS_CODE_ERROR" => 2,
                "SPAN_KIND_CLIENT" => 3,
                "SPAN_KIND_PRODUCER" => 4,
                "SPAN_KIND_CONSUMER" => 5,
                "SPAN_KIND_UNSPECIFIED" | "STATUS_CODE_UNSET" => 0,
                other => {
                    return Err(E::custom(format!(
                        "unknown enum name `{}`",
                        other.chars().take(40).collect::<String>()
                    )))
                }
            })
        }
        fn visit_unit<E: de::Error>(self) -> Result<i32, E> {
            Ok(0)
        }
    }
    d.deserialize_any(V)
}

/// Why a JSON body was refused: serde's message with line and column.
#[derive(Debug, thiserror::Error)]
#[error("malformed OTLP/JSON: {0}")]
pub struct JsonError(String);

/// Parses an OTLP/JSON `ExportTraceServiceRequest`.
pub fn decode(body: &[u8]) -> Result<ExportTraceServiceRequest, JsonError> {
    let req: JRequest = serde_json::from_slice(body).map_err(|e| JsonError(e.to_string()))?;
    let mut out = ExportTraceServiceRequest {
        resource_spans: Vec::with_capacity(req.resource_spans.len()),
    };
    for rs in req.resource_spans {
        let mut scope_spans = Vec::with_capacity(rs.scope_spans.len());
        for ss in rs.scope_spans {
            let mut spans = Vec::with_capacity(ss.spans.len());
            for s in ss.spans {
                let time = |v: i128, name: &str| {
                    u64::try_from(v).map_err(|_| JsonError(format!("{name} {v} is out of range")))
                };
                spans.push(Span {
                    trace_id: s.trace_id,
                    span_id: s.span_id,
                    parent_span_id: s.parent_span_id,
                    name: s.name,
                    kind: s.kind,
                    start_time_unix_nano: time(s.start_time_unix_nano, "startTimeUnixNano")?,
                    end_time_unix_nano: time(s.end_time_unix_nano, "endTimeUnixNano")?,
                    attributes: convert_attrs(s.attributes),
                    status: s.status.map(|st| Status {
                        code: st.code,
                        message: st.message,
                    }),
                    ..Default::default()
                });
            }
            scope_spans.push(ScopeSpans {
                spans,
                ..Default::default()
            });
        }
        resource_spans_push(&mut out, rs.resource, scope_spans);
    }
    Ok(out)
}

fn resource_spans_push(
    out: &mut ExportTraceServiceRequest,
    resource: Option<JResource>,
    scope_spans: Vec<ScopeSpans>,
) {
    out.resource_spans.push(ResourceSpans {
        resource: resource.map(|r| Resource {
            attributes: convert_attrs(r.attributes),
            ..Default::default()
        }),
        scope_spans,
        ..Default::default()
    });
}

fn convert_attrs(attrs: Vec<JKeyValue>) -> Vec<KeyValue> {
    attrs
        .into_iter()
        .map(|kv| KeyValue {
            key: kv.key,
            value: kv.value.map(convert_value),
            ..Default::default()
        })
        .collect()
}

fn convert_value(v: JAnyValue) -> AnyValue {
    let value = if let Some(s) = v.string_value {
        any_value::Value::StringValue(s)
    } else if let Some(b) = v.bool_value {
        any_value::Value::BoolValue(b)
    } else if let Some(i) = v.int_value {
        any_value::Value::IntValue(i64::try_from(i).unwrap_or(if i < 0 {
            i64::MIN
        } else {
            i64::MAX
        }))
    } else if let Some(d) = v.double_value {
        any_value::Value::DoubleValue(d)
    } else if let Some(a) = v.array_value {
        any_value::Value::ArrayValue(ArrayValue {
            values: a.values.into_iter().map(convert_value).collect(),
        })
    } else if v.kvlist_value.is_some() || v.bytes_value.is_some() {
        any_value::Value::ArrayValue(ArrayValue::default())
    } else {
        return AnyValue { value: None };
    };
    AnyValue { value: Some(value) }
}

/// `ExportTraceServiceResponse` in OTLP/JSON (int64 as a string, as the spec's mapping says).
pub fn encode_response(resp: &ExportTraceServiceResponse) -> Vec<u8> {
    let body = match &resp.partial_success {
        Some(ExportTracePartialSuccess {
            rejected_spans,
            error_message,
        }) => serde_json::json!({
            "partialSuccess": { "rejectedSpans": rejected_spans.to_string(), "errorMessage": error_message }
        }),
        None => serde_json::json!({}),
    };
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_spec_example_shape() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","parentSpanId":"EEE19B7EC3C1B173",
            "name":"I'm a server span","startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
            "kind":2,"attributes":[{"key":"my.span.attr","value":{"intValue":"42"}},{"key":"d","value":{"doubleValue":1.5}},
            {"key":"arr","value":{"arrayValue":{"values":[{"stringValue":"x"}]}}}],"status":{"code":2,"message":"boom"},
            "someFutureField":{"a":1}}]}]}]}"#;
        let r = decode(body).unwrap();
        let s = &r.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.trace_id[0], 0x5b);
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(s.kind, 2);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(
            s.attributes[0].value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(42))
        );
    }

    #[test]
    fn refuses_malformed_input_with_a_reason() {
        for (body, needle) in [
            (
                &br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#[..],
                "not hex",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"soon"}]}]}]}"#,
                "not an integer",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-5"}]}]}]}"#,
                "out of range",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_WEIRD"}]}]}]}"#,
                "unknown enum",
            ),
            (br#"{"resourceSpans": 3}"#, "line 1"),
            (b"not json", "line 1"),
        ] {
            let e = decode(body).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn response_uses_string_int64() {
        let r = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 3,
                error_message: "bad".into(),
            }),
        };
        assert_eq!(
            String::from_utf8(encode_response(&r)).unwrap(),
            r#"{"partialSuccess":{"errorMessage":"bad","rejectedSpans":"3"}}"#
        );
    }
}

//! Zipkin v2 JSON: `POST /api/v2/spans` with an array of spans, as Zipkin's API defines it.
//!
//! Zipkin's tags and endpoints are mapped onto the OpenTelemetry attribute names the classifier
//! reads (`remoteEndpoint` → `server.address` / `server.port`, a database `remoteServiceName`
//! → `db.system`, the `error` tag → failed), so one classifier serves both protocols.
//! Answers: 202 (Zipkin's own), 400 with a plain-text reason, 429 with `Retry-After`.

use std::borrow::Cow;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;
use stormwatch_model::SpanKind;

use super::decompress;
use super::otlp_http::{ReceiverState, RETRY_AFTER_S};
use crate::attributes::Value;
use crate::classify::{classify, Incoming};
use crate::config::Config;
use crate::metrics::Receiver;
use crate::received::Received;

// Borrowed from the request body where JSON allows (no escapes): a Zipkin span then costs
// no allocation until classification.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ZSpan<'a> {
    #[serde(borrow)]
    trace_id: Cow<'a, str>,
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    parent_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    kind: Option<Cow<'a, str>>,
    /// Microseconds since the epoch.
    timestamp: Option<u64>,
    /// Microseconds.
    duration: Option<u64>,
    #[serde(borrow)]
    local_endpoint: Option<Endpoint<'a>>,
    #[serde(borrow)]
    remote_endpoint: Option<Endpoint<'a>>,
    #[serde(borrow, deserialize_with = "tags_of")]
    tags: Vec<(Cow<'a, str>, TagValue<'a>)>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Endpoint<'a> {
    #[serde(borrow)]
    service_name: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ipv4: Option<Cow<'a, str>>,
    #[serde(borrow)]
    ipv6: Option<Cow<'a, str>>,
    port: Option<u16>,
}

/// A tag value: Zipkin says string; numbers and booleans from lenient clients are accepted
/// as their text.
#[derive(Default)]
struct TagValue<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for TagValue<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TagValue<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string tag value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(TagValue(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_any(V)
    }
}

/// Zipkin tags are a JSON object; read as pairs in document order.
fn tags_of<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<(Cow<'de, str>, TagValue<'de>)>, D::Error> {
    struct V;
    impl<'de> serde::de::Visitor<'de> for V {
        type Value = Vec<(Cow<'de, str>, TagValue<'de>)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object of tags")
        }
        fn visit_map<M: serde::de::MapAccess<'de>>(
            self,
            mut m: M,
        ) -> Result<Self::Value, M::Error> {
            let mut out = Vec::with_capacity(m.size_hint().unwrap_or(8).min(64));
            while let Some((k, v)) = m.next_entry::<Cow<'de, str>, TagValue<'de>>()? {
                out.push((k, v));
            }
            Ok(out)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    d.deserialize_any(V)
}

/// Hex into a fixed buffer; the number of bytes, or `None` for bad hex or too long.
fn hex_into(text: &str, out: &mut [u8]) -> Option<usize> {
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) || raw.len() / 2 > out.len() {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    for (i, p) in raw.chunks_exact(2).enumerate() {
        out[i] = (nibble(p[0])? << 4) | nibble(p[1])?;
    }
    Some(raw.len() / 2)
}

/// The router: `POST /api/v2/spans`.
pub fn router(state: ReceiverState) -> Router {
    Router::new()
        .route("/api/v2/spans", post(spans))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn text(status: StatusCode, msg: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Remote service names that mean "a database of this system".
fn db_system_of(remote_service: &str) -> Option<&'static str> {
    Some(match remote_service.to_ascii_lowercase().as_str() {
        "redis" => "redis",
        "mysql" | "mariadb" => "mysql",
        "postgres" | "postgresql" => "postgresql",
        "mongodb" | "mongo" => "mongodb",
        "cassandra" => "cassandra",
        "elasticsearch" => "elasticsearch",
        "sqlserver" | "mssql" => "mssql",
        "oracle" => "oracle",
        _ => return None,
    })
}

/// Converts decoded Zipkin spans; returns (spans, rejected, first error).
fn convert(zs: &[ZSpan<'_>], cfg: &Config) -> (Vec<Received>, usize, Option<String>) {
    let mut out = Vec::with_capacity(zs.len());
    let mut rejected = 0;
    let mut first = None;
    let mut attrs: Vec<(&str, Value<'_>)> = Vec::with_capacity(32);
    for (i, z) in zs.iter().enumerate() {
        attrs.clear();
        let result = (|| -> Result<Received, String> {
            // 64-bit Zipkin trace ids are the low half of a 128-bit id: right-align.
            let mut buf = [0u8; 16];
            let n = hex_into(&z.trace_id, &mut buf).ok_or("traceId is not 16 or 32 hex digits")?;
            let mut trace_id = [0u8; 16];
            trace_id[16 - n..].copy_from_slice(&buf[..n]);
            let trace_id = if n == 8 || n == 16 {
                &trace_id[..]
            } else {
                &buf[..n]
            };
            let mut span_id = [0u8; 8];
            let sn = hex_into(&z.id, &mut span_id).ok_or("id is not 16 hex digits")?;
            let mut parent = [0u8; 8];
            let pn = match &z.parent_id {
                Some(p) => hex_into(p, &mut parent).ok_or("parentId is not 16 hex digits")?,
                None => 0,
            };
            let start_us = z.timestamp.ok_or("timestamp is missing")?;
            let start_ns = start_us.checked_mul(1000).ok_or("timestamp out of range")?;
            let dur_ns = z
                .duration
                .unwrap_or(0)
                .checked_mul(1000)
                .ok_or("duration out of range")?;
            let kind = match z.kind.as_deref() {
                Some("SERVER") => SpanKind::Server,
                Some("CLIENT") => SpanKind::Client,
                Some("PRODUCER") => SpanKind::Producer,
                Some("CONSUMER") => SpanKind::Consumer,
                None => SpanKind::Unspecified,
                Some(other) => {
                    return Err(format!(
                        "kind `{other}` must be CLIENT, SERVER, PRODUCER or CONSUMER"
                    ))
                }
            };
            let mut error = None;
            for (k, v) in &z.tags {
                if k == "error" {
                    error = Some(v.0.as_ref());
                    continue;
                }
                attrs.push((k.as_ref(), Value::Str(v.0.as_ref())));
            }
            let has = |attrs: &[(&str, Value<'_>)], k: &str| attrs.iter().any(|(x, _)| *x == k);
            if let Some(r) = &z.remote_endpoint {
                if let Some(sys) = r.service_name.as_deref().and_then(db_system_of) {
                    if !has(&attrs, "db.system") && kind != SpanKind::Server {
                        attrs.push(("db.system", Value::Str(sys)));
                    }
                }
                let host = r
                    .ipv4
                    .as_deref()
                    .or(r.ipv6.as_deref())
                    .or(r.service_name.as_deref());
                if let (Some(h), false) = (host, has(&attrs, "server.address")) {
                    attrs.push(("server.address", Value::Str(h)));
                }
                if let (Some(p), false) = (r.port, has(&attrs, "server.port")) {
                    attrs.push(("server.port", Value::Int(i64::from(p))));
                }
            }
            let local = z.local_endpoint.as_ref();
            let inc = Incoming {
                trace_id,
                span_id: &span_id[..sn],
                parent_span_id: &parent[..pn],
                name: z.name.as_deref().unwrap_or(""),
                kind,
                start_ns,
                end_ns: start_ns.saturating_add(dur_ns),
                error: error.is_some(),
                status_message: error.unwrap_or(""),
                service: local.and_then(|l| l.service_name.as_deref()).unwrap_or(""),
                instance: local.and_then(|l| l.ipv4.as_deref()).unwrap_or(""),
            };
            classify(
                &inc,
                attrs.as_slice(),
                &cfg.classify,
                cfg.limits.max_attribute_value_bytes,
            )
        })();
        match result {
            Ok(s) => out.push(s),
            Err(e) => {
                rejected += 1;
                first.get_or_insert_with(|| format!("spans[{i}]: {e}"));
            }
        }
    }
    (out, rejected, first)
}

async fn spans(State(st): State<ReceiverState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = st.config.borrow().clone();
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" {
        return text(StatusCode::BAD_REQUEST, format!("unsupported Content-Type `{ct}`: this receiver takes Zipkin v2 JSON (application/json)"));
    }
    let raw = match super::read_body(&headers, body, cfg.limits.max_request_bytes).await {
        Ok(b) => b,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let data = match decompress(encoding, raw, cfg.limits.max_decompressed_bytes) {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let zs: Vec<ZSpan<'_>> = match serde_json::from_slice(&data) {
        Ok(z) => z,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed Zipkin v2 JSON: {e}"),
            )
        }
    };
    let (spans, rejected, first) = convert(&zs, &cfg);
    drop(zs);
    st.ingest.reject(Receiver::Zipkin, rejected);
    if spans.is_empty() && rejected > 0 {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "all {rejected} spans refused; first: {}",
                first.unwrap_or_default()
            ),
        );
    }
    if let Err(full) = st.ingest.submit(Receiver::Zipkin, spans) {
        let mut r = text(StatusCode::TOO_MANY_REQUESTS, full.to_string());
        r.headers_mut()
            .insert(header::RETRY_AFTER, RETRY_AFTER_S.into());
        return r;
    }
    StatusCode::ACCEPTED.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> (Vec<Received>, usize, Option<String>) {
        let zs: Vec<ZSpan<'_>> = serde_json::from_str(body).unwrap();
        convert(&zs, &Config::default())
    }

    #[test]
    fn ids_tags_and_errors() {
        let (spans, rejected, first) = parse(
            r#"[{"traceId":"463ac35c9f6413ad48485a3953bb6124","id":"a2fb4a1d1a96d312","timestamp":1700000000000000,"duration":5000,
                "kind":"CLIENT","localEndpoint":{"serviceName":"svc"},"remoteEndpoint":{"serviceName":"postgres","ipv6":"::1","port":5432},
                "tags":{"sql.query":"select \"x\" from t where a = 'q\u00e9'","rows":3,"cached":true,"error":"boom"}},
               {"traceId":"463ac35c9f6413ad","id":"b2fb4a1d1a96d312","timestamp":1700000000000000,"kind":"SIDEWAYS"},
               {"traceId":"zz","id":"b2fb4a1d1a96d312","timestamp":1700000000000000},
               {"traceId":"463ac35c9f6413ad","id":"c2fb4a1d1a96d312"}]"#,
        );
        assert_eq!(spans.len(), 1);
        assert_eq!(rejected, 3);
        assert!(first.unwrap().contains("spans[1]: kind `SIDEWAYS`"));
        let s = spans[0].clone().into_span();
        assert_eq!(s.trace_id[0], 0x46);
        assert_eq!(
            (s.db_system.as_str(), s.peer.as_str()),
            ("postgresql", "[::1]:5432")
        );
        assert_eq!(s.statement, "select \"x\" from t where a = ?");
        assert!(s.is_error());
        assert_eq!(s.status_message, "boom");
        assert_eq!(s.attributes["rows"], "3");
        assert_eq!(s.attributes["cached"], "true");
        assert!(!s.attributes.contains_key("sql.query"));
    }
}

//! The load: OTLP and Zipkin request bodies of a realistic span mix, and raw HTTP/1.1
//! requests around them.

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
pub(crate) fn otlp_request(
    rng: &mut Rng,
    spans_per_request: usize,
    parameterized: bool,
) -> ExportTraceServiceRequest {
    let now = now_ns();
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

pub(crate) fn zipkin_request(rng: &mut Rng, n: usize) -> Vec<u8> {
    let now_us = now_ns() / 1000;
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

/// `POST path` requests with these bodies, as bytes on the wire.
pub(crate) fn raw_requests(
    path: &str,
    content_type: &str,
    bodies: &[bytes::Bytes],
) -> Vec<bytes::Bytes> {
    bodies
        .iter()
        .map(|b| {
            let mut r = format!(
                "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            r.extend_from_slice(b);
            r.into()
        })
        .collect()
}

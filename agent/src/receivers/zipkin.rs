//! Zipkin v2 JSON: `POST /api/v2/spans` with an array of spans, as Zipkin's API defines it.
//!
//! Zipkin's tags and endpoints are mapped onto the OpenTelemetry attribute names the classifier
//! reads (`remoteEndpoint` → `server.address` / `server.port`, a database `remoteServiceName`
//! → `db.system`, the `error` tag → failed), so one classifier serves both protocols.
//! Answers: 202 (Zipkin's own), 400 with a plain-text reason, 429 with `Retry-After`.

use std::collections::BTreeMap;

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
use crate::classify::{classify, Incoming, Received};
use crate::config::Config;
use crate::metrics::Receiver;

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct ZSpan {
    trace_id: String,
    id: String,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    /// Microseconds since the epoch.
    timestamp: Option<u64>,
    /// Microseconds.
    duration: Option<u64>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    tags: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
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
fn convert(zs: Vec<ZSpan>, cfg: &Config) -> (Vec<Received>, usize, Option<String>) {
    let mut out = Vec::with_capacity(zs.len());
    let mut rejected = 0;
    let mut first = None;
    let mut attrs: Vec<(String, String)> = Vec::new();
    for (i, z) in zs.into_iter().enumerate() {
        let result = (|| -> Result<Received, String> {
            let mut trace_id = stormwatch_model::hexid::decode(&z.trace_id)
                .ok_or_else(|| "traceId is not hex".to_owned())?;
            // 64-bit Zipkin trace ids are the low half of a 128-bit id.
            if trace_id.len() == 8 {
                let mut full = vec![0; 8];
                full.extend_from_slice(&trace_id);
                trace_id = full;
            }
            let span_id =
                stormwatch_model::hexid::decode(&z.id).ok_or_else(|| "id is not hex".to_owned())?;
            let parent = match &z.parent_id {
                Some(p) => stormwatch_model::hexid::decode(p)
                    .ok_or_else(|| "parentId is not hex".to_owned())?,
                None => Vec::new(),
            };
            let start_us = z
                .timestamp
                .ok_or_else(|| "timestamp is missing".to_owned())?;
            let start_ns = start_us
                .checked_mul(1000)
                .ok_or_else(|| "timestamp out of range".to_owned())?;
            let dur_ns = z
                .duration
                .unwrap_or(0)
                .checked_mul(1000)
                .ok_or_else(|| "duration out of range".to_owned())?;
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
            attrs.clear();
            let mut error = None;
            for (k, v) in &z.tags {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if k == "error" {
                    error = Some(v);
                    continue;
                }
                attrs.push((k.clone(), v));
            }
            let has = |attrs: &[(String, String)], k: &str| attrs.iter().any(|(x, _)| x == k);
            if let Some(r) = &z.remote_endpoint {
                if let Some(sys) = r.service_name.as_deref().and_then(db_system_of) {
                    if !has(&attrs, "db.system") && kind != SpanKind::Server {
                        attrs.push(("db.system".into(), sys.into()));
                    }
                }
                let host = r
                    .ipv4
                    .clone()
                    .or_else(|| r.ipv6.clone())
                    .or_else(|| r.service_name.clone());
                if let (Some(h), false) = (host, has(&attrs, "server.address")) {
                    attrs.push(("server.address".into(), h));
                }
                if let (Some(p), false) = (r.port, has(&attrs, "server.port")) {
                    attrs.push(("server.port".into(), p.to_string()));
                }
            }
            let service = z
                .local_endpoint
                .as_ref()
                .and_then(|l| l.service_name.as_deref())
                .unwrap_or("");
            let inc = Incoming {
                trace_id: &trace_id,
                span_id: &span_id,
                parent_span_id: &parent,
                name: z.name.as_deref().unwrap_or(""),
                kind,
                start_ns,
                end_ns: start_ns.saturating_add(dur_ns),
                error: error.is_some(),
                status_message: error.as_deref().unwrap_or(""),
                service,
                instance: z
                    .local_endpoint
                    .as_ref()
                    .and_then(|l| l.ipv4.as_deref())
                    .unwrap_or(""),
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
    let raw = match axum::body::to_bytes(body, cfg.limits.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "request body larger than {} bytes",
                    cfg.limits.max_request_bytes
                ),
            )
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let data = match decompress(encoding, raw, cfg.limits.max_decompressed_bytes) {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let zs: Vec<ZSpan> = match serde_json::from_slice(&data) {
        Ok(z) => z,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("malformed Zipkin v2 JSON: {e}"),
            )
        }
    };
    let (spans, rejected, first) = convert(zs, &cfg);
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

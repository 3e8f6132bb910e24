//! OTLP/HTTP: `POST /v1/traces`, `/v1/metrics` and `/v1/logs`, protobuf or JSON, gzip or plain.
//!
//! Answers per the OTLP/HTTP spec: 200 with the signal's `Export…ServiceResponse` (carrying
//! `partial_success` when some items were refused) in the request's encoding; 400 with a
//! `google.rpc.Status` for a request that cannot be used at all; 429 with `Retry-After` and a
//! `RetryInfo` detail when the agent's queue is full.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::watch;

use super::otlp_signals::{self, Refusal};
use super::{decompress, otlp, otlp_json, otlp_wire, rpc};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Receiver;

/// Seconds a throttled client is told to wait.
pub const RETRY_AFTER_S: i64 = 1;

/// Shared by the HTTP receivers.
#[derive(Clone)]
pub struct ReceiverState {
    pub ingest: Ingest,
    pub config: watch::Receiver<Arc<Config>>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    Proto,
    Json,
}

impl Wire {
    fn content_type(self) -> &'static str {
        match self {
            Wire::Proto => "application/x-protobuf",
            Wire::Json => "application/json",
        }
    }
}

/// The router: `POST /v1/traces`, `/v1/metrics`, `/v1/logs`.
pub fn router(state: ReceiverState) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        // The body is read with our own limit, so the answer is in the protocol's error form.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

fn status_body(
    wire: Wire,
    http: StatusCode,
    code: i32,
    message: String,
    retry_after: Option<i64>,
) -> Response {
    let st = rpc::status(code, message, retry_after);
    let body = match wire {
        Wire::Proto => st.encode_to_vec(),
        Wire::Json => {
            let mut v = serde_json::json!({ "code": st.code, "message": st.message });
            if let Some(s) = retry_after {
                v["details"] = serde_json::json!([{ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{s}s") }]);
            }
            v.to_string().into_bytes()
        }
    };
    let mut resp = (http, [(header::CONTENT_TYPE, wire.content_type())], body).into_response();
    if let Some(s) = retry_after {
        resp.headers_mut().insert(header::RETRY_AFTER, s.into());
    }
    resp
}

fn bad_request(wire: Wire, message: String) -> Response {
    tracing::debug!(message, "OTLP/HTTP request refused");
    status_body(
        wire,
        StatusCode::BAD_REQUEST,
        rpc::INVALID_ARGUMENT,
        message,
        None,
    )
}

/// A request's encoding and its decompressed body, or the answer refusing it.
async fn read_request(
    cfg: &Config,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Wire, Bytes), Response> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let wire = match mime.as_str() {
        "application/x-protobuf" | "application/protobuf" => Wire::Proto,
        "application/json" => Wire::Json,
        _ => {
            return Err(bad_request(Wire::Json, format!("unsupported Content-Type `{ct}`: use application/x-protobuf or application/json")));
        }
    };
    let raw: Bytes = super::read_body(headers, body, cfg.limits.max_request_bytes)
        .await
        .map_err(|message| bad_request(wire, message))?;
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let data = decompress(encoding, raw, cfg.limits.max_decompressed_bytes)
        .map_err(|e| bad_request(wire, e.to_string()))?;
    Ok((wire, data))
}

fn ok_body(wire: Wire, body: Vec<u8>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, wire.content_type())],
        body,
    )
        .into_response()
}

fn throttled(wire: Wire, message: String) -> Response {
    status_body(
        wire,
        StatusCode::TOO_MANY_REQUESTS,
        rpc::RESOURCE_EXHAUSTED,
        message,
        Some(RETRY_AFTER_S),
    )
}

fn refused(wire: Wire, r: Refusal) -> Response {
    match r {
        Refusal::Invalid(m) => bad_request(wire, m),
        Refusal::Full(m) => throttled(wire, m),
    }
}

/// Decodes a metrics or logs request: prost, or the OTLP/JSON mapping.
fn decode<T: Message + Default + serde::de::DeserializeOwned>(
    wire: Wire,
    data: &[u8],
) -> Result<T, String> {
    match wire {
        Wire::Proto => T::decode(data).map_err(|e| format!("malformed protobuf: {e}")),
        Wire::Json => serde_json::from_slice(data).map_err(|e| format!("malformed OTLP/JSON: {e}")),
    }
}

fn encode<T: Message + serde::Serialize>(wire: Wire, resp: &T) -> Vec<u8> {
    match wire {
        Wire::Proto => resp.encode_to_vec(),
        Wire::Json => serde_json::to_vec(resp).unwrap_or_default(),
    }
}

async fn metrics(State(st): State<ReceiverState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = st.config.borrow().clone();
    let (wire, data) = match read_request(&cfg, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let req: ExportMetricsServiceRequest = match decode(wire, &data) {
        Ok(r) => r,
        Err(e) => return bad_request(wire, e),
    };
    match otlp_signals::export_metrics(&st.ingest, &cfg, &req) {
        Ok(resp) => ok_body(wire, encode(wire, &resp)),
        Err(r) => refused(wire, r),
    }
}

async fn logs(State(st): State<ReceiverState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = st.config.borrow().clone();
    let (wire, data) = match read_request(&cfg, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let req: ExportLogsServiceRequest = match decode(wire, &data) {
        Ok(r) => r,
        Err(e) => return bad_request(wire, e),
    };
    match otlp_signals::export_logs(&st.ingest, &req) {
        Ok(resp) => ok_body(wire, encode(wire, &resp)),
        Err(r) => refused(wire, r),
    }
}

async fn traces(State(st): State<ReceiverState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = st.config.borrow().clone();
    let (wire, data) = match read_request(&cfg, &headers, body).await {
        Ok(r) => r,
        Err(resp) => return resp,
    };
    let converted = match wire {
        Wire::Proto => otlp_wire::convert(&data, &cfg).map_err(|e| e.to_string()),
        Wire::Json => otlp_json::decode(&data)
            .map(|req| otlp::convert(&req, &cfg))
            .map_err(|e| e.to_string()),
    };
    let converted = match converted {
        Ok(c) => c,
        Err(e) => return bad_request(wire, e),
    };
    drop(data);
    st.ingest.reject(Receiver::OtlpHttp, converted.rejected);
    if converted.spans.is_empty() && converted.rejected > 0 {
        return bad_request(
            wire,
            format!(
                "all {} spans refused; first: {}",
                converted.rejected,
                converted.first_error.unwrap_or_default()
            ),
        );
    }
    let partial = converted.partial_success();
    st.ingest.versions.observe(&converted.versions);
    if let Err(full) = st.ingest.submit(Receiver::OtlpHttp, converted.spans) {
        return throttled(wire, full.to_string());
    }
    let resp = ExportTraceServiceResponse {
        partial_success: partial,
    };
    let body = match wire {
        Wire::Proto => resp.encode_to_vec(),
        Wire::Json => otlp_json::encode_response(&resp),
    };
    ok_body(wire, body)
}

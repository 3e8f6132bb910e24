//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, gzip or plain.
//!
//! Answers per the OTLP/HTTP spec: 200 with `ExportTraceServiceResponse` (carrying
//! `partial_success` when some spans were refused) in the request's encoding; 400 with a
//! `google.rpc.Status` for a request that cannot be used at all; 429 with `Retry-After` and a
//! `RetryInfo` detail when the agent's queue is full.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::watch;

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

/// The router: `POST /v1/traces`.
pub fn router(state: ReceiverState) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
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

async fn traces(State(st): State<ReceiverState>, headers: HeaderMap, body: Body) -> Response {
    let cfg = st.config.borrow().clone();
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
            return bad_request(Wire::Json, format!("unsupported Content-Type `{ct}`: use application/x-protobuf or application/json"));
        }
    };
    let raw: Bytes = match super::read_body(&headers, body, cfg.limits.max_request_bytes).await {
        Ok(b) => b,
        Err(message) => return bad_request(wire, message),
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok());
    let data = match decompress(encoding, raw, cfg.limits.max_decompressed_bytes) {
        Ok(d) => d,
        Err(e) => return bad_request(wire, e.to_string()),
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
        return status_body(
            wire,
            StatusCode::TOO_MANY_REQUESTS,
            rpc::RESOURCE_EXHAUSTED,
            full.to_string(),
            Some(RETRY_AFTER_S),
        );
    }
    let resp = ExportTraceServiceResponse {
        partial_success: partial,
    };
    let body = match wire {
        Wire::Proto => resp.encode_to_vec(),
        Wire::Json => otlp_json::encode_response(&resp),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, wire.content_type())],
        body,
    )
        .into_response()
}

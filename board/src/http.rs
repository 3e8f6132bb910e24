//! What both services share on the HTTP side: the server-span middleware (W3C context
//! extracted, `http.route` from the matched route, status recorded), the concurrency limiter
//! that answers 503 at once when full, and the one error type handlers return.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::KeyValue;
use tokio::sync::Semaphore;

use crate::telemetry::{self, Telemetry};

/// Why a request failed, attached to the response so the server span's status says it.
#[derive(Clone, Debug)]
pub struct FailureReason(pub String);

/// A handler's error: a status and a reason (shown to the client and on the span).
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub reason: String,
}

impl AppError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        AppError {
            status,
            reason: reason.into(),
        }
    }
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), reason = %self.reason, "request failed");
        }
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "error": self.reason })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp.extensions_mut().insert(FailureReason(self.reason));
        resp
    }
}

/// State of [`server_span`]: the telemetry and the address the service listens on.
#[derive(Clone)]
pub struct SpanState {
    pub telemetry: Telemetry,
    pub local: SocketAddr,
}

/// Wraps a request in a server span (`{method} {route}`), child of the caller's W3C context,
/// current while the handler runs, so client spans made inside become its children.
pub async fn server_span(
    State(st): State<SpanState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let parent = telemetry::extract(req.headers());
    let method = req.method().as_str().to_owned();
    let route = matched.map(|m| m.as_str().to_owned());
    let name = match &route {
        Some(r) => format!("{method} {r}"),
        None => method.clone(),
    };
    let mut attrs = vec![
        KeyValue::new("http.request.method", method),
        KeyValue::new("url.path", req.uri().path().to_owned()),
        KeyValue::new("url.scheme", "http"),
        KeyValue::new("server.address", st.local.ip().to_string()),
        KeyValue::new("server.port", i64::from(st.local.port())),
        KeyValue::new(
            "network.protocol.version",
            match req.version() {
                axum::http::Version::HTTP_10 => "1.0",
                axum::http::Version::HTTP_2 => "2",
                _ => "1.1",
            },
        ),
    ];
    if let Some(r) = route {
        attrs.push(KeyValue::new("http.route", r));
    }
    if let Some(ua) = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        attrs.push(KeyValue::new("user_agent.original", ua.to_owned()));
    }
    let tracer = st.telemetry.tracer();
    let span = tracer
        .span_builder(name)
        .with_kind(SpanKind::Server)
        .with_attributes(attrs)
        .start_with_context(tracer, &parent);
    let cx = parent.with_span(span);
    let resp = next.run(req).with_context(cx.clone()).await;
    let span = cx.span();
    let status = resp.status();
    span.set_attribute(KeyValue::new(
        "http.response.status_code",
        i64::from(status.as_u16()),
    ));
    if status.is_server_error() {
        let reason = resp
            .extensions()
            .get::<FailureReason>()
            .map(|r| r.0.clone())
            .unwrap_or_else(|| status.to_string());
        span.set_attribute(KeyValue::new("error.type", status.as_u16().to_string()));
        span.set_status(Status::error(reason));
    }
    span.end();
    resp
}

/// A concurrency limit that refuses instead of queueing: 503 with `Retry-After` when `limit`
/// requests are already in flight.
#[derive(Clone)]
pub struct Limiter {
    permits: Arc<Semaphore>,
    limit: usize,
    what: &'static str,
}

impl Limiter {
    pub fn new(limit: usize, what: &'static str) -> Limiter {
        Limiter {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            what,
        }
    }

    /// Reports the requests in flight (`http.server.active_requests`) and the limit
    /// (`board.limiter.max`) at each metrics export, labelled by the limiter's flag.
    pub fn observe(&self, meter: &opentelemetry::metrics::Meter) {
        let attrs = [opentelemetry::KeyValue::new("board.limiter", self.what)];
        let (permits, limit) = (self.permits.clone(), self.limit);
        let a = attrs.clone();
        meter
            .i64_observable_up_down_counter("http.server.active_requests")
            .with_unit("{request}")
            .with_description("Requests holding a permit of the limiter")
            .with_callback(move |o| {
                o.observe((limit - permits.available_permits().min(limit)) as i64, &a)
            })
            .build();
        meter
            .i64_observable_gauge("board.limiter.max")
            .with_unit("{request}")
            .with_description("Requests the limiter lets in at once; more answer 503")
            .with_callback(move |o| o.observe(limit as i64, &attrs))
            .build();
    }

    /// A permit, or the 503 to answer.
    pub fn try_enter(&self) -> Result<tokio::sync::OwnedSemaphorePermit, AppError> {
        self.permits.clone().try_acquire_owned().map_err(|_| {
            AppError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "overloaded: {} requests already in flight ({})",
                    self.limit, self.what
                ),
            )
        })
    }
}

/// Middleware form of [`Limiter`]: the permit is held until the response is produced.
pub async fn limit(State(limiter): State<Limiter>, req: Request, next: Next) -> Response {
    match limiter.try_enter() {
        Ok(_permit) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

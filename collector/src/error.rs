//! The one error type of every handler: a clear 4xx reason for the client, a generic 5xx body
//! (details go to the log, never to the client).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An HTTP error answer.
#[derive(Debug)]
pub struct AppError {
    pub status: StatusCode,
    pub message: String,
    /// The offending field of a rejected batch or query (`spans[3].trace_id`, `from`).
    pub field: Option<String>,
    /// A short machine-readable reason, also the `reason` label of the rejection metrics.
    pub reason: &'static str,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl AppError {
    pub fn new(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            message: message.into(),
            field: None,
            reason,
        }
    }

    pub fn bad_request(reason: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason, message)
    }

    /// A 400 about one field.
    pub fn field(
        reason: &'static str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        AppError {
            field: Some(field.into()),
            ..Self::bad_request(reason, message)
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// The store failed: logged in full, answered 503 so agents retry later; unless
    /// PostgreSQL refused a value of the request (SQLSTATE class 22 or 23), which no retry can
    /// store: that is 400 with PostgreSQL's reason.
    pub fn store(error: stormwatch_store::StoreError) -> Self {
        if error.is_data_error() {
            tracing::warn!(%error, "the database refused a value of the request");
            return Self::bad_request(
                "unstorable",
                format!("the database refused a value of this request: {error}"),
            );
        }
        tracing::warn!(%error, "database error");
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "storage_unavailable",
            "storage is unavailable, retry later",
        )
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let body = Body {
            error: &self.message,
            reason: self.reason,
            field: self.field.as_deref(),
        };
        let mut resp = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

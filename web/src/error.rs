//! The dashboard's one error type: a clear reason for bad input (400, naming the parameter),
//! a generic page for storage failures (503; details go to the log).

use askama::Template;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("bad parameter `{field}`: {reason}")]
    BadRequest { field: &'static str, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("forbidden: {0}")]
    Forbidden(String),
    #[error("storage: {0}")]
    Store(#[from] stormwatch_store::StoreError),
}

impl WebError {
    pub fn bad(field: &'static str, reason: String) -> WebError {
        WebError::BadRequest { field, reason }
    }

    pub fn forbidden(reason: impl Into<String>) -> WebError {
        WebError::Forbidden(reason.into())
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    heading: &'a str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            WebError::BadRequest { .. } => {
                (StatusCode::BAD_REQUEST, "Bad request", self.to_string())
            }
            WebError::NotFound(_) => (StatusCode::NOT_FOUND, "Not found", self.to_string()),
            WebError::Forbidden(_) => (StatusCode::FORBIDDEN, "Forbidden", self.to_string()),
            WebError::Store(error) if error.is_data_error() => {
                tracing::warn!(%error, "dashboard: the database refused a value of the request");
                (
                    StatusCode::BAD_REQUEST,
                    "Bad request",
                    format!("The database refused a value of this request: {error}"),
                )
            }
            WebError::Store(error) => {
                tracing::warn!(%error, "dashboard: storage failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Storage unavailable",
                    "The database did not answer. Retry in a moment; the collector's log has the details.".to_owned(),
                )
            }
        };
        let page = ErrorPage {
            status: status.as_u16(),
            heading,
            message,
        };
        match page.render() {
            Ok(html) => (status, Html(html)).into_response(),
            Err(_) => (status, "error").into_response(),
        }
    }
}

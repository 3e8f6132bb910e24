//! URL text: requests whose URL carries a NUL character (`%00`) are refused before any handler
//! sees them, and values going into URLs are percent-encoded ([`urlencode`]).
//!
//! PostgreSQL's `text` cannot hold NUL: a filter such as `?service=a%00b` reached the database
//! and failed there, which answered 503 ("storage unavailable") to what is the client's
//! mistake. A URL can hold NUL only percent-encoded, and decoding once turns `%00` (either case)
//! into NUL and nothing else into it, so looking for `%00` in the raw path and query is exact.

use axum::extract::Request;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::WebError;

/// The name of the query parameter (or `path`) whose value holds an encoded NUL.
fn nul_field(path: &str, query: Option<&str>) -> Option<String> {
    let has_nul = |s: &str| {
        s.as_bytes()
            .windows(3)
            .any(|w| w.eq_ignore_ascii_case(b"%00"))
    };
    if has_nul(path) {
        return Some("path".to_owned());
    }
    let query = query?;
    query.split('&').find(|pair| has_nul(pair)).map(|pair| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        if has_nul(name) {
            "query".to_owned()
        } else {
            name.to_owned()
        }
    })
}

/// Middleware: 400 naming the parameter when the URL holds `%00` (JSON under `/api/`, the
/// dashboard's error page elsewhere).
pub async fn reject_nul(req: Request, next: Next) -> Response {
    let uri = req.uri();
    let Some(field) = nul_field(uri.path(), uri.query()) else {
        return next.run(req).await;
    };
    let reason = "holds a NUL character (%00), which cannot be stored or searched for";
    if uri.path().starts_with("/api/") {
        let body = ApiError {
            error: format!("{field}: {reason}"),
            reason: "nul_character",
            field,
        };
        return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
    }
    WebError::bad("url", format!("`{field}` {reason}")).into_response()
}

/// The read API's error body (the collector's `AppError` shape).
#[derive(serde::Serialize)]
struct ApiError {
    error: String,
    reason: &'static str,
    field: String,
}

/// Percent-encodes a query-string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' | b':' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Percent-encodes a path segment: as [`urlencode`], `/` included (a service named `a/b`).
pub fn path_segment(s: &str) -> String {
    urlencode(s).replace('/', "%2F")
}

#[cfg(test)]
mod tests {
    use super::{nul_field, path_segment};

    #[test]
    fn path_segments_encode_slashes() {
        assert_eq!(path_segment("board"), "board");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn finds_the_parameter_that_holds_an_encoded_nul() {
        assert_eq!(
            nul_field("/spans", Some("service=a%00b")),
            Some("service".into())
        );
        assert_eq!(
            nul_field("/", Some("range=1h&peer=x%00")),
            Some("peer".into())
        );
        assert_eq!(nul_field("/api/v1/traces/ab%00", None), Some("path".into()));
        assert_eq!(nul_field("/", Some("a%00=1")), Some("query".into()));
        // Either case of the hex digits; `%2500` decodes to the text `%00`, not to NUL.
        assert_eq!(nul_field("/", Some("q=%00")), Some("q".into()));
        assert_eq!(nul_field("/", Some("q=%2500")), None);
        assert_eq!(nul_field("/", Some("q=100%25&r=%20")), None);
        assert_eq!(nul_field("/scatter", None), None);
    }
}

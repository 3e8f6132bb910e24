//! The protocols apps speak to the agent. Each receiver decodes, converts every span through
//! [`crate::classify`], and hands the result to [`crate::ingest::Ingest`] without waiting;
//! OTLP metrics and logs go through [`otlp_signals`] to [`crate::signals`].

pub mod otlp;
pub mod otlp_grpc;
pub mod otlp_http;
pub mod otlp_json;
pub mod otlp_signals;
pub mod otlp_wire;
pub mod zipkin;

use std::io::Read;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("unsupported Content-Encoding `{0}` (use gzip or none)")]
    Encoding(String),
    #[error("body is larger than {0} bytes after decompression")]
    TooLarge(usize),
    #[error("body is not valid gzip: {0}")]
    Gzip(std::io::Error),
}

/// Reads a request body of at most `limit` bytes. A declared `Content-Length` over the limit
/// is refused before reading (the client is not kept sending it); a body that stalls fails
/// when the server's body read timeout passes (`stormwatch_http`).
pub async fn read_body(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, String> {
    let too_large = || format!("request body larger than {limit} bytes");
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            format!("could not read the request body: {e}")
        }
    })
}

/// Decompresses a request body per its `Content-Encoding`, refusing to inflate beyond `limit`
/// (a gzip bomb must not take the agent's memory).
pub fn decompress(
    encoding: Option<&str>,
    body: bytes::Bytes,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    match encoding.map(|e| e.trim().to_ascii_lowercase()).as_deref() {
        None | Some("") | Some("identity") => {
            if body.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(body)
        }
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            flate2::read::MultiGzDecoder::new(&body[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(BodyError::Gzip)?;
            if out.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(out.into())
        }
        Some(other) => Err(BodyError::Encoding(other.to_owned())),
    }
}

/// `google.rpc.Status` and `google.rpc.RetryInfo`: the error body of OTLP/HTTP and the details
/// of a gRPC status. Hand-declared: four small messages are not worth another crate.
pub mod rpc {
    /// `google.rpc.Status`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Status {
        #[prost(int32, tag = "1")]
        pub code: i32,
        #[prost(string, tag = "2")]
        pub message: String,
        #[prost(message, repeated, tag = "3")]
        pub details: Vec<Any>,
    }
    /// `google.protobuf.Any`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Any {
        #[prost(string, tag = "1")]
        pub type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub value: Vec<u8>,
    }
    /// `google.rpc.RetryInfo`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub retry_delay: Option<Duration>,
    }
    /// `google.protobuf.Duration`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Duration {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }

    /// gRPC codes used here.
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const RESOURCE_EXHAUSTED: i32 = 8;

    /// A status, with a `RetryInfo` detail when `retry_after_s` is given.
    pub fn status(code: i32, message: String, retry_after_s: Option<i64>) -> Status {
        let details = retry_after_s
            .map(|s| Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
                value: prost::Message::encode_to_vec(&RetryInfo {
                    retry_delay: Some(Duration {
                        seconds: s,
                        nanos: 0,
                    }),
                }),
            })
            .into_iter()
            .collect();
        Status {
            code,
            message,
            details,
        }
    }
}

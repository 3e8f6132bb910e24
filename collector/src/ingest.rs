//! `POST /api/v1/ingest`: authenticate, decompress, decode, validate, store — or say why not.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use bytes::Bytes;
use serde::Serialize;
use stormwatch_model::{validate, Batch, BorrowedBatch, DecodeError, Encoding};

use crate::error::AppError;
use crate::metrics::{KindLabel, ResultLabel};
use crate::state::AppState;

/// The answer to an accepted batch.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct IngestResponse {
    /// `stored`, or `duplicate` when this (agent, instance, sequence) was stored before.
    pub status: String,
    pub spans: u64,
    pub expired_spans: u64,
    /// Spans counted by aggregates older than the retention window (not stored).
    #[serde(default)]
    pub expired_aggregated_spans: u64,
    pub aggregates: u64,
    pub samples: u64,
    /// Metric series-minutes written (a batch's parts of one merged first) and log records.
    #[serde(default)]
    pub metric_points: u64,
    #[serde(default)]
    pub logs: u64,
    /// Values cut to their limit and attributes dropped (see README, "Limits").
    pub truncated_values: u64,
    pub dropped_attributes: u64,
}

pub async fn ingest(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<IngestResponse>, AppError> {
    let started = Instant::now();
    let result = handle(&app, &headers, body).await;
    match &result {
        Ok(_) => app
            .metrics
            .ingest_seconds
            .observe(started.elapsed().as_secs_f64()),
        Err(e) => app.metrics.reject(e.reason),
    }
    result.map(Json)
}

async fn handle(
    app: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<IngestResponse, AppError> {
    authorize(app, headers)?;
    let limit = app.config().max_body_bytes;
    let too_large = || {
        AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request body exceeds {limit} bytes; send smaller batches"),
        )
    };
    // Answered before reading: a client declaring 100 MB is not kept sending it.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let over = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if over {
            too_large()
        } else {
            AppError::bad_request(
                "unreadable_body",
                format!("could not read the request body: {e}"),
            )
        }
    })?;
    let encoding = content_type(headers)?;
    let raw = decompress(headers, &body, app.config().max_decompressed_bytes)?;
    let malformed = |e: DecodeError| match e.field {
        Some(field) => AppError::field("malformed", field, e.message),
        None => AppError::bad_request("malformed", e.message),
    };
    // Protobuf spans are read in place; JSON ones are decoded, then borrowed alike.
    let mut json_spans = Vec::new();
    let mut batch = match encoding {
        Encoding::Protobuf => Batch::decode_borrowed(&raw).map_err(malformed)?,
        Encoding::Json => BorrowedBatch::of(
            Batch::decode(&raw, encoding).map_err(malformed)?,
            &mut json_spans,
        ),
    };
    let now = stormwatch_model::now_ns();
    let cut = validate::check_borrowed(&mut batch, now)
        .map_err(|e| AppError::field("invalid", e.field, e.message))?;
    let outcome = app.store.store_borrowed(&batch, now).await.map_err(|e| {
        app.metrics.db_errors.inc();
        AppError::store(e)
    })?;
    let status = if outcome.duplicate {
        "duplicate"
    } else {
        "stored"
    };
    app.metrics
        .batches
        .get_or_create(&ResultLabel {
            result: status.to_owned(),
        })
        .inc();
    if !outcome.duplicate {
        app.metrics.spans.inc_by(outcome.spans);
        app.metrics.spans_expired.inc_by(outcome.expired_spans);
        app.metrics
            .aggregated_spans_expired
            .inc_by(outcome.expired_aggregated_spans);
        app.metrics
            .truncated
            .get_or_create(&KindLabel {
                kind: "values".into(),
            })
            .inc_by(cut.values);
        app.metrics
            .truncated
            .get_or_create(&KindLabel {
                kind: "attributes".into(),
            })
            .inc_by(cut.attributes);
    }
    tracing::debug!(agent = %batch.batch.agent_id, sequence = batch.batch.sequence, spans = outcome.spans, status, "batch");
    Ok(IngestResponse {
        status: status.to_owned(),
        spans: outcome.spans,
        expired_spans: outcome.expired_spans,
        expired_aggregated_spans: outcome.expired_aggregated_spans,
        aggregates: outcome.aggregates,
        samples: outcome.samples,
        metric_points: outcome.metric_points,
        logs: outcome.logs,
        truncated_values: cut.values,
        dropped_attributes: cut.attributes,
    })
}

/// 401 without a bearer token, 403 with one that is not configured.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), AppError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            AppError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <agent token>` header",
            )
        })?;
    // Compare against every token without stopping early, so timing says nothing.
    let known = app.config().ingest_tokens.iter().fold(false, |hit, t| {
        hit | constant_time_eq(t.as_bytes(), token.as_bytes())
    });
    if known {
        Ok(())
    } else {
        Err(AppError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "unknown agent token",
        ))
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn content_type(headers: &HeaderMap) -> Result<Encoding, AppError> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    Encoding::from_content_type(value).ok_or_else(|| {
        AppError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Type `{value}` is not supported: use application/json or application/x-protobuf"),
        )
    })
}

/// Largest decompressed size, relative to the compressed body, allocated up front from what a
/// zstd frame declares (batches compress 7 to 10 times).
const MAX_TRUSTED_RATIO: u64 = 64;

/// Undoes `Content-Encoding` (zstd, gzip or none), refusing to inflate beyond `limit` bytes.
fn decompress(headers: &HeaderMap, body: &Bytes, limit: usize) -> Result<Bytes, AppError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity");
    let reader: Box<dyn Read + '_> = match encoding.trim().to_ascii_lowercase().as_str() {
        "" | "identity" => return Ok(body.clone()),
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&body[..])),
        "zstd" => {
            // Agents compress a body whole (`zstd::bulk`), so its frame says how large it
            // decompresses to: one allocation of that size instead of a growing buffer. Only
            // a size within the limit and [`MAX_TRUSTED_RATIO`] times the body is believed
            // before decompressing (a small body claiming the limit would reserve it); any
            // other body, or one not as large as it says, goes the streaming way.
            if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(body) {
                if size <= limit as u64 && size <= body.len() as u64 * MAX_TRUSTED_RATIO {
                    if let Ok(out) = zstd::bulk::decompress(body, size as usize) {
                        return Ok(Bytes::from(out));
                    }
                }
            }
            Box::new(
                zstd::stream::read::Decoder::new(&body[..])
                    .map_err(|e| AppError::bad_request("bad_compression", format!("zstd: {e}")))?,
            )
        }
        other => {
            return Err(AppError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_encoding",
                format!("Content-Encoding `{other}` is not supported: use zstd, gzip or none"),
            ))
        }
    };
    let mut out = Vec::with_capacity(body.len() * 4);
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| {
            AppError::bad_request(
                "bad_compression",
                format!("{encoding} body could not be decompressed: {e}"),
            )
        })?;
    if out.len() > limit {
        return Err(AppError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("decompressed body exceeds {limit} bytes; send smaller batches"),
        ));
    }
    Ok(Bytes::from(out))
}

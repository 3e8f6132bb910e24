//! The partner service (its own process, `stormwatch-partner`) and the board's client for it.
//!
//! The partner answers `GET /timetable` after a delay that `PUT /admin/delay?ms=N` changes at
//! run time: the demo's "slow partner" incident. The board's call is a client span with the
//! HTTP semantic conventions and carries the W3C `traceparent` of that span.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use axum::{Json, Router};
use opentelemetry::KeyValue;
use serde::Deserialize;

use crate::http::{server_span, AppError, SpanState};
use crate::telemetry::{self, Telemetry};

/// The longest delay `PUT /admin/delay` accepts.
pub const MAX_DELAY_MS: u64 = 600_000;

#[derive(Clone)]
struct PartnerState {
    delay_ms: Arc<AtomicU64>,
}

/// The partner's router: `GET /timetable` (traced), `PUT`/`GET /admin/delay`, `GET /healthz`.
pub fn router(telemetry: Telemetry, local: SocketAddr, initial_delay_ms: u64) -> Router {
    let st = PartnerState {
        delay_ms: Arc::new(AtomicU64::new(initial_delay_ms.min(MAX_DELAY_MS))),
    };
    Router::new()
        .route("/timetable", get(timetable))
        .layer(axum::middleware::from_fn_with_state(
            SpanState { telemetry, local },
            server_span,
        ))
        .route("/admin/delay", put(set_delay).get(get_delay))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(st)
}

/// A few percent of jitter (at least 0–2 ms), from the clock's low bits.
fn jitter_ms(delay_ms: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0) as u64;
    let span = (delay_ms / 20).max(2);
    (nanos / 1000) % (span + 1)
}

async fn timetable(State(st): State<PartnerState>) -> Json<serde_json::Value> {
    let delay = st.delay_ms.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(delay + jitter_ms(delay))).await;
    Json(serde_json::json!({
        "week": "current",
        "lessons": [
            {"day": "mon", "slot": 1, "class": "class-0001", "subject": "maths"},
            {"day": "mon", "slot": 2, "class": "class-0002", "subject": "history"},
            {"day": "tue", "slot": 1, "class": "class-0001", "subject": "physics"},
        ],
    }))
}

#[derive(Deserialize)]
struct DelayQuery {
    ms: u64,
}

async fn set_delay(
    State(st): State<PartnerState>,
    Query(q): Query<DelayQuery>,
) -> Result<Json<serde_json::Value>, AppError> {
    if q.ms > MAX_DELAY_MS {
        return Err(AppError::bad_request(format!(
            "ms must be at most {MAX_DELAY_MS}"
        )));
    }
    st.delay_ms.store(q.ms, Ordering::Relaxed);
    tracing::info!(delay_ms = q.ms, "partner delay changed");
    Ok(Json(serde_json::json!({ "delay_ms": q.ms })))
}

async fn get_delay(State(st): State<PartnerState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "delay_ms": st.delay_ms.load(Ordering::Relaxed) }))
}

/// The board's client for the partner.
pub struct PartnerClient {
    http: reqwest::Client,
    base: String,
    host: String,
    port: u16,
    timeout: Duration,
    telemetry: Telemetry,
}

impl PartnerClient {
    pub fn new(base: &str, timeout: Duration, telemetry: Telemetry) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(base).map_err(|e| anyhow::anyhow!("partner URL: {e}"))?;
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("partner URL {base:?} has no host"))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(2)))
            .build()?;
        Ok(PartnerClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            host,
            port,
            timeout,
            telemetry,
        })
    }

    /// `GET /timetable` on the partner, as a client span; errors are ready-made 502/504s.
    pub async fn timetable(&self) -> Result<serde_json::Value, AppError> {
        let url = format!("{}/timetable", self.base);
        let span = self.telemetry.client(
            "GET /timetable".into(),
            vec![
                KeyValue::new("http.request.method", "GET"),
                KeyValue::new("url.full", url.clone()),
                KeyValue::new("url.template", "/timetable"),
                KeyValue::new("server.address", self.host.clone()),
                KeyValue::new("server.port", i64::from(self.port)),
            ],
        );
        let mut headers = axum::http::HeaderMap::new();
        telemetry::inject(span.context(), &mut headers);
        let result = async {
            let resp = self.http.get(&url).headers(headers).send().await?;
            let status = resp.status();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
        .await;
        match result {
            Ok((status, body)) => {
                span.set(KeyValue::new(
                    "http.response.status_code",
                    i64::from(status.as_u16()),
                ));
                if !status.is_success() {
                    let msg = format!("partner answered {status}");
                    span.fail(&status.as_u16().to_string(), &msg);
                    return Err(AppError::new(StatusCode::BAD_GATEWAY, msg));
                }
                match serde_json::from_slice(&body) {
                    Ok(v) => {
                        span.ok();
                        Ok(v)
                    }
                    Err(e) => {
                        let msg = format!("partner sent invalid JSON: {e}");
                        span.fail("invalid_response", &msg);
                        Err(AppError::new(StatusCode::BAD_GATEWAY, msg))
                    }
                }
            }
            Err(e) if e.is_timeout() => {
                let msg = format!("partner timed out after {} ms", self.timeout.as_millis());
                span.fail("timeout", &msg);
                Err(AppError::new(StatusCode::GATEWAY_TIMEOUT, msg))
            }
            Err(e) => {
                let msg = format!("partner unreachable: {}", error_chain(&e));
                span.fail("connect_failure", &msg);
                Err(AppError::new(StatusCode::BAD_GATEWAY, msg))
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

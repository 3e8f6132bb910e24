//! The board service's routes and handlers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::SpanKind;
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, KeyValue};
use serde::Deserialize;

use crate::cache::Cache;
use crate::db::{Db, DbError, PostsQuery};
use crate::http::{limit, server_span, AppError, Limiter, SpanState};
use crate::partner::PartnerClient;
use crate::telemetry::Telemetry;

/// Posts shown on a list page (the statement returns all the class's posts; the page shows
/// the newest ones).
pub const PAGE_SIZE: usize = 50;
/// Largest upload body.
pub const MAX_UPLOAD_BYTES: usize = 8 * 1024 * 1024;
/// Passes over an upload's bytes (the CPU work an upload costs).
pub const UPLOAD_ROUNDS: u32 = 24;
/// Longest class code, post title and post body accepted.
pub const MAX_CODE: usize = 64;
pub const MAX_TITLE: usize = 200;
pub const MAX_BODY: usize = 10_000;

pub struct Board {
    pub db: Db,
    pub cache: Cache,
    pub partner: PartnerClient,
    pub telemetry: Telemetry,
}

type St = State<Arc<Board>>;

/// The board's router: traced routes behind the concurrency limiter; `/healthz` untraced.
pub fn router(
    board: Arc<Board>,
    local: SocketAddr,
    max_concurrent: usize,
    uploads_max_concurrent: usize,
) -> Router {
    let spans = SpanState {
        telemetry: board.telemetry.clone(),
        local,
    };
    let meter = board.telemetry.meter();
    let uploads_limiter = Limiter::new(uploads_max_concurrent.max(1), "--uploads-max-concurrent");
    let limiter = Limiter::new(max_concurrent.max(1), "--max-concurrent");
    uploads_limiter.observe(&meter);
    limiter.observe(&meter);
    board.db.observe(&meter);
    Router::new()
        .route("/classes", post(create_class))
        .route("/classes/{code}/posts", get(list_posts).post(create_post))
        .route("/timetable", get(timetable))
        .route(
            "/uploads",
            // Its own limit, checked before the body is read.
            post(upload)
                .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
                .layer(from_fn_with_state(uploads_limiter, limit)),
        )
        // Layers run outside-in from the last added: the span sees the limiter's 503s.
        .layer(from_fn_with_state(limiter, limit))
        .layer(from_fn_with_state(spans, server_span))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(board)
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        let status = match e {
            DbError::Connect(_) | DbError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            DbError::Query(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        AppError::new(status, e.to_string())
    }
}

fn check_code(code: &str) -> Result<(), AppError> {
    if code.is_empty()
        || code.len() > MAX_CODE
        || !code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(AppError::bad_request(format!(
            "class code must be 1-{MAX_CODE} characters of a-z, A-Z, 0-9, '-', '_'"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewClass {
    code: String,
}

async fn create_class(
    State(b): St,
    Json(c): Json<NewClass>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    check_code(&c.code)?;
    match b.db.create_class(&c.code).await? {
        Some(id) => Ok((
            StatusCode::CREATED,
            Json(serde_json::json!({ "id": id, "code": c.code })),
        )),
        None => Err(AppError::new(
            StatusCode::CONFLICT,
            format!("class {} exists", c.code),
        )),
    }
}

async fn list_posts(
    State(b): St,
    Path(code): Path<String>,
) -> Result<Json<serde_json::Value>, AppError> {
    check_code(&code)?;
    // Read-your-writes is not guaranteed: a class created moments ago may not have reached
    // the replica — and then `class_id` is None, which the query builder takes as "no filter".
    let class_id = b.db.class_id_on_replica(&code).await?;
    let rows = b.db.list_posts(&PostsQuery { class_id }).await?;
    let total = rows.len();
    let page: Vec<_> = rows.into_iter().take(PAGE_SIZE).collect();
    let ids: Vec<i64> = page.iter().map(|p| p.id).collect();
    let mut bodies = match b.cache.get_many(&ids).await {
        Ok(v) => v,
        Err(e) => {
            tracing::debug!(error = %e, "cache read failed; reading bodies from the replica");
            vec![None; ids.len()]
        }
    };
    let missing: Vec<i64> = ids
        .iter()
        .zip(&bodies)
        .filter(|(_, v)| v.is_none())
        .map(|(id, _)| *id)
        .collect();
    if !missing.is_empty() {
        let found = b.db.bodies(&missing).await?;
        for (id, body) in &found {
            if let Some(i) = ids.iter().position(|x| x == id) {
                bodies[i] = Some(body.clone());
            }
        }
        if let Err(e) = b.cache.set_many(&found).await {
            tracing::debug!(error = %e, "cache fill failed");
        }
    }
    let posts: Vec<_> = page
        .into_iter()
        .zip(bodies)
        .map(|(p, body)| {
            serde_json::json!({
                "id": p.id, "title": p.title, "created_at": p.created_at, "body": body,
            })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "class": code,
        "class_id": class_id,
        "total": total,
        "posts": posts,
    })))
}

#[derive(Deserialize)]
struct NewPost {
    title: String,
    body: String,
}

async fn create_post(
    State(b): St,
    Path(code): Path<String>,
    Json(p): Json<NewPost>,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    check_code(&code)?;
    if p.title.is_empty() || p.title.len() > MAX_TITLE {
        return Err(AppError::bad_request(format!(
            "title must be 1-{MAX_TITLE} bytes"
        )));
    }
    if p.body.len() > MAX_BODY {
        return Err(AppError::bad_request(format!(
            "body must be at most {MAX_BODY} bytes"
        )));
    }
    let Some(id) = b.db.create_post(&code, &p.title, &p.body).await? else {
        return Err(AppError::new(
            StatusCode::NOT_FOUND,
            format!("no class {code}"),
        ));
    };
    // Write-through: the new post's content goes to the cache right away.
    if let Err(e) = b.cache.set_many(&[(id, p.body)]).await {
        tracing::debug!(error = %e, "cache write failed");
    }
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "id": id }))))
}

async fn timetable(State(b): St) -> Result<Json<serde_json::Value>, AppError> {
    Ok(Json(b.partner.timetable().await?))
}

async fn upload(
    State(b): St,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), AppError> {
    if body.is_empty() {
        return Err(AppError::bad_request("empty upload"));
    }
    let size = body.len() as i64;
    // The CPU work (a stand-in for resizing or scanning) runs off the async workers, in an
    // internal span of its own.
    let span = b.telemetry.start(
        "process upload".into(),
        SpanKind::Internal,
        vec![KeyValue::new("upload.size", size)],
    );
    let cx = Context::current().with_span(span);
    let digest = tokio::task::spawn_blocking(move || digest(&body, UPLOAD_ROUNDS))
        .with_context(cx.clone())
        .await
        .map_err(|e| AppError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    cx.span().end();
    let id = b.db.record_upload(size, &digest).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "id": id, "size": size, "digest": digest })),
    ))
}

/// FNV-1a over the bytes, `rounds` times, chained.
fn digest(bytes: &[u8], rounds: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in 0..rounds {
        h ^= u64::from(r);
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

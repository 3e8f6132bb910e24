//! The HTTP application: routes, health and metrics.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;

use crate::state::AppState;
use crate::{api, ingest};

/// All routes: the ingest and read APIs, `/healthz`, `/metrics`, and the dashboard at `/`.
pub fn router(state: Arc<AppState>) -> Router {
    let auth = state.auth.clone();
    let api = Router::new()
        .route(
            "/api/v1/ingest",
            // The handler reads the body itself, within `max_body_bytes`.
            post(ingest::ingest).layer(DefaultBodyLimit::disable()),
        )
        .merge(
            Router::new()
                .route("/api/v1/services", get(api::services))
                .route("/api/v1/spans", get(api::spans))
                .route("/api/v1/traces/{trace_id}", get(api::trace))
                .route("/api/v1/aggregates", get(api::aggregates))
                .route("/api/v1/metrics", get(api::metrics))
                .route("/api/v1/metrics/names", get(api::metric_names))
                .route("/api/v1/logs", get(api::logs))
                .route("/api/v1/databases", get(api::databases))
                .route("/api/v1/rules", get(api::rules))
                .route("/api/v1/alerts", get(api::alerts))
                .route("/api/v1/incidents", get(api::incidents))
                .route("/api/v1/incidents/{id}", get(api::incident))
                .route(
                    "/api/v1/databases/{name}/samples",
                    get(api::database_samples),
                )
                .route_layer(axum::middleware::from_fn_with_state(
                    auth.clone(),
                    stormwatch_web::auth::require_read_access,
                ))
                .layer(axum::middleware::from_fn(stormwatch_web::input::reject_nul)),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state.clone());
    api.merge(stormwatch_web::router_with(state.store.clone(), auth))
        .layer(TraceLayer::new_for_http())
}

/// 200 only when the database answers.
async fn healthz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    match app.store.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(error) => {
            tracing::warn!(%error, "health check: database does not answer");
            app.metrics.db_errors.inc();
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}

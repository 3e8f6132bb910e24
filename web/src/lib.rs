//! The on-call dashboard, server-rendered. Templates mirror handlers:
//! `templates/<area>/*.html` ↔ `src/handlers/<area>.rs`; charts are inline SVG drawn on the
//! server (`charts/`), so every page works without JavaScript (`static/app.js` only adds
//! local times, auto-refresh and drag-to-zoom).

pub mod assets;
pub mod auth;
pub mod charts;
pub mod error;
pub mod handlers;
pub mod headers;
pub mod input;
pub mod login_limit;
pub mod range;
pub mod standalone;

use std::sync::Arc;

use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use axum::Router;
use stormwatch_store::Store;

pub use auth::{Auth, AuthOptions, Role, User};

/// What the dashboard's handlers share.
#[derive(Clone)]
pub struct WebState {
    pub store: Arc<Store>,
    pub auth: Arc<Auth>,
}

/// The dashboard, open (no users): for a collector on loopback and for tests.
pub fn router(store: Arc<Store>) -> Router {
    router_with(store, Arc::new(Auth::new(AuthOptions::default())))
}

/// The dashboard's routes with access control, to be merged into the collector's router.
pub fn router_with(store: Arc<Store>, auth: Arc<Auth>) -> Router {
    use handlers::*;
    let state = WebState {
        store,
        auth: auth.clone(),
    };
    Router::new()
        .route("/", get(overview::overview))
        .route("/scatter", get(scatter::scatter))
        .route("/dependencies", get(dependencies::dependencies))
        .route("/map", get(map::map))
        .route("/spans", get(spans::slow_spans))
        .route("/traces/{trace_id}", get(traces::trace))
        .route("/databases", get(databases::databases))
        .route("/hosts", get(hosts::hosts))
        .route("/services/{service}/metrics", get(metrics::metrics))
        .route("/incidents", get(incidents::incidents))
        .route("/incidents/{id}", get(incidents::incident))
        .route("/alerts", get(alerts::alerts))
        .route("/alerts/silences", post(alerts::create_silence))
        .route("/alerts/silences/{id}/end", post(alerts::end_silence))
        .route("/login", get(login::form).post(login::login))
        .route("/logout", post(login::logout))
        .route("/static/{file}", get(assets::serve))
        .route("/favicon.ico", get(assets::favicon))
        .layer(from_fn_with_state(auth, auth::require_login))
        .layer(from_fn(input::reject_nul))
        .layer(from_fn(headers::security_headers))
        .with_state(state)
}

//! The on-call dashboard, server-rendered. Templates mirror handlers:
//! `templates/<area>/*.html` ↔ `src/handlers/<area>.rs`.

pub mod handlers;

use std::sync::Arc;

use axum::routing::get;
use axum::Router;
use stormwatch_store::Store;

/// The dashboard's routes, to be merged into the collector's router.
pub fn router(store: Arc<Store>) -> Router {
    Router::new()
        .route("/", get(handlers::index::index))
        .with_state(store)
}

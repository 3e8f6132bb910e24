//! The landing page: services seen in the last hour.

use std::sync::Arc;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use stormwatch_store::{ServiceSummary, Store};

#[derive(Template, WebTemplate)]
#[template(path = "index/index.html")]
pub struct IndexPage {
    pub services: Vec<ServiceSummary>,
}

pub async fn index(State(store): State<Arc<Store>>) -> Response {
    let now_s = stormwatch_store::now_ns() / 1_000_000_000;
    match store.services(now_s - 3_600, now_s + 60).await {
        Ok(services) => IndexPage { services }.into_response(),
        Err(error) => {
            tracing::warn!(%error, "index: reading services failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage is unavailable, retry later",
            )
                .into_response()
        }
    }
}

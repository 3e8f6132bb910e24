//! What every handler and background task of a running collector shares.
//!
//! Its own module so that the handlers (`api`, `ingest`), the routes (`app`), alerting and
//! reload all depend on it and not on each other: `app` builds the router from `api` and
//! `ingest`, which once took `AppState` from `app`.

use std::sync::Arc;

use stormwatch_store::Store;

use crate::config::Config;
use crate::metrics::Metrics;

/// What every handler shares.
pub struct AppState {
    pub store: Arc<Store>,
    pub config: Config,
    pub metrics: Metrics,
    pub alerts: Arc<crate::alerts::AlertsRuntime>,
}

//! What every handler and background task of a running collector shares.
//!
//! Its own module so that the handlers (`api`, `ingest`), the routes (`app`), alerting and
//! reload all depend on it and not on each other: `app` builds the router from `api` and
//! `ingest`, which once took `AppState` from `app`.

use std::sync::{Arc, RwLock};

use stormwatch_store::Store;

use crate::alerts::AlertsRuntime;
use crate::config::Config;
use crate::metrics::Metrics;

/// What every handler shares.
pub struct AppState {
    pub store: Arc<Store>,
    /// The config in force; replaced whole by a reload ([`crate::reload`]).
    config: RwLock<Arc<Config>>,
    pub metrics: Metrics,
    pub alerts: Arc<AlertsRuntime>,
    /// Dashboard users, sessions and read tokens; its options follow the config.
    pub auth: Arc<stormwatch_web::Auth>,
}

impl AppState {
    /// The state of a collector started with `config`. Dashboard sessions are kept in the
    /// database, shared by every collector on it.
    pub fn new(store: Arc<Store>, config: Config, alerts: AlertsRuntime) -> AppState {
        let auth = Arc::new(stormwatch_web::Auth::shared(
            config.auth_options(),
            store.clone(),
        ));
        AppState {
            store,
            config: RwLock::new(Arc::new(config)),
            metrics: Metrics::new(),
            alerts: Arc::new(alerts),
            auth,
        }
    }

    /// The config in force (a snapshot: a reload does not change it under the caller).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `config` in force: what handlers read per request, and the dashboard's access.
    /// Alert rules are set separately (they are resolved while checking the config).
    pub(crate) fn set_config(&self, config: Config) {
        self.auth.set_options(config.auth_options());
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }
}

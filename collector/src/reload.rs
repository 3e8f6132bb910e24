//! Config reload, modelled on the agent's (`agent/src/reload.rs`): on a change of the config
//! file (`notify`, debounced) and on SIGHUP, through the same [`config::load`] as start-up.
//!
//! What can change live applies at once: `[alerts]` rules, channels and silences, dashboard
//! users and roles, read and ingest tokens, `secure_cookies`, the body limits. What needs a
//! restart ([`RESTART_KEYS`]) is logged at WARN naming the key, keeps its running value, and
//! the rest still applies. A file that would not start the collector is rejected whole: the
//! config in force stays and the error names file, line and key.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Config, ConfigError};
use crate::state::AppState;

/// Quiet time after the last file event before reloading: editors write a file in several
/// steps (truncate, write, rename), and reading in between would see a half-written file.
pub const DEBOUNCE: Duration = Duration::from_millis(1000);

/// Keys read once at start-up: a change is logged and waits for the next restart.
pub const RESTART_KEYS: [&str; 7] = [
    "listen",
    "database_url",
    "data_dir",
    "max_db_connections",
    "embedded_shared_buffers_mib",
    "retention_days",
    "alerts.enabled",
];

/// The restart-only keys whose values differ between `old` and `new`; `new` gets the running
/// values back, so that the config in force describes what runs.
fn keep_restart_keys(old: &Config, new: &mut Config) -> Vec<&'static str> {
    let mut changed = Vec::new();
    macro_rules! keep {
        ($key:literal, $($field:ident).+) => {
            if old.$($field).+ != new.$($field).+ {
                changed.push($key);
                new.$($field).+ = old.$($field).+.clone();
            }
        };
    }
    keep!("listen", listen);
    keep!("database_url", database_url);
    keep!("data_dir", data_dir);
    keep!("max_db_connections", max_db_connections);
    keep!("embedded_shared_buffers_mib", embedded_shared_buffers_mib);
    keep!("retention_days", retention_days);
    keep!("alerts.enabled", alerts.enabled);
    debug_assert!(changed.iter().all(|k| RESTART_KEYS.contains(k)));
    changed
}

/// Why a reload was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// Configured without ingest tokens, and the generated one cannot be read.
    #[error("{0:#}")]
    Token(anyhow::Error),
}

/// Loads the config again, as at start-up, and puts what can change live in force. On error
/// nothing changes.
pub fn reload(state: &AppState) -> Result<(), ReloadError> {
    let result = try_reload(state);
    match &result {
        Ok(()) => state.metrics.config_reload("applied"),
        Err(ReloadError::Config(ConfigError::Read { .. })) => {
            state.metrics.config_reload("unreadable")
        }
        Err(_) => state.metrics.config_reload("rejected"),
    }
    if let Err(error) = &result {
        tracing::error!("config reload rejected, the config in force stays: {error}");
    }
    result
}

fn try_reload(state: &AppState) -> Result<(), ReloadError> {
    let old = state.config();
    let mut new = config::load(old.config_path.as_deref(), &old.overrides)?;
    // `load` checked the alerts; resolving again reads the environment of now, as it did.
    let alerts = new
        .resolve_alerts()
        .map_err(|message| ConfigError::Invalid {
            path: shown(old.config_path.as_deref()),
            line: None,
            key: "alerts".into(),
            message: format!("[alerts]: {message}"),
        })?;
    for key in keep_restart_keys(&old, &mut new) {
        tracing::warn!(
            key,
            path = %shown(old.config_path.as_deref()),
            "config reload: `{key}` changed; it applies at the next restart (the rest applies now)"
        );
    }
    if new.ingest_tokens.is_empty() {
        // As at start-up: the token generated into the data directory.
        new.ingest_tokens
            .push(crate::generated_token(&new.data_dir).map_err(ReloadError::Token)?);
    }
    let (rules, channels, users) = (alerts.rules.len(), alerts.channels.len(), new.users.len());
    state.alerts.set_config(alerts);
    state.set_config(new);
    tracing::info!(
        path = %shown(old.config_path.as_deref()),
        rules,
        channels,
        users,
        "config reloaded and applied"
    );
    Ok(())
}

fn shown(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "(flags)".into())
}

/// The triggers of a reload, set up at start so that no edit or SIGHUP after start is missed
/// (and a SIGHUP no longer ends the process, its default action).
pub struct Triggers {
    _watcher: Option<notify::RecommendedWatcher>,
    events: mpsc::Receiver<()>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Triggers {
    /// Watches `path` (if any) and SIGHUP. Needs a Tokio runtime.
    pub fn new(path: Option<&Path>) -> Triggers {
        let (tx, events) = mpsc::channel::<()>(16);
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|error| tracing::warn!(%error, "cannot handle SIGHUP"))
            .ok();
        Triggers {
            _watcher: path.and_then(|p| watch_file(p, tx)),
            events,
            hangup,
        }
    }
}

/// Reloads on every trigger until `stop` changes.
pub async fn run(mut triggers: Triggers, state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    loop {
        let hangup = async {
            match triggers.hangup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading the config");
            }
            Some(()) = triggers.events.recv() => {
                // Debounce: wait until events stop for DEBOUNCE.
                loop {
                    tokio::select! {
                        more = tokio::time::timeout(DEBOUNCE, triggers.events.recv()) => match more {
                            Ok(Some(())) => continue,
                            _ => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
            }
        }
        let _ = reload(&state);
    }
}

/// Watches the file's directory (editors replace files by renaming, which a watch on the file
/// itself would lose) and forwards events about the file, not reads: each reload reads the
/// file, and would set off the next one.
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let path = std::path::absolute(path).ok()?;
    let dir = path.parent()?.to_owned();
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if !ev.kind.is_access()
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name() == Some(name.as_os_str()))
            {
                let _ = tx.try_send(());
            }
        }
    })
    .map_err(|error| tracing::warn!(%error, "cannot watch the config file; reload with SIGHUP"))
    .ok()?;
    if let Err(error) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
        tracing::warn!(%error, dir = %dir.display(), "cannot watch the config directory; reload with SIGHUP");
        return None;
    }
    Some(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_keys_keep_their_running_values_and_the_rest_changes() {
        let old = Config::default();
        let mut new = Config {
            listen: "127.0.0.1:7777".parse().unwrap(),
            retention_days: 30,
            read_tokens: vec!["read-token-0123456789".into()],
            max_body_bytes: 1024,
            ..Config::default()
        };
        new.alerts.enabled = false;
        let changed = keep_restart_keys(&old, &mut new);
        assert_eq!(changed, ["listen", "retention_days", "alerts.enabled"]);
        assert_eq!(new.listen, old.listen);
        assert_eq!(new.retention_days, old.retention_days);
        assert!(new.alerts.enabled);
        assert_eq!(new.read_tokens, ["read-token-0123456789"]);
        assert_eq!(new.max_body_bytes, 1024);
        assert!(keep_restart_keys(&old, &mut Config::default()).is_empty());
    }
}

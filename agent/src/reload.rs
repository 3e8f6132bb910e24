//! Config reload: on file change (via `notify`, debounced) and on SIGHUP, through the same
//! [`crate::config::load`] as start-up. A bad edit is logged with file, line and key and the
//! running config stays in force.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use crate::config::{self, Config, ConfigError, Overrides};
use crate::metrics::Metrics;

/// Quiet time after the last file event before reloading: editors write a file in several
/// steps (truncate, write, rename), and reading in between would see a half-written file.
pub const DEBOUNCE: Duration = Duration::from_millis(1000);

/// Where the config comes from, to load it again.
#[derive(Clone, Debug, Default)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

/// Loads the config again and publishes it if it changed. Returns whether it changed.
pub fn reload(
    source: &Source,
    tx: &watch::Sender<Arc<Config>>,
    metrics: &Metrics,
) -> Result<bool, ConfigError> {
    match config::load(source.path.as_deref(), &source.overrides) {
        Ok(new) => {
            metrics.reloads_ok.fetch_add(1, Relaxed);
            let old = tx.borrow().clone();
            if *old == new {
                tracing::info!("config reloaded: no change");
                return Ok(false);
            }
            if old.listen != new.listen {
                tracing::warn!("listen addresses changed: they take effect after a restart");
            }
            if old.limits.queue_spans != new.limits.queue_spans {
                tracing::warn!("limits.queue_spans changed: it takes effect after a restart");
            }
            if old.shipping.spool_dir != new.shipping.spool_dir {
                tracing::warn!("shipping.spool_dir changed: it takes effect after a restart");
            }
            tx.send_replace(Arc::new(new));
            tracing::info!("config reloaded and applied");
            Ok(true)
        }
        Err(error) => {
            metrics.reloads_failed.fetch_add(1, Relaxed);
            tracing::error!(%error, "config reload rejected; the previous config stays in force");
            Err(error)
        }
    }
}

/// Watches the config file and SIGHUP until `stop`.
pub async fn run(
    source: Source,
    tx: Arc<watch::Sender<Arc<Config>>>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let (ev_tx, mut ev_rx) = mpsc::channel::<()>(16);
    let _watcher = source.path.as_deref().and_then(|p| watch_file(p, ev_tx));
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let sighup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let sighup = std::future::pending::<Option<()>>();
        tokio::select! {
            _ = stop.changed() => return,
            _ = sighup => {
                tracing::info!("SIGHUP: reloading config");
                let _ = reload(&source, &tx, &metrics);
            }
            Some(()) = ev_rx.recv() => {
                // Debounce: wait until events stop for DEBOUNCE.
                loop {
                    tokio::select! {
                        more = tokio::time::timeout(DEBOUNCE, ev_rx.recv()) => match more {
                            Ok(Some(())) => continue,
                            _ => break,
                        },
                        _ = stop.changed() => return,
                    }
                }
                let _ = reload(&source, &tx, &metrics);
            }
        }
    }
}

/// Watches the file's directory (editors replace files by renaming, which a watch on the file
/// itself would lose) and forwards events about the file.
fn watch_file(path: &Path, tx: mpsc::Sender<()>) -> Option<notify::RecommendedWatcher> {
    let path = std::path::absolute(path).ok()?;
    let dir = path.parent()?.to_owned();
    let name = path.file_name()?.to_owned();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev {
            if ev
                .paths
                .iter()
                .any(|p| p.file_name() == Some(name.as_os_str()))
                && !ev.kind.is_access()
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

//! Child processes of the stack (Redis, the board, the partner) and the watchdog that tidies
//! up after us if this process dies without running its shutdown (killed, or a test that
//! panicked).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::Mutex;

/// A running child; its output goes to `<logs>/<name>.log`. Killed when dropped.
pub struct Child {
    pub name: String,
    pub pid: u32,
    inner: Mutex<tokio::process::Child>,
}

impl Child {
    pub fn spawn(
        name: &str,
        mut cmd: tokio::process::Command,
        logs: &Path,
    ) -> anyhow::Result<Child> {
        std::fs::create_dir_all(logs).with_context(|| format!("creating {}", logs.display()))?;
        let log_path = logs.join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let program = cmd.as_std().get_program().to_string_lossy().into_owned();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({program})"))?;
        let pid = child.id().context("child without a pid")?;
        // Only if that pid is still our child's program (pids are reused).
        let program = program.replace('\'', "");
        watchdog(&[format!(
            "tr '\\0' ' ' </proc/{pid}/cmdline | grep -qF '{program}' && kill -TERM {pid}"
        )]);
        Ok(Child {
            name: name.to_owned(),
            pid,
            inner: Mutex::new(child),
        })
    }

    /// SIGTERM (the child flushes and exits), then SIGKILL after 5 s.
    pub async fn stop(&self) {
        let mut child = self.inner.lock().await;
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = tokio::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            tracing::warn!(name = %self.name, "did not stop within 5 s; killing it");
            let _ = child.kill().await;
        }
    }

    /// Whether the child has exited (and how).
    pub async fn exited(&self) -> Option<std::process::ExitStatus> {
        self.inner.lock().await.try_wait().ok().flatten()
    }
}

/// Runs `commands` (shell) once this process is gone, however it ends. The commands must be
/// harmless when what they stop has already been stopped.
pub fn watchdog(commands: &[String]) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {}",
        commands
            .iter()
            .map(|c| format!("{c} >/dev/null 2>&1"))
            .collect::<Vec<_>>()
            .join("; "),
        pid = std::process::id(),
    );
    // Detached on purpose: it must outlive us. It exits by itself once we are gone.
    #[allow(clippy::zombie_processes)]
    let spawned = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if let Err(error) = spawned {
        tracing::warn!(%error, "no watchdog: a crash may leave servers running");
    }
}

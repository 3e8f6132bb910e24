//! Debian's `chromium`, headless, for the browser tests: a screenshot of a page, with the
//! flags that work as root in a container (no sandbox, no GPU, no background networking) and
//! a throw-away profile. `CHROMIUM` overrides `/usr/bin/chromium`; `./scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The chromium binary; panics with how to install it when it is missing.
pub fn binary() -> PathBuf {
    let bin = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        bin.exists(),
        "{} is missing: install Debian's chromium (`apt-get install -y chromium`; ./scripts/test does it) or set CHROMIUM",
        bin.display()
    );
    bin
}

/// `target/screenshots/` of the workspace (kept as CI output), created.
pub fn screenshots_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).expect("creating target/screenshots");
    dir
}

/// Loads `url` headless in a 1400×1100 window, lets its scripts run for `budget_ms` of virtual
/// time, and saves a screenshot to `shot`; `extra` flags are added (e.g. console logging).
/// Panics when no screenshot was written. Returns chromium's output.
pub fn screenshot(url: &str, shot: &Path, budget_ms: u32, extra: &[&str]) -> Output {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let _ = std::fs::remove_file(shot);
    let out = Command::new(binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1100",
        ])
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .env("HOME", profile.path())
        .output()
        .expect("running chromium");
    assert!(
        shot.exists() && std::fs::metadata(shot).map(|m| m.len()).unwrap_or(0) > 1000,
        "no screenshot of {url}: status {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

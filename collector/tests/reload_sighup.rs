//! Config reload through SIGHUP. Its own test binary: the signal goes to the whole process,
//! and would reload the collectors of other tests too (some count reloads, some rewrite their
//! file meanwhile).

mod common;

use std::time::{Duration, Instant};

use common::start;
use stormwatch_collector::config::{Config, Flags};

fn reloads(metrics: &str, result: &str) -> u64 {
    let prefix = format!("stormwatch_collector_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn sighup_reloads_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "ingest_tokens = [\"ingest-token-0123456789\"]\n[alerts]\ndefault_rules = false\n",
    )
    .unwrap();
    let db = stormwatch_testkit::fresh_database().await;
    let c = start(
        Config::load(Flags {
            config: Some(path.clone()),
            database_url: Some(db),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        })
        .unwrap(),
    )
    .await;
    // No file event has come (the file was written before the watch began); wait out a
    // debounce anyway, then count.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = reloads(&c.metrics().await, "applied");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&c.metrics().await, "applied") <= before {
        assert!(Instant::now() < deadline, "SIGHUP reloads the config");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.stop().await;
}

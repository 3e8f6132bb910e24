//! Config reload through a real file change and through SIGHUP: what can change live applies,
//! restart-only keys keep their running values, a broken file keeps the config in force.
//! SIGHUP is tested in `reload_sighup.rs`, alone in its process.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{start, Running};
use stormwatch_collector::config::{Config, Flags};

const OLD_TOKEN: &str = "old-ingest-token-0123456789";
const NEW_TOKEN: &str = "new-ingest-token-0123456789";
const READ_TOKEN: &str = "read-token-0123456789abcdef";

async fn start_with_file(path: &Path) -> Running {
    let db = stormwatch_testkit::fresh_database().await;
    let config = Config::load(Flags {
        config: Some(path.to_owned()),
        database_url: Some(db),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .unwrap();
    start(config).await
}

/// Polls `check` every 100 ms for 10 s at most.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what} within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn services_status(c: &Running) -> u16 {
    reqwest::get(c.endpoint("/api/v1/services"))
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn reloads(metrics: &str, result: &str) -> u64 {
    let prefix = format!("stormwatch_collector_config_reloads_total{{result=\"{result}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn a_saved_edit_applies_live_keys_and_keeps_restart_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        format!("ingest_tokens = [\"{OLD_TOKEN}\"]\nretention_days = 7\n[alerts]\ndefault_rules = false\n"),
    )
    .unwrap();
    let c = start_with_file(&path).await;
    assert_eq!(services_status(&c).await, 200, "open without read tokens");
    let addr = c.state().config().listen;

    // Live: ingest and read tokens, the rules. Restart-only: retention_days, listen.
    std::fs::write(
        &path,
        format!(
            "ingest_tokens = [\"{NEW_TOKEN}\"]\nread_tokens = [\"{READ_TOKEN}\"]\nretention_days = 30\nlisten = \"127.0.0.1:1\"\n\
             [alerts]\ndefault_rules = false\n[[alerts.rules]]\nname = \"lag\"\nkind = \"replication_lag\"\nthreshold = 5\n"
        ),
    )
    .unwrap();
    until("the edit is applied", || {
        c.state().config().ingest_tokens == [NEW_TOKEN]
    })
    .await;
    let config = c.state().config();
    assert_eq!(config.read_tokens, [READ_TOKEN]);
    assert_eq!(config.retention_days, 7, "restart-only: the running value");
    assert_eq!(config.listen, addr, "restart-only: the running value");
    assert_eq!(c.alerts().config().rules.len(), 1);
    assert_eq!(services_status(&c).await, 401, "read tokens apply at once");
    let ok = reqwest::Client::new()
        .get(c.endpoint("/api/v1/services"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // A broken edit (a short token: it would not start) is rejected whole.
    std::fs::write(&path, "ingest_tokens = [\"short\"]\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(&c.metrics().await, "rejected") == 0 {
        assert!(Instant::now() < deadline, "the broken edit is rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.state().config().ingest_tokens, [NEW_TOKEN]);
    assert_eq!(c.alerts().config().rules.len(), 1);
    c.stop().await;
}

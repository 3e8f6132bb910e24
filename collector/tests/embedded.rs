//! The embedded default: no database URL, an empty data directory.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{start, TOKEN};
use stormwatch_collector::Config;

#[tokio::test]
async fn starts_from_an_empty_data_dir_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    // PostgreSQL may run as `postgres` (when tests run as root): it must reach the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("data");
    let config = || {
        let mut c = Config::for_tests("unused", TOKEN);
        c.database_url = None;
        c.data_dir = data_dir.clone();
        c
    };

    let c = start(config()).await;
    assert!(
        data_dir.join("postgres/PG_VERSION").is_file(),
        "the cluster lives in the data dir"
    );
    assert_eq!(
        shared_buffers_mib(&data_dir).await,
        stormwatch_store::embedded::default_shared_buffers_mib(),
        "by default a quarter of the memory"
    );
    let batch = stormwatch_testkit::sample::batch("agent-emb", 1, 12, stormwatch_store::now_ns());
    c.ingest(&batch).await;
    c.stop().await;
    assert!(
        !data_dir.join("postgres/postmaster.pid").exists(),
        "PostgreSQL stopped with the collector"
    );

    // Second start: same cluster, same data, the buffers the config asks for.
    let c = start(Config {
        embedded_shared_buffers_mib: Some(48),
        ..config()
    })
    .await;
    assert_eq!(shared_buffers_mib(&data_dir).await, 48);
    let v: serde_json::Value = reqwest::get(c.endpoint("/api/v1/services"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["services"][0]["count"], 12);
    c.stop().await;
    assert!(!data_dir.join("postgres/postmaster.pid").exists());
}

/// The running cluster's `shared_buffers` in MiB, read through its socket in the data dir.
async fn shared_buffers_mib(data_dir: &std::path::Path) -> u64 {
    let conn = format!(
        "host={} user={} dbname=postgres",
        data_dir.join("postgres").display(),
        stormwatch_store::embedded::SUPERUSER
    );
    let (client, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let row = client
        .query_one(
            "SELECT setting::int8 * 8 / 1024 FROM pg_settings WHERE name = 'shared_buffers'",
            &[],
        )
        .await
        .unwrap();
    row.get::<_, i64>(0) as u64
}

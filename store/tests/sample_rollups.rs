//! The probe and host rollups (migration 0021) against a real PostgreSQL: what the pages read
//! from them equals what the raw samples say, whether ingest kept them batch by batch or the
//! migration built them from samples stored before it.

use stormwatch_model::{Batch, DbRole, FailureClass, HostSample, ProbeSample};
use stormwatch_store::{ProbeHeatCell, ProbedDay, Store, StoreOptions};
use stormwatch_testkit::fresh_database;

const NS: i64 = 1_000_000_000;
/// 2026-11-30T00:00:00Z: the samples cover the 2 hours from 09:00 that day.
const DAY_S: i64 = 1_764_460_800;
const FROM_S: i64 = DAY_S + 9 * 3_600;
const TO_S: i64 = FROM_S + 2 * 3_600;

/// Samples every 10 s of `main` (primary: refused 10:00–10:12, connects of 150 ms 10:30–10:33,
/// not probed 10:40–10:50) and `main-replica` (lag growing to 40 s at 09:55), and of one
/// host, split into batches of 7 minutes so that batches share minutes and hours.
fn batches() -> Vec<Batch> {
    let mut probes = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..(TO_S - FROM_S) / 10 {
        let t = FROM_S + i * 10;
        let minute = (t - FROM_S) / 60; // minutes since 09:00
        let refused = (60..72).contains(&minute);
        let slow = (90..93).contains(&minute);
        if !(100..110).contains(&minute) {
            probes.push(ProbeSample {
                time_ns: t * NS,
                database: "main".into(),
                engine: "mysql".into(),
                role: DbRole::Primary as i32,
                connect_us: (!refused).then_some(if slow { 150_000 } else { 1_000 + i % 9 * 100 }),
                failure: if refused {
                    FailureClass::Refused
                } else {
                    FailureClass::None
                } as i32,
                ..Default::default()
            });
        }
        probes.push(ProbeSample {
            time_ns: t * NS,
            database: "main-replica".into(),
            engine: "mysql".into(),
            role: DbRole::Replica as i32,
            connect_us: Some(900),
            lag_seconds: Some(if (50..56).contains(&minute) {
                (minute - 49) as f64 * 7.0
            } else {
                0.3
            }),
            ..Default::default()
        });
        hosts.push(HostSample {
            time_ns: t * NS,
            host: "app-1".into(),
            cpu_percent: (i % 13) as f64 * 7.5,
            mem_used_bytes: (1 << 30) + (i as u64 % 11) * (1 << 20),
            mem_total_bytes: 4 << 30,
            load1: (i % 5) as f64 * 0.25,
            net_rx_bytes_per_s: 1_000 + i as u64 * 3,
            net_tx_bytes_per_s: 500 + i as u64,
            ..Default::default()
        });
    }
    let per_batch = 7 * 6;
    let mut out = Vec::new();
    for (n, hs) in hosts.chunks(per_batch).enumerate() {
        let (from, to) = (hs[0].time_ns, hs[hs.len() - 1].time_ns);
        out.push(Batch {
            agent_id: "agent-a".into(),
            sequence: (n + 1) as u64,
            hosts: hs.to_vec(),
            probes: probes
                .iter()
                .filter(|p| (from..=to).contains(&p.time_ns))
                .cloned()
                .collect(),
            ..Default::default()
        });
    }
    out
}

async fn stored() -> (String, Store) {
    let url = fresh_database().await;
    let store = Store::connect(&StoreOptions {
        url: url.clone(),
        max_connections: 4,
        retention_days: 36_500,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    for b in batches() {
        store.store_batch(&b, TO_S * NS).await.unwrap();
    }
    (url, store)
}

/// (database, role, t, samples, failures, refused, mean connect ms, max connect ms, max lag)
/// as the raw samples give them per `step`.
type ProbeRow = (
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
    Option<f64>,
);

async fn raw_probe_series(db: &tokio_postgres::Client, step: i64) -> Vec<ProbeRow> {
    db.query(
        "SELECT database, role, (floor(extract(epoch FROM time)::float8 / $1::float8) * $1::float8 * 1000)::int8 AS t,
                count(*), count(*) FILTER (WHERE failure <> 'none'),
                count(*) FILTER (WHERE failure = 'refused'),
                avg(connect_us)::float8 / 1000, max(connect_us)::float8 / 1000, max(lag_seconds)
           FROM sw_probe_samples GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
        &[&(step as f64)],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get(0),
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            r.get(6),
            r.get(7),
            r.get(8),
        )
    })
    .collect()
}

async fn read_probe_series(store: &Store, step: i64) -> Vec<ProbeRow> {
    store
        .probe_series(FROM_S, TO_S, step)
        .await
        .unwrap()
        .into_iter()
        .map(|p| {
            assert_eq!(p.agent_id, "agent-a");
            (
                p.database,
                p.role,
                p.time_ms,
                p.samples,
                p.failures,
                p.refused,
                p.connect_ms_avg,
                p.connect_ms_max,
                p.lag_seconds_max,
            )
        })
        .collect()
}

fn close(a: &[ProbeRow], b: &[ProbeRow]) -> bool {
    let near = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        (x, y) => x == y,
    };
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            (&x.0, &x.1, x.2, x.3, x.4, x.5) == (&y.0, &y.1, y.2, y.3, y.4, y.5)
                && near(x.6, y.6)
                && near(x.7, y.7)
                && near(x.8, y.8)
        })
}

async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (db, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    db
}

#[tokio::test]
async fn probe_series_from_the_rollups_equal_the_raw_samples() {
    let (url, store) = stored().await;
    let db = raw_client(&url).await;
    for step in [60, 300, 3_600, 7_200] {
        let raw = raw_probe_series(&db, step).await;
        let read = read_probe_series(&store, step).await;
        assert!(close(&read, &raw), "step {step}:\n{read:?}\n{raw:?}");
    }
    // 12 refused minutes, 6 probes each.
    let hourly = read_probe_series(&store, 3_600).await;
    let main_10 = hourly
        .iter()
        .find(|r| r.0 == "main" && r.2 == (FROM_S + 3_600) * 1000)
        .unwrap();
    assert_eq!((main_10.4, main_10.5), (72, 72));
    // A step that is not whole minutes reads the raw samples.
    let read = read_probe_series(&store, 90).await;
    assert!(close(&read, &raw_probe_series(&db, 90).await));
}

#[tokio::test]
async fn host_series_from_the_rollups_equal_the_raw_samples() {
    let (url, store) = stored().await;
    let db = raw_client(&url).await;
    for step in [60, 600, 3_600] {
        let raw: Vec<(i64, f64, f64, i64, f64, f64, f64)> = db
            .query(
                "SELECT (floor(extract(epoch FROM time)::float8 / $1::float8) * $1::float8 * 1000)::int8 AS t,
                        avg(cpu_percent), avg(mem_used_bytes)::float8, max(mem_total_bytes),
                        avg(net_rx_bytes_per_s)::float8, avg(net_tx_bytes_per_s)::float8, avg(load1)
                   FROM sw_host_samples GROUP BY 1 ORDER BY 1",
                &[&(step as f64)],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))
            .collect();
        let read = store.host_series(FROM_S, TO_S, step).await.unwrap();
        assert_eq!(read.len(), raw.len(), "step {step}");
        for (p, r) in read.iter().zip(&raw) {
            assert_eq!((p.agent_id.as_str(), p.host.as_str()), ("agent-a", "app-1"));
            assert_eq!((p.time_ms, p.mem_total_bytes), (r.0, r.3));
            for (got, want) in [
                (p.cpu_percent, r.1),
                (p.mem_used_bytes, r.2),
                (p.net_rx_bytes_per_s, r.4),
                (p.net_tx_bytes_per_s, r.5),
                (p.load1, r.6),
            ] {
                assert!(
                    (got - want).abs() < 1e-6 * want.abs().max(1.0),
                    "step {step}: {got} vs {want}"
                );
            }
        }
    }
}

#[tokio::test]
async fn heatmap_names_probed_minutes_and_bad_slices_only() {
    let (_, store) = stored().await;
    let heat = store.probe_heatmap(DAY_S, DAY_S + 86_400, 5).await.unwrap();
    let day = DAY_S / 86_400;
    assert_eq!(
        heat.probed,
        vec![
            ProbedDay {
                database: "main".into(),
                day,
                runs: vec![(540, 640), (650, 660)],
            },
            ProbedDay {
                database: "main-replica".into(),
                day,
                runs: vec![(540, 660)],
            },
        ]
    );
    let cell = |minute_of_day, failures, slow| ProbeHeatCell {
        database: "main".into(),
        day,
        minute_of_day,
        samples: 30,
        failures,
        slow,
    };
    // Refused 10:00–10:12: two whole slices and two minutes of the third; slow 10:30–10:33.
    assert_eq!(
        heat.cells,
        vec![
            cell(600, 30, 0),
            cell(605, 30, 0),
            cell(610, 12, 0),
            cell(630, 0, 18)
        ]
    );
}

/// The heatmap's bad slices as the raw samples give them, `bucket` minutes wide.
async fn raw_heat_cells(db: &tokio_postgres::Client, bucket: i32) -> Vec<ProbeHeatCell> {
    db.query(
        "SELECT database, (floor(extract(epoch FROM time) / ($1 * 60)) * ($1 * 60))::int8 AS cell,
                count(*), count(*) FILTER (WHERE failure <> 'none'),
                count(*) FILTER (WHERE failure = 'none' AND connect_us >= 100000)
           FROM sw_probe_samples GROUP BY 1, 2
         HAVING count(*) FILTER (WHERE failure <> 'none' OR connect_us >= 100000) > 0
          ORDER BY 1, 2",
        &[&bucket],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        let cell: i64 = r.get(1);
        ProbeHeatCell {
            database: r.get(0),
            day: cell.div_euclid(86_400),
            minute_of_day: (cell.rem_euclid(86_400) / 60) as i32,
            samples: r.get(2),
            failures: r.get(3),
            slow: r.get(4),
        }
    })
    .collect()
}

#[tokio::test]
async fn heatmap_slices_equal_the_raw_samples_whatever_the_width_and_series() {
    let (url, store) = stored().await;
    // A second agent probes `main` from 10:00 to 10:20, healthy but for one timeout at 10:02:
    // `main`'s slices then add up two series.
    let probes = (0..120)
        .map(|i| ProbeSample {
            time_ns: (FROM_S + 3_600 + i * 10) * NS,
            database: "main".into(),
            engine: "mysql".into(),
            role: DbRole::Primary as i32,
            connect_us: (i != 12).then_some(2_000),
            failure: if i == 12 {
                FailureClass::Timeout
            } else {
                FailureClass::None
            } as i32,
            ..Default::default()
        })
        .collect();
    let batch = Batch {
        agent_id: "agent-b".into(),
        sequence: 1,
        probes,
        ..Default::default()
    };
    store.store_batch(&batch, TO_S * NS).await.unwrap();
    let db = raw_client(&url).await;
    // 5 and 15: from the 5-minute rows; 3 and 1: from the minute rows.
    for bucket in [5, 15, 3, 1] {
        let heat = store
            .probe_heatmap(DAY_S, DAY_S + 86_400, bucket)
            .await
            .unwrap();
        assert_eq!(
            heat.cells,
            raw_heat_cells(&db, bucket).await,
            "bucket {bucket}"
        );
    }
    let heat = store.probe_heatmap(DAY_S, DAY_S + 86_400, 5).await.unwrap();
    // 10:00: agent-a refused 30, agent-b timed out once in 30 probes.
    assert_eq!(
        (
            heat.cells[0].minute_of_day,
            heat.cells[0].samples,
            heat.cells[0].failures
        ),
        (600, 60, 31)
    );
}

#[tokio::test]
async fn migration_builds_the_rollups_ingest_keeps() {
    let (url, store) = stored().await;
    let db = raw_client(&url).await;
    let rows = |table: &'static str| {
        let db = &db;
        async move {
            db.query(
                &format!("SELECT t::text FROM {table} t ORDER BY t::text"),
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
        }
    };
    let (probes, hosts) = (
        rows("sw_probe_rollups").await,
        rows("sw_host_rollups").await,
    );
    // Two hours: 120 minute rows, 24 five-minute rows (0026) and 2 hour rows per series
    // (main: 10 minutes, two slices, not probed).
    assert_eq!(probes.len(), 2 * (120 + 24 + 2) - 10 - 2);
    assert_eq!(hosts.len(), 120 + 2);
    db.batch_execute(
        "DROP TABLE sw_probe_rollups, sw_host_rollups;
         DELETE FROM sw_migrations WHERE name LIKE '0021_%' OR name LIKE '0026_%'",
    )
    .await
    .unwrap();
    assert_eq!(store.migrate().await.unwrap(), 2);
    assert_eq!(rows("sw_probe_rollups").await, probes);
    assert_eq!(rows("sw_host_rollups").await, hosts);
}

/// Every column of a batch's host and probe samples, as stored in one statement each: set and
/// absent optional values, several disks, a probe's failure and engine detail.
#[tokio::test]
async fn samples_are_stored_column_for_column() {
    let (store, db) = stormwatch_testkit::fresh_store_and_client().await;
    let host = |i: u64| HostSample {
        time_ns: (FROM_S + i as i64 * 10) * NS,
        host: format!("app-{i}"),
        cpu_percent: 12.5 * i as f64,
        mem_used_bytes: 1 << (30 + i),
        mem_total_bytes: 8 << 30,
        load1: 0.5 + i as f64,
        load5: 0.25 + i as f64,
        load15: 0.125 + i as f64,
        net_rx_bytes_per_s: 1_000 * i,
        net_tx_bytes_per_s: 500 * i,
        process_count: 100 + i as u32,
        disks: (0..i)
            .map(|d| stormwatch_model::DiskUsage {
                mount: format!("/d{d}"),
                used_bytes: d * 10,
                total_bytes: 100,
            })
            .collect(),
        app_cpu_percent: (i % 2 == 1).then_some(3.5),
        app_rss_bytes: (i % 2 == 1).then_some(64 << 20),
        app_threads: (i % 2 == 1).then_some(17),
    };
    let probe = |i: i64| ProbeSample {
        time_ns: (FROM_S + i * 10) * NS,
        database: format!("db-{i}"),
        engine: "postgres".into(),
        role: if i == 0 {
            DbRole::Primary
        } else {
            DbRole::Replica
        } as i32,
        connect_us: (i == 0).then_some(1_200),
        query_us: (i == 0).then_some(300),
        failure: if i == 0 {
            FailureClass::None
        } else {
            FailureClass::Refused
        } as i32,
        failure_message: if i == 0 { "" } else { "connection refused" }.into(),
        lag_seconds: (i == 1).then_some(4.5),
        lag_bytes: (i == 1).then_some(81_920),
        replay_paused: i == 1,
        detail: [("io_thread".to_owned(), format!("state {i}"))].into(),
    };
    let batch = Batch {
        agent_id: "agent-cols".into(),
        sequence: 1,
        hosts: (0..3).map(host).collect(),
        probes: (0..2).map(probe).collect(),
        ..Default::default()
    };
    let outcome = store.store_batch(&batch, TO_S * NS).await.unwrap();
    assert_eq!(outcome.samples, 5);

    let hosts = db
        .query(
            "SELECT extract(epoch FROM time)::int8, agent_id, host, cpu_percent, mem_used_bytes,
                    mem_total_bytes, load1, load5, load15, net_rx_bytes_per_s, net_tx_bytes_per_s,
                    process_count, disks, app_cpu_percent, app_rss_bytes, app_threads
               FROM sw_host_samples ORDER BY time",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(hosts.len(), 3);
    for (r, h) in hosts.iter().zip(&batch.hosts) {
        assert_eq!(r.get::<_, i64>(0) * NS, h.time_ns);
        assert_eq!(r.get::<_, &str>(1), "agent-cols");
        assert_eq!(r.get::<_, &str>(2), h.host);
        assert_eq!(r.get::<_, f64>(3), h.cpu_percent);
        assert_eq!(r.get::<_, i64>(4) as u64, h.mem_used_bytes);
        assert_eq!(r.get::<_, i64>(5) as u64, h.mem_total_bytes);
        assert_eq!(
            (r.get::<_, f64>(6), r.get::<_, f64>(7), r.get::<_, f64>(8)),
            (h.load1, h.load5, h.load15)
        );
        assert_eq!(r.get::<_, i64>(9) as u64, h.net_rx_bytes_per_s);
        assert_eq!(r.get::<_, i64>(10) as u64, h.net_tx_bytes_per_s);
        assert_eq!(r.get::<_, i32>(11) as u32, h.process_count);
        assert_eq!(
            r.get::<_, serde_json::Value>(12),
            serde_json::to_value(&h.disks).unwrap()
        );
        assert_eq!(r.get::<_, Option<f64>>(13), h.app_cpu_percent);
        assert_eq!(
            r.get::<_, Option<i64>>(14).map(|v| v as u64),
            h.app_rss_bytes
        );
        assert_eq!(r.get::<_, Option<i32>>(15).map(|v| v as u32), h.app_threads);
    }

    let probes = db
        .query(
            "SELECT extract(epoch FROM time)::int8, agent_id, database, engine, role, connect_us,
                    query_us, failure, failure_message, lag_seconds, lag_bytes, replay_paused,
                    detail
               FROM sw_probe_samples ORDER BY time",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(probes.len(), 2);
    for (r, p) in probes.iter().zip(&batch.probes) {
        assert_eq!(r.get::<_, i64>(0) * NS, p.time_ns);
        assert_eq!(r.get::<_, &str>(1), "agent-cols");
        assert_eq!(r.get::<_, &str>(2), p.database);
        assert_eq!(r.get::<_, &str>(3), p.engine);
        let primary = p.role == DbRole::Primary as i32;
        assert_eq!(
            r.get::<_, &str>(4),
            if primary { "primary" } else { "replica" }
        );
        assert_eq!(r.get::<_, Option<i64>>(5), p.connect_us);
        assert_eq!(r.get::<_, Option<i64>>(6), p.query_us);
        assert_eq!(
            r.get::<_, &str>(7),
            if primary { "none" } else { "refused" }
        );
        assert_eq!(
            r.get::<_, Option<&str>>(8),
            (!p.failure_message.is_empty()).then_some(p.failure_message.as_str())
        );
        assert_eq!(r.get::<_, Option<f64>>(9), p.lag_seconds);
        assert_eq!(r.get::<_, Option<i64>>(10), p.lag_bytes);
        assert_eq!(r.get::<_, bool>(11), p.replay_paused);
        assert_eq!(
            r.get::<_, serde_json::Value>(12),
            serde_json::to_value(&p.detail).unwrap()
        );
    }
}

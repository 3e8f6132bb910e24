//! Ingest benchmark: ≥ 1M spans through the HTTP API of a real collector process into
//! PostgreSQL, next to the raw binary-COPY rate of the same spans into the same table (the
//! physical limit of this machine). Prints numbers; asserts nothing.
//!
//! `cargo bench -p stormwatch-collector --bench ingest` (env: BENCH_SPANS, BENCH_BATCH,
//! BENCH_CONCURRENCY). PostgreSQL is the test harness's cluster (fsync off for both runs).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stormwatch_model::{Batch, Encoding, SpanRef};
use stormwatch_store::{Store, StoreOptions};
use stormwatch_testkit::{postgres, sample};

const TOKEN: &str = "bench-token-0123456789abcdef";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn migrated(url: &str) -> Store {
    let store = Store::connect(&StoreOptions {
        url: url.into(),
        max_connections: 8,
        retention_days: 7,
    })
    .await
    .unwrap();
    store.migrate().await.unwrap();
    if std::env::var_os("BENCH_DROP_TRACE_INDEX").is_some() {
        // Experiment knob: what the trace-id index costs at ingest.
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .batch_execute("DROP INDEX sw_spans_trace")
            .await
            .unwrap();
    }
    store
        .create_partitions_ahead(stormwatch_store::now_ns())
        .await
        .unwrap();
    store
}

/// Raw binary COPY of every span, `parallel` connections each copying its share in batches.
async fn raw_copy(url: &str, store: &Arc<Store>, batches: &[Batch], parallel: usize) -> f64 {
    let spans: usize = batches.iter().map(|b| b.spans.len()).sum();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for part in 0..parallel {
        let (url, store) = (url.to_owned(), store.clone());
        let mine: Vec<Batch> = batches
            .iter()
            .skip(part)
            .step_by(parallel)
            .cloned()
            .collect();
        tasks.push(tokio::spawn(async move {
            let (mut client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            for b in &mine {
                // Labels as ids and attributes compressed, as `Store::store_batch` does.
                let refs: Vec<SpanRef<'_>> = b.spans.iter().map(SpanRef::from).collect();
                let spans = store.encode_spans(refs.iter()).await.unwrap();
                let tx = client.transaction().await.unwrap();
                stormwatch_store::batches::copy_spans(&tx, &spans)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    spans as f64 / started.elapsed().as_secs_f64()
}

async fn truncate(url: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute("TRUNCATE sw_spans, sw_aggregates, sw_batches, sw_host_samples; CHECKPOINT")
        .await
        .unwrap();
}

#[tokio::main]
async fn main() {
    let total = env_or("BENCH_SPANS", 1_000_000);
    let per_batch = env_or("BENCH_BATCH", 5_000);
    let concurrency = env_or("BENCH_CONCURRENCY", 4);
    let n_batches = total.div_ceil(per_batch);
    let pg = postgres();
    let now = stormwatch_store::now_ns();
    eprintln!("generating {total} spans in {n_batches} batches of {per_batch}...");
    let batches: Vec<Batch> = (0..n_batches)
        .map(|i| sample::batch("bench-agent", i as u64 + 1, per_batch, now))
        .collect();
    let bodies: Vec<Vec<u8>> = batches
        .iter()
        .map(|b| zstd::encode_all(&b.encode(Encoding::Protobuf)[..], 1).unwrap())
        .collect();
    let body_mib = bodies.iter().map(Vec::len).sum::<usize>() as f64 / (1 << 20) as f64;
    let spans = (n_batches * per_batch) as f64;

    // The physical limit: raw COPY into the same table, best of 1, 2 and 4 connections.
    let raw_db = pg.fresh_database().await;
    let raw_store = Arc::new(migrated(&raw_db).await);
    let mut raw_best: f64 = 0.0;
    for parallel in [1, 2, 4] {
        truncate(&raw_db).await;
        let rate = raw_copy(&raw_db, &raw_store, &batches, parallel).await;
        println!("raw binary COPY, {parallel} connection(s): {rate:>10.0} spans/s");
        raw_best = raw_best.max(rate);
    }

    // The product: a release collector process, spans over HTTP.
    let api_db = pg.fresh_database().await;
    drop(migrated(&api_db).await);
    let port = stormwatch_store::embedded::free_loopback_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_stormwatch-collector"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            &api_db,
        ])
        .env("STORMWATCH_INGEST_TOKENS", TOKEN)
        .env("STORMWATCH_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("collector binary");
    let pid = child.id();
    let _guard = Killed(child);
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_idle = peak_rss_mib(pid);
    let started = Instant::now();
    let queue = std::sync::Arc::new(std::sync::Mutex::new(
        bodies.into_iter().collect::<Vec<_>>(),
    ));
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (queue, client, url) = (
            queue.clone(),
            client.clone(),
            format!("{base}/api/v1/ingest"),
        );
        workers.push(tokio::spawn(async move {
            loop {
                let Some(body) = queue.lock().unwrap().pop() else {
                    break;
                };
                let resp = client
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .header("content-type", "application/x-protobuf")
                    .header("content-encoding", "zstd")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert!(
                    resp.status().is_success(),
                    "ingest failed: {}",
                    resp.text().await.unwrap_or_default()
                );
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let api_rate = spans / elapsed;
    let rss_peak = peak_rss_mib(pid);

    let (client_db, conn) = tokio_postgres::connect(&api_db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let stored: i64 = client_db
        .query_one("SELECT count(*) FROM sw_spans", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored as f64, spans, "every span must be stored");

    println!("collector over HTTP ({concurrency} clients, {per_batch}-span protobuf+zstd batches, {body_mib:.1} MiB sent):");
    println!("  {api_rate:>10.0} spans/s  ({elapsed:.2} s for {spans} spans, all stored)");
    println!(
        "  {:>10.1} % of the raw COPY limit ({raw_best:.0} spans/s)",
        100.0 * api_rate / raw_best
    );
    println!("  peak RSS of the collector: {rss_peak:.1} MiB (idle {rss_idle:.1} MiB)");
}

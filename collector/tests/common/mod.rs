//! A real collector on a loopback port, over a fresh database of the shared test PostgreSQL.

#![allow(dead_code)]

use std::net::SocketAddr;

use stormwatch_collector::{Collector, Config};
use stormwatch_model::{Batch, Encoding, WIRE_VERSION};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token-0123456789abcdef";

static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// An empty batch of `agent` with the next sequence number (unique in this test binary).
pub fn batch_of(agent: &str) -> Batch {
    Batch {
        version: WIRE_VERSION,
        agent_id: agent.into(),
        instance: "i-1".into(),
        sequence: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        ..Default::default()
    }
}

pub struct Running {
    pub addr: SocketAddr,
    pub url: String,
    state: std::sync::Arc<stormwatch_collector::AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    pub fn state(&self) -> &stormwatch_collector::AppState {
        &self.state
    }

    pub fn alerts(&self) -> &stormwatch_collector::alerts::AlertsRuntime {
        &self.state.alerts
    }

    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The text of `GET /metrics`.
    #[allow(dead_code)] // not every test binary reads metrics
    pub async fn metrics(&self) -> String {
        reqwest::get(self.endpoint("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Posts `batch` to the ingest API as protobuf; it must be accepted (200).
    pub async fn ingest(&self, batch: &Batch) {
        let r = reqwest::Client::new()
            .post(self.endpoint("/api/v1/ingest"))
            .bearer_auth(TOKEN)
            .header("content-type", "application/x-protobuf")
            .body(batch.encode(Encoding::Protobuf))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }

    /// Graceful shutdown; waits until the collector has stopped.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await
                .expect("collector task")
                .expect("collector stopped cleanly");
        }
    }
}

pub async fn start(config: Config) -> Running {
    let collector = Collector::start(config).await.expect("collector starts");
    let addr = collector.local_addr();
    let state = collector.state.clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(collector.serve(async move {
        let _ = rx.await;
    }));
    Running {
        addr,
        url: format!("http://{addr}"),
        state,
        stop: Some(tx),
        task: Some(task),
    }
}

/// A collector over a fresh database, with [`TOKEN`].
pub async fn start_fresh() -> (Running, String) {
    let db = stormwatch_testkit::fresh_database().await;
    (start(Config::for_tests(&db, TOKEN)).await, db)
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// zstd as the agent compresses a body: whole, its frame saying how large it decompresses to.
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::bulk::compress(data, 1).unwrap()
}

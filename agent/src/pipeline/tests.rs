use super::*;
use crate::config::{Band, WhenFull};
use crate::ingest::Ingest;
use crate::metrics::Receiver;
use crate::ship::body::decode_body;
use stormwatch_model::DependencyClass;

fn span(trace: u8, id: u8, ms: i64) -> Received {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        service: "shop".into(),
        operation: "GET /".into(),
        class: DependencyClass::HttpServer as i32,
        start_ns: now_ns() - ms * 1_000_000,
        duration_ns: ms * 1_000_000,
        ..Default::default()
    }
    .into()
}

struct Running {
    ingest: Ingest,
    spool: Arc<Spool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// A pipeline that keeps only slow spans (and their traces), flushes every 200 ms and
/// waits 300 ms for a trace's decision.
fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let mut cfg = Config::default();
    cfg.sampling.bands = vec![Band {
        below: 1.0,
        share: 0.0,
    }];
    cfg.sampling.trace_window_ms = 300;
    cfg.shipping.flush_interval_ms = 200;
    let spool = Arc::new(
        Spool::open(
            dir.path(),
            crate::ship::spool::Options {
                max_bytes: 1 << 20,
                when_full: WhenFull::DropOldest,
                ..Default::default()
            },
            metrics.clone(),
        )
        .unwrap(),
    );
    let (ingest, rx) = Ingest::new(10_000, metrics.clone());
    let (_, hosts_rx) = mpsc::channel(1);
    let (_, probes_rx) = mpsc::channel(1);
    let (config_tx, config) = watch::channel(Arc::new(cfg));
    // The reloader going away must not stop the pipeline or make it spin.
    drop(config_tx);
    let (stop, stop_rx) = watch::channel(false);
    let pipeline = Pipeline {
        rx,
        hosts_rx,
        probes_rx,
        config,
        spool: spool.clone(),
        seq: Arc::new(Sequencer::new("test".into())),
        metrics,
        versions: ingest.versions.clone(),
        signals: ingest.signals.clone(),
    };
    let task = tokio::spawn(pipeline.run(stop_rx));
    Running {
        ingest,
        spool,
        stop,
        task,
        _dir: dir,
    }
}

/// Every spooled batch, oldest first: (spans' ids, aggregated span count).
async fn spooled(spool: &Spool) -> Vec<(Vec<u8>, u64)> {
    let mut out = Vec::new();
    while let Some(e) = spool.peek() {
        let body = spool.read(&e).await.unwrap();
        let batch = decode_body(&body, e.compression, 1 << 24).unwrap();
        let ids = batch.spans.iter().map(|s| s.span_id[0]).collect();
        let counted = batch.aggregates.iter().map(|a| a.count).sum();
        out.push((ids, counted));
        spool.remove(&e);
    }
    out
}

#[tokio::test]
async fn flushes_and_expires_on_time_without_further_traffic() {
    let p = start();
    // A fast span waits for its trace's decision; nothing else arrives.
    p.ingest
        .submit(Receiver::OtlpHttp, vec![span(1, 1, 1)])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Flushed by the timer: the span is counted, not kept.
    assert_eq!(spooled(&p.spool).await, vec![(vec![], 1)]);
    // Its trace expired by the timer too: a slow span of the same trace now is kept
    // alone. (Had the trace still been waiting, span 1 would be kept with it.)
    p.ingest
        .submit(Receiver::OtlpHttp, vec![span(1, 2, 5_000)])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spooled(&p.spool).await, vec![(vec![2], 1)]);
    // Within the window, the trace is kept whole.
    p.ingest
        .submit(Receiver::OtlpHttp, vec![span(3, 1, 1), span(3, 2, 1)])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    p.ingest
        .submit(Receiver::OtlpHttp, vec![span(3, 3, 5_000)])
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let batches = spooled(&p.spool).await;
    let mut kept: Vec<u8> = batches.iter().flat_map(|b| b.0.clone()).collect();
    kept.sort();
    let counted: u64 = batches.iter().map(|b| b.1).sum();
    assert_eq!((kept, counted), (vec![1, 2, 3], 3));
    // Idle: nothing held, nothing written.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spooled(&p.spool).await, vec![]);
    p.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), p.task)
        .await
        .unwrap()
        .unwrap();
}

//! Shared test helpers: a fake collector that records what it is sent, an agent on free
//! loopback ports, and OTLP request builders.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status, ResourceSpans, ScopeSpans, Span, Status};
use stormwatch_agent::config::Config;
use stormwatch_agent::reload::Source;
use stormwatch_agent::Agent;
use stormwatch_model::{Batch, Encoding};

/// What the fake collector saw.
#[derive(Default)]
pub struct Seen {
    pub batches: Vec<Batch>,
    /// Batches answered anything but 200, decoded, with the answer.
    pub refused: Vec<(u16, Batch)>,
    pub auth: Vec<String>,
    pub attempts: usize,
    /// Answers for the next requests, before `status` applies again.
    pub script: std::collections::VecDeque<u16>,
}

/// A stand-in for the collector's `/api/v1/ingest`: decodes (zstd/gzip) and records batches;
/// answers what `script` says next, else `status` (200 by default), storing only what it
/// answered 200 to (the rest goes to `refused`). Like the real
/// collector, a batch with an already-seen (instance, sequence) is a duplicate, not stored twice.
pub struct FakeCollector {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    pub status: Arc<AtomicU16>,
    /// Batches with more spans than this get 413, like a collector's body limit.
    pub max_spans: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct St {
    seen: Arc<Mutex<Seen>>,
    status: Arc<AtomicU16>,
    max_spans: Arc<AtomicUsize>,
}

async fn ingest(State(st): State<St>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let mut seen = st.seen.lock().unwrap();
    let code = seen
        .script
        .pop_front()
        .unwrap_or_else(|| st.status.load(Ordering::SeqCst));
    seen.attempts += 1;
    seen.auth.push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default(),
    );
    let raw = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("zstd") => zstd::stream::decode_all(&body[..]).unwrap(),
        Some("gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        _ => body.to_vec(),
    };
    let ct = headers.get("content-type").unwrap().to_str().unwrap();
    let mut batch = Batch::decode(&raw, Encoding::from_content_type(ct).unwrap()).unwrap();
    let now = stormwatch_agent::util::now_ns();
    if code != 200 {
        seen.refused.push((code, batch));
        return (
            StatusCode::from_u16(code).unwrap(),
            r#"{"error":"told to fail","field":"spans[0].trace_id"}"#.into(),
        );
    }
    if batch.spans.len() > st.max_spans.load(Ordering::SeqCst) {
        seen.refused.push((413, batch));
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            r#"{"error":"too large"}"#.into(),
        );
    }
    if let Err(e) = stormwatch_model::validate::check_batch(&mut batch, now) {
        seen.refused.push((400, batch));
        return (
            StatusCode::BAD_REQUEST,
            format!(r#"{{"error":"{}","field":"{}"}}"#, e.message, e.field),
        );
    }
    if seen
        .batches
        .iter()
        .any(|b| b.instance == batch.instance && b.sequence == batch.sequence)
    {
        return (StatusCode::OK, r#"{"status":"duplicate"}"#.into());
    }
    seen.batches.push(batch);
    (StatusCode::OK, r#"{"status":"stored"}"#.into())
}

impl FakeCollector {
    pub async fn start() -> FakeCollector {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(addr: SocketAddr) -> FakeCollector {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let status = Arc::new(AtomicU16::new(200));
        let max_spans = Arc::new(AtomicUsize::new(usize::MAX));
        let st = St {
            seen: seen.clone(),
            status: status.clone(),
            max_spans: max_spans.clone(),
        };
        let app = Router::new()
            .route("/api/v1/ingest", post(ingest))
            .with_state(st);
        let l = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(l, app).await.unwrap();
        });
        FakeCollector {
            addr,
            seen,
            status,
            max_spans,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn fail_with(&self, code: u16) {
        self.status.store(code, Ordering::SeqCst);
    }

    /// Answers the next requests with `codes`, in order, then `status` again.
    pub fn script(&self, codes: &[u16]) {
        self.seen.lock().unwrap().script.extend(codes);
    }

    pub fn spans(&self) -> Vec<stormwatch_model::Span> {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| b.spans.clone())
            .collect()
    }

    /// Every version report shipped, in order.
    pub fn versions(&self) -> Vec<stormwatch_model::ServiceVersion> {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| b.versions.clone())
            .collect()
    }

    /// Every row of calls per server operation shipped, in order.
    pub fn entry_calls(&self) -> Vec<stormwatch_model::EntryCall> {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| b.entry_calls.clone())
            .collect()
    }

    /// Every metric point shipped, in order.
    pub fn metric_points(&self) -> Vec<stormwatch_model::MetricPoint> {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| b.metrics.clone())
            .collect()
    }

    /// Every log record shipped, in order.
    pub fn log_records(&self) -> Vec<stormwatch_model::LogRecord> {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| b.logs.clone())
            .collect()
    }

    /// Total aggregate count (every span counted before sampling).
    pub fn aggregate_count(&self) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .batches
            .iter()
            .flat_map(|b| &b.aggregates)
            .map(|a| a.count)
            .sum()
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

/// A config on free loopback ports, fast flushing and retrying, spooling into `spool`.
pub fn test_config(collector: Option<String>, spool: &std::path::Path) -> Config {
    let mut c = Config {
        collector,
        token: Some("test-token".into()),
        agent_id: Some("test-agent".into()),
        ..Config::default()
    };
    c.listen.otlp_http = "127.0.0.1:0".into();
    c.listen.otlp_grpc = "127.0.0.1:0".into();
    c.listen.zipkin = "127.0.0.1:0".into();
    c.listen.admin = "127.0.0.1:0".into();
    c.shipping.spool_dir = Some(spool.to_owned());
    c.shipping.flush_interval_ms = 100;
    c.shipping.initial_backoff_ms = 20;
    c.shipping.max_backoff_ms = 100;
    c.host.interval_s = 0;
    c
}

pub async fn start_agent(c: Config) -> Agent {
    Agent::start(c, Source::default()).await.unwrap()
}

/// Waits until `f` holds, or panics after `secs`.
pub async fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn now_ns() -> u64 {
    stormwatch_agent::util::now_ns() as u64
}

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A span: `trace` and `id` seed the ids; `ms` long; attributes as given.
pub fn span(trace: u32, id: u32, kind: i32, ms: u64, error: bool, attrs: &[(&str, &str)]) -> Span {
    let mut trace_id = vec![0xab; 16];
    trace_id[12..].copy_from_slice(&trace.to_be_bytes());
    let mut span_id = vec![0xcd; 8];
    span_id[4..].copy_from_slice(&id.to_be_bytes());
    let end = now_ns();
    Span {
        trace_id,
        span_id,
        name: "op".into(),
        kind,
        start_time_unix_nano: end - ms * 1_000_000,
        end_time_unix_nano: end,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        status: error.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "boom".into(),
        }),
        ..Default::default()
    }
}

pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

//! What the board tests share: a recording OTLP/HTTP receiver standing in for the agent, and
//! a stack of real parts (PostgreSQL databases as primary and "replica", a redis-server, the
//! partner and the board, in this process).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message;
use stormwatch_board::{BoardArgs, PartnerArgs, Running};
use stormwatch_testkit::redis::TestRedis;

/// Posts seeded in the tests' databases (the demo seeds 200k).
pub const SEED_POSTS: u32 = 3_000;

/// An attribute value as received.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
    Other,
}

/// One received span, flattened.
#[derive(Clone, Debug)]
pub struct Rec {
    pub service: String,
    pub name: String,
    /// OTLP span kind: 1 internal, 2 server, 3 client.
    pub kind: i32,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    pub parent: Vec<u8>,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub message: String,
    pub attrs: BTreeMap<String, Attr>,
}

pub const SERVER: i32 = 2;
pub const CLIENT: i32 = 3;
pub const STATUS_ERROR: i32 = 2;

impl Rec {
    pub fn str(&self, k: &str) -> Option<&str> {
        match self.attrs.get(k) {
            Some(Attr::Str(s)) => Some(s),
            _ => None,
        }
    }
    pub fn int(&self, k: &str) -> Option<i64> {
        match self.attrs.get(k) {
            Some(Attr::Int(i)) => Some(*i),
            _ => None,
        }
    }
}

/// The recording OTLP/HTTP receiver (`POST /v1/traces`, protobuf).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Rec>>>,
}

async fn traces(State(spans): State<Arc<Mutex<Vec<Rec>>>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut out = Vec::new();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                Value::StringValue(s) => Some(s.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                let attrs = s
                    .attributes
                    .iter()
                    .map(|kv| {
                        let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                            Some(Value::StringValue(s)) => Attr::Str(s.clone()),
                            Some(Value::IntValue(i)) => Attr::Int(*i),
                            _ => Attr::Other,
                        };
                        (kv.key.clone(), v)
                    })
                    .collect();
                let (status, message) = s
                    .status
                    .as_ref()
                    .map(|st| (st.code, st.message.clone()))
                    .unwrap_or_default();
                out.push(Rec {
                    service: service.clone(),
                    name: s.name.clone(),
                    kind: s.kind,
                    trace_id: s.trace_id.clone(),
                    span_id: s.span_id.clone(),
                    parent: s.parent_span_id.clone(),
                    status,
                    message,
                    attrs,
                });
            }
        }
    }
    spans.lock().unwrap().extend(out);
    (
        StatusCode::OK,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

impl Receiver {
    pub async fn start() -> Receiver {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(traces))
            .with_state(spans.clone());
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        Receiver { addr, spans }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Rec> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits (up to 15 s) until a span matches, and returns it.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Rec) -> bool) -> Rec {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| f(s)) {
                return s;
            }
            if Instant::now() > deadline {
                let names: Vec<String> = self
                    .spans()
                    .iter()
                    .map(|s| format!("{}:{}", s.service, s.name))
                    .collect();
                panic!("no span {what} received; got {names:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &[u8]) -> Vec<Rec> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

/// A fresh database with the board's schema and seed.
pub async fn seeded_database() -> String {
    let url = stormwatch_testkit::fresh_database().await;
    stormwatch_board::db::prepare(&url, SEED_POSTS, Duration::from_secs(5))
        .await
        .expect("prepare database");
    url
}

/// Everything the board needs, running.
pub struct Stack {
    pub receiver: Receiver,
    pub primary_url: String,
    pub replica_url: String,
    pub redis: TestRedis,
    pub partner: Running,
    /// With [`Opts::gate_partner`]: what stands between the board and the partner.
    pub partner_gate: Option<PartnerGate>,
    pub board: Running,
    pub http: reqwest::Client,
}

/// Options a test changes.
pub struct Opts {
    pub max_concurrent: usize,
    pub uploads_max_concurrent: usize,
    pub partner_delay_ms: u64,
    pub partner_timeout_ms: u64,
    pub redis_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// The primary's URL as the board sees it (default: the primary database itself).
    pub primary_override: Option<String>,
    /// The board calls the partner through a [`PartnerGate`] ([`Stack::partner_gate`]).
    pub gate_partner: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            max_concurrent: 64,
            uploads_max_concurrent: 4,
            partner_delay_ms: 5,
            partner_timeout_ms: 5_000,
            redis_timeout_ms: 2_000,
            connect_timeout_ms: 2_000,
            primary_override: None,
            gate_partner: false,
        }
    }
}

/// The board's flags for a stack (parsed as the binary would).
pub fn board_args(
    receiver: &Receiver,
    primary: &str,
    replica: &str,
    redis: &str,
    partner: &str,
    o: &Opts,
) -> BoardArgs {
    BoardArgs::parse_from([
        "stormwatch-board".to_owned(),
        "--listen=127.0.0.1:0".into(),
        format!("--primary-url={primary}"),
        format!("--replica-url={replica}"),
        format!("--redis-url={redis}"),
        format!("--partner-url={partner}"),
        format!("--otlp-endpoint={}", receiver.endpoint()),
        format!("--max-concurrent={}", o.max_concurrent),
        format!("--uploads-max-concurrent={}", o.uploads_max_concurrent),
        format!("--seed-posts={SEED_POSTS}"),
        format!("--partner-timeout-ms={}", o.partner_timeout_ms),
        format!("--redis-timeout-ms={}", o.redis_timeout_ms),
        format!("--connect-timeout-ms={}", o.connect_timeout_ms),
        "--startup-timeout-s=5".into(),
    ])
}

impl Stack {
    /// Primary and replica are two databases seeded alike: a class created through the board
    /// exists only on the primary until the test copies it (a replica behind).
    pub async fn start(o: Opts) -> Stack {
        let receiver = Receiver::start().await;
        let primary_url = seeded_database().await;
        let replica_url = seeded_database().await;
        let redis = stormwatch_testkit::redis::start();
        let partner = stormwatch_board::start_partner(&PartnerArgs::parse_from([
            "stormwatch-partner".to_owned(),
            "--listen=127.0.0.1:0".into(),
            format!("--otlp-endpoint={}", receiver.endpoint()),
            format!("--delay-ms={}", o.partner_delay_ms),
        ]))
        .await
        .expect("partner starts");
        let board_primary = o.primary_override.clone().unwrap_or(primary_url.clone());
        let (partner_gate, partner_addr) = if o.gate_partner {
            let (gate, addr) = PartnerGate::start(partner.addr()).await;
            (Some(gate), addr)
        } else {
            (None, partner.addr())
        };
        let args = board_args(
            &receiver,
            &board_primary,
            &replica_url,
            &redis.url(),
            &format!("http://{partner_addr}"),
            &o,
        );
        let board = stormwatch_board::start_board(&args)
            .await
            .expect("board starts");
        Stack {
            receiver,
            primary_url,
            replica_url,
            redis,
            partner,
            partner_gate,
            board,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.board.addr())
    }

    pub fn partner_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.partner.addr())
    }

    /// Exports every span ended so far by both services.
    pub async fn flush(&self) {
        self.board.telemetry().flush().await;
        self.partner.telemetry().flush().await;
    }

    /// Runs SQL on a database.
    pub async fn sql(url: &str, sql: &str) {
        let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let h = tokio::spawn(conn);
        c.batch_execute(sql).await.unwrap();
        drop(c);
        let _ = h.await;
    }
}

/// The server span of a request, waited for: matched on route and status.
pub async fn server_span(r: &Receiver, route: &str, status: i64) -> Rec {
    r.wait_for(&format!("server {route} {status}"), |s| {
        s.kind == SERVER
            && s.str("http.route") == Some(route)
            && s.int("http.response.status_code") == Some(status)
    })
    .await
}

/// A TCP forwarder to the partner that passes calls on at once but holds the partner's answers
/// until [`PartnerGate::release`]: calls that are provably in flight for as long as a test
/// needs, where a partner delay would only make them likely to be.
pub struct PartnerGate {
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    open: tokio::sync::watch::Sender<bool>,
}

impl PartnerGate {
    async fn start(partner: SocketAddr) -> (PartnerGate, SocketAddr) {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let arrived = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (open, _) = tokio::sync::watch::channel(false);
        let gate = PartnerGate {
            arrived: arrived.clone(),
            open: open.clone(),
        };
        tokio::spawn(async move {
            while let Ok((inbound, _)) = l.accept().await {
                let (arrived, mut open) = (arrived.clone(), open.subscribe());
                tokio::spawn(async move {
                    let Ok(out) = tokio::net::TcpStream::connect(partner).await else {
                        return;
                    };
                    let (mut in_r, mut in_w) = inbound.into_split();
                    let (mut out_r, mut out_w) = out.into_split();
                    let up = async move {
                        let mut first = vec![0u8; 16 * 1024];
                        let n = in_r.read(&mut first).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        // A call (its first bytes, at least) is on its way to the partner.
                        arrived.fetch_add(1, Ordering::SeqCst);
                        if out_w.write_all(&first[..n]).await.is_ok() {
                            let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
                        }
                    };
                    let down = async move {
                        if open.wait_for(|o| *o).await.is_ok() {
                            let _ = tokio::io::copy(&mut out_r, &mut in_w).await;
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        (gate, addr)
    }

    /// Calls that have reached the gate (one per connection: the board's calls in flight,
    /// when each is on its own connection).
    pub fn arrived(&self) -> usize {
        self.arrived.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets the partner's answers through, now and from now on.
    pub fn release(&self) {
        self.open.send_replace(true);
    }
}

/// Waits (up to 20 s) until `cond` holds, or panics naming `what`.
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

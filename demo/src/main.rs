//! `stormwatch-demo`: the collector on its embedded PostgreSQL, an agent beside it, and a
//! synthetic "board" service sending OpenTelemetry spans (OTLP/HTTP protobuf) to the agent —
//! the same path a real app takes. Everything the dashboard shows went through the agent's
//! classification, aggregation and sampling and the collector's ingest API.
//!
//! The traffic: a board service listing posts (Redis cache, a read replica, now and then a
//! partner service). Redis slows down for one minute in every five, and the board answers some
//! 503s while it does, so there is always something for the dashboard and the alerts to show.
//! The agent's receivers stay open on their usual ports, so a real app can be pointed at it too.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;
use stormwatch_agent::config::Overrides;
use stormwatch_agent::reload::Source;
use stormwatch_agent::Agent;
use stormwatch_collector::config::{Config, Flags};
use stormwatch_collector::{shutdown_signal, Collector};

#[derive(Parser)]
#[command(
    name = "stormwatch-demo",
    about = "Run Stormwatch (collector, agent) with live demo traffic"
)]
struct Args {
    /// Address of the collector (dashboard, APIs).
    #[arg(long, default_value = "127.0.0.1:6100", env = "STORMWATCH_LISTEN")]
    listen: std::net::SocketAddr,
    /// Data directory (the embedded PostgreSQL and the agent's spool live here; a second run
    /// reuses it).
    #[arg(long, default_value = "./stormwatch-data", env = "STORMWATCH_DATA_DIR")]
    data_dir: PathBuf,
    /// The agent's OTLP/HTTP receiver (point your own app's exporter here too).
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http: String,
    /// The agent's OTLP/gRPC receiver ("" disables it).
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc: String,
    /// The agent's Zipkin receiver ("" disables it).
    #[arg(long, default_value = "127.0.0.1:9411")]
    zipkin: String,
    /// The agent's admin port (`/metrics`).
    #[arg(long, default_value = "127.0.0.1:4319")]
    agent_admin: String,
    /// Requests per second of the synthetic board service.
    #[arg(long, default_value_t = 40)]
    rate: u32,
}

const MS: u64 = 1_000_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("STORMWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tower_http=warn")),
        )
        .init();
    let args = Args::parse();
    let config = Config::load(Flags {
        listen: Some(args.listen),
        data_dir: Some(args.data_dir.clone()),
        ..Default::default()
    })?;
    let collector = Collector::start(config).await?;
    let addr = collector.local_addr();
    let token = collector.state.config.ingest_tokens[0].clone();

    let source = Source {
        path: None,
        overrides: Overrides {
            collector: Some(format!("http://{addr}")),
            token: Some(token),
            agent_id: Some("demo-host".into()),
            otlp_http: Some(args.otlp_http.clone()),
            otlp_grpc: Some(args.otlp_grpc.clone()),
            zipkin: Some(args.zipkin.clone()),
            admin: Some(args.agent_admin.clone()),
            spool_dir: Some(args.data_dir.join("agent-spool")),
        },
    };
    let agent_config = stormwatch_agent::config::load(None, &source.overrides)?;
    let agent = Agent::start(agent_config, source)
        .await
        .context("starting the agent")?;
    let otlp = agent
        .otlp_http
        .context("the demo needs the agent's OTLP/HTTP receiver")?;
    let traffic = tokio::spawn(board_traffic(format!("http://{otlp}/v1/traces"), args.rate));

    println!();
    println!("  Stormwatch is running.");
    println!("  Dashboard:  http://{addr}/   (open on this machine: no login on loopback)");
    println!(
        "  Agent:      OTLP/HTTP http://{otlp}/v1/traces · OTLP/gRPC {} · Zipkin {}",
        show(&args.otlp_grpc),
        show(&args.zipkin)
    );
    println!(
        "  Traffic:    a demo 'board' service, {} requests/s; Redis slows down one minute in five",
        args.rate
    );
    println!(
        "  Data:       {}   ·   Ctrl-C stops everything.",
        args.data_dir.display()
    );
    println!();
    // On Ctrl-C: stop the traffic, let the agent ship what it holds, then stop the collector.
    let (stop_collector, collector_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(collector.serve(async move {
        let _ = collector_stopped.await;
    }));
    shutdown_signal().await;
    traffic.abort();
    agent.shutdown(Duration::from_secs(5)).await;
    let _ = stop_collector.send(());
    serving.await??;
    Ok(())
}

fn show(addr: &str) -> &str {
    if addr.is_empty() {
        "off"
    } else {
        addr
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn id(len: usize) -> Vec<u8> {
    (0..len).map(|_| fastrand::u8(1..=255)).collect()
}

/// Sends the board service's spans to the agent, every 200 ms, as its OTel SDK would.
async fn board_traffic(url: String, rate: u32) {
    let client = reqwest::Client::new();
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tick.tick().await;
        let per_tick = (rate as f64 / 5.0).round().max(1.0) as usize;
        let spans: Vec<Span> = (0..per_tick)
            .flat_map(|_| request(now_ns() - fastrand::u64(0..200 * MS)))
            .collect();
        let body = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        s("service.name", "board"),
                        s("service.instance.id", "board-1"),
                        s("host.name", "demo-host"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let sent = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => tracing::warn!(status = %r.status(), "the agent refused demo spans"),
            Err(error) => tracing::warn!(%error, "demo spans not sent"),
        }
    }
}

/// One `GET /boards/{id}/posts`: the server span, a Redis GET, a replica query, and now and
/// then a call to the partner service.
fn request(start: u64) -> Vec<Span> {
    let trace_id = id(16);
    let root = id(8);
    let minute = start / 1_000_000_000 / 60;
    let redis_slow = minute % 5 == 4;
    let redis = if redis_slow {
        fastrand::u64(30..150)
    } else {
        fastrand::u64(1..4)
    } * MS;
    let db = (4 + fastrand::u64(0..25) + if fastrand::u8(0..150) == 0 { 500 } else { 0 }) * MS;
    let partner = fastrand::u8(0..5) == 0;
    let partner_ns = if partner { fastrand::u64(40..250) } else { 0 } * MS;
    let total = redis + db + partner_ns + fastrand::u64(1..5) * MS;
    // A saturated concurrency limiter answers 503 while Redis is slow.
    let limited = redis_slow && fastrand::u8(0..8) == 0;
    let board = fastrand::u8(1..30);
    let child = |name: &str, offset: u64, dur: u64, attrs: Vec<KeyValue>| Span {
        trace_id: trace_id.clone(),
        span_id: id(8),
        parent_span_id: root.clone(),
        name: name.into(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: start + offset,
        end_time_unix_nano: start + offset + dur,
        attributes: attrs,
        ..Default::default()
    };
    let mut spans = vec![
        child(
            "GET",
            MS,
            redis,
            vec![s("db.system", "redis"), s("db.statement", &format!("GET posts:{board}")), s("net.peer.name", "redis"), i("net.peer.port", 6379)],
        ),
        child(
            "SELECT posts",
            MS + redis,
            db,
            vec![
                s("db.system.name", "postgresql"),
                s("db.query.text", &format!("SELECT id, title FROM posts WHERE board_id = {board} ORDER BY id DESC LIMIT 20")),
                s("server.address", "replica-1"),
                i("server.port", 5432),
            ],
        ),
    ];
    if partner {
        spans.push(child(
            "GET",
            MS + redis + db,
            partner_ns,
            vec![
                s("http.request.method", "GET"),
                s("url.full", "http://partner:8080/v1/profile"),
                s("server.address", "partner"),
                i("server.port", 8080),
                i("http.response.status_code", 200),
            ],
        ));
    }
    let code = if limited { 503 } else { 200 };
    spans.push(Span {
        trace_id,
        span_id: root,
        name: "GET /boards/{id}/posts".into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + total,
        attributes: vec![
            s("http.request.method", "GET"),
            s("http.route", "/boards/{id}/posts"),
            i("http.response.status_code", code),
        ],
        status: limited.then(|| Status {
            code: status::StatusCode::Error as i32,
            message: "concurrency limit reached".into(),
        }),
        ..Default::default()
    });
    spans
}

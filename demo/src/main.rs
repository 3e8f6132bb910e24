//! `stormwatch-demo`: the collector on its embedded PostgreSQL, fed with live synthetic traffic
//! over the real ingest API, so the dashboard and the read API have something to show.
//!
//! The traffic imitates what an agent ships for a small "board" service: every request counted
//! in per-minute aggregates, slow and failed spans always kept, 10 % of the rest sampled. Redis
//! slows down for one minute in every five, so the slowdown is visible in the aggregates.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use stormwatch_collector::config::{Config, Flags};
use stormwatch_collector::{shutdown_signal, Collector};
use stormwatch_model::{
    AgentStats, Aggregate, AggregateKey, Batch, DbRole, DependencyClass, Encoding, KeepReason,
    Span, SpanFlag, SpanKind, SpanStatus, WIRE_VERSION,
};

#[derive(Parser)]
#[command(
    name = "stormwatch-demo",
    about = "Run a Stormwatch collector with live demo traffic"
)]
struct Args {
    /// Address of the collector (dashboard, APIs).
    #[arg(long, default_value = "127.0.0.1:6100", env = "STORMWATCH_LISTEN")]
    listen: std::net::SocketAddr,
    /// Data directory (the embedded PostgreSQL lives here; a second run reuses it).
    #[arg(long, default_value = "./stormwatch-data", env = "STORMWATCH_DATA_DIR")]
    data_dir: PathBuf,
    /// Requests per second of the synthetic service.
    #[arg(long, default_value_t = 50)]
    rate: u32,
}

const NS: i64 = 1_000_000_000;

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
    let feeder = tokio::spawn(feed(
        format!("http://{addr}/api/v1/ingest"),
        token,
        args.rate,
    ));
    println!();
    println!("  Stormwatch is running. Dashboard: http://{addr}/");
    println!("  Read API: http://{addr}/api/v1/services  ·  metrics: http://{addr}/metrics");
    println!(
        "  Data: {}  ·  Ctrl-C stops everything.",
        args.data_dir.display()
    );
    println!();
    collector.serve(shutdown_signal()).await?;
    feeder.abort();
    Ok(())
}

/// Sends one batch per second, like an agent would.
async fn feed(url: String, token: String, rate: u32) {
    let client = reqwest::Client::new();
    let instance = format!("demo-{}", stormwatch_model_now() / NS);
    let mut stats = AgentStats::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    for sequence in 1.. {
        tick.tick().await;
        let now = stormwatch_model_now();
        let mut spans = Vec::new();
        for _ in 0..rate {
            spans.extend(request(now - fastrand::i64(0..NS)));
        }
        let mut aggs: BTreeMap<AggregateKey, Aggregate> = BTreeMap::new();
        for s in &spans {
            let key = AggregateKey::of_span(s);
            aggs.entry(key.clone())
                .or_insert_with(|| Aggregate::new(&key))
                .add(s);
        }
        stats.spans_received += spans.len() as u64;
        // Keep slow and failed traces whole, and about 10 % of the rest (decided per trace).
        let kept: Vec<Span> = spans
            .into_iter()
            .filter(|s| s.kept != KeepReason::Sampled as i32 || s.trace_id[0] < 26)
            .collect();
        stats.spans_kept += kept.len() as u64;
        let batch = Batch {
            version: WIRE_VERSION,
            agent_id: "demo-agent".into(),
            instance: instance.clone(),
            sequence,
            sent_at_ns: now,
            spans: kept,
            aggregates: aggs.into_values().collect(),
            hosts: vec![],
            probes: vec![],
            stats: Some(stats.clone()),
        };
        let sent = client
            .post(&url)
            .bearer_auth(&token)
            .header("content-type", Encoding::Protobuf.content_type())
            .body(batch.encode(Encoding::Protobuf))
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                let status = r.status();
                tracing::warn!(%status, "demo batch rejected: {}", r.text().await.unwrap_or_default());
            }
            Err(error) => tracing::warn!(%error, "demo batch not sent"),
        }
    }
}

fn stormwatch_model_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn id(len: usize) -> Vec<u8> {
    (0..len).map(|_| fastrand::u8(1..=255)).collect()
}

/// One request to the board service: the server span, a Redis GET, a replica query, and now
/// and then a call to the partner service.
fn request(start: i64) -> Vec<Span> {
    let trace_id = id(16);
    let root_id = id(8);
    // Redis is slow for one minute in every five.
    let redis_slow = (start / NS / 60) % 5 == 4;
    let redis = if redis_slow {
        fastrand::i64(30..120)
    } else {
        fastrand::i64(1..4)
    } * 1_000_000;
    let db =
        (5 + fastrand::i64(0..20) + if fastrand::u8(0..100) == 0 { 400 } else { 0 }) * 1_000_000;
    let partner = fastrand::u8(0..5) == 0;
    let partner_ms = if partner { fastrand::i64(40..200) } else { 0 } * 1_000_000;
    let total = redis + db + partner_ms + fastrand::i64(1..5) * 1_000_000;
    let failed = fastrand::u16(0..400) == 0 || (redis_slow && fastrand::u8(0..20) == 0);
    let child =
        |op: &str, class: DependencyClass, peer: &str, system: &str, offset: i64, dur: i64| {
            let slow = match class {
                DependencyClass::Redis => dur > 20_000_000,
                DependencyClass::Db => dur > 200_000_000,
                _ => dur > 500_000_000,
            };
            Span {
                trace_id: trace_id.clone(),
                span_id: id(8),
                parent_span_id: root_id.clone(),
                service: "board".into(),
                instance: "board-1".into(),
                operation: op.into(),
                kind: SpanKind::Client as i32,
                class: class as i32,
                start_ns: start + offset,
                duration_ns: dur,
                peer: peer.into(),
                db_system: system.into(),
                db_role: if class == DependencyClass::Db {
                    DbRole::Replica as i32
                } else {
                    0
                },
                statement: if class == DependencyClass::Db {
                    "SELECT id, title FROM posts WHERE board_id = ? LIMIT ?".into()
                } else {
                    String::new()
                },
                kept: if slow {
                    KeepReason::Slow
                } else {
                    KeepReason::Sampled
                } as i32,
                flags: if slow {
                    vec![SpanFlag::Slow as i32]
                } else {
                    vec![]
                },
                ..Default::default()
            }
        };
    let mut spans = vec![
        child(
            "GET posts:*",
            DependencyClass::Redis,
            "redis:6379",
            "redis",
            1_000_000,
            redis,
        ),
        child(
            "SELECT posts",
            DependencyClass::Db,
            "replica-1:5432",
            "postgresql",
            1_000_000 + redis,
            db,
        ),
    ];
    if partner {
        spans.push(child(
            "GET /v1/profile",
            DependencyClass::HttpClient,
            "partner:8080",
            "",
            1_000_000 + redis + db,
            partner_ms,
        ));
    }
    let slow_root = total > 1_000_000_000;
    spans.push(Span {
        trace_id,
        span_id: root_id,
        service: "board".into(),
        instance: "board-1".into(),
        operation: "GET /boards/{id}/posts".into(),
        kind: SpanKind::Server as i32,
        class: DependencyClass::HttpServer as i32,
        start_ns: start,
        duration_ns: total,
        status: if failed {
            SpanStatus::Error
        } else {
            SpanStatus::Ok
        } as i32,
        http_status: if failed { 503 } else { 200 },
        kept: if failed {
            KeepReason::Error
        } else if slow_root {
            KeepReason::Slow
        } else {
            KeepReason::Sampled
        } as i32,
        flags: if failed {
            vec![SpanFlag::Error as i32]
        } else {
            vec![]
        },
        ..Default::default()
    });
    // A request the sampler keeps takes its whole trace with it.
    if spans.iter().any(|s| s.kept != KeepReason::Sampled as i32) {
        for s in spans
            .iter_mut()
            .filter(|s| s.kept == KeepReason::Sampled as i32)
        {
            // Kept because another span of its trace was (slow or failed).
            s.kept = KeepReason::Forced as i32;
        }
    }
    spans
}

//! `stormwatch-agent-bench`: load numbers for the agent, printed.
//!
//! Starts the agent binary as a child process (pinned to CPU 0 with `taskset` when present;
//! run this bench pinned to the other core: `taskset -c 1 stormwatch-agent-bench`), with an
//! in-process blackhole collector so shipping is part of the cost, then measures:
//!
//! 1. OTLP/HTTP protobuf, 100-span requests, closed loop: spans/s, agent CPU µs per span, RSS.
//!    With `--rotel PATH` (or `rotel` on PATH) the same load against Rotel with
//!    `--exporter blackhole`, and the ratio.
//! 2. Zipkin v2 JSON, 100-span requests: spans/s, CPU per span.
//! 3. A steady 10,000 spans/s for a few seconds: the agent's share of one core.
//!
//! With `--callgrind`, instead of timing anything it counts instructions: the agent (and Rotel)
//! run under `valgrind --tool=callgrind`, get `--callgrind-requests` and then five times as
//! many OTLP requests of the same mix on one connection, and stop on SIGTERM; the difference
//! of the two totals over the difference in spans is the marginal cost of a span, start-up
//! and shutdown cancelled out. Instruction counts repeat to within a fraction of a percent on
//! a busy machine, where wall-clock numbers do not.
//!
//! Build with `--release`: `cargo run --release -p stormwatch-agent --bin stormwatch-agent-bench`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

#[derive(Parser, Debug)]
#[command(about = "Prints throughput, CPU per span and RSS of stormwatch-agent under load")]
struct Args {
    /// The agent binary (default: next to this one).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Rotel binary to compare with (default: `rotel`/`rotel-agent` on PATH or from the `rotel`
    /// Python package; skipped when absent).
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// Seconds per closed-loop measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Seconds of the steady 10k spans/s run.
    #[arg(long, default_value_t = 10)]
    steady_seconds: u64,
    /// Spans per request in the steady 10k spans/s runs. Each request costs a wake-up and a
    /// round trip whatever it carries, so fewer, larger requests cost less: the OpenTelemetry
    /// SDKs' batch span processor exports up to 512 spans a request.
    #[arg(long, default_value_t = 100)]
    steady_spans: usize,
    /// Skip the Zipkin run (quicker A/B runs of the OTLP path).
    #[arg(long)]
    skip_zipkin: bool,
    /// Skip the OTLP/gRPC run.
    #[arg(long)]
    skip_grpc: bool,
    /// SQL statements with `$n` placeholders (as parameterized queries report them) instead
    /// of literals that differ per span.
    #[arg(long)]
    parameterized: bool,
    /// Alternating agent/Rotel OTLP runs after the main ones (0: none); medians are printed.
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// Seconds per alternating run.
    #[arg(long, default_value_t = 3)]
    round_seconds: u64,
    /// Alternating agent/Rotel paced 10k spans/s runs of `--steady-seconds` after the rounds
    /// (0: none); medians are printed.
    #[arg(long, default_value_t = 0)]
    steady_rounds: usize,
    /// CPU to pin the server under test to (`taskset -c`); empty to not pin.
    #[arg(long, default_value = "0")]
    server_cpu: String,
    /// Count instructions per span under `valgrind --tool=callgrind` instead of timing.
    #[arg(long)]
    callgrind: bool,
    /// Requests of the smaller callgrind run (the larger sends five times as many).
    #[arg(long, default_value_t = 100)]
    callgrind_requests: u64,
    /// Where callgrind writes its profiles (kept for `callgrind_annotate`).
    #[arg(long, default_value = "target/callgrind")]
    callgrind_dir: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Nanoseconds each thread of a process has run, from `/proc/PID/task/*/schedstat`: the
/// scheduler's exact run time. `/proc/PID/stat` counts 10 ms ticks by sampling, which at a
/// few percent of a core over 15 s is only good to about ±10 %.
#[derive(Default)]
struct CpuSnapshot(std::collections::HashMap<u32, u64>);

impl CpuSnapshot {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let mut threads = std::collections::HashMap::new();
        for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let entry = entry?;
            let Some(tid) = entry.file_name().to_str().and_then(|t| t.parse().ok()) else {
                continue;
            };
            // A thread that exited since the listing has no file any more.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let ns = stat.split_whitespace().next().context("empty schedstat")?;
            threads.insert(tid, ns.parse()?);
        }
        Ok(CpuSnapshot(threads))
    }

    /// CPU seconds since `earlier`, over the threads alive now. A thread that exited in
    /// between is missed: the agent's runtime threads live as long as it does, and under load
    /// its blocking-pool thread (spool writes every second, host samples) is kept alive too;
    /// an idle agent's blocking threads exit after 10 s, so idle CPU is measured from
    /// `/proc/PID/stat` instead (see the README).
    fn since(&self, earlier: &CpuSnapshot) -> f64 {
        let ns: u64 = self
            .0
            .iter()
            .map(|(tid, ns)| ns.saturating_sub(earlier.0.get(tid).copied().unwrap_or(0)))
            .sum();
        ns as f64 / 1e9
    }
}

/// CPU seconds a process has used, summed over its live threads (see [`CpuSnapshot`]).
fn cpu_seconds(pid: u32) -> anyhow::Result<CpuSnapshot> {
    CpuSnapshot::of(pid)
}

/// (user, system) CPU seconds of a process, from /proc (tick-sampled: for the split only).
fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`, which may contain spaces.
    let rest = stat
        .rsplit_once(')')
        .map(|x| x.1)
        .context("bad /proc stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = f.get(11).context("utime")?.parse()?;
    let system: f64 = f.get(12).context("stime")?.parse()?;
    Ok((user / 100.0, system / 100.0)) // USER_HZ is 100 on Linux
}

/// (current RSS, peak RSS) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (get("VmRSS:"), get("VmHWM:"))
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A cheap deterministic generator for ids and durations.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A realistic mix: one server span, db, redis and http-client children, 10 traces of 10.
/// SQL statements carry literals that differ per span, or `$n` placeholders (`parameterized`).
fn otlp_request(
    rng: &mut Rng,
    spans_per_request: usize,
    parameterized: bool,
) -> ExportTraceServiceRequest {
    let now = now_ns();
    let mut spans = Vec::with_capacity(spans_per_request);
    let mut trace_id = vec![0u8; 16];
    for i in 0..spans_per_request {
        if i % 10 == 0 {
            trace_id = [rng.next().to_be_bytes(), rng.next().to_be_bytes()].concat();
        }
        // Realistic latencies per class (µs): most spans are fast, as in production, so the
        // sampler keeps a few percent and the rest are only aggregated.
        let us = match i % 10 {
            0 => 5_000 + rng.next() % 60_000,
            1..=5 => 500 + rng.next() % 20_000,
            6..=8 => 100 + rng.next() % 3_000,
            _ => 10_000 + rng.next() % 100_000,
        };
        let (kind, name, attrs) = match i % 10 {
            0 => (
                2,
                "GET /api/orders/{id}",
                vec![
                    kv("http.request.method", "GET"),
                    kv("http.route", "/api/orders/{id}"),
                    kv("http.response.status_code", "200"),
                ],
            ),
            1..=5 => (
                3,
                "SELECT",
                vec![
                    kv("db.system", "postgresql"),
                    kv(
                        "db.statement",
                        &if parameterized {
                            "SELECT id, total FROM orders WHERE customer_id = $1 AND status IN ($2, $3, $4)".to_owned()
                        } else {
                            format!("SELECT id, total FROM orders WHERE customer_id = {} AND status IN ('a', 'b', 'c')", rng.next() % 10_000)
                        },
                    ),
                    kv("server.address", "pg-main"),
                    kv("server.port", "5432"),
                ],
            ),
            6..=8 => (
                3,
                "GET",
                vec![
                    kv("db.system", "redis"),
                    kv("db.statement", &format!("GET session:{}", rng.next())),
                    kv("server.address", "cache"),
                ],
            ),
            _ => (
                3,
                "POST",
                vec![
                    kv("http.request.method", "POST"),
                    kv("url.full", "https://payments.internal/v1/charge"),
                    kv("http.response.status_code", "201"),
                ],
            ),
        };
        spans.push(Span {
            trace_id: trace_id.clone(),
            span_id: rng.next().to_be_bytes().to_vec(),
            name: name.into(),
            kind,
            start_time_unix_nano: now - us * 1_000,
            end_time_unix_nano: now,
            attributes: attrs,
            ..Default::default()
        });
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "bench-shop"), kv("host.name", "bench-1")],
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

fn zipkin_request(rng: &mut Rng, n: usize) -> Vec<u8> {
    let now_us = now_ns() / 1000;
    let mut spans = Vec::with_capacity(n);
    let mut trace = 0u64;
    for i in 0..n {
        if i % 10 == 0 {
            trace = rng.next();
        }
        let dur = 1000 + rng.next() % 40_000;
        let span = match i % 10 {
            0 => {
                serde_json::json!({"traceId": format!("{trace:016x}"), "id": format!("{:016x}", rng.next()), "name": "get /api", "kind": "SERVER",
                "timestamp": now_us - dur, "duration": dur, "localEndpoint": {"serviceName": "bench-zipkin"},
                "tags": {"http.method": "GET", "http.route": "/api", "http.status_code": "200"}})
            }
            _ => {
                serde_json::json!({"traceId": format!("{trace:016x}"), "id": format!("{:016x}", rng.next()), "name": "query", "kind": "CLIENT",
                "timestamp": now_us - dur, "duration": dur, "localEndpoint": {"serviceName": "bench-zipkin"},
                "remoteEndpoint": {"serviceName": "mysql", "ipv4": "10.0.0.5", "port": 3306},
                "tags": {"sql.query": format!("select * from orders where id = {}", rng.next() % 1000)}})
            }
        };
        spans.push(span);
    }
    serde_json::to_vec(&spans).unwrap_or_default()
}

/// A collector that stores nothing and says "stored".
async fn blackhole() -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/api/v1/ingest",
        axum::routing::post(|_body: axum::body::Bytes| async { r#"{"status":"stored"}"# }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(l, app).await;
    });
    Ok(addr)
}

struct Server {
    child: Child,
    name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cpu: &str, program: &Path, args: &[String], name: &'static str) -> anyhow::Result<Server> {
    let mut cmd = if !cpu.is_empty() && Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg(cpu).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("STORMWATCH_AGENT_LOG", "error");
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    Ok(Server { child, name })
}

async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    // Generous: under valgrind a server takes seconds to start.
    for _ in 0..1200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server at {addr} did not come up")
}

struct Load {
    spans_ok: u64,
    throttled: u64,
    errors: u64,
    secs: f64,
    cpu: f64,
    rss: (f64, f64),
}

/// One raw HTTP/1.1 keep-alive connection: a load generator cheap enough to saturate the
/// server from one core (a full HTTP client library was the bottleneck).
struct Conn {
    r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            r: tokio::io::BufReader::new(r),
            w,
        })
    }

    /// Sends a pre-built request and reads the response; returns the status.
    async fn call(&mut self, request: &[u8]) -> std::io::Result<u16> {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
        self.w.write_all(request).await?;
        let mut line = String::new();
        self.r.read_line(&mut line).await?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (mut len, mut chunked) = (0usize, false);
        loop {
            line.clear();
            if self.r.read_line(&mut line).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let l = line.trim_end().to_ascii_lowercase();
            if l.is_empty() {
                break;
            }
            if let Some(v) = l.strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
            if l.starts_with("transfer-encoding:") && l.contains("chunked") {
                chunked = true;
            }
        }
        if chunked {
            loop {
                line.clear();
                self.r.read_line(&mut line).await?;
                let n = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
                let mut skip = vec![0u8; n + 2];
                self.r.read_exact(&mut skip).await?;
                if n == 0 {
                    break;
                }
            }
        } else {
            let mut skip = vec![0u8; len];
            self.r.read_exact(&mut skip).await?;
        }
        Ok(status)
    }
}

/// `POST path` requests with these bodies, as bytes on the wire.
fn raw_requests(path: &str, content_type: &str, bodies: &[bytes::Bytes]) -> Vec<bytes::Bytes> {
    bodies
        .iter()
        .map(|b| {
            let mut r = format!(
                "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
                b.len()
            )
            .into_bytes();
            r.extend_from_slice(b);
            r.into()
        })
        .collect()
}

/// Closed loop: `concurrency` connections post `requests` (cycled) as fast as answered.
async fn closed_loop(
    addr: SocketAddr,
    requests: Arc<Vec<bytes::Bytes>>,
    spans_per: u64,
    concurrency: usize,
    secs: u64,
    pid: u32,
) -> anyhow::Result<Load> {
    let ok = Arc::new(AtomicU64::new(0));
    let throttled = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Warm up one second, then measure.
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (requests, ok, throttled, errors) = (
            requests.clone(),
            ok.clone(),
            throttled.clone(),
            errors.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            let mut conn = None;
            while Instant::now() < end {
                if conn.is_none() {
                    conn = Conn::open(addr).await.ok();
                }
                let Some(c) = conn.as_mut() else {
                    errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let req = &requests[i % requests.len()];
                i += 1;
                let measuring = Instant::now() >= warm_until;
                match c.call(req).await {
                    Ok(200..=299) => {
                        if measuring {
                            ok.fetch_add(spans_per, Relaxed);
                        }
                    }
                    Ok(429) => {
                        if measuring {
                            throttled.fetch_add(1, Relaxed);
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Ok(_) => {
                        if measuring {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                    Err(_) => {
                        conn = None;
                        if measuring {
                            errors.fetch_add(1, Relaxed);
                        }
                    }
                }
            }
        }));
    }
    let (secs, cpu) = measure(tasks, warm_until, pid).await?;
    Ok(Load {
        spans_ok: ok.load(Relaxed),
        throttled: throttled.load(Relaxed),
        errors: errors.load(Relaxed),
        secs,
        cpu,
        rss: rss_mib(pid),
    })
}

/// The closed loop over OTLP/gRPC: `concurrency` calls in flight on one HTTP/2 connection.
async fn grpc_loop(
    addr: SocketAddr,
    requests: Arc<Vec<ExportTraceServiceRequest>>,
    concurrency: usize,
    secs: u64,
    pid: u32,
) -> anyhow::Result<Load> {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let warm_until = Instant::now() + Duration::from_secs(1);
    let end = warm_until + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (requests, ok, errors) = (requests.clone(), ok.clone(), errors.clone());
        let mut client = TraceServiceClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while Instant::now() < end {
                let req = requests[i % requests.len()].clone();
                i += 1;
                let spans: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                let r = client.export(req).await;
                if Instant::now() >= warm_until {
                    match r {
                        Ok(_) => ok.fetch_add(spans as u64, Relaxed),
                        Err(_) => errors.fetch_add(1, Relaxed),
                    };
                }
            }
        }));
    }
    let (secs, cpu) = measure(tasks, warm_until, pid).await?;
    Ok(Load {
        spans_ok: ok.load(Relaxed),
        throttled: 0,
        errors: errors.load(Relaxed),
        secs,
        cpu,
        rss: rss_mib(pid),
    })
}

/// Waits out the warm-up, then measures until the load `tasks` end: (seconds, server CPU
/// seconds). Prints the load generator's own CPU share.
async fn measure(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    warm_until: Instant,
    pid: u32,
) -> anyhow::Result<(f64, f64)> {
    tokio::time::sleep_until(warm_until.into()).await;
    let cpu0 = cpu_seconds(pid)?;
    let me0 = cpu_seconds(std::process::id())?;
    let t0 = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(pid)?.since(&cpu0);
    let me = cpu_seconds(std::process::id())?.since(&me0);
    println!(
        "  (load generator used {:.0}% of a core)",
        me / secs * 100.0
    );
    Ok((secs, cpu))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A paced 10,000 spans/s on one connection (100 requests of 100 spans a second by default;
/// `otlp` holds requests of `spans` spans each): prints and returns the server's CPU as a
/// share of one core.
async fn steady(
    name: &str,
    url: String,
    otlp: &[bytes::Bytes],
    spans: usize,
    seconds: u64,
    pid: u32,
) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let (user0, sys0) = cpu_split(pid)?;
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    // 10,000 spans a second: one request every `spans` × 100 µs.
    let mut tick = tokio::time::interval(Duration::from_micros(spans as u64 * 100));
    let mut sent = 0u64;
    while t0.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        let r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(otlp[(sent as usize / spans) % otlp.len()].clone())
            .send()
            .await;
        if matches!(&r, Ok(r) if r.status().is_success()) {
            sent += spans as u64;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let share = cpu_seconds(pid)?.since(&cpu0) / secs;
    let (user1, sys1) = cpu_split(pid)?;
    let (user, system) = (user1 - user0, sys1 - sys0);
    println!(
        "{name} steady {:.0} spans/s ({spans}-span requests) for {:.0} s: {:.2}% of one core (tick-sampled: {:.2}% user, {:.2}% system), RSS {:.1} MiB",
        sent as f64 / secs,
        secs,
        share * 100.0,
        user / secs * 100.0,
        system / secs * 100.0,
        rss_mib(pid).0
    );
    Ok(share)
}

fn report(label: &str, l: &Load) -> f64 {
    let rate = l.spans_ok as f64 / l.secs;
    let us = l.cpu * 1e6 / (l.spans_ok.max(1) as f64);
    println!(
        "{label:<44} {rate:>10.0} spans/s  {us:>6.2} µs CPU/span (= {:>7.0} spans/s per core)  {:>5.1}% core  RSS {:>5.1} MiB (peak {:>5.1})  429s {}  errors {}",
        1e6 / us.max(1e-9),
        l.cpu / l.secs * 100.0,
        l.rss.0,
        l.rss.1,
        l.throttled,
        l.errors
    );
    rate
}

/// Rotel passing OTLP through to its blackhole exporter.
fn rotel_args(http_port: u16, grpc_port: u16) -> Vec<String> {
    [
        "start",
        "--exporter",
        "blackhole",
        "--otlp-http-endpoint",
        &format!("127.0.0.1:{http_port}"),
        "--otlp-grpc-endpoint",
        &format!("127.0.0.1:{grpc_port}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// `rotel` / `rotel-agent` on PATH, else the binary the `rotel` PyPI package ships inside
/// its Python package (it installs no console script).
fn find_rotel() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .flat_map(|d| [d.join("rotel"), d.join("rotel-agent")])
            .find(|p| p.exists())
    });
    on_path.or_else(|| {
        for py in ["python3", "python"] {
            let out = Command::new(py)
                .args(["-c", "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && p.exists() {
                return Some(p);
            }
        }
        None
    })
}

/// Total instructions (`Ir`) of a callgrind profile.
fn callgrind_total(out: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(out)
        .with_context(|| format!("cannot read callgrind output {}", out.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no totals in {}", out.display()))
}

/// Runs `program` under callgrind, sends it `requests` requests on one connection, stops it
/// with SIGTERM (so it shuts down as in production: the agent flushes and ships) and returns
/// its total instruction count.
async fn callgrind_run(
    program: &Path,
    args: &[String],
    port: u16,
    requests: &[bytes::Bytes],
    count: u64,
    out: &Path,
) -> anyhow::Result<u64> {
    let mut cmd = Command::new("valgrind");
    cmd.arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env("STORMWATCH_AGENT_LOG", "error");
    let mut child = cmd
        .spawn()
        .context("cannot start valgrind (apt-get install valgrind)")?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let sent = async {
        wait_ready(addr).await?;
        let mut conn = Conn::open(addr).await?;
        for i in 0..count {
            let status = conn.call(&requests[i as usize % requests.len()]).await?;
            if !(200..300).contains(&status) {
                bail!("request {i} answered {status}");
            }
        }
        anyhow::Ok(())
    }
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = child.wait()?;
    sent?;
    if !status.success() {
        bail!("{} under callgrind exited with {status}", program.display());
    }
    callgrind_total(out)
}

/// Instructions per span of each server: the marginal cost between a small and a large run.
async fn callgrind_compare(
    args: &Args,
    servers: &[(&str, PathBuf, Vec<String>, u16)],
    requests: &[bytes::Bytes],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.callgrind_dir)?;
    let (small, large) = (args.callgrind_requests, args.callgrind_requests * 5);
    let mut per_span = Vec::new();
    for (name, program, sargs, port) in servers {
        let mut totals = [0u64; 2];
        for (t, n) in totals.iter_mut().zip([small, large]) {
            let out = args.callgrind_dir.join(format!("callgrind.{name}.{n}.out"));
            *t = callgrind_run(program, sargs, *port, requests, n, &out).await?;
        }
        let spans = (large - small) * 100;
        let ir = totals[1].saturating_sub(totals[0]) as f64 / spans as f64;
        println!(
            "{name:<8} callgrind: {small} requests {} Ir, {large} requests {} Ir → {ir:>7.0} instructions/span (start-up and shutdown excluded)",
            totals[0], totals[1]
        );
        per_span.push(ir);
    }
    if let [ours, theirs] = per_span[..] {
        println!(
            "agent / rotel instructions per span: {:.2}",
            ours / theirs.max(1.0)
        );
    }
    println!("profiles in {}", args.callgrind_dir.display());
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let me = std::env::current_exe()?;
    let agent_bin = args
        .agent
        .clone()
        .unwrap_or_else(|| me.with_file_name("stormwatch-agent"));
    // Absolute, so `taskset` does not look a bare name up on PATH.
    let Ok(agent_bin) = std::fs::canonicalize(&agent_bin) else {
        bail!(
            "agent binary {} not found; build it or pass --agent",
            agent_bin.display()
        );
    };
    let collector = blackhole().await?;
    let spool = std::env::temp_dir().join(format!("stormwatch-bench-spool-{}", std::process::id()));
    let (http, zipkin, grpc) = (free_port()?, free_port()?, free_port()?);
    let agent_args: Vec<String> = [
        "--agent-id",
        "bench",
        "--collector",
        &format!("http://{collector}"),
        "--token",
        "bench",
        "--otlp-http",
        &format!("127.0.0.1:{http}"),
        "--otlp-grpc",
        &format!("127.0.0.1:{grpc}"),
        "--zipkin",
        &format!("127.0.0.1:{zipkin}"),
        "--admin",
        "",
        "--spool-dir",
        &spool.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // `Bytes` so the load generator sends without copying bodies.
    let otlp: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..256)
            .map(|_| {
                otlp_request(&mut rng, 100, args.parameterized)
                    .encode_to_vec()
                    .into()
            })
            .collect(),
    );
    let steady_bodies: Vec<bytes::Bytes> = if args.steady_spans == 100 {
        otlp.to_vec()
    } else {
        (0..64)
            .map(|_| {
                otlp_request(&mut rng, args.steady_spans.max(1), args.parameterized)
                    .encode_to_vec()
                    .into()
            })
            .collect()
    };
    let zipkin_bodies: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..256)
            .map(|_| zipkin_request(&mut rng, 100).into())
            .collect(),
    );
    println!(
        "stormwatch-agent-bench: {} s per run, {} connections, server on CPU {:?}, OTLP request {} bytes, Zipkin request {} bytes",
        args.seconds, args.concurrency, args.server_cpu, otlp[0].len(), zipkin_bodies[0].len()
    );
    let otlp_raw = Arc::new(raw_requests("/v1/traces", "application/x-protobuf", &otlp));

    if args.callgrind {
        // Host metrics off: their cost depends on wall time, which valgrind stretches.
        let config = spool.with_extension("toml");
        std::fs::write(&config, "[host]\ninterval_s = 0\n")?;
        let mut cg_args = agent_args.clone();
        cg_args.extend(["--config".to_string(), config.display().to_string()]);
        let mut servers = vec![("agent", agent_bin.clone(), cg_args, http)];
        if let Some(rotel) = args.rotel.clone().or_else(find_rotel) {
            let port = free_port()?;
            servers.push(("rotel", rotel, rotel_args(port, free_port()?), port));
        } else {
            println!("rotel not found (pip install rotel, or --rotel PATH): comparison skipped");
        }
        let r = callgrind_compare(&args, &servers, &otlp_raw).await;
        let _ = std::fs::remove_dir_all(&spool);
        let _ = std::fs::remove_file(&config);
        return r;
    }

    let agent = spawn(
        &args.server_cpu,
        &agent_bin,
        &agent_args,
        "stormwatch-agent",
    )?;
    let pid = agent.child.id();
    wait_ready(format!("127.0.0.1:{http}").parse()?).await?;
    wait_ready(format!("127.0.0.1:{zipkin}").parse()?).await?;
    let l = closed_loop(
        format!("127.0.0.1:{http}").parse()?,
        otlp_raw.clone(),
        100,
        args.concurrency,
        args.seconds,
        pid,
    )
    .await?;
    let ours = report("agent  OTLP/HTTP protobuf, 100-span requests", &l);
    if !args.skip_grpc {
        let requests: Arc<Vec<ExportTraceServiceRequest>> = Arc::new(
            otlp.iter()
                .map(|b| ExportTraceServiceRequest::decode(b.as_ref()))
                .collect::<Result<_, _>>()?,
        );
        let l = grpc_loop(
            format!("127.0.0.1:{grpc}").parse()?,
            requests,
            args.concurrency,
            args.seconds,
            pid,
        )
        .await?;
        report("agent  OTLP/gRPC, 100-span requests", &l);
    }
    if !args.skip_zipkin {
        let l = closed_loop(
            format!("127.0.0.1:{zipkin}").parse()?,
            Arc::new(raw_requests(
                "/api/v2/spans",
                "application/json",
                &zipkin_bodies,
            )),
            100,
            args.concurrency,
            args.seconds,
            pid,
        )
        .await?;
        report("agent  Zipkin v2 JSON, 100-span requests", &l);
    }

    let agent_steady = steady(
        "agent ",
        format!("http://127.0.0.1:{http}/v1/traces"),
        &steady_bodies,
        args.steady_spans,
        args.steady_seconds,
        pid,
    )
    .await?;
    let rotel = args.rotel.clone().or_else(find_rotel);
    match rotel {
        Some(rotel) => {
            let port = free_port()?;
            let rargs = rotel_args(port, free_port()?);
            let server = spawn(&args.server_cpu, &rotel, &rargs, "rotel")?;
            // `taskset` execs rotel in place, so the pid is rotel's own.
            let rpid = server.child.id();
            wait_ready(format!("127.0.0.1:{port}").parse()?).await?;
            let rotel_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse()?;
            let agent_addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse()?;
            let l = closed_loop(
                rotel_addr,
                otlp_raw.clone(),
                100,
                args.concurrency,
                args.seconds,
                rpid,
            )
            .await?;
            let theirs = report("rotel  OTLP/HTTP protobuf → blackhole", &l);
            let rotel_steady = steady(
                "rotel ",
                format!("http://127.0.0.1:{port}/v1/traces"),
                &steady_bodies,
                args.steady_spans,
                args.steady_seconds,
                rpid,
            )
            .await?;
            println!(
                "agent / rotel throughput ratio: {:.2}; steady 10k spans/s CPU, agent / rotel: {:.2}",
                ours / theirs.max(1.0),
                agent_steady / rotel_steady.max(1e-9)
            );
            // The machine's speed drifts between runs (a shared host): alternate short runs
            // of the two servers, both up and pinned to the same CPU, and take medians.
            if args.rounds > 0 {
                let mut ratios = Vec::new();
                let (mut ours_per_core, mut theirs_per_core) = (Vec::new(), Vec::new());
                for round in 1..=args.rounds {
                    let a = closed_loop(
                        agent_addr,
                        otlp_raw.clone(),
                        100,
                        args.concurrency,
                        args.round_seconds,
                        pid,
                    )
                    .await?;
                    let r = closed_loop(
                        rotel_addr,
                        otlp_raw.clone(),
                        100,
                        args.concurrency,
                        args.round_seconds,
                        rpid,
                    )
                    .await?;
                    let per_core = |l: &Load| l.spans_ok as f64 / l.cpu.max(1e-9);
                    let (pa, pr) = (per_core(&a), per_core(&r));
                    println!(
                        "  round {round}: agent {:>7.0} spans/s ({:>7.0} per core)  rotel {:>7.0} spans/s ({:>7.0} per core)  ratio per core {:.2}",
                        a.spans_ok as f64 / a.secs,
                        pa,
                        r.spans_ok as f64 / r.secs,
                        pr,
                        pa / pr
                    );
                    ratios.push(pa / pr);
                    ours_per_core.push(pa);
                    theirs_per_core.push(pr);
                }
                println!(
                    "interleaved, {} rounds of {} s: median spans/s per core agent {:.0}, rotel {:.0}; median ratio {:.2} (range {:.2}–{:.2})",
                    args.rounds,
                    args.round_seconds,
                    median(&mut ours_per_core),
                    median(&mut theirs_per_core),
                    median(&mut ratios.clone()),
                    ratios.iter().copied().fold(f64::INFINITY, f64::min),
                    ratios.iter().copied().fold(0.0, f64::max),
                );
            }
            if args.steady_rounds > 0 {
                let (mut ours, mut theirs) = (Vec::new(), Vec::new());
                for _ in 0..args.steady_rounds {
                    let url = |port| format!("http://127.0.0.1:{port}/v1/traces");
                    ours.push(
                        steady(
                            "  agent",
                            url(http),
                            &steady_bodies,
                            args.steady_spans,
                            args.steady_seconds,
                            pid,
                        )
                        .await?,
                    );
                    theirs.push(
                        steady(
                            "  rotel",
                            url(port),
                            &steady_bodies,
                            args.steady_spans,
                            args.steady_seconds,
                            rpid,
                        )
                        .await?,
                    );
                }
                let range = |v: &[f64]| {
                    (
                        v.iter().copied().fold(f64::INFINITY, f64::min) * 100.0,
                        v.iter().copied().fold(0.0, f64::max) * 100.0,
                    )
                };
                let ((a0, a1), (r0, r1)) = (range(&ours), range(&theirs));
                println!(
                    "interleaved, {} paced runs of {} s at 10k spans/s in {}-span requests: median share of one core agent {:.2}% ({a0:.2}–{a1:.2}), rotel {:.2}% ({r0:.2}–{r1:.2})",
                    args.steady_rounds,
                    args.steady_seconds,
                    args.steady_spans,
                    median(&mut ours) * 100.0,
                    median(&mut theirs) * 100.0,
                );
            }
            drop(server);
        }
        None => {
            println!("rotel not found (pip install rotel, or --rotel PATH): comparison skipped")
        }
    }
    println!("({} stopped)", agent.name);
    drop(agent);
    let _ = std::fs::remove_dir_all(&spool);
    Ok(())
}

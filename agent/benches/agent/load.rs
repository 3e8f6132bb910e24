//! The servers under test (the agent, Rotel, a blackhole collector) and the loads driven
//! against them: closed loop over HTTP/1.1 and gRPC, paced; their reports.

use super::*;

/// A collector that stores nothing and says "stored".
pub(crate) async fn blackhole() -> anyhow::Result<SocketAddr> {
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

pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) name: &'static str,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn spawn(
    cpu: &str,
    program: &Path,
    args: &[String],
    name: &'static str,
) -> anyhow::Result<Server> {
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

pub(crate) async fn wait_ready(addr: SocketAddr) -> anyhow::Result<()> {
    // Generous: under valgrind a server takes seconds to start.
    for _ in 0..1200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("server at {addr} did not come up")
}

pub(crate) struct Load {
    pub(crate) spans_ok: u64,
    pub(crate) throttled: u64,
    pub(crate) errors: u64,
    pub(crate) secs: f64,
    pub(crate) cpu: f64,
    pub(crate) rss: (f64, f64),
}

/// One raw HTTP/1.1 keep-alive connection: a load generator cheap enough to saturate the
/// server from one core (a full HTTP client library was the bottleneck).
pub(crate) struct Conn {
    pub(crate) r: tokio::io::BufReader<tokio::net::tcp::OwnedReadHalf>,
    pub(crate) w: tokio::net::tcp::OwnedWriteHalf,
}

impl Conn {
    pub(crate) async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        Ok(Conn {
            r: tokio::io::BufReader::new(r),
            w,
        })
    }

    /// Sends a pre-built request and reads the response; returns the status.
    pub(crate) async fn call(&mut self, request: &[u8]) -> std::io::Result<u16> {
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

/// Closed loop: `concurrency` connections post `requests` (raw HTTP requests, cycled, each
/// sent with fresh ids and current times) as fast as answered.
pub(crate) async fn closed_loop(
    addr: SocketAddr,
    requests: Arc<Vec<Template>>,
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
            let mut buf = Vec::new();
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
                req.next_into(&mut buf);
                let measuring = Instant::now() >= warm_until;
                match c.call(&buf).await {
                    Ok(200..=299) => {
                        if measuring {
                            ok.fetch_add(req.spans, Relaxed);
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
/// `requests` are protobuf bodies, decoded after patching (tonic encodes them again).
pub(crate) async fn grpc_loop(
    addr: SocketAddr,
    requests: Arc<Vec<Template>>,
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
            let mut buf = Vec::new();
            while Instant::now() < end {
                let template = &requests[i % requests.len()];
                i += 1;
                template.next_into(&mut buf);
                let Ok(req) = ExportTraceServiceRequest::decode(&buf[..]) else {
                    errors.fetch_add(1, Relaxed);
                    continue;
                };
                let r = client.export(req).await;
                if Instant::now() >= warm_until {
                    match r {
                        Ok(_) => ok.fetch_add(template.spans, Relaxed),
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
pub(crate) async fn measure(
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

pub(crate) fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// A paced 10,000 spans/s on one connection (100 requests of 100 spans a second by default;
/// `otlp` holds protobuf bodies of `spans` spans each, sent with fresh ids and current
/// times): prints and returns the server's CPU as a share of one core.
pub(crate) async fn steady(
    name: &str,
    url: String,
    otlp: &[Template],
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
        let mut body = Vec::new();
        otlp[(sent as usize / spans) % otlp.len()].next_into(&mut body);
        let r = client
            .post(&url)
            .header("content-type", "application/x-protobuf")
            .body(body)
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

pub(crate) fn report(label: &str, l: &Load) -> f64 {
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

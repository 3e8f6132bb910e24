//! The agent's load bench (`cargo bench -p stormwatch-agent --bench agent`): load numbers for
//! the agent, printed.
//!
//! Starts the agent binary as a child process (pinned to CPU 0 with `taskset` when present;
//! run this bench pinned to the other core:
//! `taskset -c 1 cargo bench -p stormwatch-agent --bench agent`), with an
//! in-process blackhole collector so shipping is part of the cost, then measures:
//!
//! 1. OTLP/HTTP protobuf, 100-span requests, closed loop: spans/s, agent CPU µs per span, RSS.
//!    With `--rotel PATH` (or `rotel` on PATH) the same load against Rotel with
//!    `--exporter blackhole`, and the ratio.
//! 2. Zipkin v2 JSON, 100-span requests: spans/s, CPU per span.
//! 3. A steady 10,000 spans/s for a few seconds: the agent's share of one core.
//!
//! The bodies (256 OTLP, 256 Zipkin of ten 10-span traces each) are encoded once, but no two
//! requests sent are alike: each is a copy with fresh trace and span ids, derived from a
//! per-process count of requests sent so none repeats in a run, and span times moved by the
//! time since encoding, so spans end as the request leaves (`requests.rs`, `Template`). The
//! ids and times are fixed-width fields, patched in place; start-up checks a patched copy by
//! decoding it and prints what patching costs a request.
//!
//! With `--callgrind`, instead of timing anything it counts instructions: the agent (and Rotel)
//! run under `valgrind --tool=callgrind`, get `--callgrind-requests` and then five times as
//! many OTLP requests of the same mix (fresh ids in each) on one connection, and stop on
//! SIGTERM; the difference of the two totals over the difference in spans is the marginal
//! cost of a span, start-up and shutdown cancelled out. Instruction counts repeat to within a
//! fraction of a percent on a busy machine, where wall-clock numbers do not.
//!
//! Flags go after `--`: `cargo bench -p stormwatch-agent --bench agent -- --callgrind`. Cargo
//! builds the agent binary (optimized, `bench` profile) along with it.

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

mod callgrind;
mod load;
mod procfs;
mod requests;

use callgrind::*;
use load::*;
use procfs::*;
use requests::*;

#[derive(Parser, Debug)]
#[command(about = "Prints throughput, CPU per span and RSS of stormwatch-agent under load")]
struct Args {
    /// The agent binary (default: the one cargo built with this bench).
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
    /// Passed by `cargo bench` to every bench target; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let agent_bin = args
        .agent
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_stormwatch-agent")));
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
    // Encoded once; each request sent is a copy with fresh ids and times moved to the moment
    // of sending (`Template`).
    let now = now_ns();
    let otlp_body = |rng: &mut Rng, spans| {
        Template::otlp(
            otlp_request(rng, spans, args.parameterized, now).encode_to_vec(),
            now,
        )
    };
    let otlp: Arc<Vec<Template>> = Arc::new(
        (0..256)
            .map(|_| otlp_body(&mut rng, 100))
            .collect::<Result<_, _>>()?,
    );
    let steady_bodies: Vec<Template> = if args.steady_spans == 100 {
        otlp.to_vec()
    } else {
        (0..64)
            .map(|_| otlp_body(&mut rng, args.steady_spans.max(1)))
            .collect::<Result<_, _>>()?
    };
    let zipkin_bodies: Vec<Template> = (0..256)
        .map(|_| Template::zipkin(zipkin_request(&mut rng, 100, now), now))
        .collect::<Result<_, _>>()?;
    check_patching(&otlp[0], &zipkin_bodies[0]).context("patching request templates")?;
    let otlp_raw: Arc<Vec<Template>> = Arc::new(
        otlp.iter()
            .map(|t| t.http("/v1/traces", "application/x-protobuf"))
            .collect(),
    );
    let zipkin_raw: Arc<Vec<Template>> = Arc::new(
        zipkin_bodies
            .iter()
            .map(|t| t.http("/api/v2/spans", "application/json"))
            .collect(),
    );
    println!(
        "stormwatch-agent-bench: {} s per run, {} connections, server on CPU {:?}, OTLP request {} bytes, Zipkin request {} bytes",
        args.seconds, args.concurrency, args.server_cpu, otlp[0].bytes.len(), zipkin_bodies[0].bytes.len()
    );
    println!(
        "fresh ids and times per request: {:.2} µs to patch an OTLP request, {:.2} µs a Zipkin one",
        patch_cost_us(&otlp_raw[0]),
        patch_cost_us(&zipkin_raw[0])
    );

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
        args.concurrency,
        args.seconds,
        pid,
    )
    .await?;
    let ours = report("agent  OTLP/HTTP protobuf, 100-span requests", &l);
    if !args.skip_grpc {
        let l = grpc_loop(
            format!("127.0.0.1:{grpc}").parse()?,
            otlp.clone(),
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
            zipkin_raw,
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
                        args.concurrency,
                        args.round_seconds,
                        pid,
                    )
                    .await?;
                    let r = closed_loop(
                        rotel_addr,
                        otlp_raw.clone(),
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

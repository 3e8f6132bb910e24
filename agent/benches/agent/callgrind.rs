//! Instruction counts under `valgrind --tool=callgrind`, and finding Rotel.

use super::*;

/// Rotel passing OTLP through to its blackhole exporter.
pub(crate) fn rotel_args(http_port: u16, grpc_port: u16) -> Vec<String> {
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
pub(crate) fn find_rotel() -> Option<PathBuf> {
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
pub(crate) fn callgrind_total(out: &Path) -> anyhow::Result<u64> {
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

/// Runs `program` under callgrind, sends it `count` of `requests` (cycled, each with fresh
/// ids and current times) on one connection, stops it with SIGTERM (so it shuts down as in
/// production: the agent flushes and ships) and returns its total instruction count.
pub(crate) async fn callgrind_run(
    program: &Path,
    args: &[String],
    port: u16,
    requests: &[Template],
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
        let mut buf = Vec::new();
        for i in 0..count {
            requests[i as usize % requests.len()].next_into(&mut buf);
            let status = conn.call(&buf).await?;
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
pub(crate) async fn callgrind_compare(
    args: &Args,
    servers: &[(&str, PathBuf, Vec<String>, u16)],
    requests: &[Template],
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
        let spans: u64 = (small..large)
            .map(|i| requests[i as usize % requests.len()].spans)
            .sum();
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

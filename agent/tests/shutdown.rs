//! The real `stormwatch-agent` binary on SIGTERM / SIGINT: it stops within its grace period
//! even with a host sample stuck in a blocking call and an app holding connections open, and
//! the spans it had queued are in the spool when it is gone.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use prost::Message;
use stormwatch_agent::metrics::Metrics;
use stormwatch_agent::ship::body::decode_body;
use stormwatch_agent::ship::spool::{Options, Spool};

/// Generous: a correct agent stops in about `--shutdown-grace` (2 s here) plus one second; a
/// broken one never does.
const EXIT_BOUND: Duration = Duration::from_secs(15);

/// A loopback port nothing listens on (connections are refused).
fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Strips ANSI colour sequences from a log line.
fn plain(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

struct Running {
    child: Child,
    otlp_http: SocketAddr,
    lines: mpsc::Receiver<String>,
}

/// Starts the binary with `config` (a TOML file), flags only for the rest, and waits for its
/// "started" line to learn the OTLP/HTTP address.
fn start(dir: &Path, config: &str) -> Running {
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_stormwatch-agent"))
        .arg("--config")
        .arg(&cfg)
        .args([
            "--collector",
            &format!("http://127.0.0.1:{}", refused_port()),
        ])
        .args(["--otlp-http", "127.0.0.1:0", "--otlp-grpc", "127.0.0.1:0"])
        .args(["--zipkin", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args(["--shutdown-grace", "2"])
        .env("STORMWATCH_AGENT_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let line = plain(&line);
            println!("agent: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let otlp_http = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines.recv_timeout(left).expect("agent did not start");
        if let Some(rest) = line.split("otlp_http=Some(").nth(1) {
            break rest.split(')').next().unwrap().parse().unwrap();
        }
    };
    Running {
        child,
        otlp_http,
        lines,
    }
}

/// Sends `signal` and waits for the exit; returns how long it took and whether it succeeded.
fn stop(r: &mut Running, signal: &str) -> (Duration, bool) {
    let sent = Instant::now();
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &r.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
    loop {
        if let Some(status) = r.child.try_wait().unwrap() {
            return (sent.elapsed(), status.success());
        }
        if sent.elapsed() > EXIT_BOUND {
            let _ = r.child.kill();
            let _ = r.child.wait();
            panic!("the agent was still running {EXIT_BOUND:?} after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sum of aggregate counts over every batch left in the spool.
fn spooled_count(spool_dir: &Path) -> u64 {
    let spool = Spool::open(
        spool_dir,
        Options {
            max_bytes: u64::MAX,
            ..Options::default()
        },
        Metrics::default().into(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut count = 0;
    while let Some(e) = spool.peek() {
        let body = rt.block_on(spool.read(&e)).unwrap();
        let batch = decode_body(&body, e.compression, 64 << 20).unwrap();
        count += batch.aggregates.iter().map(|a| a.count).sum::<u64>();
        spool.remove(&e);
    }
    count
}

fn post_spans(addr: SocketAddr, n: u32) {
    let spans = (0..n)
        .map(|i| common::span(i, i, 2, 3, false, &[("http.route", "/x")]))
        .collect();
    let body = common::request("shop", spans).encode_to_vec();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "POST /v1/traces HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut answer = String::new();
    BufReader::new(s).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn sigterm_stops_within_grace_and_spools_what_was_queued() {
    let dir = tempfile::tempdir().unwrap();
    // The host sampler reads the app's pid file; a FIFO without a writer blocks that read
    // forever, as statvfs() on a hung network mount would. The flush interval is long, so the
    // spans below are only written to the spool by the shutdown.
    let fifo = dir.path().join("app.pid");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let mut agent = start(
        dir.path(),
        &format!(
            "[host]\ninterval_s = 1\napp_pid_file = {:?}\n[shipping]\nflush_interval_ms = 600000\n",
            fifo.display().to_string()
        ),
    );
    // The host sampler is stuck once it has opened the FIFO to read it: only then does a
    // non-blocking open for writing succeed (ENXIO before). The write end stays open until the
    // agent is gone, so the sampler's read never ends.
    let _writer = {
        use std::os::unix::fs::OpenOptionsExt;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(0o4000) // O_NONBLOCK
                .open(&fifo)
            {
                Ok(f) => break f,
                Err(e) if e.raw_os_error() == Some(6) => {} // ENXIO: no reader yet
                Err(e) => panic!("opening the FIFO: {e}"),
            }
            assert!(
                Instant::now() < deadline,
                "the host sampler never read the FIFO"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // The binary installs its signal handlers before it starts anything, so once it has
    // logged "started" a signal stops it gracefully: nothing to wait for.
    post_spans(agent.otlp_http, 40);
    // An app holding a connection with half a request on it.
    let mut idle = TcpStream::connect(agent.otlp_http).unwrap();
    idle.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: a\r\n")
        .unwrap();
    let (took, ok) = stop(&mut agent, "TERM");
    assert!(ok, "exit status after SIGTERM");
    println!("exited {took:?} after SIGTERM");
    let log: Vec<String> = agent.lines.try_iter().collect();
    assert!(
        log.iter().any(|l| l.contains("stopped")),
        "no 'stopped' line: {log:?}"
    );
    assert_eq!(spooled_count(&dir.path().join("spool")), 40);
}

#[test]
fn sigint_stops_an_idle_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut agent = start(dir.path(), "[host]\ninterval_s = 1\n");
    // Signal handlers are installed before the "started" line: no wait needed.
    let (took, ok) = stop(&mut agent, "INT");
    assert!(ok, "exit status after SIGINT");
    println!("exited {took:?} after SIGINT");
}

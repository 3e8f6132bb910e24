//! Redis for the board's cache: `redis-server` on a loopback port with `DEBUG` enabled for
//! local connections (the scenario's latency injection), no persistence (it is a cache), and
//! a tiny RESP client for the scenario's commands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::process::Child;

/// Finds `redis-server` on PATH or in /usr/bin.
fn redis_server() -> anyhow::Result<PathBuf> {
    let from_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("redis-server"))
            .find(|f| f.is_file())
    });
    from_path
        .or_else(|| Some(PathBuf::from("/usr/bin/redis-server")).filter(|p| p.is_file()))
        .context("Redis is not installed (no redis-server on PATH): install it with `apt-get install -y redis-server` (./scripts/demo does it)")
}

/// Starts Redis on `port`, its working directory `dir`; waits until it answers PING.
pub async fn start(dir: &Path, port: u16, logs: &Path) -> anyhow::Result<Child> {
    let exe = redis_server()?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--enable-debug-command", "local", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir);
    let child = Child::spawn("redis", cmd, logs)?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        // Our server, not another one on that port: it must still be running.
        if let Some(status) = child.exited().await {
            bail!(
                "redis-server exited ({status}); is 127.0.0.1:{port} taken? (see {})",
                logs.join("redis.log").display()
            );
        }
        match command(port, &["PING"]).await {
            Ok(r) if r == "PONG" => return Ok(child),
            _ if tokio::time::Instant::now() > deadline => {
                child.stop().await;
                bail!(
                    "redis-server did not answer on 127.0.0.1:{port} within 15 s (see {})",
                    logs.join("redis.log").display()
                );
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A connection for a series of commands (the scenario's `DEBUG SLEEP` loop).
pub struct Conn {
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub async fn open(port: u16) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to Redis on 127.0.0.1:{port}"))?;
        Ok(Conn {
            reader: BufReader::new(stream),
        })
    }

    /// Sends one command; returns a simple/bulk reply as text, an error reply as `Err`.
    pub async fn call(&mut self, args: &[&str]) -> anyhow::Result<String> {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader.get_mut().write_all(req.as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        let line = line.trim_end();
        match line.split_at(line.len().min(1)) {
            ("+", rest) | (":", rest) => Ok(rest.to_owned()),
            ("-", rest) => bail!("Redis: {rest}"),
            ("$", n) => {
                let n: i64 = n.parse().context("bad RESP length")?;
                if n < 0 {
                    return Ok(String::new());
                }
                let mut buf = vec![0u8; n as usize + 2];
                tokio::io::AsyncReadExt::read_exact(&mut self.reader, &mut buf).await?;
                buf.truncate(n as usize);
                Ok(String::from_utf8_lossy(&buf).into_owned())
            }
            _ => bail!("unexpected Redis reply `{line}`"),
        }
    }
}

/// One command on a fresh connection.
pub async fn command(port: u16, args: &[&str]) -> anyhow::Result<String> {
    let mut c = Conn::open(port).await?;
    tokio::time::timeout(Duration::from_secs(5), c.call(args))
        .await
        .context("Redis did not answer within 5 s")?
}

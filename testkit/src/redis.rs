//! A real, throwaway `redis-server` on a free loopback port: no persistence (`--save ''`,
//! `--appendonly no`), its directory in a temporary folder. Each [`start`] is a server of its
//! own, so a test may pause or break it (`CLIENT PAUSE`, `DEBUG SLEEP` with
//! `--enable-debug-command local`) without disturbing others.
//!
//! The server is killed when the [`TestRedis`] is dropped, and by a small watchdog process
//! when the test binary exits without dropping it (a panic in another thread, `exit`, a kill).
//!
//! The binary is `$REDIS_SERVER`, else `redis-server` on the `PATH` (Debian's `redis-server`
//! package; `scripts/lib.sh`'s `need_redis` installs it).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stormwatch_store::embedded::free_loopback_port;

/// How long a server may take to answer its first PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running test Redis.
pub struct TestRedis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// Starts a server with the default options.
pub fn start() -> TestRedis {
    start_with(&[])
}

/// Starts a server with extra `redis-server` arguments (e.g. `["--enable-debug-command",
/// "local"]`). Panics with the reason (and the server's log) when it cannot start.
pub fn start_with(extra: &[&str]) -> TestRedis {
    let bin = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
    let dir = tempfile::Builder::new()
        .prefix("stormwatch-test-redis-")
        .tempdir()
        .expect("temp dir")
        .keep();
    let mut last_error = String::new();
    // A free port can be taken between our probe and the server's bind: try a few.
    for _ in 0..3 {
        let port = free_loopback_port().expect("free port");
        let log = dir.join(format!("redis-{port}.log"));
        let spawned = Command::new(&bin)
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(&log)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                panic!(
                    "cannot run {bin}: {e}. Install Debian's redis-server \
                     (scripts/test does) or set REDIS_SERVER"
                )
            }
        };
        spawn_watchdog(child.id(), &dir);
        match wait_ready(&mut child, port) {
            Ok(()) => return TestRedis { child, port, dir },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                last_error = format!("{e}\n--- redis log ---\n{log}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    panic!("test redis-server did not start: {last_error}");
}

fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("redis-server exited at start ({status})"));
        }
        if ping(port).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no PONG on 127.0.0.1:{port} within {START_TIMEOUT:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ping(port: u16) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"PING\r\n")?;
    let mut buf = [0u8; 7];
    s.read_exact(&mut buf)?;
    if &buf == b"+PONG\r\n" {
        Ok(())
    } else {
        Err(std::io::Error::other("unexpected reply to PING"))
    }
}

/// Kills the server when this test process is gone (checking the pid is still a
/// redis-server, in case it was reused), then removes its directory.
fn spawn_watchdog(redis_pid: u32, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null && kill -0 {rpid} 2>/dev/null; do sleep 0.5; done; \
         if ! kill -0 {pid} 2>/dev/null && grep -q redis-server /proc/{rpid}/cmdline 2>/dev/null; \
         then kill -9 {rpid}; fi; \
         if ! kill -0 {pid} 2>/dev/null; then rm -rf '{dir}'; fi",
        pid = std::process::id(),
        rpid = redis_pid,
        dir = dir.display(),
    );
    crate::spawn_watchdog_script(&script, "the test redis watchdog");
}

impl TestRedis {
    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's working directory (its log is `redis-PORT.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

//! The two binaries as the demo runs them: flags, ready line, health, and SIGTERM exporting
//! the last spans before a clean exit.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Spawns a binary and returns it with the address from its ready line (`<what> listening on ADDR`).
fn spawn_ready(bin: &str, what: &str, args: &[String]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("ready line within 60 s");
    let prefix = format!("{what} listening on ");
    let addr = line
        .trim()
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("ready line {line:?}"))
        .to_owned();
    (child, addr)
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "no exit within 20 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn help_documents_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_stormwatch-board"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--primary-url",
        "--replica-url",
        "--redis-url",
        "--partner-url",
        "--otlp-endpoint",
        "--service-name",
        "--max-concurrent",
        "--uploads-max-concurrent",
        "--seed-posts",
        "--replica-pool",
        "--connect-timeout-ms",
        "--redis-timeout-ms",
        "--partner-timeout-ms",
        "--startup-timeout-s",
        "BOARD_PRIMARY_URL",
    ] {
        assert!(help.contains(flag), "board --help lacks {flag}:\n{help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_stormwatch-partner"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--otlp-endpoint",
        "--service-name",
        "--delay-ms",
    ] {
        assert!(help.contains(flag), "partner --help lacks {flag}:\n{help}");
    }
    // A missing required flag is a clear error, not a panic.
    let out = Command::new(env!("CARGO_BIN_EXE_stormwatch-board"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--primary-url"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binaries_serve_and_export_their_last_spans_on_sigterm() {
    let receiver = Receiver::start().await;
    let primary = stormwatch_testkit::fresh_database().await;
    let redis = stormwatch_testkit::redis::start();
    let (mut partner, partner_addr) = spawn_ready(
        env!("CARGO_BIN_EXE_stormwatch-partner"),
        "partner",
        &[
            "--listen=127.0.0.1:0".into(),
            format!("--otlp-endpoint={}", receiver.endpoint()),
        ],
    );
    // The primary serves as its own replica here; the board seeds it at start.
    let (mut board, board_addr) = spawn_ready(
        env!("CARGO_BIN_EXE_stormwatch-board"),
        "board",
        &[
            "--listen=127.0.0.1:0".into(),
            format!("--primary-url={primary}"),
            format!("--replica-url={primary}"),
            format!("--redis-url={}", redis.url()),
            format!("--partner-url=http://{partner_addr}"),
            format!("--otlp-endpoint={}", receiver.endpoint()),
            format!("--seed-posts={SEED_POSTS}"),
        ],
    );
    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{board_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let r = http
        .get(format!("http://{board_addr}/timetable"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("http://{board_addr}/classes/class-0030/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["total"], 100, "seeded at start");
    let board_exit = tokio::task::spawn_blocking(move || terminate(&mut board))
        .await
        .unwrap();
    let partner_exit = tokio::task::spawn_blocking(move || terminate(&mut partner))
        .await
        .unwrap();
    assert!(board_exit.success(), "{board_exit}");
    assert!(partner_exit.success(), "{partner_exit}");
    // Everything was exported by the time they exited.
    let spans = receiver.spans();
    let has = |svc: &str, name: &str| spans.iter().any(|s| s.service == svc && s.name == name);
    assert!(has("board", "GET /timetable"));
    assert!(has("board", "GET /classes/{code}/posts"));
    assert!(has("board", "SELECT posts"));
    assert!(has("partner", "GET /timetable"));
    assert!(
        !spans.iter().any(|s| s.str("url.path") == Some("/healthz")),
        "/healthz is not traced"
    );
}

//! A real server on a loopback port, real sockets playing slow and careless clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::routing::{get, post};
use axum::Router;
use stormwatch_http::Limits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start(limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let router = Router::new()
        .route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                format!("hello {}", peer.ip())
            }),
        )
        .route(
            "/ingest",
            post(
                |body: Result<Bytes, axum::extract::rejection::BytesRejection>| async move {
                    match body {
                        Ok(b) => (axum::http::StatusCode::OK, format!("{} bytes", b.len())),
                        Err(r) => (r.status(), r.body_text()),
                    }
                },
            )
            .layer(DefaultBodyLimit::max(1024)),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(stormwatch_http::serve(
        listener,
        router,
        limits,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn short() -> Limits {
    Limits {
        header_read_timeout: Duration::from_secs(1),
        body_read_timeout: Duration::from_secs(1),
        ..Limits::default()
    }
}

/// Reads until the server closes the connection (or 30 s pass); what it sent.
async fn read_to_close(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut out)).await {
        Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
        Err(_) => None,
    }
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let (addr, _stop) = start(short()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickle = async {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if s.write_all(b"X-A: b\r\n").await.is_err() {
                break;
            }
        }
    };
    trickle.await;
    let answer = read_to_close(&mut s).await;
    assert!(answer.is_some(), "the connection was never closed");
}

#[tokio::test]
async fn eleven_hundred_trickling_connections_do_not_keep_a_client_out() {
    let (addr, _stop) = start(Limits::default()).await;
    let mut held = Vec::new();
    for _ in 0..1_100 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(s);
    }
    let started = Instant::now();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(format!("http://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello 127.0.0.1");
    println!(
        "served in {:.1} ms beside 1,100 trickling connections",
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(held);
}

#[tokio::test]
async fn a_stalled_body_fails_the_read_and_closes() {
    let (addr, _stop) = start(short()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nfirst bytes")
        .await
        .unwrap();
    let answer = read_to_close(&mut s).await.expect("closed");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let (_, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    rlimit::setrlimit(rlimit::Resource::NOFILE, 1024.min(hard), hard).unwrap();
    let now = stormwatch_http::raise_open_file_limit().unwrap();
    let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    assert_eq!((now, soft), (hard, hard));
}

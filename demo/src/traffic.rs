//! The board's users: open-loop HTTP traffic with a morning-peak shape (the scenario clock's
//! time of day sets the rate), and the upload flood while the scenario asks for it.
//!
//! The mix per request: 84 % list pages of existing classes, 8 % new posts, 8 % the timetable
//! (the partner call). Every 3 s a teacher creates a class and opens its list page 1 s later,
//! if it was created: the path that hits the missing-WHERE bug when
//! the replica lags. Parents check the timetable twice a second besides.
//! Requests are fire-and-forget with at most [`MAX_IN_FLIGHT`] open; beyond it a request is
//! skipped and counted (a client that cannot keep up must not pile up without bound).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::scenario::{self, Shared, DAY};

/// Most requests in flight at once.
pub const MAX_IN_FLIGHT: usize = 400;
/// Concurrent upload clients during the flood.
pub const FLOOD_CLIENTS: usize = 16;
/// Classes the board seeds (`class-0001` … ); the traffic lists the first ones.
pub const SEEDED_CLASSES: u32 = 2000;

/// Counters of what the traffic did.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub status_503: AtomicU64,
    pub other_errors: AtomicU64,
    pub skipped: AtomicU64,
}

/// Runs the traffic against `board` at `peak_rps` (at the morning peak) until aborted.
pub async fn run(
    board: String,
    peak_rps: f64,
    classes: u32,
    shared: Shared,
    counters: Arc<Counters>,
) {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(64)
        .build()
        .expect("HTTP client");
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let run_id = scenario::unix_ms() % 1_000_000_000;
    // Aborted with this task (aborting a task does not abort what it spawned).
    let _helpers = AbortOnDrop(vec![
        tokio::spawn(new_classes(
            client.clone(),
            board.clone(),
            run_id,
            counters.clone(),
        )),
        tokio::spawn(timetable_readers(
            client.clone(),
            board.clone(),
            counters.clone(),
        )),
        tokio::spawn(upload_flood(
            client.clone(),
            board.clone(),
            shared.clone(),
            counters.clone(),
        )),
    ]);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut owed = 0.0;
    loop {
        tick.tick().await;
        let tod = shared.clock().now().rem_euclid(DAY);
        owed += peak_rps * scenario::traffic_shape(tod) * 0.05;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                counters.skipped.fetch_add(1, Relaxed);
                continue;
            };
            let (client, board, counters) = (client.clone(), board.clone(), counters.clone());
            let class = format!("class-{:04}", fastrand::u32(1..=classes.max(1)));
            let pick = fastrand::u8(0..100);
            tokio::spawn(async move {
                let req = if pick < 84 {
                    client.get(format!("{board}/classes/{class}/posts"))
                } else if pick < 92 {
                    client
                        .post(format!("{board}/classes/{class}/posts"))
                        .json(&serde_json::json!({"title": "Field trip", "body": "Bring a packed lunch and a raincoat."}))
                } else {
                    client.get(format!("{board}/timetable"))
                };
                send(req, &counters).await;
                drop(permit);
            });
        }
    }
}

struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Sends one request; true when it succeeded.
async fn send(req: reqwest::RequestBuilder, counters: &Counters) -> bool {
    counters.sent.fetch_add(1, Relaxed);
    match req.send().await {
        Ok(r) if r.status().is_success() => {
            counters.ok.fetch_add(1, Relaxed);
            let _ = r.bytes().await;
            true
        }
        Ok(r) if r.status().as_u16() == 503 => {
            counters.status_503.fetch_add(1, Relaxed);
            false
        }
        _ => {
            counters.other_errors.fetch_add(1, Relaxed);
            false
        }
    }
}

/// A class created every 3 s, its list page opened 1 s later.
async fn new_classes(client: reqwest::Client, board: String, run_id: i64, counters: Arc<Counters>) {
    let mut n = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(3));
    loop {
        tick.tick().await;
        n += 1;
        let code = format!("new-{run_id}-{n}");
        let (client, board, counters) = (client.clone(), board.clone(), counters.clone());
        tokio::spawn(async move {
            let created = send(
                client
                    .post(format!("{board}/classes"))
                    .json(&serde_json::json!({ "code": code })),
                &counters,
            )
            .await;
            // Nobody opens a class that was not created (the board would scan everything
            // for an unknown code too — that is the bug, but not this incident).
            if !created {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            send(
                client.get(format!("{board}/classes/{code}/posts")),
                &counters,
            )
            .await;
        });
    }
}

/// Parents checking the timetable (the partner call) twice a second whatever the hour, so
/// the partner's latency is measured from enough calls to show a slowdown within seconds.
async fn timetable_readers(client: reqwest::Client, board: String, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let (client, board, counters) = (client.clone(), board.clone(), counters.clone());
        tokio::spawn(async move {
            send(client.get(format!("{board}/timetable")), &counters).await;
        });
    }
}

/// While the scenario floods uploads: [`FLOOD_CLIENTS`] clients posting 1 MiB each, with
/// 50 ms between their requests (more than the endpoint's limiter lets in at once).
async fn upload_flood(
    client: reqwest::Client,
    board: String,
    shared: Shared,
    counters: Arc<Counters>,
) {
    let mut on = shared.uploads_flood.subscribe();
    let body = bytes_of(1024 * 1024);
    loop {
        if on.wait_for(|f| *f).await.is_err() {
            return;
        }
        let mut clients = Vec::new();
        for _ in 0..FLOOD_CLIENTS {
            let (client, board, counters, body) = (
                client.clone(),
                board.clone(),
                counters.clone(),
                body.clone(),
            );
            let mut on = shared.uploads_flood.subscribe();
            clients.push(tokio::spawn(async move {
                while *on.borrow_and_update() {
                    send(
                        client
                            .post(format!("{board}/uploads"))
                            .header("content-type", "application/octet-stream")
                            .body(body.clone()),
                        &counters,
                    )
                    .await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }));
        }
        let _ = on.wait_for(|f| !*f).await;
        for c in clients {
            let _ = c.await;
        }
    }
}

fn bytes_of(n: usize) -> bytes::Bytes {
    let mut v = Vec::with_capacity(n);
    let mut x: u32 = 2_463_534_242;
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v.into()
}

//! The board and partner services against real PostgreSQL, a real redis-server and a
//! recording OTLP/HTTP receiver standing in for the agent.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value as Json;
use tokio::io::AsyncWriteExt;

fn parent_is(child: &Rec, parent: &Rec) -> bool {
    child.trace_id == parent.trace_id && child.parent == parent.span_id
}

/// The server span of the request to `path`, waited for.
async fn request_span(r: &Receiver, path: &str) -> Rec {
    r.wait_for(&format!("server span of {path}"), |s| {
        s.kind == SERVER && s.str("url.path") == Some(path)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn list_page_traces_server_postgres_and_redis_spans() {
    let st = Stack::start(Opts::default()).await;
    let resp = st
        .http
        .get(st.url("/classes/class-0007/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body["total"], 100, "a class has 100 seeded posts");
    assert_eq!(
        body["posts"].as_array().unwrap().len(),
        50,
        "a page shows 50"
    );
    assert!(body["posts"][0]["body"]
        .as_str()
        .is_some_and(|b| b.len() == 128));
    st.flush().await;

    let server = request_span(&st.receiver, "/classes/class-0007/posts").await;
    assert_eq!(server.service, "board");
    assert_eq!(server.name, "GET /classes/{code}/posts");
    assert_eq!(server.str("http.route"), Some("/classes/{code}/posts"));
    assert_eq!(server.str("http.request.method"), Some("GET"));
    assert_eq!(server.int("http.response.status_code"), Some(200));
    assert!(server.parent.is_empty(), "a root span");
    assert_ne!(server.status, STATUS_ERROR);

    let replica_port = i64::from(port_of(&st.replica_url));
    let children = st.receiver.trace(&server.trace_id);
    for c in children.iter().filter(|c| c.span_id != server.span_id) {
        assert!(
            parent_is(c, &server),
            "{} is a child of the server span",
            c.name
        );
        assert_eq!(c.kind, CLIENT, "{} is a client span", c.name);
    }
    let lookup = children
        .iter()
        .find(|c| c.name == "SELECT classes")
        .expect("class lookup span");
    assert_eq!(lookup.str("db.system.name"), Some("postgresql"));
    assert_eq!(lookup.str("db.role"), Some("replica"));
    assert_eq!(lookup.int("server.port"), Some(replica_port));
    assert_eq!(lookup.str("server.address"), Some("127.0.0.1"));
    assert_eq!(
        lookup.str("db.query.text"),
        Some("SELECT id FROM classes WHERE code = $1")
    );
    assert!(lookup.str("db.namespace").is_some_and(|n| !n.is_empty()));
    assert_eq!(lookup.int("db.response.returned_rows"), Some(1));
    let list = children
        .iter()
        .find(|c| c.name == "SELECT posts" && c.int("db.response.returned_rows") == Some(100))
        .expect("list statement span with 100 rows");
    assert_eq!(
        list.str("db.query.text"),
        Some("SELECT id, title, created_at::text FROM posts WHERE class_id = $1 ORDER BY id DESC")
    );
    assert_eq!(list.str("db.operation.name"), Some("SELECT"));
    assert_eq!(list.str("db.collection.name"), Some("posts"));
    let mget = children
        .iter()
        .find(|c| c.name == "MGET")
        .expect("redis MGET span");
    assert_eq!(mget.str("db.system.name"), Some("redis"));
    assert_eq!(mget.int("server.port"), Some(i64::from(st.redis.port())));
    assert!(mget
        .str("db.query.text")
        .is_some_and(|q| q.starts_with("MGET post:")));
    // The cache was cold: bodies read from the replica, then stored.
    let fill = children
        .iter()
        .find(|c| c.name == "SELECT posts" && c.int("db.response.returned_rows") == Some(50))
        .expect("bodies read on a cold cache");
    assert!(fill.str("db.query.text").unwrap().contains("ANY($1)"));
    let mset = children
        .iter()
        .find(|c| c.name == "MSET")
        .expect("cache fill");
    let first_body = &body["posts"][0]["body"].as_str().unwrap()[..32];
    let mset_text = mset.str("db.query.text").unwrap();
    assert!(mset_text.starts_with("MSET post:") && mset_text.contains(" ?"));
    assert!(!mset_text.contains(first_body), "no value in the statement");
    let db_connect = children
        .iter()
        .find(|c| c.name == "connect")
        .expect("connect span");
    assert_eq!(db_connect.str("db.role"), Some("replica"));

    // Second visit: every body comes from Redis.
    let resp = st
        .http
        .get(st.url("/classes/class-0007/posts?again=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    st.flush().await;
    let spans = st.receiver.spans();
    let second = spans
        .iter()
        .filter(|s| s.kind == SERVER && s.str("url.path") == Some("/classes/class-0007/posts"))
        .find(|s| s.span_id != server.span_id)
        .expect("second server span")
        .clone();
    let names: Vec<String> = st
        .receiver
        .trace(&second.trace_id)
        .iter()
        .map(|s| s.name.clone())
        .collect();
    assert!(names.contains(&"MGET".to_owned()));
    assert!(!names.contains(&"MSET".to_owned()), "warm cache: {names:?}");
    assert_eq!(
        names.iter().filter(|n| *n == "SELECT posts").count(),
        1,
        "only the list statement: {names:?}"
    );
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_class_missing_on_the_replica_loses_the_where() {
    let st = Stack::start(Opts::default()).await;
    let resp = st
        .http
        .post(st.url("/classes"))
        .json(&serde_json::json!({"code": "fresh-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let id = resp.json::<Json>().await.unwrap()["id"].as_i64().unwrap();
    let again = st
        .http
        .post(st.url("/classes"))
        .json(&serde_json::json!({"code": "fresh-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    // The "replica" has not seen the class: the list statement goes out without WHERE.
    let resp = st
        .http
        .get(st.url("/classes/fresh-1/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body["class_id"], Json::Null);
    assert_eq!(body["total"], SEED_POSTS, "every post of every class");
    st.flush().await;
    let server = request_span(&st.receiver, "/classes/fresh-1/posts").await;
    let trace = st.receiver.trace(&server.trace_id);
    let scan = trace
        .iter()
        .find(|s| {
            s.name == "SELECT posts"
                && s.int("db.response.returned_rows") == Some(i64::from(SEED_POSTS))
        })
        .expect("the full scan span");
    let sql = scan.str("db.query.text").unwrap();
    assert!(!sql.contains("WHERE"), "{sql}");
    assert_eq!(
        sql,
        "SELECT id, title, created_at::text FROM posts ORDER BY id DESC"
    );
    assert_eq!(scan.str("db.role"), Some("replica"));
    assert!(parent_is(scan, &server));

    // The replica catches up: the same page now filters.
    Stack::sql(
        &st.replica_url,
        &format!("INSERT INTO classes (id, code) VALUES ({id}, 'fresh-1')"),
    )
    .await;
    let resp = st
        .http
        .get(st.url("/classes/fresh-1/posts"))
        .send()
        .await
        .unwrap();
    let body: Json = resp.json().await.unwrap();
    assert_eq!(body["class_id"], id);
    assert_eq!(body["total"], 0);
    st.flush().await;
    let filtered = st
        .receiver
        .wait_for("the filtered list statement", |s| {
            s.name == "SELECT posts" && s.int("db.response.returned_rows") == Some(0)
        })
        .await;
    assert!(filtered
        .str("db.query.text")
        .unwrap()
        .contains("WHERE class_id = $1"));

    // A post written to the primary is found there, not on the lagging replica.
    let resp = st
        .http
        .post(st.url("/classes/fresh-1/posts"))
        .json(&serde_json::json!({"title": "hello", "body": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let missing = st
        .http
        .post(st.url("/classes/nope/posts"))
        .json(&serde_json::json!({"title": "hello", "body": "first"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    st.flush().await;
    let insert = st
        .receiver
        .wait_for("INSERT posts", |s| s.name == "INSERT posts")
        .await;
    assert_eq!(insert.str("db.role"), Some("primary"));
    let primary_port = i64::from(port_of(&st.primary_url));
    assert_eq!(insert.int("server.port"), Some(primary_port));
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_limiter_answers_503_when_full() {
    // The partner's answers are held until the test releases them: the two slow requests
    // are in flight, holding both permits, for as long as the checks below take.
    let st = Stack::start(Opts {
        max_concurrent: 2,
        gate_partner: true,
        partner_timeout_ms: 60_000,
        ..Opts::default()
    })
    .await;
    let gate = st.partner_gate.as_ref().unwrap();
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (c, u) = (st.http.clone(), st.url("/timetable"));
            tokio::spawn(async move { c.get(u).send().await.unwrap().status() })
        })
        .collect();
    // Both are past the limiter once their partner calls have gone out.
    until("both slow requests call the partner", || {
        gate.arrived() == 2
    })
    .await;
    let resp = st
        .http
        .get(st.url("/classes/class-0001/posts"))
        .send()
        .await
        .unwrap();
    // Refused at once: answered while both slow requests still wait for the partner (a
    // limiter that queued would answer only after the release below).
    assert_eq!(resp.status(), 503);
    assert!(slow.iter().all(|s| !s.is_finished()));
    assert_eq!(resp.headers()["retry-after"], "1");
    let reason: Json = resp.json().await.unwrap();
    assert!(reason["error"].as_str().unwrap().contains("overloaded"));
    assert!(st
        .http
        .get(st.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .is_success());
    gate.release();
    for s in slow {
        assert_eq!(s.await.unwrap(), 200);
    }
    let resp = st
        .http
        .get(st.url("/classes/class-0001/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "room again once they finished");
    st.flush().await;
    let refused = server_span(&st.receiver, "/classes/{code}/posts", 503).await;
    assert_eq!(refused.status, STATUS_ERROR);
    assert!(
        refused.message.contains("overloaded"),
        "{}",
        refused.message
    );
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_partner_call_carries_the_trace() {
    let st = Stack::start(Opts::default()).await;
    let resp = st.http.get(st.url("/timetable")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let body: Json = resp.json().await.unwrap();
    assert!(body["lessons"].as_array().is_some_and(|l| !l.is_empty()));
    st.flush().await;
    let server = server_span(&st.receiver, "/timetable", 200).await;
    let call = st
        .receiver
        .wait_for("partner call", |s| {
            s.service == "board" && s.kind == CLIENT && s.name == "GET /timetable"
        })
        .await;
    assert!(parent_is(&call, &server));
    assert_eq!(call.str("http.request.method"), Some("GET"));
    assert_eq!(call.str("url.template"), Some("/timetable"));
    assert_eq!(call.int("http.response.status_code"), Some(200));
    assert_eq!(
        call.int("server.port"),
        Some(i64::from(st.partner.addr().port()))
    );
    assert!(call.str("url.full").unwrap().ends_with("/timetable"));
    let remote = st
        .receiver
        .wait_for("partner server span", |s| {
            s.service == "partner" && s.kind == SERVER
        })
        .await;
    assert_eq!(
        remote.trace_id, server.trace_id,
        "one trace across both services"
    );
    assert_eq!(
        remote.parent, call.span_id,
        "the partner's span is the call's child"
    );
    assert_eq!(remote.str("http.route"), Some("/timetable"));
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partner_delay_is_set_at_run_time_and_the_board_times_out() {
    let st = Stack::start(Opts {
        partner_timeout_ms: 400,
        ..Opts::default()
    })
    .await;
    let set = |ms: u64| {
        st.http
            .put(st.partner_url(&format!("/admin/delay?ms={ms}")))
            .send()
    };
    assert_eq!(set(700).await.unwrap().status(), 200);
    let now: Json = st
        .http
        .get(st.partner_url("/admin/delay"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(now["delay_ms"], 700);
    let t = Instant::now();
    let direct = st
        .http
        .get(st.partner_url("/timetable"))
        .send()
        .await
        .unwrap();
    assert_eq!(direct.status(), 200);
    // The delay is the feature: at least what was set (load only adds to it).
    println!("partner with a 700 ms delay answered in {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    // The board gives up after --partner-timeout-ms: a 504 and a timed-out call span (below),
    // where waiting for the partner would have been a 200.
    let t = Instant::now();
    let via_board = st.http.get(st.url("/timetable")).send().await.unwrap();
    assert_eq!(via_board.status(), 504);
    println!("the board gave up on the partner after {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(set(999_999_999).await.unwrap().status(), 400);
    assert_eq!(set(0).await.unwrap().status(), 200);
    // Without the delay the call fits in the 400 ms the board gives it.
    let fast = st.http.get(st.url("/timetable")).send().await.unwrap();
    assert_eq!(fast.status(), 200);
    st.flush().await;
    let failed = st
        .receiver
        .wait_for("timed-out partner call", |s| {
            s.service == "board" && s.kind == CLIENT && s.status == STATUS_ERROR
        })
        .await;
    assert!(failed.message.contains("timed out"), "{}", failed.message);
    let server = server_span(&st.receiver, "/timetable", 504).await;
    assert_eq!(server.status, STATUS_ERROR);
    st.board.stop().await;
}

/// A TCP forwarder to PostgreSQL that can go silent (accepts, never answers: a hung primary)
/// or be closed (connects refused: a stopped primary).
async fn primary_proxy(target: u16) -> (u16, Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let silent = Arc::new(AtomicBool::new(false));
    let mode = silent.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = l.accept().await else {
                return;
            };
            let silent = mode.load(Ordering::SeqCst);
            tokio::spawn(async move {
                if silent {
                    // Never answered nor closed: only the board's own timeout ends a connect.
                    std::future::pending::<()>().await;
                    drop(inbound);
                } else if let Ok(mut out) =
                    tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    });
    (port, silent, task)
}

fn port_of(url: &str) -> u16 {
    let c: tokio_postgres::Config = url.parse().unwrap();
    c.get_ports()[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hung_or_refused_primary_connect_is_an_error_span_naming_it() {
    let primary = seeded_database().await;
    let (proxy_port, silent, proxy) = primary_proxy(port_of(&primary)).await;
    let via_proxy = primary.replace(
        &format!("port={}", port_of(&primary)),
        &format!("port={proxy_port}"),
    );
    assert_ne!(via_proxy, primary);
    let st = Stack::start(Opts {
        primary_override: Some(via_proxy),
        connect_timeout_ms: 500,
        ..Opts::default()
    })
    .await;
    let ok = st
        .http
        .post(st.url("/classes"))
        .json(&serde_json::json!({"code": "before"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201, "writes work through the proxy");
    // The primary hangs: connects time out, the request does not.
    silent.store(true, Ordering::SeqCst);
    let t = Instant::now();
    let resp = st
        .http
        .post(st.url("/classes"))
        .json(&serde_json::json!({"code": "hung"}))
        .send()
        .await
        .unwrap();
    // Answered at all, though the primary never answers: the connect timed out.
    assert_eq!(resp.status(), 503);
    println!("a hung primary: 503 after {:?}", t.elapsed());
    st.flush().await;
    let timed_out = st
        .receiver
        .wait_for("timed-out connect", |s| {
            s.name == "connect" && s.str("error.type") == Some("timeout")
        })
        .await;
    assert_eq!(timed_out.status, STATUS_ERROR);
    // "connect timeout" is one of the agent's connect-failure patterns.
    assert!(
        timed_out.message.contains("connect timeout"),
        "{}",
        timed_out.message
    );

    // The primary stops listening: connects are refused.
    proxy.abort();
    let _ = proxy.await;
    let t = Instant::now();
    let resp = st
        .http
        .post(st.url("/classes"))
        .json(&serde_json::json!({"code": "during"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    println!("a stopped primary: 503 after {:?}", t.elapsed());
    // Refused, not timed out: no wait for a connect timeout.
    let reason = resp.json::<Json>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.to_lowercase().contains("connection refused"),
        "{reason}"
    );
    // Reads go to the replica and still work.
    let page = st
        .http
        .get(st.url("/classes/class-0002/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    st.flush().await;
    let failed = st
        .receiver
        .wait_for("refused connect", |s| {
            s.name == "connect" && s.str("error.type") == Some("connect_failure")
        })
        .await;
    assert_eq!(failed.kind, CLIENT);
    assert_eq!(failed.str("db.system.name"), Some("postgresql"));
    assert_eq!(failed.str("db.role"), Some("primary"));
    assert_eq!(failed.int("server.port"), Some(i64::from(proxy_port)));
    assert_eq!(failed.str("error.type"), Some("connect_failure"));
    // The agent's connect-failure patterns include "connection refused".
    assert!(
        failed.message.to_lowercase().contains("connection refused"),
        "{}",
        failed.message
    );
    let server = st
        .receiver
        .trace(&failed.trace_id)
        .into_iter()
        .find(|s| s.kind == SERVER)
        .expect("the request's server span");
    assert_eq!(server.int("http.response.status_code"), Some(503));
    assert!(parent_is(&failed, &server));
    assert_eq!(server.status, STATUS_ERROR);
    assert!(server.message.to_lowercase().contains("connection refused"));
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_redis_slows_the_page_but_it_still_answers() {
    let st = Stack::start(Opts {
        redis_timeout_ms: 300,
        ..Opts::default()
    })
    .await;
    let client = redis::Client::open(st.redis.url()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1_500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let t = Instant::now();
    let resp = st
        .http
        .get(st.url("/classes/class-0003/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Json = resp.json().await.unwrap();
    assert!(
        body["posts"][0]["body"].as_str().is_some(),
        "bodies from the replica"
    );
    // At least the 300 ms Redis timeout (load only adds to it); that the page did not wait
    // out the pause is shown by its MGET span, which timed out.
    println!("page with a paused Redis: {:?}", t.elapsed());
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    st.flush().await;
    let mget = st
        .receiver
        .wait_for("timed-out MGET", |s| {
            s.name == "MGET" && s.status == STATUS_ERROR
        })
        .await;
    assert!(mget.message.contains("timed out"), "{}", mget.message);

    // The pause ends (a command is held until it does): the cache answers again on the same
    // connection manager.
    let _: String = redis::cmd("PING").query_async(&mut admin).await.unwrap();
    let resp = st
        .http
        .get(st.url("/classes/class-0004/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    st.flush().await;
    let server = request_span(&st.receiver, "/classes/class-0004/posts").await;
    let trace = st.receiver.trace(&server.trace_id);
    let mget = trace.iter().find(|s| s.name == "MGET").expect("MGET");
    assert_ne!(mget.status, STATUS_ERROR, "{}", mget.message);
    let mset = trace.iter().find(|s| s.name == "MSET").expect("MSET");
    assert_ne!(mset.status, STATUS_ERROR, "{}", mset.message);
    st.board.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_have_their_own_limit() {
    let st = Stack::start(Opts {
        uploads_max_concurrent: 1,
        ..Opts::default()
    })
    .await;
    // One upload holds the only slot: its body is promised but not sent yet. It asks to be
    // told to go on, which the server does when the handler reads the body: past the limiter.
    let mut held = tokio::net::TcpStream::connect(st.board.addr())
        .await
        .unwrap();
    held.write_all(
        b"POST /uploads HTTP/1.1\r\nhost: board\r\ncontent-length: 10\r\nexpect: 100-continue\r\n\r\n",
    )
    .await
    .unwrap();
    let mut go_on = vec![0u8; 25];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut go_on)
        .await
        .unwrap();
    assert_eq!(&go_on, b"HTTP/1.1 100 Continue\r\n\r\n");
    held.write_all(b"hello").await.unwrap();
    let refused = st
        .http
        .post(st.url("/uploads"))
        .body(vec![7u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    let other = st.http.get(st.url("/timetable")).send().await.unwrap();
    assert_eq!(other.status(), 200, "other routes unaffected");
    held.write_all(b"world").await.unwrap();
    let mut reply = vec![0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut held, &mut reply)
        .await
        .unwrap();
    assert_eq!(&reply, b"HTTP/1.1 201");
    let ok = st
        .http
        .post(st.url("/uploads"))
        .body(vec![7u8; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    let too_big = st
        .http
        .post(st.url("/uploads"))
        .body(vec![0u8; 8 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    st.flush().await;
    let work = st
        .receiver
        .wait_for("upload work span", |s| s.name == "process upload")
        .await;
    assert_eq!(work.kind, 1, "internal");
    let insert = st
        .receiver
        .wait_for("upload insert", |s| s.name == "INSERT uploads")
        .await;
    assert_eq!(insert.str("db.role"), Some("primary"));
    st.board.stop().await;
}

//! Incidents end to end: batches over real HTTP, rules evaluated against a real PostgreSQL,
//! related alerts grouped into one incident with its probable cause, an unrelated one into
//! its own, both resolved when their alerts are; served by the API and the pages, and carried
//! by the webhook.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{start, Running, TOKEN};
use serde_json::Value;
use stormwatch_collector::alerts::config::{AlertsConfig, Dur};
use stormwatch_collector::Config;
use stormwatch_model::{
    now_ns, Aggregate, AggregateKey, Batch, DbRole, DependencyClass, ProbeSample, Span,
};

const CACHE: &str = "cache (redis, 10.0.0.3:6379)";
const NS: i64 = 1_000_000_000;

fn batch() -> Batch {
    common::batch_of("agent-incidents")
}

/// `n` spans of `board` ending at `end_ns`, counted in their minute's aggregates.
fn spans(
    b: &mut Batch,
    end_ns: i64,
    n: u64,
    class: DependencyClass,
    operation: &str,
    ms: i64,
    status: u32,
) {
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        service: "board".into(),
        operation: operation.into(),
        class: class as i32,
        peer: if class == DependencyClass::Redis {
            CACHE.into()
        } else {
            String::new()
        },
        http_status: status,
        start_ns: end_ns - ms * 1_000_000,
        duration_ns: ms * 1_000_000,
        ..Default::default()
    };
    let key = AggregateKey::of_span(&span);
    let mut agg = Aggregate::new(&key);
    for _ in 0..n {
        agg.add(&span);
    }
    b.aggregates.push(agg);
}

/// Half an hour ago, a calm minute: GET /list in 10 ms, two 2 ms cache calls a request.
fn calm(at_ns: i64) -> Batch {
    let mut b = batch();
    spans(
        &mut b,
        at_ns,
        500,
        DependencyClass::HttpServer,
        "GET /list",
        10,
        200,
    );
    spans(&mut b, at_ns, 1000, DependencyClass::Redis, "GET", 2, 0);
    b
}

/// Now: the cache answers in 600 ms, GET /list takes 1.2 s and half of it is refused (503).
fn slow_cache(at_ns: i64) -> Batch {
    let mut b = batch();
    spans(
        &mut b,
        at_ns,
        100,
        DependencyClass::HttpServer,
        "GET /list",
        1_210,
        200,
    );
    spans(
        &mut b,
        at_ns,
        100,
        DependencyClass::HttpServer,
        "GET /list",
        1_210,
        503,
    );
    spans(&mut b, at_ns, 400, DependencyClass::Redis, "GET", 600, 0);
    b
}

fn lag(database: &str, seconds: f64) -> ProbeSample {
    ProbeSample {
        time_ns: now_ns(),
        database: database.into(),
        engine: "postgres".into(),
        role: DbRole::Replica as i32,
        connect_us: Some(800),
        lag_seconds: Some(seconds),
        ..Default::default()
    }
}

#[derive(Clone, Default)]
struct Hook {
    got: Arc<Mutex<Vec<Value>>>,
}

async fn record(State(h): State<Hook>, Json(body): Json<Value>) -> &'static str {
    h.got.lock().unwrap().push(body);
    "ok"
}

async fn hook() -> (Hook, SocketAddr) {
    let h = Hook::default();
    let app = Router::new().fallback(post(record)).with_state(h.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (h, addr)
}

async fn get(c: &Running, path: &str) -> (u16, String) {
    let r = reqwest::get(c.endpoint(path)).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn incidents(c: &Running) -> Vec<Value> {
    let (status, body) = get(c, "/api/v1/incidents").await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v["incidents"].as_array().unwrap().clone()
}

async fn until<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn related_alerts_form_one_incident_with_its_cause_and_resolve_together() {
    let (hook, addr) = hook().await;
    let db = stormwatch_testkit::fresh_database().await;
    let mut alerts: AlertsConfig = toml::from_str(&format!(
        r#"
        [[channels]]
        name = "hook"
        type = "webhook"
        url = "http://{addr}/"

        [[rules]]
        name = "cache-p95"
        kind = "latency"
        class = "redis"
        threshold = 100
        group_by = ["class", "peer"]
        resolve_after = "0s"
        severity = "critical"

        [[rules]]
        name = "list-5xx"
        kind = "error_rate"
        class = "http_server"
        statuses = ["5xx"]
        threshold = 0.05
        group_by = ["service", "operation"]
        resolve_after = "0s"

        [[rules]]
        name = "replica-lag"
        kind = "replication_lag"
        threshold = 5
        resolve_after = "0s"
        severity = "critical"
        "#
    ))
    .unwrap();
    alerts.default_rules = false;
    alerts.evaluate_every = Dur(Duration::from_millis(300));
    let mut config = Config::for_tests(&db, TOKEN);
    config.alerts = alerts;
    let c = start(config).await;

    let now = now_ns();
    c.ingest(&calm(now - 30 * 60 * NS)).await;
    // Calm: no incident.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(incidents(&c).await.is_empty());

    // The cache slows (and GET /list answers 503), and an unrelated replica falls behind.
    c.ingest(&slow_cache(now_ns())).await;
    let mut b = batch();
    b.probes = vec![lag("other-replica", 30.0)];
    c.ingest(&b).await;

    let open = until("two incidents", Duration::from_secs(20), async || {
        let v = incidents(&c).await;
        let alerts: usize = v
            .iter()
            .map(|i| i["alerts"].as_array().unwrap().len())
            .sum();
        (v.len() == 2 && alerts == 3).then_some(v)
    })
    .await;
    let cache = open
        .iter()
        .find(|i| i["alerts"].as_array().unwrap().len() == 2)
        .expect("the cache and the 5xx alerts together");
    let rules: Vec<&str> = cache["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert!(
        rules.contains(&"cache-p95") && rules.contains(&"list-5xx"),
        "{rules:?}"
    );
    let cause = cache["cause_text"].as_str().unwrap();
    println!("cache incident: {}\n  cause: {cause}", cache["title"]);
    println!(
        "replica incident cause: {}",
        open.iter()
            .map(|i| i["cause_text"].as_str().unwrap())
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(
        cause.starts_with("Redis cache p95 ")
            && cause.contains("its usual, explains")
            && cause.contains("of the added latency of GET /list; its 503s began "),
        "{cause}"
    );
    let replica = open
        .iter()
        .find(|i| i["alerts"].as_array().unwrap().len() == 1)
        .unwrap();
    assert_eq!(replica["alerts"][0]["labels"]["database"], "other-replica");
    assert!(
        replica["cause_text"]
            .as_str()
            .unwrap()
            .starts_with("Replica other-replica fell 30 s behind"),
        "{replica}"
    );

    // One incident by id, with its ranked causes and their evidence.
    let id = cache["id"].as_i64().unwrap();
    let (status, body) = get(&c, &format!("/api/v1/incidents/{id}")).await;
    assert_eq!(status, 200, "{body}");
    let one: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(one["cause"][0]["rank"], 1);
    assert_eq!(one["cause"][0]["kind"], "dependency");
    assert!(one["cause"][0]["evidence"].as_array().unwrap().len() > 3);
    assert_eq!(get(&c, "/api/v1/incidents/nope").await.0, 400);
    assert_eq!(get(&c, "/api/v1/incidents/999999").await.0, 404);

    // The pages.
    let (status, page) = get(&c, "/incidents").await;
    assert_eq!(status, 200);
    assert!(page.contains(&format!("href=\"/incidents/{id}?")), "{page}");
    let (status, page) = get(&c, &format!("/incidents/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("id=\"causes\"") && page.contains("Redis cache p95"),
        "{page}"
    );
    // Its timeline: the alerts, the top cause's p95 and the operation's p95 and 5xx.
    let timeline = page.split("id=\"timeline\">").nth(1).unwrap_or("");
    for row in [
        "cache-p95 ",
        "list-5xx ",
        &format!("p95 redis {CACHE}"),
        "p95 GET /list (board)",
        "5xx/min GET /list",
    ] {
        assert!(timeline.contains(row), "no `{row}` row: {timeline}");
    }
    // Its path on the map: the board's calls to the cache in vermillion.
    let map = page.split("id=\"incident-map\">").nth(1).unwrap_or("");
    assert!(
        map.contains("class=\"edge hot\" d=\"M")
            && map.contains(&format!("<title>board → {CACHE} (redis): ")),
        "{map}"
    );
    let (_, page) = get(&c, "/").await;
    assert!(page.contains("id=\"open-incidents\""), "{page}");

    // The webhook's alerts carry their incident and its cause.
    let sent = until("the firing webhook", Duration::from_secs(10), async || {
        let got = hook.got.lock().unwrap().clone();
        let alerts: Vec<Value> = got
            .iter()
            .flat_map(|m| m["alerts"].as_array().unwrap().clone())
            .collect();
        (alerts.len() >= 3).then_some(alerts)
    })
    .await;
    let p95 = sent.iter().find(|a| a["rule"] == "cache-p95").unwrap();
    assert_eq!(p95["incident"]["id"], id, "{p95}");
    assert!(
        p95["incident"]["cause"]
            .as_str()
            .unwrap()
            .starts_with("Redis cache p95"),
        "{p95}"
    );

    // Everything leaves its window: every alert resolves, and so does every incident.
    c.alerts().shift_clock(Duration::from_secs(180));
    let done = until("incidents resolved", Duration::from_secs(20), async || {
        let v = incidents(&c).await;
        v.iter().all(|i| !i["resolved"].is_null()).then_some(v)
    })
    .await;
    assert_eq!(done.len(), 2, "no new incident while calm");
    for i in &done {
        assert!(
            i["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|a| !a["resolved"].is_null()),
            "{i}"
        );
    }
    let (_, page) = get(&c, "/").await;
    assert!(!page.contains("id=\"open-incidents\""));
    c.stop().await;
}

/// The seed's primary refused connections at 10:00 every day and nobody saw it for three
/// days. An incident of refusals at a time of day the database refused before says so, on the
/// incident, in the API and in the webhook.
#[tokio::test]
async fn a_refusal_that_happened_on_earlier_days_says_so() {
    let (hook, addr) = hook().await;
    let db = stormwatch_testkit::fresh_database().await;
    let mut alerts: AlertsConfig = toml::from_str(&format!(
        r#"
        [[channels]]
        name = "hook"
        type = "webhook"
        url = "http://{addr}/"

        [[rules]]
        name = "db-connect"
        kind = "db_connect"
        threshold = 1
        window = "15s"
        severity = "critical"
        "#
    ))
    .unwrap();
    alerts.default_rules = false;
    alerts.evaluate_every = Dur(Duration::from_millis(300));
    let mut config = Config::for_tests(&db, TOKEN);
    config.alerts = alerts;
    let c = start(config).await;

    // Three earlier days: refused for 5 minutes from this time of day (as the agents wrote
    // it then; a week of samples cannot be ingested today).
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let now_s = now_ns() / NS;
    for days_ago in [3i64, 2, 1] {
        let from = now_s - days_ago * 86_400;
        client
            .execute(
                "INSERT INTO sw_probe_samples (time, agent_id, database, engine, role, failure,
                                               replay_paused, detail)
                 SELECT to_timestamp(t), 'app-1', 'board-primary', 'postgres', 'primary',
                        'too_many_connections', false, '{}'
                   FROM generate_series($1::bigint, $1::bigint + 300, 5) AS t",
                &[&from],
            )
            .await
            .unwrap();
    }
    // Today it refuses again.
    let mut b = batch();
    b.probes = vec![ProbeSample {
        time_ns: now_ns(),
        database: "board-primary".into(),
        engine: "postgres".into(),
        role: DbRole::Primary as i32,
        failure: 4, // too_many_connections
        failure_message: "sorry, too many clients already".into(),
        ..Default::default()
    }];
    c.ingest(&b).await;

    let incident = until(
        "the refusal's incident",
        Duration::from_secs(20),
        async || {
            incidents(&c)
                .await
                .into_iter()
                .find(|i| i["recurrence"].as_array().is_some_and(|r| !r.is_empty()))
        },
    )
    .await;
    let words = incident["recurrence"][0].as_str().unwrap().to_owned();
    println!("recurrence: {words}");
    assert!(
        words.starts_with("board-primary refused connections ")
            && words.ends_with(" UTC on 4 of the last 7 days"),
        "{words}"
    );
    let id = incident["id"].as_i64().unwrap();
    let (_, page) = get(&c, &format!("/incidents/{id}")).await;
    assert!(
        page.contains("<h2>Seen before</h2>") && page.contains(&words),
        "{page}"
    );
    let (_, page) = get(&c, "/databases?range=1h").await;
    assert!(page.contains(&format!("Recurring: {words}.")), "{page}");
    let sent = until(
        "the webhook with the recurrence",
        Duration::from_secs(10),
        async || {
            let got = hook.got.lock().unwrap().clone();
            got.iter()
                .flat_map(|m| m["alerts"].as_array().unwrap().clone())
                .find(|a| a["incident"]["recurrence"][0] == words.as_str())
        },
    )
    .await;
    assert_eq!(sent["rule"], "db-connect");
    c.stop().await;
}

/// A collector on a fresh database with one rule: the 5xx rate per service and operation.
async fn orders_5xx_collector() -> Running {
    let db = stormwatch_testkit::fresh_database().await;
    let mut alerts: AlertsConfig = toml::from_str(
        r#"
        [[rules]]
        name = "orders-5xx"
        kind = "error_rate"
        class = "http_server"
        statuses = ["5xx"]
        threshold = 0.05
        group_by = ["service", "operation"]
        resolve_after = "0s"
        "#,
    )
    .unwrap();
    alerts.default_rules = false;
    alerts.evaluate_every = Dur(Duration::from_millis(300));
    let mut config = Config::for_tests(&db, TOKEN);
    config.alerts = alerts;
    let c = start(config).await;
    c
}

/// A version new to the service just before its errors: the incident's first-ranked cause,
/// and a change mark on its timeline.
#[tokio::test]
async fn a_deploy_just_before_the_errors_is_the_probable_cause() {
    let c = orders_5xx_collector().await;

    let now = now_ns();
    let version = |instance: &str, v: &str, at_ns: i64| stormwatch_model::ServiceVersion {
        service: "board".into(),
        instance: instance.into(),
        version: v.into(),
        environment: "prod".into(),
        first_seen_ns: at_ns,
    };
    // Running 1.4.1 for an hour, calm; 40 s ago one of two instances moved to 1.4.2.
    let mut b = calm(now - 30 * 60 * NS);
    b.versions = vec![
        version("app-1", "1.4.1", now - 3_600 * NS),
        version("app-2", "1.4.1", now - 3_600 * NS),
    ];
    c.ingest(&b).await;
    let mut b = batch();
    b.versions = vec![version("app-1", "1.4.2", now - 40 * NS)];
    spans(
        &mut b,
        now,
        100,
        DependencyClass::HttpServer,
        "POST /orders",
        12,
        200,
    );
    spans(
        &mut b,
        now,
        60,
        DependencyClass::HttpServer,
        "POST /orders",
        12,
        500,
    );
    c.ingest(&b).await;

    let incident = until(
        "the errors' incident",
        Duration::from_secs(20),
        async || incidents(&c).await.into_iter().next(),
    )
    .await;
    let cause = incident["cause_text"].as_str().unwrap();
    println!("cause: {cause}");
    assert!(
        cause.starts_with("errors began ")
            && cause.ends_with(" s after board 1.4.2 appeared on 1 of 2 instances (was 1.4.1)"),
        "{incident}"
    );
    let id = incident["id"].as_i64().unwrap();
    let (_, page) = get(&c, &format!("/incidents/{id}")).await;
    let timeline = page.split("id=\"timeline\">").nth(1).unwrap_or("");
    assert!(
        timeline.contains("<g class=\"change\">")
            && timeline.contains("board 1.4.2 appeared on 1 of 2 instances (was 1.4.1)</title>"),
        "{timeline}"
    );
    c.stop().await;
}

/// Two app servers behind one service; one starts answering 500s: the incident names it.
#[tokio::test]
async fn an_instance_answering_most_errors_is_the_probable_cause() {
    let c = orders_5xx_collector().await;
    let now = now_ns();
    for (agent, ok, failed) in [("app-1", 100, 1), ("app-2", 100, 60)] {
        let mut b = common::batch_of(agent);
        for (n, status) in [(ok, 200), (failed, 500)] {
            spans(
                &mut b,
                now,
                n,
                DependencyClass::HttpServer,
                "POST /orders",
                12,
                status,
            );
        }
        c.ingest(&b).await;
    }
    let incident = until(
        "the errors' incident",
        Duration::from_secs(20),
        async || incidents(&c).await.into_iter().next(),
    )
    .await;
    let cause = incident["cause_text"].as_str().unwrap();
    println!("cause: {cause}");
    assert_eq!(
        cause, "app-2 answered 98 % of board's 5xx: 38 % of its requests against 1.0 % on its 1 other instance",
        "{incident}"
    );
    c.stop().await;
}

#[derive(Clone, Default)]
struct FakeSlack {
    got: Arc<Mutex<Vec<(String, Value)>>>,
}

async fn slack_api(
    State(s): State<FakeSlack>,
    uri: axum::http::Uri,
    Json(body): Json<Value>,
) -> Json<Value> {
    let mut got = s.got.lock().unwrap();
    got.push((uri.path().to_owned(), body));
    // Each message its own ts; the channel answered as an id, as Slack does.
    Json(
        serde_json::json!({"ok": true, "channel": "C0ONCALL", "ts": format!("1700000000.{:06}", got.len())}),
    )
}

/// Slack in bot mode: one head message per incident with its cause, the alerts in its thread,
/// the head updated as the incident goes on and when it resolves.
#[tokio::test]
async fn a_slack_bot_threads_an_incidents_alerts_under_one_message() {
    let slack = FakeSlack::default();
    let app = Router::new()
        .fallback(post(slack_api))
        .with_state(slack.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    std::env::set_var("SW_TEST_THREAD_BOT_TOKEN", "xoxb-thread-test");
    let db = stormwatch_testkit::fresh_database().await;
    let mut alerts: AlertsConfig = toml::from_str(&format!(
        r##"
        [[channels]]
        name = "bot"
        type = "slack"
        bot_token_env = "SW_TEST_THREAD_BOT_TOKEN"
        channel = "#oncall"
        api_url = "http://{addr}/api"

        [[rules]]
        name = "cache-p95"
        kind = "latency"
        class = "redis"
        threshold = 100
        group_by = ["class", "peer"]
        resolve_after = "0s"

        [[rules]]
        name = "list-5xx"
        kind = "error_rate"
        class = "http_server"
        statuses = ["5xx"]
        threshold = 0.05
        group_by = ["service", "operation"]
        resolve_after = "0s"
        "##
    ))
    .unwrap();
    alerts.default_rules = false;
    alerts.evaluate_every = Dur(Duration::from_millis(300));
    let mut config = Config::for_tests(&db, TOKEN);
    config.alerts = alerts;
    let c = start(config).await;
    let now = now_ns();
    c.ingest(&calm(now - 30 * 60 * NS)).await;
    c.ingest(&slow_cache(now_ns())).await;

    let got = until(
        "the head, the alerts and an update",
        Duration::from_secs(20),
        async || {
            let got = slack.got.lock().unwrap().clone();
            let posts = got
                .iter()
                .filter(|(p, _)| p.ends_with("chat.postMessage"))
                .count();
            let updates = got
                .iter()
                .filter(|(p, _)| p.ends_with("chat.update"))
                .count();
            (posts >= 2 && updates >= 1).then_some(got)
        },
    )
    .await;
    let (path, head) = &got[0];
    assert!(path.ends_with("chat.postMessage"), "{got:#?}");
    let text = head["text"].as_str().unwrap();
    assert!(
        text.starts_with(":rotating_light: OPEN · Incident #")
            && text.contains("probable cause: Redis cache p95"),
        "{text}"
    );
    assert!(head.get("thread_ts").is_none());
    let head_ts = "1700000000.000001";
    let in_thread = got
        .iter()
        .filter(|(p, b)| p.ends_with("chat.postMessage") && b["thread_ts"] == head_ts)
        .count();
    let heads = got
        .iter()
        .filter(|(p, b)| p.ends_with("chat.postMessage") && b.get("thread_ts").is_none())
        .count();
    assert_eq!(heads, 1, "one head per incident: {got:#?}");
    assert!(in_thread >= 1, "{got:#?}");
    assert!(
        got.iter().any(|(p, b)| p.ends_with("chat.update")
            && b["ts"] == head_ts
            && b["channel"] == "C0ONCALL"),
        "{got:#?}"
    );

    // It resolves: the resolves go into the thread and the head says so.
    c.alerts().shift_clock(Duration::from_secs(180));
    until(
        "the head marked resolved",
        Duration::from_secs(20),
        async || {
            let got = slack.got.lock().unwrap().clone();
            got.iter()
                .any(|(p, b)| {
                    p.ends_with("chat.update")
                        && b["text"].as_str().is_some_and(|t| {
                            t.starts_with(":white_check_mark: RESOLVED · Incident #")
                        })
                })
                .then_some(())
        },
    )
    .await;
    let got = slack.got.lock().unwrap().clone();
    assert_eq!(
        got.iter()
            .filter(|(p, b)| p.ends_with("chat.postMessage") && b.get("thread_ts").is_none())
            .count(),
        1,
        "still one head: {got:#?}"
    );
    c.stop().await;
}

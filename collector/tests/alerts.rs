//! Alerting end to end: batches over real HTTP, rules evaluated against a real PostgreSQL,
//! notifications posted to a local HTTP receiver standing in for Slack and webhooks.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use common::{start, Running, TOKEN};
use serde_json::Value;
use stormwatch_collector::alerts::config::{AlertsConfig, Dur};
use stormwatch_collector::Config;
use stormwatch_model::{
    Aggregate, AggregateKey, Batch, DbRole, DependencyClass, ProbeSample, Span,
};

/// What the receiver got: path, headers, JSON body, when.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    auth: Option<String>,
    body: Value,
    /// The alert engine's evaluation count when it arrived (see [`Receiver::count_rounds`]).
    round: u64,
}

/// An answer to give instead of 200: (status, Retry-After seconds).
type Scripted = (u16, Option<u32>);

/// Reads a collector's alert evaluation counter.
type Rounds = Arc<dyn Fn() -> u64 + Send + Sync>;

#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    /// Answers to give before answering 200: (status, Retry-After).
    script: Arc<Mutex<VecDeque<Scripted>>>,
    /// When each request came in, answered or not.
    attempts: Arc<Mutex<Vec<Instant>>>,
    /// Reads the evaluation count of the collector that sends here (0 until set).
    rounds: Arc<Mutex<Option<Rounds>>>,
    /// Set by [`Receiver::hold_next`]: the next request waits for this before it is recorded.
    gate: Arc<Mutex<Option<tokio::sync::oneshot::Receiver<()>>>>,
    /// True while a request waits at the gate.
    holding: Arc<std::sync::atomic::AtomicBool>,
}

async fn record(
    State(r): State<Receiver>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    r.attempts.lock().unwrap().push(Instant::now());
    let gate = r.gate.lock().unwrap().take();
    if let Some(gate) = gate {
        r.holding.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = gate.await;
        r.holding.store(false, std::sync::atomic::Ordering::SeqCst);
    }
    let scripted = r.script.lock().unwrap().pop_front();
    if let Some((status, retry_after)) = scripted {
        if retry_after.is_some() {
            // A slow answer: Retry-After counts from when it arrives, not from the send.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let mut resp = StatusCode::from_u16(status).unwrap().into_response();
        if let Some(s) = retry_after {
            resp.headers_mut()
                .insert("retry-after", s.to_string().parse().unwrap());
        }
        return resp;
    }
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    r.got.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        auth,
        body,
        round: r.rounds.lock().unwrap().as_ref().map_or(0, |f| f()),
    });
    if uri.path().ends_with("chat.postMessage") {
        return Json(
            serde_json::json!({"ok": true, "channel": "C0ONCALL", "ts": "1700000000.000100"}),
        )
        .into_response();
    }
    if uri.path().ends_with("chat.update") {
        return Json(serde_json::json!({"ok": true})).into_response();
    }
    "ok".into_response()
}

impl Receiver {
    async fn start() -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        let app = Router::new().fallback(post(record)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }

    /// Holds the next request (before it counts as received) until the returned sender
    /// fires: a Slack that is slow to answer.
    fn hold_next(&self) -> tokio::sync::oneshot::Sender<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        *self.gate.lock().unwrap() = Some(rx);
        tx
    }

    /// Stamps each message with `c`'s evaluation count as it arrives.
    fn count_rounds(&self, c: &Running) {
        let counter = c.state().metrics.alert_evaluations.clone();
        *self.rounds.lock().unwrap() = Some(Arc::new(move || counter.get()));
    }

    fn is_holding(&self) -> bool {
        self.holding.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn messages(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` messages arrived (or panics after `timeout`).
    async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} messages, got {}: {m:#?}",
                m.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn alerts_config(toml_text: &str) -> AlertsConfig {
    let mut a: AlertsConfig = toml::from_str(toml_text).unwrap();
    a.default_rules = false;
    a.evaluate_every = Dur(Duration::from_millis(300));
    a
}

async fn collector_with(db: &str, alerts: AlertsConfig) -> Running {
    let mut config = Config::for_tests(db, TOKEN);
    config.alerts = alerts;
    start(config).await
}

use stormwatch_model::now_ns;

fn batch() -> Batch {
    common::batch_of("agent-alerts")
}

/// Redis calls of `board` taking `ms` each, counted in this minute's aggregates.
fn redis_calls(n: u64, ms: i64) -> Batch {
    let mut b = batch();
    let now = now_ns();
    let span = Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        service: "board".into(),
        operation: "GET".into(),
        class: DependencyClass::Redis as i32,
        peer: "redis:6379".into(),
        start_ns: now - ms * 1_000_000,
        duration_ns: ms * 1_000_000,
        ..Default::default()
    };
    let key = AggregateKey::of_span(&span);
    let mut agg = Aggregate::new(&key);
    for _ in 0..n {
        agg.add(&span);
    }
    b.aggregates.push(agg);
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

async fn probes(c: &Running, samples: Vec<ProbeSample>) {
    let mut b = batch();
    b.probes = samples;
    c.ingest(&b).await;
}

const LAG_RULE: &str = r#"
[[rules]]
name = "replica-lag"
kind = "replication_lag"
threshold = 5
resolve_after = "0s"
severity = "critical"
"#;

#[tokio::test]
async fn latency_rule_fires_once_resolves_once_in_block_kit() {
    let (slack, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let alerts = alerts_config(&format!(
        r#"
        [[channels]]
        name = "oncall"
        type = "slack"
        url = "http://{addr}/hook"

        [[rules]]
        name = "redis-p95"
        kind = "latency"
        class = "redis"
        quantile = 0.95
        threshold = 20
        resolve_after = "0s"
        severity = "critical"
        group_by = ["service", "peer"]
        "#
    ));
    let c = collector_with(&db, alerts).await;
    slack.count_rounds(&c);
    c.ingest(&redis_calls(50, 2)).await; // healthy: nothing fires
    after_rounds(&c, 2).await;
    assert!(slack.messages().is_empty());

    let sent = Instant::now();
    c.ingest(&redis_calls(200, 80)).await;
    let before = c.state().metrics.alert_evaluations.get();
    let m = slack.wait_for(1, Duration::from_secs(15)).await;
    println!(
        "span arrival → Slack webhook: {:.0} ms, {} evaluation round(s)",
        sent.elapsed().as_secs_f64() * 1000.0,
        m[0].round - before
    );
    // Sent by the first round that saw the spans, whatever the machine's load: the round
    // under way now may have read before them, the next one did not, and a round delivers
    // what it decided before the next one counts.
    assert!(
        m[0].round <= before + 2,
        "alert sent {} rounds after the spans arrived",
        m[0].round - before
    );
    let body = &m[0].body;
    assert_eq!(m[0].path, "/hook");
    let text = body["text"].as_str().unwrap();
    assert!(
        text.contains("FIRING") && text.contains("redis-p95") && text.contains("redis:6379"),
        "{text}"
    );
    let blocks = body["blocks"].as_array().unwrap();
    assert_eq!(blocks[0]["type"], "header");
    assert!(blocks.iter().any(|b| b["type"] == "actions"
        && b["elements"][0]["url"]
            .as_str()
            .unwrap()
            .contains("/dependencies?from=")));

    // The slowdown leaves the window (the evaluator's clock moves three minutes on).
    c.alerts().shift_clock(Duration::from_secs(180));
    let m = slack.wait_for(2, Duration::from_secs(10)).await;
    assert!(m[1].body["text"].as_str().unwrap().contains("RESOLVED"));
    after_rounds(&c, 2).await;
    assert_eq!(
        slack.messages().len(),
        2,
        "exactly one firing and one resolved message"
    );
    c.stop().await;
}

#[tokio::test]
async fn no_repeat_after_a_restart_and_a_resolve_after_it() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let cfg = || {
        alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))
    };
    let c = collector_with(&db, cfg()).await;
    probes(&c, vec![lag("replica-1", 12.0)]).await;
    let m = hook.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(m[0].body["schema"], "stormwatch.alerts/v2");
    assert_eq!(m[0].body["alerts"][0]["event"], "firing");
    assert_eq!(m[0].body["alerts"][0]["labels"]["database"], "replica-1");
    c.stop().await;

    // A new collector on the same database: the alert is still firing, and not sent again.
    let c = collector_with(&db, cfg()).await;
    probes(&c, vec![lag("replica-1", 14.0)]).await;
    after_rounds(&c, 2).await;
    assert_eq!(
        hook.messages().len(),
        1,
        "a restart must not re-fire: {:#?}",
        hook.messages()
    );
    probes(&c, vec![lag("replica-1", 0.0)]).await;
    let m = hook.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(m[1].body["alerts"][0]["event"], "resolved");
    after_rounds(&c, 2).await;
    assert_eq!(hook.messages().len(), 2);
    c.stop().await;
}

#[tokio::test]
async fn an_agent_is_not_called_silent_for_the_time_the_collector_was_down() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let cfg = || {
        alerts_config(&format!(
            "[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n\
             [[rules]]\nname = \"agent-silent\"\nkind = \"agent_silent\"\nthreshold = 60\n"
        ))
    };
    let c = collector_with(&db, cfg()).await;
    c.ingest(&batch()).await;
    c.stop().await;
    // The collector was down for ten minutes; the agent kept sending (into its spool).
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let n = client
        .execute(
            "UPDATE sw_agents SET last_seen = now() - interval '10 minutes' WHERE agent_id = $1",
            &[&"agent-alerts"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Back up: no alert while the agent has had less than a minute to reach it.
    let c = collector_with(&db, cfg()).await;
    after_rounds(&c, 2).await;
    assert!(hook.messages().is_empty(), "{:#?}", hook.messages());
    // A minute and a half later, still nothing from it: that silence is real.
    c.alerts().shift_clock(Duration::from_secs(90));
    let m = hook.wait_for(1, Duration::from_secs(10)).await;
    let alert = &m[0].body["alerts"][0];
    assert_eq!(alert["event"], "firing");
    assert_eq!(alert["labels"]["agent"], "agent-alerts");
    // Silent since the collector came back, not since the agent's last batch.
    let silent = alert["value"].as_f64().unwrap();
    assert!((90.0..150.0).contains(&silent), "{alert}");
    c.stop().await;
}

#[tokio::test]
async fn retries_after_500_and_after_429_with_retry_after() {
    let (hook, addr) = Receiver::start().await;
    hook.script
        .lock()
        .unwrap()
        .extend([(500, None), (429, Some(1))]);
    let db = stormwatch_testkit::fresh_database().await;
    let c = collector_with(&db, alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))).await;
    probes(&c, vec![lag("replica-1", 30.0)]).await;
    let m = hook.wait_for(1, Duration::from_secs(20)).await;
    let attempts = hook.attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 3, "500, then 429, then delivered");
    // The wait is the feature: at least the 1 s asked for, counted from the answer, which
    // the receiver sends 300 ms after it records the request (load can only make it longer).
    let waited = attempts[2] - attempts[1];
    println!(
        "retried {:.0} ms after Retry-After: 1",
        waited.as_secs_f64() * 1000.0
    );
    assert!(
        waited >= Duration::from_millis(1_300),
        "Retry-After must be honoured: retried after {waited:?}"
    );
    assert_eq!(m[0].body["alerts"][0]["event"], "firing");
    // The receiver records the message before it answers, so the collector
    // counts the delivery a moment after the message arrives.
    let metrics = wait_for_metric(
        &c,
        "stormwatch_collector_alert_notifications_total{channel=\"hook\",result=\"sent\"} 1",
    )
    .await;
    assert!(
        metrics.contains(
            "stormwatch_collector_alert_notifications_total{channel=\"hook\",result=\"retried\"} 2"
        ),
        "{metrics}"
    );
    c.stop().await;
}

#[tokio::test]
async fn failures_are_recorded_never_silent() {
    let (hook, addr) = Receiver::start().await;
    hook.script.lock().unwrap().extend([(400, None)]);
    let db = stormwatch_testkit::fresh_database().await;
    let c = collector_with(&db, alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))).await;
    probes(&c, vec![lag("replica-1", 30.0)]).await;
    let metrics = wait_for_metric(&c, "stormwatch_collector_alert_deliveries_failed 1").await;
    assert!(metrics.contains("result=\"failed\"} 1"), "{metrics}");
    c.stop().await;
}

/// Polls the collector's `/metrics` until it contains `needle` (10 s at most)
/// and returns the text that did.
async fn wait_for_metric(c: &Running, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = c.metrics().await;
        if metrics.contains(needle) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "/metrics must show {needle:?} within 10 s: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn instances_firing_together_are_grouped_and_silences_hold() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let now = time::OffsetDateTime::now_utc();
    let fmt = &time::format_description::well_known::Rfc3339;
    let alerts = alerts_config(&format!(
        "[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}\n\
         [[silences]]\nrule = \"replica-lag\"\nlabels = {{ database = \"replica-9\" }}\nfrom = \"{}\"\nto = \"{}\"\n",
        (now - time::Duration::hours(1)).format(fmt).unwrap(),
        (now + time::Duration::hours(1)).format(fmt).unwrap(),
    ));
    let c = collector_with(&db, alerts).await;
    probes(
        &c,
        vec![
            lag("replica-1", 9.0),
            lag("replica-2", 11.0),
            lag("replica-3", 20.0),
            lag("replica-9", 60.0),
        ],
    )
    .await;
    let m = hook.wait_for(1, Duration::from_secs(10)).await;
    after_rounds(&c, 2).await;
    assert_eq!(
        hook.messages().len(),
        1,
        "one message for the instances that fired together"
    );
    let dbs: Vec<&str> = m[0].body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["database"].as_str().unwrap())
        .collect();
    assert_eq!(
        dbs,
        ["replica-1", "replica-2", "replica-3"],
        "the silenced replica-9 is not sent"
    );
    // ... but it is recorded and shown.
    let store = &c.state().store;
    let events = store.alert_events(0.0, 4e9, 100).await.unwrap();
    let silenced: Vec<_> = events.iter().filter(|e| e.silenced).collect();
    assert_eq!(silenced.len(), 1);
    assert_eq!(silenced[0].labels["database"], "replica-9");
    assert_eq!(store.alert_states().await.unwrap().len(), 4);
    c.stop().await;
}

#[tokio::test]
async fn slack_bot_posts_an_incident_head_and_its_alerts_in_its_thread() {
    let (slack, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    std::env::set_var("SW_TEST_BOT_TOKEN", "xoxb-test-token");
    let c = collector_with(
        &db,
        alerts_config(&format!(
            "[[channels]]\nname = \"bot\"\ntype = \"slack\"\nbot_token_env = \"SW_TEST_BOT_TOKEN\"\nchannel = \"#oncall\"\napi_url = \"http://{addr}/api\"\n{LAG_RULE}"
        )),
    )
    .await;
    probes(&c, vec![lag("replica-1", 12.0)]).await;
    let posts = |m: &[Received]| -> Vec<Received> {
        m.iter()
            .filter(|r| r.path == "/api/chat.postMessage")
            .cloned()
            .collect()
    };
    let m = slack.wait_for(3, Duration::from_secs(10)).await;
    let p = posts(&m);
    assert_eq!(p[0].auth.as_deref(), Some("Bearer xoxb-test-token"));
    assert_eq!(p[0].body["channel"], "#oncall");
    assert!(p[0].body.get("thread_ts").is_none(), "the incident's head");
    assert!(p[0].body["text"]
        .as_str()
        .unwrap()
        .starts_with(":rotating_light: OPEN · Incident #"));
    assert_eq!(
        p[1].body["thread_ts"], "1700000000.000100",
        "the firing goes into the incident's thread"
    );
    probes(&c, vec![lag("replica-1", 0.0)]).await;
    let m = slack.wait_for(5, Duration::from_secs(10)).await;
    let p = posts(&m);
    assert_eq!(
        p.len(),
        3,
        "{:#?}",
        m.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(
        p[2].body["thread_ts"], "1700000000.000100",
        "the resolve goes into the same thread"
    );
    assert!(m.iter().any(|r| r.path == "/api/chat.update"
        && r.body["channel"] == "C0ONCALL"
        && r.body["text"]
            .as_str()
            .is_some_and(|t| t.starts_with(":white_check_mark: RESOLVED"))));
    c.stop().await;
}

#[tokio::test]
async fn one_leader_among_collectors_and_fail_over_without_duplicates() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let cfg = || {
        alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))
    };
    let a = collector_with(&db, cfg()).await;
    let b = collector_with(&db, cfg()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.alerts().is_leader() || b.alerts().is_leader()) {
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Kept: nothing marks "the follower tried again and was refused" (a refused try leaves no
    // trace), so give it more than its retry interval (2 s) to take leadership wrongly. Load
    // can only make this pass by mistake, never fail it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        a.alerts().is_leader() ^ b.alerts().is_leader(),
        "exactly one leader"
    );
    probes(&a, vec![lag("replica-1", 12.0)]).await;
    hook.wait_for(1, Duration::from_secs(10)).await;

    let (leader, follower) = if a.alerts().is_leader() {
        (a, b)
    } else {
        (b, a)
    };
    leader.stop().await;
    let took = Instant::now();
    while !follower.alerts().is_leader() {
        assert!(
            took.elapsed() < Duration::from_secs(10),
            "the follower did not take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("fail-over took {:.1} s", took.elapsed().as_secs_f64());
    probes(
        &follower,
        vec![lag("replica-1", 13.0), lag("replica-2", 40.0)],
    )
    .await;
    let m = hook.wait_for(2, Duration::from_secs(10)).await;
    after_rounds(&follower, 2).await;
    let all = hook.messages();
    assert_eq!(
        all.len(),
        2,
        "the new leader must not re-send what was sent: {all:#?}"
    );
    assert_eq!(m[1].body["alerts"][0]["labels"]["database"], "replica-2");
    follower.stop().await;
}

#[tokio::test]
async fn config_edits_reload_rules_and_broken_edits_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    let db = stormwatch_testkit::fresh_database().await;
    let write = |threshold: &str| {
        std::fs::write(&path, format!("[alerts]\ndefault_rules = false\n[[alerts.rules]]\nname = \"lag\"\nkind = \"replication_lag\"\nthreshold = {threshold}\n"))
            .unwrap()
    };
    write("5");
    let mut config = Config::load(stormwatch_collector::config::Flags {
        config: Some(path.clone()),
        database_url: Some(db),
        ingest_tokens: Some(vec![TOKEN.into()]),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    })
    .unwrap();
    config.alerts.evaluate_every = Dur(Duration::from_millis(300));
    let c = start(config).await;
    let threshold = |c: &Running| c.alerts().config().rules[0].threshold;
    assert_eq!(threshold(&c), Some(5.0));
    write("2.5");
    let deadline = Instant::now() + Duration::from_secs(10);
    while threshold(&c) != Some(2.5) {
        assert!(Instant::now() < deadline, "the edit was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    std::fs::write(
        &path,
        "[alerts]\n[[alerts.rules]]\nname = \"lag\"\nkind = \"replication_lagg\"\n",
    )
    .unwrap();
    let rejected = "stormwatch_collector_config_reloads_total{result=\"rejected\"} 1\n";
    wait_for_metric(&c, rejected).await;
    assert_eq!(
        threshold(&c),
        Some(2.5),
        "a broken edit keeps the rules in force"
    );
    // One reload per edit: reading the file to reload it is not an edit (it once set off a
    // reload a second, forever). Kept: a reload set off by that read would come a debounce
    // (1 s) after the last one, and nothing marks that it did not; wait two.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let metrics = c.metrics().await;
    for line in [
        "stormwatch_collector_config_reloads_total{result=\"applied\"} 1\n",
        "stormwatch_collector_config_reloads_total{result=\"rejected\"} 1\n",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    c.stop().await;
}

#[tokio::test]
async fn silences_from_the_dashboard() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let c = collector_with(&db, alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let host = c.addr.to_string();
    let form = [
        ("rule", "replica-lag"),
        ("labels", "database=replica-1"),
        ("duration", "1h"),
        ("comment", "failover drill"),
    ];
    let post = |origin: String, form: &[(&str, &str)]| {
        client
            .post(c.endpoint("/alerts/silences"))
            .header("origin", origin)
            .form(form)
            .send()
    };
    let own = format!("http://{host}");
    // A form posted from another site is refused, and so is one from the same host under
    // another scheme (the origin is scheme, host and port).
    for origin in ["http://evil.example".to_owned(), format!("https://{host}")] {
        assert_eq!(post(origin, &form).await.unwrap().status(), 403);
    }
    let r = post(own.clone(), &form).await.unwrap();
    assert_eq!(r.status(), 303, "{}", r.text().await.unwrap());
    let page = reqwest::get(c.endpoint("/alerts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("failover drill") && page.contains("database=replica-1"),
        "{page}"
    );
    // Bad input is a 400 naming the field.
    let bad = [("rule", "x"), ("labels", "nonsense"), ("duration", "1h")];
    assert_eq!(post(own.clone(), &bad).await.unwrap().status(), 400);
    // A value PostgreSQL refuses (NUL) is the form's fault: 400, not "storage unavailable".
    let nul = [
        ("rule", "replica-lag"),
        ("labels", "database=replica-1"),
        ("duration", "1h"),
        ("comment", "drill\0"),
    ];
    let r = post(own, &nul).await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("refused"));

    probes(&c, vec![lag("replica-1", 30.0), lag("replica-2", 30.0)]).await;
    let m = hook.wait_for(1, Duration::from_secs(10)).await;
    after_rounds(&c, 2).await;
    assert_eq!(hook.messages().len(), 1);
    let dbs: Vec<&str> = m[0].body["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["labels"]["database"].as_str().unwrap())
        .collect();
    assert_eq!(
        dbs,
        ["replica-2"],
        "replica-1 is silenced from the dashboard"
    );
    let page = reqwest::get(c.endpoint("/alerts"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("(silenced)"),
        "a silenced alert is still shown"
    );

    // Ending the silence while replica-1 still lags: its firing is announced now.
    let id = c
        .state()
        .store
        .active_silences(stormwatch_store::now_ns() as f64 / 1e9)
        .await
        .unwrap()[0]
        .id;
    let r = client
        .post(c.endpoint(&format!("/alerts/silences/{id}/end")))
        .header("origin", format!("http://{host}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let m = hook.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(m[1].body["alerts"][0]["labels"]["database"], "replica-1");
    assert_eq!(m[1].body["alerts"][0]["event"], "firing");
    probes(&c, vec![lag("replica-1", 0.0), lag("replica-2", 30.0)]).await;
    let m = hook.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(m[2].body["alerts"][0]["event"], "resolved");
    c.stop().await;
}

/// Waits until `cond` holds (or panics after 20 s, naming `what`).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `c`'s alert engine has run `n` whole rounds (evaluate, then deliver what was
/// decided) that started after this call: whatever was due to be sent by then has been.
///
/// A round counts itself after evaluating and before delivering, and the round under way now
/// may have read the database before the caller's last write: so `n + 1` more counts.
async fn after_rounds(c: &Running, n: u64) {
    let evaluations = &c.state().metrics.alert_evaluations;
    let target = evaluations.get() + n + 1;
    until(&format!("{n} more alert evaluation rounds"), || {
        evaluations.get() >= target
    })
    .await;
}

/// Waits until the outbox of `c`'s database has `sent` sent and no pending notifications.
async fn until_delivered(c: &Running, sent: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = c.state().store.delivery_counts().await.unwrap();
        if counts.sent == sent && counts.pending == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected {sent} sent and none pending: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The events recorded in `c`'s database, oldest first.
async fn event_names(c: &Running) -> Vec<String> {
    let mut events = c.state().store.alert_events(0.0, 4e9, 100).await.unwrap();
    events.reverse();
    events.into_iter().map(|e| e.event).collect()
}

/// An admin connection to `db`.
async fn admin(db: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Sessions of `db` holding an advisory lock.
async fn advisory_lock_holders(admin: &tokio_postgres::Client) -> Vec<i32> {
    admin
        .query(
            "SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
              WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn a_leader_whose_lock_session_is_terminated_cannot_deliver_twice() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let cfg = || {
        alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"))
    };
    let a = collector_with(&db, cfg()).await;
    until("a leads", || a.alerts().is_leader()).await;
    let b = collector_with(&db, cfg()).await;

    // The firing reaches a Slack that is slow to answer: the leader is mid-send...
    let release = hook.hold_next();
    probes(&a, vec![lag("replica-1", 12.0)]).await;
    until("a's send is in flight", || hook.is_holding()).await;
    // ... when its lock session is terminated (a network cut, a DBA, a failover proxy).
    let admin = admin(&db).await;
    let holders = advisory_lock_holders(&admin).await;
    assert_eq!(holders.len(), 1, "a holds the leader lock");
    let killed: bool = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&holders[0]])
        .await
        .unwrap()
        .get(0);
    assert!(killed);

    // b gets the lock and takes over at once (the lock's holder is gone).
    until("b takes over", || b.alerts().is_leader()).await;
    let (epoch, holder, _) = b.state().store.alert_leader().await.unwrap();
    assert_eq!((epoch, holder.as_str()), (2, b.alerts().holder()));
    // Two whole rounds of b (each evaluates, then delivers what is due): the notification
    // is claimed by a's send in flight, so b leaves it alone.
    let rounds = b.state().metrics.alert_evaluations.get();
    until("b runs two rounds", || {
        b.state().metrics.alert_evaluations.get() >= rounds + 2
    })
    .await;
    assert!(
        hook.messages().is_empty(),
        "b must not send what a is sending: {:#?}",
        hook.messages()
    );

    // Slack answers a; a records the send under its claim, then finds itself deposed.
    release.send(()).unwrap();
    until_delivered(&b, 1).await;
    until("a steps down", || !a.alerts().is_leader()).await;
    assert_eq!(hook.messages().len(), 1);

    // The resolve, by b: exactly one too.
    probes(&b, vec![lag("replica-1", 0.0)]).await;
    hook.wait_for(2, Duration::from_secs(10)).await;
    until_delivered(&b, 2).await;
    let all = hook.messages();
    let events: Vec<&Value> = all.iter().map(|m| &m.body["alerts"][0]["event"]).collect();
    assert_eq!(events, ["firing", "resolved"], "{all:#?}");
    assert_eq!(event_names(&b).await, ["firing", "resolved"]);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_stalled_leader_is_replaced_after_its_lease_and_its_late_write_is_refused() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let cfg = || {
        let mut c = alerts_config(&format!("[[channels]]\nname = \"hook\"\ntype = \"webhook\"\nurl = \"http://{addr}/\"\n{LAG_RULE}"));
        c.leader_lease = Dur(Duration::from_secs(2));
        c
    };
    let a = collector_with(&db, cfg()).await;
    until("a leads", || a.alerts().is_leader()).await;
    let b = collector_with(&db, cfg()).await;

    // a decides the firing, then stalls before writing it (a long pause, a frozen VM): its
    // session, and with it the advisory lock, stays alive.
    a.alerts().hold_before_writing(true);
    probes(&a, vec![lag("replica-1", 12.0)]).await;
    until("a stalls before writing", || a.alerts().is_held()).await;

    // b cannot get the lock, but takes over once a's lease has passed, and fires.
    until("b takes over", || b.alerts().is_leader()).await;
    let admin = admin(&db).await;
    assert_eq!(
        advisory_lock_holders(&admin).await.len(),
        1,
        "a's session still holds the lock"
    );
    hook.wait_for(1, Duration::from_secs(10)).await;

    // a wakes up: its write is refused (the epoch moved on) and it steps down.
    a.alerts().hold_before_writing(false);
    until("a steps down", || !a.alerts().is_leader()).await;
    until_delivered(&b, 1).await;
    assert_eq!(hook.messages().len(), 1, "{:#?}", hook.messages());
    assert_eq!(
        event_names(&b).await,
        ["firing"],
        "a's late firing is not recorded"
    );

    probes(&b, vec![lag("replica-1", 0.0)]).await;
    hook.wait_for(2, Duration::from_secs(10)).await;
    until_delivered(&b, 2).await;
    let all = hook.messages();
    let events: Vec<&Value> = all.iter().map(|m| &m.body["alerts"][0]["event"]).collect();
    assert_eq!(events, ["firing", "resolved"], "{all:#?}");
    assert_eq!(event_names(&b).await, ["firing", "resolved"]);
    // a cannot take leadership back while b renews its lease: b kept epoch 2.
    let (epoch, holder, live) = b.state().store.alert_leader().await.unwrap();
    assert_eq!(
        (epoch, holder.as_str(), live),
        (2, b.alerts().holder(), true)
    );
    a.stop().await;
    b.stop().await;
}

/// An up-down sum part of this minute for `board`'s replica pool.
fn pool_point(
    name: &str,
    state: Option<&str>,
    value: f64,
    at_ns: i64,
) -> stormwatch_model::MetricPoint {
    let mut attributes =
        std::collections::BTreeMap::from([("pool.name".to_owned(), "board-replica".to_owned())]);
    if let Some(s) = state {
        attributes.insert("state".into(), s.into());
    }
    stormwatch_model::MetricPoint {
        minute_ns: at_ns - at_ns % 60_000_000_000,
        service: "board".into(),
        instance: "board-1".into(),
        name: name.into(),
        unit: "{connection}".into(),
        kind: stormwatch_model::MetricKind::UpDown as i32,
        attributes,
        count: 1,
        sum: value,
        min: value,
        max: value,
        last: value,
        last_ns: at_ns,
        ..Default::default()
    }
}

#[tokio::test]
async fn metric_rule_fires_on_pool_usage_of_its_max_and_resolves() {
    let (hook, addr) = Receiver::start().await;
    let db = stormwatch_testkit::fresh_database().await;
    let alerts = alerts_config(&format!(
        r#"
        [[channels]]
        name = "hook"
        type = "webhook"
        url = "http://{addr}/"

        [[rules]]
        name = "pool-nearly-full"
        kind = "metric"
        series = "db.client.connections.usage"
        attributes = {{ state = "used" }}
        ratio_to = "db.client.connections.max"
        threshold = 90
        resolve_after = "0s"
        "#
    ));
    let c = collector_with(&db, alerts).await;
    let now = now_ns();
    let mut b = batch();
    b.metrics = vec![
        pool_point(
            "db.client.connections.usage",
            Some("used"),
            12.0,
            now - 2_000_000_000,
        ),
        pool_point(
            "db.client.connections.usage",
            Some("idle"),
            8.0,
            now - 2_000_000_000,
        ),
        pool_point("db.client.connections.max", None, 20.0, now - 2_000_000_000),
    ];
    c.ingest(&b).await; // 60 % in use: nothing fires
    after_rounds(&c, 3).await;
    assert!(hook.messages().is_empty(), "{:#?}", hook.messages());

    let mut b = batch();
    b.sequence = 2;
    b.metrics = vec![pool_point(
        "db.client.connections.usage",
        Some("used"),
        19.0,
        now - 1_000_000_000,
    )];
    c.ingest(&b).await;
    let m = hook.wait_for(1, Duration::from_secs(15)).await;
    let alert = &m[0].body["alerts"][0];
    assert_eq!(alert["event"], "firing", "{:#}", m[0].body);
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains("db.client.connections.usage of board")
            && summary.contains("is 95 % of db.client.connections.max (19 of 20; threshold 90 %)"),
        "{summary}"
    );
    assert_eq!(alert["labels"]["pool.name"], "board-replica");
    assert_eq!(alert["labels"]["state"], "used");
    assert!(
        m[0].body.to_string().contains("/services/board/metrics"),
        "links the service's metrics page: {:#}",
        m[0].body
    );

    // The pool drains: the minute's latest value is what the rule reads.
    let mut b = batch();
    b.sequence = 3;
    b.metrics = vec![pool_point(
        "db.client.connections.usage",
        Some("used"),
        4.0,
        now,
    )];
    c.ingest(&b).await;
    let m = hook.wait_for(2, Duration::from_secs(15)).await;
    assert_eq!(
        m[1].body["alerts"][0]["event"], "resolved",
        "{:#}",
        m[1].body
    );
    after_rounds(&c, 2).await;
    assert_eq!(hook.messages().len(), 2, "one firing, one resolved");
    c.stop().await;
}

#[test]
fn a_metric_rule_without_series_or_threshold_is_refused_by_name() {
    let cfg = |body: &str| {
        alerts_config(body)
            .resolve("http://sw", &|_| None)
            .map(|_| ())
    };
    let err = cfg("[[rules]]\nname = \"m\"\nkind = \"metric\"\nthreshold = 1\n").unwrap_err();
    assert!(
        err.contains("rule `m`: a metric rule needs `series`"),
        "{err}"
    );
    let err = cfg("[[rules]]\nname = \"m\"\nkind = \"metric\"\nseries = \"x\"\n").unwrap_err();
    assert!(err.contains("a metric rule needs `threshold`"), "{err}");
}

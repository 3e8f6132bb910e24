//! A real agent shipping to a real collector (and its PostgreSQL) over HTTP, fed what careless
//! or hostile apps send: the pipeline must keep moving, and nothing be lost or blocked.

use std::time::{Duration, Instant};

use stormwatch_agent::{Agent, Config as AgentConfig};
use stormwatch_collector::{Collector, Config as CollectorConfig};

const TOKEN: &str = "poison-test-token-0123456789";

/// Waits until `f` holds (checked every 50 ms), or panics after `secs`.
async fn eventually<F, Fut>(secs: u64, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn now_ns() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// One OTLP/JSON span of `service`, `ms` long (slow spans are always kept).
fn otlp_json(service: &str, name: &str, trace: &str, ms: u128, attr: (&str, &str)) -> String {
    let end = now_ns();
    serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace, "spanId": "00f067aa0ba902b7", "name": name, "kind": 2,
            "startTimeUnixNano": (end - ms * 1_000_000).to_string(),
            "endTimeUnixNano": end.to_string(),
            "attributes": [
                {"key": "http.request.method", "value": {"stringValue": "GET"}},
                {"key": attr.0, "value": {"stringValue": attr.1}}
            ]
        }]}]
    }]})
    .to_string()
}

async fn agent_to(collector: &str, spool: &std::path::Path) -> Agent {
    let mut c = AgentConfig {
        collector: Some(collector.to_owned()),
        token: Some(TOKEN.into()),
        agent_id: Some("poison-agent".into()),
        ..AgentConfig::default()
    };
    c.listen.otlp_http = "127.0.0.1:0".into();
    c.listen.otlp_grpc = "127.0.0.1:0".into();
    c.listen.zipkin = "127.0.0.1:0".into();
    c.listen.admin = "127.0.0.1:0".into();
    c.shipping.spool_dir = Some(spool.to_owned());
    c.shipping.flush_interval_ms = 100;
    c.shipping.initial_backoff_ms = 20;
    c.shipping.max_backoff_ms = 200;
    c.host.interval_s = 0;
    Agent::start(c, Default::default()).await.unwrap()
}

async fn get_json(url: &str) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

async fn text(url: &str) -> String {
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

/// A NUL byte in a service name, span name or attribute used to reach COPY, fail the batch
/// with a 503, and block that agent's queue for good (retried forever, across restarts). Now
/// the agent replaces it (U+FFFD, counted) and both spans, and the one sent after, are stored.
#[tokio::test]
async fn a_nul_byte_from_an_app_is_replaced_and_never_blocks_the_queue() {
    let db = stormwatch_testkit::fresh_database().await;
    let collector = Collector::start(CollectorConfig::for_tests(&db, TOKEN))
        .await
        .unwrap();
    let base = format!("http://{}", collector.local_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(collector.serve(async move {
        let _ = stopped.await;
    }));
    let spool = tempfile::tempdir().unwrap();
    let agent = agent_to(&base, spool.path()).await;
    let receiver = format!("http://{}/v1/traces", agent.otlp_http.unwrap());
    let http = reqwest::Client::new();
    let send = |body: String| {
        http.post(&receiver)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // Slow (kept whole) and fast (only in the per-minute aggregate), each with NULs.
    let poisoned = [
        otlp_json(
            "bo\0ard",
            "GET /a\0",
            "4bf92f3577b34da6a3ce929d0e0e4736",
            2_000,
            ("user.id", "7\0"),
        ),
        otlp_json(
            "board",
            "GET /b",
            "4bf92f3577b34da6a3ce929d0e0e4737",
            1,
            ("k\0", "v"),
        ),
    ];
    for body in poisoned {
        assert_eq!(send(body).await.unwrap().status(), 200);
    }
    let clean = otlp_json(
        "board",
        "GET /c",
        "4bf92f3577b34da6a3ce929d0e0e4738",
        2_000,
        ("k", "v"),
    );
    assert_eq!(send(clean).await.unwrap().status(), 200);

    let spans_url = format!("{base}/api/v1/spans?from=0&limit=100");
    eventually(20, "both slow spans stored", || async {
        get_json(&spans_url).await["spans"]
            .as_array()
            .is_some_and(|s| s.len() == 2)
    })
    .await;
    let spans = get_json(&spans_url).await;
    let services: Vec<&str> = spans["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(services.contains(&"bo\u{FFFD}ard"), "{services:?}");
    // Every span, the fast one too, is counted in the stored aggregates.
    let from_ms = now_ns() / 1_000_000 - 3_600_000;
    let aggregates = format!("{base}/api/v1/aggregates?from={from_ms}&step=1h");
    eventually(20, "all three spans counted", || async {
        let v = get_json(&aggregates).await;
        let total: u64 = v["points"]
            .as_array()
            .map(|p| p.iter().filter_map(|x| x["count"].as_u64()).sum())
            .unwrap_or(0);
        total == 3
    })
    .await;
    let admin = format!("http://{}/metrics", agent.admin.unwrap());
    let m = text(&admin).await;
    assert!(
        m.contains("stormwatch_agent_replaced_nul_characters_total 4"),
        "{m}"
    );
    assert!(m.contains("stormwatch_agent_spool_batches 0"), "{m}");
    let cm = text(&format!("{base}/metrics")).await;
    assert!(!cm.contains("reason=\"invalid\""), "{cm}");
    agent.shutdown(Duration::from_secs(2)).await;
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

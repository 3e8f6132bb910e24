//! The alert read API for scripts: `GET /api/v1/rules` and `GET /api/v1/alerts`, against a
//! real collector and PostgreSQL.

mod common;

use std::time::{Duration, Instant};

use common::{start, TOKEN};
use serde_json::Value;
use stormwatch_collector::alerts::config::{AlertsConfig, Dur};
use stormwatch_collector::Config;
use stormwatch_model::{Batch, DbRole, ProbeSample, WIRE_VERSION};

async fn get(url: &str) -> Value {
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.json().await.unwrap()
}

#[tokio::test]
async fn rules_in_force_and_alerts_are_served_as_json() {
    let db = stormwatch_testkit::fresh_database().await;
    let mut config = Config::for_tests(&db, TOKEN);
    let mut alerts: AlertsConfig = toml::from_str(
        "[[rules]]\nname = \"replica-lag\"\nkind = \"replication_lag\"\nthreshold = 5\nseverity = \"critical\"\nresolve_after = \"1s\"\n",
    )
    .unwrap();
    alerts.evaluate_every = Dur(Duration::from_millis(300));
    config.alerts = alerts;
    let c = start(config).await;

    // Rules: the configured one, and the defaults marked as such.
    let v = get(&c.endpoint("/api/v1/rules")).await;
    let rules = v["rules"].as_array().unwrap();
    let lag = rules.iter().find(|r| r["name"] == "replica-lag").unwrap();
    assert_eq!(lag["default"], false, "{lag}");
    assert_eq!(lag["kind"], "replication_lag");
    assert_eq!(lag["threshold"], 5.0);
    assert!(
        lag.get("peer").is_none(),
        "unset options are left out: {lag}"
    );
    let defaults: Vec<&str> = rules
        .iter()
        .filter(|r| r["default"] == true)
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(!defaults.is_empty(), "{v}");
    assert!(
        !defaults.contains(&"replica-lag"),
        "a configured rule replaces the default"
    );
    assert!((v["evaluate_every"].as_f64().unwrap() - 0.3).abs() < 1e-9);

    // A replica 30 s behind: the alert shows as active, then in the history.
    let batch = Batch {
        version: WIRE_VERSION,
        agent_id: "agent-api".into(),
        instance: "i-1".into(),
        sequence: 1,
        probes: vec![ProbeSample {
            time_ns: stormwatch_store::now_ns(),
            database: "replica-7".into(),
            engine: "postgres".into(),
            role: DbRole::Replica as i32,
            connect_us: Some(800),
            lag_seconds: Some(30.0),
            ..Default::default()
        }],
        ..Default::default()
    };
    c.ingest(&batch).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let v = loop {
        let v = get(&c.endpoint("/api/v1/alerts")).await;
        let fired = v["history"]
            .as_array()
            .is_some_and(|h| h.iter().any(|e| e["event"] == "firing"));
        if fired {
            break v;
        }
        assert!(Instant::now() < deadline, "never fired: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let active = v["active"].as_array().unwrap();
    let a = active.iter().find(|a| a["rule"] == "replica-lag").unwrap();
    assert_eq!(a["state"], "firing", "{a}");
    assert_eq!(a["labels"]["database"], "replica-7", "{a}");
    assert_eq!(a["value"], 30.0);
    let e = &v["history"][0];
    assert_eq!(
        (&e["rule"], &e["severity"]),
        (&"replica-lag".into(), &"critical".into())
    );
    // The replica catches up: the resolve says the value now and the peak, in the history as
    // in the message.
    let mut caught_up = batch.clone();
    caught_up.sequence = 2;
    caught_up.probes[0].time_ns = stormwatch_store::now_ns();
    caught_up.probes[0].lag_seconds = Some(0.5);
    c.ingest(&caught_up).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let resolved = loop {
        let v = get(&c.endpoint("/api/v1/alerts")).await;
        let found = v["history"]
            .as_array()
            .and_then(|h| h.iter().find(|e| e["event"] == "resolved").cloned());
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "never resolved: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let summary = resolved["summary"].as_str().unwrap();
    assert!(summary.starts_with("back to normal: "), "{summary}");
    assert!(summary.contains("0.5 s behind"), "{summary}");
    assert!(
        summary.contains("at its peak: ") && summary.contains("30.0 s behind"),
        "{summary}"
    );
    // A window before it: no history.
    let old = get(&c.endpoint("/api/v1/alerts?from=0&to=1000")).await;
    assert_eq!(old["history"].as_array().unwrap().len(), 0, "{old}");
    c.stop().await;
}

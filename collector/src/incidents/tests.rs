//! Grouping alerts into incidents: `plan` on alerts and relations built by hand.
use super::*;

fn labels(v: &[(&str, &str)]) -> Labels {
    v.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn active(rule: &str, pairs: &[(&str, &str)], started: f64) -> Active {
    let labels = labels(pairs);
    Active {
        rule: rule.into(),
        labels_key: stormwatch_store::alerts::labels_key(&labels),
        labels,
        severity: "critical".into(),
        summary: format!("{rule} fired"),
        value: None,
        started,
    }
}

const CACHE: &str = "cache (redis, 10.0.0.3:6379)";

fn rel() -> Relations {
    Relations {
        edges: vec![
            ("board".into(), "redis".into(), CACHE.into()),
            (
                "board".into(),
                "db".into(),
                "board-replica (postgresql, 10.0.0.5:5433)".into(),
            ),
            (
                "board".into(),
                "db".into(),
                "board-primary (postgresql, 10.0.0.5:5432)".into(),
            ),
        ],
    }
}

#[test]
fn related_alerts_beginning_together_form_one_incident() {
    let redis = active(
        "dependency-latency",
        &[("class", "redis"), ("peer", CACHE)],
        100.0,
    );
    let limiter = active(
        "http-5xx-rate",
        &[("service", "board"), ("operation", "GET /list")],
        130.0,
    );
    let other = active("agent-silent", &[("agent", "a-7")], 110.0);
    let p = plan(&[redis.clone(), other, limiter.clone()], &[], &rel(), 140.0);
    assert_eq!(p.new.len(), 2, "{p:#?}");
    let sizes: Vec<usize> = p.new.iter().map(Vec::len).collect();
    assert!(sizes.contains(&2) && sizes.contains(&1), "{sizes:?}");

    // Three minutes apart: two incidents.
    let late = active(
        "http-5xx-rate",
        &[("service", "board"), ("operation", "GET /list")],
        400.0,
    );
    let p = plan(&[redis, late], &[], &rel(), 410.0);
    assert_eq!(p.new.len(), 2);
}

/// In the demo's compressed day the replica fell behind seconds after the cache recovered,
/// while the board's errors still fired: one service's errors relate to both, and every
/// fault of the day ended up in one incident. Two faults are two stories.
#[test]
fn two_faults_one_service_calls_are_two_incidents() {
    let redis = active(
        "dependency-latency",
        &[("class", "redis"), ("peer", CACHE)],
        100.0,
    );
    let errors = active(
        "http-5xx-rate",
        &[("service", "board"), ("operation", "GET /list")],
        102.0,
    );
    let lag = active("replica-lag", &[("database", "board-replica")], 140.0);
    let scans = active(
        "full-scan",
        &[
            ("service", "board"),
            ("peer", "board-replica (postgresql, 10.0.0.5:5433)"),
        ],
        150.0,
    );
    // All new in one round: the errors with the cache, the scans with the replica.
    let p = plan(
        &[redis.clone(), errors.clone(), lag.clone(), scans.clone()],
        &[],
        &rel(),
        155.0,
    );
    let mut groups: Vec<Vec<&str>> = p
        .new
        .iter()
        .map(|g| g.iter().map(|a| a.rule.as_str()).collect())
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [
            vec!["dependency-latency", "http-5xx-rate"],
            vec!["replica-lag", "full-scan"]
        ],
        "{p:#?}"
    );
    // The cache's incident open and firing: the replica does not join it, its scans
    // join the replica's.
    let open = Incident {
        id: 7,
        opened: 100.0,
        resolved: None,
        title: String::new(),
        cause_text: String::new(),
        cause: serde_json::Value::Null,
        cause_updated: Some(100.0),
        recurrence: vec![],
        alerts: vec![redis.member(100.0), errors.member(102.0)],
    };
    let p = plan(&[redis, errors, lag, scans], &[open], &rel(), 155.0);
    assert!(
        !p.changes
            .iter()
            .any(|c| matches!(c, IncidentChange::Join { .. })),
        "{p:#?}"
    );
    assert_eq!(p.new.len(), 1);
    assert_eq!(p.new[0].len(), 2);
}

/// Errors that fire before the slow peer behind them: the peer joins their incident.
#[test]
fn a_fault_joins_the_incident_its_symptoms_opened() {
    let errors = active(
        "http-5xx-rate",
        &[("service", "board"), ("operation", "GET /list")],
        100.0,
    );
    let redis = active(
        "dependency-latency",
        &[("class", "redis"), ("peer", CACHE)],
        103.0,
    );
    let open = Incident {
        id: 3,
        opened: 100.0,
        resolved: None,
        title: String::new(),
        cause_text: String::new(),
        cause: serde_json::Value::Null,
        cause_updated: Some(100.0),
        recurrence: vec![],
        alerts: vec![errors.member(100.0)],
    };
    let p = plan(&[errors, redis], &[open], &rel(), 104.0);
    assert!(
        matches!(
            p.changes.as_slice(),
            [IncidentChange::Join { incident: 3, .. }]
        ),
        "{p:#?}"
    );
}

#[test]
fn relations_by_peer_database_and_engine_host() {
    let r = rel();
    let l = labels;
    let lag = l(&[("database", "board-replica")]);
    let connect = l(&[("database", "board-primary")]);
    let scan = l(&[
        ("service", "board"),
        ("operation", "SELECT"),
        ("peer", "board-replica (postgresql, 10.0.0.5:5433)"),
    ]);
    let http = l(&[("service", "board"), ("operation", "GET /list")]);
    let elsewhere = l(&[("service", "shop"), ("operation", "GET /")]);
    assert!(r.related(&lag, &scan), "peer is the database");
    assert!(r.related(&lag, &http), "board calls the replica");
    assert!(r.related(&lag, &connect), "same engine host");
    assert!(!r.related(&http, &elsewhere));
    assert!(!r.related(&lag, &elsewhere));
}

/// Two engines on one machine's loopback (a demo, or each agent's own local database) are
/// not one host: the replica's lag and the primary's refusals stay apart.
#[test]
fn loopback_addresses_relate_no_databases() {
    let l = labels;
    let lag = l(&[("database", "board-replica")]);
    let connect = l(&[("database", "board-primary")]);
    for host in ["127.0.0.1", "[::1]", "localhost"] {
        let r = Relations {
            edges: vec![
                (
                    "board".into(),
                    "db".into(),
                    format!("board-replica (postgresql, {host}:5433)"),
                ),
                (
                    "board".into(),
                    "db".into(),
                    format!("board-primary (postgresql, {host}:5432)"),
                ),
            ],
        };
        assert!(!r.related(&lag, &connect), "{host}");
        let p = plan(
            &[
                active("replica-lag", &[("database", "board-replica")], 100.0),
                active(
                    "db-connect-failures",
                    &[("database", "board-primary")],
                    160.0,
                ),
            ],
            &[],
            &r,
            170.0,
        );
        assert_eq!(p.new.len(), 2, "{host}: {p:#?}");
    }
}

#[test]
fn later_alerts_join_and_the_incident_resolves_when_all_have() {
    let redis = active(
        "dependency-latency",
        &[("class", "redis"), ("peer", CACHE)],
        100.0,
    );
    let open = Incident {
        id: 7,
        opened: 100.0,
        resolved: None,
        title: String::new(),
        cause_text: String::new(),
        cause: serde_json::Value::Null,
        cause_updated: Some(100.0),
        recurrence: vec![],
        alerts: vec![redis.member(100.0)],
    };
    // Ten minutes later, still firing: a related alert joins.
    let limiter = active(
        "http-5xx-rate",
        &[("service", "board"), ("operation", "GET /list")],
        700.0,
    );
    let p = plan(
        &[redis.clone(), limiter.clone()],
        std::slice::from_ref(&open),
        &rel(),
        701.0,
    );
    assert!(p.new.is_empty(), "{p:#?}");
    assert!(matches!(
        &p.changes[..],
        [IncidentChange::Join { incident: 7, .. }]
    ));

    // The Redis alert resolves, the limiter still fires: the incident stays open.
    let mut both = open.clone();
    both.alerts.push(limiter.member(701.0));
    let p = plan(
        std::slice::from_ref(&limiter),
        std::slice::from_ref(&both),
        &rel(),
        800.0,
    );
    assert!(matches!(
        &p.changes[..],
        [IncidentChange::AlertResolved {
            incident: 7,
            at: Some(_),
            ..
        }]
    ));
    // Both resolved: the incident resolves.
    let p = plan(&[], std::slice::from_ref(&both), &rel(), 900.0);
    assert!(p
        .changes
        .iter()
        .any(|c| matches!(c, IncidentChange::Resolve { incident: 7, .. })));
    // The Redis alert fires again while the incident is open: back in, not a new one.
    let mut one_left = both.clone();
    one_left.alerts[0].resolved = Some(800.0);
    let p = plan(
        &[redis.clone(), limiter.clone()],
        std::slice::from_ref(&one_left),
        &rel(),
        850.0,
    );
    assert!(p.new.is_empty(), "{p:#?}");
    assert!(matches!(
        &p.changes[..],
        [IncidentChange::AlertResolved {
            incident: 7,
            at: None,
            ..
        }]
    ));
    // Calm: nothing.
    let p = plan(&[], &[], &rel(), 900.0);
    assert!(p.changes.is_empty() && p.new.is_empty());
}

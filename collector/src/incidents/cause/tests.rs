//! Cause ranking on aggregates built by hand.
use super::*;
use stormwatch_model::Histogram;

/// `n` spans of `each_ms`, with `status`.
fn stats(n: u64, each_ms: f64, status: &str) -> Stats {
    let ns = (each_ms * 1e6) as u64;
    let mut h = Histogram::default();
    h.record_n(ns, n);
    Stats {
        count: n,
        errors: 0,
        sum_ns: ns * n,
        by_status: BTreeMap::from([(status.to_owned(), n)]),
        histogram: h,
    }
}

fn service(ops: &[(&str, Stats)], deps: &[(&str, &str, Stats)]) -> ServiceTraffic {
    ServiceTraffic {
        operations: ops
            .iter()
            .map(|(o, s)| ((*o).to_owned(), s.clone()))
            .collect(),
        dependencies: deps
            .iter()
            .map(|(c, p, s)| (((*c).to_owned(), (*p).to_owned()), s.clone()))
            .collect(),
        by_entry: Default::default(),
    }
}

/// Calls per server operation: (operation, class, peer, calls, ms each).
fn by_entry(rows: &[(&str, &str, &str, u64, f64)]) -> stormwatch_store::entry_calls::ByEntry {
    rows.iter()
        .map(|(e, c, p, n, each)| {
            (
                ((*e).to_owned(), (*c).to_owned(), (*p).to_owned()),
                stormwatch_store::entry_calls::Calls {
                    count: *n,
                    sum_ns: (*each * 1e6) as u64 * n,
                },
            )
        })
        .collect()
}

fn alert(rule: &str, kind: RuleKind, labels: &[(&str, &str)], started: f64) -> AlertFacts {
    AlertFacts {
        rule: rule.into(),
        kind: Some(kind),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        started,
        value: None,
        summary: format!("{rule} fired"),
    }
}

const CACHE: &str = "shop-cache (redis, 10.0.0.3:6379)";
const DB: &str = "shop-primary (postgresql, 10.0.0.5:5432)";
const PARTNER: &str = "partner (http, 10.0.0.9:80)";

/// GET /items: 2 cache calls and 1 query a request. During the incident the cache goes
/// from 1.5 ms to ~900 ms (the cause), the partner (called once every 100 requests) from
/// 20 ms to 2,000 ms (very slow, little used), the database from 2 ms to 4 ms (a second,
/// mildly slower peer).
fn slow_cache() -> Traffic {
    let base = service(
        &[("GET /items", stats(1000, 10.0, "200"))],
        &[
            ("redis", CACHE, stats(2000, 1.5, "ok")),
            ("db", DB, stats(1000, 2.0, "ok")),
            ("http_client", PARTNER, stats(10, 20.0, "200")),
        ],
    );
    let inc = service(
        &[("GET /items", stats(100, 1_870.0, "200"))],
        &[
            ("redis", CACHE, stats(200, 900.0, "ok")),
            ("db", DB, stats(100, 4.0, "ok")),
            ("http_client", PARTNER, stats(1, 2_000.0, "200")),
        ],
    );
    Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        baseline: BTreeMap::from([("shop".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    }
}

#[test]
fn the_peer_that_explains_the_added_latency_ranks_first() {
    let t = slow_cache();
    let d = decompose(&t, "shop", "GET /items").unwrap();
    assert_eq!(d.peers[0].peer, CACHE);
    // 2 calls × (900 − 1.5) ms of 1,860 ms added.
    assert!((d.peers[0].share - 0.966).abs() < 0.01, "{d:?}");
    // The database is slower but adds 2 ms a request; the partner is 100× slower but is
    // called once every 100 requests: both far below the cache.
    let db = d.peers.iter().find(|p| p.peer == DB).unwrap();
    let partner = d.peers.iter().find(|p| p.peer == PARTNER).unwrap();
    assert!(db.share < 0.01 && partner.share < 0.02, "{d:?}");

    let alerts = [
        alert(
            "dependency-latency",
            RuleKind::Latency,
            &[("class", "redis"), ("peer", CACHE)],
            100.0,
        ),
        alert(
            "items-latency",
            RuleKind::Latency,
            &[("service", "shop"), ("operation", "GET /items")],
            110.0,
        ),
    ];
    let causes = rank(&alerts, &t);
    assert_eq!(causes.len(), 1, "{causes:#?}");
    let c = &causes[0];
    assert_eq!((c.rank, c.kind), (1, "dependency"));
    assert!(
        c.line.starts_with("Redis shop-cache p95 8")
            || c.line.starts_with("Redis shop-cache p95 9")
                && c.line
                    .contains("its usual, explains 97 % of the added latency of GET /items"),
        "{}",
        c.line
    );
    let share = c
        .evidence
        .iter()
        .find(|e| e.name == "share of the added latency")
        .unwrap();
    assert!((share.value - 96.6).abs() < 1.0);
    let p95 = c
        .evidence
        .iter()
        .find(|e| e.name == "p95 during the incident")
        .unwrap();
    assert!((p95.value - 900.0).abs() < 900.0 * 0.02, "{p95:?}");
}

#[test]
fn two_slow_peers_rank_by_the_time_they_add() {
    // Both slow: the database adds 300 ms a request (3 queries of +100 ms), the cache
    // 100 ms (1 call of +100 ms).
    let base = service(
        &[("GET /cart", stats(1000, 20.0, "200"))],
        &[
            ("redis", CACHE, stats(1000, 1.0, "ok")),
            ("db", DB, stats(3000, 2.0, "ok")),
        ],
    );
    let inc = service(
        &[("GET /cart", stats(100, 420.0, "200"))],
        &[
            ("redis", CACHE, stats(100, 101.0, "ok")),
            ("db", DB, stats(300, 102.0, "ok")),
        ],
    );
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        baseline: BTreeMap::from([("shop".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let alerts = [alert(
        "cart-latency",
        RuleKind::Latency,
        &[("service", "shop"), ("operation", "GET /cart")],
        100.0,
    )];
    let causes = rank(&alerts, &t);
    assert_eq!(causes.len(), 2, "{causes:#?}");
    assert_eq!(causes[0].subject, "PostgreSQL shop-primary");
    assert!(
        causes[0].line.contains("explains 75 %"),
        "{}",
        causes[0].line
    );
    assert_eq!(causes[1].subject, "Redis shop-cache");
    assert!(
        causes[1].line.contains("explains 25 %"),
        "{}",
        causes[1].line
    );
}

#[test]
fn a_5xx_with_no_slower_dependency_is_the_operation_itself() {
    let base = service(
        &[("POST /upload", stats(100, 50.0, "200"))],
        &[("db", DB, stats(100, 2.0, "ok"))],
    );
    let mut up = stats(400, 5.0, "503");
    up.by_status.insert("200".into(), 100);
    up.count += 100;
    let inc = service(
        &[("POST /upload", up)],
        &[("db", DB, stats(100, 2.0, "ok"))],
    );
    let t = Traffic {
        incident: BTreeMap::from([("board".to_owned(), inc)]),
        baseline: BTreeMap::from([("board".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let alerts = [alert(
        "http-5xx-rate",
        RuleKind::ErrorRate,
        &[("service", "board"), ("operation", "POST /upload")],
        100.0,
    )];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "itself", "{causes:#?}");
    assert_eq!(
        causes[0].line,
        "POST /upload answers 503 itself: no dependency slowed (its limiter)"
    );
}

fn deploy(at: f64) -> stormwatch_store::versions::Change {
    stormwatch_store::versions::Change {
        service: "board".into(),
        version: "1.4.2".into(),
        previous: Some("1.4.1".into()),
        environment: "prod".into(),
        at,
        instances: 3,
        of_instances: 4,
    }
}

#[test]
fn a_new_version_just_before_the_errors_ranks_above_the_operation_itself() {
    let base = service(&[("POST /orders", stats(100, 20.0, "200"))], &[]);
    let mut inc = stats(50, 20.0, "500");
    inc.by_status.insert("200".into(), 50);
    inc.count += 50;
    let mut t = Traffic {
        incident: BTreeMap::from([("board".to_owned(), service(&[("POST /orders", inc)], &[]))]),
        baseline: BTreeMap::from([("board".to_owned(), base)]),
        changes: vec![deploy(60.0)],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let alerts = [alert(
        "http-5xx-rate",
        RuleKind::ErrorRate,
        &[("service", "board"), ("operation", "POST /orders")],
        100.0,
    )];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "change", "{causes:#?}");
    assert_eq!(
        causes[0].line,
        "errors began 40 s after board 1.4.2 appeared on 3 of 4 instances (was 1.4.1)"
    );
    assert_eq!(causes[1].kind, "itself", "{causes:#?}");
    // A deploy an hour before is not a candidate.
    t.changes = vec![deploy(100.0 - 3_600.0)];
    assert_eq!(rank(&alerts, &t)[0].kind, "itself");
}

#[test]
fn a_slow_peer_outranks_a_deploy_that_happened_to_precede_it() {
    let mut t = slow_cache();
    t.changes = vec![deploy(50.0)];
    t.changes[0].service = "shop".into();
    let alerts = [alert(
        "dependency-latency",
        RuleKind::Latency,
        &[("class", "redis"), ("peer", CACHE)],
        100.0,
    )];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "dependency", "{causes:#?}");
    assert!(causes
        .iter()
        .any(|c| c.kind == "change" && c.line.starts_with("latency rose 50 s after shop 1.4.2")));
}

#[test]
fn probe_causes_rank_first() {
    // The replica lags, then full scans begin; meanwhile the cache is slower too.
    let t = slow_cache();
    let mut lag = alert(
        "replica-lag",
        RuleKind::ReplicationLag,
        &[("database", "shop-replica")],
        100.0,
    );
    lag.value = Some(42.0);
    let alerts = [
        lag,
        alert(
            "full-scan",
            RuleKind::FullScan,
            &[
                ("service", "shop"),
                ("operation", "SELECT * FROM items"),
                ("peer", "shop-replica (postgresql, 10.0.0.6:5432)"),
            ],
            130.0,
        ),
        alert(
            "items-latency",
            RuleKind::Latency,
            &[("service", "shop"), ("operation", "GET /items")],
            140.0,
        ),
    ];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "replica_lag", "{causes:#?}");
    assert!(causes[0]
        .line
        .starts_with("Replica shop-replica fell 42 s behind before the full scans of shop"));
    assert_eq!(causes[1].kind, "dependency");

    // A database refusing connections ranks first for 5xx of operations that call it.
    let mut items = stats(100, 5.0, "503");
    items.by_status.insert("200".into(), 20);
    items.count += 20;
    let inc = service(
        &[("GET /items", items)],
        &[("db", DB, stats(100, 1.0, "connect_failure"))],
    );
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        baseline: BTreeMap::new(),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let alerts = [
        alert(
            "db-connect-failures",
            RuleKind::DbConnect,
            &[("database", "shop-primary")],
            100.0,
        ),
        alert(
            "http-5xx-rate",
            RuleKind::ErrorRate,
            &[("service", "shop"), ("operation", "GET /items")],
            105.0,
        ),
    ];
    let causes = rank(&alerts, &t);
    assert_eq!(
        causes.len(),
        1,
        "no 'itself' for an explained 5xx: {causes:#?}"
    );
    assert_eq!(
        causes[0].line,
        "Database shop-primary refuses connections: GET /items calling it answer 5xx"
    );
    // Refused before any span was made: the calls of the hour before tell.
    let mut refused = t.clone();
    refused.baseline = refused.incident.clone();
    refused
        .incident
        .get_mut("shop")
        .unwrap()
        .dependencies
        .clear();
    let again = rank(&alerts, &refused);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert_eq!(again[0].line, causes[0].line);
}

#[test]
fn peers_are_named_and_matched_to_databases() {
    assert_eq!(peer_name(DB), "shop-primary");
    assert_eq!(peer_host(DB).as_deref(), Some("10.0.0.5"));
    assert!(peer_is_database(DB, "shop-primary"));
    assert!(peer_is_database("shop-primary", "shop-primary"));
    assert!(!peer_is_database(
        "shop-primary-2 (postgresql, x:1)",
        "shop-primary"
    ));
    assert_eq!(peer_subject("http_client", PARTNER), "HTTP partner");
}

#[test]
fn a_lone_replica_lag_is_its_own_cause_not_a_peer_barely_slower() {
    // The minutes of a replica's incident still hold the tail of an earlier cache slowdown:
    // the cache is at 1.1× an hour that held all of it. The replica is the cause.
    let base = service(
        &[("GET /items", stats(1000, 400.0, "200"))],
        &[("redis", CACHE, stats(2000, 330.0, "ok"))],
    );
    let inc = service(
        &[("GET /items", stats(100, 440.0, "200"))],
        &[("redis", CACHE, stats(200, 363.0, "ok"))],
    );
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        baseline: BTreeMap::from([("shop".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let lag = alert(
        "replica-lag",
        RuleKind::ReplicationLag,
        &[("database", "shop-replica")],
        100.0,
    );
    let causes = rank(std::slice::from_ref(&lag), &t);
    assert_eq!(causes.len(), 1, "{causes:#?}");
    assert_eq!(causes[0].kind, "replica_lag");
    assert!(
        causes[0].line.starts_with("Replica shop-replica"),
        "{causes:#?}"
    );
    // Even beside a latency alert, a peer at 1.1× its usual is no cause.
    let slow = alert(
        "items-latency",
        RuleKind::Latency,
        &[("service", "shop"), ("operation", "GET /items")],
        110.0,
    );
    let causes = rank(&[lag, slow], &t);
    assert!(causes.iter().all(|c| c.kind != "dependency"), "{causes:#?}");
}

/// The stranger's Redis slowdown: its 503s were on GET /items, yet the cause named POST
/// /orders, whose whole added latency the cache explained. The operation an alert names wins.
#[test]
fn a_peer_explains_the_operation_an_alert_names() {
    let base = service(
        &[
            ("GET /items", stats(1000, 10.0, "200")),
            ("POST /orders", stats(1000, 10.0, "201")),
        ],
        &[("redis", CACHE, stats(2000, 1.5, "ok"))],
    );
    let mut items = stats(80, 2_000.0, "200");
    items.by_status.insert("503".into(), 20);
    items.count += 20;
    let inc = service(
        &[
            ("GET /items", items),
            ("POST /orders", stats(100, 900.0, "201")),
        ],
        &[("redis", CACHE, stats(200, 900.0, "ok"))],
    );
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        baseline: BTreeMap::from([("shop".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    };
    let alerts = [
        alert(
            "dependency-latency",
            RuleKind::Latency,
            &[("class", "redis"), ("peer", CACHE)],
            100.0,
        ),
        alert(
            "http-5xx-rate",
            RuleKind::ErrorRate,
            &[("service", "shop"), ("operation", "GET /items")],
            101.0,
        ),
    ];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "dependency", "{causes:#?}");
    assert!(
        causes[0]
            .line
            .ends_with("of the added latency of GET /items; its 503s began 1 s after it"),
        "{}",
        causes[0].line
    );
    // Without the 5xx alert, the operation it explains most fully.
    let causes = rank(&alerts[..1], &t);
    assert!(
        causes[0]
            .line
            .ends_with("of the added latency of POST /orders"),
        "{}",
        causes[0].line
    );
}

/// A stranger's app with no `[[database]]` probed: its spans' connect failures (flagged by
/// the agent from the driver's error) are what is different, and rank above "the operation
/// answers 5xx itself"; where a probe alert already names the database, they add nothing.
#[test]
fn over_represented_flags_on_an_unprobed_peer_are_a_cause() {
    let base = service(&[("POST /orders", stats(100, 20.0, "201"))], &[]);
    let mut orders = stats(50, 20.0, "500");
    orders.by_status.insert("201".into(), 50);
    orders.count += 50;
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), service(&[("POST /orders", orders)], &[]))]),
        baseline: BTreeMap::from([("shop".to_owned(), base)]),
        changes: vec![],
        instances: Default::default(),
        flags: BTreeMap::from([
            (
                ("connect_failure".to_owned(), DB.to_owned()),
                FlagRates {
                    during: 30.0,
                    before: 0.0,
                    count: 60,
                },
            ),
            // A trickle as usual: not different.
            (
                ("full_scan_suspect".to_owned(), DB.to_owned()),
                FlagRates {
                    during: 2.0,
                    before: 1.5,
                    count: 40,
                },
            ),
        ]),
    };
    let errors = alert(
        "http-5xx-rate",
        RuleKind::ErrorRate,
        &[("service", "shop"), ("operation", "POST /orders")],
        100.0,
    );
    let causes = rank(std::slice::from_ref(&errors), &t);
    assert_eq!(causes[0].kind, "flag", "{causes:#?}");
    assert_eq!(
        causes[0].line,
        "60 spans failed to connect to shop-primary, 30/min (none in the hour before)"
    );
    assert!(!causes
        .iter()
        .any(|c| c.subject.starts_with("full_scan_suspect")));
    assert_eq!(causes[1].kind, "itself");
    // A neighbour's tail: 60 connect failures among 1,000 answers 503 by a limiter explain
    // nothing of them.
    let mut flood = t.clone();
    let mut orders = stats(1000, 20.0, "503");
    orders.by_status.insert("201".into(), 50);
    orders.count += 50;
    flood.incident =
        BTreeMap::from([("shop".to_owned(), service(&[("POST /orders", orders)], &[]))]);
    let causes = rank(std::slice::from_ref(&errors), &flood);
    assert_eq!(causes[0].kind, "itself", "{causes:#?}");
    // The probe saw it too: its cause stands alone.
    let refused = alert(
        "db-connect-failures",
        RuleKind::DbConnect,
        &[("database", "shop-primary")],
        99.0,
    );
    let causes = rank(&[refused, errors], &t);
    assert!(!causes.iter().any(|c| c.kind == "flag"), "{causes:#?}");
}

/// The board's GET /timetable calls the partner once a request; POST /classes (ten times
/// busier) never does, and slows a little from the load. Per service, the partner's added
/// time is spread over both and POST /classes — which slowed more in total — is named; per
/// operation, the partner explains GET /timetable and nothing of POST /classes.
fn slow_partner(per_operation: bool) -> Traffic {
    let mut base = service(
        &[
            ("GET /timetable", stats(100, 30.0, "200")),
            ("POST /classes", stats(1000, 10.0, "201")),
        ],
        &[
            ("http_client", PARTNER, stats(100, 20.0, "200")),
            ("db", DB, stats(1000, 2.0, "ok")),
        ],
    );
    let mut inc = service(
        &[
            ("GET /timetable", stats(10, 1_530.0, "200")),
            ("POST /classes", stats(100, 200.0, "201")),
        ],
        &[
            ("http_client", PARTNER, stats(10, 1_500.0, "200")),
            ("db", DB, stats(100, 2.0, "ok")),
        ],
    );
    if per_operation {
        base.by_entry = by_entry(&[
            ("GET /timetable", "http_client", PARTNER, 100, 20.0),
            ("POST /classes", "db", DB, 1000, 2.0),
        ]);
        inc.by_entry = by_entry(&[
            ("GET /timetable", "http_client", PARTNER, 10, 1_500.0),
            ("POST /classes", "db", DB, 100, 2.0),
        ]);
    }
    Traffic {
        incident: BTreeMap::from([("board".to_owned(), inc)]),
        baseline: BTreeMap::from([("board".to_owned(), base)]),
        changes: vec![],
        flags: BTreeMap::new(),
        instances: Default::default(),
    }
}

#[test]
fn calls_counted_per_operation_name_the_endpoint_the_peer_slowed() {
    let alerts = [alert(
        "dependency-latency",
        RuleKind::Latency,
        &[("class", "http_client"), ("peer", PARTNER)],
        100.0,
    )];
    // Per service: GET /timetable's requests are a tenth of the board's, so the partner's
    // 1,480 ms a call is spread to 135 ms a request of every operation.
    let service_wide = decompose(&slow_partner(false), "board", "POST /classes").unwrap();
    assert!(!service_wide.per_operation);
    assert_eq!(service_wide.peers[0].peer, PARTNER, "{service_wide:?}");

    let t = slow_partner(true);
    let d = decompose(&t, "board", "GET /timetable").unwrap();
    assert!(d.per_operation);
    assert_eq!(d.peers.len(), 1, "{d:?}");
    let p = &d.peers[0];
    assert_eq!(p.peer, PARTNER);
    assert!((p.calls_per_request - 1.0).abs() < 1e-9, "{p:?}");
    // 1,480 ms added a request, of the operation's 1,500.
    assert!((p.added_ms - 1_480.0).abs() < 1e-6, "{p:?}");
    assert!((p.share - 0.987).abs() < 0.01, "{p:?}");
    // POST /classes does not call the partner: it owes it nothing.
    let classes = decompose(&t, "board", "POST /classes").unwrap();
    assert!(
        classes.peers.iter().all(|p| p.peer != PARTNER),
        "{classes:?}"
    );

    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "dependency", "{causes:#?}");
    assert_eq!(causes[0].operation.as_deref(), Some("GET /timetable"));
    assert!(
        causes[0]
            .line
            .contains("explains 99 % of the added latency of GET /timetable"),
        "{}",
        causes[0].line
    );
    assert!(
        causes
            .iter()
            .all(|c| c.operation.as_deref() != Some("POST /classes")),
        "{causes:#?}"
    );
}

#[test]
fn calls_tied_in_one_window_only_are_compared_per_service() {
    // The baseline hour came from agents that did not tie calls to operations: comparing
    // per operation would read every call of the incident as new.
    let mut t = slow_partner(true);
    t.baseline.get_mut("board").unwrap().by_entry.clear();
    assert!(!per_operation(&t, "board"));
    assert!(
        !decompose(&t, "board", "GET /timetable")
            .unwrap()
            .per_operation
    );
    // Tied in both, but a tenth as much before: still per service.
    let mut t = slow_partner(true);
    for c in t.baseline.get_mut("board").unwrap().by_entry.values_mut() {
        c.count /= 10;
        c.sum_ns /= 10;
    }
    assert!(!per_operation(&t, "board"));
    assert!(per_operation(&slow_partner(true), "board"));
    // No calls at all before (a store just started): the incident's own ties are used.
    let mut t = slow_partner(true);
    t.baseline.clear();
    assert!(per_operation(&t, "board"));
}

#[test]
fn an_operation_not_called_before_is_explained_by_where_its_time_goes() {
    let mut t = slow_partner(true);
    let base = t.baseline.get_mut("board").unwrap();
    base.operations.remove("GET /timetable");
    base.by_entry.retain(|(e, _, _), _| e != "GET /timetable");
    base.dependencies
        .remove(&("http_client".to_owned(), PARTNER.to_owned()));
    let alerts = [alert(
        "dependency-latency",
        RuleKind::Latency,
        &[("class", "http_client"), ("peer", PARTNER)],
        100.0,
    )];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].kind, "dependency", "{causes:#?}");
    assert!(
        causes[0].line.ends_with(
            "takes 98 % of the time of GET /timetable, which has no hour before to compare with"
        ),
        "{}",
        causes[0].line
    );
}

#[test]
fn an_alerting_peer_outranks_one_that_only_takes_more_time() {
    // No hour before: GET /items spends 60 % of its time in the database, 35 % in the cache,
    // and the cache is the peer whose latency alerted.
    let inc = service(
        &[("GET /items", stats(100, 100.0, "200"))],
        &[
            ("redis", CACHE, stats(100, 35.0, "ok")),
            ("db", DB, stats(100, 60.0, "ok")),
        ],
    );
    let t = Traffic {
        incident: BTreeMap::from([("shop".to_owned(), inc)]),
        ..Default::default()
    };
    let alerts = [
        alert(
            "dependency-latency",
            RuleKind::Latency,
            &[("class", "redis"), ("peer", CACHE)],
            100.0,
        ),
        alert(
            "items-5xx",
            RuleKind::ErrorRate,
            &[("service", "shop"), ("operation", "GET /items")],
            101.0,
        ),
    ];
    let causes = rank(&alerts, &t);
    assert_eq!(causes[0].peer.as_deref(), Some(CACHE), "{causes:#?}");
    assert_eq!(causes[1].peer.as_deref(), Some(DB), "{causes:#?}");
}

/// Server requests of `board` per instance: (agent, requests, 5xx, mean ms).
fn instances(rows: &[(&str, u64, u64, f64)]) -> stormwatch_store::instances::ByInstance {
    let by_agent = rows
        .iter()
        .map(|(a, n, x, ms)| {
            (
                (*a).to_owned(),
                stormwatch_store::instances::Requests {
                    count: *n,
                    errors: *x,
                    http_5xx: *x,
                    sum_ns: (*ms * 1e6) as u64 * n,
                },
            )
        })
        .collect();
    BTreeMap::from([("board".to_owned(), by_agent)])
}

fn five_xx_alert() -> AlertFacts {
    alert(
        "http-5xx-rate",
        RuleKind::ErrorRate,
        &[("service", "board"), ("operation", "POST /orders")],
        100.0,
    )
}

#[test]
fn one_instance_answering_most_of_the_5xx_is_named() {
    let mut t = Traffic {
        instances: instances(&[
            ("app-1", 100, 2, 10.0),
            ("app-2", 100, 55, 10.0),
            ("app-3", 100, 3, 10.0),
        ]),
        ..Default::default()
    };
    let causes = rank(&[five_xx_alert()], &t);
    let c = causes
        .iter()
        .find(|c| c.kind == "instance")
        .expect("an instance cause");
    assert_eq!(c.rank, 1, "{causes:#?}");
    assert_eq!(
        c.line,
        "app-2 answered 92 % of board's 5xx: 55 % of its requests against 2.5 % on its 2 other instances"
    );
    // Errors spread over the instances as their requests are: no instance is different.
    t.instances = instances(&[("app-1", 100, 20, 10.0), ("app-2", 100, 22, 10.0)]);
    assert!(rank(&[five_xx_alert()], &t)
        .iter()
        .all(|c| c.kind != "instance"));
    // The busiest instance answering most 5xx, as its share of requests would: not different.
    t.instances = instances(&[("app-1", 900, 50, 10.0), ("app-2", 100, 5, 10.0)]);
    assert!(rank(&[five_xx_alert()], &t)
        .iter()
        .all(|c| c.kind != "instance"));
    // A lone instance has no others to differ from; a handful of 5xx is not a pattern.
    t.instances = instances(&[("app-1", 100, 60, 10.0)]);
    assert!(rank(&[five_xx_alert()], &t)
        .iter()
        .all(|c| c.kind != "instance"));
    t.instances = instances(&[("app-1", 100, 0, 10.0), ("app-2", 100, 9, 10.0)]);
    assert!(rank(&[five_xx_alert()], &t)
        .iter()
        .all(|c| c.kind != "instance"));
}

#[test]
fn one_instance_far_slower_than_the_others_is_named() {
    let t = Traffic {
        instances: instances(&[
            ("app-1", 100, 0, 40.0),
            ("app-2", 50, 0, 1_200.0),
            ("app-3", 100, 0, 42.0),
        ]),
        ..Default::default()
    };
    let latency = alert(
        "board-latency",
        RuleKind::Latency,
        &[("service", "board"), ("operation", "GET /list")],
        100.0,
    );
    let causes = rank(std::slice::from_ref(&latency), &t);
    let c = causes
        .iter()
        .find(|c| c.kind == "instance")
        .expect("an instance cause");
    assert_eq!(
        c.line,
        "board on app-2 takes 1200 ms a request against 41 ms on its 2 other instances"
    );
    // All slow alike: the instance is not what is different.
    let t = Traffic {
        instances: instances(&[("app-1", 100, 0, 1_000.0), ("app-2", 100, 0, 1_200.0)]),
        ..Default::default()
    };
    assert!(rank(&[latency], &t).iter().all(|c| c.kind != "instance"));
}

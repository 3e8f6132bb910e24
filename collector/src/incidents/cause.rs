//! Probable causes of an incident, ranked, with the numbers behind each: a pure function of
//! the incident's alerts and of per-service traffic read from the per-minute aggregates
//! (never raw spans), during the incident and over the hour before it.
//!
//! - **Latency by dependency.** For each affected operation (the server operation of an
//!   alert, or the operations of the services calling an alert's peer or database), the time
//!   its service spends per request in each (class, peer) it calls — calls per request × mean
//!   latency, i.e. the peer's total time over the service's requests — during the incident
//!   minus the baseline hour. Peers are ranked by their share of the operation's added
//!   latency, so a peer that is very slow but rarely called, or a second peer a little slower,
//!   ranks below the one that explains the added time. Calls per request are the operation's
//!   own when its agents count calls per server operation (`sw_entry_calls`), else the
//!   service's (every operation of the service is then charged the same time per request).
//! - **Probe causes** rank first: a replica whose lag alert began before full-scan alerts (its
//!   stale data sends queries down a slow path), a database refusing connections when
//!   operations calling it answer 5xx.
//! - **One instance** answering most of a service's 5xx, or far slower than the others
//!   (`cause/instances.rs`).
//! - **The operation itself**: 5xx with no dependency slower — its own limiter or load.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use stormwatch_store::incidents::{ServiceTraffic, Stats};
use stormwatch_store::signals::Labels;

use crate::alerts::config::RuleKind;

/// A peer must explain at least this share of an operation's added latency to be a cause.
pub const MIN_SHARE: f64 = 0.2;
/// …and add at least this much per request (ms).
pub const MIN_ADDED_MS: f64 = 1.0;
/// ...and whose time per request at least doubled: a peer at 1.1× its usual did not cause an
/// incident, even when the operation has nothing else to blame (the minute rows of a replica's
/// incident still held the end of an earlier Redis one, at 1.1× the hour that held all of it).
pub const MIN_GROWTH: f64 = 2.0;
/// A metric rule's alert as a cause: below a dependency that explains the added time (1 +
/// share), above the operation itself (0.5).
const METRIC_SCORE: f64 = 0.9;
/// Added to a dependency cause's score when the peer's own alert is in the incident.
pub const ALERTING_PEER_BONUS: f64 = 0.5;
/// Most operations examined for one alert on a peer or database (those that slowed most).
const MAX_OPERATIONS_PER_PEER: usize = 3;

/// One alert of the incident, as causes need it.
#[derive(Debug, Clone)]
pub struct AlertFacts {
    pub rule: String,
    pub kind: Option<RuleKind>,
    pub labels: Labels,
    /// Unix seconds: when it began firing.
    pub started: f64,
    pub value: Option<f64>,
    pub summary: String,
}

/// Traffic per service during the incident and over the baseline hour.
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    pub incident: BTreeMap<String, ServiceTraffic>,
    pub baseline: BTreeMap<String, ServiceTraffic>,
    /// Versions new to the services concerned, around the incident's start.
    pub changes: Vec<stormwatch_store::versions::Change>,
    /// Flagged spans of the services concerned per minute, by (flag, peer): during the
    /// incident and over the hour before.
    pub flags: BTreeMap<(String, String), FlagRates>,
    /// Server requests of the services concerned per instance, during the incident.
    pub instances: stormwatch_store::instances::ByInstance,
}

/// Flagged spans per minute of one (flag, peer).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FlagRates {
    pub during: f64,
    pub before: f64,
    /// Flagged spans during the incident.
    pub count: u64,
}

/// A flag is "what is different" with at least this many flagged spans during the incident,
/// at least [`FLAG_GROWTH`] times its rate of the hour before.
pub const MIN_FLAGGED: u64 = 10;
pub const FLAG_GROWTH: f64 = 5.0;

/// A version first seen this long before the incident's first alert (or up to
/// [`CHANGE_AFTER_S`] after it) is a cause candidate.
pub const CHANGE_BEFORE_S: f64 = 600.0;
pub const CHANGE_AFTER_S: f64 = 30.0;

/// One number behind a cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub name: String,
    pub value: f64,
    /// `ms`, `×`, `%`, `calls/request`, `requests`, `s`, or empty.
    pub unit: &'static str,
}

fn ev(name: &str, value: f64, unit: &'static str) -> Evidence {
    Evidence {
        name: name.to_owned(),
        value: (value * 1000.0).round() / 1000.0,
        unit,
    }
}

/// A probable cause.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cause {
    /// 1 for the most probable.
    pub rank: usize,
    /// `replica_lag`, `db_connect`, `dependency`, `itself`, or `alert` (nothing better known).
    pub kind: &'static str,
    /// What is at fault: `Redis shop-cache`, `replica board-replica`, `POST /upload`.
    pub subject: String,
    /// The operation it explains, when it explains one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The dependency at fault (class and peer, as in the aggregates), for a `dependency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Ranking score: probe causes 3, dependencies 1 + share, a metric alert 0.9, the operation
    /// itself 0.5.
    pub score: f64,
    pub line: String,
    pub evidence: Vec<Evidence>,
}

pub use stormwatch_model::peer::name as peer_name;
use stormwatch_model::peer::system_address as peer_system_address;

/// The host of a named peer's address (`10.0.0.5` of `db (postgresql, 10.0.0.5:5432)`).
pub fn peer_host(peer: &str) -> Option<String> {
    let (_, address) = peer_system_address(peer)?;
    let host = match address.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => address,
    };
    Some(host.trim_matches(['[', ']']).to_owned())
}

/// True when `peer` is the database named `database` (`shop-primary` and
/// `shop-primary (postgresql, 10.0.0.5:5432)`).
pub fn peer_is_database(peer: &str, database: &str) -> bool {
    !database.is_empty()
        && (peer == database
            || peer
                .strip_prefix(database)
                .is_some_and(|rest| rest.starts_with(" (")))
}

/// `Redis shop-cache`, `PostgreSQL shop-primary`, `HTTP partner`.
pub fn peer_subject(class: &str, peer: &str) -> String {
    let system = peer_system_address(peer).map(|(s, _)| s).unwrap_or("");
    let what = match class {
        "redis" => "Redis",
        "db" => match system {
            "postgresql" | "postgres" => "PostgreSQL",
            "mysql" => "MySQL",
            _ => "Database",
        },
        "http_client" => "HTTP",
        "messaging" => "Messaging",
        other => other,
    };
    format!("{what} {}", peer_name(peer))
}

fn ms(ns: f64) -> f64 {
    ns / 1e6
}

fn p95_ms(s: &Stats) -> Option<f64> {
    s.histogram.quantile(0.95).map(ms)
}

fn mean_ms(s: &Stats) -> Option<f64> {
    (s.count > 0).then(|| ms(s.sum_ns as f64 / s.count as f64))
}

fn fmt_ms(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

fn fmt_ratio(r: f64) -> String {
    if r >= 10.0 {
        format!("×{r:.0}")
    } else {
        format!("×{r:.1}")
    }
}

fn label<'a>(a: &'a AlertFacts, k: &str) -> Option<&'a str> {
    a.labels
        .get(k)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// Services whose traffic calls a peer matching `pred`.
fn callers(t: &Traffic, pred: impl Fn(&str) -> bool) -> Vec<&String> {
    t.incident
        .iter()
        .filter(|(_, st)| st.dependencies.keys().any(|(_, p)| pred(p)))
        .map(|(s, _)| s)
        .collect()
}

/// The (service, operation) pairs an alert is about.
fn affected(a: &AlertFacts, t: &Traffic) -> Vec<(String, String)> {
    if let (Some(s), Some(o)) = (label(a, "service"), label(a, "operation")) {
        let is_server_op = t
            .incident
            .get(s)
            .is_some_and(|st| st.operations.contains_key(o));
        if is_server_op {
            return vec![(s.to_owned(), o.to_owned())];
        }
    }
    let services = if let Some(p) = label(a, "peer") {
        callers(t, |x| x == p)
    } else if let Some(d) = label(a, "database") {
        callers(t, |x| peer_is_database(x, d))
    } else {
        return vec![];
    };
    // The operations of the calling services that slowed most; those that call the peer when
    // calls are counted per operation.
    let calls_it = |p: &str| match (label(a, "peer"), label(a, "database")) {
        (Some(x), _) => p == x,
        (None, Some(d)) => peer_is_database(p, d),
        _ => false,
    };
    let mut ops: Vec<(f64, String, String)> = Vec::new();
    for s in services {
        let st = &t.incident[s];
        let per_op = per_operation(t, s);
        for o in st.operations.keys() {
            if per_op && !st.by_entry.keys().any(|(e, _, p)| e == o && calls_it(p)) {
                continue;
            }
            if let Some(d) = decompose(t, s, o) {
                ops.push((d.added_ms * d.requests as f64, s.clone(), o.clone()));
            }
        }
    }
    ops.sort_by(|a, b| b.0.total_cmp(&a.0));
    ops.into_iter()
        .take(MAX_OPERATIONS_PER_PEER)
        .map(|(_, s, o)| (s, o))
        .collect()
}

fn dependency_cause(d: &Decomposition, p: &PeerShare) -> Cause {
    let subject = peer_subject(&p.class, &p.peer);
    let p95 = match (p.p95_ms, p.p95_base_ms) {
        (Some(now), Some(base)) if base > 0.0 => {
            format!("p95 {}, {} its usual", fmt_ms(now), fmt_ratio(now / base))
        }
        (Some(now), _) => format!("p95 {}, not called in the hour before", fmt_ms(now)),
        _ => "slower".to_owned(),
    };
    let line = if d.mean_base_ms.is_some() {
        format!(
            "{subject} {p95}, explains {:.0} % of the added latency of {}",
            p.share * 100.0,
            d.operation
        )
    } else {
        // Neither the operation nor (usually) the peer has a before: say it once.
        let p95 = p
            .p95_ms
            .map_or(String::new(), |v| format!(" p95 {}", fmt_ms(v)));
        format!(
            "{subject}{p95} takes {:.0} % of the time of {}, which has no hour before to compare with",
            p.share * 100.0,
            d.operation
        )
    };
    let mut evidence = vec![];
    if let Some(v) = p.p95_ms {
        evidence.push(ev("p95 during the incident", v, "ms"));
    }
    if let Some(v) = p.p95_base_ms {
        evidence.push(ev("p95 in the hour before", v, "ms"));
    }
    if let (Some(a), Some(b)) = (p.p95_ms, p.p95_base_ms) {
        if b > 0.0 {
            evidence.push(ev("p95 against usual", a / b, "×"));
        }
    }
    evidence.extend([
        ev("calls per request", p.calls_per_request, "calls/request"),
        ev(
            "calls per request, hour before",
            p.calls_per_request_base,
            "calls/request",
        ),
        ev("time per request in it", p.per_request_ms, "ms"),
        ev(
            "time per request in it, hour before",
            p.per_request_base_ms,
            "ms",
        ),
        ev("added time per request", p.added_ms, "ms"),
        ev("share of the added latency", p.share * 100.0, "%"),
        ev(&format!("{} mean", d.operation), d.mean_ms, "ms"),
    ]);
    if let Some(b) = d.mean_base_ms {
        evidence.push(ev(&format!("{} mean, hour before", d.operation), b, "ms"));
    }
    evidence.push(ev(
        &format!("{} requests", d.operation),
        d.requests as f64,
        "requests",
    ));
    Cause {
        rank: 0,
        kind: "dependency",
        subject,
        service: Some(d.service.clone()),
        operation: Some(d.operation.clone()),
        class: Some(p.class.clone()),
        peer: Some(p.peer.clone()),
        score: 1.0 + p.share,
        line,
        evidence,
    }
}

fn is_5xx(a: &AlertFacts) -> bool {
    a.kind == Some(RuleKind::ErrorRate) || a.rule.contains("5xx") || a.rule.contains("503")
}

/// The 5xx share of an operation during the incident, and its most frequent 5xx status.
fn five_xx(t: &Traffic, service: &str, operation: &str) -> Option<(f64, String)> {
    let s = t.incident.get(service)?.operations.get(operation)?;
    let n = s.http_5xx();
    if s.count == 0 || n == 0 {
        return None;
    }
    let top = s
        .by_status
        .iter()
        .filter(|(k, _)| k.len() == 3 && k.starts_with('5'))
        .max_by_key(|(_, n)| **n)
        .map(|(k, _)| k.clone())
        .unwrap_or_else(|| "5xx".into());
    Some((n as f64 / s.count as f64, top))
}

/// The incident's probable causes, most probable first.
pub fn rank(alerts: &[AlertFacts], t: &Traffic) -> Vec<Cause> {
    let mut causes: Vec<Cause> = Vec::new();
    // Operations already explained by a probe cause.
    let mut explained: BTreeSet<(String, String)> = BTreeSet::new();

    // Probe causes.
    for a in alerts {
        match a.kind {
            Some(RuleKind::ReplicationLag) => {
                let Some(d) = label(a, "database") else {
                    continue;
                };
                let scans: Vec<&AlertFacts> = alerts
                    .iter()
                    .filter(|f| f.kind == Some(RuleKind::FullScan) && f.started >= a.started)
                    .collect();
                let lag = a.value.map(|v| format!(" {v:.0} s")).unwrap_or_default();
                let mut evidence = vec![];
                if let Some(v) = a.value {
                    evidence.push(ev("replica lag", v, "s"));
                }
                let (line, score) = if scans.is_empty() {
                    // A stopped replay (SQL thread, pg_wal_replay_pause) is the fault, however
                    // little lag it has built yet.
                    if a.summary.contains("paused") {
                        let behind = a
                            .value
                            .map(|v| format!(", {v:.0} s behind"))
                            .unwrap_or_default();
                        (format!("Replica {d} stopped replaying{behind}"), 1.1)
                    } else {
                        (format!("Replica {d} fell{lag} behind"), 1.1)
                    }
                } else {
                    let services: BTreeSet<&str> =
                        scans.iter().filter_map(|f| label(f, "service")).collect();
                    let first_scan = scans.iter().map(|f| f.started).fold(f64::MAX, f64::min);
                    evidence.push(ev(
                        "lag began before the full scans by",
                        first_scan - a.started,
                        "s",
                    ));
                    evidence.push(ev("full-scan alerts", scans.len() as f64, ""));
                    for f in &scans {
                        if let (Some(s), Some(o)) = (label(f, "service"), label(f, "operation")) {
                            explained.insert((s.to_owned(), o.to_owned()));
                        }
                    }
                    (
                        format!(
                            "Replica {d} fell{lag} behind before the full scans of {} began: queries on its stale data take the slow path",
                            services.into_iter().collect::<Vec<_>>().join(", ")
                        ),
                        3.0,
                    )
                };
                causes.push(Cause {
                    rank: 0,
                    kind: "replica_lag",
                    subject: format!("replica {d}"),
                    service: None,
                    operation: None,
                    score,
                    line,
                    evidence,
                    class: None,
                    peer: None,
                });
            }
            Some(RuleKind::DbConnect) => {
                let Some(d) = label(a, "database") else {
                    continue;
                };
                let mut evidence = vec![];
                if let Some(v) = a.value {
                    evidence.push(ev("connect failures", v, ""));
                }
                // 5xx alerts on operations whose service calls this database.
                let mut hit = Vec::new();
                for f in alerts.iter().filter(|f| is_5xx(f)) {
                    let (Some(s), Some(o)) = (label(f, "service"), label(f, "operation")) else {
                        continue;
                    };
                    // Calls that cannot connect may leave no span: the hour before counts.
                    let calls = [&t.incident, &t.baseline].iter().any(|w| {
                        w.get(s).is_some_and(|st| {
                            st.dependencies.keys().any(|(_, p)| peer_is_database(p, d))
                        })
                    });
                    if calls {
                        if let Some((share, _)) = five_xx(t, s, o) {
                            evidence.push(ev(&format!("{o} 5xx"), share * 100.0, "%"));
                        }
                        explained.insert((s.to_owned(), o.to_owned()));
                        hit.push(o.to_owned());
                    }
                }
                let (line, score) = if hit.is_empty() {
                    (format!("Database {d} refuses connections"), 1.1)
                } else {
                    (
                        format!(
                            "Database {d} refuses connections: {} calling it answer 5xx",
                            hit.join(", ")
                        ),
                        3.0,
                    )
                };
                causes.push(Cause {
                    rank: 0,
                    kind: "db_connect",
                    subject: format!("database {d}"),
                    service: None,
                    operation: None,
                    score,
                    line,
                    evidence,
                    class: None,
                    peer: None,
                });
            }
            // An app's own metric past its threshold (a pool at its maximum, a limiter full):
            // below a dependency that explains the time, above the operation itself.
            Some(RuleKind::Metric) => {
                let what = a.summary.split(" is ").next().unwrap_or(&a.summary);
                causes.push(Cause {
                    rank: 0,
                    kind: "metric",
                    subject: what.to_owned(),
                    service: label(a, "service").map(str::to_owned),
                    operation: None,
                    score: METRIC_SCORE,
                    line: a.summary.clone(),
                    evidence: a.value.map(|v| ev(what, v, "")).into_iter().collect(),
                    class: None,
                    peer: None,
                });
            }
            _ => {}
        }
    }

    // Latency by dependency, for every affected operation; the operation itself for 5xx with
    // no slower dependency.
    let mut seen_ops: BTreeSet<(String, String)> = BTreeSet::new();
    let mut by_peer: BTreeMap<(String, String), Cause> = BTreeMap::new();
    let mut itself: Vec<Cause> = Vec::new();
    // Only alerts about traffic (latency, errors) are explained by it: a replica's lag or a
    // refused connection is its own cause, above.
    let traffic = |a: &&AlertFacts| {
        matches!(a.kind, Some(RuleKind::Latency) | Some(RuleKind::ErrorRate)) || is_5xx(a)
    };
    for a in alerts.iter().filter(traffic) {
        for (s, o) in affected(a, t) {
            if !seen_ops.insert((s.clone(), o.clone())) {
                continue;
            }
            let Some(d) = decompose(t, &s, &o) else {
                continue;
            };
            let mut any = false;
            for p in d.peers.iter().filter(|p| {
                p.share >= MIN_SHARE
                    && p.added_ms >= MIN_ADDED_MS
                    && p.per_request_ms >= MIN_GROWTH * p.per_request_base_ms
            }) {
                any = true;
                let mut c = dependency_cause(&d, p);
                // A peer whose own alert is in the incident is corroborated: it outranks a
                // peer that only takes the time (the first incident after a start, with no
                // hour before, or a second peer that slowed without alerting).
                if alerts
                    .iter()
                    .any(|a| label(a, "peer") == Some(p.peer.as_str()))
                {
                    c.score += ALERTING_PEER_BONUS;
                }
                let key = (p.class.clone(), p.peer.clone());
                // Among the operations a peer explains, the one an alert names comes first
                // ("…of GET /items" when GET /items answered 503, not of a busier sibling).
                let rank = |c: &Cause| {
                    let named = alerts.iter().any(|a| {
                        label(a, "service") == c.service.as_deref()
                            && label(a, "operation") == c.operation.as_deref()
                    });
                    (named, c.score)
                };
                if by_peer.get(&key).is_none_or(|old| {
                    let (n_old, s_old) = rank(old);
                    let (n_new, s_new) = rank(&c);
                    (n_new, s_new) > (n_old, s_old)
                }) {
                    by_peer.insert(key, c);
                }
            }
            if any || explained.contains(&(s.clone(), o.clone())) || !is_5xx(a) {
                continue;
            }
            let Some((share, status)) = five_xx(t, &s, &o) else {
                continue;
            };
            let why = if status == "503" {
                "its limiter"
            } else {
                "its own errors or load"
            };
            let mut evidence = vec![
                ev(&format!("{o} {status}"), share * 100.0, "%"),
                ev(&format!("{o} requests"), d.requests as f64, "requests"),
                ev(&format!("{o} mean"), d.mean_ms, "ms"),
            ];
            if let Some(b) = d.mean_base_ms {
                evidence.push(ev(&format!("{o} mean, hour before"), b, "ms"));
            }
            itself.push(Cause {
                rank: 0,
                kind: "itself",
                subject: o.clone(),
                service: Some(s.clone()),
                operation: Some(o.clone()),
                score: 0.5,
                line: format!("{o} answers {status} itself: no dependency slowed ({why})"),
                evidence,
                class: None,
                peer: None,
            });
        }
    }
    // Flags over-represented against the hour before, on peers no probe cause covers: spans
    // that failed to connect, read a lagging replica, or lost their WHERE ("what is
    // different", from the agents' span flags even where no database is probed).
    let probed: BTreeSet<String> = causes
        .iter()
        .filter(|c| matches!(c.kind, "replica_lag" | "db_connect"))
        .flat_map(|c| c.subject.split_whitespace().last().map(str::to_owned))
        .collect();
    // Requests answered 5xx during the incident: flags too few to explain a share of them
    // are a neighbour's tail (the refusal's last connect failures, in the minute an upload
    // flood began), not its cause.
    let answered_5xx: u64 = t
        .incident
        .values()
        .flat_map(|st| st.operations.values())
        .map(Stats::http_5xx)
        .sum();
    for ((flag, peer), r) in &t.flags {
        let name = peer_name(peer);
        if r.count < MIN_FLAGGED
            || r.during < FLAG_GROWTH * r.before
            || (r.count as f64) < MIN_SHARE * answered_5xx as f64
            || probed.contains(name)
            || peer.is_empty()
        {
            continue;
        }
        let (what, score) = match flag.as_str() {
            "connect_failure" => ("spans failed to connect to", 1.0),
            "replica_lag" => ("spans read a lagging replica at", 0.95),
            "full_scan_suspect" => ("spans looked like full scans on", 0.9),
            _ => continue,
        };
        let before = if r.before > 0.0 {
            format!("×{:.0} the hour before", r.during / r.before)
        } else {
            "none in the hour before".to_owned()
        };
        causes.push(Cause {
            rank: 0,
            kind: "flag",
            subject: format!("{flag} {name}"),
            service: None,
            operation: None,
            score,
            line: format!("{} {what} {name}, {:.0}/min ({before})", r.count, r.during),
            evidence: vec![
                ev("flagged spans", r.count as f64, "spans"),
                ev("per minute during the incident", r.during, "spans/min"),
                ev("per minute in the hour before", r.before, "spans/min"),
            ],
            class: None,
            peer: Some(peer.clone()),
        });
    }

    // Changes: a version new to a service of the incident shortly before it began ("what is
    // different"). Below a peer that explains the slowdown, above "the operation itself".
    let first = alerts.iter().map(|a| a.started).fold(f64::MAX, f64::min);
    let what = if alerts.iter().any(is_5xx) {
        "errors began"
    } else if alerts.iter().any(|a| a.kind == Some(RuleKind::Latency)) {
        "latency rose"
    } else {
        "the first alert fired"
    };
    for c in &t.changes {
        let before = first - c.at;
        if !(-CHANGE_AFTER_S..=CHANGE_BEFORE_S).contains(&before) {
            continue;
        }
        let line = if before >= 0.0 {
            format!("{what} {before:.0} s after {}", c.words())
        } else {
            format!("{}, {:.0} s after {what}", c.words(), -before)
        };
        causes.push(Cause {
            rank: 0,
            kind: "change",
            subject: format!("{} {}", c.service, c.version),
            service: Some(c.service.clone()),
            operation: None,
            score: 1.05,
            line,
            evidence: vec![
                ev("first seen before the first alert", before, "s"),
                ev("instances running it", c.instances as f64, "instances"),
                ev(
                    "instances of the service",
                    c.of_instances as f64,
                    "instances",
                ),
            ],
            class: None,
            peer: None,
        });
    }
    // A peer's cause says when the operation it explains began answering 5xx after the peer's
    // own alert ("…; its 503s began 4 s after it"): symptom after cause, in one line.
    for c in by_peer.values_mut() {
        let (Some(s), Some(o), Some(p)) = (&c.service, &c.operation, &c.peer) else {
            continue;
        };
        let peer_began = alerts
            .iter()
            .filter(|a| label(a, "peer") == Some(p.as_str()) && label(a, "service").is_none())
            .map(|a| a.started)
            .fold(f64::MAX, f64::min);
        let errors_began = alerts
            .iter()
            .filter(|a| is_5xx(a))
            .filter(|a| label(a, "service") == Some(s) && label(a, "operation") == Some(o))
            .map(|a| a.started)
            .fold(f64::MAX, f64::min);
        if peer_began < f64::MAX && errors_began < f64::MAX {
            let status = five_xx(t, s, o).map_or_else(|| "5xx".to_owned(), |f| f.1);
            let d = errors_began - peer_began;
            c.line.push_str(&if d >= 0.0 {
                format!("; its {status}s began {d:.0} s after it")
            } else {
                format!(
                    "; its {status}s began {:.0} s before the slowdown's alert",
                    -d
                )
            });
            c.evidence.push(ev(
                &format!("{o} {status}s began after the peer's alert by"),
                d,
                "s",
            ));
        }
    }
    causes.extend(by_peer.into_values());
    causes.extend(instances::instance_causes(alerts, t));
    causes.extend(itself);
    if causes.is_empty() {
        // Nothing better known: the first alert says what is wrong.
        if let Some(a) = alerts.iter().min_by(|a, b| a.started.total_cmp(&b.started)) {
            causes.push(Cause {
                rank: 0,
                kind: "alert",
                subject: a.rule.clone(),
                service: None,
                operation: None,
                score: 0.1,
                line: a.summary.clone(),
                evidence: a
                    .value
                    .map(|v| vec![ev("alert value", v, "")])
                    .unwrap_or_default(),
                class: None,
                peer: None,
            });
        }
    }
    causes.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.line.cmp(&b.line)));
    for (i, c) in causes.iter_mut().enumerate() {
        c.rank = i + 1;
    }
    causes
}

mod decompose;
mod instances;
pub use decompose::{decompose, per_operation, Decomposition, PeerShare, MIN_COVERAGE_RATIO};

#[cfg(test)]
mod tests;

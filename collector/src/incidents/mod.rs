//! Incidents: firing alerts that began within [`GROUP_WINDOW_S`] of each other and are
//! related form one incident; alerts related to an open incident's join it later; it resolves
//! when all its alerts have. Grouped by the alert leader after each evaluation round, written
//! under its epoch ([`Store::apply_incident_changes`]).
//!
//! Two alerts are related when they
//! - share a `service` (or a `peer`),
//! - one's `peer` or `database` is called by the other's service (the dependency rows of the
//!   aggregates of the last [`EDGES_LOOKBACK_S`]; a `database` label `shop-primary` is the peer
//!   `shop-primary (system, address)`), or one's peer is the other's database,
//! - or both are about databases on the same engine host (the address of their peers; not a
//!   loopback address, which names each caller's own machine: two agents' `127.0.0.1` are two
//!   hosts, and one machine's primary and replica on two ports are two engines).
//!
//! - [`cause`]: the probable causes, ranked, with their evidence.

pub mod cause;
pub mod recurrence;

use std::collections::{BTreeMap, BTreeSet};

use stormwatch_store::alerts::{AlertState, Term};
use stormwatch_store::incidents::{Incident, IncidentAlert, IncidentChange};
use stormwatch_store::signals::Labels;
use stormwatch_store::{Store, StoreError};

use crate::alerts::config::RuleConfig;
use cause::{peer_host, peer_is_database, AlertFacts, Traffic};

/// Alerts that begin within this many seconds of each other may form one incident.
pub const GROUP_WINDOW_S: f64 = 120.0;
/// Which services call which peers is read over this many seconds before now.
pub const EDGES_LOOKBACK_S: i64 = 15 * 60;
/// An open incident's causes are worked out again this often (and whenever an alert joins).
pub const CAUSE_REFRESH_S: f64 = 30.0;
/// The baseline causes are measured against: this long before the incident.
pub const BASELINE_S: i64 = 3_600;

/// An alert firing (or resolving) now.
#[derive(Debug, Clone)]
pub struct Active {
    pub rule: String,
    pub labels_key: String,
    pub labels: Labels,
    pub severity: String,
    pub summary: String,
    pub value: Option<f64>,
    /// Unix seconds: when it began firing.
    pub started: f64,
}

impl Active {
    /// The alerts of `states` that fire (or are resolving): pending ones are not incidents yet.
    pub fn of(states: &[AlertState]) -> Vec<Active> {
        let mut v: Vec<Active> = states
            .iter()
            .filter(|s| s.state == "firing" || s.state == "resolving")
            .filter_map(|s| {
                Some(Active {
                    rule: s.rule.clone(),
                    labels_key: s.labels_key.clone(),
                    labels: s.labels.clone(),
                    severity: s.severity.clone(),
                    summary: s.summary.clone(),
                    value: s.value,
                    started: s.firing_since?,
                })
            })
            .collect();
        v.sort_by(|a, b| a.started.total_cmp(&b.started).then(a.rule.cmp(&b.rule)));
        v
    }

    fn key(&self) -> (String, String) {
        (self.rule.clone(), self.labels_key.clone())
    }

    fn member(&self, now: f64) -> IncidentAlert {
        IncidentAlert {
            rule: self.rule.clone(),
            labels_key: self.labels_key.clone(),
            labels: self.labels.clone(),
            severity: self.severity.clone(),
            summary: self.summary.clone(),
            started: self.started,
            joined: now,
            resolved: None,
        }
    }
}

/// Which services call which peers: `(service, class, peer)`.
#[derive(Debug, Clone, Default)]
pub struct Relations {
    pub edges: Vec<(String, String, String)>,
}

fn get<'a>(l: &'a Labels, k: &str) -> Option<&'a str> {
    l.get(k).map(String::as_str).filter(|v| !v.is_empty())
}

impl Relations {
    /// True when `service` calls `peer` (or the database named `peer`).
    fn calls(&self, service: &str, target: &str) -> bool {
        self.edges
            .iter()
            .any(|(s, _, p)| s == service && (p == target || peer_is_database(p, target)))
    }

    /// The host of the engine serving `database`, from the peers named after it; `None` for
    /// a loopback address (see the module's documentation).
    fn database_host(&self, database: &str) -> Option<String> {
        self.edges
            .iter()
            .filter(|(_, _, p)| peer_is_database(p, database))
            .find_map(|(_, _, p)| peer_host(p))
            .filter(|h| !is_loopback(h))
    }

    /// True when two alerts are about related things (see the module's documentation).
    pub fn related(&self, a: &Labels, b: &Labels) -> bool {
        self.strength(a, b).is_some()
    }

    /// How two alerts are related: [`STRONG`] when about the same peer or database (or
    /// databases on one engine host), [`WEAK`] when one's service calls the other's peer, or
    /// they share a service; `None` when unrelated.
    pub fn strength(&self, a: &Labels, b: &Labels) -> Option<u8> {
        let same = |k: &str| matches!((get(a, k), get(b, k)), (Some(x), Some(y)) if x == y);
        if same("peer") || same("database") {
            return Some(STRONG);
        }
        for (x, y) in [(a, b), (b, a)] {
            if let (Some(p), Some(d)) = (get(x, "peer"), get(y, "database")) {
                if peer_is_database(p, d) {
                    return Some(STRONG);
                }
            }
        }
        if let (Some(x), Some(y)) = (get(a, "database"), get(b, "database")) {
            if let (Some(hx), Some(hy)) = (self.database_host(x), self.database_host(y)) {
                if hx == hy {
                    return Some(STRONG);
                }
            }
        }
        if same("service") {
            return Some(WEAK);
        }
        for (x, y) in [(a, b), (b, a)] {
            if let Some(s) = get(x, "service") {
                let target = get(y, "peer").or_else(|| get(y, "database"));
                if target.is_some_and(|t| self.calls(s, t)) {
                    return Some(WEAK);
                }
            }
        }
        None
    }

    /// Whether `a` may be grouped with `b`, and how strongly: two faults only when they are
    /// about the same thing — a slow cache and a lagging replica that one service calls are
    /// two stories, even when its errors relate to both.
    fn groups(&self, a: &Labels, b: &Labels) -> Option<u8> {
        let s = self.strength(a, b)?;
        (s == STRONG || !(is_fault(a) && is_fault(b))).then_some(s)
    }
}

/// `localhost`, `127.x.x.x` or `::1`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How far apart in time `a` (joining) and a member `b` began, for choosing among equally
/// related ones: the member that began closest before `a` (alerts with shorter windows fire
/// first, so up to [`LEAD_S`] after `a` counts as before); one that began later comes last.
fn distance(a: f64, b: f64) -> f64 {
    if b <= a + LEAD_S {
        (a - b).abs()
    } else {
        GROUP_WINDOW_S + (b - a)
    }
}

/// See [`distance`].
pub const LEAD_S: f64 = 20.0;

/// Relation strengths ([`Relations::strength`]).
pub const WEAK: u8 = 1;
pub const STRONG: u8 = 2;

/// A fault names the thing at fault (a database, or a peer without a service: a dependency's
/// latency); the rest are symptoms (a service's or operation's errors, full scans...).
pub fn is_fault(l: &Labels) -> bool {
    get(l, "database").is_some() || (get(l, "peer").is_some() && get(l, "service").is_none())
}

/// What one round decided, before causes are worked out.
#[derive(Debug, Default)]
pub struct Plan {
    /// Changes to open incidents (joins, alerts resolved, incidents resolved).
    pub changes: Vec<IncidentChange>,
    /// Open incidents an alert joined or left this round: their causes are due.
    pub touched: BTreeSet<i64>,
    /// New incidents: their alerts, earliest first.
    pub new: Vec<Vec<Active>>,
}

/// An open incident's alert as grouping sees it: labels, start, active after this round.
type Member = (Labels, f64, bool);

/// Groups the active alerts into the open incidents and new ones (pure).
pub fn plan(active: &[Active], open: &[Incident], rel: &Relations, now: f64) -> Plan {
    let mut p = Plan::default();
    let by_key: BTreeMap<(String, String), &Active> = active.iter().map(|a| (a.key(), a)).collect();
    // Members per open incident, as they will be after this round: (labels, started, active).
    let mut members: Vec<(i64, Vec<Member>)> = Vec::new();
    // Active alerts in an open incident that still counts them active: theirs.
    let mut placed: BTreeSet<(String, String)> = open
        .iter()
        .flat_map(|i| i.alerts.iter().filter(|a| a.resolved.is_none()))
        .map(|a| (a.rule.clone(), a.labels_key.clone()))
        .filter(|k| by_key.contains_key(k))
        .collect();
    for i in open {
        let mut m = Vec::new();
        for a in &i.alerts {
            let key = (a.rule.clone(), a.labels_key.clone());
            let now_active = by_key.contains_key(&key);
            let is_in = match (a.resolved, now_active) {
                (None, false) => {
                    p.changes.push(IncidentChange::AlertResolved {
                        incident: i.id,
                        rule: a.rule.clone(),
                        labels_key: a.labels_key.clone(),
                        at: Some(now),
                    });
                    p.touched.insert(i.id);
                    false
                }
                (None, true) => true,
                // Fires again while its incident is open (and no other holds it): back in.
                (Some(_), true) if !placed.contains(&key) => {
                    p.changes.push(IncidentChange::AlertResolved {
                        incident: i.id,
                        rule: a.rule.clone(),
                        labels_key: a.labels_key.clone(),
                        at: None,
                    });
                    p.touched.insert(i.id);
                    placed.insert(key);
                    true
                }
                (Some(_), _) => false,
            };
            m.push((a.labels.clone(), a.started, is_in));
        }
        members.push((i.id, m));
    }
    // Alerts in no open incident: join the one they relate to best (the strongest relation,
    // then the member that began closest before), else form new ones. A fault joins an incident that has a fault
    // only through a fault.
    let mut unplaced: Vec<&Active> = active
        .iter()
        .filter(|a| !placed.contains(&a.key()))
        .collect();
    let new_faults: Vec<&Active> = unplaced
        .iter()
        .copied()
        .filter(|a| is_fault(&a.labels))
        .collect();
    unplaced.retain(|a| {
        let fault = is_fault(&a.labels);
        // A symptom that relates better to a fault firing for the first time this round goes
        // with that fault's new incident.
        let best_new = new_faults
            .iter()
            .filter(|f| !fault && (a.started - f.started).abs() <= GROUP_WINDOW_S)
            .filter_map(|f| {
                Some((
                    rel.groups(&a.labels, &f.labels)?,
                    distance(a.started, f.started),
                ))
            })
            .max_by(|x, y| x.0.cmp(&y.0).then(y.1.total_cmp(&x.1)));
        let best = members
            .iter()
            .enumerate()
            .filter_map(|(at, (_, m))| {
                let has_fault = m.iter().any(|(l, _, _)| is_fault(l));
                m.iter()
                    .filter(|(labels, started, is_active)| {
                        (*is_active || (a.started - started).abs() <= GROUP_WINDOW_S)
                            && !(fault && has_fault && !is_fault(labels))
                    })
                    .filter_map(|(labels, started, _)| {
                        Some((
                            rel.groups(&a.labels, labels)?,
                            distance(a.started, *started),
                        ))
                    })
                    .max_by(|x, y| x.0.cmp(&y.0).then(y.1.total_cmp(&x.1)))
                    .map(|k| (k, at))
            })
            .max_by(|x, y| x.0 .0.cmp(&y.0 .0).then(y.0 .1.total_cmp(&x.0 .1)))
            .filter(|(k, _)| best_new.is_none_or(|n| k.0 > n.0 || (k.0 == n.0 && k.1 < n.1)))
            .map(|(_, at)| at);
        match best.map(|at| &mut members[at]) {
            Some((id, m)) => {
                p.changes.push(IncidentChange::Join {
                    incident: *id,
                    alert: a.member(now),
                });
                p.touched.insert(*id);
                m.push((a.labels.clone(), a.started, true));
                false
            }
            None => true,
        }
    });
    // Open incidents whose alerts have all resolved.
    for (id, m) in &members {
        if m.iter().all(|(_, _, is_active)| !is_active) {
            p.changes.push(IncidentChange::Resolve {
                incident: *id,
                at: now,
            });
            p.touched.remove(id);
        }
    }
    // The rest, beginning within the window of each other: faults about the same thing
    // together (transitively); each symptom with the fault it relates to best; the other
    // symptoms by relation, transitively.
    let n = unplaced.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let near = |a: &Active, b: &Active| (a.started - b.started).abs() <= GROUP_WINDOW_S;
    let faults: Vec<usize> = (0..n).filter(|&i| is_fault(&unplaced[i].labels)).collect();
    for (x, &i) in faults.iter().enumerate() {
        for &j in &faults[x + 1..] {
            let (a, b) = (unplaced[i], unplaced[j]);
            if near(a, b) && rel.groups(&a.labels, &b.labels).is_some() {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut loose: Vec<usize> = Vec::new();
    for i in (0..n).filter(|i| !faults.contains(i)) {
        let a = unplaced[i];
        let best = faults
            .iter()
            .filter(|&&j| near(a, unplaced[j]))
            .filter_map(|&j| Some((rel.groups(&a.labels, &unplaced[j].labels)?, j)))
            .max_by(|x, y| {
                let d = |j: usize| distance(a.started, unplaced[j].started);
                x.0.cmp(&y.0).then(d(y.1).total_cmp(&d(x.1)))
            });
        match best {
            Some((_, j)) => {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
            None => loose.push(i),
        }
    }
    for (x, &i) in loose.iter().enumerate() {
        for &j in &loose[x + 1..] {
            let (a, b) = (unplaced[i], unplaced[j]);
            if near(a, b) && rel.groups(&a.labels, &b.labels).is_some() {
                let (ri, rj) = (root(&mut parent, i), root(&mut parent, j));
                parent[ri.max(rj)] = ri.min(rj);
            }
        }
    }
    let mut clusters: BTreeMap<usize, Vec<Active>> = BTreeMap::new();
    for (i, a) in unplaced.iter().enumerate() {
        let r = root(&mut parent, i);
        clusters.entry(r).or_default().push((*a).clone());
    }
    p.new = clusters.into_values().collect();
    p
}

/// An incident's title: its first alert's summary, and how many more there are.
pub fn title(alerts: &[(f64, &str)]) -> String {
    let mut sorted: Vec<&(f64, &str)> = alerts.iter().collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    match sorted.as_slice() {
        [] => "incident".into(),
        [one] => one.1.to_owned(),
        [first, rest @ ..] => format!(
            "{} (+{} more alert{})",
            first.1,
            rest.len(),
            if rest.len() == 1 { "" } else { "s" }
        ),
    }
}

/// Works out an incident's causes from the aggregates: the services of its alerts and those
/// calling their peers and databases, during the incident and the hour before.
pub async fn causes(
    store: &Store,
    rel: &Relations,
    facts: &[AlertFacts],
    opened: f64,
    now: f64,
) -> Result<Vec<cause::Cause>, StoreError> {
    let mut services: BTreeSet<String> = BTreeSet::new();
    for f in facts {
        if let Some(s) = get(&f.labels, "service") {
            services.insert(s.to_owned());
        }
        if let Some(t) = get(&f.labels, "peer").or_else(|| get(&f.labels, "database")) {
            for (s, _, p) in &rel.edges {
                if p == t || peer_is_database(p, t) {
                    services.insert(s.clone());
                }
            }
        }
    }
    let services: Vec<String> = services.into_iter().collect();
    // Whole minutes: from the one holding the incident's first half minute.
    let from = ((opened - 30.0) as i64).div_euclid(60) * 60;
    let to = now as i64 + 60;
    let mut traffic = Traffic {
        incident: store.service_traffic(&services, from, to).await?,
        baseline: store
            .service_traffic(&services, from - BASELINE_S, from)
            .await?,
        changes: store
            .version_changes(
                Some(&services),
                opened - cause::CHANGE_BEFORE_S,
                opened + cause::CHANGE_AFTER_S,
            )
            .await?,
        flags: BTreeMap::new(),
        instances: store.instance_requests(&services, from, to).await?,
    };
    let (during, before) = tokio::try_join!(
        store.flag_totals(&services, from, to),
        store.flag_totals(&services, from - BASELINE_S, from)
    )?;
    let minutes = ((to - from) as f64 / 60.0).max(1.0);
    for (key, n) in during {
        let b = before.get(&key).copied().unwrap_or(0);
        traffic.flags.insert(
            key,
            cause::FlagRates {
                during: n as f64 / minutes,
                before: b as f64 / (BASELINE_S as f64 / 60.0),
                count: n.max(0) as u64,
            },
        );
    }
    Ok(cause::rank(facts, &traffic))
}

fn facts_of(
    alerts: impl Iterator<Item = (String, Labels, f64, String)>,
    rules: &[RuleConfig],
    values: &BTreeMap<(String, String), Option<f64>>,
) -> Vec<AlertFacts> {
    alerts
        .map(|(rule, labels, started, summary)| {
            let key = (rule.clone(), stormwatch_store::alerts::labels_key(&labels));
            AlertFacts {
                kind: rules.iter().find(|r| r.name == rule).map(|r| r.kind),
                value: values.get(&key).copied().flatten(),
                rule,
                labels,
                started,
                summary,
            }
        })
        .collect()
}

fn cause_change(causes: &[cause::Cause]) -> (String, serde_json::Value) {
    (
        causes.first().map(|c| c.line.clone()).unwrap_or_default(),
        serde_json::to_value(causes).unwrap_or_default(),
    )
}

/// One grouping round, after the rules' transitions are written: reads the alerts and open
/// incidents, decides, works out the causes that are due, and writes it all under `term`.
/// Returns the open incidents whose first-ranked cause changed (their Slack heads are due
/// for an update).
pub async fn group_once(
    store: &Store,
    rules: &[RuleConfig],
    term: &Term,
    now: f64,
) -> Result<Vec<i64>, StoreError> {
    let (states, open) = tokio::try_join!(store.alert_states(), store.open_incidents())?;
    let active = Active::of(&states);
    if active.is_empty() && open.is_empty() {
        return Ok(vec![]);
    }
    let stale = |i: &Incident| i.cause_updated.is_none_or(|t| now - t >= CAUSE_REFRESH_S);
    let members: BTreeSet<(String, String)> = open
        .iter()
        .flat_map(|i| i.alerts.iter().filter(|a| a.resolved.is_none()))
        .map(|a| (a.rule.clone(), a.labels_key.clone()))
        .collect();
    let news = active.iter().any(|a| !members.contains(&a.key()));
    let p0 = plan(&active, &open, &Relations::default(), now);
    let changed = !p0.changes.is_empty() || !p0.new.is_empty();
    if !news && !changed && !open.iter().any(stale) {
        return Ok(vec![]);
    }
    let now_i = now as i64;
    let rel = Relations {
        edges: store
            .dependency_edges(now_i - EDGES_LOOKBACK_S, now_i + 60)
            .await?,
    };
    let mut p = plan(&active, &open, &rel, now);
    let values: BTreeMap<(String, String), Option<f64>> =
        active.iter().map(|a| (a.key(), a.value)).collect();
    let resolving: BTreeSet<i64> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            IncidentChange::Resolve { incident, .. } => Some(*incident),
            _ => None,
        })
        .collect();
    // Causes of the open incidents that changed, or whose causes are old.
    for i in &open {
        if resolving.contains(&i.id) || !(p.touched.contains(&i.id) || stale(i)) {
            continue;
        }
        let mut alerts: Vec<(String, Labels, f64, String)> = i
            .alerts
            .iter()
            .map(|a| {
                (
                    a.rule.clone(),
                    a.labels.clone(),
                    a.started,
                    a.summary.clone(),
                )
            })
            .collect();
        for c in &p.changes {
            if let IncidentChange::Join { incident, alert } = c {
                if *incident == i.id {
                    alerts.push((
                        alert.rule.clone(),
                        alert.labels.clone(),
                        alert.started,
                        alert.summary.clone(),
                    ));
                }
            }
        }
        let facts = facts_of(alerts.into_iter(), rules, &values);
        let causes = causes(store, &rel, &facts, i.opened, now).await?;
        let (cause_text, cause) = cause_change(&causes);
        let recurrence = recurrence::recurrence(store, &facts).await?;
        let t: Vec<(f64, &str)> = facts
            .iter()
            .map(|f| (f.started, f.summary.as_str()))
            .collect();
        p.changes.push(IncidentChange::Cause {
            incident: i.id,
            title: title(&t),
            cause_text,
            cause,
            recurrence,
        });
    }
    for group in std::mem::take(&mut p.new) {
        let opened = group.iter().map(|a| a.started).fold(f64::MAX, f64::min);
        let facts = facts_of(
            group.iter().map(|a| {
                (
                    a.rule.clone(),
                    a.labels.clone(),
                    a.started,
                    a.summary.clone(),
                )
            }),
            rules,
            &values,
        );
        let causes = causes(store, &rel, &facts, opened, now).await?;
        let (cause_text, cause) = cause_change(&causes);
        let recurrence = recurrence::recurrence(store, &facts).await?;
        let t: Vec<(f64, &str)> = group
            .iter()
            .map(|a| (a.started, a.summary.as_str()))
            .collect();
        p.changes.push(IncidentChange::Open {
            opened,
            title: title(&t),
            cause_text,
            cause,
            recurrence,
            alerts: group.iter().map(|a| a.member(now)).collect(),
        });
    }
    let recaused: Vec<i64> = p
        .changes
        .iter()
        .filter_map(|c| match c {
            IncidentChange::Cause {
                incident,
                cause_text,
                ..
            } => open
                .iter()
                .find(|i| i.id == *incident)
                .filter(|i| &i.cause_text != cause_text)
                .map(|i| i.id),
            _ => None,
        })
        .collect();
    store.apply_incident_changes(term, &p.changes, now).await?;
    Ok(recaused)
}

#[cfg(test)]
mod tests;

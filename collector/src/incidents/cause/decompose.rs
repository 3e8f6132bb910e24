//! An operation's added latency split by the peers it calls: the time per request it spends
//! in each (class, peer), during the incident against the hour before.

use std::collections::{BTreeMap, BTreeSet};

use stormwatch_store::incidents::ServiceTraffic;

use super::{mean_ms, ms, p95_ms, Traffic};

/// One peer's part in an operation's added latency.
#[derive(Debug, Clone)]
pub struct PeerShare {
    pub class: String,
    pub peer: String,
    /// Time per request of the service spent in this peer (ms), incident and baseline.
    pub per_request_ms: f64,
    pub per_request_base_ms: f64,
    pub added_ms: f64,
    /// Of the operation's added latency, 0–1.
    pub share: f64,
    pub calls_per_request: f64,
    pub calls_per_request_base: f64,
    pub p95_ms: Option<f64>,
    pub p95_base_ms: Option<f64>,
}

/// An operation's added latency split by the peers its service calls.
#[derive(Debug, Clone)]
pub struct Decomposition {
    pub service: String,
    pub operation: String,
    /// The calls are the operation's own (per entry), not its service's.
    pub per_operation: bool,
    pub requests: u64,
    pub mean_ms: f64,
    pub mean_base_ms: Option<f64>,
    /// The operation's added mean latency (ms): what the shares are of.
    pub added_ms: f64,
    /// Peers that added time, largest share first.
    pub peers: Vec<PeerShare>,
}

/// Share of a service's dependency calls that its agents tied to a server operation: `None`
/// when it made no calls, 0 when none was tied.
fn coverage(st: Option<&ServiceTraffic>) -> Option<f64> {
    let st = st?;
    let all: u64 = st.dependencies.values().map(|s| s.count).sum();
    let tied: u64 = st.by_entry.values().map(|c| c.count).sum();
    (all > 0).then(|| (tied as f64 / all as f64).min(1.0))
}

/// Least ratio between the two windows' [`coverage`] for calls to be compared per operation:
/// a window whose calls were mostly not tied (agents upgraded during the baseline hour) would
/// read as calls that began, or stopped, with the incident.
pub const MIN_COVERAGE_RATIO: f64 = 0.5;

/// Whether `service`'s calls are compared per operation: its agents tied them to server
/// operations during the incident, and in the hour before to a like extent (or it made no
/// calls then: nothing to compare with, per operation or not).
pub fn per_operation(t: &Traffic, service: &str) -> bool {
    match (
        coverage(t.incident.get(service)),
        coverage(t.baseline.get(service)),
    ) {
        (Some(a), None) => a > 0.0,
        (Some(a), Some(b)) => a > 0.0 && b > 0.0 && a.min(b) / a.max(b) >= MIN_COVERAGE_RATIO,
        _ => false,
    }
}

/// Splits the added latency of `operation` of `service` by the peers the service calls.
pub fn decompose(t: &Traffic, service: &str, operation: &str) -> Option<Decomposition> {
    let inc = t.incident.get(service)?;
    let op = inc.operations.get(operation)?;
    let mean = mean_ms(op)?;
    let empty = ServiceTraffic::default();
    let base = t.baseline.get(service).unwrap_or(&empty);
    let mean_base = base.operations.get(operation).and_then(mean_ms);
    // (count, sum_ns) per (class, peer), and the requests they are divided by.
    let calls_of_op = |st: &ServiceTraffic| -> BTreeMap<(String, String), (u64, u64)> {
        st.by_entry
            .iter()
            .filter(|((e, _, _), _)| e == operation)
            .map(|((_, c, p), n)| ((c.clone(), p.clone()), (n.count, n.sum_ns)))
            .collect()
    };
    let calls_of_service = |st: &ServiceTraffic| -> BTreeMap<(String, String), (u64, u64)> {
        st.dependencies
            .iter()
            .map(|(k, s)| (k.clone(), (s.count, s.sum_ns)))
            .collect()
    };
    let per_operation = per_operation(t, service);
    let (calls_now, calls_base, requests, requests_base) = if per_operation {
        let base_op = base.operations.get(operation).map_or(0, |s| s.count);
        (calls_of_op(inc), calls_of_op(base), op.count, base_op)
    } else {
        (
            calls_of_service(inc),
            calls_of_service(base),
            inc.operations.values().map(|s| s.count).sum(),
            base.operations.values().map(|s| s.count).sum(),
        )
    };
    let keys: BTreeSet<&(String, String)> = calls_now.keys().chain(calls_base.keys()).collect();
    let mut peers = Vec::new();
    for key in keys {
        let (now_s, base_s) = (inc.dependencies.get(key), base.dependencies.get(key));
        let per = |c: Option<&(u64, u64)>, n: u64| match c {
            Some(&(count, sum_ns)) if n > 0 => {
                (ms(sum_ns as f64) / n as f64, count as f64 / n as f64)
            }
            _ => (0.0, 0.0),
        };
        let (t_now, cpr_now) = per(calls_now.get(key), requests);
        let (t_base, cpr_base) = per(calls_base.get(key), requests_base);
        peers.push(PeerShare {
            class: key.0.clone(),
            peer: key.1.clone(),
            per_request_ms: t_now,
            per_request_base_ms: t_base,
            added_ms: t_now - t_base,
            share: 0.0,
            calls_per_request: cpr_now,
            calls_per_request_base: cpr_base,
            p95_ms: now_s.and_then(p95_ms),
            p95_base_ms: base_s.and_then(p95_ms),
        });
    }
    let added_by_peers: f64 = peers.iter().map(|p| p.added_ms.max(0.0)).sum();
    // The shares are of the operation's added latency; when the peers add more than it (calls
    // per request are the service's, not the operation's), of what the peers add. With no
    // hour before (a new endpoint, a store just started), everything is "added": the shares
    // are of the operation's whole time, so the peer it spends its time in comes first.
    let op_added = mean_base.map_or(mean, |b| mean - b);
    let denominator = op_added.max(added_by_peers);
    for p in &mut peers {
        p.share = if denominator > 0.0 {
            (p.added_ms / denominator).clamp(0.0, 1.0)
        } else {
            0.0
        };
    }
    peers.retain(|p| p.added_ms > 0.0);
    peers.sort_by(|a, b| b.share.total_cmp(&a.share).then(a.peer.cmp(&b.peer)));
    Some(Decomposition {
        service: service.to_owned(),
        operation: operation.to_owned(),
        per_operation,
        requests: op.count,
        mean_ms: mean,
        mean_base_ms: mean_base,
        added_ms: op_added.max(0.0),
        peers,
    })
}

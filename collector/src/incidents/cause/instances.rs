//! One instance of a service answering most of its errors or its slow requests ("what is
//! different" by instance), from per-agent server request counts (`sw_instance_minutes`).
//! An instance is the agent that sent its spans: the app server they ran on.

use stormwatch_store::instances::Requests;

use super::{ev, fmt_ms, is_5xx, label, AlertFacts, Cause, Traffic};
use crate::alerts::config::RuleKind;

/// An instance is a cause of a service's 5xx when it answered at least this share of them…
pub const MIN_SHARE_OF_5XX: f64 = 0.5;
/// …at a 5xx rate at least this many times the other instances' together…
pub const OVER_REPRESENTED: f64 = 3.0;
/// …and the service answered at least this many 5xx.
pub const MIN_5XX: u64 = 10;
/// An instance is a cause of a service's latency when its mean is this many times the other
/// instances' together, over at least [`MIN_REQUESTS`] requests.
pub const SLOWER: f64 = 3.0;
pub const MIN_REQUESTS: u64 = 10;
/// Below a peer that explains the slowdown and a new version, above flags.
const SCORE: f64 = 1.02;

/// `62 %`, `0.8 %`.
fn percent(r: f64) -> String {
    if r >= 0.1 || r == 0.0 {
        format!("{:.0} %", r * 100.0)
    } else {
        format!("{:.1} %", r * 100.0)
    }
}

fn others(all: &[(&String, &Requests)], skip: &str) -> Requests {
    let mut o = Requests::default();
    for (a, r) in all {
        if a.as_str() != skip {
            o.count += r.count;
            o.errors += r.errors;
            o.http_5xx += r.http_5xx;
            o.sum_ns += r.sum_ns;
        }
    }
    o
}

/// Instances over-represented among the 5xx or the slow requests of the services the
/// incident's alerts name.
pub fn instance_causes(alerts: &[AlertFacts], t: &Traffic) -> Vec<Cause> {
    let mut out = Vec::new();
    let mut services: Vec<&str> = alerts.iter().filter_map(|a| label(a, "service")).collect();
    services.sort_unstable();
    services.dedup();
    for s in services {
        let Some(by_agent) = t.instances.get(s) else {
            continue;
        };
        let all: Vec<(&String, &Requests)> = by_agent.iter().filter(|(_, r)| r.count > 0).collect();
        if all.len() < 2 {
            continue;
        }
        let n = all.len();
        let total_5xx: u64 = all.iter().map(|(_, r)| r.http_5xx).sum();
        let about = |pred: &dyn Fn(&AlertFacts) -> bool| {
            alerts
                .iter()
                .any(|a| label(a, "service") == Some(s) && pred(a))
        };
        if about(&is_5xx) && total_5xx >= MIN_5XX {
            let (agent, r) = all
                .iter()
                .max_by_key(|(a, r)| (r.http_5xx, std::cmp::Reverse(a.as_str())))
                .copied()
                .expect("two instances or more");
            let share = r.http_5xx as f64 / total_5xx as f64;
            let rate = r.http_5xx as f64 / r.count as f64;
            let rest = others(&all, agent);
            let rest_rate = rest.http_5xx as f64 / rest.count.max(1) as f64;
            if share >= MIN_SHARE_OF_5XX && rate >= OVER_REPRESENTED * rest_rate {
                out.push(Cause {
                    rank: 0,
                    kind: "instance",
                    subject: format!("{s} on {agent}"),
                    service: Some(s.to_owned()),
                    operation: None,
                    score: SCORE,
                    line: format!(
                        "{agent} answered {:.0} % of {s}'s 5xx: {} of its requests against {} on its {} other instance{}",
                        share * 100.0,
                        percent(rate),
                        percent(rest_rate),
                        n - 1,
                        if n == 2 { "" } else { "s" }
                    ),
                    evidence: vec![
                        ev("its share of the 5xx", share * 100.0, "%"),
                        ev("its 5xx rate", rate * 100.0, "%"),
                        ev("the other instances' 5xx rate", rest_rate * 100.0, "%"),
                        ev("5xx it answered", r.http_5xx as f64, "requests"),
                        ev("instances answering", n as f64, "instances"),
                    ],
                    class: None,
                    peer: None,
                });
            }
        }
        if about(&|a: &AlertFacts| a.kind == Some(RuleKind::Latency)) {
            let slowest = all
                .iter()
                .filter(|(_, r)| r.count >= MIN_REQUESTS)
                .filter_map(|(a, r)| Some((*a, *r, r.mean_ms()?)))
                .max_by(|x, y| x.2.total_cmp(&y.2));
            let Some((agent, r, mean)) = slowest else {
                continue;
            };
            let rest = others(&all, agent);
            let Some(rest_mean) = rest.mean_ms() else {
                continue;
            };
            if mean >= SLOWER * rest_mean {
                out.push(Cause {
                    rank: 0,
                    kind: "instance",
                    subject: format!("{s} on {agent}"),
                    service: Some(s.to_owned()),
                    operation: None,
                    score: SCORE,
                    line: format!(
                        "{s} on {agent} takes {} a request against {} on its {} other instances",
                        fmt_ms(mean),
                        fmt_ms(rest_mean),
                        n - 1
                    ),
                    evidence: vec![
                        ev("its mean", mean, "ms"),
                        ev("the other instances' mean", rest_mean, "ms"),
                        ev("its requests", r.count as f64, "requests"),
                        ev("instances answering", n as f64, "instances"),
                    ],
                    class: None,
                    peer: None,
                });
            }
        }
    }
    out
}

//! The alert state machine: pending → firing → resolving → (resolved), decided per instance
//! from the current observation and the stored state. Pure: no IO, so it is tested directly.

use std::collections::BTreeMap;

use stormwatch_store::alerts::{labels_key, AlertEvent, AlertState, Transition};
use stormwatch_store::signals::Labels;

use super::config::RuleConfig;
use super::rules::Observation;

/// Decides what changes for the instances of `rule`, given what was measured now.
/// Instances with no observation (their data stopped) count as not active.
pub fn step(
    rule: &RuleConfig,
    observations: &[Observation],
    existing: &[AlertState],
    now: f64,
    channels: &[String],
    silenced: &dyn Fn(&str, &Labels, f64) -> bool,
) -> Vec<Transition> {
    // One observation per instance; the worst wins if a rule yields the same labels twice.
    let mut current: BTreeMap<String, &Observation> = BTreeMap::new();
    for o in observations {
        let key = labels_key(&o.labels);
        let worse = current
            .get(&key)
            .is_none_or(|c| (o.active && !c.active) || o.value > c.value);
        if worse {
            current.insert(key, o);
        }
    }
    let mut out = Vec::new();
    let event = |name: &str, labels: &Labels| {
        Some(AlertEvent {
            event: name.into(),
            channels: channels.to_vec(),
            silenced: silenced(&rule.name, labels, now),
        })
    };
    // A resolve is as quiet as its firing was: never announce the end of what was not announced.
    let resolved_event = |s: &AlertState| {
        event("resolved", &s.labels).map(|mut e| {
            e.silenced |= s.last_notified.is_none();
            e
        })
    };
    let for_s = rule.for_.as_secs_f64();
    let resolve_s = rule.resolve_after.as_secs_f64();
    let by_key: BTreeMap<&str, &AlertState> = existing
        .iter()
        .map(|s| (s.labels_key.as_str(), s))
        .collect();

    for (key, o) in &current {
        let prev = by_key.get(key.as_str()).copied();
        let mut s = prev.cloned().unwrap_or_else(|| AlertState {
            rule: rule.name.clone(),
            labels_key: key.clone(),
            labels: o.labels.clone(),
            state: "pending".into(),
            severity: rule.severity.clone(),
            value: None,
            threshold: None,
            summary: String::new(),
            pending_since: now,
            firing_since: None,
            resolving_since: None,
            last_notified: None,
            peak: None,
            peak_summary: String::new(),
        });
        s.value = o.value;
        s.threshold = o.threshold;
        s.severity = rule.severity.clone();
        if o.active {
            s.summary = o.summary.clone();
            if o.value.is_some_and(|v| s.peak.is_none_or(|p| v > p)) {
                s.peak = o.value;
                s.peak_summary = o.summary.clone();
            }
        }
        match (s.state.as_str(), o.active) {
            ("pending", true) if now - s.pending_since >= for_s => {
                s.state = "firing".into();
                s.firing_since = Some(now);
                let e = event("firing", &s.labels);
                // A silenced firing is recorded but nobody was told: `last_notified` stays
                // empty, so the resolve stays quiet too, and if the silence ends while the
                // alert still fires, the firing message goes out then.
                s.last_notified = e.as_ref().filter(|e| !e.silenced).map(|_| now);
                out.push(Transition::Upsert(s, e));
            }
            ("pending", true) => out.push(Transition::Upsert(s, None)),
            ("pending", false) if prev.is_some() => out.push(Transition::Remove(s, None)),
            ("firing", true)
                if s.last_notified.is_none() && !silenced(&rule.name, &s.labels, now) =>
            {
                s.last_notified = Some(now);
                let e = event("firing", &s.labels);
                out.push(Transition::Upsert(s, e));
            }
            ("firing", true) => {
                let renotify = rule.renotify_every.is_some_and(|r| {
                    r.as_secs_f64() > 0.0
                        && s.last_notified
                            .is_some_and(|last| now - last >= r.as_secs_f64())
                });
                if renotify {
                    s.last_notified = Some(now);
                    let e = event("renotify", &s.labels);
                    out.push(Transition::Upsert(s, e));
                } else {
                    out.push(Transition::Upsert(s, None));
                }
            }
            ("firing", false) | ("resolving", false) => {
                let since = *s.resolving_since.get_or_insert(now);
                if now - since >= resolve_s {
                    s.summary = resolved_summary(Some(&o.summary), &s);
                    let e = resolved_event(&s);
                    out.push(Transition::Remove(s, e));
                } else {
                    s.state = "resolving".into();
                    out.push(Transition::Upsert(s, None));
                }
            }
            ("resolving", true) => {
                s.state = "firing".into();
                s.resolving_since = None;
                out.push(Transition::Upsert(s, None));
            }
            _ => {}
        }
    }
    // Instances whose data went away: the condition no longer shows.
    for s in existing
        .iter()
        .filter(|s| !current.contains_key(&s.labels_key))
    {
        let mut s = s.clone();
        match s.state.as_str() {
            "pending" => out.push(Transition::Remove(s, None)),
            _ => {
                let since = *s.resolving_since.get_or_insert(now);
                if now - since >= resolve_s {
                    s.summary = resolved_summary(None, &s);
                    let e = resolved_event(&s);
                    out.push(Transition::Remove(s, e));
                } else {
                    s.state = "resolving".into();
                    out.push(Transition::Upsert(s, None));
                }
            }
        }
    }
    out
}

/// What a resolve says: the value now (the latest observation, which no longer meets the
/// condition) and what it peaked at, not the firing text again.
fn resolved_summary(now: Option<&str>, s: &AlertState) -> String {
    let now = now.unwrap_or("no longer observed (no data)");
    let worst = if s.peak_summary.is_empty() {
        &s.summary
    } else {
        &s.peak_summary
    };
    format!("back to normal: {now}; at its peak: {worst}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::config::{Dur, RuleConfig, RuleKind};

    fn obs(active: bool, value: f64) -> Observation {
        Observation {
            labels: Labels::from([("database".to_owned(), "replica-1".to_owned())]),
            value: Some(value),
            threshold: Some(5.0),
            active,
            summary: format!("lag {value}"),
        }
    }

    /// Runs the machine over a sequence of (time, observation) and returns the events.
    fn run(rule: &RuleConfig, seq: &[(f64, Option<Observation>)]) -> Vec<(f64, String)> {
        let mut states: Vec<AlertState> = Vec::new();
        let mut events = Vec::new();
        for (t, o) in seq {
            let obs: Vec<Observation> = o.iter().cloned().collect();
            for tr in step(rule, &obs, &states, *t, &["c".into()], &|_, _, _| false) {
                match tr {
                    Transition::Upsert(s, e) => {
                        states.retain(|x| x.labels_key != s.labels_key);
                        states.push(s);
                        if let Some(e) = e {
                            events.push((*t, e.event));
                        }
                    }
                    Transition::Remove(s, e) => {
                        states.retain(|x| x.labels_key != s.labels_key);
                        if let Some(e) = e {
                            events.push((*t, e.event));
                        }
                    }
                }
            }
        }
        events
    }

    #[test]
    fn fires_once_and_resolves_once_with_hysteresis() {
        let mut rule = RuleConfig::new("lag", RuleKind::ReplicationLag);
        rule.resolve_after = Dur::secs(10);
        let seq: Vec<(f64, Option<Observation>)> = vec![
            (0.0, Some(obs(false, 0.0))),
            (5.0, Some(obs(true, 9.0))),
            (10.0, Some(obs(true, 12.0))),
            (15.0, Some(obs(false, 1.0))),
            (20.0, Some(obs(true, 8.0))), // flaps back before the hysteresis ends: no new event
            (25.0, Some(obs(false, 0.0))),
            (30.0, Some(obs(false, 0.0))),
            (35.0, Some(obs(false, 0.0))),
            (40.0, Some(obs(false, 0.0))),
        ];
        assert_eq!(
            run(&rule, &seq),
            vec![(5.0, "firing".to_owned()), (35.0, "resolved".to_owned())]
        );
    }

    #[test]
    fn a_resolve_says_the_value_now_and_the_peak() {
        let mut rule = RuleConfig::new("lag", RuleKind::ReplicationLag);
        rule.resolve_after = Dur::secs(0);
        let mut states: Vec<AlertState> = Vec::new();
        let mut last = None;
        for (t, o) in [
            (0.0, obs(true, 9.0)),
            (5.0, obs(true, 948.0)),
            (10.0, obs(true, 12.0)),
            (15.0, obs(false, 2.1)),
        ] {
            for tr in step(&rule, &[o], &states, t, &["c".into()], &|_, _, _| false) {
                match tr {
                    Transition::Upsert(s, _) => {
                        states.retain(|x| x.labels_key != s.labels_key);
                        states.push(s);
                    }
                    Transition::Remove(s, e) => {
                        states.retain(|x| x.labels_key != s.labels_key);
                        last = e.map(|e| (e.event, s.summary, s.peak));
                    }
                }
            }
        }
        let (event, summary, peak) = last.expect("resolved");
        assert_eq!(event, "resolved");
        assert_eq!(peak, Some(948.0));
        assert_eq!(summary, "back to normal: lag 2.1; at its peak: lag 948");
    }

    #[test]
    fn for_delays_firing_and_short_blips_never_fire() {
        let mut rule = RuleConfig::new("lag", RuleKind::ReplicationLag);
        rule.for_ = Dur::secs(10);
        rule.resolve_after = Dur::secs(0);
        let blip = vec![
            (0.0, Some(obs(true, 9.0))),
            (5.0, Some(obs(false, 0.0))),
            (20.0, Some(obs(false, 0.0))),
        ];
        assert!(run(&rule, &blip).is_empty());
        let long = vec![
            (0.0, Some(obs(true, 9.0))),
            (5.0, Some(obs(true, 9.0))),
            (10.0, Some(obs(true, 9.0))),
            (15.0, None),
        ];
        assert_eq!(
            run(&rule, &long),
            vec![(10.0, "firing".to_owned()), (15.0, "resolved".to_owned())]
        );
    }

    #[test]
    fn a_silenced_alert_is_announced_when_its_silence_ends_and_its_resolve_matches() {
        let mut rule = RuleConfig::new("lag", RuleKind::ReplicationLag);
        rule.resolve_after = Dur::secs(0);
        let mut states: Vec<AlertState> = Vec::new();
        let mut sent = Vec::new();
        let silenced_until = 20.0;
        for (t, active) in [
            (0.0, true),
            (10.0, true),
            (20.0, true),
            (30.0, false),
            (40.0, true),
            (50.0, true),
            (60.0, false),
        ] {
            let obs = vec![obs(active, if active { 9.0 } else { 0.0 })];
            let silenced =
                |_: &str, _: &Labels, now: f64| now < silenced_until || (55.0..65.0).contains(&now);
            for tr in step(&rule, &obs, &states, t, &["c".into()], &silenced) {
                let (s, e, keep) = match tr {
                    Transition::Upsert(s, e) => (s, e, true),
                    Transition::Remove(s, e) => (s, e, false),
                };
                if let Some(e) = e.filter(|e| !e.silenced) {
                    sent.push((t, e.event));
                }
                states.retain(|x| x.labels_key != s.labels_key);
                if keep {
                    states.push(s);
                }
            }
        }
        // Fired at 0 while silenced: announced at 20 when the silence ended, resolved at 30.
        // Fired again at 40 (announced); resolved at 60 inside a new silence: not sent.
        assert_eq!(
            sent,
            vec![
                (20.0, "firing".to_owned()),
                (30.0, "resolved".to_owned()),
                (40.0, "firing".to_owned())
            ]
        );
    }

    #[test]
    fn renotifies_while_firing() {
        let mut rule = RuleConfig::new("lag", RuleKind::ReplicationLag);
        rule.renotify_every = Some(Dur::secs(60));
        let seq: Vec<(f64, Option<Observation>)> = (0..=13)
            .map(|i| (i as f64 * 10.0, Some(obs(true, 9.0))))
            .collect();
        let events: Vec<String> = run(&rule, &seq).into_iter().map(|(_, e)| e).collect();
        assert_eq!(events, ["firing", "renotify", "renotify"]);
    }
}

//! Alerting: rules evaluated every few seconds over aggregates and the latest samples, state in
//! PostgreSQL, notifications through an outbox, one leader among collectors.
//!
//! - [`config`]: the `[alerts]` section, default rules, secrets from the environment.
//! - [`rules`]: measuring a rule's instances.
//! - [`engine`]: the pending → firing → resolving → resolved state machine.
//! - [`notify`]: Slack and webhook delivery with retries and rate limits.

pub mod config;
pub mod engine;
pub mod metric_rule;
pub mod notify;
pub mod observation;
pub mod rules;
pub mod threads;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use stormwatch_store::alerts::{AlertState, LeaderLock, SilenceRow, Term, Transition};
use stormwatch_store::signals::Labels;
use stormwatch_store::{Store, StoreError};

use config::{parse_daily, Resolved, SilenceConfig};

/// How often a follower tries to become the leader (and a leader that has lost leadership
/// waits before it tries again, so that the new leader keeps it).
const LEADER_RETRY: Duration = Duration::from_secs(2);
/// How often the leader delivers due notifications.
const DELIVER_EVERY: Duration = Duration::from_millis(500);

/// The live alerting state of one collector.
pub struct AlertsRuntime {
    config: RwLock<Arc<Resolved>>,
    /// Added to the wall clock by the evaluator (tests move time forward with it).
    clock_offset_ns: AtomicI64,
    leader: AtomicBool,
    /// This collector's name in `sw_alert_leader` (host, process, a random part).
    holder: String,
    /// Tests only: while true, an evaluation that has transitions to write waits before
    /// writing them (a leader stalled mid-round, as by a long pause).
    hold: tokio::sync::watch::Sender<bool>,
    /// True while an evaluation waits because of `hold`.
    held: AtomicBool,
    /// When this collector started listening (wall clock, Unix seconds): an agent's silence is
    /// counted from here at the earliest, since nothing could be heard while it was down.
    started_s: f64,
    enabled: bool,
    /// What rules keep between rounds: latency baselines (computed once a minute per rule)
    /// and the recent aggregates read so far (the evaluation holds it).
    cache: tokio::sync::Mutex<rules::RuleCache>,
    pub http: reqwest::Client,
    limiter: notify::RateLimiter,
}

impl AlertsRuntime {
    pub fn new(config: Resolved, enabled: bool) -> Self {
        AlertsRuntime {
            config: RwLock::new(Arc::new(config)),
            clock_offset_ns: AtomicI64::new(0),
            leader: AtomicBool::new(false),
            holder: holder_name(),
            hold: tokio::sync::watch::channel(false).0,
            held: AtomicBool::new(false),
            started_s: stormwatch_model::now_ns() as f64 / 1e9,
            enabled,
            cache: tokio::sync::Mutex::new(rules::RuleCache::default()),
            http: reqwest::Client::builder()
                .user_agent("stormwatch-collector")
                .build()
                .unwrap_or_default(),
            limiter: notify::RateLimiter::default(),
        }
    }

    /// The rules and channels in force.
    pub fn config(&self) -> Arc<Resolved> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the rules and channels (hot reload).
    pub fn set_config(&self, config: Resolved) {
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The evaluator's clock, Unix seconds.
    pub fn now_s(&self) -> f64 {
        (stormwatch_model::now_ns() + self.clock_offset_ns.load(Ordering::Relaxed)) as f64 / 1e9
    }

    /// Moves the evaluator's clock (tests only need this; production never calls it).
    pub fn shift_clock(&self, by: Duration) {
        self.clock_offset_ns
            .fetch_add(by.as_nanos() as i64, Ordering::Relaxed);
    }

    /// True while this collector believes it is the alert leader.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }

    /// This collector's name as the alert leader.
    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// Tests only: `true` makes the next evaluation that has something to write wait just
    /// before writing it, until `false` (a leader that stalls in the middle of a round).
    pub fn hold_before_writing(&self, hold: bool) {
        self.hold.send_replace(hold);
    }

    /// True while an evaluation waits because of [`Self::hold_before_writing`].
    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::Relaxed)
    }

    async fn held_here(&self) {
        let mut hold = self.hold.subscribe();
        if !*hold.borrow_and_update() {
            return;
        }
        self.held.store(true, Ordering::Relaxed);
        while *hold.borrow_and_update() {
            if hold.changed().await.is_err() {
                break;
            }
        }
        self.held.store(false, Ordering::Relaxed);
    }
}

/// `host pid/random`: unique among the collectors of one database, readable in
/// `sw_alert_leader` and `sw_notifications.claimed_by`.
fn holder_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into());
    format!("{host} {}/{:08x}", std::process::id(), fastrand::u32(..))
}

/// True when a config or dashboard silence covers `rule` with `labels` at `now`.
pub fn is_silenced(
    config: &[SilenceConfig],
    db: &[SilenceRow],
    rule: &str,
    labels: &Labels,
    now: f64,
) -> bool {
    let matches = |r: &Option<String>, l: &Labels| {
        r.as_ref().is_none_or(|r| r == rule) && l.iter().all(|(k, v)| labels.get(k) == Some(v))
    };
    let in_config = config.iter().any(|s| {
        if !matches(&s.rule, &s.labels) {
            return false;
        }
        if let Some(daily) = &s.daily {
            let Ok((a, b)) = parse_daily(daily) else {
                return false;
            };
            let t = (now.rem_euclid(86_400.0)) as u32;
            return if a <= b {
                (a..b).contains(&t)
            } else {
                t >= a || t < b
            };
        }
        let parse = |v: &Option<String>| {
            v.as_ref()
                .and_then(|v| {
                    time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|t| t.unix_timestamp() as f64)
        };
        matches!((parse(&s.from), parse(&s.to)), (Some(f), Some(t)) if f <= now && now < t)
    });
    in_config || db.iter().any(|s| matches(&s.rule, &s.labels))
}

/// One evaluation round: every rule, then the transitions in one transaction, written only if
/// `term` is still the leader's ([`StoreError::Fenced`] otherwise), then incidents
/// ([`crate::incidents::group_once`]).
pub async fn evaluate_once(
    store: &Store,
    rt: &AlertsRuntime,
    term: &Term,
    metrics: &crate::metrics::Metrics,
) -> Result<usize, StoreError> {
    let cfg = rt.config();
    let now = rt.now_s();
    let states = store.alert_states().await?;
    let silences = store.active_silences(now).await?;
    let mut transitions: Vec<Transition> = Vec::new();
    let mut cache = rt.cache.lock().await;
    // Once a minute, the leader drops recent aggregates no rule can read any more.
    if cache.take_minute_chore(now) {
        if let Err(error) = store.prune_recent(now).await {
            tracing::warn!(%error, "pruning recent aggregates failed");
        }
    }
    // What arrived since the last round, for the rules over the last seconds. A rule whose
    // window the cache cannot answer (it failed to refresh) reads its window itself.
    let horizon = rules::cached_horizon_s(&cfg.rules);
    if horizon > 0 {
        match store.refresh_recent(&mut cache.recent, horizon, now).await {
            Ok(r) => {
                metrics.alert_recent_rows.inc_by(r.rows);
            }
            Err(error) => tracing::warn!(%error, "reading the recent aggregates failed"),
        }
    }
    for rule in &cfg.rules {
        let observations = match rules::evaluate(store, &mut cache, rule, now, rt.started_s).await {
            Ok(o) => o,
            // A rule that cannot be evaluated keeps its state: never resolve on missing data
            // caused by our own error.
            Err(error) => {
                tracing::warn!(rule = %rule.name, %error, "alert rule evaluation failed");
                continue;
            }
        };
        let existing: Vec<AlertState> = states
            .iter()
            .filter(|s| s.rule == rule.name)
            .cloned()
            .collect();
        let channels: Vec<String> = match &rule.channels {
            Some(c) => c.clone(),
            None => cfg.channels.iter().map(|c| c.name.clone()).collect(),
        };
        let silenced = |r: &str, l: &Labels, t: f64| is_silenced(&cfg.silences, &silences, r, l, t);
        transitions.extend(engine::step(
            rule,
            &observations,
            &existing,
            now,
            &channels,
            &silenced,
        ));
    }
    // Instances of rules that were removed from the config end quietly.
    for s in states
        .iter()
        .filter(|s| !cfg.rules.iter().any(|r| r.name == s.rule))
    {
        transitions.push(Transition::Remove(s.clone(), None));
    }
    let n = transitions.len();
    if n > 0 {
        rt.held_here().await;
    }
    store
        .apply_transitions(term, &transitions, &format!("{:.0}", now * 1000.0), now)
        .await?;
    // Then the firing alerts are grouped into incidents, before this round's notifications
    // are delivered (they carry their incident). A failure other than fencing leaves the
    // alerts as they are: grouping catches up next round.
    match crate::incidents::group_once(store, &cfg.rules, term, now).await {
        // A cause that changed is told in the incidents' Slack heads at once.
        Ok(recaused) => {
            for id in recaused {
                notify::refresh_heads(store, &cfg, &rt.http, id).await;
            }
        }
        Err(e @ StoreError::Fenced { .. }) => return Err(e),
        Err(error) => tracing::warn!(%error, "grouping alerts into incidents failed"),
    }
    Ok(n)
}

/// Becomes the alert leader if allowed (see [`Store::take_leadership`]): with the advisory
/// lock when it is free, else only once the leader's lease has passed.
async fn try_lead(
    store: &Store,
    rt: &AlertsRuntime,
) -> Result<Option<(Term, Option<LeaderLock>)>, StoreError> {
    let lease = rt.config().leader_lease.0;
    let lock = store.try_leader_lock().await?;
    let term = store
        .take_leadership(&rt.holder, lease, lock.is_some())
        .await?;
    // A lock that does not make us the leader (the leader took over by lease and does not
    // hold it) is released at once, so that the leader can take it.
    Ok(term.map(|t| (t, lock)))
}

/// Checks the lock (taking it if the leader lacks it) and renews the lease.
async fn keep_leading(
    store: &Store,
    rt: &AlertsRuntime,
    term: &Term,
    lock: &mut Option<LeaderLock>,
) -> Result<(), String> {
    match lock {
        Some(l) => {
            if !l.still_held().await {
                return Err("lost the advisory lock's connection".into());
            }
        }
        None => {
            if let Ok(Some(l)) = store.try_leader_lock().await {
                *lock = Some(l);
            }
        }
    }
    match store
        .renew_leadership(term, rt.config().leader_lease.0, lock.is_some())
        .await
    {
        Ok(()) => Ok(()),
        Err(e @ StoreError::Fenced { .. }) => Err(e.to_string()),
        // The database is unreachable: so are our writes. Leadership is lost only when
        // another collector takes it (our next write is then fenced).
        Err(error) => {
            tracing::warn!(%error, "alerting: could not renew the leader lease");
            Ok(())
        }
    }
}

/// What a leader round ran into: go on, or stop leading (with why).
fn step_down_on(result: Result<usize, StoreError>, what: &str) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(e @ StoreError::Fenced { .. }) => Some(e.to_string()),
        Err(error) => {
            tracing::warn!(%error, "alert {what} failed");
            None
        }
    }
}

/// Runs alerting until the task is dropped: waits for leadership, then evaluates and delivers.
///
/// `shutdown` turning true stops it between steps — never halfway through a delivery, so a
/// message that went out is always recorded as sent.
pub async fn run(app: Arc<crate::AppState>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let (store, rt, metrics) = (&app.store, &app.alerts, &app.metrics);
    if !rt.enabled {
        tracing::info!("alerting is disabled ([alerts] enabled = false)");
        return;
    }
    let mut wait_first = false;
    loop {
        if wait_first {
            tokio::select! {
                _ = tokio::time::sleep(LEADER_RETRY) => {}
                _ = shutdown.changed() => {}
            }
        }
        wait_first = true;
        if *shutdown.borrow() {
            return;
        }
        let (term, mut lock) = match try_lead(store, rt).await {
            Ok(Some(led)) => led,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, "alerting: could not reach the database for leader election");
                continue;
            }
        };
        rt.leader.store(true, Ordering::Relaxed);
        metrics.alert_leader.set(1);
        tracing::info!(
            epoch = term.epoch,
            advisory_lock = lock.is_some(),
            "this collector is now the alert leader"
        );
        let mut next_eval = tokio::time::Instant::now();
        let mut renewed = tokio::time::Instant::now();
        let mut deliver = tokio::time::interval(DELIVER_EVERY);
        let stopped = loop {
            // Work happens in the branch bodies, which shutdown does not interrupt.
            tokio::select! {
                _ = shutdown.changed() => break None,
                _ = tokio::time::sleep_until(next_eval) => {
                    if let Err(why) = keep_leading(store, rt, &term, &mut lock).await {
                        break Some(why);
                    }
                    renewed = tokio::time::Instant::now();
                    let evaluated = evaluate_once(store, rt, &term, metrics).await;
                    if evaluated.is_ok() {
                        metrics.alert_evaluations.inc();
                    }
                    if let Some(why) = step_down_on(evaluated, "evaluation") {
                        break Some(why);
                    }
                    next_eval = tokio::time::Instant::now() + rt.config().evaluate_every.0;
                    // Deliver right away what this round decided.
                    let cfg = rt.config();
                    let delivered = notify::deliver_due(store, &term, &cfg, &rt.http, &rt.limiter, metrics, rt.now_s()).await;
                    if let Some(why) = step_down_on(delivered, "delivery round") {
                        break Some(why);
                    }
                }
                _ = deliver.tick() => {
                    // Rounds may be further apart than the lease allows.
                    if renewed.elapsed() > rt.config().leader_lease.0 / 3 {
                        if let Err(why) = keep_leading(store, rt, &term, &mut lock).await {
                            break Some(why);
                        }
                        renewed = tokio::time::Instant::now();
                    }
                    let cfg = rt.config();
                    let delivered = notify::deliver_due(store, &term, &cfg, &rt.http, &rt.limiter, metrics, rt.now_s()).await;
                    if let Some(why) = step_down_on(delivered, "delivery round") {
                        break Some(why);
                    }
                    if let Ok(c) = store.delivery_counts().await {
                        metrics.alert_deliveries_failed.set(c.failed);
                    }
                }
            }
        };
        rt.leader.store(false, Ordering::Relaxed);
        metrics.alert_leader.set(0);
        match stopped {
            None => {
                // A follower need not wait for the lease (nor get the lock) to take over.
                if let Err(error) = store.resign_leadership(&term).await {
                    tracing::warn!(%error, "alerting: could not end the leader lease");
                }
                drop(lock);
                return;
            }
            Some(why) => {
                drop(lock);
                tracing::warn!(epoch = term.epoch, reason = %why, "no longer the alert leader; trying again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silences_by_rule_labels_and_daily_window() {
        let s = SilenceConfig {
            rule: Some("db-connect-failures".into()),
            labels: [("database".to_owned(), "primary".to_owned())].into(),
            from: None,
            to: None,
            daily: Some("02:00-02:30".into()),
            comment: "nightly backup".into(),
        };
        let primary: Labels = [("database".to_owned(), "primary".to_owned())].into();
        let replica: Labels = [("database".to_owned(), "replica".to_owned())].into();
        let at =
            |h: f64, m: f64| 1_790_000_000.0 - 1_790_000_000.0 % 86_400.0 + h * 3_600.0 + m * 60.0;
        assert!(is_silenced(
            std::slice::from_ref(&s),
            &[],
            "db-connect-failures",
            &primary,
            at(2.0, 10.0)
        ));
        assert!(!is_silenced(
            std::slice::from_ref(&s),
            &[],
            "db-connect-failures",
            &primary,
            at(2.0, 31.0)
        ));
        assert!(!is_silenced(
            std::slice::from_ref(&s),
            &[],
            "db-connect-failures",
            &replica,
            at(2.0, 10.0)
        ));
        assert!(!is_silenced(
            std::slice::from_ref(&s),
            &[],
            "replica-lag",
            &primary,
            at(2.0, 10.0)
        ));
    }
}

//! The incident scenario: a day of the board's life on a scenario clock, with the outage's
//! incidents injected into the real servers at their times of day.
//!
//! | time  | what is injected                                                            |
//! |-------|-----------------------------------------------------------------------------|
//! | 08:15 | Redis slows down: `DEBUG SLEEP` in a loop blocks it for most of every second |
//! | 08:55 | the replica's replay is paused (`pg_wal_replay_pause()`): lag grows         |
//! | 09:30 | the partner answers slowly (`PUT /admin/delay`)                              |
//! | 10:00 | the primary refuses new connections (its `max_connections` are taken)        |
//! | 10:50 | uploads flood their endpoint (its limiter answers 503)                      |
//!
//! Each incident ends after a while (see [`incidents`]). Traffic follows a morning peak.
//! `--clock fast` runs the day 30× faster and starts it at 08:05, so the first incident is
//! 20 s away; after 11:30 the night is skipped and the next day starts at 08:05.
//! `--clock real` follows the wall clock (UTC): the incidents happen at those times of day.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::stack::{postgres, redis};

/// Seconds in a day.
pub const DAY: f64 = 86_400.0;

/// `HH:MM` as seconds of the day.
pub const fn hm(h: u32, m: u32) -> f64 {
    (h * 3600 + m * 60) as f64
}

/// How scenario time relates to real time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockMode {
    /// Scenario time is the UTC wall clock.
    Real,
    /// Scenario time runs this many times faster than real time, starting at 08:05 on day 1.
    Speed(f64),
}

impl std::str::FromStr for ClockMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "real" => Ok(ClockMode::Real),
            "fast" => Ok(ClockMode::Speed(FAST)),
            other => other
                .strip_suffix('x')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| *n >= 1.0 && *n <= 1000.0)
                .map(ClockMode::Speed)
                .ok_or_else(|| {
                    format!("`{other}`: use fast ({FAST}x), real, or a speed like 60x (1 to 1000)")
                }),
        }
    }
}

/// The demo's fast clock: a scenario minute every 2 s.
pub const FAST: f64 = 30.0;

/// Where fast clocks start each day: ten minutes before the first incident.
pub const DAY_START: f64 = hm(8, 5);
/// Where fast clocks end each day (then the night is skipped).
pub const DAY_END: f64 = hm(11, 30);

/// The scenario clock: scenario seconds since day 1, 00:00.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_real: std::time::Instant,
    anchor_sim: f64,
    speed: f64,
}

impl Clock {
    pub fn new(mode: ClockMode) -> Clock {
        match mode {
            ClockMode::Real => {
                let now = unix_ms() as f64 / 1000.0;
                Clock {
                    anchor_real: std::time::Instant::now(),
                    anchor_sim: DAY + now.rem_euclid(DAY),
                    speed: 1.0,
                }
            }
            ClockMode::Speed(speed) => Clock {
                anchor_real: std::time::Instant::now(),
                anchor_sim: DAY + DAY_START,
                speed,
            },
        }
    }

    /// Scenario seconds since day 1, 00:00 (so `now() / DAY` is the day number).
    pub fn now(&self) -> f64 {
        self.anchor_sim + self.anchor_real.elapsed().as_secs_f64() * self.speed
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    /// Real time until scenario time `sim` (zero if it is past).
    pub fn real_until(&self, sim: f64) -> Duration {
        Duration::from_secs_f64(((sim - self.now()) / self.speed).max(0.0))
    }

    /// Jumps to scenario time `sim` (skipping the night of a fast clock).
    pub fn jump(&mut self, sim: f64) {
        self.anchor_real = std::time::Instant::now();
        self.anchor_sim = sim;
    }

    /// The real Unix time (ms) at which scenario time `sim` happens, if the clock does not jump.
    pub fn unix_ms_at(&self, sim: f64) -> i64 {
        unix_ms() + ((sim - self.now()) / self.speed * 1000.0) as i64
    }
}

/// `day 2 08:15`
pub fn label(sim: f64) -> String {
    let day = (sim / DAY).floor() as i64;
    let s = sim.rem_euclid(DAY) as i64;
    format!("day {day} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The traffic multiplier at time of day `tod` (seconds): the morning peak.
pub fn traffic_shape(tod: f64) -> f64 {
    const POINTS: [(f64, f64); 9] = [
        (hm(0, 0), 0.05),
        (hm(6, 0), 0.1),
        (hm(7, 30), 0.5),
        (hm(8, 0), 0.8),
        (hm(8, 30), 1.0),
        (hm(10, 45), 1.0),
        (hm(12, 0), 0.6),
        (hm(18, 0), 0.4),
        (hm(24, 0), 0.05),
    ];
    for w in POINTS.windows(2) {
        let ((t0, v0), (t1, v1)) = (w[0], w[1]);
        if tod >= t0 && tod <= t1 {
            return v0 + (v1 - v0) * (tod - t0) / (t1 - t0);
        }
    }
    0.05
}

/// One kind of incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    RedisSlow,
    ReplicaPaused,
    PartnerSlow,
    PrimaryRefuses,
    UploadsOverload,
}

impl Kind {
    /// A stable name (logs, tests).
    pub fn name(self) -> &'static str {
        match self {
            Kind::RedisSlow => "redis-slow",
            Kind::ReplicaPaused => "replica-paused",
            Kind::PartnerSlow => "partner-slow",
            Kind::PrimaryRefuses => "primary-refuses",
            Kind::UploadsOverload => "uploads-overload",
        }
    }

    /// The alerts that must fire for it, from the default rules: (rule, text its labels
    /// hold — the peer, database or endpoint it must name).
    pub fn alerts(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::RedisSlow => &[
                ("dependency-latency", crate::config::CACHE_NAME),
                ("http-5xx-rate", crate::config::LIST_OPERATION),
            ],
            Kind::ReplicaPaused => &[
                ("replica-lag", "board-replica"),
                ("full-scan", "board-replica"),
            ],
            Kind::PartnerSlow => &[("dependency-latency", "partner (http")],
            Kind::PrimaryRefuses => &[("db-connect-failures", "board-primary")],
            Kind::UploadsOverload => &[("http-5xx-rate", crate::config::UPLOAD_OPERATION)],
        }
    }

    /// What its incident's first-ranked probable cause must name: the injected fault.
    pub fn culprit(self) -> &'static str {
        match self {
            Kind::RedisSlow => crate::config::CACHE_NAME,
            Kind::ReplicaPaused => "board-replica",
            Kind::PartnerSlow => "partner",
            Kind::PrimaryRefuses => "board-primary",
            Kind::UploadsOverload => crate::config::UPLOAD_OPERATION,
        }
    }

    /// The endpoint the fault slows, which the cause line must name: the list page waits on
    /// the cache; the partner is called by the timetable only, though the board's busier
    /// endpoints slow too (its limiter fills).
    pub fn slowed_operation(self) -> Option<&'static str> {
        match self {
            Kind::RedisSlow => Some(crate::config::LIST_OPERATION),
            Kind::PartnerSlow => Some("GET /timetable"),
            _ => None,
        }
    }

    /// Alerts that may fire during it, or as it recovers, without being required: the board's
    /// pages share one limiter, so pages waiting on the slow cache or the slow partner can fill
    /// it for the other pages too (new posts answered 503 2.4 s after the cache recovered);
    /// when the primary takes connections again, the new posts that queued for the board's
    /// pool can fill the limiter for a few seconds (seen 13 s after the refusal's end).
    pub fn side_effects(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Kind::RedisSlow => &[("http-5xx-rate", "POST /classes/{code}/posts")],
            Kind::PartnerSlow => &[
                ("http-5xx-rate", crate::config::LIST_OPERATION),
                ("http-5xx-rate", "POST /classes/{code}/posts"),
            ],
            Kind::PrimaryRefuses => &[("http-5xx-rate", "POST /classes/{code}/posts")],
            _ => &[],
        }
    }

    /// True for an alert that follows from the fault rather than shows it: the lost WHERE
    /// comes only once the replica is behind and the board wrote what it lacks, seconds after
    /// replay paused.
    pub fn is_consequence(self, rule: &str) -> bool {
        self == Kind::ReplicaPaused && rule == "full-scan"
    }

    /// What is injected, for the log.
    pub fn what(self) -> &'static str {
        match self {
            Kind::RedisSlow => "Redis slows down: `DEBUG SLEEP 1.5` in a loop (every cache call waits up to 1.5 s) → list pages slow → the board's limiter answers 503",
            Kind::ReplicaPaused => "the replica's replay is paused (`SELECT pg_wal_replay_pause()`) → lag grows → new classes are missing there → the list query loses its WHERE (full scans)",
            Kind::PartnerSlow => "the partner service slows down (`PUT /admin/delay?ms=1500`) → GET /timetable waits on it",
            Kind::PrimaryRefuses => "the primary refuses new connections: every slot of its max_connections is taken (\"sorry, too many clients already\")",
            Kind::UploadsOverload => "uploads flood POST /uploads (16 clients posting 1 MiB in a loop) → its limiter answers 503",
        }
    }

    /// What ends, for the log.
    pub fn end(self) -> &'static str {
        match self {
            Kind::RedisSlow => "Redis is fast again (the DEBUG SLEEP loop stops)",
            Kind::ReplicaPaused => "the replica's replay resumes (`SELECT pg_wal_replay_resume()`)",
            Kind::PartnerSlow => "the partner is fast again (`PUT /admin/delay?ms=20`)",
            Kind::PrimaryRefuses => "the primary's connection slots are released",
            Kind::UploadsOverload => "the upload flood stops",
        }
    }
}

/// One incident of the day: from and until (time of day, seconds).
#[derive(Debug, Clone, Copy)]
pub struct Incident {
    pub kind: Kind,
    pub from: f64,
    pub until: f64,
}

/// The day's incidents, in order; they do not overlap.
pub fn incidents() -> Vec<Incident> {
    let i = |kind, from, until| Incident { kind, from, until };
    vec![
        i(Kind::RedisSlow, hm(8, 15), hm(8, 45)),
        i(Kind::ReplicaPaused, hm(8, 55), hm(9, 20)),
        i(Kind::PartnerSlow, hm(9, 30), hm(9, 50)),
        i(Kind::PrimaryRefuses, hm(10, 0), hm(10, 12)),
        i(Kind::UploadsOverload, hm(10, 50), hm(11, 10)),
    ]
}

/// Something the scenario did, as it happened.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: Kind,
    /// `true` at onset, `false` at the end.
    pub start: bool,
    /// Real time it was injected (after the injection took effect), Unix ms.
    pub at_ms: i64,
    /// Scenario time.
    pub sim: f64,
}

/// What the scenario shares with the traffic and the caller.
#[derive(Clone)]
pub struct Shared {
    pub clock: Arc<Mutex<Clock>>,
    pub events: Arc<Mutex<Vec<Event>>>,
    /// True while uploads flood (the traffic generator runs the flood).
    pub uploads_flood: watch::Sender<bool>,
}

impl Shared {
    pub fn new(mode: ClockMode) -> Shared {
        Shared {
            clock: Arc::new(Mutex::new(Clock::new(mode))),
            events: Arc::new(Mutex::new(Vec::new())),
            uploads_flood: watch::channel(false).0,
        }
    }

    pub fn clock(&self) -> Clock {
        *self.clock.lock().expect("clock")
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().expect("events").clone()
    }
}

/// What the scenario injects faults into.
#[derive(Debug, Clone)]
pub struct Targets {
    pub redis_port: u16,
    /// Superuser connection strings of the app's primary and replica.
    pub primary_admin: String,
    pub replica_admin: String,
    /// `http://…` of the partner service.
    pub partner_url: Option<String>,
}

impl Targets {
    /// The running stack's servers.
    pub fn of(stack: &crate::stack::Stack) -> Targets {
        Targets {
            redis_port: stack.opts.redis_port,
            primary_admin: stack.dbs.primary.connection_string("postgres"),
            replica_admin: stack.dbs.replica.connection_string("postgres"),
            partner_url: stack.partner_url.clone(),
        }
    }
}

/// The connections and tasks that keep an incident going.
#[derive(Default)]
struct Injected {
    redis_loop: Option<tokio::task::JoinHandle<()>>,
    held: Vec<tokio_postgres::Client>,
    grabber: Option<tokio::task::JoinHandle<Vec<tokio_postgres::Client>>>,
    stop_grabbing: Option<tokio::sync::oneshot::Sender<()>>,
}

/// A scenario that is stopped (aborted at shutdown) stops its injections with it: a spawned
/// task outlives its handle otherwise, and would go on slowing a Redis that is being stopped.
impl Drop for Injected {
    fn drop(&mut self) {
        if let Some(l) = &self.redis_loop {
            l.abort();
        }
        if let Some(g) = &self.grabber {
            g.abort();
        }
    }
}

/// Runs the scenario until `days` days are done (`None`: forever).
pub async fn run(stack: Targets, shared: Shared, days: Option<u32>) -> anyhow::Result<()> {
    let mode_fast = shared.clock().speed() > 1.0;
    let mut done_days = 0;
    loop {
        let today = (shared.clock().now() / DAY).floor() * DAY;
        for inc in incidents() {
            let from = today + inc.from;
            let until = today + inc.until;
            if shared.clock().now() > from {
                if !mode_fast {
                    continue; // already past (a real clock started late in the day)
                }
                // A compressed day always starts before its incidents; if this one is
                // nevertheless late (a starved machine), it still happens, late, and says so.
                tracing::warn!(target: "scenario", "[{}] {} starts late", label(shared.clock().now()), inc.kind.name());
            }
            sleep_until(&shared, from).await;
            let mut injected = Injected::default();
            inject(&stack, &shared, inc.kind, &mut injected)
                .await
                .with_context(|| format!("injecting {}", inc.kind.name()))?;
            record(&shared, inc.kind, true, from);
            say(from, &format!("▶ {}", inc.kind.what()));
            sleep_until(&shared, until).await;
            end(&stack, &shared, inc.kind, injected).await;
            record(&shared, inc.kind, false, until);
            say(until, &format!("■ {}", inc.kind.end()));
        }
        done_days += 1;
        if days.is_some_and(|d| done_days >= d) {
            return Ok(());
        }
        if mode_fast {
            sleep_until(&shared, today + DAY_END).await;
            let next = today + DAY + DAY_START;
            shared.clock.lock().expect("clock").jump(next);
            say(next, "the night is skipped; a new day starts");
        } else {
            sleep_until(&shared, today + DAY).await;
        }
    }
}

fn say(sim: f64, what: &str) {
    tracing::info!(target: "scenario", "[{}] {what}", label(sim));
}

fn record(shared: &Shared, kind: Kind, start: bool, sim: f64) {
    shared.events.lock().expect("events").push(Event {
        kind,
        start,
        at_ms: unix_ms(),
        sim,
    });
}

async fn sleep_until(shared: &Shared, sim: f64) {
    loop {
        let wait = shared.clock().real_until(sim);
        if wait.is_zero() {
            return;
        }
        // Re-read the clock now and then: it may jump.
        tokio::time::sleep(wait.min(Duration::from_secs(5))).await;
    }
}

async fn inject(
    stack: &Targets,
    shared: &Shared,
    kind: Kind,
    injected: &mut Injected,
) -> anyhow::Result<()> {
    match kind {
        Kind::RedisSlow => {
            let port = stack.redis_port;
            let mut conn = redis::Conn::open(port).await?;
            injected.redis_loop = Some(tokio::spawn(async move {
                loop {
                    if let Err(error) = conn.call(&["DEBUG", "SLEEP", "1.5"]).await {
                        tracing::warn!(%error, "DEBUG SLEEP failed; Redis is no longer slowed");
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }));
        }
        Kind::ReplicaPaused => {
            let c = postgres::connect(&stack.replica_admin).await?;
            c.batch_execute("SELECT pg_wal_replay_pause()").await?;
        }
        Kind::PartnerSlow => set_partner_delay(stack, 1500).await?,
        Kind::PrimaryRefuses => {
            let conn = stack.primary_admin.clone();
            // Take every free slot, then keep taking the ones that free up.
            injected.held = take_slots(&conn, 200).await;
            tracing::info!(target: "scenario", held = injected.held.len(), "primary connection slots taken");
            let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
            injected.stop_grabbing = Some(stop);
            injected.grabber = Some(tokio::spawn(async move {
                let mut more = Vec::new();
                loop {
                    tokio::select! {
                        _ = &mut stopped => return more,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {
                            more.extend(take_slots(&conn, 20).await);
                        }
                    }
                }
            }));
        }
        Kind::UploadsOverload => {
            shared.uploads_flood.send_replace(true);
        }
    }
    Ok(())
}

async fn end(stack: &Targets, shared: &Shared, kind: Kind, mut injected: Injected) {
    let result: anyhow::Result<()> = async {
        match kind {
            Kind::RedisSlow => {
                if let Some(l) = injected.redis_loop.take() {
                    l.abort();
                    let _ = l.await;
                }
                // The DEBUG SLEEP in progress finishes by itself.
            }
            Kind::ReplicaPaused => {
                let c = postgres::connect(&stack.replica_admin).await?;
                c.batch_execute("SELECT pg_wal_replay_resume()").await?;
            }
            Kind::PartnerSlow => set_partner_delay(stack, 20).await?,
            Kind::PrimaryRefuses => {
                if let Some(stop) = injected.stop_grabbing.take() {
                    let _ = stop.send(());
                }
                if let Some(g) = injected.grabber.take() {
                    drop(g.await.unwrap_or_default());
                }
                drop(std::mem::take(&mut injected.held));
            }
            Kind::UploadsOverload => {
                shared.uploads_flood.send_replace(false);
            }
        }
        Ok(())
    }
    .await;
    if let Err(error) = result {
        tracing::warn!(%error, incident = kind.name(), "ending the incident failed");
    }
}

/// Opens up to `max` superuser connections; stops at the first refusal.
async fn take_slots(conn: &str, max: usize) -> Vec<tokio_postgres::Client> {
    let mut held = Vec::new();
    while held.len() < max {
        match tokio_postgres::connect(conn, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                held.push(client);
            }
            Err(_) => break,
        }
    }
    held
}

async fn set_partner_delay(stack: &Targets, ms: u32) -> anyhow::Result<()> {
    let Some(url) = &stack.partner_url else {
        return Ok(());
    };
    let r = reqwest::Client::new()
        .put(format!("{url}/admin/delay?ms={ms}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    anyhow::ensure!(
        r.status().is_success(),
        "partner /admin/delay answered {}",
        r.status()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_modes_parse() {
        assert_eq!("fast".parse::<ClockMode>(), Ok(ClockMode::Speed(FAST)));
        assert_eq!("real".parse::<ClockMode>(), Ok(ClockMode::Real));
        assert_eq!("120x".parse::<ClockMode>(), Ok(ClockMode::Speed(120.0)));
        assert!("0.5x".parse::<ClockMode>().is_err());
        assert!("slow".parse::<ClockMode>().is_err());
    }

    #[test]
    fn the_day_is_in_order_and_peaks_in_the_morning() {
        let day = incidents();
        for w in day.windows(2) {
            assert!(w[0].from < w[0].until && w[0].until < w[1].from);
        }
        assert!(day[0].from > DAY_START && day.last().unwrap().until < DAY_END);
        assert!(traffic_shape(hm(9, 0)) > 0.99);
        assert!(traffic_shape(hm(3, 0)) < 0.1);
        assert_eq!(label(DAY + hm(8, 15)), "day 1 08:15");
    }
}

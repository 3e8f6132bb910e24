//! End to end: the incident stack (real PostgreSQL primary + replica, Redis, the board and
//! partner binaries with the OpenTelemetry SDK, one agent, the collector) replays one day of
//! the outage on a compressed clock, and Stormwatch must catch every incident:
//!
//! - with the default rules only (the demo writes none), each incident's alerts fire within
//!   10 s of its onset naming its peer, database or endpoint (as the local Slack stand-in
//!   received them) and resolve within 60 s of its end; the latencies are printed;
//! - the dashboard's HTML shows it: the overview's firing banner, the scatter's slow dots,
//!   the dependencies' Redis p95, the slow-spans flags, the databases' refusal band and the
//!   daily pattern in the heatmap, the alerts page;
//! - headless Chromium screenshots of the overview, scatter, dependencies and databases
//!   pages during the incidents go to `target/screenshots/incident-*.png` (CI output).
//!
//! The board binaries come from `cargo build -p stormwatch-board` (`cargo test --workspace`
//! builds them); `CHROMIUM` overrides `/usr/bin/chromium`; `STORMWATCH_E2E_SPEED` the clock
//! (default 60x: the day's five incidents in under three minutes).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use stormwatch_demo::scenario::{self, ClockMode, Event, Kind};
use stormwatch_demo::slack::webhook_alerts;
use stormwatch_demo::stack::StackOptions;
use stormwatch_demo::{Demo, DemoOptions};
use stormwatch_testkit::chromium;

/// An alert must arrive this soon after its incident's onset (the default rules' goal)...
const ALERT_WITHIN_MS: i64 = 10_000;
/// ...and resolve this soon after its end.
const RESOLVE_WITHIN_MS: i64 = 60_000;
/// How long after an incident's end its side effects may still fire (its recovery).
const SIDE_EFFECT_TAIL_MS: i64 = 10_000;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A screenshot of `url` (3 s of virtual time for its scripts).
fn screenshot(url: &str, shot: &Path) {
    chromium::screenshot(url, shot, 3000, &[]);
}

/// A signed-in dashboard client: the session cookie from `POST /login`.
struct Dashboard {
    base: String,
    cookie: String,
    http: reqwest::Client,
}

impl Dashboard {
    async fn login(base: &str, user: &str, password: &str) -> Dashboard {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        // Unauthenticated: the dashboard sends us to the login page.
        let r = http.get(format!("{base}/")).send().await.unwrap();
        assert!(
            r.status().is_redirection(),
            "the dashboard must need a login: {}",
            r.status()
        );
        let r = http
            .post(format!("{base}/login"))
            .form(&[("user", user), ("password", password), ("next", "/")])
            .send()
            .await
            .unwrap();
        let cookie = r
            .headers()
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with(stormwatch_web::auth::COOKIE))
            .and_then(|v| v.split(';').next())
            .unwrap_or_else(|| panic!("no session cookie after login: {}", r.status()))
            .to_owned();
        Dashboard {
            base: base.to_owned(),
            cookie,
            http,
        }
    }

    async fn page(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.text().await.unwrap()
    }
}

/// A loopback proxy that adds the session cookie, so chromium sees the signed-in pages.
async fn cookie_proxy(dashboard: &Dashboard) -> SocketAddr {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let state = (
        dashboard.base.clone(),
        dashboard.cookie.clone(),
        dashboard.http.clone(),
    );
    let app = axum::Router::new()
        .fallback(
            |State((base, cookie, http)): State<(String, String, reqwest::Client)>,
             req: Request| async move {
                let path = req
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let r = http
                    .get(format!("{base}{path}"))
                    .header(reqwest::header::COOKIE, cookie)
                    .send()
                    .await
                    .unwrap();
                let mut out = Response::builder().status(r.status().as_u16());
                for (k, v) in r.headers() {
                    if k != "transfer-encoding" && k != "connection" && k != "content-length" {
                        out = out.header(k.as_str(), v.as_bytes());
                    }
                }
                out.body(Body::from(r.bytes().await.unwrap())).unwrap()
            },
        )
        .with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    at
}

async fn wait_for_event(demo: &Demo, kind: Kind, start: bool, limit: Duration) -> Event {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(e) = demo
            .shared
            .events()
            .into_iter()
            .find(|e| e.kind == kind && e.start == start)
        {
            return e;
        }
        if let Some(s) = &demo.scenario {
            assert!(!s.is_finished(), "the scenario stopped early");
        }
        assert!(
            Instant::now() < deadline,
            "{} {} did not happen in time",
            kind.name(),
            if start { "onset" } else { "end" }
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn sleep_until_ms(unix_ms: i64) {
    let wait = unix_ms - scenario::unix_ms();
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
}

/// True when an alert of `rule` with these labels is the one `(want_rule, name)` expects.
fn is_expected(rule: &str, labels: &str, (want_rule, name): (&str, &str)) -> bool {
    rule == want_rule && labels.contains(name)
}

/// When the scenario's onset (or end) of `kind` happened, Unix ms.
fn event_ms(events: &[Event], kind: Kind, start: bool) -> i64 {
    events
        .iter()
        .find(|e| e.kind == kind && e.start == start)
        .map(|e| e.at_ms)
        .unwrap_or_else(|| panic!("no {} event", kind.name()))
}

/// The largest value of `series` in a line chart's text alternative ("<title> (<unit>). db:
/// last 2.1 ms, min 1.0 ms, max 3.2 ms; redis: last …, max 1.50 s"), in milliseconds.
fn chart_max_ms(html: &str, title: &str, series: &str) -> Option<f64> {
    let desc = html
        .split(&format!("{title} ("))
        .nth(1)?
        .split('<')
        .next()?;
    let part = desc
        .split("; ")
        .map(|p| p.split(")). ").last().unwrap_or(p))
        .find(|p| p.starts_with(&format!("{series}: ")))?;
    let max = part.split(", max ").nth(1)?;
    let mut it = max.split_whitespace();
    let n: f64 = it.next()?.parse().ok()?;
    Some(match it.next() {
        Some("s") => n * 1000.0,
        Some("µs") => n / 1000.0,
        _ => n,
    })
}

fn count(html: &str, needle: &str) -> usize {
    html.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_replayed_outage_is_caught_flagged_alerted_and_resolved() {
    let started = Instant::now();
    let speed: f64 = std::env::var("STORMWATCH_E2E_SPEED")
        .ok()
        .and_then(|s| s.trim_end_matches('x').parse().ok())
        .unwrap_or(60.0);
    // Under the system's temp dir, open to the `postgres` user PostgreSQL runs as (a clone's
    // own directories may not be); kept when the test fails (logs/ has the apps' output).
    let data_dir = tempfile::Builder::new()
        .prefix("stormwatch-incident-")
        .tempdir()
        .unwrap()
        .keep();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    println!("data dir: {}", data_dir.display());
    let opts = DemoOptions {
        stack: StackOptions {
            data_dir: data_dir.clone(),
            listen: addr(),
            otlp_http: addr().to_string(),
            otlp_grpc: String::new(),
            zipkin: String::new(),
            agent_admin: addr().to_string(),
            slack_listen: addr(),
            primary_port: free_port(),
            replica_port: free_port(),
            redis_port: free_port(),
            board_listen: addr(),
            partner_listen: addr(),
            bin_dir: None,
            max_concurrent: 8,
            uploads_max_concurrent: 4,
            seed_posts: 20_000,
        },
        clock: ClockMode::Speed(speed),
        incidents: true,
        peak_rps: 14.0,
        days: Some(1),
        seed_history: true,
    };
    let demo = Demo::start(opts)
        .await
        .expect("starting the incident stack");
    println!(
        "stack up in {:.1} s; clock {speed}x",
        started.elapsed().as_secs_f64()
    );
    assert!(demo.seeded.is_some(), "a fresh data dir seeds history");
    let result = tokio::spawn(run_checks(
        demo.stack.dashboard_url.clone(),
        demo.stack.login_user.clone(),
        demo.stack.login_password.clone(),
        format!("http://{}", demo.stack.slack.addr),
        demo.shared.clone(),
    ));
    // The scenario runs while the checks watch; then every alert must resolve.
    let outcome = run_scenario_checks(&demo).await;
    let checks = result.await;
    let board_exit = demo.stack.exited_app().await;
    let counters = format!(
        "traffic: {} sent, {} ok, {} answered 503, {} other errors, {} skipped",
        demo.counters
            .sent
            .load(std::sync::atomic::Ordering::Relaxed),
        demo.counters.ok.load(std::sync::atomic::Ordering::Relaxed),
        demo.counters
            .status_503
            .load(std::sync::atomic::Ordering::Relaxed),
        demo.counters
            .other_errors
            .load(std::sync::atomic::Ordering::Relaxed),
        demo.counters
            .skipped
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    demo.shutdown().await;
    println!("{counters}");
    assert!(board_exit.is_none(), "{board_exit:?}");
    if let Err(e) = &outcome {
        eprintln!("{e}");
    }
    checks.expect("dashboard checks during the incidents failed");
    outcome.unwrap_or_else(|e| panic!("{e}"));
    let _ = std::fs::remove_dir_all(&data_dir);
    println!(
        "end-to-end incident test: {:.0} s wall time",
        started.elapsed().as_secs_f64()
    );
}

/// Dashboard checks and screenshots while the incidents happen.
async fn run_checks(
    base: String,
    user: String,
    password: String,
    slack: String,
    shared: scenario::Shared,
) {
    let dash = Dashboard::login(&base, &user, &password).await;
    let proxy = cookie_proxy(&dash).await;
    let shots = chromium::screenshots_dir();
    let wait = |kind: Kind| {
        let shared = shared.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                if let Some(e) = shared
                    .events()
                    .into_iter()
                    .find(|e| e.kind == kind && e.start)
                {
                    return e;
                }
                assert!(Instant::now() < deadline, "{} never started", kind.name());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    // Redis: 12 s in, the overview shows the firing alerts, the scatter the slow requests.
    let redis = wait(Kind::RedisSlow).await;
    sleep_until_ms(redis.at_ms + 12_000).await;
    // The last five minutes (the range picker's shortest preset is 15 minutes, mostly empty
    // this early in the run).
    let last5 = format!("from={}&to={}", redis.at_ms - 240_000, redis.at_ms + 60_000);
    let overview = dash.page(&format!("/?{last5}")).await;
    assert!(
        overview.contains("id=\"firing\"") && overview.contains("dependency-latency"),
        "the overview shows the Redis alert firing"
    );
    // The overview leads with the open incident: its page (timeline, causes, map) too.
    let incident = overview
        .split("href=\"/incidents/")
        .nth(1)
        .and_then(|s| s.split(['?', '"']).next())
        .map(str::to_owned)
        .expect("the overview links the open incident");
    for (name, path) in [
        ("overview", format!("/?{last5}")),
        ("scatter", format!("/scatter?{last5}&service=board")),
        ("dependencies", format!("/dependencies?{last5}")),
        ("incident", format!("/incidents/{incident}")),
        ("map", format!("/map?{last5}")),
    ] {
        let url = format!("http://{proxy}{path}");
        let shot = shots.join(format!("incident-{name}.png"));
        tokio::task::spawn_blocking(move || screenshot(&url, &shot))
            .await
            .unwrap();
    }
    // The replica: lagging spans and full scans on the slow-spans page.
    let replica = wait(Kind::ReplicaPaused).await;
    sleep_until_ms(replica.at_ms + 12_000).await;
    let spans = dash
        .page(&format!(
            "/spans?from={}&to={}&service=board&class=db",
            replica.at_ms,
            scenario::unix_ms()
        ))
        .await;
    assert!(
        spans.contains("full-scan suspect"),
        "/spans flags the full scans"
    );
    assert!(
        spans.contains("replica ") && spans.contains(" behind"),
        "/spans flags spans through the lagging replica"
    );
    // The primary refusing: the databases page during the refusal.
    let refusal = wait(Kind::PrimaryRefuses).await;
    sleep_until_ms(refusal.at_ms + 4_000).await;
    let url = format!("http://{proxy}/databases?range=15m");
    let shot = shots.join("incident-databases.png");
    tokio::task::spawn_blocking(move || screenshot(&url, &shot))
        .await
        .unwrap();
    // The Slack page shows what arrived, as Slack would.
    let page = reqwest::get(format!("{slack}/"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("FIRING") && page.contains("Open in Stormwatch"));
    let url = format!("{slack}/");
    let shot = shots.join("incident-slack.png");
    tokio::task::spawn_blocking(move || screenshot(&url, &shot))
        .await
        .unwrap();
}

/// Waits for the scenario's day and the resolves, then checks the alerts and the pages.
async fn run_scenario_checks(demo: &Demo) -> Result<(), String> {
    let day = scenario::incidents();
    let real_day_s =
        (day.last().unwrap().until - scenario::DAY_START) / demo.shared.clock().speed();
    wait_for_event(
        demo,
        Kind::UploadsOverload,
        false,
        Duration::from_secs_f64(real_day_s + 120.0),
    )
    .await;
    let events = demo.shared.events();
    let at = |kind: Kind, start: bool| event_ms(&events, kind, start);
    // Every rule of every incident: fired after its onset (within 15 s), resolved after its end.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut report;
    let mut failures;
    loop {
        let alerts = webhook_alerts(&demo.stack.slack.messages());
        report = Vec::new();
        failures = Vec::new();
        let mut pending = false;
        for inc in &day {
            let (onset, end) = (at(inc.kind, true), at(inc.kind, false));
            for &want in inc.kind.alerts() {
                let rule = want.0;
                let fired = alerts.iter().find(|(t, r, e, _, l)| {
                    is_expected(r, l, want) && e == "firing" && *t >= onset - 1_000
                });
                let resolved = fired.and_then(|(ft, _, _, _, fl)| {
                    alerts.iter().find(|(t, r, e, _, l)| {
                        r == rule && l == fl && e == "resolved" && *t > end.max(*ft)
                    })
                });
                match fired {
                    None => {
                        pending = true;
                        failures.push(format!(
                            "{}: {rule} naming {} never fired after the onset",
                            inc.kind.name(),
                            want.1
                        ));
                    }
                    Some((t, _, _, summary, _)) => {
                        let latency = t - onset;
                        report.push(format!(
                            "{:<17} {:<20} fired {:>6.1} s after onset{}  — {summary}",
                            inc.kind.name(),
                            rule,
                            latency as f64 / 1000.0,
                            match resolved {
                                Some((r, ..)) => format!(
                                    ", resolved {:>5.1} s after the end",
                                    (r - end) as f64 / 1000.0
                                ),
                                None => String::new(),
                            }
                        ));
                        // A consequence (the full scans that follow the replica's lag) starts
                        // after the fault: it must fire while the incident lasts.
                        let limit = if inc.kind.is_consequence(rule) {
                            end - onset
                        } else {
                            ALERT_WITHIN_MS
                        };
                        if latency > limit {
                            failures.push(format!(
                                "{}: {rule} fired {latency} ms after the onset (limit {limit})",
                                inc.kind.name()
                            ));
                        }
                        if let Some((r, ..)) = resolved {
                            if r - end > RESOLVE_WITHIN_MS {
                                failures.push(format!("{}: {rule} resolved {} ms after the end (limit {RESOLVE_WITHIN_MS})", inc.kind.name(), r - end));
                            }
                        }
                    }
                }
                if resolved.is_none() {
                    pending = true;
                    failures.push(format!(
                        "{}: {rule} did not resolve after the end",
                        inc.kind.name()
                    ));
                }
            }
        }
        if !pending || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // No alert outside its incident: a rule that belongs to an incident fires only in that
    // incident's window, any other rule (the defaults: 5xx rate, agent silent...) only
    // within some incident's window — never in the calm between them, nor paged by one
    // incident's side effects on another's rule (the upload flood's CPU tripping redis-p95).
    let alerts = webhook_alerts(&demo.stack.slack.messages());
    // A side effect may also come from the recovery, up to SIDE_EFFECT_TAIL_MS later.
    let within = |t: i64, kind: Kind, tail: i64| {
        let (onset, end) = (at(kind, true), at(kind, false));
        t >= onset - 1_000 && t <= end + ALERT_WITHIN_MS + tail
    };
    for (t, rule, event, summary, labels) in alerts.iter().filter(|a| a.2 == "firing") {
        // The incidents this alert belongs to: those that expect it, or allow it as a side
        // effect (the slow partner fills the board's limiter for the list page too).
        let owners: Vec<(Kind, i64)> = day
            .iter()
            .map(|inc| inc.kind)
            .filter_map(|k| {
                let expected = |list: &[(&str, &str)]| {
                    list.iter().any(|want| is_expected(rule, labels, *want))
                };
                if expected(k.alerts()) {
                    Some((k, 0))
                } else if expected(k.side_effects()) {
                    Some((k, SIDE_EFFECT_TAIL_MS))
                } else {
                    None
                }
            })
            .collect();
        let ok = if owners.is_empty() {
            day.iter().any(|inc| within(*t, inc.kind, 0))
        } else {
            owners.iter().any(|(k, tail)| within(*t, *k, *tail))
        };
        if !ok {
            let names: Vec<&str> = owners.iter().map(|(k, _)| k.name()).collect();
            failures.push(format!(
                "{rule} {event} at {t} outside {}: {summary}",
                if names.is_empty() {
                    "every incident's window".to_owned()
                } else {
                    format!("its incidents' windows ({})", names.join(", "))
                }
            ));
        }
    }
    println!("\nspan-to-alert latency per incident (onset → webhook received):");
    for line in &report {
        println!("  {line}");
    }
    println!();
    // Passing tests' output is captured, so the figures also go beside the screenshots (CI output).
    let figures = chromium::screenshots_dir().join("incident-latency.txt");
    std::fs::write(&figures, report.join("\n") + "\n")
        .map_err(|e| format!("writing {}: {e}", figures.display()))?;
    if !failures.is_empty() {
        let all = webhook_alerts(&demo.stack.slack.messages());
        let timeline: Vec<String> = events
            .iter()
            .map(|e| {
                format!(
                    "{} {} at {}",
                    e.kind.name(),
                    if e.start { "onset" } else { "end" },
                    e.at_ms
                )
            })
            .collect();
        return Err(format!(
            "{}\nalerts received: {all:#?}\ntimeline: {timeline:#?}",
            failures.join("\n")
        ));
    }
    check_pages_after(demo, &events).await
}

/// Pages over past windows: server-rendered from the store, so they can be checked after.
async fn check_pages_after(demo: &Demo, events: &[Event]) -> Result<(), String> {
    let dash = Dashboard::login(
        &demo.stack.dashboard_url,
        &demo.stack.login_user,
        &demo.stack.login_password,
    )
    .await;
    let at = |kind: Kind, start: bool| event_ms(events, kind, start);
    // The scatter: board requests slower than 300 ms during the Redis incident, not before.
    let (onset, end) = (at(Kind::RedisSlow, true), at(Kind::RedisSlow, false));
    // As long as the incident, but no longer than the calm before it.
    let calm_ms = ((scenario::incidents()[0].from - scenario::DAY_START)
        / demo.shared.clock().speed()
        * 1000.0) as i64;
    let len = (end - onset).min(calm_ms);
    let slow_dots = |from: i64, to: i64| {
        let path = format!(
            "/scatter?from={}&to={}&service=board&class=http_server&min_ms=300",
            from, to
        );
        let dash = &dash;
        async move { count(&dash.page(&path).await, "<circle ") }
    };
    let during = slow_dots(onset + 2_000, onset + 2_000 + len).await;
    let before = slow_dots(onset - len, onset).await;
    if during < 20 || during < 4 * before.max(1) {
        return Err(format!(
            "the scatter should show the slowdown: {during} dots ≥ 300 ms during Redis's {len} ms, {before} before"
        ));
    }
    println!("scatter: {during} requests ≥ 300 ms in the Redis window, {before} in as long before");
    // Dependencies: the Redis peer's p95 over the incident is far above its threshold.
    let deps = dash
        .page(&format!("/dependencies?from={}&to={}", onset, end))
        .await;
    let redis_p95 = chart_max_ms(&deps, "p95 latency by dependency class", "redis");
    if !redis_p95.is_some_and(|ms| ms >= 500.0) {
        return Err(format!(
            "/dependencies should show Redis's p95 far above normal during the incident: {redis_p95:?} ms"
        ));
    }
    println!(
        "dependencies: Redis p95 up to {:.0} ms during the incident",
        redis_p95.unwrap_or(0.0)
    );
    // Databases: the refusal as a shaded band, and the daily pattern in the heatmap.
    let (r_on, r_end) = (
        at(Kind::PrimaryRefuses, true),
        at(Kind::PrimaryRefuses, false),
    );
    let db = dash
        .page(&format!(
            "/databases?from={}&to={}",
            r_on - 60_000,
            r_end + 60_000
        ))
        .await;
    if !db.contains("shaded failure window") {
        return Err("/databases shows no refusal band for the primary".into());
    }
    // The heatmap's cell of the live refusal's 5-minute slice: failures on this day and on
    // the six seeded days before it (cell titles: "2026-11-25 10:00 UTC: 12 of 30 probes failed").
    // The live refusal (12 s of real time, probed every second) may straddle a 5-minute
    // boundary; the seeded ones start at the same instant, probed every 10 s of the minute's
    // grid, so a column holding only a few seconds of both may hold no seeded probe (a
    // column picked 6 s after the onset once held none). One of the columns it touches holds
    // both: the one after the boundary starts with a seeded probe, the one before holds one
    // when the boundary is 10 s or more after the onset — else the one after holds more than
    // 2 s of the live refusal.
    let failing_days = |column: &str| {
        db.split("<title>")
            .filter(|t| t.contains(column))
            .filter(|t| {
                t.split(column)
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|f| f.parse::<u32>().ok())
                    .is_some_and(|f| f > 0)
            })
            .count()
    };
    let columns: Vec<String> = [r_on, r_end]
        .iter()
        .map(|ms| {
            let minute = (ms / 1000).rem_euclid(86_400) / 60 / 5 * 5;
            format!(" {:02}:{:02} UTC: ", minute / 60, minute % 60)
        })
        .collect();
    let (column, days_failing) = columns
        .iter()
        .map(|c| (c.as_str(), failing_days(c)))
        .max_by_key(|(_, n)| *n)
        .expect("two columns");
    if days_failing < 7 {
        return Err(format!(
            "the heatmap should show failures on 7 days (6 seeded + today) in a column of the live refusal ({columns:?}); the best,{column}shows {days_failing}"
        ));
    }
    println!(
        "databases: refusal band shown; the heatmap's{column}column fails on {days_failing} days"
    );
    // The databases page says the refusal recurs (6 seeded days and today).
    let recurring = "Recurring: board-primary refused connections ";
    match db.split(recurring).nth(1).and_then(|r| r.split('.').next()) {
        Some(words) if words.ends_with("on 7 of the last 7 days") => {
            println!("databases: {recurring}{words}")
        }
        other => {
            return Err(format!(
                "/databases should say the refusal recurs on 7 of the last 7 days: {other:?}"
            ))
        }
    }
    check_incidents(&dash, events, demo).await?;
    check_board_metrics(&dash, events).await?;
    // Alerts page: every rule of the day appears.
    let alerts = dash.page("/alerts?range=1h").await;
    for inc in scenario::incidents() {
        for (rule, _) in inc.kind.alerts() {
            if !alerts.contains(rule) {
                return Err(format!("/alerts does not list {rule}"));
            }
        }
    }
    Ok(())
}

/// One incident per fault of the day, its first-ranked cause naming the injected fault, and
/// none in the calm; the refusal's incident says it happened on earlier days too.
async fn check_incidents(dash: &Dashboard, events: &[Event], demo: &Demo) -> Result<(), String> {
    let at = |kind: Kind, start: bool| event_ms(events, kind, start);
    let day = scenario::incidents();
    let (first, last) = (at(day[0].kind, true), at(day.last().unwrap().kind, false));
    let api: serde_json::Value = serde_json::from_str(
        &dash
            .page(&format!(
                "/api/v1/incidents?from={}&to={}",
                first - 60_000,
                last + 120_000
            ))
            .await,
    )
    .map_err(|e| format!("/api/v1/incidents: {e}"))?;
    let stored = api["incidents"].as_array().cloned().unwrap_or_default();
    println!("incidents:");
    for i in &stored {
        println!(
            "  #{} {} — cause: {} ({} alerts){}",
            i["id"],
            i["title"].as_str().unwrap_or(""),
            i["cause_text"].as_str().unwrap_or(""),
            i["alerts"].as_array().map_or(0, |a| a.len()),
            i["recurrence"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("; seen before: {}", r.as_str().unwrap_or("")))
                .collect::<String>()
        );
    }
    let messages = demo.stack.slack.messages();
    let mut failures = Vec::new();
    for inc in &day {
        let (onset, end) = (at(inc.kind, true), at(inc.kind, false));
        // Its alerts: those that began firing while it lasted (a later fault may fire the same
        // rule again — the slow partner fills the list page's limiter too — in its own
        // incident; their resolutions carry the same incident as their firing).
        let mut ids: Vec<i64> = messages
            .iter()
            .filter(|m| {
                m.kind == "webhook" && m.at_ms >= onset - 1_000 && m.at_ms <= end + ALERT_WITHIN_MS
            })
            .flat_map(|m| m.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| a["event"] == "firing")
            .filter(|a| {
                let labels = a["labels"].to_string();
                inc.kind
                    .alerts()
                    .iter()
                    .any(|want| is_expected(a["rule"].as_str().unwrap_or(""), &labels, *want))
            })
            .filter_map(|a| a["incident"]["id"].as_i64())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let [id] = ids[..] else {
            failures.push(format!(
                "{}: its alerts belong to incidents {ids:?}, not to one",
                inc.kind.name()
            ));
            continue;
        };
        let incident = stored.iter().find(|i| i["id"].as_i64() == Some(id));
        let cause = incident
            .and_then(|i| i["cause_text"].as_str())
            .unwrap_or("");
        if !cause.contains(inc.kind.culprit()) {
            failures.push(format!(
                "{}: incident #{id}'s probable cause does not name {}: {cause:?}",
                inc.kind.name(),
                inc.kind.culprit()
            ));
        }
        if let Some(op) = inc.kind.slowed_operation() {
            if !cause.contains(op) {
                failures.push(format!(
                    "{}: incident #{id}'s probable cause does not name the endpoint it slowed, {op}: {cause:?}",
                    inc.kind.name()
                ));
            }
        }
        if inc.kind == Kind::PrimaryRefuses {
            let recurrence = incident
                .map(|i| i["recurrence"].to_string())
                .unwrap_or_default();
            if !recurrence.contains("board-primary refused connections") {
                failures.push(format!(
                    "the refusal's incident #{id} does not say it recurs: {recurrence}"
                ));
            }
        }
    }
    for i in &stored {
        let opened_ms = (i["opened"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
        if !day.iter().any(|inc| {
            // A side effect of its recovery may open one a little later.
            opened_ms >= at(inc.kind, true) - 1_000
                && opened_ms <= at(inc.kind, false) + ALERT_WITHIN_MS + SIDE_EFFECT_TAIL_MS
        }) {
            failures.push(format!(
                "incident #{} opened in the calm: {}",
                i["id"], i["title"]
            ));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("\n"))
    }
}

/// The board's own OTLP metrics reached the dashboard: while Redis was slow, the list limiter's
/// requests in flight rose to (at least half) its limit (the 503s' direct signal), and the service's metrics
/// page draws in-flight requests against the limit and the replica pool against its size.
async fn check_board_metrics(dash: &Dashboard, events: &[Event]) -> Result<(), String> {
    let (onset, end) = (
        event_ms(events, Kind::RedisSlow, true),
        event_ms(events, Kind::RedisSlow, false),
    );
    let window = format!("from={}&to={}", onset - 120_000, end + 60_000);
    let read = |name: &'static str| {
        let path = format!("/api/v1/metrics?name={name}&service=board&step=1m&{window}");
        async move {
            let text = dash.page(&path).await;
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("{path}: {e}: {text}"))
        }
    };
    // The list limiter's series: `board.limiter` = "--max-concurrent".
    let of_list = |v: &serde_json::Value, pick: fn(&serde_json::Value) -> Option<f64>| {
        v["series"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["attributes"]["board.limiter"] == "--max-concurrent")
            .flat_map(|s| s["points"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| pick(&p))
            .max_by(f64::total_cmp)
    };
    let in_flight = of_list(&read("http.server.active_requests").await?, |p| {
        p["max"].as_f64()
    });
    let limit = of_list(&read("board.limiter.max").await?, |p| p["value"].as_f64());
    match (in_flight, limit) {
        // Sampled at each export (every 5 s): the limiter is full in bursts, at least half
        // full throughout the slowdown.
        (Some(n), Some(l)) if n >= l / 2.0 => {
            println!("board metrics: up to {n} requests in flight at the list limiter (limit {l}) while Redis was slow")
        }
        other => {
            return Err(format!(
                "while Redis was slow the list limiter should have filled (in flight, limit): {other:?}"
            ))
        }
    }
    let page = dash
        .page(&format!("/services/board/metrics?{window}"))
        .await;
    for needle in [
        "http.server.active_requests",
        "board.limiter.max",
        "db.client.connections.usage",
        "db.client.connections.max",
    ] {
        if !page.contains(needle) {
            return Err(format!("/services/board/metrics does not show {needle}"));
        }
    }
    println!(
        "board metrics page: in-flight requests against the limit, pool usage against its size"
    );
    Ok(())
}

//! Dashboard handlers against a seeded, real PostgreSQL (stormwatch-testkit), through the
//! router with `oneshot`.

mod common;

use axum::http::StatusCode;
use common::*;

/// An agent that lost counts or dead-lettered batches says so on the overview: before,
/// a batch refused for good showed nowhere but in the agent's own log and metrics.
#[tokio::test]
async fn the_agent_table_shows_lost_spans_and_dead_letters() {
    let store = empty_store().await;
    let now = stormwatch_store::now_ns();
    let mut b = stormwatch_testkit::sample::batch("agent-lossy", 1, 10, now);
    let stats = b.stats.as_mut().unwrap();
    stats.spans_lost = 1234;
    stats.dead_letter_batches = 3;
    stormwatch_model::validate::check_batch(&mut b, now).unwrap();
    store.store_batch(&b, now).await.unwrap();
    let clean = stormwatch_testkit::sample::batch("agent-fine", 1, 10, now);
    store.store_batch(&clean, now).await.unwrap();
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let row = |agent: &str| {
        let at = page.find(&format!("<td>{agent}</td>")).unwrap();
        page[at..at + page[at..].find("</tr>").unwrap()].to_owned()
    };
    let lossy = row("agent-lossy");
    assert!(lossy.contains("<td class=\"num bad\">1234</td>"), "{lossy}");
    assert!(lossy.contains("<td class=\"num bad\">3</td>"), "{lossy}");
    let fine = row("agent-fine");
    assert!(!fine.contains("bad"), "{fine}");
}

#[tokio::test]
async fn overview_shows_each_service_agents_and_sparklines() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(
        page.contains(r#"<td><a href="/services/board/metrics?range=1h" title="board: latency, limits and metrics">board</a></td>"#),
        "the service links to its metrics: {page}"
    );
    assert!(page.contains("<td>http_server</td>"));
    // The sample batches: 800 spans, 200 of them server spans; every 17th span is a 503.
    assert!(page.contains("agent-a") && page.contains("agent-b"));
    let svgs = svgs(&page);
    assert_eq!(svgs.len(), 2, "two sparklines for the one service");
    assert!(svgs.iter().all(|s| s.contains("<title>board: ")));
    assert!(page.contains("aria-current=\"true\" class=\"on\">1h</a>"));
    assert!(
        page.contains("href=\"/scatter?range=1h\""),
        "nav keeps the window"
    );
}

#[tokio::test]
async fn empty_store_and_bad_parameters() {
    let app = stormwatch_web::router(empty_store().await);
    let (status, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"no-services\""));
    assert!(page.contains("id=\"no-agents\""));
    let (status, page) = get(&app, "/?range=2y").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown range `2y`"), "{page}");
    let (status, page) = get(&app, "/?from=%3Cscript%3E").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        page.contains("`&#60;script&#62;` is not a time"),
        "escaped: {page}"
    );
    assert!(!page.contains("<script>"));
}

#[tokio::test]
async fn security_headers_and_static_assets() {
    let app = stormwatch_web::router(empty_store().await);
    let res = tower::ServiceExt::oneshot(
        app.clone(),
        axum::http::Request::get("/")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await
    .unwrap();
    let h = res.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    let (status, css) = get(&app, "/static/style.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(css.contains("--vermillion"));
    // Browsers fetch /favicon.ico on every new tab; a 404 there is a console error.
    for icon in ["/favicon.ico", "/static/favicon.svg"] {
        let (status, svg) = get(&app, icon).await;
        assert_eq!(status, StatusCode::OK, "{icon}");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    }
    let (status, base) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(base.contains(r#"<link rel="icon" href="/static/favicon.svg""#));
    let (status, _) = get(&app, "/static/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn scatter_draws_one_linked_dot_per_kept_span_with_errors_apart() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    // The sample spans start 120 s ago and last 1–50 ms; 800 spans, every 17th (by trace+n) fails.
    let (status, page) = get(&app, "/scatter?range=15m").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let all = svgs(&page);
    let chart = all
        .iter()
        .find(|s| s.contains("id=\"scatter\""))
        .expect("scatter chart");
    let ok = marks(chart, "dots ok", "circle");
    let err = marks(chart, "dots error", "circle");
    assert_eq!(ok + err, 800, "one dot per span");
    assert!(err > 0 && err < 100, "{err} errors");
    assert!(page.contains(&format!("{} dots", ok + err)));
    assert!(
        page.contains("data-refresh=\"10\""),
        "auto-refresh on a preset window"
    );
    // Filters: only Redis spans above 10 ms, linear axis.
    let (_, page) = get(
        &app,
        "/scatter?range=15m&class=redis&min_ms=10&scale=linear",
    )
    .await;
    let chart = svgs(&page)
        .into_iter()
        .find(|s| s.contains("id=\"scatter\""))
        .unwrap();
    let n = marks(&chart, "dots ok", "circle") + marks(&chart, "dots error", "circle");
    assert!(n > 0 && n < 200, "{n}");
    assert!(chart.contains("data-log=\"false\""));
    // Zoomed (custom window): no auto-refresh; bad inputs are 400s that name the parameter.
    let now = stormwatch_web::range::now_ms();
    let (status, page) = get(
        &app,
        &format!(
            "/scatter?from={}&to={}&min_ms=1&max_ms=5",
            now - 200_000,
            now
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.contains("data-refresh"));
    for bad in ["scale=cubic", "class=mongo", "min_ms=-3"] {
        let (status, page) = get(&app, &format!("/scatter?{bad}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(page.contains(bad.split('=').next().unwrap()), "{page}");
    }
}

#[tokio::test]
async fn slow_spans_table_sorts_and_links_traces_and_trace_shows_waterfall() {
    let store = empty_store().await;
    let trace = seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/spans?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // The sample's flagged spans are its errors.
    let rows = page.matches("<tr class=\"alarm\">").count();
    assert!(rows > 0, "{page}");
    assert!(page.contains("<span class=\"flag error\">error</span>"));
    assert!(page.contains("href=\"/traces/"));
    let (status, by_start) = get(&app, "/spans?range=1h&sort=start").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(by_start.matches("<tr class=\"alarm\">").count(), rows);
    let (status, _) = get(&app, "/spans?sort=random").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, page) = get(&app, &format!("/traces/{trace}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    // 4 spans per sample trace, each with a bar.
    assert_eq!(page.matches("<svg class=\"bar\"").count(), 4);
    svgs(&page);
    assert!(page.contains("SELECT * FROM posts WHERE board_id = ?"));
    assert!(page.contains("replica lag at that moment"));
    assert!(
        page.contains(&format!("href=\"/traces/{trace}?range=6h\"")),
        "the picker stays on the trace: {page}"
    );
    let (status, _) = get(&app, "/traces/00112233445566778899aabbccddeeff").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = get(&app, "/traces/xyz").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn dependencies_chart_classes_and_peers_with_a_baseline() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/dependencies?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let charts = svgs(&page);
    assert_eq!(
        charts.len(),
        5,
        "p95/p99/throughput by class, p95/p99 by peer"
    );
    // Three classes in the sample (db, redis, http_client), all in one minute: each is one
    // point (a dot: a single-point run has no line) plus its legend swatch.
    let doc = roxmltree::Document::parse(&charts[0]).unwrap();
    for color in ["#0072B2", "#E69F00", "#009E73"] {
        let swatches = doc
            .descendants()
            .filter(|e| e.has_tag_name("polyline") && e.attribute("stroke") == Some(color))
            .count();
        let dots = doc
            .descendants()
            .filter(|e| e.has_tag_name("circle") && e.attribute("fill") == Some(color))
            .count();
        assert_eq!((swatches, dots), (1, 1), "{color}");
    }
    for peer in ["redis:6379", "db-replica:5432", "partner:8080"] {
        assert!(
            page.contains(&format!("<td>{peer}</td>")),
            "{peer} in the peers table"
        );
    }
    assert!(page.contains("the hour before"));
    let (status, page) = get(&app, "/dependencies?range=1h&baseline=day").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("same time yesterday"));
    // No baseline data: the change column says so instead of flagging.
    assert!(page.contains(">new<"), "{page}");
    let (status, _) = get(&app, "/dependencies?baseline=week").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn databases_show_refusal_bands_lag_threshold_and_heatmap() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/databases?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let charts = svgs(&page);
    // main: connect + failures + heatmap; main-replica: connect + failures + lag + heatmap.
    assert_eq!(charts.len(), 7, "{}", charts.len());
    let main_connect = charts
        .iter()
        .find(|s| s.contains("<title>main: connect time"))
        .unwrap();
    let doc = roxmltree::Document::parse(main_connect).unwrap();
    let bands = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("fill") == Some("#D55E00"))
        .count();
    assert_eq!(bands, 1, "one refusal window, 20–32 minutes ago");
    let lag = charts
        .iter()
        .find(|s| s.contains("<title>main-replica: replication lag"))
        .unwrap();
    assert!(lag.contains("threshold 5 s"), "{lag}");
    let heat = charts
        .iter()
        .find(|s| s.contains("class=\"chart heatmap\"") && s.contains("<title>main: "))
        .unwrap();
    // 12 failing minutes at 5-minute buckets: 3 or 4 failing cells (depending on alignment).
    let failing = heat.matches("probes failed, 0 slow").count() - heat.matches(": 0 of").count();
    assert!((3..=4).contains(&failing), "{failing}");
}

#[tokio::test]
async fn hosts_and_alerts_pages() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/hosts?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(svgs(&page).len(), 4, "CPU, memory, rx, tx");
    assert!(page.contains("<td>agent-a</td>") && page.contains("<td>agent-b</td>"));
    let (status, page) = get(&app, "/alerts").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"no-active-alerts\""));
}

#[tokio::test]
async fn firing_alerts_show_on_the_overview_and_the_alerts_page() {
    use stormwatch_store::alerts::{AlertEvent, AlertState, Transition};
    let store = empty_store().await;
    seed(&store).await;
    let now_s = stormwatch_store::now_ns() as f64 / 1e9;
    let state = AlertState {
        rule: "redis_p95".into(),
        labels_key: "class=redis,peer=redis:6379".into(),
        labels: [("class", "redis"), ("peer", "redis:6379")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        state: "firing".into(),
        severity: "critical".into(),
        value: Some(812.0),
        threshold: Some(200.0),
        summary: "Redis p95 <812 ms>".into(),
        pending_since: now_s - 120.0,
        firing_since: Some(now_s - 60.0),
        resolving_since: None,
        last_notified: None,
        peak: None,
        peak_summary: String::new(),
    };
    let event = AlertEvent {
        event: "firing".into(),
        channels: vec![],
        silenced: false,
    };
    // Alert state is written only by the leader of the current term.
    let term = store
        .take_leadership("pages-test", std::time::Duration::from_secs(60), true)
        .await
        .unwrap()
        .expect("the only collector takes the lead");
    store
        .apply_transitions(
            &term,
            &[Transition::Upsert(state, Some(event))],
            "g1",
            now_s,
        )
        .await
        .unwrap();
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"firing\""), "{page}");
    assert!(
        page.contains("Redis p95 &#60;812 ms&#62;"),
        "escaped summary"
    );
    assert!(
        page.contains("/scatter?from="),
        "links to the window that explains it"
    );
    let (status, page) = get(&app, "/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        page.contains("id=\"active-alerts\"") && page.contains("id=\"alert-events\""),
        "{page}"
    );
    assert!(page.contains("peer=redis:6379&#38;class=redis"), "{page}");
}

#[tokio::test]
async fn the_service_map_links_services_to_the_peers_they_call() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/map?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains(">Map</a>"), "in the nav");
    let svg = page
        .split("id=\"service-map\">")
        .nth(1)
        .and_then(|s| s.split("</svg>").next())
        .expect("a map");
    let whole = format!("{svg}</svg>");
    let doc = roxmltree::Document::parse(&whole).expect("well-formed");
    let nodes: Vec<&str> = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("node"))
        .filter_map(|n| n.attribute("data-id"))
        .collect();
    // The sample: service board calling a database replica, Redis and a partner over HTTP.
    for want in ["board", "redis:6379", "db-replica:5432", "partner:8080"] {
        assert!(nodes.contains(&want), "{want} not in {nodes:?}");
    }
    let edges = doc
        .descendants()
        .filter(|n| n.attribute("class") == Some("edge"))
        .count();
    assert_eq!(edges, 3, "{svg}");
    assert!(svg.contains("board → redis:6379 (redis): "), "{svg}");
    assert!(
        !svg.contains("edge hot"),
        "no incident: no path in vermillion"
    );
    let (status, page) = get(&app, "/map?range=1h&from=10&to=20").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("id=\"no-services\""), "{page}");
}

/// A metric point of service `board` on instance `app-1`, `ago` minutes before `now`: one
/// sample of `value` (histograms: `count` observations of mean `value`).
fn point(
    now: i64,
    ago: i64,
    name: &str,
    kind: stormwatch_model::MetricKind,
    unit: &str,
    attrs: &[(&str, &str)],
    value: f64,
) -> stormwatch_model::MetricPoint {
    let minute_ns = (now.div_euclid(60 * NS) - ago) * 60 * NS;
    stormwatch_model::MetricPoint {
        minute_ns,
        service: "board".into(),
        instance: "app-1".into(),
        name: name.into(),
        unit: unit.into(),
        kind: kind as i32,
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        count: 1,
        sum: value,
        min: value,
        max: value,
        last: value,
        last_ns: minute_ns + 30 * NS,
        ..Default::default()
    }
}

/// The board's spans, with its limiter, pool and a few other metrics over the last 10 minutes
/// (in flight climbing to the limit of 40, the pool full at 10), another service's gauge, and
/// log records of the first trace.
async fn seed_metrics(store: &stormwatch_store::Store) -> stormwatch_model::Batch {
    use stormwatch_model::MetricKind::*;
    let now = stormwatch_store::now_ns();
    let mut b = stormwatch_testkit::sample::batch("agent-m", 7, 40, now);
    let limiter = [("board.limiter", "--max-concurrent")];
    let pool = [("pool.name", "board-replica")];
    let used = [("pool.name", "board-replica"), ("state", "used")];
    for ago in 0..10 {
        let climbing = (4 * (10 - ago)) as f64;
        let p = |name, kind, unit, attrs: &[(&str, &str)], v| {
            point(now, ago, name, kind, unit, attrs, v)
        };
        b.metrics.extend([
            p(
                "http.server.active_requests",
                UpDown,
                "{request}",
                &limiter,
                climbing,
            ),
            p("board.limiter.max", Gauge, "{request}", &limiter, 40.0),
            p(
                "db.client.connections.usage",
                UpDown,
                "{connection}",
                &used,
                7.0 + (ago == 0) as i32 as f64 * 3.0,
            ),
            p(
                "db.client.connections.max",
                UpDown,
                "{connection}",
                &pool,
                10.0,
            ),
            p("process.cpu.utilization", Gauge, "1", &[], 0.25),
            p("board.posts.created", Counter, "{post}", &[], 120.0),
        ]);
        let mut h = p(
            "http.server.duration",
            Histogram,
            "ms",
            &[("http.route", "/posts")],
            0.0,
        );
        h.count = 10;
        h.sum = 250.0;
        h.min = 5.0;
        h.max = 90.0;
        h.bounds = vec![10.0, 50.0, 100.0];
        h.buckets = vec![4, 4, 2, 0];
        b.metrics.push(h);
        let mut other = p("queue.depth", Gauge, "", &[], 3.0);
        other.service = "other-svc".into();
        b.metrics.push(other);
    }
    // Log records of the first trace: on its server span, on its database span, on a span
    // that is not stored and on none; and one of a trace whose spans are not stored.
    let trace = b.spans[0].trace_id.clone();
    let record = |span: &[u8], severity: i32, body: &str, at: i64| stormwatch_model::LogRecord {
        time_ns: at,
        service: "board".into(),
        instance: "app-1".into(),
        severity_number: severity,
        body: body.into(),
        trace_id: trace.clone(),
        span_id: span.to_vec(),
        ..Default::default()
    };
    let (server, db) = (&b.spans[0], &b.spans[1]);
    let mut timeout = record(
        &db.span_id,
        17,
        "replica timeout <after 2 s>",
        db.start_ns + 500_000,
    );
    timeout
        .attributes
        .insert("exception.type".into(), "TimeoutError".into());
    b.logs = vec![
        record(
            &server.span_id,
            13,
            "slow request",
            server.start_ns + 200_000,
        ),
        timeout,
        record(
            &[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 1],
            13,
            "orphan record",
            server.start_ns + 900_000,
        ),
        record(&[], 17, "no span at all", server.start_ns + 950_000),
    ];
    let mut lone = record(&[], 9, "a trace without stored spans", server.start_ns);
    lone.trace_id = vec![0xab; 16];
    b.logs.push(lone);
    stormwatch_model::validate::check_batch(&mut b, now).unwrap();
    store.store_batch(&b, now).await.unwrap();
    b
}

/// The text alternative of the chart whose title is `title`.
fn chart_desc(page: &str, title: &str) -> String {
    let svg = svgs(page)
        .into_iter()
        .find(|s| s.contains(&format!("<title>{title}</title>")))
        .unwrap_or_else(|| panic!("no chart titled {title:?}"));
    let doc = roxmltree::Document::parse(&svg).unwrap();
    let desc = doc
        .descendants()
        .find(|n| n.has_tag_name("desc"))
        .and_then(|n| n.text())
        .unwrap()
        .to_owned();
    desc
}

#[tokio::test]
async fn a_services_metrics_page_puts_its_limits_beside_its_latency() {
    let store = empty_store().await;
    seed_metrics(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/services/board/metrics?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<h1>board: metrics</h1>"), "{page}");
    // The outage signals, first, on the window's time axis.
    let signals =
        &page[page.find("id=\"signals\"").expect("signals")..page.find("id=\"metrics\"").unwrap()];
    for id in [
        "signal-latency",
        "signal-requests",
        "signal-in-flight",
        "signal-pool",
    ] {
        assert!(signals.contains(&format!("id=\"{id}\"")), "{id}");
    }
    let latency = svgs(signals)
        .into_iter()
        .find(|s| s.contains("<title>board: server latency p95</title>"))
        .unwrap();
    // The sample's server spans answer 503 now and then: that step is shaded.
    assert!(latency.contains("fill=\"#D55E00\""), "{latency}");
    let in_flight = chart_desc(&page, "board: requests in flight and their limit (dashed)");
    assert!(
        in_flight.contains("app-1 · board.limiter=--max-concurrent: last 40, min 4, max 40"),
        "{in_flight}"
    );
    assert!(
        in_flight.contains("app-1 · board.limiter=--max-concurrent limit (dashed): last 40"),
        "the limit is drawn as its own dashed series: {in_flight}"
    );
    let pool = chart_desc(
        &page,
        "board: pool connections in use and the pool size (dashed)",
    );
    assert!(
        pool.contains("app-1 · pool.name=board-replica used: last 10, min 7"),
        "{pool}"
    );
    assert!(
        pool.contains("app-1 · pool.name=board-replica max (dashed): last 10"),
        "{pool}"
    );
    // Every other metric of the service: gauges as their value, counters per second,
    // histograms as mean and p95.
    let cpu = chart_desc(&page, "process.cpu.utilization (gauge)");
    assert!(cpu.contains("app-1: last 0.25"), "{cpu}");
    let posts = chart_desc(&page, "board.posts.created (counter)");
    assert!(
        posts.contains("(posts per second)") && posts.contains("app-1: last 2,"),
        "{posts}"
    );
    let hist = chart_desc(&page, "http.server.duration (histogram)");
    assert!(
        hist.contains("app-1 · http.route=/posts mean: last 25"),
        "{hist}"
    );
    assert!(
        hist.contains("app-1 · http.route=/posts p95 (dashed): last"),
        "{hist}"
    );
    assert!(
        page.contains("ms, mean and p95 (dashed)"),
        "the y axis names the unit"
    );
    // Drawn with the signals, not again on their own.
    assert!(!page.contains("<title>board.limiter.max"), "{page}");
    assert!(!page.contains("<title>db.client.connections.max"), "{page}");
    // The list: every metric, linked to its chart; none of another service.
    let table = &page[page.find("id=\"metric-names\"").unwrap()..];
    for (name, href, kind) in [
        ("http.server.active_requests", "#signal-in-flight", "updown"),
        ("board.limiter.max", "#signal-in-flight", "gauge"),
        ("db.client.connections.usage", "#signal-pool", "updown"),
        ("db.client.connections.max", "#signal-pool", "updown"),
        (
            "process.cpu.utilization",
            "#metric-process.cpu.utilization-gauge",
            "gauge",
        ),
        (
            "http.server.duration",
            "#metric-http.server.duration-histogram",
            "histogram",
        ),
    ] {
        assert!(
            table.contains(&format!(
                "<a href=\"{href}\">{name}</a></td><td>{kind}</td>"
            )),
            "{name} in {table}"
        );
    }
    assert!(!page.contains("queue.depth"), "another service's metric");
    assert!(!page.contains("id=\"no-metrics\""));
    // Hover titles on the points of small charts.
    assert!(page.contains("<g class=\"points\">"));
}

#[tokio::test]
async fn a_service_without_metrics_says_how_to_export_them() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    // Spans but no metrics: its latency, then what to do.
    let (status, page) = get(&app, "/services/board/metrics?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("id=\"signal-latency\""), "{page}");
    assert!(!page.contains("id=\"signal-in-flight\""));
    assert!(page.contains("id=\"no-metrics\""));
    assert!(page.contains("<code>OTEL_METRICS_EXPORTER=otlp</code> (the default of most SDKs)"));
    assert!(page.contains("<code>OTEL_EXPORTER_OTLP_ENDPOINT</code> pointing at the agent"));
    // Nothing at all (an unknown name, one with a slash): the same, not an error.
    for (path, name) in [("nobody", "nobody"), ("a%2Fb%20c", "a/b c")] {
        let (status, page) = get(&app, &format!("/services/{path}/metrics")).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert!(page.contains("id=\"no-metrics\""), "{page}");
        assert!(!page.contains("id=\"signals\""));
        assert!(
            page.contains(&format!("No metrics from {name} in this window")),
            "{page}"
        );
    }
    // The picker keeps the page.
    let (_, page) = get(&app, "/services/a%2Fb/metrics?range=1h").await;
    assert!(
        page.contains("href=\"/services/a%2Fb/metrics?range=6h\""),
        "{page}"
    );
    // Bad windows: the usual 400 naming the parameter.
    let (status, page) = get(&app, "/services/board/metrics?range=2y").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("unknown range `2y`"), "{page}");
    let (status, page) = get(&app, "/services/board/metrics?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(page.contains("bad parameter `from`"), "{page}");
}

#[tokio::test]
async fn a_trace_shows_its_log_records_at_their_span() {
    use stormwatch_model::hexid::encode;
    let store = empty_store().await;
    let b = seed_metrics(&store).await;
    let app = stormwatch_web::router(store);
    let trace = encode(&b.spans[0].trace_id);
    let (status, page) = get(&app, &format!("/traces/{trace}")).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    svgs(&page);
    assert!(page.contains("4 stored spans, 4 log records"), "{page}");
    // The part of the waterfall from a span's row to the next span's row.
    let span_part = |span: &[u8]| {
        let id = encode(span);
        let at = page
            .find(&format!("<dt>span id</dt><dd>{id}</dd>"))
            .unwrap_or_else(|| panic!("span {id}"));
        let row = page[..at].rfind("<tr").unwrap();
        let end = match page[at + 1..].find("<dt>span id</dt>") {
            Some(n) => page[..at + 1 + n].rfind("<tr").unwrap(),
            None => page.find("</tbody>").unwrap(),
        };
        page[row..end].to_owned()
    };
    let db = span_part(&b.spans[1].span_id);
    let logs = &db[db
        .find("<tr class=\"logs\"")
        .expect("a logs row under the span")..];
    assert!(logs.contains(&format!("data-span=\"{}\"", encode(&b.spans[1].span_id))));
    assert!(
        logs.contains("<strong class=\"sev log-error\">ERROR</strong>"),
        "{logs}"
    );
    assert!(
        logs.contains("replica timeout &#60;after 2 s&#62;"),
        "{logs}"
    );
    assert!(logs.contains("<span class=\"offset\">+"), "{logs}");
    assert!(
        logs.contains("<dt>exception.type</dt><dd>TimeoutError</dd>"),
        "{logs}"
    );
    assert!(!logs.contains("slow request") && !logs.contains("orphan record"));
    // Its tick: vermillion, at its moment on the bar, titled with severity and body.
    let bar = svgs(&db).into_iter().next().unwrap();
    let doc = roxmltree::Document::parse(&bar).unwrap();
    let tick = doc
        .descendants()
        .find(|n| n.attribute("class") == Some("log-tick"))
        .expect("a tick");
    assert!(
        tick.children()
            .any(|n| n.has_tag_name("line") && n.attribute("stroke") == Some("#D55E00")),
        "{bar}"
    );
    let title = tick
        .children()
        .find(|n| n.has_tag_name("title"))
        .and_then(|n| n.text())
        .unwrap();
    assert!(
        title.starts_with("ERROR at +") && title.ends_with(": replica timeout <after 2 s>"),
        "{title}"
    );
    let server = span_part(&b.spans[0].span_id);
    assert!(
        server.contains("<strong class=\"sev log-warn\">WARN</strong>"),
        "{server}"
    );
    assert!(server.contains("slow request"));
    assert!(
        server.contains("stroke=\"#E69F00\""),
        "amber tick: {server}"
    );
    // A span without records has neither.
    let redis = span_part(&b.spans[2].span_id);
    assert!(
        !redis.contains("class=\"logs\"") && !redis.contains("log-tick"),
        "{redis}"
    );
    // Records of spans not stored, and of none, below the waterfall at their offsets.
    let below = &page[page
        .find("id=\"unmatched-logs\"")
        .expect("unmatched records")..];
    assert!(page.find("id=\"waterfall\"").unwrap() < page.find("id=\"unmatched-logs\"").unwrap());
    assert!(
        below.contains("orphan record") && below.contains("<code>deadbeef00000001</code>"),
        "{below}"
    );
    assert!(
        below.contains("no span at all") && below.contains("<td>none</td>"),
        "{below}"
    );
    assert!(below.contains("<td class=\"num\">+"), "{below}");
    assert!(!below.contains("a trace without stored spans"));

    // A trace without records: no lists, ticks or lower table.
    let (status, page) = get(&app, &format!("/traces/{}", encode(&b.spans[4].trace_id))).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(!page.contains("id=\"unmatched-logs\"") && !page.contains("log-tick"));
    assert!(!page.contains("<tr class=\"logs\""));
    // Records but no stored span: still not found.
    let (status, _) = get(&app, &format!("/traces/{}", "ab".repeat(16))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

//! Dashboard handlers against a seeded, real PostgreSQL (stormwatch-testkit), through the
//! router with `oneshot`.

mod common;

use axum::http::StatusCode;
use common::*;

#[tokio::test]
async fn overview_shows_each_service_agents_and_sparklines() {
    let store = empty_store().await;
    seed(&store).await;
    let app = stormwatch_web::router(store);
    let (status, page) = get(&app, "/?range=1h").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("<td>board</td>"), "{page}");
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
    let (status, _) = get(&app, "/static/nope.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

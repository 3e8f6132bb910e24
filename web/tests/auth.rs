//! Access control through the real router: sign-in, sign-out, a wrong password, every page
//! refused without a session, the read-only viewer role, and the read-API guard.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use stormwatch_web::{Auth, AuthOptions, Role, User};
use tower::ServiceExt;

const PAGES: &[&str] = &[
    "/",
    "/scatter",
    "/dependencies",
    "/spans",
    "/traces/0123456789abcdef0123456789abcdef",
    "/databases",
    "/hosts",
    "/alerts",
];

fn auth() -> Arc<Auth> {
    Arc::new(Auth::new(AuthOptions {
        users: vec![
            User {
                name: "admin".into(),
                password_hash: stormwatch_web::auth::hash_password("s3cret admin").unwrap(),
                role: Role::Admin,
            },
            User {
                name: "viewer".into(),
                password_hash: stormwatch_web::auth::hash_password("s3cret viewer").unwrap(),
                role: Role::Viewer,
            },
        ],
        read_tokens: vec!["read-token-0123456789abcdef".into()],
        secure_cookies: false,
    }))
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 16 << 20)
        .await
        .unwrap();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn login(user: &str, password: &str, next: &str) -> Request<Body> {
    Request::post("/login")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(format!(
            "user={user}&password={}&next={}",
            stormwatch_web::handlers::urlencode(password),
            stormwatch_web::handlers::urlencode(next)
        )))
        .unwrap()
}

fn with_cookie(path: &str, cookie: &str) -> Request<Body> {
    Request::get(path)
        .header(header::COOKIE, cookie)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn every_page_needs_a_session_and_login_logout_work() {
    let store = common::empty_store().await;
    let app = stormwatch_web::router_with(store, auth());
    for page in PAGES {
        let (status, headers, _) =
            send(&app, Request::get(*page).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{page}");
        let to = headers[header::LOCATION].to_str().unwrap();
        assert!(to.starts_with("/login?next="), "{page}: {to}");
    }
    // The login form and its stylesheet are public.
    let (status, _, body) = send(
        &app,
        Request::get("/login?next=/hosts")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("value=\"/hosts\""));
    for asset in ["/static/style.css", "/favicon.ico"] {
        let (status, _, _) = send(&app, Request::get(asset).body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }

    // Wrong password, unknown user: 401 and the form again, no cookie.
    for (u, p) in [("admin", "wrong"), ("nobody", "s3cret admin")] {
        let (status, headers, body) = send(&app, login(u, p, "/")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("Unknown user or wrong password."));
        assert!(headers.get(header::SET_COOKIE).is_none());
    }

    // Right password: a session cookie and a redirect to where the user was going.
    let (status, headers, _) = send(&app, login("admin", "s3cret admin", "/hosts?range=6h")).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(headers[header::LOCATION], "/hosts?range=6h");
    let set = headers[header::SET_COOKIE].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    for page in PAGES {
        let (status, headers, body) = send(&app, with_cookie(page, &cookie)).await;
        // The trace is unknown (404); every other page renders.
        let want = if page.starts_with("/traces/") {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::OK
        };
        assert_eq!(status, want, "{page}: {body}");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store", "{page}");
        if want == StatusCode::OK {
            assert!(
                body.contains("admin (admin)"),
                "{page} shows who is signed in"
            );
        }
    }
    // An open redirect is refused: `next` must be a local path, without control characters
    // (browsers drop a tab from `Location`: `/\t/evil.example/` would lead off-site; a newline
    // cannot go in a header at all, and used to give a 500 after creating a session).
    for next in [
        "//evil.example/",
        "/\t/evil.example/",
        "/\n/x",
        "/hosts\r\nSet-Cookie: a=b",
    ] {
        let (status, headers, _) = send(&app, login("admin", "s3cret admin", next)).await;
        assert_eq!(status, StatusCode::SEE_OTHER, "{next:?}");
        assert_eq!(headers[header::LOCATION], "/", "{next:?}");
    }

    // Another site cannot sign the user out; nor can a page without Origin or Referer.
    for origin in [Some("http://evil.example"), Some("https://dashboard"), None] {
        let mut req = Request::post("/logout")
            .header(header::HOST, "dashboard")
            .header(header::COOKIE, &cookie);
        if let Some(o) = origin {
            req = req.header(header::ORIGIN, o);
        }
        let (status, _, _) = send(&app, req.body(Body::empty()).unwrap()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{origin:?}");
    }
    let (status, _, _) = send(&app, with_cookie("/", &cookie)).await;
    assert_eq!(status, StatusCode::OK, "still signed in");

    // Logout from the dashboard's own page ends the session.
    let (status, headers, _) = send(
        &app,
        Request::post("/logout")
            .header(header::HOST, "dashboard")
            .header(header::ORIGIN, "http://dashboard")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    let (status, _, _) = send(&app, with_cookie("/", &cookie)).await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "the old cookie no longer works"
    );
}

#[tokio::test]
async fn viewers_are_read_only_and_the_read_api_takes_tokens_or_sessions() {
    let store = common::empty_store().await;
    let auth = auth();
    let api = Router::new()
        .route(
            "/api/v1/services",
            get(|| async { "ok" }).post(|| async { "written" }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            auth.clone(),
            stormwatch_web::auth::require_read_access,
        ));
    let app = api.merge(stormwatch_web::router_with(store, auth));
    let (_, headers, _) = send(&app, login("viewer", "s3cret viewer", "/")).await;
    let cookie = headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let (status, _, _) = send(&app, with_cookie("/", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
    // A state-changing request on the dashboard from a viewer: 403.
    let (status, _, _) = send(
        &app,
        Request::post("/alerts")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Read API: no credentials 401, unknown token 403, read token or session 200.
    let (status, _, body) = send(
        &app,
        Request::get("/api/v1/services")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("Bearer"));
    let bearer = |t: &str| {
        Request::get("/api/v1/services")
            .header(header::AUTHORIZATION, format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    let (status, _, _) = send(&app, bearer("not-a-read-token-at-all")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, body) = send(&app, bearer("read-token-0123456789abcdef")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok"));
    let (status, _, _) = send(&app, with_cookie("/api/v1/services", &cookie)).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn without_users_the_dashboard_is_open() {
    let app = stormwatch_web::router(common::empty_store().await);
    let (status, _, body) = send(&app, Request::get("/").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.contains("Log out"));
    let (_, _, body) = send(&app, Request::get("/login").body(Body::empty()).unwrap()).await;
    assert!(body.contains("No users are configured"));
}

/// A request as the server sees it from `ip` (what `into_make_service_with_connect_info` adds).
fn from(ip: &str, mut req: Request<Body>) -> Request<Body> {
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::new(ip.parse().unwrap(), 40_000)));
    req
}

#[tokio::test]
async fn failed_sign_ins_are_rate_limited_per_address() {
    let store = common::empty_store().await;
    let app = stormwatch_web::router_with(store, auth());
    for _ in 0..stormwatch_web::login_limit::MAX_FAILURES_PER_ADDRESS {
        let (status, _, _) = send(&app, from("192.0.2.1", login("admin", "guess", "/"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Held back: 429 with Retry-After, the form says why, and even the right password is not
    // checked (no cookie).
    let (status, headers, body) =
        send(&app, from("192.0.2.1", login("admin", "s3cret admin", "/"))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert!(body.contains("Too many failed sign-ins"), "{body}");
    assert!(headers.get(header::SET_COOKIE).is_none());
    // Another address signs in as that user.
    let (status, headers, _) =
        send(&app, from("192.0.2.2", login("admin", "s3cret admin", "/"))).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(headers.get(header::SET_COOKIE).is_some());
}

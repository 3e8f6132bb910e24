//! Access control of a real collector: the dashboard behind sign-in (rate-limited per client
//! address), the read API behind read tokens, ingest still behind its own agent tokens.

mod common;

use common::{start, TOKEN};
use stormwatch_collector::config::UserConfig;
use stormwatch_collector::Config;

const READ: &str = "read-token-for-scripts-0123";

#[tokio::test]
async fn dashboard_and_read_api_need_credentials_ingest_keeps_agent_tokens() {
    let db = stormwatch_testkit::fresh_database().await;
    let mut config = Config::for_tests(&db, TOKEN);
    config.users = vec![UserConfig {
        name: "oncall".into(),
        password_hash: stormwatch_web::auth::hash_password("pager duty").unwrap(),
        role: stormwatch_web::Role::Viewer,
    }];
    config.read_tokens = vec![READ.into()];
    let c = start(config).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http.get(c.endpoint("/")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/login?next=/");
    let res = http
        .get(c.endpoint("/api/v1/services"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = http
        .get(c.endpoint("/api/v1/services"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "an ingest token is not a read token");
    let res = http
        .get(c.endpoint("/api/v1/services"))
        .bearer_auth(READ)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    // Ingest: a read token is not an agent token.
    let res = http
        .post(c.endpoint("/api/v1/ingest"))
        .bearer_auth(READ)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    // Sign in, then the session reads pages and the API.
    let res = http
        .post(c.endpoint("/login"))
        .form(&[
            ("user", "oncall"),
            ("password", "pager duty"),
            ("next", "/hosts"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for path in ["/hosts", "/api/v1/services"] {
        let res = http
            .get(c.endpoint(path))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
    }
    // Guessing from one address: five failures, then 429 with Retry-After (the collector gives
    // the dashboard the peer's address). A session already signed in is not affected.
    let guess = || {
        http.post(c.endpoint("/login"))
            .form(&[("user", "oncall"), ("password", "guess")])
            .send()
    };
    for _ in 0..stormwatch_web::login_limit::MAX_FAILURES_PER_ADDRESS {
        assert_eq!(guess().await.unwrap().status(), 401);
    }
    let res = guess().await.unwrap();
    assert_eq!(res.status(), 429);
    assert!(res.headers().contains_key("retry-after"));
    let res = http
        .get(c.endpoint("/hosts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    c.stop().await;
}

#[test]
fn hash_password_prints_an_argon2_hash_that_signs_in() {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stormwatch-collector"))
        .arg("--hash-password")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"pager duty\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let auth = stormwatch_web::Auth::new(stormwatch_web::AuthOptions {
        users: vec![stormwatch_web::User {
            name: "oncall".into(),
            password_hash: hash,
            role: stormwatch_web::Role::Admin,
        }],
        ..Default::default()
    });
    assert!(auth.login("oncall", "pager duty").is_some());
    assert!(auth.login("oncall", "pager duty ").is_none());
}

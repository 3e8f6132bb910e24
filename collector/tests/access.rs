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
    assert_eq!(
        auth.verify("oncall", "pager duty"),
        Some(stormwatch_web::Role::Admin)
    );
    assert!(auth.verify("oncall", "pager duty ").is_none());
}

/// A channel whose secret's environment variable is missing is an unusable config: exit 64
/// with the file and the variable named, before anything starts (it used to exit 1).
#[test]
fn a_channel_whose_variable_is_missing_exits_64_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(
        &path,
        "[alerts]\n[[alerts.channels]]\nname = \"oncall\"\ntype = \"slack\"\nurl_env = \"SW_TEST_UNSET_HOOK_VAR\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stormwatch-collector"))
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("SW_TEST_UNSET_HOOK_VAR")
        .env_remove("STORMWATCH_SLACK_WEBHOOK_URL")
        .env_remove("SLACK_WEBHOOK_URL")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{log}");
    assert!(log.contains("SW_TEST_UNSET_HOOK_VAR"), "{log}");
    assert!(log.contains("collector.toml"), "{log}");
}

/// The collector binary on a free loopback port over `db`, with `config` as its config file and
/// its log (at `log_level`) in `<dir>/log`, once `/healthz` answers.
async fn spawn_binary(
    db: &str,
    config: &str,
    log_level: &str,
) -> (std::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("collector.toml");
    std::fs::write(&path, config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stormwatch-collector"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--database-url",
            db,
        ])
        .arg("--config")
        .arg(&path)
        .arg("--data-dir")
        .arg(dir.path())
        .env("STORMWATCH_LOG", log_level)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..400 {
        if reqwest::get(format!("{base}/healthz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return (child, base, dir);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "the collector did not start: {}",
        std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
    );
}

fn one_user_config() -> String {
    let hash = stormwatch_web::auth::hash_password("pager duty").unwrap();
    format!("[[users]]\nname = \"oncall\"\npassword_hash = \"{hash}\"\nrole = \"admin\"\n")
}

/// tokio-postgres writes every query's parameters to its debug log: a session token passed
/// as one (to be hashed by PostgreSQL) was in the log of any collector run with
/// `STORMWATCH_LOG=debug`. Run the binary so, sign in, use and end the session, and read the log.
#[tokio::test]
async fn session_tokens_never_reach_the_debug_log() {
    let db = stormwatch_testkit::fresh_database().await;
    let (mut child, base, dir) = spawn_binary(&db, &one_user_config(), "debug").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = http
        .post(format!("{base}/login"))
        .form(&[
            ("user", "oncall"),
            ("password", "pager duty"),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let token = cookie.split_once('=').unwrap().1.to_owned();
    assert!(token.len() >= 32, "{cookie}");
    let page = http
        .get(format!("{base}/hosts"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let out = http
        .post(format!("{base}/logout"))
        .header("origin", &base)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        text.contains("DEBUG") && text.contains("sw_sessions"),
        "the log is at debug level and shows the session queries"
    );
    assert!(
        !text.contains(&token),
        "the session token is in the debug log"
    );
}

/// Resident memory of a process, bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// 150 concurrent wrong sign-ins from 30 addresses (5 each: within every address's rate
/// limit) made 150 argon2 verifications of 19 MiB at once: the collector went from 1 GB to
/// 3.9 GB and kept it. Verifications are capped process-wide; the rest get 429.
#[tokio::test]
async fn a_sign_in_flood_is_turned_away_and_memory_stays_flat() {
    let db = stormwatch_testkit::fresh_database().await;
    let (mut child, base, _dir) = spawn_binary(&db, &one_user_config(), "warn").await;
    let pid = child.id();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |http: reqwest::Client, user: &'static str, password: &'static str| {
        let url = format!("{base}/login");
        async move {
            http.post(url)
                .form(&[("user", user), ("password", password), ("next", "/")])
                .send()
                .await
                .unwrap()
        }
    };
    // One sign-in first: the baseline includes what one verification leaves behind.
    assert_eq!(
        sign_in(http.clone(), "oncall", "pager duty").await.status(),
        303
    );
    let before = rss(pid);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let mut flood = Vec::new();
    for a in 0..30u8 {
        let client = reqwest::Client::builder()
            .local_address(std::net::IpAddr::from([127, 0, 0, 2 + a]))
            .build()
            .unwrap();
        for _ in 0..5 {
            flood.push(tokio::spawn(sign_in(client.clone(), "oncall", "guess")));
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for r in flood {
        let r = r.await.unwrap();
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
        }
        *statuses.entry(r.status().as_u16()).or_insert(0) += 1;
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    watcher.join().unwrap();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    println!(
        "sign-in flood: {statuses:?}; RSS {} MB before, peak +{} MB",
        before >> 20,
        grew >> 20
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [401, 429],
        "every guess is refused or turned away: {statuses:?}"
    );
    assert!(grew < 100 << 20, "RSS grew by {} MB", grew >> 20);
    // The real user, from another address, still signs in.
    assert_eq!(
        sign_in(http.clone(), "oncall", "pager duty").await.status(),
        303
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

fn with_users(db: &str, users: &[(&str, stormwatch_web::Role)]) -> Config {
    let mut config = Config::for_tests(db, TOKEN);
    config.users = users
        .iter()
        .map(|(name, role)| UserConfig {
            name: (*name).into(),
            password_hash: stormwatch_web::auth::hash_password("pager duty").unwrap(),
            role: *role,
        })
        .collect();
    config
}

/// Signs in; the `name=value` of the session cookie.
async fn sign_in(http: &reqwest::Client, c: &common::Running, user: &str) -> String {
    let res = http
        .post(c.endpoint("/login"))
        .form(&[("user", user), ("password", "pager duty"), ("next", "/")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let cookie = res.headers()["set-cookie"].to_str().unwrap();
    cookie.split(';').next().unwrap().to_owned()
}

async fn status(http: &reqwest::Client, c: &common::Running, path: &str, cookie: &str) -> u16 {
    http.get(c.endpoint(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn sessions_are_shared_by_collectors_and_outlive_a_restart() {
    use stormwatch_web::Role::{Admin, Viewer};
    let db = stormwatch_testkit::fresh_database().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let a = start(with_users(&db, &[("oncall", Admin), ("intern", Admin)])).await;
    let b = start(with_users(&db, &[("oncall", Admin), ("intern", Viewer)])).await;
    // Signed in on one collector, signed in on the other (as behind a load balancer).
    let oncall = sign_in(&http, &a, "oncall").await;
    assert_eq!(status(&http, &b, "/hosts", &oncall).await, 200);
    assert_eq!(status(&http, &b, "/api/v1/services", &oncall).await, 200);
    // The role is each collector's configured one, not the one at sign-in.
    let intern = sign_in(&http, &a, "intern").await;
    let silence = |c: &common::Running, cookie: String| {
        let host = c.addr.to_string();
        http.post(c.endpoint("/alerts/silences"))
            .header("cookie", cookie)
            .header("origin", format!("http://{host}"))
            .form(&[("rule", "x"), ("labels", "nonsense"), ("duration", "1h")])
            .send()
    };
    assert_eq!(
        silence(&a, intern.clone()).await.unwrap().status(),
        400,
        "admin on a"
    );
    assert_eq!(
        silence(&b, intern.clone()).await.unwrap().status(),
        403,
        "viewer on b"
    );
    // The table keeps no token that signs in: only its SHA-256.
    let token = oncall.split_once('=').unwrap().1.to_owned();
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT token_sha256, user_name FROM sw_sessions", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let stored: Vec<u8> = r.get(0);
        assert_eq!(stored.len(), 32);
        assert_ne!(stored, token.as_bytes());
    }
    // Signing out on one collector ends the session on both.
    let res = http
        .post(b.endpoint("/logout"))
        .header("origin", format!("http://{}", b.addr))
        .header("cookie", &oncall)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(status(&http, &a, "/hosts", &oncall).await, 303);
    assert_eq!(status(&http, &a, "/api/v1/services", &oncall).await, 401);
    // A restart keeps sessions; a user taken out of the config is signed out.
    a.stop().await;
    b.stop().await;
    let a = start(with_users(&db, &[("oncall", Admin)])).await;
    assert_eq!(
        status(&http, &a, "/hosts", &intern).await,
        303,
        "intern was removed"
    );
    let oncall = sign_in(&http, &a, "oncall").await;
    a.stop().await;
    let a = start(with_users(&db, &[("oncall", Admin)])).await;
    assert_eq!(
        status(&http, &a, "/hosts", &oncall).await,
        200,
        "after a restart"
    );
    a.stop().await;
}

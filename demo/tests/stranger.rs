//! End to end on an app nobody here wrote: `stranger/app.py`, a Flask shop on PyMySQL with a
//! MariaDB primary + replica, Redis and a `pricing` service over `requests`, traced by the
//! stock OpenTelemetry auto-instrumentation and configured only by `OTEL_*` variables (the
//! SDK's default 5 s export delay included). Stormwatch runs with **default rules only**: the
//! collector's config has a webhook channel and nothing else; the agent's names the two
//! databases (as agent.example.toml shows) and the cache.
//!
//! The outage's five incidents are injected into the real servers, one after another:
//! Redis slowed (`DEBUG SLEEP`), the replica's SQL thread stopped, `pricing` slowed, the
//! primary's `max_connections` taken, an upload flood. Every incident must alert within
//! [`ONSET_MS`] of its start, each expected alert must fire during it naming the right thing
//! (the peer, the database, the endpoint) and resolve within [`RESOLVE_MS`] of its end, each
//! must form one incident whose probable cause names the culprit, and nothing may fire (nor
//! an incident open) outside the incidents.
//!
//! Needs Python 3 with venv (the test installs `stranger/requirements.txt` into
//! `target/tmp/stranger-venv` on first run, from PyPI), MariaDB's server and redis-server
//! (`./scripts/test` installs them). About 8 minutes.

#[path = "../../agent/tests/dbservers/mod.rs"]
mod dbservers;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dbservers::{free_port, MariaDb};
use stormwatch_agent::config::Overrides;
use stormwatch_agent::reload::Source;
use stormwatch_agent::Agent;
use stormwatch_collector::config::{Config, Flags};
use stormwatch_collector::Collector;
use stormwatch_demo::scenario::unix_ms;
use stormwatch_demo::slack::{webhook_alerts, SlackPage};

/// An incident must alert this soon after its onset.
const ONSET_MS: i64 = 10_000;
/// …and resolve this soon after its end.
const RESOLVE_MS: i64 = 60_000;
/// How long each incident lasts.
const INCIDENT: Duration = Duration::from_secs(30);
/// Quiet time before the first incident (the peers' baselines) and after each one.
const WARM_UP: Duration = Duration::from_secs(60);
const QUIET: Duration = Duration::from_secs(50);

const SHOP_PRIMARY: &str = "shop-primary";
const SHOP_REPLICA: &str = "shop-replica";
const SHOP_CACHE: &str = "shop-cache";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// The venv with the shop's requirements, made once per target directory.
fn venv() -> PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("stranger-venv");
    let requirements = root().join("stranger/requirements.txt");
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) {
        return venv;
    }
    let run = |c: &mut Command, what: &str| {
        let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            out.status.success(),
            "{what} failed (needs python3-venv and PyPI): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "-q", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        "pip install -r stranger/requirements.txt",
    );
    std::fs::write(&stamp, wanted).unwrap();
    venv
}

/// One of the shop's processes, killed on drop.
struct App(std::process::Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_app(venv: &Path, service: &str, args: &[String], otlp: &str, logs: &Path) -> App {
    let log = std::fs::File::create(logs.join(format!("{service}.log"))).unwrap();
    let child = Command::new(venv.join("bin/opentelemetry-instrument"))
        .arg(venv.join("bin/python"))
        .arg(root().join("stranger/app.py"))
        .arg(service)
        .args(args)
        // Only the standard variables, as a stranger would set them.
        .env("OTEL_SERVICE_NAME", service)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        // Metrics and logs too, as the SDK's own settings: the Flask instrumentation's
        // active requests and durations every 5 s (the SDK's default is 60 s), and Python's
        // logging records (Flask logs each unhandled exception at ERROR, in its trace).
        .env("OTEL_METRICS_EXPORTER", "otlp")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "5000")
        .env("OTEL_LOGS_EXPORTER", "otlp")
        .env("OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED", "true")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start the shop under opentelemetry-instrument");
    App(child)
}

async fn wait_healthy(url: &str, logs: &Path, service: &str) {
    let http = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(r) = http.get(format!("{url}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{service} did not start: {}",
        std::fs::read_to_string(logs.join(format!("{service}.log"))).unwrap_or_default()
    );
}

/// What an incident must raise: a rule, and text its labels or summary must hold.
struct Expect {
    rule: &'static str,
    names: &'static [&'static str],
}

struct Incident {
    name: &'static str,
    /// What its probable cause must name.
    culprit: &'static str,
    /// The endpoint its cause must say the culprit slowed, when it is a slow dependency.
    slowed: Option<&'static str>,
    expect: Vec<Expect>,
    onset_ms: i64,
    end_ms: i64,
}

/// Steady users: list pages, orders, now and then an upload.
fn traffic(
    shop: String,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let mut tasks = Vec::new();
    // (path, method, every ms, body bytes)
    let users: [(&str, &str, u64, usize); 6] = [
        ("/items?category=books", "GET", 250, 0),
        ("/items?category=games", "GET", 300, 0),
        ("/items?category=music", "GET", 400, 0),
        ("/items?category=tools", "GET", 500, 0),
        ("/orders", "POST", 500, 0),
        ("/upload", "POST", 2_000, 64 * 1024),
    ];
    for (path, method, every, bytes) in users {
        let (http, shop, stop, sent) = (http.clone(), shop.clone(), stop.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(every));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (http, url) = (http.clone(), format!("{shop}{path}"));
                let body = vec![b'x'; bytes];
                let post = method == "POST";
                sent.fetch_add(1, Ordering::Relaxed);
                // Each request on its own task: a slow answer does not slow the users down.
                tokio::spawn(async move {
                    let r = if post {
                        let body = if bytes > 0 {
                            body
                        } else {
                            br#"{"item_id": 7, "quantity": 1}"#.to_vec()
                        };
                        http.post(url).body(body).send().await
                    } else {
                        http.get(url).send().await
                    };
                    drop(r);
                });
            }
        }));
    }
    tasks
}

/// `n` clients posting 1 MiB uploads back to back until `stop`.
fn upload_flood(shop: String, n: usize, stop: Arc<AtomicBool>) -> Vec<tokio::task::JoinHandle<()>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    (0..n)
        .map(|_| {
            let (http, shop, stop) = (http.clone(), shop.clone(), stop.clone());
            tokio::spawn(async move {
                let body = bytes::Bytes::from(vec![b'u'; 1 << 20]);
                while !stop.load(Ordering::Relaxed) {
                    let _ = http
                        .post(format!("{shop}/upload"))
                        .body(body.clone())
                        .send()
                        .await;
                }
            })
        })
        .collect()
}

/// Something that takes every connection of a MariaDB server and keeps taking each one freed
/// (a connection leak, a runaway batch job), until stopped. Held from this process, so the
/// test knows the server really refuses before it counts the incident's onset.
struct Hogs {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Hogs {
    /// Returns once the server has refused a connection (its `max_connections` are taken).
    async fn take(db: &MariaDb) -> Hogs {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname("127.0.0.1")
            .tcp_port(db.port)
            .user(Some("hog"))
            .pass(Some("pw"))
            .prefer_socket(false);
        let stop = Arc::new(AtomicBool::new(false));
        let (full_tx, full_rx) = tokio::sync::oneshot::channel::<Result<usize, String>>();
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut held = Vec::new();
                let mut full = Some(full_tx);
                let mut last_error = String::new();
                let started = std::time::Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match mysql_async::Conn::new(opts.clone()).await {
                        Ok(c) => held.push(c),
                        Err(e) => {
                            last_error = e.to_string();
                            if last_error.contains("Too many connections") {
                                if let Some(tx) = full.take() {
                                    let _ = tx.send(Ok(held.len()));
                                }
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                    if full.is_some() && started.elapsed() > Duration::from_secs(20) {
                        let _ = full.take().map(|tx| {
                            tx.send(Err(format!(
                                "{} connections held, never refused; last error: {last_error:?}",
                                held.len()
                            )))
                        });
                        break;
                    }
                }
                let n = held.len();
                for c in held {
                    let _ = c.disconnect().await;
                }
                n
            }
        });
        match full_rx.await {
            Ok(Ok(n)) => eprintln!("hogs hold {n} connections of the primary; it refuses more"),
            Ok(Err(e)) => panic!("the primary never refused a connection: {e}"),
            Err(_) => panic!("the hogs' task ended early: {:?}", task.await),
        }
        Hogs { stop, task }
    }

    /// Gives every connection back; returns how many were held at the end.
    async fn release(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_strangers_flask_app_is_caught_by_the_default_rules() {
    assert!(
        dbservers::mariadb_available(),
        "MariaDB's server is missing: ./scripts/test installs it (apt install mariadb-server)"
    );
    let venv = venv();
    let work = tempfile::Builder::new()
        .prefix("stormwatch-stranger-")
        .tempdir()
        .unwrap();
    let logs = work.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    // The shop's databases: a MariaDB primary and a replica, users as a DBA would make them.
    let primary = MariaDb::start(1);
    let replica = MariaDb::start(2);
    replica.replicate_from(&primary);
    primary.sql(
        "CREATE DATABASE shop; \
         CREATE USER 'shop'@'127.0.0.1' IDENTIFIED BY 'pw'; \
         GRANT ALL ON shop.* TO 'shop'@'127.0.0.1'; \
         CREATE USER 'hog'@'127.0.0.1' IDENTIFIED BY 'pw'; \
         GRANT USAGE ON *.* TO 'hog'@'127.0.0.1'; \
         CREATE DATABASE stormwatch; \
         CREATE USER 'stormwatch'@'127.0.0.1' IDENTIFIED BY 'pw'; \
         GRANT SLAVE MONITOR ON *.* TO 'stormwatch'@'127.0.0.1'; \
         GRANT CREATE, SELECT, INSERT, UPDATE, DELETE ON stormwatch.* TO 'stormwatch'@'127.0.0.1'",
    );
    let redis = stormwatch_testkit::redis::start_with(&["--enable-debug-command", "local"]);

    // Stormwatch: the webhook receiver, a collector with default rules, an agent.
    let (receiver, _receiver_task) = SlackPage::start(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let collector_toml = work.path().join("collector.toml");
    std::fs::write(
        &collector_toml,
        format!(
            "[[alerts.channels]]\nname = \"on-call\"\ntype = \"webhook\"\nurl = \"http://{}/webhook\"\n",
            receiver.addr
        ),
    )
    .unwrap();
    let config = Config::load(Flags {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        data_dir: Some(work.path().join("collector")),
        config: Some(collector_toml),
        ..Default::default()
    })
    .unwrap();
    let collector = Collector::start(config).await.unwrap();
    let collector_url = format!("http://{}", collector.local_addr());
    let token = collector.state.config().ingest_tokens[0].clone();
    let (stop_collector, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(collector.serve(async move {
        let _ = stopped.await;
    }));

    let agent_toml = work.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            r#"[[database]]
name = "{SHOP_PRIMARY}"
engine = "mysql"
role = "primary"
url = "mysql://stormwatch:pw@127.0.0.1:{p}/"
heartbeat = "stormwatch.heartbeat"

[[database]]
name = "{SHOP_REPLICA}"
engine = "mysql"
role = "replica"
url = "mysql://stormwatch:pw@127.0.0.1:{r}/"
heartbeat = "stormwatch.heartbeat"

[peer_names]
"127.0.0.1:{redis}" = "{SHOP_CACHE}"
"#,
            p = primary.port,
            r = replica.port,
            redis = redis.port(),
        ),
    )
    .unwrap();
    let otlp_port = free_port();
    let overrides = Overrides {
        collector: Some(collector_url.clone()),
        token: Some(token),
        agent_id: Some("shop-host".into()),
        otlp_http: Some(format!("127.0.0.1:{otlp_port}")),
        otlp_grpc: Some(String::new()),
        zipkin: Some(String::new()),
        admin: Some(format!("127.0.0.1:{}", free_port())),
        spool_dir: Some(work.path().join("agent-spool")),
    };
    let agent_config = stormwatch_agent::config::load(Some(&agent_toml), &overrides).unwrap();
    let agent = Agent::start(
        agent_config,
        Source {
            path: Some(agent_toml.clone()),
            overrides,
        },
    )
    .await
    .unwrap();

    // The shop and its partner, under the stock auto-instrumentation.
    let otlp = format!("http://127.0.0.1:{otlp_port}");
    let pricing_url = format!("http://127.0.0.1:{}", free_port());
    let shop_url = format!("http://127.0.0.1:{}", free_port());
    let _pricing = start_app(
        &venv,
        "pricing",
        &["--listen".into(), pricing_url["http://".len()..].to_owned()],
        &otlp,
        &logs,
    );
    wait_healthy(&pricing_url, &logs, "pricing").await;
    let mysql = |db: &MariaDb| format!("mysql://shop:pw@127.0.0.1:{}/shop", db.port);
    let _shop = start_app(
        &venv,
        "shop",
        &[
            "--listen".into(),
            shop_url["http://".len()..].to_owned(),
            "--primary".into(),
            mysql(&primary),
            "--replica".into(),
            mysql(&replica),
            "--redis".into(),
            format!("redis://127.0.0.1:{}", redis.port()),
            "--pricing".into(),
            pricing_url.clone(),
        ],
        &otlp,
        &logs,
    );
    wait_healthy(&shop_url, &logs, "shop").await;

    // Warm the shop up one request at a time, as a deploy's health checks would: its first
    // requests (cold connections, the SDK's first exports) are slow enough to fill its
    // limiter if all users arrive at once.
    let http = reqwest::Client::new();
    for category in ["books", "games", "music", "tools"] {
        for _ in 0..5 {
            let _ = http
                .get(format!("{shop_url}/items?category={category}"))
                .send()
                .await;
        }
    }
    let stop_traffic = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let users = traffic(shop_url.clone(), stop_traffic.clone(), sent.clone());
    let test_start = unix_ms();
    tokio::time::sleep(WARM_UP).await;

    let mut incidents = Vec::new();

    // 1. Redis slows down: every command waits behind DEBUG SLEEP.
    {
        let onset_ms = unix_ms();
        let stop = Arc::new(AtomicBool::new(false));
        let port = redis.port();
        let sleeper = {
            let stop = stop.clone();
            tokio::task::spawn_blocking(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = Command::new("redis-cli")
                        .args(["-p", &port.to_string(), "DEBUG", "SLEEP", "0.5"])
                        .output();
                }
            })
        };
        tokio::time::sleep(INCIDENT).await;
        stop.store(true, Ordering::Relaxed);
        sleeper.await.unwrap();
        incidents.push(Incident {
            name: "redis slowed",
            culprit: SHOP_CACHE,
            slowed: None,
            expect: vec![
                Expect {
                    rule: "dependency-latency",
                    names: &[SHOP_CACHE],
                },
                Expect {
                    rule: "http-5xx-rate",
                    names: &["GET /items"],
                },
            ],
            onset_ms,
            end_ms: unix_ms(),
        });
        tokio::time::sleep(QUIET).await;
    }

    // 2. The replica's SQL thread stops: it falls behind while the primary is fine.
    {
        let onset_ms = unix_ms();
        replica.sql("STOP SLAVE SQL_THREAD");
        tokio::time::sleep(INCIDENT).await;
        replica.sql("START SLAVE SQL_THREAD");
        incidents.push(Incident {
            name: "replica behind",
            culprit: SHOP_REPLICA,
            slowed: None,
            expect: vec![Expect {
                rule: "replica-lag",
                names: &[SHOP_REPLICA],
            }],
            onset_ms,
            end_ms: unix_ms(),
        });
        tokio::time::sleep(QUIET).await;
    }

    // 3. The other team's service turns slow.
    {
        let onset_ms = unix_ms();
        http.put(format!("{pricing_url}/admin/delay?ms=1500"))
            .send()
            .await
            .unwrap();
        tokio::time::sleep(INCIDENT).await;
        http.put(format!("{pricing_url}/admin/delay?ms=0"))
            .send()
            .await
            .unwrap();
        incidents.push(Incident {
            name: "pricing slow",
            culprit: "pricing",
            // Only the list page calls pricing; the orders beside it must not be blamed.
            slowed: Some("GET /items"),
            // Pages wait on pricing, so the page limiter fills as it did for Redis.
            expect: vec![
                Expect {
                    rule: "dependency-latency",
                    names: &["pricing"],
                },
                Expect {
                    rule: "http-5xx-rate",
                    names: &["GET /items"],
                },
            ],
            onset_ms,
            end_ms: unix_ms(),
        });
        tokio::time::sleep(QUIET).await;
    }

    // 4. Something takes every connection of the primary (max_connections = 30).
    {
        let hogs = Hogs::take(&primary).await;
        let onset_ms = unix_ms();
        tokio::time::sleep(INCIDENT).await;
        let held = hogs.release().await;
        eprintln!("hogs gave back {held} connections");
        incidents.push(Incident {
            name: "primary refuses connections",
            culprit: SHOP_PRIMARY,
            slowed: None,
            expect: vec![Expect {
                rule: "db-connect-failures",
                names: &[SHOP_PRIMARY],
            }],
            onset_ms,
            end_ms: unix_ms(),
        });
        tokio::time::sleep(QUIET).await;
    }

    // 5. An upload flood fills the upload limiter.
    {
        let onset_ms = unix_ms();
        let stop = Arc::new(AtomicBool::new(false));
        let flood = upload_flood(shop_url.clone(), 16, stop.clone());
        tokio::time::sleep(INCIDENT).await;
        stop.store(true, Ordering::Relaxed);
        for f in flood {
            let _ = f.await;
        }
        incidents.push(Incident {
            name: "upload flood",
            culprit: "POST /upload",
            slowed: None,
            expect: vec![Expect {
                rule: "http-5xx-rate",
                names: &["POST /upload"],
            }],
            onset_ms,
            end_ms: unix_ms(),
        });
    }

    // Wait for the last resolves.
    let last_end = incidents.last().unwrap().end_ms;
    loop {
        let alerts = webhook_alerts(&receiver.messages());
        let mut open = BTreeMap::<(String, String), i64>::new();
        for (t, rule, event, _, labels) in &alerts {
            match event.as_str() {
                "firing" => {
                    open.insert((rule.clone(), labels.clone()), *t);
                }
                "resolved" => {
                    open.remove(&(rule.clone(), labels.clone()));
                }
                _ => {}
            }
        }
        if open.is_empty() || unix_ms() > last_end + RESOLVE_MS + 5_000 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    stop_traffic.store(true, Ordering::Relaxed);
    for u in users {
        let _ = u.await;
    }

    // What arrived, and how it lines up with the incidents.
    let alerts = webhook_alerts(&receiver.messages());
    println!("\nalerts received (s since the test's traffic started):");
    for (t, rule, event, summary, labels) in &alerts {
        println!(
            "  {:>6.1}  {event:<9} {rule:<22} {labels}  {summary}",
            (t - test_start) as f64 / 1000.0
        );
    }
    let mut failures = Vec::new();
    println!("\nincident → alert (onset → webhook received; end → resolved):");
    for inc in &incidents {
        // The incident alerts within ONSET_MS: its first alert (usually the cause: the slow
        // peer, the lag, the refusal). Symptoms that follow it (the limiter's 503s, which the
        // SDK exports up to 5 s later) must fire while the incident lasts.
        let mut first_onset = i64::MAX;
        for e in &inc.expect {
            let mentions = |summary: &str, labels: &str| {
                e.names
                    .iter()
                    .all(|n| summary.contains(n) || labels.contains(n))
            };
            let fired = alerts.iter().find(|(t, rule, event, summary, labels)| {
                rule == e.rule
                    && event == "firing"
                    && *t >= inc.onset_ms
                    && *t <= inc.end_ms
                    && mentions(summary, labels)
            });
            let Some((fired_at, _, _, _, labels)) = fired else {
                failures.push(format!(
                    "{}: no `{}` alert naming {:?} fired during the incident",
                    inc.name, e.rule, e.names
                ));
                continue;
            };
            let resolved = alerts.iter().find(|(t, rule, event, _, l)| {
                rule == e.rule && event == "resolved" && l == labels && *t > *fired_at
            });
            let onset = fired_at - inc.onset_ms;
            let resolve = resolved.map(|r| r.0 - inc.end_ms);
            println!(
                "  {:<28} {:<20} fired {:>5.1} s after onset, resolved {}",
                inc.name,
                e.rule,
                onset as f64 / 1000.0,
                resolve.map_or("never".into(), |r| format!(
                    "{:.1} s after the end",
                    r as f64 / 1000.0
                ))
            );
            first_onset = first_onset.min(onset);
            match resolve {
                Some(r) if r <= RESOLVE_MS => {}
                Some(r) => failures.push(format!(
                    "{}: `{}` resolved {r} ms after the end (limit {RESOLVE_MS})",
                    inc.name, e.rule
                )),
                None => failures.push(format!("{}: `{}` never resolved", inc.name, e.rule)),
            }
        }
        if first_onset != i64::MAX && first_onset > ONSET_MS {
            failures.push(format!(
                "{}: its first alert came {first_onset} ms after onset (limit {ONSET_MS})",
                inc.name
            ));
        }
    }
    // Nothing fires outside an incident (from its onset to the end of its resolve limit), and
    // an alert that names one incident's culprit fires only in that incident: the upload
    // flood's busy CPU must not page about the cache.
    let window = |i: &Incident, t: i64| t >= i.onset_ms && t <= i.end_ms + RESOLVE_MS;
    for (t, rule, event, summary, labels) in &alerts {
        if event != "firing" {
            continue;
        }
        let owners: Vec<&Incident> = incidents
            .iter()
            .filter(|i| {
                i.expect.iter().any(|e| {
                    e.rule == rule
                        && e.names
                            .iter()
                            .all(|n| summary.contains(n) || labels.contains(n))
                })
            })
            .collect();
        let inside = if owners.is_empty() {
            incidents.iter().any(|i| window(i, *t))
        } else {
            owners.iter().any(|i| window(i, *t))
        };
        if !inside {
            let whose: Vec<&str> = owners.iter().map(|i| i.name).collect();
            failures.push(format!(
                "`{rule}` fired outside {}, {:.1} s after traffic started: {summary} {labels}",
                if whose.is_empty() {
                    "every incident".to_owned()
                } else {
                    format!("its incidents ({})", whose.join(", "))
                },
                (t - test_start) as f64 / 1000.0
            ));
        }
    }
    // One incident per injected fault, its probable cause naming the culprit; none in the calm.
    let incident_of = |inc: &Incident, rule: &str, names: &[&str]| -> Vec<i64> {
        let mut ids: Vec<i64> = receiver
            .messages()
            .iter()
            .filter(|m| {
                m.kind == "webhook" && m.at_ms >= inc.onset_ms && m.at_ms <= inc.end_ms + RESOLVE_MS
            })
            .flat_map(|m| m.body["alerts"].as_array().cloned().unwrap_or_default())
            .filter(|a| {
                let text = format!("{} {}", a["summary"], a["labels"]);
                a["rule"] == rule && names.iter().all(|n| text.contains(n))
            })
            .filter_map(|a| a["incident"]["id"].as_i64())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    let api: serde_json::Value = reqwest::get(format!(
        "{collector_url}/api/v1/incidents?from={}&to={}",
        test_start - 60_000,
        unix_ms() + 1_000
    ))
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let stored = api["incidents"].as_array().cloned().unwrap_or_default();
    println!("\nincidents:");
    for i in &stored {
        println!(
            "  #{} opened {:>6.1} s: {} — cause: {} ({} alerts)",
            i["id"],
            (i["opened"].as_f64().unwrap_or(0.0) * 1000.0 - test_start as f64) / 1000.0,
            i["title"].as_str().unwrap_or(""),
            i["cause_text"].as_str().unwrap_or(""),
            i["alerts"].as_array().map_or(0, |a| a.len())
        );
    }
    for inc in &incidents {
        let mut ids: Vec<i64> = inc
            .expect
            .iter()
            .flat_map(|e| incident_of(inc, e.rule, e.names))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != 1 {
            failures.push(format!(
                "{}: its alerts belong to {} incidents ({ids:?}), not one",
                inc.name,
                ids.len()
            ));
            continue;
        }
        let cause = stored
            .iter()
            .find(|i| i["id"].as_i64() == Some(ids[0]))
            .and_then(|i| i["cause_text"].as_str())
            .unwrap_or("");
        if !cause.contains(inc.culprit) {
            failures.push(format!(
                "{}: incident #{}'s probable cause does not name {}: {cause:?}",
                inc.name, ids[0], inc.culprit
            ));
        }
        if let Some(op) = inc.slowed.filter(|op| !cause.contains(op)) {
            failures.push(format!(
                "{}: incident #{}'s probable cause does not name the endpoint it slowed, {op}: {cause:?}",
                inc.name, ids[0]
            ));
        }
    }
    for i in &stored {
        let opened_ms = (i["opened"].as_f64().unwrap_or(0.0) * 1000.0) as i64;
        if !incidents
            .iter()
            .any(|w| opened_ms >= w.onset_ms - 1_000 && opened_ms <= w.end_ms + RESOLVE_MS)
        {
            failures.push(format!(
                "incident #{} opened outside every incident: {}",
                i["id"], i["title"]
            ));
        }
    }
    signals_reached_the_collector(&collector_url, test_start, &mut failures).await;
    println!(
        "\n{} requests sent; logs in {}",
        sent.load(Ordering::Relaxed),
        logs.display()
    );

    agent.shutdown(Duration::from_secs(5)).await;
    let _ = stop_collector.send(());
    let _ = serving.await;
    if !failures.is_empty() {
        let kept = work.keep();
        panic!(
            "{} failure(s):\n  {}\n(work directory kept: {})",
            failures.len(),
            failures.join("\n  "),
            kept.display()
        );
    }
}

/// The stock SDK's metrics and logs reached the collector through the agent: the Flask
/// instrumentation's in-flight and duration series, and Flask's ERROR records of the orders
/// that failed while the primary refused connections, in their traces.
async fn signals_reached_the_collector(url: &str, test_start: i64, failures: &mut Vec<String>) {
    let window = format!("from={}&to={}", test_start - 60_000, unix_ms() + 60_000);
    let get = |path: String| async move {
        reqwest::get(format!("{url}{path}"))
            .await
            .unwrap()
            .json::<serde_json::Value>()
            .await
            .unwrap()
    };
    let names = get(format!("/api/v1/metrics/names?service=shop&{window}")).await;
    let names: Vec<&str> = names["metrics"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default();
    println!("\nshop's metrics: {names:?}");
    if !names.contains(&"http.server.active_requests")
        || !names
            .iter()
            .any(|n| n.starts_with("http.server") && n.contains("duration"))
    {
        failures.push(format!(
            "the Flask instrumentation's http.server.active_requests and duration did not reach the collector: {names:?}"
        ));
    }
    let active = get(format!(
        "/api/v1/metrics?name=http.server.active_requests&service=shop&step=1m&{window}"
    ))
    .await;
    let points: usize = active["series"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| s["points"].as_array().map_or(0, Vec::len))
                .sum()
        })
        .unwrap_or(0);
    if points == 0 {
        failures.push(format!(
            "http.server.active_requests of shop has no points: {active}"
        ));
    }
    let errors = get(format!(
        "/api/v1/logs?service=shop&severity=ERROR&limit=1000&{window}"
    ))
    .await;
    let records = errors["logs"].as_array().cloned().unwrap_or_default();
    let traced: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| {
            r["trace_id"].is_string() && r["body"].as_str().is_some_and(|b| b.contains("/orders"))
        })
        .collect();
    println!(
        "shop's ERROR log records: {} ({} of failed orders, in their traces)",
        records.len(),
        traced.len()
    );
    let Some(first) = traced.first() else {
        failures.push(format!(
            "no ERROR record of a failed order with its trace id reached the collector: {records:?}"
        ));
        return;
    };
    let trace_id = first["trace_id"].as_str().unwrap_or_default();
    let trace = get(format!("/api/v1/traces/{trace_id}")).await;
    if trace["spans"].as_array().is_none_or(Vec::is_empty) {
        failures.push(format!(
            "the failed order's trace {trace_id} of the log record is not stored: {trace}"
        ));
    }
    let by_trace = get(format!("/api/v1/logs?trace_id={trace_id}")).await;
    if by_trace["logs"].as_array().is_none_or(Vec::is_empty) {
        failures.push(format!(
            "the log record is not found by its trace {trace_id}"
        ));
    }
}

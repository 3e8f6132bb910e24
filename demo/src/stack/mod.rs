//! The incident stack: every server the demo runs, started in order and stopped in reverse.
//!
//! 1. the local Slack page (the alert channels' receiver);
//! 2. the app's PostgreSQL primary and streaming replica, and Redis;
//! 3. the collector (dashboard, alerts) on its own embedded PostgreSQL, with the demo's
//!    config (rules for every incident, the demo user, channels to the Slack page);
//! 4. one agent, probing the app's primary and replica, receiving the apps' OTLP;
//! 5. the partner and the board (`stormwatch-board`'s binaries, found next to ours).
//!
//! Everything listens on loopback. A watchdog process stops the servers if this process dies
//! without running [`Stack::shutdown`].

pub mod postgres;
pub mod process;
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use stormwatch_agent::config::Overrides;
use stormwatch_agent::reload::Source;
use stormwatch_agent::Agent;
use stormwatch_collector::config::{Config, Flags};
use stormwatch_collector::Collector;

use crate::config::{self, Channels, DEMO_USER};
use crate::slack::SlackPage;
use postgres::AppDatabases;
use process::Child;

/// The agent's id (the dashboard's agent and host name).
pub const AGENT_ID: &str = "demo-host";

/// Where everything listens and lives.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// The data directory (reused by the next run).
    pub data_dir: PathBuf,
    /// The collector: dashboard, APIs.
    pub listen: SocketAddr,
    /// The agent's receivers and admin port ("" disables gRPC / Zipkin).
    pub otlp_http: String,
    pub otlp_grpc: String,
    pub zipkin: String,
    pub agent_admin: String,
    /// The local Slack page.
    pub slack_listen: SocketAddr,
    /// The app's PostgreSQL primary and replica, and Redis.
    pub primary_port: u16,
    pub replica_port: u16,
    pub redis_port: u16,
    /// The board and the partner.
    pub board_listen: SocketAddr,
    pub partner_listen: SocketAddr,
    /// Where `stormwatch-board` and `stormwatch-partner` are (default: next to this
    /// executable, or its parent directory for test binaries in `deps/`).
    pub bin_dir: Option<PathBuf>,
    /// The board's concurrency limit (503 beyond it) for its pages and for uploads.
    pub max_concurrent: u32,
    pub uploads_max_concurrent: u32,
    /// Posts the board seeds on its first start (100 per class).
    pub seed_posts: u32,
}

/// The running stack.
pub struct Stack {
    pub opts: StackOptions,
    /// `http://127.0.0.1:6100`
    pub dashboard_url: String,
    pub login_user: String,
    pub login_password: String,
    pub slack: SlackPage,
    /// `http://…/v1/traces` of the agent.
    pub otlp_traces_url: String,
    /// The ingest token the agent uses (the history seeder uses it too).
    pub ingest_token: String,
    pub dbs: AppDatabases,
    /// `http://127.0.0.1:port` of the board and of the partner, when they run.
    pub board_url: Option<String>,
    pub partner_url: Option<String>,
    redis: Child,
    board: Option<Child>,
    partner: Option<Child>,
    agent: Option<Agent>,
    stop_collector: Option<tokio::sync::oneshot::Sender<()>>,
    serving: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    slack_task: tokio::task::JoinHandle<()>,
}

/// Finds a binary of the board package.
pub fn find_bin(opts: &StackOptions, name: &str) -> Option<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = &opts.bin_dir {
        dirs.push(d.clone());
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned))
    {
        if exe_dir.file_name().is_some_and(|n| n == "deps") {
            if let Some(p) = exe_dir.parent() {
                dirs.push(p.to_owned());
            }
        }
        dirs.push(exe_dir);
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

impl Stack {
    pub async fn start(opts: StackOptions) -> anyhow::Result<Stack> {
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("creating {}", opts.data_dir.display()))?;
        let data_dir = opts.data_dir.canonicalize()?;
        let logs = data_dir.join("logs");

        let (slack, slack_task) = SlackPage::start(opts.slack_listen).await?;

        let dbs = AppDatabases::start(&data_dir, opts.primary_port, opts.replica_port).await?;
        process::watchdog(&dbs.stop_commands());
        let redis = match redis::start(&data_dir.join("redis"), opts.redis_port, &logs).await {
            Ok(r) => r,
            Err(e) => {
                dbs.stop().await;
                return Err(e);
            }
        };
        let mut stack = Stack {
            dashboard_url: format!("http://{}", opts.listen),
            login_user: DEMO_USER.into(),
            login_password: String::new(),
            slack,
            otlp_traces_url: String::new(),
            ingest_token: String::new(),
            dbs,
            board_url: None,
            partner_url: None,
            redis,
            board: None,
            partner: None,
            agent: None,
            stop_collector: None,
            serving: None,
            slack_task,
            opts,
        };
        if let Err(e) = stack.start_rest(&data_dir, &logs).await {
            stack.shutdown().await;
            return Err(e);
        }
        Ok(stack)
    }

    async fn start_rest(&mut self, data_dir: &Path, logs: &Path) -> anyhow::Result<()> {
        let opts = self.opts.clone();
        // The collector, with the demo's rules, user and channels.
        let password = config::demo_password(data_dir)?;
        let hash = stormwatch_web::auth::hash_password(&password)
            .map_err(|e| anyhow::anyhow!("hashing the demo password: {e}"))?;
        let channels = Channels::new(format!("http://{}", self.slack.addr));
        if let Some(var) = channels.real_slack_env {
            tracing::info!("alerts also go to the Slack webhook in ${var}");
        }
        let config_path =
            config::write_collector_config(data_dir, &self.dashboard_url, &hash, &channels)?;
        let config = Config::load(Flags {
            listen: Some(opts.listen),
            data_dir: Some(data_dir.to_owned()),
            config: Some(config_path),
            // As for the collector itself: a database of your own (a Citus coordinator, say)
            // instead of the embedded cluster.
            database_url: std::env::var("STORMWATCH_DATABASE_URL")
                .ok()
                .filter(|u| !u.trim().is_empty()),
            ..Default::default()
        })?;
        // If we die without shutting down, the collector's embedded cluster stops too.
        process::watchdog(&[postgres::stop_command_for(
            &self.dbs.primary,
            &data_dir.join("postgres"),
        )]);
        let collector = Collector::start(config).await?;
        let addr = collector.local_addr();
        self.dashboard_url = format!("http://{addr}");
        self.login_password = password;
        let token = collector.state.config().ingest_tokens[0].clone();
        self.ingest_token = token.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.serving = Some(tokio::spawn(collector.serve(async move {
            let _ = stopped.await;
        })));
        self.stop_collector = Some(stop);

        // The agent, probing the app's databases.
        let agent_path = config::write_agent_config(
            data_dir,
            &self
                .dbs
                .primary_url(postgres::PROBE_USER, postgres::APP_DATABASE),
            &self
                .dbs
                .replica_url(postgres::PROBE_USER, postgres::APP_DATABASE),
            opts.redis_port,
        )?;
        let source = Source {
            path: Some(agent_path.clone()),
            overrides: Overrides {
                collector: Some(format!("http://{addr}")),
                token: Some(token),
                agent_id: Some(AGENT_ID.into()),
                otlp_http: Some(opts.otlp_http.clone()),
                otlp_grpc: Some(opts.otlp_grpc.clone()),
                zipkin: Some(opts.zipkin.clone()),
                admin: Some(opts.agent_admin.clone()),
                spool_dir: Some(data_dir.join("agent-spool")),
            },
        };
        let agent_config = stormwatch_agent::config::load(Some(&agent_path), &source.overrides)?;
        let agent = Agent::start(agent_config, source)
            .await
            .context("starting the agent")?;
        let otlp = agent
            .otlp_http
            .context("the demo needs the agent's OTLP/HTTP receiver")?;
        self.otlp_traces_url = format!("http://{otlp}/v1/traces");
        self.agent = Some(agent);

        // The partner and the board.
        let (Some(board_bin), Some(partner_bin)) = (
            find_bin(&opts, "stormwatch-board"),
            find_bin(&opts, "stormwatch-partner"),
        ) else {
            bail!("stormwatch-board and stormwatch-partner are not next to this executable: build them with `cargo build -p stormwatch-board` (./scripts/demo does it)");
        };
        let otlp_endpoint = format!("http://{otlp}");
        let mut cmd = tokio::process::Command::new(&partner_bin);
        cmd.arg("--listen")
            .arg(opts.partner_listen.to_string())
            .args([
                "--otlp-endpoint",
                &otlp_endpoint,
                "--service-name",
                "partner",
            ]);
        let partner = Child::spawn("partner", cmd, logs)?;
        let partner_url = format!("http://{}", opts.partner_listen);
        let ready = wait_healthy(&partner, &partner_url, logs).await;
        self.partner = Some(partner);
        ready?;
        self.partner_url = Some(partner_url.clone());

        let mut cmd = tokio::process::Command::new(&board_bin);
        cmd.arg("--listen")
            .arg(opts.board_listen.to_string())
            .arg("--primary-url")
            .arg(
                self.dbs
                    .primary_url(postgres::APP_USER, postgres::APP_DATABASE),
            )
            .arg("--replica-url")
            .arg(
                self.dbs
                    .replica_url(postgres::APP_USER, postgres::APP_DATABASE),
            )
            .arg("--redis-url")
            .arg(format!("redis://127.0.0.1:{}", opts.redis_port))
            .arg("--partner-url")
            .arg(&partner_url)
            .args(["--otlp-endpoint", &otlp_endpoint, "--service-name", "board"])
            .arg("--max-concurrent")
            .arg(opts.max_concurrent.to_string())
            .arg("--uploads-max-concurrent")
            .arg(opts.uploads_max_concurrent.to_string())
            .arg("--seed-posts")
            .arg(opts.seed_posts.to_string());
        let board = Child::spawn("board", cmd, logs)?;
        let board_url = format!("http://{}", opts.board_listen);
        let ready = wait_healthy(&board, &board_url, logs).await;
        self.board = Some(board);
        ready?;
        self.board_url = Some(board_url);
        Ok(())
    }

    /// Stops everything this stack started, in reverse order: the apps (they flush their
    /// spans), the agent (ships what it holds), the collector (and its embedded PostgreSQL),
    /// Redis, the app's databases.
    pub async fn shutdown(mut self) {
        if let Some(b) = self.board.take() {
            b.stop().await;
        }
        if let Some(p) = self.partner.take() {
            p.stop().await;
        }
        if let Some(agent) = self.agent.take() {
            agent.shutdown(Duration::from_secs(5)).await;
        }
        if let Some(stop) = self.stop_collector.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            match serving.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "collector"),
                Err(error) => tracing::warn!(%error, "collector task"),
            }
        }
        self.redis.stop().await;
        self.dbs.stop().await;
        self.slack_task.abort();
    }

    /// An app process that exited on its own, if any.
    pub async fn exited_app(&self) -> Option<String> {
        for c in self.board.iter().chain(self.partner.iter()) {
            if let Some(status) = c.exited().await {
                return Some(format!("{} exited ({status})", c.name));
            }
        }
        None
    }
}

/// Waits until `GET <url>/healthz` answers 200 while `child` runs.
async fn wait_healthy(child: &Child, url: &str, logs: &Path) -> anyhow::Result<()> {
    let name = &child.name;
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.exited().await {
            bail!(
                "{name} exited ({status}) (see {})",
                logs.join(format!("{name}.log")).display()
            );
        }
        if let Ok(r) = client
            .get(format!("{url}/healthz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            if r.status().is_success() {
                return Ok(());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "{name} did not become healthy at {url} within 60 s (see {})",
                logs.join(format!("{name}.log")).display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

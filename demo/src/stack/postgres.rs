//! The app's PostgreSQL: a primary and a streaming replica made from it with
//! `pg_basebackup -R`, each in its own directory of the demo's data dir, on loopback ports.
//!
//! Both clusters are run by the collector's own embedded-cluster code
//! ([`stormwatch_store::embedded`]): the same binary lookup, the same `postgres` user through
//! `runuser` when we are root, adoption of a cluster left running. A second run reuses both
//! clusters; the replica's `primary_conninfo` is pointed at this run's primary port first.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context};
use stormwatch_store::embedded::{EmbeddedOptions, EmbeddedPostgres, SUPERUSER};
use tokio_postgres::NoTls;

/// The role the board app connects as (database `board`).
pub const APP_USER: &str = "board";
/// The database of the board app.
pub const APP_DATABASE: &str = "board";
/// The role the agent's probes connect as (`pg_monitor`).
pub const PROBE_USER: &str = "stormwatch_probe";

/// The running primary and replica.
pub struct AppDatabases {
    pub primary: EmbeddedPostgres,
    pub replica: EmbeddedPostgres,
    pub primary_port: u16,
    pub replica_port: u16,
}

impl AppDatabases {
    /// Creates (first run) or reuses the clusters under `dir` and starts them.
    pub async fn start(dir: &Path, primary_port: u16, replica_port: u16) -> anyhow::Result<Self> {
        let primary = EmbeddedPostgres::start(&EmbeddedOptions {
            data_dir: dir.join("app-primary"),
            tcp_port: Some(primary_port),
            unsafe_no_fsync: false,
            // The demo app's own small database, not Stormwatch's store.
            shared_buffers_mib: Some(128),
        })
        .await
        .context("starting the app's primary PostgreSQL")?;
        let db = Self::setup_primary(&primary).await;
        if let Err(e) = db {
            let _ = primary.stop().await;
            return Err(e);
        }
        let replica_dir = dir.join("app-replica");
        match Self::start_replica(&primary, &replica_dir, primary_port, replica_port).await {
            Ok(replica) => Ok(AppDatabases {
                primary,
                replica,
                primary_port,
                replica_port,
            }),
            Err(e) => {
                let _ = primary.stop().await;
                Err(e)
            }
        }
    }

    async fn setup_primary(primary: &EmbeddedPostgres) -> anyhow::Result<()> {
        let c = connect(&primary.connection_string("postgres")).await?;
        c.batch_execute(&format!(
            "DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_USER}') THEN
                 CREATE ROLE {APP_USER} LOGIN;
               END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PROBE_USER}') THEN
                 CREATE ROLE {PROBE_USER} LOGIN IN ROLE pg_monitor;
               END IF;
             END $$;"
        ))
        .await
        .context("creating the app's roles")?;
        let exists = c
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&APP_DATABASE],
            )
            .await?
            .is_some();
        if !exists {
            c.batch_execute(&format!("CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}"))
                .await
                .context("creating the app's database")?;
        }
        Ok(())
    }

    async fn start_replica(
        primary: &EmbeddedPostgres,
        replica_dir: &Path,
        primary_port: u16,
        replica_port: u16,
    ) -> anyhow::Result<EmbeddedPostgres> {
        let pgdata = replica_dir.join("postgres");
        if !pgdata.join("PG_VERSION").is_file() {
            base_backup(primary, &pgdata, primary_port).await?;
        }
        point_at_primary(&pgdata, primary_port)?;
        let replica = EmbeddedPostgres::start(&EmbeddedOptions {
            data_dir: replica_dir.to_owned(),
            tcp_port: Some(replica_port),
            unsafe_no_fsync: false,
            // The demo app's own small database, not Stormwatch's store.
            shared_buffers_mib: Some(128),
        })
        .await
        .context("starting the app's replica PostgreSQL")?;
        // A run that was killed while replay was paused must not leave it paused.
        let c = connect(&replica.connection_string("postgres")).await?;
        c.batch_execute("SELECT pg_wal_replay_resume()").await.ok();
        Ok(replica)
    }

    /// `postgres://user@127.0.0.1:port/db` of the primary.
    pub fn primary_url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.primary_port)
    }

    /// `postgres://user@127.0.0.1:port/db` of the replica.
    pub fn replica_url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.replica_port)
    }

    /// Stops the replica, then the primary (fast shutdown).
    pub async fn stop(&self) {
        if let Err(error) = self.replica.stop().await {
            tracing::warn!(%error, "stopping the app's replica");
        }
        if let Err(error) = self.primary.stop().await {
            tracing::warn!(%error, "stopping the app's primary");
        }
    }

    /// Shell commands that stop both clusters, for a watchdog that outlives this process.
    pub fn stop_commands(&self) -> Vec<String> {
        [&self.replica, &self.primary]
            .iter()
            .map(|pg| stop_command(pg))
            .collect()
    }
}

/// `pg_ctl stop` for `pg`, as a shell command line.
pub fn stop_command(pg: &EmbeddedPostgres) -> String {
    stop_command_for(pg, pg.pgdata())
}

/// `pg_ctl stop` for the cluster in `pgdata`, run the way `pg` runs its binaries.
pub fn stop_command_for(pg: &EmbeddedPostgres, pgdata: &Path) -> String {
    let mut parts = pg.command_prefix();
    parts.push(pg.bin_dir().join("pg_ctl").display().to_string());
    parts.extend(["-D".into(), pgdata.display().to_string()]);
    parts.extend(["-m", "fast", "-w", "stop"].map(String::from));
    parts
        .iter()
        .map(|p| format!("'{}'", p.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `pg_basebackup -R` from the primary into `pgdata`, as the user the primary runs as.
async fn base_backup(
    primary: &EmbeddedPostgres,
    pgdata: &Path,
    primary_port: u16,
) -> anyhow::Result<()> {
    tracing::info!(pgdata = %pgdata.display(), "creating the app's replica (pg_basebackup -R)");
    // A directory left by an interrupted first run: start over.
    if pgdata.exists() {
        std::fs::remove_dir_all(pgdata)
            .with_context(|| format!("removing {}", pgdata.display()))?;
    }
    std::fs::create_dir_all(pgdata).with_context(|| format!("creating {}", pgdata.display()))?;
    // Same owner as the primary's cluster directory (`postgres` when we are root).
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(primary.pgdata())?;
    std::os::unix::fs::chown(pgdata, Some(meta.uid()), Some(meta.gid()))
        .with_context(|| format!("chown {}", pgdata.display()))?;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))?;
    let prefix = primary.command_prefix();
    // The bin dir may hold links to initdb and pg_ctl only (/usr/local/bin): look beside
    // the real pg_ctl.
    let exe: PathBuf = std::fs::canonicalize(primary.bin_dir().join("pg_ctl"))
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("pg_basebackup")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| primary.bin_dir().join("pg_basebackup"));
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = tokio::process::Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &primary_port.to_string(),
        "-U",
        SUPERUSER,
    ])
    .args(["-R", "-X", "stream", "-c", "fast", "-D"])
    .arg(pgdata)
    .stdin(Stdio::null());
    let out = cmd.output().await.context("running pg_basebackup")?;
    if !out.status.success() {
        bail!(
            "pg_basebackup failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Rewrites the port in the replica's `primary_conninfo` (postgresql.auto.conf, written by
/// `pg_basebackup -R`) to this run's primary port.
fn point_at_primary(pgdata: &Path, primary_port: u16) -> anyhow::Result<()> {
    let path = pgdata.join("postgresql.auto.conf");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut changed = false;
    let lines: Vec<String> = text
        .lines()
        .map(|line| {
            if !line.starts_with("primary_conninfo") {
                return line.to_owned();
            }
            let fixed: Vec<String> = line
                .split(' ')
                .map(|w| match w.strip_prefix("port=") {
                    Some(_) => format!("port={primary_port}"),
                    None => w.to_owned(),
                })
                .collect();
            let fixed = fixed.join(" ");
            changed |= fixed != line;
            fixed
        })
        .collect();
    if changed {
        std::fs::write(&path, lines.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A connection whose driver runs on its own task.
pub async fn connect(conn: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(conn, NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL ({conn})"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

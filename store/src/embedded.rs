//! The embedded default: a PostgreSQL cluster the collector creates and runs inside its data
//! directory, with the system's `initdb` and `pg_ctl`.
//!
//! The cluster listens on a Unix socket inside its own directory (no TCP port to collide with),
//! or on a loopback TCP port when asked (the test harness) or when the socket path would be too
//! long for the kernel. PostgreSQL refuses to run as root, so as root every command runs as the
//! `postgres` user through `runuser`, and the cluster directory is handed to that user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

/// The database role the embedded cluster is created with.
pub const SUPERUSER: &str = "stormwatch";

/// What went wrong starting or stopping the embedded cluster. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("PostgreSQL is not installed (no initdb on PATH or under /usr/lib/postgresql/*/bin): install it with `apt-get install -y postgresql`, or pass --database-url")]
    NotInstalled,
    #[error("running as root, but the `postgres` user that PostgreSQL must run as does not exist: install Debian's postgresql package, or pass --database-url")]
    NoPostgresUser,
    #[error("{action} failed: {detail}")]
    Command { action: String, detail: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedError + '_ {
    move |source| EmbeddedError::Io {
        path: path.to_owned(),
        source,
    }
}

/// How to run the embedded cluster.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// The collector's data directory; the cluster lives in `<data_dir>/postgres`.
    pub data_dir: PathBuf,
    /// Listen on this loopback TCP port instead of a Unix socket.
    pub tcp_port: Option<u16>,
    /// `fsync = off`: only for throw-away clusters (tests, benchmarks).
    pub unsafe_no_fsync: bool,
    /// PostgreSQL's `shared_buffers` in MiB; `None`: [`default_shared_buffers_mib`].
    pub shared_buffers_mib: Option<u64>,
}

/// Smallest and largest `shared_buffers` [`default_shared_buffers_mib`] picks, MiB.
pub const SHARED_BUFFERS_MIB_RANGE: (u64, u64) = (128, 8192);

/// `shared_buffers` for the embedded cluster: a quarter of the memory this process may use
/// (the machine's, or its cgroup's limit when lower), within [`SHARED_BUFFERS_MIB_RANGE`] —
/// PostgreSQL's own advice for a server with 1 GB of memory or more. The day's span partition
/// and its trace-id index take every insert; once they outgrow the buffers each insert reads
/// and writes back pages, and ingest slows through the day: the 30-minute soak at 88k spans/s
/// held only with these buffers; with 256 MiB its batch latency climbed from minute 10 on, the
/// trace-id index 2.1 GB by minute 25 (docs/benchmarks.md). PostgreSQL touches the buffers as
/// it uses them, so an idle cluster does not hold them.
pub fn default_shared_buffers_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok());
    shared_buffers_for(&meminfo, cgroup.as_deref())
}

/// A quarter of the smaller of `/proc/meminfo`'s `MemTotal` and the cgroup's limit in bytes
/// (`max`, or cgroup v1's huge "no limit", count as none), clamped; the lower bound when
/// neither says anything.
fn shared_buffers_for(meminfo: &str, cgroup_limit: Option<&str>) -> u64 {
    let total_kib = meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        rest.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    });
    let limit_kib = cgroup_limit
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|bytes| bytes / 1024);
    let (lo, hi) = SHARED_BUFFERS_MIB_RANGE;
    match [total_kib, limit_kib].into_iter().flatten().min() {
        Some(kib) => (kib / 1024 / 4).clamp(lo, hi),
        None => lo,
    }
}

/// A running cluster started by [`EmbeddedPostgres::start`].
#[derive(Debug)]
pub struct EmbeddedPostgres {
    pgdata: PathBuf,
    bin_dir: PathBuf,
    run_as_postgres: bool,
    host: String,
    port: u16,
}

/// Finds the directory holding `initdb` and `pg_ctl`: `PATH` first, then the newest
/// `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir() -> Result<PathBuf, EmbeddedError> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or(EmbeddedError::NotInstalled)
}

fn is_root() -> bool {
    // SAFETY-free check: the effective uid is in /proc/self/status ("Uid: real effective ...").
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

fn postgres_ids() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let mut f = line.split(':');
    let (uid, gid) = (f.nth(2)?.parse().ok()?, f.next()?.parse().ok()?);
    Some((uid, gid))
}

/// Longest Unix socket path the kernel accepts (sun_path is 108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

impl EmbeddedPostgres {
    /// Creates the cluster when `<data_dir>/postgres` is empty, then starts it (or adopts one
    /// already running there) and waits until it accepts connections.
    pub async fn start(opts: &EmbeddedOptions) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir()?;
        let run_as_postgres = is_root();
        std::fs::create_dir_all(&opts.data_dir).map_err(io_err(&opts.data_dir))?;
        let data_dir = opts
            .data_dir
            .canonicalize()
            .map_err(io_err(&opts.data_dir))?;
        let pgdata = data_dir.join("postgres");
        std::fs::create_dir_all(&pgdata).map_err(io_err(&pgdata))?;
        if run_as_postgres {
            let (uid, gid) = postgres_ids().ok_or(EmbeddedError::NoPostgresUser)?;
            std::os::unix::fs::chown(&pgdata, Some(uid), Some(gid)).map_err(io_err(&pgdata))?;
        }
        let socket_path_len = pgdata.as_os_str().len() + "/.s.PGSQL.5432".len();
        let tcp_port = match opts.tcp_port {
            Some(p) => Some(p),
            None if socket_path_len > MAX_SOCKET_PATH => Some(free_loopback_port()?),
            None => None,
        };
        let (host, port) = match tcp_port {
            Some(p) => ("127.0.0.1".to_owned(), p),
            None => (pgdata.to_string_lossy().into_owned(), 5432),
        };
        let pg = EmbeddedPostgres {
            pgdata,
            bin_dir,
            run_as_postgres,
            host,
            port,
        };
        if !pg.pgdata.join("PG_VERSION").is_file() {
            tracing::info!(pgdata = %pg.pgdata.display(), "creating the embedded PostgreSQL cluster");
            let mut args: Vec<OsString> = vec![
                "-D".into(),
                pg.pgdata.clone().into(),
                "-U".into(),
                SUPERUSER.into(),
                "--auth=trust".into(),
                "--encoding=UTF8".into(),
                "--no-locale".into(),
            ];
            if opts.unsafe_no_fsync {
                args.push("--no-sync".into());
            }
            pg.run("initdb", "initdb", args).await?;
        }
        if pg.is_running().await {
            tracing::info!(pgdata = %pg.pgdata.display(), "adopting the embedded PostgreSQL already running");
        } else {
            let shared_buffers_mib = opts
                .shared_buffers_mib
                .unwrap_or_else(default_shared_buffers_mib);
            tracing::info!(
                pgdata = %pg.pgdata.display(),
                shared_buffers_mib,
                "starting the embedded PostgreSQL"
            );
            let mut settings = vec![
                format!("-c port={}", pg.port),
                "-c max_connections=100".to_owned(),
                format!("-c shared_buffers={shared_buffers_mib}MB"),
                // Spans arrive all day into one partition whose trace-id index outgrows
                // shared_buffers: after each checkpoint the first change to each of its pages
                // is logged as a whole 8 KiB page. Fewer checkpoints and compressed page
                // images keep that write volume down (docs/benchmarks.md, the soak).
                "-c max_wal_size=4GB".to_owned(),
                "-c checkpoint_timeout=15min".to_owned(),
                format!("-c wal_compression={}", wal_compression(&pg.pgdata)),
            ];
            match tcp_port {
                Some(_) => {
                    settings.push("-c listen_addresses=127.0.0.1".to_owned());
                    settings.push("-c unix_socket_directories=''".to_owned());
                }
                None => {
                    settings.push("-c listen_addresses=''".to_owned());
                    settings.push(format!(
                        "-c unix_socket_directories='{}'",
                        pg.pgdata.display()
                    ));
                }
            }
            if opts.unsafe_no_fsync {
                settings.extend(
                    [
                        "-c fsync=off",
                        "-c synchronous_commit=off",
                        "-c full_page_writes=off",
                    ]
                    .map(String::from),
                );
            }
            let log = pg.pgdata.join("server.log");
            let args: Vec<OsString> = vec![
                "-D".into(),
                pg.pgdata.clone().into(),
                "-l".into(),
                log.clone().into(),
                "-w".into(),
                "-t".into(),
                "120".into(),
                "-o".into(),
                settings.join(" ").into(),
                "start".into(),
            ];
            if let Err(e) = pg.run("pg_ctl", "starting PostgreSQL", args).await {
                let tail = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(EmbeddedError::Command {
                    action: "starting the embedded PostgreSQL".into(),
                    detail: format!(
                        "{e}; last lines of {}: {}",
                        log.display(),
                        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                    ),
                });
            }
        }
        Ok(pg)
    }

    /// A libpq-style connection string for database `dbname`.
    pub fn connection_string(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={SUPERUSER} dbname={dbname}",
            self.host, self.port
        )
    }

    /// The cluster directory.
    pub fn pgdata(&self) -> &Path {
        &self.pgdata
    }

    /// The directory of `pg_ctl` and friends.
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// The command prefix that runs a PostgreSQL binary as the right user, for scripts
    /// that outlive this process (the test harness's watchdog).
    pub fn command_prefix(&self) -> Vec<String> {
        if self.run_as_postgres {
            vec![
                "runuser".into(),
                "-u".into(),
                "postgres".into(),
                "--".into(),
            ]
        } else {
            Vec::new()
        }
    }

    async fn is_running(&self) -> bool {
        let args: Vec<OsString> = vec!["-D".into(), self.pgdata.clone().into(), "status".into()];
        self.run("pg_ctl", "pg_ctl status", args).await.is_ok()
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, data is flushed).
    pub async fn stop(&self) -> Result<(), EmbeddedError> {
        let args: Vec<OsString> = vec![
            "-D".into(),
            self.pgdata.clone().into(),
            "-m".into(),
            "fast".into(),
            "-w".into(),
            "stop".into(),
        ];
        self.run("pg_ctl", "stopping PostgreSQL", args).await
    }

    async fn run(
        &self,
        program: &str,
        action: &str,
        args: Vec<OsString>,
    ) -> Result<(), EmbeddedError> {
        let exe = self.bin_dir.join(program);
        let mut cmd = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.arg("-u").arg("postgres").arg("--").arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // pg_ctl start leaves the postmaster behind; it must not hold our pipes open.
        if program == "pg_ctl" {
            cmd.stdout(Stdio::null());
        }
        let out = cmd.output().await.map_err(|e| EmbeddedError::Command {
            action: action.to_owned(),
            detail: format!("could not run {}: {e}", exe.display()),
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let mut detail = format!(
            "{} exited with {}: {}",
            exe.display(),
            out.status,
            stderr.trim()
        );
        if self.run_as_postgres && stderr.contains("Permission denied") {
            detail.push_str(" (PostgreSQL runs as the `postgres` user: every directory above the data directory must be searchable by it)");
        }
        Err(EmbeddedError::Command {
            action: action.to_owned(),
            detail,
        })
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_loopback_port() -> Result<u16, EmbeddedError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err(Path::new("127.0.0.1:0")))?;
    Ok(l.local_addr()
        .map_err(io_err(Path::new("127.0.0.1:0")))?
        .port())
}

/// `lz4` for the page images in the WAL where the cluster has it (PostgreSQL 15 and newer),
/// else `on` (pglz): the cluster's version is in its data directory's `PG_VERSION`.
fn wal_compression(pgdata: &Path) -> &'static str {
    let major = std::fs::read_to_string(pgdata.join("PG_VERSION"))
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok());
    if major.is_some_and(|m| m >= 15) {
        "lz4"
    } else {
        "on"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_buffers_are_a_quarter_of_the_smaller_memory_within_bounds() {
        let meminfo = |kib: u64| format!("MemTotal:       {kib} kB\nMemFree:        1000 kB\n");
        let gib = 1024 * 1024;
        assert_eq!(shared_buffers_for(&meminfo(24 * gib), None), 6 * 1024);
        assert_eq!(
            shared_buffers_for(&meminfo(24 * gib), Some("max\n")),
            6 * 1024,
            "cgroup v2 without a limit"
        );
        assert_eq!(
            shared_buffers_for(&meminfo(24 * gib), Some("9223372036854771712\n")),
            6 * 1024,
            "cgroup v1 without a limit"
        );
        assert_eq!(
            shared_buffers_for(&meminfo(24 * gib), Some("4294967296\n")),
            1024,
            "a 4 GiB cgroup limit is lower than the machine"
        );
        assert_eq!(shared_buffers_for(&meminfo(gib), None), 256);
        assert_eq!(
            shared_buffers_for(&meminfo(gib / 4), None),
            128,
            "lower bound"
        );
        assert_eq!(
            shared_buffers_for(&meminfo(256 * gib), None),
            8192,
            "upper bound"
        );
        assert_eq!(
            shared_buffers_for("", None),
            128,
            "nothing known: the lower bound"
        );
    }

    #[test]
    fn wal_compression_follows_the_clusters_version() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(wal_compression(dir.path()), "on", "no PG_VERSION yet");
        for (version, expected) in [
            ("13\n", "on"),
            ("14\n", "on"),
            ("15\n", "lz4"),
            ("17\n", "lz4"),
        ] {
            std::fs::write(dir.path().join("PG_VERSION"), version).unwrap();
            assert_eq!(
                wal_compression(dir.path()),
                expected,
                "PostgreSQL {version}"
            );
        }
    }
}

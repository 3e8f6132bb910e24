//! Real database servers for the probe tests, on free loopback ports in temporary directories:
//! a PostgreSQL primary with a streaming replica (`pg_basebackup -R`), and a MariaDB primary
//! with a replica. As root, PostgreSQL runs as `postgres` and MariaDB as `mysql`.
//!
//! Each server is stopped when its handle drops; a watchdog shell stops it too if the test
//! binary dies without unwinding.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn ids_of(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

/// A command run as `user` when we are root.
fn cmd_as(user: &str, exe: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(user).arg("--").arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

fn run(mut c: Command, what: &str) -> String {
    let out = c
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed: {text}");
    text
}

/// A temporary directory the server's user may enter and own.
fn server_dir(prefix: &str, user: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    if is_root() {
        let (uid, gid) = ids_of(user).unwrap_or_else(|| panic!("no `{user}` user"));
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    }
    dir
}

/// Writes a file a server reads: owned by `user` when we are root, readable by it alone.
pub fn write_for(user: &str, path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        let (uid, gid) = ids_of(user).unwrap_or_else(|| panic!("no `{user}` user"));
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    }
}

/// A directory for files that servers running as other users read.
pub fn shared_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Stops the server (by `stop` shell command) when this process is gone.
fn watchdog(stop: &str, dir: &Path) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop} >/dev/null 2>&1; rm -rf '{dir}'",
        pid = std::process::id(),
        dir = dir.display()
    );
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
}

// ---------------------------------------------------------------- PostgreSQL

pub fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin"))
                .collect()
        })
        .unwrap_or_default();
    dirs.retain(|d| d.join("initdb").exists());
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("PostgreSQL server binaries (Debian: apt-get install postgresql; ./scripts/test installs them)")
}

/// One PostgreSQL server (a primary, or a replica made by [`PgServer::replica`]).
pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    pub pgdata: PathBuf,
    bin: PathBuf,
}

impl PgServer {
    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = cmd_as("postgres", &self.bin.join("pg_ctl"));
        c.arg("-D").arg(&self.pgdata).args(args);
        c
    }

    /// A primary ready for streaming replicas. `extra` is appended to postgresql.conf.
    /// Users: `postgres` (superuser, trust), `app` (plain, trust), `pwuser` (password `secret`).
    pub fn primary(extra: &str) -> PgServer {
        let bin = pg_bin_dir();
        let dir = server_dir("sw-probe-pg-", "postgres");
        let pgdata = dir.join("primary");
        let port = free_port();
        let mut c = cmd_as("postgres", &bin.join("initdb"));
        c.arg("-D").arg(&pgdata).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(c, "initdb");
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{dir}'\n\
             wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n\
             synchronous_commit = off\nfull_page_writes = off\nshared_buffers = 16MB\n\
             wal_receiver_status_interval = 1s\n{extra}\n",
            dir = dir.display()
        );
        append(&pgdata.join("postgresql.conf"), &conf);
        std::fs::write(
            pgdata.join("pg_hba.conf"),
            "local all all trust\n\
             host all pwuser 127.0.0.1/32 scram-sha-256\n\
             host all all 127.0.0.1/32 trust\n\
             host replication all 127.0.0.1/32 trust\n",
        )
        .unwrap();
        let s = PgServer {
            port,
            dir: dir.clone(),
            pgdata,
            bin,
        };
        s.start();
        watchdog(
            &format!("{} -m immediate stop", shell_cmd(&s.pg_ctl(&[]))),
            &dir,
        );
        s.psql(
            "postgres",
            "CREATE ROLE app LOGIN; CREATE ROLE pwuser LOGIN PASSWORD 'secret'",
        );
        s
    }

    /// A streaming replica of `self` (`pg_basebackup -R`), started.
    pub fn replica(&self) -> PgServer {
        let pgdata = self.dir.join(format!("replica-{}", free_port()));
        let port = free_port();
        let mut c = cmd_as("postgres", &self.bin.join("pg_basebackup"));
        c.args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            "-R",
        ])
        .args(["-X", "stream", "--no-sync", "-D"])
        .arg(&pgdata);
        run(c, "pg_basebackup");
        append(
            &pgdata.join("postgresql.conf"),
            &format!("\nport = {port}\n"),
        );
        let s = PgServer {
            port,
            dir: self.dir.clone(),
            pgdata,
            bin: self.bin.clone(),
        };
        s.start();
        watchdog(
            &format!("{} -m immediate stop", shell_cmd(&s.pg_ctl(&[]))),
            &s.pgdata,
        );
        s
    }

    pub fn start(&self) {
        let log = self.pgdata.with_extension("log");
        let mut c = self.pg_ctl(&["-w", "-t", "30", "-l"]);
        c.arg(&log).arg("start");
        run(c, "pg_ctl start");
    }

    pub fn stop(&self) {
        run(self.pg_ctl(&["-w", "-m", "fast", "stop"]), "pg_ctl stop");
    }

    pub fn url(&self, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/postgres", self.port)
    }

    /// Runs SQL through `psql` over the Unix socket, as `postgres`.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let mut c = cmd_as("postgres", &self.bin.join("psql"));
        c.args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(&self.dir)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                db,
                "-c",
                sql,
            ]);
        run(c, "psql").trim().to_owned()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self
            .pg_ctl(&["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn shell_cmd(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| format!("'{}'", a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------- MariaDB

pub fn mariadb_available() -> bool {
    Path::new("/usr/sbin/mariadbd").exists() && Path::new("/usr/bin/mariadb-install-db").exists()
}

/// One MariaDB server. Users: `sw` / `pw` (all privileges, from 127.0.0.1), `repl` / `pw`.
pub struct MariaDb {
    pub port: u16,
    pub dir: PathBuf,
    child: std::process::Child,
}

impl MariaDb {
    /// Starts a server with `server_id`; the primary (id 1) writes a binlog.
    pub fn start(server_id: u32) -> MariaDb {
        MariaDb::start_with(server_id, &[])
    }

    /// [`MariaDb::start`] with more `mariadbd` options (`--ssl-cert=...`).
    pub fn start_with(server_id: u32, extra: &[String]) -> MariaDb {
        let dir = server_dir("sw-probe-maria-", "mysql");
        let data = dir.join("data");
        let mut c = Command::new("/usr/bin/mariadb-install-db");
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--auth-root-authentication-method=socket", "--skip-test-db"]);
        if is_root() {
            c.arg("--user=mysql");
        }
        run(c, "mariadb-install-db");
        let port = free_port();
        let mut c = Command::new("/usr/sbin/mariadbd");
        c.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--port={port}"))
            .arg(format!("--server-id={server_id}"))
            .args([
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--log-bin=mysql-bin",
                "--relay-log=relay-bin",
                "--innodb-buffer-pool-size=32M",
                "--innodb-flush-log-at-trx-commit=0",
                "--sync-binlog=0",
                "--skip-innodb-doublewrite",
                "--max-connections=30",
            ])
            .args(extra)
            .arg(format!("--log-error={}", dir.join("error.log").display()));
        if is_root() {
            c.arg("--user=mysql");
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mariadbd");
        watchdog(&format!("kill -9 {}", child.id()), &dir);
        let s = MariaDb { port, dir, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while s.try_sql("SELECT 1").is_err() {
            assert!(
                Instant::now() < deadline,
                "mariadbd did not start: {}",
                std::fs::read_to_string(s.dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        s.sql(
            "SET sql_log_bin = 0; \
             CREATE USER 'sw'@'127.0.0.1' IDENTIFIED BY 'pw'; \
             GRANT ALL ON *.* TO 'sw'@'127.0.0.1'; \
             CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'pw'; \
             GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'",
        );
        s
    }

    /// Makes `self` a replica of `primary` and starts replication.
    pub fn replicate_from(&self, primary: &MariaDb) {
        self.sql(&format!(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = {}, \
             MASTER_USER = 'repl', MASTER_PASSWORD = 'pw', MASTER_USE_GTID = slave_pos, \
             MASTER_CONNECT_RETRY = 1; START SLAVE",
            primary.port
        ));
    }

    pub fn url(&self) -> String {
        format!("mysql://sw:pw@127.0.0.1:{}/mysql", self.port)
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("/usr/bin/mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.dir.join("sock").display()))
            .args(["-u", "root", "-N", "-B", "-e", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs SQL as root over the socket.
    pub fn sql(&self, sql: &str) -> String {
        self.try_sql(sql)
            .unwrap_or_else(|e| panic!("mariadb `{sql}`: {e}"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

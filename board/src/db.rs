//! The board's data access: reads from the replica (a small pool), writes to the primary
//! (a connection per write, so a primary that refuses connections shows at once), every
//! connect and statement a client span with the database semantic conventions.
//!
//! **The deliberate bug** lives in [`PostsQuery`]: the list page looks its class up on the
//! replica, and a class created on the primary moments ago is not there yet while the replica
//! lags. The lookup yields `None`, and the query builder reads `None` as "no filter" — the
//! statement goes out without its `WHERE class_id = $1` and scans the whole posts table.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::KeyValue;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row};

use crate::telemetry::Telemetry;

/// Posts per seeded class.
pub const POSTS_PER_CLASS: u32 = 100;
/// A statement's time limit (the client gives up and drops the connection after it).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a read waits for a free replica connection before answering 503.
pub const POOL_WAIT: Duration = Duration::from_secs(5);

/// Which server a connection goes to; carried on spans as `db.role`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
        }
    }
}

/// Why a database call failed; the text is what the span's status message and the 5xx say.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be made (refused, too many clients, timeout...).
    #[error("{0}")]
    Connect(String),
    /// Every pooled replica connection stayed busy.
    #[error("{0}")]
    Busy(String),
    /// The statement failed or timed out.
    #[error("{0}")]
    Query(String),
}

/// One database server: its connection settings and the span attributes naming it.
#[derive(Debug)]
pub struct Target {
    role: Role,
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    dbname: String,
    connect_timeout: Duration,
}

impl Target {
    pub fn new(role: Role, url: &str, connect_timeout: Duration) -> anyhow::Result<Target> {
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| anyhow::anyhow!("{} URL: {e}", role.as_str()))?;
        config.connect_timeout(connect_timeout);
        config.application_name("board");
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let dbname = config
            .get_dbname()
            .or(config.get_user())
            .unwrap_or("postgres")
            .to_owned();
        Ok(Target {
            role,
            config,
            host,
            port,
            dbname,
            connect_timeout,
        })
    }

    fn attributes(&self) -> Vec<KeyValue> {
        vec![
            KeyValue::new("db.system.name", "postgresql"),
            // The pre-1.26 name, still read by many backends.
            KeyValue::new("db.system", "postgresql"),
            KeyValue::new("db.namespace", self.dbname.clone()),
            KeyValue::new("server.address", self.host.clone()),
            KeyValue::new("server.port", i64::from(self.port)),
            KeyValue::new("db.role", self.role.as_str()),
        ]
    }

    /// Opens a connection, traced as a `connect` client span.
    async fn connect(&self, t: &Telemetry) -> Result<Client, DbError> {
        let mut attrs = self.attributes();
        attrs.push(KeyValue::new("db.operation.name", "connect"));
        let span = t.client("connect".into(), attrs);
        let where_ = format!("{} {}:{}", self.role.as_str(), self.host, self.port);
        let r = tokio::time::timeout(self.connect_timeout, self.config.connect(NoTls)).await;
        match r {
            Ok(Ok((client, conn))) => {
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "database connection ended");
                    }
                });
                span.ok();
                Ok(client)
            }
            Ok(Err(e)) => {
                let msg = format!("could not connect to {where_}: {}", pg_error_text(&e));
                span.fail("connect_failure", &msg);
                Err(DbError::Connect(msg))
            }
            Err(_) => {
                let msg = format!(
                    "could not connect to {where_}: connect timeout after {} ms",
                    self.connect_timeout.as_millis()
                );
                span.fail("timeout", &msg);
                Err(DbError::Connect(msg))
            }
        }
    }

    /// Runs one statement, traced as `{operation} {table}` with its text and returned rows.
    async fn query(
        &self,
        t: &Telemetry,
        client: &Client,
        operation: &str,
        table: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let mut attrs = self.attributes();
        attrs.push(KeyValue::new("db.operation.name", operation.to_owned()));
        attrs.push(KeyValue::new("db.collection.name", table.to_owned()));
        attrs.push(KeyValue::new("db.query.text", sql.to_owned()));
        let span = t.client(format!("{operation} {table}"), attrs);
        match tokio::time::timeout(QUERY_TIMEOUT, client.query(sql, params)).await {
            Ok(Ok(rows)) => {
                span.set(KeyValue::new(
                    "db.response.returned_rows",
                    rows.len() as i64,
                ));
                span.ok();
                Ok(rows)
            }
            Ok(Err(e)) => {
                let msg = pg_error_text(&e);
                let code = e.code().map(|c| c.code().to_owned());
                span.fail(code.as_deref().unwrap_or("db_error"), &msg);
                Err(DbError::Query(msg))
            }
            Err(_) => {
                let msg = format!("statement timeout after {} s", QUERY_TIMEOUT.as_secs());
                span.fail("timeout", &msg);
                Err(DbError::Query(msg))
            }
        }
    }
}

/// A driver error as one line: the server's severity and message, or the client-side cause.
pub fn pg_error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

/// A small pool of replica connections: at most `size` in use, idle ones reused, broken ones
/// dropped.
struct Pool {
    target: Target,
    idle: Mutex<Vec<Client>>,
    permits: Arc<Semaphore>,
    size: usize,
}

struct Pooled<'a> {
    pool: &'a Pool,
    client: Option<Client>,
    _permit: OwnedSemaphorePermit,
}

impl Pooled<'_> {
    fn client(&self) -> &Client {
        self.client.as_ref().expect("present until drop")
    }
    /// After a timeout the connection may still be busy: do not reuse it.
    fn discard(&mut self) {
        self.client = None;
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            if !c.is_closed() {
                if let Ok(mut idle) = self.pool.idle.lock() {
                    idle.push(c);
                }
            }
        }
    }
}

impl Pool {
    async fn get(&self, t: &Telemetry) -> Result<Pooled<'_>, DbError> {
        let permit = tokio::time::timeout(POOL_WAIT, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                DbError::Busy(format!(
                    "no free {} connection within {} s",
                    self.target.role.as_str(),
                    POOL_WAIT.as_secs()
                ))
            })?
            .map_err(|_| DbError::Busy("pool closed".into()))?;
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let mut found = None;
            while let Some(c) = idle.pop() {
                if !c.is_closed() {
                    found = Some(c);
                    break;
                }
            }
            found
        };
        let client = match reused {
            Some(c) => c,
            None => self.target.connect(t).await?,
        };
        Ok(Pooled {
            pool: self,
            client: Some(client),
            _permit: permit,
        })
    }
}

/// The list query's filter, and **the bug**: `class_id: None` (the class was not found) is
/// read as "no filter", so the statement loses its WHERE and returns every post.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostsQuery {
    pub class_id: Option<i64>,
}

impl PostsQuery {
    /// The statement and its parameters.
    pub fn sql(&self) -> (String, Vec<i64>) {
        let mut sql = String::from("SELECT id, title, created_at::text FROM posts");
        let mut params = Vec::new();
        if let Some(id) = self.class_id {
            sql.push_str(" WHERE class_id = $1");
            params.push(id);
        }
        sql.push_str(" ORDER BY id DESC");
        (sql, params)
    }
}

/// A post of the list page.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PostRow {
    pub id: i64,
    pub title: String,
    pub created_at: String,
}

/// The board's databases.
pub struct Db {
    primary: Target,
    replica: Pool,
    telemetry: Telemetry,
}

impl Db {
    /// Reports the replica pool's connections in use (`db.client.connections.usage`, state
    /// `used`) and its size (`db.client.connections.max`) at each metrics export.
    pub fn observe(&self, meter: &opentelemetry::metrics::Meter) {
        let pool = opentelemetry::KeyValue::new("pool.name", "board-replica");
        let used = [pool.clone(), opentelemetry::KeyValue::new("state", "used")];
        let (permits, size) = (self.replica.permits.clone(), self.replica.size);
        meter
            .i64_observable_up_down_counter("db.client.connections.usage")
            .with_unit("{connection}")
            .with_description("Replica connections taken from the pool")
            .with_callback(move |o| {
                o.observe((size - permits.available_permits().min(size)) as i64, &used)
            })
            .build();
        meter
            .i64_observable_up_down_counter("db.client.connections.max")
            .with_unit("{connection}")
            .with_description("Replica connections the pool holds at most")
            .with_callback(move |o| o.observe(size as i64, std::slice::from_ref(&pool)))
            .build();
    }

    pub fn new(
        primary_url: &str,
        replica_url: &str,
        connect_timeout: Duration,
        replica_pool: usize,
        telemetry: Telemetry,
    ) -> anyhow::Result<Db> {
        Ok(Db {
            primary: Target::new(Role::Primary, primary_url, connect_timeout)?,
            replica: Pool {
                target: Target::new(Role::Replica, replica_url, connect_timeout)?,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(replica_pool.max(1))),
                size: replica_pool.max(1),
            },
            telemetry,
        })
    }

    async fn on_replica(
        &self,
        operation: &str,
        table: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let mut c = self.replica.get(&self.telemetry).await?;
        let r = self
            .replica
            .target
            .query(&self.telemetry, c.client(), operation, table, sql, params)
            .await;
        if r.is_err() {
            c.discard();
        }
        r
    }

    /// A short-lived connection per write: connect, one statement, close.
    async fn on_primary(
        &self,
        operation: &str,
        table: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, DbError> {
        let client = self.primary.connect(&self.telemetry).await?;
        self.primary
            .query(&self.telemetry, &client, operation, table, sql, params)
            .await
    }

    /// The class's id as the replica knows it (`None`: not there, or not yet).
    pub async fn class_id_on_replica(&self, code: &str) -> Result<Option<i64>, DbError> {
        let rows = self
            .on_replica(
                "SELECT",
                "classes",
                "SELECT id FROM classes WHERE code = $1",
                &[&code],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// The posts the query selects, newest first.
    pub async fn list_posts(&self, q: &PostsQuery) -> Result<Vec<PostRow>, DbError> {
        let (sql, params) = q.sql();
        let params: Vec<&(dyn ToSql + Sync)> =
            params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
        let rows = self.on_replica("SELECT", "posts", &sql, &params).await?;
        Ok(rows
            .iter()
            .map(|r| PostRow {
                id: r.get(0),
                title: r.get(1),
                created_at: r.get(2),
            })
            .collect())
    }

    /// Bodies of the given posts, from the replica.
    pub async fn bodies(&self, ids: &[i64]) -> Result<Vec<(i64, String)>, DbError> {
        let rows = self
            .on_replica(
                "SELECT",
                "posts",
                "SELECT id, body FROM posts WHERE id = ANY($1)",
                &[&ids],
            )
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// Creates a class on the primary; `None` when the code is taken.
    pub async fn create_class(&self, code: &str) -> Result<Option<i64>, DbError> {
        let rows = self
            .on_primary(
                "INSERT",
                "classes",
                "INSERT INTO classes (code) VALUES ($1) ON CONFLICT (code) DO NOTHING RETURNING id",
                &[&code],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Adds a post to a class on the primary; `None` when the class does not exist.
    pub async fn create_post(
        &self,
        code: &str,
        title: &str,
        body: &str,
    ) -> Result<Option<i64>, DbError> {
        let rows = self
            .on_primary(
                "INSERT",
                "posts",
                "INSERT INTO posts (class_id, title, body) \
                 SELECT id, $2, $3 FROM classes WHERE code = $1 RETURNING id",
                &[&code, &title, &body],
            )
            .await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    /// Records a processed upload on the primary.
    pub async fn record_upload(&self, size: i64, digest: &str) -> Result<i64, DbError> {
        let rows = self
            .on_primary(
                "INSERT",
                "uploads",
                "INSERT INTO uploads (size, digest) VALUES ($1, $2) RETURNING id",
                &[&size, &digest],
            )
            .await?;
        rows.first()
            .map(|r| r.get(0))
            .ok_or_else(|| DbError::Query("INSERT returned no id".into()))
    }
}

/// Creates the schema if missing and, when there are no classes yet, seeds `posts` posts
/// (`POSTS_PER_CLASS` per class, classes `class-0001`...). Idempotent, serialized between
/// concurrent starts by an advisory lock. Not traced (start-up, not a request).
pub async fn prepare(url: &str, posts: u32, connect_timeout: Duration) -> anyhow::Result<()> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(connect_timeout);
    let (mut client, conn) = config.connect(NoTls).await?;
    let conn = tokio::spawn(conn);
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(72070001);
         CREATE TABLE IF NOT EXISTS classes (
             id bigserial PRIMARY KEY,
             code text NOT NULL UNIQUE,
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS posts (
             id bigserial PRIMARY KEY,
             class_id bigint NOT NULL REFERENCES classes (id),
             title text NOT NULL,
             body text NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE IF NOT EXISTS uploads (
             id bigserial PRIMARY KEY,
             size bigint NOT NULL,
             digest text NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now());",
    )
    .await?;
    let classes: i64 = tx
        .query_one("SELECT count(*) FROM classes", &[])
        .await?
        .get(0);
    if classes == 0 && posts > 0 {
        let n_classes = i64::from(posts.div_ceil(POSTS_PER_CLASS));
        tx.execute(
            "INSERT INTO classes (code) \
             SELECT format('class-%s', lpad(g::text, 4, '0')) FROM generate_series(1, $1::bigint) g",
            &[&n_classes],
        )
        .await?;
        tx.execute(
            "INSERT INTO posts (class_id, title, body) \
             SELECT c.id, 'post ' || g, repeat(md5(g::text), 4) \
             FROM generate_series(1, $1::bigint) g \
             JOIN classes c ON c.code = format('class-%s', lpad((1 + (g - 1) % $2::bigint)::text, 4, '0'))",
            &[&i64::from(posts), &n_classes],
        )
        .await?;
    }
    tx.batch_execute("CREATE INDEX IF NOT EXISTS posts_class_id_idx ON posts (class_id, id)")
        .await?;
    tx.commit().await?;
    client
        .batch_execute("ANALYZE classes; ANALYZE posts")
        .await?;
    drop(client);
    let _ = conn.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_found_class_filters_and_a_missing_one_drops_the_where() {
        let (sql, params) = PostsQuery { class_id: Some(7) }.sql();
        assert_eq!(
            sql,
            "SELECT id, title, created_at::text FROM posts WHERE class_id = $1 ORDER BY id DESC"
        );
        assert_eq!(params, vec![7]);
        let (sql, params) = PostsQuery { class_id: None }.sql();
        assert_eq!(
            sql,
            "SELECT id, title, created_at::text FROM posts ORDER BY id DESC"
        );
        assert!(params.is_empty());
    }

    #[test]
    fn targets_name_their_server() {
        let t = Target::new(
            Role::Replica,
            "postgres://u@db-2:5433/board",
            Duration::from_secs(2),
        )
        .unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.dbname.as_str()),
            ("db-2", 5433, "board")
        );
        assert!(Target::new(
            Role::Primary,
            "postgres://u@h:notaport/x",
            Duration::from_secs(1)
        )
        .is_err());
    }
}

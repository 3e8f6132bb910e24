//! The post-content cache in Redis (`post:{id}` → body), every command a client span with
//! the database semantic conventions (`db.system.name = redis`).
//!
//! One multiplexed connection, reconnected when it breaks. Every command has a time limit
//! (`--redis-timeout-ms`): a paused or slow Redis makes pages slow, never stuck. A failed
//! read is treated as all misses by the caller (the page falls back to the replica).

use std::time::Duration;

use opentelemetry::KeyValue;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::telemetry::Telemetry;

/// Keys named in a span's `db.query.text` at most (the rest are elided).
const KEYS_IN_STATEMENT: usize = 8;

pub struct Cache {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    host: String,
    port: u16,
    db: i64,
    timeout: Duration,
    telemetry: Telemetry,
}

pub fn key(id: i64) -> String {
    format!("post:{id}")
}

impl Cache {
    pub fn new(url: &str, timeout: Duration, telemetry: Telemetry) -> anyhow::Result<Cache> {
        let client =
            redis::Client::open(url).map_err(|e| anyhow::anyhow!("redis URL {url:?}: {e}"))?;
        let info = client.get_connection_info();
        let (host, port) = match &info.addr {
            redis::ConnectionAddr::Tcp(h, p) => (h.clone(), *p),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (host.clone(), *port),
            other => (other.to_string(), 0),
        };
        let db = info.redis.db;
        Ok(Cache {
            client,
            conn: tokio::sync::Mutex::new(None),
            host,
            port,
            db,
            timeout,
            telemetry,
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let c = tokio::time::timeout(
            self.timeout * 2,
            ConnectionManager::new_with_config(self.client.clone(), cfg),
        )
        .await
        .map_err(|_| {
            format!(
                "could not connect to redis {}:{}: connect timeout",
                self.host, self.port
            )
        })?
        .map_err(|e| {
            format!(
                "could not connect to redis {}:{}: {e}",
                self.host, self.port
            )
        })?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `cmd`, traced as a client span named after its command.
    async fn run<T: redis::FromRedisValue>(
        &self,
        operation: &str,
        statement: String,
        cmd: redis::Cmd,
    ) -> Result<T, String> {
        let span = self.telemetry.client(
            operation.to_owned(),
            vec![
                KeyValue::new("db.system.name", "redis"),
                KeyValue::new("db.system", "redis"),
                KeyValue::new("db.namespace", self.db.to_string()),
                KeyValue::new("db.operation.name", operation.to_owned()),
                KeyValue::new("db.query.text", statement),
                KeyValue::new("server.address", self.host.clone()),
                KeyValue::new("server.port", i64::from(self.port)),
            ],
        );
        let result = async {
            let mut conn = self.connection().await?;
            match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(format!("redis {operation}: {e}")),
                Err(_) => Err(format!(
                    "redis {operation}: timed out after {} ms",
                    self.timeout.as_millis()
                )),
            }
        }
        .await;
        match &result {
            Ok(_) => span.ok(),
            Err(msg) => span.fail(
                if msg.contains("timed out") {
                    "timeout"
                } else {
                    "redis_error"
                },
                msg,
            ),
        }
        result
    }

    /// The cached bodies of `ids`, `None` for a miss.
    pub async fn get_many(&self, ids: &[i64]) -> Result<Vec<Option<String>>, String> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|i| key(*i)).collect();
        let statement = statement("MGET", keys.iter().map(|k| k.as_str()), false);
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let v: Vec<Option<String>> = self.run("MGET", statement, cmd).await?;
        if v.len() != ids.len() {
            return Err(format!(
                "redis MGET: {} values for {} keys",
                v.len(),
                ids.len()
            ));
        }
        Ok(v)
    }

    /// Stores bodies (values never appear in spans).
    pub async fn set_many(&self, items: &[(i64, String)]) -> Result<(), String> {
        if items.is_empty() {
            return Ok(());
        }
        let keys: Vec<String> = items.iter().map(|(i, _)| key(*i)).collect();
        let statement = statement("MSET", keys.iter().map(|k| k.as_str()), true);
        let mut cmd = redis::cmd("MSET");
        for ((_, body), k) in items.iter().zip(&keys) {
            cmd.arg(k).arg(body);
        }
        self.run::<()>("MSET", statement, cmd).await
    }
}

/// `MGET post:1 post:2 …` / `MSET post:1 ? post:2 ? …`: keys, never values.
fn statement<'a>(
    command: &str,
    keys: impl ExactSizeIterator<Item = &'a str>,
    values: bool,
) -> String {
    let n = keys.len();
    let mut s = command.to_owned();
    for k in keys.take(KEYS_IN_STATEMENT) {
        s.push(' ');
        s.push_str(k);
        if values {
            s.push_str(" ?");
        }
    }
    if n > KEYS_IN_STATEMENT {
        s.push_str(" …");
    }
    s
}

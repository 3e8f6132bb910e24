//! From a received span (OTLP or Zipkin) to a [`stormwatch_model::Span`]: validation,
//! dependency class, peer, database role, operation name and normalized statement.
//!
//! Receivers adapt their format to [`Incoming`] + [`Attributes`]; everything that reads
//! OpenTelemetry semantic conventions lives here, so old and new attribute names are handled
//! once for every protocol.

use std::borrow::Cow;

use stormwatch_model::limits::{
    MAX_ATTRIBUTES, MAX_DURATION_NS, MAX_FUTURE_NS, MAX_LABEL_BYTES, MAX_MESSAGE_BYTES,
    MAX_STATEMENT_BYTES, MIN_TIME_NS,
};
use stormwatch_model::{DbRole, DependencyClass, SpanKind, SpanStatus};

use crate::attributes::{Attributes, Value};
use crate::config::Classify;
use crate::normalize;
use crate::received::{Received, Text};
use crate::util::push_int;

/// The attribute keys the classifier reads, old and new conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum K {
    DbSystemName,
    DbSystem,
    HttpRequestMethod,
    HttpMethod,
    HttpResponseStatusCode,
    HttpStatusCode,
    MessagingSystem,
    RpcSystem,
    HttpRoute,
    UrlFull,
    HttpUrl,
    DbQueryText,
    DbStatement,
    SqlQuery,
    DbRedisStatement,
    DbOperationName,
    DbOperation,
    DbQuerySummary,
    DbCollectionName,
    DbSqlTable,
    UrlTemplate,
    DbResponseReturnedRows,
    DbRowsAffected,
    DbResponseRows,
    ServerAddress,
    NetPeerName,
    NetworkPeerAddress,
    NetPeerIp,
    NetSockPeerAddr,
    ServerPort,
    NetPeerPort,
    NetworkPeerPort,
    NetSockPeerPort,
}

const KNOWN_KEYS: usize = K::NetSockPeerPort as usize + 1;

/// The [`K`] of an attribute key, if the classifier reads it.
fn known(key: &str) -> Option<K> {
    Some(match key {
        "db.system.name" => K::DbSystemName,
        "db.system" => K::DbSystem,
        "http.request.method" => K::HttpRequestMethod,
        "http.method" => K::HttpMethod,
        "http.response.status_code" => K::HttpResponseStatusCode,
        "http.status_code" => K::HttpStatusCode,
        "messaging.system" => K::MessagingSystem,
        "rpc.system" => K::RpcSystem,
        "http.route" => K::HttpRoute,
        "url.full" => K::UrlFull,
        "http.url" => K::HttpUrl,
        "db.query.text" => K::DbQueryText,
        "db.statement" => K::DbStatement,
        "sql.query" => K::SqlQuery,
        "db.redis.statement" => K::DbRedisStatement,
        "db.operation.name" => K::DbOperationName,
        "db.operation" => K::DbOperation,
        "db.query.summary" => K::DbQuerySummary,
        "db.collection.name" => K::DbCollectionName,
        "db.sql.table" => K::DbSqlTable,
        "url.template" => K::UrlTemplate,
        "db.response.returned_rows" => K::DbResponseReturnedRows,
        "db.rows_affected" => K::DbRowsAffected,
        "db.response.rows" => K::DbResponseRows,
        "server.address" => K::ServerAddress,
        "net.peer.name" => K::NetPeerName,
        "network.peer.address" => K::NetworkPeerAddress,
        "net.peer.ip" => K::NetPeerIp,
        "net.sock.peer.addr" => K::NetSockPeerAddr,
        "server.port" => K::ServerPort,
        "net.peer.port" => K::NetPeerPort,
        "network.peer.port" => K::NetworkPeerPort,
        "net.sock.peer.port" => K::NetSockPeerPort,
        _ => return None,
    })
}

/// Attributes with the position of every key the classifier reads, found in one pass: each of
/// its some thirty lookups is then an array read instead of a search of the attributes.
struct Indexed<'a, A: ?Sized> {
    attrs: &'a A,
    /// 1 + the position of the first attribute with each [`K`]; 0 when absent.
    at: [u16; KNOWN_KEYS],
}

impl<'a, A: Attributes + ?Sized> Indexed<'a, A> {
    fn value(&self, k: K) -> Option<Value<'a>> {
        match self.at[k as usize] {
            0 => None,
            p => self.attrs.nth(usize::from(p) - 1),
        }
    }

    fn has(&self, k: K) -> bool {
        self.at[k as usize] != 0
    }

    /// The first present attribute among `keys` (new convention first, then the old).
    fn first(&self, keys: &[K]) -> Option<Value<'a>> {
        keys.iter().find_map(|k| self.value(*k))
    }

    /// The first among `keys` holding a non-empty string.
    fn first_str(&self, keys: &[K]) -> Option<&'a str> {
        keys.iter().find_map(|k| match self.value(*k) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        })
    }
}

/// A received span in protocol-neutral form.
pub struct Incoming<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The protocol's own error marker (OTLP status ERROR, Zipkin `error` tag).
    pub error: bool,
    pub status_message: &'a str,
    pub service: &'a str,
    pub instance: &'a str,
}

/// Attribute keys whose values never leave the agent: raw statements (shipped normalized in
/// `statement` instead), bind parameters, headers (cookies, tokens).
fn is_private_key(key: &str) -> bool {
    matches!(
        key,
        "db.statement" | "db.query.text" | "sql.query" | "db.redis.statement"
    ) || key.starts_with("db.query.parameter")
        || key.starts_with("http.request.header.")
        || key.starts_with("http.response.header.")
        || key.starts_with("rpc.request.metadata.")
}

/// Attributes already represented by a field of [`stormwatch_model::Span`]: not repeated in `attributes`.
fn is_mapped_key(key: &str) -> bool {
    matches!(
        key,
        "db.system"
            | "db.system.name"
            | "http.status_code"
            | "http.response.status_code"
            | "server.address"
            | "server.port"
            | "net.peer.name"
            | "net.peer.port"
    )
}

/// Why a span was refused.
pub type Reject = String;

/// The clock as read at most 1,024 spans ago on this thread: never later than [`now_ns`], so
/// a start time it lets pass, the real clock would too; the real clock decides the rest.
fn recent_now_ns() -> i64 {
    thread_local! {
        static RECENT: std::cell::Cell<(i64, u16)> = const { std::cell::Cell::new((0, 0)) };
    }
    RECENT.with(|r| {
        let (mut now, left) = r.get();
        let left = match left.checked_sub(1) {
            Some(left) => left,
            None => {
                now = now_ns();
                1023
            }
        };
        r.set((now, left));
        now
    })
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn check_id(name: &str, id: &[u8], len: usize) -> Result<(), Reject> {
    if id.len() != len {
        return Err(format!(
            "{name} must be {len} bytes ({} hex digits), got {} bytes",
            len * 2,
            id.len()
        ));
    }
    if id.iter().all(|b| *b == 0) {
        return Err(format!("{name} must not be all zeros"));
    }
    Ok(())
}

/// Validates and classifies one span. `max_value` is the receiver's attribute size limit.
pub fn classify<A: Attributes + ?Sized>(
    inc: &Incoming<'_>,
    attrs: &A,
    cfg: &Classify,
    max_value: usize,
) -> Result<Received, Reject> {
    check_id("traceId", inc.trace_id, 16)?;
    check_id("spanId", inc.span_id, 8)?;
    // An all-zero parent is what some SDKs send for a root: treat it as none.
    let parent = if inc.parent_span_id.iter().all(|b| *b == 0) {
        &[][..]
    } else {
        inc.parent_span_id
    };
    if !parent.is_empty() && parent.len() != 8 {
        return Err(format!(
            "parentSpanId must be 8 bytes or empty, got {} bytes",
            parent.len()
        ));
    }
    let start = i64::try_from(inc.start_ns).unwrap_or(i64::MAX);
    let end = i64::try_from(inc.end_ns).unwrap_or(i64::MAX);
    if start < MIN_TIME_NS {
        return Err(format!(
            "startTimeUnixNano {} is before 2000-01-01",
            inc.start_ns
        ));
    }
    if start > recent_now_ns().saturating_add(MAX_FUTURE_NS)
        && start > now_ns().saturating_add(MAX_FUTURE_NS)
    {
        return Err(format!(
            "startTimeUnixNano {} is more than a day in the future",
            inc.start_ns
        ));
    }
    if end < start {
        return Err(format!(
            "endTimeUnixNano {} is before startTimeUnixNano {}",
            inc.end_ns, inc.start_ns
        ));
    }
    let duration = end - start;
    if duration > MAX_DURATION_NS {
        return Err(format!("span lasts {duration} ns, more than one day"));
    }
    let mut oversized = None;
    let mut at = [0u16; KNOWN_KEYS];
    let mut position = 0usize;
    attrs.each(&mut |k, v| {
        position += 1;
        if let Some(known) = known(k) {
            let slot = &mut at[known as usize];
            if *slot == 0 {
                *slot = u16::try_from(position).unwrap_or(0);
            }
        }
        if oversized.is_none() && (v.len() > max_value || k.len() > max_value) {
            oversized = Some(k.chars().take(64).collect::<String>());
        }
    });
    if let Some(k) = oversized {
        return Err(format!("attribute `{k}` is longer than {max_value} bytes"));
    }
    let idx = Indexed { attrs, at };

    let db_system: Option<Cow<'_, str>> = idx.first_str(&[K::DbSystemName, K::DbSystem]).map(|s| {
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    });
    let http_method = idx.first_str(&[K::HttpRequestMethod, K::HttpMethod]);
    let http_status = idx
        .first(&[K::HttpResponseStatusCode, K::HttpStatusCode])
        .and_then(|v| v.as_int())
        .filter(|s| (100..=999).contains(s))
        .unwrap_or(0) as u32;
    let messaging = idx.first_str(&[K::MessagingSystem]);
    let rpc = idx.first_str(&[K::RpcSystem]);

    let class = match (&db_system, inc.kind) {
        (Some(s), _) if s == "redis" => DependencyClass::Redis,
        (Some(_), _) => DependencyClass::Db,
        (None, SpanKind::Server) => DependencyClass::HttpServer,
        (None, SpanKind::Producer | SpanKind::Consumer) => DependencyClass::Messaging,
        (None, _) if messaging.is_some() => DependencyClass::Messaging,
        (None, SpanKind::Client) if http_method.is_some() || rpc.is_some() => {
            DependencyClass::HttpClient
        }
        (None, SpanKind::Unspecified) if http_method.is_some() && idx.has(K::HttpRoute) => {
            DependencyClass::HttpServer
        }
        (None, SpanKind::Client) if idx.has(K::UrlFull) || idx.has(K::HttpUrl) => {
            DependencyClass::HttpClient
        }
        _ => DependencyClass::Internal,
    };

    // Peer, operation and statement are built in per-thread buffers: the span's text copies
    // them, so a span need not allocate for them.
    let mut scratch = SCRATCH.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let Scratch { peer, op, stmt } = &mut scratch;
    peer_of(&idx, class, db_system.as_deref(), peer);

    // Errors: the protocol's own marker, plus HTTP statuses the OTel conventions call failures
    // (5xx for servers, 4xx and 5xx for clients), in case an instrumentation did not set it.
    let error = inc.error
        || (class == DependencyClass::HttpServer && http_status >= 500)
        || (class == DependencyClass::HttpClient && http_status >= 400);

    let raw_statement = idx.first_str(&[
        K::DbQueryText,
        K::DbStatement,
        K::SqlQuery,
        K::DbRedisStatement,
    ]);
    // Normalized once per statement shape (per thread), not once per span.
    let sql = match (class, raw_statement) {
        (DependencyClass::Db, Some(raw)) => Some(normalize::sql_cached(raw)),
        _ => None,
    };
    let (operation, statement): (Cow<'_, str>, Cow<'_, str>) = match class {
        DependencyClass::Redis => {
            let cmd_src = raw_statement
                .or_else(|| idx.first_str(&[K::DbOperationName, K::DbOperation]))
                .unwrap_or(inc.name);
            let cmd = normalize::redis_into(cmd_src, stmt);
            let statement = if cfg.keep_raw_statements {
                raw_statement.unwrap_or("")
            } else {
                stmt.as_str()
            };
            (Cow::Borrowed(&stmt[..cmd]), Cow::Borrowed(statement))
        }
        DependencyClass::Db => {
            let op = idx
                .first_str(&[K::DbQuerySummary])
                .map(Cow::Borrowed)
                .or_else(|| {
                    sql.as_ref()
                        .and_then(|n| n.operation.as_deref())
                        .map(Cow::Borrowed)
                })
                .or_else(|| {
                    let verb = idx.first_str(&[K::DbOperationName, K::DbOperation])?;
                    let table = idx.first_str(&[K::DbCollectionName, K::DbSqlTable]);
                    Some(Cow::Owned(match table {
                        Some(t) => format!("{} {t}", verb.to_ascii_uppercase()),
                        None => verb.to_ascii_uppercase(),
                    }))
                })
                .unwrap_or(Cow::Borrowed(inc.name));
            let statement = if cfg.keep_raw_statements {
                Cow::Borrowed(raw_statement.unwrap_or(""))
            } else {
                sql.as_ref()
                    .map_or(Cow::Borrowed(""), |n| Cow::Borrowed(n.statement.as_str()))
            };
            (op, statement)
        }
        DependencyClass::HttpServer => {
            let op = match (http_method, idx.first_str(&[K::HttpRoute])) {
                (Some(m), Some(r)) => Cow::Borrowed(join_words(m, r, op)),
                _ => Cow::Borrowed(inc.name),
            };
            (op, Cow::Borrowed(""))
        }
        DependencyClass::HttpClient => {
            let op = match (http_method, idx.first_str(&[K::UrlTemplate, K::HttpRoute])) {
                (Some(m), Some(t)) => Cow::Borrowed(join_words(m, t, op)),
                _ => Cow::Borrowed(inc.name),
            };
            (op, Cow::Borrowed(""))
        }
        _ => (Cow::Borrowed(inc.name), Cow::Borrowed("")),
    };

    let db_role = match class {
        DependencyClass::Db | DependencyClass::Redis => role_of(attrs, cfg, peer),
        _ => DbRole::Unknown,
    };

    let rows = idx
        .first(&[
            K::DbResponseReturnedRows,
            K::DbRowsAffected,
            K::DbResponseRows,
        ])
        .and_then(|v| v.as_int())
        .filter(|r| *r >= 0);
    // The buffers are private to the span: the fields are set on a default one, which
    // allocates nothing, before it is lent its buffers.
    let mut r = Received::default();
    r.trace_id = inc.trace_id.try_into().unwrap_or([0; 16]);
    r.span_id = inc.span_id.try_into().unwrap_or([0; 8]);
    r.parent_span_id = parent.try_into().ok();
    r.kind = inc.kind as i32;
    r.class = class as i32;
    r.start_ns = start;
    r.duration_ns = duration;
    r.status = if error {
        SpanStatus::Error
    } else {
        SpanStatus::Ok
    } as i32;
    r.http_status = http_status;
    r.db_role = db_role as i32;
    r.rows = rows;
    r.statement_missing_where = match (&sql, cfg.keep_raw_statements) {
        (Some(n), false) if n.statement.len() <= MAX_STATEMENT_BYTES => Some(n.missing_where),
        _ => None,
    };
    r.lend_buffers(
        (inc.service.len()
            + inc.instance.len()
            + operation.len()
            + peer.len()
            + db_system.as_deref().map_or(0, str::len)
            + statement.len()
            + if error { inc.status_message.len() } else { 0 }
            + 64)
            .min(8192),
    );
    let service = if inc.service.is_empty() {
        "unknown_service"
    } else {
        inc.service
    };
    r.push_text(Text::Service, service, MAX_LABEL_BYTES);
    r.push_text(Text::Instance, inc.instance, MAX_LABEL_BYTES);
    let operation: &str = if operation.is_empty() {
        "unnamed"
    } else {
        &operation
    };
    r.push_text(Text::Operation, operation, MAX_LABEL_BYTES);
    r.push_text(Text::Peer, peer, MAX_LABEL_BYTES);
    r.push_text(
        Text::DbSystem,
        db_system.as_deref().unwrap_or(""),
        MAX_LABEL_BYTES,
    );
    r.push_text(Text::Statement, &statement, MAX_STATEMENT_BYTES);
    r.push_text(
        Text::StatusMessage,
        if error { inc.status_message } else { "" },
        MAX_MESSAGE_BYTES,
    );

    let mut dropped = 0usize;
    attrs.each(&mut |k, v| {
        if is_private_key(k) || is_mapped_key(k) {
            return;
        }
        if r.attribute_count() >= MAX_ATTRIBUTES - 1 {
            dropped += 1;
            return;
        }
        let strip = matches!(k, "url.full" | "http.url" | "url.query" | "http.target");
        r.push_attr(k, v, strip);
    });
    if dropped > 0 {
        r.push_attr(
            stormwatch_model::limits::DROPPED_ATTRIBUTES_KEY,
            Value::Int(dropped as i64),
            false,
        );
    }
    SCRATCH.with(|p| *p.borrow_mut() = scratch);
    r.replaced_nuls = r.replace_nuls();
    Ok(r)
}

/// [`classify`]'s per-thread buffers.
#[derive(Default)]
struct Scratch {
    peer: String,
    op: String,
    stmt: String,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// `a b` into `out`, without the formatting machinery.
fn join_words<'o>(a: &str, b: &str, out: &'o mut String) -> &'o str {
    out.clear();
    out.push_str(a);
    out.push(' ');
    out.push_str(b);
    out
}

/// `host:port` of the remote side, into `out` (cleared first; left empty when unknown).
fn peer_of<A: Attributes + ?Sized>(
    idx: &Indexed<'_, A>,
    class: DependencyClass,
    db_system: Option<&str>,
    out: &mut String,
) {
    out.clear();
    // A server span's peer attributes name its *client*, whose ephemeral port changes with
    // every connection: kept as the peer, a stock Python web app made 5,674 distinct peers
    // (aggregate rows) in 29 minutes. A peer is what a span calls, so servers have none.
    if class == DependencyClass::HttpServer {
        return;
    }
    let host = idx.first_str(&[
        K::ServerAddress,
        K::NetPeerName,
        K::NetworkPeerAddress,
        K::NetPeerIp,
        K::NetSockPeerAddr,
    ]);
    let port = idx
        .first(&[
            K::ServerPort,
            K::NetPeerPort,
            K::NetworkPeerPort,
            K::NetSockPeerPort,
        ])
        .and_then(|v| v.as_int())
        .filter(|p| (1..=65535).contains(p));
    let (host, port) = match host {
        Some(h) => (Some(h), port),
        None if class == DependencyClass::HttpClient => {
            match idx
                .first_str(&[K::UrlFull, K::HttpUrl])
                .and_then(host_port_of_url)
            {
                Some((h, p)) => (Some(h), port.or(p)),
                None => (None, port),
            }
        }
        None => (None, port),
    };
    let Some(host) = host else {
        return;
    };
    let port = port.or(match db_system {
        Some("redis") => Some(6379),
        Some("postgresql") => Some(5432),
        Some("mysql" | "mariadb") => Some(3306),
        _ => None,
    });
    // `[v6]:port`, `host:port` or `host`, built without the formatting machinery.
    let bracket = host.contains(':') && !host.starts_with('[');
    if bracket {
        out.push('[');
    }
    out.push_str(host);
    if bracket {
        out.push(']');
    }
    if let Some(p) = port {
        out.push(':');
        push_int(out, p);
    }
}

/// Host and port (default by scheme) of a URL.
fn host_port_of_url(url: &str) -> Option<(&str, Option<i64>)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let default = match scheme {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .or(default);
        return Some((h, port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h, p.parse().ok().or(default))),
        None if !authority.is_empty() => Some((authority, default)),
        None => None,
    }
}

fn role_of<A: Attributes + ?Sized>(attrs: &A, cfg: &Classify, peer: &str) -> DbRole {
    if let Some(Value::Str(role)) = attrs.get(&cfg.db_role_attribute) {
        let is = |names: &[&str]| names.iter().any(|n| role.eq_ignore_ascii_case(n));
        if is(&["primary", "master", "writer"]) {
            return DbRole::Primary;
        }
        if is(&["replica", "secondary", "slave", "reader"]) {
            return DbRole::Replica;
        }
    }
    if cfg.db_roles.is_empty() {
        return DbRole::Unknown;
    }
    if let Some(role) = cfg.db_roles.get(peer) {
        return *role;
    }
    // A peer configured without the port matches any port of that host.
    let host = peer.rsplit_once(':').map_or(peer, |(h, _)| h);
    cfg.db_roles.get(host).copied().unwrap_or(DbRole::Unknown)
}

#[cfg(test)]
pub(crate) mod tests {
    use stormwatch_model::Span;

    use super::*;

    pub(crate) const NOW: u64 = 1_750_000_000_000_000_000;

    #[test]
    fn the_key_index_answers_as_a_search_of_the_attributes_would() {
        // Known keys map to their slot, unknown keys to none.
        assert_eq!(known("db.system.name"), Some(K::DbSystemName));
        assert_eq!(known("net.sock.peer.port"), Some(K::NetSockPeerPort));
        assert_eq!(known("db.systemx"), None);
        assert_eq!(known(""), None);
        // Duplicates, empty values, numbers and unknown keys, in many orders: the first
        // attribute of a key is its value, and `first_str` passes over empty and non-string
        // values to the next key, as searching the list did.
        let pool: [(&str, Value<'_>); 8] = [
            ("db.system.name", Value::Str("")),
            ("db.system", Value::Str("postgresql")),
            ("db.system.name", Value::Str("mysql")),
            ("db.system", Value::Int(3)),
            ("server.port", Value::Str("5432")),
            ("server.port", Value::Int(6379)),
            ("other", Value::Str("x")),
            ("db.system.name", Value::Str("redis")),
        ];
        let search_str = |a: &[(&str, Value<'_>)], keys: &[&str]| {
            keys.iter()
                .find_map(|k| match a.iter().find(|(n, _)| n == k) {
                    Some((_, Value::Str(s))) if !s.is_empty() => Some(s.to_string()),
                    _ => None,
                })
        };
        let mut seed = 7u64;
        for _ in 0..2000 {
            let attrs: Vec<(&str, Value<'_>)> = (0..seed % 6)
                .map(|i| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    pool[((seed >> 33) as usize + i as usize) % pool.len()]
                })
                .collect();
            let mut at = [0u16; KNOWN_KEYS];
            for (i, (k, _)) in attrs.iter().enumerate() {
                if let Some(k) = known(k) {
                    if at[k as usize] == 0 {
                        at[k as usize] = i as u16 + 1;
                    }
                }
            }
            let idx = Indexed {
                attrs: attrs.as_slice(),
                at,
            };
            assert_eq!(
                idx.first_str(&[K::DbSystemName, K::DbSystem])
                    .map(str::to_string),
                search_str(&attrs, &["db.system.name", "db.system"]),
                "{attrs:?}"
            );
            let port = attrs
                .iter()
                .find(|(k, _)| *k == "server.port")
                .map(|(_, v)| *v);
            assert_eq!(idx.first(&[K::ServerPort]), port, "{attrs:?}");
            assert_eq!(idx.has(K::ServerPort), port.is_some());
        }
    }

    fn inc<'a>(kind: SpanKind, name: &'a str) -> Incoming<'a> {
        Incoming {
            trace_id: &[1; 16],
            span_id: &[2; 8],
            parent_span_id: &[],
            name,
            kind,
            start_ns: NOW,
            end_ns: NOW + 5_000_000,
            error: false,
            status_message: "",
            service: "shop",
            instance: "web-1",
        }
    }

    fn attrs(kv: &[(&str, &str)]) -> Vec<(String, String)> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    pub(crate) fn run(kind: SpanKind, name: &str, kv: &[(&str, &str)]) -> Span {
        classify(
            &inc(kind, name),
            attrs(kv).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap()
        .into_span()
    }

    #[test]
    fn nul_characters_become_replacement_characters_within_each_limit() {
        let long_service = format!("{}\0", "s".repeat(MAX_LABEL_BYTES - 1));
        let mut i = inc(SpanKind::Server, "GET /a\0b");
        i.service = &long_service;
        i.error = true;
        i.status_message = "boom\0";
        let r = classify(
            &i,
            attrs(&[("http.route", "/a"), ("k\0ey", "v\0\0al"), ("ok", "fine")]).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap();
        // Service, operation (the span's name), message, attribute key, value (two).
        assert_eq!(r.replaced_nuls, 6);
        let s = r.into_span();
        let all = [&s.service, &s.operation, &s.status_message]
            .into_iter()
            .chain(s.attributes.keys())
            .chain(s.attributes.values());
        for text in all {
            assert!(!text.contains('\0'), "{text:?} still holds a NUL");
        }
        // The service was exactly at its limit; the replacement must not push it over.
        assert!(s.service.len() <= MAX_LABEL_BYTES, "{}", s.service.len());
        assert!(s.service.starts_with("sss"), "{}", s.service);
        assert_eq!(s.status_message, "boom\u{FFFD}");
        assert_eq!(
            s.attributes.get("k\u{FFFD}ey").map(String::as_str),
            Some("v\u{FFFD}\u{FFFD}al")
        );
        assert_eq!(s.attributes.get("ok").map(String::as_str), Some("fine"));
        // A span without NUL is untouched and not counted.
        let clean = classify(
            &inc(SpanKind::Server, "GET /"),
            attrs(&[]).as_slice(),
            &Classify::default(),
            65536,
        )
        .unwrap();
        assert_eq!(clean.replaced_nuls, 0);
    }

    #[test]
    fn old_and_new_db_conventions_agree() {
        let old = run(
            SpanKind::Client,
            "query",
            &[
                ("db.system", "postgresql"),
                ("db.statement", "SELECT * FROM users WHERE id = 7"),
                ("net.peer.name", "db1"),
                ("net.peer.port", "5433"),
            ],
        );
        let new = run(
            SpanKind::Client,
            "query",
            &[
                ("db.system.name", "postgresql"),
                ("db.query.text", "SELECT * FROM users WHERE id = 7"),
                ("server.address", "db1"),
                ("server.port", "5433"),
            ],
        );
        for s in [&old, &new] {
            assert_eq!(s.class, DependencyClass::Db as i32);
            assert_eq!(s.peer, "db1:5433");
            assert_eq!(s.operation, "SELECT users");
            assert_eq!(s.statement, "SELECT * FROM users WHERE id = ?");
            assert_eq!(s.db_system, "postgresql");
            // The raw statement is not smuggled out through the attributes.
            assert!(
                s.attributes.values().all(|v| !v.contains("id = 7")),
                "{:?}",
                s.attributes
            );
        }
    }

    #[test]
    fn redis_is_its_own_class_and_keeps_no_values() {
        let s = run(
            SpanKind::Client,
            "SET",
            &[
                ("db.system", "redis"),
                ("db.statement", "SET token:991 s3cr3t"),
                ("server.address", "cache"),
            ],
        );
        assert_eq!(s.class, DependencyClass::Redis as i32);
        assert_eq!(s.operation, "SET");
        assert_eq!(s.statement, "SET token:?");
        assert_eq!(s.peer, "cache:6379");
        let encoded = format!("{s:?}");
        assert!(!encoded.contains("s3cr3t"), "{encoded}");
    }

    #[test]
    fn raw_statements_only_when_configured() {
        let cfg = Classify {
            keep_raw_statements: true,
            ..Classify::default()
        };
        let kv = attrs(&[
            ("db.system", "mysql"),
            ("db.statement", "SELECT 1 FROM t WHERE a = 'x'"),
        ]);
        let s = classify(&inc(SpanKind::Client, "q"), kv.as_slice(), &cfg, 65536).unwrap();
        assert_eq!(s.statement(), "SELECT 1 FROM t WHERE a = 'x'");
    }

    #[test]
    fn http_server_and_client() {
        let s = run(
            SpanKind::Server,
            "GET",
            &[
                ("http.request.method", "GET"),
                ("http.route", "/posts/{id}"),
                ("http.response.status_code", "503"),
            ],
        );
        assert_eq!(s.class, DependencyClass::HttpServer as i32);
        assert_eq!(s.operation, "GET /posts/{id}");
        assert_eq!(s.http_status, 503);
        assert!(s.is_error());
        // A server's peer attributes name its client and that client's ephemeral port (what
        // the stock Python WSGI instrumentation sends): no peer, so no aggregate row per port.
        for port in ["51234", "51235"] {
            let s = run(
                SpanKind::Server,
                "GET",
                &[
                    ("http.method", "GET"),
                    ("http.route", "/posts"),
                    ("net.peer.ip", "10.0.0.7"),
                    ("net.peer.port", port),
                    ("server.address", "board.local"),
                ],
            );
            assert_eq!(s.peer, "", "{port}");
        }
        let c = run(
            SpanKind::Client,
            "GET",
            &[
                ("http.method", "GET"),
                ("http.url", "https://api.example.com/v1/x?key=SECRET"),
                ("http.status_code", "404"),
            ],
        );
        assert_eq!(c.class, DependencyClass::HttpClient as i32);
        assert_eq!(c.peer, "api.example.com:443");
        assert!(c.is_error());
        assert_eq!(c.attributes["http.url"], "https://api.example.com/v1/x");
    }

    #[test]
    fn messaging_and_internal() {
        assert_eq!(
            run(
                SpanKind::Producer,
                "orders publish",
                &[("messaging.system", "kafka")]
            )
            .class,
            DependencyClass::Messaging as i32
        );
        assert_eq!(
            run(SpanKind::Internal, "render", &[]).class,
            DependencyClass::Internal as i32
        );
    }

    #[test]
    fn db_role_from_config_or_attribute() {
        let mut cfg = Classify::default();
        cfg.db_roles.insert("db2:5432".into(), DbRole::Replica);
        cfg.db_roles.insert("db3".into(), DbRole::Primary);
        let go = |kv: &[(&str, &str)]| {
            classify(
                &inc(SpanKind::Client, "q"),
                attrs(kv).as_slice(),
                &cfg,
                65536,
            )
            .unwrap()
            .db_role
        };
        assert_eq!(
            go(&[("db.system", "postgresql"), ("server.address", "db2")]),
            DbRole::Replica as i32
        );
        assert_eq!(
            go(&[
                ("db.system", "postgresql"),
                ("server.address", "db3"),
                ("server.port", "6000")
            ]),
            DbRole::Primary as i32
        );
        assert_eq!(
            go(&[
                ("db.system", "postgresql"),
                ("server.address", "db9"),
                ("db.role", "replica")
            ]),
            DbRole::Replica as i32
        );
        assert_eq!(
            go(&[("db.system", "postgresql"), ("server.address", "db9")]),
            DbRole::Unknown as i32
        );
    }

    #[test]
    fn bad_ids_and_times_are_rejected_with_reasons() {
        let kv = attrs(&[]);
        let cfg = Classify::default();
        let mut i = inc(SpanKind::Server, "x");
        i.trace_id = &[0; 16];
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("all zeros"));
        let mut i = inc(SpanKind::Server, "x");
        i.span_id = &[1; 4];
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("spanId must be 8 bytes"));
        let mut i = inc(SpanKind::Server, "x");
        i.start_ns = 5;
        i.end_ns = 6;
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("before 2000"));
        let mut i = inc(SpanKind::Server, "x");
        i.end_ns = i.start_ns - 1;
        assert!(classify(&i, kv.as_slice(), &cfg, 100)
            .unwrap_err()
            .contains("before startTime"));
        let big = attrs(&[("blob", &"x".repeat(200))]);
        assert!(
            classify(&inc(SpanKind::Server, "x"), big.as_slice(), &cfg, 100)
                .unwrap_err()
                .contains("blob")
        );
    }
}

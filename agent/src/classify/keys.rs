//! The attributes the classifier reads, found in one pass ([`index`]), and the keys that are
//! never copied to a span's attributes.

use super::incoming::Reject;
use crate::attributes::{Attributes, Value};

/// The attribute keys the classifier reads, old and new conventions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum K {
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

pub(super) const KNOWN_KEYS: usize = K::NetSockPeerPort as usize + 1;

/// The [`K`] of an attribute key, if the classifier reads it.
pub(super) fn known(key: &str) -> Option<K> {
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
pub(super) struct Indexed<'a, A: ?Sized> {
    pub(super) attrs: &'a A,
    /// 1 + the position of the first attribute with each [`K`]; 0 when absent.
    pub(super) at: [u16; KNOWN_KEYS],
}

impl<'a, A: Attributes + ?Sized> Indexed<'a, A> {
    pub(super) fn value(&self, k: K) -> Option<Value<'a>> {
        match self.at[k as usize] {
            0 => None,
            p => self.attrs.nth(usize::from(p) - 1),
        }
    }

    pub(super) fn has(&self, k: K) -> bool {
        self.at[k as usize] != 0
    }

    /// The first present attribute among `keys` (new convention first, then the old).
    pub(super) fn first(&self, keys: &[K]) -> Option<Value<'a>> {
        keys.iter().find_map(|k| self.value(*k))
    }

    /// The first among `keys` holding a non-empty string.
    pub(super) fn first_str(&self, keys: &[K]) -> Option<&'a str> {
        keys.iter().find_map(|k| match self.value(*k) {
            Some(Value::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        })
    }
}

/// Indexes the attributes the classifier reads in one pass, which also refuses a span with a
/// key or value longer than `max_value`.
pub(super) fn index<A: Attributes + ?Sized>(
    attrs: &A,
    max_value: usize,
) -> Result<Indexed<'_, A>, Reject> {
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
    Ok(Indexed { attrs, at })
}

/// Attribute keys whose values never leave the agent: raw statements (shipped normalized in
/// `statement` instead), bind parameters, headers (cookies, tokens).
pub(super) fn is_private_key(key: &str) -> bool {
    matches!(
        key,
        "db.statement" | "db.query.text" | "sql.query" | "db.redis.statement"
    ) || key.starts_with("db.query.parameter")
        || key.starts_with("http.request.header.")
        || key.starts_with("http.response.header.")
        || key.starts_with("rpc.request.metadata.")
}

/// Attributes already represented by a field of [`stormwatch_model::Span`]: not repeated in `attributes`.
pub(super) fn is_mapped_key(key: &str) -> bool {
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

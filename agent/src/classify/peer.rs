//! The remote side of a span: its peer (`host:port`) and, for databases, its role.

use stormwatch_model::{DbRole, DependencyClass};

use super::keys::{Indexed, K};
use crate::attributes::{Attributes, Value};
use crate::config::Classify;
use crate::util::push_int;

/// `host:port` of the remote side, into `out` (cleared first; left empty when unknown).
pub(super) fn peer_of<A: Attributes + ?Sized>(
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

pub(super) fn role_of<A: Attributes + ?Sized>(attrs: &A, cfg: &Classify, peer: &str) -> DbRole {
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

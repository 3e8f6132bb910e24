//! From a received span (OTLP or Zipkin) to a [`stormwatch_model::Span`]: validation,
//! dependency class, peer, database role, operation name and normalized statement.
//!
//! Receivers adapt their format to [`Incoming`] + [`Attributes`]; everything that reads
//! OpenTelemetry semantic conventions lives here, so old and new attribute names are handled
//! once for every protocol.

use std::borrow::Cow;

use stormwatch_model::limits::{
    MAX_ATTRIBUTES, MAX_LABEL_BYTES, MAX_MESSAGE_BYTES, MAX_STATEMENT_BYTES,
};
use stormwatch_model::{DbRole, DependencyClass, SpanKind, SpanStatus};

use crate::attributes::{Attributes, Value};
use crate::config::Classify;
use crate::normalize::{self, NormalizedSql};
use crate::received::{Received, Text};
use keys::{is_mapped_key, is_private_key, Indexed, K};
use peer::{peer_of, role_of};

pub use incoming::{Incoming, Reject};

mod incoming;
mod keys;
mod peer;
#[cfg(test)]
pub(crate) mod tests;
mod validate;

/// Validates and classifies one span. `max_value` is the receiver's attribute size limit.
///
/// One entry point; each step is a function that decides one thing: the ids and times
/// (`validate::ids_and_times`), the index of the attributes read (`keys::index`), the
/// dependency class (`class_of`), the peer (`peer::peer_of`), the status (`is_error`),
/// the operation and statement (`operation_and_statement`), the database role
/// (`peer::role_of`) and rows (`rows_of`); then the compact span is filled in
/// (`push_texts`, `push_attributes`).
pub fn classify<A: Attributes + ?Sized>(
    inc: &Incoming<'_>,
    attrs: &A,
    cfg: &Classify,
    max_value: usize,
) -> Result<Received, Reject> {
    let checked = validate::ids_and_times(inc)?;
    let idx = keys::index(attrs, max_value)?;

    let db_system = db_system_of(&idx);
    let http_method = idx.first_str(&[K::HttpRequestMethod, K::HttpMethod]);
    let http_status = http_status_of(&idx);
    let class = class_of(inc.kind, &idx, db_system.as_deref(), http_method);

    // Peer, operation and statement are built in per-thread buffers: the span's text copies
    // them, so a span need not allocate for them.
    let mut scratch = SCRATCH.with(|p| std::mem::take(&mut *p.borrow_mut()));
    let Scratch { peer, op, stmt } = &mut scratch;
    peer_of(&idx, class, db_system.as_deref(), peer);

    let error = is_error(inc, class, http_status);

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
    let (operation, statement) = operation_and_statement(
        inc.name,
        &idx,
        class,
        cfg,
        http_method,
        raw_statement,
        sql.as_deref(),
        op,
        stmt,
    );

    let db_role = match class {
        DependencyClass::Db | DependencyClass::Redis => role_of(attrs, cfg, peer),
        _ => DbRole::Unknown,
    };
    let rows = rows_of(&idx);

    // The buffers are private to the span: the fields are set on a default one, which
    // allocates nothing, before it is lent its buffers.
    let mut r = Received::default();
    r.trace_id = inc.trace_id.try_into().unwrap_or([0; 16]);
    r.span_id = inc.span_id.try_into().unwrap_or([0; 8]);
    r.parent_span_id = checked.parent.try_into().ok();
    r.kind = inc.kind as i32;
    r.class = class as i32;
    r.start_ns = checked.start;
    r.duration_ns = checked.duration;
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
    let db_system = db_system.as_deref().unwrap_or("");
    let status_message = if error { inc.status_message } else { "" };
    r.lend_buffers(
        (inc.service.len()
            + inc.instance.len()
            + operation.len()
            + peer.len()
            + db_system.len()
            + statement.len()
            + status_message.len()
            + 64)
            .min(8192),
    );
    push_texts(
        &mut r,
        inc,
        &operation,
        peer,
        db_system,
        &statement,
        status_message,
    );
    push_attributes(&mut r, attrs, class == DependencyClass::HttpServer);
    SCRATCH.with(|p| *p.borrow_mut() = scratch);
    r.replaced_nuls = r.replace_nuls();
    Ok(r)
}

/// The database system, lower-cased (`db.system.name`, or the older `db.system`).
fn db_system_of<'a, A: Attributes + ?Sized>(idx: &Indexed<'a, A>) -> Option<Cow<'a, str>> {
    idx.first_str(&[K::DbSystemName, K::DbSystem]).map(|s| {
        if s.bytes().any(|c| c.is_ascii_uppercase()) {
            Cow::Owned(s.to_ascii_lowercase())
        } else {
            Cow::Borrowed(s)
        }
    })
}

/// The HTTP status code (100–999), or 0.
fn http_status_of<A: Attributes + ?Sized>(idx: &Indexed<'_, A>) -> u32 {
    idx.first(&[K::HttpResponseStatusCode, K::HttpStatusCode])
        .and_then(|v| v.as_int())
        .filter(|s| (100..=999).contains(s))
        .unwrap_or(0) as u32
}

/// The dependency class, from the database system, the span kind and which of the HTTP,
/// messaging and RPC attributes are present.
fn class_of<A: Attributes + ?Sized>(
    kind: SpanKind,
    idx: &Indexed<'_, A>,
    db_system: Option<&str>,
    http_method: Option<&str>,
) -> DependencyClass {
    let messaging = idx.first_str(&[K::MessagingSystem]);
    let rpc = idx.first_str(&[K::RpcSystem]);
    match (db_system, kind) {
        (Some("redis"), _) => DependencyClass::Redis,
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
    }
}

/// Whether the span failed: the protocol's own marker, plus HTTP statuses the OTel conventions
/// call failures (5xx for servers, 4xx and 5xx for clients), in case an instrumentation did not
/// set it.
fn is_error(inc: &Incoming<'_>, class: DependencyClass, http_status: u32) -> bool {
    inc.error
        || (class == DependencyClass::HttpServer && http_status >= 500)
        || (class == DependencyClass::HttpClient && http_status >= 400)
}

/// The operation name and the statement shipped: Redis command and key pattern, SQL operation
/// and normalized statement (raw only when configured), `METHOD route` for HTTP, else the
/// span's name. Built in `op` and `stmt` (per-thread buffers) where they are not borrowed.
#[allow(clippy::too_many_arguments)]
fn operation_and_statement<'s, A: Attributes + ?Sized>(
    name: &'s str,
    idx: &Indexed<'s, A>,
    class: DependencyClass,
    cfg: &Classify,
    http_method: Option<&'s str>,
    raw_statement: Option<&'s str>,
    sql: Option<&'s NormalizedSql>,
    op: &'s mut String,
    stmt: &'s mut String,
) -> (Cow<'s, str>, Cow<'s, str>) {
    match class {
        DependencyClass::Redis => {
            let cmd_src = raw_statement
                .or_else(|| idx.first_str(&[K::DbOperationName, K::DbOperation]))
                .unwrap_or(name);
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
                .or_else(|| sql.and_then(|n| n.operation.as_deref()).map(Cow::Borrowed))
                .or_else(|| {
                    let verb = idx.first_str(&[K::DbOperationName, K::DbOperation])?;
                    let table = idx.first_str(&[K::DbCollectionName, K::DbSqlTable]);
                    Some(Cow::Owned(match table {
                        Some(t) => format!("{} {t}", verb.to_ascii_uppercase()),
                        None => verb.to_ascii_uppercase(),
                    }))
                })
                .unwrap_or(Cow::Borrowed(name));
            let statement = if cfg.keep_raw_statements {
                Cow::Borrowed(raw_statement.unwrap_or(""))
            } else {
                sql.map_or(Cow::Borrowed(""), |n| Cow::Borrowed(n.statement.as_str()))
            };
            (op, statement)
        }
        DependencyClass::HttpServer => {
            let op = match (http_method, idx.first_str(&[K::HttpRoute])) {
                (Some(m), Some(r)) => Cow::Borrowed(join_words(m, r, op)),
                _ => Cow::Borrowed(name),
            };
            (op, Cow::Borrowed(""))
        }
        DependencyClass::HttpClient => {
            let op = match (http_method, idx.first_str(&[K::UrlTemplate, K::HttpRoute])) {
                (Some(m), Some(t)) => Cow::Borrowed(join_words(m, t, op)),
                _ => Cow::Borrowed(name),
            };
            (op, Cow::Borrowed(""))
        }
        _ => (Cow::Borrowed(name), Cow::Borrowed("")),
    }
}

/// Rows returned or affected, when reported and not negative.
fn rows_of<A: Attributes + ?Sized>(idx: &Indexed<'_, A>) -> Option<i64> {
    idx.first(&[
        K::DbResponseReturnedRows,
        K::DbRowsAffected,
        K::DbResponseRows,
    ])
    .and_then(|v| v.as_int())
    .filter(|r| *r >= 0)
}

/// The span's text fields, in order, each within its limit; an empty service or operation
/// gets a placeholder name.
fn push_texts(
    r: &mut Received,
    inc: &Incoming<'_>,
    operation: &str,
    peer: &str,
    db_system: &str,
    statement: &str,
    status_message: &str,
) {
    let service = if inc.service.is_empty() {
        "unknown_service"
    } else {
        inc.service
    };
    r.push_text(Text::Service, service, MAX_LABEL_BYTES);
    r.push_text(Text::Instance, inc.instance, MAX_LABEL_BYTES);
    let operation = if operation.is_empty() {
        "unnamed"
    } else {
        operation
    };
    r.push_text(Text::Operation, operation, MAX_LABEL_BYTES);
    r.push_text(Text::Peer, peer, MAX_LABEL_BYTES);
    r.push_text(Text::DbSystem, db_system, MAX_LABEL_BYTES);
    r.push_text(Text::Statement, statement, MAX_STATEMENT_BYTES);
    r.push_text(Text::StatusMessage, status_message, MAX_MESSAGE_BYTES);
}

/// The attributes shipped with the span: not the private ones nor those a span field already
/// holds (a server's `server.address`/`server.port` are kept), URLs without their query strings, at most [`MAX_ATTRIBUTES`] (the last one then
/// says how many were dropped).
fn push_attributes<A: Attributes + ?Sized>(r: &mut Received, attrs: &A, server: bool) {
    let mut dropped = 0usize;
    attrs.each(&mut |k, v| {
        // A server's own address is no span field (its peer is empty): kept, it names the
        // service answering there (`peer_names`).
        let own_address = server && matches!(k, "server.address" | "server.port");
        if is_private_key(k) || (is_mapped_key(k) && !own_address) {
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

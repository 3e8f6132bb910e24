//! One unit of work: an HTTP request served, a query, a Redis command, an outbound call.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enums::{
    as_name, DbRole, DependencyClass, KeepReason, SpanFlag, SpanKind, SpanStatus, WireEnum,
};

/// A span as the agent ships it, after classification and normalization.
///
/// Ids are raw bytes on the protobuf wire and lower-case hex in JSON.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// 16 bytes.
    #[prost(bytes = "vec", tag = "1")]
    #[serde(with = "crate::hexid")]
    pub trace_id: Vec<u8>,
    /// 8 bytes.
    #[prost(bytes = "vec", tag = "2")]
    #[serde(with = "crate::hexid")]
    pub span_id: Vec<u8>,
    /// 8 bytes, or empty for a root span.
    #[prost(bytes = "vec", tag = "3")]
    #[serde(with = "crate::hexid", default, skip_serializing_if = "Vec::is_empty")]
    pub parent_span_id: Vec<u8>,
    /// `service.name` of the app that produced the span.
    #[prost(string, tag = "4")]
    pub service: String,
    /// Host or instance of the app (`service.instance.id`, else `host.name`).
    #[prost(string, tag = "5")]
    #[serde(default)]
    pub instance: String,
    /// Operation: the route (`GET /posts/{id}`), the SQL verb and table, the Redis command...
    #[prost(string, tag = "6")]
    pub operation: String,
    #[prost(enumeration = "SpanKind", tag = "7")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<SpanKind, _>",
        deserialize_with = "as_name::deserialize::<SpanKind, _>"
    )]
    pub kind: i32,
    /// What the span waited on.
    #[prost(enumeration = "DependencyClass", tag = "8")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<DependencyClass, _>",
        deserialize_with = "as_name::deserialize::<DependencyClass, _>"
    )]
    pub class: i32,
    /// Start, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "9")]
    pub start_ns: i64,
    /// Elapsed nanoseconds; never negative.
    #[prost(int64, tag = "10")]
    pub duration_ns: i64,
    #[prost(enumeration = "SpanStatus", tag = "11")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<SpanStatus, _>",
        deserialize_with = "as_name::deserialize::<SpanStatus, _>"
    )]
    pub status: i32,
    #[prost(string, tag = "12")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    /// HTTP response status, 0 when not HTTP.
    #[prost(uint32, tag = "13")]
    #[serde(default, skip_serializing_if = "is_zero")]
    pub http_status: u32,
    /// The remote side, `host:port`, for client spans.
    #[prost(string, tag = "14")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer: String,
    /// `db.system`: postgresql, mysql, redis...
    #[prost(string, tag = "15")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub db_system: String,
    #[prost(enumeration = "DbRole", tag = "16")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<DbRole, _>",
        deserialize_with = "as_name::deserialize::<DbRole, _>"
    )]
    pub db_role: i32,
    /// Normalized statement: literals replaced by `?`; never the raw text unless configured.
    #[prost(string, tag = "17")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub statement: String,
    /// Rows returned or affected, when known.
    #[prost(int64, optional, tag = "18")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<i64>,
    /// Bounded free-form attributes (see [`crate::limits`]).
    #[prost(btree_map = "string, string", tag = "19")]
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
    /// Why the sampler kept it.
    #[prost(enumeration = "KeepReason", tag = "20")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<KeepReason, _>",
        deserialize_with = "as_name::deserialize::<KeepReason, _>"
    )]
    pub kept: i32,
    /// Flags: slow, error, full-scan suspect, replica lag, connect failure.
    #[prost(enumeration = "SpanFlag", repeated, tag = "21")]
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "as_name::serialize_vec::<SpanFlag, _>",
        deserialize_with = "as_name::deserialize_vec::<SpanFlag, _>"
    )]
    pub flags: Vec<i32>,
    /// Lag of the replica this span read from, at the time of the span.
    #[prost(int64, optional, tag = "22")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_lag_ms: Option<i64>,
}

/// [`SpanFlag`] numbers as a bit set (bit n = number n); numbers outside 0..31 ignored.
pub(crate) fn flag_bits(flags: &[i32]) -> i32 {
    flags
        .iter()
        .filter(|f| (0..31).contains(*f))
        .fold(0, |acc, f| acc | (1 << f))
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl Span {
    /// End time, nanoseconds since the Unix epoch.
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(self.duration_ns)
    }

    /// The dependency class; `Internal` for an unknown number.
    pub fn dependency_class(&self) -> DependencyClass {
        DependencyClass::from_number(self.class).unwrap_or(DependencyClass::Internal)
    }

    /// True when the span failed.
    pub fn is_error(&self) -> bool {
        self.status == SpanStatus::Error as i32
    }

    /// Flags as a bit set (bit n = [`SpanFlag`] number n), the form the store keeps.
    pub fn flag_bits(&self) -> i32 {
        flag_bits(&self.flags)
    }

    /// Inverse of [`Span::flag_bits`].
    pub fn flags_from_bits(bits: i32) -> Vec<i32> {
        (0..31).filter(|n| bits & (1 << n) != 0).collect()
    }
}

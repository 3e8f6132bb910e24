//! Database probe samples: connectivity and replication lag, as the agent saw them.

use serde::{Deserialize, Serialize};

use crate::enums::{as_name, DbRole, FailureClass};

/// One probe of one database.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSample {
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub time_ns: i64,
    /// The `name` of the `[[database]]` entry in the agent's config.
    #[prost(string, tag = "2")]
    pub database: String,
    /// `postgres` or `mysql`.
    #[prost(string, tag = "3")]
    pub engine: String,
    #[prost(enumeration = "DbRole", tag = "4")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<DbRole, _>",
        deserialize_with = "as_name::deserialize::<DbRole, _>"
    )]
    pub role: i32,
    /// Time to open a fresh connection, microseconds; absent when it failed.
    #[prost(int64, optional, tag = "5")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_us: Option<i64>,
    /// Time of a trivial query on that connection, microseconds.
    #[prost(int64, optional, tag = "6")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_us: Option<i64>,
    #[prost(enumeration = "FailureClass", tag = "7")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<FailureClass, _>",
        deserialize_with = "as_name::deserialize::<FailureClass, _>"
    )]
    pub failure: i32,
    #[prost(string, tag = "8")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_message: String,
    /// Replication lag in seconds (replicas only).
    #[prost(double, optional, tag = "9")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<f64>,
    /// Replication lag in bytes of WAL / binlog (replicas only).
    #[prost(int64, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<i64>,
    #[prost(bool, tag = "11")]
    #[serde(default)]
    pub replay_paused: bool,
    /// Engine-specific state, e.g. MySQL's IO / SQL thread states and last error.
    #[prost(btree_map = "string, string", tag = "12")]
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub detail: std::collections::BTreeMap<String, String>,
}

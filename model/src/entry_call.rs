//! Dependency calls attributed to the server operation that made them.
//!
//! An aggregate row says how often a service called a peer, not which of its endpoints did.
//! The agent sees every span of a trace, so it joins each call (a `db`, `redis`, `http_client`
//! or `messaging` span) to the server span of the same service in the same trace — the
//! request's *entry* — and counts it per (minute, service, entry, class, peer). With these rows
//! an incident's cause says which endpoint a slow peer slowed down, and by how much per request.

use serde::{Deserialize, Serialize};

use crate::enums::{as_name, DependencyClass};

/// Calls one entry operation of a service made to one peer in one minute (the entry's minute).
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryCall {
    /// Start of the entry span's end minute, seconds since the Unix epoch (a multiple of 60).
    #[prost(int64, tag = "1")]
    pub minute: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    /// The entry span's operation (`GET /timetable`).
    #[prost(string, tag = "3")]
    pub entry: String,
    #[prost(enumeration = "DependencyClass", tag = "4")]
    #[serde(
        default,
        serialize_with = "as_name::serialize::<DependencyClass, _>",
        deserialize_with = "as_name::deserialize::<DependencyClass, _>"
    )]
    pub class: i32,
    #[prost(string, tag = "5")]
    #[serde(default)]
    pub peer: String,
    #[prost(uint64, tag = "6")]
    pub count: u64,
    /// Sum of the calls' durations, nanoseconds.
    #[prost(uint64, tag = "7")]
    pub sum_ns: u64,
}

//! Log records apps export over OTLP (`/v1/logs`). The agent keeps those at WARN and above and
//! every record that carries a trace id (so a trace's waterfall shows its logs); the rest are
//! counted, not shipped.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OTLP's `SeverityNumber` of WARN: records at or above it are kept.
pub const SEVERITY_WARN: i32 = 13;

/// One log record.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogRecord {
    /// When it happened (the record's time, else when it was observed), ns since the epoch.
    #[prost(int64, tag = "1")]
    pub time_ns: i64,
    #[prost(string, tag = "2")]
    pub service: String,
    #[prost(string, tag = "3")]
    #[serde(default)]
    pub instance: String,
    /// OTLP's severity number, 1 (TRACE) to 24 (FATAL4); 0 when unspecified.
    #[prost(int32, tag = "4")]
    #[serde(default)]
    pub severity_number: i32,
    /// As the app wrote it (`WARNING`, `error`); may be empty.
    #[prost(string, tag = "5")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub severity_text: String,
    /// The message (a structured body is kept as its JSON text).
    #[prost(string, tag = "6")]
    #[serde(default)]
    pub body: String,
    /// 16 bytes, or empty.
    #[prost(bytes = "vec", tag = "7")]
    #[serde(with = "crate::hexid", default, skip_serializing_if = "Vec::is_empty")]
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty.
    #[prost(bytes = "vec", tag = "8")]
    #[serde(with = "crate::hexid", default, skip_serializing_if = "Vec::is_empty")]
    pub span_id: Vec<u8>,
    /// Bounded like span attributes (`exception.type`, `code.function`...).
    #[prost(btree_map = "string, string", tag = "9")]
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// The name of a severity number's range, as OTLP defines them.
pub fn severity_name(n: i32) -> &'static str {
    match n {
        1..=4 => "TRACE",
        5..=8 => "DEBUG",
        9..=12 => "INFO",
        13..=16 => "WARN",
        17..=20 => "ERROR",
        21..=24 => "FATAL",
        _ => "UNSPECIFIED",
    }
}

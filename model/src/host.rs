//! Host metrics sampled by the agent.

use serde::{Deserialize, Serialize};

/// One sample of the agent's host and of the app process it watches.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSample {
    /// Nanoseconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub time_ns: i64,
    #[prost(string, tag = "2")]
    pub host: String,
    /// 0–100, all cores together.
    #[prost(double, tag = "3")]
    #[serde(default)]
    pub cpu_percent: f64,
    #[prost(uint64, tag = "4")]
    #[serde(default)]
    pub mem_used_bytes: u64,
    #[prost(uint64, tag = "5")]
    #[serde(default)]
    pub mem_total_bytes: u64,
    #[prost(double, tag = "6")]
    #[serde(default)]
    pub load1: f64,
    #[prost(double, tag = "7")]
    #[serde(default)]
    pub load5: f64,
    #[prost(double, tag = "8")]
    #[serde(default)]
    pub load15: f64,
    #[prost(uint64, tag = "9")]
    #[serde(default)]
    pub net_rx_bytes_per_s: u64,
    #[prost(uint64, tag = "10")]
    #[serde(default)]
    pub net_tx_bytes_per_s: u64,
    #[prost(uint32, tag = "11")]
    #[serde(default)]
    pub process_count: u32,
    #[prost(message, repeated, tag = "12")]
    #[serde(default)]
    pub disks: Vec<DiskUsage>,
    /// The watched app process, when configured and found.
    #[prost(double, optional, tag = "13")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_cpu_percent: Option<f64>,
    #[prost(uint64, optional, tag = "14")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_rss_bytes: Option<u64>,
    #[prost(uint32, optional, tag = "15")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_threads: Option<u32>,
}

/// Space on one mounted file system.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskUsage {
    #[prost(string, tag = "1")]
    pub mount: String,
    #[prost(uint64, tag = "2")]
    pub used_bytes: u64,
    #[prost(uint64, tag = "3")]
    pub total_bytes: u64,
}

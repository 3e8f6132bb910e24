//! Which version of a service an instance runs: `service.version` (and the deployment
//! environment) from the resources apps send. The collector turns the first sight of a new
//! version into a change event, shown on incident timelines and ranked as a cause.

use serde::{Deserialize, Serialize};

/// One (service, instance) seen running `version`.
#[derive(Clone, PartialEq, Eq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceVersion {
    #[prost(string, tag = "1")]
    pub service: String,
    #[prost(string, tag = "2")]
    pub instance: String,
    /// `service.version`.
    #[prost(string, tag = "3")]
    pub version: String,
    /// `deployment.environment.name` (or the older `deployment.environment`); may be empty.
    #[prost(string, tag = "4")]
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment: String,
    /// When the agent first saw it, nanoseconds since the Unix epoch.
    #[prost(int64, tag = "5")]
    pub first_seen_ns: i64,
}

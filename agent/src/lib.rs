//! Stormwatch agent: the sidecar beside each app server.
//!
//! Apps export spans over OTLP (HTTP or gRPC) or Zipkin to the agent on loopback. The agent
//! classifies each span ([`classify`], [`normalize`]) into the compact [`received::Received`],
//! counts it in per-minute aggregates ([`pipeline::aggregates`]) *before* sampling, keeps
//! errors, slow spans and a share of the rest ([`pipeline::sampler`]), and ships batches to the
//! collector ([`ship::shipper`]) through a bounded disk spool ([`ship::spool`]) so an outage
//! loses nothing. Receivers never block the app ([`ingest`]). OTLP metrics and logs ride in
//! the same batches ([`signals`]).
//!
//! `main.rs` only parses flags and starts [`app::Agent`]; tests drive the same code.

pub mod admin;
pub mod app;
pub mod attributes;
pub mod classify;
pub mod config;
pub mod host;
pub mod ingest;
pub mod metrics;
pub mod normalize;
pub mod peer_names;
pub mod pipeline;
pub mod probes;
pub mod received;
pub mod receivers;
pub mod reload;
pub mod ship;
pub mod signals;
pub mod util;
pub mod versions;

pub use app::Agent;
pub use config::Config;

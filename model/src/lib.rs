//! Stormwatch's wire and domain model.
//!
//! Everything an agent sends to a collector is a [`Batch`]; every type here derives both
//! `prost::Message` (the compact binary encoding, `application/x-protobuf`) and serde (the JSON
//! encoding, `application/json`), so the two encodings can never drift apart. The schema is
//! written out for non-Rust producers in `model/proto/stormwatch.proto`.
//!
//! This crate does no IO: decoding, validation, histogram arithmetic, the duration grammar of
//! every config file ([`duration`]) and a reading of the system clock ([`now_ns`]).

pub mod aggregate;
pub mod batch;
pub mod duration;
pub mod entry_call;
pub mod enums;
pub mod hexid;
pub mod histogram;
pub mod host;
pub mod limits;
pub mod log;
pub mod metric;
pub mod peer;
pub mod probe;
pub mod span;
pub mod span_ref;
pub mod validate;
pub mod version;
pub mod wire;

pub use aggregate::{Aggregate, AggregateKey};
pub use batch::{AgentStats, Batch, BorrowedBatch, DecodeError, Encoding, WIRE_VERSION};
pub use duration::{now_ns, parse_duration, Dur, DurationError};
pub use entry_call::EntryCall;
pub use enums::{
    DbRole, DependencyClass, FailureClass, KeepReason, MetricKind, SpanFlag, SpanKind, SpanStatus,
};
pub use histogram::Histogram;
pub use host::{DiskUsage, HostSample};
pub use log::LogRecord;
pub use metric::MetricPoint;
pub use probe::ProbeSample;
pub use span::Span;
pub use span_ref::SpanRef;
pub use validate::{FieldError, Truncations};
pub use version::ServiceVersion;

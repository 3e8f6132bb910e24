//! The unit an agent ships: a versioned batch with a per-agent-instance sequence number.

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::entry_call::EntryCall;
use crate::host::HostSample;
use crate::log::LogRecord;
use crate::metric::MetricPoint;
use crate::probe::ProbeSample;
use crate::span::Span;
use crate::span_ref::SpanRef;
use crate::version::ServiceVersion;
use crate::wire::{Field, Reader};

/// The only wire version this build reads and writes.
pub const WIRE_VERSION: u32 = 1;

/// What an agent sends in one `POST /api/v1/ingest`.
///
/// `(agent_id, instance, sequence)` identifies a batch: the collector stores a batch at most
/// once, so an agent may resend after any failure.
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Batch {
    /// Must be [`WIRE_VERSION`].
    #[prost(uint32, tag = "1")]
    pub version: u32,
    /// Stable name of the agent (usually the host name).
    #[prost(string, tag = "2")]
    pub agent_id: String,
    /// Changes on every agent start (start time or a random id).
    #[prost(string, tag = "3")]
    pub instance: String,
    /// Increases by one per batch within an instance.
    #[prost(uint64, tag = "4")]
    pub sequence: u64,
    /// When the agent built the batch, ns since the Unix epoch (0 when unknown).
    #[prost(int64, tag = "5")]
    #[serde(default)]
    pub sent_at_ns: i64,
    #[prost(message, repeated, tag = "6")]
    #[serde(default)]
    pub spans: Vec<Span>,
    #[prost(message, repeated, tag = "7")]
    #[serde(default)]
    pub aggregates: Vec<Aggregate>,
    #[prost(message, repeated, tag = "8")]
    #[serde(default)]
    pub hosts: Vec<HostSample>,
    #[prost(message, repeated, tag = "9")]
    #[serde(default)]
    pub probes: Vec<ProbeSample>,
    #[prost(message, optional, tag = "10")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stats: Option<AgentStats>,
    /// Versions of services newly seen (or seen again after an agent restart).
    #[prost(message, repeated, tag = "11")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<ServiceVersion>,
    /// Dependency calls by the server operation that made them (deltas, like aggregates).
    #[prost(message, repeated, tag = "12")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entry_calls: Vec<EntryCall>,
    /// OTLP metrics, one point per series and minute (parts of a minute merge).
    #[prost(message, repeated, tag = "13")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricPoint>,
    /// OTLP log records kept (WARN and above, or carrying a trace id).
    #[prost(message, repeated, tag = "14")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogRecord>,
}

/// A batch whose spans are borrowed from its body ([`Batch::decode_borrowed`]).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BorrowedBatch<'a> {
    /// Everything but the spans (`spans` is empty).
    pub batch: Batch,
    pub spans: Vec<SpanRef<'a>>,
}

impl<'a> BorrowedBatch<'a> {
    /// `batch` with its spans moved into `spans`, borrowing them from `spans`.
    pub fn of(mut batch: Batch, spans: &'a mut Vec<Span>) -> Self {
        *spans = std::mem::take(&mut batch.spans);
        BorrowedBatch {
            batch,
            spans: spans.iter().map(SpanRef::from).collect(),
        }
    }
}

/// The agent's own counters since its instance started (cumulative).
#[derive(Clone, PartialEq, prost::Message, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentStats {
    #[prost(uint64, tag = "1")]
    #[serde(default)]
    pub spans_received: u64,
    #[prost(uint64, tag = "2")]
    #[serde(default)]
    pub spans_kept: u64,
    #[prost(uint64, tag = "3")]
    #[serde(default)]
    pub spans_dropped: u64,
    #[prost(uint64, tag = "4")]
    #[serde(default)]
    pub spool_bytes: u64,
    /// Spans missing from the aggregates this agent shipped: counted, then lost with a batch
    /// that was dropped (spool full, refused for good...). `spans_dropped` counts kept spans.
    #[prost(uint64, tag = "5")]
    #[serde(default)]
    pub spans_lost: u64,
    /// Batches the collector refused for good, moved to the agent's dead-letter folder.
    #[prost(uint64, tag = "6")]
    #[serde(default)]
    pub dead_letter_batches: u64,
    /// Metric points not kept: over the agent's series cap, or refused as invalid.
    #[prost(uint64, tag = "7")]
    #[serde(default)]
    pub metric_points_dropped: u64,
    /// Log records received but not shipped (below WARN without a trace id is not counted
    /// here: those are filtered by design). Queue full, invalid, or lost with a batch.
    #[prost(uint64, tag = "8")]
    #[serde(default)]
    pub log_records_dropped: u64,
}

/// The two body encodings of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// `application/json`
    Json,
    /// `application/x-protobuf`
    Protobuf,
}

impl Encoding {
    /// From a `Content-Type` header value (parameters such as `; charset=utf-8` ignored).
    pub fn from_content_type(value: &str) -> Option<Self> {
        let mime = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match mime.as_str() {
            "application/json" => Some(Encoding::Json),
            "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
            _ => None,
        }
    }

    /// The canonical `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Encoding::Json => "application/json",
            Encoding::Protobuf => "application/x-protobuf",
        }
    }
}

/// A body that is not a well-formed batch.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The JSON path of the offending field, when known (`spans[3].duration_ns`).
    pub field: Option<String>,
    pub message: String,
}

impl Batch {
    /// Decodes a batch from an (uncompressed) body.
    pub fn decode(body: &[u8], encoding: Encoding) -> Result<Batch, DecodeError> {
        match encoding {
            Encoding::Protobuf => {
                <Batch as prost::Message>::decode(body).map_err(|e| DecodeError {
                    field: None,
                    message: format!("malformed protobuf: {e}"),
                })
            }
            Encoding::Json => {
                let de = &mut serde_json::Deserializer::from_slice(body);
                serde_path_to_error::deserialize(de).map_err(|e| {
                    let path = e.path().to_string();
                    DecodeError {
                        field: (path != ".").then_some(path),
                        message: format!("malformed JSON: {}", e.inner()),
                    }
                })
            }
        }
    }

    /// Decodes a protobuf body with its spans borrowed from it ([`SpanRef`]): what the
    /// collector stores. The other fields are decoded by prost into [`Batch`] (its `spans`
    /// left empty) from a copy of their bytes.
    pub fn decode_borrowed(body: &[u8]) -> Result<BorrowedBatch<'_>, DecodeError> {
        let malformed = |field: Option<String>, e: crate::wire::WireError| DecodeError {
            field,
            message: format!("malformed protobuf: {e}"),
        };
        // Counted first: growing a vector of 3,000 spans by doubling copies it over and over.
        let mut count = Reader::new(body);
        let mut n = 0;
        while let Ok(Some((number, _))) = count.next() {
            n += usize::from(number == 6);
        }
        let mut r = Reader::new(body);
        let mut rest = Vec::new();
        let mut spans = Vec::with_capacity(n);
        loop {
            let before = r.position();
            match r.next().map_err(|e| malformed(None, e))? {
                None => break,
                Some((6, Field::Len(b))) => spans.push(
                    SpanRef::decode(b)
                        .map_err(|e| malformed(Some(format!("spans[{}]", spans.len())), e))?,
                ),
                Some(_) => rest.extend_from_slice(&body[before..r.position()]),
            }
        }
        // A field 6 that is not length-delimited went to `rest`, where prost refuses it.
        let batch = Batch::decode(&rest, Encoding::Protobuf)?;
        Ok(BorrowedBatch { batch, spans })
    }

    /// Encodes the batch.
    pub fn encode(&self, encoding: Encoding) -> Vec<u8> {
        match encoding {
            Encoding::Protobuf => prost::Message::encode_to_vec(self),
            Encoding::Json => serde_json::to_vec(self).expect("a batch always serializes"),
        }
    }

    /// Number of spans, aggregates and samples, for logs.
    pub fn item_count(&self) -> usize {
        self.spans.len()
            + self.aggregates.len()
            + self.hosts.len()
            + self.probes.len()
            + self.metrics.len()
            + self.logs.len()
    }
}

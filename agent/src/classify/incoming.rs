//! What the classifier takes from a receiver, and what it says when it refuses a span.

use stormwatch_model::SpanKind;

/// A received span in protocol-neutral form.
pub struct Incoming<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub kind: SpanKind,
    pub start_ns: u64,
    pub end_ns: u64,
    /// The protocol's own error marker (OTLP status ERROR, Zipkin `error` tag).
    pub error: bool,
    pub status_message: &'a str,
    pub service: &'a str,
    pub instance: &'a str,
}

/// Why a span was refused.
pub type Reject = String;

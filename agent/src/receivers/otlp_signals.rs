//! OTLP metrics and logs, whichever transport brought them (HTTP protobuf or JSON, gRPC):
//! converted by [`crate::signals`] and held for the next batch.
//!
//! Answers as for traces: a request whose every item is invalid is refused whole (400 /
//! INVALID_ARGUMENT), a partly invalid one is taken with `partial_success`; held logs beyond
//! the agent's bound answer 429 / RESOURCE_EXHAUSTED with a retry hint. Metrics never wait:
//! they fold into per-minute points whose number is bounded by the series cap.

use std::sync::atomic::Ordering::Relaxed;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};

use crate::config::Config;
use crate::ingest::Ingest;
use crate::signals::{logs, metrics};

/// Why a request was not taken.
#[derive(Debug)]
pub enum Refusal {
    /// Nothing in it could be used (400 / INVALID_ARGUMENT).
    Invalid(String),
    /// The agent holds too much; retry later (429 / RESOURCE_EXHAUSTED).
    Full(String),
}

/// One metrics export.
pub fn export_metrics(
    ingest: &Ingest,
    cfg: &Config,
    req: &ExportMetricsServiceRequest,
) -> Result<ExportMetricsServiceResponse, Refusal> {
    let conv = metrics::convert(req, stormwatch_model::now_ns());
    let m = &ingest.metrics;
    m.metric_points_received
        .fetch_add((conv.points.len() + conv.rejected) as u64, Relaxed);
    if conv.rejected > 0 {
        m.metric_points_dropped
            .fetch_add(conv.rejected as u64, Relaxed);
        if conv.points.is_empty() {
            return Err(Refusal::Invalid(format!(
                "all {} data points refused; first: {}",
                conv.rejected,
                conv.first_error.unwrap_or_default()
            )));
        }
    }
    let partial = (conv.rejected > 0).then(|| ExportMetricsPartialSuccess {
        rejected_data_points: conv.rejected as i64,
        error_message: conv.first_error.clone().unwrap_or_default(),
    });
    ingest
        .signals
        .add_points(conv.points, cfg.limits.max_metric_series);
    Ok(ExportMetricsServiceResponse {
        partial_success: partial,
    })
}

/// One logs export.
pub fn export_logs(
    ingest: &Ingest,
    req: &ExportLogsServiceRequest,
) -> Result<ExportLogsServiceResponse, Refusal> {
    let conv = logs::convert(req, stormwatch_model::now_ns());
    let m = &ingest.metrics;
    m.log_records_received
        .fetch_add(conv.received as u64, Relaxed);
    m.log_records_filtered
        .fetch_add(conv.filtered as u64, Relaxed);
    if conv.rejected > 0 {
        m.log_records_dropped
            .fetch_add(conv.rejected as u64, Relaxed);
        if conv.kept.is_empty() && conv.filtered == 0 {
            return Err(Refusal::Invalid(format!(
                "all {} log records refused; first: {}",
                conv.rejected,
                conv.first_error.unwrap_or_default()
            )));
        }
    }
    let partial = (conv.rejected > 0).then(|| ExportLogsPartialSuccess {
        rejected_log_records: conv.rejected as i64,
        error_message: conv.first_error.clone().unwrap_or_default(),
    });
    ingest
        .signals
        .add_logs(conv.kept)
        .map_err(|full| Refusal::Full(full.to_string()))?;
    Ok(ExportLogsServiceResponse {
        partial_success: partial,
    })
}

//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` via tonic.
//!
//! Same conversion and queue as OTLP/HTTP. A full queue answers RESOURCE_EXHAUSTED with a
//! `google.rpc.RetryInfo` detail, which the OTLP spec tells exporters to honour; a request
//! whose every span is invalid answers INVALID_ARGUMENT.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;

use super::{otlp, rpc};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Receiver;

/// The gRPC trace service.
pub struct GrpcReceiver {
    pub ingest: Ingest,
    pub config: watch::Receiver<Arc<Config>>,
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let cfg = self.config.borrow().clone();
        let req = request.into_inner();
        let converted = otlp::convert(&req, &cfg);
        drop(req);
        self.ingest.reject(Receiver::OtlpGrpc, converted.rejected);
        if converted.spans.is_empty() && converted.rejected > 0 {
            return Err(tonic::Status::invalid_argument(format!(
                "all {} spans refused; first: {}",
                converted.rejected,
                converted.first_error.unwrap_or_default()
            )));
        }
        let partial = converted.partial_success();
        if let Err(full) = self.ingest.submit(Receiver::OtlpGrpc, converted.spans) {
            let st = rpc::status(
                rpc::RESOURCE_EXHAUSTED,
                full.to_string(),
                Some(super::otlp_http::RETRY_AFTER_S),
            );
            return Err(tonic::Status::with_details(
                tonic::Code::ResourceExhausted,
                full.to_string(),
                st.encode_to_vec().into(),
            ));
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: partial,
        }))
    }
}

/// The tonic service with gzip accepted and the configured message size limit.
pub fn service(rx: GrpcReceiver, max_message_bytes: usize) -> TraceServiceServer<GrpcReceiver> {
    TraceServiceServer::new(rx)
        .accept_compressed(CompressionEncoding::Gzip)
        .max_decoding_message_size(max_message_bytes)
}

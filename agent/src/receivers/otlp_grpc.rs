//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export` via tonic.
//!
//! Same conversion and queue as OTLP/HTTP protobuf: the request message reaches
//! [`otlp_wire::convert`] as bytes (a codec that decodes nothing), so a gRPC span costs what
//! an HTTP one does instead of a full prost decode into owned strings first. The service is
//! written out here rather than generated because the generated one fixes the prost codec.
//!
//! A full queue answers RESOURCE_EXHAUSTED with a `google.rpc.RetryInfo` detail, which the
//! OTLP spec tells exporters to honour; a request whose every span is invalid, or that is not
//! a valid message, answers INVALID_ARGUMENT.

use std::sync::Arc;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use tokio::sync::watch;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, EnabledCompressionEncodings, Poll, StdError};

use super::{otlp_wire, rpc};
use crate::config::Config;
use crate::ingest::Ingest;
use crate::metrics::Receiver;

/// The gRPC service name.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";
const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gRPC trace receiver.
pub struct GrpcReceiver {
    pub ingest: Ingest,
    pub config: watch::Receiver<Arc<Config>>,
}

impl GrpcReceiver {
    /// One `ExportTraceServiceRequest`, as bytes.
    fn export(&self, body: &[u8]) -> Result<ExportTraceServiceResponse, tonic::Status> {
        let cfg = self.config.borrow().clone();
        let converted = otlp_wire::convert(body, &cfg)
            .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        self.ingest.reject(Receiver::OtlpGrpc, converted.rejected);
        if converted.spans.is_empty() && converted.rejected > 0 {
            return Err(tonic::Status::invalid_argument(format!(
                "all {} spans refused; first: {}",
                converted.rejected,
                converted.first_error.unwrap_or_default()
            )));
        }
        let partial = converted.partial_success();
        self.ingest.versions.observe(&converted.versions);
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
        Ok(ExportTraceServiceResponse {
            partial_success: partial,
        })
    }
}

/// Requests as their bytes; responses encoded with prost.
#[derive(Debug, Default, Clone, Copy)]
struct RawCodec;

#[derive(Debug)]
struct RawDecoder;

#[derive(Debug)]
struct ResponseEncoder;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> ResponseEncoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|e| tonic::Status::internal(format!("encoding the response: {e}")))
    }
}

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// The tonic service: gzip accepted, `max_message_bytes` the largest (decompressed) request.
#[derive(Clone)]
pub struct TraceServer {
    inner: Arc<GrpcReceiver>,
    max_message_bytes: usize,
}

/// The service for [`tonic::transport::Server::add_service`].
pub fn service(rx: GrpcReceiver, max_message_bytes: usize) -> TraceServer {
    TraceServer {
        inner: Arc::new(rx),
        max_message_bytes,
    }
}

impl tonic::server::NamedService for TraceServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct Export(Arc<GrpcReceiver>);

impl tonic::server::UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.export(request.get_ref()).map(tonic::Response::new) })
    }
}

impl<B> tonic::codegen::Service<http::Request<B>> for TraceServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let inner = self.inner.clone();
        let max = self.max_message_bytes;
        Box::pin(async move {
            let mut accept = EnabledCompressionEncodings::default();
            accept.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .apply_compression_config(accept, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(max), None);
            Ok(grpc.unary(Export(inner), req).await)
        })
    }
}

/// The metrics and logs gRPC services: prost-decoded by tonic's generated servers (no span
/// hot path here), answered like traces.
pub mod signals {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
        LogsService, LogsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
        MetricsService, MetricsServiceServer,
    };
    use opentelemetry_proto::tonic::collector::metrics::v1::{
        ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    };
    use prost::Message;
    use tokio::sync::watch;
    use tonic::codec::CompressionEncoding;

    use crate::config::Config;
    use crate::ingest::Ingest;
    use crate::receivers::otlp_signals::{self, Refusal};
    use crate::receivers::rpc;

    /// Both services' state.
    #[derive(Clone)]
    pub struct SignalsReceiver {
        pub ingest: Ingest,
        pub config: watch::Receiver<Arc<Config>>,
    }

    fn status(r: Refusal) -> tonic::Status {
        match r {
            Refusal::Invalid(m) => tonic::Status::invalid_argument(m),
            Refusal::Full(m) => {
                let st = rpc::status(
                    rpc::RESOURCE_EXHAUSTED,
                    m.clone(),
                    Some(super::super::otlp_http::RETRY_AFTER_S),
                );
                tonic::Status::with_details(
                    tonic::Code::ResourceExhausted,
                    m,
                    st.encode_to_vec().into(),
                )
            }
        }
    }

    #[tonic::async_trait]
    impl MetricsService for SignalsReceiver {
        async fn export(
            &self,
            request: tonic::Request<ExportMetricsServiceRequest>,
        ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
            let cfg = self.config.borrow().clone();
            otlp_signals::export_metrics(&self.ingest, &cfg, request.get_ref())
                .map(tonic::Response::new)
                .map_err(status)
        }
    }

    #[tonic::async_trait]
    impl LogsService for SignalsReceiver {
        async fn export(
            &self,
            request: tonic::Request<ExportLogsServiceRequest>,
        ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
            otlp_signals::export_logs(&self.ingest, request.get_ref())
                .map(tonic::Response::new)
                .map_err(status)
        }
    }

    /// The two services for [`tonic::transport::Server::add_service`], gzip accepted,
    /// `max_message_bytes` the largest (decompressed) request.
    pub fn services(
        rx: SignalsReceiver,
        max_message_bytes: usize,
    ) -> (
        MetricsServiceServer<SignalsReceiver>,
        LogsServiceServer<SignalsReceiver>,
    ) {
        (
            MetricsServiceServer::new(rx.clone())
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes),
            LogsServiceServer::new(rx)
                .accept_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(max_message_bytes),
        )
    }
}

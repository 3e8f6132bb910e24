//! The OpenTelemetry SDK set-up shared by both services: a tracer provider with a batch span
//! processor exporting OTLP/HTTP protobuf, a meter provider exporting the services' metrics
//! (limiters in flight, pool connections in use) the same way every [`METRICS_INTERVAL`],
//! W3C trace-context propagation, and the helpers that build spans following the semantic
//! conventions the agent reads.
//!
//! The SDK's batch processor exports from a thread of its own and blocks on the export
//! future there. The OTLP exporter is given [`TokioHttpClient`], which runs each request on
//! the service's Tokio runtime (through a runtime handle) with the workspace's reqwest
//! (rustls), so no second HTTP stack or runtime is needed.

use std::time::Duration;

use anyhow::Context as _;
use axum::http;
use bytes::Bytes;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::HttpError;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;

/// How often the batch processor exports (the SDK's default is 5 s; the demo's alerts want
/// spans at the agent quickly).
pub const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Spans queued for export at most; past it the SDK drops new spans (and counts them).
pub const EXPORT_QUEUE: usize = 16_384;
/// How often metrics are exported (the SDK's default is 60 s; the demo's clock runs 60× faster).
pub const METRICS_INTERVAL: Duration = Duration::from_secs(5);
/// One export request's time limit.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last export.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// The service's tracer provider and tracer.
#[derive(Clone)]
pub struct Telemetry {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    meters: SdkMeterProvider,
}

/// `http://host:4318` → `http://host:4318/v1/metrics`; a traces URL gets its metrics sibling.
pub fn metrics_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    format!("{}/v1/metrics", e.strip_suffix("/v1/traces").unwrap_or(e))
}

/// `http://host:4318` → `http://host:4318/v1/traces` (a full traces URL is kept as is).
pub fn traces_url(endpoint: &str) -> String {
    let e = endpoint.trim_end_matches('/');
    if e.ends_with("/v1/traces") {
        e.to_owned()
    } else {
        format!("{e}/v1/traces")
    }
}

impl Telemetry {
    /// Starts the SDK: spans of `service_name` are exported to `endpoint` (the OTLP/HTTP base
    /// URL, e.g. `http://127.0.0.1:4318`). Must be called inside a Tokio runtime.
    pub fn init(endpoint: &str, service_name: &str) -> anyhow::Result<Telemetry> {
        let client = TokioHttpClient::new()?;
        let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(metrics_url(endpoint))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client.clone())
            .build()
            .with_context(|| format!("OTLP metric exporter for {endpoint}"))?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(traces_url(endpoint))
            .with_timeout(EXPORT_TIMEOUT)
            .with_http_client(client)
            .build()
            .with_context(|| format!("OTLP exporter for {endpoint}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_INTERVAL)
                    .with_max_queue_size(EXPORT_QUEUE)
                    .build(),
            )
            .build();
        let resource = Resource::builder()
            .with_service_name(service_name.to_owned())
            .with_attribute(KeyValue::new(
                "service.instance.id",
                format!("{service_name}-{}", std::process::id()),
            ))
            .build();
        let meters = SdkMeterProvider::builder()
            .with_reader(
                PeriodicReader::builder(metric_exporter)
                    .with_interval(METRICS_INTERVAL)
                    .build(),
            )
            .with_resource(resource.clone())
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("stormwatch-board");
        Ok(Telemetry {
            provider,
            tracer,
            meters,
        })
    }

    /// The service's meter, for instruments observed at each export.
    pub fn meter(&self) -> opentelemetry::metrics::Meter {
        self.meters.meter("stormwatch-board")
    }

    pub fn tracer(&self) -> &SdkTracer {
        &self.tracer
    }

    /// Exports every span ended so far (blocking work, run off the async workers).
    pub async fn flush(&self) {
        let p = self.provider.clone();
        let r = tokio::task::spawn_blocking(move || p.force_flush()).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }

    /// Exports what is left and stops the SDK.
    pub async fn shutdown(&self) {
        let m = self.meters.clone();
        let r =
            tokio::task::spawn_blocking(move || m.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "exporting the last metrics failed");
        }
        let p = self.provider.clone();
        let r =
            tokio::task::spawn_blocking(move || p.shutdown_with_timeout(SHUTDOWN_TIMEOUT)).await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "exporting the last spans failed");
        }
    }

    /// Starts a span of `kind` as a child of the current context.
    pub fn start(&self, name: String, kind: SpanKind, attrs: Vec<KeyValue>) -> Span {
        self.tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &Context::current())
    }

    /// Starts a client span; the returned context carries it (for propagation).
    pub fn client(&self, name: String, attrs: Vec<KeyValue>) -> ClientSpan {
        let span = self.start(name, SpanKind::Client, attrs);
        ClientSpan {
            cx: Context::current().with_span(span),
        }
    }
}

/// A client span in progress. Ended by [`ClientSpan::ok`] / [`ClientSpan::fail`], or on drop
/// (a dropped request, e.g. its caller timed out, still shows up).
pub struct ClientSpan {
    cx: Context,
}

impl ClientSpan {
    pub fn context(&self) -> &Context {
        &self.cx
    }

    pub fn set(&self, kv: KeyValue) {
        self.cx.span().set_attribute(kv);
    }

    /// Ends the span as successful.
    pub fn ok(self) {
        self.cx.span().end();
    }

    /// Ends the span as failed: OTel status ERROR with `message`, and `error.type`.
    pub fn fail(self, error_type: &str, message: &str) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new("error.type", error_type.to_owned()));
        span.set_status(Status::error(message.to_owned()));
        span.end();
    }
}

/// W3C `traceparent`/`tracestate` into outgoing headers.
pub fn inject(cx: &Context, headers: &mut http::HeaderMap) {
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
}

/// The remote parent from incoming headers (an empty context when there is none).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The OTLP exporter's HTTP client: reqwest (rustls) driven by the service's Tokio runtime.
#[derive(Debug, Clone)]
pub struct TokioHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl TokioHttpClient {
    fn new() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Handle::try_current()
            .context("the telemetry must be started inside a Tokio runtime")?;
        let client = reqwest::Client::builder()
            .timeout(EXPORT_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .build()?;
        Ok(TokioHttpClient { client, runtime })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for TokioHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let (parts, body) = request.into_parts();
        let task = self.runtime.spawn(async move {
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, headers, body))
        });
        let (status, headers, body) = task.await??;
        let mut out = http::Response::new(body);
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://a:4318"), "http://a:4318/v1/traces");
        assert_eq!(metrics_url("http://a:4318/"), "http://a:4318/v1/metrics");
        assert_eq!(
            metrics_url("http://a:4318/v1/traces"),
            "http://a:4318/v1/metrics"
        );
        assert_eq!(traces_url("http://a:4318/"), "http://a:4318/v1/traces");
        assert_eq!(
            traces_url("http://a:4318/v1/traces"),
            "http://a:4318/v1/traces"
        );
    }

    #[test]
    fn trace_context_round_trips_through_headers() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let sc = SpanContext::new(
            TraceId::from(0x0af7651916cd43dd8448eb211c80319c_u128),
            SpanId::from(0xb7ad6b7169203331_u64),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sc.clone());
        let mut h = http::HeaderMap::new();
        inject(&cx, &mut h);
        assert_eq!(
            h["traceparent"],
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        let back = extract(&h);
        assert_eq!(back.span().span_context().trace_id(), sc.trace_id());
    }
}

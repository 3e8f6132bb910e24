"""Sends N slow (always kept) server spans through the OpenTelemetry Python SDK to an agent.

Usage: python load.py N SERVICE OTLP_HTTP_BASE
"""
import sys
import time

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

n, service, base = int(sys.argv[1]), sys.argv[2], sys.argv[3]
provider = TracerProvider(resource=Resource.create({"service.name": service}))
provider.add_span_processor(
    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{base}/v1/traces"), max_export_batch_size=500, max_queue_size=n + 1)
)
tracer = provider.get_tracer("stormwatch-e2e")
now = time.time_ns()
for i in range(n):
    span = tracer.start_span("GET /load", kind=SpanKind.SERVER, start_time=now - 2_000_000_000,
                             attributes={"http.request.method": "GET", "http.route": "/load"})
    span.end(end_time=now)  # 2 s: slower than the 1 s http_server threshold, so always kept
    if i % 1000 == 999:
        time.sleep(0.1)  # spread the load over a few seconds so the outage lands mid-stream
provider.shutdown()
print(f"sent {n} spans as {service}")

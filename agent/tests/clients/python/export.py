"""Exports spans with the OpenTelemetry Python SDK to a running stormwatch-agent, over
OTLP/HTTP (protobuf) or OTLP/gRPC. Exits non-zero if an export failed.

Usage: python export.py http|grpc ENDPOINT
"""
import sys
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

protocol, endpoint = sys.argv[1], sys.argv[2]
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    inner = OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces")
else:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    inner = OTLPSpanExporter(endpoint=endpoint, insecure=True)

results = {"ok": 0, "failed": 0}


class Checking(SpanExporter):
    """Counts the inner exporter's results so a refused export fails the test."""

    def export(self, spans):
        r = inner.export(spans)
        results["ok" if r == SpanExportResult.SUCCESS else "failed"] += len(spans)
        return r

    def shutdown(self):
        inner.shutdown()


provider = TracerProvider(resource=Resource.create({"service.name": f"py-shop-{protocol}", "host.name": "py-1"}))
provider.add_span_processor(SimpleSpanProcessor(Checking()))
tracer = provider.get_tracer("stormwatch-test")

now = time.time_ns()
for i in range(5):
    root = tracer.start_span(
        "POST /checkout",
        kind=SpanKind.SERVER,
        start_time=now - 300_000_000,
        attributes={"http.method": "POST", "http.route": "/checkout", "http.status_code": 500},
    )
    ctx = set_span_in_context(root)
    q = tracer.start_span(
        "INSERT payments",
        context=ctx,
        kind=SpanKind.CLIENT,
        start_time=now - 250_000_000,
        attributes={
            "db.system": "mysql",
            "db.statement": f"INSERT INTO payments (user, amount) VALUES ('user{i}@example.com', {i * 10})",
            "net.peer.name": "mysql-primary",
            "net.peer.port": 3306,
        },
    )
    q.end(end_time=now - 240_000_000)
    root.set_status(Status(StatusCode.ERROR, "payment failed"))
    root.end(end_time=now)
provider.shutdown()
print(f"python/{protocol} exported {results['ok']} spans, {results['failed']} failed")
sys.exit(0 if results["failed"] == 0 and results["ok"] == 10 else 1)

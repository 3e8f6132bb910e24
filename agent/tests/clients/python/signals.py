"""Exports metrics and logs with the OpenTelemetry Python SDK to a running stormwatch-agent,
over OTLP/HTTP (protobuf) or OTLP/gRPC: a counter, an up-down counter (a pool's connections
in use), a histogram and an observable gauge; three log records through Python's logging
(a WARNING, an INFO inside a span, an INFO outside any span). Exits non-zero if an export
failed.

Usage: python signals.py http|grpc ENDPOINT
"""
import logging
import sys

from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.metrics import Observation
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

protocol, endpoint = sys.argv[1], sys.argv[2]
if protocol == "http":
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

    metric_inner = OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")
    log_inner = OTLPLogExporter(endpoint=f"{endpoint}/v1/logs")
else:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    metric_inner = OTLPMetricExporter(endpoint=endpoint, insecure=True)
    log_inner = OTLPLogExporter(endpoint=endpoint, insecure=True)

results = {"ok": 0, "failed": 0}


def record(r):
    results["ok" if r.name == "SUCCESS" else "failed"] += 1
    return r


class CheckingMetrics(MetricExporter):
    """Counts the inner exporter's results so a refused export fails the test."""

    def __init__(self):
        super().__init__(
            preferred_temporality=metric_inner._preferred_temporality,
            preferred_aggregation=metric_inner._preferred_aggregation,
        )

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        return record(metric_inner.export(metrics_data, timeout_millis=timeout_millis))

    def force_flush(self, timeout_millis=10_000):
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        metric_inner.shutdown()


class CheckingLogs:
    def export(self, batch):
        return record(log_inner.export(batch))

    def shutdown(self):
        log_inner.shutdown()

    def force_flush(self, timeout_millis=30_000):
        return True


resource = Resource.create({"service.name": f"py-signals-{protocol}", "service.instance.id": "py-1"})

# Metrics: two collections, so the cumulative counter ships an increase after its first value.
reader = PeriodicExportingMetricReader(CheckingMetrics(), export_interval_millis=3_600_000)
meters = MeterProvider(resource=resource, metric_readers=[reader])
meter = meters.get_meter("stormwatch-test")
requests = meter.create_counter("app.requests", unit="{request}")
in_use = meter.create_up_down_counter("db.client.connections.usage", unit="{connection}")
duration = meter.create_histogram("http.server.request.duration", unit="s")
meter.create_observable_gauge(
    "process.cpu.utilization", callbacks=[lambda options: [Observation(0.25)]], unit="1"
)
for i in range(10):
    requests.add(1, {"http.route": "/checkout"})
    duration.record(0.005 * (i + 1), {"http.route": "/checkout"})
in_use.add(8, {"pool.name": "shop", "state": "used"})
meters.force_flush()
requests.add(5, {"http.route": "/checkout"})
in_use.add(-3, {"pool.name": "shop", "state": "used"})
meters.shutdown()

# Logs through Python's logging, with the span context when there is one.
logs = LoggerProvider(resource=resource)
logs.add_log_record_processor(SimpleLogRecordProcessor(CheckingLogs()))
log = logging.getLogger("shop")
log.setLevel(logging.INFO)
log.addHandler(LoggingHandler(level=logging.INFO, logger_provider=logs))
log.warning("payment provider slow: %d ms", 1800)
tracer = TracerProvider(resource=resource).get_tracer("stormwatch-test")
with tracer.start_as_current_span("POST /checkout"):
    log.info("retrying payment for order %d", 42)
log.info("a routine line nobody ships")
logs.shutdown()

print(f"python/{protocol} signals: {results['ok']} exports ok, {results['failed']} failed")
# Two metric collections and three log records.
sys.exit(0 if results["failed"] == 0 and results["ok"] == 5 else 1)

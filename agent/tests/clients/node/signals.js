// Exports metrics and logs with the OpenTelemetry JS SDK to a running stormwatch-agent over
// OTLP/HTTP (these exporters send OTLP/JSON): a counter, an up-down counter and a histogram
// (cumulative, two collections), and a WARN and an ERROR log record with a trace context.
// Exits non-zero if any export failed.
// Usage: node signals.js http://127.0.0.1:4318
'use strict';
const { MeterProvider, PeriodicExportingMetricReader } = require('@opentelemetry/sdk-metrics');
const { OTLPMetricExporter } = require('@opentelemetry/exporter-metrics-otlp-http');
const { LoggerProvider, SimpleLogRecordProcessor } = require('@opentelemetry/sdk-logs');
const { OTLPLogExporter } = require('@opentelemetry/exporter-logs-otlp-http');
const { SeverityNumber } = require('@opentelemetry/api-logs');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { ROOT_CONTEXT, trace } = require('@opentelemetry/api');

const base = process.argv[2] || 'http://127.0.0.1:4318';
const resource = resourceFromAttributes({ 'service.name': 'node-signals', 'service.instance.id': 'node-1' });
let ok = 0;
let failed = 0;
function checking(inner) {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop !== 'export') return typeof target[prop] === 'function' ? target[prop].bind(target) : target[prop];
      return (items, done) => target.export(items, (result) => {
        if (result.code === 0) ok += 1; else { failed += 1; console.error('export failed:', result.error && result.error.message); }
        done(result);
      });
    },
  });
}

async function main() {
  const reader = new PeriodicExportingMetricReader({
    exporter: checking(new OTLPMetricExporter({ url: `${base}/v1/metrics` })),
    exportIntervalMillis: 3600000,
  });
  const meters = new MeterProvider({ resource, readers: [reader] });
  const meter = meters.getMeter('stormwatch-test');
  const active = meter.createUpDownCounter('http.server.active_requests', { unit: '{request}' });
  const served = meter.createCounter('app.orders.served', { unit: '{order}' });
  const duration = meter.createHistogram('http.server.request.duration', { unit: 's' });
  for (let i = 0; i < 10; i++) {
    served.add(1, { 'http.route': '/orders/:id' });
    duration.record(0.01 * (i + 1), { 'http.route': '/orders/:id' });
  }
  active.add(12, { 'http.route': '/orders/:id' });
  await meters.forceFlush();
  served.add(3, { 'http.route': '/orders/:id' });
  active.add(-12, { 'http.route': '/orders/:id' });
  await meters.forceFlush();
  await meters.shutdown();

  const logs = new LoggerProvider({
    resource,
    processors: [new SimpleLogRecordProcessor({ exporter: checking(new OTLPLogExporter({ url: `${base}/v1/logs` })) })],
  });
  const logger = logs.getLogger('stormwatch-test');
  const span = trace.wrapSpanContext({ traceId: '0af7651916cd43dd8448eb211c80319c', spanId: 'b7ad6b7169203331', traceFlags: 1 });
  const inSpan = trace.setSpan(ROOT_CONTEXT, span);
  logger.emit({ severityNumber: SeverityNumber.WARN, severityText: 'WARN', body: 'order queue above 80 %', attributes: { 'queue.depth': 812 } });
  logger.emit({ severityNumber: SeverityNumber.ERROR, severityText: 'ERROR', body: 'pricing call timed out', context: inSpan });
  await logs.forceFlush();
  await logs.shutdown();
  console.log(`node signals: ${ok} exports ok, ${failed} failed`);
  // Two metric collections (and the one at shutdown) and two log records.
  process.exit(failed === 0 && ok >= 4 ? 0 : 1);
}
main().catch((e) => { console.error(e); process.exit(1); });

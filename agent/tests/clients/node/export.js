// Exports spans with the OpenTelemetry JS SDK to a running stormwatch-agent over OTLP/HTTP
// (this exporter sends OTLP/JSON). Exits non-zero if any export failed.
// Usage: node export.js http://127.0.0.1:4318
'use strict';
const { BasicTracerProvider, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');
const { SpanKind, SpanStatusCode, context, trace } = require('@opentelemetry/api');

const base = process.argv[2] || 'http://127.0.0.1:4318';
const inner = new OTLPTraceExporter({ url: `${base}/v1/traces` });
let failures = 0;
let exported = 0;
const exporter = {
  export(spans, done) {
    inner.export(spans, (result) => {
      if (result.code !== 0) {
        failures += 1;
        console.error('export failed:', result.error && result.error.message);
      } else {
        exported += spans.length;
      }
      done(result);
    });
  },
  shutdown() { return inner.shutdown(); },
  forceFlush() { return inner.forceFlush ? inner.forceFlush() : Promise.resolve(); },
};
const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'node-shop', 'service.instance.id': 'node-1' }),
  spanProcessors: [new SimpleSpanProcessor(exporter)],
});
const tracer = provider.getTracer('stormwatch-test');

async function main() {
  const now = Date.now();
  for (let i = 0; i < 5; i++) {
    const root = tracer.startSpan('GET /orders/:id', {
      kind: SpanKind.SERVER,
      startTime: now - 1500,
      attributes: { 'http.request.method': 'GET', 'http.route': '/orders/:id', 'http.response.status_code': 200 },
    });
    const ctx = trace.setSpan(context.active(), root);
    const q = tracer.startSpan('SELECT orders', {
      kind: SpanKind.CLIENT,
      startTime: now - 1400,
      attributes: {
        'db.system.name': 'postgresql',
        'db.query.text': `SELECT * FROM orders WHERE id = ${1000 + i}`,
        'server.address': 'pg-main',
        'server.port': 5432,
      },
    }, ctx);
    q.end(now - 1390);
    const r = tracer.startSpan('GET', {
      kind: SpanKind.CLIENT,
      startTime: now - 1380,
      attributes: { 'db.system': 'redis', 'db.statement': `GET cart:${i}`, 'net.peer.name': 'cache' },
    }, ctx);
    r.setStatus({ code: SpanStatusCode.ERROR, message: 'timeout' });
    r.end(now - 1300);
    root.end(now); // 1.5 s: slow for http_server
  }
  await provider.forceFlush();
  await provider.shutdown();
  console.log(`node exported ${exported} spans, ${failures} failed exports`);
  process.exit(failures === 0 && exported === 15 ? 0 : 1);
}
main().catch((e) => { console.error(e); process.exit(1); });

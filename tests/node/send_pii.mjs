// Sends spans full of personal data with the OpenTelemetry Node.js SDK over OTLP/HTTP (protobuf).
// usage: node send_pii.mjs http://127.0.0.1:PORT
// Prints {"planted": [...values that must not arrive...], "span_count": N} as the last line.
import { NodeSDK } from "@opentelemetry/sdk-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { trace, SpanKind, SpanStatusCode } from "@opentelemetry/api";

const endpoint = process.argv[2];
if (!endpoint) {
  console.error("usage: node send_pii.mjs http://127.0.0.1:PORT");
  process.exit(2);
}
const planted = {
  email: "grace.hopper@navy.example.com",
  card: "4539 1488 0343 6467",
  bearer: "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
  urlPassword: "hunter2secret",
  sqlLiteral: "'4111-1111-1111-1111'",
  exceptionEmail: "ada@lovelace.example.org",
  ssn: "536-22-1846",
};
let failed = 0;
const exporter = new OTLPTraceExporter({ url: endpoint.replace(/\/$/, "") + "/v1/traces" });
const checked = {
  export(spans, done) {
    exporter.export(spans, (r) => {
      if (r.code !== 0) failed++;
      done(r);
    });
  },
  shutdown: () => exporter.shutdown(),
  forceFlush: () => exporter.forceFlush(),
};
const sdk = new NodeSDK({
  resource: resourceFromAttributes({ "service.name": "node-shop", "deployment.environment.name": "e2e" }),
  spanProcessors: [new SimpleSpanProcessor({ exporter: checked })],
});
sdk.start();
const tracer = trace.getTracer("e2e-node");
let spans = 0;
tracer.startActiveSpan("POST /checkout", { kind: SpanKind.SERVER }, (root) => {
  root.setAttribute("user.email", planted.email);
  root.setAttribute("app.card_number", planted.card);
  root.setAttribute("http.request.header.authorization", planted.bearer);
  root.setAttribute("url.full", `https://shop:${planted.urlPassword}@api.example.com/pay?sig=abc123def`);
  root.setAttribute("app.customer.ssn", planted.ssn);
  root.setAttribute("app.tags", ["vip", planted.email]);
  tracer.startActiveSpan("INSERT payments", { kind: SpanKind.CLIENT }, (db) => {
    db.setAttribute("db.system.name", "postgresql");
    db.setAttribute("db.query.text", `INSERT INTO payments (card) VALUES (${planted.sqlLiteral})`);
    db.recordException(new Error(`payment rejected for ${planted.exceptionEmail}`));
    db.setStatus({ code: SpanStatusCode.ERROR, message: `declined card ${planted.card}` });
    db.end();
    spans++;
  });
  root.end();
  spans++;
});
await sdk.shutdown();
if (failed > 0) {
  console.error(`${failed} exports failed`);
  process.exit(1);
}
console.log(JSON.stringify({ planted: Object.values(planted), span_count: spans }));

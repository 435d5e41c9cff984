// The `shop-frontend` service of the Jaeger end-to-end tests, with the OpenTelemetry Node.js SDK exporting
// OTLP/HTTP (protobuf) to tailgate. Each trace is a real request: a SERVER root `GET /checkout`, a CLIENT
// span calling the Python `users` service (tests/python/jaeger_users.py) over HTTP with `traceparent` and
// `baggage` injected by the SDK's W3C propagators. PII goes into attributes, baggage, a span name and (for
// errors) the status message.
//
// usage: node jaeger_frontend.mjs --users http://127.0.0.1:PORT --otlp http://127.0.0.1:PORT
//          [--normal N] [--errors N] [--slow N] [--concurrency N]
// Prints as its last line {"traces": [{"trace_id", "kind"}], "spans": [{"trace_id", "span_id",
// "parent_span_id", "name"}], "planted": [...], "exports": N}; exits 1 if any export or call failed.
import { NodeSDK } from "@opentelemetry/sdk-node";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace";
import { context, propagation, trace, SpanKind, SpanStatusCode } from "@opentelemetry/api";

const args = { normal: 100, errors: 10, slow: 5, concurrency: 8 };
for (let i = 2; i < process.argv.length; i += 2) {
  const key = process.argv[i].replace(/^--/, "");
  const value = process.argv[i + 1];
  args[key] = ["users", "otlp"].includes(key) ? value : Number(value);
}
if (!args.users || !args.otlp) {
  console.error("usage: node jaeger_frontend.mjs --users URL --otlp URL [--normal N] [--errors N] [--slow N]");
  process.exit(2);
}

// Personal data this service puts into its spans; none of it may reach Jaeger.
const planted = {
  email: "ada.lovelace@analytical.example.org",
  baggageEmail: "charles.babbage@analytical.example.org",
  card: "4539 1488 0343 6467",
  nameEmail: "mary.somerville@analytical.example.org",
  urlPassword: "s3cr3t-difference-engine",
  bearer: "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZGEifQ.c2lnbmF0dXJlLWZvci10ZXN0cw",
  statusCard: "5555 5555 5555 4444",
};

let exports = 0;
let failed = 0;
const otlp = new OTLPTraceExporter({ url: args.otlp.replace(/\/$/, "") + "/v1/traces" });
const checked = {
  export(spans, done) {
    otlp.export(spans, (r) => {
      exports++;
      if (r.code !== 0) {
        failed++;
        console.error(`export of ${spans.length} spans failed: ${r.error}`);
      }
      done(r);
    });
  },
  shutdown: () => otlp.shutdown(),
  forceFlush: () => otlp.forceFlush(),
};
const memory = new InMemorySpanExporter();
const sdk = new NodeSDK({
  resource: resourceFromAttributes({
    "service.name": "shop-frontend",
    "service.instance.id": "fe-1",
    "deployment.environment.name": "e2e",
  }),
  spanProcessors: [
    new SimpleSpanProcessor({ exporter: memory }),
    new BatchSpanProcessor({
      exporter: checked,
      scheduledDelayMillis: 100,
      maxQueueSize: 100000,
      maxExportBatchSize: 512,
    }),
  ],
});
sdk.start();
const tracer = trace.getTracer("shop-frontend.http", "3.1.0");

/** One checkout: root span, a client call to users with the context and baggage propagated. */
async function checkout(i, kind) {
  const mode = kind === "normal" ? "ok" : kind;
  const bag = propagation.createBaggage({
    "user.email": { value: planted.baggageEmail },
    tenant: { value: "acme" },
    "request.n": { value: String(i) },
  });
  const withBaggage = propagation.setBaggage(context.active(), bag);
  return context.with(withBaggage, () =>
    tracer.startActiveSpan("GET /checkout", { kind: SpanKind.SERVER }, async (root) => {
      root.setAttribute("http.request.method", "GET");
      root.setAttribute("http.route", "/checkout");
      root.setAttribute("user.email", planted.email);
      root.setAttribute("app.card_number", planted.card);
      root.setAttribute("http.request.header.authorization", planted.bearer);
      root.setAttribute("url.full", `https://shop:${planted.urlPassword}@shop.example.com/checkout?n=${i}`);
      const traceId = root.spanContext().traceId;
      try {
        await tracer.startActiveSpan(`lookup ${planted.nameEmail}`, { kind: SpanKind.CLIENT }, async (call) => {
          const headers = {};
          propagation.inject(context.active(), headers);
          if (!headers.traceparent || !headers.baggage) {
            throw new Error(`propagation did not inject traceparent and baggage: ${JSON.stringify(headers)}`);
          }
          call.setAttribute("http.request.method", "GET");
          call.setAttribute("server.address", "127.0.0.1");
          const res = await fetch(`${args.users}/users/${1000 + i}?mode=${mode}`, { headers });
          await res.text();
          call.setAttribute("http.response.status_code", res.status);
          if (res.status >= 500) {
            call.setStatus({ code: SpanStatusCode.ERROR, message: `users failed for card ${planted.statusCard}` });
          } else if (res.status !== 200) {
            throw new Error(`users answered ${res.status}`);
          }
          call.end();
        });
        if (kind === "error") {
          root.setStatus({ code: SpanStatusCode.ERROR, message: `checkout failed for ${planted.email}` });
        }
      } finally {
        root.end();
      }
      return { trace_id: traceId, kind };
    }),
  );
}

const kinds = [
  ...Array(args.normal).fill("normal"),
  ...Array(args.errors).fill("error"),
  ...Array(args.slow).fill("slow"),
];
// A fixed shuffle (Fisher-Yates on a small LCG) spreads the error and slow traces over the run.
let seed = 12345;
for (let i = kinds.length - 1; i > 0; i--) {
  seed = (seed * 48271) % 2147483647;
  const j = seed % (i + 1);
  [kinds[i], kinds[j]] = [kinds[j], kinds[i]];
}
const traces = [];
let next = 0;
let callFailures = 0;
async function worker() {
  while (next < kinds.length) {
    const i = next++;
    try {
      traces.push(await checkout(i, kinds[i]));
    } catch (e) {
      callFailures++;
      console.error(`checkout ${i} failed: ${e.stack || e}`);
    }
  }
}
await Promise.all(Array.from({ length: args.concurrency }, worker));

// The in-memory exporter forgets its spans on shutdown: read them first (SimpleSpanProcessor has them
// all as soon as each span ended).
const spans = memory.getFinishedSpans().map((s) => ({
  trace_id: s.spanContext().traceId,
  span_id: s.spanContext().spanId,
  parent_span_id: s.parentSpanContext ? s.parentSpanContext.spanId : "",
  name: s.name,
}));
await sdk.shutdown();

if (failed > 0 || callFailures > 0 || exports === 0) {
  console.error(`${failed} of ${exports} exports failed, ${callFailures} calls failed`);
  process.exit(1);
}
console.log(JSON.stringify({ traces, spans, planted: Object.values(planted), exports }));

// OpenTelemetry for the api-service, loaded before the application (`node --require ./tracing.js
// server.js`) so the auto-instrumentations can patch http and express as they are first required.
// Everything is configured by the standard OTEL_* environment variables:
//   OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_ENDPOINT (e.g. http://tailgate:4317),
//   OTEL_EXPORTER_OTLP_PROTOCOL (grpc | http/protobuf | http/json; default http/protobuf),
//   OTEL_PROPAGATORS (default tracecontext,baggage), OTEL_BSP_SCHEDULE_DELAY (ms between exports).
"use strict";

// tailgate takes traces only: no metrics or logs exporters unless asked for.
process.env.OTEL_SERVICE_NAME ??= "api-service";
process.env.OTEL_METRICS_EXPORTER ??= "none";
process.env.OTEL_LOGS_EXPORTER ??= "none";

const { NodeSDK } = require("@opentelemetry/sdk-node");
const { getNodeAutoInstrumentations } = require("@opentelemetry/auto-instrumentations-node");

const sdk = new NodeSDK({
  instrumentations: [
    getNodeAutoInstrumentations({
      // File-system, DNS and socket spans would bury the request spans of a demo.
      "@opentelemetry/instrumentation-fs": { enabled: false },
      "@opentelemetry/instrumentation-dns": { enabled: false },
      "@opentelemetry/instrumentation-net": { enabled: false },
      "@opentelemetry/instrumentation-http": {
        ignoreIncomingRequestHook: (req) => req.url === "/healthz",
      },
    }),
  ],
});
sdk.start();

// Export what is buffered before the process exits (docker stop, Ctrl-C, the tests' SIGTERM).
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.once(signal, () => {
    sdk.shutdown().finally(() => process.exit(0));
  });
}

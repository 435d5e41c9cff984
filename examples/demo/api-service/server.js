// tailgate demo: the api-service. An Express API whose `GET /checkout` calls the Python user-service
// (W3C trace context and baggage propagated by the OpenTelemetry auto-instrumentation) and, like real
// services, leaks personal data into its spans: the customer's email and card number as attributes, in
// baggage, in an event and in an exception message. It fails and is slow now and then at configurable
// rates, and on demand:
//   GET /checkout?user=42                       a normal request (&email=... the logged-in customer)
//   GET /checkout?user=42&fail=api|user         this service (500) or the user-service (500 -> 502) fails
//   GET /checkout?user=42&slow=api|user         this service or the user-service sleeps DEMO_SLOW_MS
//   (or the headers x-demo-fail / x-demo-slow with the same values)
// The answer carries the trace id (`trace_id` and the `x-trace-id` header), to find it in Jaeger.
// Environment: PORT (8080), HOST (127.0.0.1), USER_SERVICE_URL (http://127.0.0.1:8081),
// DEMO_ERROR_RATE (0.02), DEMO_SLOW_RATE (0.02), DEMO_SLOW_MS (1500), and the OTEL_* of tracing.js.
"use strict";

const express = require("express");
const { trace, context, propagation, SpanStatusCode } = require("@opentelemetry/api");

const HOST = process.env.HOST || "127.0.0.1";
const PORT = Number(process.env.PORT || 8080);
const USER_SERVICE_URL = (process.env.USER_SERVICE_URL || "http://127.0.0.1:8081").replace(/\/$/, "");
const ERROR_RATE = Number(process.env.DEMO_ERROR_RATE ?? 0.02);
const SLOW_RATE = Number(process.env.DEMO_SLOW_RATE ?? 0.02);
const SLOW_MS = Number(process.env.DEMO_SLOW_MS ?? 1500);

const tracer = trace.getTracer("tailgate-demo.api-service");
const app = express();

/** Which demo trigger the request asks for (`?fail=user` or `x-demo-fail: user`), or "". */
function wanted(req, kind) {
  return String(req.query[kind] || req.get(`x-demo-${kind}`) || "");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

app.get("/healthz", (_req, res) => res.send("ok\n"));

app.get("/checkout", async (req, res) => {
  const span = trace.getActiveSpan();
  const traceId = span ? span.spanContext().traceId : "";
  res.set("x-trace-id", traceId);
  const userId = Number.parseInt(req.query.user ?? "1", 10);
  if (!Number.isInteger(userId) || userId < 0) {
    return res.status(400).json({ error: "user must be a non-negative integer", trace_id: traceId });
  }
  const fail = wanted(req, "fail");
  const slow = wanted(req, "slow");
  span?.setAttribute("enduser.id", String(userId));
  span?.setAttribute("app.tenant", req.get("x-tenant") || "acme");

  // Baggage travels with the request to every downstream service. Teams put the tenant there, and, all
  // too often, who the customer is.
  const entries = {
    "tenant.id": { value: req.get("x-tenant") || "acme" },
    "session.id": { value: `sess-${userId}-${Date.now() % 100000}` },
  };
  const login = String(req.query.email || req.get("x-user-email") || "");
  if (login) {
    entries["user.email"] = { value: login };
    span?.setAttribute("app.login.email", login);
  }
  const bag = propagation.createBaggage(entries);

  try {
    const user = await context.with(propagation.setBaggage(context.active(), bag), () =>
      tracer.startActiveSpan("load customer", async (child) => {
        try {
          const headers = {};
          if (fail === "user") headers["x-demo-fail"] = "user";
          if (slow === "user") headers["x-demo-slow"] = "user";
          const r = await fetch(`${USER_SERVICE_URL}/users/${userId}`, { headers });
          if (!r.ok) {
            throw new Error(`user-service answered ${r.status} for user ${userId}`);
          }
          const u = await r.json();
          child.setAttribute("app.customer.email", u.email);
          child.setAttribute("app.customer.name", u.name);
          return u;
        } catch (err) {
          child.recordException(err);
          child.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
          throw err;
        } finally {
          child.end();
        }
      }),
    );

    await tracer.startActiveSpan("charge card", async (charge) => {
      try {
        charge.setAttribute("app.payment.card_number", user.card);
        charge.setAttribute("app.payment.amount", 42.5);
        if (slow === "api" || Math.random() < SLOW_RATE) {
          charge.setAttribute("app.demo.slow", true);
          await sleep(SLOW_MS);
        }
        if (fail === "api" || Math.random() < ERROR_RATE) {
          throw new Error(`card ${user.card} declined for ${user.email}`);
        }
        charge.addEvent("receipt sent", { "app.receipt.to": user.email });
      } catch (err) {
        charge.recordException(err);
        charge.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
        throw err;
      } finally {
        charge.end();
      }
    });

    res.json({ ok: true, trace_id: traceId, user });
  } catch (err) {
    // The http instrumentation marks the server span as an error for a 5xx; say why too.
    span?.recordException(err);
    span?.setStatus({ code: SpanStatusCode.ERROR, message: err.message });
    const status = err.message.startsWith("user-service") ? 502 : 500;
    res.status(status).json({ ok: false, error: err.message, trace_id: traceId });
  }
});

const server = app.listen(PORT, HOST, () => {
  console.log(`api-service listening on http://${HOST}:${PORT}, calling ${USER_SERVICE_URL}`);
});
server.on("error", (err) => {
  console.error(`api-service: ${err.message}`);
  process.exit(1);
});

"""The `users` service of the Jaeger end-to-end tests: a real HTTP server (the standard library's
ThreadingHTTPServer) instrumented with the OpenTelemetry Python SDK, exporting OTLP/gRPC. The Node.js
`shop-frontend` (tests/node/jaeger_frontend.mjs) calls it, the W3C trace context and baggage travelling
in the `traceparent` and `baggage` headers as between any two services.

usage: jaeger_users.py --otlp-grpc http://127.0.0.1:PORT [--export-delay-ms 100]

Prints {"port": N} on its first line once it listens on 127.0.0.1:N. Routes:
  GET /users/<id>?mode=ok|error|slow   a SERVER span (context and baggage extracted from the headers, every
                                        baggage entry copied to a `baggage.<key>` attribute), a CLIENT
                                        `SELECT users` span with a SQL text full of literals, and PII in
                                        attributes, an event and (mode=error) the status message and a
                                        recorded exception; mode=slow sleeps 1.1 s inside the server span.
  POST /shutdown                        flushes the SDK, answers the report and exits:
                                        {"spans": [{"trace_id", "span_id", "parent_span_id", "name"}...],
                                         "planted": [...], "exports": N}
It exits non-zero (and /shutdown answers 500) if any export to tailgate failed.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from opentelemetry import baggage
from opentelemetry.propagate import extract
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, memory, otlp_exporter

# Personal data this service puts into its spans; none of it may reach Jaeger.
PLANTED = {
    "owner_email": "katherine.johnson@langley.example.gov",
    "email": "dorothy.vaughan@langley.example.gov",
    "card": "4111 1111 1111 1111",
    "sql_card": "'5105105105105100'",
    "ssn": "536-22-1846",
    "error_email": "mary.jackson@langley.example.gov",
    "event_email": "christine.darden@langley.example.gov",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--otlp-grpc", required=True)
    ap.add_argument("--export-delay-ms", type=int, default=100, help="the batch span processor's schedule delay")
    args = ap.parse_args()
    p = PLANTED

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": "users", "service.instance.id": "users-1", "service.owner.email": p["owner_email"]}
        )
    )
    mem = memory()
    exporter = CheckedExporter(otlp_exporter("grpc", args.otlp_grpc), "users gRPC exporter")
    provider.add_span_processor(SimpleSpanProcessor(mem))
    provider.add_span_processor(
        BatchSpanProcessor(
            exporter, schedule_delay_millis=args.export_delay_ms, max_queue_size=100_000, max_export_batch_size=512
        )
    )
    tracer = provider.get_tracer("users.http", "1.4.0")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet: the test reads stdout
            pass

        def answer(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            url = urlparse(self.path)
            if not url.path.startswith("/users/"):
                return self.answer(404, b"not found")
            mode = parse_qs(url.query).get("mode", ["ok"])[0]
            ctx = extract(dict(self.headers.items()))
            with tracer.start_as_current_span("GET /users/{id}", context=ctx, kind=SpanKind.SERVER) as server:
                server.set_attribute("http.request.method", "GET")
                server.set_attribute("http.route", "/users/{id}")
                server.set_attribute("url.path", url.path)
                server.set_attribute("user.email", p["email"])
                server.set_attribute("app.customer.ssn", p["ssn"])
                for key, value in baggage.get_all(ctx).items():
                    server.set_attribute(f"baggage.{key}", str(value))
                with tracer.start_as_current_span("SELECT users", kind=SpanKind.CLIENT) as db:
                    db.set_attribute("db.system.name", "postgresql")
                    db.set_attribute(
                        "db.query.text",
                        f"SELECT id, name FROM users WHERE email = '{p['email']}' AND card = {p['sql_card']}",
                    )
                    db.add_event("row read", {"app.card": p["card"], "app.notify": p["event_email"]})
                    if mode == "error":
                        try:
                            raise RuntimeError(f"no row for {p['error_email']}")
                        except RuntimeError as e:
                            db.record_exception(e)
                        db.set_status(Status(StatusCode.ERROR, f"lookup failed for {p['error_email']}"))
                if mode == "slow":
                    time.sleep(1.1)
                if mode == "error":
                    server.set_attribute("http.response.status_code", 500)
                    server.set_status(Status(StatusCode.ERROR))
                    return self.answer(500, b"user lookup failed")
                server.set_attribute("http.response.status_code", 200)
            return self.answer(200, json.dumps({"id": url.path.rsplit("/", 1)[-1]}).encode(), "application/json")

        def do_POST(self):
            if self.path != "/shutdown":
                return self.answer(404, b"not found")
            provider.force_flush()
            provider.shutdown()
            spans = [
                {
                    "trace_id": format(s.context.trace_id, "032x"),
                    "span_id": format(s.context.span_id, "016x"),
                    "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
                    "name": s.name,
                }
                for s in mem.get_finished_spans()
            ]
            failed = [(n, str(r)) for n, r in exporter.results if r.name != "SUCCESS"]
            body = json.dumps(
                {"spans": spans, "planted": list(PLANTED.values()), "exports": len(exporter.results), "failed": failed}
            ).encode()
            self.answer(500 if failed else 200, body, "application/json")
            threading.Thread(target=server.shutdown, daemon=True).start()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}))
    sys.stdout.flush()
    server.serve_forever()


if __name__ == "__main__":
    main()

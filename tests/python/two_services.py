"""One trace, two services, several requests: `frontend` (OTLP/gRPC, batched) calls `payments`
(OTLP/HTTP, one request per span), with the W3C trace context propagated between them through a
`traceparent` header, as over a real HTTP call.

usage: two_services.py --frontend-grpc http://127.0.0.1:PORT --payments-http http://127.0.0.1:PORT

Order of arrival: payments' three spans (three HTTP requests), then frontend's client span (gRPC, flushed
on its own), then frontend's `render` and root span (gRPC). Prints the report described in
otlp_client.py.
"""

import argparse

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otlp_client import CheckedExporter, memory, otlp_exporter, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frontend-grpc", required=True)
    ap.add_argument("--payments-http", required=True)
    args = ap.parse_args()
    propagator = TraceContextTextMapPropagator()

    frontend = TracerProvider(resource=Resource.create({"service.name": "frontend", "service.instance.id": "fe-1"}))
    fe_mem = memory()
    fe_exp = CheckedExporter(otlp_exporter("grpc", args.frontend_grpc), "frontend gRPC exporter")
    frontend.add_span_processor(SimpleSpanProcessor(fe_mem))
    frontend.add_span_processor(BatchSpanProcessor(fe_exp, schedule_delay_millis=60_000))
    fe = frontend.get_tracer("frontend.http", "2.0.0")

    payments = TracerProvider(resource=Resource.create({"service.name": "payments", "service.instance.id": "pay-7"}))
    pay_mem = memory()
    pay_exp = CheckedExporter(otlp_exporter("http", args.payments_http, gzip=True), "payments HTTP exporter")
    payments.add_span_processor(SimpleSpanProcessor(pay_mem))
    payments.add_span_processor(SimpleSpanProcessor(pay_exp))
    pay = payments.get_tracer("payments.server", "0.9.1")

    def payments_handler(headers: dict) -> None:
        """The payments service handling an incoming request."""
        ctx = propagator.extract(headers)
        with pay.start_as_current_span("POST /charge", context=ctx, kind=SpanKind.SERVER) as server:
            server.set_attribute("http.request.method", "POST")
            with pay.start_as_current_span("SELECT card", kind=SpanKind.CLIENT) as db:
                db.set_attribute("db.system", "postgresql")
            with pay.start_as_current_span("fraud check") as fraud:
                fraud.set_attribute("fraud.score", 0.02)
            server.set_status(Status(StatusCode.OK))

    with fe.start_as_current_span("GET /checkout", kind=SpanKind.SERVER) as root:
        with fe.start_as_current_span("POST payments/charge", kind=SpanKind.CLIENT) as call:
            headers: dict = {}
            propagator.inject(headers, context=set_span_in_context(call))
            assert "traceparent" in headers, headers
            call.set_attribute("http.request.header.traceparent", headers["traceparent"])
            payments_handler(headers)
        frontend.force_flush()  # the client span leaves in its own request, before the root exists
        with fe.start_as_current_span("render"):
            pass
        root.set_attribute("http.response.status_code", 200)

    frontend.force_flush()
    frontend.shutdown()
    payments.shutdown()
    report([fe_mem, pay_mem], [fe_exp, pay_exp])


if __name__ == "__main__":
    main()

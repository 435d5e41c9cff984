"""Sends two traces with every OTLP span feature to an OTLP endpoint using the OpenTelemetry Python SDK.

usage: send_rich.py --protocol grpc|http --endpoint http://127.0.0.1:PORT [--gzip]

Trace 1 (service `checkout`): a SERVER root with attributes of every type and events; a CLIENT child with
links (one to a span of trace 2) and an ERROR status with a message and a recorded exception; nested
INTERNAL, PRODUCER and CONSUMER spans. Trace 2: a single span with status OK.
Prints the report described in otlp_client.py.
"""

import argparse
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, memory, otlp_exporter, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True, choices=["grpc", "http"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--gzip", action="store_true")
    args = ap.parse_args()

    resource = Resource.create(
        {
            "service.name": "checkout",
            "service.version": "1.2.3",
            "deployment.environment": "e2e",
            "host.cpu.count": 2,
            "sampling.ratio": 0.25,
            "feature.canary": True,
            "feature.flags": ["new-cart", "fast-pay"],
        }
    )
    provider = TracerProvider(resource=resource)
    mem = memory()
    exporter = CheckedExporter(otlp_exporter(args.protocol, args.endpoint, args.gzip), f"{args.protocol} exporter")
    provider.add_span_processor(SimpleSpanProcessor(mem))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=60_000))
    tracer = provider.get_tracer("e2e.rich", "0.1.0", schema_url="https://opentelemetry.io/schemas/1.26.0")

    # Trace 2 first, so trace 1 can link to it.
    with tracer.start_as_current_span("GET /health", kind=SpanKind.SERVER) as health:
        health.set_attribute("http.request.method", "GET")
        health.set_status(Status(StatusCode.OK))
    health_ctx = health.get_span_context()

    with tracer.start_as_current_span(
        "GET /checkout",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "url.path": "/checkout",
            "http.response.status_code": 200,
            "server.duration_ratio": 0.75,
            "user.is_admin": False,
            "cart.item_ids": [101, 202, 303],
            "cart.prices": [9.99, 0.5],
            "cart.gift_flags": [True, False, True],
            "cart.skus": ["A-1", "B-2", "naïve ☃"],
            "note.empty": "",
        },
    ) as root:
        root.add_event("cart loaded", {"cart.size": 3, "cart.cached": True})
        root.add_event("no attributes")
        with tracer.start_as_current_span(
            "charge card",
            kind=SpanKind.CLIENT,
            links=[
                Link(health_ctx, {"link.reason": "health check before charge", "link.index": 0}),
                Link(
                    trace.SpanContext(
                        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
                        span_id=0xB7AD6B7169203331,
                        is_remote=True,
                        trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
                    )
                ),
            ],
        ) as charge:
            charge.set_attribute("payment.amount", 42.5)
            charge.set_attribute("payment.currency", "EUR")
            try:
                raise ValueError("card declined: insufficient funds")
            except ValueError as e:
                charge.record_exception(e, attributes={"retry.attempt": 2})
            charge.set_status(Status(StatusCode.ERROR, "card declined"))
            with tracer.start_as_current_span("validate card", kind=SpanKind.INTERNAL) as v:
                v.set_attribute("card.scheme", "visa")
        with tracer.start_as_current_span("publish order", kind=SpanKind.PRODUCER) as pub:
            pub.set_attribute("messaging.system", "kafka")
            pub.set_attribute("messaging.batch.message_count", 1)
            with tracer.start_as_current_span("consume order", kind=SpanKind.CONSUMER) as con:
                con.add_event("processed", {"lag.ms": 12.5}, timestamp=time.time_ns())

    provider.force_flush()
    provider.shutdown()
    report([mem], [exporter])


if __name__ == "__main__":
    main()

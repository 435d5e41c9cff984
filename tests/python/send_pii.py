"""Sends spans full of personal data with the OpenTelemetry Python SDK over OTLP/gRPC: PII in resource
attributes, span attributes of every value type, the span name, the status message, event names and
attributes (a recorded exception), and link attributes.

usage: send_pii.py --endpoint http://127.0.0.1:PORT
Prints {"planted": [...values that must not arrive...], "span_count": N, "trace_ids": [...]}.
"""

import argparse
import json
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, otlp_exporter

PLANTED = {
    "email": "alan.turing@bletchley.example.co.uk",
    "card": "5500-0055-5555-5559",
    "iban": "DE89370400440532013000",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGFuIn0.c2lnbmF0dXJlLXZhbHVlLWhlcmU",
    "aws": "AKIAIOSFODNN7EXAMPLE",
    "password": "correcthorsebattery",
    "ip": "203.0.113.77",
    "link_email": "joan.clarke@hut8.example.org",
    "event_email": "mavis.batey@bletchley.example.co.uk",
    "name_email": "dilly.knox@bletchley.example.co.uk",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    args = ap.parse_args()
    p = PLANTED
    provider = TracerProvider(
        resource=Resource.create({"service.name": "py-bank", "host.owner.email": p["email"]})
    )
    exporter = CheckedExporter(otlp_exporter("grpc", args.endpoint), "gRPC exporter")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("e2e-pii")

    with tracer.start_as_current_span("GET /accounts", kind=SpanKind.SERVER) as first:
        first.set_attribute("client.address", p["ip"])
        first.set_attribute("app.iban", p["iban"])
        first.set_attribute("app.cards", [p["card"], "not-a-card"])
        first.set_attribute("http.request.header.authorization", f"Bearer {p['jwt']}")
        first.set_attribute("app.config", f"aws_key={p['aws']} password={p['password']}")
        first.set_attribute("app.card_as_int", 5500005555555559)
        other = first.get_span_context()
    with tracer.start_as_current_span(
        f"notify {p['name_email']}",
        links=[Link(other, {"app.linked_user": p["link_email"]})],
    ) as second:
        second.add_event(f"mail sent to {p['event_email']}", {"recipient": p["event_email"]})
        try:
            raise ValueError(f"bounce from {p['email']}")
        except ValueError as e:
            second.record_exception(e)
        second.set_status(Status(StatusCode.ERROR, f"could not reach {p['email']}"))

    provider.shutdown()
    exporter.check()
    planted = list(PLANTED.values()) + ["5500005555555559"]
    trace_ids = [format(other.trace_id, "032x"), format(second.get_span_context().trace_id, "032x")]
    print(json.dumps({"planted": planted, "span_count": 2, "trace_ids": trace_ids}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

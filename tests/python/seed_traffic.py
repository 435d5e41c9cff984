"""Sends a mix of traces for the seed policy test with the OpenTelemetry Python SDK over OTLP/gRPC.

usage: seed_traffic.py --endpoint http://127.0.0.1:PORT --normal N --errors E --slow S

Every trace has three spans (a SERVER root in service `api`, a CLIENT child, and a SERVER grandchild in
service `db`, the two services exporting separately). Normal traces last ~50 ms without errors; error
traces have an ERROR status on the grandchild; slow traces last 1.5 s (explicit timestamps, no waiting).
Prints {"normal": [...], "error": [...], "slow": [...], "span_count": N} (hex trace ids).
"""

import argparse
import json
import sys
import time

from opentelemetry.context import attach, detach
from opentelemetry.propagate import extract, inject
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, otlp_exporter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--normal", type=int, default=1000)
    ap.add_argument("--errors", type=int, default=20)
    ap.add_argument("--slow", type=int, default=20)
    args = ap.parse_args()

    providers, exporters, tracers = [], [], {}
    for service in ["api", "db"]:
        p = TracerProvider(resource=Resource.create({"service.name": service}))
        e = CheckedExporter(otlp_exporter("grpc", args.endpoint), f"{service} exporter")
        p.add_span_processor(BatchSpanProcessor(e, max_queue_size=100_000, max_export_batch_size=512))
        providers.append(p)
        exporters.append(e)
        tracers[service] = p.get_tracer("seed-traffic")

    kinds = ["normal"] * args.normal + ["error"] * args.errors + ["slow"] * args.slow
    ids = {"normal": [], "error": [], "slow": []}
    spans = 0
    for i, kind in enumerate(kinds):
        start = time.time_ns() - 10_000_000_000
        duration = 1_500_000_000 if kind == "slow" else 50_000_000
        root = tracers["api"].start_span("GET /orders", kind=SpanKind.SERVER, start_time=start)
        root.set_attribute("http.route", "/orders")
        from opentelemetry.trace import set_span_in_context

        ctx = set_span_in_context(root)
        call = tracers["api"].start_span("SELECT orders", context=ctx, kind=SpanKind.CLIENT, start_time=start + 1000)
        carrier: dict = {}
        inject(carrier, context=set_span_in_context(call))
        token = attach(extract(carrier))
        try:
            server = tracers["db"].start_span("query", kind=SpanKind.SERVER, start_time=start + 2000)
        finally:
            detach(token)
        if kind == "error":
            server.set_status(Status(StatusCode.ERROR, "deadlock detected"))
        server.end(end_time=start + duration - 2000)
        call.end(end_time=start + duration - 1000)
        root.end(end_time=start + duration)
        ids[kind].append(format(root.get_span_context().trace_id, "032x"))
        spans += 3

    for p in providers:
        p.force_flush()
        p.shutdown()
    for e in exporters:
        e.check()
    print(json.dumps({**ids, "span_count": spans}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()

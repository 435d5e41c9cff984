"""Continuous load for the reload-under-load test: one OpenTelemetry SDK client sending small traces at a
steady pace for a bounded time.

usage: load.py --protocol grpc|http --endpoint http://127.0.0.1:PORT --traces N --seconds S [--service NAME]

Each trace is a SERVER root with three children (one in seven ends with status ERROR), sent through a
BatchSpanProcessor that exports every 50 ms. Prints the report described in otlp_client.py and exits
non-zero if any export failed.
"""

import argparse
import time

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, memory, otlp_exporter, report


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True, choices=["grpc", "http"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--traces", type=int, required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--service", default="load")
    args = ap.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": args.service}))
    mem = memory()
    exporter = CheckedExporter(otlp_exporter(args.protocol, args.endpoint), f"{args.protocol} exporter")
    provider.add_span_processor(SimpleSpanProcessor(mem))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=50, max_queue_size=100_000, max_export_batch_size=256)
    )
    tracer = provider.get_tracer("e2e.load")

    pause = args.seconds / max(args.traces, 1)
    started = time.monotonic()
    for i in range(args.traces):
        with tracer.start_as_current_span(f"GET /item/{i % 10}", kind=SpanKind.SERVER) as root:
            root.set_attribute("load.index", i)
            for c in range(3):
                with tracer.start_as_current_span(f"step {c}", kind=SpanKind.INTERNAL) as child:
                    if c == 2 and i % 7 == 0:
                        child.set_status(Status(StatusCode.ERROR, "failed on purpose"))
        # Keep a steady pace: sleep until this trace's slot ends.
        behind = started + (i + 1) * pause - time.monotonic()
        if behind > 0:
            time.sleep(behind)

    provider.force_flush()
    provider.shutdown()
    report([mem], [exporter])


if __name__ == "__main__":
    main()

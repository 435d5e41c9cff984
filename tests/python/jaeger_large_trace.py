"""One trace too large for one export request to Jaeger, sent with the OpenTelemetry Python SDK over
OTLP/gRPC: a SERVER root and SPANS children, the first child and the root with an ERROR status (so the
seed policy keeps it), each child with an `app.payload` attribute of PAYLOAD bytes of harmless text plus
an email address (PII the redactor must mask in every span).

usage: jaeger_large_trace.py --endpoint http://127.0.0.1:PORT [--spans 2500] [--payload 2048]

Prints {"trace_id", "span_count", "encoded_bytes" (the ExportTraceServiceRequest of all spans, as the SDK
encodes it), "spans": [{"span_id", "parent_span_id"}], "planted": [...], "exports": N}.
"""

import argparse
import json
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from otlp_client import CheckedExporter, memory, otlp_exporter

EMAIL = "hedy.lamarr@frequency-hopping.example.com"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--spans", type=int, default=2500)
    ap.add_argument("--payload", type=int, default=2048)
    args = ap.parse_args()

    provider = TracerProvider(resource=Resource.create({"service.name": "report-builder"}))
    mem = memory()
    exporter = CheckedExporter(otlp_exporter("grpc", args.endpoint), "gRPC exporter")
    provider.add_span_processor(SimpleSpanProcessor(mem))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=100, max_queue_size=100_000, max_export_batch_size=512)
    )
    tracer = provider.get_tracer("report-builder")
    filler = ("quarterly figures, row by row; " * (args.payload // 31 + 1))[: args.payload]

    with tracer.start_as_current_span("POST /reports", kind=SpanKind.SERVER) as root:
        for i in range(args.spans):
            with tracer.start_as_current_span(f"render row {i}") as row:
                row.set_attribute("app.row", i)
                row.set_attribute("app.payload", f"{filler} contact {EMAIL}")
                if i == 0:
                    # The first span to leave already marks the trace as an error, so that any decision,
                    # even an early one on part of the trace, keeps it.
                    row.set_status(Status(StatusCode.ERROR, "first row failed"))
        root.set_status(Status(StatusCode.ERROR, "report too large"))

    provider.force_flush()
    provider.shutdown()
    exporter.check()
    finished = mem.get_finished_spans()
    print(
        json.dumps(
            {
                "trace_id": format(root.get_span_context().trace_id, "032x"),
                "span_count": len(finished),
                "encoded_bytes": len(encode_spans(finished).SerializeToString()),
                "spans": [
                    {
                        "span_id": format(s.context.span_id, "016x"),
                        "parent_span_id": format(s.parent.span_id, "016x") if s.parent else "",
                    }
                    for s in finished
                ],
                "planted": [EMAIL],
                "exports": len(exporter.results),
            }
        )
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()

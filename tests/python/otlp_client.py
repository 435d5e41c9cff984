"""Shared pieces of the end-to-end client scripts: OTLP exporters built from the command line, an
exporter wrapper that remembers whether every export succeeded, and the JSON report the Rust tests read.

Every script prints exactly one JSON object as its last line of standard output:
  {"expected": "<hex of the protobuf ExportTraceServiceRequest the SDK encodes for all finished spans>",
   "trace_ids": [...], "span_count": N, "exports": N}
and exits non-zero if any export failed.
"""

import json
import sys

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def otlp_exporter(protocol: str, endpoint: str, gzip: bool = False) -> SpanExporter:
    """An OTLP span exporter. `endpoint` is http://host:port for both protocols."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            Compression,
            OTLPSpanExporter,
        )

        return OTLPSpanExporter(
            endpoint=endpoint,
            insecure=True,
            timeout=10,
            compression=Compression.Gzip if gzip else Compression.NoCompression,
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=endpoint.rstrip("/") + "/v1/traces",
            timeout=10,
            compression=Compression.Gzip if gzip else Compression.NoCompression,
        )
    raise SystemExit(f"unknown protocol {protocol!r} (grpc or http)")


class CheckedExporter(SpanExporter):
    """Forwards to an OTLP exporter and remembers every result, so the script can fail loudly."""

    def __init__(self, inner: SpanExporter, name: str):
        self.inner = inner
        self.name = name
        self.results = []

    def export(self, spans):
        result = self.inner.export(spans)
        self.results.append((len(spans), result))
        return result

    def shutdown(self):
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def check(self):
        failed = [(n, r) for n, r in self.results if r != SpanExportResult.SUCCESS]
        if failed:
            raise SystemExit(f"{self.name}: {len(failed)} of {len(self.results)} exports failed: {failed}")
        if not self.results:
            raise SystemExit(f"{self.name}: nothing was exported")


def report(memories: list, exporters: list) -> None:
    """Checks every exporter succeeded and prints the JSON report of everything the SDK finished."""
    for e in exporters:
        e.check()
    spans = [s for m in memories for s in m.get_finished_spans()]
    request = encode_spans(spans)
    trace_ids = sorted({format(s.context.trace_id, "032x") for s in spans})
    print(
        json.dumps(
            {
                "expected": request.SerializeToString().hex(),
                "trace_ids": trace_ids,
                "span_count": len(spans),
                "exports": sum(len(e.results) for e in exporters),
            }
        )
    )
    sys.stdout.flush()


def memory() -> InMemorySpanExporter:
    return InMemorySpanExporter()

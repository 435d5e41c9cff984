"""Sends one small trace over OTLP with TLS, an optional client certificate (mutual TLS) and optional
request headers (authentication), using the OpenTelemetry Python SDK's own TLS options.

usage: send_secure.py --protocol grpc|http --endpoint https://127.0.0.1:PORT --ca CA.pem
                      [--client-cert CERT.pem --client-key KEY.pem] [--header name=value]...
                      [--timeout SECONDS]

Prints the report described in otlp_client.py; exits non-zero when the export failed.
"""

import argparse
import os

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from otlp_client import CheckedExporter, memory, report


def read(path):
    with open(path, "rb") as f:
        return f.read()


def exporter(args, headers):
    if args.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(args.ca),
            private_key=read(args.client_key) if args.client_key else None,
            certificate_chain=read(args.client_cert) if args.client_cert else None,
        )
        return OTLPSpanExporter(
            endpoint=args.endpoint,
            insecure=False,
            credentials=credentials,
            headers=headers,
            timeout=args.timeout,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(
        endpoint=args.endpoint.rstrip("/") + "/v1/traces",
        certificate_file=args.ca,
        client_certificate_file=args.client_cert,
        client_key_file=args.client_key,
        headers=headers,
        timeout=args.timeout,
    )


def main() -> None:
    # requests lets these variables override a session's own CA file (psf/requests#3829): the test's CA
    # must be the one the HTTP exporter verifies with.
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        os.environ.pop(name, None)
    ap = argparse.ArgumentParser()
    ap.add_argument("--protocol", required=True, choices=["grpc", "http"])
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--ca", required=True)
    ap.add_argument("--client-cert")
    ap.add_argument("--client-key")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=10)
    args = ap.parse_args()
    headers = dict(h.split("=", 1) for h in args.header)

    provider = TracerProvider(resource=Resource.create({"service.name": "secure-client"}))
    mem = memory()
    checked = CheckedExporter(exporter(args, headers), f"{args.protocol} TLS exporter")
    provider.add_span_processor(SimpleSpanProcessor(mem))
    provider.add_span_processor(SimpleSpanProcessor(checked))
    tracer = provider.get_tracer("e2e.secure")
    with tracer.start_as_current_span("GET /secure", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("SELECT accounts", kind=SpanKind.CLIENT):
            pass
    provider.shutdown()
    report([mem], [checked])


if __name__ == "__main__":
    main()

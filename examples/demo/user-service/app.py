"""tailgate demo: the Python user-service.

A Flask service instrumented with the OpenTelemetry Flask and requests instrumentations. The api-service
calls `GET /users/<id>`; this service looks the user up in a fake database, asks a risk check (over HTTP,
with `requests`, so the trace gets one more hop) and answers with the user record. On the way it does what
real services do and tailgate exists to clean up: it puts the customer's email and card number into span
attributes, a SQL statement with literals, and an exception message, and it copies the W3C baggage it
received (which carries the customer's email too) into span attributes.

It fails and is slow now and then, at configurable rates, and on demand for tests and demos:
  - header `x-demo-fail: user` (or the api-service's `?fail=user`) answers 500 with an exception;
  - header `x-demo-slow: user` (or `?slow=user`) sleeps DEMO_SLOW_MS before answering.

Environment (all optional):
  PORT (8081), HOST (127.0.0.1), DEMO_ERROR_RATE (0.02), DEMO_SLOW_RATE (0.02), DEMO_SLOW_MS (1500),
  RISK_URL (this service itself: http://127.0.0.1:PORT), and the standard OpenTelemetry variables:
  OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_EXPORTER_OTLP_ENDPOINT (OTLP/HTTP, e.g.
  http://tailgate:4318), OTEL_BSP_SCHEDULE_DELAY, OTEL_PROPAGATORS (default: tracecontext,baggage).
"""

import os
import random
import signal
import sys
import time

import requests
from flask import Flask, jsonify, request
from opentelemetry import baggage, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

HOST = os.environ.get("HOST", "127.0.0.1")
PORT = int(os.environ.get("PORT", "8081"))
ERROR_RATE = float(os.environ.get("DEMO_ERROR_RATE", "0.02"))
SLOW_RATE = float(os.environ.get("DEMO_SLOW_RATE", "0.02"))
SLOW_MS = int(os.environ.get("DEMO_SLOW_MS", "1500"))
RISK_URL = os.environ.get("RISK_URL", f"http://127.0.0.1:{PORT}")

# The SDK: resource from OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, OTLP/HTTP to
# OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces), batching per OTEL_BSP_*.
os.environ.setdefault("OTEL_SERVICE_NAME", "user-service")
provider = TracerProvider(resource=Resource.create())
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("tailgate-demo.user-service")

app = Flask(__name__)
FlaskInstrumentor().instrument_app(app, excluded_urls="healthz")
RequestsInstrumentor().instrument()

FIRST = ["ada", "grace", "alan", "edsger", "barbara", "ken", "margaret", "dennis"]
LAST = ["lovelace", "hopper", "turing", "dijkstra", "liskov", "thompson", "hamilton", "ritchie"]


def luhn_complete(digits: str) -> str:
    """`digits` followed by the Luhn check digit that makes it a valid card number."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2 == 0:  # doubled: every second digit from the right, once the check digit is appended
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return digits + str((10 - total % 10) % 10)


def fake_user(user_id: int) -> dict:
    """A deterministic customer record: same id, same (fake but realistic-looking) personal data."""
    first, last = FIRST[user_id % len(FIRST)], LAST[(user_id // len(FIRST)) % len(LAST)]
    # A 16-digit, Luhn-valid, Visa-shaped number (what a card detector has to catch).
    card = luhn_complete(f"4539{(user_id * 7919 + 1234567) % 10**11:011d}")
    return {
        "id": user_id,
        "name": f"{first.title()} {last.title()}",
        "email": f"{first}.{last}{user_id}@example.com",
        "card": f"{card[0:4]} {card[4:8]} {card[8:12]} {card[12:16]}",
        "plan": "pro" if user_id % 3 == 0 else "free",
    }


def triggered(kind: str, rate: float) -> bool:
    """True when the request asks for `kind` (`x-demo-<kind>: user`) or the dice say so."""
    return request.headers.get(f"x-demo-{kind}", "") == "user" or random.random() < rate


def copy_baggage_to_span(span) -> None:
    """What many teams do to make baggage searchable: every entry becomes a span attribute."""
    for key, value in baggage.get_all().items():
        span.set_attribute(f"baggage.{key}", str(value))


@app.get("/healthz")
def healthz():
    return "ok\n"


@app.get("/users/<int:user_id>")
def get_user(user_id: int):
    span = trace.get_current_span()
    copy_baggage_to_span(span)
    user = fake_user(user_id)
    span.set_attribute("enduser.id", str(user_id))
    span.set_attribute("user.email", user["email"])
    span.set_attribute("app.user.plan", user["plan"])

    with tracer.start_as_current_span("SELECT users", kind=trace.SpanKind.CLIENT) as db:
        db.set_attribute("db.system.name", "postgresql")
        db.set_attribute(
            "db.query.text",
            f"SELECT id, name, card FROM users WHERE email = '{user['email']}' AND id = {user_id}",
        )
        if triggered("slow", SLOW_RATE):
            db.set_attribute("app.demo.slow", True)
            time.sleep(SLOW_MS / 1000)

    if triggered("fail", ERROR_RATE):
        err = RuntimeError(f"payment profile unavailable for {user['email']} (card {user['card']})")
        span.record_exception(err)
        span.set_status(Status(StatusCode.ERROR, str(err)))
        return jsonify(error="user lookup failed", user_id=user_id), 500

    risk = requests.get(f"{RISK_URL}/risk/{user_id}", params={"card": user["card"]}, timeout=5).json()
    user["risk"] = risk["score"]
    return jsonify(user)


@app.get("/risk/<int:user_id>")
def risk(user_id: int):
    """Stands in for a separate fraud-scoring service (called over HTTP to add a hop to the trace)."""
    span = trace.get_current_span()
    copy_baggage_to_span(span)
    card = request.args.get("card", "")
    score = (user_id * 37) % 100
    span.set_attribute("app.risk.score", score)
    span.add_event("scored", {"app.risk.note": f"card {card} scored {score}"})
    return jsonify(score=score)


if __name__ == "__main__":
    # `docker stop` and the tests send SIGTERM: exit through sys.exit so the SDK's atexit hook exports
    # what is still batched.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"user-service listening on http://{HOST}:{PORT}", flush=True)
    app.run(host=HOST, port=PORT, threaded=True)

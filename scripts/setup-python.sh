#!/usr/bin/env bash
# Creates the Python virtualenv at .venv (reused when present) and installs the pinned packages the
# end-to-end tests need (tests/python/requirements.txt). Then the same for the demo's user-service
# (examples/demo/user-service/requirements.txt into examples/demo/user-service/.venv: a virtualenv of its
# own, because its Flask instrumentation pins an OpenTelemetry API one patch release below the test
# suite's SDK). Prints nothing else on success but a summary.
set -euo pipefail
cd "$(dirname "$0")/.."

req=tests/python/requirements.txt
venv=.venv
python=${PYTHON:-python3}

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup-python: creating $venv with $($python --version 2>&1)"
    "$python" -m venv "$venv"
fi

stamp="$venv/.tailgate-test-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "setup-python: $venv already has $req"
else
    echo "setup-python: installing $req into $venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --upgrade pip
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet --pre -r "$req"
    echo "$want" > "$stamp"
fi

# Fail now, not in the middle of the tests, if something is missing.
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import os, rotel
for p in ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "opentelemetry-exporter-otlp-proto-http", "rotel"):
    md.version(p)
agent = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
assert os.access(agent, os.X_OK), f"rotel agent binary missing or not executable: {agent}"
PY

demo_req=examples/demo/user-service/requirements.txt
demo_venv=examples/demo/user-service/.venv
if [[ -f "$demo_req" ]]; then
    if [[ ! -x "$demo_venv/bin/python" ]]; then
        echo "setup-python: creating $demo_venv"
        "$python" -m venv "$demo_venv"
    fi
    demo_stamp="$demo_venv/.tailgate-requirements.sha256"
    demo_want=$(sha256sum "$demo_req" | cut -d' ' -f1)
    if [[ -f "$demo_stamp" && "$(cat "$demo_stamp")" == "$demo_want" ]]; then
        echo "setup-python: $demo_venv already has $demo_req"
    else
        echo "setup-python: installing $demo_req into $demo_venv"
        "$demo_venv/bin/python" -m pip install --disable-pip-version-check --quiet -r "$demo_req"
        echo "$demo_want" > "$demo_stamp"
    fi
    "$demo_venv/bin/python" -c 'import flask, opentelemetry.instrumentation.flask, opentelemetry.instrumentation.requests, opentelemetry.exporter.otlp.proto.http'
fi

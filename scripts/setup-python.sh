#!/usr/bin/env bash
# Creates the Python virtualenv at .venv (reused when present) and installs the pinned packages the
# end-to-end tests need (tests/python/requirements.txt). Prints nothing else on success but a summary.
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

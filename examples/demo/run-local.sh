#!/usr/bin/env bash
# Runs the demo stack locally, without Docker: tailgate (the seed policy, examples/tailgate.yaml), the
# Python user-service, the Node.js api-service and a bounded load, then shows the traces tailgate kept.
#
#   examples/demo/run-local.sh                  # 300 requests at 10/s, then a summary of the kept traces
#   examples/demo/run-local.sh --keep-running   # the same, then stays up for your own requests (Ctrl-C)
#
# Kept traces go to target/demo/kept-traces.jsonl (OTLP/JSON, one export per line) unless
# DEMO_EXPORTER_ENDPOINT names an OTLP/gRPC receiver, e.g. a Jaeger started with
#   docker run --rm -p 16686:16686 -p 14317:4317 jaegertracing/jaeger:2.8.0
#   DEMO_EXPORTER_ENDPOINT=http://localhost:14317 examples/demo/run-local.sh --keep-running
#
# Needs: the Rust toolchain (rust-toolchain.toml), Python 3, Node.js 20+ and npm. Installs what is missing:
# the plugins and tailgate (release build), examples/demo/user-service/.venv (pip), and
# examples/demo/api-service/node_modules (npm ci).
# Environment: DEMO_REQUESTS (300), DEMO_RATE (10), TAILGATE_BIN (skip the release build), ports
# DEMO_GRPC_PORT (4317), DEMO_HTTP_PORT (4318), DEMO_ADMIN_PORT (8888), DEMO_API_PORT (8080),
# DEMO_USER_PORT (8081). Everything listens on 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

keep_running=0
for arg in "$@"; do
    case "$arg" in
        --keep-running) keep_running=1 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "run-local: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

requests=${DEMO_REQUESTS:-300}
rate=${DEMO_RATE:-10}
grpc=${DEMO_GRPC_PORT:-4317}
http=${DEMO_HTTP_PORT:-4318}
admin=${DEMO_ADMIN_PORT:-8888}
api=${DEMO_API_PORT:-8080}
user=${DEMO_USER_PORT:-8081}
out="$root/target/demo"
mkdir -p "$out"

say() { echo "==> $*"; }

# --- what the stack needs ------------------------------------------------------------------------------
if [[ -z "${TAILGATE_BIN:-}" ]]; then
    say "building the plugins and tailgate (release)"
    ./scripts/build-plugins.sh
    cargo build --release -p tailgate --bin tailgate
    TAILGATE_BIN="$root/target/release/tailgate"
fi
venv=examples/demo/user-service/.venv
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import flask, opentelemetry.instrumentation.flask' 2>/dev/null; then
    say "installing the user-service's Python packages into $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --disable-pip-version-check --quiet -r examples/demo/user-service/requirements.txt
fi
if [[ ! -d examples/demo/api-service/node_modules/@opentelemetry/auto-instrumentations-node ]]; then
    say "installing the api-service's Node.js packages (npm ci)"
    (cd examples/demo/api-service && npm ci --no-audit --no-fund)
fi

# --- start: tailgate, then the services ------------------------------------------------------------------
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

wait_for() { # URL NAME PID
    for _ in $(seq 1 150); do
        if ! kill -0 "$3" 2>/dev/null; then
            echo "run-local: $2 exited; its log: $out/$2.log" >&2
            tail -20 "$out/$2.log" >&2
            exit 1
        fi
        if python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$1" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "run-local: $2 did not answer $1 within 30 s; its log: $out/$2.log" >&2
    exit 1
}

if [[ -n "${DEMO_EXPORTER_ENDPOINT:-}" ]]; then
    exporter=(--exporter-protocol grpc --exporter-endpoint "$DEMO_EXPORTER_ENDPOINT")
    where="$DEMO_EXPORTER_ENDPOINT"
else
    : > "$out/kept-traces.jsonl"
    exporter=(--exporter-protocol file --exporter-endpoint "$out/kept-traces.jsonl")
    where="$out/kept-traces.jsonl"
fi
say "starting tailgate (examples/tailgate.yaml) on 127.0.0.1:$grpc (gRPC), :$http (HTTP), admin :$admin, exporting to $where"
"$TAILGATE_BIN" --config examples/tailgate.yaml "${exporter[@]}" \
    --otlp-grpc-endpoint "127.0.0.1:$grpc" --otlp-http-endpoint "127.0.0.1:$http" \
    --admin-endpoint "127.0.0.1:$admin" > "$out/tailgate.log" 2>&1 &
tailgate_pid=$!
pids+=("$tailgate_pid")
wait_for "http://127.0.0.1:$admin/healthz" tailgate "$tailgate_pid"

export OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=local-demo
say "starting user-service on 127.0.0.1:$user (OTLP/HTTP to tailgate)"
(cd examples/demo/user-service && HOST=127.0.0.1 PORT=$user OTEL_SERVICE_NAME=user-service \
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$http" PYTHONUNBUFFERED=1 \
    exec .venv/bin/python app.py) > "$out/user-service.log" 2>&1 &
user_pid=$!
pids+=("$user_pid")
wait_for "http://127.0.0.1:$user/healthz" user-service "$user_pid"

say "starting api-service on 127.0.0.1:$api (OTLP/gRPC to tailgate)"
(cd examples/demo/api-service && HOST=127.0.0.1 PORT=$api OTEL_SERVICE_NAME=api-service \
    OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$grpc" OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
    USER_SERVICE_URL="http://127.0.0.1:$user" exec node --require ./tracing.js server.js) > "$out/api-service.log" 2>&1 &
api_pid=$!
pids+=("$api_pid")
wait_for "http://127.0.0.1:$api/healthz" api-service "$api_pid"

# --- load -----------------------------------------------------------------------------------------------
say "sending $requests requests at $rate/s (examples/demo/load.py)"
python3 examples/demo/load.py --target "http://127.0.0.1:$api" --requests "$requests" --rate "$rate"

if [[ $keep_running == 1 ]]; then
    cat <<EOF

The stack is up. Try:
  curl 'http://127.0.0.1:$api/checkout?user=42'             # kept 1 time in 10
  curl 'http://127.0.0.1:$api/checkout?user=42&fail=user'   # always kept (error)
  curl 'http://127.0.0.1:$api/checkout?user=42&slow=user'   # always kept (slower than 1 s)
  curl -s http://127.0.0.1:$admin/metrics | grep tailgate_decisions_total
Kept traces: $where   (python3 examples/demo/show-traces.py $out/kept-traces.jsonl)
Logs: $out/*.log. Ctrl-C stops everything.
EOF
    wait "$tailgate_pid"
    exit 0
fi

# --- stop in order and show what was kept ---------------------------------------------------------------
say "stopping the services (they flush their spans), then tailgate (decides what it still buffers)"
kill -TERM "$api_pid" "$user_pid" 2>/dev/null || true
wait "$api_pid" "$user_pid" 2>/dev/null || true
kill -TERM "$tailgate_pid"
wait "$tailgate_pid" || true
pids=()

if [[ -z "${DEMO_EXPORTER_ENDPOINT:-}" ]]; then
    echo
    python3 examples/demo/show-traces.py "$out/kept-traces.jsonl" --trees 1
fi
echo
echo "Logs: $out/*.log"

#!/usr/bin/env bash
# Runs the demo stack locally, without Docker: a real Jaeger v2, tailgate (the seed policy,
# examples/tailgate.yaml), the Python user-service, the Node.js api-service and a bounded load, then shows
# the traces tailgate kept, read back from Jaeger's query API, with their Jaeger links.
#
#   examples/demo/run-local.sh                  # 300 requests at 10/s, then the kept traces from Jaeger
#   examples/demo/run-local.sh --keep-running   # the same, then stays up for your own requests (Ctrl-C)
#
# Jaeger is the binary scripts/peers.sh builds from its Go module (tests/peers/jaeger/go.mod; the first
# build takes a few minutes and needs Go, later runs reuse ~/.cache/tailgate/peers), or $TAILGATE_JAEGER.
# It runs with memory storage on 127.0.0.1 (OTLP gRPC :14317, OTLP HTTP :14318, query :16686), so its
# traces are gone when the script ends: use --keep-running to look at them. Built from Go modules, Jaeger
# has no UI assets: http://127.0.0.1:16686/trace/<id> shows Jaeger's placeholder page ("This is not the
# Jaeger UI you are looking for!"), so the traces are shown through its query API instead
# (show-traces.py --jaeger; /api/traces/<id> opens as JSON in a browser). examples/demo/README.md has more.
#
# Other downstreams:
#   DEMO_JAEGER=0                 no Jaeger: kept traces go to target/demo/kept-traces.jsonl (OTLP/JSON)
#   DEMO_EXPORTER_ENDPOINT=URL    your own OTLP/gRPC receiver instead, e.g. a Jaeger with its UI:
#     docker run --rm -p 16686:16686 -p 14317:4317 jaegertracing/jaeger:2.8.0
#     DEMO_EXPORTER_ENDPOINT=http://localhost:14317 examples/demo/run-local.sh --keep-running
#
# Needs: the Rust toolchain (rust-toolchain.toml), Python 3, Node.js 20+ and npm, and Go for Jaeger's first
# build. Installs what is missing: the plugins and tailgate (release build), Jaeger (scripts/peers.sh),
# examples/demo/user-service/.venv (pip), and examples/demo/api-service/node_modules (npm ci).
# Environment: DEMO_REQUESTS (300), DEMO_RATE (10), TAILGATE_BIN (skip the release build), TAILGATE_JAEGER
# (skip scripts/peers.sh), ports DEMO_GRPC_PORT (4317), DEMO_HTTP_PORT (4318), DEMO_ADMIN_PORT (8888),
# DEMO_API_PORT (8080), DEMO_USER_PORT (8081), DEMO_JAEGER_UI_PORT (16686), DEMO_JAEGER_GRPC_PORT (14317),
# DEMO_JAEGER_HTTP_PORT (14318), DEMO_JAEGER_QUERY_GRPC_PORT (16685). Everything listens on 127.0.0.1.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"

keep_running=0
for arg in "$@"; do
    case "$arg" in
        --keep-running) keep_running=1 ;;
        -h | --help) sed -n '2,32p' "$0"; exit 0 ;;
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
jaeger_ui=${DEMO_JAEGER_UI_PORT:-16686}
jaeger_grpc=${DEMO_JAEGER_GRPC_PORT:-14317}
jaeger_http=${DEMO_JAEGER_HTTP_PORT:-14318}
jaeger_query_grpc=${DEMO_JAEGER_QUERY_GRPC_PORT:-16685}
jaeger_url="http://127.0.0.1:$jaeger_ui"
use_jaeger=1
if [[ -n "${DEMO_EXPORTER_ENDPOINT:-}" || "${DEMO_JAEGER:-1}" == 0 ]]; then
    use_jaeger=0
fi
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
if [[ $use_jaeger == 1 && -z "${TAILGATE_JAEGER:-}" ]]; then
    say "Jaeger v2 (scripts/peers.sh jaeger: built once from its Go module, then cached)"
    TAILGATE_JAEGER=$(./scripts/peers.sh jaeger | sed -n 's/^TAILGATE_JAEGER=//p')
    if [[ -z $TAILGATE_JAEGER ]]; then
        echo "run-local: scripts/peers.sh printed no Jaeger binary; DEMO_JAEGER=0 runs the demo without it" >&2
        exit 1
    fi
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

if [[ $use_jaeger == 1 ]]; then
    # Jaeger v2 is a Collector distribution: OTLP in, memory storage, the query API; its own metrics off
    # (they would take :8888, tailgate's admin port).
    cat > "$out/jaeger.yaml" <<EOF
# Written by examples/demo/run-local.sh: Jaeger v2 with memory storage on 127.0.0.1.
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
extensions:
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:$jaeger_ui
    grpc:
      endpoint: 127.0.0.1:$jaeger_query_grpc
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:$jaeger_grpc
      http:
        endpoint: 127.0.0.1:$jaeger_http
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
EOF
    say "starting Jaeger v2 ($TAILGATE_JAEGER): OTLP on 127.0.0.1:$jaeger_grpc (gRPC), :$jaeger_http (HTTP), query API on $jaeger_url"
    "$TAILGATE_JAEGER" --config "$out/jaeger.yaml" > "$out/jaeger.log" 2>&1 &
    jaeger_pid=$!
    pids+=("$jaeger_pid")
    wait_for "$jaeger_url/api/services" jaeger "$jaeger_pid"
    exporter=(--exporter-protocol grpc --exporter-endpoint "http://127.0.0.1:$jaeger_grpc")
    where="Jaeger (OTLP/gRPC 127.0.0.1:$jaeger_grpc)"
elif [[ -n "${DEMO_EXPORTER_ENDPOINT:-}" ]]; then
    exporter=(--exporter-protocol grpc --exporter-endpoint "$DEMO_EXPORTER_ENDPOINT")
    where="$DEMO_EXPORTER_ENDPOINT"
else
    : > "$out/kept-traces.jsonl"
    exporter=(--exporter-protocol file --exporter-endpoint "$out/kept-traces.jsonl")
    where="$out/kept-traces.jsonl"
fi
# The seed policy as it is (its plugins are built into tailgate), with the status page's trace links
# (admin.jaeger_ui_url) pointing at this Jaeger; plugin paths relative to examples/ made absolute, should
# the example name any (the copy lives in target/demo/).
python3 - "$root" "$out/tailgate.yaml" "$jaeger_url" <<'EOF'
import sys
root, dest, jaeger = sys.argv[1:]
text = open(f"{root}/examples/tailgate.yaml", encoding="utf-8").read()
old = "\nadmin:\n"
assert old in text, f"examples/tailgate.yaml no longer contains {old!r}: update run-local.sh"
text = text.replace(old, f"\nadmin:\n  jaeger_ui_url: {jaeger}\n")
text = text.replace("plugin: ../", f"plugin: {root}/")
open(dest, "w", encoding="utf-8").write(text)
EOF
say "starting tailgate (examples/tailgate.yaml) on 127.0.0.1:$grpc (gRPC), :$http (HTTP), admin :$admin, exporting to $where"
"$TAILGATE_BIN" --config "$out/tailgate.yaml" "${exporter[@]}" \
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

wait_settled() {
    # Until tailgate has decided a trace per request and sent everything it kept (the services export
    # every 5 s, then examples/tailgate.yaml settles a trace 2 s after its root): at most 30 s.
    python3 - "http://127.0.0.1:$admin/metrics" "$requests" <<'EOF'
import sys, time, urllib.request
url, want = sys.argv[1], float(sys.argv[2])
def total(text, name):
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if not l.startswith("#") and l.split("{")[0].split(" ")[0] == name)
for _ in range(150):
    m = urllib.request.urlopen(url, timeout=5).read().decode()
    busy = sum(total(m, n) for n in ("tailgate_ingest_queue_spans", "tailgate_buffer_spans",
                                     "tailgate_pipeline_spans", "tailgate_export_queue_spans"))
    if total(m, "tailgate_decisions_total") >= want and busy == 0:
        break
    time.sleep(0.2)
EOF
}

show_jaeger() {
    # The kept traces and their Jaeger links, from Jaeger's own query API.
    echo
    python3 examples/demo/show-traces.py --jaeger "$jaeger_url" --trees 1 || true
    cat <<EOF

Each trace line ends with its links in this Jaeger: $jaeger_url/trace/<id> is the Jaeger UI's route
(tailgate's status page, http://127.0.0.1:$admin/, links kept traces there), but a Jaeger built from its
Go module has no UI assets and answers it with a placeholder page; $jaeger_url/api/traces/<id> is the
same trace as JSON. Why a trace was kept: curl http://127.0.0.1:$admin/debug/traces/<id>
EOF
}

if [[ $keep_running == 1 ]]; then
    if [[ $use_jaeger == 1 ]]; then
        wait_settled
        show_jaeger
        kept="python3 examples/demo/show-traces.py --jaeger $jaeger_url"
    elif [[ -n "${DEMO_EXPORTER_ENDPOINT:-}" ]]; then
        kept="$where"
    else
        kept="$where   (python3 examples/demo/show-traces.py $out/kept-traces.jsonl)"
    fi
    cat <<EOF

The stack is up. Try:
  curl 'http://127.0.0.1:$api/checkout?user=42'             # kept 1 time in 10
  curl 'http://127.0.0.1:$api/checkout?user=42&fail=user'   # always kept (error)
  curl 'http://127.0.0.1:$api/checkout?user=42&slow=user'   # always kept (slower than 1 s)
  curl -s http://127.0.0.1:$admin/metrics | grep tailgate_decisions_total
Kept traces: $kept
Status page: http://127.0.0.1:$admin/
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
if [[ $use_jaeger == 1 ]]; then
    show_jaeger
    echo "(Jaeger keeps its traces in memory: they are gone when this script ends; --keep-running keeps it up.)"
elif [[ -z "${DEMO_EXPORTER_ENDPOINT:-}" ]]; then
    echo
    python3 examples/demo/show-traces.py "$out/kept-traces.jsonl" --trees 1
fi
echo
echo "Logs: $out/*.log"

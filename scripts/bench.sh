#!/usr/bin/env bash
# The benchmark harness in one command (see BENCHMARKS.md):
#   ./scripts/bench.sh [--duration 20s] [--concurrency 16] [--rate N] [--config FILE]
#                      [--systems tailgate,passthrough,rotel,sampling,collector,redact,collector-redact,...]
#                      [--collector-decision-wait 10s] [--collector-after-root 0s]
# Builds tailgate, its plugins and the load generator in release mode, installs rotel (PyPI) into .venv
# when missing, builds the OpenTelemetry Collector of bench/collector/ once (scripts/peers.sh, cached),
# then runs the systems one after the other on the same pre-encoded OTLP load into the same counting
# sink, and prints a table (spans/s in and out, CPU seconds per million spans, peak RSS, decision
# latency) and the ratios: tailgate with the seed policy (examples/tailgate.yaml), as a pass-through, and
# rotel as a pass-through; tailgate's seed policy without the redactor (`sampling`) against the
# Collector's tail_sampling (`collector`); tailgate redacting every trace (`redact`) against the
# Collector's redaction/transform processors (`collector-redact`). Also prints the buffer's heap per span,
# the RSS growth per buffered span of tailgate and the Collector (`tailgate-bench hold`), and what each
# redaction leaks from the PII corpus (`tailgate-bench leaks`). TAILGATE_BENCH_QUICK=1 skips those two.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

"$root/scripts/build-plugins.sh"
cargo build --release -p tailgate -p tailgate-bench

venv="$root/.venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c "import rotel" 2>/dev/null; then
    "$venv/bin/pip" install --quiet rotel
fi
rotel="$("$venv/bin/python" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"

collector="$("$root/scripts/peers.sh" collector | sed -n 's/^TAILGATE_COLLECTOR=//p')"

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== buffer memory per span"
"$root/target/release/tailgate-bench" overhead
if [ -z "${TAILGATE_BENCH_QUICK:-}" ]; then
    echo "== RSS growth per buffered span (tailgate and the Collector each hold 10 000 traces)"
    "$root/target/release/tailgate-bench" hold --tailgate "$root/target/release/tailgate" \
        --collector "$collector"
    echo "== PII corpus: leaks and false positives"
    "$root/target/release/tailgate-bench" leaks --tailgate "$root/target/release/tailgate" \
        --collector "$collector"
fi
echo "== side by side"
# The seed policy unless the caller names another config (e.g. bench/configs/seed-without-redaction.yaml).
config=(--config "$root/examples/tailgate.yaml")
for a in "$@"; do [ "$a" = "--config" ] && config=(); done
exec "$root/target/release/tailgate-bench" compare --tailgate "$root/target/release/tailgate" \
    "${config[@]}" --rotel "$rotel" --collector "$collector" "$@"

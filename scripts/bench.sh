#!/usr/bin/env bash
# The benchmark harness in one command (see BENCHMARKS.md):
#   ./scripts/bench.sh [--duration 20s] [--concurrency 16] [--rate N] [--config FILE]
#                      [--systems tailgate,passthrough,rotel,redact,rotel-redact]
# Builds tailgate, its plugins and the load generator in release mode, installs rotel (PyPI) into .venv
# when missing, then runs tailgate with the seed policy (examples/tailgate.yaml), tailgate as a plain
# pass-through, and rotel as a pass-through, one after the other, on the same pre-encoded OTLP load into
# the same counting sink, and prints a table (spans/s in and out, CPU seconds per million spans, peak RSS,
# decision latency) and the tailgate/rotel ratios. Also prints the buffer's memory per span.
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

echo "== machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== buffer memory per span"
"$root/target/release/tailgate-bench" overhead
echo "== side by side"
# The seed policy unless the caller names another config (e.g. bench/configs/seed-without-redaction.yaml).
config=(--config "$root/examples/tailgate.yaml")
for a in "$@"; do [ "$a" = "--config" ] && config=(); done
exec "$root/target/release/tailgate-bench" compare --tailgate "$root/target/release/tailgate" \
    "${config[@]}" --rotel "$rotel" "$@"

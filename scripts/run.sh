#!/usr/bin/env bash
# Builds tailgate and its plugins (release) and runs it on examples/tailgate.yaml. Arguments are passed
# to tailgate, after the config, so flags override the file, e.g.:
#   ./scripts/run.sh --exporter-protocol file --exporter-endpoint -     # print kept traces as OTLP/JSON
#   ./scripts/run.sh --exporter-endpoint http://jaeger:4317              # forward to Jaeger
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -x scripts/build-plugins.sh ]]; then
    ./scripts/build-plugins.sh
fi
cargo build --release -p tailgate --bin tailgate
exec ./target/release/tailgate --config examples/tailgate.yaml "$@"

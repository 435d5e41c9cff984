#!/usr/bin/env bash
# Builds tailgate (release) and runs it on examples/tailgate.yaml. Needs only the Rust toolchain: the seed
# policy's plugins are built into the binary (host/build.rs builds them for wasm32-wasip2, a target the
# pinned toolchain carries). Arguments are passed to tailgate, after the config, so flags override the
# file, e.g.:
#   ./scripts/run.sh --exporter-protocol file --exporter-endpoint -     # print kept traces as OTLP/JSON
#   ./scripts/run.sh --exporter-endpoint http://jaeger:4317              # forward to Jaeger
# The example plugins in Python, JavaScript and C are built by scripts/build-plugins.sh (the test suite
# runs it); this script does not need them.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release -p tailgate --bin tailgate
exec ./target/release/tailgate --config examples/tailgate.yaml "$@"

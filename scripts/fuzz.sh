#!/usr/bin/env bash
# Runs tailgate's libFuzzer targets (fuzz/, see docs/fuzzing.md) for a time budget each, and fails on the
# first crash (its input is left in fuzz/artifacts/<target>/).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 seconds, every target
# Environment: FUZZ_JOBS (parallel workers per target, default 1), FUZZ_ARGS (extra libFuzzer flags),
# FUZZ_SANITIZER (cargo-fuzz's --sanitizer: none by default, address for AddressSanitizer).
# Why none by default: tailgate's crates forbid `unsafe`, so what the fuzzers find is panics, hangs,
# unbounded allocation and wrong results, which libFuzzer catches without ASan; ASan instruments the
# whole dependency tree (wasmtime included) and made the first build the suite's largest step.
# The default build (FUZZ_SANITIZER=none) needs no cargo-fuzz and no nightly flag: `cargo build` of the
# fuzz crate with scripts/fuzz-rustc.sh as the workspace's compiler wrapper, which adds the coverage
# instrumentation to the workspace's own crates only. The dependencies are the test build's artifacts in
# the same CARGO_TARGET_DIR (the default: the one scripts/test.sh uses), so the first fuzz build after a
# test build compiles only tailgate and the targets. FUZZ_SANITIZER=address builds with cargo-fuzz
# (installed when missing), which instruments the whole tree for AddressSanitizer (nightly flags, which the
# stable compiler accepts under RUSTC_BOOTSTRAP=1), in a build directory of its own.
# New corpus entries go to a scratch directory; the small seed corpus in fuzz/corpus/ is only read.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds=${1:-20}
shift || true
if [[ $seconds == 0 ]]; then
    echo "fuzzing skipped (0 seconds)"
    exit 0
fi
sanitizer="${FUZZ_SANITIZER:-none}"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

if [[ $sanitizer == none ]]; then
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tailgate/target}"
    RUSTC_WORKSPACE_WRAPPER="$root/scripts/fuzz-rustc.sh" \
        cargo build -p tailgate-fuzz --features tailgate-fuzz/fuzz --bins
    run_target() { # <target> <libFuzzer arguments...>
        local t="$1"
        shift
        "$CARGO_TARGET_DIR/debug/$t" "$@"
    }
else
    if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]]; then
        echo "installing cargo-fuzz"
        cargo install cargo-fuzz --version 0.13.2 --locked
    fi
    export RUSTC_BOOTSTRAP=1
    fuzz_target="${TAILGATE_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/tailgate/fuzz-target-$sanitizer}"
    mkdir -p "$fuzz_target"
    unset CARGO_TARGET_DIR
    cargo fuzz build --features fuzz --sanitizer "$sanitizer" --target-dir "$fuzz_target"
    run_target() {
        local t="$1"
        shift
        "$fuzz_target/$(rustc -vV | sed -n 's/^host: //p')/release/$t" "$@"
    }
fi

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    log="$scratch/$t.log"
    echo "==> fuzzing $t for ${seconds}s"
    parallel=()
    if [[ ${FUZZ_JOBS:-1} -gt 1 ]]; then
        # libFuzzer writes each worker's output to fuzz-<n>.log in the working directory.
        parallel=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS")
    fi
    mkdir -p "fuzz/artifacts/$t"
    # shellcheck disable=SC2086
    if ! run_target "$t" "$scratch/$t" "fuzz/corpus/$t" -artifact_prefix="fuzz/artifacts/$t/" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        "${parallel[@]}" ${FUZZ_ARGS:-} >"$log" 2>&1; then
        cat fuzz-*.log >>"$log" 2>/dev/null || true
        rm -f fuzz-*.log
        tail -n 60 "$log"
        echo "fuzz target $t FAILED: the crashing input is in fuzz/artifacts/$t/"
        exit 1
    fi
    cat fuzz-*.log >>"$log" 2>/dev/null || true
    rm -f fuzz-*.log
    execs=$(awk '/stat::number_of_executed_units/ { n += $2 } END { print n + 0 }' "$log")
    summary+=("$t: $execs executions in ${seconds}s, no crash")
done
printf '%s\n' "${summary[@]}"

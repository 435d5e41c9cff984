#!/usr/bin/env bash
# Runs tailgate's cargo-fuzz targets (fuzz/, see docs/fuzzing.md) for a time budget each, and fails on the
# first crash (its input is left in fuzz/artifacts/<target>/).
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     default: 20 seconds, every target
# Environment: FUZZ_JOBS (parallel workers per target, default 1), FUZZ_ARGS (extra libFuzzer flags),
# FUZZ_SANITIZER (cargo-fuzz's --sanitizer: none by default, address for AddressSanitizer).
# Why none by default: tailgate's crates forbid `unsafe`, so what the fuzzers find is panics, hangs,
# unbounded allocation and wrong results, which libFuzzer catches without ASan; ASan instruments the
# whole dependency tree (wasmtime included) and made the first build the suite's largest step.
# cargo-fuzz is installed when missing. Only stable Rust is needed: cargo-fuzz passes nightly-only flags
# (-Zsanitizer=address, sanitizer coverage), which stable rustc accepts under RUSTC_BOOTSTRAP=1.
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

if [[ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz 0.13.2" ]]; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi
export RUSTC_BOOTSTRAP=1
# The fuzz crate is a workspace of its own with its own target directory.
unset CARGO_TARGET_DIR
# The instrumented build (the whole tree, wasmtime included, with sanitizer and coverage flags) takes many
# minutes from scratch, so it lives outside the clone, like an installed tool, and later clones reuse it
# (only the workspace's own crates rebuild). TAILGATE_FUZZ_TARGET overrides the place.
sanitizer="${FUZZ_SANITIZER:-none}"
# One directory per sanitizer: the two builds' flags differ, and sharing one would rebuild everything
# whenever the choice changes.
fuzz_target="${TAILGATE_FUZZ_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/tailgate/fuzz-target-$sanitizer}"
mkdir -p "$fuzz_target"
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build --sanitizer "$sanitizer" --target-dir "$fuzz_target"

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
    # shellcheck disable=SC2086
    if ! cargo fuzz run --sanitizer "$sanitizer" --target-dir "$fuzz_target" "$t" "$scratch/$t" "fuzz/corpus/$t" -- \
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

#!/usr/bin/env bash
# RUSTC_WORKSPACE_WRAPPER for scripts/fuzz.sh: compiles the workspace's own crates (tailgate and the fuzz
# targets) with libFuzzer's coverage instrumentation, the flags cargo-fuzz passes with `--sanitizer none`
# (SanitizerCoverage: inline 8-bit counters, the PC table, comparison tracing; `--cfg fuzzing`, debug
# assertions and overflow checks). Only workspace crates come through here, so the dependencies stay the
# test build's own artifacts: compiled once for both builds. Coverage then guides the fuzzer through
# tailgate's code (the decoders, the buffer, the plugin boundary), which is what the targets fuzz; the
# dependencies (prost, flate2, wasmtime) are fuzzed upstream. Build scripts and cargo's probes of the
# compiler are passed through untouched: they are not linked with libFuzzer's runtime.
# With CLIPPY_ARGS set (scripts/test.sh sets it), the workspace's crates are compiled by clippy-driver,
# so the fuzz targets are linted like the rest of the workspace, in the same compilation.
rustc="$1"
shift
case " $* " in
*" --crate-name build_script_"* | *" --crate-name ___ "* | *" --crate-type proc-macro "* | *" -vV "*)
    exec "$rustc" "$@"
    ;;
esac
driver=()
if [ -n "${CLIPPY_ARGS:-}" ]; then
    driver=("$(dirname "$(rustup which cargo)")/clippy-driver")
fi
exec "${driver[@]}" "$rustc" "$@" --cfg fuzzing \
    -Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    -Cdebug-assertions \
    -Coverflow-checks

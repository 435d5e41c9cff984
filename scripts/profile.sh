#!/usr/bin/env bash
# Instruction counts of the hot plugin paths under valgrind's callgrind (see BENCHMARKS.md). Unlike wall-clock
# benchmarks they stay stable on a busy machine. Prints instructions per call for each case and leaves the
# callgrind files in target/prof/ (`callgrind_annotate target/prof/<case>.out` shows where they go).
#   ./scripts/profile.sh [ITERS]        # default 200 calls per case
# Needs valgrind (`apt-get install valgrind`) and the plugins (scripts/build-plugins.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
iters="${1:-200}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
# PLUGIN_CALL_BIN / REDACTION_BIN: profile these bench executables instead of building them (before/after;
# PROFILE_SKIP_PUSHDOWN=1 for a bench from before predicate pushdown, which lacks those cases).
if [ -z "${PLUGIN_CALL_BIN:-}" ] || [ -z "${REDACTION_BIN:-}" ]; then
    built="$(cargo bench -p tailgate --bench plugin_call --bench redaction --no-run 2>&1 | tee /dev/stderr)"
fi
exe() { grep -o "Executable benches/$1.rs ([^)]*)" <<<"$built" | sed 's/.*(\(.*\))/\1/'; }
plugin_call="${PLUGIN_CALL_BIN:-$(exe plugin_call)}"
redaction="${REDACTION_BIN:-$(exe redaction)}"
tag="${PROFILE_TAG:-}"
mkdir -p target/prof
run() { # name binary case
    local out="target/prof/$1$tag.out"
    TAILGATE_PROFILE_ITERS="$iters" TAILGATE_PROFILE_CASE="$3" valgrind --tool=callgrind \
        --collect-atstart=no '--toggle-collect=*profile_loop*' --callgrind-out-file="$out" "$2" \
        >"target/prof/$1$tag.log" 2>&1
    local ir
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$out")"
    awk -v n="$1 ($3)" -v ir="$ir" -v it="$iters" 'BEGIN { printf "%-60s %12.0f instructions per call\n", n, ir / it }'
}
run sampler-keep-errors "$plugin_call" "keep-errors"
run sampler-keep-errors-http "$plugin_call" "keep-errors (http 5xx)"
run sampler-keep-errors-http-absent "$plugin_call" "keep-errors (http 5xx) none present"
run sampler-attribute-match "$plugin_call" "attribute-match"
# 0.2 samplers: the cases above count from ingest-time predicate bits; `walk` is the decision-time fallback
# (spans scanned under another policy generation), and `scan ...` the ingest scan of the 10-span request
# without predicates and with each sampler's predicate set (the ingest-side cost of the pushdown).
if [ -z "${PROFILE_SKIP_PUSHDOWN:-}" ]; then
    run sampler-keep-errors-http-walk "$plugin_call" "keep-errors (http 5xx) walk"
    run sampler-attribute-match-walk "$plugin_call" "attribute-match walk"
    run scan-no-predicates "$plugin_call" "scan none"
    run scan-keep-errors-http "$plugin_call" "scan keep-errors (http 5xx)"
    run scan-attribute-match "$plugin_call" "scan attribute-match"
fi
run host-walk-present "$plugin_call" "host walk present"
run host-finder-present "$plugin_call" "host finder present"
run host-walk-absent "$plugin_call" "host walk absent"
run host-finder-absent "$plugin_call" "host finder absent"
run redact-pii "$redaction" "pii"
run redact-nopii "$redaction" "nopii"

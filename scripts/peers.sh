#!/usr/bin/env bash
# Builds tailgate's real counterparts once and caches them, like any installed tool:
#   - Jaeger v2 (tests/peers/jaeger/go.mod: github.com/jaegertracing/jaeger/cmd/jaeger, pinned there), the
#     downstream of the Jaeger end-to-end tests, the demo and the benchmark;
#   - an OpenTelemetry Collector with the tail_sampling, redaction, transform and batch processors
#     (bench/collector/: main.go and go.mod, contrib v0.161.0), the peer of the benchmark and the decision
#     oracle of the tests;
#   - Apache Kafka's jars (tests/peers/kafka/pom.xml, copied by Maven), the broker of the Kafka tests.
# A binary is rebuilt only when its go.mod/go.sum/main.go (or pom.xml) changed: the cache key is their
# hash, so a version bump rebuilds and an unchanged checkout reuses what a previous clone built.
#   scripts/peers.sh [jaeger] [collector] [kafka]     default: all three
# Prints the paths as shell assignments on the last lines (TAILGATE_JAEGER=..., TAILGATE_COLLECTOR=...,
# TAILGATE_KAFKA_LIBS=...); `eval "$(scripts/peers.sh | grep ^TAILGATE_)"` sets them.
# Environment: TAILGATE_PEERS_CACHE (default ~/.cache/tailgate/peers).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${TAILGATE_PEERS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tailgate/peers}"
mkdir -p "$cache"

want=("$@")
[[ ${#want[@]} -eq 0 ]] && want=(jaeger collector kafka)

key() { cat "$@" | sha256sum | cut -c1-16; }

gocaches="$cache/.go-$$"
trap 'rm -rf "$gocaches"' EXIT

# prune NAME KEEP: removes the cached builds of NAME other than KEEP (older pins), to bound the disk.
prune() {
    local d
    for d in "$cache/$1"-*; do
        [[ -d $d && $d != "$2" && $d != *.tmp.* ]] && rm -rf "$d"
    done
    return 0
}

# go_peer NAME MODULE_DIR PACKAGE: builds PACKAGE in MODULE_DIR into $cache/NAME-<key>/NAME.
go_peer() {
    local name=$1 dir=$2 pkg=$3
    local files=("$dir/go.mod" "$dir/go.sum")
    [[ -f $dir/main.go ]] && files+=("$dir/main.go")
    local out
    out="$cache/$name-$(key "${files[@]}")"
    if [[ ! -x $out/$name ]]; then
        command -v go >/dev/null || { echo "peers: go is not installed (needed to build $name)" >&2; exit 1; }
        echo "peers: building $name ($pkg) into $out (first time only; a few minutes)" >&2
        local t=$SECONDS
        local tmp="$out.tmp.$$"
        rm -rf "$tmp" && mkdir -p "$tmp"
        # -trimpath and no debug info: a smaller binary. Go's module and build caches for these builds are
        # private and removed at the end (gocaches): ~5 GB that only a rebuild with a new pin would use.
        (cd "$dir" && GOMODCACHE="$gocaches/mod" GOCACHE="$gocaches/build" GOFLAGS="$(go env GOFLAGS) -modcacherw" \
            go build -trimpath -ldflags='-s -w' -o "$tmp/$name" "$pkg")
        # Another run may have finished the same build meanwhile: keep the first one in place.
        mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp"
        echo "peers: built $name in $((SECONDS - t))s" >&2
        prune "$name" "$out"
    else
        echo "peers: $name cached at $out/$name" >&2
    fi
    printf '%s\n' "$out/$name"
}

kafka_libs() {
    local dir="$root/tests/peers/kafka"
    local out
    out="$cache/kafka-$(key "$dir/pom.xml")"
    if [[ ! -f $out/.complete || ! -d $out/libs ]]; then
        command -v mvn >/dev/null || { echo "peers: mvn is not installed (needed for Apache Kafka)" >&2; exit 1; }
        command -v java >/dev/null || { echo "peers: java is not installed (needed for Apache Kafka)" >&2; exit 1; }
        echo "peers: fetching Apache Kafka's jars into $out (first time only)" >&2
        local t=$SECONDS
        # Fetched into a directory of this run's own and moved into place whole, so a concurrent run
        # (two clones testing at once) never sees, or removes, a half-filled one.
        local tmp="$out.tmp.$$"
        rm -rf "$tmp" && mkdir -p "$tmp"
        mvn -q -B -f "$dir/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$tmp/libs" >&2
        touch "$tmp/.complete"
        rm -rf "$out"  # not complete (checked above): whatever is there is a leftover
        mv -T "$tmp" "$out" 2>/dev/null || rm -rf "$tmp"
        echo "peers: fetched Kafka in $((SECONDS - t))s" >&2
        prune kafka "$out"
    else
        echo "peers: Kafka cached at $out" >&2
    fi
    printf '%s\n' "$out/libs"
}

for w in "${want[@]}"; do
    case $w in
    jaeger)
        p=$(go_peer jaeger "$root/tests/peers/jaeger" github.com/jaegertracing/jaeger/cmd/jaeger)
        echo "TAILGATE_JAEGER=$p"
        ;;
    collector)
        p=$(go_peer otelcol "$root/bench/collector" .)
        echo "TAILGATE_COLLECTOR=$p"
        ;;
    kafka)
        p=$(kafka_libs)
        echo "TAILGATE_KAFKA_LIBS=$p"
        ;;
    *)
        echo "peers: unknown peer '$w' (jaeger, collector, kafka)" >&2
        exit 2
        ;;
    esac
done

#!/usr/bin/env bash
# Builds the C plugins into WebAssembly components:
#   keep-errors/keep_errors.c -> <out>/c-keep-errors.wasm  (world tailgate:plugin/sampler@0.1.0)
#   redactor/redactor.c       -> <out>/c-redactor.wasm     (world tailgate:plugin/redactor@0.1.0)
# Usage: ./build.sh [out-dir]   (default: target/plugins at the repository root)
#
# Steps per plugin: `wit-bindgen c` generates the bindings; Debian's clang compiles them with the plugin
# for wasm32-wasi as a library (-nostartfiles, --no-entry) into a core module that imports nothing from
# WASI (only wasi-libc's malloc and string functions are used); `wasm-tools component new` wraps it into a
# component, which needs no WASI adapter for that reason.
# Tools, installed when missing: clang, lld, wasi-libc, libclang-rt-14-dev-wasm32 (apt-get, needs root);
# wit-bindgen-cli 0.61.1 (the version of the Rust guests' wit-bindgen) and wasm-tools 1.263.0 (cargo
# install into ~/.cargo/bin, a few minutes each). A component is rebuilt only when its source, the common
# header, the WIT or this script is newer than it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/plugins}"
wit="$root/wit/v0.1.0"
work="$root/target/c-plugins"
mkdir -p "$out" "$work"

WIT_BINDGEN_VERSION=0.61.1
WASM_TOOLS_VERSION=1.263.0
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"

up_to_date() { # <output> <inputs...>
    local dst="$1"
    shift
    [ -e "$dst" ] && [ -z "$(find "$@" -newer "$dst" -type f -print -quit)" ]
}
if up_to_date "$out/c-keep-errors.wasm" "$here" "$wit" && up_to_date "$out/c-redactor.wasm" "$here" "$wit"; then
    exit 0
fi

if ! command -v clang > /dev/null || ! command -v wasm-ld > /dev/null || [ ! -e /usr/lib/wasm32-wasi/libc.a ] \
    || ! dpkg -s libclang-rt-14-dev-wasm32 > /dev/null 2>&1; then
    echo "installing clang, lld, wasi-libc (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld wasi-libc libclang-rt-14-dev-wasm32 > /dev/null
fi
if ! wit-bindgen --version 2> /dev/null | grep -qF " $WIT_BINDGEN_VERSION"; then
    # Only the C generator: ~5 min instead of ~15.
    echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (cargo install, a few minutes)"
    cargo install --quiet --locked "wit-bindgen-cli@$WIT_BINDGEN_VERSION" --no-default-features --features c
fi
if ! wasm-tools --version 2> /dev/null | grep -qF " $WASM_TOOLS_VERSION"; then
    # Only the subcommands used here (and `print`, `component wit` for debugging): ~3 min instead of ~10.
    echo "installing wasm-tools $WASM_TOOLS_VERSION (cargo install, a few minutes)"
    cargo install --quiet --locked "wasm-tools@$WASM_TOOLS_VERSION" --no-default-features \
        --features component,validate,print
fi

build() { # <source> <world name> <output name>
    local src="$here/$1" world="$2" name="$3"
    local dst="$out/$name.wasm" gen="$work/$name"
    if up_to_date "$dst" "$src" "$here/common" "$here/build.sh" "$wit"; then
        return
    fi
    rm -rf "$gen"
    mkdir -p "$gen"
    if ! wit-bindgen c "$wit" --world "tailgate:plugin/$world@0.1.0" --out-dir "$gen" > "$gen/wit-bindgen.log" 2>&1; then
        cat "$gen/wit-bindgen.log" >&2
        exit 1
    fi
    clang --target=wasm32-wasi -O2 -Wall -Wextra -Wno-unused-parameter -Werror -I"$gen" \
        -nostartfiles -Wl,--no-entry -Wl,--strip-all \
        -o "$gen/$name.core.wasm" "$src" "$gen/$world.c" "$gen/${world}_component_type.o"
    wasm-tools component new "$gen/$name.core.wasm" -o "$dst.tmp"
    wasm-tools validate "$dst.tmp"
    mv "$dst.tmp" "$dst"
    echo "built $dst"
}
build keep-errors/keep_errors.c sampler c-keep-errors
build redactor/redactor.c redactor c-redactor

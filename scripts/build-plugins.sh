#!/usr/bin/env bash
# Builds tailgate's plugins into target/plugins/<name>.wasm:
#   - the Rust plugins of plugins/ (cargo, wasm32-wasip2, release profile of plugins/Cargo.toml);
#   - the Python plugins of plugins/python/<name>/app.py (componentize-py 0.25.1 from a venv at .venv),
#     written as target/plugins/python-<name with - for _>.wasm, and the Python examples
#     (examples/plugins/python/build.sh: python-redactor.wasm);
#   - the JavaScript examples (examples/plugins/javascript/build.sh: componentize-js from npm, pinned in
#     its package.json; js-keep-errors.wasm, js-redactor.wasm);
#   - the C examples (examples/plugins/c/build.sh: Debian's clang and wasi-libc, the committed bindings,
#     jco from npm, each installed when missing; nothing built from source; c-keep-errors.wasm,
#     c-redactor.wasm).
# Idempotent: cargo rebuilds only what changed, files are copied only when they differ, and a Python
# component is rebuilt only when its sources or the WIT are newer than it.
# Environment: TAILGATE_SKIP_PYTHON=1, TAILGATE_SKIP_JS=1, TAILGATE_SKIP_C=1 skip a language (the host
# tests then fail for its plugins).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/target/plugins"
wit="$root/wit/v0.1.0"
mkdir -p "$out"

# The toolchain (and its wasm32-wasip2 target) come from rust-toolchain.toml at the repository root.
cd "$root/plugins"
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --release --target wasm32-wasip2 --quiet

built="$root/plugins/target/wasm32-wasip2/release"
for manifest in "$root"/plugins/*/Cargo.toml; do
    crate="$(basename "$(dirname "$manifest")")"
    [ "$crate" = sdk ] && continue
    src="$built/${crate//-/_}.wasm"
    dst="$out/$crate.wasm"
    if ! cmp -s "$src" "$dst" 2>/dev/null; then
        cp "$src" "$dst"
        echo "built $dst"
    fi
done

if [ "${TAILGATE_SKIP_PYTHON:-0}" != 1 ]; then
    venv="$root/.venv"
    if [ ! -x "$venv/bin/componentize-py" ]; then
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet componentize-py==0.25.1
    fi

    for app in "$root"/plugins/python/*/app.py; do
        [ -e "$app" ] || continue
        dir="$(dirname "$app")"
        name="$(basename "$dir")"
        dst="$out/python-${name//_/-}.wasm"
        if [ -e "$dst" ] && [ -z "$(find "$dir" "$wit" -newer "$dst" -type f -print -quit)" ]; then
            continue
        fi
        (cd "$root" && "$venv/bin/componentize-py" -d "$wit" -w tailgate:plugin/sampler@0.1.0 \
            componentize -p "$dir" app -o "$dst.tmp" > /dev/null)
        mv "$dst.tmp" "$dst"
        echo "built $dst"
    done
    "$root/examples/plugins/python/build.sh" "$out"
fi

if [ "${TAILGATE_SKIP_JS:-0}" != 1 ]; then
    "$root/examples/plugins/javascript/build.sh" "$out"
fi

if [ "${TAILGATE_SKIP_C:-0}" != 1 ]; then
    "$root/examples/plugins/c/build.sh" "$out"
fi


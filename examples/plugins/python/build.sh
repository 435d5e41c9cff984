#!/usr/bin/env bash
# Builds the Python example plugins with componentize-py 0.25.1 (from the repository's .venv, created when
# missing):
#   redactor/app.py -> <out>/python-redactor.wasm  (world tailgate:plugin/redactor@0.1.0)
# The Python sampler (keep-errors) lives in plugins/python/keep_errors and is built by
# scripts/build-plugins.sh. Usage: ./build.sh [out-dir] (default: target/plugins at the repository root).
# Rebuilds only when the source or the WIT is newer than the component.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/plugins}"
wit="$root/wit/v0.1.0"
venv="$root/.venv"
mkdir -p "$out"
if [ ! -x "$venv/bin/componentize-py" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet componentize-py==0.25.1
fi
build() { # <dir> <world> <output name>
    local dir="$here/$1" dst="$out/$3.wasm"
    if [ -e "$dst" ] && [ -z "$(find "$dir" "$wit" -newer "$dst" -type f -not -name '*.pyc' -print -quit)" ]; then
        return
    fi
    "$venv/bin/componentize-py" -d "$wit" -w "$2" componentize -p "$dir" app -o "$dst.tmp" > /dev/null
    mv "$dst.tmp" "$dst"
    echo "built $dst"
}
build redactor tailgate:plugin/redactor@0.1.0 python-redactor

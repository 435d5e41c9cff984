#!/usr/bin/env bash
# Builds the JavaScript plugins with componentize-js (pinned in package.json):
#   keep-errors/keep-errors.js -> <out>/js-keep-errors.wasm  (world tailgate:plugin/sampler@0.1.0)
#   redactor/redactor.js       -> <out>/js-redactor.wasm     (world tailgate:plugin/redactor@0.1.0)
# Usage: ./build.sh [out-dir]   (default: target/plugins at the repository root)
# Installs node_modules with `npm ci` when missing; rebuilds a component only when its source, the WIT or
# the lockfile is newer than it. `-d http fetch-event` leaves out wasi:http, which tailgate does not grant.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$root/target/plugins}"
wit="$root/wit/v0.1.0"
mkdir -p "$out"
cd "$here"
if [ ! -x node_modules/.bin/componentize-js ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
build() { # <source> <world> <output name>
    local src="$here/$1" dst="$out/$3.wasm"
    if [ -e "$dst" ] && [ -z "$(find "$src" "$wit" "$here/package-lock.json" -newer "$dst" -type f -print -quit)" ]; then
        return
    fi
    node_modules/.bin/componentize-js "$src" --wit "$wit" -n "$2" -d http fetch-event -o "$dst.tmp" > /dev/null
    mv "$dst.tmp" "$dst"
    echo "built $dst"
}
build keep-errors/keep-errors.js tailgate:plugin/sampler@0.1.0 js-keep-errors
build redactor/redactor.js tailgate:plugin/redactor@0.1.0 js-redactor

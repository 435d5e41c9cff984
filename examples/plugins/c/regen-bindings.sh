#!/usr/bin/env bash
# Regenerates the C bindings of the plugin contract in bindings/<world>/ with wit-bindgen-cli (the C
# generator), for the WIT version that build.sh builds against. Run it only when that WIT changes (a
# published WIT version never does; a new one gets its own bindings): the bindings are committed, so
# building the C plugins needs only clang, wasi-libc and jco, not a Rust tool built from source.
# Installs wit-bindgen-cli (pinned below, the version of the Rust guests' wit-bindgen; `cargo install`,
# about 5 minutes) when missing. Writes bindings/WIT.sha256, which build.sh checks against the WIT.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit/v0.1.0"
WIT_BINDGEN_VERSION=0.61.1
cargo_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
export PATH="$cargo_bin:$PATH"
if ! wit-bindgen --version 2> /dev/null | grep -qF " $WIT_BINDGEN_VERSION"; then
    echo "installing wit-bindgen-cli $WIT_BINDGEN_VERSION (cargo install, a few minutes)"
    cargo install --quiet --locked "wit-bindgen-cli@$WIT_BINDGEN_VERSION" --no-default-features --features c
fi
for world in sampler redactor; do
    rm -rf "$here/bindings/$world"
    mkdir -p "$here/bindings/$world"
    wit-bindgen c "$wit" --world "tailgate:plugin/$world@0.1.0" --out-dir "$here/bindings/$world" > /dev/null
done
"$here/wit-hash.sh" "$wit" > "$here/bindings/WIT.sha256"
echo "bindings/ regenerated with wit-bindgen $WIT_BINDGEN_VERSION for $(cat "$here/bindings/WIT.sha256")"

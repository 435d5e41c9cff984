#!/usr/bin/env bash
# Prints one sha256 over the WIT files of a directory (names and contents, in name order): the
# fingerprint that ties the committed C bindings to the WIT they were generated from.
set -euo pipefail
cd "$1"
find . -name '*.wit' -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1

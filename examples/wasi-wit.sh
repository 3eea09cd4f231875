#!/usr/bin/env bash
# Prints the directory holding the WASI 0.2 WIT (wasi:http/proxy and the
# packages it uses) that berth itself links: the wit/ of the
# wasmtime-wasi-http crate pinned in Cargo.lock. The Python and JavaScript
# examples build against it, so their imports match what berth provides.
# Usage: examples/wasi-wit.sh   (needs cargo; fetches the crate if missing)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
manifest="$(cargo metadata --locked --format-version 1 --manifest-path "$root/Cargo.toml" |
    grep -o '"manifest_path":"[^"]*/wasmtime-wasi-http-[0-9][^"/]*/Cargo.toml"' |
    head -n 1 | sed 's/^"manifest_path":"//; s/"$//')"
if [ -z "$manifest" ]; then
    echo "wasi-wit.sh: wasmtime-wasi-http not found in cargo metadata" >&2
    exit 1
fi
wit="$(dirname "$manifest")/wit"
[ -d "$wit/deps" ] || { echo "wasi-wit.sh: $wit/deps missing" >&2; exit 1; }
echo "$wit"

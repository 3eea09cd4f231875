#!/usr/bin/env bash
# Builds the JavaScript wasi:http example with ComponentizeJS (SpiderMonkey),
# at the exact version pinned in package.json / package-lock.json:
#   js/http-hello/app.js -> wasm/http-hello-js.wasm (committed, ~13 MB)
# Needs Node.js >= 18 with npm (the npm registry), and cargo for the WASI WIT
# (see wasi-wit.sh). Usage: examples/js/build.sh   (from any directory)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$(cd "$here/.." && pwd)/wasm/http-hello-js.wasm"

for tool in node npm cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "js/build.sh: '$tool' not found" >&2; exit 1; }
done

# ComponentizeJS reads one WIT directory: the example's world beside the
# WASI packages berth links.
wit="$(mktemp -d)"
trap 'rm -rf "$wit"' EXIT
cp "$here/http-hello/wit/world.wit" "$wit/"
cp -r "$("$here/../wasi-wit.sh")/deps" "$wit/deps"

echo "npm ci (componentize-js $(sed -n 's/.*"@bytecodealliance\/componentize-js": "\(.*\)".*/\1/p' "$here/package.json"))"
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error)

echo "componentize-js js/http-hello/app.js -> wasm/http-hello-js.wasm"
"$here/node_modules/.bin/componentize-js" "$here/http-hello/app.js" \
    --wit "$wit" --world-name http-hello --out "$out"
echo "done: $(du -h "$out" | cut -f1) $out"

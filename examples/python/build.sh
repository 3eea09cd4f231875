#!/usr/bin/env bash
# Builds the Python wasi:http example with componentize-py at a pinned version:
#   python/http-hello/app.py -> python/target/http-hello-py.wasm
# The component embeds CPython (~19 MB), so it is not committed: build it here.
# Needs python3 (3.10 or newer, with venv; componentize-py comes from PyPI
# into python/.venv) and cargo for the WASI WIT (see wasi-wit.sh).
# Usage: examples/python/build.sh   (from any directory)
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/target/http-hello-py.wasm"

for tool in python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || { echo "python/build.sh: '$tool' not found" >&2; exit 1; }
done
wit="$("$here/../wasi-wit.sh")"

venv="$here/.venv"
if ! "$venv/bin/componentize-py" --version 2>/dev/null | grep -qx "componentize-py $COMPONENTIZE_PY_VERSION"; then
    echo "pip install componentize-py==$COMPONENTIZE_PY_VERSION into python/.venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$COMPONENTIZE_PY_VERSION"
fi

mkdir -p "$here/target"
echo "componentize-py python/http-hello/app.py -> python/target/http-hello-py.wasm"
"$venv/bin/componentize-py" --quiet -d "$wit" -w wasi:http/proxy@0.2.12 \
    componentize --python-path "$here/http-hello" app -o "$out"
echo "done: $(du -h "$out" | cut -f1) $out"

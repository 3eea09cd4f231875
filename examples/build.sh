#!/usr/bin/env bash
# Rebuilds the prebuilt C and Rust examples in examples/wasm/ from source.
#   C sources   examples/c/*.c        -> examples/wasm/NAME.wasm (core modules, wasm32-wasi)
#   Rust        examples/rust/NAME/   -> examples/wasm/NAME.wasm (components, wasm32-wasip2):
#               hello-p2 (wasi:cli command), echo-server (wasi:sockets TCP server and
#               client), http-hello and http-json (wasi:http proxies)
# The .wat examples need no build: berth runs WebAssembly text directly.
# The JavaScript and Python examples have their own scripts, js/build.sh
# (wasm/http-hello-js.wasm) and python/build.sh, with their own toolchains.
# Usage: examples/build.sh   (from any directory)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/wasm"

CLANG="${CLANG:-clang-14}"
CFLAGS=(--target=wasm32-wasi -O2 -Wall -Wextra -Wl,--strip-all)

missing=0
need() { # need COMMAND HOW-TO-INSTALL
    if ! command -v "$1" >/dev/null 2>&1; then
        echo "build.sh: '$1' not found; install it with: $2" >&2
        missing=1
    fi
}

need "$CLANG" "sudo apt-get install clang-14"
need wasm-ld-14 "sudo apt-get install lld-14"
need cargo "rustup (https://rustup.rs), then: rustup target add wasm32-wasip2"
[ "$missing" -eq 0 ] || exit 1

# clang needs the WASI libc and the wasm32 compiler-rt builtins; a trivial
# compile tells us whether both are there.
probe="$(mktemp -d)"
trap 'rm -rf "$probe"' EXIT
printf '#include <stdio.h>\nint main(void){puts("");return 0;}\n' >"$probe/probe.c"
if ! "$CLANG" "${CFLAGS[@]}" "$probe/probe.c" -o "$probe/probe.wasm" 2>"$probe/err"; then
    cat "$probe/err" >&2
    if grep -q 'stdio.h' "$probe/err"; then
        echo "build.sh: WASI libc missing; install it with: sudo apt-get install wasi-libc" >&2
    elif grep -q 'libclang_rt' "$probe/err"; then
        echo "build.sh: wasm32 compiler-rt missing; install it with: sudo apt-get install libclang-rt-14-dev-wasm32" >&2
    else
        echo "build.sh: $CLANG cannot build for wasm32-wasi (see above)" >&2
    fi
    exit 1
fi
if command -v rustup >/dev/null 2>&1 &&
    ! rustup target list --installed | grep -qx wasm32-wasip2; then
    echo "build.sh: Rust target wasm32-wasip2 missing; install it with: rustup target add wasm32-wasip2" >&2
    exit 1
fi

mkdir -p "$out"

for src in "$here"/c/*.c; do
    name="$(basename "$src" .c)"
    echo "cc    c/$name.c -> wasm/$name.wasm"
    "$CLANG" "${CFLAGS[@]}" "$src" -o "$out/$name.wasm"
done

# Each Rust example is a standalone package sharing one target directory.
# cargo names a binary's output after the package (hello-p2.wasm) and a
# cdylib's after the library (http_hello.wasm).
rust_examples=(
    "hello-p2   hello-p2.wasm"
    "echo-server echo-server.wasm"
    "http-hello http_hello.wasm"
    "http-json  http_json.wasm"
)
for entry in "${rust_examples[@]}"; do
    read -r name artifact <<<"$entry"
    echo "cargo rust/$name -> wasm/$name.wasm"
    CARGO_TARGET_DIR="$here/rust/target" cargo build --quiet --release --locked \
        --target wasm32-wasip2 --manifest-path "$here/rust/$name/Cargo.toml"
    built="$here/rust/target/wasm32-wasip2/release/$artifact"
    # A component starts with the magic \0asm and the version bytes 0d 00 01 00.
    if [ "$(head -c 8 "$built" | od -An -tx1 | tr -d ' \n')" != "0061736d0d000100" ]; then
        echo "build.sh: $built is not a WebAssembly component" >&2
        exit 1
    fi
    cp "$built" "$out/$name.wasm"
done

echo "done: $(ls "$out" | wc -l) files in examples/wasm/"

#!/usr/bin/env bash
# Rebuilds every prebuilt example in examples/wasm/ from its source.
#   C sources   examples/c/*.c        -> examples/wasm/NAME.wasm (core modules, wasm32-wasi)
#   Rust        examples/rust/hello-p2 -> examples/wasm/hello-p2.wasm (component, wasm32-wasip2)
# The .wat examples need no build: berth runs WebAssembly text directly.
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

echo "cargo rust/hello-p2 -> wasm/hello-p2.wasm"
CARGO_TARGET_DIR="$here/rust/target" cargo build --quiet --release --locked \
    --target wasm32-wasip2 --manifest-path "$here/rust/hello-p2/Cargo.toml"
cp "$here/rust/target/wasm32-wasip2/release/hello-p2.wasm" "$out/hello-p2.wasm"

echo "done: $(ls "$out" | wc -l) files in examples/wasm/"

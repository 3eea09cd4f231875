#!/usr/bin/env bash
# berth benchmarks: the commands whose results are recorded in
# docs/benchmarks.md. Run on an otherwise idle machine:
#   bench/run.sh            # all
#   bench/run.sh cold       # one section: cold | instantiate | cache | cpu
# Needs: hyperfine, wabt, gcc (static glibc), runc (apt), and wasmtime-cli 48.0.8
# (`cargo install wasmtime-cli@48.0.8 --locked`, ~15 minutes, once).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/berth-target}"
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
sections=("${@:-cold instantiate cache cpu}")
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }

cargo build --release -p berth -q
berth="$CARGO_TARGET_DIR/release/berth"
export BERTH_HOME="$work/home"
hello="$root/examples/wasm/hello.wasm"
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F)"
echo "berth: $("$berth" --version); wasmtime: $(wasmtime --version 2>/dev/null || echo missing)"

if want cold; then
  echo "== cold start: whole process, C hello (warm compile caches) =="
  # Native static hello in a runc bundle.
  bundle="$work/bundle"
  mkdir -p "$bundle/rootfs"
  gcc -O2 -static "$root/examples/c/hello.c" -o "$bundle/rootfs/hello"
  (cd "$bundle" && runc spec && jq '.process.args = ["/hello"] | .process.terminal = false | .root.readonly = true' config.json > c.json && mv c.json config.json)
  "$berth" run "$hello" > /dev/null
  wasmtime run "$hello" > /dev/null
  hyperfine -N --warmup 20 --runs 300 --export-markdown "$work/cold.md" \
    -n "berth run hello.wasm" "$berth run $hello" \
    -n "wasmtime run hello.wasm" "wasmtime run $hello" \
    -n "runc run (native static hello)" "runc run -b $bundle berth-bench-hello"
  cat "$work/cold.md"
fi

if want instantiate; then
  echo "== in-process instantiate-to-exit =="
  cargo run --release -q -p berth-runtime --example instantiate -- "$hello" 5000
  cargo run --release -q -p berth-runtime --example instantiate -- "$root/examples/wasm/hello-p2.wasm" 5000
fi

if want cache; then
  echo "== compile cache: large module, first vs second run =="
  python3 "$root/bench/gen_large_wat.py" 6000 > "$work/large.wat"
  # A binary, so that text parsing is not part of either measurement.
  wat2wasm "$work/large.wat" -o "$work/large.wasm"   # apt: wabt
  ls -l "$work/large.wasm"
  hyperfine -N --runs 5 --export-markdown "$work/cache.md" \
    --prepare "rm -rf $BERTH_HOME/cache" --prepare "true" -n "first run (compile + store)" "$berth run $work/large.wasm" \
    -n "second run (cache hit)" "$berth run $work/large.wasm"
  cat "$work/cache.md"
fi

if want cpu; then
  echo "== CPU quota accuracy: busy loop =="
  busy="$root/examples/wasm/busy.wasm"
  for cpus in 1.0 0.5 0.25; do
    /usr/bin/time -f "cpus=$cpus wall=%e s user+sys=%U+%S s" "$berth" run --cpus "$cpus" "$busy" 1500 > /dev/null
  done 2>&1 | awk '{print} /wall=/{split($2,w,"=");split($3,c,"=");split(c[2],p,"+");printf("  -> effective CPU share %.3f\n",(p[1]+p[2])/w[2])}'
fi

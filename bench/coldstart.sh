#!/usr/bin/env bash
# Cold start of the whole process, side by side: `berth run hello.wasm`,
# `wasmtime run hello.wasm` (compile caches warm for both) and the same C
# program built natively with `gcc -static`; with `runc` installed and run as
# root, also that native program started by `runc run` from a bundle.
# Prints a markdown table: hyperfine's mean, p50, p99 and min, the peak
# RSS and the page faults of one start (medians of 20 runs, /usr/bin/time;
# for runc they are runc's own).
#   bench/coldstart.sh [RUNS]     # RUNS defaults to 300
# Needs: hyperfine, gcc (static glibc), python3, GNU time (/usr/bin/time), jq
# (runc bundle) and wasmtime-cli 48.0.8 (`cargo install wasmtime-cli@48.0.8 --locked`).
source "$(dirname "$0")/common.sh"
runs="${1:-300}"
hello="$root/examples/wasm/hello.wasm"
native="$work/hello-native"
gcc -O2 -static "$root/examples/c/hello.c" -o "$native"
wasmtime=$(command -v wasmtime || true)
echo "machine: $(nproc) cores, $(uname -sr), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%F %H:%M') UTC"
echo "berth: $("$berth" --version); wasmtime: ${wasmtime:+$("$wasmtime" --version)}"

names=("berth run hello.wasm") commands=("$berth run $hello")
if [[ -n $wasmtime ]]; then
  names+=("wasmtime run hello.wasm") commands+=("$wasmtime run $hello")
else
  echo "wasmtime not found: its row is left out" >&2
fi
names+=("native static hello") commands+=("$native")
if command -v runc > /dev/null && [[ $(id -u) == 0 ]]; then
  bundle="$work/bundle"
  mkdir -p "$bundle/rootfs"
  cp "$native" "$bundle/rootfs/hello"
  (cd "$bundle" && runc spec && jq '.process.args = ["/hello"] | .process.terminal = false | .root.readonly = true' config.json > c.json && mv c.json config.json)
  names+=("runc run (native static hello)") commands+=("runc run -b $bundle berth-bench-hello-$$")
fi

# Fill the compile caches.
for command in "${commands[@]}"; do $command > /dev/null; done

args=()
for i in "${!names[@]}"; do args+=(-n "${names[$i]}" "${commands[$i]}"); done
hyperfine -N --warmup 20 --runs "$runs" --export-json "$work/cold.json" "${args[@]}" > /dev/null

: > "$work/rss"
for i in "${!names[@]}"; do
  for _ in $(seq 20); do
    /usr/bin/time -f "$i %M %R" ${commands[$i]} 2>&1 > /dev/null | tail -1
  done >> "$work/rss"
done

python3 - "$work/cold.json" "$work/rss" <<'PY'
import json, statistics, sys

results = json.load(open(sys.argv[1]))["results"]
memory = {}
for line in open(sys.argv[2]):
    index, rss, faults = map(int, line.split())
    memory.setdefault(index, []).append((rss, faults))

def ms(seconds):
    return f"{seconds * 1000:.2f}"

print("| Command | Mean [ms] | p50 [ms] | p99 [ms] | Min [ms] | Peak RSS [MiB] | Page faults |")
print("|:---|---:|---:|---:|---:|---:|---:|")
for index, result in enumerate(results):
    times = sorted(result["times"])
    p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
    rss = statistics.median(r for r, _ in memory[index]) / 1024
    faults = statistics.median(f for _, f in memory[index])
    print(f"| `{result['command']}` | {ms(result['mean'])} ± {ms(result['stddev'])} "
          f"| {ms(statistics.median(times))} | {ms(p99)} | {ms(times[0])} | {rss:.1f} | {faults:.0f} |")
by_name = {r["command"]: r for r in results}
berth, wasmtime = by_name.get("berth run hello.wasm"), by_name.get("wasmtime run hello.wasm")
if berth and wasmtime:
    ratio = lambda key: key(berth) / key(wasmtime)
    print(f"\nberth / wasmtime: mean {ratio(lambda r: r['mean']):.2f}x, "
          f"p50 {ratio(lambda r: statistics.median(r['times'])):.2f}x")
PY

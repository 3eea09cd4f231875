#!/usr/bin/env bash
# Regenerates cli/startup-order.txt: the functions a release `berth run`
# executes to run a program (a preview1 module and a preview2 component,
# compile cache warm), in the order they first run. cli/build.rs hands the
# list to the linker, which places those functions next to each other: the
# code a run touches then fills a few hundred contiguous KiB instead of
# pages spread over the whole text segment, which saves page faults and
# resident memory at every start (docs/benchmarks.md, "Cold start").
#
# Symbol names carry crate hashes that change with dependency versions and
# the compiler, so re-run this after updating either (names that no longer
# exist are ignored by the linker: a stale list costs speed, never
# correctness). Linux x86_64 only; needs gcc, nm (binutils) and python3.
# Single-stepping makes each traced run take a minute or two.
#   bench/startup-order.sh
source "$(dirname "$0")/common.sh"
gcc -O2 -Wall -o "$work/steptrace" "$root/bench/steptrace.c"

traces=()
for program in "hello.wasm world" "hello-p2.wasm"; do
  set -- $program
  "$berth" run "$root/examples/wasm/$1" "${@:2}" > /dev/null   # fill the compile cache
  echo "tracing berth run $program" >&2
  "$work/steptrace" "$work/$1.trace" "$berth" run "$root/examples/wasm/$1" "${@:2}" > /dev/null
  traces+=("$work/$1.trace")
done

nm --defined-only --print-size "$berth" > "$work/symbols"
python3 - "$work/symbols" "$root/cli/startup-order.txt" "${traces[@]}" <<'PY'
import bisect, sys

symbols_file, out_file, *traces = sys.argv[1:]
functions = []
for line in open(symbols_file):
    fields = line.split()
    if len(fields) == 4 and fields[2] in "tTwW":
        functions.append((int(fields[0], 16), int(fields[1], 16), fields[3]))
functions.sort()
starts = [start for start, _, _ in functions]

order, seen, size = [], set(), 0
for trace in traces:
    for line in open(trace):
        address = int(line, 16)
        i = bisect.bisect_right(starts, address) - 1
        if i < 0:
            continue
        start, length, name = functions[i]
        if address < start + max(length, 1) and name not in seen:
            seen.add(name)
            order.append(name)
            size += length
with open(out_file, "w") as out:
    out.write("\n".join(order) + "\n")
print(f"{out_file}: {len(order)} functions, {size // 1024} KiB of code", file=sys.stderr)
PY

#!/usr/bin/env bash
# berth benchmarks: the commands whose results are recorded in
# docs/benchmarks.md. Run on an otherwise idle machine:
#   bench/run.sh            # all
#   bench/run.sh cold       # one section: cold | instantiate | density | cache | cpu | images | http
#   bench/run.sh shim       # the containerd shim against runc (bench/shim.sh; root, containerd, runc)
# Needs: hyperfine, wabt, wrk, skopeo, docker-registry, gcc (static glibc), runc, GNU time (apt), and wasmtime-cli 48.0.8
# (`cargo install wasmtime-cli@48.0.8 --locked`, ~15 minutes, once).
source "$(dirname "$0")/common.sh"
sections=("${@:-cold instantiate density cache cpu images http}")
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }

hello="$root/examples/wasm/hello.wasm"
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F)"
echo "berth: $("$berth" --version); wasmtime: $(wasmtime --version 2>/dev/null || echo missing)"

if want shim; then
  echo "== containerd shim: berth against runc under one containerd =="
  "$root/bench/shim.sh"
fi

if want cold; then
  echo "== cold start: whole process, C hello (warm compile caches) =="
  "$root/bench/coldstart.sh"
fi

if want instantiate; then
  echo "== in-process start-to-exit: berth against a minimal wasmtime host, sequential and concurrent =="
  cargo run --release -q --locked -p berth-runtime --example instantiate -- 5000 "$hello" "$root/examples/wasm/hello-p2.wasm"
fi

if want density; then
  echo "== idle sandboxes in one process: creation time and RSS =="
  cargo run --release -q --locked -p berth-runtime --example density -- 10000
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
  done 2>&1 | awk '{print} /wall=/{split($2,w,"=");split($4,c,"=");split(c[2],p,"+");printf("  -> effective CPU share %.3f\n",(p[1]+p[2])/w[2])}'
fi

if want images; then
  echo "== images: pull vs skopeo, build, run IMAGE vs run FILE, image size =="
  regdir="$work/registry"; mkdir -p "$regdir/storage"
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  printf 'version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' "$regdir/storage" "$port" > "$regdir/config.yml"
  docker-registry serve "$regdir/config.yml" & regpid=$!
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break; sleep 0.1; done
  ctx="$work/ctx"; mkdir -p "$ctx/assets"
  cp "$hello" "$ctx/hello.wasm"
  for i in 1 2 3 4; do head -c 2000000 /dev/urandom > "$ctx/assets/blob$i.bin"; done
  printf 'FROM scratch\nCOPY hello.wasm /app/hello.wasm\nCOPY assets /assets\nENTRYPOINT ["/app/hello.wasm"]\n' > "$ctx/Dockerfile"
  image="127.0.0.1:$port/bench/big:v1"
  hyperfine -N --runs 10 --export-markdown "$work/build.md" -n "berth build (8 MB of files)" "$berth build -q -t $image $ctx"
  cat "$work/build.md"
  "$berth" push -q "$image" > /dev/null
  hyperfine --runs 10 --export-markdown "$work/pull.md" \
    --prepare "rm -rf $BERTH_HOME/images" -n "berth pull" "$berth pull -q $image" \
    --prepare "rm -rf $work/skopeo-oci" -n "skopeo copy docker:// oci:" "skopeo copy -q --src-tls-verify=false docker://$image oci:$work/skopeo-oci:v1"
  cat "$work/pull.md"
  printf 'FROM scratch\nCOPY hello.wasm /app/hello.wasm\nENTRYPOINT ["/app/hello.wasm"]\n' > "$ctx/Dockerfile"
  "$berth" build -q -t hello-bench "$ctx" > /dev/null
  "$berth" run hello-bench > /dev/null
  hyperfine -N --warmup 20 --runs 300 --export-markdown "$work/runimage.md" \
    -n "berth run IMAGE" "$berth run hello-bench" -n "berth run FILE" "$berth run $hello"
  cat "$work/runimage.md"
  echo "image sizes (compressed, as stored/pushed):"
  "$berth" images | grep hello-bench
  mkdir -p "$work/native"; gcc -O2 -static "$root/examples/c/hello.c" -o "$work/native/hello"; strip "$work/native/hello"
  tar -C "$work/native" -czf "$work/native-layer.tar.gz" hello
  echo "native static hello layer (tar.gz): $(stat -c %s "$work/native-layer.tar.gz") bytes; wasm hello: $(stat -c %s "$hello") bytes"
  kill $regpid
fi

if want http; then
  echo "== HTTP: berth run -p vs wasmtime serve -S cli, fresh instance per request =="
  comp="$root/examples/wasm/http-hello.wasm"
  # First start fills berth's compile cache, as any earlier run would have.
  "$berth" run -p 127.0.0.1:18081:8080 "$comp" >/dev/null 2>&1 & bpid=$!
  sleep 2; kill $bpid; wait $bpid 2>/dev/null
  "$berth" run -p 127.0.0.1:18081:8080 "$comp" >/dev/null 2>&1 & bpid=$!
  wasmtime serve -S cli --addr 127.0.0.1:18082 "$comp" >/dev/null 2>&1 & wpid=$!
  sleep 2
  echo "idle RSS: berth $(ps -o rss= -p $bpid) KiB, wasmtime serve $(ps -o rss= -p $wpid) KiB"
  for c in 1 10 50; do
    for target in "berth 18081" "wasmtime 18082"; do
      set -- $target
      pid=$bpid; [[ $1 == wasmtime ]] && pid=$wpid
      wrk -t1 -c$c -d10s --latency "http://127.0.0.1:$2/" > "$work/wrk.txt" & wrkpid=$!
      sleep 5; rss=$(ps -o rss= -p $pid); wait $wrkpid
      rps=$(awk '/Requests\/sec/{print $2}' "$work/wrk.txt")
      p50=$(awk '$1=="50%"{print $2}' "$work/wrk.txt"); p99=$(awk '$1=="99%"{print $2}' "$work/wrk.txt")
      echo "c=$c $1: $rps req/s, p50 $p50, p99 $p99, RSS under load ${rss} KiB"
    done
  done
  kill $bpid $wpid
fi

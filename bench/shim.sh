#!/usr/bin/env bash
# containerd shim benchmarks (docs/benchmarks.md, "containerd shim"): berth's
# shim against runc under one private containerd, in one run.
#   bench/shim.sh            # all: run | tasks | rss
#   bench/shim.sh tasks      # one section
# Needs root, Debian's containerd (1.6) and runc, hyperfine, gcc with a static
# libc, clang-14 with wasi-libc, python3. Builds the shim and berth (release).
source "$(dirname "$0")/common.sh"
sections=("${@:-run tasks rss}")
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }
[[ $(id -u) == 0 ]] || { echo "bench/shim.sh starts containerd: run it as root" >&2; exit 1; }

cargo build --release --locked -p berth-shim -q
shim_dir="$CARGO_TARGET_DIR/release"
tasks=${TASKS:-500}
pods=${PODS:-100}

# A private containerd, as the shim's tests start one: everything under
# $work, the native snapshotter, the release shim first on its PATH.
ctrd="$work/containerd"; mkdir -p "$ctrd"
sock="$ctrd/containerd.sock"
cat > "$ctrd/config.toml" <<EOF
version = 2
root = "$ctrd/root"
state = "$ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[debug]
  address = "$ctrd/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$ctrd/opt"
EOF
PATH="$shim_dir:$PATH" BERTH_SHIM_DATA_DIR="$ctrd/berth" \
  containerd --config "$ctrd/config.toml" > "$ctrd/containerd.log" 2>&1 & ctrd_pid=$!
stop() {
  # Shims of this daemon that outlived it, found by its socket.
  for pid in $(pgrep -f "containerd-shim.*$sock" || true); do kill -9 "$pid" 2>/dev/null || true; done
  kill "$ctrd_pid" 2>/dev/null || true; wait "$ctrd_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT
ctr="ctr --address $sock --namespace bench"
for _ in $(seq 100); do $ctr version >/dev/null 2>&1 && break; sleep 0.1; done
fifos="$work/fifos"; mkdir -p "$fifos"
echo "machine: $(nproc) cores, $(uname -sr), $(date -u +%F); $(containerd --version); $(runc --version | head -1)"

# The berth image: the C hello (and a sleeper, an idle guest) built and
# saved by berth, imported into containerd.
ctx="$work/ctx"; mkdir -p "$ctx"
cp "$root/examples/wasm/hello.wasm" "$ctx/hello.wasm"
printf '#include <unistd.h>\nint main(void) { sleep(86400); return 0; }\n' > "$work/sleep.c"
clang-14 --target=wasm32-wasi -O2 -Wl,--strip-all "$work/sleep.c" -o "$ctx/sleep.wasm"
printf 'FROM scratch\nCOPY hello.wasm /app/hello.wasm\nCOPY sleep.wasm /app/sleep.wasm\nENTRYPOINT ["/app/hello.wasm"]\n' > "$ctx/Dockerfile"
"$berth" build -q -t bench/berth-hello:v1 "$ctx" > /dev/null
"$berth" save -o "$work/berth-hello.tar" bench/berth-hello:v1
$ctr images import --snapshotter native --all-platforms "$work/berth-hello.tar" > /dev/null
berth_image=$($ctr images ls -q | grep berth-hello)

# The native image: the same hello.c, gcc -O2 -static, in a one-layer OCI
# image for linux/amd64.
native="$work/native"; mkdir -p "$native/rootfs"
gcc -O2 -static "$root/examples/c/hello.c" -o "$native/rootfs/hello"; strip "$native/rootfs/hello"
python3 - "$native" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out = sys.argv[1]
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{out}/layout/blobs/sha256", exist_ok=True)
    open(f"{out}/layout/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as tar:
    tar.add(f"{out}/rootfs/hello", arcname="hello")
layer = layer.getvalue()
config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": ["/hello"]},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)}]}
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest).encode()),
    "platform": {"architecture": "amd64", "os": "linux"},
    "annotations": {"io.containerd.image.name": "docker.io/bench/native-hello:v1",
                    "org.opencontainers.image.ref.name": "v1"}}]}
open(f"{out}/layout/index.json", "w").write(json.dumps(index))
open(f"{out}/layout/oci-layout", "w").write(json.dumps({"imageLayoutVersion": "1.0.0"}))
EOF
tar -C "$native/layout" -cf "$native/image.tar" .
$ctr images import --snapshotter native "$native/image.tar" > /dev/null
native_image=docker.io/bench/native-hello:v1
echo "images: $berth_image ($(stat -c %s "$ctx/hello.wasm") B wasm), $native_image ($(stat -c %s "$native/rootfs/hello") B static ELF)"

berth_run="$ctr run --rm --snapshotter native --fifo-dir $fifos --platform wasip1/wasm --runtime io.containerd.berth.v1 $berth_image"
runc_run="$ctr run --rm --snapshotter native --fifo-dir $fifos --runtime io.containerd.runc.v2 $native_image"
# Both print the greeting; the first berth run also fills the compile cache.
$berth_run check-berth | head -1
$runc_run check-runc | head -1

if want run; then
  echo "== ctr run --rm: berth C hello vs runc static native hello =="
  # $$ is the shell's pid: a fresh container id per run.
  hyperfine --warmup 5 --runs "${RUNS:-50}" --export-markdown "$work/run.md" \
    -n "ctr run --rm (berth, hello.wasm)" "$berth_run b\$\$ > /dev/null" \
    -n "ctr run --rm (runc, static hello)" "$runc_run r\$\$ > /dev/null"
  cat "$work/run.md"
fi

if want tasks; then
  echo "== tasks per second: $tasks sequential ctr run --rm (create, start, wait, delete) =="
  for runtime in berth runc; do
    run=$berth_run; [[ $runtime == runc ]] && run=$runc_run
    start=$(date +%s.%N)
    for i in $(seq "$tasks"); do $run "$runtime-seq-$i" > /dev/null; done
    end=$(date +%s.%N)
    echo "$runtime: $tasks tasks in $(echo "$end - $start" | bc) s: $(echo "scale=1; $tasks / ($end - $start)" | bc) tasks/s"
  done
  echo "== the same in one pod (io.kubernetes.cri.sandbox-id): one shim serves every task =="
  for runtime in berth runc; do
    run=$berth_run; [[ $runtime == runc ]] && run=$runc_run
    pod="--annotation io.kubernetes.cri.sandbox-id=$runtime-pod"
    # The pod's first container keeps its shim alive between the tasks.
    if [[ $runtime == berth ]]; then
      $ctr run -d --snapshotter native --fifo-dir "$fifos" --platform wasip1/wasm --runtime io.containerd.berth.v1 \
        $pod --annotation io.kubernetes.cri.container-type=sandbox "$berth_image" "$runtime-pod" /app/sleep.wasm
    else
      $ctr run -d --null-io --snapshotter native --runtime io.containerd.runc.v2 \
        $pod --annotation io.kubernetes.cri.container-type=sandbox "$native_image" "$runtime-pod"
    fi
    start=$(date +%s.%N)
    for i in $(seq "$tasks"); do ${run/ run / run $pod } "$runtime-pod-$i" > /dev/null; done
    end=$(date +%s.%N)
    echo "$runtime (pod): $tasks tasks in $(echo "$end - $start" | bc) s: $(echo "scale=1; $tasks / ($end - $start)" | bc) tasks/s"
    $ctr tasks kill -s KILL "$runtime-pod" 2>/dev/null || true
    for _ in $(seq 100); do $ctr tasks delete "$runtime-pod" >/dev/null 2>&1 && break; sleep 0.1; done
    $ctr containers delete "$runtime-pod" >/dev/null 2>&1 || true
  done
fi

if want rss; then
  echo "== shim RSS: one pod with 1 and with $pods idle containers (sleeping guests) =="
  pod="--annotation io.kubernetes.cri.sandbox-id=rss-pod"
  detach="$ctr run -d --snapshotter native --fifo-dir $fifos --platform wasip1/wasm --runtime io.containerd.berth.v1 $pod"
  $detach --annotation io.kubernetes.cri.container-type=sandbox "$berth_image" rss-pod /app/sleep.wasm
  shim=$($ctr tasks ls | awk '$1=="rss-pod"{print $2}')
  rss() { awk '/VmRSS/{print $2}' "/proc/$shim/status"; }
  echo "shim pid $shim, pod placeholder only: $(rss) KiB"
  for i in $(seq "$pods"); do
    $detach --annotation io.kubernetes.cri.container-type=container "$berth_image" "rss-$i" /app/sleep.wasm
    if [[ $i == 1 ]]; then sleep 1; one=$(rss); echo "1 container: $one KiB"; fi
  done
  sleep 2
  running=$($ctr tasks ls | awk '$1 ~ /^rss-[0-9]/ && $3=="RUNNING"' | wc -l)
  many=$(rss)
  echo "$pods containers ($running running): $many KiB; per extra container: $(( (many - one) / (pods - 1) )) KiB"
  $ctr tasks ls | awk 'NR>1{print $2}' | sort -u | sed 's/^/pids of tasks: /'
  for id in $($ctr tasks ls -q); do $ctr tasks kill -s KILL "$id" >/dev/null 2>&1 || true; done
fi

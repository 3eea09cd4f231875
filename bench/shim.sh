#!/usr/bin/env bash
# containerd shim benchmarks (docs/benchmarks.md, "containerd shim"): berth's
# shim against runc under one private containerd, in one run.
#   bench/shim.sh            # all: run | tasks | ctr-tasks | rss | cri
#   bench/shim.sh tasks      # one section
# Needs root, Debian's containerd (1.6) and runc, hyperfine, gcc with a static
# libc, clang-14 with wasi-libc, python3. Builds the shim and berth (release).
source "$(dirname "$0")/common.sh"
sections=("${@:-run tasks ctr-tasks rss cri}")
want() { [[ " ${sections[*]} " == *" $1 "* ]]; }
[[ $(id -u) == 0 ]] || { echo "bench/shim.sh starts containerd: run it as root" >&2; exit 1; }

# The shim and the benchmark clients in one build (one feature set).
cargo build --release --locked -p berth-shim -q --bin containerd-shim-berth-v1 \
  --example containerd_tasks --example cri_latency
shim_dir="$CARGO_TARGET_DIR/release"
tasks_client="$CARGO_TARGET_DIR/release/examples/containerd_tasks"
cri_client="$CARGO_TARGET_DIR/release/examples/cri_latency"
tasks=${TASKS:-500}
in_flight=${IN_FLIGHT:-8}
pods=${PODS:-100}

# A private containerd, as the shim's tests start one: everything under
# DIR, the native snapshotter, the release shim first on its PATH; with the
# CRI plugin when its sections are given.
ctrd_pids=()
start_containerd() { # DIR [CRI-SECTIONS]
  local dir=$1 cri=${2:-} disabled='"io.containerd.grpc.v1.cri"'
  [[ -n $cri ]] && disabled=""
  mkdir -p "$dir"
  cat > "$dir/config.toml" <<EOF
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$disabled]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[debug]
  address = "$dir/debug.sock"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
$cri
EOF
  PATH="$shim_dir:$PATH" BERTH_SHIM_DATA_DIR="$dir/berth" \
    containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 & ctrd_pids+=($!)
  for _ in $(seq 100); do ctr --address "$dir/containerd.sock" version >/dev/null 2>&1 && return; sleep 0.1; done
  echo "containerd in $dir did not start: $(tail -5 "$dir/containerd.log")" >&2; exit 1
}
stop() {
  # Shims of these daemons that outlived them, found by their sockets
  # under this run's own directory.
  for pid in $(pgrep -f "containerd-shim.*$work/" || true); do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${ctrd_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap stop EXIT
ctrd="$work/containerd"
sock="$ctrd/containerd.sock"
start_containerd "$ctrd"
ctr="ctr --address $sock --namespace bench"
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

# A one-layer OCI image for linux/amd64 of the files in DIR/rootfs, named
# NAME, with ENTRY as its entrypoint, written to DIR/image.tar.
oci_image() { # DIR NAME ENTRY
  python3 - "$@" <<'EOF'
import hashlib, io, json, os, sys, tarfile
out, name, entry = sys.argv[1:4]
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    os.makedirs(f"{out}/layout/blobs/sha256", exist_ok=True)
    open(f"{out}/layout/blobs/sha256/{digest}", "wb").write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}
layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w") as tar:
    for file in sorted(os.listdir(f"{out}/rootfs")):
        tar.add(f"{out}/rootfs/{file}", arcname=file)
layer = layer.getvalue()
config = {"architecture": "amd64", "os": "linux", "config": {"Entrypoint": [entry]},
          "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]}}
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(json.dumps(config).encode())},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(layer)}]}
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(json.dumps(manifest).encode()),
    "platform": {"architecture": "amd64", "os": "linux"},
    "annotations": {"io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]}}]}
open(f"{out}/layout/index.json", "w").write(json.dumps(index))
open(f"{out}/layout/oci-layout", "w").write(json.dumps({"imageLayoutVersion": "1.0.0"}))
EOF
  tar -C "$1/layout" -cf "$1/image.tar" .
}

# The native image: the same hello.c, gcc -O2 -static.
native="$work/native"; mkdir -p "$native/rootfs"
gcc -O2 -static "$root/examples/c/hello.c" -o "$native/rootfs/hello"; strip "$native/rootfs/hello"
oci_image "$native" docker.io/bench/native-hello:v1 /hello
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
  # containerd's API without ctr: container + task create, start, wait,
  # task + container delete, for each task. Both runtimes get `ctr oci
  # spec`'s default spec with their hello as process.args, and a
  # prepared root filesystem bind-mounted (as the native snapshotter hands
  # it), no stdio; runc's needs the mount points of the default spec.
  $ctr oci spec > "$work/spec.json"
  api_root="$work/api"; mkdir -p "$api_root/berth/app" "$api_root/runc"/{proc,dev,sys,run,tmp}
  cp "$ctx/hello.wasm" "$ctx/sleep.wasm" "$api_root/berth/app/"
  cp "$native/rootfs/hello" "$api_root/runc/hello"
  printf '#include <unistd.h>\nint main(void) { pause(); return 0; }\n' > "$work/pause.c"
  gcc -O2 -static "$work/pause.c" -o "$api_root/runc/pause"
  jq '.process.args=["/app/hello.wasm"] | .root.path="rootfs"' "$work/spec.json" > "$api_root/berth.json"
  jq '.process.args=["/app/sleep.wasm"] | .root.path="rootfs"' "$work/spec.json" > "$api_root/berth-pod.json"
  jq '.process.args=["/hello"] | .root.path="rootfs"' "$work/spec.json" > "$api_root/runc.json"
  jq '.process.args=["/pause"] | .root.path="rootfs"' "$work/spec.json" > "$api_root/runc-pod.json"
  client() { # runtime-name runtime-type args...
    local name=$1 type=$2; shift 2
    "$tasks_client" --address "$sock" --namespace bench --runtime "$type" \
      --spec "$api_root/$name.json" --rootfs "$api_root/$name" --prefix "api-$name" "$@"
  }
  # Fills berth's compile cache before anything is timed.
  client berth io.containerd.berth.v1 --tasks 3 > /dev/null
  client runc io.containerd.runc.v2 --tasks 3 > /dev/null
  echo "== tasks per second over containerd's API (no ctr): $tasks tasks, 1 and $in_flight in flight; load: $(cut -d' ' -f1-3 /proc/loadavg) =="
  for flight in 1 "$in_flight"; do
    client berth io.containerd.berth.v1 --tasks "$tasks" --in-flight "$flight"
    client runc io.containerd.runc.v2 --tasks "$tasks" --in-flight "$flight"
  done
  echo "== the same, as containers of one pod (one shim; the pod's sandbox container started first) =="
  for flight in 1 "$in_flight"; do
    client berth io.containerd.berth.v1 --tasks "$tasks" --in-flight "$flight" \
      --pod "berth-api-pod-$flight" --anchor-spec "$api_root/berth-pod.json"
    client runc io.containerd.runc.v2 --tasks "$tasks" --in-flight "$flight" \
      --pod "runc-api-pod-$flight" --anchor-spec "$api_root/runc-pod.json"
  done
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

if want ctr-tasks; then
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

if want cri; then
  # A second containerd, with CRI: handlers berth and runc, a native pause
  # image (a static binary that waits for a signal) as the sandbox image and
  # as runc's workload; berth's workload is the sleeping guest.
  cri_dir="$work/cri"
  pause="$work/pause-image"; mkdir -p "$pause/rootfs"
  printf '#include <unistd.h>\nint main(void) { pause(); return 0; }\n' > "$work/pause.c"
  gcc -O2 -static "$work/pause.c" -o "$pause/rootfs/pause"; strip "$pause/rootfs/pause"
  oci_image "$pause" docker.io/bench/pause:v1 /pause
  start_containerd "$cri_dir" "$(cat <<EOF
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/bench/pause:v1"
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "$cri_dir/cni/bin"
  conf_dir = "$cri_dir/cni/net.d"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "native"
  default_runtime_name = "runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "$cri_dir/runc"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.berth]
  runtime_type = "io.containerd.berth.v1"
EOF
)"
  kctr="ctr --address $cri_dir/containerd.sock --namespace k8s.io"
  $kctr images import --snapshotter native "$pause/image.tar" > /dev/null
  $kctr images import --snapshotter native --all-platforms "$work/berth-hello.tar" > /dev/null
  sleep 1 # CRI learns of imports from containerd's events
  runs=${CRI_RUNS:-100}
  latency() { # handler image program
    "$cri_client" --address "$cri_dir/containerd.sock" --handler "$1" --image "$2" \
      --runs "$3" --logs "$work/cri-logs" -- "$4"
  }
  # Warm-up (berth's compile cache, the images' snapshots).
  latency berth "$berth_image" 3 /app/sleep.wasm > /dev/null
  latency runc docker.io/bench/pause:v1 3 /pause > /dev/null
  echo "== CRI RunPodSandbox -> container Running, $runs pods one after another (host network); load: $(cut -d' ' -f1-3 /proc/loadavg) =="
  latency berth "$berth_image" "$runs" /app/sleep.wasm
  latency runc docker.io/bench/pause:v1 "$runs" /pause
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
fi

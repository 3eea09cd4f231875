#!/usr/bin/env bash
# berth daemon benchmarks (docs/benchmarks.md, "berth daemon"): pod start
# latency (apply -> Running), a Deployment going 0 -> 1,000 replicas, the
# daemon's RSS per idle replica at 1k/5k/10k, and a daemon restart with
# 1,000 replicas; against `berth run -d` (one supervisor process per
# container) for start latency and memory, in the same run.
#   bench/daemon.sh [MAX_REPLICAS]      # default 10000
# Needs: wat2wasm (wabt), python3.
source "$(dirname "$0")/common.sh"
max=${1:-10000}
# An idle pod holds three files open (its image's root and its /tmp as
# preopened directories, its log): 10,000 pods need more than the usual
# 20,000. Root may raise the hard limit; others get what they have.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"

mkdir -p "$work/idle" "$BERTH_HOME"
chmod 700 "$BERTH_HOME"
wat2wasm "$root/scheduler/tests/guests/sleep.wat" -o "$work/idle/idle.wasm"
printf 'FROM scratch\nCOPY idle.wasm /app/idle.wasm\nENTRYPOINT ["/app/idle.wasm"]\n' > "$work/idle/Dockerfile"
"$berth" build -q -t idle:1 "$work/idle" > /dev/null
socket="$BERTH_HOME/berth.sock"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_daemon() {
  RUST_LOG=warn "$berth" daemon 2>> "$work/daemon.log" &
  daemon=$!
  for _ in $(seq 200); do [ -S "$socket" ] && break; sleep 0.05; done
  [ -S "$socket" ] || { cat "$work/daemon.log"; exit 1; }
}
start_daemon
trap 'kill $daemon 2>/dev/null; wait $daemon 2>/dev/null; rm -rf "$work"' EXIT
echo "machine: $(nproc) cores, $(free -g | awk '/^Mem/ {print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg)"

echo "== pod start latency, image cached =="
python3 "$root/bench/daemon.py" "$socket" latency 200

echo "== baseline: berth run -d (a supervisor process per container), 100 containers =="
began=$(date +%s.%N)
for n in $(seq 100); do "$berth" run -d --name "base$n" idle:1 > /dev/null; done
ended=$(date +%s.%N)
sleep 1
base_rss=$(pgrep -f "berth __supervise" | while read -r pid; do rss_kib "$pid"; done | awk '{s+=$1} END {print s}')
echo "100 x berth run -d: $(echo "($ended - $began) * 10" | bc -l | xargs printf '%.2f') ms each; supervisors' RSS $(( base_rss / 100 )) KiB per container"
"$berth" rm -f $(seq -f 'base%g' 100) > /dev/null

echo "== replicas: 0 -> 1000, and the daemon's RSS per idle replica =="
cat > "$work/idle.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: idle
spec:
  replicas: 0
  selector:
    matchLabels:
      app: idle
  template:
    metadata:
      labels:
        app: idle
    spec:
      containers:
        - name: idle
          image: idle:1
          imagePullPolicy: Never
YAML
"$berth" apply -f "$work/idle.yaml" > /dev/null
sleep 2
rss0=$(rss_kib "$daemon")
echo "daemon RSS with no pods: $rss0 KiB"
python3 "$root/bench/daemon.py" "$socket" replicas 1000
for n in 1000 5000 10000; do
  [ "$n" -le "$max" ] || break
  "$berth" scale deployment/idle --replicas "$n" > /dev/null
  python3 "$root/bench/daemon.py" "$socket" wait "$n"
  sleep 2
  rss=$(rss_kib "$daemon")
  echo "$n idle replicas: daemon RSS $((rss / 1024)) MiB, $(( (rss - rss0) / n )) KiB per replica"
done

echo "== daemon restart with 1000 replicas =="
"$berth" scale deployment/idle --replicas 1000 > /dev/null
python3 "$root/bench/daemon.py" "$socket" wait 1000
sleep 3
kill "$daemon"; wait "$daemon" 2>/dev/null || true
sleep 1.1
since=$(date +%s)
start_daemon
python3 "$root/bench/daemon.py" "$socket" restarted 1000 "$since"

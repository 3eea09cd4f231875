"""berth daemon benchmarks (run by bench/daemon.sh, which starts the daemon).

Talks to the daemon's Kubernetes-shaped API over its unix socket, as any
client would:
  latency N      create N pods one after another; each from POST to the
                 watch event that shows it Running and Ready (p50/p99)
  replicas N     a Deployment scaled 0 -> N: time until N replicas are ready
  wait N         time until the Deployment `idle` has N ready replicas
  restarted N T  time until N pods report a container started at or after
                 the Unix time T (after a daemon restart, stored statuses
                 still say Running: only a new start counts)
Prints one line per measurement.
"""

import http.client
import json
import socket
import statistics
import sys
import time

SOCKET = sys.argv[1]
NAMESPACE = "default"


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=120):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


def call(method, path, body=None):
    conn = UnixConnection(SOCKET)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    if answer.status >= 300:
        raise SystemExit(f"{method} {path}: {answer.status} {data[:300]!r}")
    return json.loads(data) if data else None


def ready(pod):
    status = pod.get("status") or {}
    return status.get("phase") == "Running" and any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def pod(name):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "latency"}},
        "spec": {"containers": [{"name": "idle", "image": "idle:1", "imagePullPolicy": "Never"}]},
    }


def latency(count):
    pods = f"/api/v1/namespaces/{NAMESPACE}/pods"
    version = call("GET", pods)["metadata"]["resourceVersion"]
    watch = UnixConnection(SOCKET, timeout=60)
    watch.request("GET", f"{pods}?watch=true&resourceVersion={version}")
    stream = watch.getresponse()
    took = []
    for n in range(count):
        name = f"lat-{n}"
        started = time.perf_counter()
        call("POST", pods, pod(name))
        while True:
            line = stream.readline()
            if not line:
                raise SystemExit("the watch ended")
            event = json.loads(line)
            obj = event.get("object") or {}
            if obj.get("metadata", {}).get("name") == name and ready(obj):
                took.append((time.perf_counter() - started) * 1000)
                break
    watch.close()
    for n in range(count):
        call("DELETE", f"{pods}/lat-{n}")
    took.sort()
    p99 = took[min(len(took) - 1, int(len(took) * 0.99))]
    print(f"apply -> Running, {count} pods one after another: p50 {statistics.median(took):.2f} ms, "
          f"p99 {p99:.2f} ms, max {took[-1]:.2f} ms")


def ready_replicas():
    deployment = call("GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/idle")
    return (deployment.get("status") or {}).get("readyReplicas") or 0


def wait_ready(count, limit=900):
    started = time.perf_counter()
    while ready_replicas() < count:
        if time.perf_counter() - started > limit:
            raise SystemExit(f"fewer than {count} ready replicas after {limit} s")
        time.sleep(0.05)
    return time.perf_counter() - started


def replicas(count):
    path = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/idle/scale"
    scale = call("GET", path)
    scale["spec"]["replicas"] = count
    started = time.perf_counter()
    call("PUT", path, scale)
    waited = wait_ready(count)
    print(f"Deployment 0 -> {count} ready replicas: {time.perf_counter() - started:.2f} s "
          f"(waited {waited:.2f} s after the scale)")


if __name__ == "__main__":
    what, count = sys.argv[2], int(sys.argv[3])
    if what == "latency":
        latency(count)
    elif what == "replicas":
        replicas(count)
    elif what == "restarted":
        since = float(sys.argv[4])
        started = time.perf_counter()
        while True:
            pods = call("GET", f"/api/v1/namespaces/{NAMESPACE}/pods?labelSelector=app%3Didle")["items"]
            fresh = 0
            for item in pods:
                for status in (item.get("status") or {}).get("containerStatuses") or []:
                    at = ((status.get("state") or {}).get("running") or {}).get("startedAt")
                    if at and time.mktime(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone >= since:
                        fresh += 1
            if fresh >= count:
                break
            if time.perf_counter() - started > 900:
                raise SystemExit(f"only {fresh} of {count} pods restarted after 900 s")
            time.sleep(0.1)
        print(f"{count} pods running again {time.time() - since:.2f} s after the daemon was started again")
    elif what == "wait":
        print(f"{count} ready replicas after {wait_ready(count):.2f} s")
    else:
        raise SystemExit(f"unknown benchmark {what!r}")

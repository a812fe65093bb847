"""The extender's benchmarks, end to end over loopback HTTP (uvicorn, as deployed).

- ``extender_filter_p99_5000n`` / ``extender_prioritize_p99_5000n``: 5,000 candidate nodes of 8 H100s, about
  a third of them partly used by bound pods; ``nodeCacheCapable`` requests for one-container fractional pods
  whose memory changes every round (no answer can be reused across pods); prioritize follows each filter for
  the same pod. Latency is the client's round trip, request encoding excluded.
- ``extender_pods_per_s_1000n``: the whole filter + prioritize + bind cycle, one pod after another, with 1,000
  GPU nodes in kmock (``tests/fakes/kmock.py``), run in its own process so its work is not the extender's;
  bind creates the Binding (carrying the signed assignment) through the official client, and the extender's
  watches see the results. The figure is pods per second of the extender's CPU time (this process's CPU minus
  the driver thread's): the rate one core spent on the extender sustains.
- ``extender_pods_per_s_wall_1000n``: the same cycle per wall-clock second, which also waits on kmock (a
  simulated API server in Python, far slower than a real one) and on the driver.
- ``extender_bind_p99_1000n``: the bind verb's round trip in that cycle (ms, p99): it reads the pod from the
  API server (kmock, in its own process), places and reserves, and creates the Binding; mostly kmock's time.
- ``extender_rss_5000n``: peak RSS of a fresh process holding 5,000 nodes (and their pods) after serving
  filters, i.e. the extender's working set at that size.
- ``extender_*_cpu_*``: the same filter and prioritize measured in thread CPU time inside the process, which
  stays meaningful on a busy shared machine where wall-clock percentiles measure the neighbours.
"""

import contextlib
import http.client
import itertools
import json
import random
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from extender.__main__ import settle_memory
from extender.app import Deps, create_app
from tests.builders.vcuda import uuid
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.signing_keys import KEYRING, SIGNER, sign_for
from vcuda.model import ContainerAssignment, GpuShare, NodeName, PodAssignment

ROUNDS = 200
_uids = itertools.count()


def _p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


@contextlib.contextmanager
def _serve(deps: Deps) -> Iterator[int]:
    """The app on a uvicorn server in a background thread (its own event loop); yields the port."""
    server = uvicorn.Server(uvicorn.Config(create_app(deps), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="extender", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start")
        threading.Event().wait(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(30)


def _post(conn: http.client.HTTPConnection, path: str, body: bytes) -> tuple[Any, float]:
    start = time.perf_counter()
    conn.request("POST", path, body, {"Content-Type": "application/json"})
    data = conn.getresponse().read()
    elapsed = time.perf_counter() - start
    return json.loads(data), elapsed


def _bound_pod(node: str, gpu: int, cores: int, mib: int) -> dict[str, Any]:
    share = GpuShare(uuid(node, gpu), cores, mib)
    pod = pod_obj(f"busy-{next(_uids)}", (cores, mib), node=node, phase="Running")
    assignment = PodAssignment(NodeName(node), (ContainerAssignment("c0", (share,), cores),))
    pod["metadata"]["annotations"][NAMES.assignment] = sign_for(pod, assignment, NAMES)
    return pod


def cluster_5000() -> tuple[Deps, list[str]]:
    names = [f"gpu-node-{i:05d}" for i in range(5000)]
    deps, _ = make_deps([gpu_node(n) for n in names])
    rng = random.Random(5)
    for name in rng.sample(names, len(names) // 3):
        for gpu in range(rng.randint(1, 4)):
            deps.state.apply_pod(_bound_pod(name, gpu, rng.randint(10, 60), rng.randint(1024, 40000)))
    settle_memory()
    return deps, names


def _filter_and_prioritize(port: int, names: list[str]) -> tuple[list[float], list[float]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    filters, priorities = [], []
    for i in range(ROUNDS + 10):
        pod = pod_obj(f"bench-{i}", (20 + i % 50, 2048 + 37 * i))
        answer, took = _post(conn, "/scheduler/filter", json.dumps({"Pod": pod, "Nodes": None,
                                                                     "NodeNames": names}).encode())  # fmt: skip
        passing = answer["NodeNames"]
        _, took_p = _post(conn, "/scheduler/prioritize", json.dumps({"Pod": pod, "Nodes": None,
                                                                      "NodeNames": passing}).encode())  # fmt: skip
        if i >= 10:  # warm-up
            filters.append(took)
            priorities.append(took_p)
    conn.close()
    return filters, priorities


def _cpu_times(deps: Deps, names: list[str]) -> tuple[list[float], list[float]]:
    filters, priorities = [], []
    for i in range(ROUNDS // 2):
        pod = pod_obj(f"cpu-{i}", (20 + i % 50, 3000 + 41 * i))
        start = time.thread_time()
        outcome = deps.scheduler.filter(pod, names)
        middle = time.thread_time()
        deps.scheduler.prioritize(pod, outcome.passing)
        filters.append(middle - start)
        priorities.append(time.thread_time() - middle)
    return filters, priorities


def latency_5000() -> list[tuple[str, float, str]]:
    deps, names = cluster_5000()
    cpu_f, cpu_p = _cpu_times(deps, names)
    with _serve(deps) as port:
        filters, priorities = _filter_and_prioritize(port, names)
    ms = 1000
    return [
        ("extender_filter_p99_5000n", round(_p(filters, 0.99) * ms, 2), "ms"),
        ("extender_filter_p50_5000n", round(_p(filters, 0.50) * ms, 2), "ms"),
        ("extender_prioritize_p99_5000n", round(_p(priorities, 0.99) * ms, 2), "ms"),
        ("extender_prioritize_p50_5000n", round(_p(priorities, 0.50) * ms, 2), "ms"),
        ("extender_filter_cpu_p99_5000n", round(_p(cpu_f, 0.99) * ms, 2), "ms"),
        ("extender_prioritize_cpu_p99_5000n", round(_p(cpu_p, 0.99) * ms, 2), "ms"),
    ]


# --- whole cycle against kmock -------------------------------------------------------------------


_KMOCK_CHILD = """
import sys
from tests.fakes.kmock import KmockCluster
with KmockCluster() as api:
    print(api.url, flush=True)
    sys.stdin.read()
"""


@contextlib.contextmanager
def _kmock_process() -> Iterator[str]:
    """kmock in a process of its own (its own GIL): the simulated API server's work is not the extender's."""
    child = subprocess.Popen(
        [sys.executable, "-c", _KMOCK_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        url = child.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"kmock did not start: {url!r}")
        yield url
    finally:
        child.kill()
        child.wait(30)


def _api_client(url: str) -> Any:
    from kubernetes import client

    configuration = client.Configuration()
    configuration.host = url
    return client.ApiClient(configuration)


def pods_per_second(nodes: int = 1000, pods: int = 200) -> tuple[float, float, float]:
    """The whole cycle for ``pods`` pods, one after another, over ``nodes`` GPU nodes; kmock in its own
    process. Returns (pods per second of the extender's CPU time, pods per second of wall-clock time, the
    bind verb's p99 round trip in ms: it reads the pod from the API server and creates the Binding).

    The extender (HTTP server thread, watch threads, the client's worker threads) runs in this process beside
    the driver (the main thread, playing kube-scheduler), so the extender's CPU time is this process's minus
    the main thread's. The wall-clock rate also waits on kmock's answers (a simulated API server, much slower
    than a real one) and on the driver."""
    from extender.clusterstate import ClusterState
    from extender.kube import KubeCluster, Watcher
    from extender.metrics import ExtenderMetrics
    from extender.scheduling import Scheduler
    from vcuda.model import Policy

    names = [f"kn-{i:04d}" for i in range(nodes)]
    with _kmock_process() as url:
        core = _core(url)
        for name in names:
            core.create_node(gpu_node(name), _preload_content=False).release_conn()
        created = []
        for i in range(pods):
            pod = pod_obj(f"cycle-{i}", (10 + i % 40, 1024 + 64 * (i % 50)))
            pod["metadata"].pop("uid")
            created.append(
                json.loads(core.create_namespaced_pod("default", pod, _preload_content=False).data)
            )
        metrics = ExtenderMetrics()
        state = ClusterState(NAMES, KEYRING, grace_s=120, clock=time.monotonic, events=metrics)
        client = _api_client(url)
        scheduler = Scheduler(state, KubeCluster(client), signer=SIGNER, gpu_policy=Policy.SPREAD,
                              node_policy=Policy.BINPACK, scheduler_names=("default-scheduler",),
                              recorder=metrics)  # fmt: skip
        watcher = Watcher(client, state)
        watcher.start()
        assert state.synced.wait(60), "the extender never listed the cluster"
        settle_memory()
        with _serve(Deps(scheduler, state, metrics)) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            binds: list[float] = []
            bound = sum(_cycle(conn, pod, names, []) for pod in created[:5])  # warm-up: connections, caches
            start, cpu, driver = time.perf_counter(), time.process_time(), time.thread_time()
            bound += sum(_cycle(conn, pod, names, binds) for pod in created[5:])
            elapsed = time.perf_counter() - start
            extender_cpu = (time.process_time() - cpu) - (time.thread_time() - driver)
            conn.close()
        watcher.stop()
    assert bound == pods, f"only {bound} of {pods} pods bound"
    return (pods - 5) / extender_cpu, (pods - 5) / elapsed, _p(binds, 0.99) * 1000


def _core(url: str) -> Any:
    from kubernetes import client

    return client.CoreV1Api(_api_client(url))


def _cycle(
    conn: http.client.HTTPConnection, pod: dict[str, Any], names: list[str], binds: list[float]
) -> int:
    args = {"Pod": pod, "Nodes": None, "NodeNames": names}
    passing = _post(conn, "/scheduler/filter", json.dumps(args).encode())[0]["NodeNames"]
    scores = _post(conn, "/scheduler/prioritize", json.dumps({**args, "NodeNames": passing}).encode())[0]
    node = max(scores, key=lambda s: (s["Score"], s["Host"]))["Host"]
    meta = pod["metadata"]
    body = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
    answer, elapsed = _post(conn, "/scheduler/bind", json.dumps(body).encode())
    binds.append(elapsed)
    return 1 if answer["Error"] == "" else 0


# --- memory --------------------------------------------------------------------------------------


def rss_child() -> None:
    """Run in a fresh process: hold 5,000 nodes, serve filters, print the peak RSS in MiB."""
    deps, names = cluster_5000()
    for i in range(20):
        pod = pod_obj(f"rss-{i}", (30, 4096 + i))
        deps.scheduler.prioritize(pod, deps.scheduler.filter(pod, names).passing)
    deps.metrics.render()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def rss_5000() -> float:
    code = "from tests.bench.bench_extender import rss_child; rss_child()"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    return float(out.stdout.strip().splitlines()[-1])


def run() -> list[tuple[str, float, str]]:
    results = latency_5000()
    per_cpu_s, per_wall_s, bind_p99_ms = pods_per_second()
    results.append(("extender_pods_per_s_1000n", round(per_cpu_s, 1), ""))
    results.append(("extender_pods_per_s_wall_1000n", round(per_wall_s, 1), ""))
    results.append(("extender_bind_p99_1000n", round(bind_p99_ms, 2), "ms"))
    results.append(("extender_rss_5000n", round(rss_5000(), 1), "MiB"))
    return results


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:g} {unit}".rstrip())

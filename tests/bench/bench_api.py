"""API-server load of idle clusters: requests per minute that kube-vgpu itself sends when nothing changes.

- ``extender_api_requests_per_min_idle_1000n``: the extender's list-and-watch (:class:`extender.kube.Watcher`,
  its default timings) against the simulated API server (``tests/fakes/kmock.py``) holding 1,000 GPU nodes
  and 4,000 pods, after the first lists: an hour of server time, lived ``TIME_SCALE`` times faster (the
  server ends watches after the ``timeoutSeconds`` asked, sends a bookmark a minute, compacts its history
  every 5 minutes (up to the version of the compaction before, as etcd's API server does), and another kind (a stand-in for the kubelets' Leases) is written all along, so that only
  bookmarks keep the watches' versions fresh). Requests on nodes and pods per simulated minute. Nothing else
  in the extender calls the API server while idle (binds do, one per pod). Goal: under 10.
- ``plugin_api_requests_per_min_idle``: the REAL ``kube-vgpu-plugin`` process (default settings) over the
  fake NVML ``h200x8`` node, registered with the fake kubelet, kmock as the API server; every request it
  sends in ``PLUGIN_IDLE_S`` seconds of real time after start-up settled, per minute (its pods' list for
  reclaim every 60 s; its Node's watch is renewed every 5-10 min, so a 2-minute window may miss one).
  Goal: under 4.
"""

import asyncio
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from extender.clusterstate import ClusterState
from extender.kube import Watcher, WatchTimings
from tests.fakes.extender import KEY, NAMES, gpu_node, pod_obj
from tests.fakes.kmock import KmockCluster

NODES = 1000
PODS_PER_NODE = 4
SIM_MINUTES = 60
TIME_SCALE = 600.0
"""One simulated minute lasts 0.1 s: the hour takes six seconds."""
COMPACT_EVERY_MIN = 5
PLUGIN_IDLE_S = 120.0


def _populate(api: KmockCluster) -> None:
    core = api.core()
    for n in range(NODES):
        core.create_node(gpu_node(f"n{n:04d}"), _preload_content=False).release_conn()
        for p in range(PODS_PER_NODE):
            pod = pod_obj(f"p{n:04d}-{p}", node=f"n{n:04d}", phase="Running")
            pod["metadata"].pop("uid", None)
            core.create_namespaced_pod("default", pod, _preload_content=False).release_conn()


def _churn(api: KmockCluster, stop: threading.Event) -> None:
    """Writes to another kind all along, as the kubelets' Lease renewals move the cluster's version."""
    core, n = api.core(), 0
    core.create_namespaced_config_map("default", {"metadata": {"name": "lease"}}, _preload_content=False)
    while not stop.wait(0.02):
        n += 1
        body = {"data": {"renew": str(n)}}
        core.patch_namespaced_config_map("lease", "default", body, _preload_content=False).release_conn()


def _node_and_pod_requests(server: Any) -> int:
    return sum(count for (_, kind), count in server.counts.items() if kind in ("nodes", "pods"))


def extender_idle_requests_per_min() -> float:
    with KmockCluster() as api:
        _populate(api)
        server = api.emulator
        assert server is not None
        server.time_scale = TIME_SCALE
        state = ClusterState(NAMES, KEY, grace_s=60, clock=time.monotonic)
        timings = WatchTimings(short_s=1.0 / TIME_SCALE)  # the default, on the scaled clock
        watcher = Watcher(api.api_client(), state, timings=timings)
        watcher.start()
        assert state.synced.wait(120), "the extender never listed the cluster"
        stop = threading.Event()
        churn = threading.Thread(target=_churn, args=(api, stop), daemon=True)
        churn.start()
        try:
            before = _node_and_pod_requests(server)
            minute, marks = 60.0 / TIME_SCALE, [server.version()]
            for m in range(1, SIM_MINUTES + 1):
                time.sleep(minute)
                if m % COMPACT_EVERY_MIN == 0:  # as etcd: forget what is older than the previous compaction
                    server.compact(marks[-1])
                    marks.append(server.version())
            requests = _node_and_pod_requests(server) - before
        finally:
            stop.set()
            churn.join(5)
            watcher.stop()
    return requests / SIM_MINUTES


async def _plugin_idle(root: Path) -> float:
    from tests.fixtures.plugin_process import real_plugin

    with KmockCluster() as api:
        server = api.emulator
        assert server is not None
        async with real_plugin(root, api, "h200x8"):
            await asyncio.sleep(5.0)  # start-up settled: registration, first node patch, first reclaim
            before = sum(server.counts.values())
            await asyncio.sleep(PLUGIN_IDLE_S)
            requests = sum(server.counts.values()) - before
    return requests * 60.0 / PLUGIN_IDLE_S


def plugin_idle_requests_per_min() -> float:
    root = Path(tempfile.mkdtemp(prefix="kva-", dir="/tmp"))
    try:
        return asyncio.run(_plugin_idle(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run() -> list[tuple[str, float, str]]:
    return [
        ("extender_api_requests_per_min_idle_1000n", round(extender_idle_requests_per_min(), 2), ""),
        ("plugin_api_requests_per_min_idle", round(plugin_idle_requests_per_min(), 2), ""),
    ]


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:g} {unit}".rstrip())

"""Plugin benchmarks.

- ``plugin_allocate_p99``: the ``Allocate`` round trip as the (fake) kubelet sees it, over real gRPC on a Unix
  socket, with 50 pods bound to one 8 x H100 node and pending (kmock as the API server), admitted in reverse
  bind order. ``plugin_preferred_allocation_p99`` is the ``GetPreferredAllocation`` call before it (it lists
  the node's pods from the API server and, with several same-size candidates, asks PodResources).
- ``plugin_listandwatch_bytes_8xH200``: the serialized size of one ``ListAndWatch`` message for 8 x H200
  (800 slices with real-format UUIDs and NUMA topology); the kubelet's limit is 4 MiB.
- ``plugin_idle_cpu_percent_8gpu`` and ``plugin_rss_mib_8gpu``: the REAL plugin process (``kube-vgpu-plugin``
  with its default timings, metrics and probes on) over the FAKE NVML ``h200x8`` node, registered with the
  fake kubelet and kmock, left idle for ``IDLE_S`` seconds: CPU time from ``/proc/<pid>/stat`` (utime + stime,
  children excluded) over the idle window in percent of one core, and ``VmRSS`` from ``/proc/<pid>/status``
  at its end.
"""

import asyncio
import contextlib
import os
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from plugin.core.gpu import Gpu, NodeGpus
from plugin.core.slices import slices
from plugin.kube import ApiCluster
from plugin.podresources import PodResourcesClient
from plugin.server import device_list
from plugin.wiring import Timings, build_agent
from tests.builders.plugin import NAMES, VERIFIER, assignment, pod_body
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kmock import KmockCluster
from tests.fakes.kubelet import FakeKubelet
from tests.fixtures.plugin_env import NODE, _reset_cluster, make_settings
from tests.fixtures.plugin_process import real_plugin
from vcuda.model import GpuUuid

PODS = 50
IDLE_S = 30.0


def _node(count: int, model: str, memory_mib: int) -> NodeGpus:
    gpus = tuple(
        Gpu(
            GpuUuid(f"GPU-{uuid.UUID(int=0x5EED0000 + i)}"),
            i,
            i,
            model,
            memory_mib,
            f"0000:{i:02x}:00.0",
            i // 4,
            (9, 0),
        )
        for i in range(count)
    )
    return NodeGpus(gpus, (), "580.65.06", "13.0")


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98] if len(values) > 1 else values[0]


async def _allocate_latencies(cluster: KmockCluster, root: Path) -> tuple[list[float], list[float]]:
    node = _node(8, "NVIDIA H100 80GB HBM3", 81559)
    _reset_cluster(cluster)
    core = cluster.core()
    for i in range(PODS):
        gpu = node.gpus[i % 8].uuid
        body = pod_body(f"bench-{i:02d}", [("main", 10, 1024)])
        body["metadata"]["annotations"][NAMES.assignment] = assignment(
            NODE, {"main": [(gpu, 10, 1024)]}, pod=body
        )
        core.create_namespaced_pod("default", body, _preload_content=False)
        cluster.bind("default", f"bench-{i:02d}", NODE)
    settings = make_settings(root)
    kubelet = FakeKubelet(settings.device_plugin_dir, settings.pod_resources_socket)
    await kubelet.start()
    pod_resources = PodResourcesClient(settings.pod_resources_socket)
    agent = build_agent(
        settings,
        source=FakeGpuSource(node),
        cluster=ApiCluster(cluster.api_client()),
        pod_resources=pod_resources.list,
        verifier=VERIFIER,
        timings=Timings(kubelet_poll_s=0.05),
    )
    task = asyncio.get_running_loop().create_task(agent.run())
    try:
        await kubelet.wait_registered(NAMES.core, timeout=10)
        allocate, preferred = [], []
        for i in reversed(range(PODS)):
            [admitted] = await kubelet.admit("default", f"bench-{i:02d}", [("main", 10)], NAMES.core)
            allocate.append(admitted.allocate_s * 1000)
            preferred.append(admitted.preferred_s * 1000)
        return allocate, preferred
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        await kubelet.stop()
        await pod_resources.close()


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process (``/proc/<pid>/stat`` fields 14 and 15, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def _idle_cost(cluster: KmockCluster, root: Path, idle_s: float) -> tuple[float, float]:
    """(CPU % of one core, RSS MiB) of the real plugin over an 8-GPU fake node, idle for ``idle_s``."""
    async with real_plugin(root, cluster, "h200x8") as running:
        await asyncio.sleep(5.0)  # start-up settled: registration, first node patch, first reclaim
        pid = running.pid
        before, started = _cpu_seconds(pid), asyncio.get_running_loop().time()
        await asyncio.sleep(idle_s)
        used, elapsed = _cpu_seconds(pid) - before, asyncio.get_running_loop().time() - started
        return 100.0 * used / elapsed, _rss_mib(pid)


def run() -> list[tuple[str, float, str]]:
    root = Path(tempfile.mkdtemp(prefix="kvb-", dir="/tmp"))
    try:
        with KmockCluster() as cluster:
            allocate, preferred = asyncio.run(_allocate_latencies(cluster, root))
        with KmockCluster() as cluster:
            cpu_pct, rss_mib = asyncio.run(_idle_cost(cluster, root / "idle", IDLE_S))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    message = device_list(slices(_node(8, "NVIDIA H200", 143771).gpus, {}))
    return [
        ("plugin_allocate_p99", round(_p99(allocate), 2), "ms"),
        ("plugin_preferred_allocation_p99", round(_p99(preferred), 2), "ms"),
        ("plugin_listandwatch_bytes_8xH200", float(message.ByteSize()), ""),
        ("plugin_idle_cpu_percent_8gpu", round(cpu_pct, 2), "%"),
        ("plugin_rss_mib_8gpu", round(rss_mib, 1), "MiB"),
    ]

"""Plugin benchmarks.

- ``plugin_allocate_p99``: the ``Allocate`` round trip as the (fake) kubelet sees it, over real gRPC on a Unix
  socket, with 50 pods bound to one 8 x H100 node and pending (kmock as the API server), admitted in reverse
  bind order. ``plugin_preferred_allocation_p99`` is the ``GetPreferredAllocation`` call before it (it lists
  the node's pods from the API server and, with several same-size candidates, asks PodResources).
- ``plugin_listandwatch_bytes_8xH200``: the serialized size of one ``ListAndWatch`` message for 8 x H200
  (800 slices with real-format UUIDs and NUMA topology); the kubelet's limit is 4 MiB.
"""

import asyncio
import contextlib
import shutil
import statistics
import tempfile
import uuid
from pathlib import Path

from plugin.agent import Agent, Timings
from plugin.core.gpu import Gpu, NodeGpus
from plugin.core.slices import slices
from plugin.kube import ApiCluster
from plugin.kubelet import PodResourcesClient
from plugin.server import device_list
from tests.fakes.kubelet import FakeKubelet
from tests.integration.plugin.conftest import NODE, _reset_cluster, make_settings
from tests.kmock_cluster import KmockCluster
from tests.unit.plugin.builders import KEY, NAMES, FakeGpuSource, assignment, pod_body
from vcuda.model import GpuUuid

PODS = 50


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
        body["metadata"]["annotations"][NAMES.assignment] = assignment(NODE, {"main": [(gpu, 10, 1024)]})
        core.create_namespaced_pod("default", body, _preload_content=False)
        cluster.bind("default", f"bench-{i:02d}", NODE)
    settings = make_settings(root)
    kubelet = FakeKubelet(settings.device_plugin_dir, settings.pod_resources_socket)
    await kubelet.start()
    pod_resources = PodResourcesClient(settings.pod_resources_socket, NAMES.core)
    agent = Agent(
        settings,
        source=FakeGpuSource(node),
        cluster=ApiCluster(cluster.api_client()),
        pod_resources=pod_resources.held,
        key=KEY,
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


def run() -> list[tuple[str, float, str]]:
    root = Path(tempfile.mkdtemp(prefix="kvb-", dir="/tmp"))
    try:
        with KmockCluster() as cluster:
            allocate, preferred = asyncio.run(_allocate_latencies(cluster, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    message = device_list(slices(_node(8, "NVIDIA H200", 143771).gpus, {}))
    return [
        ("plugin_allocate_p99", round(_p99(allocate), 2), "ms"),
        ("plugin_preferred_allocation_p99", round(_p99(preferred), 2), "ms"),
        ("plugin_listandwatch_bytes_8xH200", float(message.ByteSize()), ""),
    ]

"""End-to-end figures on the SIMULATED cluster (real extender and plugins; simulated API server, scheduler,
kubelets and GPUs; see docs/simulation.md).

- ``e2e_pods_per_s``: 500 fractional pods submitted at once over 50 simulated 8 x H100 nodes; pods per second
  from the first create until every pod runs (the kubelet ran PreStartContainer for it). Cluster start-up is
  not counted.
- ``e2e_placement_efficiency``: under binpack (GPU and node policy), pods of random memory sizes (4..20 GiB,
  2..6 % compute) are submitted one at a time until the first is rejected for lack of room; the share of the
  cluster's schedulable GPU memory then allocated. Goal: 0.9 or more.
"""

import asyncio
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.sim.cluster import ClusterSpec, SimCluster
from tests.sim.node import NodeSpec
from vcuda.annotations import decode_inventory

PODS = 500
NODES = 50
EFFICIENCY_NODES = 2


def _pod(name: str, cores: int, mib: int) -> dict[str, Any]:
    limits = {"nvidia.com/vcuda-core": cores, "nvidia.com/vcuda-memory": mib}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"schedulerName": "kube-vgpu-scheduler",
                     "containers": [{"name": "c0", "image": "cuda", "resources": {"limits": limits}}]}}  # fmt: skip


async def _submit(cluster: SimCluster, pods: list[dict[str, Any]], in_flight: int = 16) -> None:
    """All pods "at once" as a client would send them: creates pipelined, at most ``in_flight`` open."""
    gate = asyncio.Semaphore(in_flight)

    async def one(pod: dict[str, Any]) -> None:
        async with gate:
            await cluster.submit(pod, webhook=False)

    await asyncio.gather(*(one(p) for p in pods))


async def _throughput(workdir: Path) -> float:
    nodes = tuple(NodeSpec(f"n{i:02d}", "h100x8", metrics=False) for i in range(NODES))
    rng = random.Random(5)
    pods = [
        _pod(f"p{i:03d}", rng.choice((10, 20, 25, 30)), rng.choice((2048, 4096, 8192))) for i in range(PODS)
    ]
    async with SimCluster(ClusterSpec(nodes=nodes, extender_log_level="warning"), workdir) as cluster:
        start = time.perf_counter()
        await _submit(cluster, pods)
        keys = [f"default/{p['metadata']['name']}" for p in pods]
        states = await cluster.wait_settled(keys, timeout_s=900, settled=("running", "failed", "blocked"))
        elapsed = time.perf_counter() - start
        running = sum(1 for k in keys if states[k].phase == "running")
    return running / elapsed


async def _efficiency(workdir: Path) -> float:
    nodes = tuple(NodeSpec(f"e{i}", "h100x8", metrics=False) for i in range(EFFICIENCY_NODES))
    spec = ClusterSpec(nodes=nodes, gpu_policy="binpack", node_policy="binpack", extender_log_level="warning")
    rng = random.Random(11)
    allocated = 0
    async with SimCluster(spec, workdir) as cluster:
        total = 0
        for node in await cluster.kube.list("nodes"):
            inventory = decode_inventory(node["metadata"]["annotations"][cluster.names.inventory])
            total += sum(g.memory_mib for g in inventory.gpus)
        for i in range(10_000):
            mib = rng.randint(4, 20) * 1024
            key = f"default/q{i:04d}"
            await cluster.submit(_pod(key.split("/")[1], rng.randint(2, 6), mib), webhook=False)
            states = await cluster.wait_settled([key], timeout_s=30)
            if states[key].phase != "running":
                break
            allocated += mib
    return allocated / total


def run() -> list[tuple[str, float, str]]:
    results = []
    for name, measure, unit in (
        ("e2e_pods_per_s", _throughput, "pods/s"),
        ("e2e_placement_efficiency", _efficiency, ""),
    ):
        workdir = Path(tempfile.mkdtemp(prefix="kvbench-"))
        try:
            results.append((name, round(asyncio.run(measure(workdir)), 3), unit))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    return results


if __name__ == "__main__":
    for name, value, unit in run():
        print(f"{name}: {value:g} {unit}".rstrip())

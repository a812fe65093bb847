"""Fixtures of the SIMULATED-cluster e2e tier: a fresh cluster per test (see ``tests/sim`` and
``docs/simulation.md`` for what is real and what is simulated), and pod builders."""

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakenvml.harness import LIBRARY
from tests.sim.cluster import ClusterSpec, SimCluster
from tests.sim.node import NodeSpec

SMALL_NODES = (NodeSpec("sim-h100", "h100x8"), NodeSpec("sim-a10", "a10x4"))


def gpu_pod(
    name: str, *containers: tuple[int, int], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    """A pod with one container per (vcuda-core, vcuda-memory MiB) pair, named c0, c1, ..."""
    specs = []
    for i, (cores, mib) in enumerate(containers):
        limits = {"nvidia.com/vcuda-core": cores, **({"nvidia.com/vcuda-memory": mib} if mib else {})}
        specs.append({"name": f"c{i}", "image": "cuda", "resources": {"limits": limits}})
    meta: dict[str, Any] = {"name": name, "namespace": "default", "annotations": annotations or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
            "spec": {"schedulerName": "kube-vgpu-scheduler", "containers": specs}}  # fmt: skip


@pytest.fixture
def sim_cluster() -> Iterator[Callable[..., SimCluster]]:
    """``async with sim_cluster(nodes=...) as cluster``: a started simulated cluster, stopped afterwards.

    Its work directory is a short path under the system temp dir: Unix socket paths stop at 107 bytes."""
    if not LIBRARY.exists():
        pytest.skip("the fake NVML is not built (run `make build`)")
    workdir = Path(tempfile.mkdtemp(prefix="kvsim-"))

    def make(nodes: tuple[NodeSpec, ...] = SMALL_NODES, **spec: Any) -> SimCluster:
        return SimCluster(ClusterSpec(nodes=nodes, **spec), workdir)

    yield make
    if os.environ.get("KVSIM_KEEP"):
        print(f"simulated cluster files kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)


async def settle_and_check(cluster: SimCluster, keys: list[str], *, timeout_s: float = 60.0,
                           settled: tuple[str, ...] = ("running", "failed", "unschedulable", "rejected", "blocked")) -> dict[str, Any]:  # fmt: skip
    """Wait for ``keys`` to reach ``settled`` states, then assert the invariants; the pods' states."""
    from tests.sim.invariants import check_invariants

    states = await cluster.wait_settled(keys, timeout_s=timeout_s, settled=settled)
    problems = await check_invariants(cluster)
    assert not problems, "\n".join(problems)
    return states


async def submit_all(cluster: SimCluster, pods: list[dict[str, Any]]) -> list[str]:
    """Submit every pod at once (concurrent creates); their keys."""
    import asyncio

    await asyncio.gather(*(cluster.submit(p) for p in pods))
    return [f"default/{p['metadata']['name']}" for p in pods]


async def wait_bound(cluster: SimCluster, keys: list[str], count: int, *, timeout_s: float = 30.0) -> None:
    """Wait until at least ``count`` of ``keys`` are bound to a node (to act in the middle of a stream)."""
    from tests.sim.waiting import wait_until

    async def enough() -> bool:
        pods = await cluster.pods()
        return sum(1 for k in keys if (pods.get(k, {}).get("spec") or {}).get("nodeName")) >= count

    await wait_until(enough, timeout_s=timeout_s, what=f"{count} pods bound")

"""200 filter + bind cycles at once over 20 nodes, through real loopback HTTP: no GPU is ever over-committed,
and identical pods bind in parallel (no node-wide lock).

Over-commit is checked independently of the extender's ledger: the signed assignments FakeCluster received
for bound pods are summed per GPU and compared with each GPU's capacity. The parallel case holds every bind
at a gate that opens only once all of them wait together, which serialised binds could never reach.
"""

import asyncio
import random
from collections import Counter
from typing import Any

import httpx

from extender.app import create_app
from tests.fakes.extender import assignment_of, gpu_node, ledger_of, make_deps, pod_obj
from tests.fixtures.extender_server import serving

NODES = [f"n{i:02d}" for i in range(20)]
GPU_MIB = 10000
KINDS = [(10, 1000), (20, 2000), (30, 3000), (40, 1500), (25, 2500)]  # distinct core counts: never confused
BOUND_S = 120.0  # generous: a shared 2-core CI machine under load


async def _cycle(http: httpx.AsyncClient, pod: dict[str, Any], rng: random.Random) -> str:
    request = {"Pod": pod, "Nodes": None, "NodeNames": NODES}
    passing = (await http.post("/scheduler/filter", json=request)).json()["NodeNames"]
    if not passing:
        return "unschedulable"
    node = rng.choice(passing)  # random among the fitting nodes: the most contention
    meta = pod["metadata"]
    body = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
    error = (await http.post("/scheduler/bind", json=body)).json()["Error"]
    return "bound" if not error else "refused"


async def test_200_concurrent_filter_and_bind_cycles_never_overcommit_a_gpu():
    deps, cluster = make_deps([gpu_node(n, gpus=2, memory_mib=GPU_MIB) for n in NODES])
    rng = random.Random(4)
    pods = [pod_obj(f"p{i}", KINDS[i % len(KINDS)], uid=f"u{i}") for i in range(200)]
    cluster.add(*pods)
    limits = httpx.Limits(max_connections=200)
    async with (
        serving(create_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=BOUND_S) as http,
    ):
        results = Counter(
            await asyncio.wait_for(asyncio.gather(*(_cycle(http, p, rng) for p in pods)), BOUND_S)
        )
    used: Counter[tuple[str, str]] = Counter()
    for _, name, _, node in cluster.bindings:
        pod = cluster.pods[("default", name)]
        assignment = assignment_of(pod)
        assert assignment.node == node
        for share in (s for c in assignment.containers for s in c.shares):
            used[(share.uuid, "cores")] += share.cores
            used[(share.uuid, "mib")] += share.memory_mib
    assert all(v <= 100 for (_, kind), v in used.items() if kind == "cores")
    assert all(v <= GPU_MIB for (_, kind), v in used.items() if kind == "mib")
    assert results["bound"] == len(cluster.bindings) > 100
    ledger_total = sum(load.memory_mib for n in NODES for load in ledger_of(deps.state, n).load.values())
    assert ledger_total == sum(v for (_, kind), v in used.items() if kind == "mib")


async def test_identical_pods_bind_to_one_node_in_parallel():
    deps, cluster = make_deps([gpu_node("n1")])
    pods = [pod_obj(f"twin{i}", (10, 1000), uid=f"t{i}") for i in range(10)]
    cluster.add(*pods)
    cluster.bind_gate, cluster.release_at = asyncio.Event(), len(pods)
    async with (
        serving(create_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=BOUND_S) as http,
    ):
        binds = [
            http.post(
                "/scheduler/bind",
                json={
                    "PodName": p["metadata"]["name"],
                    "PodNamespace": "default",
                    "PodUID": p["metadata"]["uid"],
                    "Node": "n1",
                },
            )
            for p in pods
        ]
        answers = await asyncio.wait_for(asyncio.gather(*binds), 10)
    assert [a.json()["Error"] for a in answers] == [""] * len(pods)
    assert cluster.binds_waiting == len(pods)

"""Attack: stall the extender's event loop with a pod whose placement is expensive on every node.

Threat: a tenant (docs/security.md). A pod may hold up to ``MAX_GPU_CONTAINERS`` (64) GPU containers; one app
container and 63 sidecars that each ask for ``vcuda-core: 1`` and ``vcuda-memory: 1`` fit any 8-GPU node, so
kube-scheduler passes every node to the extender. No summary answers for such a pod, so each candidate node
costs a full placement: ~30 ms per node, about 150 s of one event loop for 5,000 nodes, while every other
pod's filter and bind wait (before the container cap, 800 app containers cost ~10 ms per node). The filter, prioritize and preempt verbs now stop
judging when a per-request time budget runs out: the nodes left over fail with reason ``time-budget``
(resolvable: kube-scheduler retries), every answer stays a 200 well within a second or two, and a plain pod
sent meanwhile is answered at once after it.
"""

import time
from typing import Any

import httpx

from extender.app import create_app
from tests.fakes.extender import NAMES, gpu_node, make_deps, pod_obj
from tests.fixtures.extender_server import serving
from vcuda.request import MAX_GPU_CONTAINERS

NODES = 300
LIMIT_S = 2.5  # the budget (0.5 s) plus one node's placement plus HTTP on a loaded 2-core machine


def hostile_pod() -> dict[str, Any]:
    """One app container and 63 sidecars, 1 % of a GPU and 1 MiB each: the costliest shape under the cap."""
    pod = pod_obj("wide", (1, 1))
    limits = {NAMES.core: "1", NAMES.memory: "1"}
    pod["spec"]["initContainers"] = [
        {"name": f"s{i}", "restartPolicy": "Always", "resources": {"limits": limits}}
        for i in range(MAX_GPU_CONTAINERS - 1)
    ]
    return pod


async def test_a_pod_with_many_gpu_containers_cannot_stall_filter_or_prioritize():
    deps, _ = make_deps([gpu_node(f"n{i}") for i in range(NODES)])
    names = [f"n{i}" for i in range(NODES)]
    async with serving(create_app(deps)) as port, httpx.AsyncClient(timeout=120) as http:
        base = f"http://127.0.0.1:{port}/scheduler"
        start = time.perf_counter()
        filtered = await http.post(f"{base}/filter", json={"Pod": hostile_pod(), "NodeNames": names})
        filter_s = time.perf_counter() - start
        fresh = hostile_pod()  # another pod version: prioritize cannot answer from the filter's memory
        fresh["metadata"]["resourceVersion"] = "2"
        start = time.perf_counter()
        scored = await http.post(f"{base}/prioritize", json={"Pod": fresh, "NodeNames": names})
        prioritize_s = time.perf_counter() - start
    assert (filtered.status_code, scored.status_code) == (200, 200)
    assert filter_s < LIMIT_S, f"filter took {filter_s:.1f} s"
    assert prioritize_s < LIMIT_S, f"prioritize took {prioritize_s:.1f} s"
    answer = filtered.json()
    judged, failed = answer["NodeNames"] or [], answer["FailedNodes"] or {}
    assert judged, "the nodes judged within the budget still pass"
    assert sorted(judged + list(failed)) == sorted(names), "every node is answered for"
    assert all("time budget" in why for why in failed.values())
    assert len(scored.json()) == NODES


async def test_preempt_for_such_a_pod_is_bounded_too():
    deps, _ = make_deps([gpu_node(f"n{i}") for i in range(NODES)])
    victims = {f"n{i}": {"Pods": [{"UID": f"v{i}"}], "NumPDBViolations": 0} for i in range(NODES)}
    async with serving(create_app(deps)) as port, httpx.AsyncClient(timeout=120) as http:
        start = time.perf_counter()
        answer = await http.post(
            f"http://127.0.0.1:{port}/scheduler/preempt",
            json={"Pod": hostile_pod(), "NodeNameToMetaVictims": victims},
        )
        took = time.perf_counter() - start
    assert answer.status_code == 200
    assert took < LIMIT_S, f"preempt took {took:.1f} s"

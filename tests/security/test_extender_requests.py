"""Attacks through the extender's scheduling verbs over real loopback HTTP (the sidecar listener ``__main__``
builds), with FakeCluster as the API server (it refuses a Binding whose UID or resourceVersion is stale, as
the real one does).

Threat: a client that reaches the scheduling port, or a tenant who shapes its own pod. Cases:
- forged ``Nodes``: a filter carrying Node objects with a made-up GPU inventory changes nothing the extender
  knows; a node only the request claims to have GPUs is refused; later filters see the real inventory;
- bind of a pod that requests no kube-vgpu resource, or names another scheduler, or whose UID is not the one
  asked for (replaced pod), or to a node outside the inventory: refused with a reason, nothing written;
- a pod whose request grew after filter: bind signs what the API server holds (or refuses), never the
  filter-time copy; a pod changed between bind's read and its Binding is refused by the precondition and
  its reservation given back;
- hostile quantities and bodies (``1e5000``, ``1e500000``, a megabyte quantity, 100,000-deep nesting, wrong
  types, an oversized body): a 200 or a 400 with a reason, each within a bound, and the extender keeps
  answering.
"""

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from extender.listeners import listeners
from extender.settings import Settings
from tests.fakes.extender import (
    NAMES,
    FakeCluster,
    assignment_of,
    gpu_node,
    ledger_of,
    make_deps,
    pod_obj,
)
from tests.fixtures.extender_server import serving_listeners
from tests.ports import free_port

BOUND_S = 2.0
"""Every answer comes within this (generous for a loaded 2-core machine; a healthy one answers in ms)."""


@pytest.fixture
async def extender() -> AsyncIterator[tuple[httpx.AsyncClient, Any, FakeCluster]]:
    deps, cluster = make_deps([gpu_node("n1", gpus=1, memory_mib=16384), gpu_node("n2", gpus=1)])
    settings = Settings(port=free_port(), metrics_port=free_port())
    async with (
        serving_listeners(listeners(settings, deps)),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{settings.port}/scheduler", timeout=10) as http,
    ):
        yield http, deps, cluster


def args(pod: dict[str, Any], names: list[str] | None = None, nodes: Any = None) -> dict[str, Any]:
    return {"Pod": pod, "Nodes": nodes, "NodeNames": names}


def binding(pod: dict[str, Any], node: str, uid: str | None = None) -> dict[str, Any]:
    meta = pod["metadata"]
    return {"PodName": meta["name"], "PodNamespace": "default", "PodUID": uid or meta["uid"], "Node": node}


# --- forged node data -------------------------------------------------------------------------------


async def test_forged_nodes_never_overwrite_the_inventory(extender):
    http, deps, _ = extender
    huge = gpu_node("n1", gpus=8, memory_mib=1_000_000)  # n1 really has one 16 GiB GPU
    ghost = gpu_node("ghost", gpus=8)  # a node the watch never listed
    pod = pod_obj("p", (100, 500_000))
    answer = (await http.post("/filter", json=args(pod, nodes={"items": [huge, ghost]}))).json()
    assert answer["Nodes"]["items"] == []
    assert set(answer["FailedAndUnresolvableNodes"]) == {"n1", "ghost"}
    inventory = ledger_of(deps.state, "n1").inventory
    assert inventory is not None
    assert [g.memory_mib for g in inventory.gpus] == [16384]
    assert deps.state.ledger("ghost") is None
    later = (await http.post("/filter", json=args(pod_obj("q", (30, 20000)), ["n1", "n2"]))).json()
    assert later["NodeNames"] == ["n2"]


async def test_forged_nodes_next_to_node_names_are_ignored(extender):
    http, deps, _ = extender
    body = args(pod_obj("p", (30, 4096)), ["n1"], nodes={"items": [gpu_node("n1", memory_mib=10**6)]})
    answer = (await http.post("/filter", json=body)).json()
    assert answer["NodeNames"] == ["n1"]
    inventory = ledger_of(deps.state, "n1").inventory
    assert inventory is not None
    assert inventory.gpus[0].memory_mib == 16384


# --- bind ---------------------------------------------------------------------------------------------


BIND_REFUSALS = [
    pytest.param(
        pod_obj("cpu-only"), "n2", None, "requests no nvidia.com/vcuda-core", id="a pod that asks for no GPU"
    ),
    pytest.param(
        {
            **pod_obj("other", (30, 4096)),
            "spec": {**pod_obj("x", (30, 4096))["spec"], "schedulerName": "evil"},
        },
        "n2",
        None,
        "names scheduler 'evil'",
        id="a pod of another scheduler",
    ),
    pytest.param(
        pod_obj("replaced", (30, 4096)), "n2", "uid-of-the-old-pod", "it was replaced", id="stale UID"
    ),
    pytest.param(
        pod_obj("nowhere", (30, 4096)), "ghost", None, "no kube-vgpu GPU inventory", id="unknown node"
    ),
    pytest.param(
        pod_obj("toobig", (100, 40000)),
        "n1",
        None,
        "with 40000 MiB",
        id="a node the filter would reject",
    ),
]


@pytest.mark.parametrize(("pod", "node", "uid", "reason"), BIND_REFUSALS)
async def test_bind_refuses_pods_that_are_not_its_to_bind(extender, pod, node, uid, reason):
    http, deps, cluster = extender
    cluster.add(pod)
    answer = await http.post("/bind", json=binding(pod, node, uid))
    assert answer.status_code == 200
    assert reason in answer.json()["Error"]
    assert cluster.bindings == []
    assert NAMES.assignment not in pod["metadata"]["annotations"]
    assert all(not ledger.load for ledger in deps.state.ledgers())


async def test_bind_signs_the_request_the_api_server_holds_not_the_filtered_one(extender):
    http, _, cluster = extender
    stored = pod_obj("grower", (60, 12000), uid="g1")
    cluster.add(stored)
    claimed = pod_obj("grower", (10, 1000), uid="g1")  # what the filter was shown
    assert (await http.post("/filter", json=args(claimed, ["n1"]))).json()["NodeNames"] == ["n1"]
    assert (await http.post("/bind", json=binding(stored, "n1"))).json()["Error"] == ""
    share = assignment_of(stored).containers[0].shares[0]
    assert (share.cores, share.memory_mib) == (60, 12000)


async def test_a_request_that_grew_past_the_node_after_filter_is_refused(extender):
    http, deps, cluster = extender
    small = pod_obj("grower", (10, 1000), uid="g2")
    assert (await http.post("/filter", json=args(small, ["n1"]))).json()["NodeNames"] == ["n1"]
    cluster.add(pod_obj("grower", (100, 60000), uid="g2"))  # the API server's pod now asks for more
    error = (await http.post("/bind", json=binding(small, "n1"))).json()["Error"]
    assert "with 60000 MiB" in error
    assert cluster.bindings == []
    assert not ledger_of(deps.state, "n1").load


class ChangesAfterRead(FakeCluster):
    """The pod changes (a new resourceVersion) between the extender's read and its Binding."""

    async def read_pod(self, namespace: str, name: str) -> dict[str, Any]:
        pod: dict[str, Any] = json.loads(json.dumps(await super().read_pod(namespace, name)))
        self.pods[(namespace, name)]["metadata"]["resourceVersion"] = "changed"
        return pod


async def test_a_pod_changed_between_read_and_binding_is_refused_and_its_reservation_returned():
    deps, _ = make_deps([gpu_node("n1")])
    cluster = ChangesAfterRead(deps.state)
    deps.scheduler.cluster = cluster
    pod = pod_obj("p", (30, 4096), uid="c1")
    cluster.add(pod)
    bound = await deps.scheduler.bind("default", "p", "c1", "n1")
    assert "ResourceVersion" in bound.error
    assert cluster.bindings == []
    assert not ledger_of(deps.state, "n1").load


# --- hostile input -------------------------------------------------------------------------------------


def _pod_with(core: Any = "30", memory: Any = "4096") -> dict[str, Any]:
    pod = pod_obj("p", (30, 4096))
    pod["spec"]["containers"][0]["resources"]["limits"] = {NAMES.core: core, NAMES.memory: memory}
    return pod


HOSTILE = [
    pytest.param("/filter", json.dumps(args(_pod_with("1e5000"), ["n1"])), 200, "too large", id="1e5000"),
    pytest.param("/filter", json.dumps(args(_pod_with("1e500000"), ["n1"])), 200, "too large", id="1e500000"),
    pytest.param("/prioritize", json.dumps(args(_pod_with("1e500000"), ["n1"])), 200, "", id="prioritize 1e500000"),
    pytest.param(
        "/filter", json.dumps(args(_pod_with(memory="9" * 1_000_000), ["n1"])), 200, "longer than", id="1 MB quantity"
    ),
    pytest.param(
        "/filter",
        '{"Pod":{"spec":{"containers":[{"name":"c","resources":{"limits":{"nvidia.com/vcuda-core":'
        + "9" * 5000
        + "}}}]}},\"NodeNames\":[\"n1\"]}",
        400,
        "malformed",
        id="a 5000-digit JSON number",
    ),
    pytest.param("/filter", json.dumps(args(_pod_with(1e300), ["n1"])), 200, "too large", id="a float quantity"),
    pytest.param("/filter", json.dumps(args(_pod_with(["30"]), ["n1"])), 200, "not list", id="a list quantity"),
    pytest.param("/filter", '{"Pod":' + "[" * 100_000 + "]" * 100_000 + ',"NodeNames":["n1"]}', 400, "malformed", id="deep nesting"),
    pytest.param("/prioritize", '{"Pod":' + "[" * 100_000 + "]" * 100_000 + ',"NodeNames":["n1"]}', 400, "malformed", id="deep nesting, prioritize"),
    pytest.param("/bind", '{"PodName":' + "{" * 50_000, 400, "malformed", id="deep nesting, bind"),
    pytest.param("/bind", '{"PodName":["p"],"PodNamespace":1,"PodUID":null,"Node":{}}', 400, "malformed", id="wrong types"),
    pytest.param("/preempt", '{"Pod":{},"NodeNameToMetaVictims":{"n1":{"Pods":[{"UID":7}]}}}', 400, "malformed", id="preempt, wrong types"),
    pytest.param("/filter", b"\xff" * 1000, 400, "malformed", id="not UTF-8"),
]  # fmt: skip


@pytest.mark.parametrize(("verb", "body", "status", "says"), HOSTILE)
async def test_hostile_input_gets_an_answer_within_a_bound(extender, verb, body, status, says):
    http, _, _ = extender
    start = time.perf_counter()
    answer = await http.post(verb, content=body, headers={"Content-Type": "application/json"})
    elapsed = time.perf_counter() - start
    assert answer.status_code == status, answer.text[:300]
    assert says in answer.text
    assert len(answer.content) < 10_000  # a hostile value is never echoed back in full
    assert elapsed < BOUND_S
    healthy = await http.post("/filter", json=args(pod_obj("ok", (30, 4096)), ["n2"]))
    assert healthy.json()["NodeNames"] == ["n2"]


async def test_an_oversized_body_is_refused_unread(extender):
    http, _, _ = extender

    async def endless() -> AsyncIterator[bytes]:
        chunk = b" " * 1024 * 1024
        for _ in range(80):  # 80 MiB, past the 64 MiB bound
            yield chunk

    answer = await http.post("/filter", content=endless(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 400
    assert "body larger than" in answer.json()["Error"]

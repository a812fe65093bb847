"""One GPU, one mode, on the scheduling side, through the extender's real HTTP verbs (filter, bind).

A node sells some GPUs as vcuda shares (``gpus``) and others whole, as time-sliced replicas or MPS clients
(``other``, counted by kube-scheduler through ``nvidia.com/gpu``): the extender places shares on the first
only. A plugin that lists a GPU both ways (buggy, or a foreign writer of the annotation) has its whole
inventory refused: the node takes no shares, with a clear log line and a filter answer that says why, never a
crash or a 500. A GPU switched to another mode while pods hold shares on it keeps those shares charged and
takes no new ones.
"""

import json
import logging
from dataclasses import replace
from typing import Any

import httpx
import pytest

from extender.app import create_app
from tests.builders.vcuda import nvswitch_node
from tests.fakes.extender import NAMES, assignment_of, ledger_of, make_deps, node_obj, pod_obj
from tests.fixtures.extender_server import serving
from vcuda.annotations import encode_inventory
from vcuda.model import GpuInfo, GpuMode, NodeInventory, OtherModeGpu

PREFIX = "/scheduler"


def other(g: GpuInfo, mode: GpuMode, resource: str = "nvidia.com/gpu", replicas: int = 1) -> OtherModeGpu:
    return OtherModeGpu(g.uuid, g.index, g.model, g.memory_mib, mode, resource, replicas)


def mixed(node: str) -> NodeInventory:
    """GPUs 0-1 as shares, 2 whole, 3 as four time-sliced replicas."""
    full = nvswitch_node(4, node=node)
    shared = full.gpus[:2]
    links = tuple(link for link in full.links if {link.a, link.b} <= {g.uuid for g in shared})
    others = (other(full.gpus[2], GpuMode.WHOLE), other(full.gpus[3], GpuMode.TIME_SLICING, replicas=4))
    return NodeInventory(shared, links, other=others)


def both_ways(node: str) -> str:
    """An inventory that lists GPU 0 as shares and as a whole GPU (what the decoder refuses)."""
    inventory = nvswitch_node(2, node=node)
    return encode_inventory(replace(inventory, other=(other(inventory.gpus[0], GpuMode.WHOLE),)))


def node_with(name: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "annotations": {NAMES.inventory: text}},
    }


@pytest.fixture
async def extender():
    deps, cluster = make_deps([node_obj("mixed", mixed("mixed")), node_with("bad", both_ways("bad"))])
    async with (
        serving(create_app(deps)) as port,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http,
    ):
        yield http, deps, cluster


async def bind(http: httpx.AsyncClient, cluster: Any, pod: dict[str, Any], node: str) -> str:
    cluster.add(pod)
    meta = pod["metadata"]
    body = {"PodName": meta["name"], "PodNamespace": "default", "PodUID": meta["uid"], "Node": node}
    answer = await http.post(f"{PREFIX}/bind", json=body)
    assert answer.status_code == 200
    error: str = answer.json()["Error"]
    return error


async def test_shares_and_whole_gpus_go_only_to_the_gpus_sold_as_shares(extender):
    http, _, cluster = extender
    shared = {g.uuid for g in mixed("mixed").gpus}
    used = set()
    for i in range(4):  # 4 x 50 % fill the two share GPUs exactly
        pod = pod_obj(f"s{i}", (50, 4096))
        assert await bind(http, cluster, pod, "mixed") == ""
        used |= {s.uuid for c in assignment_of(pod).containers for s in c.shares}
    assert used == shared
    refused = await bind(http, cluster, pod_obj("s4", (50, 4096)), "mixed")
    assert "% compute free" in refused


async def test_a_pod_wanting_more_whole_gpus_than_the_node_sells_as_shares_is_unresolvable(extender):
    http, _, _ = extender
    answer = await http.post(
        f"{PREFIX}/filter", json={"Pod": pod_obj("big", (300, 0)), "NodeNames": ["mixed"]}
    )
    assert answer.status_code == 200
    assert answer.json()["FailedAndUnresolvableNodes"] == {
        "mixed": "needs 3 whole GPUs, the node has 2 usable"
    }


async def test_an_inventory_listing_a_gpu_both_ways_leaves_the_node_without_shares_and_says_why(
    extender, caplog
):
    http, deps, cluster = extender
    answer = await http.post(
        f"{PREFIX}/filter", json={"Pod": pod_obj("p", (30, 4096)), "NodeNames": ["bad", "mixed"]}
    )
    assert answer.status_code == 200
    doc = answer.json()
    assert doc["NodeNames"] == ["mixed"]
    assert (
        "GPU inventory is refused (inventory: a GPU is listed in two modes)"
        in (doc["FailedAndUnresolvableNodes"]["bad"])
    )
    assert "listed in two modes" in await bind(http, cluster, pod_obj("q", (30, 4096)), "bad")
    assert ledger_of(deps.state, "bad").inventory is None
    rendered = deps.metrics.render().decode()
    assert 'kube_vgpu_extender_rejections_total{reason="inventory-refused",verb="filter"} 1.0' in rendered

    caplog.set_level(logging.WARNING, logger="extender.clusterstate")
    deps.state.apply_node(node_with("bad", both_ways("bad") + " "))  # a new text: judged again
    refused = [r for r in caplog.records if r.getMessage().startswith("refusing a node's GPU inventory")]
    assert [r.__dict__["node"] for r in refused] == ["bad"]


async def test_a_node_that_publishes_a_valid_inventory_again_takes_shares_again(extender):
    http, deps, _ = extender
    deps.state.apply_node(node_obj("bad", nvswitch_node(2, node="bad")))
    answer = await http.post(f"{PREFIX}/filter", json={"Pod": pod_obj("p", (30, 4096)), "NodeNames": ["bad"]})
    assert answer.json()["NodeNames"] == ["bad"]
    assert ledger_of(deps.state, "bad").refused == ""


async def test_a_gpu_switched_to_another_mode_under_its_pods_keeps_them_charged_and_takes_no_new_shares(
    extender, caplog
):
    http, deps, cluster = extender
    holder = pod_obj("holder", (100, 0))
    assert await bind(http, cluster, holder, "mixed") == ""
    held = assignment_of(holder).containers[0].shares[0].uuid
    inventory = mixed("mixed")
    moved = next(g for g in inventory.gpus if g.uuid == held)
    switched = replace(
        inventory,
        gpus=tuple(g for g in inventory.gpus if g.uuid != held),
        links=(),
        other=(*inventory.other, other(moved, GpuMode.WHOLE)),
    )
    caplog.set_level(logging.WARNING, logger="extender.clusterstate")
    deps.state.apply_node(node_obj("mixed", switched))
    assert [r.__dict__["gpu"] for r in caplog.records if "now sold in another mode" in r.getMessage()] == [
        held
    ]
    assert ledger_of(deps.state, "mixed").load[held].cores == 100  # still charged
    newcomer = pod_obj("new", (100, 0))
    assert await bind(http, cluster, newcomer, "mixed") == ""
    assert assignment_of(newcomer).containers[0].shares[0].uuid != held
    assert "the node has 1 usable" in await bind(http, cluster, pod_obj("two", (200, 0)), "mixed")


def test_the_mixed_inventory_round_trips_through_the_annotation():
    text = encode_inventory(mixed("mixed"))
    assert [o["mode"] for o in json.loads(text)["other"]] == ["whole", "time-slicing"]

"""The ResourceSlice publisher through the real ``kubernetes`` client against the fake API server
(``tests/fakes/kmock.py``: resourceVersions, 409 on a stale update or delete precondition, generateName).

Cases: the first sync creates the pool at generation 1; an unchanged pool is not written again; a change
rewrites every slice of the pool at the next generation; a pool that shrinks deletes its surplus slice; stale
slices of an earlier run are taken over or deleted at start; slices of other nodes and drivers are never
touched, even when the server ignores the field selector; a concurrent writer's 409 is retried; a server that
keeps conflicting ends in SliceError.
"""

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client import ResourceV1Api, V1ResourceSlice

from plugin.core.gpu import NodeGpus
from plugin.core.resourceslice import SliceOptions, pool_specs
from plugin.slicepublisher import SliceError, SlicePublisher, slice_object
from tests.builders.mig import a100
from tests.builders.plugin import gpus, h200x8
from tests.fakes.kmock import KmockCluster

DRIVER = "kube-vgpu.nvidia.com"
NODE = "node-1"
OPTIONS = SliceOptions(driver=DRIVER, node=NODE, unhealthy={}, pcie_roots={})


@pytest.fixture
def cluster() -> Iterator[KmockCluster]:
    with KmockCluster() as running:
        yield running


def publisher(cluster: KmockCluster, node: str = NODE) -> SlicePublisher:
    return SlicePublisher(cluster.api_client(), driver=DRIVER, node=node, owner={"name": node, "uid": "u-1"})


def stored(cluster: KmockCluster) -> list[dict[str, Any]]:
    api: Any = ResourceV1Api(cluster.api_client())
    items = json.loads(api.list_resource_slice(_preload_content=False).data)["items"]
    return sorted(items, key=lambda s: s["metadata"]["name"])


def counts(cluster: KmockCluster) -> Any:
    assert cluster.emulator is not None
    return cluster.emulator.counts.copy()


def create(cluster: KmockCluster, spec: dict[str, Any], name: str) -> None:
    body = slice_object(spec, name=name)
    api: Any = ResourceV1Api(cluster.api_client())
    api.create_resource_slice(V1ResourceSlice.from_dict(body), _preload_content=False)


async def test_the_first_sync_creates_the_pool_at_generation_one(cluster: KmockCluster) -> None:
    assert await publisher(cluster).sync(pool_specs(h200x8(NODE), OPTIONS, 0)) is True
    (only,) = stored(cluster)
    assert only["metadata"]["name"].startswith(f"{NODE}-{DRIVER}-")
    assert only["metadata"]["ownerReferences"][0]["kind"] == "Node"
    assert only["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert len(only["spec"]["devices"]) == 8


async def test_an_unchanged_pool_is_not_written_again(cluster: KmockCluster) -> None:
    pub = publisher(cluster)
    await pub.sync(pool_specs(h200x8(NODE), OPTIONS, 0))
    before = counts(cluster).copy()
    assert await pub.sync(pool_specs(h200x8(NODE), OPTIONS, 0)) is False
    assert counts(cluster) - before == {("list", "resourceslices"): 1}


async def test_a_change_rewrites_the_pool_at_the_next_generation(cluster: KmockCluster) -> None:
    pub = publisher(cluster)
    node = h200x8(NODE)
    await pub.sync(pool_specs(node, OPTIONS, 0))
    sick = dataclasses.replace(OPTIONS, unhealthy={str(node.gpus[0].uuid): "xid-79"})
    assert await pub.sync(pool_specs(node, sick, 0)) is True
    (only,) = stored(cluster)
    assert only["spec"]["pool"]["generation"] == 2
    assert only["spec"]["devices"][0]["taints"][0]["value"] == "xid-79"


async def test_a_shrinking_pool_deletes_its_surplus_slice(cluster: KmockCluster) -> None:
    pub = publisher(cluster)
    mig = NodeGpus((a100(0, "1g.5gb"),), (), "580.95.05", "13.0")
    await pub.sync(pool_specs(mig, OPTIONS, 0))
    assert [s["spec"]["pool"]["resourceSliceCount"] for s in stored(cluster)] == [2, 2]
    await pub.sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0))
    (only,) = stored(cluster)
    assert only["spec"]["pool"] == {"name": NODE, "generation": 2, "resourceSliceCount": 1}


async def test_a_pool_of_two_slices_stored_in_another_order_is_unchanged(cluster: KmockCluster) -> None:
    mig = NodeGpus((a100(0, "1g.5gb"),), (), "580.95.05", "13.0")
    counters, devices = pool_specs(mig, OPTIONS, 1)
    create(cluster, devices, "a-devices")
    create(cluster, counters, "b-counters")
    before = counts(cluster)
    assert await publisher(cluster).sync(pool_specs(mig, OPTIONS, 0)) is False
    assert counts(cluster) - before == {("list", "resourceslices"): 1}


async def test_stale_slices_of_an_earlier_run_are_replaced_at_start(cluster: KmockCluster) -> None:
    old = pool_specs(gpus(3, node=NODE), OPTIONS, 7)[0]
    create(cluster, old, "stale-a")
    create(cluster, old, "stale-b")
    await publisher(cluster).sync(pool_specs(h200x8(NODE), OPTIONS, 0))
    (only,) = stored(cluster)
    assert only["metadata"]["name"] == "stale-a"
    assert only["spec"]["pool"]["generation"] == 8
    assert len(only["spec"]["devices"]) == 8


async def test_other_nodes_and_drivers_are_never_touched(cluster: KmockCluster) -> None:
    other_node = pool_specs(gpus(1, node="node-2"), dataclasses.replace(OPTIONS, node="node-2"), 4)[0]
    other_driver = pool_specs(gpus(1, node=NODE), dataclasses.replace(OPTIONS, driver="gpu.nvidia.com"), 4)[0]
    create(cluster, other_node, "theirs-node")
    create(cluster, other_driver, "theirs-driver")
    await publisher(cluster).sync(pool_specs(gpus(1, node=NODE), OPTIONS, 0))
    await publisher(cluster).sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0))
    by_name = {s["metadata"]["name"]: s for s in stored(cluster)}
    assert by_name["theirs-node"]["spec"] == other_node
    assert by_name["theirs-driver"]["spec"] == other_driver
    assert len(by_name) == 3


async def test_a_concurrent_writers_conflict_is_retried(cluster: KmockCluster, monkeypatch: Any) -> None:
    pub = publisher(cluster)
    await pub.sync(pool_specs(gpus(1, node=NODE), OPTIONS, 0))
    real_list = pub.list_own
    raced: list[bool] = []

    async def list_then_race() -> list[dict[str, Any]]:
        items = await real_list()
        if not raced:  # another writer updates the slice between our list and our update
            raced.append(True)
            (mine,) = stored(cluster)
            api: Any = ResourceV1Api(cluster.api_client())
            api.replace_resource_slice(
                mine["metadata"]["name"], V1ResourceSlice.from_dict(mine), _preload_content=False
            )
        return items

    monkeypatch.setattr(pub, "list_own", list_then_race)
    assert await pub.sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0)) is True
    (only,) = stored(cluster)
    assert len(only["spec"]["devices"]) == 2


async def test_a_server_that_keeps_conflicting_ends_in_an_error(
    cluster: KmockCluster, monkeypatch: Any
) -> None:
    pub = publisher(cluster)
    await pub.sync(pool_specs(gpus(1, node=NODE), OPTIONS, 0))
    real_list = pub.list_own

    async def stale_list() -> list[dict[str, Any]]:
        items = await real_list()
        return [s | {"metadata": s["metadata"] | {"resourceVersion": "1"}} for s in items]

    monkeypatch.setattr(pub, "list_own", stale_list)
    with pytest.raises(SliceError, match="conflicting"):
        await pub.sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0))


async def test_a_server_that_drops_fields_it_does_not_serve_is_not_rewritten_each_sync(
    cluster: KmockCluster, monkeypatch: Any
) -> None:
    """Kubernetes 1.34/1.35 without consumable capacity drop ``allowMultipleAllocations`` and request
    policies on write (reproduced by stripping them on the way out): what the server stored for the same
    wanted pool counts as unchanged; a real change is still written."""
    pub = publisher(cluster)
    real_model = pub._model

    def as_an_older_server_stores_it(body: dict[str, Any]) -> Any:
        body = json.loads(json.dumps(body))
        for device in body["spec"].get("devices", []):
            device.pop("allowMultipleAllocations", None)
            for capacity in device.get("capacity", {}).values():
                capacity.pop("requestPolicy", None)
        return real_model(body)

    monkeypatch.setattr(pub, "_model", as_an_older_server_stores_it)
    assert await pub.sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0)) is True
    assert "allowMultipleAllocations" not in stored(cluster)[0]["spec"]["devices"][0]
    assert await pub.sync(pool_specs(gpus(2, node=NODE), OPTIONS, 0)) is False
    assert await pub.sync(pool_specs(gpus(3, node=NODE), OPTIONS, 0)) is True
    assert stored(cluster)[0]["spec"]["pool"]["generation"] == 2

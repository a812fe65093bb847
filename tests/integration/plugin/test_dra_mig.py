# mypy: disable-error-code="no-untyped-call"
"""DRA on a MIG node: the real agent (``--front-end=dra``) over real pynvml and the FAKE NVML in the
``a100x4-mig`` layout (MIG on GPUs 0-2, GPU 2 without instances; GPU 3 MIG off), its ResourceSlices written
through the real client into kmock, claims read through the real client, and prepare/unprepare called by the
fake kubelet over the real DRA gRPC API.

Cases: the pool holds GPU 3 as a shared device and every MIG instance as a partitionable device consuming
its parent's counter set, the counter sets in a slice of their own; a claim of the example ``mig-instance.yaml``
the simulated scheduler allocates is prepared whole (a CDI device with the parent's device node and the
instance's capability devices, no shim mount, no shim config) and unprepare removes its spec; a MIG claim
that consumed capacity, and one on an instance whose GPU fell off the bus, fail alone while a good claim in
the same call is prepared.
"""

import asyncio
import dataclasses
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from plugin.core.dra import device_name, node_devices
from plugin.core.mig import mig_devices
from plugin.dra.claims import ApiClaims
from plugin.kube import ApiCluster
from plugin.nvml import Nvml
from plugin.podresources import Listing
from plugin.slicepublisher import SlicePublisher
from plugin.wiring import Timings, build_agent
from tests.builders.dra import DRIVER, GIB, claim, pod_owner, result
from tests.builders.dra_claims import CLASSES
from tests.builders.plugin import VERIFIER
from tests.fakes.dra_kubelet import ClaimInfo, FakeDraKubelet
from tests.fakes.kmock import KmockCluster
from tests.fakes.nvml.harness import FakeNvml, fake_nvml_fixture  # noqa: F401 (fixture)
from tests.fixtures.plugin_env import NODE, STOP_S, eventually, make_settings
from tests.sim.dra_allocator import Unallocatable, allocate
from vcuda import names as vnames

Obj = dict[str, Any]
EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "dra" / "mig-instance.yaml"


async def _no_pod_resources() -> Listing:
    raise AssertionError("a DRA node never asks PodResources")


class MigNode:
    def __init__(self, root: Path, cluster: KmockCluster, fake: FakeNvml) -> None:
        self.root, self.fake = root, fake
        self.settings = make_settings(
            root, front_end="dra", dra_registry_dir=root / "reg", dra_plugins_dir=root / "plugins"
        )
        self.resource: Any = client.ResourceV1Api(cluster.api_client())
        self.kubelet = FakeDraKubelet(self.settings.dra_registry_dir, cluster.api_client())
        self.nvml = Nvml(event_poll_ms=20)
        self.nvml.open()
        self.agent = build_agent(
            self.settings,
            source=self.nvml,
            cluster=ApiCluster(cluster.api_client()),
            pod_resources=_no_pod_resources,
            verifier=VERIFIER,
            timings=Timings(kubelet_poll_s=0.05, node_resync_s=0.2),
            claims=ApiClaims(cluster.api_client()),
            slices=SlicePublisher(cluster.api_client(), driver=DRIVER, node=NODE),
        )
        self.migs = mig_devices(self.agent.node_gpus.gpus)
        # The driver's capability minors, as /proc/driver/nvidia-caps/mig-minors lists them.
        lines, minor = [], 10
        for m in self.migs:
            gi = f"gpu{m.parent_minor}/gi{m.gpu_instance_id}"
            lines += [f"{gi}/access {minor}", f"{gi}/ci{m.compute_instance_id}/access {minor + 1}"]
            minor += 2
        (root / "mig-minors").write_text("\n".join(lines) + "\n")
        assert self.agent.dra is not None
        preparer = self.agent.dra.preparer
        preparer.info = dataclasses.replace(preparer.info, mig_minors=root / "mig-minors")
        self.task: asyncio.Task[None] | None = None

    def slices(self) -> list[Obj]:
        items: list[Obj] = json.loads(self.resource.list_resource_slice(_preload_content=False).data)["items"]
        return items

    def create(self, body: Obj) -> Obj:
        body["metadata"].pop("uid", None)
        self.resource.create_namespaced_resource_claim("default", body, _preload_content=False)
        answer = self.resource.read_namespaced_resource_claim(body["metadata"]["name"], "default", _preload_content=False)  # fmt: skip
        got: Obj = json.loads(answer.data)
        return got

    def cdi_specs(self) -> list[Obj]:
        return [json.loads(p.read_text()) for p in sorted(self.settings.cdi_dir.glob("*.json"))]


def info(body: Obj) -> ClaimInfo:
    meta = body["metadata"]
    return ClaimInfo(meta["namespace"], meta["name"], meta["uid"], frozenset({DRIVER}))


def pod(name: str, uid: str, claim_name: str) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimName": claim_name}]},
    }


@pytest.fixture
async def mig_node(
    fake_nvml: Any,
    short_dir: Path,
    kmock_cluster: KmockCluster,
) -> AsyncIterator[MigNode]:
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    env = MigNode(short_dir, kmock_cluster, fake_nvml("a100x4-mig"))
    await env.kubelet.start()
    env.task = asyncio.get_running_loop().create_task(env.agent.run())
    try:
        await env.kubelet.wait_registered(DRIVER)
        await eventually(lambda: env.agent.pool is not None and env.agent.pool.syncs >= 1)
        yield env
    finally:
        env.task.cancel()
        done, _ = await asyncio.wait([env.task], timeout=STOP_S)
        await env.kubelet.stop()
        env.nvml.close()
        assert done, "the agent did not stop"


async def test_a_mig_nodes_pool_has_its_instances_as_partitionable_devices_and_the_counters(
    mig_node: MigNode,
) -> None:
    slices = mig_node.slices()
    devices = {d["name"]: d for s in slices for d in s["spec"].get("devices", [])}
    counters = {c["name"]: c for s in slices for c in s["spec"].get("sharedCounters", [])}
    node_side = node_devices(mig_node.agent.node_gpus.gpus)
    assert sorted(devices) == sorted(node_side)  # every published device is one prepare knows
    assert len(mig_node.migs) == 6
    assert sorted(counters) == ["gpu-0-counters", "gpu-1-counters", "gpu-2-counters"]
    assert all("devices" not in s["spec"] for s in slices if "sharedCounters" in s["spec"])
    for m in mig_node.migs:
        published = devices[device_name(m)]
        assert published["attributes"]["type"] == {"string": "mig"}
        assert published["consumesCounters"][0]["counterSet"] == f"gpu-{m.parent_index}-counters"
        assert "allowMultipleAllocations" not in published
    whole = mig_node.fake.uuid(3)
    assert devices[device_name(next(g for g in mig_node.agent.node_gpus.gpus if g.uuid == whole))][
        "allowMultipleAllocations"
    ]


async def test_the_mig_example_allocated_by_the_scheduler_is_prepared_whole_and_unprepared(
    mig_node: MigNode,
) -> None:
    template = next(d for d in yaml.safe_load_all(EXAMPLE.read_text()) if d["kind"] != "Pod")
    body = mig_node.create(
        {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": "mig-claim", "namespace": "default"},
            "spec": template["spec"]["spec"],
        }
    )
    answer = allocate(body, node=NODE, slices=mig_node.slices(), classes=CLASSES, claims=[])
    assert not isinstance(answer, Unallocatable), answer
    pod_uid = str(uuid.uuid4())
    body["metadata"]["ownerReferences"] = [pod_owner("p", pod_uid)]  # made from the pod's template
    body["status"] = {
        "allocation": answer,
        "reservedFor": [{"resource": "pods", "name": "p", "uid": pod_uid}],
    }
    mig_node.resource.replace_namespaced_resource_claim("mig-claim", "default", body, _preload_content=False)

    (device,) = (await mig_node.kubelet.prepare_pod(pod("p", pod_uid, "mig-claim")))["mig-claim"]

    chosen = next(m for m in mig_node.migs if device_name(m) == device.device)
    assert chosen.profile == "2g.10gb"
    (spec,) = mig_node.cdi_specs()
    (cdi_device,) = spec["devices"]
    assert device.cdi_ids == (f"{spec['kind']}={cdi_device['name']}",)
    paths = [n["path"] for n in cdi_device["containerEdits"]["deviceNodes"]]
    assert paths[0] == f"/dev/nvidia{chosen.parent_minor}"
    assert len(paths) == 3
    assert all(p.startswith("/dev/nvidia-caps/nvidia-cap") for p in paths[1:])
    mounts = [m["containerPath"] for m in spec["containerEdits"].get("mounts", [])]
    assert vnames.LD_SO_PRELOAD_PATH not in mounts  # no shim: MIG is hardware isolation
    assert vnames.CONTAINER_CONFIG_PATH not in mounts
    assert list((mig_node.settings.state_dir / "containers").glob("*_dra-*")) == []

    await mig_node.kubelet.unprepare_pod(pod("p", pod_uid, "mig-claim"))
    assert mig_node.cdi_specs() == []


async def test_hostile_and_sick_mig_claims_fail_alone(mig_node: MigNode) -> None:
    on_gpu0 = [m for m in mig_node.migs if m.parent_index == 0]
    on_gpu1 = [m for m in mig_node.migs if m.parent_index == 1]
    mig_node.fake.lose_gpu(mig_node.fake.uuid(0))
    await eventually(lambda: not mig_node.agent.health.healthy[on_gpu0[0].parent])
    consumed = mig_node.create(
        claim("consumed", pods=[("p1", "u1")], results=[result(device_name(on_gpu1[0]), memory=GIB)])
    )
    sick = mig_node.create(claim("sick", pods=[("p2", "u2")], results=[result(device_name(on_gpu0[0]))]))
    missing = mig_node.create(claim("missing", pods=[("p3", "u3")], results=[result("mig-00000000-0-0")]))
    good = mig_node.create(claim("good", pods=[("p4", "u4")], results=[result(device_name(on_gpu1[1]))]))

    reply = await mig_node.kubelet.call_prepare(DRIVER, [info(b) for b in (consumed, sick, missing, good)])

    errors = {b["metadata"]["name"]: reply.claims[b["metadata"]["uid"]].error for b in (consumed, sick, missing, good)}  # fmt: skip
    assert "taken whole" in errors["consumed"]
    assert "unhealthy" in errors["sick"]
    assert "not a GPU of this node" in errors["missing"]
    assert errors["good"] == ""
    assert len(mig_node.cdi_specs()) == 1

# mypy: disable-error-code="no-untyped-call"
"""DRA end to end on one node: the real agent (``--front-end=dra``) publishes its ResourceSlices through the
real client into the fake API server, the simulated scheduler's allocator (tests/sim/dra_allocator.py)
allocates the example claims from them and writes ``status.allocation`` and ``reservedFor`` as the scheduler
does, the fake kubelet (tests/fakes/dra_kubelet.py) prepares them through the real DRA gRPC API, and the
plugin's shim config of each claim carries the capacity the scheduler took.

Cases: the slices are published at start, owned by the Node, and name the node side's devices; the four
example claims are allocated and prepared, their limits match what they consumed (soft limit included),
invariant 4 holds and no GPU's configs add up to more than the GPU; a GPU that falls off the bus is tainted
in the next pool generation and new claims avoid it.
"""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from plugin.core.dra import device_name, driver_name
from plugin.dra.claims import ApiClaims
from plugin.kube import ApiCluster
from plugin.podresources import Listing
from plugin.slicepublisher import SlicePublisher
from plugin.wiring import Timings, build_agent
from tests.builders.dra import pod_owner
from tests.builders.dra_claims import CLASSES
from tests.builders.plugin import NAMES, VERIFIER, h100x8
from tests.fakes.dra_kubelet import FakeDraKubelet
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kmock import KmockCluster
from tests.fixtures.plugin_env import NODE, STOP_S, eventually, make_settings
from tests.sim.dra_allocator import Unallocatable, allocate
from tests.sim.dra_invariants import dra_overcommit
from vcuda.shimfile import GpuLimit, decode_config
from vcuda.units import parse_quantity

DRIVER = driver_name(NAMES.domain)
EXAMPLES = Path(__file__).resolve().parents[3] / "deploy" / "examples" / "dra"
Obj = dict[str, Any]


async def _no_pod_resources() -> Listing:
    raise AssertionError("a DRA node never asks PodResources")


class Node:
    """One DRA node: the agent, its fake kubelet, and the API as the scheduler sees it."""

    def __init__(self, root: Path, cluster: KmockCluster, **settings: Any) -> None:
        self.cluster = cluster
        self.settings = make_settings(
            root, front_end="dra", dra_registry_dir=root / "reg", dra_plugins_dir=root / "plugins", **settings
        )
        self.gpus = FakeGpuSource(h100x8())
        self.resource: Any = client.ResourceV1Api(cluster.api_client())
        self.kubelet = FakeDraKubelet(self.settings.dra_registry_dir, cluster.api_client())
        self.agent = build_agent(
            self.settings,
            source=self.gpus,
            cluster=ApiCluster(cluster.api_client()),
            pod_resources=_no_pod_resources,
            verifier=VERIFIER,
            timings=Timings(kubelet_poll_s=0.05, node_resync_s=0.2),
            claims=ApiClaims(cluster.api_client()),
            slices=SlicePublisher(cluster.api_client(), driver=DRIVER, node=NODE),
        )
        self.task: asyncio.Task[None] | None = None

    def slices(self) -> list[Obj]:
        items: list[Obj] = json.loads(self.resource.list_resource_slice(_preload_content=False).data)["items"]
        return items

    def claims(self) -> list[Obj]:
        answer = self.resource.list_namespaced_resource_claim("default", _preload_content=False)
        items: list[Obj] = json.loads(answer.data)["items"]
        return items

    def schedule(self, template: Obj, pod: str) -> Obj | Unallocatable:
        """What the resourceclaim controller and kube-scheduler do for one pod with one claim template: create
        the claim, allocate it on this node next to the allocated claims, write its status."""
        body = {
            "apiVersion": "resource.k8s.io/v1",
            "kind": "ResourceClaim",
            "metadata": {"name": f"{pod}-gpu", "namespace": "default"},
            "spec": template["spec"]["spec"],
        }
        self.resource.create_namespaced_resource_claim("default", body, _preload_content=False)
        created: Obj = json.loads(
            self.resource.read_namespaced_resource_claim(f"{pod}-gpu", "default", _preload_content=False).data
        )
        answer = allocate(created, node=NODE, slices=self.slices(), classes=CLASSES, claims=self.claims())
        if isinstance(answer, Unallocatable):
            return answer
        pod_uid = str(uuid.uuid4())
        created["metadata"]["ownerReferences"] = [pod_owner(pod, pod_uid)]  # made from the pod's template
        created["status"] = {
            "allocation": answer,
            "reservedFor": [{"resource": "pods", "name": pod, "uid": pod_uid}],
        }
        self.resource.replace_namespaced_resource_claim(
            f"{pod}-gpu", "default", created, _preload_content=False
        )
        return created | {"pod_uid": pod_uid}


def template(name: str) -> Obj:
    found: Obj = next(d for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d["kind"] != "Pod")
    return found


def pod_of(claim: Obj) -> Obj:
    owner = claim["status"]["reservedFor"][0]
    return {
        "metadata": {"name": owner["name"], "namespace": "default", "uid": claim["pod_uid"]},
        "spec": {"resourceClaims": [{"name": "gpu", "resourceClaimName": claim["metadata"]["name"]}]},
    }


@pytest.fixture
async def node(short_dir: Path, kmock_cluster: KmockCluster) -> AsyncIterator[Node]:
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    env = Node(short_dir, kmock_cluster)
    await env.kubelet.start()
    env.task = asyncio.get_running_loop().create_task(env.agent.run())
    await env.kubelet.wait_registered(DRIVER)
    await eventually(lambda: env.agent.pool is not None and env.agent.pool.syncs >= 1)
    yield env
    env.task.cancel()
    done, _ = await asyncio.wait([env.task], timeout=STOP_S)
    assert done, "the agent did not stop"
    await env.kubelet.stop()


async def test_the_slices_are_published_at_start_owned_by_the_node(node: Node) -> None:
    (published,) = node.slices()
    uid = node.cluster.core().read_node(NODE).metadata.uid
    assert published["metadata"]["ownerReferences"][0]["uid"] == uid
    assert published["spec"]["pool"] == {"name": NODE, "generation": 1, "resourceSliceCount": 1}
    assert [d["name"] for d in published["spec"]["devices"]] == [device_name(g) for g in node.gpus.node.gpus]


async def test_example_claims_are_allocated_prepared_and_held_to_their_share(node: Node) -> None:
    wanted = {
        "share.yaml": "share",
        "soft-limit.yaml": "soft",
        "two-gpu-nvlink.yaml": "pair",
        "model-selection.yaml": "h100",
    }
    scheduled = {pod: node.schedule(template(name), pod) for name, pod in wanted.items()}
    assert not [p for p, c in scheduled.items() if isinstance(c, Unallocatable)]
    by_name: dict[str, Any] = {g.uuid: g for g in node.gpus.node.gpus}
    gpu_of = {device_name(g): g for g in by_name.values()}
    for pod, claim in scheduled.items():
        assert isinstance(claim, dict)
        prepared = await node.kubelet.prepare_pod(pod_of(claim))
        assert {d.device for d in prepared[claim["metadata"]["name"]]} == {
            r["device"] for r in claim["status"]["allocation"]["devices"]["results"]
        }
        config_dir = (
            node.settings.state_dir / "containers" / f"{claim['pod_uid']}_dra-{claim['metadata']['uid']}"
        )
        config = decode_config((config_dir / "vcuda.config").read_bytes())
        expected = set()
        for r in claim["status"]["allocation"]["devices"]["results"]:
            gpu = gpu_of[r["device"]]
            cores = parse_quantity(r["consumedCapacity"]["cores"])
            memory = parse_quantity(r["consumedCapacity"]["memory"])
            soft = 60 if pod == "soft" else cores
            expected.add(GpuLimit(gpu.uuid, memory, cores, cores if cores == 100 else soft))
        assert set(config.gpus) == expected, pod
    assert dra_overcommit(node.slices(), node.claims(), [NODE]) == []
    per_gpu: dict[str, tuple[int, int]] = {}
    for path in (node.settings.state_dir / "containers").glob("*_dra-*/vcuda.config"):
        for limit in decode_config(path.read_bytes()).gpus:
            cores, memory = per_gpu.get(limit.uuid, (0, 0))
            per_gpu[limit.uuid] = (cores + limit.core_limit, memory + limit.memory_limit_bytes)
    assert len(per_gpu) >= 3
    for uuid_, (cores, memory) in per_gpu.items():
        assert cores <= 100, uuid_
        assert memory <= by_name[uuid_].memory_mib << 20, uuid_


async def test_a_lost_gpu_is_tainted_and_new_claims_avoid_it(node: Node) -> None:
    lost = node.gpus.node.gpus[0]
    node.gpus.unreachable.add(lost.uuid)

    def tainted() -> bool:
        (published,) = node.slices()
        first = next(d for d in published["spec"]["devices"] if d["name"] == device_name(lost))
        return bool(first.get("taints"))

    await eventually(tainted)
    (published,) = node.slices()
    assert published["spec"]["pool"]["generation"] == 2
    claim = node.schedule(template("share.yaml"), "after")
    assert isinstance(claim, dict)
    assert [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]] != [device_name(lost)]


async def test_with_withdraw_a_lost_gpu_leaves_the_slice(
    short_dir: Path, kmock_cluster: KmockCluster
) -> None:
    """``--dra-unhealthy=withdraw`` (Kubernetes 1.34 and 1.35): the GPU is left out instead of tainted."""
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    env = Node(short_dir, kmock_cluster, dra_unhealthy="withdraw")
    lost = env.gpus.node.gpus[3]
    env.gpus.unreachable.add(lost.uuid)
    await env.kubelet.start()
    task = asyncio.get_running_loop().create_task(env.agent.run())
    try:
        await eventually(lambda: env.agent.pool is not None and env.agent.pool.syncs >= 1)
        await eventually(lambda: len(env.slices()) == 1 and len(env.slices()[0]["spec"]["devices"]) == 7)
        (published,) = env.slices()
        assert device_name(lost) not in {d["name"] for d in published["spec"]["devices"]}
        assert all("taints" not in d for d in published["spec"]["devices"])
    finally:
        task.cancel()
        await asyncio.wait([task], timeout=STOP_S)
        await env.kubelet.stop()

# mypy: disable-error-code="no-untyped-call"
"""The DRA driver through the real kubelet APIs: the agent with ``--front-end=dra``, a FakeDraKubelet over
real gRPC on Unix sockets, ResourceClaims in kmock read through the real ``kubernetes`` client.

Cases: registration (GetInfo, versions, NotifyRegistrationStatus; no device plugin, inventory under
``other``); prepare of a share (CDI spec, shim config, usage, checkpoint) over v1 and v1beta1; idempotent
prepare; a batch with hostile claims (per-claim errors, the good one prepared); a prepare that times out at
the kubelet and is retried; unprepare of a claim never prepared; a write that fails half-way, then
unprepare; plugin restart (re-registration, prepare again, unprepare removes everything); kubelet restart.
"""

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from plugin.agent import Agent
from plugin.api.dra.v1 import api_pb2 as v1
from plugin.core.dra import ClaimRef
from plugin.dra.claims import ApiClaims
from plugin.dra.node import CHECKPOINT_PATH
from plugin.kube import ApiCluster
from plugin.podresources import Listing
from plugin.wiring import Timings, build_agent
from tests.builders.dra import DRIVER, GIB, claim, config, dev, parameters, result
from tests.builders.plugin import NAMES, VERIFIER, h100x8
from tests.fakes.dra_kubelet import ClaimInfo, FakeDraKubelet, PrepareError
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kmock import KmockCluster
from tests.fixtures.plugin_env import NODE, STOP_S, eventually, make_settings
from vcuda import names as vnames
from vcuda.annotations import decode_inventory
from vcuda.model import GpuMode
from vcuda.shimfile import GpuLimit, decode_config

GPUS = h100x8().gpus


class GatedClaims:
    """The real claim reader behind a gate the test opens: the driver's prepare waits while it is shut."""

    def __init__(self, inner: ApiClaims) -> None:
        self.inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.reads = 0

    async def read(self, ref: ClaimRef) -> Any:
        self.reads += 1
        await self.gate.wait()
        return await self.inner.read(ref)


class DraEnv:
    def __init__(self, root: Path, cluster: KmockCluster) -> None:
        self.root = root
        self.cluster = cluster
        self.settings = make_settings(
            root,
            front_end="dra",
            dra_registry_dir=root / "reg",
            dra_plugins_dir=root / "plugins",
        )
        self.resource: Any = client.ResourceV1Api(cluster.api_client())
        self.claims = GatedClaims(ApiClaims(cluster.api_client()))
        self.kubelet = FakeDraKubelet(self.settings.dra_registry_dir, cluster.api_client())
        self.source = FakeGpuSource(h100x8())
        self.agent: Agent | None = None
        self.task: asyncio.Task[None] | None = None

    async def start_plugin(self) -> None:
        self.agent = build_agent(
            self.settings,
            source=self.source,
            cluster=ApiCluster(self.cluster.api_client()),
            pod_resources=_no_pod_resources,
            verifier=VERIFIER,
            timings=Timings(kubelet_poll_s=0.05, node_resync_s=0.2),
            claims=self.claims,
        )
        self.task = asyncio.get_running_loop().create_task(self.agent.run())

    async def stop_plugin(self) -> None:
        assert self.task is not None
        self.task.cancel()
        done, _ = await asyncio.wait([self.task], timeout=STOP_S)
        assert done, "the agent did not stop"

    @property
    def state(self) -> Path:
        return self.settings.state_dir

    def create_claim(self, body: dict[str, Any]) -> dict[str, Any]:
        body["metadata"].pop("uid", None)
        ns = body["metadata"]["namespace"]
        self.resource.create_namespaced_resource_claim(ns, body, _preload_content=False)
        got: dict[str, Any] = json.loads(
            self.resource.read_namespaced_resource_claim(
                body["metadata"]["name"], ns, _preload_content=False
            ).data
        )
        return got

    def claim_with_owner(self, name: str, pod_uid: str, **kw: Any) -> dict[str, Any]:
        return self.create_claim(claim(name, pods=[(f"pod-{name}", pod_uid)], **kw))

    def spec_files(self) -> list[Path]:
        return sorted(self.settings.cdi_dir.glob("*.json"))

    def claim_dirs(self) -> list[str]:
        return sorted(p.name for p in (self.state / "containers").glob("*_dra-*"))

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint's records by claim UID."""
        folder = self.state / CHECKPOINT_PATH
        return {p.name.removesuffix(".json"): json.loads(p.read_text()) for p in folder.glob("*.json")}


async def _no_pod_resources() -> Listing:
    raise AssertionError("a DRA node never asks PodResources")


def pod(name: str, uid: str, *claim_names: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": uid},
        "spec": {
            "resourceClaims": [{"name": f"c{i}", "resourceClaimName": c} for i, c in enumerate(claim_names)]
        },
    }


def ref_of(body: dict[str, Any]) -> ClaimInfo:
    meta = body["metadata"]
    return ClaimInfo(meta["namespace"], meta["name"], meta["uid"], frozenset({DRIVER}))


@pytest.fixture
async def dra(short_dir: Path, kmock_cluster: KmockCluster) -> AsyncIterator[DraEnv]:
    core = kmock_cluster.core()
    core.create_node({"metadata": {"name": NODE}}, _preload_content=False)
    env = DraEnv(short_dir, kmock_cluster)
    await env.kubelet.start()
    await env.start_plugin()
    await env.kubelet.wait_registered(DRIVER)
    yield env
    await env.stop_plugin()
    await env.kubelet.stop()


async def test_the_driver_registers_as_a_dra_plugin_with_both_versions(dra: DraEnv) -> None:
    ep = dra.kubelet.plugins[DRIVER]
    assert ep.version == "v1.DRAPlugin"
    assert ep.endpoint == str(dra.settings.dra_plugins_dir / DRIVER / "dra.sock")
    assert ep.socket == str(dra.settings.dra_registry_dir / f"{DRIVER}-reg.sock")
    assert dra.agent is not None
    await eventually(dra.agent.ready)  # NotifyRegistrationStatus reached the driver


async def test_a_dra_node_registers_no_device_plugin_and_lists_its_gpus_as_dra(dra: DraEnv) -> None:
    def inventory() -> Any:
        node = json.loads(dra.cluster.core().read_node(NODE, _preload_content=False).data)
        text = node["metadata"].get("annotations", {}).get(NAMES.inventory)
        return decode_inventory(text) if text else None

    await eventually(lambda: inventory() is not None)
    inv = inventory()
    assert inv.gpus == ()
    assert {g.uuid for g in inv.other} == {g.uuid for g in GPUS}
    assert {(g.mode, g.resource) for g in inv.other} == {(GpuMode.DRA, DRIVER)}
    assert not (dra.settings.device_plugin_dir / "kube-vgpu-core.sock").exists()


async def test_prepare_makes_a_cdi_device_with_the_gpu_the_shim_and_the_claims_limits(dra: DraEnv) -> None:
    body = dra.claim_with_owner(
        "share",
        "pod-uid-1",
        results=[result(dev(GPUS[2]), memory=4 * GIB, cores=30, share_id="s-1")],
        configs=[config(parameters(60))],
    )
    uid = body["metadata"]["uid"]
    devices = (await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "share")))["share"]

    (device,) = devices
    assert (device.pool, device.device, device.requests, device.share_id) == (
        NODE,
        dev(GPUS[2]),
        ("gpu",),
        "s-1",
    )
    kind, _, cdi_name = device.cdi_ids[0].partition("=")
    (spec_file,) = dra.spec_files()
    spec = json.loads(spec_file.read_text())
    assert spec["kind"] == kind == f"kube-vgpu.{NAMES.domain}/claim"
    (cdi_device,) = spec["devices"]
    assert cdi_device["name"] == cdi_name
    assert cdi_device["containerEdits"]["deviceNodes"] == [{"path": f"/dev/nvidia{GPUS[2].minor}"}]
    mounts = {m["containerPath"]: m["hostPath"] for m in spec["containerEdits"]["mounts"]}
    assert mounts[vnames.LD_SO_PRELOAD_PATH] == str(dra.state / "ld.so.preload")
    config_file = Path(mounts[vnames.CONTAINER_CONFIG_PATH])
    assert decode_config(config_file.read_bytes()).gpus == (GpuLimit(GPUS[2].uuid, 4 * GIB, 30, 60),)
    assert Path(mounts[vnames.CONTAINER_USAGE_DIR]).is_dir()
    assert dra.checkpoint()[uid]["prepared"] is True


async def test_prepare_again_answers_the_same_devices_and_writes_nothing_new(dra: DraEnv) -> None:
    dra.claim_with_owner("share", "pod-uid-1", results=[result(dev(GPUS[0]), memory=GIB, cores=10)])
    first = await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "share"))
    reads = dra.claims.reads
    reply = await dra.kubelet.call_prepare(DRIVER, list(dra.kubelet.claims.values()))  # the kubelet retries
    (entry,) = reply.claims.values()
    assert [d.cdi_device_ids[0] for d in entry.devices] == [d.cdi_ids[0] for d in first["share"]]
    assert dra.claims.reads == reads  # answered from the checkpoint
    assert len(dra.spec_files()) == 1
    assert len(dra.claim_dirs()) == 1


async def test_a_kubelet_speaking_only_v1beta1_gets_the_same_devices(dra: DraEnv) -> None:
    await dra.kubelet.stop()
    dra.kubelet = FakeDraKubelet(
        dra.settings.dra_registry_dir, dra.cluster.api_client(), versions=["v1beta1.DRAPlugin"]
    )
    await dra.kubelet.start()
    ep = await dra.kubelet.wait_registered(DRIVER)
    assert ep.version == "v1beta1.DRAPlugin"
    dra.claim_with_owner("share", "pod-uid-1", results=[result(dev(GPUS[1]), memory=GIB, cores=10)])
    (device,) = (await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "share")))["share"]
    assert device.device == dev(GPUS[1])
    assert device.cdi_ids
    assert device.share_id is None


async def test_a_v1beta1_answer_carries_no_field_v1beta1_does_not_know(dra: DraEnv) -> None:
    """v1beta1 is served by converting to v1 and back: a claim's share ID (v1 only) must not ride along."""
    await dra.kubelet.stop()
    dra.kubelet = FakeDraKubelet(
        dra.settings.dra_registry_dir, dra.cluster.api_client(), versions=["v1beta1.DRAPlugin"]
    )
    await dra.kubelet.start()
    await dra.kubelet.wait_registered(DRIVER)
    dra.claim_with_owner(
        "share", "pod-uid-1", results=[result(dev(GPUS[1]), memory=GIB, cores=10, share_id="s-1")]
    )
    await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "share"))

    reply = await dra.kubelet.call_prepare(DRIVER, list(dra.kubelet.claims.values()))
    as_v1 = v1.NodePrepareResourcesResponse.FromString(reply.SerializeToString())
    (entry,) = as_v1.claims.values()
    assert [d.device_name for d in entry.devices] == [dev(GPUS[1])]
    assert not any(d.HasField("share_id") for d in entry.devices)


async def test_a_v1beta1_kubelet_gets_the_v1_answer_for_every_claim_good_hostile_or_unknown(
    dra: DraEnv,
) -> None:
    """v1beta1 goes through v1 and back: each claim's entry (devices with their request names, pool and CDI
    IDs; an error; an unknown UID's error) reaches a v1beta1-only kubelet as v1 answered it, less share_id."""
    good = dra.claim_with_owner(
        "good", "u1", results=[result(dev(GPUS[0]), memory=GIB, cores=20, share_id="s-1")]
    )
    two = dra.claim_with_owner(
        "two",
        "u2",
        results=[
            result(dev(GPUS[1]), request="a", memory=GIB, cores=10),
            result(dev(GPUS[2]), request="b", memory=GIB, cores=10),
        ],
    )
    bad = dra.claim_with_owner("no-such-gpu", "u3", results=[result("gpu-0", memory=GIB, cores=20)])
    gone = ClaimInfo("default", "deleted", "0d0d0d0d-0000-0000-0000-000000000000", frozenset({DRIVER}))
    batch = [ref_of(good), ref_of(two), ref_of(bad), gone]
    as_v1 = await dra.kubelet.call_prepare(DRIVER, batch)
    for entry in as_v1.claims.values():
        for device in entry.devices:
            device.ClearField("share_id")
    await dra.kubelet.stop()
    dra.kubelet = FakeDraKubelet(
        dra.settings.dra_registry_dir, dra.cluster.api_client(), versions=["v1beta1.DRAPlugin"]
    )
    await dra.kubelet.start()
    await dra.kubelet.wait_registered(DRIVER)

    as_v1beta1 = await dra.kubelet.call_prepare(DRIVER, batch)

    assert v1.NodePrepareResourcesResponse.FromString(as_v1beta1.SerializeToString()) == as_v1
    assert sorted(as_v1beta1.claims) == sorted(c.uid for c in batch)
    assert [list(d.request_names) for d in as_v1beta1.claims[two["metadata"]["uid"]].devices] == [
        ["a"],
        ["b"],
    ]
    assert as_v1beta1.claims[bad["metadata"]["uid"]].error
    assert "404" in as_v1beta1.claims[gone.uid].error
    unprepared = await dra.kubelet.call_unprepare(DRIVER, batch)
    assert {u: r.error for u, r in unprepared.claims.items()} == dict.fromkeys((c.uid for c in batch), "")
    assert dra.spec_files() == []


async def test_hostile_claims_fail_alone_and_the_good_one_is_prepared(dra: DraEnv) -> None:
    good = dra.claim_with_owner("good", "u1", results=[result(dev(GPUS[0]), memory=GIB, cores=20)])
    bad = [
        dra.claim_with_owner(
            "other-node", "u2", results=[result(dev(GPUS[1]), pool="node-2", memory=GIB, cores=20)]
        ),
        dra.claim_with_owner("no-such-gpu", "u3", results=[result("gpu-0", memory=GIB, cores=20)]),
        dra.claim_with_owner("too-big", "u4", results=[result(dev(GPUS[1]), memory=1 << 50, cores=20)]),
        dra.claim_with_owner(
            "bad-params",
            "u5",
            results=[result(dev(GPUS[1]), memory=GIB, cores=20)],
            configs=[config({"apiVersion": "x/v1", "kind": "GpuShareParameters"})],
        ),
        dra.claim_with_owner("unallocated", "u6", allocated=False),
    ]
    gone = ClaimInfo("default", "deleted", "0d0d0d0d-0000-0000-0000-000000000000", frozenset({DRIVER}))
    reply = await dra.kubelet.call_prepare(DRIVER, [ref_of(good), *map(ref_of, bad), gone])

    errors = {uid: r.error for uid, r in reply.claims.items()}
    assert errors.pop(good["metadata"]["uid"]) == ""
    assert reply.claims[good["metadata"]["uid"]].devices[0].device_name == dev(GPUS[0])
    assert len(errors) == len(bad) + 1
    assert all(errors.values())
    assert "not on this node" in errors[bad[0]["metadata"]["uid"]]
    assert "not a GPU of this node" in errors[bad[1]["metadata"]["uid"]]
    assert "outside" in errors[bad[2]["metadata"]["uid"]]
    assert "apiVersion" in errors[bad[3]["metadata"]["uid"]]
    assert "not allocated" in errors[bad[4]["metadata"]["uid"]]
    assert "404" in errors[gone.uid]
    assert len(dra.spec_files()) == 1
    assert list(dra.checkpoint()) == [good["metadata"]["uid"]]


async def test_a_prepare_the_kubelet_gave_up_on_is_answered_the_same_when_retried(dra: DraEnv) -> None:
    dra.claim_with_owner("slow", "pod-uid-1", results=[result(dev(GPUS[3]), memory=GIB, cores=40)])
    dra.claims.gate.clear()
    dra.kubelet.call_timeout_s = 0.2
    with pytest.raises(PrepareError, match="DEADLINE_EXCEEDED"):
        await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "slow"))
    dra.claims.gate.set()  # the driver finishes the first call after the kubelet stopped waiting
    dra.kubelet.call_timeout_s = 45.0
    (device,) = (await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "slow")))["slow"]
    assert device.device == dev(GPUS[3])
    assert len(dra.spec_files()) == 1
    assert len(dra.claim_dirs()) == 1


async def test_unprepare_of_a_claim_never_prepared_succeeds_and_loses_nothing(dra: DraEnv) -> None:
    dra.claim_with_owner("kept", "pod-uid-1", results=[result(dev(GPUS[0]), memory=GIB, cores=10)])
    await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "kept"))
    dra.claims.gate.clear()  # the second pod's prepare never reaches the driver's files
    dra.kubelet.call_timeout_s = 0.2
    dra.claim_with_owner("never", "pod-uid-2", results=[result(dev(GPUS[1]), memory=GIB, cores=10)])
    with pytest.raises(PrepareError):
        await dra.kubelet.prepare_pod(pod("q", "pod-uid-2", "never"))
    await dra.kubelet.unprepare_pod(pod("q", "pod-uid-2", "never"))  # the kubelet unprepares what it recorded
    dra.claims.gate.set()
    reply = await dra.kubelet.call_unprepare(DRIVER, [ClaimInfo("default", "x", "1234-abcd", frozenset())])
    assert [r.error for r in reply.claims.values()] == [""]
    assert len(dra.spec_files()) == 1
    assert len(dra.claim_dirs()) == 1


async def test_a_prepare_that_fails_half_way_is_fully_removed_by_unprepare(dra: DraEnv) -> None:
    body = dra.claim_with_owner("half", "pod-uid-1", results=[result(dev(GPUS[0]), memory=GIB, cores=10)])
    cdi = dra.settings.cdi_dir
    if cdi.exists():
        cdi.rmdir()
    cdi.write_text("not a directory")  # the spec cannot be written, after the state files were
    with pytest.raises(PrepareError, match="preparing claim"):
        await dra.kubelet.prepare_pod(pod("p", "pod-uid-1", "half"))
    assert dra.claim_dirs()
    assert dra.checkpoint()[body["metadata"]["uid"]]["prepared"] is False
    with pytest.raises(
        PrepareError, match="unpreparing claim"
    ):  # still broken: an error, the kubelet retries
        await dra.kubelet.unprepare_pod(pod("p", "pod-uid-1", "half"))
    cdi.unlink()
    await dra.kubelet.unprepare_pod(pod("p", "pod-uid-1", "half"))
    assert dra.claim_dirs() == []
    assert dra.checkpoint() == {}
    assert list((dra.state / "node" / "tenants").iterdir()) == []


async def test_after_a_plugin_restart_prepare_answers_the_same_and_unprepare_removes_everything(
    dra: DraEnv,
) -> None:
    dra.claim_with_owner("share", "pod-uid-1", results=[result(dev(GPUS[5]), memory=2 * GIB, cores=25)])
    p = pod("p", "pod-uid-1", "share")
    before = (await dra.kubelet.prepare_pod(p))["share"]
    old = dra.kubelet.plugins[DRIVER].generation
    await dra.stop_plugin()
    for spec in dra.spec_files():  # a reboot empties /var/run/cdi; the checkpoint under /var/lib stays
        spec.unlink()
    await dra.start_plugin()
    await dra.kubelet.wait_registered(DRIVER, after=old)  # the new socket registered again
    assert len(dra.spec_files()) == 1  # written again from the checkpoint at start-up
    await dra.kubelet.restart()  # the kubelet's cache comes back unprepared: it prepares again
    await dra.kubelet.wait_registered(DRIVER)
    assert (await dra.kubelet.prepare_pod(p))["share"] == before

    await dra.kubelet.unprepare_pod(p)
    assert dra.spec_files() == []
    assert dra.claim_dirs() == []
    assert dra.checkpoint() == {}
    assert list((dra.state / "node" / "tenants").iterdir()) == []


async def test_a_claim_shared_by_two_pods_is_unprepared_when_the_last_one_goes(dra: DraEnv) -> None:
    dra.create_claim(
        claim(
            "shared", pods=[("a", "u-a"), ("b", "u-b")], results=[result(dev(GPUS[0]), memory=GIB, cores=10)]
        )
    )
    await dra.kubelet.prepare_pod(pod("a", "u-a", "shared"))
    await dra.kubelet.prepare_pod(pod("b", "u-b", "shared"))
    assert dra.kubelet.calls["prepare"] == 1
    await dra.kubelet.unprepare_pod(pod("a", "u-a", "shared"))
    assert len(dra.spec_files()) == 1
    await dra.kubelet.unprepare_pod(pod("b", "u-b", "shared"))
    assert dra.spec_files() == []


async def test_a_removed_registration_socket_is_served_and_registered_again(dra: DraEnv) -> None:
    ep = dra.kubelet.plugins[DRIVER]
    Path(ep.socket).unlink()
    again = await dra.kubelet.wait_registered(DRIVER, after=ep.generation)
    assert again.socket == ep.socket


async def test_a_claim_on_a_gpu_that_failed_is_refused_and_its_neighbours_prepared(dra: DraEnv) -> None:
    assert dra.agent is not None
    lost, fine = GPUS[6], GPUS[7]
    dra.source.unreachable.add(lost.uuid)  # fallen off the bus after the scheduler allocated the claim
    await eventually(lambda: not dra.agent.health.healthy[lost.uuid])
    bad = dra.claim_with_owner("on-lost", "u1", results=[result(dev(lost), memory=GIB, cores=10)])
    good = dra.claim_with_owner("on-fine", "u2", results=[result(dev(fine), memory=GIB, cores=10)])
    reply = await dra.kubelet.call_prepare(DRIVER, [ref_of(bad), ref_of(good)])
    assert "unhealthy" in reply.claims[bad["metadata"]["uid"]].error
    assert reply.claims[good["metadata"]["uid"]].error == ""

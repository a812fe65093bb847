# mypy: disable-error-code="no-untyped-call"
"""Registration, ListAndWatch contents, health reaching ListAndWatch, kubelet restart, node publishing.

Real gRPC on Unix sockets (FakeKubelet), kmock as the API server, a FakeGpuSource.
"""

import asyncio
import time

from tests.builders.plugin import NAMES, a10x4, h200x8
from tests.fakes.gpu_source import FakeGpuSource
from tests.fixtures.plugin_env import eventually
from vcuda.annotations import decode_inventory


async def test_plugin_registers_vcuda_core_with_preferred_allocation_and_prestart(env_factory):
    env = await env_factory()
    ep = env.kubelet.endpoints[NAMES.core]
    assert ep.endpoint == "kube-vgpu-core.sock"
    assert ep.options.pre_start_required
    assert ep.options.get_preferred_allocation_available
    assert NAMES.memory not in env.kubelet.endpoints  # a node extended resource, never a registration


async def test_list_and_watch_sends_100_healthy_slices_per_gpu_with_numa(env_factory):
    env = await env_factory(FakeGpuSource(a10x4()))
    devices = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 400)
    assert {d.health for d in devices} == {"Healthy"}
    first = devices[0]
    assert first.ID == "GPU-node-1-0000::0"
    assert [n.ID for n in first.topology.nodes] == [0]
    assert {d.ID.rpartition("::")[0] for d in devices} == {f"GPU-node-1-{i:04d}" for i in range(4)}


async def test_critical_xid_marks_all_slices_of_that_gpu_unhealthy_within_one_second(env_factory):
    source = FakeGpuSource(a10x4())
    env = await env_factory(source)
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 400)
    started = time.monotonic()
    source.inject_xid("GPU-node-1-0002", 79)
    devices = await env.kubelet.devices_until(
        NAMES.core, lambda d: any(x.health == "Unhealthy" for x in d), timeout=1.0
    )
    assert time.monotonic() - started < 1.0
    bad = {d.ID.rpartition("::")[0] for d in devices if d.health == "Unhealthy"}
    assert bad == {"GPU-node-1-0002"}
    assert sum(d.health == "Unhealthy" for d in devices) == 100


async def test_application_xid_changes_nothing(env_factory):
    source = FakeGpuSource(a10x4())
    env = await env_factory(source)
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 400)
    source.inject_xid("GPU-node-1-0001", 13)
    source.inject_xid("GPU-node-1-0001", 43)
    await asyncio.sleep(0)  # let the events drain; nothing may change
    ep = env.kubelet.endpoints[NAMES.core]
    assert ep.updates.empty() or all(d.health == "Healthy" for d in ep.updates.get_nowait())


async def test_lost_gpu_goes_unhealthy_and_comes_back_when_reachable(env_factory):
    source = FakeGpuSource(a10x4())
    env = await env_factory(source)
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 400)
    source.unreachable.add("GPU-node-1-0003")
    await env.kubelet.devices_until(NAMES.core, lambda d: sum(x.health == "Unhealthy" for x in d) == 100, 1.0)
    source.unreachable.clear()
    await env.kubelet.devices_until(NAMES.core, lambda d: all(x.health == "Healthy" for x in d), 1.0)


async def test_kubelet_restart_leads_to_re_registration_within_two_seconds(env_factory):
    env = await env_factory()
    await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800)
    started = time.monotonic()
    await env.kubelet.restart()
    assert not (env.settings.device_plugin_dir / "kube-vgpu-core.sock").exists()
    await env.kubelet.wait_registered(NAMES.core, timeout=2.0)
    devices = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800, timeout=2.0)
    assert time.monotonic() - started < 2.0
    assert len(devices) == 800
    assert env.agent is not None
    assert env.agent.registrar.registrations == 2


async def test_device_ids_are_stable_across_restarts(env_factory):
    env = await env_factory()
    before = [d.ID for d in await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800)]
    await env.kubelet.restart()
    after = [d.ID for d in await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800, 2.0)]
    assert before == after


async def test_node_gets_vcuda_memory_capacity_inventory_and_labels(env_factory):
    env = await env_factory(FakeGpuSource(h200x8()), device_memory_scaling=0.5)
    await eventually(lambda: NAMES.memory in (env.node().get("status") or {}).get("capacity", {}))
    node = env.node()
    assert node["status"]["capacity"][NAMES.memory] == str(8 * int(143771 * 0.5))
    assert node["status"]["allocatable"][NAMES.memory] == str(8 * int(143771 * 0.5))
    assert node["status"]["capacity"]["cpu"] == "64"  # the patch leaves other resources alone
    inventory = decode_inventory(node["metadata"]["annotations"][NAMES.inventory])
    assert [g.memory_mib for g in inventory.gpus] == [int(143771 * 0.5)] * 8
    labels = node["metadata"]["labels"]
    assert labels[NAMES.label("gpu.product")] == "NVIDIA-H200"
    assert labels[NAMES.label("gpu.count")] == "8"
    assert labels[NAMES.label("gpu.memory")] == "143771"
    assert labels[NAMES.label("cuda.driver.major")] == "580"
    assert labels[NAMES.label("cuda.runtime.major")] == "13"
    assert labels[NAMES.label("gpu.compute.major")] == "9"


async def test_vcuda_memory_is_restored_after_the_node_object_is_recreated(env_factory):
    env = await env_factory(FakeGpuSource(a10x4()))
    await eventually(lambda: NAMES.memory in (env.node().get("status") or {}).get("capacity", {}))
    env.core.delete_node("node-1", _preload_content=False)
    env.core.create_node({"metadata": {"name": "node-1"}}, _preload_content=False)
    await eventually(lambda: NAMES.memory in (env.node().get("status") or {}).get("capacity", {}))
    assert env.node()["status"]["capacity"][NAMES.memory] == str(4 * 23028)


async def test_unhealthy_gpu_leaves_vcuda_memory_and_inventory_health(env_factory):
    source = FakeGpuSource(a10x4())
    env = await env_factory(source)
    await eventually(lambda: NAMES.memory in (env.node().get("status") or {}).get("capacity", {}))
    source.inject_xid("GPU-node-1-0000", 48)
    await eventually(lambda: env.node()["status"]["capacity"][NAMES.memory] == str(3 * 23028))
    inventory = decode_inventory(env.node()["metadata"]["annotations"][NAMES.inventory])
    assert [g.healthy for g in inventory.gpus] == [False, True, True, True]


async def test_uninstall_removes_everything_the_plugin_published(env_factory):
    env = await env_factory(FakeGpuSource(a10x4()))
    await eventually(lambda: NAMES.memory in (env.node().get("status") or {}).get("capacity", {}))
    assert env.agent is not None
    await env.agent.node.uninstall()
    node = env.node()
    assert NAMES.memory not in node["status"].get("capacity", {})
    assert NAMES.memory not in node["status"].get("allocatable", {})
    assert NAMES.inventory not in (node["metadata"].get("annotations") or {})
    assert not [k for k in node["metadata"].get("labels") or {} if k.startswith("nvidia.com/")]

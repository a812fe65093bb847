"""The whole node agent on the FAKE ``a100x4-mig`` node with ``--mig-strategy=mixed``: MIG resources are
registered beside ``vcuda-core``, MIG GPUs stay out of ``vcuda-core`` and the inventory, MIG labels are set;
a MIG layout changed while serving stops the agent (the DaemonSet then starts it on the new layout).

Runs the plugin engineer's PluginEnv (FakeKubelet, kmock API server) with real pynvml over the fake NVML.
"""

import asyncio
import json

from plugin.core.errors import MigLayoutChangedError
from plugin.nvml import Nvml
from tests.builders.plugin import NAMES
from tests.fakes.nvml.harness import fake_nvml_fixture  # noqa: F401 (fixture)
from tests.fixtures.plugin_env import eventually
from vcuda.model import GpuUuid


async def test_mig_instances_are_served_apart_from_vcuda_sharing(fake_nvml, env_factory):
    node = fake_nvml("a100x4-mig")
    nvml = Nvml(event_poll_ms=20)
    nvml.open()
    try:
        env = await env_factory(source=nvml, mig_strategy="mixed")
        core = await env.kubelet.next_devices(NAMES.core)
        mig = await env.kubelet.next_devices("nvidia.com/mig-3g.20gb")

        def labelled() -> bool:
            labels = env.node()["metadata"].get("labels", {})
            return bool(labels.get("nvidia.com/mig-3g.20gb.count") == "2")

        await eventually(labelled)
        meta = env.node()["metadata"]
        inventory = json.loads(meta["annotations"][NAMES.inventory])
    finally:
        nvml.close()

    assert {d.ID.rpartition("::")[0] for d in core} == {node.uuid(3)}  # the only GPU with MIG off
    assert len(mig) == 2
    assert sorted(env.kubelet.endpoints) == [
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-2g.10gb",
        "nvidia.com/mig-3g.20gb",
        NAMES.core,
    ]
    for ep in env.kubelet.endpoints.values():  # Register says what GetDevicePluginOptions says
        assert ep.registered_options == ep.options, ep.resource
    assert meta["labels"]["nvidia.com/mig.capable"] == "true"
    assert meta["labels"]["nvidia.com/mig.strategy"] == "mixed"
    assert [g["uuid"] for g in inventory["gpus"]] == [node.uuid(3)]  # MIG GPUs are never shared
    listed = {m["uuid"]: m for m in inventory["mig"]}  # their instances are listed apart
    assert {d.ID for d in mig} <= listed.keys()
    assert {m["parent"] for m in listed.values()} <= {node.uuid(i) for i in range(3)}
    assert {m["profile"] for m in listed.values()} == {"1g.5gb", "2g.10gb", "3g.20gb"}


async def test_a_changed_mig_layout_stops_the_agent_so_the_daemonset_restarts_it(fake_nvml, env_factory):
    node = fake_nvml("a100x4-mig")
    nvml = Nvml(event_poll_ms=20)
    nvml.open()
    try:
        env = await env_factory(source=nvml, mig_strategy="mixed", mig_rediscover_seconds=0.05)
        await env.kubelet.next_devices(NAMES.core)
        await asyncio.sleep(0.3)  # several re-discoveries of an unchanged layout
        assert env.task is not None
        assert not env.task.done()
        nvml.set_mig_mode(GpuUuid(node.uuid(3)), enabled=True)  # someone runs `nvidia-smi -mig 1` on GPU 3
        done, _ = await asyncio.wait([env.task], timeout=10)
    finally:
        nvml.close()

    assert done, "the agent kept serving a stale MIG layout"
    error = env.task.exception()
    assert isinstance(error, MigLayoutChangedError)
    assert f"GPU {node.uuid(3)}: MIG mode off" in str(error)

# mypy: disable-error-code="no-untyped-call"
"""The plugin over the real pynvml code path: ``plugin.nvml.Nvml`` on the FAKE ``libnvidia-ml.so.1``
(tests/fakes/nvml), with the FakeKubelet and kmock: discovery reaches ListAndWatch and the Node, and an
XID injected into the fake library reaches ListAndWatch within 1 s."""

import time

from plugin.nvml import Nvml
from tests.builders.plugin import NAMES
from tests.fakes.nvml.harness import fake_nvml_fixture  # noqa: F401 (registers the fixture "fake_nvml")
from tests.fixtures.plugin_env import eventually
from vcuda.annotations import decode_inventory


async def test_h100_node_from_fake_nvml_is_advertised_and_published(env_factory, fake_nvml):
    fake_nvml("h100x8")
    nvml = Nvml()
    nvml.open()
    try:
        env = await env_factory(nvml)
        devices = await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 800, timeout=10)
        assert {d.health for d in devices} == {"Healthy"}
        assert env.agent is not None
        uuids = [g.uuid for g in env.agent.node_gpus.gpus]
        assert {d.ID.rpartition("::")[0] for d in devices} == set(uuids)
        await eventually(lambda: NAMES.inventory in (env.node()["metadata"].get("annotations") or {}))
        inventory = decode_inventory(env.node()["metadata"]["annotations"][NAMES.inventory])
        assert len(inventory.gpus) == 8
        assert any(link.nvlinks > 0 for link in inventory.links)
    finally:
        nvml.close()


async def test_xid_79_injected_into_fake_nvml_reaches_list_and_watch(env_factory, fake_nvml):
    node = fake_nvml("a10x4")
    nvml = Nvml()
    nvml.open()
    try:
        env = await env_factory(nvml)
        await env.kubelet.devices_until(NAMES.core, lambda d: len(d) == 400, timeout=10)
        bad = node.uuid(2)
        started = time.monotonic()
        node.inject_xid(bad, 79)
        devices = await env.kubelet.devices_until(
            NAMES.core, lambda d: any(x.health == "Unhealthy" for x in d), timeout=1.0
        )
        assert time.monotonic() - started < 1.0
        assert {d.ID.rpartition("::")[0] for d in devices if d.health == "Unhealthy"} == {bad}
    finally:
        nvml.close()

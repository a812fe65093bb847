"""The watchdog as the node agent runs it: started by ``Agent.run`` when the GPU source is NVML, watching only
the GPUs shared through the shim (MIG-enabled GPUs serve whole instances to pods without a shim), and off with
``--watchdog-interval-seconds=0``.

Real pynvml over the FAKE ``a100x4-mig`` node (GPUs 0-2 MIG on, GPU 3 off), the plugin engineer's PluginEnv
(FakeKubelet, kmock). The processes use PIDs that do not exist on this machine, so ``/proc`` names no pod:
host processes, reported with empty labels and no event.
"""

import asyncio

from plugin.nvml import Nvml
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)
from tests.fixtures.plugin_env import eventually

GONE_PID = 5_000_000  # above the largest pid_max (4194304): never a live process


async def test_the_agent_runs_the_watchdog_on_shared_gpus_only(fake_nvml, env_factory):
    node = fake_nvml("a100x4-mig")
    node.set_processes(
        node.uuid(0), [FakeProcess(GONE_PID + 1, 1024, gpu_instance_id=1, compute_instance_id=0)]
    )
    node.set_processes(node.uuid(3), [FakeProcess(GONE_PID, 2048)])
    nvml = Nvml(event_poll_ms=20)
    nvml.open()
    try:
        env = await env_factory(source=nvml, mig_strategy="mixed", watchdog_interval_seconds=0.05)
        assert env.agent is not None
        await eventually(lambda: env.agent.violations.violation_counts(), timeout=5)
        await asyncio.sleep(0.2)  # more rounds: still one episode, and the MIG GPU's process never counts
        assert env.agent.violations.violation_counts() == {("", "", "", "unmanaged"): 1}
    finally:
        nvml.close()


async def test_interval_zero_turns_the_watchdog_off(fake_nvml, env_factory):
    fake_nvml("a10x4")
    nvml = Nvml(event_poll_ms=20)
    nvml.open()
    try:
        env = await env_factory(source=nvml, watchdog_interval_seconds=0)
        assert env.agent is not None
        assert env.agent.watchdog is None
    finally:
        nvml.close()

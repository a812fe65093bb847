# mypy: disable-error-code="no-untyped-call"
"""The watchdog's counter as ``kube-vgpu-plugin`` serves it: the REAL plugin process (its composition root)
over the FAKE ``libnvidia-ml.so.1``, a FakeKubelet and kmock. A compute process appears on a shared GPU with
a PID that does not exist on this machine (so no pod owns it: a host process); ``/metrics`` then shows
``kube_vgpu_container_limit_violations_total{reason="unmanaged"}`` at 1, and it stays at 1 (one episode)."""

import asyncio

import pytest

from tests.builders.plugin import KEY, NAMES
from tests.fakes.kubelet import FakeKubelet
from tests.fakes.nvml.harness import FakeNvml, FakeProcess
from tests.fixtures.plugin_env import NODE
from tests.integration.plugin.test_node_exporter import scrape, scrape_until
from tests.sim.node import free_port
from tests.sim.processes import Child, console_script, write_kubeconfig

COUNTER = "kube_vgpu_container_limit_violations_total"
GONE_PID = 5_000_000  # above the largest pid_max (4194304): never a live process


@pytest.fixture
async def plugin_with_watchdog(short_dir, kmock_cluster):
    kmock_cluster.core().create_node({"metadata": {"name": NODE}}, _preload_content=False)
    nvml = FakeNvml.write(short_dir / "nvml", "a10x4")
    kubelet = FakeKubelet(short_dir / "dp", short_dir / "pr" / "kubelet.sock")
    await kubelet.start()
    key_file = short_dir / "key"
    key_file.write_bytes(KEY)
    port = free_port()
    argv = [
        *console_script("kube-vgpu-plugin"),
        f"--node-name={NODE}",
        f"--device-plugin-dir={kubelet.plugin_dir}",
        f"--pod-resources-socket={kubelet.pod_resources_socket}",
        f"--state-dir={short_dir / 'state'}",
        f"--shim-dir={short_dir / 'shim'}",
        f"--cdi-dir={short_dir / 'cdi'}",
        f"--assignment-key-file={key_file}",
        f"--metrics-port={port}",
        "--health-port=0",
        "--watchdog-interval-seconds=0.1",
    ]
    env = {**nvml.env(), "KUBECONFIG": str(write_kubeconfig(short_dir / "kubeconfig", kmock_cluster.url))}
    child = Child("plugin", argv, env, short_dir / "plugin.log")
    await child.start()
    try:
        await kubelet.wait_registered(NAMES.core, timeout=20)
        yield nvml, port, child
    finally:
        await child.stop()
        await kubelet.stop()


async def test_a_gpu_process_of_no_pod_reaches_the_violation_counter(plugin_with_watchdog):
    nvml, port, child = plugin_with_watchdog
    nvml.set_processes(nvml.uuid(1), [FakeProcess(GONE_PID, 2048)])

    def counted(metrics):
        return [(labels, value) for labels, value in metrics.get(COUNTER, [])]

    metrics = await scrape_until(port, counted, child, timeout=15)
    assert counted(metrics) == [
        ({"node": NODE, "namespace": "", "pod": "", "container": "", "reason": "unmanaged"}, 1.0)
    ]
    await asyncio.sleep(0.5)  # five more rounds: still the same episode
    assert counted(await asyncio.to_thread(scrape, port)) == counted(metrics)
    assert "watchdog: unmanaged host" in child.log_tail()

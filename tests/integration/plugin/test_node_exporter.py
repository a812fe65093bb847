# mypy: disable-error-code="no-untyped-call"
"""The node exporter as ``kube-vgpu-plugin`` starts it: the REAL plugin process (its composition root,
``plugin/__main__.py``) over the FAKE ``libnvidia-ml.so.1``, a FakeKubelet and kmock; ``/metrics`` is scraped
over HTTP for the per-GPU series, and an XID injected into the fake library reaches the XID counter and the
health gauge. ``--metrics-port=0`` serves nothing."""

import asyncio
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from plugin.__main__ import node_exporter
from plugin.metrics.sources import XidTally
from tests.builders.plugin import KEY, NAMES, a10x4
from tests.fakes.gpu_source import FakeGpuSource
from tests.fakes.kubelet import FakeKubelet
from tests.fakes.nvml.harness import FakeNvml
from tests.fixtures.plugin_env import NODE, make_settings
from tests.sim.node import free_port
from tests.sim.processes import Child, console_script, write_kubeconfig


def scrape(port: int) -> dict[str, list[tuple[dict[str, str], float]]]:
    """metric sample name -> [(labels, value)]; empty when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return out


async def scrape_until(port, predicate, child: Child, timeout: float = 20.0):
    """Scrape until ``predicate(metrics)`` holds; bounded, and fails at once if the plugin exited."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = await asyncio.to_thread(scrape, port)
        if metrics and predicate(metrics):
            return metrics
        if not child.alive:
            raise AssertionError(f"the plugin exited:\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"/metrics never matched within {timeout} s:\n{child.log_tail()}")
        await asyncio.sleep(0.1)


def by_gpu(metrics, name):
    return {labels["gpu_uuid"]: (labels, value) for labels, value in metrics.get(name, [])}


@pytest.fixture
async def plugin_process(short_dir, kmock_cluster):
    """The real plugin (child process) on fake NVML a10x4, registered with a FakeKubelet."""
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
        "--health-probe-seconds=0.1",
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


async def test_the_plugin_serves_per_gpu_series_from_nvml_on_its_metrics_port(plugin_process):
    nvml, port, child = plugin_process
    busy = nvml.uuid(1)
    nvml.set_utilization(busy, gpu=42)
    metrics = await scrape_until(
        port, lambda m: len(m.get("kube_vgpu_gpu_memory_total_bytes", [])) == 4, child
    )
    total = by_gpu(metrics, "kube_vgpu_gpu_memory_total_bytes")
    assert set(total) == set(nvml.uuids)
    labels, value = total[nvml.uuid(0)]
    assert labels["node"] == NODE
    assert labels["gpu_index"] == "0"
    assert "A10" in labels["model"]
    assert value > 20 * 2**30
    assert set(by_gpu(metrics, "kube_vgpu_gpu_memory_used_bytes")) == set(nvml.uuids)
    assert {u: v for u, (_, v) in by_gpu(metrics, "kube_vgpu_gpu_healthy").items()} == dict.fromkeys(
        nvml.uuids, 1.0
    )
    up = {labels["source"]: value for labels, value in metrics["kube_vgpu_exporter_source_up"]}
    assert up == {"state": 1.0, "nvml": 1.0, "podresources": 1.0}
    metrics = await scrape_until(
        port, lambda m: by_gpu(m, "kube_vgpu_gpu_utilization_ratio").get(busy, ({}, 0))[1] == 0.42, child
    )
    assert not any(name.startswith(("python_", "process_")) for name in metrics)  # its own registry


async def test_an_xid_reaches_the_xid_counter_and_the_health_gauge(plugin_process):
    nvml, port, child = plugin_process
    bad = nvml.uuid(2)
    await scrape_until(port, lambda m: len(m.get("kube_vgpu_gpu_healthy", [])) == 4, child)
    nvml.inject_xid(bad, 79)

    def xid_seen(m):
        counts = [v for labels, v in m.get("kube_vgpu_gpu_xid_errors_total", []) if labels["gpu_uuid"] == bad]
        return counts == [1.0] and by_gpu(m, "kube_vgpu_gpu_healthy")[bad][1] == 0.0

    metrics = await scrape_until(port, xid_seen, child, timeout=10)
    (labels, _), *_ = (s for s in metrics["kube_vgpu_gpu_xid_errors_total"] if s[0]["gpu_uuid"] == bad)
    assert labels["xid"] == "79"
    assert labels["gpu_index"] == "2"
    healthy = {u: v for u, (_, v) in by_gpu(metrics, "kube_vgpu_gpu_healthy").items()}
    assert healthy == {**dict.fromkeys(nvml.uuids, 1.0), bad: 0.0}


def test_metrics_port_zero_serves_nothing(short_dir):
    settings = make_settings(short_dir, metrics_port=0)
    with node_exporter(settings, FakeGpuSource(a10x4()), a10x4().gpus, XidTally(), None) as port:
        assert port == 0

"""The exporter over real pynvml and the FAKE NVML (tests/fakes/nvml): processes the fake reports by host PID
are attributed through a fake /proc tree (cgroup v2 and v1) to containers in a fake state directory."""

import pytest

from plugin.metrics.exporter import NodeCollector
from plugin.metrics.nvml_telemetry import NvmlTelemetry
from plugin.nvml import Nvml
from tests.fakes.node import (
    GIB,
    HOST_PROCESS,
    MIB,
    FakeContainer,
    FakeNodeFs,
    cid,
    uid,
    v1_cgroupfs,
    v2_systemd,
)
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)


@pytest.fixture
def node(fake_nvml, tmp_path):
    fake = fake_nvml("a10x4")
    with Nvml() as nvml:
        yield fake, nvml


def samples(collector: NodeCollector, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in collector.collect()
        for s in family.samples
        if s.name == name
    }


def test_fake_nvml_processes_are_attributed_to_their_containers(node, tmp_path):
    fake, nvml = node
    g0, g1 = fake.uuid(0), fake.uuid(1)
    fs = FakeNodeFs(tmp_path / "node")
    fs.add_container(FakeContainer(uid(1), "a", "train", "t", [(g0, 8 * GIB, 50, 50)]))
    fs.add_container(FakeContainer(uid(2), "b", "serve", "s", [(g1, 4 * GIB, 20, 20)]))
    fs.add_process(4242, v2_systemd(uid(1), cid(1)))
    fs.add_process(4243, v2_systemd(uid(1), cid(1)))
    fs.add_process(5151, v1_cgroupfs(uid(2), cid(2)))
    fs.add_process(99, HOST_PROCESS)
    fake.set_processes(
        g0, [FakeProcess(4242, 1024, sm=30), FakeProcess(4243, 512, sm=5), FakeProcess(99, 256)]
    )
    fake.set_processes(g1, [FakeProcess(5151, 2048, sm=20)])
    fake.set_utilization(g0, gpu=35)
    collector = NodeCollector(node="n", state_dir=fs.state_dir, root=fs.root, telemetry=NvmlTelemetry(nvml))

    def ctr(ns: str, pod: str, c: str, g: str) -> tuple[tuple[str, str], ...]:
        return (("container", c), ("gpu_uuid", g), ("namespace", ns), ("node", "n"), ("pod", pod))

    assert samples(collector, "kube_vgpu_container_memory_used_bytes") == {
        ctr("a", "train", "t", g0): 1536 * MIB,
        ctr("b", "serve", "s", g1): 2048 * MIB,
    }
    util = samples(collector, "kube_vgpu_container_utilization_ratio")
    assert {k: round(v, 6) for k, v in util.items()} == {
        ctr("a", "train", "t", g0): 0.35,
        ctr("b", "serve", "s", g1): 0.2,
    }
    gpu0 = (("gpu_index", "0"), ("gpu_uuid", g0), ("model", fake.gpus[0]["name"]), ("node", "n"))
    assert samples(collector, "kube_vgpu_gpu_memory_used_bytes")[gpu0] == (1024 + 512 + 256) * MIB
    assert samples(collector, "kube_vgpu_gpu_utilization_ratio")[gpu0] == 0.35
    assert samples(collector, "kube_vgpu_exporter_unattributed_processes") == {
        (("gpu_uuid", g0), ("node", "n")): 1
    }


def test_a_lost_gpu_leaves_the_others_reported(node, tmp_path):
    fake, nvml = node
    fake.lose_gpu(fake.uuid(3))
    collector = NodeCollector(
        node="n", state_dir=tmp_path / "none", root=tmp_path, telemetry=NvmlTelemetry(nvml)
    )
    totals = samples(collector, "kube_vgpu_gpu_memory_total_bytes")
    assert sorted(dict(k)["gpu_index"] for k in totals) == ["0", "1", "2"]
    assert samples(collector, "kube_vgpu_exporter_source_up")[(("node", "n"), ("source", "nvml"))] == 1

"""NodeCollector end to end on a fake node: exact metric names, labels and values.

The node: two H100s; pod team-a/train (one container on both GPUs, two processes, cgroup v2 systemd
containerd); pod team-b/serve (two GPU containers on GPU 1, cgroup v1 cgroupfs docker, told apart by the shim's
host PID and by namespaced PID + start time); a host process on GPU 0. Then containers go away (kubelet stops
listing one, the plugin removes another's directory), and NVML or the kubelet fail.
"""

import pytest

from plugin.core.gpu import XidEvent
from plugin.metrics.exporter import NodeCollector
from plugin.metrics.sources import ContainerName, ProcessSample, XidTally
from tests.fakes.node import (
    GIB,
    HOST_PROCESS,
    MIB,
    FakeContainer,
    FakeNodeFs,
    FakePodResources,
    FakeSlot,
    FakeTelemetry,
    cid,
    h100,
    uid,
    v1_cgroupfs,
    v2_systemd,
)
from vcuda.model import GpuUuid

NODE = "gpu-node-1"
G0, G1 = "GPU-h100-0", "GPU-h100-1"
H100 = "NVIDIA H100 80GB HBM3"

TRAIN = FakeContainer(
    uid(1), "team-a", "train", "trainer",
    [(G0, 20 * GIB, 50, 50), (G1, 20 * GIB, 50, 100)],
    [FakeSlot(1, [(4 * GIB, 100, 2_500_000_000, 1), (GIB, 10, 0, 0)], host_pid=101),
     FakeSlot(2, [(2 * GIB, 50, 500_000_000, 0), (0, 0, 0, 0)], host_pid=102)],
)  # fmt: skip
MODEL = FakeContainer(
    uid(2), "team-b", "serve", "model", [(G1, 10 * GIB, 30, 30)],
    [FakeSlot(1, [(8 * GIB, 7, 0, 0)], host_pid=201, start_time=444)],
)  # fmt: skip
SIDECAR = FakeContainer(
    uid(2), "team-b", "serve", "sidecar", [(G1, 2 * GIB, 10, 10)],
    [FakeSlot(7, [(GIB, 3, 1_000_000_000, 2)], host_pid=0, start_time=555)],
)  # fmt: skip


def processes() -> list[ProcessSample]:
    G = GpuUuid  # noqa: N806
    return [
        ProcessSample(G(G0), 101, 5 * GIB, 0.3),
        ProcessSample(G(G1), 101, 1 * GIB, 0.1),
        ProcessSample(G(G0), 102, 2 * GIB, 0.2),
        ProcessSample(G(G0), 102, 2 * GIB, 0.2),  # NVML listed it twice: counted once
        ProcessSample(G(G1), 201, 8 * GIB, 0.25),
        ProcessSample(G(G1), 202, 1 * GIB, 0.05),
        ProcessSample(G(G0), 300, 512 * MIB, 0.0),  # host process
    ]


@pytest.fixture
def node(tmp_path):
    fs = FakeNodeFs(tmp_path)
    for c in (TRAIN, MODEL, SIDECAR):
        fs.add_container(c)
    fs.add_process(101, v2_systemd(uid(1), cid(11)), ns_pid=1)
    fs.add_process(102, v2_systemd(uid(1), cid(11)), ns_pid=2)
    fs.add_process(201, v1_cgroupfs(uid(2), cid(21)), ns_pid=1, start_time=444)
    fs.add_process(202, v1_cgroupfs(uid(2), cid(22)), ns_pid=7, start_time=555)
    fs.add_process(300, HOST_PROCESS)
    telemetry = FakeTelemetry(
        [h100(0, used=7 * GIB + 512 * MIB, util=0.5), h100(1, used=10 * GIB, util=0.4)], processes()
    )
    kubelet = FakePodResources(
        {ContainerName(c.namespace, c.pod, c.container) for c in (TRAIN, MODEL, SIDECAR)}
    )
    health = XidTally()
    health.set_healthy(GpuUuid(G0), True)
    health.set_healthy(GpuUuid(G1), False)
    for uuid, xid in ((G1, 79), (G1, 79), (G0, 13)):
        health.record(XidEvent(GpuUuid(uuid), xid))
    collector = NodeCollector(
        node=NODE,
        state_dir=fs.state_dir,
        root=tmp_path,
        telemetry=telemetry,
        pod_resources=kubelet,
        health=health,
    )
    return fs, collector, telemetry, kubelet


def scrape(collector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in collector.collect():
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_name(samples, name) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: round(v, 9) for (n, labels), v in samples.items() if n == name}


def ctr(ns: str, pod: str, container: str, gpu: str | None = None) -> tuple[tuple[str, str], ...]:
    labels = {"node": NODE, "namespace": ns, "pod": pod, "container": container}
    if gpu:
        labels["gpu_uuid"] = gpu
    return tuple(sorted(labels.items()))


def gpu(uuid: str, **extra: str) -> tuple[tuple[str, str], ...]:
    index = uuid[-1]
    return tuple(sorted({"node": NODE, "gpu_uuid": uuid, "gpu_index": index, "model": H100, **extra}.items()))


T0, T1 = ctr("team-a", "train", "trainer", G0), ctr("team-a", "train", "trainer", G1)
M1, S1 = ctr("team-b", "serve", "model", G1), ctr("team-b", "serve", "sidecar", G1)

EXPECTED_CONTAINER = {
    "kube_vgpu_container_memory_used_bytes": {T0: 7 * GIB, T1: GIB, M1: 8 * GIB, S1: GIB},
    "kube_vgpu_container_shim_memory_used_bytes": {T0: 6 * GIB, T1: GIB, M1: 8 * GIB, S1: GIB},
    "kube_vgpu_container_memory_limit_bytes": {T0: 20 * GIB, T1: 20 * GIB, M1: 10 * GIB, S1: 2 * GIB},
    "kube_vgpu_container_utilization_ratio": {T0: 0.5, T1: 0.1, M1: 0.25, S1: 0.05},
    "kube_vgpu_container_core_limit_ratio": {T0: 0.5, T1: 0.5, M1: 0.3, S1: 0.1},
    "kube_vgpu_container_core_soft_limit_ratio": {T0: 0.5, T1: 1.0, M1: 0.3, S1: 0.1},
    "kube_vgpu_container_throttled_seconds_total": {T0: 3.0, T1: 0.0, M1: 0.0, S1: 1.0},
    "kube_vgpu_container_refused_allocations_total": {T0: 1, T1: 0, M1: 0, S1: 2},
    "kube_vgpu_container_launches_total": {T0: 150, T1: 10, M1: 7, S1: 3},
    "kube_vgpu_container_processes": {
        ctr("team-a", "train", "trainer"): 2,
        ctr("team-b", "serve", "model"): 1,
        ctr("team-b", "serve", "sidecar"): 1,
    },
}

EXPECTED_GPU = {
    "kube_vgpu_gpu_memory_used_bytes": {gpu(G0): 7 * GIB + 512 * MIB, gpu(G1): 10 * GIB},
    "kube_vgpu_gpu_memory_total_bytes": {gpu(G0): 80 * GIB, gpu(G1): 80 * GIB},
    "kube_vgpu_gpu_utilization_ratio": {gpu(G0): 0.5, gpu(G1): 0.4},
    "kube_vgpu_gpu_cores_allocated_ratio": {gpu(G0): 0.5, gpu(G1): 0.9},
    "kube_vgpu_gpu_memory_allocated_bytes": {gpu(G0): 20 * GIB, gpu(G1): 32 * GIB},
    "kube_vgpu_gpu_containers": {gpu(G0): 1, gpu(G1): 3},
    "kube_vgpu_gpu_healthy": {gpu(G0): 1, gpu(G1): 0},
    "kube_vgpu_gpu_xid_errors_total": {gpu(G0, xid="13"): 1, gpu(G1, xid="79"): 2},
}

EXPECTED_EXPORTER = {
    "kube_vgpu_exporter_source_up": {
        (("node", NODE), ("source", s)): 1 for s in ("nvml", "podresources", "state")
    },
    "kube_vgpu_exporter_unattributed_processes": {(("gpu_uuid", G0), ("node", NODE)): 1},
    "kube_vgpu_exporter_unreadable_files": {(("node", NODE),): 0},
}


def test_every_series_of_a_busy_node_has_exact_names_labels_and_values(node):
    _, collector, _, _ = node
    samples = scrape(collector)
    expected = {**EXPECTED_CONTAINER, **EXPECTED_GPU, **EXPECTED_EXPORTER}
    names = {n for n, _ in samples} - {"kube_vgpu_exporter_scrape_duration_seconds"}
    assert names == set(expected)
    for name, series in expected.items():
        assert by_name(samples, name) == series, name
    assert by_name(samples, "kube_vgpu_exporter_scrape_duration_seconds").keys() == {(("node", NODE),)}


def test_container_the_kubelet_no_longer_lists_disappears_though_its_dir_remains(node):
    _, collector, _, kubelet = node
    kubelet.live.discard(ContainerName("team-b", "serve", "sidecar"))
    samples = scrape(collector)
    assert S1 not in by_name(samples, "kube_vgpu_container_memory_limit_bytes")
    assert S1 not in by_name(samples, "kube_vgpu_container_memory_used_bytes")
    assert ctr("team-b", "serve", "sidecar") not in by_name(samples, "kube_vgpu_container_processes")
    assert by_name(samples, "kube_vgpu_gpu_containers")[gpu(G1)] == 2
    assert by_name(samples, "kube_vgpu_gpu_memory_allocated_bytes")[gpu(G1)] == 30 * GIB
    # its process now belongs to no live container: visible, not hidden in a neighbour
    assert (
        by_name(samples, "kube_vgpu_exporter_unattributed_processes")[(("gpu_uuid", G1), ("node", NODE))] == 1
    )


def test_container_whose_directory_was_removed_disappears(node):
    fs, collector, telemetry, _ = node
    fs.remove_container(TRAIN)
    telemetry.processes = [p for p in processes() if p.host_pid not in (101, 102)]
    samples = scrape(collector)
    for name in EXPECTED_CONTAINER:
        assert not [labels for labels in by_name(samples, name) if ("pod", "train") in labels], name
    assert by_name(samples, "kube_vgpu_gpu_cores_allocated_ratio") == {gpu(G0): 0.0, gpu(G1): 0.4}


def test_nvml_failure_drops_only_nvml_series_and_keeps_gpu_labels(node):
    _, collector, telemetry, _ = node
    scrape(collector)  # learns the GPUs' index and model
    telemetry.failing = True
    samples = scrape(collector)
    names = {n for n, _ in samples}
    assert "kube_vgpu_container_memory_used_bytes" not in names
    assert "kube_vgpu_gpu_memory_total_bytes" not in names
    assert (
        by_name(samples, "kube_vgpu_container_memory_limit_bytes")
        == EXPECTED_CONTAINER["kube_vgpu_container_memory_limit_bytes"]
    )
    assert (
        by_name(samples, "kube_vgpu_gpu_cores_allocated_ratio")
        == EXPECTED_GPU["kube_vgpu_gpu_cores_allocated_ratio"]
    )
    assert by_name(samples, "kube_vgpu_exporter_source_up")[(("node", NODE), ("source", "nvml"))] == 0


def test_kubelet_failure_keeps_every_container_from_the_state_dir(node):
    _, collector, _, kubelet = node
    kubelet.failing = True
    kubelet.live.clear()
    samples = scrape(collector)
    assert (
        by_name(samples, "kube_vgpu_container_memory_limit_bytes")
        == EXPECTED_CONTAINER["kube_vgpu_container_memory_limit_bytes"]
    )
    assert by_name(samples, "kube_vgpu_exporter_source_up")[(("node", NODE), ("source", "podresources"))] == 0


def test_process_on_a_gpu_outside_its_config_is_shown_on_that_gpu(node):
    _, collector, telemetry, _ = node
    telemetry.processes = [ProcessSample(GpuUuid(G0), 201, GIB, 0.1)]
    used = by_name(scrape(collector), "kube_vgpu_container_memory_used_bytes")
    assert used[ctr("team-b", "serve", "model", G0)] == GIB
    assert used[M1] == 0


def test_node_without_any_source_but_the_state_dir(tmp_path):
    fs = FakeNodeFs(tmp_path)
    fs.add_container(MODEL)
    samples = scrape(NodeCollector(node=NODE, state_dir=fs.state_dir, root=tmp_path))
    assert by_name(samples, "kube_vgpu_gpu_cores_allocated_ratio") == {
        (("gpu_index", ""), ("gpu_uuid", G1), ("model", ""), ("node", NODE)): 0.3
    }
    assert by_name(samples, "kube_vgpu_exporter_source_up") == {(("node", NODE), ("source", "state")): 1}


def test_a_dra_claim_is_reported_while_a_listed_container_uses_it(node):
    """DRA: the claim's directory (container ``dra-<claim-uid>``) lives while PodResources lists a container
    using the claim; its process (container ID of "cuda", which has no directory of its own) is its usage."""
    fs, _, telemetry, kubelet = node
    claim = FakeContainer(uid(3), "team-c", "infer", "dra-u3", [(G0, 4 * GIB, 30, 30)], [])
    fs.add_container(claim)
    fs.add_process(301, v2_systemd(uid(3), cid(31)), ns_pid=1)
    telemetry.processes = [*processes(), ProcessSample(GpuUuid(G0), 301, 3 * GIB, 0.1)]
    collector = NodeCollector(
        node=NODE, state_dir=fs.state_dir, root=fs.root, telemetry=telemetry, pod_resources=kubelet,
        container_ids=lambda: {cid(31): "cuda"},
    )  # fmt: skip
    kubelet.live.add(ContainerName("team-c", "infer", "cuda"))
    kubelet.claims = {ContainerName("team-c", "infer", "cuda"): frozenset({"u3"})}
    samples = scrape(collector)
    assert (
        by_name(samples, "kube_vgpu_container_memory_limit_bytes")[ctr("team-c", "infer", "dra-u3", G0)]
        == 4 * GIB
    )
    assert (
        by_name(samples, "kube_vgpu_container_memory_used_bytes")[ctr("team-c", "infer", "dra-u3", G0)]
        == 3 * GIB
    )
    kubelet.claims = {}
    gone = scrape(collector)
    assert ctr("team-c", "infer", "dra-u3", G0) not in by_name(gone, "kube_vgpu_container_memory_limit_bytes")

"""Discovery through real pynvml over the FAKE NVML, for every shipped node description.

Case matrix: node in {h100x8, h200x8, a10x4, a100x4-mig} x {GPU identity (UUID, index, minor, model, memory,
PCI bus id, NUMA node, compute capability), versions, PCIe level per pair, NVLinks per pair, MIG mode and
instances}; plus a lost GPU left out of discovery.
"""

from itertools import combinations
from typing import Any

import pytest

from plugin.core.gpu import GpuSource, NodeGpus
from plugin.nvml import Nvml
from tests.fakes.nvml.harness import NODES, fake_nvml_fixture, node_description  # noqa: F401 (fixture)
from vcuda.model import PcieLevel


def discover(fake_nvml, node: str) -> tuple[dict[str, Any], NodeGpus]:
    fake_nvml(node)
    with Nvml() as nvml:
        return node_description(node), nvml.discover()


@pytest.mark.parametrize("node", NODES)
def test_discovery_reports_every_gpu_as_described(fake_nvml, node):
    description, found = discover(fake_nvml, node)

    expected = [
        (
            g["uuid"],
            i,
            g["minor"],
            g["name"],
            g["memory_mib"],
            g["pci_bus_id"],
            g["numa_node"],
            tuple(g["compute_capability"]),
        )
        for i, g in enumerate(description["gpus"])
    ]
    got = [
        (g.uuid, g.index, g.minor, g.model, g.memory_mib, g.pci_bus_id, g.numa_node, g.compute_capability)
        for g in found.gpus
    ]
    assert got == expected


@pytest.mark.parametrize("node", NODES)
def test_discovery_reports_driver_and_cuda_versions(fake_nvml, node):
    _, found = discover(fake_nvml, node)

    assert (found.driver_version, found.cuda_version) == ("580.95.05", "13.0")


@pytest.mark.parametrize("node", NODES)
def test_every_pair_has_its_pcie_level(fake_nvml, node):
    description, found = discover(fake_nvml, node)
    uuids = [g["uuid"] for g in description["gpus"]]
    expected = {
        tuple(sorted((uuids[a], uuids[b]))): PcieLevel(description["topology"][a][b])
        for a, b in combinations(range(len(uuids)), 2)
    }

    assert {(link.a, link.b): link.pcie for link in found.links} == expected


@pytest.mark.parametrize(
    ("node", "nvlinks_per_pair"),
    [
        pytest.param("h100x8", 18, id="8 x H100 on NVSwitch -> 18 links for every pair"),
        pytest.param("h200x8", 18, id="8 x H200 on NVSwitch -> 18 links for every pair"),
        pytest.param("a10x4", 0, id="4 x A10 on PCIe -> no NVLink"),
        pytest.param("a100x4-mig", 4, id="HGX A100 4-GPU -> 4 direct links per pair"),
    ],
)
def test_every_pair_has_its_nvlink_count(fake_nvml, node, nvlinks_per_pair):
    _, found = discover(fake_nvml, node)
    n = len(found.gpus)

    assert len(found.links) == n * (n - 1) // 2
    assert {link.nvlinks for link in found.links} == {nvlinks_per_pair}
    assert all(link.a < link.b for link in found.links)


def test_a100_mig_node_reports_modes_and_instances(fake_nvml):
    _, found = discover(fake_nvml, "a100x4-mig")

    summary = [(g.mig_enabled, g.mig_pending, [m.profile for m in g.mig_instances]) for g in found.gpus]
    assert summary == [
        (True, True, ["3g.20gb", "3g.20gb"]),
        (True, True, ["2g.10gb", "2g.10gb", "2g.10gb", "1g.5gb"]),
        (True, True, []),
        (False, False, []),
    ]


def test_mig_instances_carry_ids_memory_multiprocessors_and_parent(fake_nvml):
    _, found = discover(fake_nvml, "a100x4-mig")
    gpu = found.gpus[1]

    got = [
        (m.gpu_instance_id, m.compute_instance_id, m.memory_mib, m.multiprocessors) for m in gpu.mig_instances
    ]
    assert got == [(1, 0, 9856, 28), (2, 0, 9856, 28), (3, 0, 9856, 28), (4, 0, 4864, 14)]
    assert {m.parent_uuid for m in gpu.mig_instances} == {gpu.uuid}
    assert all(m.uuid.startswith("MIG-") for m in gpu.mig_instances)
    assert len({m.uuid for m in gpu.mig_instances}) == 4


def test_mig_uuids_are_stable_across_nvml_sessions(fake_nvml):
    fake_nvml("a100x4-mig")
    with Nvml() as nvml:
        first = nvml.discover()
    with Nvml() as nvml:
        second = nvml.discover()

    assert first == second


@pytest.mark.parametrize("node", ["h100x8", "h200x8", "a10x4"])
def test_gpus_without_mig_report_mig_off_and_no_instances(fake_nvml, node):
    _, found = discover(fake_nvml, node)

    assert {(g.mig_enabled, g.mig_pending, g.mig_instances) for g in found.gpus} == {(False, False, ())}


def test_a_lost_gpu_is_left_out_of_discovery(fake_nvml):
    node = fake_nvml("a10x4")
    node.lose_gpu(node.uuid(2))

    with Nvml() as nvml:
        found = nvml.discover()

    assert [g.uuid for g in found.gpus] == [node.uuid(0), node.uuid(1), node.uuid(3)]
    assert len(found.links) == 3


def test_nvml_is_a_gpu_source():
    source: GpuSource = Nvml()  # checked by mypy too

    assert callable(source.discover)

"""Readings for the metrics exporter through real pynvml over the FAKE NVML.

Case matrix: GPU memory used/total and utilisation (idle, with processes, explicit override); per-process
memory and SM utilisation by host PID (none, several, on MIG instances); samples older than ``since_us``.
"""

import time

import pytest

from plugin.nvml import GpuUsage, Nvml, ProcessUsage
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)

MIB = 1 << 20


@pytest.fixture
def nvml_on(fake_nvml):
    """``nvml_on("a10x4")`` -> (the fake node, an open ``Nvml`` on it); closed after the test."""
    opened: list[Nvml] = []

    def on(node_name: str):
        node = fake_nvml(node_name)
        nvml = Nvml()
        nvml.open()
        opened.append(nvml)
        return node, nvml

    yield on
    for nvml in opened:
        nvml.close()


def test_an_idle_gpu_reports_no_memory_used_and_no_processes(nvml_on):
    node, nvml = nvml_on("a10x4")
    uuid = node.uuid(0)

    assert nvml.gpu_usage(uuid) == GpuUsage(uuid, 0, 23028 * MIB, 0, 0)
    assert nvml.process_usage(uuid) == ()


def test_processes_report_memory_and_sm_use_by_host_pid(nvml_on):
    node, nvml = nvml_on("h100x8")
    uuid = node.uuid(2)
    node.set_processes(
        uuid, [FakeProcess(pid=4242, used_mib=1024, sm=35, mem=10), FakeProcess(pid=77, used_mib=512)]
    )
    node.set_utilization(uuid, gpu=40, memory=12)

    usage, processes = nvml.gpu_usage(uuid), nvml.process_usage(uuid)

    assert usage == GpuUsage(uuid, 1536 * MIB, 81559 * MIB, 40, 12)
    assert processes == (
        ProcessUsage(uuid, host_pid=77, used_bytes=512 * MIB, sm_pct=0, memory_pct=0),
        ProcessUsage(uuid, host_pid=4242, used_bytes=1024 * MIB, sm_pct=35, memory_pct=10),
    )


def test_other_gpus_keep_their_own_processes(nvml_on):
    node, nvml = nvml_on("a10x4")
    node.set_processes(node.uuid(1), [FakeProcess(pid=10, used_mib=100)])

    assert [len(nvml.process_usage(u)) for u in node.uuids] == [0, 1, 0, 0]


def test_an_explicit_memory_figure_overrides_the_processes_sum(nvml_on):
    node, nvml = nvml_on("a10x4")
    uuid = node.uuid(3)
    node.set_processes(uuid, [FakeProcess(pid=10, used_mib=100)])
    node.set_memory_used(uuid, 4096)
    overridden = nvml.gpu_usage(uuid).memory_used_bytes

    node.set_memory_used(uuid, None)

    assert (overridden, nvml.gpu_usage(uuid).memory_used_bytes) == (4096 * MIB, 100 * MIB)


def test_samples_older_than_since_leave_sm_use_unknown(nvml_on):
    node, nvml = nvml_on("a10x4")
    uuid = node.uuid(0)
    node.set_processes(uuid, [FakeProcess(pid=10, used_mib=100, sm=50)])
    future_us = int((time.time() + 3600) * 1e6)

    assert nvml.process_usage(uuid, since_us=future_us) == (ProcessUsage(uuid, 10, 100 * MIB),)


def test_processes_on_mig_instances_carry_their_instance_ids(nvml_on):
    node, nvml = nvml_on("a100x4-mig")
    uuid = node.uuid(0)
    node.set_processes(
        uuid,
        [
            FakeProcess(pid=1, used_mib=2048, sm=20, gpu_instance_id=1, compute_instance_id=0),
            FakeProcess(pid=2, used_mib=1024, sm=60, gpu_instance_id=2, compute_instance_id=0),
        ],
    )

    got = [
        (p.host_pid, p.used_bytes, p.gpu_instance_id, p.compute_instance_id) for p in nvml.process_usage(uuid)
    ]

    assert got == [(1, 2048 * MIB, 1, 0), (2, 1024 * MIB, 2, 0)]

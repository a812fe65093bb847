"""MIG discovery and start-up partitioning through real pynvml over the FAKE NVML (node ``a100x4-mig``).

The node: GPU 0 has 2 x 3g.20gb, GPU 1 has 3 x 2g.10gb + 1g.5gb, GPU 2 has MIG on and no instance, GPU 3 has
MIG off. Cases: discovery as the strategies see it; partitioning with SKIP_CONFIGURED (only GPUs 2 and 3 change),
without it (GPU 1 re-partitioned), an instance a pod holds or a process runs in survives, a count, an invalid
profile (nothing changes), nothing known about pods (nothing destroyed).
"""

import pytest

from plugin.core.mig import MigConfigError, MigStrategy, mig_devices, mig_resources
from plugin.core.mig_partition import PartitionSettings
from plugin.mig_partition import apply_partition
from plugin.nvml import Nvml
from tests.fakes.nvml.harness import FakeProcess, fake_nvml_fixture  # noqa: F401 (fixture)
from vcuda.names import Names


@pytest.fixture
def node_and_nvml(fake_nvml):
    node = fake_nvml("a100x4-mig")
    nvml = Nvml()
    nvml.open()
    yield node, nvml
    nvml.close()


def profiles_by_gpu(nvml: Nvml) -> list[list[str]]:
    return [sorted(m.profile for m in g.mig_instances) for g in nvml.discover().gpus]


def test_discovery_finds_every_instance_with_profile_memory_and_ids(node_and_nvml):
    node, nvml = node_and_nvml

    devices = mig_devices(nvml.discover().gpus)

    assert [(d.parent_index, d.profile, d.gpu_instance_id, d.compute_instance_id) for d in devices] == [
        (0, "3g.20gb", 1, 0),
        (0, "3g.20gb", 2, 0),
        (1, "2g.10gb", 1, 0),
        (1, "2g.10gb", 2, 0),
        (1, "2g.10gb", 3, 0),
        (1, "1g.5gb", 4, 0),
    ]
    assert {(d.memory_mib, d.multiprocessors) for d in devices if d.profile == "3g.20gb"} == {(19968, 42)}
    assert all(d.uuid.startswith("MIG-") and d.parent == node.uuid(d.parent_index) for d in devices)
    assert sorted(mig_resources(devices, MigStrategy.MIXED, Names())) == [
        "nvidia.com/mig-1g.5gb",
        "nvidia.com/mig-2g.10gb",
        "nvidia.com/mig-3g.20gb",
    ]


def test_partitioning_with_skip_configured_fills_only_unconfigured_gpus(node_and_nvml):
    _, nvml = node_and_nvml

    apply_partition(nvml, PartitionSettings(enabled=True), frozenset())

    assert profiles_by_gpu(nvml) == [
        ["3g.20gb", "3g.20gb"],
        ["1g.5gb", "2g.10gb", "2g.10gb", "2g.10gb"],
        ["3g.20gb", "3g.20gb"],
        ["3g.20gb", "3g.20gb"],
    ]
    assert nvml.discover().gpus[3].mig_enabled


def test_partitioning_without_skip_configured_replaces_other_profiles(node_and_nvml):
    _, nvml = node_and_nvml

    apply_partition(nvml, PartitionSettings(True, "3g.20gb", 0, skip_configured=False), frozenset())

    assert profiles_by_gpu(nvml) == [["3g.20gb", "3g.20gb"]] * 4


def test_an_instance_a_pod_holds_is_never_destroyed(node_and_nvml):
    _, nvml = node_and_nvml
    held = nvml.discover().gpus[1].mig_instances[3]  # the 1g.5gb

    apply_partition(nvml, PartitionSettings(True, "3g.20gb", 0, False), frozenset({held.uuid}))

    assert held in nvml.discover().gpus[1].mig_instances
    assert profiles_by_gpu(nvml)[1] == ["1g.5gb", "3g.20gb"]


def test_an_instance_running_a_process_is_never_destroyed(node_and_nvml):
    node, nvml = node_and_nvml
    node.set_processes(
        node.uuid(1), [FakeProcess(pid=7, used_mib=64, gpu_instance_id=1, compute_instance_id=0)]
    )

    apply_partition(nvml, PartitionSettings(True, "3g.20gb", 0, False), frozenset())

    assert profiles_by_gpu(nvml)[1] == ["2g.10gb", "3g.20gb"]


def test_instance_count_limits_what_is_created(node_and_nvml):
    _, nvml = node_and_nvml

    apply_partition(nvml, PartitionSettings(True, "1g.5gb", 3, True), frozenset())

    assert profiles_by_gpu(nvml)[2:] == [["1g.5gb"] * 3, ["1g.5gb"] * 3]


def test_an_invalid_profile_is_refused_before_any_gpu_changes(node_and_nvml):
    _, nvml = node_and_nvml
    before = profiles_by_gpu(nvml)

    with pytest.raises(MigConfigError, match=r"'3g\.40gb' is not a MIG profile of GPU .*valid: 1g\.5gb"):
        apply_partition(nvml, PartitionSettings(True, "3g.40gb", 0, False), frozenset())

    assert profiles_by_gpu(nvml) == before
    assert not nvml.discover().gpus[3].mig_enabled


def test_without_knowing_what_pods_hold_nothing_is_destroyed_or_switched(node_and_nvml):
    _, nvml = node_and_nvml
    before = profiles_by_gpu(nvml)

    apply_partition(nvml, PartitionSettings(True, "3g.20gb", 0, False), None)

    after = profiles_by_gpu(nvml)
    assert after[:2] == before[:2]
    assert after[2] == ["3g.20gb", "3g.20gb"]  # creating into free space is harmless
    assert not nvml.discover().gpus[3].mig_enabled

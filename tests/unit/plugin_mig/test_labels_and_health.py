"""Node labels (as NVIDIA's GPU feature discovery) and which MIG instances an XID concerns."""

import pytest

from plugin.core.gpu import XidEvent
from plugin.core.mig import MigStrategy, is_mig_label, mig_devices, mig_labels, xid_targets
from tests.builders.mig import a100
from vcuda.model import GpuUuid
from vcuda.names import Names

NAMES = Names()


def test_mixed_labels_carry_per_profile_count_memory_and_multiprocessors():
    gpus = [a100(0, "2g.10gb", "2g.10gb", "1g.5gb"), a100(1, mig_enabled=False)]

    labels = mig_labels(gpus, {gpus[0].uuid, gpus[1].uuid}, MigStrategy.MIXED, NAMES)

    assert labels == {
        "nvidia.com/mig.capable": "true",
        "nvidia.com/mig.strategy": "mixed",
        "nvidia.com/mig-1g.5gb.count": "1",
        "nvidia.com/mig-1g.5gb.memory": "4864",
        "nvidia.com/mig-1g.5gb.multiprocessors": "14",
        "nvidia.com/mig-1g.5gb.slices.gi": "1",
        "nvidia.com/mig-1g.5gb.slices.ci": "1",
        "nvidia.com/mig-1g.5gb.product": "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",
        "nvidia.com/mig-1g.5gb.replicas": "1",
        "nvidia.com/mig-1g.5gb.sharing-strategy": "none",
        "nvidia.com/mig-2g.10gb.count": "2",
        "nvidia.com/mig-2g.10gb.memory": "9856",
        "nvidia.com/mig-2g.10gb.multiprocessors": "28",
        "nvidia.com/mig-2g.10gb.slices.gi": "2",
        "nvidia.com/mig-2g.10gb.slices.ci": "2",
        "nvidia.com/mig-2g.10gb.product": "NVIDIA-A100-SXM4-40GB-MIG-2g.10gb",
        "nvidia.com/mig-2g.10gb.replicas": "1",
        "nvidia.com/mig-2g.10gb.sharing-strategy": "none",
    }


@pytest.mark.parametrize(
    ("capable", "strategy", "expected"),
    [
        pytest.param(True, MigStrategy.NONE, {"mig.capable": "true", "mig.strategy": "none"}, id="none"),
        pytest.param(False, MigStrategy.NONE, {"mig.capable": "false", "mig.strategy": "none"}, id="A10"),
    ],
)
def test_without_a_serving_strategy_only_capability_and_strategy_are_labelled(capable, strategy, expected):
    gpu = a100(0, "3g.20gb") if capable else a100(0, mig_enabled=False)

    labels = mig_labels([gpu], {gpu.uuid} if capable else set(), strategy, NAMES)

    assert labels == {f"nvidia.com/{k}": v for k, v in expected.items()}


def test_a_node_without_gpus_gets_no_mig_labels():
    assert mig_labels([], set(), MigStrategy.MIXED, NAMES) == {}


@pytest.mark.parametrize(
    ("key", "ours"),
    [
        ("nvidia.com/mig.capable", True),
        ("nvidia.com/mig-1g.5gb.count", True),
        ("nvidia.com/gpu.product", False),
        ("other.io/mig.capable", False),
    ],
)
def test_mig_labels_are_recognised_for_stale_label_removal(key, ours):
    assert is_mig_label(key, NAMES) is ours


GPUS = [a100(0, "3g.20gb", "3g.20gb"), a100(1, "3g.20gb")]
DEVICES = mig_devices(GPUS)


@pytest.mark.parametrize(
    ("event", "targets"),
    [
        pytest.param(XidEvent(GPUS[0].uuid, 79, 2, 0), ["MIG-a1000000-2-0"], id="instance ids -> that one"),
        pytest.param(XidEvent(GPUS[0].uuid, 79, 2, None), ["MIG-a1000000-2-0"], id="GPU instance only"),
        pytest.param(
            XidEvent(GPUS[0].uuid, 79), ["MIG-a1000000-1-0", "MIG-a1000000-2-0"], id="whole GPU -> all its"
        ),
        pytest.param(XidEvent(GPUS[0].uuid, 79, 5, 0), [], id="unknown instance -> none"),
        pytest.param(XidEvent(GpuUuid("GPU-other"), 79), [], id="other GPU -> none"),
    ],
)
def test_an_xid_marks_only_the_instances_it_names(event, targets):
    assert list(xid_targets(event, DEVICES)) == targets

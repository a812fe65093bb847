"""Partition planning (ENABLE_MIG, MIG_PROFILE, MIG_INSTANCE_COUNT, SKIP_CONFIGURED), decided before changes.

Cases: off; not capable; invalid profile (message names the valid ones); default 3g profile; MIG off -> turn on
and fill, unless pods share the GPU; skip configured; reconfigure: other profiles destroyed, busy ones (held by a
pod or running a process) never; a count: surplus destroyed, missing created.
"""

import pytest

from plugin.core.mig import MigConfigError
from plugin.core.mig_partition import GpuPartition, PartitionSettings, default_profile, plan_partition
from tests.builders.mig import A100_PROFILES, a100

ON = PartitionSettings(enabled=True)
FRESH = PartitionSettings(enabled=True, skip_configured=False)


def test_nothing_happens_when_partitioning_is_off():
    plan = plan_partition(a100(0, mig_enabled=False), A100_PROFILES, PartitionSettings())

    assert (plan.changes, plan.reason) == (False, "partitioning is off (ENABLE_MIG)")


def test_a_gpu_without_mig_profiles_is_left_alone():
    assert not plan_partition(a100(0, mig_enabled=False), [], ON).changes


def test_an_invalid_profile_is_refused_naming_the_valid_ones():
    with pytest.raises(MigConfigError, match=r"MIG_PROFILE: '3g\.40gb' is not a MIG profile .* 3g\.20gb"):
        plan_partition(a100(0, mig_enabled=False), A100_PROFILES, PartitionSettings(True, "3g.40gb"))


@pytest.mark.parametrize(
    ("profiles", "default"),
    [
        pytest.param(A100_PROFILES, "3g.20gb", id="A100 40GB"),
        pytest.param(["1g.10gb", "2g.20gb", "3g.40gb", "7g.80gb"], "3g.40gb", id="H100 80GB"),
        pytest.param(["1g.18gb", "3g.71gb", "7g.141gb"], "3g.71gb", id="H200 141GB"),
    ],
)
def test_the_default_profile_is_the_gpus_3g_profile(profiles, default):
    assert default_profile(profiles) == default


def test_mig_off_is_turned_on_and_filled_with_as_many_as_fit():
    plan = plan_partition(a100(0, mig_enabled=False), A100_PROFILES, ON)

    assert plan == GpuPartition(a100(0).uuid, "3g.20gb", enable_mig=True, create=None)


def test_mig_is_not_turned_on_under_pods_sharing_the_gpu():
    plan = plan_partition(a100(0, mig_enabled=False), A100_PROFILES, ON, shared_in_use=True)

    assert not plan.changes


def test_a_configured_gpu_is_skipped_with_skip_configured():
    plan = plan_partition(a100(0, "1g.5gb"), A100_PROFILES, ON)

    assert (plan.changes, plan.reason) == (False, "already partitioned (SKIP_CONFIGURED)")


def test_an_empty_mig_gpu_is_filled_even_with_skip_configured():
    plan = plan_partition(a100(0, mig_enabled=True), A100_PROFILES, ON)

    assert (plan.destroy, plan.create) == ((), None)


def test_without_skip_configured_other_profiles_are_replaced():
    plan = plan_partition(a100(0, "1g.5gb", "3g.20gb", "2g.10gb"), A100_PROFILES, FRESH)

    assert (plan.destroy, plan.kept_busy, plan.create) == ((1, 3), (), None)


@pytest.mark.parametrize(
    ("busy", "busy_gi"),
    [
        pytest.param({"MIG-a1000000-1-0"}, set(), id="held by a pod"),
        pytest.param(set(), {1}, id="a process runs in it"),
    ],
)
def test_an_instance_in_use_is_never_destroyed(busy, busy_gi):
    plan = plan_partition(a100(0, "1g.5gb", "2g.10gb"), A100_PROFILES, FRESH, busy=busy, busy_gi=busy_gi)

    assert (plan.destroy, plan.kept_busy) == ((2,), (1,))


@pytest.mark.parametrize(
    ("count", "destroy", "create"),
    [
        pytest.param(1, (2, 3), 0, id="3 present, 1 wanted -> 2 destroyed"),
        pytest.param(3, (), 0, id="3 present, 3 wanted -> nothing"),
        pytest.param(5, (), 2, id="3 present, 5 wanted -> 2 created"),
    ],
)
def test_instance_count_destroys_surplus_and_creates_the_missing(count, destroy, create):
    gpu = a100(0, "1g.5gb", "1g.5gb", "1g.5gb")

    plan = plan_partition(gpu, A100_PROFILES, PartitionSettings(True, "1g.5gb", count, False))

    assert (plan.destroy, plan.create) == (destroy, create)


def test_instance_count_keeps_busy_instances_first():
    gpu = a100(0, "1g.5gb", "1g.5gb", "1g.5gb")

    plan = plan_partition(gpu, A100_PROFILES, PartitionSettings(True, "1g.5gb", 1, False), busy_gi={3})

    assert (plan.destroy, plan.create) == ((1, 2), 0)

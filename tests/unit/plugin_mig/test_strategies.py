"""Strategies: which resources are advertised and with which device IDs; MIG GPUs kept apart from sharing.

Cases: none advertises nothing; single puts every instance under <domain>/gpu and refuses two profiles;
mixed gives one resource per profile with '+' made '.'; order is stable; MIG on or pending is not shareable.
"""

from collections.abc import Mapping

import pytest

from plugin.core.gpu import NodeGpus
from plugin.core.inventory import node_inventory
from plugin.core.mig import (
    MigConfigError,
    MigDevice,
    MigStrategy,
    mig_devices,
    mig_resources,
    profile_resource,
    shareable_gpus,
)
from plugin.core.slices import slices
from tests.builders.mig import a100
from vcuda.annotations import decode_inventory, encode_inventory
from vcuda.names import Names

NAMES = Names()


def ids(resources: Mapping[str, tuple[MigDevice, ...]]) -> dict[str, list[str]]:
    return {name: [d.uuid for d in devices] for name, devices in resources.items()}


def test_strategy_none_advertises_no_mig_resource():
    devices = mig_devices([a100(0, "3g.20gb", "3g.20gb")])

    assert mig_resources(devices, MigStrategy.NONE, NAMES) == {}


def test_strategy_single_advertises_every_instance_as_a_whole_gpu():
    devices = mig_devices([a100(0, "3g.20gb", "3g.20gb"), a100(1, "3g.20gb")])

    assert ids(mig_resources(devices, MigStrategy.SINGLE, NAMES)) == {
        "nvidia.com/gpu": ["MIG-a1000000-1-0", "MIG-a1000000-2-0", "MIG-a1000001-1-0"]
    }


def test_strategy_single_refuses_two_profiles_on_the_node():
    devices = mig_devices([a100(0, "3g.20gb"), a100(1, "1g.5gb")])

    with pytest.raises(MigConfigError, match=r"--mig-strategy: 'single' .* 1g\.5gb, 3g\.20gb"):
        mig_resources(devices, MigStrategy.SINGLE, NAMES)


def test_strategy_mixed_gives_one_resource_per_profile():
    devices = mig_devices([a100(0, "2g.10gb", "2g.10gb", "1g.5gb"), a100(1, "3g.20gb")])

    assert ids(mig_resources(devices, MigStrategy.MIXED, Names("example.com"))) == {
        "example.com/mig-1g.5gb": ["MIG-a1000000-3-0"],
        "example.com/mig-2g.10gb": ["MIG-a1000000-1-0", "MIG-a1000000-2-0"],
        "example.com/mig-3g.20gb": ["MIG-a1000001-1-0"],
    }


@pytest.mark.parametrize(
    ("profile", "name"),
    [
        pytest.param("1g.10gb", "mig-1g.10gb", id="plain profile"),
        pytest.param("1g.10gb+me", "mig-1g.10gb.me", id="'+' is not allowed in a resource name"),
        pytest.param("1c.3g.20gb", "mig-1c.3g.20gb", id="partial compute instance"),
    ],
)
def test_profile_resource_names_are_valid_resource_names(profile, name):
    assert profile_resource(profile) == name


def test_instances_are_ordered_by_gpu_index_then_instance_ids():
    devices = mig_devices([a100(1, "1g.5gb"), a100(0, "1g.5gb", "1g.5gb")])

    assert [(d.parent_index, d.gpu_instance_id) for d in devices] == [(0, 1), (0, 2), (1, 1)]


def test_a_gpu_with_mig_off_has_no_instances_to_advertise():
    assert mig_devices([a100(0, mig_enabled=False)]) == ()


@pytest.mark.parametrize(
    ("gpu", "shared"),
    [
        pytest.param(a100(0, mig_enabled=False), True, id="MIG off -> shared"),
        pytest.param(a100(0, "3g.20gb"), False, id="MIG on -> not shared"),
        pytest.param(a100(0, mig_enabled=True), False, id="MIG on without instances -> not shared"),
        pytest.param(a100(0, mig_enabled=False, pending=True), False, id="MIG pending -> not shared"),
    ],
)
def test_mig_gpus_are_kept_apart_from_vcuda_sharing(gpu, shared):
    node = NodeGpus((gpu,), (), "580.95.05", "13.0")

    assert (shareable_gpus([gpu]) == (gpu,)) is shared
    assert bool(slices([gpu], {})) is shared
    assert bool(node_inventory(node, {}, 1.0).gpus) is shared


def test_mig_instances_are_listed_in_the_inventory_apart_from_shared_gpus():
    shared, partitioned = a100(0, mig_enabled=False), a100(1, "3g.20gb", "2g.10gb")
    inventory = node_inventory(NodeGpus((shared, partitioned), (), "580.95.05", "13.0"), {}, 0.5)

    assert [g.uuid for g in inventory.gpus] == [shared.uuid]
    assert [(m.parent, m.profile, m.memory_mib, m.multiprocessors) for m in inventory.mig] == [
        (partitioned.uuid, "3g.20gb", 19968, 42),  # whole instances: memory scaling does not apply
        (partitioned.uuid, "2g.10gb", 9856, 28),
    ]
    assert decode_inventory(encode_inventory(inventory)) == inventory

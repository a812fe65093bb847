# mypy: disable-error-code="no-untyped-call"
"""Slices, health, inventory, reclaim and the allocation plan: small pure decisions, table-driven."""

import pytest

from plugin.core.allocate import DeviceIdStrategy, DeviceListStrategy, PlanOptions, plan_container
from plugin.core.attribution import candidates
from plugin.core.errors import AllocationError
from plugin.core.health import HealthPolicy, apply_probe, apply_xid, healthy_map, initial_book
from plugin.core.inventory import node_view
from plugin.core.reclaim import ContainerDir, LiveSet, to_remove
from plugin.core.slices import gpu_split, parse_slice_id, slices
from tests.builders.attribution import pod
from tests.builders.plugin import NAMES, h200x8
from vcuda.model import GpuUuid
from vcuda.units import MIB

NODE = h200x8()
U0, U1 = NODE.gpus[0].uuid, NODE.gpus[1].uuid


def test_slices_are_100_per_gpu_and_carry_health():
    found = slices(NODE.gpus, {U1: False})
    assert len(found) == 800
    assert found[0].id == f"{U0}::0"
    assert found[99].id == f"{U0}::99"
    assert {s.healthy for s in found if s.uuid == U1} == {False}
    assert max(len(s.id) for s in found) <= 63


@pytest.mark.parametrize("text", ["GPU-x", "GPU-x::100", "::3", "GPU-x::-1", "GPU-x::a"])
def test_malformed_slice_ids_are_refused(text):
    with pytest.raises(AllocationError):
        parse_slice_id(text)


def test_gpu_split_counts_slices_per_gpu():
    assert gpu_split([f"{U0}::1", f"{U0}::2", f"{U1}::0"]) == {U0: 2, U1: 1}


@pytest.mark.parametrize(
    ("xid", "healthy"),
    [
        pytest.param(79, False, id="79 fallen off the bus"),
        pytest.param(48, False, id="48 double-bit ECC"),
        *(pytest.param(x, True, id=f"{x} application") for x in (13, 31, 43, 45, 68)),
    ],
)
def test_xid_policy(xid, healthy):
    book = apply_xid(initial_book([U0]), U0, xid, 0.0, HealthPolicy())
    assert healthy_map(book) == {U0: healthy}


def test_xid_mark_recovers_only_after_the_window_and_only_when_reachable():
    policy = HealthPolicy(recovery_s=10)
    book = apply_xid(initial_book([U0]), U0, 79, 100.0, policy)
    assert not healthy_map(apply_probe(book, {U0: True}, 105.0, policy))[U0]
    assert not healthy_map(apply_probe(book, {U0: False}, 200.0, policy))[U0]
    assert healthy_map(apply_probe(book, {U0: True}, 200.0, policy))[U0]
    assert not healthy_map(apply_probe(book, {U0: True}, 1e9, HealthPolicy()))[U0]  # 0 = never


def test_node_view_scales_memory_and_drops_unhealthy_gpus_from_capacity():
    view = node_view(NODE, {U0: False}, 0.9, NAMES)
    assert view.memory_mib == 7 * int(143771 * 0.9)
    assert [g.healthy for g in view.inventory.gpus][:2] == [False, True]
    assert view.labels[NAMES.label("gpu.count")] == "8"


@pytest.mark.parametrize(
    ("d", "removed"),
    [
        pytest.param(ContainerDir("u1_c", 999), False, id="pod listed by the API"),
        pytest.param(ContainerDir("gone_c", 999, "u1"), False, id="config names a listed pod"),
        pytest.param(ContainerDir("gone_c", 999, None, ("ns", "p")), False, id="kubelet still runs it"),
        pytest.param(ContainerDir("gone_c", 1), False, id="younger than the grace period"),
        pytest.param(ContainerDir("gone_c", 999), True, id="forgotten by everyone"),
    ],
)
def test_reclaim_removes_only_what_every_source_forgot(d, removed):
    live = LiveSet(frozenset({"u1"}), frozenset({("ns", "p")}))
    assert to_remove([d], live, grace_s=60) == ([d.name] if removed else [])


@pytest.mark.parametrize(
    ("strategy", "ids", "env"),
    [
        (DeviceListStrategy.ENVVAR, DeviceIdStrategy.UUID, f"{U0},{U1}"),
        (DeviceListStrategy.ENVVAR, DeviceIdStrategy.INDEX, "0,1"),
        (DeviceListStrategy.CDI, DeviceIdStrategy.UUID, "void"),
        (DeviceListStrategy.DEVICE_SPECS, DeviceIdStrategy.UUID, "void"),
    ],
)
def test_plan_visibility_per_strategy(strategy, ids, env):
    cand = candidates([pod("p", "1", [("c", 200, 0, [(U0, 100), (U1, 100)])])])[0]
    plan = plan_container(
        cand, {g.uuid: g for g in NODE.gpus}, PlanOptions(list_strategy=strategy, id_strategy=ids)
    )
    assert plan.envs["NVIDIA_VISIBLE_DEVICES"] == env
    assert [g.memory_limit_bytes for g in plan.config.gpus] == [143771 * MIB] * 2
    assert bool(plan.cdi_devices) == (strategy is DeviceListStrategy.CDI)
    assert bool(plan.devices) == (strategy is DeviceListStrategy.DEVICE_SPECS)


def test_plan_refuses_a_gpu_this_node_does_not_have():
    cand = candidates([pod("p", "1", [("c", 30, 10, [(GpuUuid("GPU-elsewhere"), 30)])])])[0]
    with pytest.raises(AllocationError):
        plan_container(cand, {g.uuid: g for g in NODE.gpus}, PlanOptions())

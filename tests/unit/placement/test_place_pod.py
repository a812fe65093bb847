"""place_pod, table-driven: fractional shares under binpack and spread, whole GPUs, best-connected sets,
constraints, health, and a precise rejection for each way a pod can fail to fit.

Properties (hypothesis) over every policy: no GPU ever exceeds 100 cores or its memory; whole-GPU requests never
share a GPU; every assignment satisfies the constraints and the request; same input, same output; reserve then
release restores the load.
"""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extender.core.load import GpuLoad, NodeLoad, release, reserve
from extender.core.placement import Placement, Rejection, RejectReason, place_pod
from extender.core.score import node_score
from tests.builders.vcuda import gpu, nvswitch_node, pcie_node, request, uuid
from vcuda.model import Constraints, GpuUuid, NodeInventory, PodRequest, Policy
from vcuda.units import CORE_PER_GPU

BIN, SPREAD = Policy.BINPACK, Policy.SPREAD


def place(inv: NodeInventory, load: NodeLoad, req: PodRequest, policy: Policy = BIN) -> Placement | Rejection:
    return place_pod(inv, load, req, gpu_policy=policy, node_policy=policy)


def placed(result: Placement | Rejection) -> Placement:
    assert isinstance(result, Placement), result
    return result


def rejected(result: Placement | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    return result


def test_binpack_puts_a_share_on_the_fullest_gpu_that_fits() -> None:
    node = nvswitch_node(4)
    load = {uuid("n", 2): GpuLoad(50, 40000), uuid("n", 3): GpuLoad(90, 1000)}
    share = placed(place(node, load, request((30, 4096)))).containers[0].shares[0]
    assert share.uuid == uuid("n", 2)


def test_spread_puts_a_share_on_the_emptiest_gpu() -> None:
    node = nvswitch_node(4)
    load = {uuid("n", 0): GpuLoad(10, 100), uuid("n", 1): GpuLoad(10, 100), uuid("n", 2): GpuLoad(10, 100)}
    share = placed(place(node, load, request((30, 4096)), SPREAD)).containers[0].shares[0]
    assert share.uuid == uuid("n", 3)


def test_ties_end_on_the_gpu_uuid() -> None:
    share = placed(place(nvswitch_node(8), {}, request((30, 4096)))).containers[0].shares[0]
    assert share.uuid == uuid("n", 0)


def test_two_whole_gpus_on_pcie_come_from_one_switch() -> None:
    node = pcie_node(4)
    load = {uuid("n", 0): GpuLoad(10, 10)}
    shares = placed(place(node, load, request((200, 0)))).containers[0].shares
    assert {s.uuid for s in shares} == {uuid("n", 2), uuid("n", 3)}
    assert all(s.cores == CORE_PER_GPU and s.memory_mib == 24576 for s in shares)


def test_four_whole_gpus_on_nvswitch_stay_on_one_numa_node() -> None:
    shares = (
        placed(place(nvswitch_node(8), {uuid("n", 0): GpuLoad(1, 1)}, request((400, 0)))).containers[0].shares
    )
    assert {s.uuid for s in shares} == {uuid("n", i) for i in (4, 5, 6, 7)}


def test_containers_of_one_pod_see_each_others_shares() -> None:
    node = NodeInventory((gpu(0, memory_mib=10000),))
    result = placed(place(node, {}, request((60, 5000), (40, 5000))))
    assert [c.shares[0].uuid for c in result.containers] == [uuid("n", 0)] * 2
    assert (
        rejected(place(node, {}, request((60, 5000), (41, 5000)))).reason is RejectReason.INSUFFICIENT_CORES
    )


def test_soft_limit_is_carried_and_never_below_the_request() -> None:
    result = placed(place(nvswitch_node(2), {}, request((30, 100), (100, 0), core_limit=70)))
    assert [c.core_limit for c in result.containers] == [70, 100]


def test_unhealthy_gpus_are_never_chosen() -> None:
    node = NodeInventory((gpu(0, healthy=False), gpu(1)))
    assert placed(place(node, {}, request((10, 10)))).containers[0].shares[0].uuid == uuid("n", 1)


@pytest.mark.parametrize(
    ("node", "load", "req", "reason", "resolvable", "detail"),
    [
        pytest.param(NodeInventory(()), {}, request((10, 10)), RejectReason.NO_GPUS, False, "no GPUs", id="no GPUs"),
        pytest.param(
            nvswitch_node(2), {}, request((10, 10), constraints=Constraints(include_models=frozenset({"a10"}))),
            RejectReason.NO_MATCHING_GPU, False, "model or UUID", id="model not on node",
        ),
        pytest.param(
            NodeInventory((gpu(0, healthy=False),)), {}, request((10, 10)),
            RejectReason.NO_HEALTHY_GPU, True, "unhealthy", id="all unhealthy",
        ),
        pytest.param(
            pcie_node(2), {}, request((10, 30000)), RejectReason.TOO_LARGE, False,
            "no GPU has 30000 MiB, the largest has 24576", id="bigger than any GPU",
        ),
        pytest.param(
            pcie_node(2), {uuid("n", 0): GpuLoad(10, 20000), uuid("n", 1): GpuLoad(10, 12576)}, request((10, 20000)),
            RejectReason.INSUFFICIENT_MEMORY, True, "no single GPU has 20000 MiB free, the largest has 12000",
            id="memory taken",
        ),
        pytest.param(
            pcie_node(1), {uuid("n", 0): GpuLoad(80, 100)}, request((30, 100)),
            RejectReason.INSUFFICIENT_CORES, True, "the most free is 20 %", id="cores taken",
        ),
        pytest.param(
            pcie_node(4), {uuid("n", 0): GpuLoad(1, 1)}, request((400, 0)),
            RejectReason.INSUFFICIENT_GPUS, True, "needs 4 idle GPUs, the node has 3 idle", id="a GPU busy",
        ),
        pytest.param(
            pcie_node(4), {}, request((800, 0)), RejectReason.TOO_LARGE, False,
            "needs 8 whole GPUs, the node has 4", id="more GPUs than the node",
        ),
    ],
)  # fmt: skip
def test_rejections_say_why(
    node: NodeInventory, load: NodeLoad, req: PodRequest, reason: RejectReason, resolvable: bool, detail: str
) -> None:
    rejection = rejected(place(node, load, req))
    assert (rejection.reason, rejection.resolvable) == (reason, resolvable)
    assert detail in rejection.detail


def test_node_score_follows_the_node_policy() -> None:
    node = nvswitch_node(2)
    busy = {uuid("n", 0): GpuLoad(100, 81920)}
    assert (
        placed(place(node, busy, request((10, 10)), BIN)).score
        > placed(place(node, {}, request((10, 10)), BIN)).score
    )
    assert (
        placed(place(node, busy, request((10, 10)), SPREAD)).score
        < placed(place(node, {}, request((10, 10)), SPREAD)).score
    )


@pytest.mark.parametrize(
    ("used_cores", "used_mib", "binpack", "score"),
    [
        pytest.param(0, 0, True, 0, id="an idle node scores 0 under binpack"),
        pytest.param(0, 0, False, 10, id="an idle node scores 10 under spread"),
        pytest.param(100, 40960, True, 5, id="half the compute and half the memory score 5"),
        pytest.param(200, 0, True, 5, id="the score is the mean of the compute and memory fractions"),
        pytest.param(170, 81920, True, 9, id="0.925 rounds to 9"),
        pytest.param(400, 81920, True, 10, id="over-committed compute counts as full, not more"),
        pytest.param(400, 81920, False, 0, id="over-committed compute is 0 under spread, not negative"),
    ],
)  # fmt: skip
def test_the_node_score_formula(used_cores: int, used_mib: int, binpack: bool, score: int) -> None:
    """Both place_pod and the summary's fast answer score with this one function (two GPUs, 80 GiB)."""
    assert (
        node_score(
            used_cores=used_cores,
            core_capacity=200,
            used_mib=used_mib,
            memory_capacity=81920,
            binpack=binpack,
        )
        == score
    )


# --- properties ---------------------------------------------------------------------------------------

containers = st.one_of(
    st.tuples(st.integers(1, 99), st.integers(1, 30000)),
    st.tuples(st.sampled_from([100, 200, 300, 400]), st.just(0)),
)
requests = st.builds(
    lambda cs, limit, models: request(*cs, core_limit=limit, constraints=Constraints(exclude_uuids=models)),
    st.lists(containers, min_size=1, max_size=3),
    st.none(),
    st.frozensets(st.sampled_from([uuid("n", i) for i in range(8)]), max_size=2),
)
nodes = st.sampled_from([nvswitch_node(8), pcie_node(4), nvswitch_node(2, memory_mib=40960)])


def _loads(node: NodeInventory, result: Placement) -> dict[GpuUuid, GpuLoad]:
    return reserve({}, result.containers)


@settings(max_examples=300)
@given(nodes, st.lists(requests, max_size=12), st.sampled_from(Policy))
def test_a_sequence_of_placements_never_overcommits(
    node: NodeInventory, reqs: list[PodRequest], policy: Policy
) -> None:
    load: NodeLoad = {}
    for req in reqs:
        result = place(node, load, req, policy)
        assert result == place(node, load, req, policy), "same input, same output"
        if isinstance(result, Rejection):
            continue
        for want, got in zip(req.containers, result.containers, strict=True):
            assert got.cores == want.cores
            assert len({s.uuid for s in got.shares}) == want.gpu_count
            for share in got.shares:
                assert share.uuid not in req.constraints.exclude_uuids
                if want.exclusive:
                    assert load.get(share.uuid, GpuLoad()).idle, "whole GPUs are never shared"
        after = reserve(load, result.containers)
        assert release(after, result.containers) == load
        for g in node.gpus:
            used = after.get(g.uuid, GpuLoad())
            assert 0 <= used.cores <= CORE_PER_GPU
            assert 0 <= used.memory_mib <= g.memory_mib
        load = after


def test_reservation_identity_with_exclusive_and_shared() -> None:
    node = replace(nvswitch_node(2))
    result = placed(place(node, {}, request((100, 0), (30, 10))))
    assert release(reserve({}, result.containers), result.containers) == {}
